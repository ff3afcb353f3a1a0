# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _atomic: the one atomic file writer and its owner/mode policies (real files in tmp_path)."""

from __future__ import annotations

import errno
import os
import stat
from typing import List, Tuple

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base import atomic as at
from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import (
    FileAttributes,
    apply_attributes,
    attributes_like,
    fsync_dir,
    write_atomic,
)

NOBODY = 65534  # uid of nobody and gid of nogroup on Debian


def meta(path) -> Tuple[int, int, int]:
    st = os.stat(str(path))
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def entries(directory) -> List[str]:
    return sorted(os.listdir(str(directory)))


@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        pytest.fail('these tests give files away (chown) and must run as root, as make units does in this lab')


class TestWrite:
    def test_new_file_gets_content_and_mode(self, tmp_path):
        path = tmp_path / 'new.conf'
        write_atomic(str(path), b'data \xff', FileAttributes(0o640))
        assert path.read_bytes() == b'data \xff'
        assert meta(path)[2] == 0o640
        assert entries(tmp_path) == ['new.conf']

    def test_replaces_the_inode_and_readers_keep_the_old_content(self, tmp_path):
        path = tmp_path / 'f'
        path.write_bytes(b'old')
        inode = os.stat(str(path)).st_ino
        with open(str(path), 'rb') as keep:
            write_atomic(str(path), b'new', FileAttributes(0o644))
            assert keep.read() == b'old'
        assert path.read_bytes() == b'new'
        assert os.stat(str(path)).st_ino != inode
        assert entries(tmp_path) == ['f']

    def test_empty_and_large_content(self, tmp_path):
        path = tmp_path / 'f'
        write_atomic(str(path), b'', FileAttributes(0o600))
        assert path.read_bytes() == b''
        big = bytes(range(256)) * 40000
        write_atomic(str(path), big, FileAttributes(0o600))
        assert path.read_bytes() == big

    def test_relative_path(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        write_atomic('rel.txt', b'x', FileAttributes(0o644))
        assert (tmp_path / 'rel.txt').read_bytes() == b'x'
        assert entries(tmp_path) == ['rel.txt']

    def test_owner_group_and_mode_are_set_before_the_data(self, tmp_path, monkeypatch, as_root):
        path = tmp_path / 'k'
        seen = []
        real_write = os.write

        def spy(fd, data):
            st = os.fstat(fd)
            seen.append((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)))
            return real_write(fd, data)
        monkeypatch.setattr(at.os, 'write', spy)
        write_atomic(str(path), b'secret', FileAttributes(0o640, NOBODY, NOBODY))
        monkeypatch.undo()
        assert seen and set(seen) == {(NOBODY, NOBODY, 0o640)}
        assert meta(path) == (NOBODY, NOBODY, 0o640)

    def test_minus_one_leaves_the_process_owner(self, tmp_path):
        path = tmp_path / 'f'
        write_atomic(str(path), b'x', FileAttributes(0o600, -1, -1))
        assert meta(path) == (os.geteuid(), os.getegid(), 0o600)

    def test_set_id_bits_survive_the_chown(self, tmp_path, as_root):
        path = tmp_path / 'f'
        write_atomic(str(path), b'x', FileAttributes(0o2750, NOBODY, NOBODY))
        assert meta(path) == (NOBODY, NOBODY, 0o2750)

    def test_temporary_name_beside_the_target(self, tmp_path, monkeypatch):
        path = tmp_path / 'cinder.conf'
        names = []
        real_rename = os.rename

        def spy(src, dst):
            names.append((src, dst))
            return real_rename(src, dst)
        monkeypatch.setattr(at.os, 'rename', spy)
        write_atomic(str(path), b'x', FileAttributes(0o644), suffix='.volsnap-tmp')
        monkeypatch.undo()
        (src, dst), = names
        assert dst == str(path)
        assert os.path.dirname(src) == str(tmp_path)
        assert os.path.basename(src).startswith('.cinder.conf.') and src.endswith('.volsnap-tmp')

    def test_file_and_directory_are_fsynced(self, tmp_path, monkeypatch):
        path = tmp_path / 'f'
        kinds = []
        real_fsync = os.fsync

        def spy(fd):
            st = os.fstat(fd)
            kinds.append('dir' if stat.S_ISDIR(st.st_mode) else 'file')
            return real_fsync(fd)
        monkeypatch.setattr(at.os, 'fsync', spy)
        write_atomic(str(path), b'x', FileAttributes(0o644))
        monkeypatch.undo()
        assert kinds == ['file', 'dir']


