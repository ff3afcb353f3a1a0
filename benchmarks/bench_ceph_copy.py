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

import argparse
import hashlib
import os
import platform
import sys
import time
import uuid

from ansible_collections.volsnap.openstack.benchmarks._common import (
    EXIT_SETUP,
    BenchError,
    emit,
    goal,
    int_list,
    load_average,
    load_text,
    median,
    table,
    timed,
)
from ansible_collections.volsnap.openstack.benchmarks.bench_rbd_image_clone_upload import chunk_data
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import connect as ceph_connect
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.rbd import Rbd, Ref
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.upload import Options, Upload
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.cinder import CinderApi
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.glance import Glance

BENCHMARK = 'ceph_copy'
GIB = 1 << 30
MIB = 1 << 20
TARGET_RATIO_1GIB = 5.0
TARGET_FLAT = 2.0          # ceph_copy's time at the largest size / at the smallest, same data held
HASH_WAIT_SECONDS = 1800


def parse_args(argv):
    lab = os.environ.get('VOLSNAP_LAB_DIR') or '/var/tmp/volsnap-lab'
    p = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    p.add_argument('--sizes-gib', default='1,10,100', help='volume sizes in GiB (default 1,10,100)')
    p.add_argument('--data-mib', type=int, default=256, help='MiB of data in every volume (default 256)')
    p.add_argument('--repeat', type=int, default=3, help='ceph_copy runs per size (median; default 3)')
    p.add_argument('--copy-sizes', default='1,10', help='sizes copied through Glance; "none" for none (default 1,10)')
    p.add_argument('--module-hash-sizes', default='1,10',
                   help='sizes also run with checksum_by=module; "none" for none (default 1,10)')
    p.add_argument('--hash-wait-max-gib', type=int, default=10,
                   help='largest size whose Glance background hash is waited for and checked (default 10)')
    p.add_argument('--lab-dir', default=lab, help='the lab state directory (default %(default)s)')
    p.add_argument('--python', default=None, help='interpreter with rados/rbd and openstacksdk '
                   '(default <lab-dir>/openstack/venv/bin/python)')
    p.add_argument('--clouds-yaml', default=None, help='default <lab-dir>/openstack/clouds.yaml')
    p.add_argument('--cloud', default=os.environ.get('VOLSNAP_BENCH_CLOUD', 'volsnap-lab'),
                   help='cloud without the service role (module hashes, Glance copy; default %(default)s)')
    p.add_argument('--service-cloud', default=os.environ.get('VOLSNAP_BENCH_SERVICE_CLOUD', 'volsnap-lab-service'),
                   help='cloud of a user with the service role (Glance hashes; default %(default)s)')
    p.add_argument('--ceph-conf', default=None, help='default <lab-dir>/ceph/ceph.conf')
    p.add_argument('--ceph-user', default='cinder', help='client the module uses (default cinder)')
    p.add_argument('--keyring', default=None, help='default <lab-dir>/ceph/ceph.client.<ceph-user>.keyring')
    p.add_argument('--admin-keyring', default=None, help='default <lab-dir>/ceph/ceph.client.admin.keyring')
    p.add_argument('--volume-pool', default='volumes')
    p.add_argument('--images-pool', default='images')
    args = p.parse_args(argv)
    args.python = args.python or os.path.join(args.lab_dir, 'openstack', 'venv', 'bin', 'python')
    args.clouds_yaml = args.clouds_yaml or os.path.join(args.lab_dir, 'openstack', 'clouds.yaml')
    args.ceph_conf = args.ceph_conf or os.path.join(args.lab_dir, 'ceph', 'ceph.conf')
    args.keyring = args.keyring or os.path.join(args.lab_dir, 'ceph', 'ceph.client.%s.keyring' % args.ceph_user)
    args.admin_keyring = args.admin_keyring or os.path.join(args.lab_dir, 'ceph', 'ceph.client.admin.keyring')
    args.sizes = int_list(p, args.sizes_gib, '--sizes-gib')
    args.copy_sizes = [] if args.copy_sizes.strip() == 'none' else int_list(p, args.copy_sizes, '--copy-sizes')
    args.module_sizes = ([] if args.module_hash_sizes.strip() == 'none'
                         else int_list(p, args.module_hash_sizes, '--module-hash-sizes'))
    if args.data_mib < 2 or args.data_mib > 1024 or args.data_mib % 2:
        p.error('--data-mib must be an even number between 2 and 1024')
    if args.repeat < 1:
        p.error('--repeat must be >= 1')
    return args


