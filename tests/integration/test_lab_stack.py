"""Smoke tests proving the Ceph + OpenStack lab is real (tests/lab/lab.sh, tests/lab/stack.py).

Each test makes its own resources (named volsnap-test-lab-*) and removes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from openstack_helpers import uploaded_image


def _name(kind: str) -> str:
    return f"volsnap-test-lab-{kind}-{uuid.uuid4().hex[:8]}"


def _rbd_images(ceph_lab, pool: str) -> set[str]:
    return set(json.loads(ceph_lab.rbd("ls", pool, "--format", "json")))


def _wait(what: str, check, timeout: float = 120.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- Ceph


def test_ceph_answers_and_stores_objects(ceph_lab, tmp_path: Path) -> None:
    health = json.loads(ceph_lab.ceph("health", "--format", "json"))
    assert health["status"] in ("HEALTH_OK", "HEALTH_WARN"), health
    assert ceph_lab.ceph("fsid").strip() == ceph_lab.fsid
    pools = set(json.loads(ceph_lab.ceph("osd", "pool", "ls", "--format", "json")))
    assert {ceph_lab.volumes_pool, ceph_lab.images_pool} <= pools

    payload = os.urandom(256 * 1024)
    src = tmp_path / "in.bin"
    out = tmp_path / "out.bin"
    src.write_bytes(payload)
    obj = _name("obj")
    ceph_lab.rados("-p", ceph_lab.volumes_pool, "put", obj, str(src))
    try:
        ceph_lab.rados("-p", ceph_lab.volumes_pool, "get", obj, str(out))
        assert out.read_bytes() == payload
        stat = ceph_lab.rados("-p", ceph_lab.volumes_pool, "stat", obj)
        assert f"size {len(payload)}" in stat
    finally:
        ceph_lab.rados("-p", ceph_lab.volumes_pool, "rm", obj)
    listed = ceph_lab.rados("-p", ceph_lab.volumes_pool, "ls").split()
    assert obj not in listed


def _rados_as(ceph_lab, user: str, keyring: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rados", "--conf", ceph_lab.conf, "--id", user, "--keyring", keyring, *args],
                          check=False, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_ceph_client_caps(ceph_lab, tmp_path: Path) -> None:
    """client.cinder writes volumes and images; client.glance writes images but not volumes."""
    src = tmp_path / "obj"
    src.write_bytes(b"volsnap")
    cases = [
        (ceph_lab.cinder_user, ceph_lab.cinder_keyring, ceph_lab.volumes_pool, True),
        (ceph_lab.cinder_user, ceph_lab.cinder_keyring, ceph_lab.images_pool, True),
        (ceph_lab.glance_user, ceph_lab.glance_keyring, ceph_lab.images_pool, True),
        (ceph_lab.glance_user, ceph_lab.glance_keyring, ceph_lab.volumes_pool, False),
    ]
    for user, keyring, pool, allowed in cases:
        obj = _name(f"caps-{user}")
        proc = _rados_as(ceph_lab, user, keyring, "-p", pool, "put", obj, str(src))
        try:
            if allowed:
                assert proc.returncode == 0, f"client.{user} put into {pool}: {proc.stderr}"
            else:
                assert proc.returncode != 0, f"client.{user} could write into {pool}"
                assert "Operation not permitted" in proc.stderr or "EPERM" in proc.stderr, proc.stderr
        finally:
            if allowed and proc.returncode == 0:
                ceph_lab.rados("-p", pool, "rm", obj)


# --------------------------------------------------------------------------- OpenStack


def test_lab_python_has_sdk_and_ceph_bindings(openstack_lab, ceph_lab) -> None:
    """The services venv (module interpreter for modules needing both) imports openstacksdk, rados and rbd."""
    code = (
        "import json, sys, openstack, rados, rbd\n"
        "c = rados.Rados(conffile=sys.argv[1], rados_id=sys.argv[2], conf={'keyring': sys.argv[3]})\n"
        "c.connect(timeout=30)\n"
        "with c.open_ioctx(sys.argv[4]) as io:\n"
        "    names = rbd.RBD().list(io)\n"
        "print(json.dumps({'fsid': c.get_fsid(), 'version': sys.version_info[:2], 'n': len(names)}))\n"
        "c.shutdown()\n"
    )
    proc = subprocess.run([openstack_lab.python, "-c", code, ceph_lab.conf, ceph_lab.cinder_user,
                           ceph_lab.cinder_keyring, ceph_lab.volumes_pool],
                          check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["fsid"] == ceph_lab.fsid
    assert out["version"] == [3, 11]


def test_cinder_volume_lives_in_rbd(openstack_lab, ceph_lab) -> None:
    conn = openstack_lab.connection()
    vtype = conn.block_storage.find_type(openstack_lab.volume_type, ignore_missing=False)
    assert vtype.extra_specs.get("volume_backend_name") == openstack_lab.volume_backend_name
    volume = conn.block_storage.create_volume(size=1, name=_name("vol"), volume_type=openstack_lab.volume_type)
    try:
        volume = conn.block_storage.wait_for_status(volume, "available", failures=["error"], interval=0.25, wait=180)
        assert volume.host == openstack_lab.cinder_pool
        rbd_name = f"volume-{volume.id}"
        assert rbd_name in _rbd_images(ceph_lab, ceph_lab.volumes_pool)
        info = json.loads(ceph_lab.rbd("info", f"{ceph_lab.volumes_pool}/{rbd_name}", "--format", "json"))
        assert info["size"] == 1024 ** 3
    finally:
        conn.block_storage.delete_volume(volume, ignore_missing=True)
        conn.block_storage.wait_for_delete(volume, interval=0.25, wait=180)
    _wait(f"rbd image volume-{volume.id} to be removed",
          lambda: f"volume-{volume.id}" not in _rbd_images(ceph_lab, ceph_lab.volumes_pool))


def test_cinder_nfs_volume_lives_in_the_export(openstack_lab) -> None:
    """The 'nfs' backend: NfsDriver on the bind-mounted lab share; the volume file appears in the export."""
    export = Path(openstack_lab.nfs_export)
    mounts = {line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if line.strip()}
    assert openstack_lab.nfs_mount in mounts
    assert os.path.samefile(openstack_lab.nfs_mount, export)
    conn = openstack_lab.connection()
    vtype = conn.block_storage.find_type(openstack_lab.nfs_volume_type)
    assert vtype is not None and vtype.extra_specs["volume_backend_name"] == openstack_lab.nfs_backend_name
    pools = {p.name for p in conn.block_storage.backend_pools()}
    assert openstack_lab.nfs_cinder_pool in pools
    volume = conn.block_storage.create_volume(size=1, volume_type=openstack_lab.nfs_volume_type, name=_name("nfs"))
    path = export / f"volume-{volume.id}"
    try:
        volume = conn.block_storage.wait_for_status(volume, "available", failures=["error"], interval=0.25, wait=180)
        assert volume.host == openstack_lab.nfs_cinder_pool
        assert path.is_file()
        assert (Path(openstack_lab.nfs_mount) / path.name).is_file()
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], check=True,
                                         capture_output=True, text=True).stdout)
        assert info["virtual-size"] == 1024 ** 3
        # raw (the lab's nfs_qcow2_volumes = false): a sparse file of the volume's size; qcow2 after a playbook
        assert info["format"] in ("raw", "qcow2")
        if info["format"] == "raw":
            assert path.stat().st_size == 1024 ** 3
    finally:
        conn.block_storage.delete_volume(volume, ignore_missing=True)
        conn.block_storage.wait_for_delete(volume, interval=0.25, wait=180)
    assert not path.exists()


def test_glance_stores_detail(openstack_lab, ceph_lab) -> None:
    conn = openstack_lab.connection()
    resp = conn.image.get("/info/stores/detail")
    assert resp.status_code == 200, resp.text
    stores = {store["id"]: store for store in resp.json()["stores"]}
    assert set(openstack_lab.stores) <= set(stores)
    rbd_store = stores[openstack_lab.default_store]
    assert rbd_store["type"] == "rbd"
    assert str(rbd_store.get("default")).lower() == "true"
    assert rbd_store["properties"]["pool"] == ceph_lab.images_pool
    assert rbd_store["properties"]["fsid"] == ceph_lab.fsid
    assert stores["file"]["type"] == "file"
    # thin provisioning: sparse uploads stay sparse (the rbd_image_clone_upload benchmark relies on it)
    assert rbd_store["properties"].get("thin_provisioning") is True, rbd_store
    assert stores["file"]["properties"].get("thin_provisioning") is True, stores["file"]


def test_glance_reads_the_volumes_pool(ceph_lab) -> None:
    """Glance's user reads (never writes) the volumes pool, as clone-optimization deployments need."""
    caps = json.loads(ceph_lab.ceph("auth", "get", "client.glance", "--format", "json"))[0]["caps"]
    assert f"profile rbd-read-only pool={ceph_lab.volumes_pool}" in caps["osd"], caps
    assert f"profile rbd pool={ceph_lab.images_pool}" in caps["osd"], caps


