"""snapshot_manage and manageable_snapshot_info against the real lab: Cinder (RBD driver) on a real Ceph.

A backend snapshot is made directly in Ceph on the RBD image of a Cinder-created volume, then
managed into Cinder and unmanaged again through real ansible-playbook runs; Ceph is checked with the
rbd CLI (rename to snapshot-<id>, protection, data kept) and Cinder through openstacksdk.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from openstack_helpers import (
    ModuleRunner,
    cinder_snapshots,
    get_snapshot,
    make_volume,
    rbd_read,
    rbd_snaps,
    rbd_write,
    remove_volume,
    unique,
    wait_volume,
)

GIB = 1024 ** 3
PATTERN = {0: "volsnap-block-0 " * 64, 700 * 1024 * 1024: "volsnap-block-700M " * 64}


@pytest.fixture
def admin(openstack_lab: Any) -> Any:
    return openstack_lab.connection()


@pytest.fixture
def volumes(admin: Any, ceph_lab: Any, openstack_lab: Any):
    """make(size=1, conn=admin) -> a new Cinder volume of type ceph; all removed (with snapshots) at teardown."""
    made: List[str] = []

    def make(size: int = 1, conn: Any = None) -> Any:
        volume = make_volume(conn or admin, openstack_lab, size=size)
        made.append(volume.id)
        return volume

    yield make
    errors: List[str] = []
    for volume_id in made:
        errors += remove_volume(admin, ceph_lab, volume_id)
    if errors:
        pytest.fail("cleanup failed: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def run(tmp_path: Path, openstack_lab: Any, request: pytest.FixtureRequest) -> ModuleRunner:
    """The module's code path run directly (ModuleRunner); the round trip goes through real ansible-playbook."""
    through_ansible = request.node.name == "test_manage_and_unmanage_round_trip"
    return ModuleRunner(tmp_path, openstack_lab, through_ansible=through_ansible)


def backend_snapshot(ceph_lab: Any, volume_id: str, name: str) -> None:
    ceph_lab.rbd("snap", "create", f"{ceph_lab.volumes_pool}/volume-{volume_id}@{name}")


def listing_of(entries: List[Dict[str, Any]], volume_id: str) -> Dict[str, Dict[str, Any]]:
    """Manageable entries of one volume: backend snapshot name -> entry."""
    own = {}
    for entry in entries:
        if entry["source_reference"] == {"source-name": f"volume-{volume_id}"}:
            own[entry["reference"]["source-name"]] = entry
    return own


def page_through(run: ModuleRunner, host: str, limit: int) -> Tuple[List[Dict[str, Any]], int, str]:
    """Every page of the host's listing: (entries, pages, message when a marker vanished meanwhile)."""
    collected: List[Dict[str, Any]] = []
    marker = None
    for pages in range(1, 201):
        args: Dict[str, Any] = {"host": host, "limit": limit}
        if marker is not None:
            args["marker"] = marker
        page = run("manageable_snapshot_info", args)
        if page.get("failed") and "marker not found" in page.get("msg", ""):
            return collected, pages, page["msg"]
        assert not page.get("failed"), page
        assert len(page["manageable_snapshots"]) <= limit
        collected += page["manageable_snapshots"]
        marker = page["next_marker"]
        if marker is None:
            return collected, pages, ""
    raise AssertionError("paging did not end after 200 pages")


def assert_failed(result: Dict[str, Any], *fragments: str) -> None:
    assert result.get("failed"), result
    for fragment in fragments:
        assert fragment in result["msg"], (fragment, result["msg"])


