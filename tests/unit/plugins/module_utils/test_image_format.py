# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _image_format: format detection and header parsing on hand-built files."""

from __future__ import annotations

import os
import struct
import threading

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import image_format as imf
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.image_format import (
    ERROR,
    WARNING,
    Finding,
    ImageInfo,
    detect_format,
    inspect_image,
)
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B


def codes(info):
    return [f.code for f in info.findings]


def finding(info, code):
    matches = [f for f in info.findings if f.code == code]
    assert matches, 'no %s finding in %r' % (code, info.findings)
    return matches[0]


def inspect_bytes(tmp_path, data, name='image', size=None):
    return inspect_image(B.write(tmp_path / name, data, size))


# ---------------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------------

class TestDetection:
    def test_raw_random_bytes(self, tmp_path):
        data = bytes(range(256)) * 64
        info = inspect_bytes(tmp_path, data)
        assert info.format == 'raw'
        assert info.virtual_size == len(data)
        assert info.file_size == len(data)
        assert info.findings == []

    def test_empty_file_is_raw(self, tmp_path):
        info = inspect_bytes(tmp_path, b'')
        assert info.format == 'raw'
        assert info.virtual_size == 0
        assert info.findings == []

    def test_raw_fallback_for_near_miss_magics(self, tmp_path):
        # "QFI" without \xfb, a lower-case conectix and a LUKS magic missing its last byte.
        for index, data in enumerate([b'QFI\x00' + b'\x00' * 100, b'Conectix' + b'\x00' * 600,
                                      b'LUKS\xba' + b'\x00' * 600, b'vhdxfilX' + b'\x00' * 600]):
            info = inspect_bytes(tmp_path, data, name='raw%d' % index)
            assert info.format == 'raw', data[:8]
            assert info.findings == []

    def test_qcow2_v2(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(version=2, cluster_bits=16, size=10 * 1024 ** 3))
        assert info.format == 'qcow2'
        assert info.qcow2_version == 2
        assert info.cluster_size == 65536
        assert info.virtual_size == 10 * 1024 ** 3
        assert info.backing_file is None
        assert info.compression_type is None
        assert info.incompatible_features == []
        assert info.findings == []

    def test_qcow2_v3(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(version=3, cluster_bits=12, size=123 * 512, nb_snapshots=2))
        assert info.format == 'qcow2'
        assert info.qcow2_version == 3
        assert info.cluster_size == 4096
        assert info.virtual_size == 123 * 512
        assert info.internal_snapshots == 2
        assert info.encrypted is False
        assert info.findings == []

    def test_qed(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qed(size=5 * 1024 ** 2, backing='base.img'))
        assert info.format == 'qed'
        assert info.virtual_size == 5 * 1024 ** 2
        assert info.backing_file == 'base.img'
        assert 'base.img' in info.references
        assert finding(info, 'format_not_allowed').severity == ERROR

    def test_vmdk_sparse_with_embedded_descriptor(self, tmp_path):
        descriptor = B.VMDK_EMBEDDED_DESCRIPTOR.format(create_type='monolithicSparse', extra='', sectors=2048,
                                                       extent='disk.vmdk')
        info = inspect_bytes(tmp_path, B.vmdk_sparse(2048, descriptor), name='disk.vmdk')
        assert info.format == 'vmdk'
        assert info.virtual_size == 2048 * 512
        assert info.references == []
        assert info.findings == []

    def test_vmdk_sparse_stream_optimized_accepted(self, tmp_path):
        descriptor = B.VMDK_EMBEDDED_DESCRIPTOR.format(create_type='streamOptimized', extra='', sectors=4096,
                                                       extent='disk.vmdk')
        info = inspect_bytes(tmp_path, B.vmdk_sparse(4096, descriptor), name='disk.vmdk')
        assert info.format == 'vmdk'
        assert info.virtual_size == 4096 * 512
        assert info.findings == []

    def test_vmdk_sparse_without_descriptor(self, tmp_path):
        # qemu reads the CID from the descriptor at sector 1 whatever desc_offset says (vmdk_read_cid): without
        # one it refuses the file.
        info = inspect_bytes(tmp_path, B.vmdk_sparse(100, None, desc_offset=0, desc_size=0))
        assert info.format == 'vmdk'
        assert info.virtual_size == 100 * 512
        assert codes(info) == ['invalid_header']

    def test_vmdk_text_descriptor_detected(self, tmp_path):
        # qemu opens a descriptor file only for createTypes that name other files (vmdk_open_desc_file refuses
        # 'monolithicSparse'): a descriptor file is refused whatever it says.
        data = B.vmdk_text(create_type='monolithicSparse', extents=['RW 4096 SPARSE "disk.vmdk"'])
        info = inspect_bytes(tmp_path, data, name='disk.vmdk')
        assert info.format == 'vmdk'
        assert info.virtual_size == 4096 * 512
        assert codes(info) == ['vmdk_unsupported_type']

    def test_vmdk_cowd_refused(self, tmp_path):
        info = inspect_bytes(tmp_path, B.vmdk_cowd())
        assert info.format == 'vmdk'
        assert codes(info) == ['vmdk_unsupported_type']
        assert info.findings[0].severity == ERROR

    def test_vhd_dynamic(self, tmp_path):
        info = inspect_bytes(tmp_path, B.vhd_footer(current_size=3 * 1024 ** 3, disk_type=3) + b'\x00' * 1024)
        assert info.format == 'vhd'
        assert info.virtual_size == 3 * 1024 ** 3
        assert info.findings == []

    def test_vhd_differencing_refused(self, tmp_path):
        info = inspect_bytes(tmp_path, B.vhd_footer(current_size=1 << 20, disk_type=4) + b'\x00' * 1024)
        assert info.format == 'vhd'
        assert info.virtual_size == 1 << 20
        assert codes(info) == ['unsupported_differencing_image']

    def test_vhdx(self, tmp_path):
        info = inspect_bytes(tmp_path, B.vhdx(virtual_size=7 * 1024 ** 3))
        assert info.format == 'vhdx'
        assert info.virtual_size == 7 * 1024 ** 3
        assert info.findings == []

    def test_vhdx_region_table_second_copy_only_is_refused(self, tmp_path):
        # qemu reads only the region table at 192 KiB (vhdx_open_region_tables): the copy at 256 KiB alone is
        # not enough for it to open the file.
        info = inspect_bytes(tmp_path, B.vhdx(virtual_size=1 << 30, table_at=256 * 1024))
        assert info.format == 'vhdx'
        assert codes(info) == ['invalid_header']

    @pytest.mark.parametrize('offset', [64 * 1024 + 8, 192 * 1024 + 24])
    def test_vhdx_checksums(self, tmp_path, offset):
        buf = bytearray(B.vhdx())
        buf[offset] ^= 1
        info = inspect_bytes(tmp_path, bytes(buf))
        # a damaged first header: qemu takes the second one; a damaged region table: qemu refuses the file
        assert codes(info) == ([] if offset < 128 * 1024 else ['invalid_header'])

    @pytest.mark.parametrize('kwargs', [dict(block_size=512 * 1024), dict(virtual_size=(64 << 40) + 512),
                                        dict(virtual_size=1 << 45)])
    def test_vhdx_geometry_qemu_refuses(self, tmp_path, kwargs):
        info = inspect_bytes(tmp_path, B.vhdx(**kwargs))
        assert codes(info) == ['invalid_header']

    def test_vhdx_parent_locator_refused(self, tmp_path):
        info = inspect_bytes(tmp_path, B.vhdx(virtual_size=1 << 30, parent_locator=True))
        assert info.format == 'vhdx'
        assert info.virtual_size == 1 << 30
        assert codes(info) == ['unsupported_differencing_image']

    @pytest.mark.parametrize('kwargs', [
        dict(with_metadata_region=False),
        dict(size_item=False),
    ])
    def test_vhdx_without_metadata_is_invalid(self, tmp_path, kwargs):
        info = inspect_bytes(tmp_path, B.vhdx(**kwargs))
        assert info.format == 'vhdx'
        assert 'invalid_header' in codes(info)

    def test_vhdx_without_region_table_is_invalid(self, tmp_path):
        info = inspect_bytes(tmp_path, b'vhdxfile' + b'\x00' * 4096)
        assert info.format == 'vhdx'
        assert codes(info) == ['invalid_header']

    def test_vhdx_region_count_too_large(self, tmp_path):
        buf = bytearray(B.vhdx())
        struct.pack_into('<I', buf, 192 * 1024 + 8, 100000)
        info = inspect_bytes(tmp_path, bytes(buf))
        assert codes(info) == ['invalid_header']

    def test_vdi(self, tmp_path):
        info = inspect_bytes(tmp_path, B.vdi(disk_size=2 * 1024 ** 3, image_type=1))
        assert info.format == 'vdi'
        assert info.virtual_size == 2 * 1024 ** 3
        assert info.findings == []

    def test_vdi_differencing_refused(self, tmp_path):
        info = inspect_bytes(tmp_path, B.vdi(disk_size=1 << 20, image_type=4))
        assert info.format == 'vdi'
        assert codes(info) == ['unsupported_differencing_image']

    def test_vdi_truncated(self, tmp_path):
        info = inspect_bytes(tmp_path, B.vdi()[:0x100])
        assert info.format == 'vdi'
        assert codes(info) == ['invalid_header']

    def test_luks1_payload_offset(self, tmp_path):
        info = inspect_bytes(tmp_path, B.luks1(payload_sectors=4040), size=4040 * 512 + 65536)
        assert info.format == 'luks'
        assert info.encrypted is True
        assert info.encryption_format == 'luks'
        assert info.virtual_size == 65536
        assert info.findings == []

    @pytest.mark.parametrize('kwargs, why', [
        (dict(payload_sectors=8), 'overlaps the encrypted payload'),
        (dict(payload_sectors=7), 'payload overlaps the header'),
        (dict(key_bytes=31), "key size 31 bytes"),
        (dict(key_bytes=0), 'key size 0 bytes'),
    ])
    def test_luks1_headers_qemu_refuses(self, tmp_path, kwargs, why):
        # crypto/block-luks.c: key slots inside the payload, a payload inside the header, unsupported key sizes
        info = inspect_bytes(tmp_path, B.luks1(**kwargs), size=8 << 20)
        assert codes(info) == ['invalid_header']
        assert why in info.findings[0].message

    def test_luks1_payload_beyond_file(self, tmp_path):
        info = inspect_bytes(tmp_path, B.luks1(payload_sectors=4096), size=8192)
        assert info.format == 'luks'
        assert codes(info) == ['invalid_header']

    def test_luks2_segment_offset(self, tmp_path):
        info = inspect_bytes(tmp_path, B.luks2(segment_offset='16384'), size=16384 + 3 * 1024 * 1024)
        assert info.format == 'luks'
        assert info.encrypted is True
        assert info.encryption_format == 'luks'
        assert info.virtual_size == 3 * 1024 * 1024
        # qemu reads LUKS1 only ("LUKS version 2 is not supported")
        assert codes(info) == ['invalid_header']

    @pytest.mark.parametrize('header_size', [4096, 1024, 5 * 1024 * 1024])
    def test_luks2_header_size_out_of_range(self, tmp_path, header_size):
        data = bytearray(B.luks2())
        struct.pack_into('>Q', data, 8, header_size)
        info = inspect_bytes(tmp_path, bytes(data), size=1 << 20)
        assert info.format == 'luks'
        assert codes(info) == ['invalid_header']

    def test_luks2_invalid_json(self, tmp_path):
        info = inspect_bytes(tmp_path, B.luks2(json_area=b'{"segments": '), size=1 << 20)
        assert codes(info) == ['invalid_header']

    def test_luks2_non_utf8_json(self, tmp_path):
        info = inspect_bytes(tmp_path, B.luks2(json_area=b'{"\xff": 1}'), size=1 << 20)
        assert codes(info) == ['invalid_header']

    # The JSON area is attacker-controlled: a valid JSON document of the wrong shape must give a
    # finding, never an exception (inspect_image promises never to raise for a bad file).
    @pytest.mark.parametrize('json_area', [
        b'[]',
        b'"segments"',
        b'{"segments": []}',
        b'{"segments": {"0": []}}',
        b'{"segments": {"0": {"offset": null}}}',
        b'[' * 100000,
    ], ids=['list', 'string', 'segments-list', 'segment-list', 'offset-null', 'deep-nesting'])
    def test_luks2_malformed_metadata_never_raises(self, tmp_path, json_area):
        path = B.write(tmp_path / 'luks2', B.luks2(header_size=1 << 20, json_area=json_area), 2 << 20)
        info = inspect_image(path)
        assert info.format == 'luks'
        assert 'invalid_header' in codes(info)

    def test_luks_unknown_version(self, tmp_path):
        data = bytearray(B.luks1())
        struct.pack_into('>H', data, 6, 3)
        info = inspect_bytes(tmp_path, bytes(data))
        assert info.format == 'luks'
        assert codes(info) == ['invalid_header']

    @pytest.mark.parametrize('offset', [0x8001, 0x8801, 0x9001])
    def test_iso(self, tmp_path, offset):
        data = B.iso(offset)
        info = inspect_bytes(tmp_path, data)
        assert info.format == 'iso'
        assert info.virtual_size == len(data)
        assert info.findings == []

    def test_cd001_elsewhere_is_raw(self, tmp_path):
        info = inspect_bytes(tmp_path, B.iso(0x8011))
        assert info.format == 'raw'

    def test_detect_format_without_reader(self):
        assert detect_format(b'QFI\xfb') == 'qcow2'
        assert detect_format(b'QED\x00') == 'qed'
        assert detect_format(b'KDMV') == 'vmdk'
        assert detect_format(b'COWD') == 'vmdk'
        assert detect_format(b'# Disk DescriptorFile\n') == 'vmdk'
        assert detect_format(b'vhdxfile') == 'vhdx'
        assert detect_format(b'conectix') == 'vhd'
        assert detect_format(b'LUKS\xba\xbe\x00\x01') == 'luks'
        assert detect_format(B.vdi()) == 'vdi'
        assert detect_format(B.iso()) == 'raw'  # iso needs a reader
        assert detect_format(b'') == 'raw'
        assert detect_format(b'\x00' * 0x43) == 'raw'

    def test_formats_constant(self):
        assert set(imf.FORMATS) == {'raw', 'qcow2', 'qed', 'vmdk', 'vhd', 'vhdx', 'vdi', 'luks', 'iso'}


