"""The operator playbooks (playbooks/*.yml) against the lab, through real ansible-playbook.

Inventory: <lab dir>/inventory.yml, written by ``lab.sh start openstack`` (localhost in ceph_mon,
cinder_volume and glance_api; the roles' variables point at the lab's files; restarts go through
``lab.sh restart``). Every test saves the lab's configuration files, keyrings and cephx caps first and
restores them (restarting what was restarted) at teardown, so later tests find the lab as it was.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ansible_run import COLLECTION_ROOT, ansible_playbook, collections_path, run_tasks
from openstack_helpers import cinder_admin_metadata, uploaded_image

PLAYBOOK_TIMEOUT = 900
# qemu-img info fields of a snapshot file compared between Cinder's NfsDriver and volume_snapshot
TOP_KEYS = ("format", "backing-filename", "backing-filename-format", "virtual-size", "cluster-size")


# --------------------------------------------------------------------------- helpers


@dataclass
class Run:
    rc: int
    output: str

    @property
    def recap(self) -> dict[str, int]:
        lines = [line for line in self.output.splitlines() if line.startswith("localhost ")]
        assert lines, f"no PLAY RECAP line for localhost:\n{self.output[-4000:]}"
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", lines[-1])}

    @property
    def changed(self) -> int:
        return self.recap["changed"]


def playbook(lab: Any, name: str, tmp_path: Path, *args: str) -> Run:
    """ansible-playbook -i <lab inventory> playbooks/<name>.yml ARGS (the collection's build copy)."""
    path = COLLECTION_ROOT / "playbooks" / f"{name}.yml"
    assert path.is_file(), f"{path} is missing"
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR="1",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
               ANSIBLE_DEPRECATION_WARNINGS="0", **lab.env())
    proc = subprocess.run([ansible_playbook(), "-i", lab.inventory, str(path), *args], cwd=str(tmp_path), env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=PLAYBOOK_TIMEOUT, check=False)
    return Run(proc.returncode, proc.stdout)


def ini_values(path: str, section: str) -> dict[str, str]:
    ini = configparser.RawConfigParser(strict=False, delimiters=("=",))
    ini.read(path, encoding="utf-8")
    return dict(ini.items(section)) if ini.has_section(section) else {}


def wait(what: str, check: Callable[[], Any], timeout: float = 180.0, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as err:  # keep polling, report the last error
            last = err
            result = None
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last}" if last else ""))


def qemu_info(path: Path) -> dict[str, Any]:
    proc = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True,
                          text=True)
    return json.loads(proc.stdout)


def cinder_services_up(conn: Any, hosts: list[str]) -> bool:
    services = {s.host: s for s in conn.block_storage.services(binary="cinder-volume")}
    return all(h in services and services[h].state == "up" and services[h].status == "enabled" for h in hosts)


@dataclass
class FileState:
    content: bytes
    mode: int
    uid: int
    gid: int

    @classmethod
    def read(cls, path: str) -> FileState:
        st = os.stat(path)
        return cls(Path(path).read_bytes(), st.st_mode & 0o7777, st.st_uid, st.st_gid)

    def restore(self, path: str) -> bool:
        """Put the file back as it was (atomically); True if it had changed."""
        if FileState.read(path) == self:
            return False
        tmp = f"{path}.volsnap-test-restore"
        with open(tmp, "wb") as handle:
            handle.write(self.content)
        os.chown(tmp, self.uid, self.gid)
        os.chmod(tmp, self.mode)
        os.replace(tmp, path)
        return True


# --------------------------------------------------------------------------- lab state


