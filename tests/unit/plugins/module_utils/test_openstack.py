# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _openstack: option spec, connection kwargs, error mapping, waiting, microversions.

The SDK exceptions are real openstacksdk/keystoneauth exception objects built from real
``requests.Response`` objects (no network); the proxy in the request_json tests is a fake.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import types

import pytest
import requests
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as sdk_exceptions

from ansible_collections.volsnap.openstack.plugins.module_utils._base import module as _module
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack import connection as _openstack
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.module import OpenStackModule
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import (
    CONNECTION_SPEC,
    StatusError,
    WaitTimeout,
    api_error,
    api_errors,
    connection_kwargs,
    negotiate_microversion,
    openstack_argument_spec,
    openstack_dependency,
    request_json,
    status_of,
    version_at_least,
    wait_for_status,
)
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils.test_module import Exited, FakeAnsibleModule

OPTION_NAMES = {'cloud', 'auth', 'auth_type', 'region_name', 'interface', 'validate_certs', 'ca_cert',
                'client_cert', 'client_key', 'api_timeout', 'sdk_log_path', 'sdk_log_level'}


def response(status, body=None, headers=None, url='http://127.0.0.1:8776/v3/p/snapshots/x/action',
             method='POST', reason=None):
    resp = requests.Response()
    resp.status_code = status
    resp.reason = reason
    resp.headers.update(headers or {})
    if body is not None:
        resp._content = json.dumps(body).encode()
        resp.headers['content-type'] = 'application/json'
    else:
        resp._content = b''
    resp.request = requests.Request(method, url).prepare()
    resp.url = url
    return resp


def raised(resp):
    with pytest.raises(sdk_exceptions.SDKException) as info:
        sdk_exceptions.raise_from_response(resp)
    return info.value


class TestSpec:
    def test_connection_options_as_openstack_cloud(self):
        assert set(CONNECTION_SPEC) == OPTION_NAMES
        assert CONNECTION_SPEC['auth']['no_log'] is True
        assert CONNECTION_SPEC['client_key']['no_log'] is True
        assert CONNECTION_SPEC['cloud']['type'] == 'raw'
        assert CONNECTION_SPEC['interface']['default'] == 'public'
        assert CONNECTION_SPEC['validate_certs']['aliases'] == ['verify']

    def test_with_and_without_wait(self):
        spec = openstack_argument_spec(volume=dict(type='str', required=True))
        assert set(spec) == OPTION_NAMES | {'wait', 'timeout', 'volume'}
        assert spec['wait'] == {'type': 'bool', 'default': True}
        assert spec['timeout'] == {'type': 'int', 'default': 180}
        assert set(openstack_argument_spec(wait=False)) == OPTION_NAMES

    def test_spec_is_a_copy(self):
        spec = openstack_argument_spec()
        spec['auth']['no_log'] = False
        spec['interface']['choices'].append('x')
        assert CONNECTION_SPEC['auth']['no_log'] is True
        assert 'x' not in CONNECTION_SPEC['interface']['choices']

    def test_dependency_present_in_this_venv(self):
        assert openstack_dependency() == ('openstacksdk', None, 'https://pypi.org/project/openstacksdk/')

    def test_error_types(self, monkeypatch):
        types = _openstack.sdk_error_types()
        assert sdk_exceptions.SDKException in types and ks_exceptions.ClientException in types
        monkeypatch.setattr(_openstack, '_SDK', {'module': None, 'error': 'x'})
        assert _openstack.sdk_error_types() == ()

    def test_dependency_missing(self, monkeypatch):
        monkeypatch.setattr(_openstack, '_SDK', {'module': None, 'error': 'Traceback: No module named openstack'})
        name, error, _url = openstack_dependency()
        assert name == 'openstacksdk' and 'No module named openstack' in error
        with pytest.raises(VolsnapError, match='openstacksdk Python library is needed'):
            _openstack.sdk()

    @pytest.mark.parametrize('version', ['0.101.0', '0.9', None])
    def test_too_old_openstacksdk_counts_as_missing_with_the_minimum(self, monkeypatch, version):
        def installed(name):
            assert name == 'openstacksdk'
            if version is None:
                raise importlib.metadata.PackageNotFoundError(name)
            return version

        monkeypatch.setitem(sys.modules, 'openstack', types.ModuleType('openstack'))
        monkeypatch.setattr(importlib.metadata, 'version', installed)  # imported when the version is read
        monkeypatch.setattr(_openstack, '_SDK', {})
        name, error, _url = openstack_dependency()
        assert name == 'openstacksdk >= %s (found %s)' % (_openstack.SDK_MIN_VERSION, version or 'of unknown version')
        assert 'need %s or newer' % _openstack.SDK_MIN_VERSION in error
        with pytest.raises(VolsnapError, match='openstacksdk >= 1.0.0'):
            _openstack.sdk()

    @pytest.mark.parametrize('version, old', [('1.0.0', False), ('4.22.0', False), ('1.0.0.dev3', False),
                                              ('0.999.1', True), ('', True)])
    def test_version_comparison(self, version, old):
        assert _openstack.sdk_too_old(version) is old


