# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: rbd_image_clone_upload's copy inside the cluster (ceph_copy) against the copy through Glance.

Volumes are RBD images made in the volume pool as client.admin (the module takes them by ``rbd_image``),
each holding the same --data-mib MiB (256 by default, half at the start, half at the end): 1 GiB, 10 GiB
and 100 GiB (--sizes-gib), thin. For every size, in one run:

* ceph_copy, Glance hashes: the module's executor (``Upload.execute``) with ``copy_in_cluster=true`` as
  --service-cloud (a user with the service role, so ``checksum_by=auto`` resolves to ``glance``: POST
  /v2/images/{id}/locations, Glance hashes in the background). The median of --repeat runs of the
  module's total time; then, for sizes up to --hash-wait-max-gib, how long Glance's background hash took
  after the module returned, and its checksum must equal the md5 of the volume's bytes (else exit 1).
* ceph_copy, module hashes (sizes in --module-hash-sizes, default 1,10): the same with
  ``checksum_by=module`` (the module hashes every byte of the size); its checksum must be right.
* copy through Glance (sizes in --copy-sizes, default 1,10): ``copy_in_cluster=false``; the checksum
  must be right. A size not measured is estimated from the largest measured size's rate (bytes per
  second of the size: the Glance copy sends the holes as zeros) and the table says "estimated".
* the copy primitive alone: this collection's ``Rbd.copy_sparse`` (allocated extents, 4 threads, zero
  chunks skipped) against librbd's own ``Image.copy`` from the same snapshot into Glance's pool.

Output: a table, ratios (Glance copy / ceph_copy), target lines, and as the LAST line one JSON object.
Timings are reported, never asserted: only wrong results (exit 1) or setup failures (exit 2) fail.

Run: PYTHONPATH=<dir holding ansible_collections/> python benchmarks/bench_ceph_copy.py
     [--sizes-gib 1,10,100] [--data-mib 256] [--repeat 3] [--copy-sizes 1,10] [--module-hash-sizes 1,10]