def test_glance_member_cannot_see_stores_detail(openstack_lab) -> None:
    member = openstack_lab.connection(openstack_lab.member_cloud)
    assert member.current_project.name == openstack_lab.member_project
    listed = member.image.get("/info/stores")
    assert listed.status_code == 200, listed.text
    detail = member.image.get("/info/stores/detail")
    assert detail.status_code == 403, f"{detail.status_code}: {detail.text[:300]}"


def test_glance_upload_lands_in_rbd(openstack_lab, ceph_lab) -> None:
    conn = openstack_lab.connection()
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with uploaded_image(conn, payload) as image:
        assert image.size == len(payload)
        assert conn.image.get(f"/images/{image.id}").json()["stores"] == openstack_lab.default_store
        assert image.hash_algo == "sha512"
        assert image.hash_value == hashlib.sha512(payload).hexdigest()
        assert image.direct_url == f"rbd://{ceph_lab.fsid}/{ceph_lab.images_pool}/{image.id}/snap"
        assert image.id in _rbd_images(ceph_lab, ceph_lab.images_pool)
        snaps = json.loads(ceph_lab.rbd("snap", "ls", f"{ceph_lab.images_pool}/{image.id}", "--format", "json"))
        assert [s["name"] for s in snaps] == ["snap"]
        data = b"".join(conn.image.download_image(image, stream=True).iter_content(1024 * 1024))
        assert data == payload
    assert image.id not in _rbd_images(ceph_lab, ceph_lab.images_pool)