def test_manage_and_unmanage_round_trip(run: ModuleRunner, admin: Any, ceph_lab: Any, openstack_lab: Any,
                                        volumes: Any) -> None:
    volume = volumes(size=2)
    image = f"volume-{volume.id}"
    rbd_write(openstack_lab, ceph_lab, image, PATTERN)
    ref = f"backend-{uuid.uuid4().hex[:8]}"
    backend_snapshot(ceph_lab, volume.id, ref)
    # overwrite the live image: the snapshot must keep the old data
    rbd_write(openstack_lab, ceph_lab, image, {0: "after-snapshot " * 64})
    before = rbd_snaps(ceph_lab, volume.id)
    assert set(before) == {ref} and not before[ref]["protected"]
    name = unique("managed")
    args = {"volume": volume.name, "ref": ref, "name": name, "description": "from ceph",
            "metadata": {"origin": "rbd", "n": 7}}

    # the info module sees it as manageable
    info = run("manageable_snapshot_info", {"volume": volume.id})
    assert not info.get("failed"), info
    assert info["host"] and not info["changed"]
    own = listing_of(info["manageable_snapshots"], volume.id)
    assert set(own) == {ref}
    assert own[ref]["safe_to_manage"] is True and own[ref]["cinder_id"] is None
    assert own[ref]["size"] == math.ceil(before[ref]["size"] / GIB) == 2

    # check mode: says what would happen, changes nothing
    check = run("snapshot_manage", args, check=True, diff=True)
    assert not check.get("failed"), check
    assert check["changed"] and check["action"] == "manage" and check["snapshot"]["id"] is None
    assert check["diff"]["before"] == {} and check["diff"]["after"]["name"] == name
    assert cinder_snapshots(admin, volume.id) == []
    assert rbd_snaps(ceph_lab, volume.id) == before

    # manage
    managed = run("snapshot_manage", args, diff=True)
    assert not managed.get("failed"), managed
    snap = managed["snapshot"]
    assert managed["changed"] and managed["action"] == "manage" and not managed["legacy_api"]
    assert snap["status"] == "available" and snap["size"] == 2 and snap["volume_id"] == volume.id
    assert snap["name"] == name and snap["description"] == "from ceph"
    assert snap["metadata"] == {"origin": "rbd", "n": "7"}
    assert managed["diff"]["before"] == {} and managed["diff"]["after"]["id"] == snap["id"]
    cinder = get_snapshot(admin, snap["id"])
    assert cinder is not None and cinder.status == "available" and cinder.size == 2
    after = rbd_snaps(ceph_lab, volume.id)
    assert set(after) == {f"snapshot-{snap['id']}"}, after          # Cinder renamed it ...
    assert after[f"snapshot-{snap['id']}"]["protected"] is True       # ... and protected it

    # rerun: no change
    again = run("snapshot_manage", args)
    assert not again.get("failed"), again
    assert not again["changed"] and again["snapshot"]["id"] == snap["id"] and again["found_by"] == "name"

    # the listing now marks it as managed
    info = run("manageable_snapshot_info", {"volume": volume.id})
    own = listing_of(info["manageable_snapshots"], volume.id)
    assert set(own) == {f"snapshot-{snap['id']}"}
    entry = own[f"snapshot-{snap['id']}"]
    assert entry["cinder_id"] == snap["id"] and entry["safe_to_manage"] is False
    assert entry["reason_not_safe"] == "already managed"

    # unmanage: check mode first
    gone_args = {"volume": volume.id, "name": name, "state": "absent"}
    check = run("snapshot_manage", gone_args, check=True)
    assert check["changed"] and check["action"] == "unmanage" and get_snapshot(admin, snap["id"]) is not None
    unmanaged = run("snapshot_manage", gone_args, diff=True)
    assert not unmanaged.get("failed"), unmanaged
    assert unmanaged["changed"] and unmanaged["action"] == "unmanage"
    assert unmanaged["diff"]["after"] == {} and unmanaged["diff"]["before"]["id"] == snap["id"]
    assert get_snapshot(admin, snap["id"]) is None                     # Cinder forgot it
    kept = rbd_snaps(ceph_lab, volume.id)
    assert set(kept) == {f"snapshot-{snap['id']}"}                     # the data stays in Ceph
    assert kept[f"snapshot-{snap['id']}"]["protected"] is False        # unprotected (no clones)
    data = rbd_read(openstack_lab, ceph_lab, image, f"snapshot-{snap['id']}",
                    {offset: len(text) for offset, text in PATTERN.items()})
    assert data == PATTERN
    live = rbd_read(openstack_lab, ceph_lab, image, None, {0: len(PATTERN[0])})
    assert live[0].startswith("after-snapshot ")

    again = run("snapshot_manage", gone_args)
    assert not again.get("failed") and not again["changed"] and again["snapshot"] is None

    # the unmanaged snapshot is manageable again, under its new name, found by the listing
    info = run("manageable_snapshot_info", {"volume": volume.id})
    entry = listing_of(info["manageable_snapshots"], volume.id)[f"snapshot-{snap['id']}"]
    assert entry["safe_to_manage"] is True and entry["cinder_id"] is None


