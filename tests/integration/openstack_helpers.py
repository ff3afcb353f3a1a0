"""Helpers for the integration tests that use the real Ceph + OpenStack lab (tests/lab/stack.py).

Everything here talks to the real services: Cinder through openstacksdk (controller venv), Ceph
through the rbd CLI (CephLab.rbd) and, for data written into or read from RBD images, through the
lab interpreter that has Debian's rados/rbd bindings (OpenStackLab.python).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ansible_run import run_module, run_tasks

CREATE_TIMEOUT = 180


def unique(prefix: str) -> str:
    return f"volsnap-test-{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def uploaded_image(conn: Any, payload: bytes, store: Optional[str] = None,
                   timeout: float = CREATE_TIMEOUT) -> Iterator[Any]:
    """A raw/bare Glance image holding ``payload`` (uploaded through the API, into ``store`` or Glance's default),
    active; deleted in Glance when the block ends, whatever happened."""
    image = conn.image.create_image(name=unique("img"), disk_format="raw", container_format="bare")
    try:
        headers = {"Content-Type": "application/octet-stream"}
        if store:
            headers["X-Image-Meta-Store"] = store
        resp = conn.image.put(f"/images/{image.id}/file", data=payload, headers=headers)
        assert resp.status_code == 204, resp.text
        deadline = time.monotonic() + timeout
        while (current := conn.image.get_image(image.id)).status != "active":
            assert current.status in ("queued", "saving", "importing"), f"image {image.id} is {current.status}"
            assert time.monotonic() < deadline, f"image {image.id} not active after {timeout:.0f}s ({current.status})"
            time.sleep(0.5)
        yield current
    finally:
        conn.image.delete_image(image, ignore_missing=True)


def wait_volume(conn: Any, volume: Any, status: str = "available", timeout: float = CREATE_TIMEOUT) -> Any:
    return conn.block_storage.wait_for_status(volume, status=status, failures=["error"], interval=0.25, wait=timeout)


def make_volume(conn: Any, openstack_lab: Any, size: int = 1, name: Optional[str] = None) -> Any:
    volume = conn.block_storage.create_volume(size=size, name=name or unique("vol"),
                                              volume_type=openstack_lab.volume_type)
    return wait_volume(conn, volume)


def rbd_snaps(ceph_lab: Any, volume_id: str) -> Dict[str, Dict[str, Any]]:
    """The RBD snapshots of volumes/volume-<id>: name -> {size, protected}."""
    out = ceph_lab.rbd("snap", "ls", f"{ceph_lab.volumes_pool}/volume-{volume_id}", "--format", "json")
    snaps = {}
    for snap in json.loads(out or "[]"):
        info = json.loads(ceph_lab.rbd("info", f"{ceph_lab.volumes_pool}/volume-{volume_id}@{snap['name']}",
                                       "--format", "json"))
        protected = info.get("protected", snap.get("protected"))
        snaps[snap["name"]] = {"size": int(snap["size"]), "protected": str(protected).lower() == "true"}
    return snaps


def cinder_snapshots(conn: Any, volume_id: str, all_projects: bool = False) -> List[Any]:
    return list(conn.block_storage.snapshots(volume_id=volume_id, all_projects=all_projects))


def get_snapshot(conn: Any, snapshot_id: str) -> Optional[Any]:
    from openstack import exceptions  # controller venv
    try:
        return conn.block_storage.get_snapshot(snapshot_id)
    except exceptions.NotFoundException:
        return None


def wait_snapshot_gone(conn: Any, snapshot_id: str, timeout: float = CREATE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while get_snapshot(conn, snapshot_id) is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"snapshot {snapshot_id} still exists after {timeout}s")
        time.sleep(0.25)


def remove_volume(admin: Any, ceph_lab: Any, volume_id: str) -> List[str]:
    """Remove a test volume: its Cinder snapshots, the RBD snapshots left on it, then the volume itself."""
    errors: List[str] = []
    for snap in cinder_snapshots(admin, volume_id, all_projects=True):
        try:
            if snap.status not in ("available", "error"):
                admin.block_storage.reset_snapshot_status(snap, "available")
            admin.block_storage.delete_snapshot(snap)
            wait_snapshot_gone(admin, snap.id)
        except Exception as err:  # keep cleaning up, report at the end
            errors.append(f"snapshot {snap.id}: {err}")
    try:
        for name, info in rbd_snaps(ceph_lab, volume_id).items():
            image = f"{ceph_lab.volumes_pool}/volume-{volume_id}@{name}"
            if info["protected"]:
                ceph_lab.rbd("snap", "unprotect", image)
            ceph_lab.rbd("snap", "rm", image)
    except Exception as err:
        # The test may already have deleted the volume (and its RBD image) through the API.
        if "no such file or directory" not in str(err).lower():
            errors.append(f"rbd snapshots of volume-{volume_id}: {err}")
    try:
        volume = admin.block_storage.get_volume(volume_id)
        if volume.status not in ("available", "error"):
            admin.block_storage.reset_volume_status(volume, status="available", attach_status=None,
                                                    migration_status=None)
        admin.block_storage.delete_volume(volume_id)
        admin.block_storage.wait_for_delete(volume, interval=0.25, wait=CREATE_TIMEOUT)
    except Exception as err:
        if "could not be found" not in str(err).lower() and "notfound" not in type(err).__name__.lower():
            errors.append(f"volume {volume_id}: {err}")
    return errors


_RBD_SCRIPT = r"""
import hashlib, json, struct, sys
import rados, rbd
args = json.loads(sys.argv[1])
cluster = rados.Rados(conffile=args["conf"], name="client.admin", conf={"keyring": args["keyring"]})
cluster.connect(timeout=30)
try:
    ioctx = cluster.open_ioctx(args["pool"])
    try:
        if args["op"] == "write":
            with rbd.Image(ioctx, args["image"]) as image:
                for offset, text in args["chunks"]:
                    image.write(text.encode(), offset)
                image.flush()
            print(json.dumps({"ok": True}))
        elif args["op"] == "interrupt_snap_removal":
            # librbd's first step of removing a snapshot (SnapshotRemoveRequest TRASH_SNAP): the class method that
            # moves it to the trash namespace under a generated name; a removal killed after it leaves this
            with rbd.Image(ioctx, args["image"]) as image:
                if not any(s["name"] == args["snap"] and s.get("namespace", 0) == 0 for s in image.list_snaps()):
                    image.create_snap(args["snap"])
                snap_id, image_id = image.snap_get_id(args["snap"]), image.id()
            ioctx.execute("rbd_header." + image_id, "rbd", "snapshot_trash_add", struct.pack("<Q", snap_id))
            with rbd.Image(ioctx, args["image"], read_only=True) as image:
                listed = [s for s in image.list_snaps() if s["id"] == snap_id]
            print(json.dumps({"name": listed[0]["name"], "namespace": listed[0]["namespace"],
                              "original_name": listed[0]["trash"]["original_name"]}))
        elif args["op"] == "all_snaps":
            with rbd.Image(ioctx, args["image"], read_only=True) as image:
                print(json.dumps({"snaps": [{"name": s["name"], "namespace": s.get("namespace", 0)}
                                            for s in image.list_snaps()]}))
        elif args["op"] == "sha256":
            with rbd.Image(ioctx, args["image"], snapshot=args.get("snapshot"), read_only=True) as image:
                digest = hashlib.sha256()
                size = image.size()
                for offset in range(0, size, 8 << 20):
                    digest.update(image.read(offset, min(8 << 20, size - offset)))
            print(json.dumps({"sha256": digest.hexdigest(), "size": size}))
        else:
            with rbd.Image(ioctx, args["image"], snapshot=args.get("snapshot"), read_only=True) as image:
                print(json.dumps({"chunks": [[o, image.read(o, n).decode("latin-1")] for o, n in args["reads"]]}))
    finally:
        ioctx.close()
finally:
    cluster.shutdown()
"""


def _rbd_python(openstack_lab: Any, ceph_lab: Any, payload: Dict[str, Any], timeout: float = 120) -> Dict[str, Any]:
    payload = dict({"pool": ceph_lab.volumes_pool}, **payload, conf=str(ceph_lab.conf),
                   keyring=str(ceph_lab.admin_keyring))
    proc = subprocess.run([openstack_lab.python, "-c", _RBD_SCRIPT, json.dumps(payload)], capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"rbd helper failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rbd_write(openstack_lab: Any, ceph_lab: Any, image: str, chunks: Dict[int, str]) -> None:
    _rbd_python(openstack_lab, ceph_lab, {"op": "write", "image": image, "chunks": sorted(chunks.items())})


def interrupt_snap_removal(openstack_lab: Any, ceph_lab: Any, pool: str, image: str, snap: str) -> str:
    """Leave ``pool/image@snap`` (made when missing) as a removal SIGKILLed after librbd's first step leaves it: in
    the trash namespace under a generated name, which it returns."""
    out = _rbd_python(openstack_lab, ceph_lab, {"op": "interrupt_snap_removal", "pool": pool, "image": image,
                                                "snap": snap})
    assert (out["namespace"], out["original_name"]) == (2, snap), out
    return str(out["name"])


def rbd_all_snaps(openstack_lab: Any, ceph_lab: Any, pool: str, image: str) -> List[Tuple[str, int]]:
    """(name, librbd namespace) of every snapshot of ``pool/image``, the trash namespace's too."""
    out = _rbd_python(openstack_lab, ceph_lab, {"op": "all_snaps", "pool": pool, "image": image})
    return sorted((str(s["name"]), int(s["namespace"])) for s in out["snaps"])


def rbd_sha256(openstack_lab: Any, ceph_lab: Any, image: str, snapshot: Optional[str] = None) -> str:
    """The sha256 of an RBD image's (or snapshot's) whole content, read through librados."""
    return _rbd_python(openstack_lab, ceph_lab, {"op": "sha256", "image": image, "snapshot": snapshot},
                       timeout=300)["sha256"]


def rbd_read(openstack_lab: Any, ceph_lab: Any, image: str, snapshot: Optional[str],
             reads: Dict[int, int]) -> Dict[int, str]:
    got = _rbd_python(openstack_lab, ceph_lab, {"op": "read", "image": image, "snapshot": snapshot,
                                                "reads": sorted(reads.items())})
    return {int(offset): text for offset, text in got["chunks"]}


_ADMIN_METADATA_SCRIPT = r"""
import configparser, json, sys
import sqlalchemy
conf = configparser.ConfigParser(interpolation=None, strict=False)
conf.read(sys.argv[1])
engine = sqlalchemy.create_engine(conf.get("database", "connection"))
with engine.connect() as db:
    rows = db.execute(sqlalchemy.text("SELECT key, value FROM volume_admin_metadata WHERE volume_id = :id "
                                      "AND deleted = false"), {"id": sys.argv[2]}).fetchall()
print(json.dumps(dict((key, value) for key, value in rows)))
"""


def cinder_admin_metadata(openstack_lab: Any, volume_id: str) -> Dict[str, str]:
    """A volume's admin metadata as Cinder stores it (the API does not show it): for NFS volumes ``format``
    (the active file's format) and, once the volume has had snapshots, ``base_format`` (volume-<id>'s)."""
    proc = subprocess.run([openstack_lab.python, "-c", _ADMIN_METADATA_SCRIPT, openstack_lab.cinder_conf, volume_id],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"reading Cinder's admin metadata failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class ModuleRunner:
    """Runs one volsnap.openstack module task against the lab cloud.

    ``through_ansible=True``: through real ansible-playbook (one play per call). Otherwise the module's own code
    path is run directly (ansible_run.run_module: the same arguments, check mode and diff, the module's JSON
    result), which saves ansible-playbook's start-up for cases about the module's behaviour; every module these
    tests drive keeps tests that go through ansible-playbook.
    """

    def __init__(self, workdir: Path, openstack_lab: Any, through_ansible: bool = False) -> None:
        self.workdir = workdir
        self.lab = openstack_lab
        self.through_ansible = through_ansible
        self.count = 0

    def __call__(self, module: str, args: Dict[str, Any], check: bool = False, diff: bool = False,
                 cloud: Optional[str] = None) -> Dict[str, Any]:
        self.count += 1
        workdir = self.workdir / f"run{self.count:03d}"
        workdir.mkdir(parents=True)
        args = dict(args)
        args.setdefault("cloud", cloud or self.lab.cloud)
        if not self.through_ansible:
            return run_module(workdir, module, args, check=check, diff=diff, python=sys.executable,
                              env_extra=self.lab.env())
        task = {"name": f"{module} {self.count}", f"volsnap.openstack.{module}": args, "register": "result",
                "ignore_errors": True}
        res = run_tasks(workdir, [task], ["result"], check=check, diff=diff, python=sys.executable,
                        env_extra=self.lab.env())
        if "result" not in res.results:
            raise AssertionError(f"ansible-playbook gave no result (rc {res.rc}):\n{res.output[-6000:]}")
        result = res["result"]
        result["_output"] = res.output
        return result
