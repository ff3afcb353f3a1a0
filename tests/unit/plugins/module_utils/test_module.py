# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _module.VolsnapModule and _errors.VolsnapError with a fake AnsibleModule."""

from __future__ import annotations

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base import module as _module
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError


class Exited(Exception):
    def __init__(self, kind, kwargs):
        super(Exited, self).__init__(kind)
        self.kind = kind
        self.kwargs = kwargs


class FakeAnsibleModule:
    instances = []

    def __init__(self, argument_spec, supports_check_mode, **kwargs):
        self.argument_spec = argument_spec
        self.supports_check_mode = supports_check_mode
        self.kwargs = kwargs
        self.params = {'name': 'x'}
        self.check_mode = False
        self._diff = False
        FakeAnsibleModule.instances.append(self)

    def fail_json(self, **kwargs):
        raise Exited('fail', kwargs)

    def exit_json(self, **kwargs):
        raise Exited('exit', kwargs)


@pytest.fixture(autouse=True)
def fake_module(monkeypatch):
    FakeAnsibleModule.instances = []
    monkeypatch.setattr(_module, 'AnsibleModule', FakeAnsibleModule)
    return FakeAnsibleModule


def make(run=None, deps=(), errors=(), diff=None, spec=None):
    class Module(_module.VolsnapModule):
        argument_spec = spec or {'name': {'type': 'str'}}
        module_kwargs = {'required_one_of': [('name',)]}
        called = []

        def dependencies(self):
            return deps

        def error_types(self):
            return errors

        def run_module(self):
            self.called.append(True)
            if diff is not None:
                self.set_diff(*diff)
            return run(self) if run else {}

    return Module


def execute(cls):
    module = cls()
    with pytest.raises(Exited) as exc:
        module.execute()
    return module, exc.value


def test_init_passes_spec():
    module = make()()
    fake = FakeAnsibleModule.instances[-1]
    assert fake.argument_spec == {'name': {'type': 'str'}}
    assert fake.supports_check_mode is True
    assert fake.kwargs == {'required_one_of': [('name',)]}
    assert module.params == {'name': 'x'}
    assert module.check_mode is False
    assert module.result == {'changed': False}


def test_success_exits_with_result():
    _module_obj, exc = execute(make(run=lambda self: {'answer': 42}))
    assert exc.kind == 'exit'
    assert exc.kwargs == {'changed': False, 'answer': 42}


def test_none_result():
    _module_obj, exc = execute(make(run=lambda self: None))
    assert exc.kwargs == {'changed': False}


def test_volsnap_error_becomes_fail_json_with_details():
    def run(self):
        raise VolsnapError('the chain is unsafe', problems=[{'code': 'backing_loop'}], safe=False)

    _module_obj, exc = execute(make(run=run))
    assert exc.kind == 'fail'
    assert exc.kwargs == {'msg': 'the chain is unsafe', 'problems': [{'code': 'backing_loop'}], 'safe': False}


def test_mapped_error_types():
    def run(self):
        raise KeyError('missing')

    _module_obj, exc = execute(make(run=run, errors=(KeyError,)))
    assert exc.kind == 'fail'
    assert exc.kwargs == {'msg': "KeyError: 'missing'"}


def test_os_errors_become_a_failed_result_naming_the_file():
    def run(self):
        raise OSError(28, 'No space left on device', '/share/.volsnap-volume-x.journal')

    _module_obj, exc = execute(make(run=run))
    assert exc.kind == 'fail'
    assert exc.kwargs == {'msg': '/share/.volsnap-volume-x.journal: No space left on device (ENOSPC)',
                          'file': '/share/.volsnap-volume-x.journal'}


def test_unmapped_errors_propagate():
    def run(self):
        raise RuntimeError('bug')

    module = make(run=run)()
    with pytest.raises(RuntimeError):
        module.execute()


def test_missing_dependency_fails_before_running():
    cls = make(deps=(('libvirt-python', 'Traceback: ImportError', None),))
    module, exc = execute(cls)
    assert exc.kind == 'fail'
    assert 'libvirt-python' in exc.kwargs['msg']
    assert exc.kwargs['exception'] == 'Traceback: ImportError'
    assert module.called == []


def test_present_dependency_runs():
    module, exc = execute(make(deps=(('libvirt-python', None, None),), run=lambda self: {'ok': True}))
    assert exc.kind == 'exit'
    assert module.called == [True]


def test_diff_only_when_changed_and_requested():
    def run(self):
        self.module._diff = True
        return {'changed': True}

    _module_obj, exc = execute(make(run=run, diff=('a', 'b')))
    assert exc.kwargs == {'changed': True, 'diff': {'before': 'a', 'after': 'b'}}

    def run_unchanged(self):
        self.module._diff = True
        return {}

    _module_obj, exc = execute(make(run=run_unchanged, diff=('a', 'b')))
    assert 'diff' not in exc.kwargs

    _module_obj, exc = execute(make(run=lambda self: {'changed': True}, diff=('a', 'b')))
    assert 'diff' not in exc.kwargs


def test_diff_in_result_becomes_the_module_diff():
    def run(self, changed=True):
        self.module._diff = True
        return {'changed': changed, 'diff': {'before': {'x': 1}, 'after': {'x': 2}}}

    _module_obj, exc = execute(make(run=run))
    assert exc.kwargs == {'changed': True, 'diff': {'before': {'x': 1}, 'after': {'x': 2}}}

    # not changed: no diff shown, and the result's diff key is not passed on as a result value
    _module_obj, exc = execute(make(run=lambda self: run(self, changed=False)))
    assert exc.kwargs == {'changed': False}

    # not requested (no --diff): the diff is dropped from the result
    _module_obj, exc = execute(make(run=lambda self: {'changed': True, 'diff': {'before': 1, 'after': 2}}))
    assert exc.kwargs == {'changed': True}

    # a diff set by the module wins over one in the result
    _module_obj, exc = execute(make(run=run, diff=('a', 'b')))
    assert exc.kwargs['diff'] == {'before': 'a', 'after': 'b'}


def test_base_run_module_not_implemented():
    module = _module.VolsnapModule()
    with pytest.raises(NotImplementedError):
        module.run_module()


def test_volsnap_error():
    exc = VolsnapError('message', rc=3)
    assert str(exc) == 'message'
    assert exc.msg == 'message'
    assert exc.details == {'rc': 3}
    assert VolsnapError('x').details == {}
    assert isinstance(exc, Exception)


def test_a_list_of_diffs_in_result_becomes_the_module_diff_as_is():
    diffs = [{'before': '', 'after': 'a', 'before_header': 'v1.info', 'after_header': 'v1.info'},
             {'before': 'b', 'after': 'c', 'before_header': 'v2.info', 'after_header': 'v2.info'}]

    def run(self):
        self.module._diff = True
        return {'changed': True, 'diff': diffs}

    _module_obj, exc = execute(make(run=run))
    assert exc.kwargs == {'changed': True, 'diff': diffs}
