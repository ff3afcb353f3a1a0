# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the shared step model (_base/steps.py)."""

from __future__ import annotations

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.steps import (
    Actions,
    Executor,
    RunContext,
    describe_steps,
)

ACTIONS = Actions('demo', {
    'create': lambda a: 'create %s (%d bytes)' % (a['name'], a['size']),
    'delete': lambda a: 'delete %s' % a['name'],
})


def test_a_step_is_described_when_planned_and_stored_without_its_description():
    step = ACTIONS.step('create', stage='one', name='x', size=3)
    assert str(step) == step.description == 'create x (3 bytes)'
    assert step.as_dict() == {'action': 'create', 'stage': 'one', 'args': {'name': 'x', 'size': 3}}
    assert ACTIONS.from_dict(step.as_dict()) == step
    with pytest.raises(VolsnapError, match='has no action'):
        ACTIONS.step('format', name='x')


@pytest.mark.parametrize('stored, match', [
    ({'action': 'run_anything', 'args': {}}, 'unknown action'),
    ({'action': 'delete', 'args': 'x'}, 'malformed'),
    ({'action': 'create', 'args': {'name': 'x'}}, 'malformed arguments'),
    (['create'], 'malformed'),
])
def test_stored_steps_are_rebuilt_through_the_table(stored, match):
    with pytest.raises(VolsnapError, match=match):
        ACTIONS.from_dict(stored)


def test_the_executor_runs_handlers_from_one_table_and_keeps_results_in_the_context():
    seen = []

    def create(step, context):
        seen.append(step.description)
        context.set(step.args['name'], step.args['size'])

    def delete(step, context):
        if step.args['name'] == 'boom':
            raise VolsnapError('boom')
        seen.append(step.description)

    plan = [ACTIONS.step('create', name='a', size=1), ACTIONS.step('delete', name='b'),
            ACTIONS.step('delete', name='boom'), ACTIONS.step('create', name='never', size=2)]
    frozen = [step.as_dict() for step in plan]
    executor = Executor(ACTIONS, {'create': create, 'delete': delete})
    marks = []
    context = RunContext()
    with pytest.raises(VolsnapError, match='boom'):
        executor.run(plan, context, before=lambda s, c: marks.append('before ' + s.action),
                     after=lambda s, c: marks.append('after ' + s.action))
    assert seen == ['create a (1 bytes)', 'delete b']
    assert context.done == plan[:2] and context.changed and context.get('a') == 1 and context.get('never') is None
    assert marks == ['before create', 'after create', 'before delete', 'after delete', 'before delete']
    assert [step.as_dict() for step in plan] == frozen  # nothing written back into the plan
    assert describe_steps(plan[:2]) == ['create a (1 bytes)', 'delete b']
    assert not executor.run([]).changed


def test_handlers_must_match_the_actions():
    with pytest.raises(VolsnapError, match=r"missing \['delete'\], unknown \['format'\]"):
        Executor(ACTIONS, {'create': lambda s, c: None, 'format': lambda s, c: None})


def test_ids():
    from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import is_file_id, is_uuid
    dashed = '9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a'
    assert is_uuid(dashed) and is_uuid(dashed.upper()) and not is_uuid(dashed.replace('-', ''))
    assert is_file_id(dashed) and is_file_id(dashed.replace('-', '')) and not is_file_id(dashed.upper())
    for bad in (None, '', dashed + '\n', '../' + dashed, dashed + '/x'):
        assert not is_uuid(bad) and not is_file_id(bad)