def test_glance_upload_to_file_store(openstack_lab) -> None:
    conn = openstack_lab.connection()
    stores = {store["id"]: store for store in conn.image.get("/info/stores/detail").json()["stores"]}
    data_dir = Path(stores["file"]["properties"]["data_dir"])
    payload = os.urandom(64 * 1024)
    with uploaded_image(conn, payload, store="file") as image:
        body = conn.image.get(f"/images/{image.id}").json()
        assert body["stores"] == "file"
        assert (data_dir / image.id).read_bytes() == payload
    assert not (data_dir / image.id).exists()


def test_glance_location_api_takes_rbd_url_from_service(openstack_lab, ceph_lab) -> None:
    """POST /v2/images/{id}/locations: an rbd:// URL is refused for admin, accepted for the service cloud."""
    rbd_name = _name("loc")
    spec = f"{ceph_lab.images_pool}/{rbd_name}"
    ceph_lab.rbd("create", spec, "--size", "4M")
    images = []
    try:
        ceph_lab.rbd("snap", "create", f"{spec}@snap")
        ceph_lab.rbd("snap", "protect", f"{spec}@snap")
        url = f"rbd://{ceph_lab.fsid}/{ceph_lab.images_pool}/{rbd_name}/snap"

        admin = openstack_lab.connection()
        image = admin.image.create_image(name=rbd_name, disk_format="raw", container_format="bare")
        images.append((admin, image))
        refused = admin.image.post(f"/images/{image.id}/locations", json={"url": url})
        assert refused.status_code == 403, refused.text

        service = openstack_lab.connection(openstack_lab.service_cloud)
        image = service.image.create_image(name=rbd_name, disk_format="raw", container_format="bare")
        images.append((service, image))
        accepted = service.image.post(f"/images/{image.id}/locations", json={"url": url})
        assert accepted.status_code == 202, accepted.text
        body = _wait(f"image {image.id} to become active",
                     lambda: (b := service.image.get(f"/images/{image.id}").json())["status"] == "active" and b)
        assert body["size"] == 4 * 1024 * 1024
        assert [loc["url"] for loc in body["locations"]] == [url]
    finally:
        for conn, image in images:
            conn.image.delete_image(image, ignore_missing=True)
        # Glance deletes the rbd image of a location it accepted; the refused one is still ours
        if rbd_name in _rbd_images(ceph_lab, ceph_lab.images_pool):
            ceph_lab.rbd("snap", "unprotect", f"{spec}@snap")
            ceph_lab.rbd("snap", "purge", spec)
            ceph_lab.rbd("rm", spec)
    assert rbd_name not in _rbd_images(ceph_lab, ceph_lab.images_pool)
