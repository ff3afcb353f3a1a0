"""rbd_pool_audit against the lab's real Ceph pools, Cinder (RBD backend) and Glance.

Leaks made by Cinder 29 itself, through its API:

* a volume cloned from another volume is deleted, then its source: ``volume-<src>.deleted`` stays for ever with the
  snapshot ``volume-<clone>.clone_snap`` that nothing depends on;
* a snapshot is unmanaged, then its volume deleted: the RBD image goes to the pool's trash with its (protected)
  snapshot, which ``rbd trash purge`` cannot remove;
* a volume cloned from another is deleted, the source stays: the source keeps ``volume-<clone>.clone_snap`` (removed
  alone, the volume Cinder has stays);

and planted by hand with the rbd CLI: an image of a volume Cinder never had (with a protected snapshot), a protected
snapshot without children on a healthy Cinder volume (reported, never removed) and beside it a snapshot whose removal
was interrupted (librbd's trash namespace; removed alone), and in Glance's pool an image without
a Glance record; and a Glance record whose RBD image was removed by hand (reported, never removed). A healthy Cinder
volume is reported as such and never touched.

One playbook audits both pools, lists the planted and Cinder-made leaks in check mode with diff (restricted with
``only`` to this test's objects: the pools are shared with other runs), removes exactly them, and runs the cleanup
again, which changes nothing.

The verification before each removal, on the real librbd (``_ceph/audit.py`` through ``_ceph/rbd.py`` in the lab's
Python with the Ceph bindings): between the audit's read and the cleanup an image is replaced by another of the same
name, one is opened by a client, one gets a snapshot, and a trash entry stays as it was; only the trash entry goes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest

from ansible_run import COLLECTION_ROOT, run_tasks
from openstack_helpers import interrupt_snap_removal, rbd_all_snaps, remove_volume, unique, uploaded_image, wait_volume

MODULE = "volsnap.openstack.rbd_pool_audit"


def wait_gone(get: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get()
        except Exception:  # NotFound: gone
            return
        assert time.monotonic() < deadline, "still there after %ds" % timeout
        time.sleep(0.25)


def rbd_json(ceph_lab: Any, *args: str) -> Any:
    return json.loads(ceph_lab.rbd(*args, "--format", "json") or "[]")


def purge(ceph_lab: Any, pool: str, which: List[str], trash: bool = False) -> List[str]:
    """Remove an image (or trash entry) this test left, with its snapshots; the errors, except "not found"."""
    try:
        for snap in rbd_json(ceph_lab, "snap", "ls", "--pool", pool, *which):
            try:
                ceph_lab.rbd("snap", "unprotect", "--pool", pool, *which, "--snap", snap["name"])
            except Exception:  # not protected
                pass
            ceph_lab.rbd("snap", "rm", "--pool", pool, *which, "--snap", snap["name"])
        if trash:
            ceph_lab.rbd("trash", "rm", "--pool", pool, which[1])
        else:
            ceph_lab.rbd("rm", "--pool", pool, which[1])
    except Exception as err:
        text = str(err).lower()
        if "no such file" not in text and "not found" not in text and "does not exist" not in text:
            return [f"{pool} {which}: {err}"]
    return []


@pytest.fixture
def admin(openstack_lab: Any) -> Any:
    return openstack_lab.connection()


def test_pools_against_cinder_and_glance(openstack_lab: Any, ceph_lab: Any, admin: Any, tmp_path: Path) -> None:
    pool, images_pool = ceph_lab.volumes_pool, ceph_lab.images_pool
    made: List[str] = []
    planted_images: List[str] = []
    trash_ids: List[str] = []
    stack = contextlib.ExitStack()
    try:
        # four volumes at once: the source of leak 1, the volume of leak 2, a healthy one, the source of leak 3
        pending = [admin.block_storage.create_volume(size=1, name=unique(f"audit-{what}"),
                                                     volume_type=openstack_lab.volume_type)
                   for what in ("src", "unmanaged", "healthy", "keeper")]
        made.extend(v.id for v in pending)
        source, doomed, healthy, keeper = (wait_volume(admin, v) for v in pending)
        clone, clone2 = (admin.block_storage.create_volume(size=1, source_volume_id=src.id, name=unique("audit-clone"),
                                                           volume_type=openstack_lab.volume_type)
                         for src in (source, keeper))
        made.extend([clone.id, clone2.id])
        snap = admin.block_storage.create_snapshot(volume_id=doomed.id, name=unique("audit-snap"))
        wait_volume(admin, clone)
        wait_volume(admin, clone2)
        # Cinder leak 3: a clone is deleted, its source stays: volume-<clone>.clone_snap stays on the source
        admin.block_storage.delete_volume(clone2)
        admin.block_storage.wait_for_status(snap, "available", failures=["error"], interval=0.25, wait=120)
        # Cinder leak 1: the clone is deleted, then its source
        admin.block_storage.delete_volume(clone)
        # Cinder leak 2: the snapshot is unmanaged, then its volume deleted
        resp = admin.block_storage.post(f"/snapshots/{snap.id}/action", json={"os-unmanage": {}}, microversion="3.8")
        assert resp.status_code == 202, resp.text
        admin.block_storage.wait_for_delete(clone, interval=0.25, wait=120)
        admin.block_storage.delete_volume(source)
        wait_gone(lambda: admin.block_storage.get_snapshot(snap.id))
        admin.block_storage.delete_volume(doomed)
        admin.block_storage.wait_for_delete(source, interval=0.25, wait=120)
        admin.block_storage.wait_for_delete(doomed, interval=0.25, wait=120)
        admin.block_storage.wait_for_delete(clone2, interval=0.25, wait=120)
        clone_snap = f"volume-{clone2.id}.clone_snap"
        assert [s["name"] for s in rbd_json(ceph_lab, "snap", "ls", f"{pool}/volume-{keeper.id}")] == [clone_snap], (
            "Cinder no longer leaves the clone_snap of a deleted clone: update this test")
        deleted = f"volume-{source.id}.deleted"
        planted_images.append(f"{pool}/{deleted}")  # removed at the end if the test did not
        assert [s["name"] for s in rbd_json(ceph_lab, "snap", "ls", f"{pool}/{deleted}")] == [
            f"volume-{clone.id}.clone_snap"], "Cinder no longer leaves the .deleted image: update this test"
        trashed = [e for e in rbd_json(ceph_lab, "trash", "ls", "--all", pool) if e["name"] == f"volume-{doomed.id}"]
        assert len(trashed) == 1, "Cinder no longer leaves the image in the trash: update this test"
        trash_ids.append(trashed[0]["id"])

        # healthy: a Cinder volume, with a protected snapshot without children planted on it (reported, kept)
        ceph_lab.rbd("snap", "create", f"{pool}/volume-{healthy.id}@manual")
        ceph_lab.rbd("snap", "protect", f"{pool}/volume-{healthy.id}@manual")
        # ... and a snapshot whose removal was killed after librbd's first step (left in the trash namespace)
        interrupted = interrupt_snap_removal(openstack_lab, ceph_lab, pool, f"volume-{healthy.id}", "half-removed")

        # planted: an image of a volume Cinder never had, with a protected snapshot; a Glance-pool image with no record
        orphan = f"volume-{uuid.uuid4()}"
        ceph_lab.rbd("create", "--size", "4M", f"{pool}/{orphan}")
        planted_images.append(f"{pool}/{orphan}")
        ceph_lab.rbd("snap", "create", f"{pool}/{orphan}@snapshot-{uuid.uuid4()}")
        ceph_lab.rbd("snap", "protect", f"{pool}/{orphan}@" + rbd_json(ceph_lab, "snap", "ls", f"{pool}/{orphan}")[0]
                     ["name"])
        stray = str(uuid.uuid4())
        ceph_lab.rbd("create", "--size", "4M", f"{images_pool}/{stray}")
        planted_images.append(f"{images_pool}/{stray}")
        ceph_lab.rbd("snap", "create", f"{images_pool}/{stray}@snap")
        ceph_lab.rbd("snap", "protect", f"{images_pool}/{stray}@snap")

        # a Glance record whose data is gone: an image uploaded to the rbd store, its RBD image removed by hand
        record = stack.enter_context(uploaded_image(admin, b"volsnap audit " * 1000, store="rbd"))
        ceph_lab.rbd("snap", "unprotect", f"{images_pool}/{record.id}@snap")
        ceph_lab.rbd("snap", "rm", f"{images_pool}/{record.id}@snap")
        ceph_lab.rbd("rm", f"{images_pool}/{record.id}")

        mine = {deleted, f"volume-{doomed.id}", orphan, stray, f"volume-{keeper.id}", f"volume-{healthy.id}"}
        common = {"cloud": openstack_lab.cloud, "ceph_conf": ceph_lab.conf, "keyring": ceph_lab.admin_keyring}
        vol_args = dict(common, pool=pool, role="cinder")
        img_args = dict(common, pool=images_pool, role="glance", glance_store="rbd")
        only = "{{ %s.cleanup_candidates | selectattr('name', 'in', mine) | list }}"
        tasks: List[Dict[str, Any]] = [
            # a check-mode cleanup returns the whole audit too, and what a real run would remove (the pool is shared:
            # other runs' leaks may be listed too; the real cleanups below are restricted to this test's)
            {"name": "check volumes", MODULE: dict(vol_args, state="cleaned"),
             "register": "vol_check", "check_mode": True, "diff": True},
            {"name": "clean volumes", MODULE: dict(vol_args, state="cleaned", only=only % "vol_check"),
             "register": "vol_clean"},
            {"name": "again volumes", MODULE: dict(vol_args, state="cleaned", only=only % "vol_check"),
             "register": "vol_again"},
            {"name": "audit images", MODULE: img_args, "register": "img"},
            {"name": "clean images", MODULE: dict(img_args, state="cleaned", only=only % "img"),
             "register": "img_clean"},
        ]
        for task in tasks:
            task["vars"] = {"mine": sorted(mine)}
        res = run_tasks(tmp_path, tasks, ["vol_check", "vol_clean", "vol_again", "img", "img_clean"],
                        python=openstack_lab.python, env_extra=openstack_lab.env())
        assert res.rc == 0, res.output[-6000:]
        vol, img = res["vol_check"], res["img"]
        by_name = {(i["name"], i["trash"]): i for i in vol["images"]}
        assert by_name[(deleted, False)]["class"] == "deleted_unreferenced"
        assert by_name[(f"volume-{doomed.id}", True)]["class"] == "trash_unreferenced"
        assert by_name[(orphan, False)]["class"] == "volume_unknown_to_cinder"
        assert by_name[(f"volume-{healthy.id}", False)]["class"] == "volume"
        healthy_findings = {f["code"] for f in vol["findings"] if f["image"] == f"volume-{healthy.id}"}
        assert healthy_findings == {"protected_snapshot_without_children", "interrupted_snapshot_removal"}
        # the volume stays; only the interrupted removal is a candidate
        assert [(c["kind"], c.get("snapshot")) for c in vol["cleanup_candidates"]
                if c["name"] == f"volume-{healthy.id}"] == [("snapshot", interrupted)]
        healthy_snaps = {s["name"]: s for s in by_name[(f"volume-{healthy.id}", False)]["snapshots"]}
        assert (healthy_snaps[interrupted]["namespace"], healthy_snaps[interrupted]["original_name"]) == (
            "trash", "half-removed")
        assert {i["name"]: i["class"] for i in img["images"]}[stray] == "image_without_record"
        assert ("record_without_data", record.id) in {(f["code"], f["image"]) for f in img["findings"]}
        assert by_name[(f"volume-{keeper.id}", False)]["class"] == "volume"
        assert ("clone_snap_without_clone", f"volume-{keeper.id}") in {(f["code"], f["image"]) for f in vol["findings"]}
        expected = sorted([f"{pool}/{deleted}", f"{pool}/trash volume-{doomed.id}", f"{pool}/{orphan}",
                           f"{pool}/volume-{keeper.id}@{clone_snap}", f"{pool}/volume-{healthy.id}@{interrupted}"])
        assert set(expected) <= set(res["vol_check"]["removed"]) and res["vol_check"]["changed"] is True
        assert set(res["vol_check"]["removed"]) <= {"%s/%s%s%s" % (
            pool, "trash " if c["kind"] == "trash" else "", c["name"], "@" + c["snapshot"] if c.get("snapshot") else "")
            for c in vol["cleanup_candidates"]}
        assert f"-{pool}/{deleted}" in res.output  # the diff lists what would go
        assert sorted(res["vol_clean"]["removed"]) == expected, res["vol_clean"]["kept"]
        assert res["img_clean"]["removed"] == [f"{images_pool}/{stray}"]
        assert res["vol_again"]["changed"] is False and res["vol_again"]["removed"] == []

        names = set(ceph_lab.rbd("ls", pool).split())
        assert not {deleted, orphan} & names and f"volume-{healthy.id}" in names
        assert not [e for e in rbd_json(ceph_lab, "trash", "ls", "--all", pool) if e["id"] == trashed[0]["id"]]
        assert stray not in ceph_lab.rbd("ls", images_pool).split()
        assert rbd_all_snaps(openstack_lab, ceph_lab, pool, f"volume-{healthy.id}") == [("manual", 0)]
        assert rbd_json(ceph_lab, "snap", "ls", f"{pool}/volume-{keeper.id}") == [] and f"volume-{keeper.id}" in names
    finally:
        stack.close()  # the Glance record is deleted
        errors: List[str] = []
        for volume_id in made:
            errors += remove_volume(admin, ceph_lab, volume_id)
        for spec in planted_images:
            errors += purge(ceph_lab, spec.split("/")[0], ["--image", spec.split("/", 1)[1]])
        for trash_id in trash_ids:
            errors += purge(ceph_lab, pool, ["--image-id", trash_id], trash=True)
        if errors:
            pytest.fail("cleanup failed: " + "; ".join(errors), pytrace=False)


_VERIFY_SCRIPT = r"""
import json, sys
import rados, rbd
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph import audit
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.rbd import Rbd

