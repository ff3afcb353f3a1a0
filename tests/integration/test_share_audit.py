"""nfs_share_audit against real files and the lab's real Cinder NFS backend.

* a healthy share made with qemu-img (a volume with two snapshots as Cinder lays them out) reports nothing to
  clean, and state=cleaned changes nothing;
* the lab's NFS share, where Cinder's NfsDriver created a volume of type nfs: the audit classifies Cinder's file and
  finds no difference with Cinder for it; leaks planted beside it (an orphan overlay made by qemu-img, a stale lock,
  a stale temporary file, a volume file Cinder does not know) are classified and compared; a cleanup restricted to
  the planted candidates (``only``: the share is shared with other runs) lists them in check mode and diff, removes
  exactly them, and a rerun changes nothing; once Cinder deletes its volume, the audit no longer reports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest

from ansible_run import run_tasks
from openstack_helpers import ModuleRunner, unique

MODULE = "volsnap.openstack.nfs_share_audit"


def audit(tmp_path: Path, name: str, args: Dict[str, Any], check: bool = False, diff: bool = False) -> Dict[str, Any]:
    work = tmp_path / name
    work.mkdir()
    res = run_tasks(work, [{"name": name, MODULE: args, "register": "out", "ignore_errors": True}], ["out"],
                    check=check, diff=diff)
    assert "out" in res.results, res.output[-4000:]
    return res["out"]


def classes(result: Dict[str, Any]) -> Dict[str, str]:
    return {f["name"]: f["class"] for f in result["files"]}


def cinder_layout(share: Path, qemu_img: str) -> List[str]:
    """volume-<id> raw, snapshots s1 then s2 (two overlays), .info as Cinder writes it; returns the names."""
    vid, s1, s2 = (str(uuid.uuid4()) for _ in range(3))
    vol = f"volume-{vid}"
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(share / vol), "64M"], check=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", vol, "-F", "raw", str(share / f"{vol}.{s1}")],
                   check=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", f"{vol}.{s1}", "-F", "qcow2",
                    str(share / f"{vol}.{s2}")], check=True)
    (share / f"{vol}.info").write_text(json.dumps({"active": f"{vol}.{s2}", s1: f"{vol}.{s1}", s2: f"{vol}.{s2}"},
                                                  indent=1, sort_keys=True))
    return sorted([vol, f"{vol}.{s1}", f"{vol}.{s2}", f"{vol}.info"])


def test_healthy_share_reports_nothing_and_cleanup_changes_nothing(share: Path, qemu_img: str,
                                                                   tmp_path: Path) -> None:
    names = cinder_layout(share, qemu_img)
    result = audit(tmp_path, "audit", {"share": str(share)})
    assert not result.get("failed"), result
    assert result["cleanup_candidates"] == [] and result["summary"][-1] == "nothing to clean"
    assert sorted(classes(result).values()) == ["info", "snapshot_overlay", "snapshot_overlay", "volume"]
    [volume] = result["volumes"]
    assert volume["chain_safe"] is True and volume["info_consistent"] is True and len(volume["chain"]) == 3
    cleaned = audit(tmp_path, "clean", {"share": str(share), "state": "cleaned", "min_age": 0}, diff=True)
    assert cleaned["changed"] is False and cleaned["removed"] == []
    assert sorted(os.listdir(share)) == names


@pytest.fixture
def nfs_volume(openstack_lab: Any) -> Any:
    conn = openstack_lab.connection()
    volume = conn.block_storage.create_volume(size=1, volume_type=openstack_lab.nfs_volume_type, name=unique("audit"))
    try:
        yield conn.block_storage.wait_for_status(volume, "available", failures=["error"], interval=1, wait=180)
    finally:
        conn.block_storage.delete_volume(volume, ignore_missing=True)
        conn.block_storage.wait_for_delete(volume, interval=1, wait=180)


def test_lab_nfs_share_against_cinder_and_cleanup(openstack_lab: Any, nfs_volume: Any, qemu_img: str,
                                                  tmp_path: Path) -> None:
    share = Path(openstack_lab.nfs_mount)
    vol = f"volume-{nfs_volume.id}"
    assert (share / vol).is_file(), f"Cinder's NfsDriver did not create {vol} in {share}"
    run = ModuleRunner(tmp_path / "runs", openstack_lab)
    (tmp_path / "runs").mkdir()
    base = {"share": str(share), "cinder_host": openstack_lab.nfs_cinder_pool}

    orphan = f"{vol}.{uuid.uuid4()}"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", vol, "-F", "raw", str(share / orphan)], check=True)
    gone = str(uuid.uuid4())
    stale_lock = f".volsnap-nfs-{gone}.lock"
    temp = f".{vol}.info.{uuid.uuid4().hex[:16]}.volsnap-tmp"
    unknown = f"volume-{uuid.uuid4()}"
    planted = [orphan, stale_lock, temp, unknown]
    try:
        (share / stale_lock).write_text("")
        (share / temp).write_text("{}")
        subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(share / unknown), "1M"], check=True)
        found = run("nfs_share_audit", dict(base, min_age=0))
        assert not found.get("failed"), found.get("msg")
        got = classes(found)
        assert got[vol] == "volume" and found["cinder"]["volumes_on_backend"] >= 1
        assert not [f for f in found["cinder"]["findings"] if f.get("volume_id") == nfs_volume.id]
        assert (got[orphan], got[stale_lock], got[temp], got[unknown]) == (
            "orphan_overlay", "lock_stale", "stale_temporary", "volume")
        codes = {(f["code"], f.get("volume_id")) for f in found["cinder"]["findings"]}
        assert ("volume_unknown_to_cinder", unknown[len("volume-"):]) in codes
        mine = [c for c in found["cleanup_candidates"] if c["name"] in planted]
        assert sorted(c["name"] for c in mine) == sorted([orphan, stale_lock, temp])  # never the volume file

        checked = run("nfs_share_audit", dict(base, state="cleaned", only=mine, min_age=0), check=True, diff=True)
        assert checked["changed"] is True
        assert sorted(os.path.basename(p) for p in checked["removed"]) == sorted([orphan, stale_lock, temp])
        assert all((share / name).exists() for name in planted)
        assert f"-{orphan}" in checked["_output"] or orphan in checked["_output"]

        done = run("nfs_share_audit", dict(base, state="cleaned", only=mine, min_age=0))
        assert done["changed"] is True, done.get("msg")
        assert sorted(os.path.basename(p) for p in done["removed"]) == sorted([orphan, stale_lock, temp])
        assert not any((share / name).exists() for name in (orphan, stale_lock, temp))
        assert (share / vol).is_file() and (share / unknown).is_file()

        again = run("nfs_share_audit", dict(base, state="cleaned", only=mine, min_age=0))
        assert again["changed"] is False and again["removed"] == []
        assert len(again["kept"]) == 3
    finally:
        for name in planted:
            if (share / name).exists():
                (share / name).unlink()
    conn = openstack_lab.connection()
    conn.block_storage.delete_volume(nfs_volume)
    conn.block_storage.wait_for_delete(nfs_volume, interval=1, wait=180)
    after = run("nfs_share_audit", base)
    assert not [f for f in after["files"] if f["volume_id"] == nfs_volume.id and f["class"] != "lock_stale"]
    # the cleanup took the volume's lock: its lock file outlived the volume and is now a stale lock to clean
    lock = f".volsnap-nfs-{nfs_volume.id}.lock"
    assert classes(after)[lock] == "lock_stale"
    [cand] = [c for c in after["cleanup_candidates"] if c["name"] == lock]
    last = run("nfs_share_audit", dict(base, state="cleaned", only=[cand]))
    assert [os.path.basename(p) for p in last["removed"]] == [lock] and not (share / lock).exists()
