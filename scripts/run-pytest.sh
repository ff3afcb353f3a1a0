#!/usr/bin/env bash
# Run one pytest suite of the collection inside the build copy.
#   scripts/run-pytest.sh <label> <tests dir> [pytest args...]
# Treats pytest exit code 5 ("no tests collected") as a failure: a suite that
# ran no test is a defect, not a pass.
set -uo pipefail

label=$1 suite=$2
shift 2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_ROOT="${VOLSNAP_BUILD_ROOT:-$ROOT/.build}"
COLL="$BUILD_ROOT/ansible_collections/volsnap/openstack"
PY="$ROOT/.venv/bin/python"

cd "$COLL" || exit 1
if [[ ! -d $suite ]]; then
  echo "$label: FAILED: $suite does not exist in the build copy (no test files written or none tracked yet)" >&2
  exit 1
fi

export PYTHONPATH="$BUILD_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export ANSIBLE_COLLECTIONS_PATH="$BUILD_ROOT"
"$PY" -m pytest "$suite" "$@"
rc=$?
case $rc in
  0) ;;
  5) echo "$label: FAILED: pytest collected no tests in $suite (exit 5); a run with no tests counts as a failure" >&2
     rc=1 ;;
  *) echo "$label: FAILED: pytest exited $rc" >&2 ;;
esac
exit "$rc"
