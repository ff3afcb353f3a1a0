"""module_defaults through the collection's action groups (meta/runtime.yml), with real ansible-playbook.

Each group's defaults must reach every module of the group: a chain bound set once for the ``nfs``
group, the cloud set once for the ``openstack`` group (against the lab's real Keystone and Cinder), the
Ceph connection set once for the ``ceph`` group (against the lab's real cluster). Each case also shows
the default is really used: a wrong default makes the same task fail.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from ansible_run import run_tasks


def grouped(group: str, defaults: Dict[str, Any], tasks: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{"name": f"with group/volsnap.openstack.{group} defaults", "block": tasks,
             "module_defaults": {f"group/volsnap.openstack.{group}": defaults}}]


def test_nfs_group_sets_chain_bounds_for_every_chain_module(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(share / "base.raw"), "1M"], check=True)
    for upper, lower, fmt in (("mid.qcow2", "base.raw", "raw"), ("top.qcow2", "mid.qcow2", "qcow2")):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", lower, "-F", fmt, str(share / upper)],
                       check=True)
    tasks = [{"name": "read", "volsnap.openstack.qcow2_chain_info": {"path": str(share / "top.qcow2"),
                                                                     "fail_on_unsafe": False},
              "register": "info"}]
    bounded = run_tasks(tmp_path / "bounded", grouped("nfs", {"max_depth": 2}, tasks), ["info"])
    assert bounded.rc == 0, bounded.output[-4000:]
    codes = [p["code"] for p in bounded["info"]["problems"]]
    assert "chain_too_deep" in codes and bounded["info"]["depth"] == 2
    deep_enough = run_tasks(tmp_path / "deep", grouped("nfs", {"max_depth": 3}, tasks), ["info"])
    assert deep_enough.rc == 0, deep_enough.output[-4000:]
    assert "chain_too_deep" not in [p["code"] for p in deep_enough["info"]["problems"]]
    assert deep_enough["info"]["depth"] == 3


def test_nfs_group_sets_share_and_bounds_for_the_share_audit(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    vol, s1, s2 = "volume-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "11111111-2222-4333-8444-555555555555", \
        "66666666-7777-4888-9999-aaaaaaaaaaaa"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(share / vol), "1M"], check=True)
    for upper, lower, fmt in ((f"{vol}.{s1}", vol, "raw"), (f"{vol}.{s2}", f"{vol}.{s1}", "qcow2")):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", lower, "-F", fmt, str(share / upper)],
                       check=True)
    (share / f"{vol}.info").write_text('{"active": "%s.%s", "%s": "%s.%s", "%s": "%s.%s"}'
                                       % (vol, s2, s1, vol, s1, s2, vol, s2))
    task = [{"name": "audit", "volsnap.openstack.nfs_share_audit": {}, "register": "audit"}]
    bounded = run_tasks(tmp_path / "bounded", grouped("nfs", {"share": str(share), "max_depth": 2}, task), ["audit"])
    assert bounded.rc == 0, bounded.output[-4000:]
    [volume] = bounded["audit"]["volumes"]
    assert volume["chain_safe"] is False and "chain_too_deep" in [p["code"] for p in volume["problems"]]
    deep_enough = run_tasks(tmp_path / "deep", grouped("nfs", {"share": str(share), "max_depth": 3}, task), ["audit"])
    assert deep_enough.rc == 0, deep_enough.output[-4000:]
    assert deep_enough["audit"]["volumes"][0]["chain_safe"] is True


def test_openstack_group_sets_the_cloud(tmp_path: Path, openstack_lab: Any) -> None:
    task = [{"name": "list", "volsnap.openstack.manageable_snapshot_info": {"host": openstack_lab.cinder_host},
             "register": "listing", "ignore_errors": True}]
    env = dict(openstack_lab.env(), OS_CLOUD="")
    good = run_tasks(tmp_path / "good", grouped("openstack", {"cloud": openstack_lab.cloud}, task), ["listing"],
                     python=sys.executable, env_extra=env)
    assert good.rc == 0 and not good["listing"].get("failed"), good.output[-4000:]
    assert isinstance(good["listing"]["manageable_snapshots"], list)
    bad = run_tasks(tmp_path / "bad", grouped("openstack", {"cloud": "volsnap-no-such-cloud"}, task), ["listing"],
                    python=sys.executable, env_extra=env)
    assert bad["listing"].get("failed"), bad.output[-4000:]
    assert "volsnap-no-such-cloud" in bad["listing"]["msg"]


def test_ceph_group_sets_the_connection(tmp_path: Path, ceph_lab: Any) -> None:
    task = [{"name": "client", "volsnap.openstack.ceph_auth_client": {
        "name": "volsnap-groups", "caps": {"mon": "profile rbd"}}, "register": "client", "ignore_errors": True}]
    defaults = {"ceph_conf": str(ceph_lab.conf), "keyring": str(ceph_lab.admin_keyring)}
    good = run_tasks(tmp_path / "good", grouped("ceph", defaults, task), ["client"], check=True)
    assert good.rc == 0 and not good["client"].get("failed"), good.output[-4000:]
    assert good["client"]["changed"] and good["client"]["exists"]
    missing = dict(defaults, ceph_conf=str(tmp_path / "no-such-ceph.conf"))
    bad = run_tasks(tmp_path / "bad", grouped("ceph", missing, task), ["client"], check=True)
    assert bad["client"].get("failed"), bad.output[-4000:]
    assert "no-such-ceph.conf" in bad["client"]["msg"]
