# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The snapshot operations journaled in a share: running (a process holds the volume's lock) or pending
(interrupted: the journal is left, nobody holds the lock), for ``operation_info``.

Only names of the exact shape ``.volsnap-volume-<volume id>.journal`` are considered; each journal is read through
:class:`._nfs.volume.Journal` (no symbolic link followed, regular files only, steps rebuilt through
``SNAPSHOT_ACTIONS``, unknown actions refused): what the share holds is never trusted. A journal that fails these
checks is reported as ``unreadable`` with the reason, never as an operation.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from ansible_collections.volsnap.openstack.plugins.module_utils._base import progress
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import FILE_ID, is_file_id
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import ShareFileError, open_regular
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import ShareVolume

_JOURNAL_NAME_RE = re.compile(r'^\.volsnap-volume-(%s)\.journal\Z' % FILE_ID)


def lock_held(path: str) -> Optional[bool]:
    """Whether a process holds the POSIX record lock on the lock file ``path`` (None: no such regular file).

    Asks with F_GETLK, which takes no lock; the file is opened read-only without following links.
    """
    try:
        fd = open_regular(path)
    except ShareFileError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        request = struct.pack('hhqqi4x', fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, request)
    finally:
        os.close(fd)
    lock_type: int = struct.unpack('hhqqi4x', answer)[0]
    return lock_type != fcntl.F_UNLCK


def share_operations(share: str, volume_id: Optional[str] = None) -> List[Dict[str, Any]]:
    """The journaled operations of ``share`` (of volume ``volume_id`` only, when given), by volume id."""
    share = os.path.abspath(share)
    try:
        names = sorted(os.listdir(share))
    except OSError as exc:
        raise VolsnapError('cannot list the share %s (%s): give the directory where the volume files are'
                           % (share, exc.strerror or exc), file=share)
    operations = []
    for name in names:
        match = _JOURNAL_NAME_RE.match(name)
        if not match or (volume_id is not None and match.group(1) != volume_id):
            continue
        volume = ShareVolume.in_share(share, match.group(1))
        journal = volume.journal()
        entry: Dict[str, Any] = {
            'source': 'journal', 'kind': None, 'module': 'volume_snapshot', 'host': None, 'pid': None,
            'targets': {'volume_path': volume.path, 'volume_id': volume.volume_id, 'share': share},
            'journal': journal.path, 'step': None, 'steps': None, 'step_description': None, 'bytes_done': None,
            'bytes_total': None, 'percent': None, 'rate': None, 'eta': None, 'error': None,
        }
        try:
            if not journal.load():
                continue  # finished between the listing and the read
        except VolsnapError as exc:
            entry.update(state='unreadable', error=exc.msg)
            operations.append(entry)
            continue
        pending = journal.pending()
        held = lock_held(volume.lock_path)
        steps_total = pending.get('steps_total') or 0
        steps_done = pending.get('steps_done') or 0
        entry['targets']['snapshot_id'] = pending.get('snapshot_id')
        entry.update(
            kind='snapshot_%s' % pending.get('operation'), mode=pending.get('mode'),
            state='running' if held else 'pending',
            step=min(steps_done + 1, steps_total), steps=steps_total, step_description=pending.get('next_step'),
            percent=round(100.0 * steps_done / steps_total, 2) if steps_total else None,
            data_step_started=pending.get('started'))
        operations.append(entry)
    return operations


def list_operations(progress_dir: Optional[str], filters: Mapping[str, Optional[str]], share: Optional[str] = None,
                    remove_expired: bool = True) -> List[Dict[str, Any]]:
    """``operation_info``: the progress records of this host, then the journaled operations of ``share``, each kept
    when its targets hold every filter given."""
    try:
        records = progress.read_records(progress_dir, remove_expired=remove_expired)
    except progress.ProgressDirError as exc:
        raise VolsnapError('the progress directory %s cannot be trusted: %s. Give a directory owned by this user, '
                           'mode 0700, or remove it (the next operation creates it)' % (exc.filename, exc.strerror),
                           file=exc.filename)
    except OSError as exc:
        raise VolsnapError('cannot read the progress directory %s: %s'
                           % (exc.filename or progress_dir, exc.strerror or exc), file=exc.filename)
    operations = [progress.view(record) for record in records if progress.matches(record, filters)]
    if share is not None:
        wanted_id = filters.get('volume_id')
        operations.extend(op for op in share_operations(share, wanted_id if is_file_id(wanted_id) else None)
                          if progress.matches(op, filters))
    return operations


def wait_operations(progress_dir: Optional[str], filters: Mapping[str, Optional[str]], share: Optional[str] = None,
                    remove_expired: bool = True, timeout: float = 0.0, interval: float = 0.5,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> List[Dict[str, Any]]:
    """:func:`list_operations`, read again every ``interval`` seconds while one of them is running, for at most
    ``timeout`` seconds; returns the last reading (never fails on the timeout: the caller reads the states)."""
    deadline = clock() + timeout
    while True:
        operations = list_operations(progress_dir, filters, share=share, remove_expired=remove_expired)
        left = deadline - clock()
        if left <= 0 or not any(op['state'] == 'running' for op in operations):
            return operations
        sleep(min(interval, left))
