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
# stands for a register that is not defined when the results are dumped
UNDEFINED = "__volsnap_test_not_registered__"


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
    dump_path = out_dir / "registers.json"
    # One task writes every registered result (each ansible.builtin.copy task costs a stat and a copy module run,
    # ~0.7 s on a busy 2-core machine: one per register was most of a many-case playbook's time). A name that was
    # never registered (its task skipped, or the play stopped before it) is written as UNDEFINED and left out.
    entries = ", ".join(f"{name!r}: ({name} if {name} is defined else {UNDEFINED!r})" for name in registers)
    dump = [{
        "name": "dump the registered results",
        "ansible.builtin.copy": {"content": "{{ {%s} | to_json }}" % entries, "dest": str(dump_path),
                                 "mode": "0600"},
        "delegate_to": "localhost",
        "check_mode": False,
        "diff": False,
    }] if registers else []
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
    if registers and dump_path.exists():
        dumped = json.loads(dump_path.read_text())
        results = {name: value for name, value in dumped.items() if value != UNDEFINED}
    return PlaybookResult(proc.returncode, proc.stdout, results)


def subprocess_runner(argv: List[str]) -> Tuple[int, str, str]:
    """A runner for module_utils' command wrappers (QemuImg), outside a module."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _module_pythonpath(workdir: Path) -> str:
    """A folder holding only ``ansible`` (the controller's package: its module_utils, as AnsiballZ ships them) and
    ``ansible_collections`` (the collection under test): any module interpreter imports the module's code from it,
    without the controller's other site-packages shadowing the interpreter's own."""
    import ansible  # the controller's ansible-core

    lib = workdir / "module-pythonpath"
    lib.mkdir(parents=True, exist_ok=True)
    for name, target in (("ansible", Path(ansible.__file__).parent),
                         ("ansible_collections", Path(collections_path().split(os.pathsep)[0]) / "ansible_collections")):
        link = lib / name
        if not link.is_symlink():
            link.symlink_to(target)
    return str(lib)


def run_module(workdir: Path, module: str, args: Dict[str, Any], check: bool = False, diff: bool = False,
               python: Optional[str] = None, env_extra: Optional[Dict[str, str]] = None,
               timeout: float = 600) -> Dict[str, Any]:
    """Run module ``volsnap.openstack.<module>`` directly with ``python``: its own code path (argument spec,
    check mode, diff, fail_json/exit_json) without ansible-playbook around it, as a module runs on its target.

    For cases about the module's behaviour, not Ansible's plumbing: it saves ansible-playbook's start-up and the
    result dump (~3 s a run on a busy 2-core machine). Every module keeps real ansible-playbook runs elsewhere.
    The result is the module's JSON with ``changed`` defaulting to false, as Ansible registers it. A run that
    prints no JSON result (a crash, a traceback) raises AssertionError with its output: never a pass.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    params = dict(args, _ansible_check_mode=check, _ansible_diff=diff,
                  _ansible_module_name=f"volsnap.openstack.{module}", _ansible_remote_tmp=str(workdir / "remote-tmp"),
                  _ansible_keep_remote_files=False)
    args_file = workdir / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    env = dict(os.environ)
    env.update(env_extra or {})
    env["PYTHONPATH"] = _module_pythonpath(workdir)
    argv = [python or HOST_PYTHON, "-m", f"ansible_collections.volsnap.openstack.plugins.modules.{module}",
            str(args_file)]
    proc = subprocess.run(argv, cwd=str(workdir), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)
    result = None
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            break
    if not isinstance(result, dict) or "Traceback (most recent" in proc.stderr:
        raise AssertionError(f"module {module} gave no clean JSON result (rc {proc.returncode}):\n"
                             f"stdout: {proc.stdout[-4000:]}\nstderr: {proc.stderr[-4000:]}")
    if bool(result.get("failed")) != (proc.returncode != 0):
        raise AssertionError(f"module {module} exited {proc.returncode} with failed={result.get('failed')!r}:\n"
                             f"{proc.stdout[-4000:]}")
    result.setdefault("changed", False)
    return result


PLAIN_TASK_KEYS = {"name", "register", "ignore_errors", "check_mode", "diff"}


def run_tasks_directly(workdir: Path, tasks: List[Dict[str, Any]], registers: List[str], check: bool = False,
                       diff: bool = False, python: Optional[str] = None,
                       env_extra: Optional[Dict[str, str]] = None) -> PlaybookResult:
    """``run_tasks`` for plain module tasks (no templating, loops or conditions), each run with ``run_module``.

    The same result shape: rc 2 if a task failed without ``ignore_errors`` (its register is then missing and no
    later task runs, as in a play), else 0; ``output`` is the results as JSON.
    """
    results: Dict[str, Any] = {}
    rc = 0
    for index, task in enumerate(tasks):
        modules = [key for key in task if key not in PLAIN_TASK_KEYS]
        assert len(modules) == 1 and modules[0].startswith("volsnap.openstack."), f"not a plain module task: {task}"
        args = task[modules[0]]
        assert "{{" not in json.dumps(args), f"templated arguments need run_tasks (ansible-playbook): {task}"
        result = run_module(workdir / f"task{index:03d}", modules[0].rsplit(".", 1)[-1], args,
                            check=bool(task.get("check_mode", check)), diff=bool(task.get("diff", diff)),
                            python=python, env_extra=env_extra)
        if result.get("failed") and not task.get("ignore_errors"):
            rc = 2
            break
        if task.get("register"):
            results[task["register"]] = result
    return PlaybookResult(rc, json.dumps(results, indent=1, sort_keys=True),
                          {name: value for name, value in results.items() if name in registers})
