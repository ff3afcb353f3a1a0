"""Issue 12, items 1 and 5, through the real modules: protocol/json backing and data-file names, and headers qemu refuses.

Each case is a Cinder NFS volume (raw base with data, one snapshot overlay made by qemu-img, its ``.info``) whose
overlay is made hostile:

* its backing name is one qemu parses as a protocol (``json:{...}``, ``file:``, ``nbd:``, ``http:``), with a file
  of that literal name planted in the share; qemu-io proves what qemu really opens (for ``json:`` and ``file:``,
  a file outside the share);
* its data-file extension names a ``json:`` protocol;
* its header holds a value qemu refuses (virtual size 2^62, ``l1_size``, ``refcount_table_clusters`` or
  ``nb_snapshots`` of 0xFFFFFFFF); qemu-img proves it refuses the file.

``qcow2_chain_info`` must call every chain unsafe with the right code, and ``volume_snapshot`` must refuse to
create a snapshot on top and to delete the existing one, with nothing changed in the share or outside it
(names, sizes, modes, owners, mtimes, contents).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from ansible_run import run_tasks
from test_volume_snapshot_hostile import NEW, S1, UNSAFE, VOL, builders, cinder_volume, disk_state, snapshot_task

SECRET = b"\x55" * 4096  # what the file outside the share holds: qemu-io reads it back through the overlay


def _qemu(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, cwd=str(cwd), timeout=60)


def _rebase_unsafe(overlay: Path, backing: str, fmt: str = "raw") -> None:
    """Write ``backing`` into the overlay's header as qemu-img does (``rebase -u`` opens nothing)."""
    proc = _qemu("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", backing, "-F", fmt, str(overlay), cwd=overlay.parent)
    assert proc.returncode == 0, proc.stderr


def _plant_literal(share: Path, name: str) -> None:
    """A regular file in the share whose name is literally the backing name (directories for its slashes)."""
    target = share / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"\x00" * 16 * 1024 * 1024)


def _qemu_reads_outside(overlay: Path, cwd: Path) -> None:
    """qemu-io on the overlay reads the bytes of the file outside the share: what qemu opens is not in the share."""
    proc = _qemu("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x55 0 4096", str(overlay), cwd=cwd)
    assert proc.returncode == 0 and "read 4096/4096" in proc.stdout and "Pattern verification failed" not in \
        proc.stdout, proc.stdout + proc.stderr