def params(**overrides):
    base = {name: None for name in OPTION_NAMES}
    base.update(interface='public', sdk_log_level='INFO')
    base.update(overrides)
    return base


class TestConnectionKwargs:
    def test_named_cloud(self):
        kwargs = connection_kwargs(params(cloud='lab', region_name='R1', validate_certs=False, api_timeout=30,
                                          ca_cert='/ca', client_cert='/c', client_key='/k', interface='internal'))
        assert kwargs == dict(cloud='lab', auth_type=None, auth=None, region_name='R1', verify=False, cacert='/ca',
                              cert='/c', key='/k', api_timeout=30, interface='internal')

    def test_auth_dict_without_cloud(self):
        auth = {'auth_url': 'http://127.0.0.1:5000/v3', 'username': 'u', 'password': 'p'}
        kwargs = connection_kwargs(params(auth=auth, auth_type='password'))
        assert kwargs['cloud'] is None and kwargs['auth'] == auth and kwargs['auth_type'] == 'password'

    def test_cloud_dict_is_passed_whole(self):
        cloud = {'auth': {'auth_url': 'http://x'}, 'region_name': 'R'}
        assert connection_kwargs(params(cloud=cloud)) == cloud

    @pytest.mark.parametrize('name,value', [('auth', {'a': 1}), ('region_name', 'R'), ('validate_certs', True),
                                            ('api_timeout', 3), ('auth_type', 'token'), ('client_key', '/k')])
    def test_cloud_dict_refuses_other_options(self, name, value):
        with pytest.raises(VolsnapError, match='%s must not be set' % name):
            connection_kwargs(params(cloud={'auth': {}}, **{name: value}))

    def test_cloud_dict_refuses_other_interface(self):
        with pytest.raises(VolsnapError, match='interface must not be set'):
            connection_kwargs(params(cloud={'auth': {}}, interface='admin'))

    def test_cloud_of_wrong_type(self):
        with pytest.raises(VolsnapError, match='not list'):
            connection_kwargs(params(cloud=['a']))

    def test_microversion(self):
        assert connection_kwargs(params(cloud='c'), '3.8')['block_storage_default_microversion'] == '3.8'
        assert 'block_storage_default_microversion' not in connection_kwargs(params(cloud='c'))


