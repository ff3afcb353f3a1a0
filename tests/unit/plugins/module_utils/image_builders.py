# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Byte-by-byte builders of disk image headers for the unit tests.

Nothing here runs qemu-img: every header is packed with :mod:`struct` from the public
layouts (qemu docs/interop/qcow2.rst, the VMDK, VHD, VHDX, VDI, LUKS and ISO 9660 specs).
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from typing import Iterable, Optional, Sequence, Tuple, Union

QCOW2_MAGIC = b'QFI\xfb'
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_DATA_FILE = 0x44415441
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO_HEADER = 0x0537BE77

VHDX_METADATA_REGION = uuid.UUID('8B7CA206-4790-4B9A-B8FE-575F050F886E').bytes_le
VHDX_BAT_REGION = uuid.UUID('2DC27766-F623-4200-9D64-115E9BFD4A08').bytes_le
VHDX_VIRTUAL_DISK_SIZE = uuid.UUID('2FA54224-CD1B-4876-B211-5DBED83BF4B8').bytes_le
VHDX_FILE_PARAMETERS = uuid.UUID('CAA16737-FA36-4D43-B3B6-33F0AA44E76B').bytes_le
VHDX_PARENT_LOCATOR = uuid.UUID('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C').bytes_le
VHDX_LOGICAL_SECTOR_SIZE = uuid.UUID('8141BF1D-A96F-4709-BA47-F233A8FAAB5F').bytes_le
VHDX_PHYSICAL_SECTOR_SIZE = uuid.UUID('CDA348C7-445D-4471-9CC9-E9885251C556').bytes_le
VHDX_PAGE83_DATA = uuid.UUID('BECA12AB-B2E6-4523-93EF-C309E000C746').bytes_le

Extension = Union[Tuple[int, bytes], Tuple[int, bytes, int]]


def write(path, data: bytes, size: Optional[int] = None) -> str:
    """Write ``data`` to ``path``; extend it (sparse) to ``size`` bytes when given."""
    path = str(path)
    with open(path, 'wb') as handle:
        handle.write(data)
        if size is not None and size > len(data):
            handle.truncate(size)
    return path


def _place(buf: bytearray, offset: int, data: bytes) -> None:
    if len(buf) < offset + len(data):
        buf.extend(b'\x00' * (offset + len(data) - len(buf)))
    buf[offset:offset + len(data)] = data


def qcow2_extensions(extensions: Iterable[Extension], end: bool = True) -> bytes:
    """Header extensions: u32 type, u32 length, data padded to 8 bytes; type 0 ends the list.

    An item may give a third value, the length written in the extension header (to lie).
    """
    out = b''
    for item in extensions:
        ext_type, data = item[0], item[1]
        declared = item[2] if len(item) > 2 else len(data)
        out += struct.pack('>II', ext_type, declared) + data + b'\x00' * (-len(data) % 8)
    if end:
        out += b'\x00' * 8
    return out


def qcow2_l1_entries(size: int, cluster_bits: int, extended_l2: bool = False) -> int:
    """The L1 entries qemu needs for ``size`` (size_to_l1), capped to the u32 field; 1 for odd cluster bits."""
    if not 9 <= cluster_bits <= 21:
        return 1
    shift = 2 * cluster_bits - (4 if extended_l2 else 3)
    return min((size + (1 << shift) - 1) >> shift, 0xFFFFFFFF)


