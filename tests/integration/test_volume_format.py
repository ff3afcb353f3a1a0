"""The format of a volume comes from trusted sources, never from its content alone (OSSA 2014-033, issue 12 item 3).

Real qemu-img/qemu-io files, the real modules through ansible-playbook. A guest writes a qcow2 header into the
first bytes of its raw volume (with a planted virtual size and a backing file outside the share): it must be
reported as a ``format_mismatch`` and every change refused with nothing changed in or outside the share (names,
sizes, modes, owners, mtimes, hashes), by default (a Cinder volume file is raw, as Cinder's nfs_qcow2_volumes
defaults to false) and with ``volume_format: raw``; below a snapshot whose overlay declares raw too. A genuine
qcow2 volume works with ``volume_format: qcow2``; ``volume_format: raw`` for it is a mismatch. qemu-img is handed
the trusted format (overlays declare it, clones read with it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List

import yaml

from ansible_run import COLLECTION_ROOT, HOST_PYTHON, ansible_playbook, collections_path, run_tasks
from test_volume_snapshot_hostile import MIB, NEW, S1, VOL, cinder_volume, disk_state, qemu_io, qimg

CLONE = "volume-5d2c8e1f-3a4b-4c6d-9e8f-7a6b5c4d3e2f"
PLANTED_SIZE = 1 << 40  # the virtual size the guest's header claims; the raw volume has 16 MiB


def qemu_info(path: Path, fmt: str) -> Dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "-U", "-f", fmt, "--output=json", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def plant_header(volume: Path, outside: Path) -> None:
    """The guest writes a qcow2 header (backing file outside the share, 1 TiB) over the start of its raw disk."""
    evil = outside / "evil.qcow2"
    qimg("create", "-q", "-f", "qcow2", "-b", str(outside / "secret"), "-F", "raw", str(evil), str(PLANTED_SIZE))
    with open(volume, "r+b") as handle:
        handle.write(evil.read_bytes()[:65536])
    evil.unlink()


def layout(root: Path, snapshots=(), base_fmt: str = "raw", planted: bool = False) -> Path:
    share, outside = root / "share", root / "outside"
    share.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret data outside the share\n" * 100)
    cinder_volume(share, snapshots=snapshots, base_fmt=base_fmt)  # each overlay declares the format below it
    if planted:
        plant_header(share / VOL, outside)
    return share


def task(name: str, module: str, **args: object) -> Dict[str, object]:
    return {"name": name, f"volsnap.openstack.{module}": args, "register": name, "ignore_errors": True}


def snap(name: str, share: Path, snapshot_id: str, state: str = "present", **extra: object) -> Dict[str, object]:
    return task(name, "volume_snapshot", volume_path=str(share / VOL), snapshot_id=snapshot_id, state=state,
                mode="offline", **extra)


def info(name: str, share: Path, **extra: object) -> Dict[str, object]:
    return task(name, "qcow2_chain_info", path=str(share / VOL), fail_on_unsafe=False, **extra)


def clone(name: str, share: Path, snapshot_id: str, **extra: object) -> Dict[str, object]:
    return task(name, "volume_clone", volume_path=str(share / VOL), snapshot_id=snapshot_id, dest=str(share / CLONE),
                **extra)


def refused(res: Dict[str, object], *needles: str) -> None:
    msg = str(res.get("msg", ""))
    assert res.get("failed") is True, res
    assert "Traceback" not in json.dumps(res) and "MODULE FAILURE" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def mismatch_of(res: Dict[str, object]) -> List[Dict[str, object]]:
    return [p for p in res["problems"] if p["code"] == "format_mismatch"]  # type: ignore[index]


def test_planted_header_is_a_mismatch_and_every_change_is_refused(tmp_path: Path) -> None:
    roots = {"alone": tmp_path / "alone", "below": tmp_path / "below"}
    alone = layout(roots["alone"], planted=True)
    below = layout(roots["below"], snapshots=(S1,), planted=True)
    before = {name: disk_state(root) for name, root in roots.items()}
    tasks = [
        info("info_default", alone), info("info_raw", alone, volume_format="raw"),
        task("info_fails", "qcow2_chain_info", path=str(alone / VOL)),
        snap("create_default", alone, NEW), snap("create_raw", alone, NEW, volume_format="raw"),
        snap("create_check", alone, NEW), snap("delete_default", alone, S1, "absent"),
        info("below_info", below), info("below_info_raw", below, volume_format="raw"),
        snap("below_create", below, NEW), snap("below_create_raw", below, NEW, volume_format="raw"),
        snap("below_delete", below, S1, "absent"), snap("below_delete_raw", below, S1, "absent", volume_format="raw"),
        clone("below_clone", below, S1), clone("below_clone_raw", below, S1, volume_format="raw"),
    ]
    tasks[5]["check_mode"] = True
    names = [t["name"] for t in tasks]
    result = run_tasks(tmp_path / "run", tasks, names)  # type: ignore[arg-type]
    assert result.rc == 0, result.output[-5000:]

    for name in ("info_default", "info_raw"):
        res = result[name]
        assert res["safe"] is False and not res.get("failed"), res
        [found] = mismatch_of(res)
        assert found["filename"] == VOL and "OSSA 2014-033" in found["message"]
        assert [layer["filename"] for layer in res["chain"]] == [VOL]  # the planted backing file is never followed
        layer = res["chain"][0]
        assert (layer["format"], layer["expected_format"]) == ("qcow2", "raw"), layer
    assert result["info_default"]["chain"][0]["format_source"].startswith("the default for a Cinder volume file")
    assert "pass volume_format: qcow2" in mismatch_of(result["info_default"])[0]["message"]
    assert result["info_raw"]["chain"][0]["format_source"] == "volume_format"
    refused(result["info_fails"], "format_mismatch")
    for name in ("create_default", "create_raw", "create_check", "delete_default"):
        refused(result[name], "unsafe, nothing was changed", "format_mismatch", "OSSA 2014-033")
    assert "volume_format: qcow2" in result["create_default"]["msg"]

    for name in ("below_info", "below_info_raw"):
        [found] = mismatch_of(result[name])
        assert found["filename"] == VOL and "OSSA 2014-033" in found["message"]
        assert result[name]["chain"][1]["format_source"] == f"the backing format {VOL}.{S1} declares"
    for name in ("below_create", "below_create_raw", "below_delete", "below_delete_raw", "below_clone",
                 "below_clone_raw"):
        refused(result[name], "format_mismatch")

    # nothing changed, in the shares or outside them: no overlay, no lock, no journal, no clone, no byte
    assert {name: disk_state(root) for name, root in roots.items()} == before


def test_genuine_qcow2_volume_needs_volume_format_qcow2(tmp_path: Path) -> None:
    root = tmp_path / "qcow2"
    share = layout(root, base_fmt="qcow2")
    before = disk_state(root)
    first = run_tasks(tmp_path / "refusals", [
        info("default", share), info("as_raw", share, volume_format="raw"), info("as_qcow2", share, volume_format="qcow2"),
        snap("create_default", share, NEW), snap("create_raw", share, NEW, volume_format="raw"),
    ], ["default", "as_raw", "as_qcow2", "create_default", "create_raw"])
    assert first.rc == 0, first.output[-5000:]
    for name in ("default", "as_raw"):
        [found] = mismatch_of(first[name])
        assert found["filename"] == VOL and "its content is qcow2" in found["message"]
    assert first["as_qcow2"]["safe"] is True, first["as_qcow2"]["problems"]
    assert first["as_qcow2"]["chain"][0]["format_source"] == "volume_format"
    refused(first["create_default"], "format_mismatch", "volume_format: qcow2", "nfs_qcow2_volumes = true")
    refused(first["create_raw"], "format_mismatch", "set by volume_format")
    assert disk_state(root) == before

    # with volume_format: qcow2 it works; the overlay declares qcow2 (the trusted format)
    done = run_tasks(tmp_path / "works", [
        snap("create", share, NEW, volume_format="qcow2"),
        snap("again", share, NEW, volume_format="qcow2"),
    ], ["create", "again"])
    assert done.rc == 0, done.output[-5000:]
    assert done["create"]["changed"] is True and done["again"]["changed"] is False
    overlay = share / f"{VOL}.{NEW}"
    assert qemu_info(overlay, "qcow2")["backing-filename-format"] == "qcow2"
    qemu_io("qcow2", overlay, f"write -P 0x44 {2 * MIB} 1M")

    # with a snapshot the overlay declares the base's format: volume_format raw now disagrees with it
    state = disk_state(root)
    conflict = run_tasks(tmp_path / "conflict", [
        snap("delete_raw", share, NEW, "absent", volume_format="raw"),
        clone("clone_raw", share, NEW, volume_format="raw"),
        info("info_raw", share, volume_format="raw"),
    ], ["delete_raw", "clone_raw", "info_raw"])
    assert conflict.rc == 0, conflict.output[-5000:]
    refused(conflict["delete_raw"], "format_mismatch", "disagree", "volume_format says raw")
    refused(conflict["clone_raw"], "format_mismatch")
    assert conflict["info_raw"]["safe"] is False
    assert disk_state(root) == state

    # the clone reads the snapshot's data with the trusted format; the delete without volume_format works (the
    # overlay declares the base's format) and leaves a qcow2 volume
    end = run_tasks(tmp_path / "end", [
        clone("clone", share, NEW, volume_format="qcow2"),
        snap("delete", share, NEW, "absent"),
    ], ["clone", "delete"])
    assert end.rc == 0, end.output[-5000:]
    assert not end["clone"].get("failed"), end["clone"]
    command = end["clone"]["command"]
    assert command[command.index("-f") + 1] == "qcow2"
    # the snapshot's data: what the volume held when it was taken (0x11 at 0), not what was written after (0x44)
    for command_line in ("read -P 0x11 0 1M", f"read -P 0 {2 * MIB} 1M"):
        read = subprocess.run(["qemu-io", "-f", "raw", "-c", command_line, str(share / CLONE)], capture_output=True,
                              text=True, check=False)
        assert read.returncode == 0 and "read " in read.stdout and "Pattern verification failed" not in read.stdout, (
            read.stdout + read.stderr)
    assert not end["delete"].get("failed"), end["delete"]
    assert end["delete"]["active"] == VOL and not overlay.exists()
    assert qemu_info(share / VOL, "qcow2")["format"] == "qcow2"


def test_raw_volume_snapshot_and_clone_use_raw(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    share = layout(root)
    result = run_tasks(tmp_path / "run", [
        snap("create", share, NEW, volume_format="raw"),
        clone("clone", share, NEW, volume_format="raw"),
    ], ["create", "clone"])
    assert result.rc == 0, result.output[-5000:]
    assert result["create"]["changed"] is True, result["create"]
    overlay = share / f"{VOL}.{NEW}"
    header = qemu_info(overlay, "qcow2")
    assert header["backing-filename-format"] == "raw"
    assert header["virtual-size"] == (share / VOL).stat().st_size
    command = result["clone"]["command"]
    assert command[command.index("-f") + 1] == "raw" and command[command.index("-O") + 1] == "raw"
    assert (share / CLONE).read_bytes() == (share / VOL).read_bytes()  # the raw clone is byte-identical


def run_snapshot_volumes(tmp_path: Path, share: Path, entries: List[Dict[str, str]],
                         **extra_vars: object) -> subprocess.CompletedProcess:
    tmp_path.mkdir(parents=True)
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"[cinder_volume]\nlocalhost ansible_connection=local ansible_python_interpreter={HOST_PYTHON}\n")
    extra = tmp_path / "snapshots.yml"
    extra.write_text(yaml.safe_dump(dict(extra_vars, snapshot_volumes_share=str(share), snapshot_volumes_list=entries)))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    argv = [ansible_playbook(), "-i", str(inventory), str(COLLECTION_ROOT / "playbooks" / "snapshot_volumes.yml"),
            "-e", f"@{extra}"]
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600, check=False)


def test_snapshot_volumes_playbook_passes_volume_format(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    raw_id, qcow2_id = "0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f", "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
    qimg("create", "-q", "-f", "raw", str(share / f"volume-{raw_id}"), "16M")
    qimg("create", "-q", "-f", "qcow2", str(share / f"volume-{qcow2_id}"), "16M")
    made = run_snapshot_volumes(tmp_path / "made", share, [
        {"volume_id": raw_id, "snapshot_id": S1},  # snapshot_volumes_volume_format's default: raw
        {"volume_id": qcow2_id, "snapshot_id": S1, "volume_format": "qcow2"},
    ])
    assert made.returncode == 0, made.stdout[-5000:]
    assert qemu_info(share / f"volume-{raw_id}.{S1}", "qcow2")["backing-filename-format"] == "raw"
    assert qemu_info(share / f"volume-{qcow2_id}.{S1}", "qcow2")["backing-filename-format"] == "qcow2"

    # the play's default says qcow2: the raw volume's snapshot disagrees with it and is refused, unchanged
    before = disk_state(share)
    refused_run = run_snapshot_volumes(tmp_path / "refused", share, [
        {"volume_id": raw_id, "snapshot_id": S1, "state": "absent"},
    ], snapshot_volumes_volume_format="qcow2")
    assert refused_run.returncode != 0 and "format_mismatch" in refused_run.stdout, refused_run.stdout[-5000:]
    assert disk_state(share) == before
