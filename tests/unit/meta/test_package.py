# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The built collection tarball holds what users run, and nothing of the development tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SHIPPED_DIRS = ('plugins', 'roles', 'playbooks', 'meta')
ALLOWED_TOP = {'COPYING', 'README.md', 'MANIFEST.json', 'FILES.json', 'CHANGELOG.rst', 'changelogs', 'docs',
               'requirements.txt', 'bindep.txt', *SHIPPED_DIRS}
NEVER = ('tests/', 'scripts/', 'benchmarks/', 'extensions/', '.ci/', 'changelogs/fragments/', 'Makefile',
         'requirements-dev.txt', '.ansible-lint', '.gitignore', 'docs/development.md', 'docs/architecture.md',
         'mypy.ini')


def _galaxy() -> str:
    candidate = Path(sys.executable).parent / 'ansible-galaxy'
    return str(candidate) if candidate.exists() else (shutil.which('ansible-galaxy') or 'ansible-galaxy')


def test_tarball_holds_what_users_run(tmp_path):
    proc = subprocess.run([_galaxy(), 'collection', 'build', str(ROOT), '--output-path', str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tarball,) = tmp_path.glob('volsnap-openstack-*.tar.gz')
    with tarfile.open(str(tarball)) as archive:
        names = {member.name for member in archive.getmembers() if member.isfile()}
    assert {name.split('/', 1)[0] for name in names} <= ALLOWED_TOP
    for prefix in NEVER:
        assert not [name for name in names if name == prefix or name.startswith(prefix)], prefix
    assert {'COPYING', 'README.md', 'meta/runtime.yml', 'changelogs/changelog.yaml'} <= names
    assert 'GNU GENERAL PUBLIC LICENSE' in (ROOT / 'COPYING').read_text()
    for directory in SHIPPED_DIRS:
        for path in (ROOT / directory).rglob('*'):
            if path.is_file() and '__pycache__' not in path.parts:
                assert str(path.relative_to(ROOT)) in names, path
