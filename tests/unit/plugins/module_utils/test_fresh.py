# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of what many volumes in one task share: _base/fresh.py (FreshCall), the shared directory fsyncs of
_base/atomic.py, _nfs/share.py's DirListing, and the one listing per phase of a
VolumeSnapshot. The integration tests (tests/integration/test_volume_snapshot_many.py) run real qemu-img."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base import atomic
from ansible_collections.volsnap.openstack.plugins.module_utils._base.fresh import FreshCall
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import batch
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import DirListing, stale_temporaries
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B


class Gate(object):
    """A function whose calls are numbered; the first one blocks until released (a call in flight)."""

    def __init__(self, fail_first=False):
        self.started = threading.Event()
        self.release = threading.Event()
        self.number = 0
        self.fail_first = fail_first

    def __call__(self):
        self.number += 1
        number = self.number
        if number == 1:
            self.started.set()
            assert self.release.wait(10)
            if self.fail_first:
                raise OSError(5, 'Input/output error')
        return number


def _ask(shared, into):
    try:
        into.append(shared.fresh())
    except OSError as exc:
        into.append(exc)


def test_a_caller_that_asks_while_a_call_runs_gets_the_next_call_shared_with_the_others():
    gate = Gate()
    shared = FreshCall(gate)
    first, later = [], []
    runner = threading.Thread(target=_ask, args=(shared, first))
    runner.start()
    assert gate.started.wait(10)
    # three threads ask while call 1 runs: call 1 started before they asked, so it answers none of them
    waiters = [threading.Thread(target=_ask, args=(shared, later)) for _thread in range(3)]
    for thread in waiters:
        thread.start()
    time.sleep(0.2)  # let them all wait (the outcome is the same if some ask later: they share call 2 or get 3)
    gate.release.set()
    for thread in [runner] + waiters:
        thread.join(10)
    assert first == [1]
    assert len(later) == 3 and all(number >= 2 for number in later)
    assert shared.calls == gate.number <= 3
    # a caller alone gets a call of its own
    assert shared.fresh() == gate.number
    assert shared.calls == gate.number


def test_an_error_of_a_shared_call_is_raised_in_every_caller_of_it_and_the_next_call_is_new():
    gate = Gate(fail_first=True)
    shared = FreshCall(gate)
    first = []
    runner = threading.Thread(target=_ask, args=(shared, first))
    runner.start()
    assert gate.started.wait(10)
    gate.release.set()
    runner.join(10)
    assert isinstance(first[0], OSError) and first[0].errno == 5
    assert shared.fresh() == 2


def test_fsync_dir_is_shared_inside_shared_directory_syncs_and_direct_outside(tmp_path, monkeypatch):
    calls = []
    gate = threading.Event()

    blocking = []

    def now(directory):
        calls.append(directory)
        if blocking and len(calls) == 1:
            assert gate.wait(10)

    monkeypatch.setattr(atomic, '_fsync_dir_now', now)
    directory = str(tmp_path)
    atomic.fsync_dir(directory)
    assert calls == [directory] and atomic.shared_sync_calls(directory) is None
    del calls[:]
    blocking.append(True)
    with atomic.shared_directory_syncs([directory, directory + '/']):
        assert atomic.shared_sync_calls(directory) == 0
        first = threading.Thread(target=atomic.fsync_dir, args=(directory,))
        first.start()
        while not calls:
            time.sleep(0.01)
        others = [threading.Thread(target=atomic.fsync_dir, args=(directory,)) for _thread in range(4)]
        for thread in others:
            thread.start()
        time.sleep(0.2)
        gate.set()
        for thread in [first] + others:
            thread.join(10)
        # the first call, then at most one more per asker; with all four waiting: exactly one more
        assert 2 <= len(calls) <= 5
        assert atomic.shared_sync_calls(directory) == len(calls)
    assert atomic.shared_sync_calls(directory) is None