# ---------------------------------------------------------------------------------------------
# qcow2 parsing
# ---------------------------------------------------------------------------------------------

class TestQcow2:
    def test_backing_file_and_format(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(backing='volume-base', backing_fmt='raw'))
        assert info.backing_file == 'volume-base'
        assert info.backing_format == 'raw'
        assert info.references == ['volume-base']
        assert info.findings == []

    def test_backing_file_v2(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(version=2, backing='base.qcow2', backing_fmt='qcow2'))
        assert info.qcow2_version == 2
        assert info.backing_file == 'base.qcow2'
        assert info.backing_format == 'qcow2'
        assert info.findings == []

    def test_backing_without_format_extension(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(backing='base'))
        assert info.backing_file == 'base'
        assert info.backing_format is None
        assert info.findings == []

    def test_unknown_and_known_extensions_are_skipped(self, tmp_path):
        data = B.qcow2(backing='base', backing_fmt='qcow2',
                       extensions=[(B.EXT_FEATURE_TABLE, b'\x00' * 48), (0x12345678, b'abc'),
                                   (B.EXT_BITMAPS, b'\x00' * 24)])
        info = inspect_bytes(tmp_path, data)
        assert info.backing_file == 'base'
        assert info.backing_format == 'qcow2'
        assert info.findings == []

    def test_extensions_after_end_marker_ignored(self, tmp_path):
        # type 0 ends the list: a data-file extension after it is not read.
        exts = B.qcow2_extensions([(0, b''), (B.EXT_DATA_FILE, b'/etc/shadow')], end=True)
        data = bytearray(B.qcow2())
        data[104:104 + len(exts)] = exts
        info = inspect_bytes(tmp_path, bytes(data))
        assert info.data_file is None
        assert info.findings == []

    def test_data_file_extension(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(data_file='/etc/shadow', incompatible=1 << 2, autoclear=1 << 1))
        assert info.data_file == '/etc/shadow'
        assert info.data_file_raw is True
        assert 'external_data_file' in info.incompatible_features
        assert '/etc/shadow' in info.references
        assert finding(info, 'external_data_file').severity == ERROR

    def test_data_file_extension_without_bit(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(data_file='data.raw'))
        assert info.data_file == 'data.raw'
        assert finding(info, 'external_data_file').severity == ERROR

    def test_data_file_bit_without_extension(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(incompatible=1 << 2))
        assert info.data_file is None
        assert codes(info) == ['external_data_file']
        assert info.references == []

    def test_unknown_incompatible_bits(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(incompatible=(1 << 5) | (1 << 40)))
        assert info.unknown_incompatible_features == (1 << 5) | (1 << 40)
        assert codes(info) == ['unknown_incompatible_features']
        assert info.findings[0].severity == ERROR

    def test_corrupt_bit(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(incompatible=1 << 1))
        assert info.corrupt is True
        assert info.incompatible_features == ['corrupt']
        assert finding(info, 'corrupt').severity == ERROR

    def test_dirty_bit_is_a_warning(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(incompatible=1 << 0))
        assert info.dirty is True
        assert info.incompatible_features == ['dirty']
        assert codes(info) == ['dirty']
        assert info.findings[0].severity == WARNING

    def test_extended_l2(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(incompatible=1 << 4))
        assert info.extended_l2 is True
        assert info.incompatible_features == ['extended_l2']
        assert info.findings == []

    @pytest.mark.parametrize('byte, name', [(0, 'zlib'), (1, 'zstd')])
    def test_compression_type(self, tmp_path, byte, name):
        info = inspect_bytes(tmp_path, B.qcow2(compression=byte, incompatible=1 << 3 if byte else 0))
        assert info.compression_type == name
        assert 'invalid_header' not in codes(info)

    def test_unknown_compression_type_refused(self, tmp_path):
        # qemu validate_compression_type: "qcow2: unknown compression type"
        info = inspect_bytes(tmp_path, B.qcow2(compression=7, incompatible=1 << 3))
        assert info.compression_type == 'unknown(7)'
        assert 'invalid_header' in codes(info)

    @pytest.mark.parametrize('byte, bit', [(0, 1 << 3), (1, 0)])
    def test_compression_type_and_bit_must_agree(self, tmp_path, byte, bit):
        # qemu: "Compression type incompatible feature bit must (not) be set"
        info = inspect_bytes(tmp_path, B.qcow2(compression=byte, incompatible=bit))
        assert 'invalid_header' in codes(info)

    def test_compression_bit_needs_long_header(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(incompatible=1 << 3, header_length=104))
        assert info.compression_type is None
        assert 'invalid_header' in codes(info)

    def test_legacy_aes_encryption(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(crypt=1))
        assert info.encrypted is True
        assert info.encryption_format == 'aes'
        # qemu's system emulators refuse AES-CBC qcow2 images (qcow2_do_open): an error, no longer a warning.
        assert finding(info, 'legacy_aes_encryption').severity == ERROR

    def test_luks_encryption(self, tmp_path):
        crypto = (B.EXT_CRYPTO_HEADER, struct.pack('>QQ', 65536, 4096))
        info = inspect_bytes(tmp_path, B.qcow2(crypt=2, extensions=[crypto]))
        assert info.encrypted is True
        assert info.encryption_format == 'luks'
        assert info.findings == []

    def test_luks_encryption_without_crypto_header_refused(self, tmp_path):
        # qemu: "Missing CRYPTO header for crypt method 2"
        info = inspect_bytes(tmp_path, B.qcow2(crypt=2))
        assert info.encrypted is True
        assert 'invalid_header' in codes(info)

    def test_unknown_encryption_method(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(crypt=9))
        assert info.encrypted is True
        assert 'invalid_header' in codes(info)

    def test_all_known_bits_listed_in_order(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(incompatible=0x1F, compression=1))
        assert info.incompatible_features == ['dirty', 'corrupt', 'external_data_file', 'compression_type',
                                              'extended_l2']
        assert info.unknown_incompatible_features == 0

    def test_backing_name_at_cluster_end_accepted(self, tmp_path):
        name = b'b' * 12
        data = B.qcow2(cluster_bits=9, backing=name, backing_offset=512 - 12, pad_to=1024)
        info = inspect_bytes(tmp_path, data)
        assert info.backing_file == 'b' * 12
        assert info.findings == []

    def test_backing_name_max_length(self, tmp_path):
        name = 'n' * 1023
        info = inspect_bytes(tmp_path, B.qcow2(backing=name))
        assert info.backing_file == name
        assert info.findings == []

    def test_extensions_beyond_head_bytes(self, tmp_path):
        # The extension area may be longer than the first 4 KiB read for detection.
        data = B.qcow2(cluster_bits=16, backing='base', backing_fmt='qcow2',
                       extensions=[(B.EXT_FEATURE_TABLE, b'\x00' * 6000)])
        info = inspect_bytes(tmp_path, data)
        assert info.backing_format == 'qcow2'
        assert info.backing_file == 'base'
        assert info.findings == []

    def test_as_dict_of_finding(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(incompatible=1), name='top.qcow2')
        assert info.findings[0].as_dict() == {'code': 'dirty', 'severity': WARNING,
                                              'message': info.findings[0].message, 'filename': 'top.qcow2'}
        assert info.filename == 'top.qcow2'

    # --- hostile or malformed headers: a finding, never an exception ---------------------------

    BAD = {
        'version-1': (dict(version=1), 'invalid_header'),
        'version-4': (dict(version=4), 'invalid_header'),
        'cluster-bits-8': (dict(cluster_bits=8), 'invalid_header'),
        'cluster-bits-22': (dict(cluster_bits=22), 'invalid_header'),
        'cluster-bits-huge': (dict(cluster_bits=0xFFFFFFFF), 'invalid_header'),
        'backing-length-0': (dict(backing_offset=200, backing_size=0), 'invalid_header'),
        'backing-length-1024': (dict(backing='x' * 1024), 'invalid_header'),
        'backing-beyond-cluster': (dict(cluster_bits=9, backing='volume-base', backing_offset=600, pad_to=1024),
                                   'invalid_header'),
        'backing-crossing-cluster': (dict(cluster_bits=9, backing='volume-base', backing_offset=505, pad_to=1024),
                                     'invalid_header'),
        'backing-beyond-eof': (dict(backing_offset=2000, backing_size=100, pad_to=2050), 'invalid_header'),
        'backing-overlaps-header': (dict(backing='volume-base-name', backing_offset=40), 'invalid_header'),
        'backing-non-utf8': (dict(backing=b'\xff\xfe\xfdbase'), 'invalid_backing_name'),
        'backing-nul': (dict(backing=b'base\x00evil'), 'invalid_backing_name'),
        'backing-newline': (dict(backing=b'base\nevil'), 'invalid_backing_name'),
        'header-length-100': (dict(header_length=100), 'invalid_header'),
        'header-length-unaligned': (dict(header_length=108), 'invalid_header'),
        'header-length-beyond-cluster': (dict(cluster_bits=9, header_length=1024, pad_to=2048), 'invalid_header'),
        'extension-overrun': (dict(backing='base', extensions=[(B.EXT_BACKING_FORMAT, b'qcow2', 4000)]),
                              'invalid_header'),
        'extension-overrun-cluster': (dict(cluster_bits=9, extensions=[(0x1234, b'', 1000)], pad_to=1024),
                                      'invalid_header'),
        'extensions-no-end-truncated': (dict(end_marker=False, pad_to=0, extensions=[(0x1234, b'12345678')]),
                                        'invalid_header'),
        'backing-format-not-text': (dict(backing='base', extensions=[(B.EXT_BACKING_FORMAT, b'\xff\xfe')]),
                                    'invalid_header'),
        'huge-virtual-size': (dict(size=1 << 63), 'invalid_header'),
        'max-virtual-size': (dict(size=(1 << 64) - 1), 'invalid_header'),
        'truncated-10': (dict(truncate=10), 'invalid_header'),
        'truncated-36': (dict(truncate=36), 'invalid_header'),
        'truncated-60': (dict(truncate=60), 'invalid_header'),
        'truncated-80': (dict(truncate=80), 'invalid_header'),
        'v3-cut-at-100': (dict(truncate=100), 'invalid_header'),
        'v3-cut-at-104': (dict(truncate=104), 'invalid_header'),
        'v2-header-only': (dict(version=2, truncate=72), 'invalid_header'),
        'backing-name-cut': (dict(backing='volume-base', pad_to=0, truncate=110), 'invalid_header'),
    }

    @pytest.mark.parametrize('case', sorted(BAD))
    def test_bad_header_gives_finding(self, tmp_path, case):
        kwargs, code = self.BAD[case]
        info = inspect_bytes(tmp_path, B.qcow2(**kwargs))
        assert info.format == 'qcow2'
        assert code in codes(info), info.findings
        assert all(f.severity == ERROR for f in info.findings if f.code == code)
        assert all(f.filename == 'image' for f in info.findings)

    def test_bad_version_sets_nothing(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(version=4, backing='base'))
        assert info.qcow2_version is None
        assert info.backing_file is None
        assert info.virtual_size is None

    def test_bad_cluster_bits_does_not_read_backing(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(cluster_bits=30, backing='base'))
        assert info.cluster_size is None
        assert info.backing_file is None
        assert info.references == []

    def test_huge_virtual_size_not_reported(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(size=1 << 63))
        assert info.virtual_size is None

    def test_backing_beyond_cluster_not_read(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(cluster_bits=9, backing='volume-base', backing_offset=600,
                                               pad_to=1024))
        assert info.backing_file is None
        assert info.references == []

    def test_non_utf8_backing_not_reported(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(backing=b'\xc3\x28'))
        assert info.backing_file is None
        assert info.references == []

    def test_magic_only(self, tmp_path):
        info = inspect_bytes(tmp_path, b'QFI\xfb')
        assert info.format == 'qcow2'
        assert codes(info) == ['invalid_header']


