"""The overlay volume_snapshot writes itself (plugins/module_utils/_nfs/qcow2_overlay.py) against the real qemu-img.

The module no longer starts ``qemu-img create`` for a snapshot's overlay: it writes the same bytes. These tests hold
it to that: byte equality with ``qemu-img create -f qcow2 -u -b <name> -F <fmt> <file> <size>`` of the installed
qemu-img for sizes from one byte to qemu's largest L1 table, backing names up to qemu's limit, several backing
formats; ``qemu-img check`` finds nothing wrong; ``qemu-io`` reads the backing file's data through the overlay and
writes into it; and what the native writer does not know is still refused by qemu-img itself.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qcow2_overlay import (
    MAX_SIZE,
    native_overlay_supported,
    write_overlay,
)

GIB = 1 << 30
SIZES = [1, 511, 512, 513, 1_000_000, 1 << 20, (1 << 29) - 512, 1 << 29, (1 << 29) + 1, GIB, 100 * GIB, 1 << 40,
         16 << 40, 1 << 50, MAX_SIZE - 512, MAX_SIZE]
NAMES = ['volume-0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6',
         'volume-0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6.6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d',
         'x' * 1023, 'a name with spaces', 'caf\u00e9-\u00fc', '../other/volume-1']
FORMATS = ['raw', 'qcow2', 'vmdk', 'vhdx', 'luks', 'parallels']


def _native(path: Path, backing: str, fmt: str, size: int) -> None:
    fd = os.open(str(path), os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    try:
        write_overlay(fd, backing, fmt, size)
    finally:
        os.close(fd)


def _qemu_create(qemu_img: str, path: Path, backing: str, fmt: str, size: int) -> None:
    subprocess.run([qemu_img, 'create', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', fmt, str(path), str(size)],
                   check=True, capture_output=True)


def _version(qemu_img: str) -> str:
    return subprocess.run([qemu_img, '--version'], check=True, capture_output=True, text=True).stdout.splitlines()[0]


def test_native_overlays_are_qemu_imgs_bytes(tmp_path: Path, qemu_img: str) -> None:
    rng = random.Random(20261203)
    sizes = SIZES + [rng.randrange(1, 1 << 45) for _index in range(12)]
    cases = [(size, name, fmt) for size in sizes for name in NAMES[:2] for fmt in FORMATS[:2]]
    cases += [(GIB, name, fmt) for name in NAMES for fmt in FORMATS]
    differ = []
    for index, (size, name, fmt) in enumerate(cases):
        assert native_overlay_supported(name, fmt, size)
        ours, theirs = tmp_path / ('ours-%d' % index), tmp_path / ('qemu-%d' % index)
        _native(ours, name, fmt, size)
        _qemu_create(qemu_img, theirs, name, fmt, size)
        if ours.read_bytes() != theirs.read_bytes():
            differ.append((size, name[:40], fmt))
        ours.unlink()
        theirs.unlink()
    assert not differ, '%s writes other bytes than the native overlay for %d of %d cases: %s' % (
        _version(qemu_img), len(differ), len(cases), differ[:5])
    assert len(cases) > 100


@pytest.mark.parametrize('size', [GIB, 16 << 40, MAX_SIZE])
def test_qemu_img_check_and_info_accept_the_native_overlay(tmp_path: Path, qemu_img: str, size: int) -> None:
    with open(tmp_path / 'volume-base', 'wb') as handle:
        handle.truncate(1 << 20)  # a backing file shorter than the overlay reads as zeros beyond its end
    overlay = tmp_path / 'overlay'
    _native(overlay, 'volume-base', 'raw', size)
    check = subprocess.run([qemu_img, 'check', '-f', 'qcow2', '--output=json', str(overlay)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report.get('corruptions', 0) == 0 and report.get('leaks', 0) == 0 and report['check-errors'] == 0
    info = json.loads(subprocess.run([qemu_img, 'info', '-U', '-f', 'qcow2', '--output=json', str(overlay)],
                                     check=True, capture_output=True, text=True).stdout)
    assert info['virtual-size'] == size and info['cluster-size'] == 65536
    assert info['backing-filename'] == 'volume-base' and info['backing-filename-format'] == 'raw'
    assert info['format-specific']['data']['compat'] == '1.1'


def test_qemu_reads_the_backing_data_through_the_native_overlay_and_writes_into_it(
        tmp_path: Path, qemu_img: str, qemu_io: str) -> None:
    base = tmp_path / 'volume-base'
    with open(base, 'wb') as handle:
        handle.truncate(64 << 20)
    subprocess.run([qemu_io, '-f', 'raw', '-c', 'write -P 0x5a 1M 1M', str(base)], check=True, capture_output=True)
    overlay = tmp_path / 'volume-base.snap'
    _native(overlay, 'volume-base', 'raw', 64 << 20)
    read = subprocess.run([qemu_io, '-f', 'qcow2', '-c', 'read -P 0x5a 1M 1M', '-c', 'read -P 0 0 1M',
                           str(overlay)], capture_output=True, text=True, check=False)
    assert read.returncode == 0 and 'Pattern verification failed' not in read.stdout, read.stdout + read.stderr
    subprocess.run([qemu_io, '-f', 'qcow2', '-c', 'write -P 0xa5 1M 64k', str(overlay)], check=True,
                   capture_output=True)
    after = subprocess.run([qemu_io, '-f', 'qcow2', '-c', 'read -P 0xa5 1M 64k', '-c', 'read -P 0x5a 1088k 960k',
                            str(overlay)], capture_output=True, text=True, check=False)
    assert after.returncode == 0 and 'Pattern verification failed' not in after.stdout, after.stdout
    with open(base, 'rb') as handle:
        handle.seek(1 << 20)
        assert handle.read(65536) == b'\x5a' * 65536  # the write went into the overlay, not the backing file
    check = subprocess.run([qemu_img, 'check', '-f', 'qcow2', str(overlay)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_what_the_native_writer_leaves_to_qemu_img_qemu_img_refuses(tmp_path: Path, qemu_img: str) -> None:
    # Beyond the largest L1 table: the module runs qemu-img, which says what is wrong.
    assert not native_overlay_supported('volume-base', 'raw', MAX_SIZE + 512)
    too_big = subprocess.run([qemu_img, 'create', '-q', '-f', 'qcow2', '-u', '-b', 'volume-base', '-F', 'raw',
                              str(tmp_path / 'big'), str(MAX_SIZE + 512)], capture_output=True, text=True, check=False)
    assert too_big.returncode != 0 and too_big.stderr.strip()
    assert not native_overlay_supported('x' * 1024, 'raw', GIB)
    too_long = subprocess.run([qemu_img, 'create', '-q', '-f', 'qcow2', '-u', '-b', 'x' * 1024, '-F', 'raw',
                               str(tmp_path / 'long'), str(GIB)], capture_output=True, text=True, check=False)
    assert too_long.returncode != 0 and too_long.stderr.strip()
