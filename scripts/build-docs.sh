#!/usr/bin/env bash
# `make docs`: the collection's HTML docs site, built from the build copy
# ($BUILD_ROOT/ansible_collections/volsnap/openstack, ANSIBLE_COLLECTIONS_PATH=$BUILD_ROOT) into
# $BUILD_ROOT/docs/build/html:
#   1. antsibull-docs sphinx-init (one collection, --squash-hierarchy: the collection index is the site's
#      front page) writes conf.py and the antsibull-docs configuration into $BUILD_ROOT/docs;
#   2. antsibull-docs collection --fail-on-error writes the plugin and role pages plus the user guide
#      (docs/docsite/extra-docs.yml, docs/docsite/rst/*.rst, docs/docsite/links.yml) as RST;
#   3. sphinx-build -W --keep-going -n (nitpicky): any warning, unresolved reference or broken
#      cross-link fails the build;
#   4. tests/docs/test_site.py checks the site (every module and role and guide page is there and
#      linked from the index, every internal link and anchor resolves) with VOLSNAP_DOCS_HTML set.
# There is no network access: Sphinx's default intersphinx inventories (docs.python.org, docs.ansible.com)
# cannot be fetched, so the mapping is replaced by one local inventory for docs.ansible.com that holds the
# labels the generated pages point to there (Ansible's reference pages, plugins of other collections).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_ROOT="${VOLSNAP_BUILD_ROOT:-$ROOT/.build}"
COLL="$BUILD_ROOT/ansible_collections/volsnap/openstack"
DOCS="$BUILD_ROOT/docs"
PY="$ROOT/.venv/bin/python"
export ANSIBLE_COLLECTIONS_PATH="$BUILD_ROOT"
export PATH="$ROOT/.venv/bin:$PATH"

[[ -d $COLL ]] || { echo "docs: $COLL does not exist; run 'make build'" >&2; exit 1; }
[[ -f $COLL/docs/docsite/extra-docs.yml ]] || { echo "docs: docs/docsite/extra-docs.yml is missing" >&2; exit 1; }

# Run a command with its output hidden, unless it fails.
quiet() {
  local log rc=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || rc=$?
  ((rc == 0)) || { cat "$log" >&2; echo "docs: FAILED (exit $rc): $*" >&2; }
  rm -f "$log"
  return "$rc"
}

start=$SECONDS
rm -rf "$DOCS"
mkdir -p "$DOCS"
quiet antsibull-docs sphinx-init --use-current --squash-hierarchy --fail-on-error --dest-dir "$DOCS" \
  --project volsnap.openstack --copyright 'volsnap.openstack contributors' \
  --title 'volsnap.openstack' --html-short-title 'volsnap.openstack' volsnap.openstack

cat >>"$DOCS/conf.py" <<EOF

# Added by scripts/build-docs.sh: no network, so one local inventory for docs.ansible.com instead of the
# inventories above (it maps the labels the pages use there to their pages).
intersphinx_mapping = {
    'ansible_devel': ('https://docs.ansible.com/projects/ansible/devel/', '$DOCS/ansible_devel.inv'),
}
EOF

cd "$DOCS"
mkdir -p rst
chmod og-w rst  # antsibull-docs wants that directory only writable by itself
quiet antsibull-docs --config-file antsibull-docs.cfg collection --cleanup everything --fail-on-error --use-current \
  --squash-hierarchy --dest-dir rst volsnap.openstack

# The inventory: Ansible's reference labels, and every plugin of another collection the pages refer to
# (ansible_collections.<ns>.<collection>.<name>_<type>, on docs.ansible.com as antsibull-docs lays it out).
"$PY" - "$DOCS/rst" "$DOCS/ansible_devel.inv" <<'PY'
import pathlib
import re
import sys
import zlib

rst, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
entries = {
    'common_return_values': ('reference_appendices/common_return_values.html#common-return-values',
                             'Return Values'),
    'ansible_configuration_settings': ('reference_appendices/config.html#ansible-configuration-settings',
                                       'Ansible Configuration Settings'),
    # a module with an action plugin (operation_info) says so, linking here
    'action_plugins': ('plugins/action.html#action-plugins', 'Action Plugins'),
}
plugin_label = re.compile(r'ansible_collections\.([a-z0-9_]+)\.([a-z0-9_]+)\.([a-z0-9_]+)_'
                          r'(module|role|become|cache|callback|cliconf|connection|filter|httpapi|inventory|'
                          r'lookup|netconf|shell|strategy|test|vars)(?![a-z0-9_.-])')
for page in rst.rglob('*.rst'):
    for ns, coll, name, kind in plugin_label.findall(page.read_text(encoding='utf-8')):
        if (ns, coll) == ('volsnap', 'openstack'):
            continue
        label = f'ansible_collections.{ns}.{coll}.{name}_{kind}'
        anchor = label.replace('.', '-').replace('_', '-')
        entries[label] = (f'collections/{ns}/{coll}/{name}_{kind}.html#{anchor}', f'{ns}.{coll}.{name} {kind}')
body = ''.join(f'{label} std:label -1 {uri} {title}\n' for label, (uri, title) in sorted(entries.items()))
header = ('# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n'
          '# The remainder of this file is compressed using zlib.\n')
out.write_bytes(header.encode() + zlib.compress(body.encode()))
PY

sphinx-build -M html rst build -c . -W --keep-going -n -q
echo "docs: built $DOCS/build/html in $((SECONDS - start))s; checking it"

cd "$COLL"
VOLSNAP_DOCS_HTML="$DOCS/build/html" PYTHONPATH="$BUILD_ROOT" "$PY" -m pytest -q -p no:cacheprovider \
  tests/docs/test_site.py
echo "docs: $DOCS/build/html/index.html ($((SECONDS - start))s)"
