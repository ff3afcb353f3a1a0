# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _oslo_ini: oslo.config's ini rules, byte-exact edits, backend selection, atomic writes."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._openstack import oslo_ini as _oi
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.oslo_ini import (
    EditRequest,
    IniParseError,
    OsloIni,
    decode,
    encode,
    format_value,
    parse_bool,
    plan_edit,
    read_config,
    same_value,
    split_lines,
    to_text,
    write_atomic_bytes,
)

NFS = 'cinder.volume.drivers.nfs.NfsDriver'
RBD = 'cinder.volume.drivers.rbd.RBDDriver'

CINDER_CONF = (
    "# cinder.conf of a test host\n"
    "[DEFAULT]\n"
    "enabled_backends = nfs-1, ceph ,NFS-2\n"
    "debug = false\n"
    "\n"
    "[backend_defaults]\n"
    "nas_secure_file_operations = auto\n"
    "\n"
    "[nfs-1]\n"
    "volume_driver = cinder.volume.drivers.nfs.NfsDriver\n"
    "nfs_shares_config = /etc/cinder/nfs_shares\n"
    "# snapshots are off for now\n"
    "nfs_snapshot_support = False\n"
    "\n"
    "[ceph]\n"
    "volume_driver=cinder.volume.drivers.rbd.RBDDriver\n"
    "rbd_pool: volumes\n"
    "\n"
    "[nfs-2]\n"
    "volume_driver = cinder.volume.drivers.nfs.NfsDriver\n"
    "nfs_mount_options = vers=4.1,\n"
    "    proto=tcp\n"
    "\n"
    "[nfs-old]\n"
    "volume_driver = cinder.volume.drivers.nfs.NfsDriver\n"
)


def req(**kwargs):
    return EditRequest(**kwargs)


class TestSplitLines:
    def test_keeps_every_line_ending(self):
        text = 'a\nb\r\nc\rd'
        assert split_lines(text) == [('a', '\n'), ('b', '\r\n'), ('c', '\r'), ('d', '')]
        assert ''.join(c + e for c, e in split_lines(text)) == text

    def test_empty_and_trailing_newline(self):
        assert split_lines('') == []
        assert split_lines('x\n') == [('x', '\n')]


