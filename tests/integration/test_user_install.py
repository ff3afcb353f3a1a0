"""The collection as a new user gets it: built, installed, and run from a fresh virtualenv.

README ("Python environments") says how users set up the host that runs the modules: a virtualenv made
from the distribution's python3 with ``--system-site-packages`` (so Debian's python3-rados, python3-rbd
and python3-libvirt stay importable) and ``pip install -r requirements.txt``. This test does exactly that,
with the oldest openstacksdk requirements.txt allows, installs the built tarball with ansible-galaxy and
runs one module of each kind from it against the real lab: an image-file module (qemu), a Ceph module,
an OpenStack API module, and rbd_image_clone_upload, which needs openstacksdk and the Ceph bindings in
one interpreter. It also runs `make ee`'s steps (ansible-builder create) and checks that what the build
context will install (ansible-builder introspect of the installed collection) is installable here: every
bindep.txt package of this platform is installed (bindep) and the Python requirements install (pip).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml

from ansible_run import COLLECTION_ROOT, run_tasks

SYSTEM_PYTHON = "/usr/bin/python3"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else name


def run(argv: List[str], **kwargs: Any) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900, **kwargs)
    assert proc.returncode == 0, (argv, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout


def minimums(requirements: Path) -> List[str]:
    """requirements.txt with every ``name>=version`` pinned to ``name==version`` (the tested minimums)."""
    pins = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)", line)
            assert match, f"requirements.txt entries must be 'name>=minimum': {line!r}"
            pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """The built tarball, its install in a collections path, and a fresh user venv with the minimums."""
    base = tmp_path_factory.mktemp("user-install")
    run([tool("ansible-galaxy"), "collection", "build", str(COLLECTION_ROOT), "--output-path", str(base)])
    (tarball,) = base.glob("volsnap-openstack-*.tar.gz")
    collections = base / "collections"
    # --force and a collections path of its own: the build copy the test suite runs from must not count as
    # "already installed"
    run([tool("ansible-galaxy"), "collection", "install", "--force", str(tarball), "-p", str(collections)],
        env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), PYTHONPATH=""))
    venv = base / "venv"
    run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)])
    pins = minimums(COLLECTION_ROOT / "requirements.txt")
    run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", *pins])
    yield {"base": base, "tarball": tarball, "collections": collections, "python": str(venv / "bin" / "python"),
           "pins": pins}
    shutil.rmtree(base, ignore_errors=True)


def test_user_venv_has_every_python_dependency_at_its_minimum(installed: Dict[str, Any]) -> None:
    probe = ("import json, openstack, rados, rbd, libvirt; "
             "print(json.dumps({'openstacksdk': openstack.version.__version__}))")
    versions = yaml.safe_load(run([installed["python"], "-c", probe]))
    assert f"openstacksdk=={versions['openstacksdk']}" in installed["pins"]


def test_one_module_of_each_kind_runs_from_the_installed_collection(installed: Dict[str, Any], tmp_path: Path,
                                                                    ceph_lab: Any, openstack_lab: Any) -> None:
    image = tmp_path / "disk.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"])
    rbd_image = f"volsnap-user-install-{uuid.uuid4().hex[:8]}"
    ceph_lab.rbd("create", "--size", "4", f"{ceph_lab.volumes_pool}/{rbd_image}")
    ceph = {"ceph_conf": str(ceph_lab.conf), "keyring": str(ceph_lab.admin_keyring)}
    tasks = [
        {"name": "image file", "volsnap.openstack.qcow2_chain_info": {"path": str(image), "fail_on_unsafe": False},
         "register": "chain"},
        {"name": "ceph", "volsnap.openstack.ceph_auth_client": dict(ceph, name="volsnap-user-install",
                                                                    caps={"mon": "profile rbd"}),
         "check_mode": True, "register": "client"},
        {"name": "openstack", "volsnap.openstack.manageable_snapshot_info": {
            "cloud": openstack_lab.cloud, "host": openstack_lab.cinder_host}, "register": "listing"},
        {"name": "openstack and ceph in one interpreter", "volsnap.openstack.rbd_image_clone_upload": dict(
            ceph, cloud=openstack_lab.cloud, rbd_image=rbd_image, image_name=rbd_image),
         "check_mode": True, "register": "upload"},
        {"name": "filter (on the controller)", "ansible.builtin.debug": {
            "msg": "{{ entries | volsnap.openstack.snapshot_batches('present', 'raw') }}"},
         "vars": {"entries": [{"volume_id": "a", "snapshot_id": "s2"},
                              {"volume_id": "a", "snapshot_id": "s1", "state": "absent"}]},
         "register": "batches"},
    ]
    try:
        res = run_tasks(tmp_path, tasks, ["chain", "client", "listing", "upload", "batches"],
                        python=installed["python"],
                        env_extra=dict(openstack_lab.env(), ANSIBLE_COLLECTIONS_PATH=str(installed["collections"]),
                                       PYTHONPATH=""))
    finally:
        ceph_lab.rbd("rm", f"{ceph_lab.volumes_pool}/{rbd_image}")
    assert res.rc == 0, res.output[-6000:]
    # ANSIBLE_COLLECTIONS_PATH (and no PYTHONPATH) named only the installed copy, which holds no development files
    installed_root = installed["collections"] / "ansible_collections" / "volsnap" / "openstack"
    assert (installed_root / "plugins" / "modules" / "rbd_image_clone_upload.py").is_file(), sorted(
        str(p) for p in installed["collections"].rglob("*"))[:20]
    assert not (installed_root / "tests").exists()
    assert res["chain"]["chain"][0]["format"] == "qcow2"
    assert res["client"]["changed"] and res["client"]["exists"]
    assert isinstance(res["listing"]["manageable_snapshots"], list)
    assert res["upload"]["changed"] and res["upload"]["plan"], res["upload"]
    assert res["batches"]["msg"] == [
        {"state": "present", "volume_format": "raw", "volumes": [{"volume_id": "a", "snapshot_id": "s2"}]},
        {"state": "absent", "volume_format": "raw", "volumes": [{"volume_id": "a", "snapshot_id": "s1"}]}]


def test_execution_environment_context_installs_what_the_collection_declares(
        installed: Dict[str, Any], tmp_path: Path) -> None:
    ee = COLLECTION_ROOT / "ee"
    work = tmp_path / "ee"
    shutil.copytree(ee, work, ignore=shutil.ignore_patterns("collections"))
    (work / "collections").mkdir()
    shutil.copy(installed["tarball"], work / "collections" / "volsnap-openstack.tar.gz")
    context = tmp_path / "context"
    run([tool("ansible-builder"), "create", "-f", str(work / "execution-environment.yml"), "-c", str(context)])
    containerfile = (context / "Containerfile") if (context / "Containerfile").exists() else context / "Dockerfile"
    assert "/build/collections/" in containerfile.read_text()
    assert (context / "_build" / "collections" / "volsnap-openstack.tar.gz").is_file()

    # What the builder stage will find in the collection (ansible-builder's own introspection of the install).
    found = yaml.safe_load(run([tool("ansible-builder"), "introspect", str(installed["collections"])]))
    python = [entry.split("#", 1)[0].strip() for entry in found["python"]]
    system = [entry.split("#", 1)[0].strip() for entry in found["system"]]
    assert python == [line for line in python if line] and any(p.startswith("openstacksdk>=") for p in python)
    for package in ("qemu-utils", "python3-libvirt", "python3-rados", "python3-rbd"):
        assert f"{package} [platform:dpkg]" in system
    for package in ("qemu-img", "python3-libvirt", "python3-rados", "python3-rbd"):
        assert f"{package} [platform:rpm]" in system
    bindep_file = tmp_path / "bindep.txt"
    bindep_file.write_text("\n".join(system) + "\n")
    missing = subprocess.run([tool("bindep"), "-b", "-f", str(bindep_file)], capture_output=True, text=True,
                             check=False)
    assert missing.returncode == 0 and not missing.stdout.strip(), f"not installed here: {missing.stdout}"
    venv = tmp_path / "venv"
    run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", *python])
    run([str(venv / "bin" / "python"), "-c", "import openstack, rados, rbd, libvirt"])


def test_an_openstacksdk_below_the_minimum_is_refused_with_the_minimum(
        installed: Dict[str, Any], tmp_path: Path, openstack_lab: Any) -> None:
    """Debian 12's python3-openstacksdk is 0.101: the modules say which version they found and which they need."""
    venv = tmp_path / "old-sdk"
    run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", "openstacksdk==0.101.0"])
    task = [{"name": "openstack", "volsnap.openstack.manageable_snapshot_info": {
        "cloud": openstack_lab.cloud, "host": openstack_lab.cinder_host}, "register": "listing",
        "ignore_errors": True}]
    res = run_tasks(tmp_path / "run", task, ["listing"], python=str(venv / "bin" / "python"),
                    env_extra=dict(openstack_lab.env(), ANSIBLE_COLLECTIONS_PATH=str(installed["collections"]),
                                   PYTHONPATH=""))
    assert res["listing"]["failed"], res.output[-4000:]
    minimum = next(pin for pin in installed["pins"] if pin.startswith("openstacksdk==")).split("==")[1]
    assert f"openstacksdk >= {minimum} (found 0.101.0)" in res["listing"]["msg"]
