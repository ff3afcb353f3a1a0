# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: audit a whole NFS share (``nfs_share_audit``) and a whole RBD pool (``rbd_pool_audit``) vs. the naive
way an operator would script it.

Share: a temporary directory with --volumes volumes laid out as Cinder's NFS driver does (a sparse raw
``volume-<id>``, a qcow2 overlay ``volume-<id>.<snapshot id>`` backed by it, the ``.info`` file naming it: 3 files per
volume), plus a few planted leaks. The overlays are copies of one overlay made by qemu-img whose backing name is
rewritten in place (same length), so building 1000 volumes takes seconds. Measured in the same run:

* audit: ``audit_share(dir)`` in-process (median of --repeat runs after a warm-up); it must find exactly the planted
  leaks, else exit 1;
* naive: ``qemu-img info --output=json -U <file>`` for every image file (a sample of --sample files, extrapolated
  to all of them, said so in the output).

Pool (when a Ceph configuration is given with --ceph-conf, or the lab's exists; run under an interpreter with the
rados/rbd bindings, --pool-python, default the lab's): a new temporary pool with --images images (every third a clone
of the one before, through a protected ``<clone>.clone_snap``), one of them unknown to the Cinder ids given; deleted at
the end. Measured:

* audit: ``read_pool`` + ``judge_cinder_pool`` of :mod:`._ceph.audit`; it must find exactly the planted leak;
* naive: ``rbd info --format json`` per image (a sample of --sample images, extrapolated).

Output: a table, goal lines, and as the LAST line one JSON object. Timings are reported, never asserted.

