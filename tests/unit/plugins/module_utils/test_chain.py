# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _chain.inspect_chain on qcow2 chains built byte by byte in tmp_path."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import (
    ChainReport,
    DeclaredChain,
    formats_agree,
    inspect_chain,
    judge_declared,
    normalize_format,
    qemu_format,
    within,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.image_format import ERROR, WARNING
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B

VOL_ID = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
VOL = 'volume-' + VOL_ID
SNAP1 = '11111111-2222-4333-8444-555555555555'
SNAP2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
SNAP3 = '99999999-8888-4777-8666-555555555555'


def codes(report):
    return [p.code for p in report.problems]


def problem(report, code):
    matches = [p for p in report.problems if p.code == code]
    assert matches, 'no %s problem in %r' % (code, report.problems)
    return matches[0]


def write_info(directory, active, snapshots, volume=VOL):
    path = os.path.join(str(directory), volume + '.info')
    with open(path, 'w') as handle:
        handle.write(B.info_text(active, snapshots))
    return path


@pytest.fixture
def share(tmp_path):
    directory = tmp_path / 'share'
    directory.mkdir()
    return directory


@pytest.fixture
def cinder_chain(share):
    """volume-<id> (base, qcow2) <- volume-<id>.<snap1> <- volume-<id>.<snap2> (active), with .info."""
    B.write_qcow2(share, VOL, size=1 << 30)
    B.write_qcow2(share, '%s.%s' % (VOL, SNAP1), size=1 << 30, backing=VOL, backing_fmt='qcow2')
    B.write_qcow2(share, '%s.%s' % (VOL, SNAP2), size=1 << 30, backing='%s.%s' % (VOL, SNAP1), backing_fmt='qcow2')
    write_info(share, '%s.%s' % (VOL, SNAP2), {SNAP1: '%s.%s' % (VOL, SNAP1), SNAP2: '%s.%s' % (VOL, SNAP2)})
    return share


def linear_chain(directory, names, base_fmt='qcow2'):
    """names[0] is the top; each names[i] backs onto names[i+1] (relative names, formats declared)."""
    for index, name in enumerate(names):
        if index + 1 < len(names):
            fmt = base_fmt if index + 2 == len(names) else 'qcow2'
            B.write_qcow2(directory, name, backing=names[index + 1], backing_fmt=fmt)
        elif base_fmt == 'raw':
            B.write(os.path.join(str(directory), name), b'\x00' * 4096)
        else:
            B.write_qcow2(directory, name)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def test_format_names():
    assert qemu_format('vhd') == 'vpc'
    assert qemu_format('iso') == 'raw'
    assert qemu_format('qcow2') == 'qcow2'
    assert normalize_format('vpc') == 'vhd'
    assert normalize_format('file') == 'raw'
    assert normalize_format('host_device') == 'raw'
    assert normalize_format('qcow2') == 'qcow2'
    assert normalize_format(None) is None
    assert formats_agree('raw', 'iso')
    assert formats_agree('vpc', 'vhd')
    assert not formats_agree('raw', 'qcow2')
    assert not formats_agree('qcow2', 'raw')


def test_within(tmp_path):
    base = str(tmp_path)
    assert within(base, base)
    assert within(os.path.join(base, 'a', 'b'), base)
    assert not within(base + '-other/x', base)
    assert not within(os.path.join(base, '..', 'x'), base)


# ---------------------------------------------------------------------------------------------
# Cinder chains
# ---------------------------------------------------------------------------------------------

