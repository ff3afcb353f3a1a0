"""volume_snapshot group=true: the volumes of one running libvirt domain (4 disks, QEMU TCG) snapshotted in ONE atomic
disk-only external snapshot call, through ansible-playbook; a failure injected in the middle (one member's directory
not writable: chattr +i), quiesce=required without a guest agent, and the module killed (SIGKILL) before and after the
libvirt call, then run again: all or nothing every time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.group import GroupRequest, GroupSnapshot, Member
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import Libvirt
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
from ansible_run import run_tasks, subprocess_runner

DISKS = 4


def make_volumes(share: Path, count: int = DISKS, subdirs: bool = False) -> List[Tuple[Path, str, str]]:
    """``count`` raw Cinder volumes (16 MiB) in ``share`` (or each in its own directory d0, d1...): (path, volume id,
    snapshot id to take)."""
    volumes = []
    for index in range(count):
        directory = share / f"d{index}" if subdirs else share
        directory.mkdir(mode=0o777, exist_ok=True)
        directory.chmod(0o777)
        volume_id = str(uuid.uuid4())
        path = directory / f"volume-{volume_id}"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "16M"], check=True)
        path.chmod(0o666)
        volumes.append((path, volume_id, str(uuid.uuid4())))
    return volumes


def start(domain_factory, volumes: List[Tuple[Path, str, str]], name: str) -> Any:
    disks = [{"path": str(path), "format": "raw", "target": "vd" + chr(ord("b") + i), "serial": volume_id}
             for i, (path, volume_id, _snap) in enumerate(volumes)]
    return domain_factory(name, disks)


def chains(uri: str, dom: Any, count: int = DISKS) -> List[List[str]]:
    lv = Libvirt(uri)
    try:
        return [[Path(p).name for p in lv.disk_chain_paths(dom, "vd" + chr(ord("b") + i))] for i in range(count)]
    finally:
        lv.close()


def listing(share: Path) -> Dict[str, Tuple[int, int]]:
    """Every entry under the share with its size and mtime (what a rolled back or refused group leaves as it was)."""
    found = {}
    for path in sorted(share.rglob("*")):
        if path.name.endswith(".lock") or path.is_dir():
            continue  # a lock file may stay: it is how runs serialise (and a directory's mtime records it)
        st = path.lstat()
        found[str(path.relative_to(share))] = (st.st_size, st.st_mtime_ns)
    return found


def leftovers(share: Path) -> List[str]:
    return sorted(p.name for p in share.rglob("*") if p.name.endswith((".journal", ".volsnap-tmp", ".tmp")))


def group_task(volumes, state: str = "present", **extra) -> Dict[str, Any]:
    args = {"group": True, "state": state, "libvirt_uri": extra.pop("uri"),
            "volumes": [{"volume_path": str(p), "snapshot_id": s} for p, _v, s in volumes]}
    args.update(extra)
    return {"name": "group", "volsnap.openstack.volume_snapshot": args, "register": "out", "ignore_errors": True}


def play(tmp_path: Path, task: Dict[str, Any], check: bool = False, diff: bool = False) -> Dict[str, Any]:
    workdir = tmp_path / f"play-{time.monotonic_ns()}"
    workdir.mkdir()
    result = run_tasks(workdir, [task], ["out"], check=check, diff=diff)
    assert "out" in result.results, result.output
    out = result["out"]
    assert "Traceback" not in result.output and "module_stderr" not in out, result.output
    return out


def direct(volumes, uri, **options) -> Dict[str, Any]:
    """The same group request through the module's code path, without Ansible (for the quick reruns)."""
    request = GroupRequest([Member(str(p), s) for p, _v, s in volumes], **options)
    return GroupSnapshot(request, QemuImg(subprocess_runner), lambda: Libvirt(uri) if uri else None, False).run()


def info_of(path: Path) -> Dict[str, str]:
    return json.loads(Path(f"{path}.info").read_text())


