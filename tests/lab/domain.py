"""Helpers for integration tests: run a tiny, OS-less QEMU domain (TCG) on the local lab libvirtd.

The lab daemons are started by ``tests/lab/lab.sh start``.  Everything here uses only the
standard library and libvirt-python, and works with CPython 3.11 (Debian ``python3-libvirt``)
and 3.12 (pip ``libvirt-python`` in the project venv).

Every domain created here is named ``volsnap-test-<suffix>``; ``lab.sh stop`` removes leftovers.

Usage as a script::

    python3 tests/lab/domain.py selftest   # qcow2 base + domain + external disk-only snapshot
    python3 tests/lab/domain.py cleanup    # destroy/undefine every volsnap-test-* domain
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import libvirt

DOMAIN_PREFIX = "volsnap-test-"
DEFAULT_URI = "qemu:///system"
DEFAULT_LAB_DIR = "/var/tmp/volsnap-lab"
MEMORY_MIB = 64

DiskFormat = Literal["qcow2", "raw"]


def _silence(_ctx: object, _err: object) -> None:
    """libvirt error handler that prints nothing (errors are still raised as libvirtError)."""


def silence_libvirt_errors() -> None:
    """Stop libvirt-python from printing errors that the caller handles anyway."""
    libvirt.registerErrorHandler(_silence, None)


silence_libvirt_errors()


# --------------------------------------------------------------------------- configuration


def lab_uri() -> str:
    """The libvirt URI of the lab: $VOLSNAP_LIBVIRT_URI, default qemu:///system."""
    return os.environ.get("VOLSNAP_LIBVIRT_URI") or DEFAULT_URI


def lab_dir() -> str:
    """The lab state directory (pid files, logs, shares): $VOLSNAP_LAB_DIR, default /var/tmp/volsnap-lab."""
    return os.environ.get("VOLSNAP_LAB_DIR") or DEFAULT_LAB_DIR


def connect(uri: str | None = None) -> libvirt.virConnect:
    """Open a read-write connection to the lab libvirtd (raises libvirt.libvirtError)."""
    conn = libvirt.open(uri or lab_uri())
    if conn is None:  # old bindings returned None instead of raising
        raise libvirt.libvirtError(f"cannot connect to {uri or lab_uri()}")
    return conn


# --------------------------------------------------------------------------- images and dirs


def make_share_dir(prefix: str = "share-", base: str | None = None) -> str:
    """Create a fresh directory that QEMU run by libvirt (user libvirt-qemu) can use.

    It lives under ``<lab dir>/shares`` (every ancestor traversable by others) and is mode 0777,
    like an NFS share exported for Cinder and Nova. pytest's ``tmp_path`` does NOT work: it lies
    under a 0700 directory that libvirt-qemu cannot traverse.
    """
    root = base or os.path.join(lab_dir(), "shares")
    os.makedirs(root, exist_ok=True)
    for d in (os.path.dirname(root), root):
        if os.path.isdir(d) and os.stat(d).st_uid == os.getuid():
            os.chmod(d, os.stat(d).st_mode | 0o755)
    path = tempfile.mkdtemp(prefix=prefix, dir=root)
    os.chmod(path, 0o777)
    return path


def remove_share_dir(path: str) -> None:
    """Remove a directory made by make_share_dir (files may belong to libvirt-qemu; root removes them)."""
    shutil.rmtree(path, ignore_errors=True)


def qemu_img_create(path: str, size: str = "64M", fmt: DiskFormat = "qcow2",
                    backing: str | None = None, backing_fmt: DiskFormat | None = None) -> str:
    """Create an image with qemu-img (world-readable and writable so the QEMU user can use it)."""
    cmd = ["qemu-img", "create", "-q", "-f", fmt]
    if backing is not None:
        cmd += ["-b", backing, "-F", backing_fmt or "qcow2"]
    cmd.append(path)
    if backing is None:
        cmd.append(size)
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    os.chmod(path, 0o666)
    return path