class TestCinderChain:
    def test_three_layers_from_active(self, cinder_chain):
        top = cinder_chain / ('%s.%s' % (VOL, SNAP2))
        report = inspect_chain(str(top))
        assert report.problems == []
        assert report.safe is True
        assert report.volume_name == VOL
        assert report.info_file == str(cinder_chain / (VOL + '.info'))
        assert report.info.active == '%s.%s' % (VOL, SNAP2)
        assert report.active == '%s.%s' % (VOL, SNAP2)
        assert [layer.image.filename for layer in report.layers] == [
            '%s.%s' % (VOL, SNAP2), '%s.%s' % (VOL, SNAP1), VOL]
        assert report.file_format == {'%s.%s' % (VOL, SNAP2): 'qcow2', '%s.%s' % (VOL, SNAP1): 'qcow2',
                                      VOL: 'qcow2'}
        assert [layer.snapshot_id for layer in report.layers] == [SNAP2, SNAP1, None]
        # The data of a snapshot lives in the backing file of its overlay.
        assert [layer.data_of_snapshot_id for layer in report.layers] == [None, SNAP2, SNAP1]
        assert report.layers[0].backing_path == str(cinder_chain / ('%s.%s' % (VOL, SNAP1)))
        assert report.layers[2].backing_path is None

        result = report.as_dict()
        assert result['depth'] == 3
        assert result['safe'] is True
        assert result['active'] == '%s.%s' % (VOL, SNAP2)
        assert result['active_path'] == str(top)
        assert result['snapshots'] == {SNAP1: '%s.%s' % (VOL, SNAP1), SNAP2: '%s.%s' % (VOL, SNAP2)}
        assert result['problems'] == []
        assert [layer['snapshot_id'] for layer in result['chain']] == [SNAP2, SNAP1, None]
        assert [layer['data_of_snapshot_id'] for layer in result['chain']] == [None, SNAP2, SNAP1]
        assert result['chain'][0]['backing_format'] == 'qcow2'
        assert result['chain'][0]['declared_format'] is None
        assert result['chain'][1]['declared_format'] == 'qcow2'
        json.dumps(result)  # module results must be JSON-serialisable

    def test_follow_info_from_base_name(self, cinder_chain):
        report = inspect_chain(str(cinder_chain / VOL))
        assert report.followed_info is True
        assert report.path == str(cinder_chain / VOL)
        assert report.active == '%s.%s' % (VOL, SNAP2)
        assert len(report.layers) == 3
        assert report.safe is True
        assert report.problems == []

    def test_follow_info_disabled(self, cinder_chain):
        report = inspect_chain(str(cinder_chain / VOL), follow_info=False, volume_format='qcow2')
        assert report.followed_info is False
        assert [layer.image.filename for layer in report.layers] == [VOL]
        # The .info is still checked: its snapshot files are not in this (one-layer) chain, but the
        # chain does not start at the active file, so that is not reported as an error.
        assert 'info_file_not_in_chain' not in codes(report)
        assert report.safe is True

    def test_start_from_middle_snapshot_does_not_follow_info(self, cinder_chain):
        report = inspect_chain(str(cinder_chain / ('%s.%s' % (VOL, SNAP1))))
        assert report.followed_info is False
        assert [layer.image.filename for layer in report.layers] == ['%s.%s' % (VOL, SNAP1), VOL]
        assert [layer.snapshot_id for layer in report.layers] == [SNAP1, None]
        assert [layer.data_of_snapshot_id for layer in report.layers] == [None, SNAP1]
        assert report.safe is True

    def test_raw_base_volume(self, share):
        B.write(share / VOL, b'\x00' * 8192)
        B.write_qcow2(share, '%s.%s' % (VOL, SNAP1), backing=VOL, backing_fmt='raw')
        write_info(share, '%s.%s' % (VOL, SNAP1), {SNAP1: '%s.%s' % (VOL, SNAP1)})
        report = inspect_chain(str(share / VOL))
        assert report.safe is True
        assert report.file_format == {'%s.%s' % (VOL, SNAP1): 'qcow2', VOL: 'raw'}
        assert report.layers[1].declared_format == 'raw'
        assert report.layers[1].data_of_snapshot_id == SNAP1

    def test_no_info_and_no_snapshots(self, share):
        B.write(share / VOL, b'\x00' * 4096)
        report = inspect_chain(str(share / VOL), expected_format='raw')
        assert report.info is None
        assert report.problems == []
        assert report.active == VOL
        assert report.file_format == {VOL: 'raw'}

    def test_tmp_snap_backing_name_allowed(self, share):
        tmp = '%s.tmp-snap-%s' % (VOL, SNAP1)
        B.write_qcow2(share, tmp)
        B.write_qcow2(share, VOL, backing=tmp, backing_fmt='qcow2')
        report = inspect_chain(str(share / VOL), volume_format='qcow2')
        assert 'backing_name_not_allowed' not in codes(report)
        assert [layer.image.filename for layer in report.layers] == [VOL, tmp]


# ---------------------------------------------------------------------------------------------
# Backing links that leave the share, loop, go too deep or disappear
# ---------------------------------------------------------------------------------------------

