# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _cephx: client names, caps comparison and merging, and the idempotent auth operations.

The monitors are replaced by a small in-memory auth database that answers the JSON commands the way
Ceph 16 does (measured against a real cluster: ``auth get`` of a missing entity is -ENOENT,
``get-or-create`` of an existing one returns it unchanged, ``auth rm`` of a missing one is 0, bad caps
are -EINVAL). The integration tests run the same code against a real cluster.
"""

from __future__ import annotations

import errno
import json
from typing import Any, Dict, List, Optional, Tuple

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.cephx import (
    AuthApi,
    ClientRequest,
    caps_argument,
    caps_equal,
    entity_name,
    ensure_client,
    merge_caps,
    mon_command_of,
    normalize_caps,
    run_client,
    split_grants,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError

KEY = 'AQDsgQJr38aeOhAAQgifowO2RQtpIRCueR6xVQ=='


class FakeMons:
    """The auth commands of a monitor over an in-memory database; records every command."""

    def __init__(self, entities: Optional[Dict[str, Dict[str, str]]] = None, deny: bool = False) -> None:
        self.db: Dict[str, Dict[str, Any]] = {
            name: {'key': KEY, 'caps': dict(caps)} for name, caps in (entities or {}).items()}
        self.commands: List[Dict[str, Any]] = []
        self.deny = deny
        self.on_create = None

    def writes(self) -> List[str]:
        return [cmd['prefix'] for cmd in self.commands if cmd['prefix'] != 'auth get']

    @staticmethod
    def _caps(flat: List[str]) -> Dict[str, str]:
        caps = dict(zip(flat[::2], flat[1::2]))
        for kind, cap in caps.items():
            if 'bogus' in cap:
                raise ValueError('%s capability parse failed, stopped at %r' % (kind, cap))
        return caps

    def __call__(self, command: Dict[str, Any]) -> Tuple[int, bytes, str]:
        self.commands.append(command)
        prefix, entity = command['prefix'], command.get('entity')
        if self.deny and prefix != 'auth get':
            return -errno.EACCES, b'', 'access denied'
        record = self.db.get(entity)
        if prefix == 'auth get':
            if record is None:
                return -errno.ENOENT, b'', 'failed to find %s in keyring' % entity
            return 0, self._dump(entity), 'exported keyring for %s' % entity
        if prefix == 'auth get-or-create':
            if self.on_create is not None:
                self.on_create()
                record = self.db.get(entity)
            if record is None:
                try:
                    caps = self._caps(command.get('caps', []))
                except ValueError as exc:
                    return -errno.EINVAL, b'', str(exc)
                self.db[entity] = {'key': KEY, 'caps': caps}
            return 0, self._dump(entity), ''
        if prefix == 'auth caps':
            if record is None:
                return -errno.ENOENT, b'', "couldn't find entry %s" % entity
            try:
                record['caps'] = self._caps(command['caps'])
            except ValueError as exc:
                return -errno.EINVAL, b'', str(exc)
            return 0, b'', 'updated caps for %s' % entity
        if prefix == 'auth rm':
            if record is None:
                return 0, b'', 'entity %s does not exist' % entity
            del self.db[entity]
            return 0, b'', 'updated'
        return -errno.EINVAL, b'', 'unknown command'

    def _dump(self, entity: str) -> bytes:
        record = self.db[entity]
        return json.dumps([{'entity': entity, 'key': record['key'], 'caps': record['caps']}]).encode()


RBD_CAPS = {'mon': 'profile rbd', 'osd': 'profile rbd pool=volumes, profile rbd pool=images'}


class TestNames:
    @pytest.mark.parametrize('name', ['cinder', 'client.cinder', ' cinder ', 'client.nova-compute_1'])
    def test_client_names(self, name):
        assert entity_name(name).startswith('client.')
        assert entity_name(name) == 'client.' + name.strip().replace('client.', '')

    @pytest.mark.parametrize('name', ['', 'client.', 'osd.0', 'mon.a', 'a b', 'x]', 'c\nkey', 'a=b', '"q"'])
    def test_refused(self, name):
        with pytest.raises(VolsnapError):
            entity_name(name)


class TestCaps:
    def test_split_keeps_quoted_separators(self):
        assert split_grants('allow command "auth get, x"; allow r') == ['allow command "auth get, x"', 'allow r']

    def test_split_collapses_white_space(self):
        grants = split_grants('  profile   rbd  pool=a ,profile rbd pool=b,, ')
        assert grants == ['profile rbd pool=a', 'profile rbd pool=b']

    def test_unterminated_quote(self):
        with pytest.raises(VolsnapError, match='unterminated'):
            split_grants('allow command "auth')

    def test_normalize(self):
        assert normalize_caps({'OSD': 'profile rbd pool=a;profile rbd pool=b', 'mgr': '', 'mds': None}) == {
            'osd': 'profile rbd pool=a, profile rbd pool=b'}

    @pytest.mark.parametrize('caps,match', [({'rgw': 'allow'}, 'unknown cap type'), ({'osd': 3}, 'must be a string'),
                                            ({'osd': 'allow r\nkey = x'}, 'line break')])
    def test_normalize_refuses(self, caps, match):
        with pytest.raises(VolsnapError, match=match):
            normalize_caps(caps)

    def test_equal_ignores_order_and_space(self):
        assert caps_equal(RBD_CAPS, {'osd': 'profile rbd pool=images,profile rbd pool=volumes', 'mon': 'profile  rbd'})

    def test_equal_sees_differences(self):
        assert not caps_equal(RBD_CAPS, {'mon': 'profile rbd', 'osd': 'profile rbd pool=volumes'})
        assert not caps_equal(RBD_CAPS, dict(RBD_CAPS, mgr='profile rbd'))
        assert not caps_equal({'osd': 'allow r, allow r'}, {'osd': 'allow r'})
        assert not caps_equal({'osd': 'profile rbd-read-only pool=images'}, {'osd': 'profile rbd pool=images'})

    def test_merge_adds_only_missing_grants(self):
        current = {'mon': 'profile rbd', 'osd': 'profile rbd pool=volumes, profile rbd-read-only pool=images'}
        merged = merge_caps(current, {'osd': 'profile rbd pool=images, profile rbd pool=volumes'})
        assert merged == {'mon': 'profile rbd', 'osd': 'profile rbd pool=volumes, profile rbd-read-only pool=images, '
                                                       'profile rbd pool=images'}
        assert merge_caps(merged, {'osd': 'profile rbd pool=images'}) == merged

    def test_merge_adds_types(self):
        assert merge_caps({'mon': 'profile rbd'}, {'mgr': 'profile rbd pool=images'}) == {
            'mon': 'profile rbd', 'mgr': 'profile rbd pool=images'}

    def test_caps_argument_is_flat_and_ordered(self):
        assert caps_argument({'osd': 'b', 'mgr': 'c', 'mon': 'a'}) == ['mon', 'a', 'osd', 'b', 'mgr', 'c']


class TestEnsureClient:
    def test_create(self):
        mons = FakeMons()
        out = ensure_client(AuthApi(mons), ClientRequest('cinder', caps=RBD_CAPS))
        assert out.changed and out.exists
        assert mons.db['client.cinder']['caps'] == RBD_CAPS
        assert out.commands == ["ceph auth get-or-create client.cinder mon 'profile rbd' osd 'profile rbd "
                                "pool=volumes, profile rbd pool=images'"]
        assert out.diff() == {'before': {'entity': 'client.cinder', 'exists': False},
                              'after': {'entity': 'client.cinder', 'exists': True, 'caps': RBD_CAPS}}

    def test_same_caps_sends_no_write(self):
        mons = FakeMons({'client.cinder': RBD_CAPS})
        out = ensure_client(AuthApi(mons), ClientRequest('cinder', caps={
            'osd': 'profile rbd pool=images, profile rbd pool=volumes', 'mon': 'profile rbd'}))
        assert not out.changed
        assert mons.writes() == []
        assert out.commands == []

    def test_other_caps_sends_auth_caps_only(self):
        mons = FakeMons({'client.cinder': {'mon': 'profile rbd', 'osd': 'profile rbd pool=volumes'}})
        out = ensure_client(AuthApi(mons), ClientRequest('client.cinder', caps=RBD_CAPS))
        assert out.changed
        assert mons.writes() == ['auth caps']
        assert mons.db['client.cinder']['caps'] == RBD_CAPS
        assert out.diff()['before']['caps'] == {'mon': 'profile rbd', 'osd': 'profile rbd pool=volumes'}

    def test_exact_removes_types_left_out(self):
        mons = FakeMons({'client.glance': {'mon': 'profile rbd', 'osd': 'profile rbd pool=images',
                                           'mgr': 'profile rbd pool=images'}})
        out = ensure_client(AuthApi(mons), ClientRequest('glance', caps={'mon': 'profile rbd',
                                                                         'osd': 'profile rbd pool=images'}))
        assert out.changed and 'mgr' not in mons.db['client.glance']['caps']

    def test_merge(self):
        mons = FakeMons({'client.cinder': {'mon': 'profile rbd', 'osd': 'profile rbd pool=volumes'}})
        request = ClientRequest('cinder', caps={'osd': 'profile rbd pool=images'}, caps_mode='merge')
        out = ensure_client(AuthApi(mons), request)
        assert out.changed
        assert mons.db['client.cinder']['caps'] == {'mon': 'profile rbd',
                                                    'osd': 'profile rbd pool=volumes, profile rbd pool=images'}
        again = ensure_client(AuthApi(mons), request)
        assert not again.changed

    def test_caps_unset_leaves_them(self):
        mons = FakeMons({'client.cinder': RBD_CAPS})
        out = ensure_client(AuthApi(mons), ClientRequest('cinder'))
        assert not out.changed and out.caps == RBD_CAPS and mons.writes() == []

    def test_check_mode_sends_no_write(self):
        mons = FakeMons({'client.cinder': {'mon': 'profile rbd'}})
        api = AuthApi(mons)
        changed = ensure_client(api, ClientRequest('cinder', caps=RBD_CAPS), check_mode=True)
        created = ensure_client(api, ClientRequest('glance', caps=RBD_CAPS), check_mode=True)
        removed = ensure_client(api, ClientRequest('cinder', state='absent'), check_mode=True)
        assert changed.changed and created.changed and removed.changed
        assert mons.writes() == []
        assert mons.db == {'client.cinder': {'key': KEY, 'caps': {'mon': 'profile rbd'}}}

    def test_absent(self):
        mons = FakeMons({'client.old': {'mon': 'profile rbd'}})
        out = ensure_client(AuthApi(mons), ClientRequest('old', state='absent'))
        assert out.changed and not out.exists and 'client.old' not in mons.db
        again = ensure_client(AuthApi(mons), ClientRequest('old', state='absent'))
        assert not again.changed and mons.writes() == ['auth rm']

    def test_key_only_when_asked(self):
        mons = FakeMons({'client.cinder': RBD_CAPS})
        assert ensure_client(AuthApi(mons), ClientRequest('cinder')).key is None
        assert ensure_client(AuthApi(mons), ClientRequest('cinder', return_key=True)).key == KEY
        created = ensure_client(AuthApi(mons), ClientRequest('glance', caps=RBD_CAPS, return_key=True))
        assert created.key == KEY

    def test_key_never_in_result_diff_or_repr(self):
        mons = FakeMons({'client.cinder': {'mon': 'profile rbd'}})
        out = ensure_client(AuthApi(mons), ClientRequest('cinder', caps=RBD_CAPS, return_key=True))
        assert out.key == KEY
        assert KEY not in json.dumps(out.result()) + json.dumps(out.diff()) + repr(out)

    def test_created_meanwhile_gets_our_caps(self):
        mons = FakeMons()

        def someone_else():
            mons.db['client.cinder'] = {'key': KEY, 'caps': {'mon': 'allow r'}}
        mons.on_create = someone_else
        out = ensure_client(AuthApi(mons), ClientRequest('cinder', caps=RBD_CAPS))
        assert out.changed
        assert mons.db['client.cinder']['caps'] == RBD_CAPS
        assert mons.writes() == ['auth get-or-create', 'auth caps']

    def test_bad_caps_reported(self):
        mons = FakeMons({'client.cinder': RBD_CAPS})
        with pytest.raises(VolsnapError, match='Ceph refused the caps') as err:
            ensure_client(AuthApi(mons), ClientRequest('cinder', caps={'mon': 'bogus'}))
        assert err.value.details['errno'] == errno.EINVAL

    def test_denied_names_the_admin(self):
        mons = FakeMons(deny=True)
        with pytest.raises(VolsnapError, match="client.reader may not change the auth database"):
            ensure_client(AuthApi(mons, admin='client.reader'), ClientRequest('cinder', caps=RBD_CAPS))

    @pytest.mark.parametrize('request_', [ClientRequest('x', state='absent', caps=RBD_CAPS),
                                          ClientRequest('x', state='absent', return_key=True),
                                          ClientRequest('x', state='gone'), ClientRequest('x', caps_mode='union'),
                                          ClientRequest('x', caps={'rgw': 'allow'})])
    def test_invalid_requests_touch_nothing(self, request_):
        mons = FakeMons()
        with pytest.raises(VolsnapError):
            ensure_client(AuthApi(mons), request_)
        assert mons.commands == []

    def test_unparsable_reply(self):
        def mons(command):
            return 0, b'not json', ''
        with pytest.raises(VolsnapError, match='not JSON'):
            AuthApi(mons).get('client.x')


class FakeCluster:
    def __init__(self, mons: FakeMons) -> None:
        self.mons = mons
        self.timeouts: List[int] = []

    def mon_command(self, cmd: str, inbuf: bytes, timeout: int = 0) -> Tuple[int, bytes, str]:
        assert inbuf == b''
        self.timeouts.append(timeout)
        return self.mons(json.loads(cmd))


def test_run_client_connects_with_the_options():
    mons = FakeMons()
    seen: Dict[str, Any] = {}

    class Connect:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

        def __enter__(self) -> FakeCluster:
            seen['cluster'] = FakeCluster(mons)
            return seen['cluster']

        def __exit__(self, *exc: Any) -> None:
            seen['closed'] = True

    out = run_client(Connect, '/etc/ceph/ceph.conf', 'admin', '/etc/ceph/ceph.client.admin.keyring', 7, 'cinder',
                     'present', RBD_CAPS, 'exact', False, False)
    assert out.changed
    assert seen['ceph_conf'] == '/etc/ceph/ceph.conf' and seen['ceph_user'] == 'admin' and seen['timeout'] == 7
    assert seen['closed'] and set(seen['cluster'].timeouts) == {7}


def test_run_client_validates_before_connecting():
    def connect(**kwargs: Any) -> Any:
        raise AssertionError('must not connect')
    with pytest.raises(VolsnapError, match='unknown cap type'):
        run_client(connect, None, None, None, 5, 'cinder', 'present', {'rgw': 'x'}, 'exact', False, False)


def test_mon_command_of_without_timeout():
    cluster = FakeCluster(FakeMons())
    mon_command_of(cluster, 0)({'prefix': 'auth get', 'entity': 'client.x', 'format': 'json'})
    assert cluster.timeouts == [0]


class TimedOut(Exception):
    """Stands in for rados.TimedOut: the error mapping recognises the bindings by module name."""

    errno = 110


TimedOut.__module__ = 'rados'


def test_mon_command_errors_become_clear_messages():
    class Cluster:
        def mon_command(self, cmd: str, inbuf: bytes, timeout: int = 0) -> Tuple[int, bytes, str]:
            raise TimedOut('timed out')
    send = mon_command_of(Cluster(), 5)
    with pytest.raises(VolsnapError, match='sending "ceph auth get client.x" to the monitors failed') as err:
        send({'prefix': 'auth get', 'entity': 'client.x', 'format': 'json'})
    assert err.value.details['ceph_error'] == 'timeout'