def test_group_create_check_rerun_and_delete(tmp_path: Path, share: Path, domain_factory, libvirt_uri: str) -> None:
    volumes = make_volumes(share)
    dom = start(domain_factory, volumes, "group")
    before = listing(share)

    checked = play(tmp_path, group_task(volumes, uri=libvirt_uri), check=True)
    assert checked["changed"] is True and not checked.get("failed"), checked
    assert any("ONE disk-only external snapshot" in line and "atomic" in line for line in checked["group"]["plan"])
    assert listing(share) == before and chains(libvirt_uri, dom) == [[p.name] for p, _v, _s in volumes]

    out = play(tmp_path, group_task(volumes, uri=libvirt_uri), diff=True)
    assert out["changed"] is True and not out.get("failed"), out
    group = out["group"]
    assert group["mode"] == "online" and group["atomic"] is True and group["domain"] == dom.name()
    assert group["disks"] == ["vdb", "vdc", "vdd", "vde"]
    # the lab domain has no guest agent: auto falls back to an unquiesced snapshot and says so
    assert group["quiesce"] == "auto" and group["quiesced"] is False and out["quiesced"] is False
    assert out["failed_volumes"] == [] and [v["volume_path"] for v in out["volumes"]] == [str(p) for p, _v, _s in volumes]
    overlays = [f"{p.name}.{s}" for p, _v, s in volumes]
    assert chains(libvirt_uri, dom) == [[o, p.name] for o, (p, _v, _s) in zip(overlays, volumes)]
    for (path, _v, snap), overlay, item in zip(volumes, overlays, out["volumes"]):
        assert info_of(path) == {"active": overlay, snap: overlay}
        assert item["changed"] and item["active"] == overlay and item["disk"] and item["quiesced"] is False
    assert [d["before_header"] for d in out["diff"]] == [f"{p}.info" for p, _v, _s in volumes]
    assert leftovers(share) == []

    again = direct(volumes, libvirt_uri)
    assert again["changed"] is False and [v["changed"] for v in again["volumes"]] == [False] * DISKS, again

    # a single-volume run agrees: the snapshot is there
    single = VolumeSnapshot(Request(str(volumes[0][0]), volumes[0][2]), QemuImg(subprocess_runner),
                            lambda: Libvirt(libvirt_uri), False).run()
    assert single["changed"] is False and single["mode"] == "online"

    deleted = play(tmp_path, group_task(volumes, state="absent", uri=libvirt_uri), diff=True)
    assert deleted["changed"] is True and not deleted.get("failed"), deleted
    assert all(v["operation"] == "delete" and v["mode"] == "online" for v in deleted["volumes"])
    assert len(deleted["diff"]) == DISKS
    assert chains(libvirt_uri, dom) in ([[p.name] for p, _v, _s in volumes],
                                        [[o] for o in overlays])  # blockRebase pulls the base into the overlay
    for path, _v, _snap in volumes:
        assert set(info_of(path)) == {"active"}
    assert leftovers(share) == []
    assert direct(volumes, libvirt_uri, state="absent")["changed"] is False


def test_group_quiesce_required_without_agent_changes_nothing(tmp_path: Path, share: Path, domain_factory,
                                                              libvirt_uri: str) -> None:
    volumes = make_volumes(share)
    dom = start(domain_factory, volumes, "group-quiesce")
    before = listing(share)
    out = play(tmp_path, group_task(volumes, uri=libvirt_uri, quiesce="required"))
    assert out.get("failed") is True, out
    assert "quiesce=required" in out["msg"] and "guest agent" in out["msg"] and "rolled back" in out["msg"], out
    assert out["rolled_back"] is True and out["quiesced"] is False
    assert sorted(out["failed_volumes"]) == sorted(str(p) for p, _v, _s in volumes)
    assert listing(share) == before and leftovers(share) == []
    assert chains(libvirt_uri, dom) == [[p.name] for p, _v, _s in volumes]

    # a single volume: the same choices (the quiesce option is shared)
    path, _v, snap = volumes[0]

    def single(quiesce: str) -> Dict[str, Any]:
        return VolumeSnapshot(Request(str(path), snap, quiesce=quiesce), QemuImg(subprocess_runner),
                              lambda: Libvirt(libvirt_uri), False).run()

    with pytest.raises(VolsnapError, match="quiesce=required") as refused:
        single("required")
    assert refused.value.details["rolled_back"] is True and listing(share) == before
    taken = single("auto")
    assert taken["changed"] and taken["mode"] == "online" and taken["quiesced"] is False
    assert chains(libvirt_uri, dom)[0] == [f"{path.name}.{snap}", path.name]


