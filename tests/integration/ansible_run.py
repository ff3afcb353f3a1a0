"""Run real ansible-playbook against localhost from the integration tests.

The collection must be importable by Ansible: the Makefile exports ANSIBLE_COLLECTIONS_PATH
pointing at the build copy (``.../ansible_collections/volsnap/openstack``). When it is not set,
the collection root's own location is used if it sits in an ``ansible_collections`` tree.
Modules run with the host's system Python (/usr/bin/python3), as on a real storage or compute node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

COLLECTION_ROOT = Path(__file__).resolve().parents[2]
HOST_PYTHON = os.environ.get("VOLSNAP_HOST_PYTHON", "/usr/bin/python3")


class PlaybookResult:
    def __init__(self, rc: int, output: str, results: Dict[str, Any]) -> None:
        self.rc = rc
        self.output = output
        self.results = results

    def __getitem__(self, name: str) -> Any:
        return self.results[name]


def collections_path() -> str:
    env = os.environ.get("ANSIBLE_COLLECTIONS_PATH")
    if env:
        return env
    if COLLECTION_ROOT.parent.parent.name == "ansible_collections":
        return str(COLLECTION_ROOT.parents[2])
    raise RuntimeError("ANSIBLE_COLLECTIONS_PATH is not set and the collection does not sit in an "
                       "ansible_collections/volsnap/openstack tree: run the tests through 'make integration'")


def ansible_playbook() -> str:
    candidate = Path(sys.executable).parent / "ansible-playbook"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ansible-playbook")
    if not found:
        raise RuntimeError("ansible-playbook not found: run 'make deps'")
    return found


def run_tasks(workdir: Path, tasks: List[Dict[str, Any]], registers: List[str], check: bool = False,
              diff: bool = False, extra_args: Optional[List[str]] = None,
              python: Optional[str] = None, env_extra: Optional[Dict[str, str]] = None) -> PlaybookResult:
    """Run ``tasks`` on localhost; every name in ``registers`` is dumped to JSON and returned.

    ``python`` is the interpreter the modules run with (default: the host's system Python); the
    OpenStack/RBD lab gives one with openstacksdk and Debian's rados/rbd bindings.

    Tasks that fail are kept going with ``ignore_errors`` only if the caller sets it per task.
    """
    out_dir = workdir / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    dump = [{
        "name": f"dump {name}",
        "ansible.builtin.copy": {"content": "{{ %s | to_json }}" % name, "dest": str(out_dir / f"{name}.json"),
                                 "mode": "0600"},
        "delegate_to": "localhost",
        "check_mode": False,
        "diff": False,
        "when": f"{name} is defined",
    } for name in registers]
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks + dump}]
    playbook = workdir / "playbook.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    inventory = workdir / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={python or HOST_PYTHON}\n")
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": collections_path(),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    })
    env.update(env_extra or {})
    argv = [ansible_playbook(), "-i", str(inventory), str(playbook)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    argv += extra_args or []
    proc = subprocess.run(argv, cwd=str(workdir), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    results = {}
    for name in registers:
        path = out_dir / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    return PlaybookResult(proc.returncode, proc.stdout, results)


def subprocess_runner(argv: List[str]) -> Tuple[int, str, str]:
    """A runner for module_utils' command wrappers (QemuImg), outside a module."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr
