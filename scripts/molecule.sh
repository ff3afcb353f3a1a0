#!/usr/bin/env bash
# Run the molecule scenarios of the collection (extensions/molecule/<scenario>/molecule.yml), each
# with `molecule test` (destroy, syntax, create, prepare, check mode on fresh hosts, converge,
# idempotence, check mode on converged hosts, verify, destroy: see extensions/molecule/config.yml),
# in the build copy, one after the other. Exits non-zero when a scenario fails.
#
#   scripts/molecule.sh                 every scenario
#   scripts/molecule.sh NAME [NAME...]  only these scenarios
#
# Needs root (the hosts are network namespaces, tests/hosts/hosts.sh) and the venv (make deps).
# Run `make build` first (the Makefile target does). When a selected scenario forwards the lab's
# Ceph into its hosts (VOLSNAP_HOSTS_FORWARD_CEPH in its molecule.yml), the lab's Ceph is started
# first (tests/lab/lab.sh start ceph, idempotent).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_ROOT="${VOLSNAP_BUILD_ROOT:-$ROOT/.build}"
COLL="$BUILD_ROOT/ansible_collections/volsnap/openstack"
VENV_BIN="$ROOT/.venv/bin"

[[ -x $VENV_BIN/molecule ]] || { echo "molecule: $VENV_BIN/molecule not found: run 'make deps'" >&2; exit 1; }
[[ -d $COLL/extensions/molecule ]] || {
    echo "molecule: $COLL/extensions/molecule not found: run 'make build' first" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "molecule: must run as root (network-namespace hosts)" >&2; exit 1; }

cd "$COLL" || exit 1
export PATH="$VENV_BIN:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$BUILD_ROOT"
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-0}
export MOLECULE_NO_LOG=${MOLECULE_NO_LOG:-false}
# molecule's own cache and ansible-compat's, inside the build copy (not in $HOME)
export XDG_CACHE_HOME="$COLL/tests/output/.cache"

if (($#)); then
    scenarios=("$@")
else
    mapfile -t scenarios < <(find extensions/molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' \
        | xargs -r -n1 basename | sort)
fi
if ((${#scenarios[@]} == 0)); then
    echo "molecule: FAILED: no scenario found under extensions/molecule/" >&2
    exit 1
fi
for s in "${scenarios[@]}"; do
    [[ -f extensions/molecule/$s/molecule.yml ]] || { echo "molecule: no scenario '$s'" >&2; exit 1; }
done

need_ceph=()
for s in "${scenarios[@]}"; do
    grep -q 'VOLSNAP_HOSTS_FORWARD_CEPH' "extensions/molecule/$s/molecule.yml" && need_ceph+=("$s")
done
if ((${#need_ceph[@]})); then
    echo "molecule: ${need_ceph[*]} use the lab's Ceph: bash tests/lab/lab.sh start ceph"
    start=$SECONDS
    bash "$COLL/tests/lab/lab.sh" start ceph </dev/null || {
        echo "molecule: FAILED: the lab's Ceph does not start (tests/lab/lab.sh start ceph)" >&2; exit 1; }
    echo "molecule: lab Ceph ready in $((SECONDS - start))s"
fi

# The hosts' rootfs is built once (about 70 s) and cached; build it before timing the scenarios.
start=$SECONDS
bash "$COLL/tests/hosts/hosts.sh" build-rootfs || { echo "molecule: FAILED: cannot build the hosts' rootfs" >&2; exit 1; }
echo "molecule: rootfs ready in $((SECONDS - start))s"

summary=() failed=0 total_start=$SECONDS
for s in "${scenarios[@]}"; do
    echo
    echo "================ molecule test -s $s ================"
    start=$SECONDS
    if molecule test -s "$s" </dev/null; then
        summary+=("scenario $(printf '%-28s' "$s") PASS  $((SECONDS - start))s")
    else
        rc=$?
        failed=$((failed + 1))
        summary+=("scenario $(printf '%-28s' "$s") FAIL  $((SECONDS - start))s (exit $rc)")
    fi
    # whatever happened, leave no host of this scenario behind
    bash "$COLL/tests/hosts/hosts.sh" stop "$s" >/dev/null 2>&1 || true
done

echo
echo "================ molecule summary ================"
printf '%s\n' "${summary[@]}"
passed=$((${#scenarios[@]} - failed))
echo "molecule: all scenarios took $((SECONDS - total_start))s"
echo "molecule: $passed passed, $failed failed"
((failed == 0))
