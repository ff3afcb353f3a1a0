# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replace a file atomically, with the owner, group and mode a policy gives it.

:func:`write_atomic` is the one writer behind every file the collection rewrites in place
(cinder.conf and friends, RemoteFS ``.info`` files and journals, cephx keyrings):

1. a temporary file ``.<name>.<16 hex digits><suffix>`` is created beside the target with
   ``O_CREAT | O_EXCL | O_NOFOLLOW`` (mode 0600, so nobody else can open it while it is being
   prepared; a name planted there, a symlink included, is never opened: another name is drawn).
   :func:`is_temporary_name` recognises these names, so leftovers of a killed process can be found;
2. it gets the owner and group of the :class:`FileAttributes`, then their mode, *before* the
   data is written: at no moment does the new content sit in a file looser than asked;
3. the data is written, fsynced, the file closed and renamed over the target;
4. the directory is fsynced, so the rename survives a crash (:func:`fsync_dir`; inside
   :func:`shared_directory_syncs`, the threads of one task share the fsyncs of a directory, each waiting for one
   that started after it asked).

On any error (including an interrupt) the temporary file is removed and the target is left
as it was; the error propagates unchanged.

The owner/mode policy is a :class:`FileAttributes`: given explicitly (keyrings), or copied from
a reference file with :func:`attributes_like` (a rewrite that must not change who may read it).

:func:`change_attributes_narrowing` gives an existing file new owner, group and mode without ever
granting, even for a moment, an access that neither the old nor the new attributes grant (see
:func:`narrowing_steps`).
"""

from __future__ import annotations

import binascii
import contextlib
import errno
import os
import re
import stat
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.fresh import FreshCall


@dataclass(frozen=True)
class FileAttributes:
    """The mode and ownership a new file gets before its content is written.

    ``uid``/``gid`` -1 leave the process's. With ``best_effort`` a refused chown is ignored (the
    file then keeps the process's owner and group); otherwise its ``OSError`` propagates.
    """

    mode: int
    uid: int = -1
    gid: int = -1
    best_effort: bool = False


def owner_id(value: Any, lookup: Callable[[str], int]) -> Optional[int]:
    """The uid/gid an owner or group option means: None for None, a number given as text as it is, a name
    through ``lookup`` (``pwd.getpwnam(name).pw_uid``...; its ``KeyError`` when the name is unknown)."""
    if value is None:
        return None
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    return lookup(text)


def attributes_like(reference: str, group_when_unprivileged: bool = True) -> FileAttributes:
    """The mode of ``reference`` and, as root, its owner and group.

    Not being root, the owner cannot be given away; with ``group_when_unprivileged`` the group of
    ``reference`` is still tried (it works when the process belongs to that group), best effort.
    An ``OSError`` when ``reference`` cannot be stat'ed propagates.
    """
    st = os.stat(reference)
    mode = st.st_mode & 0o7777
    if os.geteuid() == 0:
        return FileAttributes(mode, st.st_uid, st.st_gid)
    if group_when_unprivileged and os.getegid() != st.st_gid:
        return FileAttributes(mode, gid=st.st_gid, best_effort=True)
    return FileAttributes(mode)


def _fsync_dir_now(directory: str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# directory (absolute path) -> (its shared fsync, how many shared_directory_syncs hold it)
_SHARED_SYNCS: Dict[str, Tuple[FreshCall[None], int]] = {}
_SHARED_SYNCS_LOCK = threading.Lock()


def fsync_dir(directory: str) -> None:
    """Make the entries of ``directory`` (a rename, a new or removed file) durable.

    Every change made to the directory before the call is durable when it returns: an fsync of the directory
    that started after the call covers them. Inside :func:`shared_directory_syncs` such an fsync is shared by the
    threads that ask at the same time (:class:`._base.fresh.FreshCall`: one runs at a time, the threads that ask
    meanwhile wait for the next one, which starts after all of them asked, and each gets its outcome, an error
    included)."""
    shared = _SHARED_SYNCS.get(os.path.abspath(directory)) if _SHARED_SYNCS else None
    if shared is not None:
        shared[0].fresh()
    else:
        _fsync_dir_now(directory)


@contextlib.contextmanager
def shared_directory_syncs(directories: Iterable[str]) -> Iterator[None]:
    """While inside, the :func:`fsync_dir` calls of these directories made by this process's threads are shared.

    For the threads of one task working in one directory (the volumes of a share): several renames of
    different threads become durable with one fsync of the directory, never one that started before a thread
    asked (that one could miss its rename)."""
    keys = sorted(set(os.path.abspath(directory) for directory in directories))
    with _SHARED_SYNCS_LOCK:
        for key in keys:
            shared, users = _SHARED_SYNCS.get(key) or (FreshCall(lambda key=key: _fsync_dir_now(key)), 0)  # type: ignore[misc]
            _SHARED_SYNCS[key] = (shared, users + 1)
    try:
        yield
    finally:
        with _SHARED_SYNCS_LOCK:
            for key in keys:
                shared, users = _SHARED_SYNCS[key]
                if users > 1:
                    _SHARED_SYNCS[key] = (shared, users - 1)
                else:
                    del _SHARED_SYNCS[key]


def shared_sync_calls(directory: str) -> Optional[int]:
    """How many fsyncs of ``directory`` its shared fsync made so far (None: not shared now); for tests."""
    shared = _SHARED_SYNCS.get(os.path.abspath(directory))
    return shared[0].calls if shared is not None else None


def apply_attributes(fd: int, attributes: FileAttributes) -> None:
    """Give the open file ``fd`` its owner, group (best effort when the policy says so) and then its mode."""
    if attributes.uid != -1 or attributes.gid != -1:
        try:
            os.fchown(fd, attributes.uid, attributes.gid)
        except OSError:
            if not attributes.best_effort:
                raise
    # after the chown, which may clear set-id bits
    os.fchmod(fd, attributes.mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


_TEMP_RANDOM = re.compile(r'[0-9a-f]{16}\Z')
# names drawn by tempfile.mkstemp in earlier versions: 8 characters of [a-z0-9_]
_LEGACY_TEMP_RANDOM = re.compile(r'[a-z0-9_]{8}\Z')
_EXCLUSIVE = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
              | getattr(os, 'O_NOCTTY', 0))


def temporary_name(basename: str, suffix: str = '.tmp') -> str:
    """A fresh name ``.<basename>.<16 hex digits><suffix>`` for a temporary file beside ``basename``."""
    return '.%s.%s%s' % (basename, binascii.hexlify(os.urandom(8)).decode('ascii'), suffix)


def is_temporary_name(name: str, basename: str, suffix: str = '.tmp', legacy: bool = True) -> bool:
    """True when ``name`` is a temporary name :func:`write_atomic` draws for ``basename`` with ``suffix``.

    With ``legacy``, the names of earlier versions (``tempfile.mkstemp``: 8 characters, suffix ``.tmp``) too.
    """
    prefix = '.%s.' % basename
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix):]
    if rest.endswith(suffix) and _TEMP_RANDOM.match(rest[:len(rest) - len(suffix)]):
        return True
    return legacy and rest.endswith('.tmp') and bool(_LEGACY_TEMP_RANDOM.match(rest[:-len('.tmp')]))


def create_temporary(directory: str, basename: str, suffix: str = '.tmp', mode: int = 0o600) -> Tuple[int, str]:
    """Create a new temporary file beside ``basename`` in ``directory``: returns (write-only fd, path).

    ``O_CREAT | O_EXCL | O_NOFOLLOW``: whatever is planted under a name drawn (a file, a symlink, even a
    dangling one) is never opened nor followed; another name is drawn.
    """
    for _attempt in range(100):
        path = os.path.join(directory, temporary_name(basename, suffix))
        try:
            return os.open(path, _EXCLUSIVE, mode), path
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    raise OSError(errno.EEXIST, 'no free temporary name', os.path.join(directory, '.%s.*%s' % (basename, suffix)))


def write_atomic(path: str, data: bytes, attributes: FileAttributes, suffix: str = '.tmp',
                 durable: bool = True) -> None:
    """Replace (or create) ``path`` with ``data``; see the module documentation for the steps.

    ``durable`` False skips both fsyncs (the rename stays atomic, only a crash may lose it): for files not worth
    a disk flush, such as progress records.

    ``suffix`` ends the temporary file's name (``.<basename of path>.<random><suffix>``), so a
    leftover of a killed process can be recognised.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = create_temporary(directory, os.path.basename(path), suffix)
    try:
        try:
            apply_attributes(fd, attributes)
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(directory)


