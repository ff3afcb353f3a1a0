# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _nfs.clone: planning on chains built byte by byte, execution with a fake qemu-img."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import clone as C
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B

VOL_ID = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
VOL = 'volume-' + VOL_ID
SNAP1 = '11111111-2222-4333-8444-555555555555'
SNAP2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
SNAP3 = '99999999-8888-4777-8666-555555555555'
NEW = 'volume-5d2c8e1f-3a4b-4c6d-9e8f-7a6b5c4d3e2f'
BASE_SIZE = 1 << 20
S1 = '%s.%s' % (VOL, SNAP1)
S2 = '%s.%s' % (VOL, SNAP2)


@pytest.fixture
def share(tmp_path):
    """volume-<id> (raw, 1 MiB) <- .<snap1> (qcow2) <- .<snap2> (qcow2, active), with the Cinder .info."""
    directory = tmp_path / 'share'
    directory.mkdir()
    B.write(str(directory / VOL), b'\xa1' * 4096, size=BASE_SIZE)
    os.chmod(str(directory / VOL), 0o640)
    B.write_qcow2(directory, S1, size=BASE_SIZE, backing=VOL, backing_fmt='raw')
    B.write_qcow2(directory, S2, size=BASE_SIZE, backing=S1, backing_fmt='qcow2')
    (directory / (VOL + '.info')).write_text(B.info_text(S2, {SNAP1: S1, SNAP2: S2}))
    return directory


def report_of(share):
    return inspect_chain(str(share / VOL))


def plan(share, snapshot_id, dest=None, fmt='raw'):
    return C.plan_clone(report_of(share), snapshot_id, str(dest or share / NEW), fmt)


def refused(func, *args, **kwargs):
    with pytest.raises(VolsnapError) as info:
        func(*args, **kwargs)
    return info.value.msg


# ---------------------------------------------------------------------------------------------
# Which file is the source
# ---------------------------------------------------------------------------------------------

def test_source_of_each_snapshot(share):
    first = plan(share, SNAP1)
    assert first.source == str(share / VOL) and first.source_format == 'raw'
    assert first.virtual_size == BASE_SIZE and not first.noop
    second = plan(share, SNAP2)
    assert second.source == str(share / S1) and second.source_format == 'qcow2'


def test_snapshot_of_non_active_file_after_a_third_snapshot(share):
    B.write_qcow2(share, '%s.%s' % (VOL, SNAP3), size=BASE_SIZE, backing=S2, backing_fmt='qcow2')
    s3 = '%s.%s' % (VOL, SNAP3)
    (share / (VOL + '.info')).write_text(B.info_text(s3, {SNAP1: S1, SNAP2: S2, SNAP3: s3}))
    assert plan(share, SNAP3).source == str(share / S2)
    assert plan(share, SNAP2).source == str(share / S1)
    assert plan(share, SNAP1).source == str(share / VOL)


@pytest.mark.parametrize('fmt', ['raw', 'qcow2'])
def test_command(share, fmt):
    result = plan(share, SNAP2, fmt=fmt)
    dest = str(share / NEW)
    tmp = str(share / ('.%s.volsnap-tmp' % NEW))
    assert result.tmp == tmp
    assert result.sidecar == str(share / ('.%s.volsnap-clone' % NEW))
    assert result.command == ['qemu-img', 'convert', '-U', '-f', 'qcow2', '-O', fmt, '-T', 'writeback',
                              '-t', 'writeback', str(share / S1), tmp]
    assert 'preallocation' not in ' '.join(result.command)
    steps = result.describe()
    assert any(' '.join(result.command) in step for step in steps)
    assert any(dest in step for step in steps)
    out = result.result()
    assert out['changed'] is True and out['dest'] == dest and out['format'] == fmt
    assert out['snapshot_id'] == SNAP2 and out['source'] == str(share / S1) and out['virtual_size'] == BASE_SIZE
    assert out['plan'] == steps


