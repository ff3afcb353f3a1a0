"""Differential test: the native chain reader against the real qemu-img / qemu-io on mutated images.

A seeded generator starts from real images made by qemu-img (qcow2 v2/v3 with and without backing files,
backing formats, small and large clusters, zstd, extended L2, internal snapshots, bitmaps, data files;
vmdk monolithicSparse and streamOptimized, vhdx, vdi, qed, vpc, luks, raw), mutates header fields and
backing names (protocol and json: names, absolute and ``..`` names, symlinks, files inside and outside
the share, missing files, loops), and judges each case with ``inspect_chain``. Whenever the native
reader says a chain is safe:

* ``qemu-img info --backing-chain -U -f <our top format>`` must open it and list exactly our layers
  (same real paths, formats, virtual sizes), and no vmdk extent or qcow2 data file we did not list;
* ``qemu-io -r -U -f <our top format> -c quit`` (a full open with I/O, as a create or commit on top does)
  must open it too.

Cases we call unsafe need no agreement from qemu. Every disagreement fails the test with the seed, the
case index, the mutations and a reproducer command. ``VOLSNAP_DIFF_SEED`` and ``VOLSNAP_DIFF_CASES``
override the seed and the number of cases; ``VOLSNAP_DIFF_CASE=<index>`` runs one case and keeps its files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain, qemu_format
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.image_format import _crc32c

SEED = int(os.environ.get("VOLSNAP_DIFF_SEED", "20261202"))
CASES = int(os.environ.get("VOLSNAP_DIFF_CASES", "3000"))
ONE_CASE = os.environ.get("VOLSNAP_DIFF_CASE")
WORKERS = int(os.environ.get("VOLSNAP_DIFF_WORKERS", "3"))
QEMU_TIMEOUT = 30
SIZE = 64 * 1024 * 1024

QCOW2_FIELDS = {  # name: (offset, struct format)
    "version": (4, ">I"), "backing_offset": (8, ">Q"), "backing_size": (16, ">I"), "cluster_bits": (20, ">I"),
    "size": (24, ">Q"), "crypt_method": (32, ">I"), "l1_size": (36, ">I"), "l1_table_offset": (40, ">Q"),
    "refcount_table_offset": (48, ">Q"), "refcount_table_clusters": (56, ">I"), "nb_snapshots": (60, ">I"),
    "snapshots_offset": (64, ">Q"), "incompatible": (72, ">Q"), "compatible": (80, ">Q"),
    "autoclear": (88, ">Q"), "refcount_order": (96, ">I"), "header_length": (100, ">I"),
    "compression_type": (104, ">B"),
}
EXT_TYPES = [0xE2792ACA, 0x44415441, 0x0537BE77, 0x23852875, 0x6803F857, 0x12345678, 0]
BACKING_FORMATS = ["raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi", "qed", "luks", "file", "host_device", "nbd",
                   "qcow", "parallels", "json", "null-co", "blkdebug", "", "qcow2\x00x", "raw" * 5]


def _qemu(*args: str, timeout: int = QEMU_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _make(*args: str) -> None:
    for _attempt in range(5):
        proc = _qemu("qemu-img", *args, timeout=120)
        if "Unable to get accurate CPU usage" not in proc.stderr:  # LUKS key-derivation benchmark, loaded host
            break
    assert proc.returncode == 0, "qemu-img %s: %s" % (" ".join(args), proc.stderr)


# --- Templates: real images, stored as their non-zero blocks so that thousands of copies stay cheap ------

class Template:
    def __init__(self, name: str, fmt: str, files: Dict[str, Tuple[int, List[Tuple[int, bytes]]]]) -> None:
        self.name = name
        self.fmt = fmt          # the format qemu-img created for top.img
        self.files = files      # share-relative name -> (size, [(offset, block)])

    def materialize(self, share: Path) -> None:
        for name, (size, blocks) in self.files.items():
            with open(share / name, "wb") as handle:
                for offset, block in blocks:
                    handle.seek(offset)
                    handle.write(block)
                handle.truncate(size)


def _blocks(path: Path) -> Tuple[int, List[Tuple[int, bytes]]]:
    data = path.read_bytes()
    step = 4096
    blocks = [(offset, data[offset:offset + step]) for offset in range(0, len(data), step)
              if data[offset:offset + step].strip(b"\x00")]
    return len(data), blocks


def _templates(work: Path) -> List[Template]:
    specs: List[Tuple[str, str, List[List[str]]]] = []

    def qcow2(name: str, opts: str = "", base: Optional[str] = None, extra: Optional[List[List[str]]] = None) -> None:
        cmds = []
        if base is not None:
            cmds.append(["create", "-q", "-f", base, "base.img", "16M"])
            cmds.append(["create", "-q", "-f", "qcow2", "-o", "compat=1.1" + opts, "-b", "base.img", "-F", base,
                         "top.img", str(SIZE)])
        else:
            cmds.append(["create", "-q", "-f", "qcow2", "-o", "compat=1.1" + opts, "top.img", str(SIZE)])
        specs.append((name, "qcow2", cmds + (extra or [])))

    qcow2("qcow2-v3")
    qcow2("qcow2-v2", ",compat=0.10")
    qcow2("qcow2-backing-qcow2", base="qcow2")
    qcow2("qcow2-backing-raw", base="raw")
    qcow2("qcow2-v2-backing", ",compat=0.10", base="qcow2")
    qcow2("qcow2-512", ",cluster_size=512", base="qcow2")
    qcow2("qcow2-2M", ",cluster_size=2M", base="qcow2")
    qcow2("qcow2-zstd-extl2", ",compression_type=zstd,extended_l2=on,cluster_size=128k", base="qcow2")
    qcow2("qcow2-refcount64", ",refcount_bits=64,lazy_refcounts=on", base="qcow2")
    snapshots = [["snapshot", "-c", "s1", "top.img"], ["snapshot", "-c", "s2", "top.img"]]
    qcow2("qcow2-snapshot", base="qcow2", extra=snapshots)
    qcow2("qcow2-bitmap", extra=[["bitmap", "--add", "top.img", "b0"]])
    qcow2("qcow2-datafile", ",data_file=data.raw")
    specs.append(("vmdk-sparse", "vmdk", [["create", "-q", "-f", "vmdk", "top.img", str(SIZE)]]))
    specs.append(("vmdk-stream", "vmdk", [["create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized",
                                           "top.img", str(SIZE)]]))
    specs.append(("vhdx", "vhdx", [["create", "-q", "-f", "vhdx", "top.img", str(SIZE)]]))
    specs.append(("vdi", "vdi", [["create", "-q", "-f", "vdi", "top.img", str(SIZE)]]))
    specs.append(("qed", "qed", [["create", "-q", "-f", "qed", "top.img", str(SIZE)]]))
    specs.append(("vpc", "vpc", [["create", "-q", "-f", "vpc", "top.img", str(SIZE)]]))
    specs.append(("raw", "raw", [["create", "-q", "-f", "raw", "top.img", "1M"]]))
    specs.append(("luks", "luks", [["create", "-q", "--object", "secret,id=s0,data=volsnap", "-f", "luks",
                                    "-o", "key-secret=s0,iter-time=10", "top.img", "16M"]]))
    templates = []
    for name, fmt, cmds in specs:
        directory = work / "templates" / name
        directory.mkdir(parents=True)
        cwd = os.getcwd()
        os.chdir(directory)
        try:
            for cmd in cmds:
                _make(*cmd)
        finally:
            os.chdir(cwd)
        files = dict((path.name, _blocks(path)) for path in sorted(directory.iterdir()))
        templates.append(Template(name, fmt, files))
    return templates


# --- Mutations ----------------------------------------------------------------------------------------

def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def _write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def _qcow2_get(path: Path, field: str) -> int:
    offset, fmt = QCOW2_FIELDS[field]
    return struct.unpack(fmt, _read(path, offset, struct.calcsize(fmt)))[0]


def _qcow2_set(path: Path, field: str, value: int) -> None:
    offset, fmt = QCOW2_FIELDS[field]
    bits = struct.calcsize(fmt) * 8
    _write(path, offset, struct.pack(fmt, value % (1 << bits)))


def _qcow2_extensions(path: Path) -> Tuple[List[Tuple[int, int, int]], int]:
    """[(offset of the extension header, type, length)], offset just after the end marker."""
    version = _qcow2_get(path, "version")
    header_length = _qcow2_get(path, "header_length") if version >= 3 else 72
    cluster = 1 << min(max(_qcow2_get(path, "cluster_bits"), 9), 21)
    data = _read(path, 0, cluster)
    offset, exts = header_length, []
    while offset + 8 <= len(data):
        ext_type, ext_len = struct.unpack_from(">II", data, offset)
        exts.append((offset, ext_type, ext_len))
        offset += 8
        if ext_type == 0:
            break
        offset += (ext_len + 7) & ~7
    return exts, offset


def _hostile_names(rng: random.Random, case: Path) -> str:
    share, outside = case / "share", case / "outside"
    names = [
        "base.img", "./base.img", "sub/../base.img", str(share / "base.img"), "link-in", "other.img",
        "missing.img", "top.img", "link-out", "sub", str(outside / "secret"), "../outside/secret",
        "json:{\"driver\":\"raw\",\"file\":{\"filename\":\"%s\"}}" % (outside / "secret"),
        "json:{\"driver\":\"raw\",\"file\":{\"filename\":\"base.img\"}}",
        "file:base.img", "file:%s" % (outside / "secret"), "nbd:127.0.0.1:9", "nbd+unix:///x?socket=/nonexistent",
        "http://127.0.0.1:9/base.img", "https:base.img", "null-co://", "base.img:x", "blkdebug::base.img",
    ]
    name = rng.choice(names)
    if ":" in name.split("/", 1)[0] and "/" not in name:
        # A file of that literal name in the share: proves nothing about what qemu opens.
        shutil.copy(share / "other.img", share / name)
    return name


def _set_backing_name(path: Path, name: bytes, rng: random.Random) -> str:
    cluster = 1 << min(max(_qcow2_get(path, "cluster_bits"), 9), 21)
    offset = _qcow2_get(path, "backing_offset")
    if not offset:
        _exts, offset = _qcow2_extensions(path)
    if offset + len(name) > cluster:
        return "backing name does not fit"
    _write(path, offset, name)
    _qcow2_set(path, "backing_offset", offset)
    _qcow2_set(path, "backing_size", len(name))
    return "backing name %r at %d" % (name, offset)


def _mutate_qcow2(rng: random.Random, case: Path, top: Path) -> List[str]:
    done: List[str] = []
    cluster_bits = _qcow2_get(top, "cluster_bits")
    cluster = 1 << cluster_bits
    for _round in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.choice(["field", "field", "field", "backing", "backing", "backing_fmt", "ext", "bit",
                           "snapshot", "none"])
        if kind == "field":
            field = rng.choice(sorted(QCOW2_FIELDS))
            current = _qcow2_get(top, field)
            size = _qcow2_get(top, "size")
            candidates = {
                "version": [0, 1, 2, 3, 4],
                "cluster_bits": [8, 9, 12, 16, 17, 21, 22, 63],
                "size": [0, 511, 513, 1 << 30, 1 << 40, (1 << 40) + 1, 1 << 55, 1 << 62, (1 << 63) - 1, 1 << 63,
                         (1 << 64) - 1, size * 2, size * 1024, size + 512, size - 512],
                "crypt_method": [0, 1, 2, 3],
                "l1_size": [0, 1, current - 1, current + 1, 0x400000, 0x400001, 0xFFFFFFFF],
                "l1_table_offset": [0, 1, current + 512, current + cluster, 1 << 62, (1 << 63) - cluster],
                "refcount_table_offset": [0, 8, current + cluster, (1 << 63) - cluster, 1 << 62],
                "refcount_table_clusters": [0, 1, 2, (8 << 20) // cluster, (8 << 20) // cluster + 1, 0xFFFFFFFF],
                "nb_snapshots": [0, 1, 2, 65536, 65537, 0xFFFFFFFF],
                "snapshots_offset": [0, 1, cluster, cluster * 7, current + 8, (1 << 63) - cluster],
                "incompatible": [0, 1, 2, 4, 8, 16, 32, 1 << 63, current ^ 8, current ^ 16],
                "compatible": [0, 1, 1 << 63],
                "autoclear": [0, 1, 2, 3, 1 << 63],
                "refcount_order": [0, 3, 4, 6, 7, 0xFFFFFFFF],
                "header_length": [72, 100, 104, 105, 108, 112, 120, cluster, cluster + 8],
                "compression_type": [0, 1, 2, 255],
                "backing_offset": [0, 1, 72, cluster - 1, cluster, cluster + 1, current + 8],
                "backing_size": [0, 1, current - 1, current + 1, 1023, 1024, 0xFFFFFFFF],
            }[field]
            value = rng.choice(candidates) if rng.random() < 0.85 else current ^ (1 << rng.randrange(64))
            _qcow2_set(top, field, value)
            done.append("%s %d -> %d" % (field, current, value % (1 << 64)))
        elif kind == "backing":
            name = _hostile_names(rng, case)
            done.append(_set_backing_name(top, name.encode("utf-8"), rng))
            if rng.random() < 0.5:
                done.append(_set_backing_format(top, rng.choice(["qcow2", "raw"]), rng))
        elif kind == "backing_fmt":
            done.append(_set_backing_format(top, rng.choice(BACKING_FORMATS), rng))
        elif kind == "ext":
            exts, _end = _qcow2_extensions(top)
            if not exts:
                continue
            offset, ext_type, ext_len = rng.choice(exts)
            if rng.random() < 0.5:
                new_type = rng.choice(EXT_TYPES)
                _write(top, offset, struct.pack(">I", new_type))
                done.append("extension at %d type 0x%x -> 0x%x" % (offset, ext_type, new_type))
            else:
                new_len = rng.choice([0, 1, 15, 16, 24, ext_len + 1, ext_len + 8, cluster, 0xFFFFFFFF])
                _write(top, offset + 4, struct.pack(">I", new_len))
                done.append("extension at %d length %d -> %d" % (offset, ext_len, new_len))
        elif kind == "bit":
            offset = rng.randrange(0, 112)
            byte = _read(top, offset, 1)
            if byte:
                flipped = bytes([byte[0] ^ (1 << rng.randrange(8))])
                _write(top, offset, flipped)
                done.append("bit flip at byte %d" % offset)
        elif kind == "snapshot":
            table = _qcow2_get(top, "snapshots_offset")
            if _qcow2_get(top, "nb_snapshots") and table and table + 40 <= top.stat().st_size:
                field, fmt = rng.choice([(12, ">H"), (14, ">H"), (36, ">I"), (8, ">I"), (0, ">Q")])
                value = rng.choice([0, 1, 1024, 1025, 0xFFFF, 0xFFFFFFFF])
                _write(top, table + field, struct.pack(fmt, value % (1 << (8 * struct.calcsize(fmt)))))
                done.append("snapshot entry 0 field @%d -> %d" % (field, value))
    return done


def _set_backing_format(path: Path, fmt: str, rng: random.Random) -> str:
    exts, end = _qcow2_extensions(path)
    for offset, ext_type, ext_len in exts:
        if ext_type == 0xE2792ACA:
            data = fmt.encode("utf-8")
            if len(data) <= ((ext_len + 7) & ~7):
                _write(path, offset + 4, struct.pack(">I", len(data)) + data.ljust((ext_len + 7) & ~7, b"\x00"))
                return "backing format %r" % fmt
            return "backing format %r does not fit" % fmt
    return "no backing format extension"


def _mutate_bytes(rng: random.Random, top: Path, fields: List[Tuple[int, str, List[int]]]) -> List[str]:
    done = []
    for _round in range(rng.choice([1, 1, 2])):
        offset, fmt, candidates = rng.choice(fields)
        width = struct.calcsize(fmt)
        current = struct.unpack(fmt, _read(top, offset, width).ljust(width, b"\x00"))[0]
        value = rng.choice(candidates + [current + 1, current - 1, current * 2, current ^ (1 << rng.randrange(8 * width))])
        _write(top, offset, struct.pack(fmt, value % (1 << (8 * width))))
        done.append("@%d %s %d -> %d" % (offset, fmt, current, value % (1 << (8 * width))))
    return done


def _vmdk_descriptor_mutation(rng: random.Random, case: Path, top: Path) -> List[str]:
    (desc_sector,) = struct.unpack("<Q", _read(top, 28, 8))
    if not desc_sector:
        return []
    text = _read(top, desc_sector * 512, 8192).split(b"\x00", 1)[0].decode("utf-8", "replace")
    choice = rng.choice(["createType", "extent", "parent", "sectors"])
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if choice == "createType" and line.startswith("createType="):
            types = ["monolithicFlat", "twoGbMaxExtentSparse", "vmfs", "monolithicSparse", "streamOptimized", "bogus"]
            lines[index] = 'createType="%s"' % rng.choice(types)
        elif choice in ("extent", "sectors") and line.startswith(("RW ", "RDONLY ")):
            parts = line.split(" ")
            if choice == "extent":
                parts[3] = '"%s"' % rng.choice(["top.img", "other.img", "../outside/secret", "base.img", "missing.vmdk",
                                                "link-out"])
            else:
                parts[1] = str(rng.choice([0, 1, int(parts[1]) * 2, int(parts[1]) - 1]))
            lines[index] = " ".join(parts)
        elif choice == "parent" and line.startswith("parentCID="):
            lines.insert(index + 1, 'parentFileNameHint="%s"' % rng.choice(["other.img", "../outside/secret"]))
            break
    new = "\n".join(lines).encode("utf-8")
    _write(top, desc_sector * 512, new.ljust(len(text.encode("utf-8")), b"\x00"))
    return ["vmdk descriptor %s" % choice]


def mutate(rng: random.Random, template: Template, case: Path) -> List[str]:
    top = case / "share" / "top.img"
    fmt = template.fmt
    if fmt == "qcow2":
        return _mutate_qcow2(rng, case, top)
    if fmt == "vmdk":
        fields = [(4, "<I", [1, 2, 3, 4]), (8, "<I", [0, 1, 3, 0x10000, 0x20000]), (12, "<Q", [0, 1, 1 << 31, 1 << 40]),
                  (20, "<Q", [0, 1, 8, 128, 0x200000, 0x200001]), (28, "<Q", [0, 1, 1 << 40]),
                  (36, "<Q", [0, 1, 20, 200]), (44, "<I", [0, 1, 512, 513, 0xFFFFFFFF]),
                  (48, "<Q", [0, 1, 0xFFFFFFFFFFFFFFFF]), (56, "<Q", [0, 1, 0xFFFFFFFFFFFFFFFF]),
                  (64, "<Q", [0, 1, 128]), (77, "<H", [0, 1, 2])]
        if rng.random() < 0.3:
            return _vmdk_descriptor_mutation(rng, case, top)
        return _mutate_bytes(rng, top, fields)
    if fmt == "vdi":
        fields = [(0x40, "<I", [0xBEDA107F, 0]), (0x44, "<I", [0x00010001, 0x00010000, 0x00020001]),
                  (0x48, "<I", [0, 0x180, 0x190]), (0x4C, "<I", [1, 2, 3, 4]),
                  (0x154, "<I", [0, 1, 512, 0x200000]), (0x158, "<I", [0, 1, 512, 0x200000]),
                  (0x168, "<I", [0, 512, 4096]), (0x170, "<Q", [0, 511, 1 << 30, 1 << 40, 1 << 63]),
                  (0x178, "<I", [0, 1 << 20, 1 << 21, 512]), (0x180, "<I", [0, 1, 0x3FFFFFFF, 0xFFFFFFFF]),
                  (0x184, "<I", [0, 1]), (0x1A8, "<Q", [0, 1]), (0x1B8, "<Q", [0, 1])]
        return _mutate_bytes(rng, top, fields)
    if fmt == "vpc":
        done = _mutate_bytes(rng, top, [(48, ">Q", [0, 512, 1 << 30, 1 << 40]), (40, ">Q", [0, 1 << 30]),
                                        (56, ">I", [0, 0x04104110, 0xFFFFFFFF]), (60, ">I", [2, 3, 4, 5]),
                                        (28, ">I", [0, 0x77696E20, 0x71656D32]), (64, ">I", [0]),
                                        (16, ">Q", [0, 512, 1 << 40]), (512 + 28, ">I", [0, 1, 32, 0xFFFFFFFF]),
                                        (512 + 32, ">I", [0, 511, 512, 1 << 21, 3 << 20]),
                                        (512 + 16, ">Q", [0, 512, 1 << 40]), (1536, ">I", [0, 1, 0x1000])])
        if rng.random() < 0.8:  # a checksum that matches, so that qemu looks further than the footer
            footer = bytearray(_read(top, 0, 512))
            footer[64:68] = b"\x00" * 4
            _write(top, 64, struct.pack(">I", (~sum(footer)) & 0xFFFFFFFF))
            done.append("footer checksum fixed")
        return done
    if fmt == "vhdx":
        # the file identifier, both headers, both region tables and the metadata region (at 1 MiB? found below)
        fields = [(0, "<Q", [0]), (64 * 1024 + 8, "<Q", [0, 1]), (128 * 1024 + 8, "<Q", [0, 1]),
                  (192 * 1024 + 8, "<I", [0, 1, 2048]), (256 * 1024 + 8, "<I", [0, 1, 2048])]
        metadata = _vhdx_metadata_items(top)
        for item_offset in metadata:
            fields.append((item_offset, "<Q", [0, 1, 511, 512, 1 << 20, 1 << 30, 1 << 40, 1 << 46, 1 << 63]))
        fields += [(64 * 1024 + 48, "<Q", [0, 1]), (64 * 1024 + 64, "<H", [0, 1]), (64 * 1024 + 66, "<H", [0, 1, 2]),
                   (64 * 1024 + 68, "<I", [0, 1 << 20, 1 << 21, 12345]), (192 * 1024 + 16 + 16, "<Q", [0, 1 << 20]),
                   (192 * 1024 + 16 + 24, "<I", [0, 1 << 20, 1 << 30]), (192 * 1024 + 16 + 28, "<I", [0, 1, 3])]
        done = _mutate_bytes(rng, top, fields)
        if rng.random() < 0.8:  # checksums that match, so that qemu looks further than the headers
            for offset, length in ((64 * 1024, 4096), (128 * 1024, 4096), (192 * 1024, 65536)):
                block = bytearray(_read(top, offset, length))
                block[4:8] = b"\x00" * 4
                _write(top, offset + 4, struct.pack("<I", _crc32c(bytes(block))))
            done.append("checksums fixed")
        return done
    if fmt == "luks":
        return _mutate_bytes(rng, top, [(6, ">H", [1, 2, 3]), (104, ">I", [0, 1, 4096, 1 << 30]),
                                        (108, ">I", [0, 16, 32, 64])])
    if fmt == "raw":
        magic = rng.choice([b"QFI\xfb", b"QED\x00", b"KDMV", b"conectix", b"vhdxfile", b"LUKS\xba\xbe", b"# Disk Desc"])
        _write(top, 0, magic)
        return ["raw starts with %r" % magic]
    if fmt == "qed":
        return _mutate_bytes(rng, top, [(4, "<I", [0, 4096, 65536]), (40, "<Q", [0, 1 << 30])])
    return []


def _vhdx_metadata_items(top: Path) -> List[int]:
    table = _read(top, 192 * 1024, 4096)
    if table[:4] != b"regi":
        return []
    (count,) = struct.unpack_from("<I", table, 8)
    for index in range(min(count, 16)):
        entry = 16 + 32 * index
        if table[entry:entry + 16] == bytes.fromhex("06a27c8b90479a4bb8fe575f050f886e"):
            (region,) = struct.unpack_from("<Q", table, entry + 16)
            meta = _read(top, region, 4096)
            (entries,) = struct.unpack_from("<H", meta, 10)
            return [region + struct.unpack_from("<I", meta, 32 + 32 * i + 16)[0] for i in range(min(entries, 16))]
    return []


# --- One case ------------------------------------------------------------------------------------------

def _prepare(template: Template, case: Path) -> None:
    share, outside = case / "share", case / "outside"
    (share / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_bytes(b"QFI\xfb" + b"outside the share " * 100)  # qcow2 magic: probes as qcow2
    template.materialize(share)
    if not (share / "base.img").exists():
        with open(share / "base.img", "wb") as handle:
            handle.truncate(1024 * 1024)
    shutil.copy(share / "base.img", share / "other.img")
    os.symlink("base.img", share / "link-in")
    os.symlink("../outside/secret", share / "link-out")


def _layers(report) -> List[Tuple[str, str, Optional[int]]]:
    return [(os.path.realpath(layer.image.path), qemu_format(layer.image.format), layer.image.virtual_size)
            for layer in report.layers]


def _compare(report, top: Path) -> Tuple[List[str], str]:
    """Disagreements between a chain we call safe and what qemu opens; and the reproducer command."""
    fmt = qemu_format(getattr(report.layers[0], "trusted_format", None) or report.layers[0].image.format)
    argv = ["qemu-img", "info", "--backing-chain", "--output=json", "-U", "-f", fmt, str(top)]
    repro = " ".join(argv)
    info = _qemu(*argv)
    if info.returncode != 0:
        return ["qemu-img info refuses what we call safe: %s" % info.stderr.strip()[:300]], repro
    answers = json.loads(info.stdout)
    problems = []
    ours = _layers(report)
    theirs = []
    for answer in answers:
        theirs.append((os.path.realpath(answer["filename"]), answer["format"], answer.get("virtual-size")))
        data = (answer.get("format-specific") or {}).get("data") or {}
        if "data-file" in data:
            problems.append("qemu opens data file %s that we did not list" % data["data-file"])
        for extent in data.get("extents") or []:
            real = os.path.realpath(extent.get("filename", ""))
            if real not in [layer[0] for layer in ours]:
                problems.append("qemu opens vmdk extent %s that we did not list" % extent.get("filename"))
    if theirs != ours:
        problems.append("qemu's chain %r differs from ours %r" % (theirs, ours))
    # A full open of an encrypted layer needs its key, which no volsnap operation passes: qemu-img info only.
    if not problems and not any(layer.image.encrypted for layer in report.layers):
        argv_io = ["qemu-io", "-r", "-U", "-f", fmt, "-c", "quit", str(top)]
        proc = _qemu(*argv_io)
        if proc.returncode != 0 or "can't open" in proc.stderr:
            problems.append("qemu-io cannot open what we call safe: %s" % proc.stderr.strip()[:300])
            repro += " && " + " ".join(argv_io)
    return problems, repro


def run_case(index: int, templates: List[Template], work: Path, keep: bool = False) -> Dict[str, object]:
    rng = random.Random("%d:%d" % (SEED, index))
    template = rng.choice(templates)
    case = work / ("case-%05d" % index)
    _prepare(template, case)
    top = case / "share" / "top.img"
    mutations = mutate(rng, template, case)
    result: Dict[str, object] = {"index": index, "template": template.name, "mutations": mutations}
    try:
        report = inspect_chain(str(top), share=str(case / "share"), follow_info=False)
        result["safe"] = report.safe
        result["codes"] = sorted(set(p.code for p in report.errors))
        if report.safe:
            problems, repro = _compare(report, top)
            result["problems"] = problems
            result["repro"] = repro
        else:
            result["problems"] = []
    except Exception as exc:  # a crash of the native reader is a failure too
        result["safe"] = None
        result["problems"] = ["the native reader raised %r" % exc]
        result["repro"] = ""
    if not keep and not result["problems"]:
        shutil.rmtree(case, ignore_errors=True)
    return result


def test_native_reader_agrees_with_qemu(tmp_path: Path) -> None:
    for tool in ("qemu-img", "qemu-io"):
        assert shutil.which(tool), "%s is missing: the differential test needs the real qemu tools (make deps)" % tool
    print("differential test: seed %d, %d cases (VOLSNAP_DIFF_SEED / VOLSNAP_DIFF_CASES to change)" % (SEED, CASES))
    started = time.monotonic()
    templates = _templates(tmp_path)
    indexes = [int(ONE_CASE)] if ONE_CASE else list(range(CASES))
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda i: run_case(i, templates, tmp_path, keep=bool(ONE_CASE)), indexes))
    elapsed = time.monotonic() - started
    safe = sum(1 for r in results if r["safe"])
    by_template: Dict[str, List[int]] = {}
    for result in results:
        counts = by_template.setdefault(str(result["template"]), [0, 0])
        counts[0] += 1
        counts[1] += 1 if result["safe"] else 0
    print("differential test: %d cases in %.1f s, %d judged safe and checked against qemu-img/qemu-io, %d unsafe"
          % (len(results), elapsed, safe, len(results) - safe))
    for name, (total, safe_count) in sorted(by_template.items()):
        print("  %-22s %5d cases %5d safe" % (name, total, safe_count))
    failures = [r for r in results if r["problems"]]
    kinds: Dict[str, int] = {}
    for failure in failures:
        first = str(failure["problems"][0]).replace(str(tmp_path), "")
        key = "%s: %s" % (failure["template"], first.split("':", 1)[-1][:90])
        kinds[key] = kinds.get(key, 0) + 1
    report = ["%4d x %s" % (count, key) for key, count in sorted(kinds.items())]
    for failure in failures[:25]:
        report.append("case %d (seed %d, template %s): mutations %s\n  %s\n  reproduce: VOLSNAP_DIFF_SEED=%d "
                      "VOLSNAP_DIFF_CASE=%d pytest %s  (then: %s)"
                      % (failure["index"], SEED, failure["template"], failure["mutations"],
                         "\n  ".join(failure["problems"]), SEED, failure["index"], __file__, failure.get("repro")))
    assert not failures, "%d disagreements with qemu:\n%s" % (len(failures), "\n".join(report))
    if not ONE_CASE:
        assert safe >= len(results) // 10, "too few cases judged safe (%d): the generator no longer exercises qemu" % safe
        # the time it took is printed above (the suite's budget is watched in make integration's slowest tests);
        # a test asserts behaviour, never a timing


if __name__ == "__main__":  # pragma: no cover - manual runs: python test_qemu_differential.py <case>...
    sys.exit(pytest.main([__file__, "-s", "-q"]))