def test_group_failure_in_the_middle_rolls_every_member_back(tmp_path: Path, share: Path, domain_factory,
                                                             libvirt_uri: str) -> None:
    """The third volume (in lock order) lives in a directory nothing can be created in (chattr +i, which binds root
    too): the first two are prepared (journal + overlay), the third fails, and every member is rolled back."""
    volumes = make_volumes(share, subdirs=True)
    dom = start(domain_factory, volumes, "group-fail")
    blocked_path, blocked_id, _snap = volumes[2]
    lock = blocked_path.parent / f".volsnap-nfs-{blocked_id}.lock"
    lock.touch(mode=0o600)  # the lock file exists (a previous run made it): only new entries are refused
    before = listing(share)
    subprocess.run(["chattr", "+i", str(blocked_path.parent)], check=True)
    try:
        out = play(tmp_path, group_task(volumes, uri=libvirt_uri))
        assert out.get("failed") is True, out
        assert out["failed_volumes"] == [str(blocked_path)], out
        assert out["rolled_back"] is True and "Every member was rolled back" in out["msg"], out
        assert str(blocked_path) in out["msg"]
        assert [v["failed"] for v in out["volumes"]] == [False, False, True, False]
        assert listing(share) == before and leftovers(share) == []
        assert chains(libvirt_uri, dom) == [[p.name] for p, _v, _s in volumes]
    finally:
        subprocess.run(["chattr", "-i", str(blocked_path.parent)], check=True)
    # the cause fixed, the same request takes the whole group
    out = play(tmp_path, group_task(volumes, uri=libvirt_uri))
    assert out["changed"] is True and not out.get("failed"), out
    assert all(len(chain) == 2 for chain in chains(libvirt_uri, dom))


CHILD = textwrap.dedent("""
    import os, signal, sys, json
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import libvirt as _libvirt
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.group import GroupRequest, GroupSnapshot, Member
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
    sys.path.insert(0, sys.argv[3])
    from ansible_run import subprocess_runner
    where, uri = sys.argv[1], sys.argv[2]
    members = [Member(p, s) for p, s in json.loads(sys.argv[4])]
    original = _libvirt.Libvirt.external_snapshot_disks

    def killed(self, dom, overlays, quiesce, atomic):
        if where == 'before':
            os.kill(os.getpid(), signal.SIGKILL)  # every overlay and journal prepared, the call not made
        original(self, dom, overlays, quiesce, atomic)
        os.kill(os.getpid(), signal.SIGKILL)  # every disk switched, no .info file written

    _libvirt.Libvirt.external_snapshot_disks = killed
    GroupSnapshot(GroupRequest(members), QemuImg(subprocess_runner), lambda: _libvirt.Libvirt(uri), False).run()
    print('the run was not killed')
""")


