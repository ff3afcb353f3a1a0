# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the same work with two revisions of the collection, in one run (no slowdown check).

Exports both revisions (``git archive``) into their own collection trees, then runs, alternating
(base, head, base, head, ...) so that drift of the machine hits both alike:

* ``bench_volume_snapshot.py --sizes-gib 1 --skip-playbook``: the module code path creating a snapshot
  of a thin 1 GiB volume, and deleting one holding 256 MiB (each revision's own benchmark script, since
  internal module paths differ between revisions);
* ``bench_rbd_image_clone_upload.py --sizes-gib 1 --copy-sizes-gib none --locations-sizes none``: the
  clone upload of a 1 GiB RBD volume to Glance on the lab (needs the lab: tests/lab/lab.sh start).

Prints each figure per revision (median over the rounds of each benchmark's own medians) and the ratio
head/base. Timings are reported, never asserted: a ratio within run-to-run noise (about 0.9-1.1 here) is
"no slowdown". The last line is one JSON object.

Run: python benchmarks/compare_revisions.py --base <rev> [--head HEAD] [--rounds 3] [--skip-rbd]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export(rev: str, workdir: str) -> str:
    """Export ``rev`` into <workdir>/<sha>/ansible_collections/volsnap/openstack; returns the collection root."""
    sha = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--verify', rev + '^{commit}'], check=True,
                         capture_output=True, text=True).stdout.strip()
    coll = os.path.join(workdir, sha[:12], 'ansible_collections', 'volsnap', 'openstack')
    os.makedirs(coll)
    archive = subprocess.Popen(['git', '-C', ROOT, 'archive', sha], stdout=subprocess.PIPE)
    subprocess.run(['tar', '-x', '-C', coll], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit('compare_revisions: git archive %s failed' % rev)
    return coll


def run_bench(coll: str, script: str, args: List[str]) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(coll))))
    proc = subprocess.run([sys.executable, os.path.join(coll, 'benchmarks', script)] + args, env=env, cwd=coll,
                          capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise SystemExit('compare_revisions: %s of %s failed (exit %d):\n%s\n%s'
                         % (script, coll, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
    return json.loads(lines[-1])


def median(values: List[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--base', required=True, help='the revision to compare against')
    parser.add_argument('--head', default='HEAD', help='the revision measured (default HEAD)')
    parser.add_argument('--rounds', type=int, default=3, help='alternating rounds per revision (default 3)')
    parser.add_argument('--skip-rbd', action='store_true', help='only the NFS snapshot benchmark (no lab needed)')
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix='volsnap-compare-', dir='/var/tmp' if os.path.isdir('/var/tmp') else None)
    figures: Dict[str, Dict[str, List[float]]] = {}
    try:
        trees = {'base': export(args.base, workdir), 'head': export(args.head, workdir)}
        for round_number in range(args.rounds):
            for name in ('base', 'head'):
                snap = run_bench(trees[name], 'bench_volume_snapshot.py', ['--sizes-gib', '1', '--skip-playbook'])
                mine = figures.setdefault(name, {})
                mine.setdefault('snapshot_create_1gib_s', []).append(snap['create']['sizes_gib']['1']['module_s'])
                mine.setdefault('snapshot_delete_256mib_s', []).append(snap['delete']['module_s'])
                if not args.skip_rbd:
                    rbd = run_bench(trees[name], 'bench_rbd_image_clone_upload.py',
                                    ['--sizes-gib', '1', '--copy-sizes-gib', 'none', '--locations-sizes', 'none'])
                    mine.setdefault('clone_upload_1gib_s', []).append(rbd['sizes']['1']['clone']['total_s'])
                print('round %d %s: %s' % (round_number + 1, name,
                                           ', '.join('%s %.4f' % (k, v[-1]) for k, v in mine.items())), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result: Dict[str, Any] = {'benchmark': 'compare_revisions', 'base': args.base, 'head': args.head,
                              'rounds': args.rounds, 'figures': {}}
    print()
    print('%-28s %12s %12s %8s' % ('median of rounds (s)', 'base', 'head', 'head/base'))
    for key in figures['base']:
        base, head = median(figures['base'][key]), median(figures['head'][key])
        ratio = head / base if base else None
        result['figures'][key] = {'base_s': base, 'head_s': head, 'ratio': ratio,
                                  'base_rounds': figures['base'][key], 'head_rounds': figures['head'][key]}
        print('%-28s %12.4f %12.4f %8s' % (key, base, head, '%.2fx' % ratio if ratio else '-'))
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
