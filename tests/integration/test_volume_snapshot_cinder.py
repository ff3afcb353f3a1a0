"""volume_snapshot's report_to_cinder against the real Cinder API of the lab.

Nova reports the end of its part of an assisted snapshot with os-update_snapshot_status, which
Cinder accepts only while the snapshot is ``creating`` (-> creating/available/error) or ``deleting``
(-> deleting/error_deleting). The tests put a real Cinder snapshot into that situation the way an
admin can (os-reset_status), run volume_snapshot on a volume file named after the real Cinder volume
(offline, real qemu-img), and read back what Cinder recorded.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

from openstack_helpers import ModuleRunner, get_snapshot, make_volume, remove_volume


@pytest.fixture
def admin(openstack_lab: Any) -> Any:
    return openstack_lab.connection()


@pytest.fixture
def cinder_snapshot(admin: Any, ceph_lab: Any, openstack_lab: Any):
    """(volume, snapshot): a real Cinder volume (type ceph) with a real, available Cinder snapshot."""
    volume = make_volume(admin, openstack_lab)
    try:
        snap = admin.block_storage.create_snapshot(volume_id=volume.id, name="assisted")
        snap = admin.block_storage.wait_for_status(snap, status="available", failures=["error"], interval=1,
                                                   wait=180)
        yield volume, snap
    finally:
        errors = remove_volume(admin, ceph_lab, volume.id)
        if errors:
            pytest.fail("cleanup failed: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def volume_file(tmp_path: Path, cinder_snapshot: Any, qemu_img: str) -> Path:
    """An NFS-style volume file (raw, 64 MiB) named after the Cinder volume, in a share directory."""
    share = tmp_path / "share"
    share.mkdir()
    path = share / f"volume-{cinder_snapshot[0].id}"
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(path), "64M"], check=True)
    return path


def cinder_state(admin: Any, snapshot_id: str) -> Dict[str, Any]:
    snap = get_snapshot(admin, snapshot_id)
    assert snap is not None
    return {"status": snap.status, "progress": snap.progress}


def test_report_create_and_delete_round_trip(tmp_path: Path, admin: Any, openstack_lab: Any,
                                             cinder_snapshot: Any, volume_file: Path) -> None:
    _volume, snap = cinder_snapshot
    run = ModuleRunner(tmp_path / "runs", openstack_lab)
    args = {"volume_path": str(volume_file), "snapshot_id": snap.id, "mode": "offline", "report_to_cinder": True}
    before = cinder_state(admin, snap.id)
    assert before["status"] == "available"

    # Cinder waits for the compute side: the snapshot is 'creating' (as while Nova works on it)
    admin.block_storage.reset_snapshot_status(snap, "creating")
    progress_before = cinder_state(admin, snap.id)["progress"]
    assert progress_before != "90%"

    check = run("volume_snapshot", args, check=True)
    assert not check.get("failed"), check
    assert check["changed"] and check["cinder_report"]["would_report"] and not check["cinder_report"]["reported"]
    assert cinder_state(admin, snap.id) == {"status": "creating", "progress": progress_before}
    assert not Path(f"{volume_file}.{snap.id}").exists()

    created = run("volume_snapshot", args)
    assert not created.get("failed"), created
    report = created["cinder_report"]
    assert created["changed"] and report["reported"] is True
    assert (report["status"], report["progress"]) == ("creating", "90%")
    assert report["cinder_status_before"] == "creating"
    # the spec's statuses stay in the result; Cinder got the compatible form
    assert created["compute_status"] == report["compute_status"] == "creating_compute_complete"
    assert created["file_format"] == report["file_format"] == {f"{volume_file.name}.{snap.id}": "qcow2"}
    assert cinder_state(admin, snap.id) == {"status": "creating", "progress": "90%"}
    assert Path(f"{volume_file}.{snap.id}").exists()

    again = run("volume_snapshot", args)
    assert not again.get("failed"), again
    assert not again["changed"] and not again["cinder_report"]["reported"]
    assert "already reported" in again["cinder_report"]["reason"]

    # Cinder's side now finishes the create (its volume manager records available / 100%; the API allows
    # creating -> available), then a delete starts: 'deleting'
    admin.block_storage.set_snapshot_status(snap, "available", "100%")
    assert cinder_state(admin, snap.id) == {"status": "available", "progress": "100%"}
    admin.block_storage.reset_snapshot_status(snap, "deleting")
    deleted = run("volume_snapshot", dict(args, state="absent"))
    assert not deleted.get("failed"), deleted
    report = deleted["cinder_report"]
    assert deleted["changed"] and report["reported"] and (report["status"], report["progress"]) == ("deleting", "90%")
    assert deleted["compute_status"] == "deleting_compute_complete"
    assert deleted["file_format"] == {volume_file.name: "raw"}
    assert cinder_state(admin, snap.id) == {"status": "deleting", "progress": "90%"}
    assert not Path(f"{volume_file}.{snap.id}").exists()

    admin.block_storage.reset_snapshot_status(snap, "available")


@pytest.mark.parametrize("state,cinder_status,reported", [("present", "creating", "error"),
                                                          ("absent", "deleting", "error_deleting")])
def test_report_failure(tmp_path: Path, admin: Any, openstack_lab: Any, cinder_snapshot: Any, volume_file: Path,
                        state: str, cinder_status: str, reported: str) -> None:
    _volume, snap = cinder_snapshot
    run = ModuleRunner(tmp_path / "runs", openstack_lab)
    admin.block_storage.reset_snapshot_status(snap, cinder_status)
    # an .info file naming a snapshot file that does not exist: the chain is unsafe and the module refuses.
    # For the delete it names this snapshot; for the create another one (an existing id would be a no-op).
    listed = snap.id if state == "absent" else "11111111-2222-4333-8444-555555555555"
    overlay = f"{volume_file.name}.{listed}"
    info = json.dumps({"active": overlay, listed: overlay}, indent=1, sort_keys=True)
    volume_file.with_name(volume_file.name + ".info").write_text(info + "\n")
    args = {"volume_path": str(volume_file), "snapshot_id": snap.id, "mode": "offline", "report_to_cinder": True,
            "state": state}
    check = run("volume_snapshot", args, check=True)
    assert check.get("failed"), check
    assert check["cinder_report"]["would_report"] and not check["cinder_report"]["reported"]
    assert cinder_state(admin, snap.id)["status"] == cinder_status

    result = run("volume_snapshot", args)
    assert result.get("failed") and "unsafe" in result["msg"], result
    assert result["cinder_report"]["reported"] is True and result["cinder_report"]["status"] == reported
    assert result["cinder_report"]["progress"] is None
    assert cinder_state(admin, snap.id)["status"] == reported
    # nothing more to report: Cinder is no longer waiting
    rerun = run("volume_snapshot", args)
    assert rerun.get("failed") and rerun["cinder_report"]["reported"] is False, rerun
    admin.block_storage.reset_snapshot_status(snap, "available")


def test_report_when_cinder_is_not_waiting(tmp_path: Path, admin: Any, openstack_lab: Any, cinder_snapshot: Any,
                                           volume_file: Path) -> None:
    _volume, snap = cinder_snapshot
    run = ModuleRunner(tmp_path / "runs", openstack_lab)
    args = {"volume_path": str(volume_file), "snapshot_id": snap.id, "mode": "offline", "report_to_cinder": True}
    result = run("volume_snapshot", args)
    assert not result.get("failed"), result
    assert result["changed"] and result["cinder_report"]["reported"] is False
    assert "status available" in result["cinder_report"]["reason"]
    assert any("nothing reported to Cinder" in w for w in result.get("warnings", [])), result
    assert cinder_state(admin, snap.id)["status"] == "available"


def test_cinder_refuses_the_spec_statuses(admin: Any, cinder_snapshot: Any) -> None:
    """Why the compatible form is sent: real Cinder rejects spec 000's statuses and file_format."""
    from openstack import exceptions

    _volume, snap = cinder_snapshot
    admin.block_storage.reset_snapshot_status(snap, "creating")
    refused: List[str] = []
    for body in ({"status": "creating_compute_complete", "progress": "90%"},
                 {"status": "creating", "progress": "90%", "file_format": {"volume-x.y": "qcow2"}},
                 {"status": "creating", "progress": "90", "compute_snapshot_status": "done"}):
        resp = admin.block_storage.post(f"/snapshots/{snap.id}/action", json={"os-update_snapshot_status": body},
                                        microversion="3.0")
        with pytest.raises(exceptions.BadRequestException):
            exceptions.raise_from_response(resp)
        refused.append(resp.status_code)
    assert refused == [400, 400, 400]
    assert cinder_state(admin, snap.id)["status"] == "creating"
    resp = admin.block_storage.post(f"/snapshots/{snap.id}/action",
                                    json={"os-update_snapshot_status": {"status": "creating", "progress": "90%"}},
                                    microversion="3.0")
    assert resp.status_code == 202
    assert cinder_state(admin, snap.id) == {"status": "creating", "progress": "90%"}
    admin.block_storage.reset_snapshot_status(snap, "available")