class TestApiError:
    def test_forbidden_keeps_api_message_status_and_request_id(self):
        exc = raised(response(403, {'forbidden': {'code': 403, 'message':
                                                  'Policy doesn\'t allow snapshot_extension:snapshot_manage '
                                                  'to be performed.'}},
                              headers={'x-openstack-request-id': 'req-123'}))
        err = api_error(exc, 'managing snapshot foo')
        assert err.msg.startswith('managing snapshot foo failed (HTTP 403): Policy doesn\'t allow '
                                  'snapshot_extension:snapshot_manage to be performed. [request id req-123]')
        assert 'policy refuses' in err.msg
        assert err.details['status_code'] == 403
        assert err.details['request_id'] == 'req-123'
        assert err.details['exception_type'] == 'ForbiddenException'
        assert err.details['method'] == 'POST'
        assert err.details['url'].endswith('/action')

    def test_hint_per_status_overrides_default(self):
        exc = raised(response(400, {'badRequest': {'code': 400, 'message': 'Invalid input'}}))
        err = api_error(exc, 'x', hints={400: 'give a valid reference'})
        assert err.msg == 'x failed (HTTP 400): Invalid input. Give a valid reference'

    def test_server_error_without_json(self):
        exc = raised(response(500, None, reason='Internal Server Error'))
        err = api_error(exc, 'listing')
        assert err.msg == 'listing failed (HTTP 500): Internal Server Error'

    def test_keystoneauth_exception(self):
        exc = ks_exceptions.ConnectFailure('Unable to establish connection to http://127.0.0.1:5000/v3')
        err = api_error(exc, 'connecting to the cloud')
        assert err.msg == ('connecting to the cloud failed: Unable to establish connection to '
                           'http://127.0.0.1:5000/v3')
        assert err.details['status_code'] is None

    def test_keystoneauth_unauthorized_has_hint(self):
        exc = ks_exceptions.Unauthorized(message='The request you have made requires authentication.',
                                         http_status=401, request_id='req-9')
        err = api_error(exc, 'connecting to the cloud')
        assert '(HTTP 401)' in err.msg and 'req-9' in err.msg and 'credentials' in err.msg

    def test_context_manager_translates_only_api_exceptions(self):
        with pytest.raises(VolsnapError, match='doing it failed: Cloud x was not found'):
            with api_errors('doing it'):
                raise sdk_exceptions.ConfigException('Cloud x was not found')
        with pytest.raises(KeyError):
            with api_errors('doing it'):
                raise KeyError('not ours')
        original = VolsnapError('mine')
        with pytest.raises(VolsnapError) as info:
            with api_errors('doing it'):
                raise original
        assert info.value is original


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def sequence(*items):
    items = list(items)

    def get():
        return items.pop(0) if len(items) > 1 else items[0]
    return get


class TestWait:
    def test_reaches_ok(self):
        clk = FakeClock()
        got = wait_for_status(sequence({'status': 'creating'}, {'status': 'creating'}, {'status': 'available'}),
                              ok={'available'}, fail={'error'}, timeout=60, interval=2,
                              sleep=clk.sleep, clock=clk.clock)
        assert got == {'status': 'available'}
        assert len(clk.sleeps) == 2 and all(s <= 2 for s in clk.sleeps)

    def test_fail_status_raises_with_resource(self):
        clk = FakeClock()
        with pytest.raises(StatusError) as info:
            wait_for_status(sequence({'status': 'creating', 'id': 1}, {'status': 'error', 'id': 1}),
                            ok={'available'}, fail={'error'}, timeout=60, what='snapshot s1',
                            sleep=clk.sleep, clock=clk.clock)
        assert info.value.status == 'error' and info.value.resource == {'status': 'error', 'id': 1}
        assert 'snapshot s1 went to status error' in info.value.msg

    def test_timeout(self):
        clk = FakeClock()
        with pytest.raises(WaitTimeout) as info:
            wait_for_status(sequence({'status': 'creating'}), ok={'available'}, fail={'error'}, timeout=10,
                            interval=3, sleep=clk.sleep, clock=clk.clock)
        assert info.value.status == 'creating' and 'after 10 seconds' in info.value.msg
        assert clk.now == pytest.approx(10)

    def test_gone_counts_as_none(self):
        clk = FakeClock()
        assert wait_for_status(sequence({'status': 'deleting'}, None), ok={None}, fail={'error_deleting'},
                               timeout=5, sleep=clk.sleep, clock=clk.clock) is None

    def test_zero_timeout_polls_once(self):
        calls = []

        def get():
            calls.append(1)
            return {'status': 'available'}
        assert wait_for_status(get, ok={'available'}, fail=(), timeout=0) == {'status': 'available'}
        assert calls == [1]

    def test_status_of_objects(self):
        class Res:
            status = 'available'
        assert status_of(Res()) == 'available'
        assert status_of(None) is None
        assert status_of({'x': 1}) is None