def test_unmanage_by_backend_reference(run: ModuleRunner, admin: Any, ceph_lab: Any, volumes: Any) -> None:
    volume = volumes()
    backend_snapshot(ceph_lab, volume.id, "by-ref")
    managed = run("snapshot_manage", {"volume": volume.id, "ref": {"source-name": "by-ref"}, "name": "r"})
    assert managed["changed"] and managed["snapshot"]["status"] == "available", managed
    sid = managed["snapshot"]["id"]
    result = run("snapshot_manage", {"volume": volume.id, "ref": f"snapshot-{sid}", "state": "absent"})
    assert result["changed"] and result["found_by"] == "reference", result
    assert get_snapshot(admin, sid) is None and f"snapshot-{sid}" in rbd_snaps(ceph_lab, volume.id)


def test_parent_volume_missing(run: ModuleRunner) -> None:
    missing = unique("no-such-volume")
    result = run("snapshot_manage", {"volume": missing, "ref": "x", "name": "y"})
    assert_failed(result, f"the parent volume {missing} was not found in Cinder")
    result = run("snapshot_manage", {"volume": missing, "name": "y", "state": "absent"})
    assert not result.get("failed") and not result["changed"] and "does not exist" in result["msg"], result


def test_bad_reference_error_record(run: ModuleRunner, admin: Any, ceph_lab: Any, volumes: Any) -> None:
    volume = volumes()
    backend_snapshot(ceph_lab, volume.id, "present")
    name = unique("bad-ref")
    args = {"volume": volume.id, "ref": "not-on-the-backend", "name": name}
    # check mode predicts the real run's failure, with the same reason, and sends nothing
    check = run("snapshot_manage", args, check=True)
    reason = (f'the reference is not on the backend: the manageable listing of host {volume.host} has no snapshot '
              f'{{"source-name": "not-on-the-backend"}} on volume {volume.id} (ManageExistingInvalidReference)')
    assert_failed(check, "check mode: a real run would fail", reason, "leave that error record in Cinder",
                  'Manageable on this volume: {"source-name": "present"}')
    assert not check.get("changed") and check["manageable_references"] == [{"source-name": "present"}]
    assert cinder_snapshots(admin, volume.id) == []
    result = run("snapshot_manage", args)
    assert_failed(result, "ended in status error", reason, "stays in Cinder", "cleanup_on_error=true")
    record = result["snapshot"]
    assert result["cleaned_up"] is False
    snaps = cinder_snapshots(admin, volume.id)
    assert [(s.id, s.name, s.status) for s in snaps] == [(record["id"], name, "error")]
    assert set(rbd_snaps(ceph_lab, volume.id)) == {"present"}

    # a rerun without cleanup refuses; with cleanup it replaces the record and fails the same way, leaving nothing;
    # check mode says so (it used to promise changed: true, action: manage)
    assert_failed(run("snapshot_manage", args), "exists in status error", "cleanup_on_error=true")
    check = run("snapshot_manage", dict(args, cleanup_on_error=True), check=True)
    assert_failed(check, "check mode: a real run would fail", f"remove the error record {record['id']}, send",
                  reason, "remove that error record (cleanup_on_error=true) and fail")
    assert [s.id for s in cinder_snapshots(admin, volume.id)] == [record["id"]]
    result = run("snapshot_manage", dict(args, cleanup_on_error=True))
    assert_failed(result, "ended in status error", "The error record was removed")
    assert result["cleaned_up"] is True
    assert cinder_snapshots(admin, volume.id) == []
    assert get_snapshot(admin, record["id"]) is None

    # an error record in front of a good reference is replaced and the good one managed
    backend_snapshot(ceph_lab, volume.id, "good")
    assert_failed(run("snapshot_manage", args), "ended in status error")
    stale = cinder_snapshots(admin, volume.id)[0].id
    check = run("snapshot_manage", dict(args, ref="good", cleanup_on_error=True), check=True)
    assert not check.get("failed") and check["changed"] and check["replaced"] == stale, check
    fixed = run("snapshot_manage", dict(args, ref="good", cleanup_on_error=True))
    assert not fixed.get("failed"), fixed
    assert fixed["changed"] and fixed["replaced"] == stale and fixed["snapshot"]["status"] == "available"
    assert [s.id for s in cinder_snapshots(admin, volume.id)] == [fixed["snapshot"]["id"]]
    assert set(rbd_snaps(ceph_lab, volume.id)) == {"present", f"snapshot-{fixed['snapshot']['id']}"}


