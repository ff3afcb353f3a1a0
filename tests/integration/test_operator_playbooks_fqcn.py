"""Every playbook of the collection runs by its fully qualified name from an installed collection.

The collection is built into a tarball (ansible-galaxy collection build, as users get it) and installed
into a fresh collections path; ``ansible-playbook volsnap.openstack.<name>`` is then run from an
unrelated directory, so that nothing resolves through the source tree: ``--syntax-check`` for every
playbooks/<name>.yml, and ``--list-tasks`` of the demo, which must list every part it imports.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml

from ansible_run import COLLECTION_ROOT, ansible_playbook


def run(argv: List[str], cwd: Path, env: Dict[str, str]) -> str:
    proc = subprocess.run(argv, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} failed (rc {proc.returncode}):\n{proc.stdout[-6000:]}"
    return proc.stdout


class Installed:
    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root                      # the collections path
        self.collection = root / "ansible_collections" / "volsnap" / "openstack"
        self.workdir = workdir                # an unrelated directory to run from
        # without PYTHONPATH (the test run's points at the build copy): only the installed copy can answer
        environ = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        self.env = dict(environ, ANSIBLE_COLLECTIONS_PATH=str(root), ANSIBLE_NOCOLOR="1",
                        ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"),
                        ANSIBLE_DEPRECATION_WARNINGS="0")

    def playbook(self, *args: str) -> str:
        return run([ansible_playbook(), *args], self.workdir, self.env)

    def playbook_names(self) -> List[str]:
        return sorted(path.stem for path in (self.collection / "playbooks").glob("*.yml"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("fqcn")
    galaxy = str(Path(ansible_playbook()).parent / "ansible-galaxy")
    # --force: ansible-galaxy skips the install when it finds the collection importable (PYTHONPATH holds the build copy)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_COLLECTIONS_PATH=str(base / "collections"))
    run([galaxy, "collection", "build", str(COLLECTION_ROOT), "--output-path", str(base / "dist")], base, env)
    (tarball,) = (base / "dist").glob("volsnap-openstack-*.tar.gz")
    run([galaxy, "collection", "install", "--offline", "--no-deps", "--force", "-p", str(base / "collections"), str(tarball)],
        base, env)
    installed_copy = Installed(base / "collections", base / "work")
    assert (installed_copy.collection / "MANIFEST.json").is_file(), "ansible-galaxy installed nothing"
    (base / "work").mkdir()
    yield installed_copy


def task_names(tasks: List[Dict[str, Any]]) -> Iterator[str]:
    """The names of the tasks --list-tasks shows: a block's tasks instead of its name (not its rescue or always)."""
    for task in tasks:
        if "block" in task:
            yield from task_names(task["block"])
        else:
            yield task["name"]


def test_every_playbook_passes_syntax_check_by_fqcn(installed: Installed) -> None:
    names = installed.playbook_names()
    assert "demo" in names and "upload_volume_to_image" in names, names
    output = installed.playbook("--syntax-check", *[f"volsnap.openstack.{name}" for name in names])
    for name in names:
        path = installed.collection / "playbooks" / f"{name}.yml"
        assert f"playbook: {path}" in output, (name, output[-4000:])
    # a directory named like a playbook shadows it for the FQCN (playbooks/demo/ did so for demo.yml)
    for entry in (installed.collection / "playbooks").iterdir():
        if entry.is_dir():
            assert entry.name not in names, f"playbooks/{entry.name}/ clashes with playbooks/{entry.name}.yml"


def test_demo_lists_the_tasks_of_every_part_by_fqcn(installed: Installed) -> None:
    demo = installed.collection / "playbooks" / "demo.yml"
    parts = [entry["ansible.builtin.import_playbook"] for entry in yaml.safe_load(demo.read_text())]
    assert parts, demo
    output = installed.playbook("volsnap.openstack.demo", "--list-tasks")
    listed_plays = re.findall(r"^\s*play #\d+ \([^)]*\): (.+?)\tTAGS:", output, re.MULTILINE)
    expected_plays = []
    for part in parts:
        plays = yaml.safe_load((demo.parent / part).read_text())
        expected_plays += [play["name"] for play in plays]
        for play in plays:
            for name in task_names(play.get("tasks", [])):
                assert name in output, (part, name)
    assert [play.strip() for play in listed_plays] == expected_plays, output[-4000:]