class TestMicroversion:
    @pytest.mark.parametrize('smin,smax,wanted,minimum,expected', [
        ('3.0', '3.70', '3.8', '3.8', '3.8'),
        ('3.0', '3.70', '3.65', None, '3.65'),
        ('3.0', '3.50', '3.65', None, '3.50'),
        ('3.0', '3.7', '3.8', '3.8', None),         # legacy cloud: caller falls back
        (None, None, '3.8', None, None),             # no microversions announced
        ('3.10', '3.70', '3.8', None, '3.10'),
        ('3.0', '3.70', '3.17', '3.8', '3.17'),
        ('3.0', '3.70', 'latest', None, None),
    ])
    def test_negotiate(self, smin, smax, wanted, minimum, expected):
        assert negotiate_microversion(smin, smax, wanted, minimum) == expected

    def test_bad_version(self):
        with pytest.raises(VolsnapError, match='not a microversion'):
            negotiate_microversion('3.0', '3.x', '3.8')

    def test_at_least(self):
        assert version_at_least('3.17', '3.8')
        assert not version_at_least('3.7', '3.8')
        assert not version_at_least(None, '3.8')


class FakeProxy:
    service_type = 'block-storage'

    def __init__(self, resp):
        self.resp = resp
        self.calls = []

    def request(self, url, method, **kwargs):
        self.calls.append((url, method, kwargs))
        return self.resp


class TestRequestJson:
    def test_ok_body_and_microversion(self):
        proxy = FakeProxy(response(202, {'snapshot': {'id': 's'}}))
        got = request_json(proxy, 'POST', '/manageable_snapshots', 'managing', microversion='3.8',
                           body={'snapshot': {}})
        assert got == {'snapshot': {'id': 's'}}
        assert proxy.calls == [('/manageable_snapshots', 'POST',
                                {'microversion': '3.8', 'raise_exc': False, 'json': {'snapshot': {}}})]

    def test_empty_body(self):
        assert request_json(FakeProxy(response(202)), 'POST', '/x', 'a') is None

    def test_error_is_mapped(self):
        proxy = FakeProxy(response(400, {'badRequest': {'code': 400, 'message': 'Snapshot status creating not '
                                                        'allowed'}}))
        with pytest.raises(VolsnapError) as info:
            request_json(proxy, 'POST', '/snapshots/s/action', 'reporting', body={})
        assert info.value.msg == 'reporting failed (HTTP 400): Snapshot status creating not allowed'
        assert info.value.details['status_code'] == 400


class TestOpenStackModule:
    """The base of the modules whose run is one call: dependency, SDK errors, diff (fake AnsibleModule)."""

    @pytest.fixture(autouse=True)
    def fake_module(self, monkeypatch):
        monkeypatch.setattr(_module, 'AnsibleModule', FakeAnsibleModule)

    def execute(self, run, diff_mode=False):
        class Module(OpenStackModule):
            argument_spec = openstack_argument_spec(wait=False)
            ran = []

            def run(self):
                self.ran.append(True)
                return run()

        module = Module()
        module.module._diff = diff_mode
        with pytest.raises(Exited) as info:
            module.execute()
        return module, info.value

    def test_result_and_diff(self):
        _obj, done = self.execute(lambda: {'changed': True, 'n': 1, 'diff': {'before': {'a': 1}, 'after': {}}},
                                  diff_mode=True)
        assert (done.kind, done.kwargs) == ('exit', {'changed': True, 'n': 1,
                                                     'diff': {'before': {'a': 1}, 'after': {}}})

    def test_diff_left_out_without_diff_mode_or_change(self):
        _obj, done = self.execute(lambda: {'changed': True, 'diff': {'before': 1, 'after': 2}})
        assert done.kwargs == {'changed': True}
        _obj, done = self.execute(lambda: {'changed': False, 'diff': {'before': 1, 'after': 1}}, diff_mode=True)
        assert done.kwargs == {'changed': False}

    def test_sdk_exception_fails_the_module(self):
        def run():
            raise sdk_exceptions.SDKException('no endpoint for block-storage')

        _obj, done = self.execute(run)
        assert (done.kind, done.kwargs) == ('fail', {'msg': 'SDKException: no endpoint for block-storage'})

    def test_missing_openstacksdk_fails_before_running(self, monkeypatch):
        monkeypatch.setattr(_openstack, '_SDK', {'module': None, 'error': 'Traceback: No module named openstack'})
        module, done = self.execute(lambda: {})
        assert done.kind == 'fail' and 'openstacksdk' in done.kwargs['msg']
        assert done.kwargs['exception'] == 'Traceback: No module named openstack'
        assert module.ran == []