def test_dir_listing_of_volume_and_without():
    name = 'volume-%s' % uuid.uuid4()
    other = 'volume-%s' % uuid.uuid4()
    listing = DirListing([name, name + '.info', '.%s.info.1234567890abcdef.volsnap-tmp' % name, other,
                          other + '.' + str(uuid.uuid4()), 'x-%s-y' % name])
    assert listing.of_volume(name) == sorted([name, name + '.info', '.%s.info.1234567890abcdef.volsnap-tmp' % name,
                                              'x-%s-y' % name])
    smaller = listing.without([name + '.info', 'not-there'])
    assert name + '.info' not in smaller.names and name + '.info' in listing.names
    assert listing.without(['not-there']) is listing


def test_stale_temporaries_from_a_given_listing_never_reads_the_directory(tmp_path, monkeypatch):
    name = 'volume-%s' % uuid.uuid4()
    temporary = tmp_path / ('.%s.info.1234567890abcdef.volsnap-tmp' % name)
    temporary.write_text('{}')
    listing = DirListing.read(str(tmp_path))
    monkeypatch.setattr(os, 'listdir', lambda path: pytest.fail('listed %s again' % path))
    assert stale_temporaries(str(tmp_path), name, listing) == [str(temporary)]


def fake_qemu():
    """A qemu-img runner that must not be started: the module writes a new overlay itself (_nfs/qcow2_overlay.py)."""
    def run(command):
        pytest.fail('qemu-img started: %s' % command)
    return QemuImg(run, binary='qemu-img')


def test_a_snapshot_lists_its_directory_once_per_phase(tmp_path, monkeypatch):
    volume = B.write(str(tmp_path / ('volume-%s' % uuid.uuid4())), b'', 1 << 20)
    real_listdir = os.listdir
    listed = []

    def listdir(path):
        listed.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, 'listdir', listdir)
    asked = []

    def lister(directory):
        asked.append(directory)
        return DirListing.read(directory)

    request = Request(volume_path=volume, snapshot_id=str(uuid.uuid4()))
    result = VolumeSnapshot(request, fake_qemu(), lambda: None, False, lister=lister).run()
    assert result['changed'] and result['active'] == os.path.basename(volume) + '.' + request.snapshot_id
    # before the lock: one listing; under the lock: one read after taking it; after the steps none: the one read
    # under the lock with the names the steps made (the overlay, the .info file) and removed (the journal)
    assert asked == [str(tmp_path)]
    assert listed == [str(tmp_path)] * 2
    # ... which says what a new read says
    assert result['chain'] == inspect_chain(volume, share=str(tmp_path)).as_dict()
    # a rerun changes nothing and decides before the lock exists... which it does now: under it, one listing
    del listed[:], asked[:]
    again = VolumeSnapshot(request, fake_qemu(), lambda: None, False, lister=lister).run()
    assert not again['changed']
    assert len(listed) == 2 and asked == [str(tmp_path)]
    # given the task's listing, the request reads none before the lock
    del listed[:], asked[:]
    VolumeSnapshot(request, fake_qemu(), lambda: None, True, lister=lister,
                   listing=DirListing.read(str(tmp_path))).run()
    assert len(listed) == 2  # the one given (read here), the one under the lock
    assert asked == [str(tmp_path)]


def test_a_batch_reads_the_share_once_before_the_locks_and_shares_fsyncs(tmp_path, monkeypatch):
    volumes = [B.write(str(tmp_path / ('volume-%s' % uuid.uuid4())), b'', 1 << 20) for _volume in range(6)]
    made = []
    real = batch.ShareListings

    def listings(directories):
        made.append(real(directories))
        return made[-1]

    monkeypatch.setattr(batch, 'ShareListings', listings)
    synced = []
    real_sync = atomic._fsync_dir_now
    monkeypatch.setattr(atomic, '_fsync_dir_now', lambda d: synced.append(d) or real_sync(d))
    params = {'volumes': [{'volume_path': v, 'snapshot_id': str(uuid.uuid4())} for v in volumes],
              'share': None, 'state': 'present', 'mode': 'auto', 'domain': None, 'quiesce': 'auto', 'max_depth': 100,
              'lock_timeout': 60, 'timeout': 600, 'volume_format': None, 'parallel': 3}
    result = batch.snapshot_many(params, fake_qemu(), lambda: None, False)
    assert result['changed'] and not result['failed_volumes']
    # one listing when the task starts, one for the chunk of locks (all six, taken before it), none per volume
    assert made[0].reads == 2
    # every item's .info file is written and durable; the directory fsyncs went through the shared call
    for path, item in zip(volumes, params['volumes']):
        assert os.path.exists(path + '.info')
        assert item['snapshot_id'] in open(path + '.info').read()
    assert synced and all(d == str(tmp_path) for d in synced)
    assert atomic.shared_sync_calls(str(tmp_path)) is None  # only inside the task


