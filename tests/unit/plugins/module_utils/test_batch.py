# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _nfs/batch.py: many volumes in one volume_snapshot task (group=false).

The pure logic (item checks, order, failure aggregation, bounded parallelism, one libvirt listing and one Cinder
client per task) with fakes; the integration tests (tests/integration/test_volume_snapshot_many.py) run real
qemu-img.
"""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import batch
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.batch import (
    BatchItem,
    LockedApi,
    batch_items,
    batch_result,
    run_batch,
    shared_factory,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import DiskInfo

V = ['%08d-1111-4222-8333-444444444444' % i for i in range(6)]
S = ['%08d-aaaa-4bbb-8ccc-dddddddddddd' % i for i in range(6)]


def items(n):
    return [BatchItem(volume_path='/share/volume-%s' % V[i], snapshot_id=S[i]) for i in range(n)]


def test_batch_items_by_path_and_by_id():
    got = batch_items([{'volume_path': '/a/volume-%s' % V[0], 'snapshot_id': S[0]},
                       {'volume_id': V[1], 'snapshot_id': S[1], 'disk': 'vdb'}], '/share', 'present')
    assert got == [BatchItem('/a/volume-%s' % V[0], S[0]),
                   BatchItem('/share/volume-%s' % V[1], S[1], volume_id=V[1], disk='vdb')]


def test_batch_items_refuses_every_problem_at_once_before_anything_runs():
    with pytest.raises(VolsnapError) as err:
        batch_items([{'volume_id': V[0], 'snapshot_id': S[0]},      # no share
                     {'volume_path': '/s/volume-%s' % V[1]},         # no snapshot id for present
                     {'snapshot_id': S[2]}], None, 'present')        # no volume at all
    msg = err.value.msg
    assert 'nothing was run' in msg
    assert 'volumes[0] gives volume_id %s but the task has no share' % V[0] in msg
    assert 'volumes[1] (/s/volume-%s) has no snapshot_id, which state=present needs' % V[1] in msg
    assert 'volumes[2] names no volume' in msg
    assert len(err.value.details['problems']) == 3


def test_batch_items_refuses_a_volume_listed_twice():
    with pytest.raises(VolsnapError) as err:
        batch_items([{'volume_path': '/s/volume-%s' % V[0], 'snapshot_id': S[0]},
                     {'volume_id': V[0], 'snapshot_id': S[1]}], '/s/', 'absent')
    assert 'volumes[1] lists /s/volume-%s again (already volumes[0])' % V[0] in err.value.msg


def test_batch_items_without_snapshot_id_for_resumed_and_cleanup():
    for state in ('resumed', 'cleanup', 'abandoned'):
        assert batch_items([{'volume_id': V[0]}], '/s', state) == [BatchItem('/s/volume-%s' % V[0], None,
                                                                             volume_id=V[0])]


def test_batch_items_refuses_a_volume_id_that_is_not_an_id():
    with pytest.raises(VolsnapError) as err:
        batch_items([{'volume_id': '../etc', 'snapshot_id': S[0]}], '/s', 'present')
    assert err.value.msg.startswith('the volumes option is not valid')


def test_run_batch_keeps_the_input_order_whatever_finishes_first():
    def run_one(item):
        time.sleep(0.001 * (6 - V.index(item.volume_path.split('volume-')[1])))  # the first finishes last
        return {'changed': True, 'snapshot_id': item.snapshot_id}

    outcomes = run_batch(items(6), run_one, 6)
    assert [o['snapshot_id'] for o in outcomes] == S
    assert [o['volume_path'] for o in outcomes] == ['/share/volume-%s' % v for v in V]


def test_run_batch_never_runs_more_than_parallel_at_once():
    lock = threading.Lock()
    state = {'now': 0, 'most': 0}
    gate = threading.Barrier(2, timeout=5)

    def run_one(item):
        with lock:
            state['now'] += 1
            state['most'] = max(state['most'], state['now'])
        try:
            gate.wait()  # two at a time must be possible: the barrier of 2 releases only then
        except threading.BrokenBarrierError:
            pass
        with lock:
            state['now'] -= 1
        return {'changed': False}

    outcomes = run_batch(items(6), run_one, 2)
    assert state['most'] == 2
    assert all(not o.get('failed') for o in outcomes)


def test_run_batch_parallel_one_runs_in_order_in_this_thread():
    seen = []
    outcomes = run_batch(items(3), lambda item: seen.append((item.snapshot_id, threading.current_thread())) or {},
                         1)
    assert [s for s, _t in seen] == S[:3]
    assert all(t is threading.current_thread() for _s, t in seen)
    assert len(outcomes) == 3


def test_run_batch_refuses_parallel_below_one():
    with pytest.raises(VolsnapError, match='parallel must be 1 or more'):
        run_batch(items(1), lambda item: {}, 0)


def test_a_failed_item_does_not_stop_the_others_and_keeps_its_details():
    def run_one(item):
        if item.snapshot_id == S[1]:
            raise VolsnapError('the .info file is not writable', pending=None, rolled_back=True, diff={'x': 1})
        if item.snapshot_id == S[2]:
            raise KeyError('boom')
        return {'changed': True, 'snapshot_id': item.snapshot_id}

    outcomes = run_batch(items(4), run_one, 2)
    assert [o.get('failed', False) for o in outcomes] == [False, True, True, False]
    assert outcomes[1]['msg'] == 'the .info file is not writable'
    assert outcomes[1]['rolled_back'] is True and outcomes[1]['changed'] is False
    assert 'diff' not in outcomes[1]
    assert outcomes[2]['msg'].startswith('internal error on /share/volume-%s: KeyError' % V[2])
    assert outcomes[3]['changed'] is True


def test_batch_result_fails_naming_the_failed_volumes_with_every_outcome():
    outcomes = [{'volume_path': 'a', 'changed': True, 'diff': {'before': '', 'after': 'x'}},
                {'volume_path': 'b', 'changed': False, 'failed': True, 'msg': 'no space'},
                {'volume_path': 'c', 'changed': False}]
    with pytest.raises(VolsnapError) as err:
        batch_result(outcomes, check_mode=False)
    assert err.value.msg.startswith('1 of 3 volumes failed: b. The 2 other volumes succeeded and are committed.')
    assert 'run the same task again' in err.value.msg
    assert err.value.details['failed_volumes'] == ['b']
    assert err.value.details['changed'] is True
    assert [v['volume_path'] for v in err.value.details['volumes']] == ['a', 'b', 'c']
    assert all('diff' not in v for v in err.value.details['volumes'])


def test_batch_result_in_check_mode_says_nothing_changed():
    with pytest.raises(VolsnapError) as err:
        batch_result([{'volume_path': 'a', 'failed': True, 'msg': 'x'}, {'volume_path': 'b', 'changed': True}],
                     check_mode=True)
    assert 'Check mode: nothing was changed, the 1 other volume would succeed' in err.value.msg


def test_batch_result_lists_the_first_ten_failed_in_msg():
    outcomes = [{'volume_path': 'v%02d' % i, 'failed': True, 'msg': 'x'} for i in range(12)]
    with pytest.raises(VolsnapError) as err:
        batch_result(outcomes, check_mode=False)
    assert 'v09 and 2 more (all in failed_volumes)' in err.value.msg
    assert len(err.value.details['failed_volumes']) == 12


def test_batch_result_collects_the_diffs_of_the_items_that_changed():
    outcomes = [{'volume_path': 'a', 'changed': True, 'diff': {'before': '', 'after': 'x', 'before_header': 'a.info'}},
                {'volume_path': 'b', 'changed': False},
                {'volume_path': 'c', 'changed': True, 'diff': {'before': 'x', 'after': 'y', 'before_header': 'c.info'}}]
    result = batch_result(outcomes, check_mode=False)
    assert result['changed'] is True and result['failed_volumes'] == []
    assert [d['before_header'] for d in result['diff']] == ['a.info', 'c.info']
    assert 'diff' not in batch_result(outcomes, check_mode=False, want_diff=False)
    assert batch_result([], check_mode=False) == {'changed': False, 'volumes': [], 'failed_volumes': []}


class FakeLibvirt(object):
    def __init__(self):
        self.scans = 0
        self.made = 0
        self.uri = 'test:///fake'

    def running_disks(self):
        self.scans += 1
        time.sleep(0.01)
        return [('dom1', DiskInfo(target='vdb', serial=V[0], source='/share/volume-%s' % V[0], format='raw',
                                  disk_type='file', chain=[('/share/volume-%s' % V[0], 'raw')]))]


def test_one_libvirt_connection_and_one_listing_of_running_domains_per_task():
    made = []

    def factory():
        made.append(FakeLibvirt())
        return made[-1]

    get = shared_factory(factory)
    results = []

    def use(path):
        results.append(get().running_disks_using([path]))

    threads = [threading.Thread(target=use, args=('/share/volume-%s' % v,)) for v in V]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and made[0].scans == 1
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, 0, 1]
    assert get().uri == 'test:///fake'  # everything else goes to the connection


def test_shared_factory_without_bindings_gives_none():
    calls = []
    get = shared_factory(lambda: calls.append(1))
    assert get() is None and get() is None
    assert calls == [1]


def test_locked_api_makes_one_call_at_a_time():
    class Api(object):
        name = 'cinder'

        def __init__(self):
            self.inside = 0
            self.most = 0

        def get_snapshot(self, snapshot_id):
            self.inside += 1
            self.most = max(self.most, self.inside)
            time.sleep(0.005)
            self.inside -= 1
            return {'id': snapshot_id}

    api = Api()
    locked = LockedApi(api)
    threads = [threading.Thread(target=locked.get_snapshot, args=(s,)) for s in S]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert api.most == 1
    assert locked.name == 'cinder'


def test_snapshot_many_reports_each_item_with_one_cinder_client(monkeypatch):
    made = []
    reported = []

    class Snapshot(object):
        def __init__(self, request, qemu, libvirt, check_mode, **shared):
            self.req = request

        def before_lock(self):  # decided without the lock, the result returned under the Cinder report
            return {'changed': True, 'snapshot_id': self.req.snapshot_id, 'state': self.req.state}

    def fake_report(run, reporter, operation):
        reported.append((reporter.snapshot_id, reporter.volume_id, operation, type(reporter.api).__name__))
        return run()

    monkeypatch.setattr(batch, 'VolumeSnapshot', Snapshot)
    monkeypatch.setattr(batch, 'run_with_report', fake_report)
    params = {'volumes': [{'volume_id': V[0], 'snapshot_id': S[0]},
                          {'volume_path': '/s/volume-%s' % V[1], 'snapshot_id': S[1]}],
              'share': '/s', 'state': 'present', 'mode': 'auto', 'domain': None, 'quiesce': True, 'max_depth': 100,
              'lock_timeout': 60, 'timeout': 600, 'volume_format': None, 'parallel': 2}
    result = batch.snapshot_many(params, object(), lambda: None, False, lambda: made.append(1) or object())
    assert made == [1]
    assert sorted(reported) == [(S[0], V[0], 'create', 'LockedApi'), (S[1], V[1], 'create', 'LockedApi')]
    assert [v['snapshot_id'] for v in result['volumes']] == S[:2]
