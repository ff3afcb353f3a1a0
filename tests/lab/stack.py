"""Python view of the lab's Ceph cluster and OpenStack services (started by ``tests/lab/lab.sh start``).

Standard library only (``connection()`` imports openstacksdk when called). Works with any
Python >= 3.9; the integration tests import it as ``tests/lab/domain.py`` is imported.

    >>> ceph = ceph_lab()                 # RuntimeError if the ceph part is not running
    >>> ceph.ceph("health")
    >>> ceph.rbd("ls", "-l", ceph.volumes_pool, "--format", "json")
    >>> os_lab = openstack_lab()          # RuntimeError if the openstack part is not running
    >>> conn = os_lab.connection()        # admin; os_lab.connection(os_lab.member_cloud) for a member
    >>> run_tasks(..., python=os_lab.python, env_extra=os_lab.env())

Usage as a script: ``python3 tests/lab/stack.py`` prints both parts as JSON (exit 1 if one is down).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_LAB_DIR = "/var/tmp/volsnap-lab"
KEYSTONE_URL = "http://127.0.0.1:5000/v3"
CINDER_URL = "http://127.0.0.1:8776"
GLANCE_URL = "http://127.0.0.1:9292"
_CLI_TIMEOUT = 120
_START_HINT = "start it with 'bash tests/lab/lab.sh start' (see tests/lab/README.md)"


def lab_dir() -> Path:
    """$VOLSNAP_LAB_DIR, default /var/tmp/volsnap-lab."""
    return Path(os.environ.get("VOLSNAP_LAB_DIR") or DEFAULT_LAB_DIR)


class CommandError(RuntimeError):
    """A ceph/rbd command exited non-zero; ``returncode``, ``stdout`` and ``stderr`` are kept."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} exited {returncode}: {stderr.strip() or stdout.strip()}")
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


@dataclass(frozen=True)
class CephLab:
    """The lab cluster: one mon, one mgr, one memstore OSD, cephx, on 127.0.0.1.

    client.cinder: mon 'profile rbd', osd 'profile rbd pool=volumes, profile rbd pool=images'.
    client.glance: mon 'profile rbd', osd 'profile rbd pool=images, profile rbd-read-only pool=volumes'
    (Glance, like Nova, reads the parents of images cloned from volumes).
    """

    conf: str
    admin_keyring: str
    fsid: str
    cinder_keyring: str
    glance_keyring: str
    volumes_pool: str = "volumes"
    images_pool: str = "images"
    cinder_user: str = "cinder"
    glance_user: str = "glance"

    def _run(self, tool: str, args: tuple[str, ...], timeout: float) -> str:
        argv = [tool, "--conf", self.conf, "--id", "admin", "--keyring", self.admin_keyring, *map(str, args)]
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def ceph(self, *args: str, timeout: float = _CLI_TIMEOUT) -> str:
        """Run ``ceph ARGS`` as client.admin; stdout (pass "--format", "json" for JSON). Raises CommandError."""
        return self._run("ceph", args, timeout)

    def rbd(self, *args: str, timeout: float = _CLI_TIMEOUT) -> str:
        """Run ``rbd ARGS`` as client.admin; stdout. Raises CommandError."""
        return self._run("rbd", args, timeout)

    def rados(self, *args: str, timeout: float = _CLI_TIMEOUT) -> str:
        """Run ``rados ARGS`` as client.admin; stdout. Raises CommandError."""
        return self._run("rados", args, timeout)