# --------------------------------------------------------------------------- domain XML


@dataclass(frozen=True)
class Disk:
    """A volume attached as a virtio disk. ``serial`` is the Cinder volume id."""

    path: str
    format: DiskFormat = "qcow2"
    target: str = "vda"
    serial: str | None = None
    readonly: bool = False


DiskSpec = Disk | Mapping[str, object]


def as_disk(spec: DiskSpec, index: int = 0) -> Disk:
    """Accept a Disk or a mapping with keys path, format, target (or dev), serial, readonly."""
    if isinstance(spec, Disk):
        return spec
    path = spec.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError(f"disk {index}: 'path' is required")
    fmt = str(spec.get("format", "qcow2"))
    if fmt not in ("qcow2", "raw"):
        raise ValueError(f"disk {index}: format must be 'qcow2' or 'raw', not {fmt!r}")
    target = str(spec.get("target") or spec.get("dev") or f"vd{chr(ord('a') + index)}")
    serial = spec.get("serial")
    return Disk(path=path, format=fmt,  # type: ignore[arg-type]
                target=target, serial=None if serial is None else str(serial),
                readonly=bool(spec.get("readonly", False)))


def full_name(name: str) -> str:
    """Prefix a name with ``volsnap-test-`` unless it already has it."""
    return name if name.startswith(DOMAIN_PREFIX) else DOMAIN_PREFIX + name


def domain_xml(name: str, disks: Sequence[DiskSpec]) -> str:
    """XML of an OS-less TCG domain: 64 MiB, machine pc, no network, no graphics, virtio disks.

    SeaBIOS finds nothing to boot and idles (it reboots every 60 s, which on_reboot=restart allows).
    """
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = full_name(name)
    ET.SubElement(dom, "memory", unit="MiB").text = str(MEMORY_MIB)
    ET.SubElement(dom, "vcpu").text = "1"
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "destroy"
    devices = ET.SubElement(dom, "devices")
    seen: set[str] = set()
    for i, spec in enumerate(disks):
        d = as_disk(spec, i)
        if d.target in seen:
            raise ValueError(f"duplicate disk target {d.target}")
        seen.add(d.target)
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=d.format)
        ET.SubElement(disk, "source", file=d.path)
        ET.SubElement(disk, "target", dev=d.target, bus="virtio")
        if d.serial:
            ET.SubElement(disk, "serial").text = d.serial
        if d.readonly:
            ET.SubElement(disk, "readonly")
    ET.SubElement(devices, "controller", type="usb", model="none")
    video = ET.SubElement(devices, "video")
    ET.SubElement(video, "model", type="none")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


# --------------------------------------------------------------------------- lifecycle


def _is_no_domain(err: libvirt.libvirtError) -> bool:
    return bool(err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)


def start_domain(name: str, disks: Sequence[DiskSpec], conn: libvirt.virConnect | None = None,
                 persistent: bool = True) -> libvirt.virDomain:
    """Start ``volsnap-test-<name>`` on the given disks and return it (running).

    persistent=True (default) defines then starts the domain, as Nova does, so the persistent
    definition follows snapshots and block jobs; persistent=False uses a transient domain
    (createXML). Either way stop_domain() removes it completely.
    """
    c = conn or connect()  # the returned virDomain keeps its connection alive
    xml = domain_xml(name, disks)
    if not persistent:
        return c.createXML(xml, 0)
    dom = c.defineXML(xml)
    try:
        dom.create()
    except libvirt.libvirtError:
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()
        raise
    return dom


def stop_domain(name: str, conn: libvirt.virConnect | None = None) -> bool:
    """Destroy and undefine ``volsnap-test-<name>``; True if it existed. Not-found is ignored."""
    c = conn or connect()
    try:
        try:
            dom = c.lookupByName(full_name(name))
        except libvirt.libvirtError as err:
            if _is_no_domain(err):
                return False
            raise
        _destroy(dom)
        _undefine(dom)
        return True
    finally:
        if conn is None:
            with contextlib.suppress(libvirt.libvirtError):
                c.close()