class TestBackingLinks:
    def test_absolute_backing_outside_share(self, tmp_path, share):
        other = tmp_path / 'other'
        other.mkdir()
        B.write_qcow2(other, 'secret')
        B.write_qcow2(share, 'top', backing=str(other / 'secret'), backing_fmt='qcow2')
        report = inspect_chain(str(share / 'top'))
        assert 'backing_outside_share' in codes(report)
        assert problem(report, 'backing_outside_share').severity == ERROR
        assert problem(report, 'backing_outside_share').filename == 'top'
        assert len(report.layers) == 1
        assert report.safe is False

    def test_relative_dotdot_backing_outside_share(self, tmp_path, share):
        B.write_qcow2(tmp_path, 'secret')
        B.write_qcow2(share, 'top', backing='../secret', backing_fmt='qcow2')
        report = inspect_chain(str(share / 'top'))
        assert codes(report) == ['backing_outside_share']
        assert len(report.layers) == 1

    @pytest.mark.parametrize('backing', ['..', '../..', '../share/..'])
    def test_parent_directory_name_is_outside_share(self, share, backing):
        # A bare ".." names the parent of the share: it must be refused as outside the share and
        # never become a layer of the chain.
        B.write_qcow2(share, 'top', backing=backing, backing_fmt='qcow2')
        report = inspect_chain(str(share / 'top'))
        assert 'backing_outside_share' in codes(report)
        assert [layer.image.filename for layer in report.layers] == ['top']
        assert all(within(layer.image.path, str(share)) for layer in report.layers)
        assert report.safe is False

    def test_loop_through_hard_link(self, share):
        B.write_qcow2(share, 'a', backing='b', backing_fmt='qcow2')
        os.link(str(share / 'a'), str(share / 'b'))
        report = inspect_chain(str(share / 'a'))
        assert 'backing_loop' in codes(report)
        assert len(report.layers) <= 2
        assert report.safe is False

    def test_dotdot_that_comes_back_inside_is_followed(self, share):
        B.write_qcow2(share, 'base')
        B.write_qcow2(share, 'top', backing='../share/base', backing_fmt='qcow2')
        report = inspect_chain(str(share / 'top'))
        assert [layer.image.filename for layer in report.layers] == ['top', 'base']
        assert report.safe is True

    def test_explicit_share_allows_subdirectory(self, share):
        (share / 'sub').mkdir()
        B.write_qcow2(share, 'base')
        B.write_qcow2(share / 'sub', 'top', backing='../base', backing_fmt='qcow2')
        # Without share=, the share is the directory of the top file and ../base is outside.
        assert 'backing_outside_share' in codes(inspect_chain(str(share / 'sub' / 'top')))
        report = inspect_chain(str(share / 'sub' / 'top'), share=str(share))
        assert report.safe is True
        assert len(report.layers) == 2

    def test_top_outside_given_share(self, tmp_path, share):
        B.write_qcow2(tmp_path, 'elsewhere')
        report = inspect_chain(str(tmp_path / 'elsewhere'), share=str(share))
        assert codes(report) == ['outside_share']
        assert report.layers == []
        assert report.safe is False

    def test_absolute_backing_inside_share_is_a_warning(self, share):
        B.write_qcow2(share, 'base')
        B.write_qcow2(share, 'top', backing=str(share / 'base'), backing_fmt='qcow2')
        report = inspect_chain(str(share / 'top'))
        assert codes(report) == ['absolute_backing_path']
        assert problem(report, 'absolute_backing_path').severity == WARNING
        assert report.safe is True
        assert len(report.layers) == 2

    def test_absolute_backing_inside_share_cinder_names(self, share):
        B.write_qcow2(share, VOL)
        B.write_qcow2(share, '%s.%s' % (VOL, SNAP1), backing=str(share / VOL), backing_fmt='qcow2')
        write_info(share, '%s.%s' % (VOL, SNAP1), {SNAP1: '%s.%s' % (VOL, SNAP1)})
        report = inspect_chain(str(share / VOL))
        assert codes(report) == ['absolute_backing_path']
        assert report.safe is True
        assert len(report.layers) == 2

    def test_missing_backing_file(self, share):
        B.write_qcow2(share, 'top', backing='gone', backing_fmt='qcow2')
        report = inspect_chain(str(share / 'top'))
        assert codes(report) == ['missing_backing_file']
        assert problem(report, 'missing_backing_file').filename == 'gone'
        assert len(report.layers) == 1
        assert report.safe is False

    def test_missing_top_raises(self, share):
        with pytest.raises(OSError):
            inspect_chain(str(share / 'nothing'))

    def test_loop(self, share):
        B.write_qcow2(share, 'a', backing='b', backing_fmt='qcow2')
        B.write_qcow2(share, 'b', backing='a', backing_fmt='qcow2')
        report = inspect_chain(str(share / 'a'))
        assert codes(report) == ['backing_loop']
        assert problem(report, 'backing_loop').filename == 'a'
        assert [layer.image.filename for layer in report.layers] == ['a', 'b']
        assert report.safe is False

    def test_self_loop(self, share):
        B.write_qcow2(share, 'a', backing='a', backing_fmt='qcow2')
        report = inspect_chain(str(share / 'a'))
        assert codes(report) == ['backing_loop']
        assert len(report.layers) == 1

    def test_loop_through_symlink(self, share):
        B.write_qcow2(share, 'a', backing='link', backing_fmt='qcow2')
        os.symlink('a', str(share / 'link'))
        report = inspect_chain(str(share / 'a'))
        assert codes(report) == ['backing_loop']

    def test_chain_too_deep_stops_the_walk(self, share):
        names = ['layer%02d' % index for index in range(30)]
        linear_chain(share, names)
        report = inspect_chain(str(share / names[0]), max_depth=10)
        assert codes(report) == ['chain_too_deep']
        assert problem(report, 'chain_too_deep').filename == names[10]
        assert len(report.layers) == 10
        assert [layer.image.filename for layer in report.layers] == names[:10]
        assert report.safe is False

    def test_chain_exactly_max_depth(self, share):
        names = ['layer%02d' % index for index in range(10)]
        linear_chain(share, names)
        report = inspect_chain(str(share / names[0]), max_depth=10)
        assert report.problems == []
        assert len(report.layers) == 10

    def test_long_chain_default_depth(self, share):
        names = ['layer%02d' % index for index in range(30)]
        linear_chain(share, names, base_fmt='raw')
        report = inspect_chain(str(share / names[0]))
        assert report.problems == []
        assert len(report.layers) == 30
        assert report.layers[-1].image.format == 'raw'

    def test_symlink_inside_share_pointing_outside(self, tmp_path, share):
        B.write_qcow2(tmp_path, 'secret')
        os.symlink(str(tmp_path / 'secret'), str(share / 'innocent'))
        B.write_qcow2(share, 'top', backing='innocent', backing_fmt='qcow2')
        report = inspect_chain(str(share / 'top'))
        assert set(codes(report)) & {'outside_share', 'backing_outside_share'}
        assert len(report.layers) == 1
        assert report.safe is False

    def test_top_symlink_pointing_outside_share(self, tmp_path, share):
        B.write_qcow2(tmp_path, 'secret')
        os.symlink(str(tmp_path / 'secret'), str(share / 'top'))
        report = inspect_chain(str(share / 'top'), share=str(share))
        assert codes(report) == ['outside_share']
        assert report.layers == []

    def test_backing_is_a_fifo(self, share):
        os.mkfifo(str(share / 'pipe'))
        B.write_qcow2(share, 'top', backing='pipe', backing_fmt='raw')
        report = inspect_chain(str(share / 'top'))
        assert 'not_regular_file' in codes(report)
        assert report.safe is False

    def test_invalid_header_in_middle_stops_walk(self, share):
        B.write_qcow2(share, 'base')
        B.write_qcow2(share, 'mid', backing='base', backing_fmt='qcow2', header_length=100)
        B.write_qcow2(share, 'top', backing='mid', backing_fmt='qcow2')
        report = inspect_chain(str(share / 'top'))
        assert codes(report) == ['invalid_header']
        assert problem(report, 'invalid_header').filename == 'mid'
        assert [layer.image.filename for layer in report.layers] == ['top', 'mid']

    def test_external_data_file_reported_on_layer(self, share):
        B.write_qcow2(share, 'base', data_file='/dev/sda', incompatible=1 << 2)
        B.write_qcow2(share, 'top', backing='base', backing_fmt='qcow2')
        report = inspect_chain(str(share / 'top'))
        assert codes(report) == ['external_data_file']
        assert problem(report, 'external_data_file').filename == 'base'
        assert report.safe is False

    def test_non_qcow2_backing_not_followed(self, share):
        descriptor = B.VMDK_EMBEDDED_DESCRIPTOR.format(create_type='monolithicSparse',
                                                       extra='parentFileNameHint="/etc/passwd"\n', sectors=8,
                                                       extent='disk.vmdk')
        B.write(share / 'disk.vmdk', B.vmdk_sparse(8, descriptor))
        report = inspect_chain(str(share / 'disk.vmdk'))
        assert codes(report) == ['vmdk_parent']
        assert len(report.layers) == 1


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------

