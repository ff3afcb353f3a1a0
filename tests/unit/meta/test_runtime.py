# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""meta/runtime.yml's action groups: module_defaults passes a group's defaults to EVERY module of the
group, so a module belongs to a group exactly when it accepts the options of the group's doc fragment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Set

import yaml

ROOT = Path(__file__).resolve().parents[3]
GROUP_FRAGMENT = {'openstack': 'volsnap.openstack.openstack', 'ceph': 'volsnap.openstack.ceph',
                  'nfs': 'volsnap.openstack.chain'}


def _modules() -> Dict[str, str]:
    return {path.stem: path.read_text() for path in sorted((ROOT / 'plugins' / 'modules').glob('*.py'))
            if not path.name.startswith('_')}


def _fragments(source: str) -> Set[str]:
    doc = yaml.safe_load(re.search(r"DOCUMENTATION = r'''(.*?)'''", source, re.S).group(1))
    return set(doc.get('extends_documentation_fragment') or [])


def _groups() -> Dict[str, List]:
    runtime = yaml.safe_load((ROOT / 'meta' / 'runtime.yml').read_text())
    return runtime['action_groups']


def test_each_group_holds_exactly_the_modules_with_its_fragment():
    modules = _modules()
    groups = _groups()
    for group, fragment in GROUP_FRAGMENT.items():
        expected = sorted(name for name, source in modules.items() if fragment in _fragments(source))
        assert expected, fragment
        assert sorted(groups[group]) == expected, group


def test_all_holds_every_module():
    groups = _groups()
    members = set()
    for entry in groups['all']:
        if isinstance(entry, dict):
            for extended in entry['metadata']['extend_group']:
                members.update(groups[extended])
        else:
            members.add(entry)
    assert members == set(_modules())
