"""volume_snapshot's report_to_cinder against the real Cinder API of the lab.

Nova reports the end of its part of an assisted snapshot with os-update_snapshot_status, which
Cinder accepts only while the snapshot is ``creating`` (-> creating/available/error) or ``deleting``
(-> deleting/error_deleting). The tests put a real Cinder snapshot into that situation the way an
admin can (os-reset_status), run volume_snapshot on a volume file named after the real Cinder volume
(offline, real qemu-img), and read back what Cinder recorded.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

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
        snap = admin.block_storage.wait_for_status(snap, status="available", failures=["error"], interval=0.25,
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
    run = ModuleRunner(tmp_path / "runs", openstack_lab, through_ansible=True)  # the others run the module directly
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


def share_state(share: Path) -> Dict[str, Tuple[str, int]]:
    """Every file of the share: name -> (sha256, mode)."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode) for p in sorted(share.iterdir())}


def assert_created_on_share(volume_file: Path, snapshot_id: str, qemu_img: str) -> None:
    """The create is complete: overlay with a relative backing reference, .info naming it, no pending journal."""
    overlay = volume_file.with_name(f"{volume_file.name}.{snapshot_id}")
    info = json.loads(volume_file.with_name(volume_file.name + ".info").read_text())
    assert info == {"active": overlay.name, snapshot_id: overlay.name}
    chain = json.loads(subprocess.run([qemu_img, "info", "-f", "qcow2", "--output=json", str(overlay)],
                                      check=True, capture_output=True, text=True).stdout)
    assert chain["backing-filename"] == volume_file.name and chain["backing-filename-format"] == "raw"
    assert not [p for p in volume_file.parent.iterdir() if p.name.endswith(".journal")]


def test_report_when_cinder_is_not_waiting(tmp_path: Path, admin: Any, openstack_lab: Any, cinder_snapshot: Any,
                                           volume_file: Path, qemu_img: str) -> None:
    """Cinder shows 'available', so it is not waiting for this create: the task fails (the overlay is made and
    kept); a rerun, which changes nothing on the share, finds Cinder moved on and reports no change."""
    _volume, snap = cinder_snapshot
    run = ModuleRunner(tmp_path / "runs", openstack_lab)
    args = {"volume_path": str(volume_file), "snapshot_id": snap.id, "mode": "offline", "report_to_cinder": True}
    check = run("volume_snapshot", args, check=True)
    assert check.get("failed") and check["msg"].startswith("check mode: a real run would complete the create"), check
    assert not Path(f"{volume_file}.{snap.id}").exists()
    result = run("volume_snapshot", args)
    assert result.get("failed") and result["changed"] is True, result
    assert "is complete on the share and journaled" in result["msg"] and "status available" in result["msg"]
    assert "not waiting" in result["msg"] and "openstack snapshot set --state" in result["msg"]
    assert result["cinder_report"]["reported"] is False and result["cinder_report"]["error"]
    assert result["file_format"] == {f"{volume_file.name}.{snap.id}": "qcow2"}
    assert_created_on_share(volume_file, snap.id, qemu_img)
    assert cinder_state(admin, snap.id)["status"] == "available"
    files = share_state(volume_file.parent)
    again = run("volume_snapshot", args)
    assert not again.get("failed") and not again["changed"], again
    assert "moved on" in again["cinder_report"]["reason"] and again["cinder_report"]["error"] is None
    assert share_state(volume_file.parent) == files


@pytest.fixture
def member_snapshot(admin: Any, ceph_lab: Any, openstack_lab: Any) -> Iterator[Tuple[Any, Any]]:
    """(volume, snapshot) owned by the member's project (demo), the snapshot available."""
    member = openstack_lab.connection(openstack_lab.member_cloud)
    volume = make_volume(member, openstack_lab)
    try:
        snap = member.block_storage.create_snapshot(volume_id=volume.id, name="member-assisted")
        snap = member.block_storage.wait_for_status(snap, status="available", failures=["error"], interval=0.25,
                                                    wait=180)
        yield volume, snap
    finally:
        errors = remove_volume(admin, ceph_lab, volume.id)
        if errors:
            pytest.fail("cleanup failed: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def reader_cloud(admin: Any, openstack_lab: Any) -> Iterator[Dict[str, Any]]:
    """A cloud dict for a user with only the reader role in the member's project: it may read the project's
    snapshots, and Cinder's policy (snapshot_extension:snapshot_actions:update_snapshot_status: project member)
    refuses it the status update."""
    project = admin.identity.find_project(openstack_lab.member_project, ignore_missing=False)
    name = f"volsnap-test-reader-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    user = admin.identity.create_user(name=name, password=password, domain_id="default",
                                      default_project_id=project.id)
    try:
        reader = admin.identity.find_role("reader", ignore_missing=False)
        admin.identity.assign_project_role_to_user(project, user, reader)
        yield {"auth": {"auth_url": "http://127.0.0.1:5000/v3", "username": name, "password": password,
                        "project_name": openstack_lab.member_project, "user_domain_name": "Default",
                        "project_domain_name": "Default"},
               "region_name": "RegionOne", "identity_api_version": 3, "block_storage_api_version": 3}
    finally:
        admin.identity.delete_user(user)


