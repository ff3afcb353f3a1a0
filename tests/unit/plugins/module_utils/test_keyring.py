# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _keyring: rendering, redaction, comparison and the atomic write of keyring files."""

from __future__ import annotations

import json
import os
import stat
from typing import List, Optional, Tuple

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils import _keyring as kr
from ansible_collections.volsnap.openstack.plugins.module_utils._errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._keyring import (
    HIDDEN,
    HIDDEN_NEW,
    KeyringRequest,
    apply_keyring,
    inspect_file,
    keys_of,
    parse_mode,
    plan_keyring,
    redact,
    parse_keyring,
    render_keyring,
    same_keyring,
    stale_temporaries,
    validate_key,
    write_keyring,
)

KEY = 'AQDsgQJr38aeOhAAQgifowO2RQtpIRCueR6xVQ=='
KEY2 = 'AQDtgQJrK3lzABAAA7q3/uIZ3NMxvJTgm5mVhA=='
NOBODY = 65534  # uid of nobody and gid of nogroup on Debian


class Attributes:
    """Stands in for AnsibleModule.set_fs_attributes_if_different: applies and reports like it (no check mode)."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, Optional[str], Optional[str], str]] = []

    def __call__(self, path: str, owner: Optional[str], group: Optional[str], mode: str) -> bool:
        self.calls.append((path, owner, group, mode))
        info = os.lstat(path)
        changed = False
        if owner is not None and info.st_uid != int(owner):
            os.lchown(path, int(owner), -1)
            changed = True
        if group is not None and info.st_gid != int(group):
            os.lchown(path, -1, int(group))
            changed = True
        if stat.S_IMODE(info.st_mode) != int(mode, 8):
            os.chmod(path, int(mode, 8))
            changed = True
        return changed


def meta(path) -> Tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


class TestContent:
    def test_render_as_ceph_writes_it(self):
        assert render_keyring('client.cinder', KEY) == ('[client.cinder]\n\tkey = %s\n' % KEY).encode()

    def test_render_caps(self):
        text = render_keyring('client.cinder', KEY, {'osd': 'profile rbd pool=a,profile rbd pool=b',
                                                     'mon': 'profile rbd', 'mds': 'allow command "x"'}).decode()
        # Ceph's order (its caps map is sorted by type), as `ceph auth get -o` writes them
        assert text.splitlines()[2:] == ["\tcaps mds = 'allow command \"x\"'", '\tcaps mon = "profile rbd"',
                                         '\tcaps osd = "profile rbd pool=a, profile rbd pool=b"']

    def test_same_as_ceph_auth_get_output(self):
        # what `ceph auth get client.admin -o` writes, byte for byte
        ceph = ('[client.admin]\n\tkey = %s\n\tcaps mds = "allow *"\n\tcaps mgr = "allow *"\n'
                '\tcaps mon = "allow *"\n\tcaps osd = "allow *"\n' % KEY).encode()
        ours = render_keyring('client.admin', KEY, {'osd': 'allow *', 'mon': 'allow *', 'mgr': 'allow *',
                                                    'mds': 'allow *'})
        assert ours == ceph

    def test_same_keyring_compares_meaning(self):
        ours = render_keyring('client.g', KEY, {'mon': 'profile rbd', 'osd': 'profile rbd pool=a, profile rbd pool=b'})
        spaced = ('# written by hand\n[client.g]\nkey=%s\n  caps osd = \'profile rbd pool=b,profile rbd pool=a\'\n'
                  '\n  caps mon = "profile  rbd"\n' % KEY).encode()
        caps = {'osd': 'profile rbd pool=b,profile rbd pool=a', 'mon': 'profile  rbd'}
        assert parse_keyring(spaced) == {'client.g': (KEY, caps)}
        assert same_keyring(ours, spaced) and same_keyring(spaced, ours)

    @pytest.mark.parametrize('other', [
        '[client.g]\n\tkey = {key2}\n\tcaps mon = "profile rbd"\n',           # another key
        '[client.g]\n\tkey = {key}\n',                                          # caps lines missing
        '[client.g]\n\tkey = {key}\n\tcaps mon = "profile rbd pool=x"\n',     # other grants
        '[client.h]\n\tkey = {key}\n\tcaps mon = "profile rbd"\n',            # another entity
        '[client.g]\n\tkey = {key}\n\tcaps mon = "profile rbd"\n[client.h]\n\tkey = {key}\n',  # one more
        '[client.g]\n\tkey = {key}\n\tcaps mon = "profile rbd"\n\tauid = 0\n',  # a line we do not know
        '[client.g]\n\tkey = {key}\n\tcaps mon = "profile rbd"\n\tcaps mon = "x"\n',  # twice
        '[client.g]\n\tkey = {key}\n\tcaps nope = "profile rbd"\n',           # unknown daemon type
        '\tkey = {key}\n',                                                      # no section
    ])
    def test_same_keyring_differences(self, other):
        ours = render_keyring('client.g', KEY, {'mon': 'profile rbd'})
        assert not same_keyring(ours, other.format(key=KEY, key2=KEY2).encode())

    def test_render_refuses_both_quotes(self):
        with pytest.raises(VolsnapError, match='both quote'):
            render_keyring('client.x', KEY, {'mon': 'allow command "a\'b"'})

    @pytest.mark.parametrize('key', ['', 'AQD\nkey = x', 'not base64!', 'QQ==', KEY + ' x', '[client.x]'])
    def test_bad_keys_refused_without_showing_them(self, key):
        with pytest.raises(VolsnapError) as err:
            validate_key(key)
        assert not key or key not in str(err.value)

    def test_keys_of(self):
        text = ('[client.a]\n\tkey = %s\n[client.b]\nkey=%s\n' % (KEY, KEY2)).encode()
        assert keys_of(text) == {'client.a': KEY, 'client.b': KEY2}

    def test_redact_hides_keys(self):
        text = render_keyring('client.a', KEY, {'mon': 'profile rbd'})
        out = redact(text)
        assert KEY not in out and HIDDEN in out and 'caps mon = "profile rbd"' in out

    def test_redact_marks_changed_key(self):
        old, new = render_keyring('client.a', KEY), render_keyring('client.a', KEY2)
        assert HIDDEN_NEW in redact(new, old)
        assert HIDDEN_NEW not in redact(old, old)
        assert KEY2 not in redact(new, old) and KEY not in redact(new, old)


class TestMode:
    @pytest.mark.parametrize('value,expected', [('0640', 0o640), ('640', 0o640), ('0o600', 0o600), (0o640, 0o640),
                                                ('0000', 0)])
    def test_octal(self, value, expected):
        assert parse_mode(value) == expected

    @pytest.mark.parametrize('value', ['u=rw', 'rw-r-----', 640, '1640', '4755', True, '', '0999'])
    def test_refused(self, value):
        with pytest.raises(VolsnapError):
            parse_mode(value)


class TestPlan:
    def test_absent_file_is_created(self, tmp_path):
        path = str(tmp_path / 'k')
        plan = plan_keyring(KeyringRequest(path, 'cinder', key=KEY, mode='0640'), inspect_file(path))
        assert plan.changes == ['created']

    def test_each_difference_named(self, tmp_path):
        path = tmp_path / 'k'
        path.write_bytes(render_keyring('client.cinder', KEY))
        os.chmod(path, 0o644)
        os.chown(path, 0, 0)
        same = plan_keyring(KeyringRequest(str(path), 'cinder', key=KEY, owner='root', group='root', mode='0644'),
                            inspect_file(str(path)))
        assert same.changes == [] and not same.changed
        other = plan_keyring(KeyringRequest(str(path), 'cinder', key=KEY2, owner='nobody', group='nogroup',
                                            mode='0600'), inspect_file(str(path)))
        assert other.changes == ['content', 'owner', 'group', 'mode']

    def test_unset_owner_group_not_compared(self, tmp_path):
        path = tmp_path / 'k'
        path.write_bytes(render_keyring('client.cinder', KEY))
        os.chown(path, NOBODY, NOBODY)
        os.chmod(path, 0o600)
        assert plan_keyring(KeyringRequest(str(path), 'cinder', key=KEY), inspect_file(str(path))).changes == []

    def test_caps_lines_are_content(self, tmp_path):
        path = tmp_path / 'k'
        path.write_bytes(render_keyring('client.cinder', KEY))
        os.chmod(path, 0o600)
        plan = plan_keyring(KeyringRequest(str(path), 'cinder', key=KEY, caps={'mon': 'profile rbd'}),
                            inspect_file(str(path)))
        assert plan.changes == ['content']

    def test_file_written_by_ceph_is_not_rewritten(self, tmp_path):
        path = tmp_path / 'k'
        path.write_bytes(('[client.cinder]\n\tkey = %s\n\tcaps mon = "profile rbd"\n'
                          '\tcaps osd = "profile rbd pool=volumes,profile rbd pool=images"\n' % KEY).encode())
        os.chmod(path, 0o600)
        caps = {'osd': 'profile rbd pool=volumes, profile rbd pool=images', 'mon': 'profile rbd'}
        plan = plan_keyring(KeyringRequest(str(path), 'cinder', key=KEY, caps=caps), inspect_file(str(path)))
        assert plan.changes == [] and not plan.changed

    def test_unknown_key_counts_as_change(self, tmp_path):
        path = tmp_path / 'k'
        path.write_bytes(render_keyring('client.cinder', KEY))
        os.chmod(path, 0o600)
        plan = plan_keyring(KeyringRequest(str(path), 'cinder', key=None), inspect_file(str(path)), key_known=False)
        assert plan.changes == ['content']
        assert KEY not in json.dumps(plan.diff())

    def test_missing_user_and_group(self, tmp_path):
        with pytest.raises(VolsnapError, match='user no-such-user-x does not exist'):
            plan_keyring(KeyringRequest(str(tmp_path / 'k'), 'c', key=KEY, owner='no-such-user-x'),
                         inspect_file(str(tmp_path / 'k')))
        with pytest.raises(VolsnapError, match='group no-such-group-x does not exist'):
            plan_keyring(KeyringRequest(str(tmp_path / 'k'), 'c', key=KEY, group='no-such-group-x'),
                         inspect_file(str(tmp_path / 'k')))

    def test_symlink_refused(self, tmp_path):
        target = tmp_path / 'elsewhere'
        target.write_text('x')
        (tmp_path / 'k').symlink_to(target)
        with pytest.raises(VolsnapError, match='symbolic link'):
            inspect_file(str(tmp_path / 'k'))

    def test_directory_refused(self, tmp_path):
        (tmp_path / 'k').mkdir()
        with pytest.raises(VolsnapError, match='not a regular file'):
            inspect_file(str(tmp_path / 'k'))

    def test_diff_shows_metadata_never_key(self, tmp_path):
        path = tmp_path / 'k'
        path.write_bytes(render_keyring('client.cinder', KEY))
        os.chown(path, 0, 0)
        os.chmod(path, 0o644)
        plan = plan_keyring(KeyringRequest(str(path), 'cinder', key=KEY2, group='nogroup', mode='0640'),
                            inspect_file(str(path)))
        diff = plan.diff()
        assert '# mode: 0644' in diff['before'] and '# mode: 0640' in diff['after']
        assert '# group: root' in diff['before'] and '# group: nogroup' in diff['after']
        assert HIDDEN_NEW in diff['after']
        assert KEY not in json.dumps(diff) and KEY2 not in json.dumps(diff)
        assert KEY2 not in json.dumps(plan.result()) and 'key' not in plan.result()


class TestWrite:
    def test_new_file_has_owner_and_mode(self, tmp_path):
        path = str(tmp_path / 'k')
        write_keyring(path, b'data', NOBODY, NOBODY, 0o640)
        assert meta(path) == (NOBODY, NOBODY, 0o640)
        assert open(path, 'rb').read() == b'data'
        assert stale_temporaries(path) == []

    def test_replace_keeps_unset_owner(self, tmp_path):
        path = tmp_path / 'k'
        path.write_bytes(b'old')
        os.chown(path, NOBODY, 0)
        write_keyring(str(path), b'new', None, None, 0o600)
        assert meta(path) == (NOBODY, 0, 0o600)
        assert path.read_bytes() == b'new'

    def test_temp_file_never_looser_than_asked(self, tmp_path, monkeypatch):
        """The key is written only after the temporary file got its final mode."""
        path = str(tmp_path / 'k')
        seen = []
        real_write = os.write

        def spy(fd, data):
            seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
            return real_write(fd, data)
        monkeypatch.setattr(kr.os, 'write', spy)
        write_keyring(path, b'secret', None, None, 0o600)
        assert seen and set(seen) == {0o600}

    def test_failed_write_leaves_old_file_and_no_temp(self, tmp_path, monkeypatch):
        path = tmp_path / 'k'
        path.write_bytes(b'old')

        def boom(fd, data):
            raise OSError(28, 'No space left on device')
        monkeypatch.setattr(kr.os, 'write', boom)
        with pytest.raises(OSError):
            write_keyring(str(path), b'new', None, None, 0o600)
        assert path.read_bytes() == b'old'
        assert stale_temporaries(str(path)) == []

    def test_missing_directory(self, tmp_path):
        with pytest.raises(VolsnapError, match='does not exist'):
            write_keyring(str(tmp_path / 'no' / 'k'), b'x', None, None, 0o600)


class TestApply:
    def test_converge_then_idempotent(self, tmp_path):
        path = str(tmp_path / 'ceph.client.cinder.keyring')
        request = KeyringRequest(path, 'cinder', key=KEY, owner='root', group='nogroup', mode='0640')
        attrs = Attributes()
        first = apply_keyring(request, False, attrs)
        assert first.changes == ['created']
        assert meta(path) == (0, NOBODY, 0o640)
        assert open(path, 'rb').read() == render_keyring('client.cinder', KEY)
        second = apply_keyring(request, False, attrs)
        assert second.changes == [] and not second.changed

    def test_mode_only_goes_through_attributes(self, tmp_path):
        path = str(tmp_path / 'k')
        attrs = Attributes()
        apply_keyring(KeyringRequest(path, 'cinder', key=KEY, mode='0644'), False, attrs)
        out = apply_keyring(KeyringRequest(path, 'cinder', key=KEY, mode='0600'), False, attrs)
        assert out.changes == ['mode']
        assert meta(path)[2] == 0o600
        assert attrs.calls[-1] == (path, None, None, '0600')

    def test_check_mode_changes_nothing(self, tmp_path):
        path = tmp_path / 'k'
        path.write_bytes(render_keyring('client.cinder', KEY))
        os.chmod(path, 0o644)
        attrs = Attributes()
        out = apply_keyring(KeyringRequest(str(path), 'cinder', key=KEY2, group='nogroup', mode='0600'), True, attrs)
        assert out.changes == ['content', 'group', 'mode']
        assert path.read_bytes() == render_keyring('client.cinder', KEY) and meta(path)[2] == 0o644
        assert attrs.calls == []

    def test_check_mode_without_key(self, tmp_path):
        path = str(tmp_path / 'k')
        out = apply_keyring(KeyringRequest(path, 'cinder', key=None), True, Attributes())
        assert out.changes == ['created'] and not os.path.exists(path)

    def test_key_required_outside_check_mode(self, tmp_path):
        with pytest.raises(VolsnapError, match='key is required'):
            apply_keyring(KeyringRequest(str(tmp_path / 'k'), 'cinder', key=None), False, Attributes())

    def test_absent_removes_file_and_stale_temps(self, tmp_path):
        path = tmp_path / 'k'
        path.write_bytes(b'x')
        stale = tmp_path / '.k.abc123.tmp'
        stale.write_bytes(b'half')
        check = apply_keyring(KeyringRequest(str(path), 'cinder', state='absent'), True, Attributes())
        assert check.changes == ['removed', 'stale temporary files'] and path.exists() and stale.exists()
        out = apply_keyring(KeyringRequest(str(path), 'cinder', state='absent'), False, Attributes())
        assert out.changes == ['removed', 'stale temporary files']
        assert not path.exists() and not stale.exists()
        again = apply_keyring(KeyringRequest(str(path), 'cinder', state='absent'), False, Attributes())
        assert not again.changed

    def test_result_has_no_key(self, tmp_path):
        path = str(tmp_path / 'k')
        out = apply_keyring(KeyringRequest(path, 'cinder', key=KEY, mode='0600'), False, Attributes())
        text = json.dumps(out.result()) + json.dumps(out.diff()) + repr(out)
        assert KEY not in text
        assert out.result()['mode'] == '0600' and out.result()['state'] == 'file'
