"""ceph_auth_client and ceph_keyring against the lab's real Ceph cluster.

The client tests (created/changed, merge, absent and bad caps) run ceph_auth_client's code path directly
(ansible_run.run_tasks_directly); the key, no_log and keyring tests run through real ansible-playbook.

* clients are created, their caps changed only when they differ (the monitors' audit log shows which
  auth commands were really sent), check mode sends nothing, absent removes;
* the key is returned only with no_log and never appears in any output, diff or result;
* keyring files: content equal to the cluster's key, owner/group/mode changes each reported, check mode
  changes nothing, idempotence;
* the mode matters: a process running as another uid (root reads anything) can or cannot use the
  keyring to connect and do I/O in the pools its caps allow, with the role's own check script.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from ansible_run import COLLECTION_ROOT, PlaybookResult, run_tasks, run_tasks_directly

CHECK_SCRIPT = COLLECTION_ROOT / "roles" / "ceph_client_keyrings" / "files" / "ceph_client_check.py"
# Sent before the check script, as the role's tasks/verify.yml does (the one classification of Ceph errors).
ERROR_KINDS = COLLECTION_ROOT / "plugins" / "module_utils" / "_ceph" / "error_kinds.py"
HOST_PYTHON = "/usr/bin/python3"
NOBODY = 65534
NOGROUP = grp.getgrnam("nogroup").gr_gid
WRITES = ("auth caps", "auth get-or-create", "auth rm", "auth add", "auth import")


def conn(ceph_lab: Any) -> Dict[str, Any]:
    return {"ceph_conf": str(ceph_lab.conf), "keyring": str(ceph_lab.admin_keyring)}


@pytest.fixture
def client(ceph_lab: Any) -> Iterator[str]:
    """A unique client id; the client is removed from the cluster afterwards."""
    name = "volsnap-test-%s" % uuid.uuid4().hex[:10]
    yield name
    ceph_lab.ceph("auth", "rm", "client." + name)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other uids can traverse (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="volsnap-keyring-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def client_conf(ceph_lab: Any, shared_dir: Path) -> Path:
    """A client-only ceph.conf (fsid + monitors) that any uid can read."""
    fsid = ceph_conf_lookup(ceph_lab, "fsid")
    mon_host = ceph_conf_lookup(ceph_lab, "mon_host")
    path = shared_dir / "ceph.conf"
    path.write_text("[global]\nfsid = %s\nmon host = %s\n" % (fsid, mon_host))
    path.chmod(0o644)
    return path


def ceph_conf_lookup(ceph_lab: Any, option: str) -> str:
    proc = subprocess.run(["ceph-conf", "-c", str(ceph_lab.conf), "--lookup", option], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=True)
    return proc.stdout.strip()


def auth_get(ceph_lab: Any, name: str) -> Dict[str, Any]:
    records = json.loads(ceph_lab.ceph("auth", "get", "client." + name, "--format", "json"))
    return records[0]


def audit_writes(ceph_lab: Any, name: str) -> List[str]:
    """The auth commands that changed client.<name>, from the monitors' audit channel (oldest first)."""
    entries = json.loads(ceph_lab.ceph("log", "last", "10000", "debug", "audit", "--format", "json"))
    found = []
    needle = '"entity": "client.%s"' % name
    for entry in entries:
        message = entry.get("message", "")
        if needle not in message or not message.endswith("dispatch"):
            continue
        for prefix in WRITES:
            if '"prefix": "%s"' % prefix in message:
                found.append(prefix)
    return found


def client_task(ceph_lab: Any, name: str, register: str, **options: Any) -> Dict[str, Any]:
    task: Dict[str, Any] = {"name": register, "volsnap.openstack.ceph_auth_client": dict(conn(ceph_lab), name=name,
                                                                                         **options),
                            "register": register}
    return task


def ok(result: PlaybookResult) -> PlaybookResult:
    assert result.rc == 0, result.output[-6000:]
    return result


RBD = {"mon": "profile rbd", "osd": "profile rbd pool=volumes"}
RBD_BOTH = {"mon": "profile rbd", "osd": "profile rbd pool=volumes, profile rbd pool=images"}