class TestFailures:
    """Every failure leaves the target as it was, no temporary file, and the error unchanged."""

    def fails_with(self, tmp_path, monkeypatch, name, exc, attributes=FileAttributes(0o644)):
        path = tmp_path / 'f'
        path.write_bytes(b'old')
        os.chmod(str(path), 0o600)

        def boom(*args):
            raise exc
        monkeypatch.setattr(at.os, name, boom)
        with pytest.raises(type(exc)) as info:
            write_atomic(str(path), b'new', attributes)
        monkeypatch.undo()
        assert info.value is exc
        assert path.read_bytes() == b'old' and meta(path)[2] == 0o600
        assert entries(tmp_path) == ['f']

    def test_write_error(self, tmp_path, monkeypatch):
        self.fails_with(tmp_path, monkeypatch, 'write', OSError(errno.ENOSPC, 'No space left on device'))

    def test_fsync_error(self, tmp_path, monkeypatch):
        self.fails_with(tmp_path, monkeypatch, 'fsync', OSError(errno.EIO, 'Input/output error'))

    def test_rename_error(self, tmp_path, monkeypatch):
        self.fails_with(tmp_path, monkeypatch, 'rename', OSError(errno.EXDEV, 'Invalid cross-device link'))

    def test_interrupt(self, tmp_path, monkeypatch):
        self.fails_with(tmp_path, monkeypatch, 'write', KeyboardInterrupt())

    def test_refused_chown_fails_when_not_best_effort(self, tmp_path, monkeypatch):
        self.fails_with(tmp_path, monkeypatch, 'fchown', OSError(errno.EPERM, 'Operation not permitted'),
                        FileAttributes(0o644, NOBODY, NOBODY))

    def test_refused_chown_is_ignored_when_best_effort(self, tmp_path, monkeypatch):
        path = tmp_path / 'f'

        def refuse(fd, uid, gid):
            raise OSError(errno.EPERM, 'Operation not permitted')
        monkeypatch.setattr(at.os, 'fchown', refuse)
        write_atomic(str(path), b'new', FileAttributes(0o640, gid=NOBODY, best_effort=True))
        monkeypatch.undo()
        assert path.read_bytes() == b'new'
        assert meta(path) == (os.geteuid(), os.getegid(), 0o640)

    def test_missing_directory(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            write_atomic(str(tmp_path / 'no' / 'f'), b'x', FileAttributes(0o644))
        assert entries(tmp_path) == []


class TestAttributesLike:
    def test_root_copies_owner_group_and_mode(self, tmp_path, as_root):
        ref = tmp_path / 'ref'
        ref.write_bytes(b'')
        os.chown(str(ref), NOBODY, 0)
        os.chmod(str(ref), 0o2640)
        assert attributes_like(str(ref)) == FileAttributes(0o2640, NOBODY, 0)
        target = tmp_path / 'target'
        write_atomic(str(target), b'x', attributes_like(str(ref)))
        assert meta(target) == (NOBODY, 0, 0o2640)

    @staticmethod
    def unprivileged(tmp_path, monkeypatch, mode, same_group):
        """A reference file of ``mode`` seen by a process that is not root, in its group or not."""
        ref = tmp_path / 'ref'
        ref.write_bytes(b'')
        os.chmod(str(ref), mode)
        gid = os.stat(str(ref)).st_gid
        monkeypatch.setattr(at.os, 'geteuid', lambda: 1000)
        monkeypatch.setattr(at.os, 'getegid', lambda: gid if same_group else gid + 1)
        return str(ref), gid

    def test_unprivileged_keeps_the_group_best_effort(self, tmp_path, monkeypatch):
        ref, gid = self.unprivileged(tmp_path, monkeypatch, 0o640, same_group=False)
        assert attributes_like(ref) == FileAttributes(0o640, -1, gid, best_effort=True)
        assert attributes_like(ref, group_when_unprivileged=False) == FileAttributes(0o640)

    def test_unprivileged_in_the_same_group_changes_nothing_but_the_mode(self, tmp_path, monkeypatch):
        ref, _gid = self.unprivileged(tmp_path, monkeypatch, 0o604, same_group=True)
        assert attributes_like(ref) == FileAttributes(0o604)

    def test_missing_reference(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            attributes_like(str(tmp_path / 'absent'))


class TestApplyAttributes:
    """apply_attributes on an open descriptor: what write_atomic and _nfs.share.create_share_file give a new file."""

    def test_owner_group_then_mode_of_an_open_file(self, tmp_path, as_root):
        path = tmp_path / 'f'
        path.write_bytes(b'data')
        fd = os.open(str(path), os.O_RDONLY)
        try:
            apply_attributes(fd, FileAttributes(0o2660, NOBODY, NOBODY))
        finally:
            os.close(fd)
        # the mode is set after the chown (which clears set-id bits), so the setgid bit stays
        assert meta(path) == (NOBODY, NOBODY, 0o2660) and path.read_bytes() == b'data'

    def test_best_effort_group_that_cannot_be_given(self, tmp_path, monkeypatch):
        path = tmp_path / 'f'
        path.write_bytes(b'')

        def refuse(fd, uid, gid):
            raise PermissionError(errno.EPERM, 'not permitted')
        monkeypatch.setattr(at.os, 'fchown', refuse)
        fd = os.open(str(path), os.O_RDONLY)
        try:
            apply_attributes(fd, FileAttributes(0o640, -1, NOBODY, best_effort=True))
            assert meta(path)[2] == 0o640
            with pytest.raises(PermissionError):
                apply_attributes(fd, FileAttributes(0o600, -1, NOBODY))
        finally:
            os.close(fd)


def test_fsync_dir_of_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        fsync_dir(str(tmp_path / 'absent'))
