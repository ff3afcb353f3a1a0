"""nfs_share_audit's snapshot comparison against real Cinder NFS snapshots (issue #16).

The lab's NfsDriver backend starts without snapshot support; the configure_nfs_snapshots playbook enables
``nfs_snapshot_support``/``nfs_qcow2_volumes`` (and restarts cinder-volume), and ``lab_state`` (from
test_operator_playbooks_lab) resets the configuration before and restores it after, restarting cinder-volume.

Two volumes of type nfs, each with two snapshots taken through the Cinder API (the driver's qcow2 overlays and
``.info`` file). Then, for real:

* the file of one snapshot of the first volume is moved out of the share: Cinder still holds the snapshot as
  ``available`` -> ``snapshot_file_missing``;
* one snapshot of the second volume is set to ``error_deleting`` with the admin action ``os-reset_status`` while its
  file stays -> ``snapshot_file_present``;
* an overlay named after a snapshot id Cinder does not know is planted beside the second volume ->
  ``snapshot_unknown_to_cinder`` and an ``orphan_overlay`` cleanup candidate.

The audit reports exactly these three for the test's volumes (nothing for the healthy snapshots). ``state: cleaned``,
asked (check mode, then for real) to remove every file of both volumes, removes only the planted overlay: nothing
Cinder knows. At the end the moved file is put back, Cinder deletes the snapshots and volumes, the lock file the
cleanup took is removed through the module, and nothing of the volumes is left in the share.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from ansible_run import run_tasks
from openstack_helpers import unique
import test_operator_playbooks_lab as playbooks_lab
from test_operator_playbooks_lab import cinder_services_up, playbook, wait
from test_share_audit import audit_then_clean

# the fixture that resets the lab configuration before the test and restores it (restarting cinder-volume) after
lab_state = playbooks_lab.lab_state

MODULE = "volsnap.openstack.nfs_share_audit"
WAIT = 180


def _wait_status(conn: Any, resource: Any, status: str) -> Any:
    return conn.block_storage.wait_for_status(resource, status, failures=["error"], interval=1, wait=WAIT)


def _delete_all(conn: Any, volumes: List[Any]) -> List[str]:
    """Delete every snapshot (newest first) and then every volume through Cinder; returns what failed."""
    errors = []
    for volume in volumes:
        snaps = sorted(conn.block_storage.snapshots(volume_id=volume.id), key=lambda s: s.created_at, reverse=True)
        for snap in snaps:
            try:
                if snap.status not in ("available", "error"):
                    conn.block_storage.reset_snapshot_status(snap, "available")
                conn.block_storage.delete_snapshot(snap, ignore_missing=True)
                conn.block_storage.wait_for_delete(snap, interval=1, wait=WAIT)
            except Exception as err:  # report every failure, clean the rest
                errors.append(f"snapshot {snap.id}: {err}")
        try:
            conn.block_storage.delete_volume(volume, ignore_missing=True)
            conn.block_storage.wait_for_delete(volume, interval=1, wait=WAIT)
        except Exception as err:
            errors.append(f"volume {volume.id}: {err}")
    return errors


@pytest.fixture
def nfs_snapshots(openstack_lab: Any, lab_state: Dict[str, Any], tmp_path: Path) -> Iterator[Any]:
    """cinder-volume with nfs_snapshot_support and nfs_qcow2_volumes (the operator playbook); the lab's
    configuration is restored by lab_state afterwards."""
    applied = playbook(openstack_lab, "configure_nfs_snapshots", tmp_path / "configure")
    assert applied.rc == 0, applied.output[-6000:]
    conn = openstack_lab.connection()
    wait("both cinder-volume backends up",
         lambda: cinder_services_up(conn, [openstack_lab.cinder_host, openstack_lab.nfs_cinder_host]))
    yield conn


@pytest.fixture
def made_volumes(nfs_snapshots: Any) -> Iterator[List[Any]]:
    """Volumes the test appends: deleted with their snapshots through Cinder while snapshot support is still on
    (torn down before nfs_snapshots/lab_state restore the configuration)."""
    made: List[Any] = []
    yield made
    _delete_all(nfs_snapshots, made)


def _names(result: Dict[str, Any], volume_ids: List[str]) -> Dict[str, str]:
    return {f["name"]: f["class"] for f in result["files"] if f["volume_id"] in volume_ids}


def _identities(share: Path, names: List[str]) -> Dict[str, Any]:
    out = {}
    for name in names:
        st = os.lstat(share / name)
        out[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def test_snapshot_mismatches_against_real_cinder(openstack_lab: Any, nfs_snapshots: Any, made_volumes: List[Any],
                                                 qemu_img: str, tmp_path: Path) -> None:
    conn = nfs_snapshots
    share = Path(openstack_lab.nfs_mount)
    export = Path(openstack_lab.nfs_export)
    base = {"share": str(share), "cinder_host": openstack_lab.nfs_cinder_pool, "cloud": openstack_lab.cloud,
            "min_age": 0}

    first = conn.block_storage.create_volume(size=1, volume_type=openstack_lab.nfs_volume_type,
                                             name=unique("audit-snap-a"))
    made_volumes.append(first)
    second = conn.block_storage.create_volume(size=1, volume_type=openstack_lab.nfs_volume_type,
                                              name=unique("audit-snap-b"))
    made_volumes.append(second)
    first, second = _wait_status(conn, first, "available"), _wait_status(conn, second, "available")
    assert first.host == openstack_lab.nfs_cinder_pool and second.host == openstack_lab.nfs_cinder_pool
    snaps: Dict[str, Any] = {}
    for key, volume in (("keep_a", first), ("gone", first), ("error_deleting", second), ("keep_b", second)):
        snap = conn.block_storage.create_snapshot(volume_id=volume.id, name=unique(f"audit-{key}"))
        snaps[key] = _wait_status(conn, snap, "available")
    ids = [first.id, second.id]
    vol_a, vol_b = f"volume-{first.id}", f"volume-{second.id}"
    info_b = json.loads((share / f"{vol_b}.info").read_text(encoding="utf-8"))
    assert info_b == {"active": f"{vol_b}.{snaps['keep_b'].id}", snaps["error_deleting"].id:
                      f"{vol_b}.{snaps['error_deleting'].id}", snaps["keep_b"].id: f"{vol_b}.{snaps['keep_b'].id}"}

    gone_name = f"{vol_a}.{snaps['gone'].id}"
    aside = export.parent / f"aside-{gone_name}"
    unknown_id = str(uuid.uuid4())
    planted = f"{vol_b}.{unknown_id}"
    try:
        # 1. the file of an available snapshot removed by hand (kept outside the share, put back at the end)
        shutil.move(str(export / gone_name), str(aside))
        assert _wait_status(conn, snaps["gone"], "available").status == "available"  # Cinder still says available
        # 2. a snapshot Cinder holds as error_deleting while its file stays
        conn.block_storage.reset_snapshot_status(snaps["error_deleting"], "error_deleting")
        assert conn.block_storage.get_snapshot(snaps["error_deleting"].id).status == "error_deleting"
        assert (share / f"{vol_b}.{snaps['error_deleting'].id}").is_file()
        # 3. an overlay named after a snapshot id Cinder does not know, on the second volume's base file
        base_format = json.loads(subprocess.run([qemu_img, "info", "-U", "--output=json", str(share / vol_b)],
                                                check=True, capture_output=True, text=True).stdout)["format"]
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", vol_b, "-F", base_format, str(share / planted)],
                       check=True)

        cinder_files = sorted(n for n in os.listdir(share) if n.startswith((vol_a, vol_b)) and n != planted)
        assert sorted(n for n in cinder_files if n.startswith(vol_a)) == sorted(
            [vol_a, f"{vol_a}.info", f"{vol_a}.{snaps['keep_a'].id}"])
        before = _identities(share, cinder_files)
        # asked to remove every file of both volumes: only a proven leak may go
        everything = "{{ found.files | selectattr('volume_id', 'in', mine) | list }}"
        clean = dict(base, state="cleaned", only=everything)
        res = audit_then_clean(tmp_path / "audit", base, clean, ids, openstack_lab)
        found = res["found"]

        findings = sorted((f["code"], f["volume_id"], f.get("snapshot_id"))
                          for f in found["cinder"]["findings"] if f.get("volume_id") in ids)
        assert findings == sorted([
            ("snapshot_file_missing", first.id, snaps["gone"].id),
            ("snapshot_file_present", second.id, snaps["error_deleting"].id),
            ("snapshot_unknown_to_cinder", second.id, unknown_id),
        ]), found["cinder"]["findings"]
        by_code = {f["code"]: f for f in found["cinder"]["findings"] if f.get("volume_id") in ids}
        assert by_code["snapshot_file_missing"]["cinder_status"] == "available"
        assert by_code["snapshot_file_present"]["cinder_status"] == "error_deleting"
        assert found["cinder"]["volumes_on_backend"] >= 2 and found["cinder"]["snapshots_on_backend"] >= 4

        assert _names(found, ids) == {
            vol_a: "volume", f"{vol_a}.info": "info", f"{vol_a}.{snaps['keep_a'].id}": "snapshot_overlay",
            vol_b: "volume", f"{vol_b}.info": "info",
            f"{vol_b}.{snaps['error_deleting'].id}": "snapshot_overlay",
            f"{vol_b}.{snaps['keep_b'].id}": "snapshot_overlay",
            planted: "orphan_overlay",
        }
        volumes = {v["volume_id"]: v for v in found["volumes"]}
        assert volumes[first.id]["chain_safe"] is False  # its active file is gone
        assert volumes[second.id]["chain_safe"] is True and volumes[second.id]["info_consistent"] is True
        assert [c["name"] for c in found["cleanup_candidates"] if c["volume_id"] in ids] == [planted]

        checked, done, again = res["checked"], res["done"], res["again"]
        assert checked["changed"] is True and [os.path.basename(p) for p in checked["removed"]] == [planted]
        assert f"-{planted}" in res.output  # the diff names what would go
        assert len(checked["kept"]) == len(cinder_files)  # every file Cinder knows: asked for, kept
        assert done["changed"] is True and [os.path.basename(p) for p in done["removed"]] == [planted]
        assert len(done["kept"]) == len(cinder_files)
        assert again["changed"] is False and again["removed"] == []
        assert not (share / planted).exists()
        assert _identities(share, cinder_files) == before  # nothing Cinder knows was touched
        assert conn.block_storage.get_snapshot(snaps["error_deleting"].id).status == "error_deleting"
    finally:
        with contextlib.suppress(FileNotFoundError):
            (share / planted).unlink()
        if aside.exists():
            shutil.move(str(aside), str(export / gone_name))

    # Cinder deletes its snapshots and volumes (the error_deleting one reset to available first)
    errors = _delete_all(conn, list(made_volumes))
    assert errors == [], errors
    lock_names = [f".volsnap-nfs-{vid}.lock" for vid in ids]
    left = [n for n in os.listdir(share) if n.startswith((vol_a, vol_b))]
    assert left == [], left
    # the cleanup took the second volume's lock, which stays after Cinder deleted it: a stale lock, removed
    only = "{{ after.cleanup_candidates | selectattr('name', 'in', locks) | list }}"
    tasks = [{"name": "audit", MODULE: base, "register": "after"},
             {"name": "clean", MODULE: dict(base, state="cleaned", only=only), "register": "last"}]
    for task in tasks:
        task["vars"] = {"locks": lock_names}
    res = run_tasks(tmp_path / "after", tasks, ["after", "last"], python=sys.executable, env_extra=openstack_lab.env())
    assert res.rc == 0, res.output[-6000:]
    assert _names(res["after"], ids) == {lock_names[1]: "lock_stale"}
    assert not [f for f in res["after"]["cinder"]["findings"] if f.get("volume_id") in ids]
    assert [os.path.basename(p) for p in res["last"]["removed"]] == [lock_names[1]]
    assert not [n for n in os.listdir(share) if any(vid in n for vid in ids)]