def test_not_safe_to_manage_is_refused_in_check_mode_too(run: ModuleRunner, admin: Any, ceph_lab: Any,
                                                         volumes: Any) -> None:
    """Cinder lists a .clone_snap snapshot as not safe to manage (it would rename it all the same): both runs
    refuse it, with the listing's reason, and send nothing."""
    volume = volumes()
    backend_snapshot(ceph_lab, volume.id, "image-1.clone_snap")
    args = {"volume": volume.id, "ref": "image-1.clone_snap", "name": "clone-snap"}
    for check in (True, False):
        result = run("snapshot_manage", args, check=check)
        assert_failed(result, "as not safe to manage: used for clone snap")
    assert cinder_snapshots(admin, volume.id) == []
    assert set(rbd_snaps(ceph_lab, volume.id)) == {"image-1.clone_snap"}


def test_unmanaged_snapshot_then_volume_delete_goes_to_the_rbd_trash(run: ModuleRunner, admin: Any, ceph_lab: Any,
                                                                     openstack_lab: Any, volumes: Any) -> None:
    """What the module's notes say: with an unmanaged snapshot left on its image, Cinder 29 deletes the volume
    (no failure) and its RBD driver moves the image, snapshot included, to the pool's trash, where it stays;
    rbd trash rm refuses it until its snapshots are purged."""
    volume = volumes()
    image = f"volume-{volume.id}"
    rbd_write(openstack_lab, ceph_lab, image, {0: "kept-in-trash " * 64})
    backend_snapshot(ceph_lab, volume.id, "to-trash")
    managed = run("snapshot_manage", {"volume": volume.id, "ref": "to-trash", "name": "to-trash"})
    assert not managed.get("failed"), managed
    sid = managed["snapshot"]["id"]
    unmanaged = run("snapshot_manage", {"volume": volume.id, "name": "to-trash", "state": "absent"})
    assert unmanaged["changed"] and get_snapshot(admin, sid) is None, unmanaged
    assert rbd_snaps(ceph_lab, volume.id) == {f"snapshot-{sid}": {"size": GIB, "protected": False}}

    admin.block_storage.delete_volume(volume.id)
    admin.block_storage.wait_for_delete(volume, interval=0.25, wait=180)  # deleted, not error_deleting
    assert image not in ceph_lab.rbd("ls", ceph_lab.volumes_pool).split()
    trash = [t for t in json.loads(ceph_lab.rbd("trash", "ls", "--long", ceph_lab.volumes_pool, "--format", "json"))
             if t["name"] == image]
    assert len(trash) == 1, trash
    trash_id = trash[0]["id"]
    try:
        snaps = json.loads(ceph_lab.rbd("snap", "ls", "--pool", ceph_lab.volumes_pool, "--image-id", trash_id,
                                        "--format", "json"))
        assert [s["name"] for s in snaps] == [f"snapshot-{sid}"]
        with pytest.raises(RuntimeError, match="image has snapshots"):  # stack.CommandError
            ceph_lab.rbd("trash", "rm", f"{ceph_lab.volumes_pool}/{trash_id}")
    finally:
        # the way out the notes document for dropping the data
        ceph_lab.rbd("snap", "purge", "--pool", ceph_lab.volumes_pool, "--image-id", trash_id)
        ceph_lab.rbd("trash", "rm", f"{ceph_lab.volumes_pool}/{trash_id}")
    assert image not in ceph_lab.rbd("trash", "ls", ceph_lab.volumes_pool)