@dataclass(frozen=True)
class OpenStackLab:
    """Keystone, Cinder (backends 'ceph' (RBD) and 'nfs' (NfsDriver)) and Glance (stores rbd + file) on 127.0.0.1.

    Clouds: ``cloud`` (admin in project admin), ``member_cloud`` (member in project demo),
    ``service_cloud`` (roles admin + service in project service: what Glance's location API wants
    for rbd:// URLs). ``python`` is the services' Python 3.11 venv: it has openstacksdk and Debian's rados/rbd
    modules; use it as the module interpreter of modules that need both.

    NFS backend: Cinder's share string is ``nfs_share`` (``127.0.0.1:<nfs_export>``); the export directory
    ``nfs_export`` is bind-mounted on ``nfs_mount`` (nfs_mount_point_base/<md5 of the share>), where
    NfsDriver finds it mounted. Volume files ``volume-<id>`` (and snapshot files, ``.info``) appear in both.
    ``inventory`` is the Ansible inventory of the lab for playbooks/*.yml (see tests/lab/README.md).
    """

    clouds_yaml: str
    python: str
    cinder_host: str
    ceph: CephLab
    nfs_export: str = ""
    nfs_mount: str = ""
    nfs_share: str = ""
    nfs_cinder_host: str = "volsnap-lab@nfs"
    nfs_volume_type: str = "nfs"
    nfs_backend_name: str = "nfs"
    inventory: str = ""
    cinder_conf: str = ""
    glance_conf: str = ""
    lab_sh: str = ""
    cloud: str = "volsnap-lab"
    member_cloud: str = "volsnap-lab-member"
    service_cloud: str = "volsnap-lab-service"
    member_project: str = "demo"
    volume_type: str = "ceph"
    volume_backend_name: str = "ceph"
    default_store: str = "rbd"
    stores: tuple[str, ...] = ("rbd", "file")
    keystone_url: str = KEYSTONE_URL
    cinder_url: str = CINDER_URL
    glance_url: str = GLANCE_URL
    region_name: str = "RegionOne"

    @property
    def cinder_pool(self) -> str:
        """The scheduler pool of the backend: ``<host>@ceph#ceph``."""
        return f"{self.cinder_host}#{self.volume_backend_name}"

    @property
    def nfs_cinder_pool(self) -> str:
        """The scheduler pool of the NFS backend: ``<host>@nfs#nfs``."""
        return f"{self.nfs_cinder_host}#{self.nfs_backend_name}"

    def service_pid(self, name: str) -> int | None:
        """PID of the lab service ``name`` (cinder-volume, glance...) if it runs, else None."""
        return _service_pid(name)

    def restart(self, service: str, timeout: float = 300) -> None:
        """``lab.sh restart SERVICE`` (waits until the service is ready); CommandError if it fails."""
        argv = ["bash", self.lab_sh, "restart", service]
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)

    def env(self) -> dict[str, str]:
        """Environment for ansible runs and openstacksdk: OS_CLIENT_CONFIG_FILE (and nothing else)."""
        return {"OS_CLIENT_CONFIG_FILE": self.clouds_yaml}

    def connection(self, cloud: str | None = None) -> Any:
        """An openstack.connection.Connection (openstacksdk of the calling interpreter) to ``cloud``."""
        # pylint: disable-next=import-outside-toplevel
        from openstack import config as os_config, connection as os_connection

        region = os_config.OpenStackConfig(config_files=[self.clouds_yaml], load_envvars=False).get_one(
            cloud=cloud or self.cloud)
        return os_connection.Connection(config=region)


