# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _snapshot_ops: the journal, and how online steps judge libvirt's answers.

libvirt and qemu-img are fakes here (the integration tests run the real ones): the fake libvirt
answers what a domain's XML would say, the fake runner records the qemu-img command lines.
"""

from __future__ import annotations

import errno
import json
import os
import struct

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_exec import Executor, overlay_data_problem
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_plan import SNAPSHOT_ACTIONS, Plan
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import Journal, ShareVolume
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B

VOL = 'volume-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
S1 = '11111111-2222-4333-8444-555555555555'
S2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
F1 = '%s.%s' % (VOL, S1)
F2 = '%s.%s' % (VOL, S2)
INFO = {'active': F2, S1: F1, S2: F2}


def step(action, stage, args):
    """A step of the snapshot plans, built as the planner builds it (through SNAPSHOT_ACTIONS)."""
    return SNAPSHOT_ACTIONS.step(action, stage, **args)


class FakeDomain(object):
    def __init__(self, name, running=True):
        self._name = name
        self.running = running

    def name(self):
        return self._name


class FakeLibvirt(object):
    """Answers as libvirt would for one domain whose disk vdb runs ``chain`` (active first)."""

    def __init__(self, chain, running=True, exists=True, job_effect=True):
        self.chain = list(chain)
        self.dom = FakeDomain('instance-1', running) if exists else None
        self.job_effect = job_effect
        self.calls = []

    def find_domain(self, name):
        return self.dom

    def is_running(self, dom):
        return dom.running

    def disk_source(self, dom, disk):
        return self.chain[0]

    def disk_chain_paths(self, dom, disk):
        return list(self.chain)

    def job_running(self, dom, disk):
        if not dom.running:
            raise AssertionError('blockJobInfo on a stopped domain fails in libvirt')
        return False

    def wait_job(self, dom, disk, timeout):
        self.calls.append('wait')

    def block_commit(self, dom, disk, base, top):
        self.calls.append(('commit', top, base))
        if self.job_effect:
            self.chain.remove(top)

    def block_rebase(self, dom, disk, base):
        self.calls.append(('rebase', base))
        if self.job_effect:
            self.chain[1:] = self.chain[self.chain.index(base):] if base else []

    def external_snapshot(self, dom, disk, overlay, quiesce):
        self.calls.append(('snapshot', overlay))
        self.chain.insert(0, overlay)
        return False


class Recorder(object):
    def __init__(self):
        self.argv = []

    def __call__(self, argv):
        self.argv.append(argv[1:])
        return 0, '', ''


@pytest.fixture
def share(tmp_path):
    """volume-<id> (raw) <- F1 <- F2 (active), with the .info file."""
    directory = tmp_path / 'share'
    directory.mkdir()
    B.write(str(directory / VOL), b'\x00' * 4096, size=1 << 20)
    B.write_qcow2(directory, F1, size=1 << 20, backing=VOL, backing_fmt='raw')
    B.write_qcow2(directory, F2, size=1 << 20, backing=F1, backing_fmt='qcow2')
    B.write(str(directory / (VOL + '.info')), B.info_text(F2, {S1: F1, S2: F2}).encode('utf-8'))
    return directory


def delete_plan(share, block_step):
    info_after = {'active': F2, S2: F2}
    return Plan('delete', VOL[7:], S1, 'online', steps=[
        block_step,
        step('write_info', 'complete', {'path': str(share / (VOL + '.info')), 'info': info_after}),
        step('delete_file', 'complete', {'file': str(share / F1)}),
    ], info_before=dict(INFO), info_after=info_after)


def commit_step(share):
    return step('block_commit', 'compute', {'domain': 'instance-1', 'disk': 'vdb', 'top': str(share / F1),
                                            'base': str(share / VOL)})


def run_plan(share, plan, lv, runner=None):
    journal = Journal(ShareVolume(str(share), VOL[7:]).journal_path)
    journal.begin(plan)
    Executor(QemuImg(runner or Recorder()), lv).run(journal)
    return journal


def test_journal_round_trip_and_unreadable(share):
    path = ShareVolume(str(share), VOL[7:]).journal_path
    journal = Journal(path)
    assert journal.load() is False
    plan = delete_plan(share, commit_step(share))
    journal.begin(plan)
    journal.advance(2, 'complete')
    again = Journal(path)
    assert again.load() and again.plan == plan and (again.done, again.stage) == (2, 'complete')
    with open(path, 'w') as handle:
        handle.write('{"plan": ')
    with pytest.raises(VolsnapError, match='journal .* of an interrupted operation is unreadable'):
        Journal(path).load()


def test_online_commit_runs_and_finishes(share):
    lv = FakeLibvirt([str(share / F2), str(share / F1), str(share / VOL)])
    run_plan(share, delete_plan(share, commit_step(share)), lv)
    assert lv.calls == [('commit', str(share / F1), str(share / VOL)), 'wait']
    assert not (share / F1).exists() and not os.path.exists(ShareVolume(str(share), VOL[7:]).journal_path)
    assert json.loads((share / (VOL + '.info')).read_text()) == {'active': F2, S2: F2}


def test_online_commit_already_done_is_not_redone(share):
    lv = FakeLibvirt([str(share / F2), str(share / VOL)])
    run_plan(share, delete_plan(share, commit_step(share)), lv)
    assert lv.calls == []


@pytest.mark.parametrize('job', ['commit', 'rebase'])
def test_a_job_that_ends_without_its_effect_deletes_nothing(share, job):
    lv = FakeLibvirt([str(share / F2), str(share / F1), str(share / VOL)], job_effect=False)
    if job == 'commit':
        block = commit_step(share)
    else:
        block = step('block_rebase', 'compute', {'domain': 'instance-1', 'disk': 'vdb', 'top': str(share / F2),
                                                 'base': str(share / VOL)})
    info_before = (share / (VOL + '.info')).read_text()
    # The job wrote nothing (the files are untouched) and nothing else ran: rolled back, the volume is not blocked.
    with pytest.raises(VolsnapError, match='the job failed or was cancelled. Nothing was deleted') as failed:
        run_plan(share, delete_plan(share, block), lv)
    assert 'it was rolled back' in failed.value.msg and failed.value.details['rolled_back'] is True
    assert failed.value.details['pending'] is None
    assert (share / F1).exists() and (share / (VOL + '.info')).read_text() == info_before
    assert not os.path.exists(ShareVolume(str(share), VOL[7:]).journal_path)


def test_a_commit_started_by_an_earlier_attempt_stays_pending(share):
    """A blockCommit that a killed run started may have written part of the snapshot's data: never rolled back."""
    lv = FakeLibvirt([str(share / F2), str(share / F1), str(share / VOL)], job_effect=False)
    journal = Journal(ShareVolume(str(share), VOL[7:]).journal_path)
    journal.begin(delete_plan(share, commit_step(share)))
    journal.start(0)  # as a run killed during the job leaves it
    with pytest.raises(VolsnapError, match='It was not rolled back: step 1 .* has started') as failed:
        Executor(QemuImg(Recorder()), lv).run(journal)
    assert failed.value.details['rolled_back'] is False
    assert failed.value.details['pending']['steps_done'] == 0 and failed.value.details['pending']['started']
    assert 'state=resumed' in failed.value.msg
    again = Journal(ShareVolume(str(share), VOL[7:]).journal_path)
    assert again.load() and (again.done, again.started) == (0, 0)


