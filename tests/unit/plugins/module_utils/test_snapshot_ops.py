# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _snapshot_ops: the journal, and how online steps judge libvirt's answers.

libvirt and qemu-img are fakes here (the integration tests run the real ones): the fake libvirt
answers what a domain's XML would say, the fake runner records the qemu-img command lines.
"""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._snapshot_ops import Executor, Journal, journal_path_for
from ansible_collections.volsnap.openstack.plugins.module_utils._snapshot_plan import Plan, Step
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B

VOL = 'volume-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
S1 = '11111111-2222-4333-8444-555555555555'
S2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
F1 = '%s.%s' % (VOL, S1)
F2 = '%s.%s' % (VOL, S2)
INFO = {'active': F2, S1: F1, S2: F2}


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
        Step('write_info', 'complete', {'path': str(share / (VOL + '.info')), 'info': info_after}),
        Step('delete_file', 'complete', {'file': str(share / F1)}),
    ], info_before=dict(INFO), info_after=info_after)


def commit_step(share):
    return Step('block_commit', 'compute', {'domain': 'instance-1', 'disk': 'vdb', 'top': str(share / F1),
                                            'base': str(share / VOL)})


def run_plan(share, plan, lv, runner=None):
    journal = Journal(journal_path_for(str(share), VOL))
    journal.begin(plan)
    Executor(QemuImg(runner or Recorder()), lv).run(journal)
    return journal


def test_journal_round_trip_and_unreadable(share):
    path = journal_path_for(str(share), VOL)
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
    assert not (share / F1).exists() and not os.path.exists(journal_path_for(str(share), VOL))
    assert json.loads((share / (VOL + '.info')).read_text()) == {'active': F2, S2: F2}


def test_online_commit_already_done_is_not_redone(share):
    lv = FakeLibvirt([str(share / F2), str(share / VOL)])
    run_plan(share, delete_plan(share, commit_step(share)), lv)
    assert lv.calls == []


@pytest.mark.parametrize('step', ['commit', 'rebase'])
def test_a_job_that_ends_without_its_effect_deletes_nothing(share, step):
    lv = FakeLibvirt([str(share / F2), str(share / F1), str(share / VOL)], job_effect=False)
    if step == 'commit':
        block = commit_step(share)
    else:
        block = Step('block_rebase', 'compute', {'domain': 'instance-1', 'disk': 'vdb', 'top': str(share / F2),
                                                 'base': str(share / VOL)})
    info_before = (share / (VOL + '.info')).read_text()
    with pytest.raises(VolsnapError, match='the job failed or was cancelled. Nothing was deleted'):
        run_plan(share, delete_plan(share, block), lv)
    assert (share / F1).exists() and (share / (VOL + '.info')).read_text() == info_before
    journal = Journal(journal_path_for(str(share), VOL))
    assert journal.load() and journal.done == 0


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
    step = Step('block_rebase', 'compute', {'domain': 'instance-1', 'disk': 'vdb', 'top': str(share / F2),
                                            'base': str(share / base) if base else None})
    run_plan(share, delete_plan(share, step), lv, runner)
    expected = ['-b', VOL, '-F', 'raw'] if base else ['-b', '']
    assert runner.argv == [['rebase', '-q', '-f', 'qcow2', '-t', 'writeback'] + expected + [str(share / F2)]]


def create_plan(share, new):
    info_after = dict(INFO, active=new.name)
    return Plan('create', VOL[7:], S2, 'online', steps=[
        Step('libvirt_snapshot', 'compute', {'domain': 'instance-1', 'disk': 'vdb', 'file': str(new),
                                             'quiesce': True}),
        Step('write_info', 'complete', {'path': str(share / (VOL + '.info')), 'info': info_after}),
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
        writes.append((self.done, self.stage))
        original(self)

    monkeypatch.setattr(Journal, '_write', counting)
    lv = FakeLibvirt([str(share / F2), str(share / F1), str(share / VOL)])
    run_plan(share, delete_plan(share, commit_step(share)), lv)
    # begin, then after the block commit; .info and delete are idempotent and simply run again after a crash
    assert writes == [(0, 'begin'), (1, 'compute')]
