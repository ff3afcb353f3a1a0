"""volume_snapshot on real qemu-img/qemu-io and a real libvirt domain (QEMU TCG), with data checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import libvirt
import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import Libvirt
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
from ansible_run import run_tasks, subprocess_runner

VOLUME_ID = "0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f"
VOL = f"volume-{VOLUME_ID}"
SNAPS = ["11111111-2222-4333-8444-555555555555", "22222222-2222-4333-8444-555555555555",
         "33333333-2222-4333-8444-555555555555"]
MIB = 1024 * 1024


def qemu_io(fmt: str, path: Path, command: str, readonly: bool = False) -> subprocess.CompletedProcess:
    argv = ["qemu-io", "-U" if readonly else "", "-r" if readonly else "", "-f", fmt, "-c", command, str(path)]
    return subprocess.run([a for a in argv if a], capture_output=True, text=True, check=False)


def write(path: Path, fmt: str, pattern: int, offset: int) -> None:
    proc = qemu_io(fmt, path, f"write -P {pattern} {offset} {MIB}")
    assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stdout + proc.stderr


def reads(path: Path, fmt: str, pattern: int, offset: int) -> bool:
    proc = qemu_io(fmt, path, f"read -P {pattern} {offset} {MIB}", readonly=True)
    assert "Pattern verification failed" in proc.stdout or "read " in proc.stdout, proc.stdout + proc.stderr
    return "Pattern verification failed" not in proc.stdout


def state_view(stage: int) -> Dict[int, int]:
    """What the disk holds after the writes of stage 0..stage: offset -> pattern (0 = never written)."""
    view = {0: 0x10 + stage}
    for k in range(4):
        view[(k + 1) * MIB] = (0x20 + k) if k <= stage else 0
    return view


def write_stage(path: Path, fmt: str, stage: int) -> None:
    write(path, fmt, 0x10 + stage, 0)
    write(path, fmt, 0x20 + stage, (stage + 1) * MIB)


def verify(share: Path, snapshot_stage: Dict[str, int], final_stage: int) -> None:
    """The active chain shows the last stage; every remaining snapshot shows the stage it was taken after."""
    report = inspect_chain(str(share / VOL))
    assert report.safe, report.problems
    top = report.layers[0].image
    for offset, pattern in state_view(final_stage).items():
        assert reads(Path(top.path), top.format, pattern, offset), ("active", offset, pattern)
    info = report.info
    assert info is not None
    assert set(info.snapshots) == set(snapshot_stage)
    names = [layer.image.filename for layer in report.layers]
    for snap_id, stage in snapshot_stage.items():
        below = report.layers[names.index(info.snapshots[snap_id]) + 1].image
        for offset, pattern in state_view(stage).items():
            assert reads(Path(below.path), below.format, pattern, offset), (snap_id, offset, pattern)


def run_op(share: Path, snap: str, state: str = "present", mode: str = "auto", check: bool = False,
           libvirt_uri: Optional[str] = None, **kwargs) -> dict:
    request = Request(volume_path=str(share / VOL), snapshot_id=snap, state=state, mode=mode, **kwargs)
    factory = (lambda: Libvirt(libvirt_uri)) if libvirt_uri else (lambda: None)
    return VolumeSnapshot(request, QemuImg(subprocess_runner), factory, check).run()


def build_volume(share: Path, base_fmt: str = "raw") -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", base_fmt, str(share / VOL), "64M"], check=True)
    os.chmod(share / VOL, 0o666)


def snapshot_offline_with_data(share: Path, count: int = 3, base_fmt: str = "raw") -> Dict[str, int]:
    build_volume(share, base_fmt)
    write_stage(share / VOL, base_fmt, 0)
    stages = {}
    for stage, snap in enumerate(SNAPS[:count]):
        result = run_op(share, snap, mode="offline")
        assert result["changed"] and result["compute_status"] == "creating_compute_complete"
        assert result["file_format"] == {f"{VOL}.{snap}": "qcow2"}
        stages[snap] = stage
        write_stage(share / result["active"], "qcow2", stage + 1)
    verify(share, stages, count)
    return stages


DELETE_ORDERS = [[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0]]


@pytest.mark.parametrize("order", DELETE_ORDERS, ids=lambda o: "-".join(map(str, o)))
def test_offline_delete_every_order_keeps_data(tmp_path: Path, order: List[int]) -> None:
    stages = snapshot_offline_with_data(tmp_path)
    for index in order:
        snap = SNAPS[index]
        result = run_op(tmp_path, snap, state="absent", mode="offline")
        assert result["changed"] and result["mode"] == "offline"
        assert result["compute_status"] == "deleting_compute_complete"
        del stages[snap]
        verify(tmp_path, stages, 3)
        assert run_op(tmp_path, snap, state="absent")["changed"] is False
    info = json.loads((tmp_path / f"{VOL}.info").read_text())
    assert list(info) == ["active"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".volsnap-") and p.name.endswith(".journal")]


def stop_gracefully(dom) -> None:
    """SIGTERM: QEMU flushes its cached qcow2 metadata before exiting (destroy would not)."""
    dom.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)


@pytest.mark.parametrize("order", DELETE_ORDERS, ids=lambda o: "-".join(map(str, o)))
def test_online_delete_every_order_keeps_data(share: Path, domain_factory, libvirt_uri: str,
                                              order: List[int]) -> None:
    """Deletes run while the domain runs; data is checked with the domain stopped (QEMU caches qcow2
    metadata, so reading a running image from outside would show stale allocation), then it restarts."""
    stages = snapshot_offline_with_data(share)
    for path in share.iterdir():
        path.chmod(0o666)
    for step, index in enumerate(order):
        info = json.loads((share / f"{VOL}.info").read_text())
        disk = {"path": str(share / info["active"]), "format": "qcow2", "target": "vdb", "serial": VOLUME_ID}
        dom = domain_factory(f"snapdel{step}", [disk])
        if step == 0:
            with pytest.raises(VolsnapError, match="mode=offline but running domain"):
                run_op(share, SNAPS[0], state="absent", mode="offline", libvirt_uri=libvirt_uri)
        snap = SNAPS[index]
        result = run_op(share, snap, state="absent", libvirt_uri=libvirt_uri)
        assert result["changed"] and result["mode"] == "online" and result["domain"] == dom.name()
        assert ("blockRebase" in result["plan"][0]) == (info[snap] == info["active"]), result["plan"]
        chain = Libvirt(libvirt_uri).disk_chain_paths(dom, "vdb")
        assert [Path(p).name for p in chain] == [layer["filename"] for layer in result["chain"]["chain"]]
        stop_gracefully(dom)
        del stages[snap]
        verify(share, stages, 3)


def test_online_create_then_offline_view(share: Path, domain_factory, libvirt_uri: str) -> None:
    build_volume(share)
    write_stage(share / VOL, "raw", 0)
    dom = domain_factory("snapcreate", [{"path": str(share / VOL), "format": "raw", "target": "vdc",
                                         "serial": VOLUME_ID}])
    with pytest.raises(VolsnapError, match="open for writing by a running QEMU"):
        run_op(share, SNAPS[0], mode="offline")
    for snap in SNAPS[:2]:
        checked = run_op(share, snap, libvirt_uri=libvirt_uri, check=True)
        assert checked["changed"] and not (share / f"{VOL}.{snap}").exists()
        result = run_op(share, snap, libvirt_uri=libvirt_uri)
        assert result["mode"] == "online" and result["disk"] == "vdc"
        assert result["file_format"] == {f"{VOL}.{snap}": "qcow2"}
        assert Libvirt(libvirt_uri).disk_source(dom, "vdc") == str(share / f"{VOL}.{snap}")
        assert run_op(share, snap, libvirt_uri=libvirt_uri)["changed"] is False
    stop_gracefully(dom)
    verify(share, {SNAPS[0]: 0, SNAPS[1]: 0}, 0)
    with pytest.raises(VolsnapError, match="no running domain"):
        run_op(share, SNAPS[2], mode="online", libvirt_uri=libvirt_uri)


# ---------------------------------------------------------------- crashes

CHILD = textwrap.dedent("""
    import os, signal, sys
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import volume as _volume
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
    sys.path.insert(0, sys.argv[5])
    from ansible_run import subprocess_runner
    path, snap, state, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    where, number = kill_at.split(':')
    number = int(number)
    counter = {'effects': 0}
    original_advance = _volume.Journal.advance
    def advance(self, done, stage, write=True):
        # 'effect:N' dies after step N's effect, before the journal records it;
        # 'journal:N' dies right after the journal records step N.
        if where == 'effect' and done == number:
            os.kill(os.getpid(), signal.SIGKILL)
        original_advance(self, done, stage, write)
        if where == 'journal' and done == number:
            os.kill(os.getpid(), signal.SIGKILL)
    _volume.Journal.advance = advance
    VolumeSnapshot(Request(path, snap, state=state, mode='offline'), QemuImg(subprocess_runner),
                   lambda: None, False).run()