def test_stopped_domain_commits_offline(share):
    lv = FakeLibvirt([str(share / F2)], running=False)
    runner = Recorder()
    run_plan(share, delete_plan(share, commit_step(share)), lv, runner)
    assert runner.argv == [
        ['commit', '-q', '-f', 'qcow2', '-t', 'writeback', '-d', str(share / F1)],
        ['rebase', '-q', '-u', '-f', 'qcow2', '-b', VOL, '-F', 'raw', str(share / F2)],
    ]
    assert lv.calls == []


def test_stopped_domain_commit_already_merged_in_the_headers(share):
    B.write_qcow2(share, F2, size=1 << 20, backing=VOL, backing_fmt='raw')
    runner = Recorder()
    run_plan(share, delete_plan(share, commit_step(share)), FakeLibvirt([str(share / F2)], exists=False), runner)
    assert runner.argv == []


@pytest.mark.parametrize('base', [VOL, None])
def test_stopped_domain_pulls_offline(share, base):
    lv = FakeLibvirt([str(share / F2)], running=False)
    runner = Recorder()
    pull = step('block_rebase', 'compute', {'domain': 'instance-1', 'disk': 'vdb', 'top': str(share / F2),
                                            'base': str(share / base) if base else None})
    run_plan(share, delete_plan(share, pull), lv, runner)
    expected = ['-b', VOL, '-F', 'raw'] if base else ['-b', '']
    assert runner.argv == [['rebase', '-q', '-f', 'qcow2', '-t', 'writeback'] + expected + [str(share / F2)]]


