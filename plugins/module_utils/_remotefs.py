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
from dataclasses import dataclass, field
from typing import Dict, Optional

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
    """Read a .info file; None when it does not exist. Raises InfoFileError when invalid."""
    try:
        with open(path, 'rb') as handle:
            raw = handle.read(1024 * 1024 + 1)
    except IOError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
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
