# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _remotefs: Cinder's .info format, names and atomic writes."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import share as rfs
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import is_file_id
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import (
    InfoFileError,
    SnapshotInfo,
    backing_name_allowed,
    info_path_for,
    load_info,
    snapshot_filename,
    split_volume_filename,
    write_atomic,
)

VOL_ID = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
VOL = 'volume-' + VOL_ID
SNAP1 = '11111111-2222-4333-8444-555555555555'
SNAP2 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'


class TestSnapshotInfo:
    def test_dumps_is_byte_exact_with_cinder(self):
        info = SnapshotInfo(active='%s.%s' % (VOL, SNAP2),
                            snapshots={SNAP2: '%s.%s' % (VOL, SNAP2), SNAP1: '%s.%s' % (VOL, SNAP1)})
        expected = json.dumps({'active': '%s.%s' % (VOL, SNAP2), SNAP1: '%s.%s' % (VOL, SNAP1),
                               SNAP2: '%s.%s' % (VOL, SNAP2)}, indent=1, sort_keys=True)
        assert info.dumps() == expected
        assert not info.dumps().endswith('\n')
        assert info.dumps().splitlines()[0] == '{'
        assert info.dumps().splitlines()[1] == ' "%s": "%s.%s",' % (SNAP1, VOL, SNAP1)

    def test_dumps_literal(self):
        info = SnapshotInfo(active='volume-1234.bbbb', snapshots={'bbbb': 'volume-1234.bbbb',
                                                                  'aaaa': 'volume-1234.aaaa'})
        assert info.dumps() == ('{\n "aaaa": "volume-1234.aaaa",\n "active": "volume-1234.bbbb",\n'
                                ' "bbbb": "volume-1234.bbbb"\n}')

    def test_dumps_without_snapshots(self):
        assert SnapshotInfo(active=VOL).dumps() == '{\n "active": "%s"\n}' % VOL

    def test_round_trip(self):
        info = SnapshotInfo(active='%s.%s' % (VOL, SNAP1), snapshots={SNAP1: '%s.%s' % (VOL, SNAP1)})
        again = SnapshotInfo.loads(info.dumps())
        assert again == info
        assert again.as_dict() == {'active': '%s.%s' % (VOL, SNAP1), SNAP1: '%s.%s' % (VOL, SNAP1)}

    def test_as_dict_does_not_mutate(self):
        info = SnapshotInfo(active='a', snapshots={'s': 'b'})
        info.as_dict()['x'] = 'y'
        assert info.snapshots == {'s': 'b'}

    def test_snapshot_for_file(self):
        info = SnapshotInfo(active='b', snapshots={'s1': 'a', 's2': 'b'})
        assert info.snapshot_for_file('a') == 's1'
        assert info.snapshot_for_file('b') == 's2'
        assert info.snapshot_for_file('c') is None

    @pytest.mark.parametrize('text', [
        '[]', '"active"', '42', 'null', '[{"active": "x"}]',
    ])
    def test_loads_rejects_non_objects(self, text):
        with pytest.raises(InfoFileError):
            SnapshotInfo.loads(text)

    @pytest.mark.parametrize('text', [
        '{}', '{"aaaa": "volume-1.aaaa"}', '{"active": ""}', '{"active": null}', '{"active": 3}',
        '{"active": ["x"]}',
    ])
    def test_loads_requires_active(self, text):
        with pytest.raises(InfoFileError):
            SnapshotInfo.loads(text)

    @pytest.mark.parametrize('data', [
        {'active': 'volume-1', 's': '../volume-1'},
        {'active': 'volume-1', 's': '/etc/passwd'},
        {'active': 'volume-1', 's': 'dir/file'},
        {'active': 'volume-1', 's': '..'},
        {'active': 'volume-1', 's': '.'},
        {'active': 'volume-1', 's': ''},
        {'active': 'volume-1', 's': 5},
        {'active': 'volume-1', 's': None},
        {'active': '/abs/volume-1'},
        {'active': 'sub/volume-1'},
        {'active': '..'},
        {'active': '.'},
    ])
    def test_loads_rejects_paths(self, data):
        with pytest.raises(InfoFileError):
            SnapshotInfo.loads(json.dumps(data))

    def test_loads_invalid_json(self):
        with pytest.raises(InfoFileError) as exc:
            SnapshotInfo.loads('{"active": ')
        assert 'JSON' in str(exc.value)

    def test_info_file_error_is_a_value_error(self):
        assert issubclass(InfoFileError, ValueError)