def test_report_refused_by_policy_fails_and_keeps_the_share(tmp_path: Path, admin: Any, openstack_lab: Any,
                                                            member_snapshot: Any, reader_cloud: Dict[str, Any],
                                                            qemu_img: str) -> None:
    """The reader sees the snapshot but Cinder refuses it the update (403): the create and the delete are done on
    the share and kept, the task fails saying Cinder waits in creating/deleting; the member (allowed) reruns the same
    task: no file changes, the report is sent; a further rerun is a no-op."""
    volume, snap = member_snapshot
    share = tmp_path / "share"
    share.mkdir()
    volume_file = share / f"volume-{volume.id}"
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(volume_file), "64M"], check=True)
    run = ModuleRunner(tmp_path / "runs", openstack_lab)
    args = {"volume_path": str(volume_file), "snapshot_id": snap.id, "mode": "offline", "report_to_cinder": True}
    admin.block_storage.reset_snapshot_status(snap, "creating")
    waiting = cinder_state(admin, snap.id)
    assert waiting["status"] == "creating" and waiting["progress"] != "90%"

    refused = run("volume_snapshot", dict(args, cloud=reader_cloud))
    assert refused.get("failed") and refused["changed"] is True, refused
    msg = refused["msg"]
    assert "The create of snapshot %s is complete on the share and journaled" % snap.id in msg
    assert "nothing is rolled back" in msg and "Cinder refused the status update" in msg and "(HTTP 403)" in msg
    assert "snapshot_extension:snapshot_actions:update_snapshot_status" in msg
    assert f"in status creating (progress {waiting['progress']})" in msg and "run the same task again" in msg
    assert refused["cinder_report"]["api_status_code"] == 403 and refused["cinder_report"]["reported"] is False
    assert refused["compute_status"] == "creating_compute_complete"
    assert cinder_state(admin, snap.id) == waiting                       # Cinder is still waiting ...
    assert_created_on_share(volume_file, snap.id, qemu_img)              # ... and the share has the snapshot
    files = share_state(share)

    member = openstack_lab.member_cloud
    reported = run("volume_snapshot", args, cloud=member)
    assert not reported.get("failed"), reported
    assert reported["changed"] and reported["cinder_report"]["reported"] is True and not reported.get("plan")
    assert cinder_state(admin, snap.id) == {"status": "creating", "progress": "90%"}
    assert share_state(share) == files
    again = run("volume_snapshot", args, cloud=member)
    assert not again.get("failed") and not again["changed"], again

    # the delete: the same with Cinder waiting in 'deleting'
    admin.block_storage.set_snapshot_status(snap, "available", "100%")
    admin.block_storage.reset_snapshot_status(snap, "deleting")
    waiting = cinder_state(admin, snap.id)
    gone = dict(args, state="absent")
    refused = run("volume_snapshot", dict(gone, cloud=reader_cloud))
    assert refused.get("failed") and refused["changed"] is True, refused
    assert "The delete of snapshot %s is complete on the share" % snap.id in refused["msg"]
    assert "in status deleting" in refused["msg"] and "(HTTP 403)" in refused["msg"]
    assert cinder_state(admin, snap.id) == waiting
    assert not Path(f"{volume_file}.{snap.id}").exists()
    assert json.loads(volume_file.with_name(volume_file.name + ".info").read_text()) == {"active": volume_file.name}
    files = share_state(share)
    reported = run("volume_snapshot", gone, cloud=member)
    assert not reported.get("failed") and reported["cinder_report"]["reported"], reported
    assert cinder_state(admin, snap.id) == {"status": "deleting", "progress": "90%"}
    assert share_state(share) == files
    admin.block_storage.reset_snapshot_status(snap, "available")


@pytest.mark.parametrize("state,cinder_status", [("present", "creating"), ("absent", "deleting")])
def test_report_with_another_projects_credentials_changes_nothing(tmp_path: Path, admin: Any, openstack_lab: Any,
                                                                  cinder_snapshot: Any, volume_file: Path,
                                                                  state: str, cinder_status: str) -> None:
    """The member of another project gets 404 for the snapshot and its volume: the task fails before the share is
    touched, saying Cinder stays waiting; admin credentials then do the operation and report it."""
    _volume, snap = cinder_snapshot
    run = ModuleRunner(tmp_path / "runs", openstack_lab)
    args = {"volume_path": str(volume_file), "snapshot_id": snap.id, "mode": "offline", "report_to_cinder": True,
            "state": state}
    if state == "absent":
        created = run("volume_snapshot", dict(args, state="present", report_to_cinder=False))
        assert created["changed"] and not created.get("failed"), created
    admin.block_storage.reset_snapshot_status(snap, cinder_status)
    waiting = cinder_state(admin, snap.id)
    files = share_state(volume_file.parent)
    for check in (True, False):
        result = run("volume_snapshot", args, check=check, cloud=openstack_lab.member_cloud)
        assert result.get("failed") and not result.get("changed"), result
        assert result["msg"].startswith("Nothing was changed on the share"), result["msg"]
        assert "see neither the Cinder snapshot nor its volume" in result["msg"]
        assert f"stays in status {cinder_status} until the report reaches it" in result["msg"]
        assert result["cinder_report"]["reported"] is False
        assert share_state(volume_file.parent) == files
        assert cinder_state(admin, snap.id) == waiting
    done = run("volume_snapshot", args)
    assert not done.get("failed") and done["changed"] and done["cinder_report"]["reported"], done
    assert cinder_state(admin, snap.id) == {"status": cinder_status, "progress": "90%"}
    admin.block_storage.reset_snapshot_status(snap, "available")


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
