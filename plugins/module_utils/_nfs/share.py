# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The on-disk layout of Cinder's RemoteFS (NFS) snapshots.

* volume file ``<share>/volume-<volume id>``
* snapshot overlay ``volume-<volume id>.<snapshot id>`` (the overlay created when the snapshot
  was taken; the snapshot's data lives in its backing file)
* ``volume-<volume id>.info``: JSON ``{"active": <file>, <snapshot id>: <file>, ...}`` written by
  Cinder with ``json.dump(info, f, indent=1, sort_keys=True)`` (no trailing newline).

This file keeps that format byte for byte so a real Cinder NFS driver can take over. It holds the rules of a
share: what a name may be, how a share file is opened (never through a link, regular files only), the ``.info``
format (:class:`SnapshotInfo`). Requests reach one volume's files through :class:`._nfs.volume.ShareVolume`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import (
    FileAttributes,
    apply_attributes,
    fsync_dir,
    is_temporary_name,
    remove_if_exists,
    write_atomic as _write_atomic,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import FILE_ID, is_file_id

VOLUME_PREFIX = 'volume-'
INFO_SUFFIX = '.info'
ACTIVE_KEY = 'active'

# A Cinder id in a file name: _base.ids.FILE_ID (a UUID, dashes optional, as Cinder's own backing-file pattern).
VOLUME_NAME_RE = re.compile(r'^(%s(%s))(?:\.(.+))?\Z' % (re.escape(VOLUME_PREFIX), FILE_ID))
# Cinder remotefs: (<basedir>/[0-9a-f]+/)?<volname>(.(tmp-snap-)?[0-9a-f-]+)?(.vhd|.vhdx)?$
_BACKING_SUFFIX = r'(\.(tmp-snap-)?[0-9a-f-]+)?(\.vhd|\.vhdx)?\Z'
_BACKING_SUFFIX_RE = re.compile(_BACKING_SUFFIX)
# Cinder's temporary snapshots (create volume from an in-use volume): volume-<id>.tmp-snap-<uuid>
TMP_SNAP = 'tmp-snap-'

# The collection's own files in a share. Their temporary files end with TEMP_SUFFIX.
TEMP_SUFFIX = '.volsnap-tmp'
LOCK_PREFIX = '.volsnap-nfs-'  # not ".nfs*": that prefix belongs to the NFS client's silly-renamed files
LOCK_SUFFIX = '.lock'
_LOCK_NAME_RE = re.compile(r'^%s(%s)%s\Z' % (re.escape(LOCK_PREFIX), FILE_ID, re.escape(LOCK_SUFFIX)))


class InfoFileError(ValueError):
    """The .info file exists but is not what Cinder writes."""


class ShareFileError(OSError):
    """A file of the share is not what the collection may open: a symlink, or not a regular file."""


# --- What a name in the share may be: the one place that decides it -----------------------------------
#
# Every byte of a share is written by someone else (a guest writes its volume's content, a tenant or a
# compromised host the files and the .info), so names are judged here, once, and every module asks:
#
# * a name that qemu would parse as a protocol (``json:{...}``, ``file:``, ``nbd:``, ``http:``, any
#   ``<word>:`` before the first ``/``: qemu's ``path_has_protocol``) never names a file of the share,
#   whatever file of that literal name exists;
# * a file of volume ``volume-<id>`` is ``volume-<id>`` itself or ``volume-<id>.<snapshot uuid>``; the
#   ``.info`` file may name nothing else (not another volume's file, not itself, not a lock or a journal);
# * the collection opens share files without following symlinks, and writes only regular files it
#   creates itself (``O_CREAT | O_EXCL``) or regular files it finds (``O_NOFOLLOW``, then fstat).


def qemu_protocol(name: str) -> Optional[str]:
    """The protocol qemu would take ``name`` for (``'json'``, ``'nbd'``, ...), or None for a plain file name.

    qemu's ``path_has_protocol``: a ``:`` before the first ``/`` makes the name a protocol, and the part
    before it picks the driver; ``json:`` names carry a whole block-driver tree. Such names are never
    resolved against the overlay's directory.
    """
    head = name.split('/', 1)[0]
    if ':' in head:
        return head.split(':', 1)[0]
    return None


def own_file_kind(filename: str, volume_name: str) -> Optional[str]:
    """``'volume'`` for ``volume-<id>``, ``'snapshot'`` for ``volume-<id>.<snapshot uuid>``, else None."""
    if filename == volume_name:
        return 'volume'
    if filename.startswith(volume_name + '.') and is_file_id(filename[len(volume_name) + 1:]):
        return 'snapshot'
    return None


def is_snapshot_like(filename: str, volume_name: str) -> bool:
    """True for a snapshot file of ``volume_name``: its own (``<volume>.<uuid>``) or Cinder's temporary one
    (``<volume>.tmp-snap-<uuid>``)."""
    if not filename.startswith(volume_name):
        return False  # the cheap test first: a share may hold thousands of other volumes' files
    if own_file_kind(filename, volume_name) == 'snapshot':
        return True
    prefix = volume_name + '.' + TMP_SNAP
    return filename.startswith(prefix) and is_file_id(filename[len(prefix):])


def lock_filename(volume_id: str) -> str:
    """``.volsnap-nfs-<volume id>.lock``, the file of the per-volume lock (Cinder's ``nfs-<volume id>``)."""
    return '%s%s%s' % (LOCK_PREFIX, volume_id, LOCK_SUFFIX)


def volume_id_of_lock(filename: str) -> Optional[str]:
    """The volume id of a lock file name, or None when ``filename`` is not one."""
    match = _LOCK_NAME_RE.match(filename)
    return match.group(1) if match else None


def journal_filename(volume_name: str) -> str:
    """``.volsnap-<volume name>.journal``, the journal of volume_snapshot's operations on the volume."""
    return '.volsnap-%s.journal' % volume_name


def overlay_temporary_filename(filename: str) -> str:
    """The hidden name a new overlay (or clone output) is prepared under: ``.<name>.volsnap-tmp``."""
    return '.%s%s' % (filename, TEMP_SUFFIX)


def temporary_path(path: str) -> str:
    """``<directory>/.<name>.volsnap-tmp``: where the new file ``path`` (an overlay, a clone output) is prepared."""
    return os.path.join(os.path.dirname(path), overlay_temporary_filename(os.path.basename(path)))


def own_temporary_kind(name: str, volume_name: str) -> Optional[str]:
    """What temporary file of ``volume_name`` the name ``name`` is, or None when it can be nobody else's.

    ``'info'``: ``.<volume>.info.<random>.volsnap-tmp`` (an atomic rewrite of the ``.info`` file);
    ``'journal'``: the same for the journal; ``'overlay'``: ``.<volume>.<snapshot uuid>.volsnap-tmp`` (a new
    overlay being prepared). Names of earlier versions (``.<file>.<8 characters>.tmp``) count too.
    """
    if volume_name not in name:
        return None  # every one of them holds the volume's name: the cheap test first
    if is_temporary_name(name, volume_name + INFO_SUFFIX, TEMP_SUFFIX):
        return 'info'
    if is_temporary_name(name, journal_filename(volume_name), TEMP_SUFFIX):
        return 'journal'
    if name.startswith('.') and name.endswith(TEMP_SUFFIX):
        if own_file_kind(name[1:-len(TEMP_SUFFIX)], volume_name) == 'snapshot':
            return 'overlay'
    return None


class DirListing(object):
    """The names of a directory read once (``os.listdir``), for every check one phase of a request makes.

    What was decided from a listing is only as fresh as the listing: a request takes its own after it took the
    volume's lock (:meth:`._nfs.snapshot.VolumeSnapshot`), or shares one that started after that (a batch's chunk
    of locks, :func:`._nfs.batch.take_chunk`; :class:`._base.fresh.FreshCall`). :meth:`of_volume` gives the names
    that contain a volume's name (every file of a volume does: data, ``.info``, journal, temporaries), from an index
    built once per listing, so a share of thousands of files is scanned once per listing, not once per volume.
    :meth:`changed` and :meth:`without` give the listing after a run's own changes, sharing this one's names and
    index (a volume's cost stays the same in a big share). ``name in listing`` says whether a name is in it.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._names: Optional[FrozenSet[str]] = frozenset(names)
        self._base: Optional['DirListing'] = None
        self._added: FrozenSet[str] = frozenset()
        self._removed: FrozenSet[str] = frozenset()
        self._of_volume: Dict[str, List[str]] = {}
        self._by_length: Dict[int, Dict[str, List[str]]] = {}

    @classmethod
    def read(cls, directory: str) -> 'DirListing':
        return cls(os.listdir(directory))

    @property
    def names(self) -> FrozenSet[str]:
        """Every name (of a listing after changes: computed once, on first use)."""
        if self._names is None:
            base = self._base.names if self._base is not None else frozenset()
            self._names = (base - self._removed) | self._added
        return self._names

    def __contains__(self, name: object) -> bool:
        if self._base is None:
            return name in self.names
        return name in self._added or (name not in self._removed and name in self._base)

    def of_volume(self, volume_name: str) -> List[str]:
        """The names that contain ``volume_name`` (sorted).

        A name ``volume-...`` is looked up in an index of the listing (built once per length asked for, shared by
        every volume the listing serves: a batch's chunk), so a volume's lookup does not scan the whole share."""
        found = self._of_volume.get(volume_name)
        if found is None:
            if self._base is not None:
                found = sorted((set(self._base.of_volume(volume_name)) - self._removed)
                               | set(name for name in self._added if volume_name in name))
            elif volume_name.startswith(VOLUME_PREFIX):
                index = self._by_length.get(len(volume_name))
                if index is None:
                    index = self._by_length[len(volume_name)] = _prefix_index(self.names, len(volume_name))
                found = sorted(index.get(volume_name, ()))
            else:
                found = sorted(name for name in self.names if volume_name in name)
            self._of_volume[volume_name] = found
        return list(found)

    def without(self, names: Iterable[str]) -> 'DirListing':
        """The same listing less ``names`` (base names): what it says after this run removed them."""
        gone = set(name for name in names if name in self)
        return self.changed((), gone) if gone else self

    def changed(self, added: Iterable[str], removed: Iterable[str]) -> 'DirListing':
        """The same listing after this run made ``added`` and removed ``removed`` (base names)."""
        derived = DirListing(())
        derived._names = None
        base = self._base if self._base is not None else self
        removed_now = (self._removed | frozenset(removed)) - frozenset(added)
        derived._base = base
        derived._added = (self._added - frozenset(removed)) | frozenset(added)
        derived._removed = removed_now
        return derived


def _prefix_index(names: Iterable[str], length: int) -> Dict[str, List[str]]:
    """Every ``length``-character piece of the names that starts with ``volume-`` -> the names holding it. A name
    contains a ``volume-...`` name of that length exactly when one of its pieces is that name (every occurrence of
    ``volume-`` is indexed; it cannot overlap itself)."""
    index: Dict[str, List[str]] = {}
    for name in names:
        keys = set()
        at = name.find(VOLUME_PREFIX)
        while at != -1:
            if at + length <= len(name):
                keys.add(name[at:at + length])
            at = name.find(VOLUME_PREFIX, at + 1)
        for key in keys:
            index.setdefault(key, []).append(name)
    return index


def stale_temporaries(directory: str, volume_name: str, listing: Optional[DirListing] = None) -> List[str]:
    """The temporary files of ``volume_name`` in ``directory`` (regular files only, links never followed).

    Call it holding the volume's lock: only a run holding it makes them, so any found then is a leftover of
    a run that was killed. ``listing``: the directory's names read after the lock was taken (default: read now).
    """
    found = []
    if listing is None:
        listing = DirListing.read(directory)
    for name in listing.of_volume(volume_name):
        if own_temporary_kind(name, volume_name) is None:
            continue
        path = os.path.join(directory, name)
        try:
            lstat_regular(path)
        except OSError:
            continue  # not a regular file (or gone): not ours
        found.append(path)
    return found


def remove_stale_temporaries(directory: str, volume_name: str, check_mode: bool = False,
                             listing: Optional[DirListing] = None) -> List[str]:
    """Remove (unless ``check_mode``) the :func:`stale_temporaries` of ``volume_name``; returns their paths."""
    found = stale_temporaries(directory, volume_name, listing)
    if not check_mode and found:
        for path in found:
            remove_if_exists(path)
        fsync_dir(directory)
    return found


def volume_files(directory: str, volume_name: str, listing: Optional[List[str]] = None) -> List[str]:
    """The names in ``directory`` that belong to the volume ``volume_name`` as data or state: the volume file,
    its snapshot files (Cinder's temporary ones included), its ``.info`` file and its journal.

    Any of them, whatever its type, means the volume is still there (or was left half deleted)."""
    if listing is None:
        listing = os.listdir(directory)
    own = (volume_name + INFO_SUFFIX, journal_filename(volume_name))
    return sorted(name for name in listing
                  if name in own or own_file_kind(name, volume_name) is not None or is_snapshot_like(name, volume_name))


def info_entry_problem(key: str, filename: str, volume_name: str) -> Optional[str]:
    """Why the ``.info`` entry ``key: filename`` of ``volume_name`` is not allowed, or None when it is."""
    if key != ACTIVE_KEY and not is_file_id(key):
        return 'key %r is not a snapshot id (a UUID)' % key
    if own_file_kind(filename, volume_name) is None:
        return ('%s is not a file of %s (only %s and %s.<snapshot id> are)'
                % (filename, volume_name, volume_name, volume_name))
    return None


def os_error_file(exc: OSError, default: Optional[str] = None) -> Optional[str]:
    """The file an ``OSError`` is about: its own file name, else ``default`` (an error on a descriptor has none).

    A file published from its descriptor (``link`` of ``/proc/self/fd/<n>`` to a name in ``default``'s
    directory) is named by that new name.
    """
    filename = exc.filename
    if isinstance(filename, str) and filename.startswith('/proc/self/fd/') and isinstance(exc.filename2, str):
        other = exc.filename2
        if not os.path.isabs(other) and default:
            other = os.path.join(os.path.dirname(default), other)
        return other
    return filename or default


def os_error_text(exc: OSError, default: Optional[str] = None) -> str:
    """``<file>: <strerror> (<ERRNO NAME>)`` for the messages, never Python's ``[Errno N]`` form."""
    name = errno.errorcode.get(exc.errno or 0, '') if exc.errno else ''
    text = exc.strerror or str(exc)
    return '%s: %s%s' % (os_error_file(exc, default) or '?', text, ' (%s)' % name if name else '')


def lstat_regular(path: str) -> os.stat_result:
    """``os.lstat(path)``, refusing a symlink or anything but a regular file (:class:`ShareFileError`).

    ``OSError`` (``ENOENT``...) propagates as it is.
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise ShareFileError(errno.ELOOP, 'is a symbolic link; the collection never follows links in a share', path)
    if not stat.S_ISREG(st.st_mode):
        raise ShareFileError(errno.EINVAL, 'is not a regular file', path)
    return st


def open_regular(path: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open a share file without following a symlink; refuse anything that is not a regular file.

    With ``os.O_CREAT`` in ``flags`` a missing file is created with ``mode``; a symlink planted at
    ``path`` (even a dangling one) is refused, never followed, so nothing outside the share is created.
    Raises :class:`ShareFileError` for a symlink or a non-regular file, ``OSError`` otherwise.
    """
    flags |= getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0) | getattr(os, 'O_NONBLOCK', 0)
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ShareFileError(errno.ELOOP, 'is a symbolic link; the collection never follows links in a share',
                                 path)
        if exc.errno == errno.EISDIR:
            raise ShareFileError(errno.EISDIR, 'is not a regular file', path)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ShareFileError(errno.EINVAL, 'is not a regular file', path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def split_volume_filename(filename: str) -> Optional[Tuple[str, str, Optional[str]]]:
    """Return (volume name, volume id, suffix) for ``volume-<id>[.<suffix>]``, or None."""
    match = VOLUME_NAME_RE.match(filename)
    if not match:
        return None
    return match.group(1), match.group(2), match.group(3)


def snapshot_filename(volume_name: str, snapshot_id: str) -> str:
    return '%s.%s' % (volume_name, snapshot_id)


def info_path_for(volume_path: str) -> str:
    return volume_path + INFO_SUFFIX


def backing_name_allowed(backing: str, volume_name: str, share: str) -> bool:
    """Cinder's check of a backing file name (remotefs ``_qemu_img_info_base``).

    Cinder accepts ``<volname>[.<snapshot id or tmp-snap-id>][.vhd|.vhdx]``, optionally prefixed
    with ``<mount point base>/<share hash>/``, which for us is the share directory itself.
    """
    # One compiled suffix pattern for every volume (a pattern per volume name would be compiled per call: a share
    # audit judges thousands of volumes).
    names = [backing]
    prefix = share.rstrip('/') + '/'
    if backing.startswith(prefix):
        names.append(backing[len(prefix):])
    return any(name.startswith(volume_name) and _BACKING_SUFFIX_RE.match(name, len(volume_name)) is not None
               for name in names)


@dataclass
class SnapshotInfo:
    """The content of a volume's .info file."""

    active: str
    snapshots: Dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, str]:
        data = dict(self.snapshots)
        data[ACTIVE_KEY] = self.active
        return data

    def dumps(self) -> str:
        """Serialise exactly as Cinder's ``_write_info_file`` does."""
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)

    def foreign_entries(self, volume_name: str) -> List[str]:
        """Why each entry that does not name a file of ``volume_name`` is refused (empty when all do)."""
        problems = []
        for key, filename in sorted(self.as_dict().items()):
            why = info_entry_problem(key, filename, volume_name)
            if why is not None:
                problems.append('"%s": %s' % (key, why))
        return problems

    def snapshot_for_file(self, filename: str) -> Optional[str]:
        for snap_id, name in self.snapshots.items():
            if name == filename:
                return snap_id
        return None

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> 'SnapshotInfo':
        """The info of the mapping ``{"active": <file>, <snapshot id>: <file>, ...}`` (the one place it is built)."""
        snapshots = dict(data)
        active = snapshots.pop(ACTIVE_KEY)
        return cls(active=active, snapshots=snapshots)

    @classmethod
    def loads(cls, text: str) -> 'SnapshotInfo':
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InfoFileError('is not valid JSON (%s)' % exc)
        if not isinstance(data, dict):
            raise InfoFileError('is not a JSON object')
        active = data.get(ACTIVE_KEY)
        if not isinstance(active, str) or not active:
            raise InfoFileError('has no "active" entry')
        snapshots = {}
        for key, value in data.items():
            if key == ACTIVE_KEY:
                continue
            if not isinstance(value, str) or not value or '/' in value or value in ('.', '..'):
                raise InfoFileError('entry %r is not a file name in the volume directory' % key)
            snapshots[key] = value
        if '/' in active or active in ('.', '..'):
            raise InfoFileError('"active" is not a file name in the volume directory')
        return cls.from_dict(data)


def load_info(path: str) -> Optional[SnapshotInfo]:
    """Read a .info file; None when it does not exist. Raises InfoFileError when invalid.

    A symlink (even to a valid file) or anything but a regular file is invalid: it is never followed.
    """
    try:
        fd = open_regular(path)
    except ShareFileError as exc:
        raise InfoFileError(exc.strerror)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    with os.fdopen(fd, 'rb') as handle:
        raw = handle.read(1024 * 1024 + 1)
    if len(raw) > 1024 * 1024:
        raise InfoFileError('is larger than 1 MiB')
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        raise InfoFileError('is not UTF-8 text')
    return SnapshotInfo.loads(text)


def write_atomic(path: str, content: str, like: Optional[str] = None) -> None:
    """Write ``content`` to ``path`` atomically (:func:`._atomic.write_atomic`: temp file, fsync, rename).

    Owner, group and mode are taken from ``like`` (or from ``path`` itself when it exists), so a
    rewrite never changes who may read the file; a new file without either is 0644. The owner and
    group are copied only as root. The directory is fsynced after the rename.
    """
    reference = like if like and os.path.lexists(like) else path
    if os.path.lexists(reference):
        attributes = share_file_attributes(reference)
    else:
        attributes = FileAttributes(0o644)
    # The temporary file is created O_EXCL | O_NOFOLLOW and renamed over path: a symlink planted at path is
    # replaced, never followed.
    _write_atomic(path, content.encode('utf-8'), attributes, suffix=TEMP_SUFFIX)


def share_file_attributes(reference: str) -> FileAttributes:
    """The mode of the share file ``reference`` and, as root, its owner and group.

    ``reference`` is never followed: a symlink or anything but a regular file raises :class:`ShareFileError`
    (a planted link must not choose who may read the collection's files).
    """
    st = lstat_regular(reference)
    mode = st.st_mode & 0o7777
    if os.geteuid() == 0:
        return FileAttributes(mode, st.st_uid, st.st_gid)
    return FileAttributes(mode)


def create_share_file(path: str, attributes: FileAttributes) -> int:
    """Create the new file ``path`` (``O_CREAT | O_EXCL | O_NOFOLLOW``) with its final owner, group and mode,
    before a byte of data is written; returns a read-write descriptor.

    Whatever already has that name (a file, a symlink, even a dangling one) makes it fail with ``EEXIST``:
    nothing is followed, nothing outside the share can be created through it.
    """
    flags = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
             | getattr(os, 'O_NOCTTY', 0))
    fd = os.open(path, flags, 0o600)
    try:
        apply_attributes(fd, attributes)
    except BaseException:
        os.close(fd)
        remove_if_exists(path)
        raise
    return fd