class TestFormats:
    def test_backing_declared_raw_but_qcow2(self, share):
        B.write_qcow2(share, 'hidden')
        B.write_qcow2(share, 'base', backing='hidden', backing_fmt='qcow2')
        B.write_qcow2(share, 'top', backing='base', backing_fmt='raw')
        report = inspect_chain(str(share / 'top'))
        assert codes(report) == ['format_mismatch']
        assert problem(report, 'format_mismatch').filename == 'base'
        # base is read (its header is shown) but its own backing link is not followed.
        assert [layer.image.filename for layer in report.layers] == ['top', 'base']
        assert report.layers[1].declared_format == 'raw'
        assert report.layers[1].backing_path is None
        assert report.safe is False

    def test_expected_raw_but_qcow2(self, share):
        B.write_qcow2(share, 'base')
        B.write_qcow2(share, VOL, backing='base', backing_fmt='qcow2')
        report = inspect_chain(str(share / VOL), expected_format='raw')
        assert 'format_mismatch' in codes(report)
        assert len(report.layers) == 1
        assert report.layers[0].declared_format == 'raw'
        assert report.safe is False

    def test_expected_qcow2_matches(self, share):
        B.write_qcow2(share, 'top')
        report = inspect_chain(str(share / 'top'), expected_format='qcow2')
        assert report.problems == []

    def test_expected_raw_on_iso_agrees(self, share):
        B.write(share / 'cd', B.iso())
        report = inspect_chain(str(share / 'cd'), expected_format='raw')
        assert report.problems == []
        assert report.file_format == {'cd': 'iso'}

    def test_backing_format_vpc_alias(self, share):
        B.write(share / 'base.vhd', B.vhd_footer(1 << 20, 3) + b'\x00' * 512)
        B.write_qcow2(share, 'top', backing='base.vhd', backing_fmt='vpc')
        report = inspect_chain(str(share / 'top'))
        assert report.problems == []
        assert report.layers[1].declared_format == 'vhd'
        assert report.layers[1].image.format == 'vhd'

    def test_backing_format_unspecified(self, share):
        B.write_qcow2(share, 'base')
        B.write_qcow2(share, 'top', backing='base')
        report = inspect_chain(str(share / 'top'))
        assert codes(report) == ['backing_format_unspecified']
        assert problem(report, 'backing_format_unspecified').severity == WARNING
        assert report.safe is True
        assert len(report.layers) == 2
        assert report.layers[1].declared_format is None

    def test_dirty_layer_is_only_a_warning(self, share):
        B.write_qcow2(share, 'top', incompatible=1)
        report = inspect_chain(str(share / 'top'))
        assert codes(report) == ['dirty']
        assert report.safe is True
        assert report.errors == []
        assert report.summary() == ''

    def test_summary_lists_errors(self, share):
        B.write_qcow2(share, 'top', incompatible=(1 << 1) | (1 << 0))
        report = inspect_chain(str(share / 'top'))
        assert [p.code for p in report.errors] == ['corrupt']
        assert report.summary().startswith('corrupt: ')
        assert 'dirty' not in report.summary()