args = json.loads(sys.argv[1])
pool, names = args["pool"], args["names"]
cluster = rados.Rados(conffile=args["conf"], name="client.admin", conf={"keyring": args["keyring"]})
cluster.connect(timeout=30)
ops = Rbd(cluster, rbd)
try:
    images = audit.read_pool(ops, pool)
    judged = audit.judge_cinder_pool([i for i in images if i.name in names.values()], [], [], pool)
    cands = judged["cleanup_candidates"]
    ioctx = cluster.open_ioctx(pool)
    try:
        # meanwhile: "replaced" is removed and made again under its name; "watched" is opened by a client;
        # "snapped" gets a snapshot; the trash entry stays as the audit saw it
        rbd.RBD().remove(ioctx, names["replaced"])
        rbd.RBD().create(ioctx, names["replaced"], 4 << 20, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
        with rbd.Image(ioctx, names["snapped"]) as image:
            image.create_snap("late")
        with rbd.Image(ioctx, names["watched"]) as client:
            watchers = len(list(client.watchers_list()))
            cleaned = audit.clean_pool(ops, pool, cands, False, lambda cand: None)
    finally:
        ioctx.close()
    print(json.dumps({"candidates": cands, "cleaned": cleaned, "watchers": watchers}))
finally:
    ops.close()
    cluster.shutdown()
"""


def test_cleanup_verifies_each_candidate_again_on_real_librbd(openstack_lab: Any, ceph_lab: Any) -> None:
    pool = ceph_lab.volumes_pool
    names = {what: f"volume-{uuid.uuid4()}" for what in ("replaced", "watched", "snapped", "trashed")}
    trash_ids: List[str] = []
    try:
        for name in names.values():
            ceph_lab.rbd("create", "--size", "4M", f"{pool}/{name}")
        ceph_lab.rbd("snap", "create", f"{pool}/{names['snapped']}@first")
        ceph_lab.rbd("snap", "create", f"{pool}/{names['trashed']}@snapshot-{uuid.uuid4()}")
        ceph_lab.rbd("snap", "protect", f"{pool}/{names['trashed']}@" + rbd_json(
            ceph_lab, "snap", "ls", f"{pool}/{names['trashed']}")[0]["name"])
        ceph_lab.rbd("trash", "mv", f"{pool}/{names['trashed']}")
        [entry] = [e for e in rbd_json(ceph_lab, "trash", "ls", "--all", pool) if e["name"] == names["trashed"]]
        trash_ids.append(entry["id"])
        replaced_id = rbd_json(ceph_lab, "info", f"{pool}/{names['replaced']}")["id"]
        payload = {"pool": pool, "names": names, "conf": str(ceph_lab.conf), "keyring": str(ceph_lab.admin_keyring)}
        env = dict(os.environ, PYTHONPATH=str(COLLECTION_ROOT.parents[2]))  # the build copy's ansible_collections
        proc = subprocess.run([openstack_lab.python, "-c", _VERIFY_SCRIPT, json.dumps(payload)], capture_output=True,
                              text=True, timeout=300, check=False, env=env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        kinds = sorted((c["kind"], c["name"]) for c in out["candidates"])
        assert kinds == sorted([("image", names["replaced"]), ("image", names["watched"]),
                                ("image", names["snapped"]), ("trash", names["trashed"])])
        assert out["watchers"] == 1
        new_id = rbd_json(ceph_lab, "info", f"{pool}/{names['replaced']}")["id"]
        assert new_id != replaced_id
        assert sorted(out["cleaned"]["kept"]) == sorted([
            f"kept {names['replaced']}: its image id changed ({new_id}, audited {replaced_id})",
            f"kept {names['watched']}: a client has it open (1 watcher(s))",
            f"kept {names['snapped']}: its snapshots changed since the audit",
        ])
        assert out["cleaned"]["removed"] == [f"{pool}/trash {names['trashed']}"]
        assert not [e for e in rbd_json(ceph_lab, "trash", "ls", "--all", pool) if e["id"] == entry["id"]]
        left = set(ceph_lab.rbd("ls", pool).split())
        assert {names["replaced"], names["watched"], names["snapped"]} <= left
        assert [s["name"] for s in rbd_json(ceph_lab, "snap", "ls", f"{pool}/{names['snapped']}")] == ["first", "late"]
    finally:
        errors: List[str] = []
        for what in ("replaced", "watched", "snapped"):
            errors += purge(ceph_lab, pool, ["--image", names[what]])
        for trash_id in trash_ids:
            errors += purge(ceph_lab, pool, ["--image-id", trash_id], trash=True)
        if errors:
            pytest.fail("cleanup failed: " + "; ".join(errors), pytrace=False)
