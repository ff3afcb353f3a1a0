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
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest

from ansible_run import run_tasks
from openstack_helpers import unique

MODULE = "volsnap.openstack.nfs_share_audit"


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def audit_then_clean(workdir: Path, audit: Dict[str, Any], clean: Dict[str, Any], mine: List[str],
                     openstack_lab: Any) -> Any:
    """One ansible-playbook run: the audit (registered ``found``), the cleanup in check mode with diff
    (``checked``), the cleanup (``done``) and the same cleanup again (``again``); every task gets ``mine`` (the names
    or volume ids this test may clean up: the lab's share is shared with other runs)."""
    tasks = [
        {"name": "audit", MODULE: audit, "register": "found"},
        {"name": "check", MODULE: clean, "register": "checked", "check_mode": True, "diff": True},
        {"name": "clean", MODULE: clean, "register": "done"},
        {"name": "again", MODULE: clean, "register": "again"},
    ]
    for task in tasks:
        task["vars"] = {"mine": mine}
    res = run_tasks(workdir, tasks, ["found", "checked", "done", "again"], python=sys.executable,
                    env_extra=openstack_lab.env())
    assert res.rc == 0, res.output[-6000:]
    return res


def classes(result: Dict[str, Any]) -> Dict[str, str]:
    return {f["name"]: f["class"] for f in result["files"]}


def cinder_layout(share: Path, qemu_img: str) -> List[str]:
    """volume-<id> raw, snapshots s1 then s2 (two overlays), .info as Cinder writes it; returns the names."""
    vid, s1, s2 = (str(uuid.uuid4()) for _n in range(3))
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
    tasks = [{"name": "audit", MODULE: {"share": str(share)}, "register": "result"},
             {"name": "clean", MODULE: {"share": str(share), "state": "cleaned", "min_age": 0}, "register": "cleaned",
              "diff": True}]
    res = run_tasks(tmp_path, tasks, ["result", "cleaned"])
    assert res.rc == 0, res.output[-4000:]
    result, cleaned = res["result"], res["cleaned"]
    assert result["cleanup_candidates"] == [] and result["summary"][-1] == "nothing to clean"
    assert sorted(classes(result).values()) == ["info", "snapshot_overlay", "snapshot_overlay", "volume"]
    [volume] = result["volumes"]
    assert volume["chain_safe"] is True and volume["info_consistent"] is True and len(volume["chain"]) == 3
    assert cleaned["changed"] is False and cleaned["removed"] == []
    assert sorted(os.listdir(share)) == names


@pytest.fixture
def nfs_volume(openstack_lab: Any) -> Any:
    conn = openstack_lab.connection()
    volume = conn.block_storage.create_volume(size=1, volume_type=openstack_lab.nfs_volume_type, name=unique("audit"))
    try:
        yield conn.block_storage.wait_for_status(volume, "available", failures=["error"], interval=0.25, wait=180)
    finally:
        conn.block_storage.delete_volume(volume, ignore_missing=True)
        conn.block_storage.wait_for_delete(volume, interval=0.25, wait=180)


