# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Format detection and header parsing of disk image files, in pure Python.

Every file is treated as hostile: only header bytes are read, every offset and length
read from a file is bounded before it is used, and nothing here ever asks qemu to probe
a file. The result of an inspection is an :class:`ImageInfo` holding what the header
says plus a list of :class:`Finding` (problems found while parsing: truncated headers,
external data files, unknown incompatible features, vmdk extents that point elsewhere...).

The layout facts come from qemu's docs/interop/qcow2.rst and the other formats'
public specifications; the choice of checks follows oslo.utils' format_inspector.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

# Formats this module can detect.
FORMATS = ('raw', 'qcow2', 'qed', 'vmdk', 'vhd', 'vhdx', 'vdi', 'luks', 'iso')

# Severities of findings. An ``error`` makes a chain unsafe, a ``warning`` does not.
ERROR = 'error'
WARNING = 'warning'

SECTOR = 512
# How much of a text descriptor (vmdk) or a LUKS2 JSON area we are willing to read.
MAX_DESCRIPTOR_BYTES = 64 * 1024
MAX_LUKS2_JSON_BYTES = 4 * 1024 * 1024
HEAD_BYTES = 4096

QCOW2_MAGIC = b'QFI\xfb'
QCOW2_MIN_CLUSTER_BITS = 9
QCOW2_MAX_CLUSTER_BITS = 21
QCOW2_MAX_BACKING_NAME = 1023
QCOW2_V2_HEADER_LENGTH = 72
QCOW2_V3_MIN_HEADER_LENGTH = 104

QCOW2_EXT_END = 0x00000000
QCOW2_EXT_BACKING_FORMAT = 0xE2792ACA
QCOW2_EXT_FEATURE_TABLE = 0x6803F857
QCOW2_EXT_CRYPTO_HEADER = 0x0537BE77
QCOW2_EXT_BITMAPS = 0x23852875
QCOW2_EXT_DATA_FILE = 0x44415441

# Incompatible feature bits qemu knows (docs/interop/qcow2.rst).
QCOW2_INCOMPAT_DIRTY = 1 << 0
QCOW2_INCOMPAT_CORRUPT = 1 << 1
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_INCOMPAT_COMPRESSION = 1 << 3
QCOW2_INCOMPAT_EXTL2 = 1 << 4
QCOW2_INCOMPAT_KNOWN = 0x1F
QCOW2_AUTOCLEAR_BITMAPS = 1 << 0
QCOW2_AUTOCLEAR_DATA_FILE_RAW = 1 << 1

# Limits qemu enforces when it opens a qcow2 file (qemu block/qcow2.h, block/qcow2.c qcow2_do_open,
# block/qcow2-snapshot.c qcow2_read_snapshots, block/qcow2-bitmap.c). A header beyond them is refused by
# qemu, so it is refused here too: a chain we call safe must be one qemu opens.
QCOW2_MAX_REFTABLE_BYTES = 8 * 1024 * 1024          # QCOW_MAX_REFTABLE_SIZE
QCOW2_MAX_L1_BYTES = 32 * 1024 * 1024               # QCOW_MAX_L1_SIZE
QCOW2_L1_ENTRY = 8                                  # L1E_SIZE
QCOW2_MAX_SNAPSHOTS = 65536                         # QCOW_MAX_SNAPSHOTS
QCOW2_SNAPSHOT_HEADER = 40                          # sizeof(QCowSnapshotHeader)
QCOW2_MAX_SNAPSHOT_EXTRA = 1024                     # QCOW_MAX_SNAPSHOT_EXTRA_DATA
QCOW2_MAX_SNAPSHOTS_BYTES = 1024 * QCOW2_MAX_SNAPSHOTS  # QCOW_MAX_SNAPSHOTS_SIZE
QCOW2_MAX_BACKING_FORMAT = 15                       # sizeof(bs->backing_format) - 1
QCOW2_CRYPTO_EXT_BYTES = 16                         # sizeof(Qcow2CryptoHeaderExtension)
QCOW2_BITMAPS_EXT_BYTES = 24                        # sizeof(Qcow2BitmapHeaderExt)
QCOW2_MAX_BITMAPS = 65535                           # QCOW2_MAX_BITMAPS
QCOW2_MAX_BITMAP_DIRECTORY = 1024 * QCOW2_MAX_BITMAPS  # QCOW2_MAX_BITMAP_DIRECTORY_SIZE
QCOW2_MAX_BITMAP_READ = 1024 * 1024                 # ours: bitmap directories and tables we read, at most
QCOW2_MIN_SUBCLUSTER_BITS = 9                       # MIN_CLUSTER_BITS, for subclusters
QCOW2_EXTL2_SUBCLUSTERS = 32                        # QCOW_EXTL2_SUBCLUSTERS_PER_CLUSTER
INT_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
# qemu's block layer fails every read past BDRV_MAX_LENGTH (include/block/block_int-common.h) with EIO.
QEMU_MAX_LENGTH = INT64_MAX - INT64_MAX % (1 << 30)

QCOW2_INCOMPAT_NAMES = {
    QCOW2_INCOMPAT_DIRTY: 'dirty',
    QCOW2_INCOMPAT_CORRUPT: 'corrupt',
    QCOW2_INCOMPAT_DATA_FILE: 'external_data_file',
    QCOW2_INCOMPAT_COMPRESSION: 'compression_type',
    QCOW2_INCOMPAT_EXTL2: 'extended_l2',
}
QCOW2_CRYPT_METHODS = {0: None, 1: 'aes', 2: 'luks'}
QCOW2_COMPRESSION_TYPES = {0: 'zlib', 1: 'zstd'}

QED_MAGIC = b'QED\x00'
VMDK_SPARSE_MAGIC = b'KDMV'
VMDK_COWD_MAGIC = b'COWD'
VMDK_DESCRIPTOR_MAGIC = b'# Disk DescriptorFile'
VMDK_SAFE_CREATE_TYPES = ('monolithicSparse', 'streamOptimized')
VMDK_EMBEDDED_DESCRIPTOR_OFFSET = 512   # qemu vmdk_open: s->desc_offset = 0x200 for sparse files
VMDK_DESCRIPTOR_SECTORS = 20            # qemu DESC_SIZE (20 sectors)
VMDK4_GD_AT_END = 0xFFFFFFFFFFFFFFFF
VMDK4_FLAG_RGD = 1 << 1
VHD_MAGIC = b'conectix'
VHD_MAX_SECTORS = 0xFF000000                        # qemu block/vpc.c: 2040 GiB
VHD_MAX_GEOMETRY = 65535 * 16 * 255                 # qemu VHD_MAX_GEOMETRY
VHD_MAX_BAT_BYTES = 16 * 1024 * 1024                # ours: a BAT of 4 Mi blocks (8 TiB at 2 MiB blocks) at most
VHDX_MAGIC = b'vhdxfile'
VHDX_REGION_TABLE_OFFSETS = (192 * 1024, 256 * 1024)
VHDX_METADATA_REGION = uuid.UUID('8B7CA206-4790-4B9A-B8FE-575F050F886E').bytes_le
VHDX_VIRTUAL_DISK_SIZE = uuid.UUID('2FA54224-CD1B-4876-B211-5DBED83BF4B8').bytes_le
VHDX_PARENT_LOCATOR = uuid.UUID('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C').bytes_le
VHDX_MAX_ENTRIES = 2047
VHDX_HEADER_OFFSETS = (64 * 1024, 128 * 1024)
VHDX_HEADER_SECTION = 1024 * 1024
VHDX_BAT_REGION = uuid.UUID('2DC27766-F623-4200-9D64-115E9BFD4A08').bytes_le
VHDX_FILE_PARAMETERS = uuid.UUID('CAA16737-FA36-4D43-B3B6-33F0AA44E76B').bytes_le
VHDX_LOGICAL_SECTOR_SIZE = uuid.UUID('8141BF1D-A96F-4709-BA47-F233A8FAAB5F').bytes_le
VHDX_PHYSICAL_SECTOR_SIZE = uuid.UUID('CDA348C7-445D-4471-9CC9-E9885251C556').bytes_le
VHDX_PAGE83_DATA = uuid.UUID('BECA12AB-B2E6-4523-93EF-C309E000C746').bytes_le
# The metadata items qemu requires (vhdx_parse_metadata META_ALL_PRESENT) and the bytes it reads of each.
VHDX_METADATA_ITEMS = {VHDX_FILE_PARAMETERS: 8, VHDX_VIRTUAL_DISK_SIZE: 8, VHDX_PAGE83_DATA: 16,
                       VHDX_LOGICAL_SECTOR_SIZE: 4, VHDX_PHYSICAL_SECTOR_SIZE: 4}