def _many(volumes, parallel=3, state='present', ids=None):
    return {'volumes': [{'volume_path': v, 'snapshot_id': ids[i] if ids else str(uuid.uuid4())}
                        for i, v in enumerate(volumes)],
            'share': None, 'state': state, 'mode': 'auto', 'domain': None, 'quiesce': 'auto', 'max_depth': 100,
            'lock_timeout': 60, 'timeout': 600, 'volume_format': None, 'parallel': parallel}


def test_a_batch_takes_its_locks_by_chunk_and_reads_one_listing_per_chunk(tmp_path, monkeypatch):
    volumes = [B.write(str(tmp_path / ('volume-%s' % uuid.uuid4())), b'', 1 << 20) for _volume in range(5)]
    made = []
    real = batch.ShareListings
    monkeypatch.setattr(batch, 'ShareListings', lambda directories: made.append(real(directories)) or made[-1])
    monkeypatch.setattr(batch, 'LOCK_CHUNK', 2)
    order = []
    real_take = batch.take_chunk

    def take(members, timeout, lister):
        order.append([volume.lock_path for _index, volume in members])
        return real_take(members, timeout, lister)

    monkeypatch.setattr(batch, 'take_chunk', take)
    monkeypatch.setattr(batch.lock_chunks, '__defaults__', (2,))
    ids = [str(uuid.uuid4()) for _volume in volumes]
    for parallel in (1, 3):
        del made[:], order[:]
        result = batch.snapshot_many(_many(volumes, parallel, ids=ids), fake_qemu(), lambda: None, False)
        assert not result['failed_volumes']
        # chunks of two in the order of the lock files (the order a group takes them in), one listing each
        assert [len(chunk) for chunk in order] == [2, 2, 1]
        assert sum(order, []) == sorted(sum(order, []))
        assert made[0].reads == 1 + 3
    # the first run made the snapshots (lock files did not exist: nothing was decided before the lock), the second
    # changed nothing but took the locks (they exist now) and still read one listing per chunk
    assert not result['changed']
    assert all(os.path.basename(v) + '.' + i in open(v + '.info').read() for v, i in zip(volumes, ids))


def test_a_volume_another_run_holds_is_waited_for_after_the_chunk_without_holding_other_locks(tmp_path):
    volumes = sorted(B.write(str(tmp_path / ('volume-%s' % uuid.uuid4())), b'', 1 << 20) for _volume in range(3))
    params = _many(volumes, parallel=1)
    batch.snapshot_many(_many(volumes, parallel=1), fake_qemu(), lambda: None, False)  # the lock files exist now
    busy = batch.ShareVolume.from_path(volumes[0])
    # another process holds the first volume's lock (POSIX locks are per process) for a moment
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, busy.lock_path, '0.5'], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b'locked'
    seen = []
    real_run = batch.VolumeSnapshot.under_own_lock

    def under_own_lock(snapshot):
        # waiting for its own lock, the batch holds no other volume's lock: the others are done and released
        others = [batch.ShareVolume.from_path(v).lock_path for v in volumes[1:]]
        probe = subprocess.run([sys.executable, '-c', TRY_LOCKS] + others, capture_output=True, text=True, check=True)
        seen.append(probe.stdout.split())
        return real_run(snapshot)

    try:
        batch.VolumeSnapshot.under_own_lock = under_own_lock
        result = batch.snapshot_many(params, fake_qemu(), lambda: None, False)
    finally:
        batch.VolumeSnapshot.under_own_lock = real_run
        holder.wait(timeout=30)
    assert result['changed'] and not result['failed_volumes']
    assert seen == [['free', 'free']]
    assert result['volumes'][0]['lock_waited'] > 0
    assert all(item['snapshot_id'] in open(v + '.info').read() for v, item in zip(volumes, params['volumes']))