def test_stale_temp_file_is_planned_for_removal(share):
    (share / ('.%s.volsnap-tmp' % NEW)).write_bytes(b'half written')
    result = plan(share, SNAP1)
    assert [step.action for step in result.steps][:2] == ['lock', 'remove_stale_tmp']
    assert any('stale temporary file' in step for step in result.describe())


def test_dest_in_another_directory(share, tmp_path):
    other = tmp_path / 'other'
    other.mkdir()
    result = plan(share, SNAP1, dest=other / 'new.img')
    assert result.tmp == str(other / '.new.img.volsnap-tmp')


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('bad', ['../x', '', 'x', SNAP1 + '/..', SNAP2.upper(), ' ' + SNAP1, SNAP1 + '\n',
                                 '/etc/passwd'])
def test_bad_snapshot_id(share, bad):
    assert 'is not a Cinder id' in refused(plan, share, bad)
    req = C.CloneRequest(snapshot_id=bad, dest=str(share / NEW), volume_path=str(share / VOL))
    assert 'is not a Cinder id' in refused(C.clone_volume, req, None)


def test_unknown_snapshot(share):
    msg = refused(plan, share, SNAP3)
    assert 'has no snapshot %s' % SNAP3 in msg and SNAP1 in msg


def test_no_info_file(share):
    (share / (VOL + '.info')).unlink()
    os.unlink(str(share / S1))
    os.unlink(str(share / S2))
    assert 'has no snapshot' in refused(plan, share, SNAP1)


def test_unsafe_chain_missing_backing(share):
    os.unlink(str(share / VOL))
    msg = refused(plan, share, SNAP2)
    assert 'unsafe' in msg and 'missing_backing_file' in msg


def test_unsafe_chain_outside_share(share, tmp_path):
    B.write(str(tmp_path / 'secret'), b'\x00' * 4096)
    B.write_qcow2(share, S1, size=BASE_SIZE, backing='../secret', backing_fmt='raw')
    msg = refused(plan, share, SNAP2)
    assert 'unsafe' in msg and 'backing_outside_share' in msg


def test_unsafe_raw_base_with_image_header(share):
    """OSSA 2014-033: the raw base now starts with a qcow2 header."""
    B.write(str(share / VOL), B.qcow2(backing='/etc/shadow', backing_fmt='raw'), size=BASE_SIZE)
    msg = refused(plan, share, SNAP1)
    assert 'format_mismatch' in msg


def test_missing_backing_format_is_refused(share):
    B.write_qcow2(share, S1, size=BASE_SIZE, backing=VOL)
    assert report_of(share).safe  # only a warning for the chain
    msg = refused(plan, share, SNAP1)
    assert 'does not declare the format' in msg and S1 in msg
    msg = refused(plan, share, SNAP2)  # S1 is below the snapshot file of SNAP2
    assert 'does not declare the format' in msg


def test_missing_backing_format_above_the_snapshot_is_fine(share):
    B.write_qcow2(share, S2, size=BASE_SIZE, backing=S1)
    assert plan(share, SNAP1).source == str(share / VOL)


def test_interrupted_snapshot_operation(share):
    (share / ('.volsnap-%s.journal' % VOL)).write_text('{}')
    assert 'interrupted' in refused(plan, share, SNAP1)


def test_dest_directory_missing(share):
    assert 'does not exist' in refused(plan, share, SNAP1, dest=share / 'nope' / NEW)


def test_existing_dest_without_sidecar(share):
    (share / NEW).write_bytes(b'precious')
    msg = refused(plan, share, SNAP1)
    assert 'already exists' in msg and 'never overwritten' in msg
    assert (share / NEW).read_bytes() == b'precious'


def sidecar(share, **changes):
    record = {'volume_id': VOL_ID, 'snapshot_id': SNAP1, 'format': 'raw', 'source': VOL, 'virtual_size': BASE_SIZE,
              'inode': os.lstat(str(share / NEW)).st_ino}
    record.update(changes)
    (share / ('.%s.volsnap-clone' % NEW)).write_text(json.dumps(record))
    return record


