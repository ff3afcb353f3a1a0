# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the pure planning of group snapshots (_nfs/group.py) and of the one atomic libvirt call."""

from __future__ import annotations

import errno
import json
import os

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import libvirt as libvirt_mod, snapshot_exec
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.group import (
    COMPLETE_GROUP,
    ROLL_BACK_GROUP,
    GroupRequest,
    GroupSnapshot,
    Member,
    PendingMember,
    check_members,
    group_record,
    judge_recovery,
    lock_order,
    plan_group,
    same_group,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import Libvirt, quiesce_mode
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_plan import (
    OFFLINE,
    ONLINE,
    SNAPSHOT_ACTIONS,
    Plan,
)
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B

SHARE = '/mnt/share'
VOLS = ['0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d', 'ffffffff-eeee-4ddd-8ccc-bbbbbbbbbbbb',
        '11111111-2222-4333-8444-555555555555']
SNAPS = ['aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee', 'bbbbbbbb-bbbb-4ccc-8ddd-eeeeeeeeeeee',
         'cccccccc-bbbb-4ccc-8ddd-eeeeeeeeeeee']


def members(order=(2, 0, 1)):
    return [Member('%s/volume-%s' % (SHARE, VOLS[i]), SNAPS[i]) for i in order]


def create_plan(member, disk='vdb', mode=ONLINE):
    overlay = '%s.%s' % (member.volume_path, member.snapshot_id)
    name = member.volume_path.rsplit('/', 1)[1]
    steps = [SNAPSHOT_ACTIONS.step('create_overlay', 'compute', file=overlay, backing=name, backing_format='raw',
                                   size=1 << 20, like=member.volume_path)]
    if mode == ONLINE:
        steps.append(SNAPSHOT_ACTIONS.step('libvirt_snapshot', 'compute', domain='instance-1', disk=disk, file=overlay,
                                           quiesce='auto'))
    after = {'active': overlay.rsplit('/', 1)[1], member.snapshot_id: overlay.rsplit('/', 1)[1]}
    steps.append(SNAPSHOT_ACTIONS.step('write_info', 'complete', path=member.volume_path + '.info', info=after))
    return Plan('create', name[7:], member.snapshot_id, mode, steps=steps, info_after=after)


def test_check_members_refuses_duplicates_bad_ids_and_nothing():
    check_members(members())
    with pytest.raises(VolsnapError, match='at least one volume'):
        check_members([])
    twice = members() + [Member(members()[0].volume_path + '/', SNAPS[1][:-1] + 'f')]
    with pytest.raises(VolsnapError, match='the same volume'):
        check_members(twice)
    same_snap = members()[:2] + [Member('%s/volume-%s' % (SHARE, VOLS[1][:-1] + 'a'), members()[0].snapshot_id)]
    with pytest.raises(VolsnapError, match='same snapshot_id'):
        check_members(same_snap)
    with pytest.raises(VolsnapError, match='not a Cinder snapshot id'):
        check_members([Member('%s/volume-%s' % (SHARE, VOLS[0]), '../../etc')])


def test_locks_are_taken_in_sorted_path_order_whatever_the_request_order():
    forward, backward = members((0, 1, 2)), members((2, 1, 0))
    assert [forward[i].volume_path for i in lock_order([m.volume_path for m in forward])] == \
        [backward[i].volume_path for i in lock_order([m.volume_path for m in backward])]
    assert lock_order(['/b/x', '/a/y', '/a/x']) == [2, 1, 0]


def test_group_record_and_same_group():
    group = members()
    record = group_record(ONLINE, 'instance-1', 'auto', group, ['vdd', 'vdb', 'vdc'])
    assert [m['volume_path'] for m in record['members']] == sorted(m.volume_path for m in group)
    assert record['members'][0]['disk'] == 'vdb' and record['domain'] == 'instance-1'
    assert same_group(record, list(reversed(group))) is None  # the order of the request does not matter
    assert 'another group' in same_group(record, group[:2])
    assert 'no readable group' in same_group({'members': 'x'}, group)
    assert 'no readable group' in same_group(None, group)


def test_plan_group_runs_prepare_then_one_commit_then_every_info_file():
    group = members()
    plans = [create_plan(m, disk) for m, disk in zip(group, ['vdd', 'vdb', 'vdc'])]
    planned = plan_group(group, plans, ONLINE, 'instance-1', 'auto', ['vdd', 'vdb', 'vdc'])
    assert planned.changes and planned.order == [1, 0, 2]
    assert planned.overlays() == {'vdd': plans[0].steps[0].args['file'], 'vdb': plans[1].steps[0].args['file'],
                                  'vdc': plans[2].steps[0].args['file']}
    lines = planned.describe()
    assert lines[0].startswith('lock ')
    assert [line.startswith('create qcow2 overlay') for line in lines[1:4]] == [True] * 3
    assert 'ONE disk-only external snapshot' in lines[4] and 'vdb, vdc, vdd' in lines[4] and 'atomic' in lines[4]
    assert all(line.startswith('write ') for line in lines[5:]) and len(lines) == 8
    offline = plan_group(group, [create_plan(m, mode=OFFLINE) for m in group], OFFLINE, None, 'auto', [None] * 3)
    assert 'first .info file' in offline.commit_description() and offline.overlays() == {}


def test_plan_group_refuses_half_taken_groups_and_shared_disks():
    group = members()
    plans = [create_plan(m) for m in group]
    empty = Plan('create', VOLS[1], group[1].snapshot_id, ONLINE)
    with pytest.raises(VolsnapError, match='already have their snapshot'):
        plan_group(group, [plans[0], empty, plans[2]], ONLINE, 'instance-1', 'auto', ['vdb', 'vdc', 'vdd'])
    with pytest.raises(VolsnapError, match='same disk vdb'):
        plan_group(group, plans, ONLINE, 'instance-1', 'auto', ['vdb', 'vdb', 'vdd'])
    nothing = plan_group(group, [Plan('create', VOLS[i], SNAPS[i], ONLINE) for i in range(3)], ONLINE, 'instance-1',
                         'auto', ['vdb', 'vdc', 'vdd'])
    assert not nothing.changes


@pytest.mark.parametrize('states,decision', [
    ([(False, False, False), (False, False, False)], ROLL_BACK_GROUP),   # killed before the libvirt call
    ([(False, False, None), (False, False, None)], ROLL_BACK_GROUP),     # the domain is gone, overlays empty
    ([(False, False, True), (False, False, True)], COMPLETE_GROUP),      # killed after it
    ([(True, False, True)], COMPLETE_GROUP),                             # one .info written, one member left
    ([(False, True, None), (False, True, None)], COMPLETE_GROUP),        # the domain is gone, it wrote
    ([(True, False, None), (False, False, None)], COMPLETE_GROUP),       # offline: the first .info commits
])
def test_judge_recovery(states, decision):
    pending = [PendingMember('/v%d' % i, info, data, switched) for i, (info, data, switched) in enumerate(states)]
    assert judge_recovery(pending) == (decision, None)


def test_judge_recovery_refuses_a_half_switched_domain():
    decision, why = judge_recovery([PendingMember('/v0', False, False, True), PendingMember('/v1', False, False, False)])
    assert decision == '' and '/v1' in why and 'atomic' in why


def test_quiesce_mode_reads_requests_and_older_journals():
    assert [quiesce_mode(v) for v in ('never', 'auto', 'required', True, False, None)] == \
        ['never', 'auto', 'required', 'auto', 'never', 'auto']
    with pytest.raises(VolsnapError, match='not one of'):
        quiesce_mode('sometimes')


class FakeLibvirtError(Exception):
    def get_error_message(self):
        return str(self)


class FakeDomain(object):
    XML = """<domain><devices>
      <disk type='file' device='disk'><source file='/s/a'/><target dev='vda'/></disk>
      <disk type='file' device='disk'><source file='/s/b'/><target dev='vdb'/></disk>
      <disk type='file' device='disk'><source file='/s/c'/><target dev='vdc'/></disk>
    </devices></domain>"""

    def __init__(self, agent):
        self.agent = agent
        self.calls = []

    def XMLDesc(self, _flags):
        return self.XML

    def snapshotCreateXML(self, xml, flags):
        self.calls.append((xml, flags))
        if flags & FakeLibvirtModule.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE and not self.agent:
            raise FakeLibvirtError('QEMU guest agent is not configured')


class FakeLibvirtModule(object):
    libvirtError = FakeLibvirtError
    VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY = 16
    VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT = 32
    VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA = 4
    VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE = 64
    VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC = 128


@pytest.fixture
def fake_libvirt(monkeypatch):
    monkeypatch.setattr(libvirt_mod, 'libvirt', FakeLibvirtModule)


def test_one_atomic_call_names_every_member_disk(fake_libvirt):
    dom = FakeDomain(agent=True)
    assert Libvirt().external_snapshot_disks(dom, {'vdc': '/s/c.1', 'vda': '/s/a.1'}, 'auto', atomic=True) is True
    assert len(dom.calls) == 1
    xml, flags = dom.calls[0]
    assert flags & FakeLibvirtModule.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC and flags & 64
    assert "<disk name=\"vda\" snapshot=\"external\" type=\"file\"><source file=\"/s/a.1\" />" in xml
    assert '<disk name="vdb" snapshot="no" />' in xml and 'file="/s/c.1"' in xml


def test_quiesce_auto_falls_back_required_refuses_never_does_not_ask(fake_libvirt):
    dom = FakeDomain(agent=False)
    assert Libvirt().external_snapshot_disks(dom, {'vdb': '/s/b.1'}, 'auto', atomic=True) is False
    assert [flags & 64 for _xml, flags in dom.calls] == [64, 0]
    dom = FakeDomain(agent=False)
    with pytest.raises(VolsnapError, match='quiesce=required.*guest agent') as err:
        Libvirt().external_snapshot_disks(dom, {'vdb': '/s/b.1'}, 'required', atomic=True)
    assert err.value.details['quiesced'] is False and len(dom.calls) == 1
    dom = FakeDomain(agent=True)
    assert Libvirt().external_snapshot(dom, 'vdb', '/s/b.1', 'never') is False
    assert [flags & (64 | 128) for _xml, flags in dom.calls] == [0]


# ---- GroupSnapshot offline (no libvirt), qemu-img faked by a runner that writes the overlay's qcow2 header

class OverlayWriter(object):
    """The qemu-img runner of these tests: the overlays are written by the module itself (_nfs/qcow2_overlay.py),
    so only ``qemu-img commit`` comes here; committing an overlay without data changes nothing."""

    def __call__(self, argv):
        args = argv[1:]
        assert args[0] == 'commit', argv
        return 0, '', ''


@pytest.fixture
def offline_group(tmp_path):
    share = tmp_path / 'share'
    share.mkdir()
    group = []
    for i in range(3):
        path = share / ('volume-%s' % VOLS[i])
        B.write(str(path), b'\x00' * 4096, size=1 << 20)
        group.append(Member(str(path), SNAPS[i]))
    return share, group


def run_group(group, runner, state='present', check=False, parallel=4):
    request = GroupRequest(list(reversed(group)), state=state, mode='offline', parallel=parallel)
    return GroupSnapshot(request, QemuImg(runner), lambda: None, check).run()


@pytest.mark.parametrize('parallel', [1, 4])
def test_offline_group_creates_every_snapshot_then_changes_nothing(offline_group, parallel):
    share, group = offline_group
    checked = run_group(group, OverlayWriter(), check=True)
    assert checked['changed'] and sorted(os.listdir(str(share))) == sorted('volume-%s' % v for v in VOLS)
    result = run_group(group, OverlayWriter(), parallel=parallel)
    assert result['changed'] and result['group']['mode'] == 'offline' and result['quiesced'] is None
    assert [v['volume_path'] for v in result['volumes']] == [m.volume_path for m in reversed(group)]
    for member in group:
        with open(member.volume_path + '.info') as handle:
            info = json.load(handle)
        overlay = os.path.basename(member.volume_path) + '.' + member.snapshot_id
        assert info == {'active': overlay, member.snapshot_id: overlay}
    assert [d['before_header'] for d in result['diff']] == [m.volume_path + '.info' for m in reversed(group)]
    assert not [n for n in os.listdir(str(share)) if n.endswith('.journal')]
    again = run_group(group, OverlayWriter())
    assert again['changed'] is False and 'diff' not in again
    deleted = run_group(group, OverlayWriter(), state='absent')
    assert deleted['changed'] and deleted['group']['operation'] == 'delete'


def test_offline_group_overlay_failure_rolls_every_member_back(offline_group, monkeypatch):
    share, group = offline_group
    before = sorted(os.listdir(str(share)))
    write_overlay = snapshot_exec.write_overlay

    def failing(fd, backing, backing_format, size):
        if VOLS[1] in backing:
            raise OSError(errno.ENOSPC, 'No space left on device (injected)')
        return write_overlay(fd, backing, backing_format, size)

    monkeypatch.setattr(snapshot_exec, 'write_overlay', failing)
    with pytest.raises(VolsnapError, match='Every member was rolled back') as err:
        run_group(group, OverlayWriter(), parallel=1)
    assert err.value.details['failed_volumes'] == [group[1].volume_path]
    assert err.value.details['rolled_back'] is True
    assert [v['failed'] for v in err.value.details['volumes']] == [False, True, False]  # the request's order
    assert sorted(n for n in os.listdir(str(share)) if not n.endswith('.lock')) == before


def test_an_online_group_without_bindings_says_what_needs_them(offline_group):
    share, group = offline_group
    request = GroupRequest(list(group), state='present', mode='online', parallel=1)
    with pytest.raises(VolsnapError, match='online group snapshots need the libvirt Python bindings'):
        GroupSnapshot(request, QemuImg(OverlayWriter()), lambda: None, False).run()
    left = sorted(n for n in os.listdir(str(share)) if not n.endswith('.lock'))
    assert left == sorted(os.path.basename(m.volume_path) for m in group)  # nothing else made


def test_group_delete_members_share_the_groups_libvirt_connection(offline_group):
    share, group = offline_group
    run_group(group, OverlayWriter())
    made = []
    request = GroupRequest(list(group), state='absent', mode='offline', parallel=1)
    result = GroupSnapshot(request, QemuImg(OverlayWriter()), lambda: made.append(1), False).run()
    assert result['changed'] and result['group']['operation'] == 'delete'
    assert made == [1]  # one factory call for the group and its three members' deletes


def test_single_volume_requests_refuse_a_pending_group_member(offline_group, monkeypatch):
    share, group = offline_group
    original = GroupSnapshot._complete

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt  # killed at the commit point: every overlay made, no .info file written

    monkeypatch.setattr(GroupSnapshot, '_complete', interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_group(group, OverlayWriter())
    monkeypatch.setattr(GroupSnapshot, '_complete', original)
    with pytest.raises(VolsnapError, match='member of an interrupted group snapshot'):
        VolumeSnapshot(Request(group[0].volume_path, group[0].snapshot_id), QemuImg(OverlayWriter()),
                       lambda: None, False).run()
    with pytest.raises(VolsnapError, match='cannot join this group') as err:
        run_group(group[:2], OverlayWriter())
    assert 'another group' in err.value.msg
    result = run_group(group, OverlayWriter())
    assert result['group']['recovered'] == 'roll back' and result['changed']
    assert not [n for n in os.listdir(str(share)) if n.endswith('.journal')]