@contextlib.contextmanager
def exclusive(path: Path, timeout: float = 1800) -> Iterator[None]:
    """An exclusive flock on ``path``: one playbook test at a time changes the shared lab."""
    with open(path, "a", encoding="utf-8") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pytest.fail(f"another test run held {path} for {timeout:.0f}s", pytrace=False)
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def lab_state(openstack_lab: Any, ceph_lab: Any) -> Iterator[dict[str, FileState]]:
    """The lab as its templates make it, saved, and restored at teardown.

    Holds <lab dir>/operator-playbooks-test.lock (another run of these tests waits). Starts with
    ``lab.sh reset-config`` (options a playbook run left behind are reset, e.g. by a run that was killed),
    then saves cinder.conf, glance-api.conf, the cinder/glance keyrings and caps. At teardown a restored
    cinder.conf or keyring restarts cinder-volume, a restored glance-api.conf or glance keyring restarts
    Glance (lab.sh restart, which waits until the service is ready).
    """
    with exclusive(Path(openstack_lab.inventory).parent / "operator-playbooks-test.lock"):
        reset = subprocess.run(["bash", openstack_lab.lab_sh, "reset-config"], check=False, capture_output=True,
                               text=True, timeout=600, stdin=subprocess.DEVNULL)
        if reset.returncode != 0:
            pytest.fail(f"lab.sh reset-config exited {reset.returncode}: {reset.stderr[-4000:]}", pytrace=False)
        yield from _saved_and_restored(openstack_lab, ceph_lab)


