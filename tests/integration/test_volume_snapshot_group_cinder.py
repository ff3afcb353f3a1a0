"""volume_snapshot group=true with report_to_cinder against the lab's real Cinder API.

Two real Cinder volumes, each with a real Cinder snapshot that an admin put into ``creating`` (as while Nova works
on an assisted snapshot, os-reset_status); their volume files (named after the Cinder volumes) in one share. An
offline group snapshot reports each member's compute side (creating, 90%), its rerun reports nothing new; the group
delete reports deleting, 90%. A member whose snapshot belongs to the other volume is refused before any volume is
touched.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from openstack_helpers import ModuleRunner, get_snapshot, make_volume, remove_volume


@pytest.fixture
def admin(openstack_lab: Any) -> Any:
    return openstack_lab.connection()


@pytest.fixture
def two_snapshots(admin: Any, ceph_lab: Any, openstack_lab: Any) -> Iterator[List[Tuple[Any, Any]]]:
    """[(volume, snapshot)] x 2: real Cinder volumes, each with a real available Cinder snapshot."""
    made: List[Tuple[Any, Any]] = []
    volumes = []
    try:
        for _index in range(2):
            volume = make_volume(admin, openstack_lab)
            volumes.append(volume)
            snap = admin.block_storage.create_snapshot(volume_id=volume.id, name="group-member")
            made.append((volume, snap))
        made = [(volume, admin.block_storage.wait_for_status(snap, status="available", failures=["error"],
                                                             interval=0.5, wait=180)) for volume, snap in made]
        yield made
    finally:
        errors = [e for volume in volumes for e in remove_volume(admin, ceph_lab, volume.id)]
        if errors:
            pytest.fail("cleanup failed: " + "; ".join(errors), pytrace=False)


def state(admin: Any, snapshot_id: str) -> Dict[str, Any]:
    snap = get_snapshot(admin, snapshot_id)
    assert snap is not None
    return {"status": snap.status, "progress": snap.progress}


def share_files(share: Path) -> List[str]:
    return sorted(p.name for p in share.iterdir() if not p.name.endswith(".lock"))


def test_group_reports_every_member_and_refuses_before_touching_any(
        tmp_path: Path, admin: Any, openstack_lab: Any, two_snapshots: List[Tuple[Any, Any]], qemu_img: str) -> None:
    share = tmp_path / "share"
    share.mkdir()
    for volume, _snap in two_snapshots:
        subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(share / f"volume-{volume.id}"), "64M"], check=True)
    run = ModuleRunner(tmp_path / "runs", openstack_lab)
    for _volume, snap in two_snapshots:
        admin.block_storage.reset_snapshot_status(snap, "creating")
    members = [{"volume_path": str(share / f"volume-{v.id}"), "snapshot_id": s.id} for v, s in two_snapshots]
    args = {"volumes": members, "group": True, "mode": "offline", "report_to_cinder": True}
    before = share_files(share)

    # a member whose snapshot is the other volume's: refused before any volume is touched, nothing reported
    swapped = dict(args, volumes=[members[0], dict(members[1], snapshot_id=two_snapshots[0][1].id)])
    refused = run("volume_snapshot", swapped)
    assert refused.get("failed") and "nothing was changed on any volume" in refused["msg"], refused
    assert "belongs to volume %s" % two_snapshots[0][0].id in refused["msg"]
    assert refused["failed_volumes"] == [members[1]["volume_path"]]
    assert share_files(share) == before
    assert all(state(admin, s.id)["status"] == "creating" and state(admin, s.id)["progress"] != "90%"
               for _v, s in two_snapshots)

    check = run("volume_snapshot", args, check=True)
    assert not check.get("failed") and check["changed"], check
    assert [v["cinder_report"]["would_report"] for v in check["volumes"]] == [True, True]
    assert not any(v["cinder_report"]["reported"] for v in check["volumes"])
    assert share_files(share) == before

    created = run("volume_snapshot", args)
    assert not created.get("failed") and created["changed"], created
    assert created["group"]["operation"] == "create" and created["group"]["mode"] == "offline"
    for item, (_volume, snap) in zip(created["volumes"], two_snapshots):
        assert item["cinder_report"]["reported"] and item["cinder_report"]["snapshot_id"] == snap.id
        assert item["cinder_report"]["file_format"]  # the spec's file_format of the new overlay
        assert state(admin, snap.id) == {"status": "creating", "progress": "90%"}
        assert (share / f"volume-{_volume.id}.{snap.id}").is_file()

    again = run("volume_snapshot", args)
    assert not again.get("failed") and again["changed"] is False, again
    assert not any(v["cinder_report"]["reported"] for v in again["volumes"])

    # Cinder's side finishes the creates (available / 100%), then a delete of both starts: 'deleting'
    for _volume, snap in two_snapshots:
        admin.block_storage.set_snapshot_status(snap, "available", "100%")
        admin.block_storage.reset_snapshot_status(snap, "deleting")
    deleted = run("volume_snapshot", dict(args, state="absent"))
    assert not deleted.get("failed") and deleted["changed"], deleted
    for item, (volume, snap) in zip(deleted["volumes"], two_snapshots):
        assert item["cinder_report"]["reported"], item
        assert state(admin, snap.id) == {"status": "deleting", "progress": "90%"}
        assert not (share / f"volume-{volume.id}.{snap.id}").exists()
    for _volume, snap in two_snapshots:
        admin.block_storage.reset_snapshot_status(snap, "available")