# (operation, arguments): ('chmod', mode) or ('chown', uid, gid) with -1 for "keep".
Step = Tuple[Any, ...]


def narrowing_steps(mode: int, uid: int, gid: int, attributes: FileAttributes) -> List[Step]:
    """The chmod/chown calls that take a file from ``mode``/``uid``/``gid`` to ``attributes``.

    When the owner or the group changes, the mode first becomes ``mode & attributes.mode`` (what both the old
    and the new mode grant), then the owner and group change, then the final mode is set. Before the chown only
    the old principals hold rights, never more than before; after it only the new ones, never more than after.
    So ``0640 root:a -> 0660 root:b`` is ``chmod 0640``, ``chown root:b``, ``chmod 0660`` (never ``0660 root:a``),
    and ``0640 root:a -> 0600 root:b`` is ``chmod 0600``, ``chown root:b`` (never ``0640 root:b``).
    Nothing is done for what already matches.
    """
    new_uid = uid if attributes.uid == -1 else attributes.uid
    new_gid = gid if attributes.gid == -1 else attributes.gid
    steps: List[Step] = []
    current = mode
    if (new_uid, new_gid) != (uid, gid):
        narrow = mode & attributes.mode
        if narrow != current:
            steps.append(('chmod', narrow))
            current = narrow
        steps.append(('chown', new_uid if new_uid != uid else -1, new_gid if new_gid != gid else -1))
    if current != attributes.mode:
        steps.append(('chmod', attributes.mode))
    return steps


def change_attributes_narrowing(path: str, attributes: FileAttributes) -> List[Step]:
    """Give the existing regular file ``path`` (never followed when a symlink) ``attributes`` through
    :func:`narrowing_steps`; returns the steps done (empty when everything matched).

    A refused chown propagates its ``OSError``; with ``best_effort`` it ends the change instead. Either way the
    file keeps its old owner and group with at most the narrower mode of the first step, never more than before.
    """
    flags = os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_NOCTTY', 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(0, 'not a regular file', path)
        steps = narrowing_steps(stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, attributes)
        done: List[Step] = []
        for step in steps:
            if step[0] == 'chown':
                try:
                    os.fchown(fd, step[1], step[2])
                except OSError:
                    if not attributes.best_effort:
                        raise
                    # the old owners keep the file: the new mode could grant them more, the narrower one stays
                    return done
            else:
                os.fchmod(fd, step[1])
            done.append(step)
        if done and stat.S_IMODE(os.fstat(fd).st_mode) != attributes.mode:
            # a chown may clear the set-id bits
            os.fchmod(fd, attributes.mode)
            done.append(('chmod', attributes.mode))
        return done
    finally:
        os.close(fd)


def remove_if_exists(path: str) -> None:
    """Unlink ``path`` (never followed: a symlink itself is removed); a missing file is not an error."""
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
