"""volume_snapshot when a step fails for real (issue 12, items 6 and 8), through the real module (ansible-playbook).

* Errors on the module's own files: a real small file system (tmpfs with few inodes, or full) makes the lock, the
  journal, the overlay or the ``.info`` file fail with ENOSPC at a chosen step. Every failure is a failed result
  (never a traceback) that names the file and says what is pending; a rerun after freeing space converges with the
  data intact (qemu-io read patterns).
* A step that fails without changing anything is rolled back (the volume is not blocked): qemu-img commit refused
  because a reader (qemu-io -r, as a backup tool would) holds the chain; the overlay of a create that cannot be
  written.
* ``state: abandoned`` on a pending journal whose next step always fails: allowed (and exact about what it removes)
  when the files prove nothing is lost, refused with the reason (and nothing touched) otherwise.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from ansible_run import run_tasks
from test_volume_snapshot import SNAPS, VOL, VOLUME_ID, crash_run, snapshot_offline_with_data, verify

JOURNAL = f".volsnap-{VOL}.journal"
LOCK = f".volsnap-nfs-{VOLUME_ID}.lock"


# ---------------------------------------------------------------- helpers


@pytest.fixture
def small_share(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs (16 MiB, 64 inodes) as the share; unmounted at the end."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,nr_inodes=64,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        share = mount / "share"
        share.mkdir()
        yield share
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_inodes(share: Path, leave: int) -> List[Path]:
    """Create empty files until the file system has no inode left, then remove ``leave`` of them."""
    fillers = []
    index = 0
    while True:
        path = share.parent / f"inode-filler-{index}"
        try:
            path.touch()
        except OSError:
            break
        fillers.append(path)
        index += 1
    for path in fillers[len(fillers) - leave:]:
        path.unlink()
    return fillers[:len(fillers) - leave]


def fill_space(share: Path) -> Path:
    """Fill the file system's data blocks (inodes stay available)."""
    filler = share.parent / "space-filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\xa5" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def snapshot_files(share: Path) -> Dict[str, tuple]:
    """Every entry of the share with its size, mode and sha256 (what a refusal or a rollback must leave as it was)."""
    files = {}
    for path in sorted(share.iterdir()):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else None
        files[path.name] = (st.st_size, oct(st.st_mode), digest)
    return files


def module_task(name: str, register: str, **args) -> dict:
    task = {"name": name, "volsnap.openstack.volume_snapshot": args, "register": register, "ignore_errors": True}
    return task


def run_module(tmp_path: Path, check: bool = False, **args) -> dict:
    """One volume_snapshot task through ansible-playbook; the registered result (failed or not)."""
    workdir = tmp_path / f"play-{time.monotonic_ns()}"
    workdir.mkdir()
    task = module_task("volume_snapshot", "out", **args)
    if check:
        task["check_mode"] = True
    result = run_tasks(workdir, [task], ["out"])
    assert "out" in result.results, result.output
    out = result["out"]
    # never an unhandled exception: a failed result that says what happened
    for text in (result.output, json.dumps(out)):
        assert "Traceback" not in text and "Module failed: [Errno" not in text, result.output
        assert "MODULE FAILURE" not in text and "module_stderr" not in out, result.output
    return out


def leftovers(share: Path) -> List[str]:
    """The module's journal and temporary files (a lock file may stay: it is how runs serialise)."""
    return sorted(p.name for p in share.iterdir() if p.name.startswith(".") and p.name != LOCK)