# ---------------------------------------------------------------------------------------------
# Cinder naming and the .info file
# ---------------------------------------------------------------------------------------------

class TestInfoFile:
    def test_backing_name_not_allowed(self, share):
        B.write_qcow2(share, 'other-file')
        B.write_qcow2(share, VOL, backing='other-file', backing_fmt='qcow2')
        report = inspect_chain(str(share / VOL), volume_format='qcow2')
        assert codes(report) == ['backing_name_not_allowed']
        assert problem(report, 'backing_name_not_allowed').filename == VOL
        assert report.safe is False

    def test_backing_name_of_another_volume_not_allowed(self, share):
        other = 'volume-' + str(uuid.UUID(int=7))
        B.write_qcow2(share, other)
        B.write_qcow2(share, VOL, backing=other, backing_fmt='qcow2')
        report = inspect_chain(str(share / VOL), volume_format='qcow2')
        assert 'backing_name_not_allowed' in codes(report)

    def test_info_invalid_json(self, cinder_chain):
        (cinder_chain / (VOL + '.info')).write_text('{"active": ')
        report = inspect_chain(str(cinder_chain / VOL))
        assert 'info_invalid' in codes(report)
        assert problem(report, 'info_invalid').filename == VOL + '.info'
        assert report.info is None
        assert report.followed_info is False
        assert [layer.image.filename for layer in report.layers] == [VOL]
        # An invalid .info is reported once, not also as missing.
        assert 'info_missing' not in codes(report)
        assert report.safe is False

    @pytest.mark.parametrize('content', ['[]', '{}', '{"active": "../etc/passwd"}', '{"active": "x", "s": "a/b"}'])
    def test_info_invalid_content(self, cinder_chain, content):
        (cinder_chain / (VOL + '.info')).write_text(content)
        report = inspect_chain(str(cinder_chain / ('%s.%s' % (VOL, SNAP2))))
        assert 'info_invalid' in codes(report)
        assert report.safe is False

    def test_info_not_utf8(self, cinder_chain):
        # A .info file of binary garbage must be reported, not crash the walk.
        (cinder_chain / (VOL + '.info')).write_bytes(b'\xff\xfe{"active": 1}')
        report = inspect_chain(str(cinder_chain / ('%s.%s' % (VOL, SNAP2))))
        assert 'info_invalid' in codes(report)
        assert report.safe is False

    def test_info_is_a_directory(self, share):
        B.write_qcow2(share, VOL)
        (share / (VOL + '.info')).mkdir()
        report = inspect_chain(str(share / VOL), volume_format='qcow2')
        assert codes(report) == ['info_invalid']

    def test_info_entry_for_missing_file(self, cinder_chain):
        ghost = '%s.%s' % (VOL, SNAP3)
        write_info(cinder_chain, '%s.%s' % (VOL, SNAP2), {SNAP1: '%s.%s' % (VOL, SNAP1),
                                                          SNAP2: '%s.%s' % (VOL, SNAP2), SNAP3: ghost})
        report = inspect_chain(str(cinder_chain / VOL))
        assert codes(report) == ['info_missing_file']
        assert problem(report, 'info_missing_file').filename == ghost
        assert report.safe is False

    def test_info_active_missing_reported_when_not_followed(self, cinder_chain):
        write_info(cinder_chain, '%s.%s' % (VOL, SNAP3), {SNAP1: '%s.%s' % (VOL, SNAP1),
                                                          SNAP2: '%s.%s' % (VOL, SNAP2)})
        report = inspect_chain(str(cinder_chain / ('%s.%s' % (VOL, SNAP2))))
        assert 'info_missing_file' in codes(report)
        assert problem(report, 'info_missing_file').filename == '%s.%s' % (VOL, SNAP3)

    def test_info_active_missing_from_base_name(self, share):
        # The volume file exists; only the .info is stale. inspect_chain promises to raise OSError
        # only when ``path`` itself cannot be read: a stale "active" must be a finding.
        B.write_qcow2(share, VOL)
        write_info(share, '%s.%s' % (VOL, SNAP1), {SNAP1: '%s.%s' % (VOL, SNAP1)})
        report = inspect_chain(str(share / VOL))
        assert 'info_missing_file' in codes(report)
        assert report.safe is False

    def test_snapshot_file_not_in_info(self, cinder_chain):
        write_info(cinder_chain, '%s.%s' % (VOL, SNAP2), {SNAP2: '%s.%s' % (VOL, SNAP2)})
        report = inspect_chain(str(cinder_chain / VOL))
        assert codes(report) == ['snapshot_file_not_in_info']
        assert problem(report, 'snapshot_file_not_in_info').filename == '%s.%s' % (VOL, SNAP1)
        assert report.safe is False
        assert [layer.snapshot_id for layer in report.layers] == [SNAP2, None, None]

    def test_orphan_snapshot_file_is_a_warning(self, cinder_chain):
        orphan = '%s.%s' % (VOL, SNAP3)
        B.write_qcow2(cinder_chain, orphan, backing=VOL, backing_fmt='qcow2')
        report = inspect_chain(str(cinder_chain / VOL))
        assert codes(report) == ['orphan_snapshot_file']
        assert problem(report, 'orphan_snapshot_file').severity == WARNING
        assert problem(report, 'orphan_snapshot_file').filename == orphan
        assert report.safe is True

    def test_unrelated_files_are_not_orphans(self, cinder_chain):
        B.write(cinder_chain / ('%s.notasnapshot' % VOL), b'x')
        B.write(cinder_chain / ('volume-%s.%s' % (uuid.UUID(int=5), SNAP3)), b'x')
        B.write(cinder_chain / 'README', b'x')
        report = inspect_chain(str(cinder_chain / VOL))
        assert report.problems == []

    def test_info_missing(self, share):
        B.write_qcow2(share, VOL)
        B.write_qcow2(share, '%s.%s' % (VOL, SNAP1), backing=VOL, backing_fmt='qcow2')
        report = inspect_chain(str(share / ('%s.%s' % (VOL, SNAP1))))
        assert report.info is None
        assert codes(report) == ['info_missing']
        assert problem(report, 'info_missing').filename == VOL + '.info'
        assert report.safe is False
        assert [layer.snapshot_id for layer in report.layers] == [None, None]

    def test_info_file_not_in_chain(self, cinder_chain):
        # SNAP1's overlay exists but the active file backs directly onto the base.
        B.write_qcow2(cinder_chain, '%s.%s' % (VOL, SNAP2), backing=VOL, backing_fmt='qcow2')
        report = inspect_chain(str(cinder_chain / VOL))
        assert codes(report) == ['info_file_not_in_chain']
        assert problem(report, 'info_file_not_in_chain').filename == '%s.%s' % (VOL, SNAP1)
        assert report.safe is False

    def test_non_cinder_names_skip_info_checks(self, share):
        B.write_qcow2(share, 'base')
        B.write_qcow2(share, 'top', backing='base', backing_fmt='qcow2')
        report = inspect_chain(str(share / 'top'))
        assert report.volume_name is None
        assert report.info_file is None
        assert report.problems == []
        assert [layer.snapshot_id for layer in report.layers] == [None, None]


