#!/usr/bin/env bash
# `make test`: deps, sanity, units, integration, molecule, lint, in that order; stops at
# the first failing stage and prints one summary line per stage.
# With CI=true the libvirt lab (tests/lab/lab.sh) is stopped at the end,
# whatever happened; locally it is left running for the next run.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
MAKE_CMD=${MAKE:-make}
STAGES=(deps sanity units integration molecule lint)
summary=()
total_start=$SECONDS

finish() {
  local rc=$?
  if [[ ${CI:-} == true && -f tests/lab/lab.sh ]]; then
    echo "== CI: stopping the lab (tests/lab/lab.sh stop)"
    bash tests/lab/lab.sh stop </dev/null || echo "== CI: lab stop failed (ignored)"
  fi
  echo
  echo "================ make test summary ================"
  local line
  for line in "${summary[@]}"; do echo "$line"; done
  if ((rc == 0)); then
    echo "make test: OK, all ${#STAGES[@]} stages passed in $((SECONDS - total_start))s"
  else
    echo "make test: FAILED (exit $rc) after $((SECONDS - total_start))s"
  fi
  exit "$rc"
}
trap finish EXIT

for stage in "${STAGES[@]}"; do
  echo
  echo "================ stage: $stage ================"
  start=$SECONDS
  if "$MAKE_CMD" --no-print-directory "$stage" </dev/null; then
    summary+=("stage $(printf '%-12s' "$stage") PASS  $((SECONDS - start))s")
  else
    rc=$?
    summary+=("stage $(printf '%-12s' "$stage") FAIL  $((SECONDS - start))s (exit $rc)")
    idx=0
    for s in "${STAGES[@]}"; do
      ((idx)) && summary+=("stage $(printf '%-12s' "$s") NOT RUN")
      [[ $s == "$stage" ]] && idx=1
    done
    exit "$rc"
  fi
done
