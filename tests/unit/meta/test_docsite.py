# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The docs site's sources: the user guide (docs/docsite) is complete and consistent with the collection.

The built site is checked by tests/docs/test_site.py, which `make docs` (scripts/build-docs.sh) runs on it."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import yaml

ROOT = Path(__file__).resolve().parents[3]
DOCSITE = ROOT / 'docs' / 'docsite'
LABEL_PREFIX = 'ansible_collections.volsnap.openstack.docsite.'
# What the guide must cover (issue 14): page -> words that must be on it.
GUIDE_TOPICS = {
    'nfs_snapshots': ['offline', 'online', '.info', 'journal', 'state=resumed', 'volume_format', 'volume_clone'],
    'which_volume_snapshot': ['volsnap.openstack.volume_snapshot', 'openstack.cloud.volume_snapshot',
                              'report_to_cinder'],
    'rbd_clone_upload': ['enable_clone_optimization', 'checksum', 'clone_snap', '.deleted', 'state=absent',
                         'state=cleanup', 'flatten_children', 'max_clone_depth', 'profile rbd'],
    'snapshot_manage': ['manageable_snapshot_info', 'state: absent', 'cleanup_on_error'],
    'storage_audit': ['nfs_share_audit', 'rbd_pool_audit', 'cinder_host', 'state: cleaned', 'only:', 'min_age',
                      'clone_snap', 'trash', 'check mode'],
    'roles_and_playbooks': ['cinder_nfs_snapshots', 'ceph_client_keyrings', 'cinder_rbd_clone_optimization',
                            '--check --diff', 'restart'],
    'module_defaults': ['group/volsnap.openstack.openstack', 'group/volsnap.openstack.ceph',
                        'group/volsnap.openstack.nfs', 'group/volsnap.openstack.all'],
    'async': ['async:', 'poll: 0', 'async_status', 'until: upload.finished', 'operation_info', 'progress_dir'],
    'environments': ['requirements.txt', 'bindep.txt', 'execution-environment.yml', 'system-site-packages'],
}


def _extra_docs() -> List[str]:
    index = yaml.safe_load((DOCSITE / 'extra-docs.yml').read_text())
    return [entry['ref'] if isinstance(entry, dict) else entry
            for section in index['sections'] for entry in section['toctree']]


def _modules() -> List[str]:
    return sorted(path.stem for path in (ROOT / 'plugins' / 'modules').glob('*.py') if not path.name.startswith('_'))


def _roles() -> List[str]:
    return sorted(path.name for path in (ROOT / 'roles').iterdir() if (path / 'meta' / 'argument_specs.yml').is_file())


def _action_groups() -> Dict[str, list]:
    return yaml.safe_load((ROOT / 'meta' / 'runtime.yml').read_text())['action_groups']


# ---------------------------------------------------------------------------- sources


def test_every_guide_page_is_in_the_index_and_has_its_label():
    pages = sorted(path.stem for path in (DOCSITE / 'rst').glob('*.rst'))
    refs = _extra_docs()
    assert sorted(refs) == pages, 'docs/docsite/extra-docs.yml must list exactly the pages of docs/docsite/rst'
    assert len(refs) == len(set(refs))
    for page in pages:
        first = (DOCSITE / 'rst' / f'{page}.rst').read_text().splitlines()[0]
        assert first == f'.. _{LABEL_PREFIX}{page}:', page


def test_the_guide_covers_what_users_need():
    assert sorted(GUIDE_TOPICS) == sorted(_extra_docs())
    for page, words in GUIDE_TOPICS.items():
        text = (DOCSITE / 'rst' / f'{page}.rst').read_text()
        for word in words:
            assert word in text, (page, word)


def test_the_module_defaults_page_lists_each_group_with_its_modules():
    text = (DOCSITE / 'rst' / 'module_defaults.rst').read_text()
    for group, members in _action_groups().items():
        if group == 'all':  # every module, through extend_group: the page says so
            continue
        row = text.split(f'``group/volsnap.openstack.{group}``', 1)[1].split('   * - ', 1)[0]
        for member in members:
            if isinstance(member, str):
                assert f'volsnap.openstack.{member}#module' in row, (group, member)


def test_links_file_is_valid_for_antsibull_docs():
    from antsibull_docs.schemas.collection_links import CollectionLinks  # pylint: disable=import-outside-toplevel

    data = yaml.safe_load((DOCSITE / 'links.yml').read_text())
    CollectionLinks.model_validate(data)
    for link in data.get('extra_links', []):
        assert link['url'].startswith('https://'), link


def test_readme_points_to_the_guide():
    assert 'docs/docsite/rst/' in (ROOT / 'README.md').read_text()