def reexec_if_needed(args):
    """Run again under --python when rados/rbd or openstacksdk cannot be imported here."""
    try:
        import rados  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
        import rbd  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
        import openstack  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
        return
    except ImportError as exc:
        if os.environ.get('VOLSNAP_BENCH_REEXEC') == '1':
            raise BenchError('%s cannot import the Ceph bindings or openstacksdk: %s' % (sys.executable, exc),
                             EXIT_SETUP)
    if not os.path.exists(args.python):
        raise BenchError('%s has no Ceph bindings; the lab interpreter %s does not exist either: start the lab '
                         '(bash tests/lab/lab.sh start) or pass --python' % (sys.executable, args.python), EXIT_SETUP)
    env = dict(os.environ, VOLSNAP_BENCH_REEXEC='1')
    sys.stdout.flush()
    os.execve(args.python, [args.python, os.path.abspath(__file__)] + sys.argv[1:], env)


def md5_of(size, writes):
    """md5 of a ``size``-byte volume that is zero except for ``writes``."""
    md5 = hashlib.md5()
    zeros = bytes(8 * MIB)
    pos = 0
    for off, length, seed in sorted(writes):
        while pos < off:
            n = min(len(zeros), off - pos)
            md5.update(zeros[:n])
            pos += n
        for done in range(0, length, 8 * MIB):
            md5.update(chunk_data(min(8 * MIB, length - done), seed, done))
        pos = off + length
    while pos < size:
        n = min(len(zeros), size - pos)
        md5.update(zeros[:n])
        pos += n
    return md5.hexdigest()


