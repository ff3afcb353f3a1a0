#!/usr/bin/env bash
# Idempotent development/CI bootstrap for the volsnap.openstack collection.
#
#  1. apt: installs the Debian packages the tests need (apt-get update runs
#     only when something is missing).
#  2. .venv: a Python 3.12 (pyenv) virtualenv with requirements-dev.txt;
#     reinstalled only when requirements-dev.txt (or the interpreter) changed.
#  3. ansible-test's pip bootstrap stand-in (~/.ansible/test/cache/get_pip_*.py)
#     so that `ansible-test sanity` works without internet access.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV="$ROOT/.venv"
REQS="$ROOT/requirements-dev.txt"
STAMP="$VENV/.requirements.sha256"
PY_SERIES="${VOLSNAP_PYTHON_SERIES:-3.12}"

APT_PACKAGES=(
  qemu-utils
  qemu-system-x86
  libvirt-daemon-system
  libvirt-daemon-driver-qemu
  libvirt-dev
  pkg-config
  python3-libvirt
  shellcheck
  rsync
)

log() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. Debian packages -----------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ $status != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "not root and no sudo: install ${missing[*]} by hand"
    SUDO=(sudo)
  fi
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" apt-get install -y -q "${missing[@]}" </dev/null
else
  log "apt: all ${#APT_PACKAGES[@]} packages present"
fi

# --- 2. Python 3.12 virtualenv ------------------------------------------------
if command -v pyenv >/dev/null 2>&1; then
  PYENV_DIR=$(pyenv root)
else
  PYENV_DIR="${PYENV_ROOT:-$HOME/.pyenv}"
fi
BASE_PY=""
for cand in "$PYENV_DIR"/versions/"$PY_SERIES".*/bin/python3; do
  [[ -x $cand ]] && BASE_PY=$cand   # glob sorts; last match wins
done
[[ -n $BASE_PY ]] || die "no pyenv Python $PY_SERIES found (looked for $PYENV_DIR/versions/$PY_SERIES.*/bin/python3); ansible-core 2.21 needs Python >= 3.12"
log "base interpreter: $BASE_PY ($("$BASE_PY" -V 2>&1))"

want_hash=$( { sha256sum "$REQS"; "$BASE_PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)

if [[ -x $VENV/bin/python ]] && ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 12))' 2>/dev/null; then
  log "existing .venv is broken or too old: recreating"
  rm -rf "$VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV"
  "$BASE_PY" -m venv "$VENV"
fi

if [[ -f $STAMP && $(cat "$STAMP") == "$want_hash" ]]; then
  log "venv: requirements unchanged, skipping pip install"
else
  log "venv: installing requirements-dev.txt"
  # /etc/pip.conf may name local find-links/index folders that do not exist on
  # every machine; pip warns once per package about them: drop that noise.
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  "$VENV/bin/python" -m pip install -q -r "$REQS" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  echo "$want_hash" >"$STAMP"
fi

# --- 3. ansible-test pip bootstrap stand-in ---------------------------------
# ansible-test gives each virtualenv it creates a pip by running get-pip.py,
# downloaded from a host that is unreachable here. It first looks for a cached
# copy at ~/.ansible/test/cache/get_pip_<pip version>.py, with the pip version
# pinned in ansible_test/_internal/python_requirements.py (get_venv_packages).
mapfile -t PIP_VERSIONS < <("$VENV/bin/python" - <<'PY'
import pathlib, re, ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
text = src.read_text()
body = text[text.index("def get_venv_packages"):]
body = body[:body.index("\ndef ", 1)]
for v in sorted(set(re.findall(r"""\bpip\s*=\s*['"]([0-9][^'"]*)['"]""", body))):
    print(v)
PY
)
((${#PIP_VERSIONS[@]})) || die "could not read the pip version ansible-test pins (get_venv_packages in ansible_test/_internal/python_requirements.py)"
CACHE_DIR="$HOME/.ansible/test/cache"
mkdir -p "$CACHE_DIR"
for ver in "${PIP_VERSIONS[@]}"; do
  target="$CACHE_DIR/get_pip_${ver//./_}.py"
  cat >"$target.tmp" <<'PY'
"""Offline stand-in for get-pip.py (written by volsnap scripts/bootstrap.sh).

ansible-test runs this inside a fresh virtualenv as
    get_pip.py [pip options] pip==X [--no-setuptools] [--no-wheel]
The real script downloads pip; this one bootstraps pip from the interpreter's
bundled wheel (ensurepip) and then lets that pip install the requested
packages from the configured index (/etc/pip.conf, PyPI).
"""
import os
import subprocess
import sys

env = dict(os.environ)
# ensurepip exports PIP_CONFIG_FILE=/dev/null for its own pip run; never let
# it leak into the second step, or /etc/pip.conf would be ignored.
if env.get("PIP_CONFIG_FILE") == os.devnull:
    del env["PIP_CONFIG_FILE"]

rc = subprocess.call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], env=env)
if rc:
    sys.exit(rc)

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel", "--no-pip"}
args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
if any(not a.startswith("-") for a in args):
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--quiet"] + args, env=env))
PY
  mv "$target.tmp" "$target"
  log "ansible-test pip ${ver} stand-in: $target"
done
log "done"