# ---------------------------------------------------------------------------------------------
# The chain a hypervisor declares
# ---------------------------------------------------------------------------------------------

class TestDeclared:
    @pytest.fixture
    def chain(self, share):
        B.write(share / 'base', b'\x00' * 4096)
        B.write_qcow2(share, 'mid', backing='base', backing_fmt='raw')
        B.write_qcow2(share, 'top', backing='mid', backing_fmt='qcow2')
        return share

    def test_matching_chain(self, chain):
        declared = DeclaredChain([(str(chain / 'top'), 'qcow2'), (str(chain / 'mid'), 'qcow2'),
                                  (str(chain / 'base'), 'raw')])
        report = inspect_chain(str(chain / 'top'), declared=declared)
        assert report.problems == []
        assert report.layers[0].declared_format == 'qcow2'

    def test_matching_chain_with_qemu_aliases(self, chain):
        declared = DeclaredChain([(str(chain / 'top'), 'qcow2'), (str(chain / 'mid'), None),
                                  (str(chain / 'base'), 'file')])
        report = inspect_chain(str(chain / 'top'), declared=declared)
        assert report.problems == []

    def test_different_path(self, chain):
        B.write_qcow2(chain, 'other')
        declared = DeclaredChain([(str(chain / 'top'), 'qcow2'), (str(chain / 'other'), 'qcow2'),
                                  (str(chain / 'base'), 'raw')])
        report = inspect_chain(str(chain / 'top'), declared=declared)
        assert codes(report) == ['libvirt_chain_mismatch']
        assert problem(report, 'libvirt_chain_mismatch').filename == 'other'
        assert report.safe is False

    def test_different_format(self, chain):
        declared = DeclaredChain([(str(chain / 'top'), 'qcow2'), (str(chain / 'mid'), 'raw'),
                                  (str(chain / 'base'), 'raw')])
        report = inspect_chain(str(chain / 'top'), declared=declared)
        assert codes(report) == ['format_mismatch']
        assert problem(report, 'format_mismatch').filename == 'mid'

    def test_top_format_from_declaration(self, chain):
        # libvirt opens the top as raw: its content is qcow2 (OSSA 2014-033), nothing is followed.
        declared = DeclaredChain([(str(chain / 'top'), 'raw')], complete=False)
        report = inspect_chain(str(chain / 'top'), declared=declared)
        assert 'format_mismatch' in codes(report)
        assert len(report.layers) == 1
        assert report.safe is False

    def test_headers_longer_than_complete_declaration(self, chain):
        declared = DeclaredChain([(str(chain / 'top'), 'qcow2'), (str(chain / 'mid'), 'qcow2')], complete=True)
        report = inspect_chain(str(chain / 'top'), declared=declared)
        assert codes(report) == ['libvirt_chain_mismatch']
        assert problem(report, 'libvirt_chain_mismatch').filename == 'base'
        assert len(report.layers) == 3

    def test_incomplete_declaration_allows_more_layers(self, chain):
        declared = DeclaredChain([(str(chain / 'top'), 'qcow2'), (str(chain / 'mid'), 'qcow2')], complete=False)
        report = inspect_chain(str(chain / 'top'), declared=declared)
        assert report.problems == []
        assert len(report.layers) == 3

    def test_declaration_longer_than_headers(self, chain):
        B.write(chain / 'extra', b'\x00' * 512)
        declared = DeclaredChain([(str(chain / 'top'), 'qcow2'), (str(chain / 'mid'), 'qcow2'),
                                  (str(chain / 'base'), 'raw'), (str(chain / 'extra'), 'raw')])
        report = inspect_chain(str(chain / 'top'), declared=declared)
        assert codes(report) == ['libvirt_chain_mismatch']
        assert problem(report, 'libvirt_chain_mismatch').filename == 'extra'

    def test_declaration_longer_than_unsafe_walk_not_doubly_reported(self, share):
        B.write_qcow2(share, 'top', backing='gone', backing_fmt='qcow2')
        declared = DeclaredChain([(str(share / 'top'), 'qcow2'), (str(share / 'gone'), 'qcow2')])
        report = inspect_chain(str(share / 'top'), declared=declared)
        assert codes(report) == ['missing_backing_file']

    def test_declared_path_through_symlink_matches(self, chain):
        os.symlink('mid', str(chain / 'mid-link'))
        declared = DeclaredChain([(str(chain / 'top'), 'qcow2'), (str(chain / 'mid-link'), 'qcow2'),
                                  (str(chain / 'base'), 'raw')])
        report = inspect_chain(str(chain / 'top'), declared=declared)
        assert report.problems == []

    def test_empty_declaration(self, chain):
        report = inspect_chain(str(chain / 'top'), declared=DeclaredChain([], complete=False))
        assert report.problems == []
        assert len(report.layers) == 3


