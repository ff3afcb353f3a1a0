#!/usr/bin/env bash
# `make test`: deps, sanity, units, integration, molecule, lint, docs, in that order; stops at
# the first failing stage and prints one summary line per stage.
# With CI=true the libvirt lab (tests/lab/lab.sh) is stopped at the end,
# whatever happened; locally it is left running for the next run.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
MAKE_CMD=${MAKE:-make}
# set once the deps stage passed (below); never taken from the caller: the deps stage always runs
unset VOLSNAP_DEPS_DONE
STAGES=(deps sanity units integration molecule lint docs)
summary=()
total_start=$SECONDS

finish() {
  local rc=$?
  [[ -n ${prep_pid:-} ]] && wait "$prep_pid"
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

# Once deps passed, the lab's packages and services and the molecule hosts' rootfs are prepared in
# the background (mostly downloads and waiting) while sanity and units use the CPU; integration waits
# for it. The stages start the lab themselves anyway (idempotent, serialised by lab.sh's lock), so a
# failure here only shows up again, with its message, in the stage that needs the lab.
prep_pid='' prep_log=$ROOT/.build/prepare-lab.log
prepare_lab() {
  mkdir -p "$(dirname "$prep_log")"
  echo "== preparing the lab and the hosts' rootfs in the background (log: $prep_log)"
  (
    prep_start=$SECONDS
    bash tests/lab/lab.sh install </dev/null && bash tests/lab/lab.sh start </dev/null &&
      bash tests/hosts/hosts.sh build-rootfs </dev/null
    echo "prepare: exit $? after $((SECONDS - prep_start))s"
  ) >"$prep_log" 2>&1 &
  prep_pid=$!
}
wait_prepared() {
  [[ -n $prep_pid ]] || return 0
  echo "== waiting for the background lab preparation"
  wait "$prep_pid"
  prep_pid=''
  tail -n 5 "$prep_log"
}

for stage in "${STAGES[@]}"; do
  echo
  echo "================ stage: $stage ================"
  [[ $stage == integration || $stage == molecule ]] && wait_prepared
  start=$SECONDS
  if "$MAKE_CMD" --no-print-directory "$stage" </dev/null; then
    summary+=("stage $(printf '%-12s' "$stage") PASS  $((SECONDS - start))s")
    if [[ $stage == deps ]]; then
      # the later stages' `deps` prerequisite is then a no-op (see the Makefile)
      export VOLSNAP_DEPS_DONE=1
      if [[ ${VOLSNAP_PREPARE_LAB:-true} == true && -f tests/lab/lab.sh ]]; then
        prepare_lab
      fi
    fi
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