VHDX_MIN_BLOCK = 1024 * 1024
VHDX_MAX_BLOCK = 256 * 1024 * 1024
VHDX_MAX_IMAGE_SIZE = 64 * 1024 ** 4
VDI_SIGNATURE = 0xBEDA107F
VDI_BLOCK_SIZE = 1024 * 1024                        # qemu block/vdi.c DEFAULT_CLUSTER_SIZE
VDI_BLOCKS_IN_IMAGE_MAX = 0x1FFFFF80                # qemu VDI_BLOCKS_IN_IMAGE_MAX
VDI_DISK_SIZE_MAX = VDI_BLOCKS_IN_IMAGE_MAX * VDI_BLOCK_SIZE  # qemu VDI_DISK_SIZE_MAX
LUKS_MAGIC = b'LUKS\xba\xbe'
# What qemu's LUKS1 reader knows (crypto/block-luks.c name tables): ciphers with their key sizes, modes, IV
# generators and hashes; the key material area alignment (4 KiB = 8 sectors).
LUKS_CIPHERS = {'aes': (16, 24, 32), 'cast5': (16,), 'serpent': (16, 24, 32), 'twofish': (16, 24, 32), 'sm4': (16,)}
LUKS_MODES = ('ecb', 'cbc', 'xts', 'ctr')
LUKS_IVGENS = ('plain', 'plain64', 'essiv')
LUKS_HASHES = ('md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512', 'ripemd160', 'sm3')
LUKS_KEY_SLOT_SECTORS = 8
ISO_OFFSETS = (0x8001, 0x8801, 0x9001)


@dataclass
class Finding:
    """One problem found in an image or in a chain."""

    code: str
    message: str
    severity: str = ERROR
    filename: Optional[str] = None

    def as_dict(self) -> Dict[str, Optional[str]]:
        return {'code': self.code, 'severity': self.severity, 'message': self.message, 'filename': self.filename}


@dataclass
class ImageInfo:
    """What the header of one image file says."""

    path: str
    format: str = 'raw'
    file_size: int = 0
    actual_size: int = 0
    virtual_size: Optional[int] = None
    cluster_size: Optional[int] = None
    qcow2_version: Optional[int] = None
    backing_file: Optional[str] = None
    backing_format: Optional[str] = None
    encrypted: bool = False
    encryption_format: Optional[str] = None
    dirty: bool = False
    corrupt: bool = False
    data_file: Optional[str] = None
    data_file_raw: bool = False
    extended_l2: bool = False
    compression_type: Optional[str] = None
    incompatible_features: List[str] = field(default_factory=list)
    unknown_incompatible_features: int = 0
    internal_snapshots: int = 0
    references: List[str] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)
    file_id: Tuple[int, int] = (0, 0)

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)

    def add(self, code: str, message: str, severity: str = ERROR) -> None:
        self.findings.append(Finding(code, message, severity, self.filename))


