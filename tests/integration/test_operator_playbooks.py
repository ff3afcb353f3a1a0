"""playbooks/upload_volume_to_image.yml and playbooks/cleanup.yml through the real ansible-playbook.

The RBD part runs against the lab's real Ceph, Cinder and Glance with the lab's Python (openstacksdk +
Debian's rados/rbd bindings) as the module interpreter: one 1 GiB volume holding a few MiB of data is
uploaded by clone and by copy (by id and by name), rerun without change, checked in check mode (no Glance
image and no Ceph snapshot made), its data compared with what Glance serves; then the clone image is deleted
in Glance directly and cleanup.yml (check mode first) removes the volume snapshot Glance left behind and
deletes the copy image. The NFS part finishes an interrupted (SIGKILLed) snapshot delete and deletes a
listed snapshot in a share directory, with the host's system Python as on a storage node.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import yaml

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
from ansible_run import COLLECTION_ROOT, HOST_PYTHON, ansible_playbook, collections_path, subprocess_runner
from openstack_helpers import make_volume, rbd_read, rbd_sha256, rbd_snaps, rbd_write, remove_volume

MIB = 1 << 20
# text written into the volume at these offsets (the rest of the 1 GiB stays unallocated)
CHUNKS = {0: "volsnap operator playbooks " * 4096, 300 * MIB + 4096: "middle " * 1000,
          (1 << 30) - 8192: "end of the volume " * 400}


class Playbooks:
    """Runs the collection's playbooks with an inventory of the lab's localhost (and an NFS host)."""

    def __init__(self, workdir: Path, module_python: str, env_extra: Dict[str, str]) -> None:
        self.workdir = workdir
        self.module_python = module_python
        self.env_extra = env_extra
        self.runs = 0

    def run(self, playbook: str, extra: Dict[str, Any], check: bool = False) -> str:
        self.runs += 1
        work = self.workdir / f"run{self.runs:02d}"
        work.mkdir(parents=True)
        inventory = work / "inventory.ini"
        inventory.write_text(
            f"localhost ansible_connection=local ansible_python_interpreter={self.module_python}\n"
            f"[cinder_volume]\nnfs-node ansible_connection=local ansible_python_interpreter={HOST_PYTHON}\n")
        extra_file = work / "extra.yml"
        extra_file.write_text(yaml.safe_dump(extra))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"),
                   **self.env_extra)
        argv = [ansible_playbook(), "-i", str(inventory), str(COLLECTION_ROOT / "playbooks" / playbook),
                "-e", f"@{extra_file}"] + (["--check"] if check else [])
        proc = subprocess.run(argv, cwd=str(work), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
        (work / "output.txt").write_text(proc.stdout)
        assert proc.returncode == 0, f"{playbook} failed (rc {proc.returncode}):\n{proc.stdout[-8000:]}"
        return proc.stdout


def recap(output: str, host: str) -> Dict[str, int]:
    lines = [line for line in output.splitlines() if line.startswith(f"{host} ") and "ok=" in line]
    assert lines, f"no recap line for {host}:\n{output[-3000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[-1])}


def messages(output: str) -> List[str]:
    """The msg of every debug task, decoded."""
    return [json.loads(f'"{m}"') for m in re.findall(r'^\s*"msg": "(.*)"\s*$', output, re.MULTILINE)]


def one(msgs: List[str], start: str) -> str:
    found = [m for m in msgs if m.startswith(start)]
    assert len(found) == 1, f"expected one report line starting with {start!r}: {msgs}"
    return found[0]


# --------------------------------------------------------------------------- RBD: upload and cleanup


class Stack:
    def __init__(self, ceph: Any, stack: Any) -> None:
        self.ceph = ceph
        self.stack = stack
        self.conn = stack.connection()
        self.tag = f"volsnap-oppb-{uuid.uuid4().hex[:8]}"
        self.volumes: List[str] = []

    def images(self) -> Dict[str, Dict[str, Any]]:
        """Glance images of this test (name starts with the tag), by id."""
        resp = self.conn.image.get("/images", params={"limit": 1000}, raise_exc=False)
        assert resp.status_code == 200, resp.text
        found = {}
        body = resp.json()
        while True:
            found.update({i["id"]: i for i in body["images"] if (i.get("name") or "").startswith(self.tag)})
            if not body.get("next"):
                return found
            resp = self.conn.image.get(body["next"].replace("/v2", "", 1), raise_exc=False)
            assert resp.status_code == 200, resp.text
            body = resp.json()

    def image(self, image_id: str) -> Optional[Dict[str, Any]]:
        resp = self.conn.image.get(f"/images/{image_id}", raise_exc=False)
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, resp.text
        return resp.json()

    def image_sha(self, image_id: str) -> str:
        resp = self.conn.image.get(f"/images/{image_id}/file", stream=True, raise_exc=False)
        assert resp.status_code == 200, f"download of {image_id}: HTTP {resp.status_code} {resp.text[:300]}"
        h = hashlib.sha256()
        for chunk in resp.iter_content(8 * MIB):
            h.update(chunk)
        return h.hexdigest()

    def volume_sha(self, volume_id: str) -> str:
        return rbd_sha256(self.stack, self.ceph, f"volume-{volume_id}")

    def delete_image(self, image_id: str) -> int:
        return self.conn.image.delete(f"/images/{image_id}", raise_exc=False).status_code


@pytest.fixture
def stack(ceph_lab: Any, openstack_lab: Any) -> Iterator[Stack]:
    # The clone path's deployment requirement (rbd_image_clone_upload's docs): Glance's user reads the volume pool.
    caps = json.loads(ceph_lab.ceph("auth", "get", f"client.{ceph_lab.glance_user}", "--format", "json"))[0]["caps"]
    if f"pool={ceph_lab.volumes_pool}" not in caps.get("osd", ""):
        pytest.fail(f"the lab's client.{ceph_lab.glance_user} cannot read pool {ceph_lab.volumes_pool} (osd caps "
                    f"{caps.get('osd')!r}): the clone path needs it; restart the lab (tests/lab/ceph.sh sets it)")
    helper = Stack(ceph_lab, openstack_lab)
    yield helper
    problems = []
    try:
        for image_id in helper.images():
            if helper.delete_image(image_id) not in (204, 404):
                problems.append(f"image {image_id} could not be deleted")
    except Exception as exc:  # keep going: the volume must go too
        problems.append(f"images named {helper.tag}*: {exc}")
    for volume_id in helper.volumes:
        problems += remove_volume(helper.conn, ceph_lab, volume_id)
    assert not problems, problems


def test_operator_playbooks_upload_and_cleanup(stack: Stack, tmp_path: Path) -> None:
    ceph = stack.ceph
    books = Playbooks(tmp_path, stack.stack.python, stack.stack.env())
    volume = make_volume(stack.conn, stack.stack, size=1, name=stack.tag)
    stack.volumes.append(volume.id)
    rbd_write(stack.stack, ceph, f"volume-{volume.id}", CHUNKS)
    upload_vars = {
        "upload_volume_to_image_cloud": stack.stack.cloud,
        "upload_volume_to_image_ceph_conf": str(ceph.conf),
        "upload_volume_to_image_ceph_user": ceph.cinder_user,
        "upload_volume_to_image_keyring": str(ceph.cinder_keyring),
        "upload_volume_to_image_name_pattern": f"{stack.tag}-{{volume}}",
        "upload_volume_to_image_properties": {"os_distro": "debian"},
        "upload_volume_to_image_poll_interval": 1,   # async_status polls the upload jobs every second
        "upload_volume_to_image_list": [
            {"volume": volume.id, "clone": True, "visibility": "private"},          # by id, clone path
            {"volume": stack.tag, "image_name": f"{stack.tag}-copy"},            # by name, copy (default)
        ]}
    clone_name, copy_name = f"{stack.tag}-{volume.id}", f"{stack.tag}-copy"
    snaps_before = rbd_snaps(ceph, volume.id)
    assert snaps_before == {}

    # check mode: what would happen, nothing made
    checked = books.run("upload_volume_to_image.yml", upload_vars, check=True)
    # each upload is a job of its own (async + async_status): one changed task per volume uploaded
    assert recap(checked, "localhost")["changed"] == 2
    msgs = messages(checked)
    assert "would upload, path clone, image (new)" in one(msgs, f"{volume.id}:")
    assert "would upload, path copy, image (new)" in one(msgs, f"{stack.tag}:")
    assert "enable_clone_optimization is false" in one(msgs, f"{stack.tag}:")
    assert stack.images() == {}
    assert rbd_snaps(ceph, volume.id) == snaps_before

    # the uploads
    done = books.run("upload_volume_to_image.yml", upload_vars)
    assert recap(done, "localhost")["changed"] == 2
    msgs = messages(done)
    images = {i["name"]: i for i in stack.images().values()}
    assert set(images) == {clone_name, copy_name}
    clone, copy = images[clone_name], images[copy_name]
    assert clone["status"] == copy["status"] == "active"
    assert clone["volsnap_upload_path"] == "clone" and copy["volsnap_upload_path"] == "copy"
    assert clone["visibility"] == "private" and clone["os_distro"] == "debian" and copy["os_distro"] == "debian"
    line = one(msgs, f"{volume.id}:")
    assert f"uploaded, path clone, image {clone['id']}," in line and f"is rbd (pool {ceph.images_pool})" in line
    assert re.search(r", \d+(\.\d+)? s; why: ", line), line
    assert f"uploaded, path copy, image {copy['id']}," in one(msgs, f"{stack.tag}:")
    assert list(rbd_snaps(ceph, volume.id)) == [f"{clone['id']}.clone_snap"]

    # the data Glance serves is the volume's, by both paths
    volume_sha = stack.volume_sha(volume.id)
    assert stack.image_sha(clone["id"]) == volume_sha
    assert stack.image_sha(copy["id"]) == volume_sha

    # rerun: no change
    snaps_after = rbd_snaps(ceph, volume.id)
    again = books.run("upload_volume_to_image.yml", upload_vars)
    assert recap(again, "localhost")["changed"] == 0
    msgs = messages(again)
    assert f"no change, path clone, image {clone['id']}," in one(msgs, f"{volume.id}:")
    assert f"no change, path copy, image {copy['id']}," in one(msgs, f"{stack.tag}:")
    assert set(stack.images()) == {clone["id"], copy["id"]}
    assert rbd_snaps(ceph, volume.id) == snaps_after

    # Glance deletes the clone image; the volume snapshot it hung on stays behind, and cleanup.yml removes it.
    # The lab is shared: another user's state=cleanup sweep of the pool may remove that snapshot first. The
    # scenario is then made again (a new clone image), up to three times, so this test observes its own run.
    cleanup_vars = {"cleanup_cloud": stack.stack.cloud, "cleanup_ceph_conf": str(ceph.conf),
                    "cleanup_ceph_user": ceph.cinder_user, "cleanup_keyring": str(ceph.cinder_keyring),
                    "cleanup_volume_pools": [ceph.volumes_pool], "cleanup_images": [copy_name]}
    copy_alive = True
    swept_by_others = []
    for attempt in range(3):
        if attempt:
            made = books.run("upload_volume_to_image.yml", dict(upload_vars, upload_volume_to_image_list=[
                upload_vars["upload_volume_to_image_list"][0]]))
            assert recap(made, "localhost")["changed"] == 1
            clone = {i["name"]: i for i in stack.images().values()}[clone_name]
        clone_snap = f"{clone['id']}.clone_snap"
        assert stack.delete_image(clone["id"]) == 204
        leftover = f"{ceph.volumes_pool}/volume-{volume.id}@{clone_snap}"
        assert list(rbd_snaps(ceph, volume.id)) == [clone_snap]

        checked = books.run("cleanup.yml", cleanup_vars, check=True)
        if clone_snap not in rbd_snaps(ceph, volume.id):
            swept_by_others.append(leftover)
            continue
        assert recap(checked, "localhost")["changed"] >= 1
        msgs = messages(checked)
        pool_line = one(msgs, f"pool {ceph.volumes_pool}:")
        # (snapshots other users of the shared lab left behind are listed too)
        assert "; would remove " in pool_line
        assert f"remove {leftover} (Glance image {clone['id']} no longer exists)" in pool_line
        if copy_alive:
            assert f"would delete Glance image {copy['id']}" in one(msgs, f"image {copy_name}:")
            assert set(stack.images()) == {copy["id"]}

        cleaned = books.run("cleanup.yml", cleanup_vars)
        msgs = messages(cleaned)
        if copy_alive:
            assert f"removed Glance image {copy['id']}" in one(msgs, f"image {copy_name}:")
            assert (stack.image(copy["id"]) or {"status": "deleted"})["status"] == "deleted"
            copy_alive = False
        assert rbd_snaps(ceph, volume.id) == {}
        if leftover not in one(msgs, f"pool {ceph.volumes_pool}:"):
            swept_by_others.append(leftover)
            continue
        assert recap(cleaned, "localhost")["changed"] >= 1
        break
    else:
        pytest.fail(f"another state=cleanup sweep of pool {ceph.volumes_pool} removed this test's leftover snapshot "
                    f"before cleanup.yml could, three times: {swept_by_others}")
    assert rbd_read(stack.stack, ceph, f"volume-{volume.id}", None, {o: len(t) for o, t in CHUNKS.items()}) == CHUNKS

    # rerun: nothing of this test is left to remove (other users of the lab may leave their own leftovers:
    # only then may the pool sweep report a change, and never one of this test's objects)
    again = books.run("cleanup.yml", cleanup_vars)
    msgs = messages(again)
    assert one(msgs, f"image {copy_name}:").endswith("nothing to delete")
    pool_line = one(msgs, f"pool {ceph.volumes_pool}:")
    assert volume.id not in pool_line
    if pool_line.startswith(f"pool {ceph.volumes_pool}: nothing left behind"):
        assert recap(again, "localhost")["changed"] == 0, again[-4000:]


# --------------------------------------------------------------------------- NFS: interrupted and listed snapshots

VOLUMES = ["0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f", "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f"]
SNAPS = ["11111111-2222-4333-8444-555555555555", "22222222-2222-4333-8444-555555555555"]

KILLED_DELETE = textwrap.dedent("""
    import os, signal, sys
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import volume as _volume
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
    sys.path.insert(0, sys.argv[3])
    from ansible_run import subprocess_runner
    original = _volume.Journal.advance
    def advance(self, done, stage, write=True):
        original(self, done, stage, write)
        if done == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # the journal records step 1; the delete is half done
    _volume.Journal.advance = advance
    VolumeSnapshot(Request(sys.argv[1], sys.argv[2], state='absent', mode='offline'), QemuImg(subprocess_runner),
                   lambda: None, False).run()
