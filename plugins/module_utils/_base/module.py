# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared base of every volsnap.openstack module.

A module subclasses :class:`VolsnapModule`, declares its argument spec and its Python
dependencies, and implements :meth:`VolsnapModule.run_module` returning the result dict.
The base checks dependencies with ``missing_required_lib``, turns :class:`VolsnapError`
(and only it, plus the exception types a subclass maps) into ``fail_json`` with the details
kept, and offers check-mode and diff helpers so every module reports the same way: a ``diff``
(``{'before', 'after'}``) in the result of :meth:`VolsnapModule.run_module` becomes the module's diff
(shown with ``--diff`` when the module changed something), unless :meth:`VolsnapModule.set_diff` set one.
"""

from __future__ import annotations

import errno
from typing import Any, Dict, Optional, Tuple, Type

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError

# (library name shown to the user, import error traceback or None, where to get it)
Dependency = Tuple[str, Optional[str], Optional[str]]


class VolsnapModule(object):
    """Plumbing shared by all modules."""

    argument_spec: Dict[str, Any] = {}
    module_kwargs: Dict[str, Any] = {}
    supports_check_mode = True

    def __init__(self) -> None:
        self.module = AnsibleModule(argument_spec=self.argument_spec, supports_check_mode=self.supports_check_mode,
                                    **self.module_kwargs)
        self.params = self.module.params
        self.result: Dict[str, Any] = {'changed': False}
        self.diff: Any = {}  # a before/after dict, or a list of them (one per item of a module working on many)

    @property
    def check_mode(self) -> bool:
        return bool(self.module.check_mode)

    def dependencies(self) -> Tuple[Dependency, ...]:
        """The libraries this run needs (may depend on the options)."""
        return ()

    def check_dependencies(self) -> None:
        for name, error, url in self.dependencies():
            if error is not None:
                self.module.fail_json(msg=missing_required_lib(name, url=url), exception=error)

    def set_diff(self, before: Any, after: Any) -> None:
        """Record a before/after diff, shown with ``--diff`` when the module changes something."""
        self.diff = {'before': before, 'after': after}

    def run_module(self) -> Dict[str, Any]:
        raise NotImplementedError

    def error_types(self) -> Tuple[Type[BaseException], ...]:
        """Library exception types this module maps to ``fail_json`` (their message is kept)."""
        return ()

    def fail(self, msg: str, **details: Any) -> None:
        self.module.fail_json(msg=msg, **details)

    def execute(self) -> None:
        self.check_dependencies()
        try:
            result = self.run_module()
        except VolsnapError as exc:
            self.fail(exc.msg, **exc.details)
            return
        except self.error_types() as exc:  # pylint: disable=catching-non-exception
            self.fail('%s: %s' % (type(exc).__name__, exc))
            return
        except OSError as exc:
            # The net under every module: an error on a file is a failed result naming it, never a traceback.
            name = errno.errorcode.get(exc.errno, '') if exc.errno else ''
            self.fail('%s: %s%s' % (exc.filename or 'a file', exc.strerror or exc, ' (%s)' % name if name else ''),
                      file=exc.filename)
            return
        result = dict(result or {})
        diff = result.pop('diff', None)  # module_utils return their before/after diff in the result
        if diff and not self.diff:
            if isinstance(diff, list):
                self.diff = diff  # one before/after dict per item: Ansible shows each
            else:
                self.set_diff(diff['before'], diff['after'])
        self.result.update(result)
        if self.diff and self.module._diff and self.result.get('changed'):
            self.result['diff'] = self.diff
        self.module.exit_json(**self.result)
