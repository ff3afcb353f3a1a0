# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replace a file atomically, with the owner, group and mode a policy gives it.

:func:`write_atomic` is the one writer behind every file the collection rewrites in place
(cinder.conf and friends, RemoteFS ``.info`` files and journals, cephx keyrings):

1. a temporary file ``.<name>.<random><suffix>`` is created beside the target (mode 0600, so
   nobody else can open it while it is being prepared);
2. it gets the owner and group of the :class:`FileAttributes`, then their mode, *before* the
   data is written: at no moment does the new content sit in a file looser than asked;
3. the data is written, fsynced, the file closed and renamed over the target;
4. the directory is fsynced, so the rename survives a crash.

On any error (including an interrupt) the temporary file is removed and the target is left
as it was; the error propagates unchanged.

The owner/mode policy is a :class:`FileAttributes`: given explicitly (keyrings), or copied from
a reference file with :func:`attributes_like` (a rewrite that must not change who may read it).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass


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


def fsync_dir(directory: str) -> None:
    """Make the entries of ``directory`` (a rename, a new or removed file) durable."""
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _apply(fd: int, attributes: FileAttributes) -> None:
    if attributes.uid != -1 or attributes.gid != -1:
        try:
            os.fchown(fd, attributes.uid, attributes.gid)
        except OSError:
            if not attributes.best_effort:
                raise
    # after the chown, which may clear set-id bits
    os.fchmod(fd, attributes.mode)


def set_attributes(path: str, attributes: FileAttributes) -> None:
    """Give the existing file ``path`` (not followed when a symlink) ``attributes``: owner and group, then mode."""
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
    try:
        _apply(fd, attributes)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_atomic(path: str, data: bytes, attributes: FileAttributes, suffix: str = '.tmp') -> None:
    """Replace (or create) ``path`` with ``data``; see the module documentation for the steps.

    ``suffix`` ends the temporary file's name (``.<basename of path>.<random><suffix>``), so a
    leftover of a killed process can be recognised.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix=suffix, dir=directory)
    try:
        try:
            _apply(fd, attributes)
            _write_all(fd, data)
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
    fsync_dir(directory)
