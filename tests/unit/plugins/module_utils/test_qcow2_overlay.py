# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The native qcow2 overlay: read back by the collection's own header parser (byte equality with qemu-img's output
is checked against the real qemu-img in tests/integration/test_qcow2_overlay.py)."""

from __future__ import annotations

import os
import struct

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.image_format import inspect_image
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qcow2_overlay import (
    CLUSTER_SIZE,
    L1_OFFSET,
    MAX_SIZE,
    native_overlay_supported,
    overlay_layout,
    write_overlay,
)

GIB = 1 << 30


def written(tmp_path, backing, fmt, size):
    path = str(tmp_path / 'overlay')
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        layout = write_overlay(fd, backing, fmt, size)
    finally:
        os.close(fd)
    return path, layout


@pytest.mark.parametrize('size,l1', [(GIB, 2), (100 * GIB, 200), (16 << 40, 32768), (1, 1), (MAX_SIZE, 4194304)])
def test_the_overlay_reads_back_as_a_safe_qcow2_on_its_backing_file(tmp_path, size, l1):
    path, layout = written(tmp_path, 'volume-abc', 'raw', size)
    info = inspect_image(path)
    assert info.format == 'qcow2' and info.qcow2_version == 3 and info.cluster_size == CLUSTER_SIZE
    assert info.virtual_size == layout.size == -(-size // 512) * 512
    assert (info.backing_file, info.backing_format) == ('volume-abc', 'raw')
    assert not info.findings and not info.dirty and not info.corrupt and info.data_file is None
    assert info.compression_type in (None, 'zlib') and info.incompatible_features == []
    assert layout.l1_entries == l1 and os.path.getsize(path) == L1_OFFSET + 8 * l1


def test_refcounts_cover_exactly_the_metadata_clusters(tmp_path):
    path, layout = written(tmp_path, 'volume-abc', 'qcow2', 16 << 40)  # an L1 table of 4 clusters
    with open(path, 'rb') as handle:
        data = handle.read()
    assert struct.unpack('>Q', data[CLUSTER_SIZE:CLUSTER_SIZE + 8])[0] == 2 * CLUSTER_SIZE
    counts = struct.unpack('>10H', data[2 * CLUSTER_SIZE:2 * CLUSTER_SIZE + 20])
    assert counts == (1,) * 7 + (0,) * 3  # header, refcount table, refcount block, 4 L1 clusters
    assert data[L1_OFFSET:] == b'\0' * (8 * layout.l1_entries)  # nothing allocated: every read goes to the backing


def test_the_backing_name_is_stored_as_given(tmp_path):
    name = 'volume-%s.%s' % ('1' * 36, '2' * 36)
    path, _layout = written(tmp_path, name, 'qcow2', GIB)
    assert inspect_image(path).backing_file == name
    long_name = 'x' * 1023
    path2 = str(tmp_path / 'long')
    fd = os.open(path2, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    write_overlay(fd, long_name, 'raw', GIB)
    os.close(fd)
    assert inspect_image(path2).backing_file == long_name


@pytest.mark.parametrize('backing,fmt,size', [
    ('', 'raw', GIB),                      # no backing name
    ('x' * 1024, 'raw', GIB),              # longer than qemu accepts
    ('a\0b', 'raw', GIB),                  # a NUL ends the name for qemu
    ('volume-abc', '', GIB),
    ('volume-abc', 'raw,x', GIB),          # not a format name
    ('volume-abc', 'r' * 17, GIB),
    ('volume-abc', 'raw', 0),
    ('volume-abc', 'raw', MAX_SIZE + 1),   # beyond qemu's largest L1 table
    ('\udcff', 'raw', GIB),                # not encodable
])
def test_what_the_native_writer_does_not_know_is_left_to_qemu_img(backing, fmt, size):
    assert not native_overlay_supported(backing, fmt, size)
    with pytest.raises(ValueError):
        overlay_layout(backing, fmt, size)


def test_a_write_error_propagates(tmp_path):
    path = str(tmp_path / 'overlay')
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0o600)
    try:
        with pytest.raises(OSError):
            write_overlay(fd, 'volume-abc', 'raw', GIB)
    finally:
        os.close(fd)