def create_plan(share, new):
    info_after = dict(INFO, active=new.name)
    return Plan('create', VOL[7:], S2, 'online', steps=[
        step('libvirt_snapshot', 'compute', {'domain': 'instance-1', 'disk': 'vdb', 'file': str(new),
                                             'quiesce': 'auto'}),
        step('write_info', 'complete', {'path': str(share / (VOL + '.info')), 'info': info_after}),
    ], info_before=dict(INFO), info_after=info_after)


@pytest.mark.parametrize('domain', ['running', 'stopped', 'undefined'])
def test_libvirt_snapshot_on_a_domain_that_stopped(share, domain):
    new = share / ('%s.%s' % (VOL, '99999999-8888-4777-8666-555555555555'))
    B.write_qcow2(share, new.name, size=1 << 20, backing=F2, backing_fmt='qcow2')
    lv = FakeLibvirt([str(share / F2)], running=domain == 'running', exists=domain != 'undefined')
    run_plan(share, create_plan(share, new), lv)
    # libvirt switches a stopped domain's definition too; an undefined domain has nothing to switch
    assert lv.calls == ([] if domain == 'undefined' else [('snapshot', str(new))])
    assert json.loads((share / (VOL + '.info')).read_text())['active'] == new.name


def test_journal_is_rewritten_after_compute_steps_only(share, monkeypatch):
    writes = []
    original = Journal._write

    def counting(self):
        writes.append((self.done, self.stage, self.started))
        original(self)

    monkeypatch.setattr(Journal, '_write', counting)
    lv = FakeLibvirt([str(share / F2), str(share / F1), str(share / VOL)])
    run_plan(share, delete_plan(share, commit_step(share)), lv)
    # begin, the block commit starting (a data step: from then on it may be partly done), then after it; .info and
    # delete are idempotent and simply run again after a crash
    assert writes == [(0, 'begin', None), (0, 'begin', 0), (1, 'compute', None)]


# ---- failures: journal writes, rollback, abandon (issue 12 items 6 and 8)

def test_journal_records_a_started_data_step_and_reads_older_journals_conservatively(share):
    path = ShareVolume(str(share), VOL[7:]).journal_path
    journal = Journal(path)
    journal.begin(delete_plan(share, commit_step(share)))
    journal.start(0)
    again = Journal(path)
    assert again.load() and (again.done, again.started) == (0, 0)
    assert again.pending() == {'journal': path, 'operation': 'delete', 'snapshot_id': S1, 'mode': 'online',
                               'steps_done': 0, 'steps_total': 3, 'next_step': commit_step(share).description,
                               'started': True}
    journal.advance(1, 'compute')
    assert Journal(path).load() and journal.started is None
    data = json.loads(open(path).read())
    del data['started']  # a journal written before the key existed: any step may have started
    with open(path, 'w') as handle:
        json.dump(data, handle)
    old = Journal(path)
    assert old.load() and old.started is not None
    for bad in ({'started': 'yes'}, {'started': True}, {'done': 7}, {'done': -1}, {'plan': {}}):
        with open(path, 'w') as handle:
            json.dump(dict(data, **bad), handle)
        with pytest.raises(VolsnapError, match='unreadable'):
            Journal(path).load()


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_journal_write_that_fails_leaves_the_old_journal_and_no_temporary_file(share, monkeypatch):
    from ansible_collections.volsnap.openstack.plugins.module_utils._base import atomic as _atomic
    path = ShareVolume(str(share), VOL[7:]).journal_path
    journal = Journal(path)
    listing = sorted(os.listdir(str(share)))
    monkeypatch.setattr(_atomic, '_write_all', _no_space)
    with pytest.raises(OSError):
        journal.begin(delete_plan(share, commit_step(share)))
    assert sorted(os.listdir(str(share))) == listing  # no journal, no temporary file
    monkeypatch.undo()
    journal.begin(delete_plan(share, commit_step(share)))
    text = open(path).read()
    monkeypatch.setattr(_atomic, '_write_all', _no_space)
    with pytest.raises(OSError):
        journal.advance(1, 'compute')
    assert open(path).read() == text and (journal.done, journal.stage) == (0, 'begin')  # the object says what the file says
    assert sorted(os.listdir(str(share))) == sorted(listing + [os.path.basename(path)])


