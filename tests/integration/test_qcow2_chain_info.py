"""qcow2_chain_info against images made by the real qemu-img, a real libvirt domain, and ansible-playbook."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import uuid
from pathlib import Path
from typing import Dict, List

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.image_format import inspect_image
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg, cross_check
from ansible_run import run_tasks, subprocess_runner

VOL = "volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f"
SNAP1 = "11111111-2222-4333-8444-555555555555"
SNAP2 = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"


def qimg(*args: str) -> str:
    for _attempt in range(5):
        proc = subprocess.run(["qemu-img"] + list(args), capture_output=True, text=True, check=False)
        # LUKS creation benchmarks its key derivation with getrusage; on a loaded machine qemu
        # sometimes gives up with this message. It is about building the test image, so try again.
        if "Unable to get accurate CPU usage" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def qemu_info_chain(path: Path) -> List[Dict[str, object]]:
    return json.loads(qimg("info", "--backing-chain", "--output=json", "-U", str(path)))


def write_info(directory: Path, info: Dict[str, str]) -> None:
    (directory / f"{VOL}.info").write_text(json.dumps(info, indent=1, sort_keys=True))


def cinder_chain(directory: Path, base_fmt: str = "raw", compat: str = "1.1") -> Path:
    """A Cinder NFS volume with two snapshots, laid out as the RemoteFS driver does."""
    base = directory / VOL
    qimg("create", "-q", "-f", base_fmt, str(base), "64M")
    s1 = directory / f"{VOL}.{SNAP1}"
    s2 = directory / f"{VOL}.{SNAP2}"
    qimg("create", "-q", "-f", "qcow2", "-o", f"compat={compat}", "-b", VOL, "-F", base_fmt, str(s1))
    qimg("create", "-q", "-f", "qcow2", "-o", f"compat={compat}", "-b", s1.name, "-F", "qcow2", str(s2))
    write_info(directory, {"active": s2.name, SNAP1: s1.name, SNAP2: s2.name})
    return base


def strip_backing_format(path: Path) -> None:
    """Turn the backing-format header extension into an unknown one, as in files from qemu < 6.1.

    qemu-img 7 refuses to create an overlay without a backing format, but clouds still hold such files.
    """
    data = bytearray(path.read_bytes()[:65536])
    header_length = struct.unpack_from(">I", data, 100)[0]
    offset = header_length
    while True:
        ext_type, ext_len = struct.unpack_from(">II", data, offset)
        if ext_type == 0:
            raise AssertionError("no backing format extension found")
        if ext_type == 0xE2792ACA:
            struct.pack_into(">I", data, offset, 0x12345678)
            break
        offset += 8 + ((ext_len + 7) & ~7)
    with open(path, "r+b") as handle:
        handle.write(bytes(data[:offset + 4]))


@pytest.mark.parametrize("compat,version", [("0.10", 2), ("1.1", 3)])
def test_cinder_chain_matches_qemu_img(tmp_path: Path, compat: str, version: int) -> None:
    base = cinder_chain(tmp_path, compat=compat)
    report = inspect_chain(str(base))
    qemu = qemu_info_chain(tmp_path / f"{VOL}.{SNAP2}")
    assert report.safe, report.problems
    assert report.followed_info
    assert report.active == f"{VOL}.{SNAP2}"
    assert [layer.image.filename for layer in report.layers] == [Path(q["filename"]).name for q in qemu]
    for layer, answer in zip(report.layers, qemu):
        assert layer.image.format == answer["format"]
        assert layer.image.virtual_size == answer["virtual-size"]
        assert layer.image.backing_file == answer.get("backing-filename")
        assert layer.image.actual_size == answer["actual-size"]
    assert [layer.image.qcow2_version for layer in report.layers] == [version, version, None]
    assert [layer.snapshot_id for layer in report.layers] == [SNAP2, SNAP1, None]
    assert [layer.data_of_snapshot_id for layer in report.layers] == [None, SNAP2, SNAP1]
    assert report.file_format == {f"{VOL}.{SNAP2}": "qcow2", f"{VOL}.{SNAP1}": "qcow2", VOL: "raw"}
    assert cross_check(report, QemuImg(subprocess_runner)) and report.safe


def test_missing_backing_format_is_a_warning(tmp_path: Path) -> None:
    cinder_chain(tmp_path)
    strip_backing_format(tmp_path / f"{VOL}.{SNAP1}")
    report = inspect_chain(str(tmp_path / VOL))
    codes = {p.code: p.severity for p in report.problems}
    assert codes == {"backing_format_unspecified": "warning"}
    assert report.layers[1].image.backing_format is None
    assert report.layers[2].declared_format is None
    assert report.safe


def test_ossa_2014_033_raw_volume_with_qcow2_header(tmp_path: Path) -> None:
    """A guest wrote a qcow2 header (backing file /etc/shadow) into its raw volume."""
    cinder_chain(tmp_path)
    evil = tmp_path / "evil.qcow2"
    qimg("create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(evil), "64M")
    with open(tmp_path / VOL, "r+b") as handle:
        handle.write(evil.read_bytes()[:65536])
    evil.unlink()
    report = inspect_chain(str(tmp_path / VOL))
    assert not report.safe
    assert [p.code for p in report.errors] == ["format_mismatch"]
    assert report.layers[-1].image.format == "qcow2" and report.layers[-1].declared_format == "raw"
    # the planted backing file is never followed
    assert all(layer.image.path != "/etc/hostname" for layer in report.layers)


def test_external_data_file_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "df.qcow2"
    qimg("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", str(image), "16M")
    info = inspect_image(str(image))
    assert info.data_file == str(tmp_path / "data.raw")
    assert "external_data_file" in [f.code for f in info.findings]
    report = inspect_chain(str(image))
    assert not report.safe
    # qemu-img is never run on the unsafe layer
    answers = cross_check(report, QemuImg(subprocess_runner))
    assert answers == [None]


def test_extended_l2_and_zstd(tmp_path: Path) -> None:
    image = tmp_path / "x.qcow2"
    qimg("create", "-q", "-f", "qcow2", "-o", "extended_l2=on,compression_type=zstd,cluster_size=128k",
         str(image), "32M")
    report = inspect_chain(str(image))
    layer = report.layers[0].image
    assert report.safe
    assert layer.extended_l2 and layer.compression_type == "zstd" and layer.cluster_size == 131072
    assert set(layer.incompatible_features) == {"extended_l2", "compression_type"}
    cross_check(report, QemuImg(subprocess_runner))
    assert report.safe, report.problems


SECRET = ["--object", "secret,id=sec0,data=passphrase"]


@pytest.mark.parametrize("fmt,create,expected", [
    ("luks", ["-f", "luks"] + SECRET + ["-o", "key-secret=sec0"], {"format": "luks", "encrypted": True}),
    ("qcow2", ["-f", "qcow2"] + SECRET + ["-o", "encrypt.format=luks,encrypt.key-secret=sec0"],
     {"format": "qcow2", "encrypted": True, "encryption_format": "luks"}),
    ("vmdk", ["-f", "vmdk"], {"format": "vmdk"}),
    ("vmdk", ["-f", "vmdk", "-o", "subformat=streamOptimized"], {"format": "vmdk"}),
    ("vhdx", ["-f", "vhdx"], {"format": "vhdx"}),
    ("vpc", ["-f", "vpc"], {"format": "vhd"}),
    ("vdi", ["-f", "vdi"], {"format": "vdi"}),
    ("raw", ["-f", "raw"], {"format": "raw"}),
])
def test_formats_match_qemu_img(tmp_path: Path, fmt: str, create: List[str], expected: Dict[str, object]) -> None:
    image = tmp_path / f"image.{fmt}"
    qimg("create", "-q", *create, str(image), "48M")
    report = inspect_chain(str(image))
    layer = report.layers[0].image
    for key, value in expected.items():
        assert getattr(layer, key) == value, key
    assert report.safe, report.problems
    answer = json.loads(qimg("info", "-U", "-f", fmt, "--output=json", str(image)))
    assert layer.virtual_size == answer["virtual-size"]
    if fmt != "luks":  # qemu-img cannot open a LUKS volume without its key; the native engine needs none
        answers = cross_check(report, QemuImg(subprocess_runner))
        assert answers[0]["format"] == fmt and report.safe, report.problems


def test_vmdk_flat_descriptor_points_elsewhere(tmp_path: Path) -> None:
    image = tmp_path / "flat.vmdk"
    qimg("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(image), "16M")
    report = inspect_chain(str(image))
    codes = {p.code for p in report.errors}
    assert {"vmdk_external_extent", "vmdk_unsupported_type"} <= codes
    assert report.layers[0].image.references == ["flat-flat.vmdk"]


def test_qed_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "x.qed"
    qimg("create", "-q", "-f", "qed", str(image), "16M")
    report = inspect_chain(str(image))
    assert report.layers[0].image.format == "qed"
    assert [p.code for p in report.errors] == ["format_not_allowed"]


def test_backing_outside_share_and_absolute(tmp_path: Path) -> None:
    share = tmp_path / "share"
    other = tmp_path / "other"
    share.mkdir()
    other.mkdir()
    qimg("create", "-q", "-f", "raw", str(other / "secret"), "16M")
    qimg("create", "-q", "-f", "raw", str(share / "base"), "16M")
    qimg("create", "-q", "-f", "qcow2", "-b", str(other / "secret"), "-F", "raw", str(share / "out.qcow2"))
    qimg("create", "-q", "-f", "qcow2", "-b", str(share / "base"), "-F", "raw", str(share / "abs.qcow2"))
    qimg("create", "-q", "-f", "qcow2", "-u", "-b", "../other/secret", "-F", "raw", str(share / "rel.qcow2"), "16M")
    out = inspect_chain(str(share / "out.qcow2"))
    assert [p.code for p in out.problems] == ["backing_outside_share"] and len(out.layers) == 1
    rel = inspect_chain(str(share / "rel.qcow2"))
    assert [p.code for p in rel.errors] == ["backing_outside_share"]
    absolute = inspect_chain(str(share / "abs.qcow2"))
    assert absolute.safe and [p.code for p in absolute.problems] == ["absolute_backing_path"]
    assert len(absolute.layers) == 2


def test_missing_backing_and_loop(tmp_path: Path) -> None:
    qimg("create", "-q", "-f", "raw", str(tmp_path / "base"), "16M")
    qimg("create", "-q", "-f", "qcow2", "-b", "base", "-F", "raw", str(tmp_path / "top"))
    (tmp_path / "base").unlink()
    assert [p.code for p in inspect_chain(str(tmp_path / "top")).errors] == ["missing_backing_file"]
    qimg("create", "-q", "-f", "qcow2", str(tmp_path / "a"), "16M")
    qimg("create", "-q", "-f", "qcow2", "-b", "a", "-F", "qcow2", str(tmp_path / "b"))
    qimg("rebase", "-u", "-b", "b", "-F", "qcow2", str(tmp_path / "a"))
    report = inspect_chain(str(tmp_path / "b"))
    assert [p.code for p in report.errors] == ["backing_loop"] and len(report.layers) == 2


def test_info_disagreeing_with_chain(tmp_path: Path) -> None:
    cinder_chain(tmp_path)
    write_info(tmp_path, {"active": f"{VOL}.{SNAP2}", SNAP2: f"{VOL}.{SNAP2}"})
    stray = tmp_path / f"{VOL}.{uuid.uuid4()}"
    shutil.copy(tmp_path / f"{VOL}.{SNAP1}", stray)
    report = inspect_chain(str(tmp_path / VOL))
    codes = {p.code: p.severity for p in report.problems}
    assert codes == {"snapshot_file_not_in_info": "error", "orphan_snapshot_file": "warning"}


# ---------------------------------------------------------------- libvirt


def test_domain_chain_after_external_snapshots(share: Path, domain_factory, lab, tmp_path: Path) -> None:
    volume_id = VOL[len("volume-"):]
    base = share / VOL
    qimg("create", "-q", "-f", "qcow2", str(base), "64M")
    base.chmod(0o666)
    dom = domain_factory("chaininfo", [{"path": str(base), "format": "qcow2", "target": "vdb", "serial": volume_id}])
    active, info = base, {}
    for snap in (SNAP1, SNAP2):
        overlay = share / f"{VOL}.{snap}"
        qimg("create", "-q", "-f", "qcow2", "-b", active.name, "-F", "qcow2", str(overlay))
        overlay.chmod(0o666)
        lab.external_snapshot(dom, {"vdb": str(overlay)})
        info.update({"active": overlay.name, snap: overlay.name})
        write_info(share, info)
        active = overlay
    assert [Path(p).name for p, _fmt in lab.disk_chain(dom, "vdb")] == [f"{VOL}.{SNAP2}", f"{VOL}.{SNAP1}", VOL]

    result = run_tasks(tmp_path, [
        {"name": "by serial", "volsnap.openstack.qcow2_chain_info": {"domain": dom.name(), "disk": volume_id},
         "register": "by_serial"},
        {"name": "by target, cross-checked", "volsnap.openstack.qcow2_chain_info": {
            "domain": dom.name(), "disk": "vdb", "engine": "qemu-img"}, "register": "by_target"},
        {"name": "no such disk", "volsnap.openstack.qcow2_chain_info": {"domain": dom.name(), "disk": "vdz"},
         "register": "no_disk", "ignore_errors": True},
    ], ["by_serial", "by_target", "no_disk"])
    assert result.rc == 0, result.output
    for name in ("by_serial", "by_target"):
        res = result[name]
        assert res["changed"] is False and res["safe"] is True, res["problems"]
        assert [layer["filename"] for layer in res["chain"]] == [f"{VOL}.{SNAP2}", f"{VOL}.{SNAP1}", VOL]
        assert res["file_format"] == {f"{VOL}.{SNAP2}": "qcow2", f"{VOL}.{SNAP1}": "qcow2", VOL: "qcow2"}
        assert [layer["snapshot_id"] for layer in res["chain"]] == [SNAP2, SNAP1, None]
        assert res["domain"]["serial"] == volume_id and res["domain"]["target"] == "vdb"
    assert all(answer["format"] == "qcow2" for answer in result["by_target"]["engine_results"])
    assert result["no_disk"]["failed"] is True
    assert "no disk with target dev or serial 'vdz'" in result["no_disk"]["msg"]


# ---------------------------------------------------------------- ansible-playbook


def test_playbook_check_mode_and_unsafe_failure(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    cinder_chain(share)
    qimg("create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(share / "evil.qcow2"), "16M")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in share.iterdir())
    tasks = [
        {"name": "chain", "volsnap.openstack.qcow2_chain_info": {"path": str(share / VOL)}, "register": "chain"},
        {"name": "unsafe", "volsnap.openstack.qcow2_chain_info": {"path": str(share / "evil.qcow2")},
         "register": "unsafe", "ignore_errors": True},
        {"name": "unsafe, inspected", "volsnap.openstack.qcow2_chain_info": {
            "path": str(share / "evil.qcow2"), "fail_on_unsafe": False}, "register": "inspected"},
        {"name": "missing", "volsnap.openstack.qcow2_chain_info": {"path": str(share / "nope")},
         "register": "missing", "ignore_errors": True},
        {"name": "bad options", "volsnap.openstack.qcow2_chain_info": {"path": str(share / VOL), "domain": "x"},
         "register": "bad", "ignore_errors": True},
    ]
    for check in (False, True):
        result = run_tasks(tmp_path / f"run-{check}", tasks, ["chain", "unsafe", "inspected", "missing", "bad"],
                           check=check)
        assert result.rc == 0, result.output
        chain = result["chain"]
        assert chain["changed"] is False and chain["safe"] is True and chain["depth"] == 3
        assert chain["active"] == f"{VOL}.{SNAP2}"
        assert chain["snapshots"] == {SNAP1: f"{VOL}.{SNAP1}", SNAP2: f"{VOL}.{SNAP2}"}
        unsafe = result["unsafe"]
        assert unsafe["failed"] is True and "backing_outside_share" in unsafe["msg"]
        assert "fail_on_unsafe=false" in unsafe["msg"] and unsafe["safe"] is False
        inspected = result["inspected"]
        assert inspected.get("failed", False) is False and inspected["safe"] is False
        assert [p["code"] for p in inspected["problems"]] == ["backing_outside_share"]
        assert result["missing"]["failed"] is True and "No such file" in result["missing"]["msg"]
        assert result["bad"]["failed"] is True and "mutually exclusive" in result["bad"]["msg"]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in share.iterdir()) == before