# ---------------------------------------------------------------------------------------------
# vmdk descriptors
# ---------------------------------------------------------------------------------------------

class TestVmdk:
    def test_text_descriptor_external_extent_and_flat_type(self, tmp_path):
        info = inspect_bytes(tmp_path, B.vmdk_text(), name='disk.vmdk')
        assert info.format == 'vmdk'
        assert info.virtual_size == 2048 * 512
        assert 'disk-flat.vmdk' in info.references
        assert sorted(codes(info)) == ['vmdk_external_extent', 'vmdk_unsupported_type']
        assert all(f.severity == ERROR for f in info.findings)

    def test_sparse_extent_pointing_to_other_file(self, tmp_path):
        descriptor = B.VMDK_EMBEDDED_DESCRIPTOR.format(create_type='monolithicSparse', extra='', sectors=2048,
                                                       extent='/etc/passwd')
        info = inspect_bytes(tmp_path, B.vmdk_sparse(2048, descriptor), name='disk.vmdk')
        assert codes(info) == ['vmdk_external_extent']
        assert info.references == ['/etc/passwd']

    def test_multiple_extents_sum(self, tmp_path):
        data = B.vmdk_text(create_type='twoGbMaxExtentSparse',
                           extents=['RW 100 SPARSE "disk-s001.vmdk"', 'RDONLY 28 SPARSE "disk-s002.vmdk"'])
        info = inspect_bytes(tmp_path, data, name='disk.vmdk')
        assert info.virtual_size == 128 * 512
        assert info.references == ['disk-s001.vmdk', 'disk-s002.vmdk']
        assert codes(info).count('vmdk_external_extent') == 2
        assert 'vmdk_unsupported_type' in codes(info)

    def test_monolithic_flat_type(self, tmp_path):
        descriptor = B.VMDK_EMBEDDED_DESCRIPTOR.format(create_type='monolithicFlat', extra='', sectors=2048,
                                                       extent='disk.vmdk')
        info = inspect_bytes(tmp_path, B.vmdk_sparse(2048, descriptor), name='disk.vmdk')
        assert codes(info) == ['vmdk_unsupported_type']
        assert 'monolithicFlat' in info.findings[0].message

    def test_parent_file_name_hint(self, tmp_path):
        descriptor = B.VMDK_EMBEDDED_DESCRIPTOR.format(
            create_type='monolithicSparse', extra='parentFileNameHint="parent.vmdk"\n', sectors=2048,
            extent='child.vmdk')
        info = inspect_bytes(tmp_path, B.vmdk_sparse(2048, descriptor), name='child.vmdk')
        assert info.backing_file == 'parent.vmdk'
        assert info.references == ['parent.vmdk']
        assert codes(info) == ['vmdk_parent']
        assert info.findings[0].severity == ERROR

    def test_text_descriptor_larger_than_64k_refused(self, tmp_path):
        data = B.vmdk_text(create_type='monolithicSparse', extents=['RW 8 SPARSE "disk.vmdk"'])
        data = data + b'#' * (64 * 1024 + 1 - len(data))
        info = inspect_bytes(tmp_path, data, name='disk.vmdk')
        assert info.format == 'vmdk'
        assert codes(info) == ['invalid_header']
        assert info.references == []

    def test_text_descriptor_of_exactly_64k_read(self, tmp_path):
        data = B.vmdk_text(create_type='monolithicSparse', extents=['RW 8 SPARSE "disk.vmdk"'])
        data = data + b'#' * (64 * 1024 - len(data))
        info = inspect_bytes(tmp_path, data, name='disk.vmdk')
        assert codes(info) == ['vmdk_unsupported_type']  # read whole (no invalid_header), refused as a descriptor file
        assert info.virtual_size == 8 * 512

    def test_embedded_descriptor_larger_than_64k_refused(self, tmp_path):
        info = inspect_bytes(tmp_path, B.vmdk_sparse(2048, None, desc_offset=1, desc_size=129))
        assert info.format == 'vmdk'
        assert info.virtual_size == 2048 * 512
        assert codes(info) == ['invalid_header']

    def test_truncated_sparse_header(self, tmp_path):
        info = inspect_bytes(tmp_path, b'KDMV' + b'\x01\x00\x00\x00' * 3)
        assert info.format == 'vmdk'
        assert codes(info) == ['invalid_header']

    def test_descriptor_with_binary_garbage(self, tmp_path):
        data = b'# Disk DescriptorFile\ncreateType="\xff\xfe"\nRW 8 SPARSE "\xff.vmdk"\n'
        info = inspect_bytes(tmp_path, data, name='disk.vmdk')
        assert info.format == 'vmdk'
        assert 'vmdk_unsupported_type' in codes(info)
        assert 'vmdk_external_extent' in codes(info)


