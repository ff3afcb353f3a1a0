# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: rbd_image_clone_upload's clone path against its copy path, on the lab's Ceph + Glance.

Volumes are RBD images made in the volume pool as client.admin (the module takes them by
``rbd_image``, the same code path as a Cinder volume without the Cinder lookup): 1 GiB holding
--data-mib MiB of data (256 by default, pseudo-random, written from offset 0), and 10 GiB and
100 GiB thin ones (4 MiB of data at each end). For every size, in one run:

* clone: the module's executor (``Upload.execute``, what the module runs after connecting) with
  ``enable_clone_optimization=true`` into Glance's default (rbd) store; the median of
  --repeat-clone runs (after one warm-up run) of the total time and of the Ceph steps alone
  (write probe, snapshot, protect, clone, snapshot, protect). Every run connects to Ceph anew;
  the OpenStack connection is shared and its token warmed in every API worker first, so the
  figures are the paths' cost, not Keystone's (a loaded lab Keystone takes seconds per new
  token). Each image is deleted (state=absent) before the next run, outside the timing. The image must be active with the location
  ``rbd://<fsid>/<pool>/<id>/snap`` on a clone of the volume's snapshot, else exit 1.
  The split of the clone path's time is the median of each phase over those runs. The cloud user
  of --cloud (admin, without the service role) registers the location with the JSON-patch API.
* clone through ``POST /v2/images/{id}/locations`` (sizes in --locations-sizes, default 1): the same
  as --locations-cloud (a user with the service role), ``location_api=locations``; besides its time,
  how long Glance then takes to compute the image's checksum in the background (it reads the whole
  image: the cost of that API the clone path's own time does not show).