def _http_answers(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
            return resp.status < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except OSError:
        return False


def _service_pid(name: str) -> int | None:
    """The PID recorded in <lab dir>/run/<name>.pid ("PID STARTTIME") if that process still runs."""
    try:
        pid_text, start = (lab_dir() / "run" / f"{name}.pid").read_text(encoding="utf-8").split()[:2]
        stat = Path(f"/proc/{int(pid_text)}/stat").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    fields = stat.rpartition(") ")[2].split()
    if fields[0] == "Z" or fields[19] != start:
        return None
    return int(pid_text)


def _nfs_mount_point(base: Path, share: str) -> Path:
    """Where os-brick mounts ``share``: <nfs_mount_point_base>/<md5 of the share string>."""
    return base / hashlib.md5(share.encode("utf-8"), usedforsecurity=False).hexdigest()


def _read_fsid(conf: Path) -> str:
    for line in conf.read_text(encoding="utf-8").splitlines():
        key, _sep, value = line.partition("=")
        if key.strip() == "fsid":
            return value.strip()
    raise RuntimeError(f"no fsid in {conf}")


def ceph_lab() -> CephLab:
    """The running lab cluster; RuntimeError (saying what to do) if it is not set up or does not answer."""
    base = lab_dir() / "ceph"
    conf = base / "ceph.conf"
    if not conf.is_file() or not (base / ".ready").exists():
        raise RuntimeError(f"the lab Ceph cluster is not set up ({conf} or {base / '.ready'} missing): {_START_HINT}")
    lab = CephLab(conf=str(conf), admin_keyring=str(base / "ceph.client.admin.keyring"), fsid=_read_fsid(conf),
                  cinder_keyring=str(base / "ceph.client.cinder.keyring"),
                  glance_keyring=str(base / "ceph.client.glance.keyring"))
    for path in (lab.admin_keyring, lab.cinder_keyring, lab.glance_keyring):
        if not Path(path).is_file():
            raise RuntimeError(f"the lab Ceph cluster has no keyring {path}: {_START_HINT}")
    try:
        lab.ceph("--connect-timeout", "10", "mon", "stat", timeout=20)
    except (CommandError, subprocess.TimeoutExpired, OSError) as err:
        raise RuntimeError(f"the lab Ceph cluster does not answer ({err}): {_START_HINT}") from err
    return lab


def openstack_lab() -> OpenStackLab:
    """The running lab OpenStack; RuntimeError (saying what to do) if it is not set up or does not answer."""
    ceph = ceph_lab()
    base = lab_dir() / "openstack"
    clouds = base / "clouds.yaml"
    python = base / "venv" / "bin" / "python"
    if not clouds.is_file() or not (base / ".ready").exists():
        raise RuntimeError(f"the lab OpenStack is not set up ({clouds} or {base / '.ready'} missing): {_START_HINT}")
    if not python.exists():
        raise RuntimeError(f"the lab OpenStack venv is missing ({python}): run 'bash tests/lab/lab.sh install'")
    for name, url in (("keystone", KEYSTONE_URL), ("cinder-api", CINDER_URL + "/"), ("glance", GLANCE_URL + "/")):
        if not _http_answers(url):
            raise RuntimeError(f"the lab {name} does not answer at {url}: {_START_HINT}")
    nfs_export = lab_dir() / "nfs" / "export"
    nfs_share = f"127.0.0.1:{nfs_export}"
    nfs_mount = _nfs_mount_point(lab_dir() / "nfs" / "mnt", nfs_share)
    mounts = {line.split()[1] for line in Path("/proc/mounts").read_text(encoding="utf-8").splitlines() if line.strip()}
    if str(nfs_mount) not in mounts:
        raise RuntimeError(f"the lab NFS share {nfs_export} is not bind-mounted on {nfs_mount}: {_START_HINT}")
    return OpenStackLab(clouds_yaml=str(clouds), python=str(python), cinder_host="volsnap-lab@ceph", ceph=ceph,
                        nfs_export=str(nfs_export), nfs_mount=str(nfs_mount), nfs_share=nfs_share,
                        inventory=str(lab_dir() / "inventory.yml"),
                        cinder_conf=str(base / "etc" / "cinder" / "cinder.conf"),
                        glance_conf=str(base / "etc" / "glance" / "glance-api.conf"),
                        lab_sh=str(Path(__file__).resolve().parent / "lab.sh"))


def main() -> int:
    report: dict[str, Any] = {}
    rc = 0
    for name, probe in (("ceph", ceph_lab), ("openstack", openstack_lab)):
        try:
            report[name] = asdict(probe())
        except RuntimeError as err:
            report[name] = {"error": str(err)}
            rc = 1
    json.dump(report, sys.stdout, indent=2)
    print()
    return rc


if __name__ == "__main__":
    sys.exit(main())