def test_state_that_cannot_be_unmanaged(run: ModuleRunner, admin: Any, ceph_lab: Any, volumes: Any) -> None:
    volume = volumes()
    backend_snapshot(ceph_lab, volume.id, "busy")
    managed = run("snapshot_manage", {"volume": volume.id, "ref": "busy", "name": "busy"})
    sid = managed["snapshot"]["id"]
    admin.block_storage.reset_snapshot_status(sid, "creating")
    result = run("snapshot_manage", {"volume": volume.id, "name": "busy", "state": "absent"})
    assert_failed(result, "is in status creating", "only snapshots in status available or error")
    assert get_snapshot(admin, sid).status == "creating"
    # an existing snapshot in a status that is not usable is refused by state=present too
    admin.block_storage.reset_snapshot_status(sid, "error_deleting")
    assert_failed(run("snapshot_manage", {"volume": volume.id, "ref": "busy", "name": "busy"}),
                  "is in status error_deleting")
    # error snapshots can be unmanaged
    admin.block_storage.reset_snapshot_status(sid, "error")
    result = run("snapshot_manage", {"volume": volume.id, "name": sid, "state": "absent"})
    assert result["changed"] and result["found_by"] == "id", result
    assert get_snapshot(admin, sid) is None and f"snapshot-{sid}" in rbd_snaps(ceph_lab, volume.id)


def test_member_cloud_policy_refusal(run: ModuleRunner, ceph_lab: Any, openstack_lab: Any, volumes: Any) -> None:
    member = openstack_lab.connection(openstack_lab.member_cloud)
    volume = volumes(conn=member)
    backend_snapshot(ceph_lab, volume.id, "member-snap")
    result = run("snapshot_manage", {"volume": volume.id, "ref": "member-snap", "name": "m"},
                 cloud=openstack_lab.member_cloud)
    assert_failed(result, "(HTTP 403)", "snapshot_extension:snapshot_manage", "admin")
    assert result["status_code"] == 403 and result["request_id"].startswith("req-")
    # check mode cannot read the (admin-only) listing: it says it cannot tell, it does not promise a change
    check = run("snapshot_manage", {"volume": volume.id, "ref": "member-snap", "name": "m"}, check=True,
                cloud=openstack_lab.member_cloud)
    assert_failed(check, "check mode cannot tell whether Cinder can manage", "run with admin credentials")
    assert not check.get("changed")
    assert list(member.block_storage.snapshots(volume_id=volume.id)) == []
    info = run("manageable_snapshot_info", {"host": openstack_lab.cinder_host}, cloud=openstack_lab.member_cloud)
    assert_failed(info, "(HTTP 403)", "snapshot_extension:list_manageable")
    # a snapshot the member owns (a normal one): the member may not unmanage it
    own = member.block_storage.create_snapshot(volume_id=volume.id, name="member-own")
    member.block_storage.wait_for_status(own, status="available", failures=["error"], interval=0.25, wait=180)
    result = run("snapshot_manage", {"volume": volume.id, "name": "member-own", "state": "absent"},
                 cloud=openstack_lab.member_cloud)
    assert_failed(result, "(HTTP 403)", "snapshot_extension:snapshot_unmanage")
    assert member.block_storage.get_snapshot(own.id).status == "available"


def test_legacy_extension(run: ModuleRunner, admin: Any, ceph_lab: Any, volumes: Any) -> None:
    """block_storage_microversion below 3.8 uses os-snapshot-manage, as on clouds without 3.8."""
    volume = volumes()
    backend_snapshot(ceph_lab, volume.id, "legacy")
    args = {"volume": volume.id, "ref": "legacy", "name": "legacy", "block_storage_microversion": "3.7"}
    info = run("manageable_snapshot_info", {"volume": volume.id, "block_storage_microversion": "3.7"})
    assert not info.get("failed"), info
    assert info["legacy_api"] is True and set(listing_of(info["manageable_snapshots"], volume.id)) == {"legacy"}
    managed = run("snapshot_manage", args)
    assert not managed.get("failed"), managed
    assert managed["legacy_api"] is True and managed["snapshot"]["status"] == "available"
    assert set(rbd_snaps(ceph_lab, volume.id)) == {f"snapshot-{managed['snapshot']['id']}"}
    assert not run("snapshot_manage", args)["changed"]
    result = run("snapshot_manage", dict(args, state="absent"))
    assert result["changed"] and get_snapshot(admin, managed["snapshot"]["id"]) is None


