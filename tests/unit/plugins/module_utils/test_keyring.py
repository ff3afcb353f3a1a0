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

from ansible_collections.volsnap.openstack.plugins.module_utils._base import atomic as _atomic
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph import keyring as kr
from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import (
    FileAttributes,
    change_attributes_narrowing,
    narrowing_steps,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.keyring import (
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
NOGROUP = NOBODY


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


# ---------------------------------------------------------------------------------------------
# issue 12 item 10: no key in any output, however the file writes it

OLD_KEY_LINES = [
    '\tkey = {k} ; rotated',                # inline comment
    '\tkey = {k} # rotated 2024',
    '\tkey = {k} extra words',
    '\tkey = "{k}"',                        # quotes
    "\tkey = '{k}'",
    'key={k}',                              # no spaces
    '   key   =    {k}   ',                 # odd spacing
    '\tKEY = {k}',                          # another case
    '\t"key" = {k}',                        # quoted name
    '\tkey: {k}',                           # colon
    '\tkey = {k}\r',                        # CRLF
    '\tkey = AQD$$not-base64%%{short}',     # malformed base64 key
    '\tkey =\x0c{k}',                       # a control character before it
    '# key = {k}',                          # commented out
    '; old key {k}',                        # mentioned in a comment
    '\tkey {k}',                            # no '='
    '\tauid = {k}',                         # in a line we do not know
    '[client.a] key = {k}',                 # after a section header
    '\tcaps mon = "allow r {k}"',          # inside caps
    '\tcaps key = {k}',                     # caps line of an unknown type
]
SHORT = 'Zm9vYmFy'


def keyring_with(line: str, section: str = '[client.a]') -> bytes:
    return ('%s\n%s\n' % (section, line.format(k=KEY, short=SHORT))).encode()


class TestNoKeyAnywhere:
    @pytest.mark.parametrize('line', OLD_KEY_LINES)
    @pytest.mark.parametrize('section', ['[client.a]', '[client.other]', '[]', '', '[mon.]'])
    def test_old_key_never_shown(self, line, section):
        old = keyring_with(line, section)
        for text in (redact(old), redact(old, render_keyring('client.a', KEY2)),
                     redact(render_keyring('client.a', KEY2), old)):
            assert KEY not in text and KEY2 not in text and SHORT not in text, (line, text)
            assert 'AQD' not in text

    @pytest.mark.parametrize('line', OLD_KEY_LINES)
    def test_check_diff_of_a_rotation_shows_no_key(self, tmp_path, line):
        path = tmp_path / 'k'
        path.write_bytes(keyring_with(line))
        os.chmod(path, 0o640)
        for key, check in ((KEY2, True), (None, True), (KEY, True), (KEY2, False)):
            plan = apply_keyring(KeyringRequest(str(path), 'a', key=key, group='nogroup', mode='0600'), check,
                                 Attributes())
            text = json.dumps(plan.diff()) + json.dumps(plan.result()) + repr(plan)
            assert KEY not in text and KEY2 not in text and SHORT not in text, (line, text)

    def test_key_line_shapes_are_recognised(self):
        text = redact(('[client.a]\n\tkey = %s ; rotated\n\tkey = "%s"\n\tKey:%s\n' % (KEY, KEY, KEY)).encode())
        assert text.splitlines()[1:] == ['\tkey = %s %s' % (HIDDEN, kr.HIDDEN_TEXT), '\tkey = %s' % HIDDEN,
                                         '\tKey:%s' % HIDDEN]

    def test_understood_lines_are_kept_others_replaced(self):
        text = ('# managed by ceph\n[client.a]\n\tkey = %s\n\tcaps mon = "profile rbd"\n\n\tauid = 0\n' % KEY).encode()
        assert redact(text).splitlines() == ['# managed by ceph', '[client.a]', '\tkey = %s' % HIDDEN,
                                             '\tcaps mon = "profile rbd"', '', kr.HIDDEN_LINE]

    def test_rotation_marker_with_a_commented_old_key(self):
        old = ('[client.a]\n\tkey = %s ; rotated\n' % KEY).encode()
        new = render_keyring('client.a', KEY2)
        assert HIDDEN_NEW in redact(new, old)
        assert HIDDEN_NEW not in redact(render_keyring('client.a', KEY), old)

    def test_lenient_keys_of(self):
        text = ('[client.a]\n\tkey = "%s" ; x\n[]\nkey=%s\n' % (KEY, KEY2)).encode()
        assert keys_of(text) == {'client.a': KEY2}
        assert keys_of(('key = %s\n' % KEY).encode()) == {None: KEY}

    @pytest.mark.parametrize('text', ['connecting failed: %s' % KEY, 'x=%s;' % KEY, '%s' % KEY.rstrip('='),
                                      'AQDsgQJr38aeOhAAQ', 'old/%s/new' % KEY])
    def test_scrub_keys(self, text):
        assert 'AQDsgQJr38' not in kr.scrub_keys(text) and HIDDEN in kr.scrub_keys(text)

    @pytest.mark.parametrize('text', ['/etc/ceph/ceph.client.cinder.keyring', 'profile rbd pool=volumes',
                                      'client.volsnap-test-3fa2b1c9d0', 'internationalization_of_things'])
    def test_scrub_keeps_ordinary_text(self, text):
        assert kr.scrub_keys(text) == text

    def test_scrub_value_walks_details(self):
        details = {'ceph_message': 'bad key %s' % KEY, 'list': [KEY, 1], 'n': None}
        assert KEY not in json.dumps(kr.scrub_value(details))
        assert kr.scrub_value(details)['n'] is None

    def test_write_error_is_clear_and_shows_no_key(self, tmp_path, monkeypatch):
        path = tmp_path / 'k'
        path.write_bytes(keyring_with('\tkey = {k} ; rotated'))

        def boom(fd, data):
            raise OSError(28, 'No space left on device')
        monkeypatch.setattr(kr.os, 'write', boom)
        with pytest.raises(VolsnapError) as err:
            apply_keyring(KeyringRequest(str(path), 'a', key=KEY2), False, Attributes())
        assert 'No space left on device' in err.value.msg and str(path) in err.value.msg
        assert KEY not in str(err.value) and KEY2 not in str(err.value)
        assert path.read_bytes() == keyring_with('\tkey = {k} ; rotated')


# ---------------------------------------------------------------------------------------------
# owner/group and mode together never widen access

def grants(mode: int, uid: int, gid: int) -> set:
    """What a (mode, uid, gid) state grants: (class, principal, permission bit)."""
    found = set()
    for shift, who, principal in ((6, 'user', uid), (3, 'group', gid), (0, 'other', None)):
        for bit in (4, 2, 1):
            if mode >> shift & bit:
                found.add((who, principal, bit))
    return found


def states_of(mode: int, uid: int, gid: int, steps) -> List[Tuple[int, int, int]]:
    states = []
    for step in steps:
        if step[0] == 'chmod':
            mode = step[1]
        else:
            uid = uid if step[1] == -1 else step[1]
            gid = gid if step[2] == -1 else step[2]
        states.append((mode, uid, gid))
    return states


MODES = [0o600, 0o640, 0o660, 0o644, 0o400, 0o440, 0o604, 0o000, 0o666]


class TestNarrowing:
    @pytest.mark.parametrize('before', MODES)
    @pytest.mark.parametrize('after', MODES)
    @pytest.mark.parametrize('owners', [(-1, 20), (10, -1), (10, 20), (-1, -1), (0, 0)])
    def test_no_intermediate_state_grants_more(self, before, after, owners):
        uid, gid = 0, 0
        wanted = FileAttributes(after, owners[0], owners[1])
        steps = narrowing_steps(before, uid, gid, wanted)
        states = states_of(before, uid, gid, steps)
        final = (after, uid if owners[0] == -1 else owners[0], gid if owners[1] == -1 else owners[1])
        assert (states[-1] if states else (before, uid, gid)) == final
        allowed = grants(before, uid, gid) | grants(*final)
        for state in states:
            assert grants(*state) <= allowed, (oct(before), oct(after), owners, steps, state)

    def test_examples_of_the_issue(self):
        # 0640 root:a -> 0660 root:b: never 0660 root:a
        assert narrowing_steps(0o640, 0, 10, FileAttributes(0o660, 0, 20)) == [('chown', -1, 20), ('chmod', 0o660)]
        # 0640 root:a -> 0600 root:b: never 0640 root:b
        assert narrowing_steps(0o640, 0, 10, FileAttributes(0o600, 0, 20)) == [('chmod', 0o600), ('chown', -1, 20)]
        # 0644 -> 0660 with another group: through 0640
        assert narrowing_steps(0o644, 0, 10, FileAttributes(0o660, -1, 20)) == [
            ('chmod', 0o640), ('chown', -1, 20), ('chmod', 0o660)]
        assert narrowing_steps(0o640, 0, 10, FileAttributes(0o600)) == [('chmod', 0o600)]
        assert narrowing_steps(0o640, 0, 10, FileAttributes(0o640, 0, 10)) == []

    def test_syscalls_in_order_on_the_file(self, tmp_path, monkeypatch):
        """apply_keyring changes group and mode through the intersection, on the file itself."""
        path = tmp_path / 'k'
        path.write_bytes(render_keyring('client.a', KEY))
        os.chown(path, 0, 0)
        os.chmod(path, 0o640)
        calls = []
        real_fchmod, real_fchown = os.fchmod, os.fchown

        def fchmod(fd, mode):
            calls.append(('chmod', mode, meta(path)))
            real_fchmod(fd, mode)

        def fchown(fd, uid, gid):
            calls.append(('chown', (uid, gid), meta(path)))
            real_fchown(fd, uid, gid)
        monkeypatch.setattr(_atomic.os, 'fchmod', fchmod)
        monkeypatch.setattr(_atomic.os, 'fchown', fchown)
        out = apply_keyring(KeyringRequest(str(path), 'a', key=KEY, owner='root', group='nogroup', mode='0600'),
                            False, Attributes())
        assert out.changes == ['group', 'mode']
        # state before each call: first narrowed to 0600 while root:root still owns it, then the group changes
        assert calls == [('chmod', 0o600, (0, 0, 0o640)), ('chown', (-1, NOGROUP), (0, 0, 0o600))]
        assert meta(path) == (0, NOGROUP, 0o600)
        calls.clear()
        out = apply_keyring(KeyringRequest(str(path), 'a', key=KEY, owner='root', group='root', mode='0660'),
                            False, Attributes())
        assert out.changes == ['group', 'mode']
        assert calls == [('chown', (-1, 0), (0, NOGROUP, 0o600)), ('chmod', 0o660, (0, 0, 0o600))]
        assert meta(path) == (0, 0, 0o660)

    def test_refused_chown_leaves_at_most_the_narrower_mode(self, tmp_path, monkeypatch):
        path = tmp_path / 'k'
        path.write_bytes(render_keyring('client.a', KEY))
        os.chown(path, 0, 0)
        os.chmod(path, 0o644)

        def refuse(fd, uid, gid):
            raise OSError(1, 'Operation not permitted')
        monkeypatch.setattr(_atomic.os, 'fchown', refuse)
        with pytest.raises(VolsnapError, match='Operation not permitted') as err:
            apply_keyring(KeyringRequest(str(path), 'a', key=KEY, group='nogroup', mode='0660'), False, Attributes())
        assert str(path) in err.value.msg
        assert meta(path) == (0, 0, 0o640)

    def test_best_effort_refused_chown_keeps_the_narrower_mode(self, tmp_path, monkeypatch):
        path = tmp_path / 'f'
        path.write_bytes(b'x')
        os.chmod(path, 0o640)

        def refuse(fd, uid, gid):
            raise OSError(1, 'Operation not permitted')
        monkeypatch.setattr(_atomic.os, 'fchown', refuse)
        done = change_attributes_narrowing(str(path), FileAttributes(0o604, -1, NOGROUP, best_effort=True))
        assert done == [('chmod', 0o600)] and meta(path)[2] == 0o600

    def test_symlink_and_fifo_refused(self, tmp_path):
        (tmp_path / 'target').write_bytes(b'x')
        (tmp_path / 'link').symlink_to(tmp_path / 'target')
        with pytest.raises(OSError):
            change_attributes_narrowing(str(tmp_path / 'link'), FileAttributes(0o600))
        os.mkfifo(str(tmp_path / 'fifo'))
        with pytest.raises(OSError):
            change_attributes_narrowing(str(tmp_path / 'fifo'), FileAttributes(0o600))