def _qemu_locks_write_sharing(path: Path) -> bool:
    """True once a QEMU process holds ``path`` without sharing write (qemu's lock byte 200 + BLK_PERM_WRITE)."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 201, 1, 0)
        answer = fcntl.fcntl(fd, getattr(fcntl, "F_OFD_GETLK", fcntl.F_GETLK), request)
    finally:
        os.close(fd)
    return struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK


@contextmanager
def chain_reader(active: Path) -> Iterator[subprocess.Popen]:
    """qemu-io -r on the active file, as a backup tool reading the volume: qemu then refuses any writer of the chain's
    files (qemu-img commit: 'Failed to get "write" lock'), while nothing holds the active file for writing."""
    proc = subprocess.Popen(["qemu-io", "-r", "-f", "qcow2", str(active)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not any(_qemu_locks_write_sharing(p) for p in active.parent.iterdir() if p.name.startswith(VOL + ".")):
            assert proc.poll() is None and time.monotonic() < deadline, "qemu-io did not open the chain"
            time.sleep(0.05)
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


KILL_AT_START = textwrap.dedent("""
    import os, signal, sys
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import volume as _volume
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
    sys.path.insert(0, sys.argv[4])
    from ansible_run import subprocess_runner
    def start(self, index):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after the journal was written, before the data step started
    _volume.Journal.start = start
    VolumeSnapshot(Request(sys.argv[1], sys.argv[2], state=sys.argv[3], mode='offline'), QemuImg(subprocess_runner),
                   lambda: None, False).run()