""")


def snapshot(share: Path, volume_id: str, snapshot_id: str) -> None:
    VolumeSnapshot(Request(str(share / f"volume-{volume_id}"), snapshot_id, state="present", mode="offline"),
                   QemuImg(subprocess_runner), lambda: None, False).run()


def listing(share: Path) -> Dict[str, int]:
    """Files and mtimes, without the per-volume lock files (taken, empty, even in check mode)."""
    return {p.name: p.stat().st_mtime_ns for p in share.iterdir() if not p.name.startswith(".volsnap-nfs-")}


def info(share: Path, volume_id: str) -> Dict[str, str]:
    return json.loads((share / f"volume-{volume_id}.info").read_text())


def test_operator_playbooks_cleanup_nfs(tmp_path: Path, qemu_img: str) -> None:
    share = tmp_path / "share"
    share.mkdir()
    for volume_id in VOLUMES:
        subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(share / f"volume-{volume_id}"), "16M"], check=True)
        for snap in SNAPS:
            snapshot(share, volume_id, snap)
    # a delete of SNAPS[1] on VOLUMES[0] killed half-way: its journal stays beside the volume
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([collections_path()] + [p for p in sys.path if p]))
    proc = subprocess.run([sys.executable, "-c", KILLED_DELETE, str(share / f"volume-{VOLUMES[0]}"), SNAPS[1],
                           str(Path(__file__).parent)], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    journal = share / f".volsnap-volume-{VOLUMES[0]}.journal"
    assert journal.exists()

    books = Playbooks(tmp_path / "runs", HOST_PYTHON, {})
    extra = {"cleanup_volume_pools": [], "cleanup_nfs_shares": [str(share)], "cleanup_nfs_share": str(share),
             "cleanup_nfs_snapshots": [{"volume_id": VOLUMES[1], "snapshot_id": SNAPS[0]},
                                       {"volume_id": VOLUMES[0], "snapshot_id": SNAPS[0]}]}
    before = listing(share)
    checked = books.run("cleanup.yml", extra, check=True)
    assert recap(checked, "nfs-node")["changed"] >= 1
    msgs = messages(checked)
    # state=resumed found the operation from the journal beside the volume: the delete of SNAPS[1]
    assert one(msgs, f"{VOLUMES[0]} finish interrupted delete {SNAPS[1]}:").startswith(
        f"{VOLUMES[0]} finish interrupted delete {SNAPS[1]}: would run: ")
    assert "would run: " in one(msgs, f"{VOLUMES[1]} delete {SNAPS[0]}:")
    assert one(msgs, f"{VOLUMES[0]} delete {SNAPS[0]}:").endswith("after the interrupted operation is finished")
    assert listing(share) == before

    done = books.run("cleanup.yml", extra)
    assert recap(done, "nfs-node")["changed"] >= 1
    assert not journal.exists()
    assert info(share, VOLUMES[0]) == {"active": f"volume-{VOLUMES[0]}"}
    assert info(share, VOLUMES[1]) == {"active": f"volume-{VOLUMES[1]}.{SNAPS[1]}",
                                       SNAPS[1]: f"volume-{VOLUMES[1]}.{SNAPS[1]}"}
    for volume_id, snap in ((VOLUMES[0], SNAPS[0]), (VOLUMES[0], SNAPS[1]), (VOLUMES[1], SNAPS[0])):
        assert not (share / f"volume-{volume_id}.{snap}").exists()

    again = books.run("cleanup.yml", extra)
    assert recap(again, "nfs-node")["changed"] == 0
    assert recap(again, "localhost")["changed"] == 0


LOCK_VOLUMES = {"kept_volume": "0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f", "deleted": "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
                "held": "6e3d9f20-4b5c-4d7e-8f90-8b7c6d5e4f30", "planted_link": "7f4e0a31-5c6d-4e8f-9a01-9c8d7e6f5a41",
                "snapshot_left": "8a5f1b42-6d7e-4f90-8b12-ad9e8f7a6b52"}


def lock(share: Path, volume_id: str) -> Path:
    return share / f".volsnap-nfs-{volume_id}.lock"


def test_operator_playbooks_cleanup_removes_lock_files_of_deleted_volumes(tmp_path: Path, qemu_img: str) -> None:
    """cleanup.yml removes the lock file of a volume Cinder deleted, only when no process holds it; never a link."""
    import fcntl

    share, outside = tmp_path / "share", tmp_path / "outside"
    share.mkdir()
    outside.mkdir()
    for volume_id in LOCK_VOLUMES.values():
        subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(share / f"volume-{volume_id}"), "16M"], check=True)
        snapshot(share, volume_id, SNAPS[0])  # leaves the volume's lock file
        assert lock(share, volume_id).is_file()
    # Cinder deletes volumes: every file of the volume goes, the lock file stays
    for case in ("deleted", "held", "planted_link", "snapshot_left"):
        volume_id = LOCK_VOLUMES[case]
        for path in share.glob(f"volume-{volume_id}*"):
            if not (case == "snapshot_left" and path.name.endswith(SNAPS[0])):
                path.unlink()
    stale = share / f".volume-{LOCK_VOLUMES['deleted']}.info.0123456789abcdef.volsnap-tmp"
    stale.write_text("{}")
    (outside / "target").write_text("outside")
    link = lock(share, LOCK_VOLUMES["planted_link"])
    link.unlink()
    link.symlink_to(outside / "target")
    held = os.open(str(lock(share, LOCK_VOLUMES["held"])), os.O_RDWR)
    fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another operation holds it
    books = Playbooks(tmp_path / "runs", HOST_PYTHON, {})
    extra = {"cleanup_volume_pools": [], "cleanup_nfs_shares": [str(share)]}
    try:
        before = {p.name: p.lstat().st_mtime_ns for p in share.iterdir()}
        checked = books.run("cleanup.yml", extra, check=True)
        msgs = messages(checked)
        assert {p.name: p.lstat().st_mtime_ns for p in share.iterdir()} == before
        line = one(msgs, f"lock {lock(share, LOCK_VOLUMES['deleted'])}:")
        assert line.startswith(f"lock {lock(share, LOCK_VOLUMES['deleted'])}: would remove {stale}, "
                               f"{lock(share, LOCK_VOLUMES['deleted'])} ("), line
        assert "another process holds the lock" in one(msgs, f"lock {lock(share, LOCK_VOLUMES['held'])}:")
        assert "still has files" in one(msgs, f"lock {lock(share, LOCK_VOLUMES['kept_volume'])}:")
        assert "nothing to remove" in one(msgs, f"lock {link}:") and "symbolic link" in one(msgs, f"lock {link}:")
        assert "still has files" in one(msgs, f"lock {lock(share, LOCK_VOLUMES['snapshot_left'])}:")

        done = books.run("cleanup.yml", extra)
        assert recap(done, "nfs-node")["changed"] >= 1
        assert not lock(share, LOCK_VOLUMES["deleted"]).exists() and not stale.exists()
        assert lock(share, LOCK_VOLUMES["held"]).is_file(), "a held lock file was removed"
        assert os.fstat(held).st_ino == lock(share, LOCK_VOLUMES["held"]).stat().st_ino
        assert lock(share, LOCK_VOLUMES["kept_volume"]).is_file()
        assert lock(share, LOCK_VOLUMES["snapshot_left"]).is_file()
        assert link.is_symlink() and (outside / "target").read_text() == "outside"
    finally:
        os.close(held)  # releases the lock
    # released, it goes on the next run; the volume that exists keeps its lock file
    again = books.run("cleanup.yml", extra)
    assert not lock(share, LOCK_VOLUMES["held"]).exists()
    assert lock(share, LOCK_VOLUMES["kept_volume"]).is_file() and link.is_symlink()
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    final = books.run("cleanup.yml", extra)
    assert recap(final, "nfs-node")["changed"] == 0, final[-3000:]
    assert "removed" in again