class TestParseAsOslo:
    def test_values_separators_quotes_and_continuations(self):
        ini = OsloIni.parse(
            "[DEFAULT]\n"
            "a = 1\n"
            "b: two words  \n"
            "c=\"quoted\"\n"
            "d = 'x\"\n"
            "e = k: v\n"
            "f: url=http://x\n"
            "g = first\n"
            "  second\n"
            "\tthird\n"
            "h =\n"
            "i = '  spaced  '\n"
        )
        assert ini.get('DEFAULT', 'a') == '1'
        assert ini.get('DEFAULT', 'b') == 'two words'
        assert ini.get('DEFAULT', 'c') == 'quoted'
        assert ini.get('DEFAULT', 'd') == "'x\""
        # the first of ':' and '=' separates
        assert ini.get('DEFAULT', 'e') == 'k: v'
        assert ini.get('DEFAULT', 'f') == 'url=http://x'
        assert ini.get('DEFAULT', 'g') == 'first\nsecond\nthird'
        assert ini.get('DEFAULT', 'h') == ''
        assert ini.get('DEFAULT', 'i') == '  spaced  '
        assert ini.get('DEFAULT', 'missing') is None

    def test_last_assignment_wins_across_repeated_sections(self):
        ini = OsloIni.parse("[nfs]\nx = 1\n[other]\nx = 5\n[NFS]\nx = 2\n[nfs]\ny = 3\n")
        assert ini.get('nfs', 'x') == '2'
        assert ini.get('Nfs', 'y') == '3'
        assert ini.get('other', 'x') == '5'
        ini.unset('nfs', 'x')  # both assignments are in [nfs]; [other]'s is not
        assert ini.render() == "[nfs]\n[other]\nx = 5\n[NFS]\n[nfs]\ny = 3\n"
        # one section, named as first written
        assert ini.sections() == ['nfs', 'other']

    def test_default_is_case_sensitive(self):
        ini = OsloIni.parse("[DEFAULT]\na = 1\n[default]\na = 2\n")
        assert ini.get('DEFAULT', 'a') == '1'
        assert ini.get('default', 'a') == '2'
        assert ini.sections() == ['DEFAULT', 'default']

    def test_keys_are_case_sensitive(self):
        ini = OsloIni.parse("[s]\nKey = 1\n")
        assert ini.get('s', 'key') is None
        assert ini.get('s', 'Key') == '1'

    def test_comments_and_blank_lines_end_values(self):
        ini = OsloIni.parse("[s]\na = 1\n\n# c\n; d\nb = 2\n  more\n# not a continuation\nc = 3\n")
        assert ini.get('s', 'a') == '1'
        assert ini.get('s', 'b') == '2\nmore'
        assert ini.get('s', 'c') == '3'

    def test_indented_comment_after_assignment_is_a_continuation(self):
        # oslo.config reads it as part of the value: so do we
        ini = OsloIni.parse("[s]\na = 1\n  # two\n")
        assert ini.get('s', 'a') == '1\n# two'

    @pytest.mark.parametrize('text,message', [
        ("a = 1\n", 'before the first section'),
        ("[s]\n  x\n", 'unexpected continuation'),
        ("[s]\na = 1\n\n  x\n", 'unexpected continuation'),
        ("[s\n", 'must end with ]'),
        ("[]\n", 'empty section name'),
        ("[s]\nnovalue\n", "No ':' or '='"),
        ("[s]\n= 1\n", 'key cannot be empty'),
    ])
    def test_what_oslo_refuses_is_refused_with_the_line(self, text, message):
        with pytest.raises(IniParseError) as info:
            OsloIni.parse(text)
        assert message in str(info.value)
        assert 'line' in str(info.value)

    def test_render_is_identity(self):
        text = "\ufeff# x\r\n[DEFAULT]\r\na=1 \r\n\tb\r\n\r\n;c\n[s]\nk : v"
        with pytest.raises(IniParseError):
            OsloIni.parse(text)  # the BOM makes the first line an assignment without '=': as oslo
        text = text[1:]
        assert OsloIni.parse(text).render() == text

    def test_enabled_backends_and_backend_fallback(self):
        ini = OsloIni.parse(CINDER_CONF)
        assert ini.enabled_backends() == ['nfs-1', 'ceph', 'NFS-2']
        assert ini.backend_value('nfs-1', 'nas_secure_file_operations') == 'auto'
        assert ini.backend_value('nfs-1', 'nas_secure_file_operations', fallback=None) is None
        assert ini.backend_value('ceph', 'volume_driver') == RBD


class TestValues:
    @pytest.mark.parametrize('text,expected', [
        ('true', True), ('True', True), ('1', True), ('on', True), ('YES', True),
        ('false', False), ('0', False), ('Off', False), ('no', False),
        ('maybe', None), ('', None), (None, None), (' true', None),
    ])
    def test_parse_bool_is_oslo_boolean(self, text, expected):
        assert parse_bool(text) is expected

    @pytest.mark.parametrize('current,wanted,same', [
        ('True', True, True), ('yes', True, True), ('false', True, False), ('bogus', False, False),
        (None, False, False), ('8', 8, True), (' 8', 8, True), ('08', 8, True), ('x', 8, False),
        ('0.5', 0.5, True), ('a, b', ['a', 'b'], True), ('a,b', ['b', 'a'], False), ('', [], True),
        ('rbd:rbd, file : file', {'rbd': 'rbd', 'file': 'file'}, True), ('rbd', {'rbd': 'rbd'}, False),
        ('false', 'false', True), ('False', 'false', False), ('auto', 'auto', True),
    ])
    def test_same_value_compares_as_oslo_converts(self, current, wanted, same):
        assert same_value(current, wanted) is same

    def test_to_text(self):
        assert to_text(True) == 'true'
        assert to_text(False) == 'false'
        assert to_text(3) == '3'
        assert to_text(['a', 1, True]) == 'a,1,true'
        assert to_text({'rbd': 'rbd', 'file': 'file'}) == 'rbd:rbd,file:file'
        with pytest.raises(VolsnapError, match='unset'):
            to_text(None)

    @pytest.mark.parametrize('value', ['plain', ' lead', 'trail ', '"q"', "'q'", '"', "'", '', 'a "b" c',
                                       '"mixed\'', 'x#y', 'k: v'])
    def test_format_value_reads_back_exactly(self, value):
        ini = OsloIni.parse('[s]\nk = %s\n' % format_value(value))
        assert ini.get('s', 'k') == value

    def test_format_value_refuses_line_breaks(self):
        with pytest.raises(VolsnapError, match='line break'):
            format_value('a\nb')