"""

from __future__ import annotations

import os
import platform
import sys
import time
import uuid

from ansible_collections.volsnap.openstack.benchmarks import _common
from ansible_collections.volsnap.openstack.benchmarks.bench_rbd_image_clone_upload import (
    LabBench,
    md5_of,
    upload_failed,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.rbd import Rbd, Ref
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.upload import Options
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.glance import Glance

BENCHMARK = 'ceph_copy'
TARGET_RATIO_1GIB = 5.0
TARGET_FLAT = 2.0          # ceph_copy's time at the largest size / at the smallest, same data held
HASH_WAIT_SECONDS = 1800


def parse_args(argv):
    p = _common.argument_parser(__doc__)
    p.add_argument('--sizes-gib', default='1,10,100', help='volume sizes in GiB (default 1,10,100)')
    p.add_argument('--data-mib', type=int, default=256, help='MiB of data in every volume (default 256)')
    p.add_argument('--repeat', type=int, default=3, help='ceph_copy runs per size (median; default 3)')
    p.add_argument('--copy-sizes', default='1,10', help='sizes copied through Glance; "none" for none (default 1,10)')
    p.add_argument('--module-hash-sizes', default='1,10',
                   help='sizes also run with checksum_by=module; "none" for none (default 1,10)')
    p.add_argument('--hash-wait-max-gib', type=int, default=10,
                   help='largest size whose Glance background hash is waited for and checked (default 10)')
    _common.add_lab_options(p)
    p.add_argument('--cloud', default=os.environ.get('VOLSNAP_BENCH_CLOUD', 'volsnap-lab'),
                   help='cloud without the service role (module hashes, Glance copy; default %(default)s)')
    p.add_argument('--service-cloud', default=os.environ.get('VOLSNAP_BENCH_SERVICE_CLOUD', 'volsnap-lab-service'),
                   help='cloud of a user with the service role (Glance hashes; default %(default)s)')
    _common.add_ceph_options(p)
    p.add_argument('--images-pool', default='images')
    args = p.parse_args(argv)
    _common.lab_defaults(args)
    args.sizes = _common.int_list(p, args.sizes_gib, '--sizes-gib')
    args.copy_sizes = [] if args.copy_sizes.strip() == 'none' else _common.int_list(p, args.copy_sizes, '--copy-sizes')
    args.module_sizes = ([] if args.module_hash_sizes.strip() == 'none'
                         else _common.int_list(p, args.module_hash_sizes, '--module-hash-sizes'))
    if args.data_mib < 2 or args.data_mib > 1024 or args.data_mib % 2:
        p.error('--data-mib must be an even number between 2 and 1024')
    if args.repeat < 1:
        p.error('--repeat must be >= 1')
    return args


class Bench(LabBench):
    def __init__(self, args):
        super().__init__(args)
        self.service_conn = self.openstack.connect(cloud=args.service_cloud)
        self.service_glance = Glance(self.service_conn)
        self.images = []  # (glance, id)
        self.md5s = {}
        for _attempt in range(6):  # warm the token caches of every API worker
            self.glance.stores()
            self.service_glance.stores()
        if self.service_glance.service_role() is not True:
            raise _common.BenchError('cloud %s has no service role: Glance would not take POST /locations from it'
                                     % args.service_cloud, _common.EXIT_SETUP)

    def close(self):
        for glance, image_id in self.images:
            glance.delete_image(image_id)
        self.remove_volumes()

    def make_volume(self, size_gib):
        """An RBD image of ``size_gib`` holding --data-mib MiB (half at each end); returns (name, size, writes)."""
        name = 'volsnap-bench-cc-%s-%dg' % (self.tag, size_gib)
        size = size_gib * _common.GIB
        half = self.args.data_mib * _common.MIB // 2
        self.rbd.RBD().create(self.ioctx, name, size, old_format=False,
                              features=int(self.cluster.conf_get('rbd_default_features') or 1))
        self.made.append(name)
        writes = [(0, half, 1), (size - half, half, 2)]
        self.write(name, writes)
        return name, size, writes

    def md5(self, name, size, writes):
        if name not in self.md5s:
            self.md5s[name] = md5_of(size, writes)
        return self.md5s[name]

    def upload(self, name, glance, **kw):
        opts = Options(rbd_image=name, volume_pool=self.args.volume_pool,
                       image_name='%s-%s' % (name, uuid.uuid4().hex[:6]), ceph_conf=self.args.ceph_conf,
                       ceph_user=self.args.ceph_user, keyring=self.args.keyring, timeout=3600, **kw)
        wall, result = _common.timed(self._execute, opts, glance)
        if result.get('image_id'):
            self.images.append((glance, result['image_id']))
        return result, wall

    def delete(self, glance, image_id):
        glance.delete_image(image_id)
        self.images.remove((glance, image_id))

    def wait_hash(self, glance, image_id):
        started = time.monotonic()
        while time.monotonic() - started < HASH_WAIT_SECONDS:
            image = glance.get_image(image_id) or {}
            if image.get('os_hash_value') and 'os_glance_hash_op_host' not in image:
                return time.monotonic() - started, image
            time.sleep(0.2)
        raise _common.BenchError('Glance did not hash image %s in %d s' % (image_id, HASH_WAIT_SECONDS))

    def check(self, result, path, want_md5=None, image=None):
        image = image or self.conn.image.get('/images/%s' % result['image_id']).json()
        if result.get('path') != path or image.get('status') != 'active':
            raise _common.BenchError('%s: path=%s status=%s (%s)' % (result.get('image_id'), result.get('path'),
                                                                     image.get('status'), result.get('why')))
        if want_md5 is not None and image.get('checksum') != want_md5:
            raise _common.BenchError('image %s (%s path) has checksum %s, the volume\'s md5 is %s'
                                     % (result['image_id'], path, image.get('checksum'), want_md5))

    def primitives(self, name):
        """Seconds of Rbd.copy_sparse and of librbd's Image.copy from one snapshot of ``name``."""
        rbd_ops = Rbd(self.cluster, self.rbd, 'admin')
        snap = Ref(self.args.volume_pool, name, 'bench')
        rbd_ops.create_snap(snap)
        out = {}
        try:
            dst = Ref(self.args.images_pool, 'volsnap-bench-cc-%s' % uuid.uuid4().hex[:8])
            out['copy_sparse_s'] = round(_common.timed(rbd_ops.copy_sparse, snap, dst)[0], 3)
            rbd_ops.remove(dst)
            dst = Ref(self.args.images_pool, 'volsnap-bench-cc-%s' % uuid.uuid4().hex[:8])
            images_ioctx = self.cluster.open_ioctx(self.args.images_pool)
            try:
                with self.rbd.Image(self.ioctx, name, snapshot='bench', read_only=True) as img:
                    started = time.monotonic()
                    img.copy(images_ioctx, dst.image, features=rbd_ops.default_features(), order=23)
                    out['librbd_copy_s'] = round(time.monotonic() - started, 3)
                self.rbd.RBD().remove(images_ioctx, dst.image)
            finally:
                images_ioctx.close()
        finally:
            rbd_ops.remove_snap(snap)
            rbd_ops.close()
        return out