class TestLoadInfo:
    def test_missing_file(self, tmp_path):
        assert load_info(str(tmp_path / 'volume-x.info')) is None

    def test_valid_file(self, tmp_path):
        path = tmp_path / 'v.info'
        path.write_text(json.dumps({'active': 'v.s', 's': 'v.s'}, indent=1, sort_keys=True))
        info = load_info(str(path))
        assert info == SnapshotInfo(active='v.s', snapshots={'s': 'v.s'})

    def test_invalid_file(self, tmp_path):
        path = tmp_path / 'v.info'
        path.write_text('not json')
        with pytest.raises(InfoFileError):
            load_info(str(path))

    def test_too_large(self, tmp_path):
        path = tmp_path / 'v.info'
        path.write_text('{"active": "x", "pad": "%s"}' % ('y' * (1024 * 1024)))
        with pytest.raises(InfoFileError) as exc:
            load_info(str(path))
        assert '1 MiB' in str(exc.value)

    def test_directory_is_invalid(self, tmp_path):
        (tmp_path / 'v.info').mkdir()
        with pytest.raises(InfoFileError, match='not a regular file'):
            load_info(str(tmp_path / 'v.info'))


class TestWriteAtomic:
    def test_keeps_mode_and_content(self, tmp_path):
        path = tmp_path / (VOL + '.info')
        path.write_text('old')
        os.chmod(str(path), 0o640)
        content = SnapshotInfo(active=VOL + '.' + SNAP1, snapshots={SNAP1: VOL + '.' + SNAP1}).dumps()
        write_atomic(str(path), content)
        assert path.read_text() == content
        assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o640
        assert sorted(os.listdir(str(tmp_path))) == [VOL + '.info']

    def test_new_file_default_mode(self, tmp_path):
        path = tmp_path / 'new.info'
        write_atomic(str(path), '{}')
        assert path.read_text() == '{}'
        assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o644
        assert os.listdir(str(tmp_path)) == ['new.info']

    def test_mode_from_like(self, tmp_path):
        like = tmp_path / 'volume'
        like.write_text('x')
        os.chmod(str(like), 0o600)
        path = tmp_path / 'volume.info'
        write_atomic(str(path), 'content', like=str(like))
        assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
        assert path.read_text() == 'content'
        assert sorted(os.listdir(str(tmp_path))) == ['volume', 'volume.info']

    def test_missing_like_falls_back_to_path(self, tmp_path):
        path = tmp_path / 'volume.info'
        path.write_text('old')
        os.chmod(str(path), 0o620)
        write_atomic(str(path), 'new', like=str(tmp_path / 'absent'))
        assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o620
        assert path.read_text() == 'new'

    def test_replaces_inode(self, tmp_path):
        path = tmp_path / 'f'
        path.write_text('old')
        keep = open(str(path))
        try:
            write_atomic(str(path), 'new')
            assert keep.read() == 'old'  # readers of the old file are not disturbed
        finally:
            keep.close()
        assert path.read_text() == 'new'

    def test_failure_leaves_no_temp_file(self, tmp_path, monkeypatch):
        path = tmp_path / 'f.info'
        path.write_text('old')

        def boom(src, dst):
            raise OSError(28, 'No space left on device')

        monkeypatch.setattr(rfs.os, 'rename', boom)
        with pytest.raises(OSError):
            write_atomic(str(path), 'new')
        monkeypatch.undo()
        assert path.read_text() == 'old'
        assert os.listdir(str(tmp_path)) == ['f.info']


