# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The docs site: the user guide's sources (docs/docsite) are complete, and the built site (`make docs`,
scripts/build-docs.sh, which runs this file with VOLSNAP_DOCS_HTML set to the HTML directory) holds every
module, role and guide page, all reachable from the index, with every internal link and anchor resolving."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Set, Tuple
from urllib.parse import unquote, urldefrag

import pytest
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
    'roles_and_playbooks': ['cinder_nfs_snapshots', 'ceph_client_keyrings', 'cinder_rbd_clone_optimization',
                            '--check --diff', 'restart'],
    'module_defaults': ['group/volsnap.openstack.openstack', 'group/volsnap.openstack.ceph',
                        'group/volsnap.openstack.nfs', 'group/volsnap.openstack.all'],
    'async': ['async:', 'poll: 0', 'async_status', 'until: upload.finished'],
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


# ---------------------------------------------------------------------------- the built site

HTML = os.environ.get('VOLSNAP_DOCS_HTML')
needs_site = pytest.mark.skipif(not HTML, reason='the built site is checked by `make docs` (VOLSNAP_DOCS_HTML)')


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: Set[str] = set()
        self.links: List[str] = []
        self.text: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ('id', 'name'):
            if values.get(key):
                self.ids.add(values[key] or '')
        if tag == 'a' and values.get('href'):
            self.links.append(values['href'] or '')

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding='utf-8'))
    return page


@pytest.fixture(scope='module')
def site() -> Dict[str, _Page]:
    root = Path(HTML or '')
    assert (root / 'index.html').is_file(), f'{root}/index.html was not built'
    return {str(path.relative_to(root)): _parse(path) for path in root.rglob('*.html')
            if '_static' not in path.parts and '_sources' not in path.parts}


@needs_site
def test_index_links_every_module_role_and_guide_page(site):
    linked = {urldefrag(href)[0] for href in site['index.html'].links}
    expected = ([f'{name}_module.html' for name in _modules()] + [f'{name}_role.html' for name in _roles()]
                + [f'docsite/{page}.html' for page in _extra_docs()])
    for page in expected:
        assert page in site, f'{page} was not built'
        assert page in linked, f'index.html does not link {page}'


@needs_site
def test_every_internal_link_and_anchor_resolves(site):
    root = Path(HTML or '')
    broken = []
    for name, page in site.items():
        for href in page.links:
            if re.match(r'^[a-z][a-z0-9+.-]*:', href):  # http:, https:, mailto:
                continue
            target, anchor = urldefrag(href)
            target_name = os.path.normpath(os.path.join(os.path.dirname(name), unquote(target))) if target else name
            if not (root / target_name).exists():
                broken.append(f'{name}: {href} (no {target_name})')
            elif anchor and target_name.endswith('.html') and unquote(anchor) not in site[target_name].ids:
                broken.append(f'{name}: {href} (no anchor {anchor} in {target_name})')
    assert not broken, '\n'.join(broken)


@needs_site
def test_guide_pages_link_the_plugins_they_name(site):
    # :ansplugin: and :ansopt: references became links to the plugin pages (not plain text).
    which = {urldefrag(href)[0] for href in site['docsite/which_volume_snapshot.html'].links}
    assert '../volume_snapshot_module.html' in which
    assert any('openstack/cloud/volume_snapshot_module.html' in href for href in which)
    nfs = site['docsite/nfs_snapshots.html'].links
    option = '../volume_snapshot_module.html#ansible-collections-volsnap-openstack-volume-snapshot-module-parameter-'
    assert option + 'volume-format' in nfs
    assert option + 'state' in nfs


@needs_site
def test_module_pages_document_every_option(site):
    for name in _modules():
        source = (ROOT / 'plugins' / 'modules' / f'{name}.py').read_text()
        doc = yaml.safe_load(re.search(r"DOCUMENTATION = r'''(.*?)'''", source, re.S).group(1))
        ids = site[f'{name}_module.html'].ids
        for option in doc.get('options') or {}:
            assert f'parameter-{option}' in ids, (name, option)
