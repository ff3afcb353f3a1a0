# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one step model of every operation that plans, then executes.

A feature declares its actions once in an :class:`Actions` table (name, how a step of it reads). Its
planner builds :class:`Step` values through that table: a step carries its arguments and its description,
fixed when it is planned, so check mode shows exactly the steps a real run executes. An :class:`Executor`
looks each step's handler up in one table (action name -> handler) and runs the steps in order; what a run
learns (ids, sizes, ...) goes into its :class:`RunContext`, never back into the plan.

Steps read back from storage (a journal in a share) are rebuilt through the same table: an unknown action is
refused and the description is computed again from the arguments, never taken from the stored text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base import progress

Describe = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class Step:
    """One planned action: ``action`` names it in its feature's :class:`Actions`, ``args`` are its inputs."""

    action: str
    args: Mapping[str, Any]
    description: str
    stage: str = ''

    def __str__(self) -> str:
        return self.description

    def as_dict(self) -> Dict[str, Any]:
        """What a journal stores (the description is not stored: it is derived)."""
        return {'action': self.action, 'stage': self.stage, 'args': dict(self.args)}


class Actions:
    """The actions of one feature: name -> how a step of it is described. Defined once per feature."""

    def __init__(self, feature: str, describers: Mapping[str, Describe]) -> None:
        self.feature = feature
        self._describers: Dict[str, Describe] = dict(describers)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self._describers)

    def __contains__(self, name: object) -> bool:
        return name in self._describers

    def step(self, action: str, stage: str = '', **args: Any) -> Step:
        """A step of ``action`` with ``args``, described now (at planning time)."""
        try:
            describe = self._describers[action]
        except KeyError:
            raise VolsnapError('internal error: %s has no action %r' % (self.feature, action))
        return Step(action=action, args=dict(args), description=describe(args), stage=stage)

    def from_dict(self, data: Mapping[str, Any]) -> Step:
        """A stored step, rebuilt through this table (unknown actions and malformed steps are refused)."""
        if not isinstance(data, Mapping) or not isinstance(data.get('args'), Mapping):
            raise VolsnapError('a stored %s step is malformed: %r' % (self.feature, data))
        action, stage = data.get('action'), data.get('stage', '')
        if not isinstance(action, str) or action not in self._describers or not isinstance(stage, str):
            raise VolsnapError('a stored %s step names an unknown action %r' % (self.feature, action))
        args = dict(data['args'])
        try:
            description = self._describers[action](args)
        except (KeyError, TypeError, ValueError) as exc:
            raise VolsnapError('a stored %s step %s has malformed arguments: %s' % (self.feature, action, exc))
        return Step(action=action, args=args, description=description, stage=stage)


@dataclass
class RunContext:
    """What a run learns while it executes: the steps done and named results. The plan is never written to."""

    done: List[Step] = field(default_factory=list)
    results: Dict[str, Any] = field(default_factory=dict)

    def set(self, name: str, value: Any) -> None:
        self.results[name] = value

    def get(self, name: str, default: Any = None) -> Any:
        return self.results.get(name, default)

    @property
    def changed(self) -> bool:
        return bool(self.done)


Handler = Callable[[Step, RunContext], None]


class Executor:
    """Runs steps in order through one handler table (action name -> handler).

    ``before`` and ``after`` are called around each step (a journal records progress there); a handler that
    raises stops the run with the steps done so far in the context. Step n of m and its description go to the
    progress record of the running operation (:func:`._base.progress.current`, nothing when none records).
    """

    def __init__(self, actions: Actions, handlers: Mapping[str, Handler]) -> None:
        missing = [name for name in actions.names if name not in handlers]
        extra = [name for name in handlers if name not in actions]
        if missing or extra:
            raise VolsnapError('internal error: %s handlers do not match its actions (missing %s, unknown %s)'
                               % (actions.feature, missing, extra))
        self.actions = actions
        self.handlers: Dict[str, Handler] = dict(handlers)

    def run(self, steps: Iterable[Step], context: Optional[RunContext] = None,
            before: Optional[Callable[[Step, RunContext], None]] = None,
            after: Optional[Callable[[Step, RunContext], None]] = None) -> RunContext:
        context = context if context is not None else RunContext()
        steps = list(steps)
        recorder = progress.current()
        recorder.plan([step.action for step in steps])
        for index, step in enumerate(steps):
            recorder.step(index, step.description)
            if before is not None:
                before(step, context)
            self.handlers[step.action](step, context)
            context.done.append(step)
            if after is not None:
                after(step, context)
        return context


def describe_steps(steps: Iterable[Step]) -> List[str]:
    return [step.description for step in steps]