class TestEdits:
    def test_set_existing_keeps_everything_else(self):
        plan = plan_edit(CINDER_CONF, req(sections=['nfs-1'], set_values={'nfs_snapshot_support': True}))
        assert plan.after == CINDER_CONF.replace('nfs_snapshot_support = False', 'nfs_snapshot_support = true')
        assert plan.changes == [{'section': 'nfs-1', 'option': 'nfs_snapshot_support', 'before': 'False',
                                 'after': 'true'}]
        assert plan.changed

    def test_semantically_equal_value_is_no_change(self):
        plan = plan_edit(CINDER_CONF, req(sections=['nfs-1'], set_values={'nfs_snapshot_support': False}))
        assert not plan.changed
        assert plan.after == CINDER_CONF
        assert plan.changes == []
        assert plan.values == {'nfs-1': {'nfs_snapshot_support': 'False'}}

    def test_set_keeps_separator_style(self):
        plan = plan_edit(CINDER_CONF, req(sections=['ceph'], set_values={'rbd_pool': 'vols', 'volume_driver': RBD}))
        assert 'rbd_pool: vols\n' in plan.after
        assert 'volume_driver=cinder.volume.drivers.rbd.RBDDriver\n' in plan.after
        assert len(plan.changes) == 1

    def test_new_option_goes_after_the_last_assignment_of_the_section(self):
        plan = plan_edit(CINDER_CONF, req(sections=['nfs-2'], set_values={'nfs_qcow2_volumes': True}))
        assert plan.after == CINDER_CONF.replace(
            "    proto=tcp\n", "    proto=tcp\nnfs_qcow2_volumes = true\n")

    def test_new_option_in_section_without_assignments_goes_under_the_header(self):
        text = "[DEFAULT]\n[empty]\n# comment\n\n[next]\na = 1\n"
        plan = plan_edit(text, req(sections=['empty'], set_values={'k': 'v'}))
        assert plan.after == "[DEFAULT]\n[empty]\nk = v\n# comment\n\n[next]\na = 1\n"

    def test_new_option_at_end_of_file_without_newline(self):
        text = "[s]\na = 1"
        plan = plan_edit(text, req(sections=['s'], set_values={'b': 2}))
        assert plan.after == "[s]\na = 1\nb = 2\n"

    def test_crlf_file_stays_crlf(self):
        text = "[s]\r\na = 1\r\n\r\n[t]\r\nb = 2\r\n"
        plan = plan_edit(text, req(sections=['s'], set_values={'a': 3, 'c': 'x'}))
        assert plan.after == "[s]\r\na = 3\r\nc = x\r\n\r\n[t]\r\nb = 2\r\n"

    def test_replacing_a_multiline_value_drops_its_continuation_lines(self):
        plan = plan_edit(CINDER_CONF, req(sections=['nfs-2'], set_values={'nfs_mount_options': 'vers=3'}))
        assert 'nfs_mount_options = vers=3\n\n[nfs-old]' in plan.after
        assert 'proto=tcp' not in plan.after

    def test_repeated_section_edits_the_effective_assignment(self):
        text = "[s]\na = 1\n[t]\n[s]\na = 2\n"
        plan = plan_edit(text, req(sections=['s'], set_values={'a': 3}))
        assert plan.after == "[s]\na = 1\n[t]\n[s]\na = 3\n"
        assert OsloIni.parse(plan.after).get('s', 'a') == '3'
        plan = plan_edit(text, req(sections=['s'], set_values={'b': 4}))
        assert plan.after == "[s]\na = 1\n[t]\n[s]\na = 2\nb = 4\n"

    def test_unset_removes_every_assignment_and_its_continuations(self):
        text = "[s]\na = 1\n  cont\nb = 2\n[t]\na = 9\n[s]\na = 3\n"
        plan = plan_edit(text, req(sections=['s'], unset_options=['a']))
        assert plan.after == "[s]\nb = 2\n[t]\na = 9\n[s]\n"
        assert plan.values == {'s': {'a': None}}
        assert [c['before'] for c in plan.changes] == ['3']
        assert not plan_edit(plan.after, req(sections=['s'], unset_options=['a'])).changed

    def test_quoting_written_only_when_needed(self):
        plan = plan_edit("[s]\n", req(sections=['s'], set_values={'a': ' x', 'b': '"y"', 'c': ''}))
        assert plan.after == "[s]\na = \" x\"\nb = '\"y\"'\nc =\n"
        ini = OsloIni.parse(plan.after)
        assert (ini.get('s', 'a'), ini.get('s', 'b'), ini.get('s', 'c')) == (' x', '"y"', '')

    def test_create_section(self):
        plan = plan_edit("[DEFAULT]\na = 1",
                         req(sections=['glance_store'], create_sections=True, set_values={'default_backend': 'rbd'}))
        assert plan.after == "[DEFAULT]\na = 1\n\n[glance_store]\ndefault_backend = rbd\n"
        assert plan.sections == ['glance_store']

    def test_dict_and_list_values_for_glance(self):
        text = "[DEFAULT]\nenabled_backends = rbd:rbd\n"
        plan = plan_edit(text, req(sections=['DEFAULT'], fallback_section=None,
                                   set_values={'enabled_backends': {'rbd': 'rbd', 'file': 'file'}}))
        assert plan.after == "[DEFAULT]\nenabled_backends = rbd:rbd,file:file\n"
        assert plan.fallback_values == {}
        assert not plan_edit(plan.after, req(sections=['DEFAULT'], fallback_section=None,
                                             set_values={'enabled_backends': {'rbd': 'rbd', 'file': 'file'}})).changed

    def test_second_run_is_no_change(self):
        wanted = {'nfs_snapshot_support': True, 'nfs_qcow2_volumes': True, 'nas_secure_file_operations': 'false'}
        first = plan_edit(CINDER_CONF, req(volume_driver=[NFS], set_values=wanted))
        assert first.changed
        second = plan_edit(first.after, req(volume_driver=[NFS], set_values=wanted))
        assert not second.changed
        assert second.after == first.after
        assert second.values == first.values

    def test_bad_requests(self):
        with pytest.raises(VolsnapError, match='both set and unset'):
            plan_edit(CINDER_CONF, req(sections=['nfs-1'], set_values={'a': 1}, unset_options=['a']))
        with pytest.raises(VolsnapError, match='not an option name'):
            plan_edit(CINDER_CONF, req(sections=['nfs-1'], set_values={'a b': 1}))
        with pytest.raises(VolsnapError, match='not a valid section name'):
            plan_edit(CINDER_CONF, req(sections=['a]b'], set_values={'a': 1}))
        with pytest.raises(VolsnapError, match='nothing selects'):
            plan_edit(CINDER_CONF, req(set_values={'a': 1}))
        with pytest.raises(VolsnapError, match='cannot be empty'):
            plan_edit(CINDER_CONF, req(sections=['nfs-1'], fallback_section=''))