def _declared(directory, layers, complete=True):
    return DeclaredChain([(str(directory / name), fmt) for name, fmt in layers], complete=complete)


class TestDeclaredOnAReport:
    """judge_declared(inspect_chain(path), declared) is inspect_chain(path, declared=declared), from one read."""

    def assert_same(self, path, declared, **kwargs):
        report = inspect_chain(path, **kwargs)
        before = report.as_dict()
        expected = inspect_chain(path, declared=declared, **kwargs)
        judged = judge_declared(report, declared)
        assert judged.as_dict() == expected.as_dict()
        assert judged == expected
        assert report.as_dict() == before  # the report it was judged from is unchanged
        return judged

    @pytest.fixture
    def chain(self, share):
        B.write(share / 'base', b'\x00' * 4096)
        B.write_qcow2(share, 'mid', backing='base', backing_fmt='raw')
        B.write_qcow2(share, 'top', backing='mid', backing_fmt='qcow2')
        B.write_qcow2(share, 'other')
        B.write(share / 'extra', b'\x00' * 512)
        os.symlink('mid', str(share / 'mid-link'))
        return share

    @pytest.mark.parametrize('layers, complete, expected_codes', [
        ([('top', 'qcow2'), ('mid', 'qcow2'), ('base', 'raw')], True, []),
        ([('top', 'qcow2'), ('mid', None), ('base', 'file')], True, []),
        ([('top', 'qcow2'), ('mid-link', 'qcow2'), ('base', 'raw')], True, []),
        ([('top', 'qcow2'), ('mid', 'qcow2')], False, []),
        ([], False, []),
        ([('top', 'qcow2'), ('other', 'qcow2'), ('base', 'raw')], True, ['libvirt_chain_mismatch']),
        ([('top', 'qcow2'), ('mid', 'raw'), ('base', 'raw')], True, ['format_mismatch']),
        ([('top', 'raw')], False, ['format_mismatch']),
        ([('top', 'qcow2'), ('mid', 'qcow2')], True, ['libvirt_chain_mismatch']),
        ([('top', 'qcow2'), ('mid', 'qcow2'), ('base', 'raw'), ('extra', 'raw')], True, ['libvirt_chain_mismatch']),
    ])
    def test_same_as_inspect_chain_with_declared(self, chain, layers, complete, expected_codes):
        judged = self.assert_same(str(chain / 'top'), _declared(chain, layers, complete))
        assert codes(judged) == expected_codes

    @pytest.mark.parametrize('base_fmt, volume_format, safe', [
        ('qcow2', None, True),  # libvirt agrees with the overlay's declaration
        ('raw', None, False),  # libvirt opens the qcow2 base as raw
        ('qcow2', 'raw', False),  # libvirt and volume_format disagree
    ])
    def test_cinder_chain_formats(self, cinder_chain, base_fmt, volume_format, safe):
        declared = _declared(cinder_chain, [('%s.%s' % (VOL, SNAP2), 'qcow2'), ('%s.%s' % (VOL, SNAP1), 'qcow2'),
                                            (VOL, base_fmt)])
        judged = self.assert_same(str(cinder_chain / VOL), declared, volume_format=volume_format)
        assert judged.safe is safe
        assert judged.followed_info is True

    def test_cinder_chain_without_declared(self, cinder_chain):
        report = inspect_chain(str(cinder_chain / VOL))
        assert judge_declared(report, None) == report
        assert report.safe and len(report.layers) == 3

    def test_declared_format_that_extends_the_walk(self, share):
        # Alone, volume-<id> is raw (the default) and its qcow2 content is not followed; libvirt's declaration
        # makes qcow2 trusted, so the walk goes on below it, exactly as inspect_chain(declared=...) does.
        B.write(share / 'below', b'\x00' * 512)
        B.write_qcow2(share, VOL, backing='below', backing_fmt='raw')
        report = inspect_chain(str(share / VOL))
        assert len(report.layers) == 1 and codes(report) == ['format_mismatch']
        judged = self.assert_same(str(share / VOL), _declared(share, [(VOL, 'qcow2'), ('below', 'raw')]))
        assert [layer.image.filename for layer in judged.layers] == [VOL, 'below']

    def test_judges_the_files_as_they_were_read(self, chain):
        declared = _declared(chain, [('top', 'qcow2'), ('mid', 'qcow2'), ('base', 'raw')])
        report = inspect_chain(str(chain / 'top'))
        expected = inspect_chain(str(chain / 'top'), declared=declared)
        B.write(chain / 'mid', b'\x00' * 4096)  # the files change after the read
        os.unlink(str(chain / 'base'))
        assert judge_declared(report, declared) == expected

    def test_report_not_made_by_inspect_chain(self, share):
        with pytest.raises(ValueError):
            judge_declared(ChainReport(path=str(share / 'top'), share=str(share)), DeclaredChain([]))