def test_client_created_then_caps_changed_only_when_different(ceph_lab: Any, client: str, tmp_path: Path) -> None:
    first = ok(run_tasks_directly(tmp_path / "1", [client_task(ceph_lab, client, "r", caps=RBD)], ["r"], diff=True))
    assert first["r"]["changed"] and first["r"]["exists"]
    assert auth_get(ceph_lab, client)["caps"] == RBD
    assert audit_writes(ceph_lab, client) == ["auth get-or-create"]

    # Same grants, other white space and order: nothing is sent.
    same = {"osd": "profile rbd  pool=volumes", "mon": "profile rbd"}
    again = ok(run_tasks_directly(tmp_path / "2", [client_task(ceph_lab, client, "r", caps=same)], ["r"]))
    assert not again["r"]["changed"] and again["r"]["commands"] == []
    assert audit_writes(ceph_lab, client) == ["auth get-or-create"]

    # Check mode with other caps: reported, not sent.
    check = ok(run_tasks_directly(tmp_path / "3", [client_task(ceph_lab, client, "r", caps=RBD_BOTH)], ["r"],
                                  check=True, diff=True))
    assert check["r"]["changed"] and check["r"]["caps"]["osd"] == RBD_BOTH["osd"]
    assert check["r"]["diff"]["before"]["caps"] == RBD and check["r"]["diff"]["after"]["caps"] == RBD_BOTH
    assert auth_get(ceph_lab, client)["caps"] == RBD
    assert audit_writes(ceph_lab, client) == ["auth get-or-create"]

    # The real change: one auth caps, and the client keeps its key.
    key_before = auth_get(ceph_lab, client)["key"]
    changed = ok(run_tasks_directly(tmp_path / "4", [client_task(ceph_lab, client, "r", caps=RBD_BOTH)], ["r"]))
    assert changed["r"]["changed"]
    assert changed["r"]["commands"] == ["ceph auth caps client.%s mon 'profile rbd' osd 'profile rbd pool=volumes, "
                                        "profile rbd pool=images'" % client]
    assert auth_get(ceph_lab, client)["caps"] == RBD_BOTH
    assert auth_get(ceph_lab, client)["key"] == key_before
    assert audit_writes(ceph_lab, client) == ["auth get-or-create", "auth caps"]
    final = ok(run_tasks_directly(tmp_path / "5", [client_task(ceph_lab, client, "r", caps=RBD_BOTH)], ["r"]))
    assert not final["r"]["changed"]
    assert audit_writes(ceph_lab, client) == ["auth get-or-create", "auth caps"]


def test_merge_adds_write_on_images_and_keeps_the_rest(ceph_lab: Any, client: str, tmp_path: Path) -> None:
    start = {"mon": "profile rbd", "osd": "profile rbd pool=volumes, profile rbd-read-only pool=images",
             "mgr": "profile rbd pool=volumes"}
    ok(run_tasks_directly(tmp_path / "1", [client_task(ceph_lab, client, "r", caps=start)], ["r"]))
    merge = {"caps": {"osd": "profile rbd pool=images"}, "caps_mode": "merge"}
    first = ok(run_tasks_directly(tmp_path / "2", [client_task(ceph_lab, client, "r", **merge)], ["r"]))
    assert first["r"]["changed"]
    assert auth_get(ceph_lab, client)["caps"] == dict(start, osd=start["osd"] + ", profile rbd pool=images")
    second = ok(run_tasks_directly(tmp_path / "3", [client_task(ceph_lab, client, "r", **merge)], ["r"]))
    assert not second["r"]["changed"]


def test_absent_and_bad_caps(ceph_lab: Any, client: str, tmp_path: Path) -> None:
    ok(run_tasks_directly(tmp_path / "1", [client_task(ceph_lab, client, "r", caps=RBD)], ["r"]))
    bad = dict(client_task(ceph_lab, client, "r", caps={"mon": "profile nosuchprofile x y"}), ignore_errors=True)
    refused = run_tasks_directly(tmp_path / "2", [bad], ["r"])
    assert refused["r"]["failed"] and "Ceph refused the caps" in refused["r"]["msg"]
    assert auth_get(ceph_lab, client)["caps"] == RBD
    check = ok(run_tasks_directly(tmp_path / "3", [client_task(ceph_lab, client, "r", state="absent")], ["r"], check=True))
    assert check["r"]["changed"]
    assert auth_get(ceph_lab, client)["caps"] == RBD
    gone = ok(run_tasks_directly(tmp_path / "4", [client_task(ceph_lab, client, "r", state="absent")], ["r"]))
    assert gone["r"]["changed"] and not gone["r"]["exists"]
    with pytest.raises(Exception):
        auth_get(ceph_lab, client)
    again = ok(run_tasks_directly(tmp_path / "5", [client_task(ceph_lab, client, "r", state="absent")], ["r"]))
    assert not again["r"]["changed"]