* copy: the same with the optimization off: the data is streamed into Glance (holes are not read
  from Ceph, but are sent as zeros). Median of --repeat-copy runs up to 1 GiB, one run above.
  Glance's checksum (md5) must equal the md5 of the volume's bytes, else exit 1. When the target
  store does not write sparsely (thin_provisioning false) the copy is skipped above
  --copy-max-gib-fat (the lab's OSD keeps data in memory), and the table says so.

The load average (1 minute) is recorded after each measurement: the machine may be shared.

Output: a table, the ratios (copy / clone), the split, target lines, and as the LAST line one JSON
object. Timings are reported, never asserted: only wrong results (exit 1) or setup failures (exit 2)
fail.

The executor needs the Ceph bindings (built for the system's Python 3.11) and openstacksdk: when
they are not importable here, the script re-runs itself with --python (default: the lab's venv).

Run: PYTHONPATH=<dir holding ansible_collections/> python benchmarks/bench_rbd_image_clone_upload.py
     [--sizes-gib 1,10,100] [--data-mib 256] [--repeat-clone 5] [--repeat-copy 3] [--cloud NAME]
     [--locations-sizes 1] [--locations-cloud NAME]
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
import uuid

from ansible_collections.volsnap.openstack.benchmarks import _common
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import connect as ceph_connect
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.cinder import CinderApi
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.glance import Glance
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.upload import Options, Upload

BENCHMARK = 'rbd_image_clone_upload'
TARGET_CEPH_SECONDS = 1.0
TARGET_RATIO_1GIB = 50.0
HASH_WAIT_SECONDS = 900


def parse_args(argv):
    p = _common.argument_parser(__doc__)
    p.add_argument('--sizes-gib', default='1,10,100', help='volume sizes in GiB (default 1,10,100)')
    p.add_argument('--data-mib', type=int, default=256, help='MiB of data in the 1 GiB volume (default 256)')
    p.add_argument('--repeat-clone', type=int, default=5, help='clone runs per size (median; default 5)')
    p.add_argument('--repeat-copy', type=int, default=3, help='copy runs for sizes <= 1 GiB (default 3)')
    p.add_argument('--copy-max-gib-fat', type=int, default=2,
                   help='largest copy when the Glance store is not thin-provisioned (default 2)')
    _common.add_lab_options(p)
    p.add_argument('--cloud', default=os.environ.get('VOLSNAP_BENCH_CLOUD', 'volsnap-lab'),
                   help='cloud of clouds.yaml; it must be allowed to register rbd locations (default %(default)s)')
    _common.add_ceph_options(p)
    p.add_argument('--copy-sizes-gib', default=None,
                   help='sizes (GiB, among --sizes-gib) whose copy path is measured; "none" for no copy '
                        '(default: every size)')
    p.add_argument('--locations-sizes', default='1',
                   help='sizes (GiB, among --sizes-gib) also cloned through POST /v2/images/{id}/locations; '
                        '"none" for no such run (default 1)')
    p.add_argument('--locations-cloud', default=os.environ.get('VOLSNAP_BENCH_SERVICE_CLOUD', 'volsnap-lab-service'),
                   help='cloud of a user with the service role, for those runs (default %(default)s)')
    args = p.parse_args(argv)
    _common.lab_defaults(args)
    args.sizes = _common.int_list(p, args.sizes_gib, '--sizes-gib')
    copy_sizes = args.copy_sizes_gib if args.copy_sizes_gib is not None else args.sizes_gib
    args.copy_sizes = [] if copy_sizes.strip().lower() == 'none' else _common.int_list(p, copy_sizes, '--copy-sizes-gib')
    args.locations_sizes = ([] if args.locations_sizes.strip().lower() == 'none'
                            else _common.int_list(p, args.locations_sizes, '--locations-sizes'))
    if args.data_mib < 0 or args.data_mib > 1024:
        p.error('--data-mib must be between 0 and 1024')
    if args.repeat_clone < 1 or args.repeat_copy < 1:
        p.error('--repeat-* must be >= 1')
    return args


def chunk_data(length, seed, offset):
    """Incompressible-looking bytes for the piece at ``offset`` of write ``seed``."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha512(b'%d:%d:%d' % (seed, offset, counter)).digest() * 64
        counter += 1
    return bytes(out[:length])


class Md5Of(object):
    """The md5 of a volume, computed on first use (only sizes that are copied need it)."""

    def __init__(self, size, writes):
        self.size = size
        self.writes = writes
        self.value = None

    def __call__(self):
        if self.value is None:
            self.value = md5_of(self.size, self.writes)
        return self.value


def md5_of(size, writes):
    """md5 of a ``size``-byte volume that is zero except for ``writes`` (what Glance's checksum must be)."""
    md5 = hashlib.md5()
    zeros = bytes(8 * _common.MIB)
    pos = 0
    for off, length, seed in sorted(writes):
        while pos < off:
            n = min(len(zeros), off - pos)
            md5.update(zeros[:n])
            pos += n
        for done in range(0, length, 8 * _common.MIB):
            md5.update(chunk_data(min(8 * _common.MIB, length - done), seed, done))
        pos = off + length
    while pos < size:
        n = min(len(zeros), size - pos)
        md5.update(zeros[:n])
        pos += n
    return md5.hexdigest()


class LabBench(object):
    """The lab's side of a benchmark of ``Upload.execute``: the OpenStack connection of --cloud (``conn``,
    ``glance``, ``cinder``), client.admin's Ceph connection (``cluster``, ``ioctx`` of --volume-pool) that makes
    the volumes (``made``, removed with their snapshots by ``remove_volumes``), and the module's executor."""

    def __init__(self, args):
        import openstack  # pylint: disable=import-outside-toplevel
        import rados  # pylint: disable=import-outside-toplevel
        import rbd  # pylint: disable=import-outside-toplevel
        self.args = args
        self.openstack = openstack
        self.rbd = rbd
        os.environ['OS_CLIENT_CONFIG_FILE'] = args.clouds_yaml
        self.conn = openstack.connect(cloud=args.cloud)
        self.glance = Glance(self.conn)
        self.cinder = CinderApi(self.conn)
        self.cluster = rados.Rados(conffile=args.ceph_conf, rados_id='admin', conf={'keyring': args.admin_keyring})
        self.cluster.connect(timeout=30)
        self.ioctx = self.cluster.open_ioctx(args.volume_pool)
        self.tag = uuid.uuid4().hex[:8]
        self.made = []
        self.images = []

    def _execute(self, opts, glance=None):
        with ceph_connect(self.args.ceph_conf, self.args.ceph_user, self.args.keyring, 30) as cluster:
            return Upload(opts, {}, False).execute(glance or self.glance, self.cinder, cluster, self.rbd)

    def write(self, name, writes):
        """Write ``writes`` ((offset, length, seed): chunk_data pieces) into the volume ``name``."""
        with self.rbd.Image(self.ioctx, name) as img:
            for off, length, seed in writes:
                for done in range(0, length, 8 * _common.MIB):
                    img.write(chunk_data(min(8 * _common.MIB, length - done), seed, done), off + done)

    def remove_volumes(self):
        """Remove every volume made (and its snapshots), then close the Ceph connection."""
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


def upload_failed(exc):
    """Print why the run stopped (a VolsnapError: the module could not upload) and return the exit code."""
    if isinstance(exc, VolsnapError):
        print('setup failed: the module could not upload: %s' % exc, file=sys.stderr)
        return _common.EXIT_SETUP
    print('%s: %s' % ('error' if exc.code == 1 else 'setup failed', exc), file=sys.stderr)
    return exc.code


class Bench(LabBench):
    def __init__(self, args):
        super().__init__(args)
        self.service_glance = None
        if args.locations_sizes:
            self.service_conn = self.openstack.connect(cloud=args.locations_cloud)
            self.service_glance = Glance(self.service_conn)
        # Warm the token caches of every API worker (keystonemiddleware validates a new token once per worker),
        # so the figures measure the upload paths, not the lab Keystone's queue.
        for attempt in range(6):  # noqa: B007
            self.glance.stores()
            self.conn.block_storage.get('/volumes?limit=1')
            if self.service_glance is not None:
                self.service_glance.stores()

    def close(self):
        # also images whose run failed before returning their id (the module's rollback may fail as well when
        # Glance went away under it)
        listed = self.conn.image.get('/images?limit=1000', raise_exc=False)
        if listed.status_code == 200:
            prefix = 'volsnap-bench-%s-' % self.tag
            self.images += [i['id'] for i in listed.json().get('images', [])
                            if str(i.get('name', '')).startswith(prefix) and i['id'] not in self.images]
        for image_id in self.images:
            self.conn.image.delete('/images/%s' % image_id, raise_exc=False)
        self.remove_volumes()

    def make_volume(self, size_gib):
        """An RBD image with its data; returns (name, size, writes)."""
        name = 'volsnap-bench-%s-%dg' % (self.tag, size_gib)
        size = size_gib * _common.GIB
        self.rbd.RBD().create(self.ioctx, name, size, old_format=False, features=self.rbd.RBD_FEATURE_LAYERING)
        self.made.append(name)
        if size_gib == 1:
            writes = [(0, self.args.data_mib * _common.MIB, 1)] if self.args.data_mib else []
        else:
            writes = [(0, 4 * _common.MIB, 2), (size - 4 * _common.MIB, 4 * _common.MIB, 3)]
        self.write(name, writes)
        return name, size, writes

    def upload(self, name, clone, location_api='auto', glance=None):
        opts = Options(rbd_image=name, volume_pool=self.args.volume_pool, image_name='%s-%s' % (
            name, uuid.uuid4().hex[:6]), enable_clone_optimization=clone, ceph_conf=self.args.ceph_conf,
            ceph_user=self.args.ceph_user, keyring=self.args.keyring, timeout=600, location_api=location_api)
        wall, result = _common.timed(self._execute, opts, glance)
        if result.get('image_id'):
            self.images.append(result['image_id'])
        return result, wall

    def absent(self, image_id, glance=None):
        opts = Options(state='absent', image_id=image_id, volume_pool=self.args.volume_pool,
                       ceph_conf=self.args.ceph_conf, ceph_user=self.args.ceph_user, keyring=self.args.keyring,
                       timeout=600)
        self._execute(opts, glance)
        self.images.remove(image_id)

    def wait_hash(self, glance, image_id):
        """Seconds until Glance has the image's checksum (its background hash after POST /locations)."""
        deadline = time.monotonic() + HASH_WAIT_SECONDS
        started = time.monotonic()
        while time.monotonic() < deadline:
            image = glance.get_image(image_id) or {}
            if image.get('os_hash_value'):
                return time.monotonic() - started
            time.sleep(0.1)
        return None

    def check_clone(self, result, name):
        image = result.get('image') or {}
        pool = (result.get('store') or {}).get('pool')
        want = 'rbd://%s/%s/%s/snap' % (result['source']['fsid'], pool, result['image_id'])
        if result.get('path') != 'clone' or image.get('status') != 'active' or result.get('location') != want:
            raise _common.BenchError('clone path of %s gave path=%s status=%s location=%s (expected %s): %s'
                                     % (name, result.get('path'), image.get('status'), result.get('location'), want,
                                        result.get('why')))

    def check_copy(self, result, name, md5_fn):
        image = self.conn.image.get('/images/%s' % result['image_id']).json()
        md5 = md5_fn()
        if result.get('path') != 'copy' or image.get('status') != 'active' or image.get('checksum') != md5:
            raise _common.BenchError('copy path of %s gave path=%s status=%s checksum=%s (expected md5 %s)'
                                     % (name, result.get('path'), image.get('status'), image.get('checksum'), md5))


def clone_runs(bench, name, repeat, location_api='auto', glance=None, hash_wait=False):
    """Median figures of ``repeat`` clone-path runs after a warm-up run; returns (figures, store)."""
    totals, cephs, walls, phases, hashes = [], [], [], [], []
    store_info = result = None
    while len(walls) <= repeat:  # run 0 warms up (connections, caches)
        result, wall = bench.upload(name, True, location_api, glance)
        walls.append(wall)
        bench.check_clone(result, name)
        totals.append(result['seconds']['total'])
        cephs.append(result['seconds']['ceph'])
        phases.append(result['seconds']['phases'])
        store_info = result.get('store')
        if hash_wait and len(walls) > 1:
            hashes.append(bench.wait_hash(glance or bench.glance, result['image_id']))
        bench.absent(result['image_id'], glance)
    names = list(phases[-1])
    figures = {'total_s': _common.median(totals[1:]), 'ceph_s': _common.median(cephs[1:]), 'runs': len(totals) - 1,
               'cold_s': totals[0], 'wall_s': _common.median(walls[1:]), 'location_api': result.get('location_api'),
               'phases': {key: round(_common.median([p.get(key, 0.0) for p in phases[1:]]), 6) for key in names},
               'load_average_1m': (_common.load_average() or [None])[0]}
    if hash_wait:
        done = [h for h in hashes if h is not None]
        figures['glance_hash_after_s'] = round(_common.median(done), 3) if done else None
        figures['glance_hash_runs'] = len(done)
    return figures, store_info


def run(args, errors):
    """Figures per size; a copy the module could not finish is added to ``errors`` and the run goes on."""
    bench = Bench(args)
    sizes = {}
    store_info = None
    try:
        for size_gib in args.sizes:
            name, size, writes = bench.make_volume(size_gib)
            entry = {'size_gib': size_gib, 'data_bytes': sum(w[1] for w in writes)}
            md5 = Md5Of(size, writes)

            entry['clone'], store_info = clone_runs(bench, name, args.repeat_clone)
            if size_gib in args.locations_sizes:
                entry['clone_locations_api'] = clone_runs(bench, name, args.repeat_clone, 'locations',
                                                          bench.service_glance, hash_wait=True)[0]
            thin = bool((store_info or {}).get('thin_provisioning'))
            if size_gib not in args.copy_sizes:
                entry['copy'] = None
                entry['copy_skipped'] = 'not asked (--copy-sizes-gib)'
            elif not thin and size_gib > args.copy_max_gib_fat:
                entry['copy'] = None
                entry['copy_skipped'] = ('Glance store %s is not thin-provisioned: copying %d GiB of zeros would fill '
                                         'the lab OSD\'s memory' % ((store_info or {}).get('id'), size_gib))
            else:
                repeat = args.repeat_copy if size_gib <= 1 else 1
                totals = []
                walls = []
                try:
                    while len(walls) < repeat:
                        result, wall = bench.upload(name, False)
                        walls.append(wall)
                        bench.check_copy(result, name, md5)
                        totals.append(result['seconds']['total'])
                        bench.absent(result['image_id'])
                except VolsnapError as exc:  # keep the other figures; the run still exits 2
                    entry['copy'] = None
                    entry['copy_error'] = str(exc)
                    errors.append('%d GiB copy: %s' % (size_gib, exc))
                else:
                    entry['copy'] = {'total_s': _common.median(totals), 'runs': repeat, 'wall_s': _common.median(walls),
                                     'upload_s': result['seconds']['phases'].get('upload_data'),
                                     'load_average_1m': (_common.load_average() or [None])[0]}
            if entry['copy']:
                entry['ratio'] = round(entry['copy']['total_s'] / entry['clone']['total_s'], 1)
            sizes[str(size_gib)] = entry
    finally:
        bench.close()
    return sizes, store_info


def report(args, sizes, store_info):
    print('rbd_image_clone_upload: clone path vs copy path (Glance store %s, thin %s)'
          % ((store_info or {}).get('id'), (store_info or {}).get('thin_provisioning')))
    rows = []
    for key, e in sizes.items():
        copy = e.get('copy')
        rows.append(['%s G' % key, '%.0f' % (e['data_bytes'] / _common.MIB), '%.3f' % e['clone']['total_s'],
                     '%.3f' % e['clone']['ceph_s'], '%.2f' % copy['total_s'] if copy else 'skipped',
                     '%.1fx' % e['ratio'] if e.get('ratio') else '-',
                     '%s / %s' % (e['clone']['load_average_1m'], copy['load_average_1m'] if copy else '-')])
    _common.table([('size', 8), ('data MiB', 9), ('clone s', 9), ('clone ceph s', 13), ('copy s', 9), ('ratio', 7),
                   ('load clone / copy', 18)], rows)
    for key, e in sizes.items():
        if e.get('copy_skipped'):
            print('%s GiB: copy skipped: %s' % (key, e['copy_skipped']))
        if e.get('copy_error'):
            print('%s GiB: copy FAILED: %s' % (key, e['copy_error']))
        posted = e.get('clone_locations_api')
        if posted:
            print('%s GiB clone with POST /locations (%s): %.3f s (JSON-patch: %.3f s); Glance\'s background hash '
                  'of the whole image ended %s s after the module returned' % (
                      key, args.locations_cloud, posted['total_s'], e['clone']['total_s'],
                      posted.get('glance_hash_after_s')))
    first = next(iter(sizes.values()))
    print('split of the clone path at %s GiB (median seconds per phase, location API %s):'
          % (first['size_gib'], first['clone']['location_api']))
    print('  ' + ', '.join('%s %.3f' % (k, v) for k, v in first['clone']['phases'].items()))
    clones = [e['clone']['total_s'] for e in sizes.values()]
    ceph_max = max(e['clone']['ceph_s'] for e in sizes.values())
    flat = max(clones) / min(clones) if min(clones) > 0 else None
    one = sizes.get('1', {})
    target = {
        'clone_ceph_under_s': TARGET_CEPH_SECONDS, 'clone_ceph_met': ceph_max < TARGET_CEPH_SECONDS,
        'ratio_1gib_min': TARGET_RATIO_1GIB,
        'ratio_1gib_met': one['ratio'] >= TARGET_RATIO_1GIB if one.get('ratio') is not None else None,
        'clone_max_over_min': round(flat, 2) if flat else None,
    }
    print('clone path Ceph work, largest median: %.3f s (target < %.1f s: %s)'
          % (ceph_max, TARGET_CEPH_SECONDS, _common.goal(target['clone_ceph_met'])))
    print('clone path total across sizes: max/min = %s (does not grow with size when close to 1)'
          % target['clone_max_over_min'])
    if one:
        print('ratio at 1 GiB: %s (target >= %.0fx: %s)'
              % (one.get('ratio'), TARGET_RATIO_1GIB, _common.goal(target['ratio_1gib_met'])))
    print('(%s at the end of the run)' % _common.load_text())
    _common.emit({'benchmark': BENCHMARK, 'sizes': sizes, 'target': target, 'store': store_info,
                  'repeat': {'clone': args.repeat_clone, 'copy': args.repeat_copy}, 'data_mib': args.data_mib,
                  'python': platform.python_version()})


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    errors = []
    try:
        _common.reexec_if_needed(args.python, __file__)
        sizes, store_info = run(args, errors)
    except (VolsnapError, _common.BenchError) as exc:
        return upload_failed(exc)
    report(args, sizes, store_info)
    for error in errors:
        print('setup failed: the module could not upload: %s' % error, file=sys.stderr)
    return _common.EXIT_SETUP if errors else 0


if __name__ == '__main__':
    sys.exit(main())