def qcow2(version: int = 3, cluster_bits: int = 16, size: int = 1 << 30,
          backing: Optional[Union[str, bytes]] = None, backing_fmt: Optional[str] = None,
          incompatible: int = 0, compatible: int = 0, autoclear: int = 0,
          header_length: Optional[int] = None, crypt: int = 0, compression: Optional[int] = None,
          data_file: Optional[str] = None, extensions: Sequence[Extension] = (),
          backing_offset: Optional[int] = None, backing_size: Optional[int] = None,
          nb_snapshots: int = 0, refcount_order: int = 4, end_marker: bool = True,
          pad_to: int = 4096, truncate: Optional[int] = None, l1_size: Optional[int] = None,
          l1_offset: Optional[int] = None, refcount_table_offset: Optional[int] = None,
          refcount_table_clusters: int = 1, snapshots_offset: int = 0) -> bytes:
    """A qcow2 header (v2 or v3), its extensions and its backing file name.

    The table fields default to what qemu accepts: an L1 table just large enough for ``size``
    (qemu's size_to_l1), cluster-aligned L1 and refcount table offsets, one refcount table cluster.
    """
    if header_length is None:
        if version == 2:
            header_length = 72
        else:
            header_length = 112 if compression is not None else 104
    exts = list(extensions)
    if backing_fmt is not None:
        exts.append((EXT_BACKING_FORMAT, backing_fmt.encode('utf-8')))
    if data_file is not None:
        exts.append((EXT_DATA_FILE, data_file.encode('utf-8')))
    ext_bytes = qcow2_extensions(exts, end=end_marker)

    name = backing.encode('utf-8') if isinstance(backing, str) else backing
    if name is not None:
        if backing_offset is None:
            backing_offset = header_length + len(ext_bytes)
        if backing_size is None:
            backing_size = len(name)
    else:
        backing_offset = backing_offset or 0
        backing_size = backing_size or 0

    # magic, version, backing_file_offset, backing_file_size, cluster_bits, size, crypt_method,
    # l1_size, l1_table_offset, refcount_table_offset, refcount_table_clusters, nb_snapshots,
    # snapshots_offset: 72 bytes.
    cluster = 1 << cluster_bits if 0 <= cluster_bits < 64 else 65536
    if l1_size is None:
        l1_size = qcow2_l1_entries(size, cluster_bits, extended_l2=bool(incompatible & 16))
    if l1_offset is None:
        l1_offset = 3 * cluster
    if refcount_table_offset is None:
        refcount_table_offset = cluster
    header = struct.pack('>4sIQIIQIIQQIIQ', QCOW2_MAGIC, version, backing_offset, backing_size, cluster_bits,
                         size, crypt, l1_size, l1_offset, refcount_table_offset, refcount_table_clusters,
                         nb_snapshots, snapshots_offset)
    assert len(header) == 72
    buf = bytearray(header)
    if version >= 3:
        _place(buf, 72, struct.pack('>QQQII', incompatible, compatible, autoclear, refcount_order, header_length))
        if compression is not None:
            _place(buf, 104, struct.pack('>B', compression))
        if len(buf) < header_length:
            _place(buf, header_length - 1, b'\x00')
    _place(buf, header_length, ext_bytes)
    if name is not None:
        _place(buf, backing_offset, name)
    if len(buf) < pad_to:
        buf.extend(b'\x00' * (pad_to - len(buf)))
    if truncate is not None:
        del buf[truncate:]
    return bytes(buf)


def write_qcow2(directory, name: str, **kwargs) -> str:
    return write(os.path.join(str(directory), name), qcow2(**kwargs))


def qed(size: int = 1 << 30, backing: Optional[str] = None) -> bytes:
    name = backing.encode('utf-8') if backing else b''
    name_offset = 64 if name else 0
    header = struct.pack('<4sIIIQQQQQII', b'QED\x00', 65536, 4, 1, 1 if name else 0, 0, 0, 65536, size,
                         name_offset, len(name))
    return header + name + b'\x00' * (4096 - len(header) - len(name))


VMDK_EMBEDDED_DESCRIPTOR = (
    '# Disk DescriptorFile\n'
    'version=1\n'
    'CID=fffffffe\n'
    'parentCID=ffffffff\n'
    'createType="{create_type}"\n'
    '{extra}'
    '\n'
    '# Extent description\n'
    'RW {sectors} SPARSE "{extent}"\n'
    '\n'
    '# The Disk Data Base\n'
    'ddb.virtualHWVersion = "4"\n'
    'ddb.adapterType = "ide"\n'
)


def vmdk_sparse(capacity_sectors: int = 2048, descriptor: Optional[str] = None, desc_offset: int = 1,
                desc_size: int = 20) -> bytes:
    """A hosted sparse extent (KDMV) with an embedded descriptor at sector ``desc_offset``."""
    header = struct.pack('<4sIIQQQQIQQQ?ccccH', b'KDMV', 1, 3, capacity_sectors, 128, desc_offset, desc_size,
                         512, 0, 21, 128, False, b'\n', b' ', b'\r', b'\n', 0)
    buf = bytearray(header)
    if descriptor is not None:
        _place(buf, desc_offset * 512, descriptor.encode('utf-8'))
    pad = max(desc_offset + desc_size, 128) * 512  # grain_offset: qemu refuses a shorter file
    if len(buf) < pad:
        buf.extend(b'\x00' * (pad - len(buf)))
    return bytes(buf)


