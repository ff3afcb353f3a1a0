# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The on-disk layout of Cinder's RemoteFS (NFS) snapshots.

* volume file ``<share>/volume-<volume id>``
* snapshot overlay ``volume-<volume id>.<snapshot id>`` (the overlay created when the snapshot
  was taken; the snapshot's data lives in its backing file)
* ``volume-<volume id>.info``: JSON ``{"active": <file>, <snapshot id>: <file>, ...}`` written by
  Cinder with ``json.dump(info, f, indent=1, sort_keys=True)`` (no trailing newline).

This file keeps that format byte for byte so a real Cinder NFS driver can take over.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ansible_collections.volsnap.openstack.plugins.module_utils._atomic import (
    FileAttributes,
    attributes_like,
    set_attributes,
    write_atomic as _write_atomic,
)

VOLUME_PREFIX = 'volume-'
INFO_SUFFIX = '.info'
ACTIVE_KEY = 'active'

# A Cinder id: a UUID (Cinder always uses them); accepted with or without dashes as Cinder's
# own backing-file pattern does, but never anything that could be a path.
_ID = r'[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}'
ID_RE = re.compile(r'^%s\Z' % _ID)
VOLUME_NAME_RE = re.compile(r'^(%s(%s))(?:\.(.+))?\Z' % (re.escape(VOLUME_PREFIX), _ID))
# Cinder remotefs: (<basedir>/[0-9a-f]+/)?<volname>(.(tmp-snap-)?[0-9a-f-]+)?(.vhd|.vhdx)?$
_BACKING_SUFFIX = r'(\.(tmp-snap-)?[0-9a-f-]+)?(\.vhd|\.vhdx)?\Z'


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
    if filename.startswith(volume_name + '.') and ID_RE.match(filename[len(volume_name) + 1:]):
        return 'snapshot'
    return None


def info_entry_problem(key: str, filename: str, volume_name: str) -> Optional[str]:
    """Why the ``.info`` entry ``key: filename`` of ``volume_name`` is not allowed, or None when it is."""
    if key != ACTIVE_KEY and not is_cinder_id(key):
        return 'key %r is not a snapshot id (a UUID)' % key
    if own_file_kind(filename, volume_name) is None:
        return ('%s is not a file of %s (only %s and %s.<snapshot id> are)'
                % (filename, volume_name, volume_name, volume_name))
    return None


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
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ShareFileError(errno.EINVAL, 'is not a regular file', path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_cinder_id(value: str) -> bool:
    return bool(ID_RE.match(value or ''))


def split_volume_filename(filename: str):
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
    prefix = '(%s/)?' % re.escape(share.rstrip('/'))
    return re.match('^%s%s%s' % (prefix, re.escape(volume_name), _BACKING_SUFFIX), backing) is not None


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
        return cls(active=active, snapshots=snapshots)


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
    reference = like if like and os.path.exists(like) else path
    if os.path.exists(reference):
        attributes = attributes_like(reference, group_when_unprivileged=False)
    else:
        attributes = FileAttributes(0o644)
    _write_atomic(path, content.encode('utf-8'), attributes)


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_owner_mode(reference: str, path: str) -> None:
    """Give ``path`` the mode (and, as root, the owner and group) of ``reference``."""
    set_attributes(path, attributes_like(reference, group_when_unprivileged=False))


def remove_if_exists(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