def _set_field(path: Path, offset: int, fmt: str, value: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(struct.pack(fmt, value))


def _qemu_refuses(path: Path) -> None:
    proc = _qemu("qemu-img", "info", "-f", "qcow2", str(path), cwd=path.parent)
    assert proc.returncode != 0, "qemu-img opens %s: %s" % (path, proc.stdout)


# --- Cases: each returns (the problem code qcow2_chain_info must report, the regex of the refusals) -----------

Case = Tuple[str, str]


def json_backing_outside(share: Path, outside: Path) -> Case:
    overlay = cinder_volume(share)[1]
    (outside / "secret").write_bytes(SECRET)
    name = 'json:{"driver":"raw","file":{"driver":"file","filename":"%s"}}' % (outside / "secret")
    _rebase_unsafe(overlay, name)
    _plant_literal(share, name)
    _qemu_reads_outside(overlay, cwd=share)
    return "backing_protocol", f"{UNSAFE}.*backing_protocol"


def file_protocol_backing(share: Path, outside: Path) -> Case:
    # qemu opens "file:<name>" relative to its working directory, never to the overlay's directory.
    overlay = cinder_volume(share)[1]
    (outside / VOL).write_bytes(SECRET)
    _rebase_unsafe(overlay, "file:" + VOL)
    _plant_literal(share, "file:" + VOL)
    _qemu_reads_outside(overlay, cwd=outside)
    return "backing_protocol", f"{UNSAFE}.*backing_protocol"


def nbd_backing(share: Path, outside: Path) -> Case:
    overlay = cinder_volume(share)[1]
    _rebase_unsafe(overlay, "nbd:127.0.0.1:9")
    _plant_literal(share, "nbd:127.0.0.1:9")
    proc = _qemu("qemu-io", "-r", "-f", "qcow2", "-c", "read 0 512", str(overlay), cwd=share)
    assert proc.returncode != 0 or "nbd" in proc.stderr.lower(), proc.stdout  # qemu dials NBD, not the file
    return "backing_protocol", f"{UNSAFE}.*backing_protocol"


def http_backing(share: Path, outside: Path) -> Case:
    overlay = cinder_volume(share)[1]
    _rebase_unsafe(overlay, "http:" + VOL)
    _plant_literal(share, "http:" + VOL)
    return "backing_protocol", f"{UNSAFE}.*backing_protocol"


def json_data_file(share: Path, outside: Path) -> Case:
    overlay = cinder_volume(share)[1]
    (outside / "secret").write_bytes(SECRET)
    name = 'json:{"driver":"file","filename":"%s"}' % (outside / "secret")
    data = builders.qcow2(size=16 * 1024 * 1024, backing=VOL, backing_fmt="raw", incompatible=1 << 2, data_file=name)
    overlay.write_bytes(data + b"\x00" * (4 * 65536 - len(data)))
    _plant_literal(share, name)
    return "data_file_protocol", f"{UNSAFE}.*(external_data_file|data_file_protocol)"


def _refused_header(offset: int, fmt: str, value: int) -> Callable[[Path, Path], Case]:
    def build(share: Path, outside: Path) -> Case:
        overlay = cinder_volume(share)[1]
        _set_field(overlay, offset, fmt, value)
        _qemu_refuses(overlay)
        return "invalid_header", f"{UNSAFE}.*invalid_header"
    return build


CASES: Dict[str, Callable[[Path, Path], Case]] = {
    "json_backing_outside": json_backing_outside,
    "file_protocol_backing": file_protocol_backing,
    "nbd_backing": nbd_backing,
    "http_backing": http_backing,
    "json_data_file": json_data_file,
    "virtual_size_2_62": _refused_header(24, ">Q", 1 << 62),
    "l1_size_ffffffff": _refused_header(36, ">I", 0xFFFFFFFF),
    "refcount_table_clusters_ffffffff": _refused_header(56, ">I", 0xFFFFFFFF),
    "nb_snapshots_ffffffff": _refused_header(60, ">I", 0xFFFFFFFF),
}


def test_protocol_names_and_refused_headers_are_unsafe_and_nothing_changes(tmp_path: Path) -> None:
    tasks: List[Dict[str, object]] = []
    registers: List[str] = []
    expect: Dict[str, Tuple[str, str]] = {}
    roots = {}
    for case, build in CASES.items():
        root = tmp_path / case
        share, outside = root / "share", root / "outside"
        share.mkdir(parents=True)
        outside.mkdir()
        expect[case] = build(share, outside)
        roots[case] = root
        tasks.append({"name": f"{case}_info", "volsnap.openstack.qcow2_chain_info": {
            "path": str(share / VOL), "fail_on_unsafe": False}, "register": f"{case}_info"})
        tasks.append(snapshot_task(f"{case}_create", share, NEW, "present"))
        tasks.append(snapshot_task(f"{case}_delete", share, S1, "absent"))
        registers += [f"{case}_info", f"{case}_create", f"{case}_delete"]
    before = {case: disk_state(root) for case, root in roots.items()}

    result = run_tasks(tmp_path / "run", tasks, registers)
    assert result.rc == 0, result.output[-5000:]

    failures = []
    for case, (code, pattern) in expect.items():
        info = result[f"{case}_info"]
        codes = [p["code"] for p in info.get("problems", []) if p["severity"] == "error"]
        if info.get("failed") or info.get("safe") is not False or code not in codes:
            failures.append(f"{case}: qcow2_chain_info says safe={info.get('safe')} codes={codes}, expected {code}: "
                            f"{json.dumps(info)[:400]}")
        for request in ("create", "delete"):
            res = result[f"{case}_{request}"]
            msg = res.get("msg", "")
            if not res.get("failed"):
                failures.append(f"{case}_{request}: not refused: {json.dumps(res)[:400]}")
            elif "Traceback" in json.dumps(res) or "MODULE FAILURE" in msg:
                failures.append(f"{case}_{request}: crashed instead of a clear refusal: {msg[:400]}")
            elif not re.search(pattern, msg, re.S):
                failures.append(f"{case}_{request}: message does not match {pattern!r}: {msg}")
    for case, root in roots.items():
        after = disk_state(root)
        if after != before[case]:
            changed = sorted(set(after.items()) ^ set(before[case].items()))
            failures.append(f"{case}: the disk changed: {changed}")
    assert not failures, "\n".join(failures)