def test_key_only_with_no_log_and_never_printed(ceph_lab: Any, client: str, tmp_path: Path) -> None:
    refused = run_tasks(tmp_path / "1", [dict(client_task(ceph_lab, client, "r", caps=RBD, return_key=True),
                                              ignore_errors=True)], ["r"])
    assert refused["r"]["failed"] and "no_log" in refused["r"]["msg"]
    # The refusal happens before anything is sent.
    assert audit_writes(ceph_lab, client) == []
    path = tmp_path / ("ceph.client.%s.keyring" % client)
    tasks = [
        dict(client_task(ceph_lab, client, "c", caps=RBD, return_key=True), no_log=True),
        {"name": "keyring",
         "volsnap.openstack.ceph_keyring": {"path": str(path), "name": client, "key": "{{ c.key }}", "mode": "0600"},
         "register": "k"},
        {"name": "show the registered result, as careless playbooks do", "ansible.builtin.debug": {"var": "k"}},
    ]
    result = ok(run_tasks(tmp_path / "2", tasks, ["k"], diff=True, extra_args=["-vvv"]))
    key = auth_get(ceph_lab, client)["key"]
    assert path.read_text() == "[client.%s]\n\tkey = %s\n" % (client, key)
    assert key not in result.output
    assert key not in json.dumps(result["k"])


def keyring_task(path: Path, name: str, register: str, **options: Any) -> Dict[str, Any]:
    return {"name": register, "volsnap.openstack.ceph_keyring": dict(path=str(path), name=name,
                                                                     key="{{ c.key }}", **options),
            "register": register}


def meta(path: Path) -> tuple:
    info = path.lstat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_keyring_file_changes_reported_honestly(ceph_lab: Any, client: str, tmp_path: Path) -> None:
    path = tmp_path / ("ceph.client.%s.keyring" % client)
    get_key = dict(client_task(ceph_lab, client, "c", caps=RBD, return_key=True), no_log=True)

    def run(step: str, check: bool = False, **options: Any) -> PlaybookResult:
        return ok(run_tasks(tmp_path / step, [get_key, keyring_task(path, client, "k", **options)], ["k"],
                            check=check, diff=True))

    check_new = run("0", check=True, owner="root", group="nogroup", mode="0640")
    assert check_new["k"]["changed"] and check_new["k"]["changes"] == ["created"] and not path.exists()
    created = run("1", owner="root", group="nogroup", mode="0640")
    key = auth_get(ceph_lab, client)["key"]
    assert created["k"]["changes"] == ["created"]
    assert meta(path) == (0, NOGROUP, 0o640)
    assert path.read_text() == "[client.%s]\n\tkey = %s\n" % (client, key)
    assert key not in created.output

    idem = run("2", owner="root", group="nogroup", mode="0640")
    assert not idem["k"]["changed"] and idem["k"]["changes"] == []

    # Mode only: check mode reports it and changes nothing, then the real run changes it.
    check = run("3", check=True, owner="root", group="nogroup", mode="0600")
    assert check["k"]["changed"] and check["k"]["changes"] == ["mode"]
    assert meta(path) == (0, NOGROUP, 0o640)
    assert "-# mode: 0640" in check.output and "+# mode: 0600" in check.output
    mode = run("4", owner="root", group="nogroup", mode="0600")
    assert mode["k"]["changes"] == ["mode"] and meta(path) == (0, NOGROUP, 0o600)

    # Owner only.
    owner = run("5", owner="nobody", group="nogroup", mode="0600")
    assert owner["k"]["changes"] == ["owner"] and meta(path) == (NOBODY, NOGROUP, 0o600)
    assert owner["k"]["owner"] == "nobody"

    # Content only (the file was edited by hand): rewritten, keeping owner and mode.
    path.write_text("[client.%s]\n\tkey = %s\n\tcaps mon = \"allow *\"\n" % (client, key))
    content = run("6", owner="nobody", group="nogroup", mode="0600")
    assert content["k"]["changes"] == ["content"] and meta(path) == (NOBODY, NOGROUP, 0o600)
    assert path.read_text() == "[client.%s]\n\tkey = %s\n" % (client, key)
    assert key not in content.output

    # Removal, check mode first.
    absent = {"name": "k", "volsnap.openstack.ceph_keyring": {"path": str(path), "name": client, "state": "absent"},
              "register": "k"}
    check_rm = ok(run_tasks(tmp_path / "7", [absent], ["k"], check=True))
    assert check_rm["k"]["changes"] == ["removed"] and path.exists()
    removed = ok(run_tasks(tmp_path / "8", [absent], ["k"]))
    assert removed["k"]["changes"] == ["removed"] and not path.exists()
    assert not ok(run_tasks(tmp_path / "9", [absent], ["k"]))["k"]["changed"]
    assert list(tmp_path.glob(".ceph.client.*.tmp")) == []


