"""Fixtures for the integration tests: a real libvirtd + QEMU (TCG) lab on this machine.

The lab is started by ``tests/lab/lab.sh start`` (idempotent; left running after the session
unless VOLSNAP_LAB_STOP=1). If it cannot be started, the tests FAIL: they are never skipped.

Fixtures:
    libvirt_uri     (session)  the lab is up; the libvirt URI (VOLSNAP_LIBVIRT_URI, default qemu:///system)
    lab             (session)  the tests/lab/domain.py module (Disk, domain_xml, disk_chain, external_snapshot...)
    libvirt_conn    (function) an open libvirt connection, closed at teardown
    domain_factory  (function) make(name_suffix, disks, persistent=True) -> running virDomain, removed at teardown
    share           (function) a fresh directory (pathlib.Path) QEMU run by libvirt can use, like an NFS share
    qemu_img        (session)  path of qemu-img
    qemu_io         (session)  path of qemu-io
    ceph_lab        (session)  tests/lab/stack.py CephLab of the running lab cluster (started if needed)
    openstack_lab   (session)  tests/lab/stack.py OpenStackLab of the running lab OpenStack (started if needed)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = REPO_ROOT / "tests" / "lab"
LAB_SH = LAB_DIR / "lab.sh"
LAB_START_TIMEOUT = int(os.environ.get("VOLSNAP_LAB_START_TIMEOUT", "90")) + 60

if str(LAB_DIR) not in sys.path:
    sys.path.insert(0, str(LAB_DIR))


def _import_lab() -> ModuleType:
    try:
        import domain  # tests/lab/domain.py
    except ImportError as err:
        pytest.fail(f"cannot import the lab helpers (tests/lab/domain.py) with {sys.executable}: {err}. "
                    "libvirt-python is needed (pip install libvirt-python, or Debian python3-libvirt).",
                    pytrace=False)
    return domain


@pytest.fixture(scope="session")
def lab() -> ModuleType:
    """The tests/lab/domain.py module."""
    return _import_lab()


@pytest.fixture(scope="session")
def libvirt_uri(lab: ModuleType) -> Iterator[str]:
    """Start the lab (tests/lab/lab.sh start) if needed and return the libvirt URI; fail if it cannot."""
    if not LAB_SH.is_file():
        pytest.fail(f"{LAB_SH} is missing", pytrace=False)
    try:
        proc = subprocess.run(["bash", str(LAB_SH), "start", "libvirt"], check=False, cwd=str(REPO_ROOT),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=LAB_START_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"'bash tests/lab/lab.sh start' did not finish within {LAB_START_TIMEOUT}s:\n"
                    f"{err.output or ''}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"the libvirt lab did not start ('bash tests/lab/lab.sh start' exited {proc.returncode}):\n"
                    f"{proc.stdout[-6000:]}\nSee tests/lab/README.md.", pytrace=False)
    uri = lab.lab_uri()
    try:
        conn = lab.connect(uri)
        conn.close()
    except Exception as err:  # libvirt.libvirtError, but keep the message whatever it is
        pytest.fail(f"lab.sh start succeeded but {uri} refuses connections: {err}", pytrace=False)
    yield uri
    if os.environ.get("VOLSNAP_LAB_STOP") == "1":
        subprocess.run(["bash", str(LAB_SH), "stop"], cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)


@pytest.fixture
def libvirt_conn(lab: ModuleType, libvirt_uri: str) -> Iterator[object]:
    """An open read-write virConnect to the lab, closed at teardown."""
    conn = lab.connect(libvirt_uri)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:limit] or "x"


DiskArg = object | Mapping[str, object]


@pytest.fixture
def domain_factory(lab: ModuleType, libvirt_conn: object, share: Path) -> Iterator[Callable[..., object]]:
    """make(name_suffix, disks, persistent=True) -> running virDomain.

    The domain is named ``volsnap-test-<name_suffix>-<6 hex>`` (unique across parallel runs and
    leftovers; read it back with dom.name()). disks: lab.Disk objects or mappings with keys path,
    format ('qcow2'|'raw'), target (vda, vdb...), serial (Cinder volume id). Every domain made is
    destroyed and undefined at teardown, before ``share`` is removed.
    """
    made: list[str] = []

    def make(name_suffix: str, disks: Sequence[DiskArg], persistent: bool = True) -> object:
        name = f"{lab.DOMAIN_PREFIX}{_slug(name_suffix)}-{uuid.uuid4().hex[:6]}"
        made.append(name)
        return lab.start_domain(name, disks, conn=libvirt_conn, persistent=persistent)

    yield make
    errors = []
    for name in reversed(made):
        try:
            lab.stop_domain(name, conn=libvirt_conn)
        except Exception as err:
            errors.append(f"{name}: {err}")
    if errors:
        pytest.fail("could not remove test domains: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def share(lab: ModuleType, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh, empty directory (mode 0777) under <lab dir>/shares, removed at teardown.

    QEMU started by libvirt runs as libvirt-qemu and cannot reach pytest's tmp_path (a 0700 dir);
    this directory is reachable. Images made here with qemu-img as root (0644) are fine: libvirt
    chowns them to libvirt-qemu while a domain uses them and restores the owner afterwards.
    """
    path = Path(lab.make_share_dir(prefix=f"share-{_slug(request.node.name, 30)}-"))
    try:
        yield path
    finally:
        lab.remove_share_dir(str(path))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: run 'bash tests/lab/lab.sh install' (Debian package qemu-utils)",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def qemu_img() -> str:
    """Absolute path of qemu-img (fails, never skips, if missing)."""
    return _tool("qemu-img")


