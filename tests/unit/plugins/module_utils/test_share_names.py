# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the share-name rules (_remotefs, _atomic temporary names) and of the .info checks in _chain."""

from __future__ import annotations

import errno
import os

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base import atomic as _atomic
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import share as rfs
from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import (
    FileAttributes,
    is_temporary_name,
    temporary_name,
    write_atomic,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B

VOL_ID = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
VOL = 'volume-' + VOL_ID
OTHER = 'volume-5d2c8e1f-3a4b-4c6d-9e8f-7a6b5c4d3e2f'
SNAP1 = '11111111-2222-4333-8444-555555555555'
SNAP2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'


# ---- temporary names


def test_temporary_names_are_recognisable():
    name = temporary_name('x.info', '.volsnap-tmp')
    assert name.startswith('.x.info.') and name.endswith('.volsnap-tmp') and len(name) == len('.x.info..volsnap-tmp') + 16
    assert is_temporary_name(name, 'x.info', '.volsnap-tmp')
    assert not is_temporary_name(name, 'y.info', '.volsnap-tmp')
    assert not is_temporary_name('.x.info.0123456789abcdeg.volsnap-tmp', 'x.info', '.volsnap-tmp')
    assert not is_temporary_name('.x.info.0123456789abcdef0.volsnap-tmp', 'x.info', '.volsnap-tmp')
    assert is_temporary_name('.x.info.ab_d1234.tmp', 'x.info', '.volsnap-tmp')  # tempfile.mkstemp's, earlier
    assert not is_temporary_name('.x.info.ab_d1234.tmp', 'x.info', '.volsnap-tmp', legacy=False)


def test_write_atomic_never_opens_a_planted_name(tmp_path, monkeypatch):
    target = tmp_path / 'outside'
    planted = '.f.%s.tmp' % ('0' * 16)
    os.symlink(str(target), str(tmp_path / planted))
    names = iter([planted, '.f.%s.tmp' % ('1' * 16)])
    monkeypatch.setattr(_atomic, 'temporary_name', lambda basename, suffix: next(names))
    write_atomic(str(tmp_path / 'f'), b'data', FileAttributes(0o600))
    assert (tmp_path / 'f').read_bytes() == b'data' and not target.exists()
    assert os.path.islink(str(tmp_path / planted))


def test_write_atomic_replaces_a_link_at_the_target_never_follows_it(tmp_path):
    target = tmp_path / 'outside'
    target.write_text('outside')
    os.symlink(str(target), str(tmp_path / 'f'))
    write_atomic(str(tmp_path / 'f'), b'data', FileAttributes(0o600))
    assert not os.path.islink(str(tmp_path / 'f')) and (tmp_path / 'f').read_bytes() == b'data'
    assert target.read_text() == 'outside'


# ---- names of a volume


@pytest.mark.parametrize('name, kind', [
    ('.%s.info.0123456789abcdef.volsnap-tmp' % VOL, 'info'),
    ('..volsnap-%s.journal.0123456789abcdef.volsnap-tmp' % VOL, 'journal'),
    ('.%s.info.abcd_123.tmp' % VOL, 'info'),
    ('.%s.%s.volsnap-tmp' % (VOL, SNAP1), 'overlay'),
    ('.%s.info.0123456789abcdef.volsnap-tmp' % OTHER, None),
    ('.%s.volsnap-tmp' % VOL, None),
    ('.%s.info.notours' % VOL, None),
    ('%s.info' % VOL, None),
    ('.%s.%s.volsnap-tmp' % (VOL, 'info'), None),
])
def test_own_temporary_kind(name, kind):
    assert rfs.own_temporary_kind(name, VOL) == kind


def test_stale_temporaries_are_regular_files_only(tmp_path):
    ours = tmp_path / ('.%s.info.0123456789abcdef.volsnap-tmp' % VOL)
    ours.write_text('{}')
    link = tmp_path / ('.%s.info.fedcba9876543210.volsnap-tmp' % VOL)
    os.symlink(str(tmp_path / 'outside'), str(link))
    (tmp_path / ('.%s.%s.volsnap-tmp' % (VOL, SNAP1))).mkdir()
    assert rfs.stale_temporaries(str(tmp_path), VOL) == [str(ours)]
    assert rfs.remove_stale_temporaries(str(tmp_path), VOL, check_mode=True) == [str(ours)] and ours.exists()
    assert rfs.remove_stale_temporaries(str(tmp_path), VOL) == [str(ours)] and not ours.exists()
    assert os.path.islink(str(link))


def test_snapshot_like_and_volume_files(tmp_path):
    assert rfs.is_snapshot_like('%s.%s' % (VOL, SNAP1), VOL)
    assert rfs.is_snapshot_like('%s.tmp-snap-%s' % (VOL, SNAP1), VOL)
    assert not rfs.is_snapshot_like('%s.info' % VOL, VOL)
    assert not rfs.is_snapshot_like('%s.%s' % (OTHER, SNAP1), VOL)
    listing = [VOL, '%s.info' % VOL, '.volsnap-%s.journal' % VOL, '%s.%s' % (VOL, SNAP1), OTHER,
               '.volsnap-nfs-%s.lock' % VOL_ID, '.%s.info.0123456789abcdef.volsnap-tmp' % VOL]
    assert rfs.volume_files(str(tmp_path), VOL, listing) == sorted(listing[:4])
    assert rfs.volume_id_of_lock('.volsnap-nfs-%s.lock' % VOL_ID) == VOL_ID
    assert rfs.volume_id_of_lock('.volsnap-nfs-../x.lock') is None


def test_create_share_file_never_follows_a_link(tmp_path):
    os.symlink(str(tmp_path / 'outside'), str(tmp_path / 'new'))
    with pytest.raises(OSError) as exc:
        rfs.create_share_file(str(tmp_path / 'new'), FileAttributes(0o600))
    assert exc.value.errno == errno.EEXIST and not (tmp_path / 'outside').exists()


def test_create_share_file_has_its_mode_before_data(tmp_path):
    fd = rfs.create_share_file(str(tmp_path / 'new'), FileAttributes(0o640))
    try:
        st = os.fstat(fd)
        assert st.st_size == 0 and st.st_mode & 0o7777 == 0o640
        with open(rfs.descriptor_path(fd), 'wb') as handle:  # what qemu-img opens
            handle.write(b'data')
        rfs.publish_descriptor(fd, str(tmp_path / 'final'))
        assert os.path.samestat(os.stat(str(tmp_path / 'final')), os.fstat(fd))
        os.symlink(str(tmp_path / 'outside'), str(tmp_path / 'taken'))
        with pytest.raises(OSError) as exc:
            rfs.publish_descriptor(fd, str(tmp_path / 'taken'))
        assert exc.value.errno == errno.EEXIST and not (tmp_path / 'outside').exists()
        rfs.remove_if_same(str(tmp_path / 'new'), fd)
        assert not (tmp_path / 'new').exists() and (tmp_path / 'final').read_bytes() == b'data'
    finally:
        os.close(fd)


def test_new_share_file_gets_the_owner_group_and_mode_of_the_volume_file(tmp_path):
    """What a new overlay or clone is created with (share_file_attributes of the volume file, create_share_file)."""
    if os.geteuid() != 0:
        pytest.fail('this test gives files away (chown) and must run as root, as make units does in this lab')
    nobody = 65534  # uid of nobody and gid of nogroup on Debian
    ref = tmp_path / VOL
    ref.write_bytes(b'')
    os.chown(str(ref), nobody, 0)
    os.chmod(str(ref), 0o660)
    attributes = rfs.share_file_attributes(str(ref))
    assert attributes == FileAttributes(0o660, nobody, 0)
    fd = rfs.create_share_file(str(tmp_path / ('%s.%s' % (VOL, SNAP1))), attributes)
    try:
        st = os.fstat(fd)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_size) == (nobody, 0, 0o660, 0)
    finally:
        os.close(fd)