class TestSelection:
    def test_by_driver_selects_enabled_backends_only(self):
        plan = plan_edit(CINDER_CONF, req(volume_driver=[NFS], query=['nas_secure_file_operations']))
        # nfs-old is not enabled; NFS-2 is named as the file writes it
        assert plan.sections == ['nfs-1', 'nfs-2']
        assert plan.values == {'nfs-1': {'nas_secure_file_operations': None},
                               'nfs-2': {'nas_secure_file_operations': None}}
        assert plan.fallback_values == {'nas_secure_file_operations': 'auto'}
        assert plan.effective_values == {'nfs-1': {'nas_secure_file_operations': 'auto'},
                                         'nfs-2': {'nas_secure_file_operations': 'auto'}}
        assert plan.volume_drivers == {'nfs-1': NFS, 'nfs-2': NFS}
        assert plan.enabled_backends == ['nfs-1', 'ceph', 'NFS-2']
        assert not plan.changed

    def test_driver_from_backend_defaults(self):
        text = "[DEFAULT]\nenabled_backends = a,b\n[backend_defaults]\nvolume_driver = %s\n[a]\n[b]\nvolume_driver = %s\n" \
            % (NFS, RBD)
        assert plan_edit(text, req(volume_driver=[NFS])).sections == ['a']
        with pytest.raises(VolsnapError, match='no enabled backend'):
            plan_edit(text, req(volume_driver=[NFS], fallback_section=None))

    def test_no_matching_backend_fails_with_what_there_is(self):
        with pytest.raises(VolsnapError) as info:
            plan_edit(CINDER_CONF, req(volume_driver=['cinder.volume.drivers.lvm.LVMVolumeDriver']))
        assert 'no enabled backend' in info.value.msg
        assert info.value.details['volume_drivers'] == {'nfs-1': NFS, 'ceph': RBD, 'NFS-2': NFS}

    def test_enabled_backend_without_section(self):
        text = "[DEFAULT]\nenabled_backends = a\n[backend_defaults]\nvolume_driver = %s\n" % NFS
        with pytest.raises(VolsnapError, match='has no \\[a\\] section'):
            plan_edit(text, req(volume_driver=[NFS], set_values={'x': 1}))

    def test_named_sections_must_match_the_driver(self):
        with pytest.raises(VolsnapError) as info:
            plan_edit(CINDER_CONF, req(sections=['nfs-1', 'ceph'], volume_driver=[NFS], set_values={'x': 1}))
        assert 'section [ceph] has volume_driver' in info.value.msg

    def test_named_sections_missing_or_not_enabled(self):
        with pytest.raises(VolsnapError) as info:
            plan_edit(CINDER_CONF, req(sections=['nope'], set_values={'x': 1}))
        assert 'does not exist' in info.value.msg
        assert info.value.details['available_sections'][:2] == ['DEFAULT', 'backend_defaults']
        with pytest.raises(VolsnapError, match='not an enabled backend'):
            plan_edit(CINDER_CONF, req(sections=['nfs-old'], require_enabled=True, set_values={'x': 1}))
        # case-insensitive like oslo.config, and not listed twice
        plan = plan_edit(CINDER_CONF, req(sections=['NFS-1', 'nfs-1', 'nfs-2'], require_enabled=True))
        assert plan.sections == ['nfs-1', 'nfs-2']