# ---------------------------------------------------------------------------------------------
# Files that are not images
# ---------------------------------------------------------------------------------------------

class TestSpecialFiles:
    def test_fifo_is_refused_without_blocking(self, tmp_path):
        fifo = str(tmp_path / 'fifo')
        os.mkfifo(fifo)
        result = {}

        def run():
            try:
                result['info'] = inspect_image(fifo)
            except BaseException as exc:  # pragma: no cover - reported by the assertion below
                result['error'] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(5)
        if thread.is_alive():  # unblock a reader stuck in open() or read() before failing
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
            thread.join(5)
            pytest.fail('inspect_image blocked on a FIFO')
        assert 'error' not in result, result.get('error')
        info = result['info']
        assert info.format == 'unknown'
        assert codes(info) == ['not_regular_file']
        assert info.findings[0].severity == ERROR

    def test_directory_is_refused(self, tmp_path):
        directory = tmp_path / 'dir'
        directory.mkdir()
        info = inspect_image(str(directory))
        assert info.format == 'unknown'
        assert codes(info) == ['not_regular_file']

    def test_symlink_is_not_followed(self, tmp_path):
        target = B.write(tmp_path / 'target', B.qcow2())
        link = tmp_path / 'link'
        link.symlink_to(target)
        with pytest.raises(OSError):
            inspect_image(str(link))

    def test_missing_file_raises_oserror(self, tmp_path):
        with pytest.raises(OSError):
            inspect_image(str(tmp_path / 'missing'))

    def test_actual_size_of_sparse_file(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(pad_to=512), size=64 * 1024 * 1024)
        assert info.file_size == 64 * 1024 * 1024
        assert 0 <= info.actual_size < info.file_size