Run: PYTHONPATH=<dir holding ansible_collections/> python benchmarks/bench_audit.py [--volumes 1000] [--repeat 5]
     [--sample 100] [--ceph-conf /etc/ceph/ceph.conf --keyring <admin keyring> --images 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import uuid

from ansible_collections.volsnap.openstack.benchmarks import _common
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.audit import audit_share

BENCHMARK = 'storage_audit'
SHARE_GOAL_SECONDS = 5.0
POOL_GOAL_SECONDS = 10.0
LAB_DIR = os.environ.get('VOLSNAP_LAB_DIR', '/var/tmp/volsnap-lab')
PLACEHOLDER = 'volume-00000000-0000-0000-0000-000000000000'


def build_share(directory, volumes, qemu_img):
    """``volumes`` Cinder-style volumes with one snapshot each, plus planted leaks; returns the leak names."""
    template_dir = tempfile.mkdtemp(prefix='tmpl-', dir=directory)
    _common.run([qemu_img, 'create', '-f', 'raw', os.path.join(template_dir, PLACEHOLDER), '1M'])
    _common.run([qemu_img, 'create', '-f', 'qcow2', '-b', PLACEHOLDER, '-F', 'raw',
                 os.path.join(template_dir, 'overlay'), '1M'])
    with open(os.path.join(template_dir, 'overlay'), 'rb') as handle:
        overlay = handle.read()
    shutil.rmtree(template_dir)
    if overlay.count(PLACEHOLDER.encode()) != 1:
        raise _common.BenchError('the overlay template does not hold its backing name once', 2)
    for _index in range(volumes):
        vid, sid = str(uuid.uuid4()), str(uuid.uuid4())
        name = 'volume-%s' % vid
        with open(os.path.join(directory, name), 'wb') as handle:
            handle.truncate(1 << 20)
        with open(os.path.join(directory, '%s.%s' % (name, sid)), 'wb') as handle:
            handle.write(overlay.replace(PLACEHOLDER.encode(), name.encode()))
        with open(os.path.join(directory, name + '.info'), 'w') as handle:
            json.dump({'active': '%s.%s' % (name, sid), sid: '%s.%s' % (name, sid)}, handle, indent=1, sort_keys=True)
    # planted: an orphan overlay of the last volume, a stale lock of a deleted volume, a stale temporary file
    orphan = '%s.%s' % (name, uuid.uuid4())
    with open(os.path.join(directory, orphan), 'wb') as handle:
        handle.write(overlay.replace(PLACEHOLDER.encode(), name.encode()))
    lock = '.volsnap-nfs-%s.lock' % uuid.uuid4()
    open(os.path.join(directory, lock), 'w').close()
    temporary = '.%s.info.%s.volsnap-tmp' % (name, uuid.uuid4().hex[:16])
    open(os.path.join(directory, temporary), 'w').close()
    return sorted([orphan, lock, temporary])


def bench_share(args, qemu_img):
    directory = tempfile.mkdtemp(prefix='bench-audit-')
    try:
        leaks = build_share(directory, args.volumes, qemu_img)
        files = sorted(os.listdir(directory))
        _common.timed(audit_share, directory)  # warm-up
        samples, found = [], None
        for _run in range(args.repeat):
            seconds, audit = _common.timed(audit_share, directory)
            samples.append(seconds)
            found = sorted(c['name'] for c in audit['cleanup_candidates'])
            if found != leaks or len(audit['files']) != len(files):
                raise _common.BenchError('the audit found %s as leaks (planted: %s) over %d of %d files'
                                         % (found, leaks, len(audit['files']), len(files)))
            if any(not v['chain_safe'] for v in audit['volumes'] if v['exists']):
                raise _common.BenchError('the audit judged a healthy chain unsafe')
        images = [f for f in files if f.startswith('volume-') and not f.endswith('.info')]
        sample = images[:args.sample]
        naive = 0.0
        for name in sample:
            seconds, out = _common.timed(_common.run, [qemu_img, 'info', '--output=json', '-U',
                                                       os.path.join(directory, name)])
            json.loads(out)
            naive += seconds
        naive_all = naive / len(sample) * len(images)
        return {'files': len(files), 'volumes': args.volumes, 'audit_seconds': round(_common.median(samples), 3),
                'naive_sampled_files': len(sample), 'naive_image_files': len(images),
                'naive_seconds_extrapolated': round(naive_all, 2),
                'ratio': round(naive_all / _common.median(samples), 1)}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def bench_pool(args):
    """The pool part, in the interpreter that has Ceph's bindings (``--pool-python``, default the lab's)."""
    try:
        import rados  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
        here = sys.executable
    except ImportError:
        here = args.pool_python
        if not os.path.exists(here):
            raise _common.BenchError('no rados bindings here and no %s: pass --pool-python' % here, 2)
    env = dict(os.environ)
    argv = [here, os.path.abspath(__file__), '--pool-only', '--ceph-conf', args.ceph_conf, '--keyring', args.keyring,
            '--images', str(args.images), '--sample', str(args.sample), '--repeat', str(args.repeat)]
    out = _common.run(argv, env=env)
    return json.loads(out.strip().splitlines()[-1])


def pool_only(args):
    """Create a temporary pool of --images images (a third with a protected snapshot, some clones of them, two
    planted leaks), time the audit (read_pool + judge_cinder_pool) and ``rbd info`` per image on a sample; print JSON.
    The pool is deleted at the end."""
    import rados  # pylint: disable=import-outside-toplevel
    import rbd  # pylint: disable=import-outside-toplevel
    from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.audit import (  # pylint: disable=import-outside-toplevel
        judge_cinder_pool,
        read_pool,
    )
    from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.rbd import Rbd  # pylint: disable=import-outside-toplevel

    cluster = rados.Rados(conffile=args.ceph_conf, rados_id='admin', conf={'keyring': args.keyring})
    cluster.connect(timeout=30)
    ops = Rbd(cluster, rbd)  # what the module reads the pool through
    pool = 'volsnap-bench-audit-%s' % uuid.uuid4().hex[:8]
    cluster.create_pool(pool)
    try:
        ioctx = cluster.open_ioctx(pool)
        rbd.RBD().pool_init(ioctx, True)
        known = []
        for index in range(args.images):
            vid = str(uuid.uuid4())
            name = 'volume-%s' % vid
            if index % 3 == 1 and index + 1 < args.images:
                parent = 'volume-%s' % known[-1]
                snap = '%s.clone_snap' % name
                with rbd.Image(ioctx, parent) as image:
                    image.create_snap(snap)
                    image.protect_snap(snap)
                rbd.RBD().clone(ioctx, parent, snap, ioctx, name, features=rbd.RBD_FEATURE_LAYERING)
            else:
                rbd.RBD().create(ioctx, name, 1 << 30, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
            known.append(vid)
        leaked = known.pop()  # an image of a volume Cinder no longer has
        _common.timed(read_pool, ops, pool)  # warm-up
        samples = []
        for _run in range(args.repeat):
            seconds, images = _common.timed(read_pool, ops, pool)
            samples.append(seconds)
            audit = judge_cinder_pool(images, known, [], pool)
            found = [c['name'] for c in audit['cleanup_candidates']]
            if found != ['volume-%s' % leaked] or len(audit['images']) != args.images:
                raise _common.BenchError('the pool audit found %s as leaks (planted: volume-%s) over %d images'
                                         % (found, leaked, len(audit['images'])))
        names = ['volume-%s' % vid for vid in known][:args.sample]
        naive = 0.0
        for name in names:
            seconds, out = _common.timed(_common.run, ['rbd', '--conf', args.ceph_conf, '--id', 'admin',
                                                       '--keyring', args.keyring, 'info', '--format', 'json',
                                                       '%s/%s' % (pool, name)])
            json.loads(out)
            naive += seconds
        naive_all = naive / len(names) * args.images
        print(json.dumps({'images': args.images, 'audit_seconds': round(_common.median(samples), 3),
                          'naive_sampled_images': len(names), 'naive_seconds_extrapolated': round(naive_all, 2),
                          'ratio': round(naive_all / _common.median(samples), 1)}))
    finally:
        ops.close()
        with contextlib.suppress(Exception):
            ioctx.close()
        cluster.delete_pool(pool)
        cluster.shutdown()


def main():
    parser = _common.argument_parser(__doc__)
    parser.add_argument('--volumes', type=int, default=1000)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--sample', type=int, default=100)
    parser.add_argument('--qemu-img')
    parser.add_argument('--ceph-conf')
    parser.add_argument('--keyring')
    parser.add_argument('--images', type=int, default=1000)
    parser.add_argument('--pool-python', default=os.path.join(LAB_DIR, 'openstack', 'venv', 'bin', 'python'),
                        help='an interpreter with the rados/rbd bindings (default: the lab\'s)')
    parser.add_argument('--pool-only', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ceph_conf is None and os.path.exists(os.path.join(LAB_DIR, 'ceph', 'ceph.conf')):
        args.ceph_conf = os.path.join(LAB_DIR, 'ceph', 'ceph.conf')
        args.keyring = args.keyring or os.path.join(LAB_DIR, 'ceph', 'ceph.client.admin.keyring')
    if args.pool_only:
        try:
            pool_only(args)
        except _common.BenchError as exc:
            print('error: %s' % exc, file=sys.stderr)
            return exc.code
        return 0
    try:
        qemu_img, version = _common.qemu_img_tool(args.qemu_img)
        share = bench_share(args, qemu_img)
        pool = bench_pool(args) if args.ceph_conf else None
    except _common.BenchError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return exc.code
    print('%s, %s' % (version, _common.load_text()))
    rows = [['share', '%d files' % share['files'], '%.3f' % share['audit_seconds'],
             '%.2f' % share['naive_seconds_extrapolated'], '%.1fx' % share['ratio']]]
    if pool is not None:
        rows.append(['pool', '%d images' % pool['images'], '%.3f' % pool['audit_seconds'],
                     '%.2f' % pool['naive_seconds_extrapolated'], '%.1fx' % pool['ratio']])
    _common.table([('what', 6), ('size', 12), ('audit s', 9), ('naive s', 9), ('ratio', 8)], rows)
    print('naive = qemu-img info per image file / rbd info per image, measured on %d of them and extrapolated'
          % args.sample)
    share_met = share['audit_seconds'] < SHARE_GOAL_SECONDS if share['files'] >= 3000 else None
    print('goal: share of 3000 files in < %.0f s: %s' % (SHARE_GOAL_SECONDS, _common.goal(share_met)))
    pool_met = None if pool is None else pool['audit_seconds'] < POOL_GOAL_SECONDS
    print('goal: pool of 1000 images in < %.0f s: %s' % (POOL_GOAL_SECONDS, _common.goal(pool_met)))
    _common.emit({'benchmark': BENCHMARK, 'share': share, 'pool': pool, 'share_goal': _common.goal(share_met),
                  'pool_goal': _common.goal(pool_met)})
    return 0


if __name__ == '__main__':
    sys.exit(main())