@pytest.mark.parametrize("where", ["before", "after"])
def test_group_killed_around_the_libvirt_call_converges_on_rerun(share: Path, domain_factory, libvirt_uri: str,
                                                                 where: str) -> None:
    volumes = make_volumes(share)
    dom = start(domain_factory, volumes, f"group-kill-{where}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    pairs = json.dumps([[str(p), s] for p, _v, s in volumes])
    proc = subprocess.run([sys.executable, "-c", CHILD, where, libvirt_uri, str(Path(__file__).parent), pairs],
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    assert len([n for n in leftovers(share) if n.endswith(".journal")]) == DISKS
    switched = chains(libvirt_uri, dom)
    overlays = [f"{p.name}.{s}" for p, _v, s in volumes]
    if where == "before":
        assert switched == [[p.name] for p, _v, _s in volumes]
    else:
        assert switched == [[o, p.name] for o, (p, _v, _s) in zip(overlays, volumes)]

    # a single-volume request on a member is refused while the group is pending: only the group converges it
    with pytest.raises(VolsnapError, match="member of an interrupted group snapshot"):
        VolumeSnapshot(Request(str(volumes[1][0]), volumes[1][2], state="resumed"), QemuImg(subprocess_runner),
                       lambda: Libvirt(libvirt_uri), False).run()

    request = GroupRequest([Member(str(p), s) for p, _v, s in volumes])
    result = GroupSnapshot(request, QemuImg(subprocess_runner), lambda: Libvirt(libvirt_uri), False).run()
    assert result["changed"] is True
    assert result["group"]["recovered"] == ("roll back" if where == "before" else "complete"), result["group"]
    assert chains(libvirt_uri, dom) == [[o, p.name] for o, (p, _v, _s) in zip(overlays, volumes)]
    for (path, _v, snap), overlay in zip(volumes, overlays):
        assert info_of(path) == {"active": overlay, snap: overlay}
    assert leftovers(share) == []
    again = GroupSnapshot(request, QemuImg(subprocess_runner), lambda: Libvirt(libvirt_uri), False).run()
    assert again["changed"] is False


OFFLINE_CHILD = textwrap.dedent("""
    import os, signal, sys, json
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import snapshot_exec as _exec
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.group import GroupRequest, GroupSnapshot, Member
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
    sys.path.insert(0, sys.argv[1])
    from ansible_run import subprocess_runner
    members = [Member(p, s) for p, s in json.loads(sys.argv[2])]
    original = _exec.Executor._write_info
    written = []

    def write_info(self, step, context):
        original(self, step, context)
        written.append(step)
        if len(written) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # two .info files written, two not: the group is committed

    _exec.Executor._write_info = write_info
    GroupSnapshot(GroupRequest(members, mode='offline', parallel=1), QemuImg(subprocess_runner), lambda: None, False).run()
    print('the run was not killed')
""")


def test_offline_group_all_overlays_first_and_a_kill_after_the_first_info_completes(tmp_path: Path) -> None:
    """No running domain: the overlays are all created before the first .info file is written (the commit point);
    killed with two of four .info files written, the same request completes the other two."""
    share = tmp_path / "share"
    share.mkdir()
    volumes = make_volumes(share)
    pairs = json.dumps([[str(p), s] for p, _v, s in volumes])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", OFFLINE_CHILD, str(Path(__file__).parent), pairs],
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    overlays = [share / f"{p.name}.{s}" for p, _v, s in volumes]
    assert all(o.exists() for o in overlays)
    assert sum(Path(f"{p}.info").exists() for p, _v, _s in volumes) == 2
    # the first member is complete; the second was killed between its .info file and the removal of its journal
    assert len([n for n in leftovers(share) if n.endswith(".journal")]) == 3

    task = group_task(volumes, uri="qemu:///system", mode="offline")
    out = play(tmp_path, task)
    assert out["changed"] is True and not out.get("failed"), out
    assert out["group"]["mode"] == "offline" and out["group"]["recovered"] == "complete" and out["quiesced"] is None
    for (path, _v, snap), overlay in zip(volumes, overlays):
        assert info_of(path) == {"active": overlay.name, snap: overlay.name}
    assert leftovers(share) == []
    assert direct(volumes, None, mode="offline")["changed"] is False
    deleted = direct(volumes, None, state="absent", mode="offline")
    assert deleted["changed"] is True and [v["mode"] for v in deleted["volumes"]] == ["offline"] * DISKS
    assert not any(o.exists() for o in overlays) and leftovers(share) == []
