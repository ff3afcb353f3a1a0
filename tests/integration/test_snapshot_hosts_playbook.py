"""The operator playbook volsnap.openstack.snapshot_hosts over three network-namespace hosts (tests/hosts/hosts.sh:
each its own root filesystem, sshd and share), reached over real ssh, with real qemu-img on each host.

Each host gets its own share (a different directory per host) and its own volumes in the inventory; the playbook
runs by its FQCN (imported by a small wrapper that then reads every share back): check mode changes nothing, a run
creates every snapshot (one task per host), a rerun reports no change, and state=absent deletes them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml

from ansible_run import COLLECTION_ROOT, ansible_playbook, collections_path

HOSTS_SH = COLLECTION_ROOT / "tests" / "hosts" / "hosts.sh"
HOSTS_DIR = Path(os.environ.get("VOLSNAP_HOSTS_DIR", "/var/tmp/volsnap-hosts"))
HOSTS = ["stor1", "stor2", "stor3"]
VOLUMES_PER_HOST = 3


@pytest.fixture(scope="module")
def scenario() -> Iterator[Path]:
    """Three namespace hosts started with tests/hosts/hosts.sh (the rootfs has qemu-utils); stopped at the end."""
    name = f"snaphosts-{uuid.uuid4().hex[:6]}"
    proc = subprocess.run(["bash", str(HOSTS_SH), "start", name, str(len(HOSTS)), "--names", ",".join(HOSTS)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, check=False)
    if proc.returncode != 0:
        subprocess.run(["bash", str(HOSTS_SH), "stop", name], capture_output=True, check=False)
        pytest.fail(f"tests/hosts/hosts.sh start {name} failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}",
                    pytrace=False)
    try:
        yield HOSTS_DIR / "scenarios" / name / "inventory.yml"
    finally:
        subprocess.run(["bash", str(HOSTS_SH), "stop", name], capture_output=True, check=False, timeout=120)


class Runner:
    def __init__(self, workdir: Path, inventory: Path) -> None:
        self.workdir = workdir
        self.inventory = inventory
        self.env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR="1",
                        ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_HOST_KEY_CHECKING="1", ANSIBLE_PIPELINING="1",
                        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"), ANSIBLE_DEPRECATION_WARNINGS="0")

    def run(self, playbook: Any, *args: str, ok: bool = True) -> str:
        if not isinstance(playbook, str):
            path = self.workdir / f"play-{uuid.uuid4().hex[:6]}.yml"
            path.write_text(yaml.safe_dump(playbook, sort_keys=False))
            playbook = str(path)
        argv = [ansible_playbook(), "-i", str(self.inventory), "-i", str(self.workdir / "volumes.yml"), playbook,
                "--forks", "3", *args]
        proc = subprocess.run(argv, cwd=str(self.workdir), env=self.env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
        if ok:
            assert proc.returncode == 0, proc.stdout[-6000:]
        return proc.stdout


def recap(output: str) -> Dict[str, Dict[str, int]]:
    found = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return found


def read_back(tag: str, workdir: Path) -> List[Dict[str, Any]]:
    """Tasks that read every host's share (files, .info contents, qemu-img's view of each chain) into
    <workdir>/<tag>-<host>.json."""
    share = "{{ snapshot_hosts_share }}"
    return [
        {"name": "list the share", "ansible.builtin.find": {"paths": share, "hidden": True, "file_type": "any"},
         "register": "listed"},
        {"name": "qemu-img's view of each volume", "ansible.builtin.command": {
            "argv": ["qemu-img", "info", "-U", "--output=json", "--backing-chain",
                     "{{ snapshot_hosts_share }}/volume-{{ item.volume_id }}{{ '.' + item.snapshot_id "
                     "if (snapshot_hosts_share + '/volume-' + item.volume_id + '.' + item.snapshot_id) in "
                     "(listed.files | map(attribute='path')) else '' }}"]},
         "loop": "{{ snapshot_hosts_volumes }}", "register": "chains", "changed_when": False,
         "check_mode": False},
        {"name": "the .info files", "ansible.builtin.slurp": {"src": "{{ item }}"},
         "loop": "{{ listed.files | map(attribute='path') | select('match', '.*\\.info$') | list }}",
         "register": "infos"},
        {"name": "to the controller", "delegate_to": "localhost", "check_mode": False, "become": False,
         "changed_when": False, "diff": False,
         "ansible.builtin.copy": {"dest": f"{workdir}/{tag}-{{{{ inventory_hostname }}}}.json", "mode": "0600",
                                  "content": "{{ {'files': listed.files | items2dict(key_name='path', "
                                             "value_name='mtime'), 'chains': chains.results | "
                                             "map(attribute='stdout') | map('from_json') | list, 'infos': "
                                             "infos.results | items2dict(key_name='item', value_name='content') "
                                             "} | to_json }}"}},
    ]


def load(tag: str, workdir: Path) -> Dict[str, Dict[str, Any]]:
    views = {}
    for host in HOSTS:
        view = json.loads((workdir / f"{tag}-{host}.json").read_text())
        view["infos"] = {os.path.basename(k): json.loads(__import__("base64").b64decode(v)) for k, v in
                         view["infos"].items()}
        views[host] = view
    return views


def test_snapshot_hosts_over_three_namespace_hosts(scenario: Path, tmp_path: Path) -> None:
    volumes = {host: [{"volume_id": str(uuid.uuid4()), "snapshot_id": str(uuid.uuid4())}
                      for _i in range(VOLUMES_PER_HOST)] for host in HOSTS}
    (tmp_path / "volumes.yml").write_text(yaml.safe_dump({"cinder_volume": {"hosts": {
        host: {"snapshot_hosts_share": f"/srv/share-{host}", "snapshot_hosts_volumes": volumes[host]}
        for host in HOSTS}}}))
    runner = Runner(tmp_path, scenario)
    # Each host makes its own share and raw volumes with its own qemu-img, then the share is read back.
    runner.run([{"hosts": "cinder_volume", "become": True, "gather_facts": False, "tasks": [
        {"name": "share", "ansible.builtin.file": {"path": "{{ snapshot_hosts_share }}", "state": "directory",
                                                   "mode": "0755"}},
        {"name": "volumes", "ansible.builtin.command": {
            "argv": ["qemu-img", "create", "-q", "-f", "raw",
                     "{{ snapshot_hosts_share }}/volume-{{ item.volume_id }}", "64M"],
            "creates": "{{ snapshot_hosts_share }}/volume-{{ item.volume_id }}"},
         "loop": "{{ snapshot_hosts_volumes }}"},
    ] + read_back("before", tmp_path)}])
    before = load("before", tmp_path)

    wrapper = [{"import_playbook": "volsnap.openstack.snapshot_hosts"},
               {"hosts": "cinder_volume", "become": True, "gather_facts": False,
                "tasks": read_back("{{ tag }}", tmp_path)}]
    checked = runner.run(wrapper, "--check", "--diff", "-e", "tag=checked")
    assert all(recap(checked)[h]["changed"] == 1 and recap(checked)[h]["failed"] == 0 for h in HOSTS), checked
    assert checked.count('"active": "volume-') >= len(HOSTS) * VOLUMES_PER_HOST  # one diff per volume
    assert load("checked", tmp_path) == before  # check mode changed nothing on any host

    created = runner.run(wrapper, "-e", "tag=created")
    assert all(recap(created)[h]["changed"] == 1 and recap(created)[h]["failed"] == 0 for h in HOSTS), created
    assert f"{VOLUMES_PER_HOST} of {VOLUMES_PER_HOST} volumes changed (present)" in created
    views = load("created", tmp_path)
    for host in HOSTS:
        for volume, chain in zip(volumes[host], views[host]["chains"]):
            overlay = f"volume-{volume['volume_id']}.{volume['snapshot_id']}"
            assert views[host]["infos"][f"volume-{volume['volume_id']}.info"] == {
                "active": overlay, volume["snapshot_id"]: overlay}
            # qemu-img on the host: the overlay is qcow2 on the raw volume, with a relative backing name
            assert [layer["format"] for layer in chain] == ["qcow2", "raw"]
            assert chain[0]["filename"] == f"/srv/share-{host}/{overlay}"
            assert chain[0]["backing-filename"] == f"volume-{volume['volume_id']}"
        other = [h for h in HOSTS if h != host]
        assert not any(path.startswith(f"/srv/share-{o}") for o in other for path in views[host]["files"])

    again = runner.run(wrapper, "-e", "tag=again")
    assert all(recap(again)[h]["changed"] == 0 and recap(again)[h]["failed"] == 0 for h in HOSTS), again
    assert load("again", tmp_path) == views

    deleted = runner.run(wrapper, "-e", "tag=deleted", "-e", "snapshot_hosts_state=absent")
    assert all(recap(deleted)[h]["changed"] == 1 and recap(deleted)[h]["failed"] == 0 for h in HOSTS), deleted
    for host, view in load("deleted", tmp_path).items():
        for volume, chain in zip(volumes[host], view["chains"]):
            assert view["infos"][f"volume-{volume['volume_id']}.info"] == {"active": f"volume-{volume['volume_id']}"}
            assert [layer["format"] for layer in chain] == ["raw"]
            assert not any(path.endswith(volume["snapshot_id"]) for path in view["files"])