@pytest.fixture(scope="session")
def qemu_io() -> str:
    """Absolute path of qemu-io (fails, never skips, if missing)."""
    return _tool("qemu-io")


# --------------------------------------------------------------------------- Ceph + OpenStack lab

LAB_PART_TIMEOUT = {"ceph": 300, "openstack": 900}


def _stack_module() -> ModuleType:
    try:
        import stack  # tests/lab/stack.py
    except ImportError as err:
        pytest.fail(f"cannot import tests/lab/stack.py with {sys.executable}: {err}", pytrace=False)
    return stack


def _lab_part(part: str, probe_name: str) -> object:
    """Return stack.<probe_name>(); if the part is not running, run 'lab.sh start <part>' once and retry."""
    stack = _stack_module()
    probe = getattr(stack, probe_name)
    try:
        return probe()
    except RuntimeError as first:
        reason = str(first)
    try:
        proc = subprocess.run(["bash", str(LAB_SH), "start", part], check=False, cwd=str(REPO_ROOT),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=LAB_PART_TIMEOUT[part])
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the {part} lab was not running ({reason}) and 'bash tests/lab/lab.sh start {part}' did not "
                    f"finish within {LAB_PART_TIMEOUT[part]}s:\n{err.output or ''}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"the {part} lab was not running ({reason}) and 'bash tests/lab/lab.sh start {part}' exited "
                    f"{proc.returncode}:\n{proc.stdout[-6000:]}\nSee tests/lab/README.md.", pytrace=False)
    try:
        return probe()
    except RuntimeError as err:
        pytest.fail(f"'bash tests/lab/lab.sh start {part}' succeeded but the lab is not usable: {err}", pytrace=False)


@pytest.fixture(scope="session")
def ceph_lab() -> object:
    """tests/lab/stack.py CephLab of the lab cluster (conf, keyrings, fsid, pools; ceph()/rbd()/rados())."""
    return _lab_part("ceph", "ceph_lab")


@pytest.fixture(scope="session")
def openstack_lab(ceph_lab: object) -> object:
    """tests/lab/stack.py OpenStackLab (clouds_yaml, cloud, member_cloud, python, cinder_host; connection(), env())."""
    return _lab_part("openstack", "openstack_lab")