@pytest.mark.parametrize('changes', [{'snapshot_id': SNAP2}, {'format': 'qcow2'},
                                     {'volume_id': '22222222-2222-4222-8222-222222222222'}])
def test_existing_dest_from_another_clone(share, changes):
    (share / NEW).write_bytes(b'x')
    sidecar(share, **changes)
    assert 'never overwritten' in refused(plan, share, SNAP1)


def test_existing_dest_replaced_since(share):
    (share / NEW).write_bytes(b'x')
    sidecar(share, inode=1)
    assert 'replaced' in refused(plan, share, SNAP1)


def test_existing_dest_from_this_snapshot_is_a_noop(share):
    (share / NEW).write_bytes(b'x')
    sidecar(share)
    result = plan(share, SNAP1)
    assert result.noop and result.source == str(share / VOL) and result.virtual_size == BASE_SIZE
    out = result.result()
    assert out['changed'] is False and out['command'] == [] and 'nothing to do' in out['plan'][0]


def test_noop_even_when_the_snapshot_is_gone(share):
    (share / NEW).write_bytes(b'x')
    sidecar(share)
    os.unlink(str(share / (VOL + '.info')))
    req = C.CloneRequest(snapshot_id=SNAP1, dest=str(share / NEW), volume_path=str(share / VOL))
    assert C.clone_volume(req, None)['changed'] is False


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

def test_resolve_volume(share):
    assert C.resolve_volume(str(share / VOL), None, None) == (str(share / VOL), str(share), VOL_ID)
    assert C.resolve_volume(None, str(share), VOL_ID) == (str(share / VOL), str(share), VOL_ID)
    assert 'not a Cinder volume file' in refused(C.resolve_volume, str(share / S1), None, None)
    assert 'not a Cinder volume file' in refused(C.resolve_volume, str(share / 'disk.img'), None, None)
    assert 'is not a Cinder id' in refused(C.resolve_volume, None, str(share), '../' + VOL_ID)


# ---------------------------------------------------------------------------------------------
# Execution with a fake qemu-img
# ---------------------------------------------------------------------------------------------

class FakeQemu:
    """Writes a sparse raw file of the source's virtual size (or fails) instead of converting."""

    def __init__(self, size=BASE_SIZE, rc=0):
        self.size = size
        self.rc = rc
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        if self.rc:
            with open(argv[-1], 'wb') as handle:
                handle.write(b'partial')
            return self.rc, '', 'qemu-img: boom'
        with open(argv[-1], 'wb') as handle:
            handle.truncate(self.size)
        return 0, '', ''


def request(share, **kwargs):
    return C.CloneRequest(snapshot_id=kwargs.pop('snapshot_id', SNAP1), dest=str(share / NEW),
                          volume_path=str(share / VOL), **kwargs)


def test_clone_volume_runs_and_is_idempotent(share):
    fake = FakeQemu()
    result = C.clone_volume(request(share), fake)
    assert result['changed'] and len(fake.calls) == 1
    assert fake.calls[0][:2] == ['qemu-img', 'convert']
    dest = share / NEW
    assert dest.stat().st_size == BASE_SIZE and oct(dest.stat().st_mode & 0o777) == oct(0o640)
    assert not (share / ('.%s.volsnap-tmp' % NEW)).exists()
    record = json.loads((share / ('.%s.volsnap-clone' % NEW)).read_text())
    assert record['volume_id'] == VOL_ID and record['snapshot_id'] == SNAP1 and record['format'] == 'raw'
    assert record['source'] == VOL and record['virtual_size'] == BASE_SIZE
    assert record['inode'] == dest.stat().st_ino
    again = C.clone_volume(request(share), fake)
    assert again['changed'] is False and len(fake.calls) == 1
    assert 'already exists' in refused(C.clone_volume, request(share, snapshot_id=SNAP2), fake)