def test_a_data_step_whose_start_cannot_be_recorded_does_not_run_and_is_rolled_back(share, monkeypatch):
    from ansible_collections.volsnap.openstack.plugins.module_utils._base import atomic as _atomic
    lv = FakeLibvirt([str(share / F2), str(share / F1), str(share / VOL)])
    journal = Journal(ShareVolume(str(share), VOL[7:]).journal_path)
    journal.begin(delete_plan(share, commit_step(share)))
    monkeypatch.setattr(_atomic, '_write_all', _no_space)
    with pytest.raises(VolsnapError) as failed:
        Executor(QemuImg(Recorder()), lv).run(journal)
    msg = failed.value.msg
    assert msg.startswith('step 1 of 3 (libvirt blockCommit') and 'could not record that it starts' in msg
    assert 'No space left on device (ENOSPC)' in msg and '[Errno' not in msg
    assert 'it was rolled back' in msg and failed.value.details['pending'] is None
    assert lv.calls == [] and not os.path.exists(journal.path)


def test_a_journal_that_cannot_record_a_done_step_says_so_and_stays_pending(share, monkeypatch):
    from ansible_collections.volsnap.openstack.plugins.module_utils._base import atomic as _atomic
    lv = FakeLibvirt([str(share / F2), str(share / F1), str(share / VOL)])
    journal = Journal(ShareVolume(str(share), VOL[7:]).journal_path)
    journal.begin(delete_plan(share, commit_step(share)))
    original = Journal.advance

    def advance(self, done, stage, write=True):
        monkeypatch.setattr(_atomic, '_write_all', _no_space)
        original(self, done, stage, write)

    monkeypatch.setattr(Journal, 'advance', advance)
    with pytest.raises(VolsnapError) as failed:
        Executor(QemuImg(Recorder()), lv).run(journal)
    msg = failed.value.msg
    assert 'it was done, but the journal %s could not record it' % journal.path in msg
    # the merge is applied: never undone; the journal still says step 1 runs next (it checks its effect first)
    assert 'It was not rolled back: step 1 (' in msg and 'has started' in msg
    assert failed.value.details['rolled_back'] is False
    assert failed.value.details['pending']['steps_done'] == 0 and 'state=resumed' in msg


def with_data_cluster(image: bytes) -> bytes:
    """``image`` with its first L1 entry pointing at an L2 table (a cluster was written through it)."""
    out = bytearray(image)
    l1_offset = struct.unpack('>Q', bytes(out[40:48]))[0]
    out.extend(b'\x00' * max(0, l1_offset + 8 - len(out)))
    out[l1_offset:l1_offset + 8] = struct.pack('>Q', (1 << 63) | 0x30000)
    return bytes(out)


def test_overlay_data_problem(tmp_path):
    empty = tmp_path / 'empty'
    empty.write_bytes(b'')
    assert overlay_data_problem(str(empty)) is None
    assert overlay_data_problem(str(B.write(tmp_path / 'raw', b'\x01' * 4096))) == 'is not a qcow2 file'
    fresh = B.write_qcow2(tmp_path, 'fresh', size=1 << 30, backing=VOL, backing_fmt='raw')
    assert overlay_data_problem(fresh) is None
    data = B.write(tmp_path / 'written', with_data_cluster(open(fresh, 'rb').read()))
    assert 'has data clusters' in overlay_data_problem(data)
    snapshots = bytearray(open(fresh, 'rb').read())
    snapshots[60:64] = struct.pack('>I', 1)
    assert overlay_data_problem(B.write(tmp_path / 'snapshots', bytes(snapshots))) == 'has internal snapshots'
    os.symlink(fresh, str(tmp_path / 'link'))
    assert overlay_data_problem(str(tmp_path / 'link')) == 'is not a regular file'


