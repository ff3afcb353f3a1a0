# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module base of the modules that talk to OpenStack on every run.

Kept apart from ``_openstack`` because it needs ansible (``_module``): ``_openstack`` is also used
where ansible is not installed (the benchmarks, the lab's interpreter running module_utils code).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple, Type

from ansible_collections.volsnap.openstack.plugins.module_utils._base.module import Dependency, VolsnapModule
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import openstack_dependency, sdk_error_types


class OpenStackModule(VolsnapModule):
    """A module that talks to OpenStack on every run, its work one call of module_utils.

    openstacksdk is its dependency (``missing_required_lib`` when absent) and the SDK's exceptions
    are mapped to ``fail_json``. A subclass declares its argument spec and implements :meth:`run`;
    a ``diff`` (``{'before', 'after'}``) in the result of :meth:`run` becomes the module's diff (as for
    every :class:`VolsnapModule`).
    """

    def dependencies(self) -> Tuple[Dependency, ...]:
        return (openstack_dependency(),)

    def error_types(self) -> Tuple[Type[BaseException], ...]:
        return sdk_error_types()

    def run(self) -> Dict[str, Any]:
        raise NotImplementedError

    def run_module(self) -> Dict[str, Any]:
        return self.run()
