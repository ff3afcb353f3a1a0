# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A new, empty qcow2 overlay written by this process: the file ``qemu-img create -f qcow2 -u -b <backing> -F <fmt>
<file> <size>`` writes, byte for byte, without starting ``qemu-img``.

A snapshot's overlay is always the same small file: a header cluster naming the backing file and its format, one
refcount table cluster, one refcount block, and an L1 table of zeros (no data cluster is allocated: every read goes
to the backing file). Starting ``qemu-img`` for it costs a process (7 ms and more per volume, most of a many-volume
task's time); writing it here costs a few ``pwrite`` calls. The bytes are those of qemu-img's defaults (qcow2 version
3, ``compat=1.1``, 64 KiB clusters, 16-bit refcounts, zlib compression type, no lazy refcounts, no extended L2, no
external data file): what Cinder's RemoteFS driver and Nova get from ``qemu-img create`` with default options. The
integration tests compare them with the installed qemu-img's output for many sizes and backing names, and have
``qemu-img check`` and a running domain open the result.

:func:`overlay_layout` is pure (the writes to make); :func:`write_overlay` makes them on a descriptor the caller
opened (the share's safe creation: final owner and mode, never a link). :func:`native_overlay_supported` says when
the layout is known; outside it (a backing name or format qemu would refuse, a size beyond what one refcount block
covers) the caller runs ``qemu-img`` as before, which then says what is wrong.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from typing import Tuple

QCOW2_MAGIC = 0x514649FB
CLUSTER_BITS = 16
CLUSTER_SIZE = 1 << CLUSTER_BITS
REFCOUNT_ORDER = 4                          # 16-bit refcounts, qemu's default
HEADER_LENGTH = 112                         # version 3 header with the compression type field (qemu >= 5.1)
SECTOR = 512                                # qemu rounds the size up to whole sectors
L2_COVERS = CLUSTER_SIZE * (CLUSTER_SIZE // 8)   # bytes of guest data one L1 entry maps: 512 MiB
MAX_L1_BYTES = 32 * 1024 * 1024             # qemu QCOW_MAX_L1_SIZE
MAX_SIZE = (MAX_L1_BYTES // 8) * L2_COVERS  # 2 PiB: the largest L1 qemu accepts
MAX_BACKING_NAME = 1023                     # qemu refuses longer backing file names in the header

EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_END = 0

# qemu's feature name table (block/qcow2.c, qcow2_update_header): (type, bit, name); type 0 incompatible,
# 1 compatible, 2 autoclear. Informational for tools; qemu-img writes it into every header.
FEATURE_NAMES: Tuple[Tuple[int, int, str], ...] = (
    (0, 0, 'dirty bit'),
    (0, 1, 'corrupt bit'),
    (0, 2, 'external data file'),
    (0, 3, 'compression type'),
    (0, 4, 'extended L2 entries'),
    (1, 0, 'lazy refcounts'),
    (2, 0, 'bitmaps'),
    (2, 1, 'raw external data'),
)
FEATURE_NAME_LEN = 46

# The layout below: header cluster 0, refcount table cluster 1, refcount block cluster 2, L1 table from cluster 3.
REFCOUNT_TABLE_OFFSET = CLUSTER_SIZE
REFCOUNT_BLOCK_OFFSET = 2 * CLUSTER_SIZE
L1_OFFSET = 3 * CLUSTER_SIZE


@dataclass(frozen=True)
class OverlayLayout:
    """The writes that make the overlay: ``writes`` at their offsets, then the file's ``length`` (the L1 table is
    zeros: the length leaves it as a hole, read back as zeros, exactly qemu's bytes)."""

    writes: Tuple[Tuple[int, bytes], ...]
    length: int
    size: int       # the virtual size recorded (rounded up to a sector, as qemu does)
    l1_entries: int


def _pad8(data: bytes) -> bytes:
    return data + b'\0' * (-len(data) % 8)


def _extension(kind: int, data: bytes) -> bytes:
    return struct.pack('>II', kind, len(data)) + _pad8(data)


def _feature_table() -> bytes:
    return b''.join(struct.pack('>BB', kind, bit) + name.encode('ascii').ljust(FEATURE_NAME_LEN, b'\0')
                    for kind, bit, name in FEATURE_NAMES)


def native_overlay_supported(backing: str, backing_format: str, size: int) -> bool:
    """Whether :func:`overlay_layout` knows the file for these arguments (else: let qemu-img make it)."""
    try:
        name = backing.encode('utf-8')
        fmt = backing_format.encode('ascii')
    except UnicodeError:
        return False
    return (0 < len(name) <= MAX_BACKING_NAME and b'\0' not in name
            and 0 < len(fmt) <= 16 and fmt.isalnum()
            and 0 < size <= MAX_SIZE)


def overlay_layout(backing: str, backing_format: str, size: int) -> OverlayLayout:
    """The overlay qemu-img creates on ``backing`` (declared as the qemu format name ``backing_format``) with a
    virtual size of ``size`` bytes. ValueError when :func:`native_overlay_supported` says no."""
    if not native_overlay_supported(backing, backing_format, size):
        raise ValueError('no native qcow2 overlay for backing %r format %r size %r' % (backing, backing_format, size))
    size = -(-size // SECTOR) * SECTOR
    l1_entries = -(-size // L2_COVERS)
    l1_clusters = -(-(l1_entries * 8) // CLUSTER_SIZE)
    used_clusters = 3 + l1_clusters          # header, refcount table, refcount block, L1 table
    extensions = (_extension(EXT_BACKING_FORMAT, backing_format.encode('ascii'))
                  + _extension(EXT_FEATURE_TABLE, _feature_table())
                  + struct.pack('>II', EXT_END, 0))
    name = backing.encode('utf-8')
    name_offset = HEADER_LENGTH + len(extensions)
    header = struct.pack(
        '>IIQIIQIIQQIIQQQQIIB7x',
        QCOW2_MAGIC, 3,                      # magic, version
        name_offset, len(name),              # backing file name
        CLUSTER_BITS, size,
        0,                                   # no encryption
        l1_entries, L1_OFFSET,
        REFCOUNT_TABLE_OFFSET, 1,            # refcount table: one cluster
        0, 0,                                # no internal snapshots
        0, 0, 0,                             # incompatible, compatible, autoclear features
        REFCOUNT_ORDER, HEADER_LENGTH,
        0,                                   # compression type zlib (+ 7 bytes of padding)
    )
    if len(header) != HEADER_LENGTH or name_offset + len(name) > CLUSTER_SIZE:
        raise ValueError('internal error: the qcow2 header does not fit its cluster')
    refcount_table = struct.pack('>Q', REFCOUNT_BLOCK_OFFSET)
    refcount_block = struct.pack('>%dH' % used_clusters, *([1] * used_clusters))
    return OverlayLayout(
        writes=((0, header + extensions + name), (REFCOUNT_TABLE_OFFSET, refcount_table),
                (REFCOUNT_BLOCK_OFFSET, refcount_block)),
        length=L1_OFFSET + l1_entries * 8, size=size, l1_entries=l1_entries)


def write_overlay(fd: int, backing: str, backing_format: str, size: int) -> OverlayLayout:
    """Write the overlay into the empty regular file open as ``fd`` (the caller fsyncs and publishes it)."""
    layout = overlay_layout(backing, backing_format, size)
    for offset, data in layout.writes:
        written = os.pwrite(fd, data, offset)
        if written != len(data):
            raise OSError(errno.EIO, 'short write (%d of %d bytes) at offset %d' % (written, len(data), offset))
    os.ftruncate(fd, layout.length)
    return layout