def _saved_and_restored(openstack_lab: Any, ceph_lab: Any) -> Iterator[dict[str, FileState]]:
    files = {"cinder": openstack_lab.cinder_conf, "glance": openstack_lab.glance_conf,
             "cinder_keyring": ceph_lab.cinder_keyring, "glance_keyring": ceph_lab.glance_keyring}
    saved = {name: FileState.read(path) for name, path in files.items()}
    caps = {user: json.loads(ceph_lab.ceph("auth", "get", f"client.{user}", "--format", "json"))[0]["caps"]
            for user in (ceph_lab.cinder_user, ceph_lab.glance_user)}
    pids = {name: openstack_lab.service_pid(name) for name in ("cinder-volume", "glance")}
    yield saved
    errors = []
    restart = set()
    for name, path in files.items():
        try:
            if saved[name].restore(path):
                restart.add("glance" if name.startswith("glance") else "cinder-volume")
        except OSError as err:
            errors.append(f"restoring {path}: {err}")
    for user, user_caps in caps.items():
        now = json.loads(ceph_lab.ceph("auth", "get", f"client.{user}", "--format", "json"))[0]["caps"]
        if now != user_caps:
            args = [item for kind, cap in sorted(user_caps.items()) for item in (kind, cap)]
            ceph_lab.ceph("auth", "caps", f"client.{user}", *args)
            restart.add("glance" if user == ceph_lab.glance_user else "cinder-volume")
    # a service restarted by the test runs with the restored files only after one more restart
    for name, pid in pids.items():
        if openstack_lab.service_pid(name) != pid:
            restart.add(name)
    for name in sorted(restart):
        try:
            openstack_lab.restart(name)
        except Exception as err:
            errors.append(f"lab.sh restart {name}: {err}")
    if errors:
        pytest.fail("could not restore the lab: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def cinder_volumes(openstack_lab: Any) -> Iterator[list[Any]]:
    """Volumes (and their snapshots) the test appends are deleted through Cinder at teardown."""
    conn = openstack_lab.connection()
    made: list[Any] = []
    yield made
    for volume in made:
        with contextlib.suppress(Exception):
            for snap in conn.block_storage.snapshots(volume_id=volume.id):
                conn.block_storage.delete_snapshot(snap, ignore_missing=True)
                conn.block_storage.wait_for_delete(snap, interval=1, wait=120)
        with contextlib.suppress(Exception):
            conn.block_storage.delete_volume(volume, ignore_missing=True)
            conn.block_storage.wait_for_delete(volume, interval=1, wait=120)


def create_volume(conn: Any, made: list[Any], volume_type: str, name: str) -> Any:
    volume = conn.block_storage.create_volume(size=1, volume_type=volume_type, name=f"volsnap-test-{name}")
    made.append(volume)
    return conn.block_storage.wait_for_status(volume, "available", failures=["error"], interval=1, wait=180)


def check_lab_still_works(openstack_lab: Any, ceph_lab: Any, made: list[Any]) -> None:
    """Cinder creates an RBD volume; Glance takes an upload into its rbd store."""
    conn = openstack_lab.connection()
    volume = create_volume(conn, made, openstack_lab.volume_type, "rbd-after")
    assert f"volume-{volume.id}" in ceph_lab.rbd("ls", ceph_lab.volumes_pool).split()
    payload = os.urandom(1024 * 1024 + 3)
    with uploaded_image(conn, payload) as image:
        assert image.size == len(payload)
        assert image.id in ceph_lab.rbd("ls", ceph_lab.images_pool).split()


# --------------------------------------------------------------------------- NFS snapshots


def test_lab_inventory(openstack_lab: Any, ceph_lab: Any) -> None:
    import yaml  # pylint: disable=import-outside-toplevel

    inventory = yaml.safe_load(Path(openstack_lab.inventory).read_text(encoding="utf-8"))["all"]
    assert inventory["hosts"]["localhost"] == {"ansible_connection": "local",
                                               "ansible_python_interpreter": openstack_lab.python}
    assert set(inventory["children"]) >= {"ceph_mon", "cinder_volume", "glance_api"}
    values = inventory["vars"]
    assert values["cinder_nfs_snapshots_config_file"] == openstack_lab.cinder_conf
    assert values["cinder_nfs_snapshots_restart_command"][-2:] == ["restart", "cinder-volume"]
    assert values["cinder_rbd_clone_optimization_glance_config_file"] == openstack_lab.glance_conf
    assert values["ceph_client_keyrings_ceph_conf"] == ceph_lab.conf
    assert values["ceph_client_keyrings_admin_keyring"] == ceph_lab.admin_keyring
    assert values["volsnap_lab_environment"] == openstack_lab.env()
    # the clients are the lab's users with their caps, exactly
    for client in values["ceph_client_keyrings_clients"]:
        caps = json.loads(ceph_lab.ceph("auth", "get", f"client.{client['name']}", "--format", "json"))[0]["caps"]
        assert caps == client["caps"]
        keyring = Path(ceph_lab.conf).parent / f"ceph.client.{client['name']}.keyring"
        assert keyring.is_file()
        assert oct(keyring.stat().st_mode & 0o777) == oct(int(client["keyrings"][0]["mode"], 8))


def test_configure_nfs_snapshots_playbook(openstack_lab: Any, ceph_lab: Any, lab_state: dict, tmp_path: Path,
                                          cinder_volumes: list) -> None:
    conf = openstack_lab.cinder_conf
    before = Path(conf).read_bytes()
    assert ini_values(conf, "nfs")["nfs_snapshot_support"] == "false", "the lab must start without NFS snapshots"
    pid = openstack_lab.service_pid("cinder-volume")
    assert pid

    checked = playbook(openstack_lab, "configure_nfs_snapshots", tmp_path / "check", "--check", "--diff")
    assert checked.rc == 0, checked.output[-6000:]
    assert checked.changed >= 1
    assert "+nfs_snapshot_support = true" in checked.output and "+nfs_qcow2_volumes = true" in checked.output
    assert Path(conf).read_bytes() == before
    assert openstack_lab.service_pid("cinder-volume") == pid

    applied = playbook(openstack_lab, "configure_nfs_snapshots", tmp_path / "apply", "--diff")
    assert applied.rc == 0, applied.output[-6000:]
    assert applied.changed >= 1
    values = ini_values(conf, "nfs")
    assert (values["nfs_snapshot_support"], values["nfs_qcow2_volumes"], values["nas_secure_file_operations"]) == (
        "true", "true", "false")
    restarted = openstack_lab.service_pid("cinder-volume")
    assert restarted and restarted != pid, "the playbook did not restart cinder-volume"
    conn = openstack_lab.connection()
    wait("both cinder-volume backends up",
         lambda: cinder_services_up(conn, [openstack_lab.cinder_host, openstack_lab.nfs_cinder_host]))
    after = Path(conf).read_bytes()

    again = playbook(openstack_lab, "configure_nfs_snapshots", tmp_path / "again", "--diff")
    assert again.rc == 0, again.output[-6000:]
    assert again.changed == 0, again.output[-6000:]
    assert Path(conf).read_bytes() == after
    assert openstack_lab.service_pid("cinder-volume") == restarted

    # ---- a later 'lab.sh start' keeps the playbook's options (and does not restart cinder-volume)
    started = subprocess.run(["bash", openstack_lab.lab_sh, "start", "openstack"], check=False, capture_output=True,
                             text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert started.returncode == 0, started.stderr[-4000:]
    assert Path(conf).read_bytes() == after
    assert openstack_lab.service_pid("cinder-volume") == restarted

    # ---- the real NfsDriver now makes qcow2 snapshots
    export = Path(openstack_lab.nfs_export)
    first = create_volume(conn, cinder_volumes, openstack_lab.nfs_volume_type, "nfs-a")
    assert first.host == openstack_lab.nfs_cinder_pool
    base_a = export / f"volume-{first.id}"
    assert base_a.is_file()
    assert qemu_info(base_a)["format"] == "qcow2"  # nfs_qcow2_volumes = true
    snap = conn.block_storage.create_snapshot(volume_id=first.id, name="volsnap-test-nfs-snap")
    snap = conn.block_storage.wait_for_status(snap, "available", failures=["error"], interval=1, wait=180)
    info_a = json.loads((export / f"volume-{first.id}.info").read_text(encoding="utf-8"))
    assert info_a == {"active": f"volume-{first.id}.{snap.id}", snap.id: f"volume-{first.id}.{snap.id}"}

    chain = run_tasks(tmp_path / "chain", [{
        "name": "read the chain Cinder made",
        "volsnap.openstack.qcow2_chain_info": {"path": str(base_a)},
        "register": "chain"}], ["chain"])
    assert chain.rc == 0, chain.output[-6000:]
    result = chain["chain"]
    assert result["safe"] is True, result["problems"]
    assert result["active"] == f"volume-{first.id}.{snap.id}"
    assert result["chain"][0]["snapshot_id"] == snap.id
    assert [layer["filename"] for layer in result["chain"]] == [f"volume-{first.id}.{snap.id}", f"volume-{first.id}"]
    assert set(result["file_format"].values()) == {"qcow2"}
    assert result["snapshots"] == {snap.id: f"volume-{first.id}.{snap.id}"}

    # Cinder records what it made: admin metadata format (and base_format once snapshotted), as volume_format takes it
    meta_a = cinder_admin_metadata(openstack_lab, first.id)
    assert (meta_a.get("format"), meta_a.get("base_format")) == ("qcow2", "qcow2"), meta_a

    # ---- volume_snapshot (offline) on a second Cinder NFS volume makes Cinder's layout
    second = create_volume(conn, cinder_volumes, openstack_lab.nfs_volume_type, "nfs-b")
    own_snap = str(uuid.uuid4())
    volume_format = cinder_admin_metadata(openstack_lab, second.id)["format"]
    assert volume_format == "qcow2"
    snapshot_args = {"share": str(export), "volume_id": second.id, "snapshot_id": own_snap, "mode": "offline"}
    # without volume_format the qcow2 volume is taken as raw (Cinder's default): refused, nothing changed
    files_before = sorted(p.name for p in export.iterdir())
    refused = run_tasks(tmp_path / "refused", [{
        "name": "snapshot the second volume without its format", "ignore_errors": True,
        "volsnap.openstack.volume_snapshot": snapshot_args, "register": "snap"}], ["snap"])
    assert refused["snap"]["failed"] and "format_mismatch" in refused["snap"]["msg"], refused["snap"]
    assert "volume_format: qcow2" in refused["snap"]["msg"]
    assert sorted(p.name for p in export.iterdir()) == files_before
    made = run_tasks(tmp_path / "snapshot", [{
        "name": "snapshot the second volume offline",
        "volsnap.openstack.volume_snapshot": dict(snapshot_args, volume_format=volume_format),
        "register": "snap"}], ["snap"])
    assert made.rc == 0, made.output[-6000:]
    assert made["snap"]["changed"] is True

    def layout(volume_id: str, snapshot_id: str) -> dict[str, Any]:
        names = sorted(p.name for p in export.iterdir() if p.name.startswith(f"volume-{volume_id}"))
        info = json.loads((export / f"volume-{volume_id}.info").read_text(encoding="utf-8"))
        top = qemu_info(export / f"volume-{volume_id}.{snapshot_id}")
        base = qemu_info(export / f"volume-{volume_id}")
        generic = {volume_id: "V", snapshot_id: "S"}

        def anon(text: str) -> str:
            for real, name in generic.items():
                text = text.replace(real, name)
            return text

        return {
            "files": [anon(n) for n in names],
            "info": {anon(k): anon(v) for k, v in info.items()},
            "top": {key: anon(str(top.get(key))) for key in TOP_KEYS},
            "base_format": base["format"],
        }

    cinder_layout = layout(first.id, snap.id)
    assert cinder_layout["files"] == ["volume-V", "volume-V.S", "volume-V.info"]
    assert layout(second.id, own_snap) == cinder_layout

    # ---- delete through Cinder: its snapshot (qcow2 merge), then the volumes
    conn.block_storage.delete_snapshot(snap)
    conn.block_storage.wait_for_delete(snap, interval=1, wait=180)
    assert not (export / f"volume-{first.id}.{snap.id}").exists()
    merged = run_tasks(tmp_path / "unsnapshot", [{
        "name": "delete the module's snapshot of the second volume",
        "volsnap.openstack.volume_snapshot": {"share": str(export), "volume_id": second.id,
                                              "snapshot_id": own_snap, "state": "absent", "mode": "offline",
                                              "volume_format": volume_format},
        "register": "snap"}], ["snap"])
    assert merged.rc == 0, merged.output[-6000:]
    for volume in (first, second):
        conn.block_storage.delete_volume(volume)
        conn.block_storage.wait_for_delete(volume, interval=1, wait=180)
        leftovers = [p.name for p in export.iterdir() if p.name.startswith(f"volume-{volume.id}")]
        assert leftovers == [], leftovers


# --------------------------------------------------------------------------- RBD clone optimization, keyrings


def _converge(openstack_lab: Any, name: str, tmp_path: Path, watched: list[str]) -> tuple[Run, Run]:
    """--check --diff (nothing changes), then a real run; returns both. ``watched``: files that must not move."""
    before = {path: FileState.read(path) for path in watched}
    pids = {name: openstack_lab.service_pid(name) for name in ("cinder-volume", "glance")}
    checked = playbook(openstack_lab, name, tmp_path / "check", "--check", "--diff")
    assert checked.rc == 0, checked.output[-6000:]
    assert {path: FileState.read(path) for path in watched} == before, "check mode changed a file"
    assert {n: openstack_lab.service_pid(n) for n in pids} == pids, "check mode restarted a service"
    applied = playbook(openstack_lab, name, tmp_path / "apply", "--diff")
    assert applied.rc == 0, applied.output[-6000:]
    # check mode predicted the run: changed exactly when the real run changed something
    assert (checked.changed > 0) == (applied.changed > 0), (checked.recap, applied.recap)
    return checked, applied


def _rerun_changes_nothing(openstack_lab: Any, name: str, tmp_path: Path, watched: list[str]) -> None:
    before = {path: FileState.read(path) for path in watched}
    pids = {name: openstack_lab.service_pid(name) for name in ("cinder-volume", "glance")}
    again = playbook(openstack_lab, name, tmp_path / "again", "--diff")
    assert again.rc == 0, again.output[-6000:]
    assert again.changed == 0, again.output[-6000:]
    assert {path: FileState.read(path) for path in watched} == before
    assert {n: openstack_lab.service_pid(n) for n in pids} == pids, "the idempotent rerun restarted a service"


def test_configure_rbd_clone_optimization_playbook(openstack_lab: Any, ceph_lab: Any, lab_state: dict,
                                                   tmp_path: Path, cinder_volumes: list) -> None:
    watched = [openstack_lab.cinder_conf, openstack_lab.glance_conf, ceph_lab.cinder_keyring, ceph_lab.glance_keyring]
    assert "enable_clone_optimization" not in ini_values(openstack_lab.cinder_conf, "ceph")
    pid = openstack_lab.service_pid("cinder-volume")
    checked, applied = _converge(openstack_lab, "configure_rbd_clone_optimization", tmp_path, watched)
    assert checked.changed >= 1 and "+enable_clone_optimization = true" in checked.output
    assert ini_values(openstack_lab.cinder_conf, "ceph")["enable_clone_optimization"] == "true"
    assert openstack_lab.service_pid("cinder-volume") != pid, "cinder-volume was not restarted"
    assert "Glance exposes store rbd" in applied.output
    caps = json.loads(ceph_lab.ceph("auth", "get", f"client.{ceph_lab.cinder_user}", "--format", "json"))[0]["caps"]
    assert f"profile rbd pool={ceph_lab.images_pool}" in caps["osd"]
    _rerun_changes_nothing(openstack_lab, "configure_rbd_clone_optimization", tmp_path, watched)
    check_lab_still_works(openstack_lab, ceph_lab, cinder_volumes)


def test_ceph_keyrings_playbook(openstack_lab: Any, ceph_lab: Any, lab_state: dict, tmp_path: Path,
                                cinder_volumes: list) -> None:
    watched = [ceph_lab.cinder_keyring, ceph_lab.glance_keyring, openstack_lab.cinder_conf, openstack_lab.glance_conf]
    caps_before = {user: json.loads(ceph_lab.ceph("auth", "get", f"client.{user}", "--format", "json"))[0]["caps"]
                   for user in (ceph_lab.cinder_user, ceph_lab.glance_user)}
    # a cluster whose keyrings Ceph wrote (`ceph auth get -o`, key and caps lines), root:root 0640
    exported = {}
    for user, path in ((ceph_lab.cinder_user, ceph_lab.cinder_keyring), (ceph_lab.glance_user, ceph_lab.glance_keyring)):
        ceph_lab.ceph("auth", "get", f"client.{user}", "-o", path)
        os.chown(path, 0, 0)
        os.chmod(path, 0o640)
        exported[path] = Path(path).read_bytes()
        assert b"\tcaps osd = " in exported[path]
    checked, applied = _converge(openstack_lab, "ceph_keyrings", tmp_path, watched)
    # the lab's clients already have exactly these caps and the role writes keyrings as Ceph does: nothing changes
    assert checked.changed == 0 and applied.changed == 0, applied.output[-6000:]
    assert {path: Path(path).read_bytes() for path in exported} == exported
    assert {user: json.loads(ceph_lab.ceph("auth", "get", f"client.{user}", "--format", "json"))[0]["caps"]
            for user in caps_before} == caps_before
    for path in (ceph_lab.cinder_keyring, ceph_lab.glance_keyring):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o640)
    assert applied.output.count("client.cinder as root: connected") == 1, applied.output[-6000:]
    assert applied.output.count("client.glance as root: connected") == 1, applied.output[-6000:]
    # a keyring holding only the key (as older tools wrote it): rewritten as Ceph writes it, its service restarted
    glance = Path(ceph_lab.glance_keyring)
    glance.write_bytes(b"".join(line for line in exported[str(glance)].splitlines(keepends=True)
                                if b"caps " not in line))
    pids = {name: openstack_lab.service_pid(name) for name in ("cinder-volume", "glance")}
    fixed = playbook(openstack_lab, "ceph_keyrings", tmp_path / "fix", "--diff")
    assert fixed.rc == 0 and fixed.changed > 0, fixed.output[-6000:]
    assert glance.read_bytes() == exported[str(glance)]
    assert Path(ceph_lab.cinder_keyring).read_bytes() == exported[ceph_lab.cinder_keyring]
    assert openstack_lab.service_pid("glance") != pids["glance"], "glance-api was not restarted"
    assert openstack_lab.service_pid("cinder-volume") == pids["cinder-volume"], "cinder-volume restarted for nothing"
    _rerun_changes_nothing(openstack_lab, "ceph_keyrings", tmp_path, watched)
    check_lab_still_works(openstack_lab, ceph_lab, cinder_volumes)
