"""playbooks/snapshot_volumes.yml through the real ansible-playbook: check mode, create, rerun, a rotation (the
same volumes listed twice: create the new snapshots, then delete the old ones), delete; each batch one task call."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from ansible_run import COLLECTION_ROOT, HOST_PYTHON, ansible_playbook, collections_path

VOLUMES = ["0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f", "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f"]
SNAPSHOT = "9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a"
NEWER = "7a1b2c3d-4e5f-4a6b-9c8d-0e1f2a3b4c5d"


def run(tmp_path: Path, share: Path, state: str, check: bool = False,
        entries: Optional[List[Dict[str, str]]] = None) -> subprocess.CompletedProcess:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"[cinder_volume]\nlocalhost ansible_connection=local ansible_python_interpreter={HOST_PYTHON}\n")
    extra = tmp_path / "snapshots.yml"
    extra.write_text(yaml.safe_dump({"snapshot_volumes_share": str(share), "snapshot_volumes_list": entries or [
        {"volume_id": v, "snapshot_id": SNAPSHOT, "state": state} for v in VOLUMES]}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    argv = [ansible_playbook(), "-i", str(inventory), str(COLLECTION_ROOT / "playbooks" / "snapshot_volumes.yml"),
            "-e", f"@{extra}"] + (["--check"] if check else [])
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600, check=False)


def batches(output: str) -> List[str]:
    """The labels of the volume_snapshot task's loop: one per task call (state format: N volumes)."""
    return re.findall(r"\(item=(\w+ \w+: \d+ volumes)\)", output)


def recap(output: str) -> str:
    return [line for line in output.splitlines() if line.startswith("localhost ")][-1]


def listing(share: Path) -> dict:
    """Files and mtimes, without the per-volume lock files (taken, empty, even in check mode)."""
    return {p.name: p.stat().st_mtime_ns for p in share.iterdir() if not p.name.startswith(".volsnap-nfs-")}


def test_snapshot_volumes_playbook(tmp_path: Path, share: Path, qemu_img: str) -> None:
    for volume in VOLUMES:
        subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(share / f"volume-{volume}"), "64M"], check=True)
    before = listing(share)

    checked = run(tmp_path, share, "present", check=True)
    assert checked.returncode == 0, checked.stdout
    assert "changed=1" in recap(checked.stdout)
    assert listing(share) == before

    created = run(tmp_path, share, "present")
    assert created.returncode == 0, created.stdout
    assert "changed=1" in recap(created.stdout)
    for volume in VOLUMES:
        info = json.loads((share / f"volume-{volume}.info").read_text())
        assert info == {"active": f"volume-{volume}.{SNAPSHOT}", SNAPSHOT: f"volume-{volume}.{SNAPSHOT}"}
    assert "creating_compute_complete" in created.stdout

    again = run(tmp_path, share, "present")
    assert again.returncode == 0, again.stdout
    assert "changed=0" in recap(again.stdout)
    assert batches(again.stdout) == ["present raw: 2 volumes"], again.stdout  # one module call for the list

    # a rotation, each volume listed twice: the new snapshot is created before the old one is merged away
    rotation = [entry for v in VOLUMES
                for entry in ({"volume_id": v, "snapshot_id": NEWER},
                              {"volume_id": v, "snapshot_id": SNAPSHOT, "state": "absent"})]
    rotated = run(tmp_path, share, "", entries=rotation)
    assert rotated.returncode == 0, rotated.stdout
    assert batches(rotated.stdout) == ["present raw: 2 volumes", "absent raw: 2 volumes"], rotated.stdout
    for volume in VOLUMES:
        info = json.loads((share / f"volume-{volume}.info").read_text())
        assert info == {"active": f"volume-{volume}.{NEWER}", NEWER: f"volume-{volume}.{NEWER}"}
        assert not (share / f"volume-{volume}.{SNAPSHOT}").exists()
    assert "changed=0" in recap(run(tmp_path, share, "", entries=rotation).stdout)

    # a bad list is refused before anything runs, naming the entry
    before = listing(share)
    refused = run(tmp_path, share, "", entries=[{"volume_id": VOLUMES[0], "snapshotid": NEWER}])
    assert refused.returncode != 0 and "snapshot_volumes_list[0] has unknown keys snapshotid" in refused.stdout, \
        refused.stdout
    assert listing(share) == before

    old = [{"volume_id": v, "snapshot_id": NEWER, "state": "absent"} for v in VOLUMES]
    deleted = run(tmp_path, share, "", entries=old)
    assert deleted.returncode == 0, deleted.stdout
    assert "changed=1" in recap(deleted.stdout)
    for volume in VOLUMES:
        assert not (share / f"volume-{volume}.{NEWER}").exists()
        assert (share / f"volume-{volume}").exists()