def test_image_info_add_uses_basename():
    info = ImageInfo(path='/some/dir/volume-x')
    info.add('code', 'message')
    info.add('code2', 'message2', WARNING)
    assert info.findings == [Finding('code', 'message', ERROR, 'volume-x'),
                             Finding('code2', 'message2', WARNING, 'volume-x')]


def test_reader_bounds(tmp_path):
    path = B.write(tmp_path / 'f', b'0123456789')
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = imf._Reader(fd, 10)
        assert reader.read(0, 4) == b'0123'
        assert reader.read(8, 100) == b'89'
        assert reader.read(10, 1) == b''
        assert reader.read(-1, 5) == b''
        assert reader.read(3, 0) == b''
        assert reader.read(3, -2) == b''
    finally:
        os.close(fd)


class TestQcow2HeadersQemuRefuses:
    """Each header here is one qemu's qcow2_do_open refuses (block/qcow2.c); the message qemu gives is in the id."""

    @pytest.mark.parametrize('kwargs', [
        dict(size=1 << 62),                                   # "Image is too big" (L1 index past INT_MAX)
        dict(size=1 << 30, l1_size=1),                        # "L1 table is too small" (2 entries needed)
        dict(l1_size=0xFFFFFFFF),                             # "Active L1 table too large"
        dict(l1_offset=65536 + 512),                          # "Active L1 table offset invalid"
        dict(l1_offset=(1 << 63) - 65536),                    # past BDRV_MAX_LENGTH: the L1 read fails (EIO)
        dict(refcount_table_clusters=0xFFFFFFFF),             # "Reference count table too large"
        dict(refcount_table_clusters=0),                      # "Image does not contain a reference count table"
        dict(refcount_table_offset=8),                        # "Reference count table offset invalid"
        dict(nb_snapshots=0xFFFFFFFF),                        # "Snapshot table too large"
        dict(snapshots_offset=100),                           # "Snapshot table offset invalid" (even with none)
        dict(refcount_order=7),                               # "Reference count entry width too large"
        dict(incompatible=1 << 4, cluster_bits=13),           # "Unsupported subcluster size"
        dict(header_length=100),                              # "qcow2 header too short"
        dict(backing_offset=65537, backing_size=4),           # "Invalid backing file offset"
        dict(autoclear=1 << 1),                               # "data-file-raw requires a data file"
        dict(backing='base', backing_fmt='q' * 16),           # "ext_backing_format: len=16 too large"
        dict(extensions=[(B.EXT_CRYPTO_HEADER, b'\x00' * 16)]),  # "CRYPTO header extension only expected with LUKS"
        dict(crypt=2, extensions=[(B.EXT_CRYPTO_HEADER, struct.pack('>QQ', 512, 4096))]),  # offset not aligned
        dict(extensions=[(B.EXT_BITMAPS, b'\x00' * 23)]),     # "bitmaps_ext: Invalid extension length"
        dict(autoclear=1, extensions=[(B.EXT_BITMAPS, struct.pack('>IIQQ', 0, 0, 8, 65536))]),  # zero bitmaps
        dict(extensions=[(0x12345678, b'', 0xFFFF)]),         # "Header extension too large"
    ], ids=['size-2^62', 'l1-too-small', 'l1-size-max', 'l1-offset', 'l1-past-max-length', 'refcount-clusters-max',
            'no-refcount-table', 'refcount-offset', 'nb-snapshots-max', 'snapshots-offset', 'refcount-order',
            'extl2-small-clusters', 'header-too-short', 'backing-offset', 'data-file-raw', 'backing-format-16',
            'crypto-ext-without-luks', 'crypto-ext-unaligned', 'bitmaps-ext-length', 'zero-bitmaps',
            'extension-overrun'])
    def test_refused(self, tmp_path, kwargs):
        info = inspect_bytes(tmp_path, B.qcow2(**kwargs))
        assert info.format == 'qcow2'
        assert 'invalid_header' in codes(info), info.findings
        assert finding(info, 'invalid_header').severity == ERROR

    def test_end_marker_claiming_a_length_past_the_area(self, tmp_path):
        # qemu checks the length of every extension header, even of the end marker (qcow2_read_extensions)
        data = bytearray(B.qcow2())
        struct.pack_into('>I', data, 104 + 4, 0xFFFFFFFF)
        assert 'invalid_header' in codes(inspect_bytes(tmp_path, bytes(data)))

    @pytest.mark.parametrize('extra, refused', [(1024, False), (1025, True)])
    def test_snapshot_extra_data_limit(self, tmp_path, extra, refused):
        # qcow2_read_snapshots: "Too much extra metadata in snapshot table entry"
        data = bytearray(B.qcow2(nb_snapshots=1, snapshots_offset=65536 * 4))
        data.extend(b'\x00' * (65536 * 5 - len(data)))
        struct.pack_into('>QIHHIIQII', data, 65536 * 4, 0, 0, 1, 1, 0, 0, 0, 0, extra)
        info = inspect_bytes(tmp_path, bytes(data))
        assert ('invalid_header' in codes(info)) is refused

    @pytest.mark.parametrize('size, expected', [(1000, 512), (1 << 30, 1 << 30)])
    def test_virtual_size_in_whole_sectors(self, tmp_path, size, expected):
        # qemu keeps bs->total_sectors = size / 512
        assert inspect_bytes(tmp_path, B.qcow2(size=size)).virtual_size == expected

    def test_largest_valid_tables_accepted(self, tmp_path):
        info = inspect_bytes(tmp_path, B.qcow2(refcount_table_clusters=128, nb_snapshots=0, l1_size=0x400000,
                                               refcount_order=6))
        assert info.findings == []


