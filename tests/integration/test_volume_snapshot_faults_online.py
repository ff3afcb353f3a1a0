"""volume_snapshot killed (SIGKILL) at every step of an ONLINE create or delete, then run again.

A real libvirt domain (QEMU TCG) has the volume attached while the module runs. The module's
process is killed after each step's effect (before the journal records it), right after each
journal update (the write made before the first step and after each compute step; complete-stage
steps are idempotent and not recorded), and, for deletes, right after the block job was started
(the job keeps running in libvirt without its client). The next run with the same arguments must
finish the operation; then libvirt's chain, the files, the ``.info`` file and the data of the
active layer and of every remaining snapshot must be consistent. Other tests kill the module and
stop (or undefine) the domain before the rerun, as a host crash does, and cancel a block job under
a waiting module.

Data is read with the domain stopped gracefully (DESTROY_GRACEFUL: QEMU flushes its cached qcow2
metadata first), as in test_volume_snapshot.py: a running image read from outside may show stale
allocation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.clone import CloneRequest, clone_volume
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import Libvirt
from ansible_run import subprocess_runner
from test_volume_snapshot import SNAPS, VOL, VOLUME_ID, reads, run_op, snapshot_offline_with_data, state_view, \
    stop_gracefully, verify

CHILD = textwrap.dedent("""
    import os, signal, sys
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import libvirt as _libvirt
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import volume as _volume
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
    sys.path.insert(0, sys.argv[6])
    from ansible_run import subprocess_runner
    # kill_at: 'journal:N', 'effect:N', 'job:1' (see the module docstring) or 'slow:0' (slow jobs, no kill)
    path, snap, state, kill_at, uri = sys.argv[1:6]
    where, number = kill_at.split(':')
    number = int(number)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    original_begin = _volume.Journal.begin
    original_advance = _volume.Journal.advance

    def begin(self, plan):
        original_begin(self, plan)
        if where == 'journal' and number == 0:
            die()  # the journal holds the plan, no step ran

    def advance(self, done, stage, write=True):
        if where == 'effect' and done == number:
            die()  # step `number` took effect, the journal does not know
        original_advance(self, done, stage, write)
        if where == 'journal' and done == number:
            die()  # the journal records step `number`

    class Slow(object):
        # The domain as the module sees it, except that block jobs start slowly (a busy share), so the job
        # still runs when the next run starts: 1 MiB/s (2 MiB to merge), 8 MiB/s to flatten (64 MiB).
        def __init__(self, dom):
            self._dom = dom

        def __getattr__(self, name):
            return getattr(self._dom, name)

        def blockCommit(self, disk, base, top, bandwidth, flags):
            return self._dom.blockCommit(disk, base, top, 1, flags)

        def blockRebase(self, disk, base, bandwidth, flags):
            return self._dom.blockRebase(disk, base, 1 if base else 8, flags)

    def started(original):
        def call(*args, **kwargs):
            original(*args, **kwargs)
            die()  # the block job runs on in libvirt and nobody waits for it
        return call

    if where in ('job', 'slow'):
        original_find = _libvirt.Libvirt.find_domain

        def find_domain(self, name):
            dom = original_find(self, name)
            return None if dom is None else Slow(dom)

        _libvirt.Libvirt.find_domain = find_domain
    if where == 'job':
        _libvirt.Libvirt.block_commit = started(_libvirt.Libvirt.block_commit)
        _libvirt.Libvirt.block_rebase = started(_libvirt.Libvirt.block_rebase)
    _volume.Journal.begin = begin
    _volume.Journal.advance = advance
    VolumeSnapshot(Request(path, snap, state=state), QemuImg(subprocess_runner),
                   lambda: _libvirt.Libvirt(uri), False).run()
    print('the run was not killed')