class TestFiles:
    def test_bytes_round_trip(self):
        data = b'# caf\xc3\xa9 \xff\xfe\n[s]\na = 1\n'
        assert encode(decode(data)) == data

    def test_read_config_errors(self, tmp_path):
        with pytest.raises(VolsnapError, match='does not exist'):
            read_config(str(tmp_path / 'missing.conf'))
        with pytest.raises(VolsnapError, match='not a regular file'):
            read_config(str(tmp_path))
        link = tmp_path / 'link.conf'
        link.symlink_to(tmp_path / 'gone.conf')
        with pytest.raises(VolsnapError, match='symbolic link'):
            read_config(str(link))

    def test_read_config_follows_links(self, tmp_path):
        target = tmp_path / 'real.conf'
        target.write_bytes(b'[s]\n')
        link = tmp_path / 'cinder.conf'
        link.symlink_to(target)
        assert read_config(str(link)) == (str(target), '[s]\n')

    def test_write_atomic_keeps_mode_and_leaves_no_temp(self, tmp_path):
        path = tmp_path / 'cinder.conf'
        path.write_bytes(b'old')
        os.chmod(str(path), 0o640)
        inode = os.stat(str(path)).st_ino
        write_atomic_bytes(str(path), b'new \xff')
        assert path.read_bytes() == b'new \xff'
        assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o640
        assert os.stat(str(path)).st_ino != inode
        assert sorted(os.listdir(str(tmp_path))) == ['cinder.conf']