def test_check_mode_creates_nothing(share):
    before = sorted(os.listdir(str(share)))
    fake = FakeQemu()
    result = C.clone_volume(request(share), fake, check_mode=True)
    assert result['changed'] and fake.calls == [] and result['command']
    assert sorted(os.listdir(str(share))) == before


def test_check_mode_shows_the_plan_the_run_executes(share):
    fake = FakeQemu()
    would = C.clone_volume(request(share), fake, check_mode=True)
    done = C.clone_volume(request(share), fake)
    assert done == would and done['changed']
    # the command shown is the one run, its output given as this process's descriptor of the temporary file
    assert len(fake.calls) == 1 and fake.calls[0][:-1] == would['command'][:-1]
    assert fake.calls[0][-1].startswith('/proc/%d/fd/' % os.getpid()) and would['command'][-1] == str(share / ('.%s.volsnap-tmp' % NEW))


def test_refused_or_no_op_request_leaves_no_lock_file(share):
    before = sorted(os.listdir(str(share)))
    fake = FakeQemu()
    assert SNAP3 in refused(C.clone_volume, request(share, snapshot_id=SNAP3), fake)
    assert sorted(os.listdir(str(share))) == before and fake.calls == []
    C.clone_volume(request(share), fake)
    lock = '.volsnap-nfs-%s.lock' % VOL_ID
    assert lock in os.listdir(str(share))
    os.unlink(str(share / lock))
    again = C.clone_volume(request(share), fake)
    assert again['changed'] is False and lock not in os.listdir(str(share))


def test_failed_convert_leaves_nothing(share):
    fake = FakeQemu(rc=1)
    msg = refused(C.clone_volume, request(share), fake)
    assert 'boom' in msg
    assert sorted(os.listdir(str(share))) == sorted([VOL, S1, S2, VOL + '.info', '.volsnap-nfs-%s.lock' % VOL_ID])


def test_wrong_output_size_is_refused(share):
    msg = refused(C.clone_volume, request(share), FakeQemu(size=4096))
    assert 'expected' in msg
    assert not (share / NEW).exists() and not (share / ('.%s.volsnap-tmp' % NEW)).exists()


def test_stale_temp_file_is_replaced(share):
    tmp = share / ('.%s.volsnap-tmp' % NEW)
    tmp.write_bytes(b'half written')
    assert C.clone_volume(request(share), FakeQemu())['changed']
    assert not tmp.exists() and (share / NEW).stat().st_size == BASE_SIZE


def test_stale_sidecar_without_dest_is_redone(share):
    """A crash after the sidecar was written but before dest got its name."""
    record = {'volume_id': VOL_ID, 'snapshot_id': SNAP1, 'format': 'raw', 'inode': 1}
    (share / ('.%s.volsnap-clone' % NEW)).write_text(json.dumps(record))
    assert C.clone_volume(request(share), FakeQemu())['changed']
    assert C.clone_volume(request(share), FakeQemu())['changed'] is False


def test_leftover_link_after_publish_is_removed(share):
    """A crash after dest was linked but before the temp name was removed."""
    C.clone_volume(request(share), FakeQemu())
    tmp = share / ('.%s.volsnap-tmp' % NEW)
    os.link(str(share / NEW), str(tmp))
    assert C.clone_volume(request(share), FakeQemu())['changed'] is False
    assert not tmp.exists() and (share / NEW).exists()


def test_dest_appearing_during_convert_is_left_alone(share):
    dest = share / NEW

    def racing(argv):
        dest.write_bytes(b'someone else')
        return FakeQemu()(argv)

    plan_ = plan(share, SNAP1)
    assert 'appeared' in refused(C.execute_clone, plan_, QemuImg(racing))
    assert dest.read_bytes() == b'someone else'
    assert not (share / ('.%s.volsnap-tmp' % NEW)).exists()
    assert not (share / ('.%s.volsnap-clone' % NEW)).exists()