class TestProtocolNames:
    """Backing and data-file names qemu parses as a protocol (path_has_protocol) are never files of the share."""

    @pytest.mark.parametrize('backing', [
        'json:{"driver":"raw","file":{"filename":"/outside/secret"}}',
        'file:' + VOL,
        'nbd:127.0.0.1:10809',
        'http://example.com/' + VOL,
        'https:' + VOL,
        'ssh://host/' + VOL,
        VOL + ':x',
    ])
    def test_protocol_backing_is_unsafe_even_when_the_literal_file_exists(self, share, backing):
        B.write_qcow2(share, VOL, size=1 << 20)
        # A file whose literal name is the backing name: the old walk followed it and judged the chain safe.
        if '/' not in backing:
            B.write_qcow2(share, backing, size=1 << 20)
        else:
            os.makedirs(os.path.dirname(str(share / backing)), exist_ok=True)
            B.write_qcow2(share, backing, size=1 << 20)
        top = B.write_qcow2(share, 'top', size=1 << 20, backing=backing, backing_fmt='qcow2')
        report = inspect_chain(top, share=str(share))
        assert not report.safe
        assert 'backing_protocol' in codes(report)
        assert problem(report, 'backing_protocol').severity == ERROR
        assert [layer.image.filename for layer in report.layers] == ['top']

    @pytest.mark.parametrize('backing', ['./json:{}', 'sub/file:x'])
    def test_slash_before_colon_is_a_file_name(self, share, backing):
        (share / 'sub').mkdir()
        B.write_qcow2(share, backing, size=1 << 20)
        top = B.write_qcow2(share, 'top', size=1 << 20, backing=backing, backing_fmt='qcow2')
        report = inspect_chain(top, share=str(share))
        assert 'backing_protocol' not in codes(report)
        assert report.safe, report.summary()
        assert len(report.layers) == 2

    def test_protocol_data_file_is_reported(self, share):
        top = B.write_qcow2(share, 'top', size=1 << 20, incompatible=1 << 2,
                            data_file='json:{"driver":"file","filename":"/etc/shadow"}')
        (share / 'json:{"driver":"file","filename":"').mkdir(parents=True, exist_ok=True)
        report = inspect_chain(top, share=str(share))
        assert not report.safe
        assert 'data_file_protocol' in codes(report)
        assert 'external_data_file' in codes(report)

    def test_plain_data_file_has_no_protocol_finding(self, share):
        top = B.write_qcow2(share, 'top', size=1 << 20, incompatible=1 << 2, data_file='data.raw')
        report = inspect_chain(top, share=str(share))
        assert codes(report) == ['external_data_file']


@pytest.mark.parametrize('fmt', ['file', 'host_device', 'nbd', 'vhd', 'iso', 'qcow', 'json'])
def test_backing_format_must_be_an_image_format_qemu_opens(share, fmt):
    # qemu takes the backing format as a driver name: 'file' opens the bytes through the protocol driver, 'vhd'
    # and 'iso' are no qemu drivers at all ("Unknown driver"); none is followed.
    B.write(share / 'base', b'\x00' * 65536)
    top = B.write_qcow2(share, 'top', size=1 << 20, backing='base', backing_fmt=fmt)
    report = inspect_chain(top, share=str(share))
    assert 'backing_format_not_allowed' in codes(report)
    assert not report.safe
    assert len(report.layers) == 1


@pytest.mark.parametrize('fmt', ['raw', 'qcow2'])
def test_backing_format_qemu_driver_names_accepted(share, fmt):
    if fmt == 'raw':
        B.write(share / 'base', b'\x00' * 65536)
    else:
        B.write_qcow2(share, 'base', size=1 << 20)
    top = B.write_qcow2(share, 'top', size=1 << 20, backing='base', backing_fmt=fmt)
    report = inspect_chain(top, share=str(share))
    assert report.safe, report.summary()
    assert len(report.layers) == 2
