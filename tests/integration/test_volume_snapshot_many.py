"""volume_snapshot with ``volumes`` (many independent volumes in one task) on real qemu-img, qemu-io and libvirtd,
through ansible-playbook: create, rerun, check mode, a partial failure and its convergence, delete; one volume
online (a running domain of the lab) in the same list as offline ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import libvirt

from ansible_run import run_tasks

MIB = 1024 * 1024


def new_volumes(share: Path, count: int) -> List[Tuple[str, str]]:
    """``count`` raw 16 MiB volumes, each with pattern 0x40+i written at 1 MiB; [(volume id, snapshot id)]."""
    made = []
    for index in range(count):
        volume_id, snap_id = str(uuid.uuid4()), str(uuid.uuid4())
        path = share / f"volume-{volume_id}"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "16M"], check=True)
        os.chmod(path, 0o666)
        io = subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P {0x40 + index} {MIB} {MIB}", str(path)],
                            capture_output=True, text=True, check=False)
        assert io.returncode == 0, io.stderr
        made.append((volume_id, snap_id))
    return made


def reads(path: Path, fmt: str, pattern: int) -> bool:
    proc = subprocess.run(["qemu-io", "-U", "-r", "-f", fmt, "-c", f"read -P {pattern} {MIB} {MIB}", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "read " in proc.stdout, proc.stdout + proc.stderr
    return "Pattern verification failed" not in proc.stdout


def listing(share: Path) -> Dict[str, Tuple[int, int]]:
    return {p.name: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in share.iterdir()}


def info(share: Path, volume_id: str) -> Dict[str, str]:
    return json.loads((share / f"volume-{volume_id}.info").read_text())


def task(name: str, register: str, **args) -> dict:
    return {"name": name, "volsnap.openstack.volume_snapshot": args, "register": register}


def test_many_volumes_check_create_partial_failure_rerun_delete(share: Path, tmp_path: Path) -> None:
    vols = new_volumes(share, 5)
    items = [{"volume_id": v, "snapshot_id": s} for v, s in vols[:4]]
    items.append({"volume_path": str(share / f"volume-{vols[4][0]}"), "snapshot_id": vols[4][1]})
    args = {"share": str(share), "volumes": items, "parallel": 3}

    # check mode (with diff): every volume planned, one diff per volume, nothing on the share changes
    before, share_mtime = listing(share), share.stat().st_mtime_ns
    checked = run_tasks(tmp_path / "check", [dict(task("check", "checked", **args), check_mode=True, diff=True)],
                        ["checked"])
    assert checked.rc == 0, checked.output
    result = checked["checked"]
    assert result["changed"] is True and result["failed_volumes"] == []
    assert [v["volume_path"] for v in result["volumes"]] == [str(share / f"volume-{v}") for v, _s in vols]
    assert all(v["changed"] and v["plan"] and v["operation"] == "create" for v in result["volumes"])
    assert [d["before_header"] for d in result["diff"]] == [str(share / f"volume-{v}.info") for v, _s in vols]
    assert all('"active"' in d["after"] and d["before"] == "" for d in result["diff"])
    assert listing(share) == before and share.stat().st_mtime_ns == share_mtime

    # one volume made to fail: its .info file is a link planted by someone else (never followed)
    victim_id, victim_snap = vols[2]
    target = tmp_path / "not-an-info-file"
    target.write_text("{}")
    (share / f"volume-{victim_id}.info").symlink_to(target)
    victim = str(share / f"volume-{victim_id}")
    tasks = [
        dict(task("create", "created", **args), ignore_errors=True),
        dict(task("create again, the link still there", "again", **dict(args, return_chain=False)),
             ignore_errors=True),
        {"name": "remove the link", "ansible.builtin.file": {"path": f"{victim}.info", "state": "absent"}},
        task("create after the fix", "fixed", **args),
        task("converged", "converged", **dict(args, return_chain=False)),
        task("one volume without its chain", "single", share=str(share), volume_id=vols[0][0],
             snapshot_id=vols[0][1], return_chain=False),
        task("delete every snapshot", "deleted", **dict(args, state="absent")),
        task("deleted again", "deleted_again", **dict(args, state="absent")),
    ]
    run = run_tasks(tmp_path / "run", tasks, ["created", "again", "fixed", "converged", "single", "deleted",
                                              "deleted_again"], diff=True)
    created, again = run["created"], run["again"]
    assert created["failed"] is True and created["failed_volumes"] == [victim], run.output
    assert created["msg"].startswith(f"1 of 5 volumes failed: {victim}. The 4 other volumes succeeded and are "
                                     "committed."), created["msg"]
    assert "run the same task again" in created["msg"]
    assert created["changed"] is True
    failed_item = created["volumes"][2]
    assert failed_item["failed"] is True and failed_item["volume_path"] == victim and failed_item["msg"]
    assert not (share / f"volume-{victim_id}.{victim_snap}").exists()
    assert target.read_text() == "{}"  # the link was never written through
    for index, (volume_id, snap_id) in enumerate(vols):
        if index == 2:
            continue
        item = created["volumes"][index]
        overlay = f"volume-{volume_id}.{snap_id}"
        assert item["changed"] is True and not item.get("failed") and item["mode"] == "offline"
        assert item["info"] == {"active": overlay, snap_id: overlay}
        assert item["chain"]["safe"] is True and item["active"] == overlay
    assert again["failed"] is True and again["failed_volumes"] == [victim] and again["changed"] is False
    # return_chain=false: no chain in any item, also in a failed result; the rest of each item is there
    assert not [v for v in again["volumes"] if "chain" in v] and again["volumes"][0]["info"]

    fixed = run["fixed"]
    assert fixed["changed"] is True and fixed["failed_volumes"] == [], run.output
    assert [v["changed"] for v in fixed["volumes"]] == [False, False, True, False, False]
    assert [d["before_header"] for d in fixed["diff"]] == [f"{victim}.info"]
    assert fixed["volumes"][2]["info"] == {"active": f"volume-{victim_id}.{victim_snap}",
                                           victim_snap: f"volume-{victim_id}.{victim_snap}"}
    assert run["converged"]["changed"] is False and not any(v["changed"] for v in run["converged"]["volumes"])
    assert not [v for v in run["converged"]["volumes"] if "chain" in v] and "chain" in fixed["volumes"][0]
    assert "chain" not in run["single"] and run["single"]["changed"] is False and run["single"]["info"]

    deleted = run["deleted"]
    assert deleted["changed"] is True and all(v["operation"] == "delete" for v in deleted["volumes"])
    assert run["deleted_again"]["changed"] is False
    for index, (volume_id, snap_id) in enumerate(vols):
        assert not (share / f"volume-{volume_id}.{snap_id}").exists()
        assert info(share, volume_id) == {"active": f"volume-{volume_id}"}
        assert reads(share / f"volume-{volume_id}", "raw", 0x40 + index)  # the data merged back, kept
        assert not (share / f".volsnap-volume-{volume_id}.journal").exists()


def test_many_volumes_refused_before_anything_runs(share: Path, tmp_path: Path) -> None:
    vols = new_volumes(share, 2)
    before = listing(share)
    twice = [{"volume_id": vols[0][0], "snapshot_id": vols[0][1]},
             {"volume_path": str(share / f"volume-{vols[0][0]}"), "snapshot_id": vols[1][1]}]
    tasks = [
        dict(task("a volume twice", "twice", share=str(share), volumes=twice), ignore_errors=True),
        dict(task("no snapshot id", "no_snap", share=str(share), volumes=[{"volume_id": vols[1][0]}]),
             ignore_errors=True),
        dict(task("with volume_path too", "both", share=str(share), volume_path=str(share / f"volume-{vols[0][0]}"),
                  volumes=[{"volume_id": vols[1][0], "snapshot_id": vols[1][1]}]), ignore_errors=True),
        dict(task("parallel 0", "zero", share=str(share), parallel=0,
                  volumes=[{"volume_id": vols[1][0], "snapshot_id": vols[1][1]}]), ignore_errors=True),
        dict(task("group resumed", "group", share=str(share), group=True, state="resumed",
                  volumes=[{"volume_id": vols[1][0], "snapshot_id": vols[1][1]}]), ignore_errors=True),
        # cleanup removes files: refused with report_to_cinder before anything is looked at (no snapshot to report)
        dict(task("cleanup reported", "cleanup_report", share=str(share), state="cleanup", report_to_cinder=True,
                  volumes=[{"volume_id": vols[1][0]}]), ignore_errors=True),
        task("empty list", "empty", share=str(share), volumes=[]),
    ]
    run = run_tasks(tmp_path, tasks, ["twice", "no_snap", "both", "zero", "group", "cleanup_report", "empty"])
    assert "lists %s again (already volumes[0])" % (share / f"volume-{vols[0][0]}") in run["twice"]["msg"]
    assert "has no snapshot_id, which state=present needs" in run["no_snap"]["msg"]
    assert "mutually exclusive" in run["both"]["msg"]
    assert "parallel must be 1 or more" in run["zero"]["msg"]
    assert run["group"]["failed"] is True and "group=true takes state=present" in run["group"]["msg"]
    assert "report_to_cinder needs the snapshot it reports on" in run["cleanup_report"]["msg"]
    assert (run["empty"]["changed"], run["empty"]["volumes"], run["empty"]["failed_volumes"]) == (False, [], [])
    assert listing(share) == before


def test_many_volumes_one_online_one_offline(share: Path, tmp_path: Path, domain_factory, libvirt_uri: str) -> None:
    vols = new_volumes(share, 2)
    (online_id, online_snap), (offline_id, offline_snap) = vols
    dom = domain_factory("many", [{"path": str(share / f"volume-{online_id}"), "format": "raw", "target": "vdb",
                                   "serial": online_id}])
    args = {"share": str(share), "libvirt_uri": libvirt_uri,
            "volumes": [{"volume_id": online_id, "snapshot_id": online_snap},
                        {"volume_id": offline_id, "snapshot_id": offline_snap}]}
    tasks = [task("create", "created", **args), task("again", "again", **args),
             task("delete", "deleted", **dict(args, state="absent"))]
    run = run_tasks(tmp_path, tasks, ["created", "again", "deleted"], python=sys.executable)
    assert run.rc == 0, run.output
    created = run["created"]
    assert [(v["mode"], v["changed"]) for v in created["volumes"]] == [("online", True), ("offline", True)]
    assert created["volumes"][0]["disk"] == "vdb"
    assert [v["changed"] for v in run["again"]["volumes"]] == [False, False]
    assert [(v["mode"], v["changed"]) for v in run["deleted"]["volumes"]] == [("online", True), ("offline", True)]
    online_active = run["deleted"]["volumes"][0]["active"]
    assert run["deleted"]["volumes"][0]["info"] == {"active": online_active}
    assert f"{share}/{online_active}'" in dom.XMLDesc(0)  # the domain runs on what the .info names
    dom.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
    assert info(share, online_id) == {"active": online_active}
    assert reads(share / online_active, "qcow2" if online_active.endswith(online_snap) else "raw", 0x40)
    assert info(share, offline_id) == {"active": f"volume-{offline_id}"}
    assert reads(share / f"volume-{offline_id}", "raw", 0x41)