def vmdk_text(create_type: str = 'monolithicFlat', extents: Sequence[str] = ('RW 2048 FLAT "disk-flat.vmdk" 0',),
              extra: str = '') -> bytes:
    lines = ['# Disk DescriptorFile', 'version=1', 'CID=12345678', 'parentCID=ffffffff',
             'createType="%s"' % create_type]
    if extra:
        lines.append(extra)
    lines += ['', '# Extent description'] + list(extents) + ['', 'ddb.adapterType = "lsilogic"', '']
    return '\n'.join(lines).encode('utf-8')


def vmdk_cowd() -> bytes:
    return b'COWD' + struct.pack('<II', 1, 3) + b'\x00' * 2036


def _vhd_checksum(data: bytes, at: int) -> bytes:
    """``data`` with its VHD checksum (ones' complement of the byte sum, the field counted as zero) at ``at``."""
    buf = bytearray(data)
    buf[at:at + 4] = b'\x00' * 4
    buf[at:at + 4] = struct.pack('>I', (~sum(buf)) & 0xFFFFFFFF)
    return bytes(buf)


def vhd_footer(current_size: int = 1 << 30, disk_type: int = 3) -> bytes:
    """A 512-byte VHD footer (a dynamic disk keeps a copy at offset 0), checksummed as qemu requires.

    The creator is ``qem2`` so that qemu uses current_size (not the CHS geometry) as the disk size. A dynamic
    disk (type 3) is followed by its dynamic header and an empty block allocation table (2 MiB blocks).
    """
    footer = struct.pack('>8sIIQI4sI4sQQIII16sB', b'conectix', 2, 0x00010000, 512, 0, b'qem2', 0x00050003,
                         b'Wi2k', current_size, current_size, 0x04104110, disk_type, 0, b'\x11' * 16, 0)
    footer = _vhd_checksum(footer + b'\x00' * (512 - len(footer)), 64)
    if disk_type != 3:
        return footer
    entries = max(1, -(-current_size // (2 << 20)))
    dynamic = struct.pack('>8sQQIIII', b'cxsparse', 0xFFFFFFFFFFFFFFFF, 1536, 0x00010000, entries, 2 << 20, 0)
    dynamic = _vhd_checksum(dynamic + b'\x00' * (1024 - len(dynamic)), 36)
    return footer + dynamic + b'\xff' * (-(-entries * 4 // 512) * 512)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _bit in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def _vhdx_checksummed(block: bytes) -> bytes:
    return block[:4] + struct.pack('<I', crc32c(block[:4] + b'\x00' * 4 + block[8:])) + block[8:]


def vhdx(virtual_size: int = 1 << 30, parent_locator: bool = False, table_at: int = 192 * 1024,
         with_metadata_region: bool = True, size_item: bool = True, block_size: int = 32 * 1024 * 1024) -> bytes:
    """A VHDX file as qemu opens it: identifier, two checksummed headers (64 and 128 KiB), a checksummed
    region table at ``table_at`` (qemu reads only the one at 192 KiB), a metadata region at 1 MiB with
    every item qemu requires, a BAT region at 2 MiB."""
    buf = bytearray(b'vhdxfile' + 'qemu'.encode('utf-16-le'))
    for offset, sequence in ((64 * 1024, 1), (128 * 1024, 2)):
        header = struct.pack('<4sIQ16s16s16sHHIQ', b'head', 0, sequence, b'\x01' * 16, b'\x02' * 16, b'\x00' * 16,
                             0, 1, 1024 * 1024, 3 * 1024 * 1024)
        _place(buf, offset, _vhdx_checksummed(header + b'\x00' * (4096 - len(header))))
    metadata_offset = 1024 * 1024
    metadata_length = 1024 * 1024
    entries = [(VHDX_BAT_REGION, 2 * 1024 * 1024, 1024 * 1024)]
    if with_metadata_region:
        entries.append((VHDX_METADATA_REGION, metadata_offset, metadata_length))
    table = struct.pack('<4sIII', b'regi', 0, len(entries), 0)
    for guid, offset, length in entries:
        table += guid + struct.pack('<QII', offset, length, 1)
    _place(buf, table_at, _vhdx_checksummed(table + b'\x00' * (65536 - len(table))))

    items = [(VHDX_FILE_PARAMETERS, 65536, 8, struct.pack('<II', block_size, 0))]
    if size_item:
        items.append((VHDX_VIRTUAL_DISK_SIZE, 65536 + 8, 8, struct.pack('<Q', virtual_size)))
    items += [(VHDX_PAGE83_DATA, 65536 + 16, 16, b'\x03' * 16),
              (VHDX_LOGICAL_SECTOR_SIZE, 65536 + 32, 4, struct.pack('<I', 512)),
              (VHDX_PHYSICAL_SECTOR_SIZE, 65536 + 36, 4, struct.pack('<I', 4096))]
    if parent_locator:
        items.append((VHDX_PARENT_LOCATOR, 65536 + 64, 32, b'\x00' * 32))
    meta = struct.pack('<8sHH20s', b'metadata', 0, len(items), b'\x00' * 20)
    for guid, offset, length, _data in items:
        meta += guid + struct.pack('<IIII', offset, length, 4, 0)
    _place(buf, metadata_offset, meta)
    for _guid, offset, _length, data in items:
        _place(buf, metadata_offset + offset, data)
    return bytes(buf)


def vdi(disk_size: int = 1 << 30, image_type: int = 1) -> bytes:
    buf = bytearray(b'<<< Oracle VM VirtualBox Disk Image >>>\n'.ljust(64, b'\x00'))
    _place(buf, 0x40, struct.pack('<IIII', 0xBEDA107F, 0x00010001, 0x190, image_type))
    blocks = (disk_size + (1 << 20) - 1) >> 20
    # block map and data offsets, sector size 512, then disk size, 1 MiB blocks and their count (as qemu writes)
    _place(buf, 0x154, struct.pack('<II', 0x200, 0x200 + ((blocks * 4 + 511) & ~511)))
    _place(buf, 0x168, struct.pack('<I', 512))
    _place(buf, 0x170, struct.pack('<QIII', disk_size, 1 << 20, 0, blocks))
    buf.extend(b'\x00' * (512 - len(buf)))
    return bytes(buf)


def luks1(payload_sectors: int = 4040, key_bytes: int = 64) -> bytes:
    """A LUKS1 header as qemu-img writes it: aes xts-plain64 sha256, 8 key slots (slot 0 active) of 4000
    stripes, each slot's key material 4 KiB-aligned after the header, the payload after the last slot."""
    header = (b'LUKS\xba\xbe' + struct.pack('>H', 1) + b'aes'.ljust(32, b'\x00') + b'xts-plain64'.ljust(32, b'\x00')
              + b'sha256'.ljust(32, b'\x00') + struct.pack('>II', payload_sectors, key_bytes)
              + b'\x00' * 20 + b'\x00' * 32 + struct.pack('>I', 1000) + b'\x00' * 40)
    assert len(header) == 208
    slot_sectors = -(-(-(-key_bytes * 4000 // 512)) // 8) * 8
    for index in range(8):
        header += struct.pack('>II32sII', 0x00AC71F3 if index == 0 else 0x0000DEAD, 1000, b'\x00' * 32,
                              8 + index * slot_sectors, 4000)
    assert len(header) == 592
    return header


def luks2(header_size: int = 16384, json_area: Union[dict, bytes, None] = None,
          segment_offset: str = '16777216') -> bytes:
    if json_area is None:
        json_area = {'keyslots': {}, 'tokens': {}, 'digests': {}, 'config': {'json_size': '12288'},
                     'segments': {'0': {'type': 'crypt', 'offset': segment_offset, 'size': 'dynamic',
                                        'iv_tweak': '0', 'encryption': 'aes-xts-plain64', 'sector_size': 512}}}
    if isinstance(json_area, dict):
        json_area = json.dumps(json_area).encode('utf-8')
    binary = (b'LUKS\xba\xbe' + struct.pack('>HQQ', 2, header_size, 1) + b'label'.ljust(48, b'\x00')
              + b'sha256'.ljust(32, b'\x00'))
    buf = bytearray(binary)
    _place(buf, 4096, json_area)
    if len(buf) < header_size:
        buf.extend(b'\x00' * (header_size - len(buf)))
    return bytes(buf)


def iso(offset: int = 0x8001) -> bytes:
    buf = bytearray(0x9800)
    _place(buf, offset - 1, b'\x01CD001\x01')
    return bytes(buf)


def info_text(active: str, snapshots: dict) -> str:
    """A .info file exactly as Cinder writes it (json indent=1, sort_keys=True, no newline)."""
    data = dict(snapshots)
    data['active'] = active
    return json.dumps(data, indent=1, sort_keys=True)