class TestNames:
    def test_split_volume_filename(self):
        assert split_volume_filename(VOL) == (VOL, VOL_ID, None)
        assert split_volume_filename('%s.%s' % (VOL, SNAP1)) == (VOL, VOL_ID, SNAP1)
        assert split_volume_filename(VOL + '.info') == (VOL, VOL_ID, 'info')
        assert split_volume_filename('%s.tmp-snap-%s' % (VOL, SNAP1)) == (VOL, VOL_ID, 'tmp-snap-' + SNAP1)
        nodash = VOL_ID.replace('-', '')
        assert split_volume_filename('volume-' + nodash) == ('volume-' + nodash, nodash, None)

    @pytest.mark.parametrize('name', [
        'volume-', 'volume-1234', 'vol-' + VOL_ID, VOL_ID, 'volume-' + VOL_ID.upper(), 'xvolume-' + VOL_ID,
        'volume-' + VOL_ID + 'a', 'volume-' + VOL_ID + '.', '', 'volume-' + VOL_ID[:-1],
    ])
    def test_split_volume_filename_rejects(self, name):
        assert split_volume_filename(name) is None

    def test_split_volume_filename_rejects_trailing_newline(self):
        assert split_volume_filename(VOL + '\n') is None

    def test_is_cinder_id(self):
        assert is_file_id(VOL_ID)
        assert is_file_id(VOL_ID.replace('-', ''))
        assert is_file_id(SNAP1)

    @pytest.mark.parametrize('value', [
        '', None, '../x', '../' + VOL_ID, VOL_ID + '/..', 'a/' + VOL_ID, VOL_ID + '/x', '/' + VOL_ID,
        VOL_ID.upper(), VOL_ID[:-1], VOL_ID + '0', 'x' + VOL_ID, ' ' + VOL_ID, VOL_ID + ' ', 'tmp-snap-' + VOL_ID,
    ])
    def test_is_cinder_id_rejects(self, value):
        assert not is_file_id(value)

    def test_is_cinder_id_rejects_trailing_newline(self):
        assert not is_file_id(VOL_ID + '\n')

    def test_snapshot_and_info_names(self):
        assert snapshot_filename(VOL, SNAP1) == '%s.%s' % (VOL, SNAP1)
        assert info_path_for('/share/' + VOL) == '/share/%s.info' % VOL

    @pytest.mark.parametrize('backing', [
        VOL,
        '%s.%s' % (VOL, SNAP1),
        '%s.%s' % (VOL, SNAP1.replace('-', '')),
        '%s.tmp-snap-%s' % (VOL, SNAP1),
        '%s.vhd' % VOL,
        '%s.%s.vhdx' % (VOL, SNAP1),
        '/mnt/share/%s' % VOL,
        '/mnt/share/%s.%s' % (VOL, SNAP1),
    ])
    def test_backing_name_allowed(self, backing):
        assert backing_name_allowed(backing, VOL, '/mnt/share')

    def test_backing_name_allowed_share_with_trailing_slash(self):
        assert backing_name_allowed('/mnt/share/' + VOL, VOL, '/mnt/share/')

    @pytest.mark.parametrize('backing', [
        'other-file',
        'volume-' + SNAP1,
        '%s.%s' % ('volume-' + SNAP1, SNAP2),
        '../%s' % VOL,
        './%s' % VOL,
        'sub/%s' % VOL,
        '/mnt/other/%s' % VOL,
        '/mnt/share/sub/%s' % VOL,
        '/mnt/sharex/%s' % VOL,
        '%s.%s/../x' % (VOL, SNAP1),
        '%s.info' % VOL,
        '%s.%s.qcow2' % (VOL, SNAP1),
        '%sX' % VOL,
        '%s.SNAP' % VOL,
        '',
    ])
    def test_backing_name_refused(self, backing):
        assert not backing_name_allowed(backing, VOL, '/mnt/share')

    def test_backing_name_volume_name_is_escaped(self):
        # A '.' in the volume name must not act as a regex wildcard.
        assert not backing_name_allowed('volumeX1', 'volume.1', '/s')
        assert backing_name_allowed('volume.1', 'volume.1', '/s')