def test_listing_matches_ceph_with_paging(run: ModuleRunner, ceph_lab: Any, openstack_lab: Any,
                                          volumes: Any) -> None:
    vol_a, vol_b = volumes(), volumes(size=2)
    names = {vol_a.id: ["a1", "a2", "a3"], vol_b.id: ["b1", "b2"]}
    for volume_id, snaps in names.items():
        for snap in snaps:
            backend_snapshot(ceph_lab, volume_id, snap)
    managed = run("snapshot_manage", {"volume": vol_b.id, "ref": "b2", "name": "b2"})
    assert managed["changed"], managed
    b2_id = managed["snapshot"]["id"]

    def ceph_view() -> Dict[str, Dict[str, int]]:
        return {volume_id: {name: math.ceil(info["size"] / GIB) for name, info in rbd_snaps(ceph_lab,
                                                                                            volume_id).items()}
                for volume_id in names}

    def module_view(entries: List[Dict[str, Any]]) -> Dict[str, Dict[str, int]]:
        return {volume_id: {name: e["size"] for name, e in listing_of(entries, volume_id).items()}
                for volume_id in names}

    expected = ceph_view()
    assert expected == {vol_a.id: {"a1": 1, "a2": 1, "a3": 1}, vol_b.id: {"b1": 2, f"snapshot-{b2_id}": 2}}
    whole = run("manageable_snapshot_info", {"host": openstack_lab.cinder_host})
    assert not whole.get("failed"), whole
    assert module_view(whole["manageable_snapshots"]) == expected
    managed_entry = listing_of(whole["manageable_snapshots"], vol_b.id)[f"snapshot-{b2_id}"]
    assert managed_entry["cinder_id"] == b2_id and managed_entry["safe_to_manage"] is False

    # page by page (about 4 pages) gives the same entries, in Cinder's default order. The backend is shared with
    # other tests: if an entry used as a marker vanishes meanwhile, Cinder refuses the marker and the pass is
    # repeated (up to 3 times); our own entries never change during the pass.
    limit = max(2, math.ceil(len(whole["manageable_snapshots"]) / 4))
    for _attempt in range(3):
        collected, pages, lost = page_through(run, openstack_lab.cinder_host, limit)
        if not lost:
            break
        assert "start again without marker" in lost, lost
    else:
        pytest.fail("the listing changed under every paging pass")
    assert pages >= 2, (pages, limit)
    assert module_view(collected) == expected
    references = [e["reference"]["source-name"] for e in collected]
    assert references == sorted(references, reverse=True)  # Cinder's default order: reference:desc

    # sorted by size, biggest first, only one volume's entries
    by_size = run("manageable_snapshot_info", {"volume": vol_b.name, "sort": "size:desc"})
    assert module_view(by_size["manageable_snapshots"])[vol_b.id] == expected[vol_b.id]
    sizes = [e["size"] for e in by_size["manageable_snapshots"]]
    assert sizes == sorted(sizes, reverse=True)


def test_wait_false_returns_creating_record(run: ModuleRunner, admin: Any, ceph_lab: Any, volumes: Any) -> None:
    volume = volumes()
    backend_snapshot(ceph_lab, volume.id, "nowait")
    result = run("snapshot_manage", {"volume": volume.id, "ref": "nowait", "name": "nowait", "wait": False})
    assert result["changed"] and result["snapshot"]["id"], result
    # a second run with wait finds it by name and waits for it
    again = run("snapshot_manage", {"volume": volume.id, "ref": "nowait", "name": "nowait"})
    assert not again["changed"] and again["snapshot"]["status"] == "available", again
    wait_volume(admin, admin.block_storage.get_volume(volume.id))