""")


def crash_run(share: Path, snap: str, state: str, kill_at: str) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(share / VOL), snap, state, kill_at,
                           str(Path(__file__).parent)], env=env, capture_output=True, text=True, check=False)
    return proc.returncode


@pytest.mark.parametrize("case", ["create", "delete-active", "delete-middle", "delete-oldest"])
def test_sigkill_at_every_step_then_rerun(tmp_path: Path, case: str) -> None:
    steps = {"create": 2, "delete-active": 3, "delete-middle": 4, "delete-oldest": 4}[case]
    for where in ("effect", "journal"):
        for number in range(1, steps + 1):
            share = tmp_path / f"{where}-{number}"
            share.mkdir()
            stages = snapshot_offline_with_data(share, count=2 if case == "create" else 3)
            if case == "create":
                snap, state = SNAPS[2], "present"
            else:
                snap, state = {"delete-active": SNAPS[2], "delete-middle": SNAPS[1], "delete-oldest": SNAPS[0]}[case], \
                    "absent"
            rc = crash_run(share, snap, state, f"{where}:{number}")
            assert rc == -signal.SIGKILL, (where, number, rc)
            with pytest.raises(VolsnapError, match="interrupted"):
                run_op(share, SNAPS[0] if snap != SNAPS[0] else SNAPS[1], state="absent")
            if number % 2:
                # the same request finishes it
                result = run_op(share, snap, state=state)
            else:
                # state=resumed finishes it without being told which operation: check mode says what it would do
                files = sorted(p.name for p in share.iterdir())
                checked = run_op(share, None, state="resumed", check=True)
                assert (checked["changed"], checked["resumed"], checked["snapshot_id"], checked["operation"]) == \
                    (True, True, snap, "create" if state == "present" else "delete"), checked
                assert sorted(p.name for p in share.iterdir()) == files
                result = run_op(share, None, state="resumed")
                assert (result["snapshot_id"], result["operation"]) == (snap, checked["operation"]), result
                nothing = run_op(share, None, state="resumed")
                assert (nothing["changed"], nothing["resumed"], nothing["operation"]) == (False, False, None)
                assert nothing["chain"] == run_op(share, snap, state=state, check=True)["chain"]
            assert result["changed"] and result["resumed"], (where, number)
            if state == "present":
                stages[snap] = 2
            else:
                del stages[snap]
            verify(share, stages, 2 if case == "create" else 3)
            assert run_op(share, snap, state=state)["changed"] is False


@pytest.mark.parametrize("tamper", ["outside", "other-volume", "relative-escape", "action", "volume-id", "info",
                                    "format"])
def test_hostile_journal_is_refused_before_anything_runs(tmp_path: Path, tamper: str) -> None:
    """The journal lives in the share: a crafted one must not make state=resumed (or a rerun) touch other files."""
    share = tmp_path / "share"
    share.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    other = share / "volume-99999999-2222-4333-8444-555555555555"
    other.write_text("another volume")
    snapshot_offline_with_data(share, count=1)
    # a genuine journal of a delete, as an interrupted run leaves it, then tampered with
    rc = crash_run(share, SNAPS[0], "absent", "journal:1")
    assert rc == -signal.SIGKILL
    journal = share / f".volsnap-{VOL}.journal"
    data = json.loads(journal.read_text())
    steps = data["plan"]["steps"]
    delete = next(step for step in steps if step["action"] == "delete_file")
    if tamper == "outside":
        delete["args"]["file"] = str(victim)
    elif tamper == "other-volume":
        delete["args"]["file"] = str(other)
    elif tamper == "relative-escape":
        steps[0]["args"]["base"] = "../victim"
    elif tamper == "action":
        delete["action"] = "run_anything"
    elif tamper == "volume-id":
        data["plan"]["volume_id"] = "99999999-2222-4333-8444-555555555555"
    elif tamper == "format":
        data["plan"]["file_format"] = {VOL: "vmdk"}  # a raw volume-<id> read as another format
    else:
        next(step for step in steps if step["action"] == "write_info")["args"]["info"]["active"] = "/etc/passwd"
    journal.write_text(json.dumps(data))
    files = {p.name: p.read_bytes() for p in share.iterdir()}
    for state, snap in (("resumed", None), ("absent", SNAPS[0])):
        with pytest.raises(VolsnapError, match="never plans; nothing was run"):
            run_op(share, snap, state=state)
    assert victim.read_text() == "keep me" and other.read_text() == "another volume"
    assert {p.name: p.read_bytes() for p in share.iterdir()} == files


# ---------------------------------------------------------------- concurrency and bad input


def _create_offline(share: Path, snap: str) -> dict:
    return run_op(share, snap, mode="offline")


def test_parallel_runs_on_one_volume_and_on_many(tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    build_volume(one)
    ids = [f"{i:08d}-2222-4333-8444-555555555555" for i in range(8)]
    with ProcessPoolExecutor(8) as pool:  # fcntl locks are per process: threads would not contend
        results = list(pool.map(_create_offline, [one] * 8, ids))
    assert all(r["changed"] for r in results)
    report = inspect_chain(str(one / VOL))
    assert report.safe, report.problems
    assert len(report.layers) == 9 and set(report.info.snapshots) == set(ids)
    shares = []
    for index in range(8):
        share = tmp_path / f"vol{index}"
        share.mkdir()
        build_volume(share)
        shares.append(share)
    with ProcessPoolExecutor(8) as pool:
        results = list(pool.map(_create_offline, shares, [SNAPS[0]] * 8))
    assert all(r["changed"] and r["lock_waited"] < 5 for r in results)
    assert all(inspect_chain(str(s / VOL)).safe for s in shares)


@pytest.mark.parametrize("snap", ["../../etc/passwd", "x", SNAPS[0] + "/..", SNAPS[0] + "\n", ""])
def test_bad_snapshot_ids_change_nothing(tmp_path: Path, snap: str) -> None:
    build_volume(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(VolsnapError, match="not a Cinder snapshot id"):
        run_op(tmp_path, snap)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unsafe_chain_is_refused(tmp_path: Path) -> None:
    build_volume(tmp_path)
    run_op(tmp_path, SNAPS[0], mode="offline")
    active = tmp_path / f"{VOL}.{SNAPS[0]}"
    subprocess.run(["qemu-img", "rebase", "-u", "-b", "/etc/hostname", "-F", "raw", str(active)], check=True)
    before = (tmp_path / f"{VOL}.info").read_text()
    with pytest.raises(VolsnapError, match="unsafe, nothing was changed.*backing_outside_share"):
        run_op(tmp_path, SNAPS[1], mode="offline")
    assert (tmp_path / f"{VOL}.info").read_text() == before and not (tmp_path / f"{VOL}.{SNAPS[1]}").exists()


def test_playbook_idempotence_check_mode_and_diff(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    build_volume(share)
    args = {"volume_path": str(share / VOL), "snapshot_id": SNAPS[0]}
    tasks = [
        {"name": "check", "volsnap.openstack.volume_snapshot": args, "check_mode": True, "register": "checked"},
        {"name": "create", "volsnap.openstack.volume_snapshot": args, "register": "created"},
        {"name": "again", "volsnap.openstack.volume_snapshot": args, "register": "again"},
        {"name": "check delete", "volsnap.openstack.volume_snapshot": dict(args, state="absent"),
         "check_mode": True, "register": "check_delete"},
        {"name": "bad id", "volsnap.openstack.volume_snapshot": dict(args, snapshot_id="../x"),
         "register": "bad", "ignore_errors": True},
        {"name": "no id", "volsnap.openstack.volume_snapshot": {"volume_path": args["volume_path"], "state": "absent"},
         "register": "no_id", "ignore_errors": True},
        {"name": "nothing to resume", "volsnap.openstack.volume_snapshot": {"volume_path": args["volume_path"],
                                                                            "state": "resumed"},
         "register": "resumed"},
        {"name": "resume and report", "volsnap.openstack.volume_snapshot": {"volume_path": args["volume_path"],
                                                                            "state": "resumed",
                                                                            "report_to_cinder": True},
         "register": "resume_report", "ignore_errors": True},
    ]
    result = run_tasks(tmp_path, tasks, ["checked", "created", "again", "check_delete", "bad", "no_id", "resumed",
                                         "resume_report"], diff=True)
    assert result.rc == 0, result.output
    assert result["checked"]["changed"] is True and result["checked"]["plan"]
    assert result["created"]["changed"] is True and result["created"]["mode"] == "offline"
    assert '"active"' in result["created"]["diff"]["after"] and result["created"]["diff"]["before"] == ""
    assert result["again"]["changed"] is False
    assert result["check_delete"]["changed"] is True and "commit" in result["check_delete"]["plan"][0]
    assert (share / f"{VOL}.{SNAPS[0]}").exists()
    expected_info = {"active": f"{VOL}.{SNAPS[0]}", SNAPS[0]: f"{VOL}.{SNAPS[0]}"}
    assert json.loads((share / f"{VOL}.info").read_text()) == expected_info
    assert result["bad"]["failed"] is True and "not a Cinder snapshot id" in result["bad"]["msg"]
    assert result["no_id"]["failed"] is True and "snapshot_id" in result["no_id"]["msg"]
    resumed = result["resumed"]
    assert (resumed["changed"], resumed["resumed"], resumed["operation"], resumed["snapshot_id"]) == \
        (False, False, None, None)
    assert resumed["active"] == f"{VOL}.{SNAPS[0]}" and resumed["info"] == expected_info
    assert result["resume_report"]["failed"] is True and "report_to_cinder" in result["resume_report"]["msg"]


def test_check_mode_no_op_and_refusal_leave_the_share_untouched(tmp_path: Path) -> None:
    """No lock file or anything else appears until a run has something to change; then the lock file exists."""
    share = tmp_path / "share"
    share.mkdir()
    build_volume(share)
    args = {"volume_path": str(share / VOL), "snapshot_id": SNAPS[0]}

    def listing() -> Dict[str, Tuple[int, int]]:
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in share.iterdir()}

    before, share_mtime = listing(), share.stat().st_mtime_ns
    tasks = [
        {"name": "check create", "volsnap.openstack.volume_snapshot": args, "check_mode": True, "register": "checked"},
        {"name": "delete what is not there", "volsnap.openstack.volume_snapshot": dict(args, state="absent"),
         "register": "noop"},
        {"name": "refused", "volsnap.openstack.volume_snapshot": dict(args, mode="online"),
         "register": "refused", "ignore_errors": True},
    ]
    result = run_tasks(tmp_path, tasks, ["checked", "noop", "refused"])
    assert result["checked"]["changed"] is True and result["checked"]["plan"], result.output
    assert result["noop"]["changed"] is False, result.output
    assert result["refused"]["failed"] is True and result["refused"]["msg"], result.output
    assert listing() == before and share.stat().st_mtime_ns == share_mtime

    created = run_tasks(tmp_path, [{"name": "create", "volsnap.openstack.volume_snapshot": args,
                                    "register": "created"}], ["created"])
    assert created["created"]["changed"] is True, created.output
    assert (share / f".volsnap-nfs-{VOLUME_ID}.lock").exists()