class TestShareNames:
    """The one place that decides what a name in the share may be."""

    @pytest.mark.parametrize('name, protocol', [
        ('json:{"driver":"raw","file":{"filename":"/outside/secret"}}', 'json'),
        ('file:/etc/passwd', 'file'),
        ('nbd:127.0.0.1:10809', 'nbd'),
        ('http://example.invalid/disk', 'http'),
        ('https://example.invalid/disk', 'https'),
        ('gluster+tcp://h/v/f', 'gluster+tcp'),
        (':x', ''),
    ])
    def test_protocol_names(self, name, protocol):
        assert rfs.qemu_protocol(name) == protocol

    @pytest.mark.parametrize('name', [VOL, VOL + '.' + SNAP1, 'dir/a:b', '/abs/a:b', './x:y', 'volume-x'])
    def test_plain_names(self, name):
        assert rfs.qemu_protocol(name) is None

    def test_own_file_kind(self):
        assert rfs.own_file_kind(VOL, VOL) == 'volume'
        assert rfs.own_file_kind(VOL + '.' + SNAP1, VOL) == 'snapshot'
        other = 'volume-' + SNAP2
        for name in (other, other + '.' + SNAP1, VOL + '.info', VOL + '.' + SNAP1 + '.x',
                     '.volsnap-nfs-%s.lock' % VOL_ID, '.volsnap-%s.journal' % VOL, VOL + '.tmp-snap-' + SNAP1,
                     '../' + VOL, VOL + '.', VOL + '.' + SNAP2.upper()):
            assert rfs.own_file_kind(name, VOL) is None, name

    def test_foreign_info_entries(self):
        good = SnapshotInfo(active=VOL + '.' + SNAP2, snapshots={SNAP1: VOL + '.' + SNAP1, SNAP2: VOL + '.' + SNAP2})
        assert good.foreign_entries(VOL) == []
        bad = SnapshotInfo(active='volume-' + SNAP2, snapshots={SNAP1: VOL + '.info', 'nope': VOL})
        problems = bad.foreign_entries(VOL)
        assert len(problems) == 3
        assert any('"active"' in p and 'volume-' + SNAP2 in p for p in problems)
        assert any(VOL + '.info' in p for p in problems)
        assert any("'nope'" in p for p in problems)

    def test_info_symlink_is_refused_never_followed(self, tmp_path):
        outside = tmp_path / 'outside.json'
        outside.write_text(json.dumps({'active': VOL}))
        share = tmp_path / 'share'
        share.mkdir()
        link = share / (VOL + '.info')
        link.symlink_to(outside)
        with pytest.raises(InfoFileError, match='symbolic link'):
            load_info(str(link))

    def test_info_fifo_is_refused(self, tmp_path):
        fifo = tmp_path / (VOL + '.info')
        os.mkfifo(str(fifo))
        with pytest.raises(InfoFileError, match='not a regular file'):
            load_info(str(fifo))

    def test_open_regular_never_creates_through_a_symlink(self, tmp_path):
        target = tmp_path / 'outside-created'
        link = tmp_path / 'lock'
        link.symlink_to(target)
        with pytest.raises(rfs.ShareFileError, match='symbolic link'):
            rfs.open_regular(str(link), os.O_RDWR | os.O_CREAT)
        assert not target.exists()
        fd = rfs.open_regular(str(tmp_path / 'new'), os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        assert stat.S_IMODE(os.stat(str(tmp_path / 'new')).st_mode) == 0o600

    def test_lstat_regular(self, tmp_path):
        (tmp_path / 'f').write_text('x')
        (tmp_path / 'l').symlink_to(tmp_path / 'f')
        assert rfs.lstat_regular(str(tmp_path / 'f')).st_size == 1
        with pytest.raises(rfs.ShareFileError):
            rfs.lstat_regular(str(tmp_path / 'l'))
        with pytest.raises(rfs.ShareFileError):
            rfs.lstat_regular(str(tmp_path))
        with pytest.raises(FileNotFoundError):
            rfs.lstat_regular(str(tmp_path / 'missing'))