TRY_LOCKS = r"""
import errno, fcntl, os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free")
    except OSError as exc:
        print("held" if exc.errno in (errno.EAGAIN, errno.EACCES) else "error")
    finally:
        os.close(fd)
"""

HOLD_LOCK = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_chunk_lock_is_released_when_cinder_refuses_before_the_item_runs(tmp_path, monkeypatch):
    volumes = sorted(B.write(str(tmp_path / ('volume-%s' % uuid.uuid4())), b'', 1 << 20) for _volume in range(2))
    batch.snapshot_many(_many(volumes), fake_qemu(), lambda: None, False)  # the lock files exist now
    locks = [batch.ShareVolume.from_path(v).lock_path for v in volumes]
    seen = []

    def refuse(run, reporter, operation):
        probe = subprocess.run([sys.executable, '-c', TRY_LOCKS] + locks, capture_output=True, text=True, check=True)
        seen.append(probe.stdout.split())
        raise batch.VolsnapError('Cinder refused: snapshot %s is not creating' % reporter.snapshot_id)

    monkeypatch.setattr(batch, 'run_with_report', refuse)
    with pytest.raises(batch.VolsnapError, match='2 of 2 volumes failed'):
        batch.snapshot_many(_many(volumes, parallel=1), fake_qemu(), lambda: None, False, object)
    # both taken by the chunk before either item ran; the first, refused, released before the second ran
    assert seen == [['held', 'held'], ['free', 'held']]
    probe = subprocess.run([sys.executable, '-c', TRY_LOCKS] + locks, capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ['free', 'free']


def test_dir_listing_of_volume_index_says_what_a_scan_says():
    """of_volume looks a volume-... name up in an index of the listing: the same names as scanning every name."""
    rng = random.Random(15)
    ids = [str(uuid.uuid4()) for _i in range(40)] + [uuid.uuid4().hex for _i in range(10)]
    pieces = ['volume-', 'volume-volume-', '.', '.info', '.lock', '.volsnap-tmp', 'tmp-snap-', '-', 'x', 'volume']
    names = set()
    for _i in range(3000):
        parts = [rng.choice(pieces) if rng.random() < 0.5 else rng.choice(ids)[:rng.randint(1, 36)]
                 for _j in range(rng.randint(1, 6))]
        names.add(''.join(parts))
    names |= {'volume-%s%s' % (i, suffix) for i in ids for suffix in ('', '.info', '.' + ids[0])}
    listing = DirListing(names)
    queries = ['volume-%s' % i for i in ids] + ['volume-%s' % i[:n] for i in ids[:5] for n in (1, 8, 35)]
    queries += ['volume-', 'volume', ids[0], 'volume-volume-', 'nothing-like-it', '.info']
    for query in queries:
        assert listing.of_volume(query) == sorted(name for name in names if query in name), query
        assert listing.of_volume(query) == sorted(name for name in names if query in name)  # cached


def test_dir_listing_after_changes_says_what_a_new_listing_says():
    """changed()/without() share the base listing (and its index): every answer equals a listing of the result."""
    rng = random.Random(3)
    ids = [str(uuid.uuid4()) for _i in range(20)]
    universe = ['volume-%s%s' % (i, s) for i in ids for s in ('', '.info', '.' + ids[0], '.lock')] + ['other', 'x.info']
    truth = set(rng.sample(universe, 40))
    listing = DirListing(truth)
    for _step in range(30):
        added = set(rng.sample(universe, 3))
        removed = set(rng.sample(sorted(truth | added), 3))
        if rng.random() < 0.3:
            listing, truth = listing.without(removed), truth - removed
        else:
            listing, truth = listing.changed(added, removed), (truth - removed) | added
        fresh = DirListing(truth)
        assert listing.names == fresh.names
        assert all((name in listing) == (name in truth) for name in universe)
        for i in ids[:5] + ['volume-', 'x']:
            query = 'volume-%s' % i if len(i) == 36 else i
            assert listing.of_volume(query) == fresh.of_volume(query), query
