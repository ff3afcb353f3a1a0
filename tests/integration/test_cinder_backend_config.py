"""cinder_backend_config through the real ansible-playbook: check mode, diff, idempotence, attributes, errors."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from pathlib import Path

from ansible_run import run_tasks

NFS = "cinder.volume.drivers.nfs.NfsDriver"
CONF = (
    "# managed by hand\n"
    "[DEFAULT]\n"
    "enabled_backends = nfs-a,lvm,nfs-b\n"
    "\n"
    "[lvm]\n"
    "volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver\n"
    "\n"
    "[nfs-a]\n"
    "volume_driver = cinder.volume.drivers.nfs.NfsDriver\n"
    "nfs_snapshot_support = False  \n"
    "# keep me\n"
    "\n"
    "[nfs-b]\n"
    "volume_driver: cinder.volume.drivers.nfs.NfsDriver\n"
    "nfs_mount_options = vers=4.1,\n"
    "  proto=tcp\n"
)
WANTED = {"nfs_snapshot_support": True, "nfs_qcow2_volumes": True, "nas_secure_file_operations": "false"}


def task(path: Path, register: str, **params):
    args = {"path": str(path)}
    args.update(params)
    return {"name": register, "volsnap.openstack.cinder_backend_config": args, "register": register,
            "ignore_errors": True}


def write_conf(tmp_path: Path, text: str = CONF, mode: int = 0o640) -> Path:
    path = tmp_path / "cinder.conf"
    path.write_bytes(text.encode())
    os.chmod(path, mode)
    return path


def test_check_mode_diff_then_apply_then_idempotent(tmp_path: Path) -> None:
    path = write_conf(tmp_path)
    before = path.read_bytes()
    inode = path.stat().st_ino
    res = run_tasks(tmp_path, [task(path, "r", volume_driver=[NFS], set=WANTED)], ["r"], check=True, diff=True)
    r = res["r"]
    assert res.rc == 0, res.output
    assert r["changed"] and r["content_changed"]
    assert path.read_bytes() == before and path.stat().st_ino == inode
    assert r["sections"] == ["nfs-a", "nfs-b"]
    assert r["section_values"]["nfs-b"] == {
        "nfs_snapshot_support": "true", "nfs_qcow2_volumes": "true", "nas_secure_file_operations": "false"}
    assert r["diff"][0]["before"] == CONF
    assert "nfs_snapshot_support = true\nnfs_qcow2_volumes = true\nnas_secure_file_operations = false\n# keep me" \
        in r["diff"][0]["after"]
    assert "--- before: %s (content)" % path in res.output

    res = run_tasks(tmp_path, [task(path, "r", volume_driver=[NFS], set=WANTED)], ["r"])
    assert res.rc == 0, res.output
    r2 = res["r"]
    assert r2["changed"]
    assert path.read_text() == r["diff"][0]["after"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [c["option"] for c in r2["changes"]] == ["nfs_snapshot_support", "nfs_qcow2_volumes",
                                                    "nas_secure_file_operations"] * 2
    # the lines that were not edited are byte for byte the same, in the same order
    after = path.read_text()
    for line in ("# managed by hand\n", "[lvm]\nvolume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver\n\n",
                 "volume_driver: cinder.volume.drivers.nfs.NfsDriver\nnfs_mount_options = vers=4.1,\n  proto=tcp\n"):
        assert line in after

    res = run_tasks(tmp_path, [task(path, "r", volume_driver=[NFS], set=WANTED)], ["r"], check=True)
    assert res.rc == 0 and not res["r"]["changed"], res.output
    res = run_tasks(tmp_path, [task(path, "r", volume_driver=[NFS], set=WANTED)], ["r"])
    assert res.rc == 0 and not res["r"]["changed"], res.output
    assert path.read_text() == after


def test_owner_group_mode_reported_and_set(tmp_path: Path) -> None:
    path = write_conf(tmp_path, mode=0o644)
    group = grp.getgrgid(os.getgid()).gr_name
    owner = pwd.getpwuid(os.getuid()).pw_name
    params = dict(sections=["nfs-a"], set={"nfs_snapshot_support": False}, mode="0640", owner=owner, group=group)
    res = run_tasks(tmp_path, [task(path, "r", **params)], ["r"], check=True, diff=True)
    r = res["r"]
    assert res.rc == 0, res.output
    # content already right (False), only the mode differs: changed, content unchanged, nothing done in check mode
    assert r["changed"] and not r["content_changed"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert r["diff"][0]["before"] == {"mode": "0644"} and r["diff"][0]["after"] == {"mode": "0640"}
    res = run_tasks(tmp_path, [task(path, "r", **params)], ["r"])
    assert res.rc == 0 and res["r"]["changed"], res.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    res = run_tasks(tmp_path, [task(path, "r", **params)], ["r"])
    assert res.rc == 0 and not res["r"]["changed"], res.output


def test_backup_and_symlink_target(tmp_path: Path) -> None:
    real = write_conf(tmp_path)
    link = tmp_path / "link.conf"
    link.symlink_to(real)
    res = run_tasks(tmp_path, [task(link, "r", sections=["nfs-a"], set={"nfs_qcow2_volumes": True}, backup=True)],
                    ["r"])
    r = res["r"]
    assert res.rc == 0, res.output
    assert link.is_symlink()
    assert r["path"] == str(real)
    assert Path(r["backup_file"]).read_text() == CONF
    assert "nfs_qcow2_volumes = true" in real.read_text()


def test_errors_are_clear_and_change_nothing(tmp_path: Path) -> None:
    path = write_conf(tmp_path)
    bad = tmp_path / "bad.conf"
    bad.write_text("[DEFAULT]\n  indented\n")
    tasks = [
        task(tmp_path / "nope.conf", "missing", volume_driver=[NFS], set=WANTED),
        task(path, "nosection", sections=["nfs-x"], set=WANTED),
        task(path, "nodriver", volume_driver=["cinder.volume.drivers.rbd.RBDDriver"], set=WANTED),
        task(path, "wrongdriver", sections=["lvm"], volume_driver=[NFS], set=WANTED),
        task(bad, "unparsable", sections=["DEFAULT"], set={"a": 1}),
        task(path, "noselector", set=WANTED),
    ]
    res = run_tasks(tmp_path, tasks, ["missing", "nosection", "nodriver", "wrongdriver", "unparsable",
                                      "noselector"])
    assert "does not exist" in res["missing"]["msg"]
    assert "section [nfs-x] does not exist" in res["nosection"]["msg"]
    assert res["nosection"]["available_sections"] == ["DEFAULT", "lvm", "nfs-a", "nfs-b"]
    assert "no enabled backend" in res["nodriver"]["msg"]
    assert "section [lvm] has volume_driver" in res["wrongdriver"]["msg"]
    assert "line 2: unexpected continuation line" in res["unparsable"]["msg"]
    assert "one of the following is required" in res["noselector"]["msg"]
    for name in res.results:
        assert res[name]["failed"] and not res[name]["changed"]
    assert path.read_text() == CONF
    assert bad.read_text() == "[DEFAULT]\n  indented\n"


def test_null_fallback_section_disables_the_fallback(tmp_path: Path) -> None:
    """Ansible turns an explicit null for a str option into ''; both mean 'no fallback section'."""
    path = write_conf(tmp_path, CONF + "\n[backend_defaults]\nnfs_qcow2_volumes = true\n")
    res = run_tasks(tmp_path, [
        task(path, "with_fallback", sections=["nfs-a"], query=["nfs_qcow2_volumes"]),
        task(path, "no_fallback", sections=["nfs-a"], query=["nfs_qcow2_volumes"], fallback_section=None),
    ], ["with_fallback", "no_fallback"])
    assert res.rc == 0, res.output
    assert not res["no_fallback"].get("failed"), res["no_fallback"]
    assert res["with_fallback"]["fallback_values"] == {"nfs_qcow2_volumes": "true"}
    assert res["no_fallback"]["fallback_values"] == {}


# ---------------------------------------------------------------------------------------------
# issue 12 item 10: secrets masked in diff and results; a non-UTF-8 file refused

SECRET_CONF = (
    "[DEFAULT]\n"
    "enabled_backends = nfs-a\n"
    "transport_url = rabbit://openstack:RabbitPw7@127.0.0.1:5672/\n"
    "#admin_password = CommentedPw7\n"
    "[database]\n"
    "connection = postgresql+psycopg2://cinder:DbPw7@127.0.0.1/cinder\n"
    "[keystone_authtoken]\n"
    "username = cinder\n"
    "password = KeystonePw7\n"
    "memcache_secret_key = MemcacheSecret7\n"
    "[nfs-a]\n"
    "volume_driver = cinder.volume.drivers.nfs.NfsDriver\n"
    "san_password = SanPw7\n"
)
OLD_SECRETS = ["RabbitPw7", "CommentedPw7", "DbPw7", "KeystonePw7", "MemcacheSecret7", "SanPw7"]
NEW_SECRETS = ["NewKeystonePw8", "NewRabbitPw8", "NewSanPw8"]


def test_secrets_masked_in_diff_and_results(tmp_path: Path) -> None:
    path = write_conf(tmp_path, SECRET_CONF, mode=0o600)
    tasks = [
        task(path, "ks", sections=["keystone_authtoken"], set={"password": "NewKeystonePw8"},
             query=["memcache_secret_key", "username"], fallback_section=None),
        task(path, "mq", sections=["DEFAULT"], set={"transport_url": "rabbit://openstack:NewRabbitPw8@127.0.0.1:5672/"},
             query=["admin_password"], fallback_section=None),
        task(path, "nfs", volume_driver=[NFS], set={"san_password": "NewSanPw8", "nfs_snapshot_support": True},
             query=["volume_driver"]),
        {"name": "show", "ansible.builtin.debug": {"msg": "{{ ks }} {{ mq }} {{ nfs }}"}},
    ]
    check = run_tasks(tmp_path / "check", tasks, ["ks", "mq", "nfs"], check=True, diff=True, extra_args=["-vvv"])
    assert check.rc == 0, check.output
    text = check.output + json.dumps(check.results)
    for secret in OLD_SECRETS + NEW_SECRETS:
        assert secret not in text, secret
    assert path.read_text() == SECRET_CONF
    # the masked diff still shows which lines change
    assert "-password = <hidden>" in check.output and "+password = <hidden, changed>" in check.output
    assert "-transport_url = rabbit://<hidden>@127.0.0.1:5672/" in check.output
    assert "+transport_url = rabbit://<hidden, changed>@127.0.0.1:5672/" in check.output
    assert "+san_password = <hidden, changed>" in check.output
    assert check["ks"]["changes"] == [{"section": "keystone_authtoken", "option": "password", "before": "<hidden>",
                                       "after": "<hidden, changed>"}]
    assert check["ks"]["section_values"]["keystone_authtoken"] == {
        "password": "<hidden>", "memcache_secret_key": "<hidden>",
        "username": "cinder"}
    assert check["nfs"]["section_values"]["nfs-a"]["volume_driver"] == NFS

    real = run_tasks(tmp_path / "real", tasks, ["ks", "mq", "nfs"], diff=True, extra_args=["-vvv"])
    assert real.rc == 0, real.output
    text = real.output + json.dumps(real.results)
    for secret in OLD_SECRETS + NEW_SECRETS:
        assert secret not in text, secret
    after = path.read_text()
    assert "password = NewKeystonePw8\n" in after and "rabbit://openstack:NewRabbitPw8@127.0.0.1:5672/" in after
    assert "san_password = NewSanPw8\n" in after and "memcache_secret_key = MemcacheSecret7\n" in after
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secret_in_an_unparsable_line_not_quoted(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "[DEFAULT]\npassword = x\n\n  StrayPw9\n")
    res = run_tasks(tmp_path, [task(path, "r", sections=["DEFAULT"], set={"debug": True})], ["r"], extra_args=["-vvv"])
    assert res["r"]["failed"] and "line 4: unexpected continuation line" in res["r"]["msg"]
    assert "StrayPw9" not in res.output


def test_non_utf8_file_refused(tmp_path: Path) -> None:
    data = b"[DEFAULT]\nenabled_backends = nfs-a\n# caf\xe9\n[nfs-a]\nvolume_driver = " + NFS.encode() + b"\n"
    path = tmp_path / "cinder.conf"
    path.write_bytes(data)
    path.chmod(0o640)
    before = path.stat()
    for check in (True, False):
        res = run_tasks(tmp_path / str(check), [task(path, "r", volume_driver=[NFS], set=WANTED)], ["r"],
                        check=check, diff=True)
        r = res["r"]
        assert r["failed"] and not r["changed"], r
        assert str(path) in r["msg"] and "not UTF-8" in r["msg"] and "line 3" in r["msg"]
        assert "iconv" in r["msg"] and "Nothing was changed" in r["msg"]
        after = path.stat()
        assert path.read_bytes() == data
        assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (before.st_ino, before.st_mtime_ns, before.st_mode)
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["cinder.conf"]


def test_group_and_mode_together_never_wider(tmp_path: Path) -> None:
    """0640 root:root -> 0600 root:nogroup goes through 0600 root:root (never 0640 root:nogroup); the diff shows the
    mode the file had."""
    path = write_conf(tmp_path, SECRET_CONF, mode=0o640)
    os.chown(path, 0, 0)
    params = dict(sections=["nfs-a"], query=["volume_driver"], owner="root", group="nogroup", mode="0600")
    check = run_tasks(tmp_path / "check", [task(path, "r", **params)], ["r"], check=True, diff=True)
    assert check.rc == 0 and check["r"]["changed"], check.output
    assert (path.stat().st_gid, stat.S_IMODE(path.stat().st_mode)) == (0, 0o640)
    res = run_tasks(tmp_path / "real", [task(path, "r", **params)], ["r"], diff=True)
    assert res.rc == 0 and res["r"]["changed"], res.output
    nogroup = grp.getgrnam("nogroup").gr_gid
    assert (path.stat().st_uid, path.stat().st_gid, stat.S_IMODE(path.stat().st_mode)) == (0, nogroup, 0o600)
    attrs = res["r"]["diff"][0]
    assert attrs["before"]["mode"] == "0640" and attrs["after"]["mode"] == "0600", attrs
    assert path.read_text() == SECRET_CONF
    again = run_tasks(tmp_path / "again", [task(path, "r", **params)], ["r"])
    assert again.rc == 0 and not again["r"]["changed"], again.output