""")


def kill_before_data_step(share: Path, snap: str, state: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run([sys.executable, "-c", KILL_AT_START, str(share / VOL), snap, state,
                           str(Path(__file__).parent)], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr


def journal_of(share: Path) -> dict:
    return json.loads((share / JOURNAL).read_text())


# ---------------------------------------------------------------- item 8: errors on the module's own files


@pytest.mark.parametrize("headroom", ["no-lock", 0, 1, 2])
def test_no_inode_left_fails_cleanly_at_each_file_then_converges(tmp_path: Path, small_share: Path, headroom) -> None:
    """No inode for the lock file / the journal / the overlay's temporary file / the overlay's name: a failed result
    naming the file, nothing pending (a failed overlay step is rolled back), nothing left; after freeing inodes the
    same request converges."""
    share = small_share
    stages = snapshot_offline_with_data(share, count=1)
    if headroom == "no-lock":
        (share / LOCK).unlink()
    before = snapshot_files(share)
    fillers = fill_inodes(share, 0 if headroom == "no-lock" else headroom)
    out = run_module(tmp_path, volume_path=str(share / VOL), snapshot_id=SNAPS[1], mode="offline")
    assert out["failed"] is True and out["pending"] is None, out
    assert out["rolled_back"] is False or headroom in (1, 2), out
    msg = out["msg"]
    assert "No space left on device (ENOSPC)" in msg, msg
    if headroom == "no-lock":
        assert f"{share / LOCK}" in msg and out["file"] == str(share / LOCK), msg
        assert "Nothing is pending on this volume" in msg, msg
    elif headroom == 0:
        assert f"cannot write the journal {share / JOURNAL}" in msg and out["file"] == str(share / JOURNAL), msg
        assert "nothing is pending and the volume is unchanged" in msg, msg
    else:
        # 1: the overlay's temporary file cannot be created; 2: it cannot get the overlay's name (on tmpfs a hard
        # link takes an inode too)
        assert msg.startswith(f"step 1 of 2 (create qcow2 overlay {share / VOL}.{SNAPS[1]}"), msg
        if headroom == 2:
            assert out["file"] == str(share / f"{VOL}.{SNAPS[1]}") and "/proc/" not in msg, msg
        assert out["rolled_back"] is True and "it was rolled back" in msg and "nothing is pending" in msg, msg
    assert snapshot_files(share) == before and leftovers(share) == [], (snapshot_files(share), before)
    # the volume is not blocked: nothing is pending, and once inodes are free the same request converges
    for path in fillers:
        path.unlink()
    out = run_module(tmp_path, volume_path=str(share / VOL), snapshot_id=SNAPS[1], mode="offline")
    assert out.get("failed") is not True and out["changed"] is True, out
    stages[SNAPS[1]] = 1
    verify(share, stages, 1)
    assert leftovers(share) == []


@pytest.mark.parametrize("then", ["free-and-resume", "abandon"])
def test_no_space_for_the_info_file_leaves_it_intact_and_pending(tmp_path: Path, small_share: Path, then: str) -> None:
    """A create killed once the overlay is recorded, then the share is full: writing .info fails with ENOSPC. The old
    .info stays (atomic), no temporary file stays, the journal stays pending at that step; freeing space and
    state=resumed converges, or state=abandoned removes the overlay (no data in it, nothing uses it) and the journal."""
    share = small_share
    stages = snapshot_offline_with_data(share, count=1)
    info_before = (share / f"{VOL}.info").read_bytes()
    assert crash_run(share, SNAPS[1], "present", "journal:1") == -signal.SIGKILL
    assert journal_of(share)["done"] == 1 and (share / f"{VOL}.{SNAPS[1]}").exists()
    filler = fill_space(share)
    before = snapshot_files(share)
    out = run_module(tmp_path, volume_path=str(share / VOL), state="resumed")
    msg = out["msg"]
    assert out["failed"] is True and out["rolled_back"] is False, out
    assert msg.startswith(f"step 2 of 2 (write {share / VOL}.info"), msg
    assert "No space left on device (ENOSPC)" in msg and out["file"] == str(share / f"{VOL}.info"), msg
    assert f"is pending on this volume: 1 of 2 steps done (journal {share / JOURNAL})" in msg, msg
    assert "state=resumed" in msg and "state=abandoned" in msg, msg
    pending = out["pending"]
    assert (pending["operation"], pending["snapshot_id"], pending["steps_done"], pending["steps_total"]) == \
        ("create", SNAPS[1], 1, 2), pending
    assert (share / f"{VOL}.info").read_bytes() == info_before
    assert snapshot_files(share) == before and leftovers(share) == [JOURNAL]
    # every other request on the volume is refused while it is pending, and says how to get out
    other = run_module(tmp_path, volume_path=str(share / VOL), snapshot_id=SNAPS[0], state="absent")
    assert other["failed"] is True and "state=abandoned" in other["msg"] and other["pending"]["steps_done"] == 1
    if then == "free-and-resume":
        filler.unlink()
        out = run_module(tmp_path, volume_path=str(share / VOL), state="resumed")
        assert out.get("failed") is not True and (out["changed"], out["resumed"], out["snapshot_id"]) == \
            (True, True, SNAPS[1]), out
        stages[SNAPS[1]] = 1
        verify(share, stages, 1)
    else:
        checked = run_module(tmp_path, check=True, volume_path=str(share / VOL), state="abandoned")
        overlay = str(share / f"{VOL}.{SNAPS[1]}")
        assert checked.get("failed") is not True and checked["changed"] is True, checked
        assert checked["abandoned"]["removed"] == [overlay, str(share / JOURNAL)], checked
        assert snapshot_files(share) == before
        out = run_module(tmp_path, volume_path=str(share / VOL), state="abandoned", snapshot_id=SNAPS[1])
        assert out.get("failed") is not True and out["changed"] is True and out["operation"] == "create", out
        assert out["abandoned"]["removed"] == [overlay, str(share / JOURNAL)], out
        assert any("the overlay, which held no data and nothing used" in a for a in out["abandoned"]["undone"])
        assert (share / f"{VOL}.info").read_bytes() == info_before and leftovers(share) == []
        assert not os.path.exists(overlay)
        verify(share, stages, 1)
        again = run_module(tmp_path, volume_path=str(share / VOL), state="abandoned")
        assert again.get("failed") is not True and again["changed"] is False, again
        filler.unlink()
        out = run_module(tmp_path, volume_path=str(share / VOL), snapshot_id=SNAPS[1], mode="offline")
        assert out.get("failed") is not True and out["changed"] is True, out
        stages[SNAPS[1]] = 1
        verify(share, stages, 1)
    assert leftovers(share) == []


# ---------------------------------------------------------------- item 6: a failed step never blocks the volume


def test_commit_refused_by_qemu_is_rolled_back_and_the_volume_is_not_blocked(tmp_path: Path) -> None:
    """qemu-img commit refuses to start ('Failed to get "write" lock': a reader holds the chain). Nothing was written:
    the delete is rolled back, the files are byte for byte as before, and other requests work meanwhile."""
    share = tmp_path / "share"
    share.mkdir()
    stages = snapshot_offline_with_data(share, count=2)
    active = share / f"{VOL}.{SNAPS[1]}"
    before = snapshot_files(share)
    with chain_reader(active):
        out = run_module(tmp_path, volume_path=str(share / VOL), snapshot_id=SNAPS[0], state="absent", mode="offline")
        msg = out["msg"]
        assert out["failed"] is True and out["rolled_back"] is True and out["pending"] is None, out
        assert msg.startswith("step 1 of 4 (qemu-img commit"), msg
        assert 'Failed to get "write" lock' in msg and "it was rolled back" in msg, msg
        assert snapshot_files(share) == before and leftovers(share) == []
        # not blocked: nothing to resume, and a create goes through while the reader still holds the chain
        resumed = run_module(tmp_path, volume_path=str(share / VOL), state="resumed")
        assert (resumed["changed"], resumed["resumed"], resumed["operation"]) == (False, False, None), resumed
        created = run_module(tmp_path, volume_path=str(share / VOL), snapshot_id=SNAPS[2], mode="offline")
        assert created.get("failed") is not True and created["changed"] is True, created
    stages[SNAPS[2]] = 2
    verify(share, stages, 2)
    out = run_module(tmp_path, volume_path=str(share / VOL), snapshot_id=SNAPS[0], state="absent", mode="offline")
    assert out.get("failed") is not True and out["changed"] is True, out
    del stages[SNAPS[0]]
    verify(share, stages, 2)
    assert leftovers(share) == []


def test_abandon_a_delete_whose_commit_never_started(tmp_path: Path) -> None:
    """A delete killed after its journal was written, before its commit started; the commit can then never run (a
    reader holds the chain). state=abandoned (check mode first) removes only the journal; the data is untouched and
    the snapshot can be deleted later. state=resumed would roll it back by itself: its commit fails writing nothing."""
    share = tmp_path / "share"
    share.mkdir()
    stages = snapshot_offline_with_data(share, count=2)
    files = snapshot_files(share)
    kill_before_data_step(share, SNAPS[0], "absent")
    assert journal_of(share)["started"] is None and journal_of(share)["done"] == 0
    before = snapshot_files(share)
    active = share / f"{VOL}.{SNAPS[1]}"
    with chain_reader(active):
        wrong = run_module(tmp_path, volume_path=str(share / VOL), state="abandoned", snapshot_id=SNAPS[1])
        assert wrong["failed"] is True and f"not of snapshot {SNAPS[1]}" in wrong["msg"], wrong
        checked = run_module(tmp_path, check=True, volume_path=str(share / VOL), state="abandoned")
        assert checked["changed"] is True and checked["abandoned"]["removed"] == [str(share / JOURNAL)], checked
        assert checked["plan"] == [f"would remove the journal {share / JOURNAL} (no step was applied: the chain and "
                                   f"the .info file are as before)"], checked
        assert snapshot_files(share) == before
        out = run_module(tmp_path, volume_path=str(share / VOL), state="abandoned")
        assert out.get("failed") is not True and (out["changed"], out["operation"], out["snapshot_id"]) == \
            (True, "delete", SNAPS[0]), out
        assert out["abandoned"]["steps_done"] == 0 and out["abandoned"]["next_step"].startswith("qemu-img commit")
        assert out["plan"] == [f"removed the journal {share / JOURNAL} (no step was applied: the chain and the .info "
                               f"file are as before)"], out
        assert snapshot_files(share) == files and leftovers(share) == []
        verify(share, stages, 2)
        # the same interruption, then state=resumed: its commit is refused writing nothing, so it is rolled back
        kill_before_data_step(share, SNAPS[0], "absent")
        out = run_module(tmp_path, volume_path=str(share / VOL), state="resumed")
        assert out["failed"] is True and out["rolled_back"] is True and out["pending"] is None, out
        assert snapshot_files(share) == files and leftovers(share) == []
    out = run_module(tmp_path, volume_path=str(share / VOL), snapshot_id=SNAPS[0], state="absent", mode="offline")
    assert out.get("failed") is not True and out["changed"] is True, out
    del stages[SNAPS[0]]
    verify(share, stages, 2)


def test_abandon_is_refused_when_the_commit_may_have_written(tmp_path: Path) -> None:
    """A delete killed after its commit ran (the journal says the commit started): abandoning would leave the snapshot
    showing merged data, so it is refused with the reason and nothing is touched; state=resumed then finishes it."""
    share = tmp_path / "share"
    share.mkdir()
    stages = snapshot_offline_with_data(share, count=3)
    assert crash_run(share, SNAPS[1], "absent", "effect:1") == -signal.SIGKILL
    assert journal_of(share)["started"] == 0 and journal_of(share)["done"] == 0
    before = snapshot_files(share)
    out = run_module(tmp_path, volume_path=str(share / VOL), state="abandoned")
    msg = out["msg"]
    assert out["failed"] is True and out["pending"]["steps_done"] == 0, out
    assert msg.startswith(f"the delete of snapshot {SNAPS[1]} cannot be abandoned, nothing was changed"), msg
    assert "has started" in msg and "state=resumed" in msg, msg
    assert snapshot_files(share) == before
    # once a step is recorded as applied (the commit), abandoning is refused too
    assert crash_run(share, SNAPS[1], "absent", "journal:1") == -signal.SIGKILL
    assert journal_of(share)["done"] == 1
    before = snapshot_files(share)
    out = run_module(tmp_path, volume_path=str(share / VOL), state="abandoned")
    assert out["failed"] is True and "is already applied" in out["msg"] and "state=resumed" in out["msg"], out
    assert snapshot_files(share) == before
    out = run_module(tmp_path, volume_path=str(share / VOL), state="resumed")
    assert out.get("failed") is not True and (out["changed"], out["snapshot_id"]) == (True, SNAPS[1]), out
    del stages[SNAPS[1]]
    verify(share, stages, 3)
    assert leftovers(share) == []


@pytest.mark.parametrize("headroom", [0, 1, 2])
def test_volume_clone_without_inodes_fails_cleanly_then_converges(tmp_path: Path, small_share: Path,
                                                                  headroom: int) -> None:
    """volume_clone on a share with no inode left for its temporary output / its record / dest's name: a failed result
    naming the file, nothing pending and nothing left behind; after freeing inodes the clone is made, byte-identical
    to the snapshot's data."""
    share = small_share
    stages = snapshot_offline_with_data(share, count=2)
    dest = share / "volume-5d2c8e1f-3a4b-4c6d-9e8f-7a6b5c4d3e2f"
    before = snapshot_files(share)
    fillers = fill_inodes(share, headroom)
    args = {"volume_path": str(share / VOL), "snapshot_id": SNAPS[0], "dest": str(dest), "format": "raw"}
    workdir = tmp_path / f"clone-{headroom}"
    workdir.mkdir()
    task = {"name": "clone", "volsnap.openstack.volume_clone": args, "register": "out", "ignore_errors": True}
    result = run_tasks(workdir, [task], ["out"])
    out = result["out"]
    assert "Traceback" not in result.output and "MODULE FAILURE" not in result.output, result.output
    assert out["failed"] is True and out["pending"] is None and out["file"], out
    assert "No space left on device (ENOSPC)" in out["msg"] and out["file"] in out["msg"], out
    assert "Nothing is pending" in out["msg"], out
    assert snapshot_files(share) == before and leftovers(share) == [], snapshot_files(share)
    for path in fillers:
        path.unlink()
    workdir = tmp_path / f"clone-{headroom}-again"
    workdir.mkdir()
    task = {"name": "clone", "volsnap.openstack.volume_clone": args, "register": "out"}
    result = run_tasks(workdir, [task], ["out"])
    assert result.rc == 0 and result["out"]["changed"] is True, result.output
    info = json.loads((share / f"{VOL}.info").read_text())
    below = share / VOL  # the data of the oldest snapshot is in the volume file itself
    assert info[SNAPS[0]] == f"{VOL}.{SNAPS[0]}" and stages[SNAPS[0]] == 0
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(below), str(dest)],
                             capture_output=True, text=True, check=False)
    assert compare.returncode == 0, compare.stdout + compare.stderr