class TestRandomEdits:
    """Seeded random files and edits: the edited option reads back, everything else is untouched."""

    KEYS = ['a', 'b', 'nfs_snapshot_support', 'volume_driver', 'Key']
    SECTIONS = ['DEFAULT', 'nfs', 'NFS', 'ceph', 'backend_defaults']

    def random_file(self, rng):
        lines = []
        eol = rng.choice(['\n', '\r\n'])
        for dummy in range(rng.randint(1, 6)):
            lines.append('[%s]' % rng.choice(self.SECTIONS))
            for dummy in range(rng.randint(0, 5)):
                kind = rng.random()
                if kind < 0.15:
                    lines.append(rng.choice(['# comment', '; other', '#key = commented out']))
                elif kind < 0.25:
                    lines.append('')
                else:
                    sep = rng.choice([' = ', '=', ': ', ' : '])
                    lines.append('%s%s%s' % (rng.choice(self.KEYS), sep, rng.choice(['1', 'x y', '"q"', 'True', ''])))
                    if rng.random() < 0.2:
                        lines.append(rng.choice(['  more', '\tand more']))
        text = eol.join(lines)
        return text + eol if rng.random() < 0.8 else text

    @staticmethod
    def check_lines(old, new, key, context):
        import difflib

        def assigns_key(content):
            return content.split('=')[0].split(':')[0].strip() == key

        matcher = difflib.SequenceMatcher(a=[c for c, e in old], b=[c for c, e in new], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == 'equal':
                for i, j in zip(range(i1, i2), range(j1, j2)):
                    # only a last line without a line ending may gain one
                    assert old[i][1] == new[j][1] or (i == len(old) - 1 and not old[i][1]), context
            else:
                assert all(assigns_key(c) or c.startswith((' ', '\t')) for c, e in old[i1:i2]), context
                assert all(assigns_key(c) for c, e in new[j1:j2]), context

    def snapshot(self, ini):
        """Every assignment's value, in file order, per (section, option)."""
        values = {}
        for entry in ini.entries:
            values.setdefault((entry.section, entry.key), []).append(entry.value)
        return values

    def test_invariants(self):
        import random
        rng = random.Random(20240611)
        for dummy in range(250):
            text = self.random_file(rng)
            before = OsloIni.parse(text)
            section = rng.choice(before.sections())
            key = rng.choice(self.KEYS)
            value = rng.choice([True, False, 7, 'plain', ' padded', '', ['a', 'b']])
            unset = rng.random() < 0.3
            request = req(sections=[section], unset_options=[key]) if unset else \
                req(sections=[section], set_values={key: value})
            plan = plan_edit(text, request)
            after = OsloIni.parse(plan.after)
            norm = section if section == 'DEFAULT' else section.lower()
            if unset:
                assert after.get(section, key) is None
            else:
                assert same_value(after.get(section, key), value), (text, section, key, value, plan.after)
            # every other option of every section reads the same
            old, new = self.snapshot(before), self.snapshot(after)
            old.pop((norm, key), None)
            new.pop((norm, key), None)
            assert old == new, (text, plan.after)
            # the lines that were not edited keep their bytes and their order; removed lines are
            # assignments of the key or continuation lines; added lines assign the key
            self.check_lines(split_lines(text), split_lines(plan.after), key, (text, plan.after))
            # idempotent
            assert not plan_edit(plan.after, request).changed


# ---------------------------------------------------------------------------------------------
# issue 12 item 10: secrets masked in diffs, results and messages; non-UTF-8 files refused

SECRET_CONF = (
    "[DEFAULT]\n"
    "enabled_backends = nfs-1\n"
    "transport_url = rabbit://openstack:RabbitPw1@10.0.0.1:5672,guest:RabbitPw2@10.0.0.2:5672/\n"
    "#admin_password = CommentedPw\n"
    "; transport_url = rabbit://old:CommentedUrlPw@10.0.0.9/\n"
    "[database]\n"
    "connection = postgresql+psycopg2://cinder:DbPw/with@at@127.0.0.1/cinder?sslmode=require&password=QueryPw\n"
    "slave_connection = cinder:NoSchemePw@db2/cinder\n"
    "[keystone_authtoken]\n"
    "auth_url = http://127.0.0.1:5000/\n"
    "username = cinder\n"
    "password = KeystonePw\n"
    "memcache_secret_key = MemcacheSecret\n"
    "[key_manager]\n"
    "fixed_key = FixedKey0123\n"
    "[nfs-1]\n"
    "volume_driver = cinder.volume.drivers.nfs.NfsDriver\n"
    "rbd_secret_uuid = SecretUuid\n"
    "san_password = SanPw\n"
    "  SanPwContinued\n"
    "chap-secret: ChapSecret\n"
    "os_privileged_user_auth_token = AuthToken\n"
)
SECRETS = ['RabbitPw1', 'RabbitPw2', 'CommentedPw', 'CommentedUrlPw', 'DbPw', 'with@at', 'QueryPw', 'NoSchemePw',
           'KeystonePw', 'MemcacheSecret', 'FixedKey0123', 'SecretUuid', 'SanPw', 'ChapSecret', 'AuthToken']


def assert_no_secret(text):
    for secret in SECRETS + ['NewPw', 'NewRabbit']:
        assert secret not in text, (secret, text)


class TestSecrets:
    @pytest.mark.parametrize('name', ['password', 'admin_password', 'san_password', 'Password', 'os-password',
                                      'memcache_secret_key', 'rbd_secret_uuid', 'auth_token', 'fixed_key',
                                      'api_key', 'apikey', 'ssh_private_key', 'chap_secret', 'backup_swift_key',
                                      'credentials', 'passphrase', 'db_pwd', 'sshkey', 'tls_psk'])
    def test_secret_names(self, name):
        assert _oi.is_secret_option(name)

    @pytest.mark.parametrize('name', ['volume_driver', 'enabled_backends', 'rbd_user', 'rbd_keyring_conf',
                                      'keystone_api_insecure', 'nfs_snapshot_support', 'transport_url', 'connection',
                                      'username', 'auth_url', 'bypass_cache', 'monkey_patch_modules'])
    def test_not_secret_names(self, name):
        assert not _oi.is_secret_option(name)

    @pytest.mark.parametrize('value,masked', [
        ('rabbit://u:p@h:5672/', 'rabbit://<hidden>@h:5672/'),
        ('rabbit://u1:p1@h1:5672,u2:p2@h2:5672/v', 'rabbit://<hidden>@h2:5672/v'),
        ('mysql+pymysql://c:p/x@y@db/cinder?charset=utf8', 'mysql+pymysql://<hidden>@db/cinder?charset=utf8'),
        ('redis://db:6379?password=p&db=0', 'redis://db:6379?password=<hidden>&db=0'),
        ('http://127.0.0.1:5000/', 'http://127.0.0.1:5000/'),
        ('cinder.volume.drivers.nfs.NfsDriver', 'cinder.volume.drivers.nfs.NfsDriver'),
        ('admin@example.com', 'admin@example.com'),
    ])
    def test_mask_urls(self, value, masked):
        assert _oi.mask_urls(value) == masked

    def test_url_option_without_scheme(self):
        assert _oi.mask_value('slave_connection', 'u:p@db/x') == '<hidden>@db/x'
        assert _oi.mask_value('password', '') == ''
        assert _oi.mask_value('password', None) is None

    def test_mask_text_hides_every_secret_keeps_the_rest(self):
        shown = _oi.mask_text(SECRET_CONF)
        assert_no_secret(shown)
        assert 'password = <hidden>\n' in shown and 'auth_url = http://127.0.0.1:5000/\n' in shown
        assert 'username = cinder\n' in shown and '#admin_password = <hidden>\n' in shown
        assert 'transport_url = rabbit://<hidden>@10.0.0.2:5672/\n' in shown
        assert 'san_password = <hidden>\n  <hidden>\n' in shown
        assert len(split_lines(shown)) == len(split_lines(SECRET_CONF))

    def test_masked_diff_still_shows_the_changed_line(self):
        request = EditRequest(sections=['keystone_authtoken'], set_values={'password': 'NewPw'},
                              fallback_section=None)
        plan = plan_edit(SECRET_CONF, request)
        before, after = _oi.mask_text(plan.before), _oi.mask_text(plan.after, reference=plan.before)
        assert_no_secret(before + after)
        assert before != after
        assert 'password = <hidden, changed>\n' in after and 'memcache_secret_key = <hidden>\n' in after
        changes = _oi.mask_changes(plan.changes)
        assert changes == [{'section': 'keystone_authtoken', 'option': 'password', 'before': '<hidden>',
                            'after': '<hidden, changed>'}]

    def test_masked_url_change(self):
        request = EditRequest(sections=['DEFAULT'], set_values={'transport_url': 'rabbit://openstack:NewRabbit@h/'},
                              fallback_section=None)
        plan = plan_edit(SECRET_CONF, request)
        after = _oi.mask_text(plan.after, reference=plan.before)
        assert 'transport_url = rabbit://<hidden, changed>@h/\n' in after
        assert_no_secret(after + repr(_oi.mask_changes(plan.changes)))

    def test_mask_given(self):
        given = {'password': 'NewPw', 'transport_url': 'rabbit://u:NewRabbit@h/', 'debug': True,
                 'enabled_backends': {'rbd': 'rbd'}, 'x_password': '', 'list': ['a://u:NewPw@h']}
        masked = _oi.mask_given(given)
        assert_no_secret(repr(masked))
        assert masked['debug'] is True and masked['enabled_backends'] == {'rbd': 'rbd'}
        assert masked['password'] == '<hidden>' and masked['x_password'] == ''

    @pytest.mark.parametrize('text', ["password = Secret1\n", "[s]\n  Secret1\n", "[s]\nSecret1\n",
                                      "[s]\n= Secret1\n", "[s]\na = 1\n\n  Secret1\n",
                                      "[s]\npassword = x\n\n  Secret1\n", "x = rabbit://u:Secret1@h/\n"])
    def test_parse_errors_never_quote_a_secret(self, text):
        with pytest.raises(IniParseError) as info:
            OsloIni.parse(text)
        assert 'Secret1' not in str(info.value) and 'line' in str(info.value)

    def test_line_break_error_does_not_show_the_value(self):
        with pytest.raises(VolsnapError) as info:
            plan_edit(SECRET_CONF, EditRequest(sections=['DEFAULT'], set_values={'password': 'a\nNewPw'}))
        assert 'NewPw' not in str(info.value) and 'password' in str(info.value)


class TestEncoding:
    @pytest.mark.parametrize('data,line', [
        (b'[DEFAULT]\npassword = caf\xe9\n', 2),           # Latin-1
        (b'\xff\xfe[\x00D\x00', 1),                          # UTF-16
        (b'[s]\na = 1\nb = \xed\xa0\x80\n', 3),             # an encoded surrogate: oslo.config refuses it too
    ])
    def test_non_utf8_refused_with_line(self, tmp_path, data, line):
        path = tmp_path / 'cinder.conf'
        path.write_bytes(data)
        with pytest.raises(VolsnapError) as info:
            read_config(str(path))
        message = str(info.value)
        assert str(path) in message and 'line %d' % line in message and 'UTF-8' in message
        assert 'caf' not in message and 'Nothing was changed' in message
        assert path.read_bytes() == data

    def test_utf8_accepted(self, tmp_path):
        path = tmp_path / 'cinder.conf'
        path.write_bytes('[DEFAULT]\n# café\n'.encode())
        assert read_config(str(path))[1] == '[DEFAULT]\n# café\n'


class TestNarrowModeFirst:
    """Before Ansible's chown/chgrp/chmod, the mode becomes what both the old and the new mode allow."""

    def make(self, tmp_path, mode, uid=0, gid=0):
        path = tmp_path / 'cinder.conf'
        path.write_bytes(b'[DEFAULT]\npassword = x\n')
        os.chown(str(path), uid, gid)
        os.chmod(str(path), mode)
        return str(path)

    def test_group_and_mode_together(self, tmp_path, monkeypatch):
        path = self.make(tmp_path, 0o640)
        calls = []
        real = os.fchmod

        def spy(fd, mode):
            calls.append((mode, os.fstat(fd).st_gid))
            real(fd, mode)
        monkeypatch.setattr(_oi.os, 'fchmod', spy)
        # 0640 root:root -> 0600 root:nogroup: 0600 first, while root's group still owns it
        assert _oi.narrow_mode_first(path, '0600', None, 'nogroup') == 0o640
        assert calls == [(0o600, 0)]
        # what Ansible does next (group, then mode) then never gives nogroup read access
        os.chown(path, -1, 65534)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    @pytest.mark.parametrize('mode,owner,group', [
        ('0600', None, None),          # no owner change: nothing to narrow
        ('0640', None, 'root'),        # same group
        ('0660', None, 'nogroup'),     # the new mode allows everything the old one did
        ('u=rw,g=r', None, 'nogroup'),  # symbolic: Ansible's order
        ('0600', 'no-such-user-x', None),
        (None, None, 'nogroup'),
    ])
    def test_nothing_to_narrow(self, tmp_path, mode, owner, group):
        path = self.make(tmp_path, 0o640)
        assert _oi.narrow_mode_first(path, mode, owner, group) is None
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640

    def test_owner_by_uid_and_int_mode(self, tmp_path):
        path = self.make(tmp_path, 0o644)
        assert _oi.narrow_mode_first(path, 0o600, '65534', None) == 0o644
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
