"""volume_snapshot fed the hostile image corpus, path tricks and wrong states.

The corpus runs the module's code path directly (one run per request, ansible_run.run_module); every other test
here runs it through ansible-playbook.

Every case lays out a Cinder NFS volume (raw base with data, one snapshot taken as the RemoteFS
driver does, its ``.info`` file) in a directory of its own and makes one thing hostile: an image
header planted by a guest (OSSA 2014-033), a backing file outside the share, an external data file,
a forbidden format, a lying header, an ``.info`` file that disagrees with the chain... Then the real
module is asked, one case after the other, to create a new snapshot and to delete the existing one.

Each request must fail with a message that names what is wrong, and nothing may change on disk:
the same files with the same size, mode, owner, mtime and content (the ``.info`` file byte for
byte), in the share and outside it. Not even the per-volume lock file (``.volsnap-nfs-<volume
id>.lock``) may appear: while no run has ever locked a volume, the module judges it without making
the lock file, and makes it only when there is something to change.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import stat
import struct
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ansible_run import run_module, run_tasks

VOLUME_ID = "0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f"
OTHER_ID = "5d2c8e1f-3a4b-4c6d-9e8f-7a6b5c4d3e2f"
VOL = f"volume-{VOLUME_ID}"
S1 = "11111111-2222-4333-8444-555555555555"
S2 = "22222222-2222-4333-8444-555555555555"
NEW = "33333333-2222-4333-8444-555555555555"
MIB = 1024 * 1024


def _image_builders():
    """tests/unit/plugins/module_utils/image_builders.py: byte-exact headers qemu-img will not write."""
    path = Path(__file__).resolve().parents[1] / "unit" / "plugins" / "module_utils" / "image_builders.py"
    spec = importlib.util.spec_from_file_location("image_builders", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builders = _image_builders()


def qimg(*args: str) -> None:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (args, proc.stderr)


def qemu_io(fmt: str, path: Path, command: str) -> None:
    proc = subprocess.run(["qemu-io", "-f", fmt, "-c", command, str(path)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stdout + proc.stderr


def write_info(share: Path, info: Dict[str, str]) -> None:
    (share / f"{VOL}.info").write_text(json.dumps(info, indent=1, sort_keys=True))


def cinder_volume(share: Path, snapshots: Tuple[str, ...] = (S1,), base_fmt: str = "raw") -> List[Path]:
    """volume-<id> (data at 0), then each snapshot's overlay (data written after it), and the .info file."""
    base = share / VOL
    qimg("create", "-q", "-f", base_fmt, str(base), "16M")
    qemu_io(base_fmt, base, "write -P 0x11 0 1M")
    files, fmt = [base], base_fmt
    for index, snap in enumerate(snapshots):
        overlay = share / f"{VOL}.{snap}"
        qimg("create", "-q", "-f", "qcow2", "-b", files[-1].name, "-F", fmt, str(overlay))
        qemu_io("qcow2", overlay, f"write -P {0x22 + index} {MIB} 1M")
        files.append(overlay)
        fmt = "qcow2"
    if snapshots:
        info = {snap: f"{VOL}.{snap}" for snap in snapshots}
        info["active"] = files[-1].name
        write_info(share, info)
    return files


def plant_qcow2_header(target: Path, *create_args: str) -> None:
    """A guest writes a qcow2 header (made by qemu-img with ``create_args``) over the start of its raw disk."""
    evil = target.parent.parent / "evil.qcow2"
    qimg("create", "-q", "-f", "qcow2", *create_args, str(evil), "16M")
    with open(target, "r+b") as handle:
        handle.write(evil.read_bytes()[:65536])
    evil.unlink()


