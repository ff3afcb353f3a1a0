"""volume_clone with the real qemu-img and qemu-io, through ansible-playbook."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from ansible_run import run_tasks

VOL_ID = "0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f"
VOL = f"volume-{VOL_ID}"
SNAP1 = "11111111-2222-4333-8444-555555555555"
SNAP2 = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
SNAP3 = "99999999-8888-4777-8666-555555555555"
NEW1 = "volume-5d2c8e1f-3a4b-4c6d-9e8f-7a6b5c4d3e2f"
NEW2 = "volume-6e3d9f20-4b5c-4d7e-8f90-8b7c6d5e4f30"
SIZE = 64 * 1024 * 1024
MIB = 1024 * 1024
PATTERN = {"A": "0xa1", "B": "0xb2", "C": "0xc3"}


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def must(*argv: str) -> str:
    proc = run(*argv)
    assert proc.returncode == 0, f"{argv}: {proc.stderr or proc.stdout}"
    return proc.stdout


def write_info(share: Path, info: Dict[str, str], vol: str = VOL) -> None:
    (share / f"{vol}.info").write_text(json.dumps(info, indent=1, sort_keys=True))


def snapshot(share: Path, vol: str, snap_id: str, info: Dict[str, str]) -> Path:
    """Take a Cinder RemoteFS snapshot offline: new overlay on the active file, .info updated."""
    active = share / info.get("active", vol)
    backing_fmt = "raw" if active.name == vol else "qcow2"
    new = share / f"{vol}.{snap_id}"
    must("qemu-img", "create", "-q", "-f", "qcow2", "-b", active.name, "-F", backing_fmt, str(new))
    info[snap_id] = new.name
    info["active"] = new.name
    write_info(share, info, vol)
    return new


def build_volume(share: Path, vol: str = VOL) -> Dict[str, str]:
    """raw base with pattern A, snapshot S1, pattern B, snapshot S2, pattern C in the active file."""
    base = share / vol
    must("qemu-img", "create", "-q", "-f", "raw", str(base), str(SIZE))
    os.chmod(base, 0o640)
    must("qemu-io", "-f", "raw", "-c", f"write -P {PATTERN['A']} 0 1M", str(base))
    info: Dict[str, str] = {}
    s1 = snapshot(share, vol, SNAP1, info)
    must("qemu-io", "-f", "qcow2", "-c", f"write -P {PATTERN['B']} 0 1M", str(s1))
    s2 = snapshot(share, vol, SNAP2, info)
    must("qemu-io", "-f", "qcow2", "-c", f"write -P {PATTERN['C']} 0 1M", str(s2))
    return info


def reads(path: Path, fmt: str, pattern: str) -> bool:
    return run("qemu-io", "-f", fmt, "-c", f"read -P {PATTERN[pattern]} 0 1M", str(path)).returncode == 0


def sizes(share: Path) -> Dict[str, int]:
    return {p.name: p.stat().st_size for p in share.iterdir()}


def snapshot_state(share: Path) -> Dict[str, object]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in share.iterdir()}


def clone_task(name: str, register: str, **args: object) -> Dict[str, object]:
    task: Dict[str, object] = {"name": name, "volsnap.openstack.volume_clone": args, "register": register}
    return task


def failing(task: Dict[str, object]) -> Dict[str, object]:
    task["ignore_errors"] = True
    return task


@pytest.fixture
def share(tmp_path: Path) -> Path:
    directory = tmp_path / "share"
    directory.mkdir()
    build_volume(directory)
    return directory


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_clone_each_snapshot(tmp_path: Path, share: Path, fmt: str) -> None:
    info_before = (share / f"{VOL}.info").read_text()
    chain_before = sizes(share)
    tasks = [
        clone_task("clone S1", "s1", volume_path=str(share / VOL), snapshot_id=SNAP1, dest=str(share / NEW1),
                   format=fmt),
        clone_task("clone S2", "s2", share=str(share), volume_id=VOL_ID, snapshot_id=SNAP2, dest=str(share / NEW2),
                   format=fmt),
        clone_task("clone S1 again", "again", volume_path=str(share / VOL), snapshot_id=SNAP1,
                   dest=str(share / NEW1), format=fmt),
    ]
    res = run_tasks(tmp_path, tasks, ["s1", "s2", "again"])
    assert res.rc == 0, res.output
    s1, s2, again = res["s1"], res["s2"], res["again"]

    assert s1["changed"] and s2["changed"] and not again["changed"]
    assert s1["source"] == str(share / VOL) and s2["source"] == str(share / f"{VOL}.{SNAP1}")
    assert s1["virtual_size"] == s2["virtual_size"] == again["virtual_size"] == SIZE
    assert s1["format"] == fmt and s1["snapshot_id"] == SNAP1 and s1["dest"] == str(share / NEW1)
    assert again["source"] == s1["source"]

    # exactly the point-in-time data of each snapshot
    assert reads(share / NEW1, fmt, "A") and not reads(share / NEW1, fmt, "B")
    assert reads(share / NEW2, fmt, "B") and not reads(share / NEW2, fmt, "A") and not reads(share / NEW2, fmt, "C")
    must("qemu-img", "compare", "-U", "-f", "raw", "-F", fmt, str(share / VOL), str(share / NEW1))
    must("qemu-img", "compare", "-U", "-f", "qcow2", "-F", fmt, str(share / f"{VOL}.{SNAP1}"), str(share / NEW2))

    for name in (NEW1, NEW2):
        dest = share / name
        qinfo = json.loads(must("qemu-img", "info", "-U", "-f", fmt, "--output=json", str(dest)))
        assert qinfo["format"] == fmt and qinfo["virtual-size"] == SIZE and "backing-filename" not in qinfo
        st = dest.stat()
        src = (share / VOL).stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (src.st_mode & 0o7777, src.st_uid, src.st_gid)
        # sparse: only the 1 MiB written is allocated (plus qcow2 metadata)
        assert st.st_blocks * 512 < 4 * MIB, st.st_blocks
        assert not (share / f".{name}.volsnap-tmp").exists()
        record = json.loads((share / f".{name}.volsnap-clone").read_text())
        assert record["volume_id"] == VOL_ID and record["format"] == fmt and record["virtual_size"] == SIZE
    assert json.loads((share / f".{NEW1}.volsnap-clone").read_text())["source"] == VOL

    # the source volume is untouched
    assert (share / f"{VOL}.info").read_text() == info_before
    assert {n: s for n, s in sizes(share).items() if n in chain_before} == chain_before

    # the qcow2 clone is readable by qcow2_chain_info as a safe, standalone volume
    check = run_tasks(tmp_path, [{"name": "chain", "volsnap.openstack.qcow2_chain_info": {
        "path": str(share / NEW1), "format": fmt}, "register": "chain"}], ["chain"])
    assert check.rc == 0, check.output
    assert check["chain"]["safe"] and check["chain"]["depth"] == 1


def test_check_mode_and_diff(tmp_path: Path, share: Path) -> None:
    before = snapshot_state(share)
    task = clone_task("clone S2", "plan", volume_path=str(share / VOL), snapshot_id=SNAP2, dest=str(share / NEW1),
                      format="qcow2")
    res = run_tasks(tmp_path, [task], ["plan"], check=True, diff=True)
    assert res.rc == 0, res.output
    plan = res["plan"]
    assert plan["changed"] is True
    assert snapshot_state(share) == before  # nothing created, not even the lock file
    argv = plan["command"]
    assert argv[1:] == ["convert", "-U", "-f", "qcow2", "-O", "qcow2", "-T", "writeback", "-t", "writeback",
                        str(share / f"{VOL}.{SNAP1}"), str(share / f".{NEW1}.volsnap-tmp")]
    assert any(" ".join(argv) in step for step in plan["plan"])
    assert plan["diff"]["before"] == {"exists": False}
    assert plan["diff"]["after"] == {"dest": str(share / NEW1), "format": "qcow2", "snapshot_id": SNAP2}
    assert plan["source"] == str(share / f"{VOL}.{SNAP1}") and plan["virtual_size"] == SIZE


def test_refusals(tmp_path: Path, share: Path) -> None:
    other = share / NEW2
    other.write_bytes(b"precious data")
    base = {"volume_path": str(share / VOL), "dest": str(share / NEW1)}
    tasks = [
        failing(clone_task("dest exists", "exists", volume_path=str(share / VOL), snapshot_id=SNAP1, dest=str(other))),
        failing(clone_task("dotdot id", "dotdot", snapshot_id="../x", **base)),
        failing(clone_task("path id", "pathid", snapshot_id=f"{SNAP1}/../../etc", **base)),
        failing(clone_task("unknown", "unknown", snapshot_id=SNAP3, **base)),
        failing(clone_task("bad volume id", "badvol", share=str(share), volume_id="../volume-x", snapshot_id=SNAP1,
                           dest=str(share / NEW1))),
        failing(clone_task("snapshot file as volume", "snapfile", volume_path=str(share / f"{VOL}.{SNAP1}"),
                           snapshot_id=SNAP1, dest=str(share / NEW1))),
        failing(clone_task("no dest dir", "nodir", snapshot_id=SNAP1, volume_path=str(share / VOL),
                           dest=str(share / "missing" / NEW1))),
        clone_task("clone S1", "ok", snapshot_id=SNAP1, **base),
        failing(clone_task("same dest other snapshot", "othersnap", snapshot_id=SNAP2, **base)),
        failing(clone_task("same dest other format", "otherfmt", snapshot_id=SNAP1, format="qcow2", **base)),
    ]
    names = ["exists", "dotdot", "pathid", "unknown", "badvol", "snapfile", "nodir", "ok", "othersnap", "otherfmt"]
    res = run_tasks(tmp_path, tasks, names)
    assert res.rc == 0, res.output
    for name in names:
        assert res[name].get("failed", False) is (name != "ok"), (name, res[name])
    assert "already exists" in res["exists"]["msg"] and "never overwritten" in res["exists"]["msg"]
    assert other.read_bytes() == b"precious data"
    assert not (share / f".{NEW2}.volsnap-clone").exists()
    for name in ("dotdot", "pathid"):
        assert "is not a Cinder id" in res[name]["msg"]
    assert "volume_id" in res["badvol"]["msg"] and "is not a Cinder id" in res["badvol"]["msg"]
    assert f"has no snapshot {SNAP3}" in res["unknown"]["msg"]
    assert "not a Cinder volume file" in res["snapfile"]["msg"]
    assert "does not exist" in res["nodir"]["msg"]
    for name in ("othersnap", "otherfmt"):
        assert "never overwritten" in res[name]["msg"]
    assert reads(share / NEW1, "raw", "A")
    assert not list(share.glob(".*volsnap-tmp"))


def test_unsafe_chains_are_refused(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    build_volume(share)
    # S1's file now backs onto a file outside the share
    must("qemu-img", "create", "-q", "-f", "raw", str(outside / "secret"), str(SIZE))
    must("qemu-img", "rebase", "-u", "-b", "../outside/secret", "-F", "raw", str(share / f"{VOL}.{SNAP1}"))
    # a second volume whose raw base a guest overwrote with a qcow2 header (OSSA 2014-033)
    vol2_id = "22222222-3333-4444-8555-666666666666"
    vol2 = f"volume-{vol2_id}"
    build_volume(share, vol2)
    evil = tmp_path / "evil.qcow2"
    must("qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(evil), "64M")
    with open(share / vol2, "r+b") as handle:
        handle.write(evil.read_bytes()[:65536])
    tasks = [
        failing(clone_task("outside", "outside", volume_path=str(share / VOL), snapshot_id=SNAP2,
                           dest=str(share / NEW1))),
        failing(clone_task("ossa", "ossa", volume_path=str(share / vol2), snapshot_id=SNAP1, dest=str(share / NEW2),
                           format="qcow2")),
    ]
    res = run_tasks(tmp_path, tasks, ["outside", "ossa"])
    assert res.rc == 0, res.output
    assert res["outside"]["failed"] and "unsafe" in res["outside"]["msg"]
    assert "backing_outside_share" in res["outside"]["msg"]
    assert res["ossa"]["failed"] and "format_mismatch" in res["ossa"]["msg"]
    assert not (share / NEW1).exists() and not (share / NEW2).exists()
    assert not list(share.glob(".*.volsnap-tmp")) and not list(share.glob(".*.volsnap-clone"))


@pytest.mark.parametrize("stale", ["partial", "partial_and_sidecar"])
def test_rerun_after_a_crash_mid_convert(tmp_path: Path, share: Path, stale: str) -> None:
    """A previous run died during qemu-img convert (and, in the second case, after writing the sidecar)."""
    tmp = share / f".{NEW1}.volsnap-tmp"
    # a half-written qcow2 output with the wrong data (pattern C) as a dead run might leave
    must("qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", str(share / f"{VOL}.{SNAP2}"), str(tmp))
    with open(tmp, "r+b") as handle:
        handle.truncate(tmp.stat().st_size // 2)
    if stale == "partial_and_sidecar":
        (share / f".{NEW1}.volsnap-clone").write_text(json.dumps({
            "volume_id": VOL_ID, "snapshot_id": SNAP2, "format": "qcow2", "inode": tmp.stat().st_ino}))
    task = clone_task("clone S2", "r", volume_path=str(share / VOL), snapshot_id=SNAP2, dest=str(share / NEW1),
                      format="qcow2")
    res = run_tasks(tmp_path, [task], ["r"])
    assert res.rc == 0, res.output
    assert res["r"]["changed"]
    assert not tmp.exists()
    assert reads(share / NEW1, "qcow2", "B") and not reads(share / NEW1, "qcow2", "C")
    must("qemu-img", "check", "-f", "qcow2", str(share / NEW1))
    must("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", str(share / f"{VOL}.{SNAP1}"), str(share / NEW1))
    record = json.loads((share / f".{NEW1}.volsnap-clone").read_text())
    assert record["inode"] == (share / NEW1).stat().st_ino and record["source"] == f"{VOL}.{SNAP1}"
    again = run_tasks(tmp_path, [task], ["r"])
    assert again.rc == 0 and again["r"]["changed"] is False, again.output
