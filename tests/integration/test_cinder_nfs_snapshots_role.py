"""Role cinder_nfs_snapshots with Cinder's own check (the lab's Cinder 'python'), through ansible-playbook.

The multi-host behaviour (three hosts, service restarts, check mode) is the molecule scenario
extensions/molecule/cinder_nfs_snapshots; here the role runs on localhost against real Cinder code:
the interpreter of the lab's OpenStack services imports cinder, so the role's Cinder check
(files/cinder_nfs_check.py: NfsDriver built as cinder-volume builds it) runs for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ansible_run import run_tasks

CONF = (
    "# a cinder-volume host\n"
    "[DEFAULT]\n"
    "enabled_backends = nfs,ceph\n"
    "\n"
    "[backend_defaults]\n"
    "nas_secure_file_operations = auto\n"
    "\n"
    "[nfs]\n"
    "volume_driver = cinder.volume.drivers.nfs.NfsDriver\n"
    "nfs_shares_config = /etc/cinder/nfs_shares\n"
    "nfs_snapshot_support = false\n"
    "\n"
    "[ceph]\n"
    "volume_driver = cinder.volume.drivers.rbd.RBDDriver\n"
    "rbd_pool = volumes\n"
)


def role_task(conf: Path, marker: Path, python: str, **extra: Any) -> Dict[str, Any]:
    role_vars = {
        "cinder_nfs_snapshots_config_file": str(conf),
        "cinder_nfs_snapshots_cinder_check": "always",
        "cinder_nfs_snapshots_cinder_python": python,
        "cinder_nfs_snapshots_restart_method": "command",
        # stands for the restart: one line per handler run
        "cinder_nfs_snapshots_restart_command": ["/bin/sh", "-c", "echo restart >> %s" % marker],
    }
    role_vars.update(extra)
    return {"name": "run the role", "ansible.builtin.include_role": {"name": "volsnap.openstack.cinder_nfs_snapshots"},
            "vars": role_vars}


def restarts(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_cinder_accepts_planned_and_written_settings_restart_once(tmp_path: Path, openstack_lab) -> None:
    conf = tmp_path / "cinder.conf"
    conf.write_text(CONF)
    marker = tmp_path / "restarts"
    res = run_tasks(tmp_path, [role_task(conf, marker, openstack_lab.python)], [])
    assert res.rc == 0, res.output
    assert "Cinder's NfsDriver accepts the planned settings of nfs" in res.output
    assert "Cinder's NfsDriver accepts the written settings of nfs" in res.output
    assert conf.read_text() == CONF.replace(
        "nfs_snapshot_support = false\n",
        "nfs_snapshot_support = true\nnfs_qcow2_volumes = true\nnas_secure_file_operations = false\n")
    assert restarts(marker) == 1

    res = run_tasks(tmp_path, [role_task(conf, marker, openstack_lab.python)], [])
    assert res.rc == 0, res.output
    assert "changed=0" in res.output
    assert restarts(marker) == 1


def test_cinder_refusal_of_a_value_the_role_does_not_manage_stops_before_writing(
        tmp_path: Path, openstack_lab) -> None:
    text = CONF.replace("nfs_snapshot_support = false\n",
                        "nfs_snapshot_support = false\nnas_secure_file_permissions = sometimes\n")
    conf = tmp_path / "cinder.conf"
    conf.write_text(text)
    marker = tmp_path / "restarts"
    res = run_tasks(tmp_path, [role_task(conf, marker, openstack_lab.python)], [])
    assert res.rc != 0, res.output
    assert "Cinder's NfsDriver refuses the planned settings" in res.output
    assert "(nothing was changed)" in res.output
    assert "NAS config 'nas_secure_file_permissions=sometimes' invalid" in res.output
    assert conf.read_text() == text
    assert restarts(marker) == 0


def test_check_mode_runs_cinder_check_on_planned_values_and_writes_nothing(tmp_path: Path, openstack_lab) -> None:
    conf = tmp_path / "cinder.conf"
    conf.write_text(CONF)
    marker = tmp_path / "restarts"
    res = run_tasks(tmp_path, [role_task(conf, marker, openstack_lab.python)], [], check=True, diff=True)
    assert res.rc == 0, res.output
    assert "Cinder's NfsDriver accepts the planned settings of nfs" in res.output
    assert "+nas_secure_file_operations = false" in res.output
    assert conf.read_text() == CONF
    assert restarts(marker) == 0


def test_cinder_check_always_fails_without_cinder(tmp_path: Path) -> None:
    conf = tmp_path / "cinder.conf"
    conf.write_text(CONF)
    marker = tmp_path / "restarts"
    missing = str(tmp_path / "no-such-venv" / "bin" / "python3")
    res = run_tasks(tmp_path, [role_task(conf, marker, missing)], [])
    assert res.rc != 0, res.output
    assert "cinder_nfs_snapshots_cinder_check is 'always' but %s cannot import" % missing in res.output
    assert conf.read_text() == CONF
