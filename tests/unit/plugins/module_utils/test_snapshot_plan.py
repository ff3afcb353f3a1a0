# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _snapshot_plan on chains built byte by byte in tmp_path (nothing is run)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_plan import (
    OFFLINE,
    ONLINE,
    Plan,
    check_snapshot_id,
    plan_create,
    plan_delete,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import ShareVolume, check_journaled_plan
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B

VOL_ID = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
VOL = 'volume-' + VOL_ID
S1 = '11111111-2222-4333-8444-555555555555'
S2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
NEW = '99999999-8888-4777-8666-555555555555'
F1 = '%s.%s' % (VOL, S1)
F2 = '%s.%s' % (VOL, S2)


def write_info(share, active, snapshots):
    B.write(os.path.join(str(share), VOL + '.info'), B.info_text(active, snapshots).encode('utf-8'))


@pytest.fixture
def share(tmp_path):
    directory = tmp_path / 'share'
    directory.mkdir()
    return directory


@pytest.fixture
def chain(share):
    """volume-<id> (raw) <- F1 <- F2 (active), with .info naming S1 and S2."""
    B.write(str(share / VOL), b'\x00' * 4096, size=1 << 30)
    B.write_qcow2(share, F1, size=1 << 30, backing=VOL, backing_fmt='raw')
    B.write_qcow2(share, F2, size=1 << 30, backing=F1, backing_fmt='qcow2')
    write_info(share, F2, {S1: F1, S2: F2})
    return share


def report(share):
    return inspect_chain(str(share / VOL))


def actions(plan):
    return [step.action for step in plan.steps]


def test_ids_and_volume_file(share):
    check_snapshot_id(S1)
    assert ShareVolume.in_share('/mnt/share', VOL_ID).path == '/mnt/share/' + VOL
    for bad in ('../' + VOL_ID, VOL_ID + '/..', S1 + '/../volume-' + VOL_ID, '', VOL_ID + '\n'):
        with pytest.raises(VolsnapError, match='is not a Cinder volume id'):
            ShareVolume.in_share('/mnt/share', bad)
        with pytest.raises(VolsnapError, match='is not a Cinder snapshot id'):
            check_snapshot_id(bad)


def test_create_offline_and_online(chain):
    plan = plan_create(report(chain), VOL_ID, NEW, OFFLINE)
    new = '%s.%s' % (VOL, NEW)
    assert actions(plan) == ['create_overlay', 'write_info']
    overlay = plan.steps[0].args
    assert (overlay['backing'], overlay['backing_format'], overlay['size']) == (F2, 'qcow2', 1 << 30)
    assert plan.info_after == {'active': new, S1: F1, S2: F2, NEW: new}
    assert plan.file_format == {new: 'qcow2'} and plan.compute_status == 'creating_compute_complete'
    online = plan_create(report(chain), VOL_ID, NEW, ONLINE, 'instance-1', 'vdb', quiesce='never')
    assert actions(online) == ['create_overlay', 'libvirt_snapshot', 'write_info']
    assert online.steps[1].args == {'domain': 'instance-1', 'disk': 'vdb', 'file': str(chain / new), 'quiesce': 'never'}
    assert Plan.from_dict(online.as_dict()) == online


def test_create_existing_is_no_change(chain):
    plan = plan_create(report(chain), VOL_ID, S1, OFFLINE)
    assert plan.steps == [] and plan.active_after == F2


def test_create_refuses_a_stray_snapshot_file(chain):
    B.write_qcow2(chain, '%s.%s' % (VOL, NEW), size=1 << 30, backing=F2, backing_fmt='qcow2')
    with pytest.raises(VolsnapError, match='already exists but the .info file does not name it'):
        plan_create(report(chain), VOL_ID, NEW, OFFLINE)


@pytest.mark.parametrize('operation', [plan_create, plan_delete])
@pytest.mark.parametrize('snapshot_id', [S1, NEW])
def test_unsafe_chain_refused_even_without_work(chain, operation, snapshot_id):
    B.write_qcow2(chain, F1, size=1 << 30, backing='/etc/hostname', backing_fmt='raw')
    with pytest.raises(VolsnapError, match='unsafe, nothing was changed.*backing_outside_share'):
        operation(report(chain), VOL_ID, snapshot_id, OFFLINE)


@pytest.mark.parametrize('operation', [plan_create, plan_delete])
def test_lost_info_file_with_snapshot_files_is_refused(chain, operation):
    os.unlink(str(chain / (VOL + '.info')))
    with pytest.raises(VolsnapError, match=r'\.info does not exist but the volume has snapshot files \(%s, %s\)'
                       % (F1, F2)):
        operation(report(chain), VOL_ID, S1, OFFLINE)