""")

# case -> (snapshots taken offline before the domain starts, snapshot to act on, state, steps, block job)
CASES: Dict[str, Tuple[int, str, str, int, bool]] = {
    "create": (2, SNAPS[2], "present", 3, False),            # overlay, libvirt snapshot, .info
    "delete-active": (3, SNAPS[2], "absent", 3, True),       # blockRebase (pull), .info, delete
    "delete-middle": (3, SNAPS[1], "absent", 3, True),       # blockCommit, .info, delete
    "delete-oldest": (3, SNAPS[0], "absent", 3, True),       # blockCommit into the raw base, .info, delete
    "delete-only": (1, SNAPS[0], "absent", 3, True),         # blockRebase flattening; the base file goes
}


def kill_points() -> List[Tuple[str, str]]:
    points = []
    for case, (_count, _snap, _state, steps, job) in CASES.items():
        points += [(case, "journal:0")]
        points += [(case, f"{where}:{n}") for n in range(1, steps + 1) for where in ("effect", "journal")]
        if job:
            points.append((case, "job:1"))
    return points


def crash_run(share: Path, snap: str, state: str, kill_at: str, uri: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run([sys.executable, "-c", CHILD, str(share / VOL), snap, state, kill_at, uri,
                           str(Path(__file__).parent)], env=env, capture_output=True, text=True, check=False)


def start_on_active(share: Path, domain_factory, name: str):
    for path in share.iterdir():
        path.chmod(0o666)
    info = json.loads((share / f"{VOL}.info").read_text())
    disk = {"path": str(share / info["active"]), "format": "qcow2", "target": "vdb", "serial": VOLUME_ID}
    return domain_factory(name, [disk])


def leftovers(share: Path) -> List[str]:
    """Journal and temporary files of an operation that did not finish."""
    return sorted(p.name for p in share.iterdir()
                  if p.name.endswith((".journal", ".volsnap-tmp", ".tmp")))


@pytest.mark.parametrize("case,kill_at", kill_points(), ids=lambda v: str(v).replace(":", "-"))
def test_online_sigkill_then_rerun(share: Path, domain_factory, libvirt_uri: str, case: str, kill_at: str) -> None:
    count, snap, state, _steps, _job = CASES[case]
    stages = snapshot_offline_with_data(share, count=count)
    final = count
    dom = start_on_active(share, domain_factory, f"kill-{case}-{kill_at.replace(':', '')}")

    proc = crash_run(share, snap, state, kill_at, libvirt_uri)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    assert leftovers(share), "the killed run left no journal"
    if kill_at.startswith("job"):
        assert dom.blockJobInfo("vdb", 0), "the block job finished before the next run could wait for it"

    # another operation on the volume is refused while this one is pending
    other = next(s for s in SNAPS if s != snap)
    with pytest.raises(VolsnapError, match="interrupted .* is pending"):
        run_op(share, other, state="absent", libvirt_uri=libvirt_uri)

    result = run_op(share, snap, state=state, libvirt_uri=libvirt_uri)
    assert result["changed"] and result["resumed"] and result["mode"] == "online", result
    expected_status = "creating_compute_complete" if state == "present" else "deleting_compute_complete"
    assert result["compute_status"] == expected_status
    assert leftovers(share) == []
    again = run_op(share, snap, state=state, libvirt_uri=libvirt_uri)
    assert again["changed"] is False and again["mode"] == "online", again

    # libvirt runs exactly the chain the headers describe, and nothing else is in the share
    report = inspect_chain(str(share / VOL))
    assert report.safe, report.problems
    names = [layer.image.filename for layer in report.layers]
    chain = Libvirt(libvirt_uri).disk_chain_paths(dom, "vdb")
    assert [Path(p).name for p in chain] == names
    assert [layer["filename"] for layer in result["chain"]["chain"]] == names
    info = json.loads((share / f"{VOL}.info").read_text())
    assert info["active"] == names[0] == result["active"]
    expected_files = set(names) | {f"{VOL}.info", f".volsnap-nfs-{VOLUME_ID}.lock"}
    assert set(p.name for p in share.iterdir()) == expected_files

    stop_gracefully(dom)
    if state == "present":
        stages[snap] = final
    else:
        del stages[snap]
    verify(share, stages, final)


def test_online_flatten_leaves_a_volume_the_module_still_manages(share: Path, domain_factory,
                                                                 libvirt_uri: str) -> None:
    """Deleting the only snapshot while its file is active pulls the base in and deletes volume-<id>
    (as Nova and Cinder do); the volume is then only reachable through its .info file, and every
    module must still find it by its volume file name."""
    stages = snapshot_offline_with_data(share, count=1)
    dom = start_on_active(share, domain_factory, "flatten")
    result = run_op(share, SNAPS[0], state="absent", libvirt_uri=libvirt_uri)
    assert result["changed"] and "blockRebase" in result["plan"][0]
    assert result["merge"]["file_to_delete"] == VOL and not (share / VOL).exists()
    assert run_op(share, SNAPS[0], state="absent", libvirt_uri=libvirt_uri)["changed"] is False
    created = run_op(share, SNAPS[1], libvirt_uri=libvirt_uri)
    assert created["changed"] and created["mode"] == "online"
    stop_gracefully(dom)
    del stages[SNAPS[0]]
    stages[SNAPS[1]] = 1
    verify(share, stages, 1)
    dest = share / "volume-5d2c8e1f-3a4b-4c6d-9e8f-7a6b5c4d3e2f"
    clone = clone_volume(CloneRequest(volume_path=str(share / VOL), snapshot_id=SNAPS[1], dest=str(dest)),
                         subprocess_runner)
    assert clone["changed"] and clone["source"] == str(share / f"{VOL}.{SNAPS[0]}")
    for offset, pattern in state_view(1).items():
        assert reads(dest, "raw", pattern, offset), (offset, pattern)
    offline = run_op(share, SNAPS[1], state="absent", mode="offline", libvirt_uri=libvirt_uri)
    assert offline["changed"] and offline["mode"] == "offline"
    verify(share, {}, 1)


@pytest.mark.parametrize("case", ["delete-active", "delete-middle"])
def test_block_job_cancelled_under_the_module_deletes_nothing(share: Path, domain_factory, libvirt_uri: str,
                                                              case: str) -> None:
    """The block job ends without merging (cancelled by an operator, or failed): the module must notice
    that the file is still in libvirt's chain and delete nothing. A cancelled blockCommit may have written part of
    the snapshot's data into the layer below: the journal stays for the next run. A cancelled blockRebase (pull)
    only copied into the active file what it already showed and the chain is as before: nothing of the delete is
    in place, so it is rolled back (journal removed) and the volume is not blocked; the next run starts afresh."""
    count, snap, state, _steps, _job = CASES[case]
    stages = snapshot_offline_with_data(share, count=count)
    dom = start_on_active(share, domain_factory, f"cancel-{case}")
    info_before = (share / f"{VOL}.info").read_text()
    files_before = sorted(p.name for p in share.iterdir())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(share / VOL), snap, state, "slow:0", libvirt_uri,
                              str(Path(__file__).parent)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not dom.blockJobInfo("vdb", 0):
            assert child.poll() is None and time.monotonic() < deadline, "the block job never started"
            time.sleep(0.02)
        dom.blockJobAbort("vdb", 0)
        _out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 1, err
    assert "failed or was cancelled" in err and "Nothing was deleted" in err, err
    assert (share / f"{VOL}.info").read_text() == info_before
    assert sorted(p.name for p in share.iterdir() if not p.name.endswith(".journal")) == files_before
    # A blockCommit aborted before it wrote a byte leaves its files untouched and is rolled back too.
    rolled_back = "it was rolled back" in err
    assert rolled_back or case == "delete-middle", err
    assert rolled_back or "It was not rolled back: step 1 (libvirt blockCommit" in err, err
    assert bool(leftovers(share)) != rolled_back, (err, leftovers(share))

    result = run_op(share, snap, state=state, libvirt_uri=libvirt_uri)
    assert result["changed"] and result["resumed"] != rolled_back, result
    assert [Path(p).name for p in Libvirt(libvirt_uri).disk_chain_paths(dom, "vdb")] == \
        [layer["filename"] for layer in result["chain"]["chain"]]
    stop_gracefully(dom)
    del stages[snap]
    verify(share, stages, count)


STOPPED_POINTS = [(case, kill_at, how)
                  for case, points in (("create", ("journal:0", "effect:1", "effect:2")),
                                       ("delete-active", ("journal:0", "job:1", "effect:1")),
                                       ("delete-middle", ("journal:0", "job:1", "effect:1")),
                                       ("delete-only", ("journal:0", "job:1")))
                  for kill_at in points for how in ("stopped", "undefined")]


@pytest.mark.parametrize("case,kill_at,how", STOPPED_POINTS, ids=lambda v: str(v).replace(":", "-"))
def test_online_sigkill_then_the_domain_stops_then_rerun(share: Path, domain_factory, libvirt_uri: str,
                                                         case: str, kill_at: str, how: str) -> None:
    """The host crashed: the module AND the domain died. The next run finishes the operation offline
    (a stopped domain's definition is switched to the new overlay by libvirt, as for a running one)."""
    count, snap, state, _steps, _job = CASES[case]
    stages = snapshot_offline_with_data(share, count=count)
    dom = start_on_active(share, domain_factory, f"crash-{case}-{kill_at.replace(':', '')}-{how}")
    proc = crash_run(share, snap, state, kill_at, libvirt_uri)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    stop_gracefully(dom)  # a running block job is cancelled with it
    if how == "undefined":
        dom.undefine()

    result = run_op(share, snap, state=state, libvirt_uri=libvirt_uri)
    assert result["changed"] and result["resumed"], result
    assert leftovers(share) == []
    report = inspect_chain(str(share / VOL))
    assert report.safe, report.problems
    names = [layer.image.filename for layer in report.layers]
    assert set(p.name for p in share.iterdir()) == set(names) | {f"{VOL}.info", f".volsnap-nfs-{VOLUME_ID}.lock"}
    if state == "present":
        stages[snap] = count
    else:
        del stages[snap]
    verify(share, stages, count)
    if how == "stopped":
        # the definition names the active file, and the domain boots on exactly the chain the headers give
        assert Libvirt(libvirt_uri).disk_source(dom, "vdb") == str(share / names[0])
        dom.create()
        assert [Path(p).name for p in Libvirt(libvirt_uri).disk_chain_paths(dom, "vdb")] == names
        stop_gracefully(dom)
        verify(share, stages, count)
    assert run_op(share, snap, state=state, libvirt_uri=libvirt_uri)["changed"] is False
