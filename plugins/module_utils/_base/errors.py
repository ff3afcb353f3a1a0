# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception type module_utils raise for errors a user must see."""

from __future__ import annotations

from typing import Any, Dict


class VolsnapError(Exception):
    """An error for the user: ``str(exc)`` says what was wrong and what to do.

    ``details`` are returned next to ``msg`` by ``fail_json`` (for example the findings of an
    unsafe chain), so playbooks can inspect them.
    """

    def __init__(self, msg: str, **details: Any) -> None:
        super(VolsnapError, self).__init__(msg)
        self.msg = msg
        self.details: Dict[str, Any] = details