def descriptor_path(fd: int) -> str:
    """A name another process (qemu-img) can open to reach exactly the file open as ``fd`` in this process.

    ``/proc/<pid>/fd/<fd>`` reopens the same inode, whatever has been done to its name in the share since it was
    created: a link planted under the name afterwards is never reached. Without ``/proc`` a :class:`ShareFileError`
    is raised (no other way to hand qemu-img the file, and not its name).
    """
    path = '/proc/%d/fd/%d' % (os.getpid(), fd)
    if not os.path.exists(path):
        raise ShareFileError(errno.ENOENT, '/proc is not mounted: the collection cannot hand qemu-img a file it '
                             'created without naming it in the share', path)
    return path


def publish_descriptor(fd: int, path: str) -> None:
    """Give the file open as ``fd`` the new name ``path`` (a hard link), never replacing anything at ``path``.

    The link is made from the descriptor (``linkat`` of ``/proc/self/fd/<fd>``), so the file linked is the one
    that was written, whatever was done to its temporary name meanwhile. ``EEXIST`` when ``path`` exists (a
    symlink planted there included).
    """
    directory = os.path.dirname(os.path.abspath(path))
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_CLOEXEC', 0))
    try:
        os.link('/proc/self/fd/%d' % fd, os.path.basename(path), src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                follow_symlinks=True)
    finally:
        os.close(dir_fd)


def names_descriptor(path: str, fd: int) -> bool:
    """True while ``path`` (not followed) is the file open as ``fd``."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def remove_if_same(path: str, fd: int) -> None:
    """Unlink ``path`` only while it still names the file open as ``fd`` (a symlink is never followed)."""
    if names_descriptor(path, fd):
        remove_if_exists(path)
