# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _lock: the per-volume lock file is never followed, and unused ones are removed safely."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import lock as _lock
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.lock import VolumeLock, lock_path_for, remove_unused_lock

VOL_ID = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
VOL = 'volume-' + VOL_ID


@pytest.fixture
def share(tmp_path):
    directory = tmp_path / 'share'
    directory.mkdir()
    return directory


def test_lock_file_name(share):
    assert lock_path_for(str(share), VOL_ID) == str(share / ('.volsnap-nfs-%s.lock' % VOL_ID))


def test_acquire_creates_a_private_regular_file(share):
    with VolumeLock(str(share), VOL_ID, 1) as lock:
        st = os.lstat(lock.path)
        assert st.st_mode & 0o777 == 0o600 and os.path.isfile(lock.path)


@pytest.mark.parametrize('dangling', [True, False])
def test_a_symlink_at_the_lock_path_is_refused_never_followed(share, tmp_path, dangling):
    target = tmp_path / 'outside'
    if not dangling:
        target.write_text('x')
    os.symlink(str(target), lock_path_for(str(share), VOL_ID))
    with pytest.raises(VolsnapError, match='is a symbolic link.*nothing was changed'):
        VolumeLock(str(share), VOL_ID, 1).acquire()
    assert target.exists() is (not dangling)
    if not dangling:
        assert target.read_text() == 'x'


def test_a_directory_at_the_lock_path_is_refused(share):
    os.mkdir(lock_path_for(str(share), VOL_ID))
    with pytest.raises(VolsnapError, match='not a regular file'):
        VolumeLock(str(share), VOL_ID, 1).acquire()


def test_acquire_locks_the_file_the_name_leads_to_after_a_removal(share, monkeypatch):
    """state=cleanup unlinked the file between our open and our lock: acquire starts again with a new file."""
    path = lock_path_for(str(share), VOL_ID)
    calls = []
    original = _lock._try_lock

    def try_lock(fd):
        calls.append(fd)
        if len(calls) == 1:
            os.unlink(path)  # removed by a cleanup holding the lock; we get it once that cleanup released it
        return original(fd)

    monkeypatch.setattr(_lock, '_try_lock', try_lock)
    lock = VolumeLock(str(share), VOL_ID, 1)
    lock.acquire()
    try:
        assert len(calls) == 2
        assert os.fstat(lock.fd).st_ino == os.lstat(path).st_ino
    finally:
        lock.release()


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
print('held', flush=True)
sys.stdin.read()
"""


def test_remove_unused_lock(share, tmp_path):
    path = lock_path_for(str(share), VOL_ID)
    with VolumeLock(str(share), VOL_ID, 1):
        pass
    (share / VOL).write_bytes(b'')
    assert remove_unused_lock(str(share), VOL_ID, VOL) == ([], 'kept: the volume still has files (%s)' % VOL)
    os.unlink(str(share / VOL))
    stale = share / ('.%s.info.0123456789abcdef.volsnap-tmp' % VOL)
    stale.write_text('{}')
    # held by another process: kept
    holder = subprocess.Popen([sys.executable, '-c', HOLD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        assert remove_unused_lock(str(share), VOL_ID, VOL) == ([], 'kept: another process holds the lock')
    finally:
        holder.communicate('')
    # check mode says what would go and removes nothing
    removed, why = remove_unused_lock(str(share), VOL_ID, VOL, check_mode=True)
    assert removed == [str(stale), path] and 'no process holds' in why
    assert os.path.exists(path) and stale.exists()
    removed, why = remove_unused_lock(str(share), VOL_ID, VOL)
    assert removed == [str(stale), path]
    assert not os.path.exists(path) and not stale.exists()
    assert remove_unused_lock(str(share), VOL_ID, VOL) == ([], 'no lock file')


@pytest.mark.parametrize('left', ['%s.info' % VOL, '%s.11111111-2222-4333-8444-555555555555' % VOL,
                                  '.volsnap-%s.journal' % VOL, '%s.tmp-snap-11111111-2222-4333-8444-555555555555' % VOL])
def test_remove_unused_lock_keeps_it_while_any_file_of_the_volume_is_left(share, left):
    with VolumeLock(str(share), VOL_ID, 1):
        pass
    (share / left).write_bytes(b'')
    removed, why = remove_unused_lock(str(share), VOL_ID, VOL)
    assert removed == [] and left in why
    assert os.path.exists(lock_path_for(str(share), VOL_ID))


def test_remove_unused_lock_never_removes_a_link(share, tmp_path):
    target = tmp_path / 'target'
    target.write_text('x')
    os.symlink(str(target), lock_path_for(str(share), VOL_ID))
    removed, why = remove_unused_lock(str(share), VOL_ID, VOL)
    assert removed == [] and 'symbolic link' in why
    assert os.path.islink(lock_path_for(str(share), VOL_ID)) and target.read_text() == 'x'


def test_lockf_is_per_process(share):
    """The lock a run holds in this process does not stop remove_unused_lock in another one (POSIX semantics)."""
    with VolumeLock(str(share), VOL_ID, 1) as lock:
        fd = os.open(lock.path, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # same process: granted
        finally:
            os.close(fd)