def test_raw_size_rounded_up_to_a_sector(tmp_path):
    # qemu's raw driver presents whole sectors: a 1000-byte file is a 1024-byte disk
    assert inspect_bytes(tmp_path, b'\x01' * 1000).virtual_size == 1024


def test_vmdk_descriptor_qemu_reads_at_sector_1_is_judged(tmp_path):
    # qemu reads a sparse vmdk's CID and parentFileNameHint at sector 1 whatever desc_offset says (vmdk_open sets
    # desc_offset = 0x200): a clean descriptor elsewhere must not hide a parent named at sector 1.
    clean = B.VMDK_EMBEDDED_DESCRIPTOR.format(create_type='monolithicSparse', extra='', sectors=2048, extent='disk.vmdk')
    hostile = B.VMDK_EMBEDDED_DESCRIPTOR.format(create_type='monolithicSparse', sectors=2048, extent='disk.vmdk',
                                                extra='parentFileNameHint="/etc/shadow"\n')
    data = bytearray(B.vmdk_sparse(2048, clean, desc_offset=40, desc_size=20))
    data[512:512 + len(hostile)] = hostile.encode('utf-8')
    info = inspect_bytes(tmp_path, bytes(data), name='disk.vmdk')
    assert 'vmdk_parent' in codes(info)
    assert '/etc/shadow' in info.references