def set_incompatible_bits(path: Path, bits: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(72)
        (current,) = struct.unpack(">Q", handle.read(8))
        handle.seek(72)
        handle.write(struct.pack(">Q", current | bits))


def strip_backing_format(path: Path) -> None:
    """Rename the backing-format header extension to an unknown type, as in files written by qemu < 6.1."""
    data = bytearray(path.read_bytes()[:65536])
    offset = struct.unpack_from(">I", data, 100)[0]
    while True:
        ext_type, ext_len = struct.unpack_from(">II", data, offset)
        assert ext_type != 0, "no backing format extension"
        if ext_type == 0xE2792ACA:
            struct.pack_into(">I", data, offset, 0x12345678)
            break
        offset += 8 + ((ext_len + 7) & ~7)
    with open(path, "r+b") as handle:
        handle.write(bytes(data[:offset + 4]))


# ---------------------------------------------------------------- the corpus
# Each builder lays the case out in ``share`` (``outside`` is a directory beside it) and returns the
# regular expressions the create and the delete messages must match (None: that request is not made).

Expect = Tuple[Optional[str], Optional[str]]
UNSAFE = "unsafe, nothing was changed"


def ossa_planted_header_below_snapshot(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share)
    plant_qcow2_header(files[0], "-b", "/etc/shadow", "-F", "raw")
    msg = f"{UNSAFE}.*format_mismatch.*OSSA 2014-033"
    return msg, msg


def ossa_planted_header_no_snapshot_yet(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share, snapshots=())
    plant_qcow2_header(files[0], "-b", "/etc/shadow", "-F", "raw")
    # volume-<id> is raw (the default, as Cinder's): the planted header is a mismatch, its backing never followed
    return f"{UNSAFE}.*format_mismatch.*volume_format not set.*OSSA 2014-033", None


def backing_absolute_outside(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share)
    qimg("rebase", "-u", "-b", "/etc/hostname", "-F", "raw", str(files[1]))
    msg = f"{UNSAFE}.*backing_outside_share.*/etc/hostname"
    return msg, msg


def backing_relative_outside(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share)
    qimg("create", "-q", "-f", "raw", str(outside / "secret"), "16M")
    qimg("rebase", "-u", "-b", "../outside/secret", "-F", "raw", str(files[1]))
    msg = f"{UNSAFE}.*backing_outside_share.*outside/secret"
    return msg, msg


def backing_symlink_outside(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share, snapshots=(S1, S2))
    qimg("create", "-q", "-f", "raw", str(outside / "secret"), "16M")
    os.symlink(str(outside / "secret"), str(share / "innocent"))
    qimg("rebase", "-u", "-b", "innocent", "-F", "raw", str(files[1]))
    msg = f"{UNSAFE}.*backing_outside_share.*outside/secret"
    return msg, msg


def backing_missing(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share, snapshots=(S1, S2))
    qimg("rebase", "-u", "-b", f"{VOL}.{OTHER_ID}", "-F", "qcow2", str(files[2]))
    msg = f"{UNSAFE}.*missing_backing_file"
    return msg, msg


def backing_loop(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share, snapshots=(S1, S2))
    qimg("rebase", "-u", "-b", files[2].name, "-F", "qcow2", str(files[1]))
    msg = f"{UNSAFE}.*backing_loop"
    return msg, msg


def backing_fifo(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share)
    os.mkfifo(str(share / f"{VOL}.{OTHER_ID}"))
    qimg("rebase", "-u", "-b", f"{VOL}.{OTHER_ID}", "-F", "raw", str(files[1]))
    msg = f"{UNSAFE}.*not_regular_file"
    return msg, msg


def backing_of_another_volume(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share)
    qimg("create", "-q", "-f", "raw", str(share / f"volume-{OTHER_ID}"), "16M")
    qimg("rebase", "-u", "-b", f"volume-{OTHER_ID}", "-F", "raw", str(files[1]))
    msg = f"{UNSAFE}.*backing_name_not_allowed"
    return msg, msg


def backing_format_unspecified(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share)
    strip_backing_format(files[1])
    msg = "do\\(es\\) not declare the format of their backing file, so qemu-img would probe it"
    return msg, msg


def external_data_file(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share, snapshots=())
    overlay = share / f"{VOL}.{S1}"
    qimg("create", "-q", "-f", "qcow2", "-o", f"data_file={outside / 'data.raw'}", "-b", files[0].name, "-F", "raw",
         str(overlay))
    write_info(share, {S1: overlay.name, "active": overlay.name})
    msg = f"{UNSAFE}.*external_data_file"
    return msg, msg


def unknown_incompatible_feature(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share)
    set_incompatible_bits(files[1], 1 << 20)
    msg = f"{UNSAFE}.*unknown_incompatible_features"
    return msg, msg


def corrupt_bit(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share)
    set_incompatible_bits(files[1], 1 << 1)
    msg = f"{UNSAFE}.*corrupt"
    return msg, msg


def truncated_header(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share)
    with open(files[1], "r+b") as handle:
        handle.truncate(60)
    msg = f"{UNSAFE}.*invalid_header"
    return msg, msg


def backing_name_outside_first_cluster(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share, snapshots=())
    overlay = share / f"{VOL}.{S1}"
    builders.write(overlay, builders.qcow2(size=16 * MIB, backing=VOL, backing_fmt="raw", backing_offset=70000))
    write_info(share, {S1: overlay.name, "active": overlay.name})
    msg = f"{UNSAFE}.*invalid_header"
    return msg, msg


def qed_base(share: Path, outside: Path) -> Expect:
    files = cinder_volume(share, snapshots=(), base_fmt="qed")
    overlay = share / f"{VOL}.{S1}"
    qimg("create", "-q", "-f", "qcow2", "-b", files[0].name, "-F", "qed", str(overlay))
    write_info(share, {S1: overlay.name, "active": overlay.name})
    msg = f"{UNSAFE}.*format_not_allowed"
    return msg, msg


def vmdk_base_pointing_elsewhere(share: Path, outside: Path) -> Expect:
    base = share / VOL
    (outside / "flat.raw").write_bytes(b"\0" * MIB)
    base.write_bytes(builders.vmdk_text(extents=[f'RW 2048 FLAT "{outside / "flat.raw"}" 0']))
    overlay = share / f"{VOL}.{S1}"
    qimg("create", "-q", "-f", "qcow2", "-u", "-b", VOL, "-F", "vmdk", str(overlay), "1M")
    write_info(share, {S1: overlay.name, "active": overlay.name})
    msg = f"{UNSAFE}.*vmdk_external_extent"
    return msg, msg


def differencing_vhd_base(share: Path, outside: Path) -> Expect:
    base = share / VOL
    footer = builders.vhd_footer(current_size=16 * MIB, disk_type=4)
    base.write_bytes(footer + b"\0" * 1024 + footer)
    overlay = share / f"{VOL}.{S1}"
    qimg("create", "-q", "-f", "qcow2", "-u", "-b", VOL, "-F", "vpc", str(overlay), "16M")
    write_info(share, {S1: overlay.name, "active": overlay.name})
    msg = f"{UNSAFE}.*unsupported_differencing_image"
    return msg, msg


def chain_deeper_than_max_depth(share: Path, outside: Path) -> Expect:
    cinder_volume(share, snapshots=(S1, S2))  # 3 layers; the requests below pass max_depth=2
    msg = f"{UNSAFE}.*chain_too_deep"
    return msg, msg


def info_not_json(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    (share / f"{VOL}.info").write_text('{"active": ')
    msg = f"{UNSAFE}.*info_invalid.*not valid JSON"
    return msg, None


def info_active_outside(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    write_info(share, {S1: f"{VOL}.{S1}", "active": "../outside/secret"})
    msg = f"{UNSAFE}.*info_invalid.*active"
    return msg, None


def info_names_missing_file(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    write_info(share, {S1: f"{VOL}.{S1}", S2: f"{VOL}.{S2}", "active": f"{VOL}.{S1}"})
    msg = f"{UNSAFE}.*info_missing_file.*{S2}"
    return msg, msg


def info_misses_a_chain_file(share: Path, outside: Path) -> Expect:
    cinder_volume(share, snapshots=(S1, S2))
    write_info(share, {S2: f"{VOL}.{S2}", "active": f"{VOL}.{S2}"})
    msg = f"{UNSAFE}.*snapshot_file_not_in_info.*{VOL}.{S1}"
    return msg, msg


def info_lost_with_snapshot_files(share: Path, outside: Path) -> Expect:
    cinder_volume(share, snapshots=(S1, S2))
    (share / f"{VOL}.info").unlink()
    # volume-<id> alone looks like a volume without snapshots, but its data goes on in the overlays
    msg = f"{VOL}.info does not exist but the volume has snapshot files .*{VOL}.{S1}.*nothing was changed"
    return msg, msg


def info_snapshot_is_the_base(share: Path, outside: Path) -> Expect:
    cinder_volume(share, snapshots=())
    write_info(share, {S1: VOL, "active": VOL})
    return None, "has no backing file, so it holds no snapshot data to merge; the .info file is inconsistent"


def stray_snapshot_file(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    qimg("create", "-q", "-f", "qcow2", "-b", f"{VOL}.{S1}", "-F", "qcow2", str(share / f"{VOL}.{NEW}"))
    return f"{VOL}.{NEW} already exists but the .info file does not name it", None


def volume_file_is_a_symlink_outside(share: Path, outside: Path) -> Expect:
    qimg("create", "-q", "-f", "raw", str(outside / VOL), "16M")
    os.symlink(str(outside / VOL), str(share / VOL))
    return f"{UNSAFE}.*outside_share", None


def volume_file_is_a_directory(share: Path, outside: Path) -> Expect:
    (share / VOL).mkdir()
    msg = f"{UNSAFE}.*not_regular_file"
    return msg, None


# ---- issue 12 item 2: .info entries naming foreign files; symlinked .info and entries


def other_volume(share: Path) -> Path:
    """A second volume beside the first one, with a snapshot of its own: volume-<other> and its overlay."""
    other = share / f"volume-{OTHER_ID}"
    qimg("create", "-q", "-f", "raw", str(other), "16M")
    qimg("create", "-q", "-f", "qcow2", "-b", other.name, "-F", "raw", str(share / f"{other.name}.{S2}"))
    return other


def info_active_is_another_volume(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    other = other_volume(share)
    write_info(share, {S1: f"{VOL}.{S1}", "active": other.name})
    msg = f"{UNSAFE}.*info_foreign_entry.*\"active\": volume-{OTHER_ID} is not a file of {VOL}"
    return msg, msg


def info_active_is_another_volumes_snapshot(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    other = other_volume(share)
    write_info(share, {S1: f"{VOL}.{S1}", "active": f"{other.name}.{S2}"})
    msg = f"{UNSAFE}.*info_foreign_entry.*\"active\": volume-{OTHER_ID}.{S2} is not a file of {VOL}"
    return msg, msg


def info_snapshot_is_another_volumes_snapshot(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    other = other_volume(share)
    write_info(share, {S1: f"{VOL}.{S1}", S2: f"{other.name}.{S2}", "active": f"{VOL}.{S1}"})
    msg = f"{UNSAFE}.*info_foreign_entry.*\"{S2}\": volume-{OTHER_ID}.{S2} is not a file of {VOL}"
    return msg, msg


def info_snapshot_is_the_info_file(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    write_info(share, {S1: f"{VOL}.{S1}", S2: f"{VOL}.info", "active": f"{VOL}.{S1}"})
    msg = f"{UNSAFE}.*info_foreign_entry.*\"{S2}\": {VOL}.info is not a file of {VOL}"
    return msg, msg


def info_active_is_the_info_file(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    write_info(share, {S1: f"{VOL}.{S1}", "active": f"{VOL}.info"})
    msg = f"{UNSAFE}.*info_foreign_entry.*\"active\": {VOL}.info is not a file of {VOL}"
    return msg, msg


def info_snapshot_is_the_lock_file(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    lock = share / f".volsnap-nfs-{VOLUME_ID}.lock"
    lock.write_bytes(b"")
    write_info(share, {S1: f"{VOL}.{S1}", S2: lock.name, "active": f"{VOL}.{S1}"})
    msg = f"{UNSAFE}.*info_foreign_entry.*\"{S2}\": {re.escape(lock.name)} is not a file of {VOL}"
    return msg, msg


def info_snapshot_is_the_journal(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    write_info(share, {S1: f"{VOL}.{S1}", S2: f".volsnap-{VOL}.journal", "active": f"{VOL}.{S1}"})
    msg = rf"{UNSAFE}.*info_foreign_entry.*\"{S2}\": \.volsnap-{VOL}\.journal is not a file of {VOL}"
    return msg, msg


def info_is_a_symlink_to_a_valid_file_outside(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    info = share / f"{VOL}.info"
    (outside / "forged.info").write_text(info.read_text())
    info.unlink()
    info.symlink_to(outside / "forged.info")
    msg = f"{UNSAFE}.*info_invalid.*symbolic link"
    return msg, msg


def info_entry_is_a_symlink_to_an_own_file(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    (share / f"{VOL}.{S2}").symlink_to(f"{VOL}.{S1}")
    write_info(share, {S1: f"{VOL}.{S1}", S2: f"{VOL}.{S2}", "active": f"{VOL}.{S1}"})
    msg = f"{UNSAFE}.*info_entry_not_regular.*{VOL}.{S2} is a symbolic link"
    return msg, msg


def info_active_is_a_symlink_to_an_own_file(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    (share / f"{VOL}.{S2}").symlink_to(f"{VOL}.{S1}")
    write_info(share, {S1: f"{VOL}.{S1}", S2: f"{VOL}.{S2}", "active": f"{VOL}.{S2}"})
    msg = f"{UNSAFE}.*info_entry_not_regular.*{VOL}.{S2} is a symbolic link"
    return msg, msg


def info_entry_is_a_symlink_outside(share: Path, outside: Path) -> Expect:
    cinder_volume(share)
    qimg("create", "-q", "-f", "qcow2", "-b", f"{share / VOL}", "-F", "raw", str(outside / "evil.qcow2"))
    (share / f"{VOL}.{S2}").symlink_to(outside / "evil.qcow2")
    write_info(share, {S1: f"{VOL}.{S1}", S2: f"{VOL}.{S2}", "active": f"{VOL}.{S1}"})
    msg = f"{UNSAFE}.*info_entry_not_regular.*{VOL}.{S2} is a symbolic link"
    return msg, msg


def volume_file_is_a_symlink_to_another_volume(share: Path, outside: Path) -> Expect:
    other = other_volume(share)
    (share / VOL).symlink_to(other.name)
    return f"{UNSAFE}.*info_entry_not_regular.*{VOL} is a symbolic link", None


CORPUS: Dict[str, Callable[[Path, Path], Expect]] = {f.__name__: f for f in [
    ossa_planted_header_below_snapshot, ossa_planted_header_no_snapshot_yet, backing_absolute_outside,
    backing_relative_outside, backing_symlink_outside, backing_missing, backing_loop, backing_fifo,
    backing_of_another_volume, backing_format_unspecified, external_data_file, unknown_incompatible_feature,
    corrupt_bit, truncated_header, backing_name_outside_first_cluster, qed_base, vmdk_base_pointing_elsewhere,
    differencing_vhd_base, chain_deeper_than_max_depth, info_not_json, info_active_outside, info_names_missing_file,
    info_misses_a_chain_file, info_lost_with_snapshot_files, info_snapshot_is_the_base, stray_snapshot_file, volume_file_is_a_symlink_outside,
    volume_file_is_a_directory,
    info_active_is_another_volume, info_active_is_another_volumes_snapshot, info_snapshot_is_another_volumes_snapshot,
    info_snapshot_is_the_info_file, info_active_is_the_info_file, info_snapshot_is_the_lock_file,
    info_snapshot_is_the_journal, info_is_a_symlink_to_a_valid_file_outside, info_entry_is_a_symlink_to_an_own_file,
    info_active_is_a_symlink_to_an_own_file, info_entry_is_a_symlink_outside, volume_file_is_a_symlink_to_another_volume,
]}


# ---------------------------------------------------------------- "nothing changed"


def disk_state(root: Path) -> Dict[str, Tuple[object, ...]]:
    """Every entry under ``root`` (symlinks not followed): type, size, mode, owner, mtime, content digest."""
    state: Dict[str, Tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            entry: Tuple[object, ...] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mode & 0o7777, st.st_uid,
                                         st.st_gid, st.st_mtime_ns)
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for chunk in iter(lambda: handle.read(MIB), b""):
                        digest.update(chunk)
                entry += (digest.hexdigest(),)
            elif stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(path),)
            state[os.path.relpath(path, str(root))] = entry
    return state


def snapshot_task(name: str, share: Path, snapshot_id: str, state: str, **extra: object) -> Dict[str, object]:
    args: Dict[str, object] = {"volume_path": str(share / VOL), "snapshot_id": snapshot_id, "state": state,
                               "mode": "offline"}
    args.update(extra)
    return {"name": name, "volsnap.openstack.volume_snapshot": args, "register": name, "ignore_errors": True}


def test_hostile_corpus_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    requests: List[Tuple[str, str, Path, str]] = []  # register name, regex, share, case
    tasks = []
    roots = {}
    for case, build in CORPUS.items():
        root = tmp_path / case
        share, outside = root / "share", root / "outside"
        share.mkdir(parents=True)
        outside.mkdir()
        create_msg, delete_msg = build(share, outside)
        roots[case] = root
        extra = {"max_depth": 2} if case == "chain_deeper_than_max_depth" else {}
        if create_msg is not None:
            requests.append((f"{case}_create", create_msg, share, case))
            tasks.append(snapshot_task(f"{case}_create", share, NEW, "present", **extra))
        if delete_msg is not None:
            requests.append((f"{case}_delete", delete_msg, share, case))
            tasks.append(snapshot_task(f"{case}_delete", share, S1, "absent", **extra))
    before = {case: disk_state(root) for case, root in roots.items()}

    # The module's own code path, run directly once per request (ansible_run.run_module: ~0.5 s a run instead of
    # ~1.5 s as a task of a busy machine's ansible-playbook); the other tests of this file run it through
    # ansible-playbook. A run that crashes (no JSON result, a traceback) raises: never a pass.
    result = {name: run_module(tmp_path / "run" / name, "volume_snapshot", task["volsnap.openstack.volume_snapshot"])
              for name, task in zip([name for name, _msg, _share, _case in requests], tasks)}

    failures = []
    for name, pattern, _share, case in requests:
        res = result[name]
        msg = res.get("msg", "")
        if not res.get("failed"):
            failures.append(f"{name}: not refused: {json.dumps(res)[:400]}")
        elif "Traceback" in json.dumps(res) or "MODULE FAILURE" in msg:
            failures.append(f"{name}: crashed instead of a clear refusal: {msg[:400]}")
        elif not re.search(pattern, msg, re.S):
            failures.append(f"{name}: message does not match {pattern!r}: {msg}")
    for case, root in roots.items():
        after = disk_state(root)
        if after != before[case]:
            changed = sorted(set(after.items()) ^ set(before[case].items()))
            failures.append(f"{case}: the disk changed: {changed}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- path tricks and wrong states


def refusals(result, expected: Dict[str, str]) -> List[str]:
    failures = []
    for name, pattern in expected.items():
        res = result[name]
        msg = res.get("msg", "")
        if not res.get("failed"):
            failures.append(f"{name}: not refused: {json.dumps(res)[:300]}")
        elif "MODULE FAILURE" in msg or "Traceback" in json.dumps(res):
            failures.append(f"{name}: crashed instead of a clear refusal: {msg[:300]}")
        elif not re.search(pattern, msg, re.S):
            failures.append(f"{name}: message does not match {pattern!r}: {msg}")
    return failures


def unchanged(root: Path, before: Dict[str, Tuple[object, ...]]) -> List[str]:
    after = disk_state(root)
    if after != before:
        return [f"the disk changed: {sorted(set(after.items()) ^ set(before.items()))}"]
    return []


def test_path_tricks_and_wrong_states_change_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    share = root / "share"
    journaled = root / "journaled"
    share.mkdir(parents=True)
    journaled.mkdir()
    cinder_volume(share)
    # a second volume beside it, whose id is used to climb into the first one
    qimg("create", "-q", "-f", "raw", str(share / f"volume-{OTHER_ID}"), "16M")
    cinder_volume(journaled)
    (journaled / f".volsnap-{VOL}.journal").write_text('{"plan": ')
    cases: Dict[str, Tuple[Dict[str, object], str]] = {
        "climb_from_other_volume": ({"share": str(share), "volume_id": f"{OTHER_ID}/../volume-{VOLUME_ID}"},
                                    "volume_id .* is not a Cinder volume id"),
        "climb_up": ({"share": str(share), "volume_id": f"../share/volume-{VOLUME_ID}"},
                     "volume_id .* is not a Cinder volume id"),
        "snapshot_file_as_volume": ({"volume_path": str(share / f"{VOL}.{S1}")}, "is not a Cinder volume file"),
        "info_file_as_volume": ({"volume_path": str(share / f"{VOL}.info")}, "is not a Cinder volume file"),
        "volume_dotdot_suffix": ({"volume_path": str(share / f"{VOL}.."), }, "is not a Cinder volume file"),
        "missing_volume": ({"share": str(share), "volume_id": "99999999-8888-4777-8666-555555555555"},
                           "does not exist"),
        "unreadable_journal": ({"volume_path": str(journaled / VOL)},
                               "journal .* of an interrupted operation is unreadable"),
    }
    bad_ids = {"id_dotdot": "../../etc/passwd", "id_slash": f"{S1}/../{S2}", "id_newline": f"{S1}\n",
               "id_empty": "", "id_info": f"{S1}.info", "id_glob": "*", "id_upper_nonhex": "Z" * 36}
    tasks, expected = [], {}
    for state in ("present", "absent"):
        for name, (args, pattern) in cases.items():
            task_args = dict(args, snapshot_id=S1 if state == "absent" else NEW, state=state, mode="offline")
            tasks.append({"name": f"{name}_{state}", "volsnap.openstack.volume_snapshot": task_args,
                          "register": f"{name}_{state}", "ignore_errors": True})
            expected[f"{name}_{state}"] = pattern
        for name, bad in bad_ids.items():
            tasks.append(snapshot_task(f"{name}_{state}", share, bad, state))
            expected[f"{name}_{state}"] = "is not a Cinder snapshot id"
    before = disk_state(root)
    result = run_tasks(tmp_path / "run", tasks, list(expected))
    assert result.rc == 0, result.output[-5000:]
    failures = refusals(result, expected) + unchanged(root, before)
    assert not failures, "\n".join(failures)


def test_online_wrong_states_change_nothing(tmp_path: Path, share: Path, domain_factory, libvirt_uri: str) -> None:
    cinder_volume(share)
    for path in share.iterdir():
        path.chmod(0o666)
    stopped = domain_factory("wrong-stopped", [{"path": str(share / f"{VOL}.{S1}"), "format": "qcow2",
                                                "target": "vdb", "serial": VOLUME_ID}])
    stopped.destroy()  # defined, not running
    other_disk = share / "other.qcow2"
    qimg("create", "-q", "-f", "qcow2", str(other_disk), "16M")
    other_disk.chmod(0o666)
    running = domain_factory("wrong-running", [{"path": str(other_disk), "format": "qcow2", "target": "vdc",
                                                "serial": OTHER_ID}])
    base = {"volume_path": str(share / VOL), "libvirt_uri": libvirt_uri}
    cases: Dict[str, Tuple[Dict[str, object], str]] = {
        "no_such_domain": ({"domain": "volsnap-test-no-such-domain", "mode": "online"}, "has no domain named"),
        "stopped_domain": ({"domain": stopped.name(), "mode": "online"}, "mode=online but domain .* is not running"),
        "volume_not_attached": ({"domain": running.name()}, "has no disk with target dev or serial"),
        "wrong_disk": ({"domain": running.name(), "disk": "vdz"}, "has no disk with target dev or serial 'vdz'"),
        "online_but_nothing_runs_it": ({"mode": "online"}, "mode=online but no running domain"),
    }
    tasks, expected = [], {}
    for state in ("present", "absent"):
        for name, (args, pattern) in cases.items():
            task_args = dict(base, snapshot_id=S1 if state == "absent" else NEW, state=state, **args)
            tasks.append({"name": f"{name}_{state}", "volsnap.openstack.volume_snapshot": task_args,
                          "register": f"{name}_{state}", "ignore_errors": True})
            expected[f"{name}_{state}"] = pattern
    before = disk_state(share)
    result = run_tasks(tmp_path, tasks, list(expected))
    assert result.rc == 0, result.output[-5000:]
    failures = refusals(result, expected) + unchanged(share, before)
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- issue 12 item 2 through every module


ITEM2 = [info_active_is_another_volume, info_active_is_another_volumes_snapshot,
         info_snapshot_is_another_volumes_snapshot, info_snapshot_is_the_info_file, info_active_is_the_info_file,
         info_snapshot_is_the_lock_file, info_snapshot_is_the_journal, info_is_a_symlink_to_a_valid_file_outside,
         info_entry_is_a_symlink_to_an_own_file, info_active_is_a_symlink_to_an_own_file,
         info_entry_is_a_symlink_outside]
ITEM2_CODES = {"info_is_a_symlink_to_a_valid_file_outside": "info_invalid",
               "info_entry_is_a_symlink_to_an_own_file": "info_entry_not_regular",
               "info_active_is_a_symlink_to_an_own_file": "info_entry_not_regular",
               "info_entry_is_a_symlink_outside": "info_entry_not_regular"}


def test_foreign_info_entries_unsafe_for_chain_info_and_refused_by_clone(tmp_path: Path) -> None:
    """qcow2_chain_info says unsafe (with the finding), volume_clone refuses; nothing changes anywhere."""
    tasks, names, roots = [], [], {}
    for build in ITEM2:
        case = build.__name__
        root = tmp_path / case
        share, outside = root / "share", root / "outside"
        share.mkdir(parents=True)
        outside.mkdir()
        build(share, outside)
        roots[case] = root
        tasks.append({"name": f"{case}_info", "register": f"{case}_info", "ignore_errors": True,
                      "volsnap.openstack.qcow2_chain_info": {"path": str(share / VOL), "fail_on_unsafe": False}})
        tasks.append({"name": f"{case}_clone", "register": f"{case}_clone", "ignore_errors": True,
                      "volsnap.openstack.volume_clone": {"volume_path": str(share / VOL), "snapshot_id": S1,
                                                         "dest": str(share / f"volume-{NEW}")}})
        names += [f"{case}_info", f"{case}_clone"]
    before = {case: disk_state(root) for case, root in roots.items()}
    result = run_tasks(tmp_path / "run", tasks, names)
    assert result.rc == 0, result.output[-5000:]
    failures = []
    for build in ITEM2:
        case = build.__name__
        code = ITEM2_CODES.get(case, "info_foreign_entry")
        info = result[f"{case}_info"]
        if info.get("failed") or info.get("safe") is not False:
            failures.append(f"{case}: qcow2_chain_info did not report it unsafe: {json.dumps(info)[:400]}")
        elif code not in [p["code"] for p in info["problems"]]:
            failures.append(f"{case}: qcow2_chain_info does not report {code}: {info['problems']}")
        failures += [f"{case}: {f}" for f in refusals(result, {f"{case}_clone": f"unsafe, nothing was changed.*{code}"})]
        failures += [f"{case}: {f}" for f in unchanged(roots[case], before[case])]
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- issue 12 item 4: links planted at our own names


LOCK = f".volsnap-nfs-{VOLUME_ID}.lock"
JOURNAL = f".volsnap-{VOL}.journal"
DEST = f"volume-{OTHER_ID}"


def plant(share: Path, name: str, target: Path) -> None:
    (share / name).symlink_to(target)


def test_links_planted_at_the_modules_own_names(tmp_path: Path) -> None:
    """A symlink at the lock, journal, new overlay, clone dest/temporary/sidecar name: never followed.

    Each case gets its own Cinder volume and an outside directory holding one existing file (``kept``) and the
    target of a dangling link (``created``, which must never appear). Refusals change nothing in the share;
    runs that go on (a temporary or sidecar name: the link is replaced, never followed) do their work in the share.
    """
    def clone(name: str, share: Path, **extra: object) -> Dict[str, object]:
        args: Dict[str, object] = {"volume_path": str(share / VOL), "snapshot_id": S1, "dest": str(share / DEST)}
        args.update(extra)
        return {"name": name, "register": name, "ignore_errors": True, "volsnap.openstack.volume_clone": args}

    refused = {
        # name planted, dangling?, the task, the message
        "lock_create": (LOCK, True, lambda s: snapshot_task("lock_create", s, NEW, "present"),
                        "lock file .* is a symbolic link.*nothing was changed"),
        "lock_create_existing": (LOCK, False, lambda s: snapshot_task("lock_create_existing", s, NEW, "present"),
                                 "lock file .* is a symbolic link.*nothing was changed"),
        "lock_delete": (LOCK, False, lambda s: snapshot_task("lock_delete", s, S1, "absent"),
                        "lock file .* is a symbolic link"),
        "lock_resumed": (LOCK, False, lambda s: {"name": "lock_resumed", "register": "lock_resumed",
                                                 "ignore_errors": True, "volsnap.openstack.volume_snapshot": {
                                                     "volume_path": str(s / VOL), "state": "resumed"}},
                         "lock file .* is a symbolic link"),
        "lock_clone": (LOCK, True, lambda s: clone("lock_clone", s), "lock file .* is a symbolic link"),
        "lock_clone_existing": (LOCK, False, lambda s: clone("lock_clone_existing", s),
                                "lock file .* is a symbolic link"),
        "journal_create": (JOURNAL, False, lambda s: snapshot_task("journal_create", s, NEW, "present"),
                           "journal .* is a symbolic link.*nothing was run"),
        "journal_dangling_delete": (JOURNAL, True, lambda s: snapshot_task("journal_dangling_delete", s, S1, "absent"),
                                    "journal .* is a symbolic link.*nothing was run"),
        "new_overlay": (f"{VOL}.{NEW}", True, lambda s: snapshot_task("new_overlay", s, NEW, "present"),
                        "already exists but the .info file does not name it"),
        "clone_dest": (DEST, True, lambda s: clone("clone_dest", s), "already exists and was not made by volume_clone"),
        "clone_dest_existing": (DEST, False, lambda s: clone("clone_dest_existing", s),
                                "already exists and was not made by volume_clone"),
    }
    proceeds = {
        "overlay_tmp": (f".{VOL}.{NEW}.volsnap-tmp", lambda s: snapshot_task("overlay_tmp", s, NEW, "present")),
        "clone_tmp": (f".{DEST}.volsnap-tmp", lambda s: clone("clone_tmp", s)),
        "clone_sidecar": (f".{DEST}.volsnap-clone", lambda s: clone("clone_sidecar", s)),
    }
    tasks, roots, shares, outsides = [], {}, {}, {}
    for case, spec in list(refused.items()) + list(proceeds.items()):
        root = tmp_path / case
        share, outside = root / "share", root / "outside"
        share.mkdir(parents=True)
        outside.mkdir()
        cinder_volume(share)
        (outside / "kept").write_text('{"version": 1, "plan": {}, "done": 0}')
        os.chmod(outside / "kept", 0o644)
        name = spec[0]
        dangling = spec[1] if case in refused else True
        plant(share, name, outside / ("created" if dangling else "kept"))
        roots[case], shares[case], outsides[case] = root, share, outside
        tasks.append((spec[2] if case in refused else spec[1])(share))
    before = {case: disk_state(root) for case, root in roots.items()}
    outside_before = {case: disk_state(outsides[case]) for case in roots}
    result = run_tasks(tmp_path / "run", tasks, list(roots))
    assert result.rc == 0, result.output[-5000:]

    failures = refusals(result, {case: spec[3] for case, spec in refused.items()})
    for case in refused:
        failures += [f"{case}: {f}" for f in unchanged(roots[case], before[case])]
    for case, (name, _task) in proceeds.items():
        res, share = result[case], shares[case]
        if res.get("failed") or not res.get("changed"):
            failures.append(f"{case}: did not go on past the link planted at {name}: {json.dumps(res)[:500]}")
        if disk_state(outsides[case]) != outside_before[case]:
            failures.append(f"{case}: the outside directory changed: {disk_state(outsides[case])}")
        if (share / name).is_symlink() or (name.endswith(".volsnap-tmp") and (share / name).exists()):
            failures.append(f"{case}: {name} is still there after the run")
    for case in roots:
        assert not (outsides[case] / "created").exists(), f"{case}: a file was created outside the share"
    assert (shares["overlay_tmp"] / f"{VOL}.{NEW}").is_file()
    assert json.loads((shares["overlay_tmp"] / f"{VOL}.info").read_text())["active"] == f"{VOL}.{NEW}"
    for case in ("clone_tmp", "clone_sidecar"):
        dest = shares[case] / DEST
        assert dest.is_file() and not dest.is_symlink()
        record = json.loads((shares[case] / f".{DEST}.volsnap-clone").read_text())
        assert record["inode"] == dest.stat().st_ino and record["snapshot_id"] == S1
        proc = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 0x11 0 1M", str(dest)], capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0 and "Pattern verification failed" not in proc.stdout, proc.stdout
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- issue 12 item 7: the mode is final before any data

QEMU_IMG_SPY = """#!/bin/sh
# Logs, before the real qemu-img runs, the name, mode, owner and size of the file convert or create is given to
# write (the module hands it /proc/<pid>/fd/<fd>; the last argument of convert, the one before the size of create),
# then runs it.
case "$1" in
  convert) for out; do :; done ;;
  create) out=""; prev=""; for arg; do out="$prev"; prev="$arg"; done ;;
  *) out="" ;;
esac
if [ -n "$out" ]; then stat -L -c '%n %a %u %g %s' "$out" >> "{log}" 2>&1 || echo "$out missing" >> "{log}"; fi
exec {real} "$@"
"""


def test_clone_and_overlay_files_have_their_final_mode_before_any_data(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    cinder_volume(share)
    for path in share.iterdir():
        path.chmod(0o600)
    spy_dir = tmp_path / "bin"
    spy_dir.mkdir()
    log = tmp_path / "qemu-img.log"
    real = subprocess.run(["sh", "-c", "command -v qemu-img"], capture_output=True, text=True, check=True).stdout.strip()
    (spy_dir / "qemu-img").write_text(QEMU_IMG_SPY.replace("{log}", str(log)).replace("{real}", real))
    (spy_dir / "qemu-img").chmod(0o755)
    env = {"PATH": f"{spy_dir}:{os.environ['PATH']}"}
    tasks = [
        {"name": "clone", "register": "clone", "environment": env, "volsnap.openstack.volume_clone": {
            "volume_path": str(share / VOL), "snapshot_id": S1, "dest": str(share / DEST)}},
        {"name": "snap", "register": "snap", "environment": env, "volsnap.openstack.volume_snapshot": {
            "volume_path": str(share / VOL), "snapshot_id": NEW, "mode": "offline"}},
    ]
    result = run_tasks(tmp_path / "run", tasks, ["clone", "snap"])
    assert result.rc == 0, result.output[-5000:]
    assert result["clone"]["changed"] and result["snap"]["changed"]
    lines = [line.split() for line in log.read_text().splitlines()]
    # one convert (the clone); the snapshot's overlay is written by the module itself into the file it created
    # at its final mode and owner (_nfs/qcow2_overlay.py), no qemu-img started for it
    assert len(lines) == 1, lines
    volume = (share / VOL).stat()
    for name, mode, uid, gid, size in lines:
        # qemu-img is handed the module's own file, already at the volume's mode and owner, still empty
        assert name.startswith("/proc/"), name
        assert (int(mode, 8), int(uid), int(gid), int(size)) == (0o600, volume.st_uid, volume.st_gid, 0), lines
    for made in (share / DEST, share / f"{VOL}.{NEW}"):
        st = made.stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, volume.st_uid, volume.st_gid), made


# ---------------------------------------------------------------- issue 12 item 9: stale temporary files

KILLED_BEFORE_INFO_RENAME = """
import os, signal, sys
from ansible_collections.volsnap.openstack.plugins.module_utils._base import atomic as _atomic
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
original = _atomic.os.rename
def rename(src, dst, *args, **kwargs):
    if dst.endswith('.info'):
        os.kill(os.getpid(), signal.SIGKILL)  # the new .info is written and synced, not yet renamed
    return original(src, dst, *args, **kwargs)
_atomic.os.rename = rename
def runner(argv):
    import subprocess
    proc = subprocess.run(argv, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr
VolumeSnapshot(Request(sys.argv[1], sys.argv[2], state='present', mode='offline'), QemuImg(runner),
               lambda: None, False).run()
"""


def test_stale_temporary_files_are_removed_by_the_next_run(tmp_path: Path) -> None:
    import sys
    from ansible_run import collections_path

    share, outside = tmp_path / "share", tmp_path / "outside"
    share.mkdir()
    outside.mkdir()
    cinder_volume(share)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([collections_path()] + [p for p in sys.path if p]))
    proc = subprocess.run([sys.executable, "-c", KILLED_BEFORE_INFO_RENAME, str(share / VOL), NEW], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == -9, proc.stderr[-3000:]
    temp_re = re.compile(rf"^\.{re.escape(VOL)}\.info\.[0-9a-f]{{16}}\.volsnap-tmp$")
    killed = sorted(p.name for p in share.iterdir() if temp_re.match(p.name))
    assert len(killed) == 1, sorted(p.name for p in share.iterdir())
    # leftovers of the other kinds a kill can leave, and names that are not this volume's temporary files
    ours = killed + [f"..volsnap-{VOL}.journal.0123456789abcdef.volsnap-tmp", f".{VOL}.info.abcd_123.tmp",
                     f".{VOL}.{S2}.volsnap-tmp"]
    for name in ours[1:]:
        (share / name).write_text("stale")
    (outside / "target").write_text("outside")
    not_ours = {f".{VOL}.info.fedcba9876543210.volsnap-tmp": "link",
                f".volume-{OTHER_ID}.info.0123456789abcdef.volsnap-tmp": "file",
                f".{VOL}.info.notours": "file", f".{VOL}.info.0123456789abcdeg.volsnap-tmp": "file"}
    for name, kind in not_ours.items():
        if kind == "link":
            (share / name).symlink_to(outside / "target")
        else:
            (share / name).write_text("not ours")
    outside_before = disk_state(outside)
    before = disk_state(share)

    check = run_tasks(tmp_path / "check", [snapshot_task("check", share, NEW, "present")], ["check"], check=True)
    assert check.rc == 0, check.output[-3000:]
    assert sorted(os.path.basename(p) for p in check["check"]["removed_temporaries"]) == sorted(ours)
    assert disk_state(share) == before

    run = run_tasks(tmp_path / "run", [snapshot_task("run", share, NEW, "present")], ["run"])
    assert run.rc == 0, run.output[-3000:]
    res = run["run"]
    assert not res.get("failed"), res
    assert res["resumed"] and sorted(os.path.basename(p) for p in res["removed_temporaries"]) == sorted(ours)
    for name in ours:
        assert not (share / name).exists()
    for name, kind in not_ours.items():
        assert (share / name).is_symlink() if kind == "link" else (share / name).is_file(), name
    assert disk_state(outside) == outside_before
    assert json.loads((share / f"{VOL}.info").read_text())["active"] == f"{VOL}.{NEW}"