def _destroy(dom: libvirt.virDomain) -> None:
    for attempt in range(5):
        try:
            if not dom.isActive():
                return
            dom.destroy()
            return
        except libvirt.libvirtError as err:
            if _is_no_domain(err):
                return
            # "Failed to terminate process ... Device or resource busy": QEMU still flushing
            if attempt == 4 or err.get_error_code() != libvirt.VIR_ERR_SYSTEM_ERROR:
                raise
            time.sleep(0.5)


def _undefine(dom: libvirt.virDomain) -> None:
    try:
        if not dom.isPersistent():
            return
        flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                 | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                 | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                 | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        dom.undefineFlags(flags)
    except libvirt.libvirtError as err:
        if not _is_no_domain(err):
            raise


def cleanup_test_domains(conn: libvirt.virConnect | None = None) -> list[str]:
    """Destroy and undefine every domain named volsnap-test-*; return their names."""
    c = conn or connect()
    removed = []
    try:
        for dom in c.listAllDomains(0):
            if dom.name().startswith(DOMAIN_PREFIX):
                _destroy(dom)
                _undefine(dom)
                removed.append(dom.name())
    finally:
        if conn is None:
            with contextlib.suppress(libvirt.libvirtError):
                c.close()
    return removed


@contextlib.contextmanager
def running_domain(name: str, disks: Sequence[DiskSpec], conn: libvirt.virConnect | None = None,
                   persistent: bool = True) -> Iterator[libvirt.virDomain]:
    """Context manager: a running domain, destroyed and undefined on exit."""
    c = conn or connect()
    try:
        dom = start_domain(name, disks, conn=c, persistent=persistent)
        try:
            yield dom
        finally:
            stop_domain(name, conn=c)
    finally:
        if conn is None:
            with contextlib.suppress(libvirt.libvirtError):
                c.close()


# --------------------------------------------------------------------------- inspection


def disk_chain(dom: libvirt.virDomain, target: str = "vda") -> list[tuple[str, str | None]]:
    """The live backing chain of a disk as [(source file, format), ...], active image first."""
    root = ET.fromstring(dom.XMLDesc(0))
    for disk in root.findall("./devices/disk"):
        tgt = disk.find("target")
        if tgt is None or tgt.get("dev") != target:
            continue
        chain: list[tuple[str, str | None]] = []
        node: ET.Element | None = disk
        while node is not None:
            src = node.find("source")
            if src is None:
                break
            drv = node.find("driver") if node is disk else node.find("format")
            fmt = None if drv is None else drv.get("type")
            path = src.get("file") or src.get("dev") or src.get("name") or ""
            chain.append((path, fmt))
            node = node.find("backingStore")
        return chain
    raise KeyError(f"no disk with target {target}")


def disk_targets(dom: libvirt.virDomain) -> list[str]:
    """Target names (vda, vdb...) of the domain's disks, in XML order."""
    root = ET.fromstring(dom.XMLDesc(0))
    return [t.get("dev", "") for t in root.findall("./devices/disk[@device='disk']/target")]


def snapshot_xml(disks: Mapping[str, str], skip: Sequence[str] = (), name: str | None = None) -> str:
    """Disk-only external snapshot XML for {target: overlay path} (qcow2 overlays).

    Every disk of the domain that is not snapshotted must be listed in ``skip`` (snapshot='no'):
    libvirt otherwise snapshots it too, onto a generated file name, which REUSE_EXT then rejects.
    """
    snap = ET.Element("domainsnapshot")
    if name:
        ET.SubElement(snap, "name").text = name
    disks_el = ET.SubElement(snap, "disks")
    for target, overlay in disks.items():
        d = ET.SubElement(disks_el, "disk", name=target, snapshot="external", type="file")
        ET.SubElement(d, "source", file=overlay)
        ET.SubElement(d, "driver", type="qcow2")
    for target in skip:
        if target not in disks:
            ET.SubElement(disks_el, "disk", name=target, snapshot="no")
    return ET.tostring(snap, encoding="unicode")