def run_check(conf: Path, name: str, keyring: Path, uid: int, gid: int, **pools: List[str]) -> Dict[str, Any]:
    """The role's check script run as uid/gid (no supplementary groups), as the service would run."""
    args = json.dumps(dict(conf=str(conf), name=name, keyring=str(keyring), timeout=20, tag=uuid.uuid4().hex[:8],
                           **pools))
    argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups", "--", HOST_PYTHON, "-", args]
    script = ERROR_KINDS.read_bytes().rstrip() + b"\n" + CHECK_SCRIPT.read_bytes()
    proc = subprocess.run(argv, input=script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                          timeout=120)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return json.loads(proc.stdout)


def test_mode_matters_for_another_uid(ceph_lab: Any, client: str, tmp_path: Path, shared_dir: Path,
                                      client_conf: Path) -> None:
    path = shared_dir / ("ceph.client.%s.keyring" % client)
    get_key = dict(client_task(ceph_lab, client, "c", caps=RBD, return_key=True), no_log=True)
    pools = {"write": [ceph_lab.volumes_pool], "deny_write": [ceph_lab.images_pool]}

    def converge(step: str, **options: Any) -> None:
        ok(run_tasks(tmp_path / step, [get_key, keyring_task(path, client, "k", **options)], ["k"]))

    # 0640 root:nogroup: a member of nogroup can use it, others cannot.
    converge("1", owner="root", group="nogroup", mode="0640")
    member = run_check(client_conf, client, path, NOBODY, NOGROUP, **pools)
    assert member["ok"] and member["connected"], member
    assert [c["outcome"] for c in member["checks"]] == ["allowed", "denied"]
    outsider = run_check(client_conf, client, path, NOBODY, 1, **pools)
    assert not outsider["connected"] and "not readable" in outsider["error"], outsider

    # 0600 root:nogroup: the group loses access.
    converge("2", owner="root", group="nogroup", mode="0600")
    assert not run_check(client_conf, client, path, NOBODY, NOGROUP, **pools)["connected"]

    # 0600 owned by the service user: it can.
    converge("3", owner="nobody", group="nogroup", mode="0600")
    owner = run_check(client_conf, client, path, NOBODY, 1, **pools)
    assert owner["ok"], owner

    # A caps change reaches the next connection: write on images is now allowed.
    ok(run_tasks(tmp_path / "4", [client_task(ceph_lab, client, "r", caps=RBD_BOTH)], ["r"]))
    after = run_check(client_conf, client, path, NOBODY, 1, write=[ceph_lab.volumes_pool, ceph_lab.images_pool])
    assert after["ok"], after

    # A stale key (the client was removed and created again) no longer connects.
    ceph_lab.ceph("auth", "rm", "client." + client)
    ceph_lab.ceph("auth", "get-or-create", "client." + client, "mon", "profile rbd")
    stale = run_check(client_conf, client, path, NOBODY, 1, **pools)
    assert not stale["connected"], stale
    assert os.path.exists(path)


# ---------------------------------------------------------------------------------------------
# issue 12 item 10: no key in any output, old keys included; owner/group and mode changes never widen access

def fake_key() -> str:
    """A key as cephx writes it (type 1, created time, length 16, secret), never sent to a cluster."""
    import base64
    return base64.b64encode(b"\x01\x00" + os.urandom(10) + b"\x10\x00" + os.urandom(16)).decode()