def run(args):
    bench = Bench(args)
    sizes = {}
    try:
        for size_gib in args.sizes:
            name, size, writes = bench.make_volume(size_gib)
            entry = {'size_gib': size_gib, 'data_bytes': sum(w[1] for w in writes)}
            totals, walls = [], []
            for attempt in range(args.repeat):
                result, wall = bench.upload(name, bench.service_glance, copy_in_cluster=True)
                if result.get('checksum_by') != 'glance':
                    raise _common.BenchError('checksum_by resolved to %s for %s' % (result.get('checksum_by'),
                                                                                    args.service_cloud))
                bench.check(result, 'ceph_copy')
                totals.append(result['seconds']['total'])
                walls.append(wall)
                if attempt == 0:
                    entry['copy_phase_s'] = result['seconds']['phases'].get('copy_data')
                    entry['bytes_written'] = result['copied']['bytes_written']
                    if size_gib <= args.hash_wait_max_gib:
                        after, image = bench.wait_hash(bench.service_glance, result['image_id'])
                        bench.check(result, 'ceph_copy', bench.md5(name, size, writes), image)
                        entry['glance_hash_after_s'] = round(after, 3)
                bench.delete(bench.service_glance, result['image_id'])
            entry['ceph_copy'] = {'total_s': _common.median(totals), 'runs': len(totals),
                                  'wall_s': _common.median(walls),
                                  'load_average_1m': (_common.load_average() or [None])[0]}
            if size_gib in args.module_sizes:
                result, wall = bench.upload(name, bench.glance, copy_in_cluster=True, checksum_by='module')
                bench.check(result, 'ceph_copy', bench.md5(name, size, writes))
                entry['ceph_copy_module_hash'] = {'total_s': result['seconds']['total'],
                                                  'hash_s': result['seconds']['phases'].get('compute_hash'),
                                                  'load_average_1m': (_common.load_average() or [None])[0]}
                bench.delete(bench.glance, result['image_id'])
            if size_gib in args.copy_sizes:
                totals = []
                for _run in range(2 if size_gib <= 1 else 1):
                    result, wall = bench.upload(name, bench.glance)
                    bench.check(result, 'copy', bench.md5(name, size, writes))
                    totals.append(result['seconds']['total'])
                    bench.delete(bench.glance, result['image_id'])
                entry['glance_copy'] = {'total_s': _common.median(totals), 'runs': len(totals), 'estimated': False,
                                        'load_average_1m': (_common.load_average() or [None])[0]}
            entry['primitives'] = bench.primitives(name)
            sizes[str(size_gib)] = entry
    finally:
        bench.close()
    measured = [e for e in sizes.values() if e.get('glance_copy')]
    if measured:
        largest = max(measured, key=lambda e: e['size_gib'])
        rate = largest['glance_copy']['total_s'] / largest['size_gib']
        for e in sizes.values():
            if not e.get('glance_copy'):
                e['glance_copy'] = {'total_s': round(rate * e['size_gib'], 1), 'runs': 0, 'estimated': True,
                                    'from_size_gib': largest['size_gib']}
    for e in sizes.values():
        if e.get('glance_copy'):
            e['ratio'] = round(e['glance_copy']['total_s'] / e['ceph_copy']['total_s'], 1)
    return sizes


def report(args, sizes):
    print('rbd_image_clone_upload: copy inside the cluster (ceph_copy) vs copy through Glance, %d MiB of data each'
          % args.data_mib)
    rows = []
    for key, e in sizes.items():
        copy = e.get('glance_copy')
        module = e.get('ceph_copy_module_hash')
        rows.append(['%s G' % key, '%.3f' % e['ceph_copy']['total_s'],
                     '%.1f' % e['glance_hash_after_s'] if e.get('glance_hash_after_s') is not None else '-',
                     '%.2f' % module['total_s'] if module else '-',
                     ('%.1f%s' % (copy['total_s'], ' (est.)' if copy['estimated'] else '')) if copy else '-',
                     '%.1fx' % e['ratio'] if e.get('ratio') else '-',
                     '%s / %s' % (e['primitives'].get('copy_sparse_s'), e['primitives'].get('librbd_copy_s')),
                     str(e['ceph_copy']['load_average_1m'])])
    _common.table([('size', 7), ('ceph_copy s', 12), ('glance hash s', 14), ('module-hash s', 14), ('glance copy s', 16),
                   ('ratio', 8), ('copy_sparse / librbd copy s', 28), ('load', 6)], rows)
    for key, e in sizes.items():
        if (e.get('glance_copy') or {}).get('estimated'):
            print('%s GiB: the Glance copy is estimated from the %s GiB rate (not measured)'
                  % (key, e['glance_copy']['from_size_gib']))
    totals = [e['ceph_copy']['total_s'] for e in sizes.values()]
    flat = round(max(totals) / min(totals), 2) if min(totals) > 0 else None
    one = sizes.get('1', {})
    target = {'ratio_1gib_min': TARGET_RATIO_1GIB,
              'ratio_1gib_met': one['ratio'] >= TARGET_RATIO_1GIB if one.get('ratio') is not None else None,
              'ceph_copy_max_over_min': flat, 'flat_max': TARGET_FLAT,
              'flat_met': flat is not None and flat <= TARGET_FLAT}
    if one:
        print('ratio at 1 GiB: %s (target >= %.0fx: %s)'
              % (one.get('ratio'), TARGET_RATIO_1GIB, _common.goal(target['ratio_1gib_met'])))
    print('ceph_copy across sizes holding the same data: max/min = %s (target <= %.1f, time grows with the data '
          'held, not the size: %s)' % (flat, TARGET_FLAT, _common.goal(target['flat_met'])))
    print('(%s at the end of the run)' % _common.load_text())
    _common.emit({'benchmark': BENCHMARK, 'sizes': sizes, 'target': target, 'repeat': args.repeat,
                  'data_mib': args.data_mib, 'python': platform.python_version()})


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        _common.reexec_if_needed(args.python, __file__)
        sizes = run(args)
    except (VolsnapError, _common.BenchError) as exc:
        return upload_failed(exc)
    report(args, sizes)
    return 0


if __name__ == '__main__':
    sys.exit(main())
