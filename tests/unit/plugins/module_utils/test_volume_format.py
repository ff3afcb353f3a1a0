# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the trusted format of each layer (_chain.FormatTrust, OSSA 2014-033).

A layer's format comes from the ``.info`` chain (a snapshot file is qcow2), the overlays' backing-format
declarations, libvirt's ``<driver type>``, ``volume_format`` (the format Cinder knows for ``volume-<id>``) or,
for the base volume file, the safe default raw; never from the layer's content alone.
"""

from __future__ import annotations

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import clone as C
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import (
    DeclaredChain,
    FormatTrust,
    inspect_chain,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_plan import OFFLINE, plan_create, plan_delete
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B

VOL_ID = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
VOL = 'volume-' + VOL_ID
SNAP1 = '11111111-2222-4333-8444-555555555555'
SNAP2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
NEW_SNAP = '99999999-8888-4777-8666-555555555555'
S1 = '%s.%s' % (VOL, SNAP1)
S2 = '%s.%s' % (VOL, SNAP2)
SIZE = 1 << 20


@pytest.fixture
def share(tmp_path):
    directory = tmp_path / 'share'
    directory.mkdir()
    return directory


def mismatches(report):
    return [p for p in report.problems if p.code == 'format_mismatch']


def planted_raw(share, name=VOL, **header):
    """A raw volume whose guest wrote a qcow2 header (made byte by byte) into its first bytes."""
    B.write(str(share / name), B.qcow2(size=1 << 30, **header), size=SIZE)


def with_snapshot(share, base_fmt):
    B.write_qcow2(share, S1, size=SIZE, backing=VOL, backing_fmt=base_fmt)
    (share / (VOL + '.info')).write_text(B.info_text(S1, {SNAP1: S1}))


# ---------------------------------------------------------------------------------------------
# FormatTrust itself
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('trust, depth, filename, declared, declared_by, expected', [
    # defaults by Cinder name
    (FormatTrust(volume_name=VOL), 0, VOL, None, None, ('raw', 'the default', False)),
    (FormatTrust(volume_name=VOL), 0, S1, None, None, ('qcow2', 'its name', False)),
    (FormatTrust(volume_name=VOL), 1, VOL, None, S1, ('raw', 'the default', False)),
    # volume_format for volume-<id> only
    (FormatTrust(volume_name=VOL, volume_format='qcow2'), 0, VOL, None, None, ('qcow2', 'volume_format', False)),
    (FormatTrust(volume_name=VOL, volume_format='qcow2'), 0, S1, None, None, ('qcow2', 'its name', False)),
    # below an overlay: its declaration, which volume_format must equal for volume-<id>
    (FormatTrust(volume_name=VOL), 1, VOL, 'qcow2', S1, ('qcow2', 'the backing format', False)),
    (FormatTrust(volume_name=VOL, volume_format='qcow2'), 1, VOL, 'qcow2', S1, ('qcow2', 'the backing format', False)),
    (FormatTrust(volume_name=VOL, volume_format='raw'), 1, VOL, 'qcow2', S1, ('qcow2', 'the backing format', True)),
    (FormatTrust(volume_name=VOL, volume_format='qcow2'), 1, VOL, 'raw', S1, ('raw', 'the backing format', True)),
    (FormatTrust(volume_name=VOL), 1, S1, 'qcow2', S2, ('qcow2', 'the backing format', False)),
    # libvirt's <driver type>, by depth
    (FormatTrust(volume_name=VOL, libvirt=('qcow2',)), 0, VOL, None, None, ('qcow2', "libvirt", False)),
    (FormatTrust(volume_name=VOL, libvirt=('qcow2',), volume_format='raw'), 0, VOL, None, None,
     ('qcow2', "libvirt", True)),
    (FormatTrust(volume_name=VOL, libvirt=('qcow2', 'raw')), 1, VOL, 'raw', S1, ('raw', "libvirt", False)),
    (FormatTrust(volume_name=VOL, libvirt=('qcow2', 'raw')), 1, VOL, 'qcow2', S1, ('raw', "libvirt", True)),
    # qcow2_chain_info's format option on the top file
    (FormatTrust(volume_name=VOL, top_format='qcow2'), 0, VOL, None, None, ('qcow2', 'the format option', False)),
    (FormatTrust(volume_name=VOL, top_format='qcow2', volume_format='raw'), 0, VOL, None, None,
     ('qcow2', 'the format option', True)),
    # files outside Cinder's naming: nothing trusted unless declared
    (FormatTrust(), 0, 'disk.img', None, None, (None, None, False)),
    (FormatTrust(volume_name=VOL, volume_format='qcow2'), 0, 'volume-other', None, None, (None, None, False)),
    (FormatTrust(), 1, 'base.img', 'vpc', 'top.qcow2', ('vhd', 'the backing format', False)),
])
def test_expect(trust, depth, filename, declared, declared_by, expected):
    fmt, source, conflict = trust.expect(depth, filename, declared, declared_by)
    want_fmt, want_source, want_conflict = expected
    assert fmt == want_fmt
    assert (source is None) if want_source is None else source.startswith(want_source)
    assert (conflict is not None) is want_conflict


# ---------------------------------------------------------------------------------------------
# The planted header (OSSA 2014-033) and genuine qcow2 volumes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('volume_format', [None, 'raw'])
def test_planted_header_without_backing_is_a_mismatch(share, volume_format):
    planted_raw(share)
    report = inspect_chain(str(share / VOL), volume_format=volume_format)
    assert not report.safe
    [found] = mismatches(report)
    assert found.filename == VOL
    assert 'OSSA 2014-033' in found.message and 'its content is qcow2' in found.message
    layer = report.layers[0]
    assert (layer.image.format, layer.expected_format, layer.trusted_format) == ('qcow2', 'raw', 'raw')
    if volume_format is None:
        assert 'volume_format not set' in found.message and 'pass volume_format: qcow2' in found.message
        assert 'nfs_qcow2_volumes = true' in found.message
    else:
        assert layer.format_source == 'volume_format' and 'admin metadata' in found.message
    assert layer.as_dict()['expected_format'] == 'raw'
    assert layer.as_dict()['format_source'] == layer.format_source


def test_planted_header_with_backing_is_not_followed(share, tmp_path):
    secret = tmp_path / 'secret'
    secret.write_bytes(b'secret')
    planted_raw(share, backing=str(secret), backing_fmt='raw')
    report = inspect_chain(str(share / VOL))
    assert [layer.image.filename for layer in report.layers] == [VOL]
    assert [p.code for p in report.errors] == ['format_mismatch']


def test_genuine_qcow2_volume_needs_volume_format(share):
    B.write_qcow2(share, VOL, size=SIZE)
    assert [p.code for p in mismatches(inspect_chain(str(share / VOL)))] == ['format_mismatch']
    report = inspect_chain(str(share / VOL), volume_format='qcow2')
    assert report.safe, report.problems
    assert (report.layers[0].expected_format, report.layers[0].format_source) == ('qcow2', 'volume_format')


def test_raw_volume_with_volume_format_qcow2_is_a_mismatch(share):
    B.write(str(share / VOL), b'\x00' * 4096, size=SIZE)
    assert inspect_chain(str(share / VOL)).safe
    assert inspect_chain(str(share / VOL), volume_format='raw').safe
    report = inspect_chain(str(share / VOL), volume_format='qcow2')
    assert [p.code for p in report.errors] == ['format_mismatch']
    assert 'its content is raw' in report.errors[0].message


def test_planted_header_below_a_snapshot_declared_raw(share):
    planted_raw(share)
    with_snapshot(share, 'raw')
    for volume_format in (None, 'raw'):
        report = inspect_chain(str(share / VOL), volume_format=volume_format)
        [found] = mismatches(report)
        assert found.filename == VOL and 'OSSA 2014-033' in found.message
    # an overlay that declared the planted header's format (made by a tool that probed it) is caught only by
    # the format Cinder knows
    B.write_qcow2(share, S1, size=SIZE, backing=VOL, backing_fmt='qcow2')
    assert inspect_chain(str(share / VOL)).safe
    report = inspect_chain(str(share / VOL), volume_format='raw')
    [found] = mismatches(report)
    assert found.filename == VOL and 'disagree' in found.message and 'volume_format says raw' in found.message


def test_qcow2_volume_with_snapshot(share):
    B.write_qcow2(share, VOL, size=SIZE)
    with_snapshot(share, 'qcow2')
    assert inspect_chain(str(share / VOL)).safe  # the overlay declares it
    assert inspect_chain(str(share / VOL), volume_format='qcow2').safe
    report = inspect_chain(str(share / VOL), volume_format='raw')
    assert [p.code for p in report.errors] == ['format_mismatch']


def test_snapshot_file_is_qcow2_by_name(share):
    B.write(str(share / S1), b'\x00' * 4096, size=SIZE)
    report = inspect_chain(str(share / S1))
    assert [p.code for p in mismatches(report)] == ['format_mismatch']
    assert report.layers[0].format_source.startswith('its name')


def test_files_outside_cinder_naming_keep_their_content_format(share):
    B.write_qcow2(share, 'disk.qcow2', size=SIZE)
    report = inspect_chain(str(share / 'disk.qcow2'))
    assert report.safe and report.layers[0].expected_format is None
    assert report.layers[0].trusted_format == 'qcow2'


def test_libvirt_declaration_is_trusted(share):
    B.write_qcow2(share, VOL, size=SIZE)
    declared = DeclaredChain(layers=[(str(share / VOL), 'qcow2')])
    assert inspect_chain(str(share / VOL), declared=declared).safe
    report = inspect_chain(str(share / VOL), declared=declared, volume_format='raw')
    assert [p.code for p in report.errors] == ['format_mismatch']  # reported once


def test_libvirt_raw_for_planted_header(share):
    planted_raw(share)
    declared = DeclaredChain(layers=[(str(share / VOL), 'raw')])
    report = inspect_chain(str(share / VOL), declared=declared)
    assert [p.code for p in report.errors] == ['format_mismatch']
    assert "libvirt" in report.errors[0].message


# ---------------------------------------------------------------------------------------------
# Plans and clones use the trusted format
# ---------------------------------------------------------------------------------------------

def test_plan_create_declares_the_trusted_format(share):
    # raw content that detection calls iso: the overlay must declare raw (the trusted format), not iso
    B.write(str(share / VOL), B.iso(), size=SIZE)
    report = inspect_chain(str(share / VOL))
    assert report.safe and report.layers[0].image.format == 'iso'
    [create] = [s for s in plan_create(report, VOL_ID, NEW_SNAP, OFFLINE).steps if s.action == 'create_overlay']
    assert create.args['backing_format'] == 'raw'


def test_plan_create_on_qcow2_volume(share):
    B.write_qcow2(share, VOL, size=SIZE)
    with pytest.raises(VolsnapError) as info:
        plan_create(inspect_chain(str(share / VOL)), VOL_ID, NEW_SNAP, OFFLINE)
    assert 'format_mismatch' in info.value.msg and 'volume_format: qcow2' in info.value.msg
    plan = plan_create(inspect_chain(str(share / VOL), volume_format='qcow2'), VOL_ID, NEW_SNAP, OFFLINE)
    assert plan.steps[0].args['backing_format'] == 'qcow2'


def test_plan_delete_rebases_onto_the_trusted_format(share):
    B.write(str(share / VOL), B.iso(), size=SIZE)
    B.write_qcow2(share, S1, size=SIZE, backing=VOL, backing_fmt='raw')
    B.write_qcow2(share, S2, size=SIZE, backing=S1, backing_fmt='qcow2')
    (share / (VOL + '.info')).write_text(B.info_text(S2, {SNAP1: S1, SNAP2: S2}))
    plan = plan_delete(inspect_chain(str(share / VOL)), VOL_ID, SNAP1, OFFLINE)
    [rebase] = [s for s in plan.steps if s.action == 'rebase']
    assert rebase.args['backing_format'] == 'raw' and plan.file_format == {VOL: 'raw'}


def test_clone_reads_the_source_with_its_trusted_format(share):
    B.write(str(share / VOL), B.iso(), size=SIZE)
    with_snapshot(share, 'raw')
    plan = C.plan_clone(inspect_chain(str(share / VOL)), SNAP1, str(share / 'volume-new'), 'raw')
    assert plan.source_format == 'raw'
    assert plan.command[plan.command.index('-f') + 1] == 'raw'


def test_clone_of_qcow2_volume(share):
    B.write_qcow2(share, VOL, size=SIZE)
    with_snapshot(share, 'qcow2')
    plan = C.plan_clone(inspect_chain(str(share / VOL), volume_format='qcow2'), SNAP1, str(share / 'volume-new'))
    assert plan.command[plan.command.index('-f') + 1] == 'qcow2'
    with pytest.raises(VolsnapError) as info:
        C.plan_clone(inspect_chain(str(share / VOL), volume_format='raw'), SNAP1, str(share / 'volume-new'))
    assert 'format_mismatch' in info.value.msg


def test_clone_of_planted_header_below_snapshot_is_refused(share):
    planted_raw(share)
    with_snapshot(share, 'raw')
    with pytest.raises(VolsnapError) as info:
        C.plan_clone(inspect_chain(str(share / VOL), volume_format='raw'), SNAP1, str(share / 'volume-new'))
    assert 'format_mismatch' in info.value.msg


# ---------------------------------------------------------------------------------------------
# After a plan: the verification and the offline fallbacks of online merges
# ---------------------------------------------------------------------------------------------

def test_planned_volume_format(share):
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import _planned_volume_format
    B.write_qcow2(share, VOL, size=SIZE)
    with_snapshot(share, 'qcow2')
    report = inspect_chain(str(share / VOL))
    delete = plan_delete(report, VOL_ID, SNAP1, OFFLINE)  # commits into volume-<id>, which becomes the top
    assert _planned_volume_format(delete) == 'qcow2'
    raw_share = share / 'raw'
    raw_share.mkdir()
    B.write(str(raw_share / VOL), b'\x00' * 4096, size=SIZE)
    plan = plan_create(inspect_chain(str(raw_share / VOL)), VOL_ID, NEW_SNAP, OFFLINE)
    assert _planned_volume_format(plan) == 'raw'


def test_offline_fallback_takes_the_declared_format(share):
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_exec import _declared_format_of
    planted_raw(share)  # what a commit of a guest's header into a raw base leaves
    with_snapshot(share, 'raw')
    chain = [str(share / S1), str(share / VOL)]
    assert _declared_format_of(chain, str(share / VOL)) == 'raw'  # not the qcow2 the content looks like
    B.write_qcow2(share, S1, size=SIZE, backing=VOL)  # no declaration
    with pytest.raises(VolsnapError):
        _declared_format_of(chain, str(share / VOL))