def online_create(share, new):
    plan = create_plan(share, new)
    args = {'file': str(new), 'backing': F2, 'backing_format': 'qcow2', 'size': 1 << 20, 'like': str(share / F2)}
    plan.steps.insert(0, step('create_overlay', 'compute', args))
    return plan


@pytest.mark.parametrize('domain', ['uses-overlay', 'does-not', 'undefined'])
def test_undo_of_an_online_create_asks_libvirt_whether_the_guest_writes_into_the_overlay(share, domain):
    new = share / ('%s.%s' % (VOL, '99999999-8888-4777-8666-555555555555'))
    B.write_qcow2(share, new.name, size=1 << 20, backing=F2, backing_fmt='qcow2')
    chain = [str(new), str(share / F2)] if domain == 'uses-overlay' else [str(share / F2)]
    lv = FakeLibvirt(chain, exists=domain != 'undefined')
    journal = Journal(ShareVolume(str(share), VOL[7:]).journal_path)
    journal.begin(online_create(share, new))
    journal.advance(1, 'compute')  # the overlay is made; libvirt's snapshot is next (and may have been taken)
    actions, files, refusal = Executor(QemuImg(Recorder()), lv).undo_plan(journal)
    if domain == 'uses-overlay':
        assert files == [] and 'already uses %s' % new in refusal and 'state=resumed' in refusal
        return
    assert refusal is None and files == [str(new)]
    assert actions == ['removed %s (the overlay, which held no data and nothing used)' % new,
                       'removed the journal %s' % journal.path]
    Executor(QemuImg(Recorder()), lv).undo(journal, files)
    assert not new.exists() and not os.path.exists(journal.path)


def test_undo_of_a_create_refuses_an_overlay_with_data_or_a_recorded_info(share):
    new = share / ('%s.%s' % (VOL, '99999999-8888-4777-8666-555555555555'))
    B.write(new, with_data_cluster(B.qcow2(size=1 << 20, backing=F2, backing_fmt='qcow2')))
    lv = FakeLibvirt([str(share / F2)], exists=False)
    journal = Journal(ShareVolume(str(share), VOL[7:]).journal_path)
    journal.begin(online_create(share, new))
    _actions, _files, refusal = Executor(QemuImg(Recorder()), lv).undo_plan(journal)
    assert 'has data clusters' in refusal
    B.write_qcow2(share, new.name, size=1 << 20, backing=F2, backing_fmt='qcow2')
    B.write(str(share / (VOL + '.info')), B.info_text(new.name, {S1: F1, S2: F2}).encode())
    _actions, _files, refusal = Executor(QemuImg(Recorder()), lv).undo_plan(journal)
    assert 'already records the operation' in refusal


def test_undo_of_a_delete(share):
    lv = FakeLibvirt([str(share / F2), str(share / F1), str(share / VOL)])
    executor = Executor(QemuImg(Recorder()), lv)
    journal = Journal(ShareVolume(str(share), VOL[7:]).journal_path)
    journal.begin(delete_plan(share, commit_step(share)))
    actions, files, refusal = executor.undo_plan(journal)
    assert refusal is None and files == [] and actions[0].startswith('removed the journal')
    journal.start(0)
    assert 'has started' in executor.undo_plan(journal)[2]
    assert executor.undo_plan(journal, proven=0)[2] is None  # this very attempt proved it wrote nothing
    journal.advance(1, 'compute')
    assert 'is already applied' in executor.undo_plan(journal)[2]
    # a pull (blockRebase) only copies what the active file shows: abandoned unless the header moved or a job runs
    pull = step('block_rebase', 'compute', {'domain': 'instance-1', 'disk': 'vdb', 'top': str(share / F2),
                                            'base': str(share / VOL)})
    journal.begin(delete_plan(share, pull))
    journal.start(0)
    assert executor.undo_plan(journal)[2] is None
    lv.job_running = lambda dom, disk: True
    assert 'a block job still runs' in executor.undo_plan(journal)[2]
    B.write_qcow2(share, F2, size=1 << 20, backing=VOL, backing_fmt='raw')
    assert 'now names' in executor.undo_plan(journal)[2]
