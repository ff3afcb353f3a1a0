#!/usr/bin/env bash
# Mirror the working tree into .build/ansible_collections/volsnap/openstack,
# the layout ansible-test needs.
#
# Copied: every git-tracked file plus untracked files that .gitignore does not
# ignore (so uncommitted work is tested). Everything else in the copy is
# deleted (rsync --delete --delete-excluded), except the copy's own tests/output
# (ansible-test results) and .git.
#
# The copy gets its own empty git repository: ansible-test looks for .git
# walking up from the collection root, and would otherwise find this checkout,
# where .build/ is ignored, and see no files at all.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_ROOT="${VOLSNAP_BUILD_ROOT:-$ROOT/.build}"
DEST="$BUILD_ROOT/ansible_collections/volsnap/openstack"

command -v rsync >/dev/null || { echo "sync-build: rsync is missing; run 'make deps'" >&2; exit 1; }

filter=$(mktemp)
trap 'rm -f "$filter"' EXIT

{
  # never copied, and never deleted from the copy
  printf '%s\n' 'P /.git/' 'P /tests/output/'
  printf '%s\n' '- /.git/' '- /.build/' '- /.venv/' '- /tests/output/'
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard
  else
    # not a git checkout (e.g. an unpacked tarball): take every file
    (cd "$ROOT" && find . -type f -print0 | sed -z 's|^\./||')
  fi | while IFS= read -r -d '' path; do
    # rsync patterns: escape wildcard characters, anchor at the transfer root
    path=${path//\\/\\\\}
    path=${path//\[/\\[}
    path=${path//\*/\\*}
    path=${path//\?/\\?}
    printf '+ /%s\n' "$path"
  done
  printf '%s\n' '+ */' '- *'
} >"$filter"

mkdir -p "$DEST"
rsync -a --delete --delete-excluded --prune-empty-dirs --filter="merge $filter" "$ROOT/" "$DEST/"

if [[ ! -d $DEST/.git ]]; then
  git -C "$DEST" init -q
fi
echo "build: synced $(git -C "$DEST" ls-files --others --exclude-standard | wc -l) files to $DEST"