def test_lab_nfs_share_against_cinder_and_cleanup(openstack_lab: Any, nfs_volume: Any, qemu_img: str,
                                                  tmp_path: Path) -> None:
    share = Path(openstack_lab.nfs_mount)
    vol = f"volume-{nfs_volume.id}"
    assert (share / vol).is_file(), f"Cinder's NfsDriver did not create {vol} in {share}"
    base = {"share": str(share), "cinder_host": openstack_lab.nfs_cinder_pool, "cloud": openstack_lab.cloud}

    orphan = f"{vol}.{uuid.uuid4()}"
    stale_lock = f".volsnap-nfs-{uuid.uuid4()}.lock"
    temp = f".{vol}.info.{uuid.uuid4().hex[:16]}.volsnap-tmp"
    unknown = f"volume-{uuid.uuid4()}"
    busy = str(uuid.uuid4())
    held_lock = f".volsnap-nfs-{busy}.lock"
    busy_temp = f".volume-{busy}.info.{uuid.uuid4().hex[:16]}.volsnap-tmp"
    link = f"volume-{uuid.uuid4()}.{uuid.uuid4()}"
    planted = [orphan, stale_lock, temp, unknown, held_lock, busy_temp, link]
    leaks = sorted([orphan, stale_lock, temp])
    lock = f".volsnap-nfs-{nfs_volume.id}.lock"
    holder = None
    try:
        # a run holding a volume's lock (a POSIX record lock, as the collection and Cinder take it), with its temporary
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(share / held_lock)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        (share / busy_temp).write_text("{}")
        os.symlink("/etc/passwd", share / link)  # never followed, never removed
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", vol, "-F", "raw", str(share / orphan)],
                       check=True)
        (share / stale_lock).write_text("")
        (share / temp).write_text("{}")
        subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(share / unknown), "1M"], check=True)
        # the share is shared with other runs: the cleanups are restricted to this test's files
        only = "{{ found.cleanup_candidates | selectattr('name', 'in', mine) | list }}"
        clean = dict(base, state="cleaned", only=only, min_age=0)
        res = audit_then_clean(tmp_path / "first", dict(base, min_age=0), clean, planted, openstack_lab)
        found = res["found"]
        got = classes(found)
        assert (got[vol], got[orphan], got[stale_lock], got[temp], got[unknown]) == (
            "volume", "orphan_overlay", "lock_stale", "stale_temporary", "volume")
        assert (got[held_lock], got[busy_temp], got[link]) == ("lock_held", "temporary_in_use", "foreign")
        assert found["cinder"]["volumes_on_backend"] >= 1
        findings = {(f["code"], f.get("volume_id")) for f in found["cinder"]["findings"]}
        assert ("volume_unknown_to_cinder", unknown[len("volume-"):]) in findings
        # Cinder's own volume agrees with its file; the planted overlay is named after a snapshot Cinder lacks
        assert [f for f in findings if f[1] == nfs_volume.id] == [("snapshot_unknown_to_cinder", nfs_volume.id)]
        [unknown_snap] = [f for f in found["cinder"]["findings"] if f.get("volume_id") == nfs_volume.id]
        assert (unknown_snap["snapshot_id"], unknown_snap["file"]) == (orphan[len(vol) + 1:], orphan)
        mine = [c["name"] for c in found["cleanup_candidates"] if c["name"] in planted]
        assert sorted(mine) == leaks  # never the volume file, known or not

        assert res["checked"]["changed"] is True
        assert sorted(os.path.basename(p) for p in res["checked"]["removed"]) == leaks
        assert f"-{orphan}" in res.output  # the diff names what would go
        assert sorted(os.path.basename(p) for p in res["done"]["removed"]) == leaks  # check mode removed nothing
        assert not any((share / name).exists() for name in leaks)
        assert (share / vol).is_file() and (share / unknown).is_file()
        assert res["again"]["changed"] is False and res["again"]["removed"] == [] and len(res["again"]["kept"]) == 3
        assert (share / link).is_symlink() and (share / held_lock).exists() and (share / busy_temp).exists()
    finally:
        if holder is not None:
            holder.communicate("")
        for name in planted:
            if (share / name).is_symlink() or (share / name).exists():
                (share / name).unlink()

    # Cinder deletes its volume: its files go, the lock file the cleanup took stays behind, a stale lock
    conn = openstack_lab.connection()
    conn.block_storage.delete_volume(nfs_volume)
    conn.block_storage.wait_for_delete(nfs_volume, interval=0.25, wait=180)
    only = "{{ after.cleanup_candidates | selectattr('name', 'equalto', '%s') | list }}" % lock
    tasks = [{"name": "audit", MODULE: base, "register": "after"},
             {"name": "clean", MODULE: dict(base, state="cleaned", only=only), "register": "last"}]
    res = run_tasks(tmp_path / "after", tasks, ["after", "last"], python=sys.executable, env_extra=openstack_lab.env())
    assert res.rc == 0, res.output[-6000:]
    left = {f["name"]: f["class"] for f in res["after"]["files"] if f["volume_id"] == nfs_volume.id}
    assert left == {lock: "lock_stale"}
    assert [os.path.basename(p) for p in res["last"]["removed"]] == [lock] and not (share / lock).exists()