def test_share_file_attributes_refuse_a_link(tmp_path):
    (tmp_path / 'f').write_text('x')
    os.symlink('f', str(tmp_path / 'l'))
    with pytest.raises(rfs.ShareFileError):
        rfs.share_file_attributes(str(tmp_path / 'l'))


# ---- .info entries in the chain


@pytest.fixture
def chain(tmp_path):
    share = tmp_path / 'share'
    share.mkdir()
    B.write_qcow2(share, VOL, size=1 << 20)
    B.write_qcow2(share, '%s.%s' % (VOL, SNAP1), size=1 << 20, backing=VOL, backing_fmt='qcow2')
    B.write_qcow2(share, OTHER, size=1 << 20)
    return share


def info(share, active, snapshots):
    (share / (VOL + '.info')).write_text(B.info_text(active, snapshots))


def codes(report):
    return [p.code for p in report.problems]


@pytest.mark.parametrize('active, snapshots', [
    (OTHER, {SNAP1: '%s.%s' % (VOL, SNAP1)}),
    ('%s.%s' % (VOL, SNAP1), {SNAP1: '%s.%s' % (VOL, SNAP1), SNAP2: VOL + '.info'}),
    ('%s.%s' % (VOL, SNAP1), {SNAP1: '%s.%s' % (VOL, SNAP1), SNAP2: '.volsnap-nfs-%s.lock' % VOL_ID}),
    ('%s.%s' % (VOL, SNAP1), {SNAP1: '%s.%s' % (VOL, SNAP1), SNAP2: '.volsnap-%s.journal' % VOL}),
    ('%s.%s' % (VOL, SNAP1), {SNAP1: '%s.%s' % (VOL, SNAP1), SNAP2: '%s.%s' % (OTHER, SNAP2)}),
    (VOL + '.info', {SNAP1: '%s.%s' % (VOL, SNAP1)}),
])
def test_foreign_entries_are_unsafe_and_a_foreign_active_is_not_followed(chain, active, snapshots):
    info(chain, active, snapshots)
    report = inspect_chain(str(chain / VOL))
    assert not report.safe and 'info_foreign_entry' in codes(report)
    assert report.layers[0].image.filename in (VOL, '%s.%s' % (VOL, SNAP1))
    assert OTHER not in [layer.image.filename for layer in report.layers]


def test_a_symlinked_entry_is_unsafe_and_not_followed(chain):
    os.symlink('%s.%s' % (VOL, SNAP1), str(chain / ('%s.%s' % (VOL, SNAP2))))
    info(chain, '%s.%s' % (VOL, SNAP2), {SNAP1: '%s.%s' % (VOL, SNAP1), SNAP2: '%s.%s' % (VOL, SNAP2)})
    report = inspect_chain(str(chain / VOL))
    assert not report.safe and 'info_entry_not_regular' in codes(report)
    assert not report.followed_info


def test_a_volume_file_linked_to_another_volume_is_unsafe(chain):
    os.unlink(str(chain / ('%s.%s' % (VOL, SNAP1))))
    os.unlink(str(chain / VOL))
    os.symlink(OTHER, str(chain / VOL))
    report = inspect_chain(str(chain / VOL))
    assert not report.safe and 'info_entry_not_regular' in codes(report)


def test_own_entries_are_safe(chain):
    info(chain, '%s.%s' % (VOL, SNAP1), {SNAP1: '%s.%s' % (VOL, SNAP1)})
    report = inspect_chain(str(chain / VOL))
    assert report.safe, report.problems
    assert report.followed_info