def hostile_keyring(name: str, keys: List[str]) -> bytes:
    """Every way a key line can hide its key from a strict reader, each with its own old key."""
    lines = [
        "[client.%s]" % name,
        "\tkey = %s ; rotated" % keys[0],
        "\tkey = %s # rotated 2026-01-01" % keys[1],
        "\tkey = %s extra words" % keys[2],
        '\tkey = "%s"' % keys[3],
        "key=%s" % keys[4],
        "   KEY   :   %s   " % keys[5],
        "# key = %s" % keys[6],
        "; the old key was %s" % keys[7],
        "[client.other]",
        "\tkey = %s\r" % keys[8],
        "[]",
        "\tkey = %s" % keys[9],
        "\tkey = AQD%%%%notbase64%s" % keys[10][:12],
        "\tauid = %s" % keys[11],
        '\tcaps mon = "allow r %s"' % keys[12],
    ]
    return ("\n".join(lines) + "\n").encode()


def test_no_old_key_in_any_output(tmp_path: Path) -> None:
    name = "volsnap-secrets"
    path = tmp_path / ("ceph.client.%s.keyring" % name)
    old = [fake_key() for dummy in range(13)]
    new = fake_key()
    content = hostile_keyring(name, old)
    path.write_bytes(content)
    path.chmod(0o640)
    options = {"path": str(path), "name": name, "key": new, "group": "nogroup", "mode": "0600"}
    task = {"name": "k", "volsnap.openstack.ceph_keyring": options, "register": "k"}
    show = {"name": "show", "ansible.builtin.debug": {"var": "k"}}
    secrets = old + [new, old[10][:12]]

    check = ok(run_tasks(tmp_path / "check", [task, show], ["k"], check=True, diff=True, extra_args=["-vvv"]))
    assert check["k"]["changed"] and check["k"]["changes"] == ["content", "group", "mode"]
    assert path.read_bytes() == content and meta(path) == (0, 0, 0o640)
    assert "<hidden, another key>" in check.output and "<hidden text>" in check.output
    for secret in secrets:
        assert secret not in check.output and secret not in json.dumps(check.results)

    real = ok(run_tasks(tmp_path / "real", [task, show], ["k"], diff=True, extra_args=["-vvv"]))
    for secret in secrets:
        assert secret not in real.output and secret not in json.dumps(real.results)
    assert path.read_text() == "[client.%s]\n\tkey = %s\n" % (name, new)
    assert meta(path) == (0, NOGROUP, 0o600)


def test_owner_group_and_mode_together(tmp_path: Path) -> None:
    name = "volsnap-modes"
    key = fake_key()
    path = tmp_path / ("ceph.client.%s.keyring" % name)

    def run(step: str, check: bool = False, **options: Any) -> PlaybookResult:
        task = {"name": "k", "volsnap.openstack.ceph_keyring": dict(path=str(path), name=name, key=key, **options),
                "register": "k"}
        return ok(run_tasks(tmp_path / step, [task], ["k"], check=check, diff=True))

    run("1", owner="root", group="root", mode="0640")
    assert meta(path) == (0, 0, 0o640)
    # 0640 root:root -> 0600 root:nogroup (through 0600 root:root, never 0640 root:nogroup)
    check = run("2", check=True, owner="root", group="nogroup", mode="0600")
    assert check["k"]["changes"] == ["group", "mode"] and meta(path) == (0, 0, 0o640)
    narrowed = run("3", owner="root", group="nogroup", mode="0600")
    assert narrowed["k"]["changes"] == ["group", "mode"] and meta(path) == (0, NOGROUP, 0o600)
    assert not run("4", owner="root", group="nogroup", mode="0600")["k"]["changed"]
    # 0600 root:nogroup -> 0660 nobody:root (owner, group and mode at once)
    widened = run("5", owner="nobody", group="root", mode="0660")
    assert widened["k"]["changes"] == ["owner", "group", "mode"] and meta(path) == (NOBODY, 0, 0o660)
    assert widened["k"]["owner"] == "nobody" and widened["k"]["group"] == "root" and widened["k"]["mode"] == "0660"
    assert path.read_text() == "[client.%s]\n\tkey = %s\n" % (name, key)
    assert not run("6", owner="nobody", group="root", mode="0660")["k"]["changed"]
    assert list(tmp_path.glob(".ceph.client.*.tmp")) == []
