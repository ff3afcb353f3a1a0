# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The built docs site (`make docs`: scripts/build-docs.sh runs this file with VOLSNAP_DOCS_HTML set to the
HTML directory) holds every module, role and guide page, all reachable from the index, with every internal link
and anchor resolving. Without VOLSNAP_DOCS_HTML every test fails: there is nothing to check."""

from __future__ import annotations

import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Set, Tuple
from urllib.parse import unquote, urldefrag

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tests' / 'unit' / 'meta'))
from test_docsite import _extra_docs, _modules, _roles  # noqa: E402  pylint: disable=wrong-import-position


# ---------------------------------------------------------------------------- the built site

HTML = os.environ.get('VOLSNAP_DOCS_HTML')


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


def test_index_links_every_module_role_and_guide_page(site):
    linked = {urldefrag(href)[0] for href in site['index.html'].links}
    expected = ([f'{name}_module.html' for name in _modules()] + [f'{name}_role.html' for name in _roles()]
                + [f'docsite/{page}.html' for page in _extra_docs()])
    for page in expected:
        assert page in site, f'{page} was not built'
        assert page in linked, f'index.html does not link {page}'


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


def test_guide_pages_link_the_plugins_they_name(site):
    # :ansplugin: and :ansopt: references became links to the plugin pages (not plain text).
    which = {urldefrag(href)[0] for href in site['docsite/which_volume_snapshot.html'].links}
    assert '../volume_snapshot_module.html' in which
    assert any('openstack/cloud/volume_snapshot_module.html' in href for href in which)
    nfs = site['docsite/nfs_snapshots.html'].links
    option = '../volume_snapshot_module.html#ansible-collections-volsnap-openstack-volume-snapshot-module-parameter-'
    assert option + 'volume-format' in nfs
    assert option + 'state' in nfs


def test_module_pages_document_every_option(site):
    for name in _modules():
        source = (ROOT / 'plugins' / 'modules' / f'{name}.py').read_text()
        doc = yaml.safe_load(re.search(r"DOCUMENTATION = r'''(.*?)'''", source, re.S).group(1))
        ids = site[f'{name}_module.html'].ids
        for option in doc.get('options') or {}:
            assert f'parameter-{option}' in ids, (name, option)