def test_volume_without_snapshots(share):
    B.write(str(share / VOL), b'\x00' * 4096, size=1 << 20)
    assert plan_delete(report(share), VOL_ID, S1, OFFLINE).steps == []
    plan = plan_create(report(share), VOL_ID, S1, OFFLINE)
    assert plan.info_before is None and plan.info_after == {'active': F1, S1: F1}
    assert plan.steps[0].args['backing_format'] == 'raw'


def test_delete_offline_active_and_middle(chain):
    active = plan_delete(report(chain), VOL_ID, S2, OFFLINE)
    assert actions(active) == ['commit', 'write_info', 'delete_file']
    assert active.info_after == {'active': F1, S1: F1}
    assert active.merge == {'merge_target_file': F1, 'file_to_merge': F2, 'file_to_delete': F2}
    middle = plan_delete(report(chain), VOL_ID, S1, OFFLINE)
    assert actions(middle) == ['commit', 'rebase', 'write_info', 'delete_file']
    assert middle.steps[1].args == {'file': str(chain / F2), 'backing': VOL, 'backing_format': 'raw'}
    assert middle.info_after == {'active': F2, S2: F2} and middle.file_format == {VOL: 'raw'}
    assert middle.steps[-1].args['file'] == str(chain / F1)


def test_delete_online(chain):
    pull = plan_delete(report(chain), VOL_ID, S2, ONLINE, 'instance-1', 'vdb')
    assert actions(pull) == ['block_rebase', 'write_info', 'delete_file']
    assert pull.steps[0].args['base'] == str(chain / VOL)
    # S1's data was in volume-<id> below F1; F1 is deleted, so S1 now points at F2
    assert pull.info_after == {'active': F2, S1: F2} and pull.steps[-1].args['file'] == str(chain / F1)
    commit = plan_delete(report(chain), VOL_ID, S1, ONLINE, 'instance-1', 'vdb')
    assert actions(commit) == ['block_commit', 'write_info', 'delete_file']
    assert (commit.steps[0].args['top'], commit.steps[0].args['base']) == (str(chain / F1), str(chain / VOL))


def test_delete_online_flatten_deletes_the_base_file(share):
    B.write(str(share / VOL), b'\x00' * 4096, size=1 << 30)
    B.write_qcow2(share, F1, size=1 << 30, backing=VOL, backing_fmt='raw')
    write_info(share, F1, {S1: F1})
    plan = plan_delete(report(share), VOL_ID, S1, ONLINE, 'instance-1', 'vdb')
    assert plan.steps[0].args['base'] is None
    assert plan.info_after == {'active': F1} and plan.steps[-1].args['file'] == str(share / VOL)
    assert plan.merge == {'merge_target_file': None, 'file_to_merge': None, 'file_to_delete': VOL}
    assert plan.file_format == {F1: 'qcow2'}


def test_delete_snapshot_naming_the_base_is_refused(share):
    B.write(str(share / VOL), b'\x00' * 4096, size=1 << 20)
    write_info(share, VOL, {S1: VOL})
    with pytest.raises(VolsnapError, match='has no backing file, so it holds no snapshot data'):
        plan_delete(report(share), VOL_ID, S1, OFFLINE)


def test_journaled_formats_must_be_what_a_plan_trusts(chain):
    """A journal is share content: it may not turn a raw volume-<id> into qcow2 (or name other formats)."""
    directory = str(chain)
    middle = plan_delete(report(chain), VOL_ID, S1, OFFLINE)
    check_journaled_plan(middle, directory, VOL, VOL_ID)
    check_journaled_plan(middle, directory, VOL, VOL_ID, 'raw')
    with pytest.raises(VolsnapError, match='format raw for %s, which is qcow2 .volume_format.' % VOL):
        check_journaled_plan(middle, directory, VOL, VOL_ID, 'qcow2')
    middle.steps[1].args['backing_format'] = 'qcow2'
    with pytest.raises(VolsnapError, match='never plans'):
        check_journaled_plan(middle, directory, VOL, VOL_ID, 'raw')
    middle.steps[1].args['backing_format'] = 'vmdk'
    with pytest.raises(VolsnapError, match='raw or qcow2 only'):
        check_journaled_plan(middle, directory, VOL, VOL_ID)
    create = plan_create(report(chain), VOL_ID, NEW, OFFLINE)
    check_journaled_plan(create, directory, VOL, VOL_ID, 'raw')
    create.steps[0].args['backing_format'] = 'raw'  # the active snapshot file F2 is qcow2, always
    with pytest.raises(VolsnapError, match='always qcow2'):
        check_journaled_plan(create, directory, VOL, VOL_ID)
    create = plan_create(report(chain), VOL_ID, NEW, OFFLINE)
    create.file_format = {VOL: 'luks'}
    with pytest.raises(VolsnapError, match='raw or qcow2 only'):
        check_journaled_plan(create, directory, VOL, VOL_ID)