SNAPSHOT_FLAGS = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                  | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
                  | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)


def external_snapshot(dom: libvirt.virDomain, disks: Mapping[str, str], quiesce: bool = False) -> None:
    """Disk-only external snapshot of the given disks onto pre-created qcow2 overlays (Nova's flags).

    The domain's other disks are excluded (snapshot='no'). With quiesce=True, QUIESCE is tried
    first and, as Nova does, the snapshot is retried without it when it fails (no guest agent).
    """
    unknown = set(disks) - set(disk_targets(dom))
    if unknown:
        raise KeyError(f"no disk with target {sorted(unknown)}")
    xml = snapshot_xml(disks, skip=disk_targets(dom))
    if quiesce:
        try:
            dom.snapshotCreateXML(xml, SNAPSHOT_FLAGS | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE)
            return
        except libvirt.libvirtError:
            pass  # no guest agent: retry without quiesce
    dom.snapshotCreateXML(xml, SNAPSHOT_FLAGS)


# --------------------------------------------------------------------------- CLI


def selftest(verbose: bool = True) -> int:
    """Base qcow2 -> running domain -> external snapshot -> check chain overlay -> base."""
    def say(msg: str) -> None:
        if verbose:
            print(msg, flush=True)

    try:
        conn = connect()
    except libvirt.libvirtError as err:
        print(f"selftest FAILED: cannot connect to {lab_uri()}: {err} (run 'bash tests/lab/lab.sh start')",
              file=sys.stderr)
        return 1
    share = make_share_dir("selftest-")
    name = "selftest-" + uuid.uuid4().hex[:8]
    try:
        base = qemu_img_create(os.path.join(share, "volume-base.qcow2"), "64M")
        overlay = qemu_img_create(os.path.join(share, "volume-base.qcow2.snap1"),
                                  backing=base, backing_fmt="qcow2")
        serial = str(uuid.uuid4())
        t0 = time.monotonic()
        with running_domain(name, [Disk(base, "qcow2", "vda", serial)], conn=conn) as dom:
            t1 = time.monotonic()
            say(f"domain {dom.name()} running ({t1 - t0:.2f} s)")
            if serial not in dom.XMLDesc(0):
                raise AssertionError("serial missing from the domain XML")
            external_snapshot(dom, {"vda": overlay})
            t2 = time.monotonic()
            say(f"external disk-only snapshot ({t2 - t1:.3f} s)")
            chain = disk_chain(dom, "vda")
            paths = [path for path, _fmt in chain]
            say("chain: " + " -> ".join(paths))
            if paths != [overlay, base]:
                raise AssertionError(f"unexpected chain {chain}")
            if chain[0][1] != "qcow2" or chain[1][1] != "qcow2":
                raise AssertionError(f"unexpected formats {chain}")
        t3 = time.monotonic()
        say(f"domain stopped and undefined ({t3 - t2:.2f} s)")
        try:
            conn.lookupByName(full_name(name))
        except libvirt.libvirtError as err:
            if not _is_no_domain(err):
                raise
        else:
            raise AssertionError("domain still defined after stop")
        say("selftest OK")
        return 0
    except (AssertionError, libvirt.libvirtError, subprocess.CalledProcessError, OSError) as err:
        detail = getattr(err, "stderr", None) or ""
        print(f"selftest FAILED: {type(err).__name__}: {err} {detail}".rstrip(), file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            stop_domain(name, conn=conn)
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
        remove_share_dir(share)


def main(argv: Iterable[str]) -> int:
    args = list(argv)
    if args == ["selftest"]:
        return selftest()
    if args == ["cleanup"]:
        for n in cleanup_test_domains():
            print(f"removed {n}")
        return 0
    print("usage: domain.py selftest | cleanup", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