class Bench(object):
    def __init__(self, args):
        import openstack  # pylint: disable=import-outside-toplevel
        import rados  # pylint: disable=import-outside-toplevel
        import rbd  # pylint: disable=import-outside-toplevel
        self.args = args
        self.rbd = rbd
        os.environ['OS_CLIENT_CONFIG_FILE'] = args.clouds_yaml
        self.conn = openstack.connect(cloud=args.cloud)
        self.service_conn = openstack.connect(cloud=args.service_cloud)
        self.glance = Glance(self.conn)
        self.service_glance = Glance(self.service_conn)
        self.cinder = CinderApi(self.conn)
        self.cluster = rados.Rados(conffile=args.ceph_conf, rados_id='admin', conf={'keyring': args.admin_keyring})
        self.cluster.connect(timeout=30)
        self.ioctx = self.cluster.open_ioctx(args.volume_pool)
        self.tag = uuid.uuid4().hex[:8]
        self.made = []
        self.images = []  # (glance, id)
        self.md5s = {}
        for _attempt in range(6):  # warm the token caches of every API worker
            self.glance.stores()
            self.service_glance.stores()
        if self.service_glance.service_role() is not True:
            raise BenchError('cloud %s has no service role: Glance would not take POST /locations from it'
                             % args.service_cloud, EXIT_SETUP)

    def _execute(self, opts, glance):
        with ceph_connect(self.args.ceph_conf, self.args.ceph_user, self.args.keyring, 30) as cluster:
            return Upload(opts, {}, False).execute(glance, self.cinder, cluster, self.rbd)

    def close(self):
        for glance, image_id in self.images:
            glance.delete_image(image_id)
        for name in self.made:
            try:
                with self.rbd.Image(self.ioctx, name) as img:
                    for snap in list(img.list_snaps()):
                        if img.is_protected_snap(snap['name']):
                            img.unprotect_snap(snap['name'])
                        img.remove_snap(snap['name'])
                self.rbd.RBD().remove(self.ioctx, name)
            except Exception as exc:  # report, keep cleaning
                print('cleanup: could not remove %s/%s: %s' % (self.args.volume_pool, name, exc))
        self.ioctx.close()
        self.cluster.shutdown()

    def make_volume(self, size_gib):
        """An RBD image of ``size_gib`` holding --data-mib MiB (half at each end); returns (name, size, writes)."""
        name = 'volsnap-bench-cc-%s-%dg' % (self.tag, size_gib)
        size = size_gib * GIB
        half = self.args.data_mib * MIB // 2
        self.rbd.RBD().create(self.ioctx, name, size, old_format=False,
                              features=int(self.cluster.conf_get('rbd_default_features') or 1))
        self.made.append(name)
        writes = [(0, half, 1), (size - half, half, 2)]
        with self.rbd.Image(self.ioctx, name) as img:
            for off, length, seed in writes:
                for done in range(0, length, 8 * MIB):
                    img.write(chunk_data(min(8 * MIB, length - done), seed, done), off + done)
        return name, size, writes

    def md5(self, name, size, writes):
        if name not in self.md5s:
            self.md5s[name] = md5_of(size, writes)
        return self.md5s[name]

    def upload(self, name, glance, **kw):
        opts = Options(rbd_image=name, volume_pool=self.args.volume_pool,
                       image_name='%s-%s' % (name, uuid.uuid4().hex[:6]), ceph_conf=self.args.ceph_conf,
                       ceph_user=self.args.ceph_user, keyring=self.args.keyring, timeout=3600, **kw)
        wall, result = timed(self._execute, opts, glance)
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
        raise BenchError('Glance did not hash image %s in %d s' % (image_id, HASH_WAIT_SECONDS))

    def check(self, result, path, want_md5=None, image=None):
        image = image or self.conn.image.get('/images/%s' % result['image_id']).json()
        if result.get('path') != path or image.get('status') != 'active':
            raise BenchError('%s: path=%s status=%s (%s)' % (result.get('image_id'), result.get('path'),
                                                             image.get('status'), result.get('why')))
        if want_md5 is not None and image.get('checksum') != want_md5:
            raise BenchError('image %s (%s path) has checksum %s, the volume\'s md5 is %s'
                             % (result['image_id'], path, image.get('checksum'), want_md5))

    def primitives(self, name):
        """Seconds of Rbd.copy_sparse and of librbd's Image.copy from one snapshot of ``name``."""
        rbd_ops = Rbd(self.cluster, self.rbd, 'admin')
        snap = Ref(self.args.volume_pool, name, 'bench')
        rbd_ops.create_snap(snap)
        out = {}
        try:
            dst = Ref(self.args.images_pool, 'volsnap-bench-cc-%s' % uuid.uuid4().hex[:8])
            out['copy_sparse_s'] = round(timed(rbd_ops.copy_sparse, snap, dst)[0], 3)
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
                    raise BenchError('checksum_by resolved to %s for %s' % (result.get('checksum_by'),
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
            entry['ceph_copy'] = {'total_s': median(totals), 'runs': len(totals), 'wall_s': median(walls),
                                  'load_average_1m': (load_average() or [None])[0]}
            if size_gib in args.module_sizes:
                result, wall = bench.upload(name, bench.glance, copy_in_cluster=True, checksum_by='module')
                bench.check(result, 'ceph_copy', bench.md5(name, size, writes))
                entry['ceph_copy_module_hash'] = {'total_s': result['seconds']['total'],
                                                  'hash_s': result['seconds']['phases'].get('compute_hash'),
                                                  'load_average_1m': (load_average() or [None])[0]}
                bench.delete(bench.glance, result['image_id'])
            if size_gib in args.copy_sizes:
                totals = []
                for _run in range(2 if size_gib <= 1 else 1):
                    result, wall = bench.upload(name, bench.glance)
                    bench.check(result, 'copy', bench.md5(name, size, writes))
                    totals.append(result['seconds']['total'])
                    bench.delete(bench.glance, result['image_id'])
                entry['glance_copy'] = {'total_s': median(totals), 'runs': len(totals), 'estimated': False,
                                        'load_average_1m': (load_average() or [None])[0]}
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
    table([('size', 7), ('ceph_copy s', 12), ('glance hash s', 14), ('module-hash s', 14), ('glance copy s', 16),
           ('ratio', 8), ('copy_sparse / librbd copy s', 28), ('load', 6)], rows)
    for key, e in sizes.items():
        if e['glance_copy'].get('estimated'):
            print('%s GiB: the Glance copy is estimated from the %s GiB rate (not measured)'
                  % (key, e['glance_copy']['from_size_gib']))
    totals = [e['ceph_copy']['total_s'] for e in sizes.values()]
    flat = round(max(totals) / min(totals), 2) if min(totals) > 0 else None
    one = sizes.get('1', {})
    target = {'ratio_1gib_min': TARGET_RATIO_1GIB,
              'ratio_1gib_met': (one.get('ratio') or 0) >= TARGET_RATIO_1GIB if one else None,
              'ceph_copy_max_over_min': flat, 'flat_max': TARGET_FLAT,
              'flat_met': flat is not None and flat <= TARGET_FLAT}
    if one:
        print('ratio at 1 GiB: %s (target >= %.0fx: %s)'
              % (one.get('ratio'), TARGET_RATIO_1GIB, goal(target['ratio_1gib_met'])))
    print('ceph_copy across sizes holding the same data: max/min = %s (target <= %.1f, time grows with the data '
          'held, not the size: %s)' % (flat, TARGET_FLAT, goal(target['flat_met'])))
    print('(%s at the end of the run)' % load_text())
    emit({'benchmark': BENCHMARK, 'sizes': sizes, 'target': target, 'repeat': args.repeat,
          'data_mib': args.data_mib, 'python': platform.python_version()})


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        reexec_if_needed(args)
        sizes = run(args)
    except VolsnapError as exc:
        print('setup failed: the module could not upload: %s' % exc, file=sys.stderr)
        return EXIT_SETUP
    except BenchError as exc:
        print('%s: %s' % ('error' if exc.code == 1 else 'setup failed', exc), file=sys.stderr)
        return exc.code
    report(args, sizes)
    return 0


if __name__ == '__main__':
    sys.exit(main())