class _Reader:
    """Bounded positional reads on an open file descriptor."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset``; short at the end of the file."""
        if offset < 0 or length <= 0 or offset >= self.size:
            return b''
        length = min(length, self.size - offset)
        chunks = []
        while length > 0:
            chunk = os.pread(self.fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b''.join(chunks)


def qemu_file_length(size: int) -> int:
    """The length qemu gives a file of ``size`` bytes: whole 512-byte sectors, the last one padded with zeros."""
    return -(-size // SECTOR) * SECTOR


class _Truncated(Exception):
    """A header field lies beyond the end of the file or of its container."""


_STRUCTS: Dict[str, struct.Struct] = {}


def _unpack(fmt: str, data: bytes, offset: int) -> Tuple[Any, ...]:
    packer = _STRUCTS.get(fmt)
    if packer is None:
        packer = _STRUCTS[fmt] = struct.Struct(fmt)
    if offset < 0 or offset + packer.size > len(data):
        raise _Truncated('needs %d bytes at offset %d, has %d' % (packer.size, offset, len(data)))
    return packer.unpack_from(data, offset)


_CONTROL = re.compile('[\x00-\x1f]')


def _text(raw: bytes) -> Optional[str]:
    """Decode a name stored in a header; None when it is not clean UTF-8 text."""
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        return None
    if _CONTROL.search(text):
        return None
    return text


def detect_format(head: bytes, reader: Optional[_Reader] = None) -> str:
    """Return the format of an image from its first bytes (and, for iso, a few more).

    The order mirrors the strength of each signature; anything unknown is raw.
    """
    if head[:4] == QCOW2_MAGIC:
        return 'qcow2'
    if head[:4] == QED_MAGIC:
        return 'qed'
    if head[:4] in (VMDK_SPARSE_MAGIC, VMDK_COWD_MAGIC) or head.startswith(VMDK_DESCRIPTOR_MAGIC):
        return 'vmdk'
    if head[:8] == VHDX_MAGIC:
        return 'vhdx'
    if head[:8] == VHD_MAGIC:
        return 'vhd'
    if len(head) >= 0x44 and struct.unpack_from('<I', head, 0x40)[0] == VDI_SIGNATURE:
        return 'vdi'
    if head[:6] == LUKS_MAGIC:
        return 'luks'
    if reader is not None:
        for offset in ISO_OFFSETS:
            if reader.read(offset, 5) == b'CD001':
                return 'iso'
    return 'raw'


def inspect_image(path: str) -> ImageInfo:
    """Inspect one file: detect its format and parse its header.

    Never raises for a bad file: problems are reported as findings. Raises OSError only
    when the file cannot be opened or stat'ed at all (missing, permission denied).
    """
    info = ImageInfo(path=path)
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_NONBLOCK', 0)
                 | getattr(os, 'O_CLOEXEC', 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            info.format = 'unknown'
            info.add('not_regular_file', '%s is not a regular file; only image files are accepted' % path)
            return info
        info.file_size = st.st_size
        info.file_id = (st.st_dev, st.st_ino)
        info.actual_size = getattr(st, 'st_blocks', 0) * 512
        reader = _Reader(fd, st.st_size)
        head = reader.read(0, HEAD_BYTES)
        info.format = detect_format(head, reader)
        parser = _PARSERS.get(info.format)
        try:
            if parser is None:
                info.virtual_size = qemu_file_length(st.st_size)
            else:
                parser(info, reader, head)
        except _Truncated as exc:
            info.add('invalid_header', 'the %s header of %s is truncated or malformed (%s)' % (info.format, path, exc))
        except (ValueError, struct.error, TypeError, AttributeError, KeyError, RecursionError) as exc:
            # Structured metadata (LUKS2 JSON) of the wrong shape or nesting: malformed, never a crash.
            info.add('invalid_header', 'the %s header of %s is malformed (%s)' % (info.format, path, exc))
    finally:
        os.close(fd)
    return info


def _qcow2_table_problem(name: str, offset: int, entries: int, entry_len: int, max_bytes: int,
                         cluster_size: int) -> Optional[str]:
    """qemu's ``qcow2_validate_table`` (block/qcow2.c): why qemu refuses a table, or None.

    The entry count is bounded by ``max_bytes``; the offset must be cluster-aligned and the table must end
    below INT64_MAX. qemu checks the offset even of an empty table.
    """
    if entries > max_bytes // entry_len:
        return '%s too large (%d entries)' % (name, entries)
    if INT64_MAX - entries * entry_len < offset or offset % cluster_size:
        return '%s offset invalid (%d)' % (name, offset)
    if entries and offset + entries * entry_len > QEMU_MAX_LENGTH:
        # the table is read at open: qemu's block layer refuses a read past BDRV_MAX_LENGTH (EIO)
        return '%s lies past the largest offset qemu reads (%d)' % (name, offset)
    return None


def _qcow2_snapshots_problem(reader: _Reader, offset: int, count: int) -> Optional[str]:
    """qemu's ``qcow2_read_snapshots`` (block/qcow2-snapshot.c) size checks, or None.

    Each entry is a 40-byte header (8-byte aligned) followed by its extra data, id and name; qemu refuses
    an entry with more than 1024 bytes of extra data and a table larger than 64 MiB. Bytes past the end
    of the file read as zeros, as in qemu's block layer. Only entry headers are read.
    """
    position = offset
    window_start, window = -1, b''
    for index in range(count):
        position = (position + 7) & ~7
        if not window_start <= position <= window_start + len(window) - QCOW2_SNAPSHOT_HEADER:
            window_start = position
            window = reader.read(position, 64 * 1024).ljust(64 * 1024, b'\x00')
        (extra_size,) = _unpack('>I', window, position - window_start + 36)
        id_size, name_size = _unpack('>HH', window, position - window_start + 12)
        if extra_size > QCOW2_MAX_SNAPSHOT_EXTRA:
            return 'too much extra metadata in snapshot table entry %d (%d bytes)' % (index, extra_size)
        position += QCOW2_SNAPSHOT_HEADER + extra_size + id_size + name_size
        if position - offset > QCOW2_MAX_SNAPSHOTS_BYTES:
            return 'the snapshot table is larger than %d bytes' % QCOW2_MAX_SNAPSHOTS_BYTES
    return None


def _parse_qcow2(info: ImageInfo, reader: _Reader, head: bytes) -> None:
    """Parse a qcow2 header, refusing (``invalid_header``) every header qemu's ``qcow2_do_open`` refuses.

    The checks follow qemu block/qcow2.c ``qcow2_do_open`` in its order; each cites qemu's own error.
    """
    (_magic, version, backing_offset, backing_size, cluster_bits, size, crypt_method, l1_size, l1_offset,
     refcount_table_offset, refcount_table_clusters, nb_snapshots, snapshots_offset) = _unpack(
        '>4sIQIIQIIQQIIQ', head, 0)
    if version not in (2, 3):
        # qemu: "Unsupported qcow2 version"
        info.add('invalid_header', 'qcow2 version %d is not supported (only 2 and 3 exist)' % version)
        return
    info.qcow2_version = version
    if not QCOW2_MIN_CLUSTER_BITS <= cluster_bits <= QCOW2_MAX_CLUSTER_BITS:
        # qemu: "Unsupported cluster size"
        info.add('invalid_header', 'qcow2 cluster_bits %d is out of range %d-%d'
                 % (cluster_bits, QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS))
        return
    cluster_size = 1 << cluster_bits
    info.cluster_size = cluster_size
    if size >= 1 << 63:
        info.add('invalid_header', 'qcow2 virtual size %d is out of range' % size)
        return
    # qemu keeps whole sectors only (bs->total_sectors = size / 512): that is the size a guest sees.
    info.virtual_size = size - size % SECTOR
    info.internal_snapshots = nb_snapshots
    info.encryption_format = QCOW2_CRYPT_METHODS.get(crypt_method)
    if crypt_method not in QCOW2_CRYPT_METHODS:
        # qemu qcow2_update_options_prepare: "Unsupported encryption method"
        info.add('invalid_header', 'unknown qcow2 encryption method %d' % crypt_method)
    info.encrypted = crypt_method != 0
    if crypt_method == 1:
        # qemu's system emulators refuse it ("Use of AES-CBC encrypted qcow2 images is no longer supported in
        # system emulators", qcow2_do_open), and qemu-img needs its key for any read or write.
        info.add('legacy_aes_encryption', 'the legacy qcow2 AES encryption is insecure and qemu no longer runs '
                 'guests on it; convert the image to LUKS')

    if version == 2:
        header_length = QCOW2_V2_HEADER_LENGTH
        incompatible = autoclear = 0
        refcount_order = 4
    else:
        incompatible, _compatible, autoclear, refcount_order, header_length = _unpack('>QQQII', head, 72)
        # qemu: "qcow2 header too short" (< 104), "qcow2 header exceeds cluster size"; a length that is not
        # a multiple of 8 misplaces every header extension (qemu then fails on them or misreads them).
        if header_length < QCOW2_V3_MIN_HEADER_LENGTH or header_length % 8 or header_length > cluster_size:
            info.add('invalid_header', 'qcow2 header_length %d is invalid' % header_length)
            return
        if header_length > QCOW2_V3_MIN_HEADER_LENGTH:
            (compression,) = _unpack('>B', head, 104)
            info.compression_type = QCOW2_COMPRESSION_TYPES.get(compression, 'unknown(%d)' % compression)
    # qemu: "Invalid backing file offset"
    if backing_offset > cluster_size:
        info.add('invalid_header', 'qcow2 backing file name offset %d lies beyond the first cluster' % backing_offset)
        return
    info.incompatible_features = [name for bit, name in sorted(QCOW2_INCOMPAT_NAMES.items()) if incompatible & bit]
    info.unknown_incompatible_features = incompatible & ~QCOW2_INCOMPAT_KNOWN
    info.dirty = bool(incompatible & QCOW2_INCOMPAT_DIRTY)
    info.corrupt = bool(incompatible & QCOW2_INCOMPAT_CORRUPT)
    info.extended_l2 = bool(incompatible & QCOW2_INCOMPAT_EXTL2)
    info.data_file_raw = bool(autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW)
    # qemu validate_compression_type: zlib (0) or zstd (1) only, and the compression incompatible bit set
    # exactly when the type is not zlib ("Compression type incompatible feature bit must (not) be set").
    compression_bit = bool(incompatible & QCOW2_INCOMPAT_COMPRESSION)
    if info.compression_type is None and compression_bit:
        info.add('invalid_header', 'qcow2 compression type bit set in a %d-byte header' % header_length)
    elif info.compression_type is not None and info.compression_type not in QCOW2_COMPRESSION_TYPES.values():
        info.add('invalid_header', 'qcow2 compression type %s is unknown' % info.compression_type)
    elif info.compression_type is not None and compression_bit != (info.compression_type != 'zlib'):
        info.add('invalid_header', 'qcow2 compression type %s does not match the compression type feature bit'
                 % info.compression_type)
    if info.unknown_incompatible_features:
        info.add('unknown_incompatible_features', 'qcow2 incompatible feature bits 0x%x are unknown; '
                 'qemu refuses such files and so do we' % info.unknown_incompatible_features)
    if info.corrupt:
        info.add('corrupt', 'the qcow2 corrupt bit is set; repair the image with qemu-img check -r before use')
    if info.dirty:
        info.add('dirty', 'the qcow2 dirty bit is set (refcounts need a repair on next open)', WARNING)

    # The geometry qemu refuses before it reads any table (qcow2_do_open, in its order).
    l2_entry = 16 if info.extended_l2 else 8
    problem = None
    if info.extended_l2 and cluster_size // QCOW2_EXTL2_SUBCLUSTERS < 1 << QCOW2_MIN_SUBCLUSTER_BITS:
        problem = 'extended L2 entries need clusters of 16 KiB or more ("Unsupported subcluster size")'
    elif refcount_order > 6:
        problem = 'refcount_order %d is above 6 ("Reference count entry width too large")' % refcount_order
    elif refcount_table_clusters == 0:
        problem = 'the image has no reference count table'
    else:
        problem = (_qcow2_table_problem('the reference count table', refcount_table_offset, refcount_table_clusters,
                                        cluster_size, QCOW2_MAX_REFTABLE_BYTES, cluster_size)
                   or _qcow2_table_problem('the snapshot table', snapshots_offset, nb_snapshots,
                                           QCOW2_SNAPSHOT_HEADER, QCOW2_SNAPSHOT_HEADER * QCOW2_MAX_SNAPSHOTS,
                                           cluster_size)
                   or _qcow2_table_problem('the active L1 table', l1_offset, l1_size, QCOW2_L1_ENTRY,
                                           QCOW2_MAX_L1_BYTES, cluster_size))
    if problem is None:
        # size_to_l1(): L1 entries needed for the virtual size ("Image is too big" past INT_MAX,
        # "L1 table is too small" when l1_size is below it).
        shift = cluster_bits + cluster_bits - (l2_entry.bit_length() - 1)
        needed = (size + (1 << shift) - 1) >> shift
        if needed > INT_MAX:
            problem = 'virtual size %d is too big for %d-byte clusters ("Image is too big")' % (size, cluster_size)
        elif l1_size < needed:
            problem = 'the L1 table (%d entries) is too small for virtual size %d (%d needed)' % (l1_size, size, needed)
    if problem is not None:
        info.add('invalid_header', 'qemu refuses this qcow2 header: %s' % problem)
        return

    # The backing file name must lie inside the first cluster (qemu: "Backing file name too long").
    if backing_offset:
        if backing_size == 0 or backing_size > QCOW2_MAX_BACKING_NAME:
            info.add('invalid_header', 'qcow2 backing file name length %d is out of range 1-%d'
                     % (backing_size, QCOW2_MAX_BACKING_NAME))
            return
        if backing_offset + backing_size > cluster_size:
            info.add('invalid_header', 'qcow2 backing file name lies outside the first cluster')
            return
        if backing_offset + backing_size <= len(head):
            raw = head[backing_offset:backing_offset + backing_size]
        else:
            raw = reader.read(backing_offset, backing_size)
        if len(raw) != backing_size:
            raise _Truncated('backing file name at offset %d' % backing_offset)
        name = _text(raw)
        if name is None:
            info.add('invalid_backing_name', 'the qcow2 backing file name is not clean UTF-8 text')
            return
        info.backing_file = name

    # Header extensions run from header_length to the backing file name (or cluster end), read as qemu's
    # qcow2_read_extensions does: an extension header or body that passes that end is refused.
    ext_end = backing_offset if backing_offset else cluster_size
    if ext_end < header_length:
        info.add('invalid_header', 'qcow2 backing file name overlaps the header')
        return
    area = head[:ext_end]
    offset = header_length
    crypto_header = False
    bitmaps = None
    while offset < ext_end:
        if offset + 8 > ext_end:
            info.add('invalid_header', 'a qcow2 header extension overruns the header area ("Header extension too large")')
            return
        if offset + 8 > len(area) and len(area) < ext_end:
            area = reader.read(0, ext_end)
        ext_type, ext_len = _unpack('>II', area, offset)
        offset += 8
        # qemu checks the length before the type: even the end marker may not claim to run past the area.
        if offset + ext_len > ext_end:
            info.add('invalid_header', 'qcow2 header extension 0x%08x overruns the header area' % ext_type)
            return
        if ext_type == QCOW2_EXT_END:
            break
        if offset + ext_len > len(area) and len(area) < ext_end:
            area = reader.read(0, ext_end)
        data = area[offset:offset + ext_len]
        if len(data) != ext_len:
            raise _Truncated('header extension 0x%08x' % ext_type)
        problem = None
        if ext_type == QCOW2_EXT_BACKING_FORMAT:
            fmt = _text(data)
            if ext_len > QCOW2_MAX_BACKING_FORMAT:
                problem = 'the backing format extension is %d bytes long (qemu takes at most %d)' % (
                    ext_len, QCOW2_MAX_BACKING_FORMAT)
            elif fmt is None:
                info.add('invalid_header', 'the qcow2 backing format extension is not text')
            else:
                info.backing_format = fmt
        elif ext_type == QCOW2_EXT_DATA_FILE:
            info.data_file = _text(data) or repr(data[:64])
        elif ext_type == QCOW2_EXT_CRYPTO_HEADER:
            problem = _qcow2_crypto_ext_problem(data, crypt_method, cluster_size)
            crypto_header = True
        elif ext_type == QCOW2_EXT_BITMAPS:
            problem = _qcow2_bitmaps_ext_problem(data, autoclear, cluster_size)
            if problem is None and autoclear & QCOW2_AUTOCLEAR_BITMAPS:
                bitmaps = data
        if problem is not None:
            info.add('invalid_header', 'qemu refuses this qcow2 header extension: %s' % problem)
            return
        offset += (ext_len + 7) & ~7

    if incompatible & QCOW2_INCOMPAT_DATA_FILE or info.data_file is not None:
        info.add('external_data_file', 'the image keeps its data in an external data file (%s); such '
                 'files can read or write any file on the host and are refused' % (info.data_file or 'unnamed'))
        if info.data_file:
            info.references.append(info.data_file)
    elif info.data_file_raw:
        # qemu: "data-file-raw requires a data file"
        info.add('invalid_header', 'qcow2 autoclear bit data-file-raw is set but the image has no external data file')
    if crypt_method == 2 and not crypto_header:
        # qemu: "Missing CRYPTO header for crypt method 2" (every open that reads data)
        info.add('invalid_header', 'the qcow2 image is LUKS-encrypted but has no crypto header extension')
    if nb_snapshots and not any(f.severity == ERROR for f in info.findings):
        problem = _qcow2_snapshots_problem(reader, snapshots_offset, nb_snapshots)
        if problem is not None:
            info.add('invalid_header', 'qemu refuses this qcow2 snapshot table: %s' % problem)
    if bitmaps is not None and not any(f.severity == ERROR for f in info.findings):
        problem = _qcow2_bitmap_directory_problem(reader, bitmaps, cluster_size, info.virtual_size or 0)
        if problem is not None:
            info.add('invalid_header', 'qemu refuses the persistent bitmaps of this qcow2 image: %s' % problem)
    if info.backing_file:
        info.references.append(info.backing_file)


def _qcow2_crypto_ext_problem(data: bytes, crypt_method: int, cluster_size: int) -> Optional[str]:
    """qemu qcow2_read_extensions, QCOW2_EXT_MAGIC_CRYPTO_HEADER."""
    if crypt_method != 2:
        return 'a crypto header extension without LUKS encryption'
    if len(data) != QCOW2_CRYPTO_EXT_BYTES:
        return 'a crypto header extension of %d bytes (16 expected)' % len(data)
    (offset,) = _unpack('>Q', data, 0)
    if offset % cluster_size:
        return 'the encryption header offset %d is not a multiple of the cluster size' % offset
    return None


def _qcow2_bitmap_directory_problem(reader: _Reader, ext: bytes, cluster_size: int, image_size: int) -> Optional[str]:
    """qemu's checks when it loads persistent bitmaps at open (block/qcow2-bitmap.c bitmap_list_load,
    check_dir_entry, bitmap_table_load, load_bitmap_data). Directories and tables beyond 1 MiB are refused
    here (qemu allows 64 MiB and 1 GiB; no volume needs that many bitmaps)."""
    nb_bitmaps, _reserved, directory_size, directory_offset = _unpack('>IIQQ', ext, 0)
    if directory_size == 0:
        return 'the bitmap directory size is zero'
    if directory_size > QCOW2_MAX_BITMAP_READ or directory_offset + directory_size > QEMU_MAX_LENGTH:
        return 'the bitmap directory is too large (%d bytes)' % directory_size
    directory = reader.read(directory_offset, directory_size).ljust(directory_size, b'\x00')
    position = count = 0
    while position < directory_size:
        if position + 24 > directory_size:
            return 'broken bitmap directory'
        count += 1
        if count > nb_bitmaps:
            return 'more bitmaps found than the header extension says'
        (table_offset, table_size, flags, kind, granularity_bits, name_size,
         extra_size) = _unpack('>QIIBBHI', directory, position)
        following = position + ((24 + extra_size + name_size + 7) & ~7)
        if following > directory_size:
            return 'broken bitmap directory'
        if extra_size:
            return 'bitmap extra data is not supported'
        if (table_size == 0 or table_offset == 0 or table_offset % cluster_size or table_size > 0x8000000
                or not 9 <= granularity_bits <= 31 or flags & ~3 or name_size > 1023 or kind != 1
                or table_size * cluster_size > 0x20000000):
            return 'bitmap %d does not satisfy the constraints' % count
        in_use = flags & 1
        if not in_use and image_size > (table_size * cluster_size * 8) << granularity_bits:
            return 'bitmap %d is too small for the image' % count
        if not in_use:
            # load_bitmap_data: the table has exactly the clusters the serialized bitmap needs
            words = ((image_size - 1) >> granularity_bits >> 6) + 1 if image_size else 0
            needed = -(-words * 8 // cluster_size)
            if needed != table_size:
                return 'bitmap %d table has %d clusters, the image size needs %d' % (count, table_size, needed)
            if table_size * 8 > QCOW2_MAX_BITMAP_READ or table_offset + table_size * 8 > QEMU_MAX_LENGTH:
                return 'bitmap %d table is too large' % count
            table = reader.read(table_offset, table_size * 8).ljust(table_size * 8, b'\x00')
            for (entry,) in struct.iter_unpack('>Q', table):
                offset = entry & 0x00FFFFFFFFFFFE00
                if entry & 0xFF000000000001FE or (offset and (entry & 1 or offset % cluster_size)):
                    return 'bitmap %d table entry is invalid' % count
                if offset + cluster_size > QEMU_MAX_LENGTH:
                    return 'bitmap %d data lies past the largest offset qemu reads' % count
        position = following
    if count != nb_bitmaps:
        return 'fewer bitmaps found than the header extension says'
    return None


def _qcow2_bitmaps_ext_problem(data: bytes, autoclear: int, cluster_size: int) -> Optional[str]:
    """qemu qcow2_read_extensions, QCOW2_EXT_MAGIC_BITMAPS (checked only with the bitmaps autoclear bit)."""
    if len(data) != QCOW2_BITMAPS_EXT_BYTES:
        return 'a bitmaps extension of %d bytes (24 expected)' % len(data)
    if not autoclear & QCOW2_AUTOCLEAR_BITMAPS:
        return None  # qemu considers the bitmaps inconsistent and ignores them
    nb_bitmaps, reserved, directory_size, directory_offset = _unpack('>IIQQ', data, 0)
    if reserved:
        return 'the bitmaps extension reserved field is not zero'
    if nb_bitmaps == 0 or nb_bitmaps > QCOW2_MAX_BITMAPS:
        return '%d bitmaps (1-%d allowed)' % (nb_bitmaps, QCOW2_MAX_BITMAPS)
    if directory_offset % cluster_size:
        return 'the bitmap directory offset %d is not cluster-aligned' % directory_offset
    if directory_size > QCOW2_MAX_BITMAP_DIRECTORY:
        return 'the bitmap directory size %d exceeds %d' % (directory_size, QCOW2_MAX_BITMAP_DIRECTORY)
    return None


def _parse_qed(info: ImageInfo, reader: _Reader, head: bytes) -> None:
    (_cluster, _table, _header_size, _features, _compat, _autoclear, _l1, image_size,
     name_offset, name_size) = _unpack('<IIIQQQQQII', head, 4)
    info.virtual_size = image_size
    if name_offset and 0 < name_size <= QCOW2_MAX_BACKING_NAME:
        info.backing_file = _text(reader.read(name_offset, name_size))
        if info.backing_file:
            info.references.append(info.backing_file)
    info.add('format_not_allowed', 'QED images are not supported by Cinder and are refused (qemu has deprecated QED)')


_VMDK_EXTENT = re.compile(r'^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)")?')
_VMDK_KEY = re.compile(r'^\s*(\w+)\s*=\s*"?([^"]*)"?\s*$')


def _parse_vmdk(info: ImageInfo, reader: _Reader, head: bytes) -> None:
    if head[:4] == VMDK_COWD_MAGIC:
        info.add('vmdk_unsupported_type', 'ESX COWD vmdk sparse extents are refused')
        return
    if head[:4] == VMDK_SPARSE_MAGIC:
        (_version, _flags, capacity, _grain, desc_offset, desc_size) = _unpack('<IIQQQQ', head, 4)
        problem = _vmdk4_problem(info, reader, head)
        if problem is not None:
            info.add('invalid_header', 'qemu refuses this vmdk sparse header: %s' % problem)
            return
        if desc_size * SECTOR > MAX_DESCRIPTOR_BYTES:
            info.add('invalid_header', 'the vmdk embedded descriptor is larger than %d bytes' % MAX_DESCRIPTOR_BYTES)
            return
        # qemu reads the descriptor of a sparse file at sector 1 whatever desc_offset says (vmdk_open sets
        # desc_offset = 0x200 for its CID and parentFileNameHint): judge that text, and the one the header names.
        descriptor = reader.read(VMDK_EMBEDDED_DESCRIPTOR_OFFSET, VMDK_DESCRIPTOR_SECTORS * SECTOR)
        text = descriptor.split(b'\x00', 1)[0].decode('utf-8', 'replace')
        if not re.search(r'(?<!parent)CID=[0-9a-fA-F]', text) or not re.search(r'parentCID=[0-9a-fA-F]', text):
            # qemu vmdk_read_cid: "CID" and "parentCID" must be found with a hex value, else the open fails
            info.add('invalid_header', 'the vmdk descriptor at sector 1 has no CID and parentCID (qemu refuses it)')
            return
        descriptor = descriptor.split(b'\x00', 1)[0]
        if desc_offset and desc_offset * SECTOR != VMDK_EMBEDDED_DESCRIPTOR_OFFSET:
            descriptor += b'\n' + reader.read(desc_offset * SECTOR, desc_size * SECTOR).split(b'\x00', 1)[0]
    else:
        if info.file_size > MAX_DESCRIPTOR_BYTES:
            info.add('invalid_header', 'a vmdk text descriptor larger than %d bytes is refused' % MAX_DESCRIPTOR_BYTES)
            return
        descriptor = reader.read(0, MAX_DESCRIPTOR_BYTES)
    text = descriptor.split(b'\x00', 1)[0].decode('utf-8', 'replace')
    create_type = None
    extent_sectors = 0
    for line in text.splitlines():
        key = _VMDK_KEY.match(line)
        if key and key.group(1) == 'createType':
            create_type = key.group(2)
        elif key and key.group(1) == 'parentFileNameHint':
            info.backing_file = key.group(2)
            info.references.append(key.group(2))
            info.add('vmdk_parent', 'the vmdk names a parent (%s); vmdk delta chains are refused' % key.group(2))
        extent = _VMDK_EXTENT.match(line)
        if extent:
            extent_sectors += int(extent.group(2))
            target = extent.group(4)
            if target and target != info.filename:
                info.references.append(target)
                info.add('vmdk_external_extent', 'the vmdk descriptor points to another file (%s); '
                         'extents outside the image are refused' % target)
    if create_type is not None and create_type not in VMDK_SAFE_CREATE_TYPES:
        info.add('vmdk_unsupported_type', 'vmdk createType %s is refused (only %s are accepted)'
                 % (create_type, ', '.join(VMDK_SAFE_CREATE_TYPES)))
    elif head[:4] != VMDK_SPARSE_MAGIC:
        # qemu opens a descriptor file only for createTypes that name extent files (monolithicFlat, vmfs,
        # twoGbMaxExtent*...: vmdk_open_desc_file), never for the sparse types accepted here.
        info.add('vmdk_unsupported_type', 'a vmdk descriptor file (createType %s) only points to extent files; '
                 'qemu refuses it and so do we' % create_type)
    if info.virtual_size is None:
        info.virtual_size = extent_sectors * SECTOR


def _vmdk4_problem(info: ImageInfo, reader: _Reader, head: bytes) -> Optional[str]:
    """qemu's checks of a hosted sparse (KDMV) vmdk header (block/vmdk.c vmdk_open_vmdk4, vmdk_add_extent)."""
    (_version, _flags, capacity, _granularity, desc_offset) = _unpack('<IIQQQ', head, 4)
    if capacity == 0 and desc_offset:
        # qemu then opens the embedded descriptor as a descriptor file, with its extent files
        return 'capacity 0 with an embedded descriptor (opened as a descriptor file)'
    header = head[4:]
    (gd_offset,) = _unpack('<Q', head, 56)
    if gd_offset == VMDK4_GD_AT_END:
        # streamOptimized: the footer 1536 bytes before the end holds the header that counts
        end = qemu_file_length(info.file_size)
        footer = reader.read(end - 1536, 1536).ljust(1536, b'\x00')
        marker_size, marker_type = _unpack('<II', footer, 8)
        (eos_val,) = _unpack('<Q', footer, 1024)
        eos_size, eos_type = _unpack('<II', footer, 1032)
        if (footer[512:516] != VMDK_SPARSE_MAGIC or marker_size != 0 or marker_type != 3 or eos_val != 0
                or eos_size != 0 or eos_type != 0):
            return 'invalid footer'
        header = footer[516:1024]
    (version, flags, capacity, granularity, _desc_offset, _desc_size, gtes, rgd_offset, gd_offset,
     grain_offset) = _unpack('<IIQQQQIQQQ', header, 0)
    (compression,) = _unpack('<H', header, 73)
    info.virtual_size = capacity * SECTOR
    if version > 3:
        return 'version %d ("Unsupported VMDK version")' % version
    if version == 3 and compression != 1:
        return 'version 3 without compression ("VMDK version 3 must be read only")'
    if gtes > 512:
        return '%d grain table entries ("L2 table size too big")' % gtes
    l1_entry_sectors = gtes * granularity
    if l1_entry_sectors == 0:
        return 'zero grain table entries or granularity ("L1 entry size is invalid")'
    l1_size = (capacity + l1_entry_sectors - 1) // l1_entry_sectors
    if qemu_file_length(info.file_size) // SECTOR < grain_offset:
        return 'the file is shorter than grain_offset ("File truncated")'
    if granularity > 0x200000:
        return 'granularity %d ("Invalid granularity, image may be corrupt")' % granularity
    if l1_size > 32 * 1024 * 1024:
        return 'L1 table of %d entries ("L1 size too big")' % l1_size
    tables = [gd_offset] + ([rgd_offset] if flags & VMDK4_FLAG_RGD else [])
    for offset in tables:
        if offset * SECTOR + l1_size * 4 > QEMU_MAX_LENGTH:
            return 'the grain directory lies past the largest offset qemu reads'
    if capacity * SECTOR > INT64_MAX:
        return 'capacity %d sectors is out of range' % capacity
    return None


def _parse_vhd(info: ImageInfo, reader: _Reader, head: bytes) -> None:
    (current_size,) = _unpack('>Q', head, 48)
    (disk_type,) = _unpack('>I', head, 60)
    info.virtual_size = current_size
    if disk_type == 4:
        info.add('unsupported_differencing_image', 'differencing VHD images name a parent outside the file; refused')
        return
    problem = _vpc_problem(info, reader, head)
    if problem is not None:
        info.add('invalid_header', 'qemu refuses this VHD: %s' % problem)


def _vpc_problem(info: ImageInfo, reader: _Reader, head: bytes) -> Optional[str]:
    """qemu's checks of a VHD footer and dynamic header (block/vpc.c vpc_open); sets the size qemu uses."""
    footer = bytearray(_unpack('>512s', head, 0)[0])
    (checksum,) = struct.unpack_from('>I', footer, 64)
    footer[64:68] = b'\x00\x00\x00\x00'
    if (~sum(footer)) & 0xFFFFFFFF != checksum:
        return 'the footer checksum is wrong ("Incorrect header checksum")'
    (data_offset,) = struct.unpack_from('>Q', footer, 16)
    creator = bytes(footer[28:32])
    (current_size,) = struct.unpack_from('>Q', footer, 48)
    cylinders, heads, sectors_per_track = struct.unpack_from('>HBB', footer, 56)
    # The size a guest sees: CHS geometry, unless the creator is known to use current_size (or CHS is maxed).
    total_sectors = cylinders * heads * sectors_per_track
    use_chs = creator not in (b'win ', b'qem2', b'd2v ', b'CTXS') and creator[:3] + b'\x00' != b'tap\x00'
    if not use_chs or total_sectors == VHD_MAX_GEOMETRY:
        total_sectors = current_size // SECTOR
    info.virtual_size = total_sectors * SECTOR
    if total_sectors > VHD_MAX_SECTORS:
        return 'the disk is larger than 2040 GiB'
    # A footer copy at offset 0 makes qemu read the file as a dynamic disk whatever its type says (vpc_open
    # takes a disk as fixed only when the footer is found at the end of the file instead).
    dyn = reader.read(data_offset, 1024) if data_offset < QEMU_MAX_LENGTH else b''
    if dyn[:8] != b'cxsparse':
        return 'no dynamic disk header at offset %d' % data_offset
    (table_offset,) = _unpack('>Q', dyn, 16)
    max_entries, block_size = _unpack('>II', dyn, 28)
    if block_size < SECTOR or block_size & (block_size - 1):
        return 'invalid block size %d' % block_size
    if total_sectors * SECTOR // block_size > 0xFFFFFFFF:
        return 'too many blocks'
    if max_entries * block_size < total_sectors * SECTOR:
        return 'the block allocation table is too small for the disk'
    if max_entries > INT_MAX // 4 or max_entries * 4 > VHD_MAX_BAT_BYTES:
        return 'the block allocation table is too large (%d entries)' % max_entries
    if table_offset + max_entries * 4 > QEMU_MAX_LENGTH:
        return 'the block allocation table lies past the largest offset qemu reads'
    bitmap_size = ((block_size // (8 * SECTOR)) + 511) & ~511
    free_offset = (table_offset + max_entries * 4 + 511) & ~511
    table = reader.read(table_offset, max_entries * 4).ljust(max_entries * 4, b'\x00')
    for (entry,) in struct.iter_unpack('>I', table):
        if entry != 0xFFFFFFFF:
            free_offset = max(free_offset, SECTOR * entry + bitmap_size + block_size)
    if free_offset > qemu_file_length(info.file_size):
        return 'a block of the allocation table lies after the end of the file (truncated image)'
    return None


_CRC32C_TABLE: List[int] = []


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of VHDX headers and region tables."""
    if not _CRC32C_TABLE:
        for byte in range(256):
            crc = byte
            for _bit in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
            _CRC32C_TABLE.append(crc)
    table = _CRC32C_TABLE
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _vhdx_checksum_ok(block: bytes) -> bool:
    (stored,) = _unpack('<I', block, 4)
    return bool(_crc32c(block[:4] + b'\x00\x00\x00\x00' + block[8:]) == stored)


def _parse_vhdx(info: ImageInfo, reader: _Reader, head: bytes) -> None:
    """Parse a VHDX file as qemu's vhdx_open does (block/vhdx.c): the header qemu picks, its log, the region
    table (only the copy at 192 KiB, checksummed), the metadata items and the BAT size. Whatever qemu refuses
    is ``invalid_header`` (qemu mostly answers a bare EINVAL or ENOTSUP)."""
    # vhdx_parse_header: both 4 KiB headers, checksummed; the valid one with the higher sequence number
    headers = []
    for offset in VHDX_HEADER_OFFSETS:
        block = reader.read(offset, 4096).ljust(4096, b'\x00')
        (version,) = _unpack('<H', block, 66)
        valid = block[:4] == b'head' and version == 1 and _vhdx_checksum_ok(block)
        headers.append((valid, _unpack('<Q', block, 8)[0], block))
    (valid1, seq1, block1), (valid2, seq2, block2) = headers
    if valid1 and valid2 and seq1 == seq2 and block1 != block2:
        valid1 = valid2 = False
    if not (valid1 or valid2):
        raise _Truncated('no valid VHDX header ("No valid VHDX header found")')
    header = block2 if valid2 and (not valid1 or seq2 > seq1) else block1
    log_guid = header[48:64]
    log_version, _version, log_length, log_offset = _unpack('<HHIQ', header, 64)
    if log_version != 0:
        raise ValueError('VHDX log version %d' % log_version)
    if log_guid.strip(b'\x00') and log_length:
        # vhdx_parse_log: a log that may need a replay (qemu refuses read-only, writes the file read-write)
        info.add('invalid_header', 'the VHDX file has a log that may need a replay (qemu refuses it read-only '
                 'and rewrites the file otherwise)')
        return
    regions = [(0, VHDX_HEADER_SECTION)] + ([(log_offset, log_offset + log_length)] if log_length else [])

    # vhdx_open_region_tables: 64 KiB at 192 KiB, checksummed; BAT and metadata once each; no overlaps
    table = reader.read(VHDX_REGION_TABLE_OFFSETS[0], 64 * 1024).ljust(64 * 1024, b'\x00')
    if table[:4] != b'regi' or not _vhdx_checksum_ok(table):
        raise _Truncated('the VHDX region table at 192 KiB is missing or its checksum is wrong')
    (count,) = _unpack('<I', table, 8)
    if count > VHDX_MAX_ENTRIES:
        raise ValueError('vhdx region table has %d entries' % count)
    found: Dict[bytes, Tuple[int, int]] = {}
    for index in range(count):
        entry = 16 + index * 32
        guid = table[entry:entry + 16]
        region_offset, region_length, data_bits = _unpack('<QII', table, entry + 16)
        end = region_offset + region_length
        if any(not (region_offset >= r_end or end <= r_start) for r_start, r_end in regions):
            raise ValueError('VHDX region %d-%d overlaps another region' % (region_offset, end))
        regions.append((region_offset, end))
        if guid in (VHDX_METADATA_REGION, VHDX_BAT_REGION):
            if guid in found:
                raise ValueError('a VHDX region is listed twice')
            found[guid] = (region_offset, region_length)
        elif data_bits & 1:
            raise ValueError('a required VHDX region is unknown to qemu')
    if VHDX_METADATA_REGION not in found or VHDX_BAT_REGION not in found:
        raise _Truncated('no vhdx region table with a metadata region and a BAT region')
    _parse_vhdx_metadata(info, reader, found[VHDX_METADATA_REGION][0], found[VHDX_METADATA_REGION][1],
                         found[VHDX_BAT_REGION])


def _parse_vhdx_metadata(info: ImageInfo, reader: _Reader, region_offset: int, region_length: int,
                         bat: Tuple[int, int] = (0, 0)) -> None:
    table = reader.read(region_offset, 64 * 1024).ljust(64 * 1024, b'\x00')
    if table[:8] != b'metadata':
        raise _Truncated('vhdx metadata table signature')
    (count,) = _unpack('<H', table, 10)
    if count > VHDX_MAX_ENTRIES or 32 + count * 32 > 64 * 1024:
        raise ValueError('vhdx metadata table has %d entries' % count)
    items: Dict[bytes, bytes] = {}
    parent = False
    for index in range(count):
        entry = 32 + index * 32
        guid = table[entry:entry + 16]
        item_offset, item_length, data_bits = _unpack('<III', table, entry + 16)
        if guid == VHDX_PARENT_LOCATOR:
            parent = True
            info.add('unsupported_differencing_image', 'differencing VHDX images name a parent outside the file; refused')
        elif guid in VHDX_METADATA_ITEMS:
            if guid in items:
                raise ValueError('a VHDX metadata item is listed twice')
            if item_offset + VHDX_METADATA_ITEMS[guid] > region_length:
                raise ValueError('vhdx metadata item out of its region')
            items[guid] = reader.read(region_offset + item_offset, VHDX_METADATA_ITEMS[guid]).ljust(
                VHDX_METADATA_ITEMS[guid], b'\x00')
        elif data_bits & (1 << 2):
            raise ValueError('a required VHDX metadata item is unknown to qemu')
    if VHDX_VIRTUAL_DISK_SIZE in items:
        (info.virtual_size,) = _unpack('<Q', items[VHDX_VIRTUAL_DISK_SIZE], 0)
    if len(items) != len(VHDX_METADATA_ITEMS):
        raise _Truncated('vhdx metadata items (qemu needs file parameters, virtual disk size, page 83 data, '
                         'logical and physical sector sizes)')
    block_size, data_bits = _unpack('<II', items[VHDX_FILE_PARAMETERS], 0)
    if data_bits & 2 and not parent:
        raise ValueError('a VHDX file with a parent but no parent locator')
    (logical,) = _unpack('<I', items[VHDX_LOGICAL_SECTOR_SIZE], 0)
    virtual_size = info.virtual_size or 0
    if not VHDX_MIN_BLOCK <= block_size <= VHDX_MAX_BLOCK or block_size & (block_size - 1):
        raise ValueError('VHDX block size %d' % block_size)
    if logical != SECTOR:
        raise ValueError('VHDX logical sector size %d (qemu supports 512 only)' % logical)
    if virtual_size > VHDX_MAX_IMAGE_SIZE:
        raise ValueError('VHDX virtual size %d is larger than 64 TiB' % virtual_size)
    info.virtual_size = virtual_size - virtual_size % SECTOR  # bs->total_sectors = size >> sector bits
    # vhdx_calc_bat_entries: the BAT region must hold an entry per block and per sector-bitmap chunk
    chunk_ratio = (1 << 23) * SECTOR // block_size
    data_blocks = -(-virtual_size // block_size)
    # qemu counts in uint32: an empty disk (0 blocks) wraps to 4 Gi entries and is refused
    entries = data_blocks + ((data_blocks - 1) & 0xFFFFFFFF) // chunk_ratio
    if entries > bat[1] // 8:
        raise ValueError('the VHDX BAT region is too small for the virtual size')


def _parse_vdi(info: ImageInfo, reader: _Reader, head: bytes) -> None:
    (image_type,) = _unpack('<I', head, 0x4C)
    (disk_size,) = _unpack('<Q', head, 0x170)
    info.virtual_size = -(-disk_size // SECTOR) * SECTOR  # qemu rounds an odd disk size up to whole sectors
    if image_type == 4:
        info.add('unsupported_differencing_image', 'differencing VDI images name a parent outside the file; refused')
    problem = _vdi_problem(head, disk_size)
    if problem is not None:
        info.add('invalid_header', 'qemu refuses this VDI header: %s' % problem)


def _vdi_problem(head: bytes, disk_size: int) -> Optional[str]:
    """qemu's checks of a VDI header (block/vdi.c vdi_open), in its order."""
    (version,) = _unpack('<I', head, 0x44)
    offset_bmap, offset_data = _unpack('<II', head, 0x154)
    (sector_size,) = _unpack('<I', head, 0x168)
    block_size, _extra, blocks_in_image = _unpack('<III', head, 0x178)
    if disk_size > VDI_DISK_SIZE_MAX:
        return 'disk size %d ("Unsupported VDI image size")' % disk_size
    disk_size = -(-disk_size // SECTOR) * SECTOR
    if version != 0x00010001:
        return 'version %d.%d (only 1.1)' % (version >> 16, version & 0xFFFF)
    if offset_bmap % SECTOR or offset_data % SECTOR:
        return 'unaligned block map or data offset'
    if sector_size != SECTOR:
        return 'sector size %d is not 512' % sector_size
    if block_size != VDI_BLOCK_SIZE:
        return 'block size %d is not %d' % (block_size, VDI_BLOCK_SIZE)
    if disk_size > blocks_in_image * block_size:
        return 'disk size %d, image bitmap has room for %d' % (disk_size, blocks_in_image * block_size)
    if head[0x1A8:0x1B8].strip(b'\x00') or head[0x1B8:0x1C8].strip(b'\x00'):
        return 'non-NULL link or parent UUID'
    if blocks_in_image > VDI_BLOCKS_IN_IMAGE_MAX:
        return 'too many blocks %d' % blocks_in_image
    if offset_bmap + blocks_in_image * 4 > QEMU_MAX_LENGTH:
        return 'the block map lies past the largest offset qemu reads'
    return None


def _parse_luks(info: ImageInfo, reader: _Reader, head: bytes) -> None:
    info.encrypted = True
    info.encryption_format = 'luks'
    (version,) = _unpack('>H', head, 6)
    if version == 1:
        (payload_sectors,) = _unpack('>I', head, 104)
        payload = payload_sectors * SECTOR
        problem = _luks1_problem(head)
        if problem is not None:
            info.add('invalid_header', 'qemu refuses this LUKS header: %s' % problem)
    elif version == 2:
        (header_size,) = _unpack('>Q', head, 8)
        if not 4096 < header_size <= MAX_LUKS2_JSON_BYTES:
            raise ValueError('LUKS2 header size %d out of range' % header_size)
        area = reader.read(4096, header_size - 4096).split(b'\x00', 1)[0]
        metadata = json.loads(area.decode('utf-8'))
        segments = metadata.get('segments') if isinstance(metadata, dict) else None
        segment = segments.get('0') if isinstance(segments, dict) else None
        if not isinstance(segment, dict) or not isinstance(segment.get('offset'), str):
            raise ValueError('LUKS2 metadata has no data segment 0 with an offset')
        payload = int(segment['offset'])
    else:
        raise ValueError('LUKS version %d is unknown' % version)
    if payload > info.file_size:
        raise _Truncated('LUKS payload offset %d beyond the end of the file' % payload)
    info.virtual_size = qemu_file_length(info.file_size) - payload
    if version == 2:
        # qemu's LUKS driver reads LUKS1 only ("LUKS version 2 is not supported", crypto/block-luks.c)
        info.add('invalid_header', 'LUKS2 volumes cannot be opened by qemu (it reads LUKS1 only)')


def _luks_name(raw: bytes) -> Optional[str]:
    if b'\x00' not in raw:
        return None  # qemu: "LUKS header cipher name/mode/hash is not NUL terminated"
    return raw.split(b'\x00', 1)[0].decode('ascii', 'replace')


def _luks1_problem(head: bytes) -> Optional[str]:
    """qemu's checks of a LUKS1 header (crypto/block-luks.c qcrypto_block_luks_check_header and
    qcrypto_block_luks_parse_header), made when any image is opened, with or without its key."""
    cipher, mode, hash_spec = (_luks_name(head[start:start + 32]) for start in (8, 40, 72))
    payload, key_bytes = _unpack('>II', head, 104)
    (mk_iterations,) = _unpack('>I', head, 164)
    if cipher is None or mode is None or hash_spec is None:
        return 'a cipher, mode or hash name is not NUL terminated'
    if payload < LUKS_KEY_SLOT_SECTORS:
        return 'the payload overlaps the header'
    if mk_iterations == 0:
        return 'the master key iteration count is zero'
    slots: List[Tuple[int, int]] = []
    for index in range(8):
        active, iterations, _salt, start, stripes = _unpack('>II32sII', head, 208 + 48 * index)
        length = -(-key_bytes * stripes // SECTOR)
        length = -(-length // LUKS_KEY_SLOT_SECTORS) * LUKS_KEY_SLOT_SECTORS
        if stripes != 4000:
            return 'key slot %d is corrupted (stripes %d)' % (index, stripes)
        if active not in (0x00AC71F3, 0x0000DEAD):
            return 'key slot %d state is corrupted' % index
        if active == 0x00AC71F3 and iterations == 0:
            return 'key slot %d iteration count is zero' % index
        if start < LUKS_KEY_SLOT_SECTORS:
            return 'key slot %d overlaps the header' % index
        if start + length > payload:
            return 'key slot %d overlaps the encrypted payload' % index
        for other_start, other_length in slots:
            if start < other_start + other_length and other_start < start + length:
                return 'key slots overlap in the header'
        slots.append((start, length))
    mode_name, _dash, ivgen = mode.partition('-')
    ivgen_name, _colon, ivgen_hash = ivgen.partition(':')
    if mode_name not in LUKS_MODES or ivgen_name not in LUKS_IVGENS or (ivgen_hash and ivgen_hash not in LUKS_HASHES):
        return 'cipher mode %s is not supported' % mode
    if hash_spec not in LUKS_HASHES:
        return 'hash %s is not supported' % hash_spec
    cipher_key = key_bytes // 2 if mode_name == 'xts' else key_bytes
    if cipher_key not in LUKS_CIPHERS.get(cipher, ()) or (mode_name == 'xts' and key_bytes % 2):
        return "algorithm '%s' with key size %d bytes is not supported" % (cipher, key_bytes)
    return None


def _parse_iso(info: ImageInfo, reader: _Reader, head: bytes) -> None:
    info.virtual_size = qemu_file_length(info.file_size)


_PARSERS = {
    'qcow2': _parse_qcow2,
    'qed': _parse_qed,
    'vmdk': _parse_vmdk,
    'vhd': _parse_vhd,
    'vhdx': _parse_vhdx,
    'vdi': _parse_vdi,
    'luks': _parse_luks,
    'iso': _parse_iso,
}
