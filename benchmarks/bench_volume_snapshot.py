# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: volume_snapshot against bare qemu-img, and through ansible-playbook.

Three measurements, each against the obvious alternative in the same run:

* create: a snapshot of a thin (sparse raw) 1 GiB and 100 GiB volume with the code path the module
  runs (``VolumeSnapshot(...).run()``: lock, journal, chain inspection, libvirt lookup, overlay,
  ``.info``), against a bare ``qemu-img create -f qcow2 -b <volume> -F raw <overlay>``. The time
  must not grow with the volume's size.
* delete: deleting a snapshot whose overlay holds --delete-mib MiB (written with qemu-io) with the
  module's code path, against the same ``qemu-img commit -f qcow2 -t writeback -d <overlay>`` the
  module runs, plus removing the overlay (what a script would do), on identical copies of the data.
  Samples alternate (module, plain, module, ...) so drift hits both. The module's own overhead is
  also split out of its runs directly (its time minus the qemu-img commands it ran and minus the
  time the plain run takes to remove the overlay, which the module does too).
  The same delete is timed once more through ``ansible-playbook``, with the playbook's fixed cost
  (the same playbook making a request that changes nothing) reported beside it.
* playbook: one ``ansible-playbook`` run snapshotting --volumes volumes on one host (a loop over
  volume_snapshot), against the same loop of bare ``ansible.builtin.command: qemu-img create``.

Output: a human-readable table, goal lines, and as the LAST line one JSON object. Timings are
reported, never asserted: only wrong results (exit 1) or failed setup steps (exit 2) fail.

Run: PYTHONPATH=<dir holding ansible_collections/> python benchmarks/bench_volume_snapshot.py
     [--repeat 5] [--sizes-gib 1,100] [--delete-mib 256] [--volumes 50] [--skip-playbook]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from ansible_collections.volsnap.openstack.benchmarks import _common
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import DEFAULT_URI, LIBVIRT_IMPORT_ERROR, Libvirt
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot

BENCHMARK = 'volume_snapshot'
TARGET_OVERHEAD_PCT = 10.0
TARGET_SIZE_GROWTH = 1.5  # create time at the largest size / at the smallest
MIN_RUNS = 3


def parse_args(argv):
    parser = _common.argument_parser(__doc__)
    parser.add_argument('--repeat', type=int, default=5,
                        help='timed samples per measurement, at least %d (default: %%(default)s)' % MIN_RUNS)
    parser.add_argument('--sizes-gib', default='1,100',
                        help='comma-separated virtual sizes of the thin volumes for the create timing (GiB, '
                             'default: %(default)s)')
    parser.add_argument('--delete-mib', type=int, default=256,
                        help='MiB written into the snapshot overlay before it is deleted (default: %(default)s)')
    parser.add_argument('--volumes', type=int, default=50,
                        help='volumes snapshotted by the playbook (default: %(default)s)')
    parser.add_argument('--skip-playbook', action='store_true',
                        help='skip the two measurements that run ansible-playbook')
    parser.add_argument('--libvirt-uri', default=DEFAULT_URI,
                        help='libvirt URI the module code asks for running domains (default: %(default)s)')
    parser.add_argument('--qemu-img', default=None, help='qemu-img binary (default: qemu-img on PATH)')
    args = parser.parse_args(argv)
    args.sizes = sorted(set(_common.int_list(parser, args.sizes_gib, '--sizes-gib')))
    if args.delete_mib < 1 or args.volumes < 1 or args.repeat < 1:
        parser.error('--delete-mib, --volumes and --repeat must be at least 1')
    args.repeat = max(args.repeat, MIN_RUNS)
    return args


class TimedRunner(object):
    """The module's command runner (AnsibleModule.run_command in a module), timing each qemu-img call."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, argv):
        start = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              check=False)
        self.seconds += time.perf_counter() - start
        return proc.returncode, proc.stdout, proc.stderr


def libvirt_factory(uri):
    """What the module passes: a Libvirt connection when the bindings are installed, else None."""
    if LIBVIRT_IMPORT_ERROR is not None:
        return lambda: None
    return lambda: Libvirt(uri)


def libvirt_state(uri):
    if LIBVIRT_IMPORT_ERROR is not None:
        return 'no bindings'
    try:
        Libvirt(uri).conn
    except VolsnapError:
        return 'unreachable'
    return 'reachable'


def snapshot(args, qemu_img, volume, snap_id, state):
    """One volume_snapshot request through the module's code path; returns (seconds, qemu-img seconds, result)."""
    runner = TimedRunner()
    request = Request(volume_path=volume, snapshot_id=snap_id, state=state)
    seconds, result = _common.timed(VolumeSnapshot(request, QemuImg(runner, qemu_img), libvirt_factory(args.libvirt_uri),
                                                   False).run)
    return seconds, runner.seconds, result


def new_volume(qemu_img, directory, size_bytes):
    volume = os.path.join(directory, 'volume-%s' % uuid.uuid4())
    _common.run([qemu_img, 'create', '-q', '-f', 'raw', volume, str(size_bytes)])
    return volume


def check_created(result, volume, snap_id):
    overlay = '%s.%s' % (os.path.basename(volume), snap_id)
    if not result['changed'] or result['active'] != overlay or result['info'].get(snap_id) != overlay:
        raise _common.BenchError('the create of %s on %s returned %s' % (snap_id, volume, result))
    report = inspect_chain(volume)
    if not report.safe or report.active != overlay or len(report.layers) != 2:
        raise _common.BenchError('after the create of %s the chain of %s is %s' % (snap_id, volume, report.summary()))


# ---------------------------------------------------------------- create


def bench_create(args, qemu_img, workdir):
    results = {}
    for size in args.sizes:
        directory = os.path.join(workdir, 'create-%dg' % size)
        os.mkdir(directory)
        volume = new_volume(qemu_img, directory, size * _common.GIB)
        module_s, bare_s = [], []
        for index in range(args.repeat + 1):  # the first round is the warm-up
            snap_id = str(uuid.uuid4())
            seconds, _qemu_s, result = snapshot(args, qemu_img, volume, snap_id, 'present')
            check_created(result, volume, snap_id)
            os.unlink('%s.%s' % (volume, snap_id))
            os.unlink(volume + '.info')
            overlay = os.path.join(directory, 'bare.qcow2')
            bare, _out = _common.timed(_common.run, [qemu_img, 'create', '-q', '-f', 'qcow2', '-b',
                                                     os.path.basename(volume), '-F', 'raw', overlay])
            os.unlink(overlay)
            if index:
                module_s.append(seconds)
                bare_s.append(bare)
        module, bare = _common.median(module_s), _common.median(bare_s)
        results[size] = {'module_s': module, 'qemu_img_s': bare, 'ratio': module / bare}
    smallest, largest = results[args.sizes[0]], results[args.sizes[-1]]
    growth = largest['module_s'] / smallest['module_s']
    return {
        'sizes_gib': {str(size): r for size, r in results.items()},
        'growth_largest_vs_smallest': growth,
        'target': {'growth_max': TARGET_SIZE_GROWTH, 'met': growth <= TARGET_SIZE_GROWTH
                   if len(args.sizes) > 1 else None},
    }


# ---------------------------------------------------------------- delete


def prepare_delete(args, qemu_img, directory):
    """A 1 GiB thin volume with one snapshot whose overlay holds --delete-mib MiB; returns (volume, id, overlay)."""
    os.mkdir(directory)
    volume = new_volume(qemu_img, directory, _common.GIB)
    snap_id = str(uuid.uuid4())
    _seconds, _qemu_s, result = snapshot(args, qemu_img, volume, snap_id, 'present')
    check_created(result, volume, snap_id)
    overlay = '%s.%s' % (volume, snap_id)
    _common.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0xa5 0 %dM' % args.delete_mib, overlay])
    os.sync()
    return volume, snap_id, overlay


def check_merged(args, volume, overlay):
    if os.path.exists(overlay):
        raise _common.BenchError('%s still exists after the delete' % overlay)
    last = (args.delete_mib - 1) * _common.MIB
    out = _common.run(['qemu-io', '-r', '-f', 'raw', '-c', 'read -P 0xa5 0 1M', '-c', 'read -P 0xa5 %d 1M' % last,
                       volume])
    if 'Pattern verification failed' in out:
        raise _common.BenchError('the data of the deleted snapshot did not reach %s' % volume)


def bench_delete(args, qemu_img, workdir):
    commit = [qemu_img, 'commit', '-q', '-f', 'qcow2', '-t', 'writeback', '-d']
    module_s, module_qemu_s, plain_s, rm_s = [], [], [], []
    for index in range(args.repeat + 1):  # the first round is the warm-up
        volume, snap_id, overlay = prepare_delete(args, qemu_img, os.path.join(workdir, 'delete-m%d' % index))
        seconds, qemu_s, result = snapshot(args, qemu_img, volume, snap_id, 'absent')
        if not result['changed'] or result['mode'] != 'offline' or result['active'] != os.path.basename(volume):
            raise _common.BenchError('the delete of %s returned %s' % (snap_id, result))
        check_merged(args, volume, overlay)
        shutil.rmtree(os.path.dirname(volume))

        volume, snap_id, overlay = prepare_delete(args, qemu_img, os.path.join(workdir, 'delete-p%d' % index))
        start = time.perf_counter()
        _common.run(commit + [overlay])
        committed = time.perf_counter()
        os.unlink(overlay)
        plain = time.perf_counter() - start
        rm_s.append(time.perf_counter() - committed)
        check_merged(args, volume, overlay)
        shutil.rmtree(os.path.dirname(volume))
        if index:
            module_s.append(seconds)
            module_qemu_s.append(qemu_s)
            plain_s.append(plain)
    module, plain = _common.median(module_s), _common.median(plain_s)
    # Outside its qemu-img calls the module also removes the overlay, which the plain run does too: take
    # the plain run's rm time out to leave the module's own work (lock, journal, checks, .info, fsyncs).
    rm = _common.median(rm_s)
    own = _common.median([m - q for m, q in zip(module_s, module_qemu_s)]) - rm
    overhead_pct = (module - plain) / plain * 100.0
    return {
        'data_mib': args.delete_mib,
        'module_s': module,
        'qemu_img_commit_s': plain,
        'ratio': module / plain,
        'overhead_pct': overhead_pct,
        'rm_s': rm,
        'module_own_s': own,
        'module_own_pct': own / plain * 100.0,
        'target': {'overhead_pct_max': TARGET_OVERHEAD_PCT, 'met': overhead_pct < TARGET_OVERHEAD_PCT},
    }


# ---------------------------------------------------------------- through ansible-playbook


def bench_delete_ansible(args, qemu_img, workdir):
    totals, fixed = [], []
    for index in range(MIN_RUNS):
        volume, snap_id, overlay = prepare_delete(args, qemu_img, os.path.join(workdir, 'delete-a%d' % index))
        task = {'name': 'Delete the snapshot', 'volsnap.openstack.volume_snapshot': {
            'volume_path': volume, 'snapshot_id': snap_id, 'state': 'absent'}}
        totals.append(_common.run_playbook(workdir, 'delete-%d' % index, [task]))
        check_merged(args, volume, overlay)
        fixed.append(_common.run_playbook(workdir, 'noop-%d' % index, [task]))  # deleted already: no change
        shutil.rmtree(os.path.dirname(volume))
    return {'total_s': _common.median(totals), 'fixed_cost_s': _common.median(fixed), 'runs': MIN_RUNS}


def bench_playbook(args, qemu_img, workdir):
    share = os.path.join(workdir, 'share50')
    os.mkdir(share)
    volumes = [new_volume(qemu_img, share, _common.GIB) for _index in range(args.volumes)]
    snaps = [str(uuid.uuid4()) for _volume in volumes]
    items = [{'volume': v, 'snapshot': s} for v, s in zip(volumes, snaps)]
    module_task = {'name': 'Snapshot every volume', 'volsnap.openstack.volume_snapshot': {
        'volume_path': '{{ item.volume }}', 'snapshot_id': '{{ item.snapshot }}'},
        'loop': items, 'loop_control': {'label': '{{ item.snapshot }}'}}
    bare_task = {'name': 'qemu-img create every overlay', 'ansible.builtin.command': {
        'argv': [qemu_img, 'create', '-q', '-f', 'qcow2', '-b', '{{ item.volume | basename }}', '-F', 'raw',
                 '{{ item.volume }}.bare'],
        'creates': '{{ item.volume }}.bare'}, 'loop': items, 'loop_control': {'label': '{{ item.snapshot }}'}}
    empty = {'name': 'Nothing', 'volsnap.openstack.volume_snapshot': {'volume_path': '{{ item }}',
                                                                      'snapshot_id': '{{ item }}'}, 'loop': []}
    startup = _common.run_playbook(workdir, 'empty', [empty])
    module = _common.run_playbook(workdir, 'module', [module_task])
    bare = _common.run_playbook(workdir, 'bare', [bare_task])
    for volume, snap_id in zip(volumes, snaps):
        with open(volume + '.info') as handle:
            info = json.load(handle)
        if info.get(snap_id) != '%s.%s' % (os.path.basename(volume), snap_id) or not os.path.exists(volume + '.bare'):
            raise _common.BenchError('after the playbooks %s has .info %s' % (volume, info))
    n = float(args.volumes)
    return {
        'volumes': args.volumes,
        'module_s': module, 'module_s_per_volume': module / n,
        'module_s_per_volume_after_startup': (module - startup) / n,
        'qemu_img_command_s': bare, 'qemu_img_command_s_per_volume': bare / n,
        'qemu_img_command_s_per_volume_after_startup': (bare - startup) / n,
        'startup_s': startup, 'ratio': module / bare,
    }


# ---------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        qemu_img, version = _common.qemu_img_tool(args.qemu_img, also=('qemu-io',))
    except _common.BenchError as exc:
        return _common.failed('bench_volume_snapshot', exc)
    lv_state = libvirt_state(args.libvirt_uri)
    # /var/tmp rather than /tmp: real disk, never tmpfs, like an NFS share's backing store
    workdir = tempfile.mkdtemp(prefix='volsnap-bench-snap-', dir='/var/tmp' if os.path.isdir('/var/tmp') else None)
    print('%s: %s, python %s, libvirt at %s: %s; median of %d samples after a warm-up'
          % (BENCHMARK, version, platform.python_version(), args.libvirt_uri, lv_state, args.repeat))
    figures = {'benchmark': BENCHMARK, 'repeat': args.repeat, 'qemu_img_version': version,
               'python': platform.python_version(), 'libvirt': lv_state}
    try:
        figures['create'] = bench_create(args, qemu_img, workdir)
        figures['delete'] = bench_delete(args, qemu_img, workdir)
        if not args.skip_playbook:
            figures['delete']['ansible'] = bench_delete_ansible(args, qemu_img, workdir)
            figures['playbook'] = bench_playbook(args, qemu_img, workdir)
    except (_common.BenchError, VolsnapError) as exc:
        return _common.failed('bench_volume_snapshot', exc, VolsnapError)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    create = figures['create']
    print()
    print('create a snapshot of a thin raw volume (module code path vs bare qemu-img create -b)')
    rows = []
    for size in args.sizes:
        r = create['sizes_gib'][str(size)]
        rows.append(['%d G' % size, '%.1f' % (r['module_s'] * 1e3), '%.1f' % (r['qemu_img_s'] * 1e3),
                     '%.1fx' % r['ratio']])
    _common.table([('size', 10), ('module ms', 12), ('qemu-img ms', 14), ('ratio', 9)], rows)
    print('target module create time at %d GiB <= %.1fx the time at %d GiB: %s (%.2fx)'
          % (args.sizes[-1], TARGET_SIZE_GROWTH, args.sizes[0], _common.goal(create['target']['met']),
             create['growth_largest_vs_smallest']))

    delete = figures['delete']
    print()
    print('delete a snapshot holding %d MiB (offline merge into a 1 GiB thin raw volume)' % args.delete_mib)
    rows = [('module code path (lock, journal, commit, .info, rm)', delete['module_s']),
            ('qemu-img commit -t writeback -d + rm', delete['qemu_img_commit_s']),
            ('  of which removing the overlay (rm)', delete['rm_s']),
            ("module's own work (minus its qemu-img calls and rm)", delete['module_own_s'])]
    if 'ansible' in delete:
        rows += [('through ansible-playbook (whole run)', delete['ansible']['total_s']),
                 ('  of which the playbook fixed cost (no-change run)', delete['ansible']['fixed_cost_s'])]
    _common.table([('', -52), ('seconds', 10)], [[label, '%.3f' % value] for label, value in rows])
    print('target module overhead < %.0f%%: %s (%+.1f%% vs plain commit; own work %.1f%%)'
          % (TARGET_OVERHEAD_PCT, _common.goal(delete['target']['met']), delete['overhead_pct'],
             delete['module_own_pct']))

    if 'playbook' in figures:
        p = figures['playbook']
        print()
        print('one ansible-playbook run snapshotting %d volumes on one host (loop over one task)' % p['volumes'])
        _common.table([('', -40), ('total s', 9), ('s/volume', 12), ('s/volume after start', 22)],
                      [['volsnap.openstack.volume_snapshot', '%.2f' % p['module_s'], '%.3f' % p['module_s_per_volume'],
                        '%.3f' % p['module_s_per_volume_after_startup']],
                       ['ansible.builtin.command: qemu-img create', '%.2f' % p['qemu_img_command_s'],
                        '%.3f' % p['qemu_img_command_s_per_volume'],
                        '%.3f' % p['qemu_img_command_s_per_volume_after_startup']]])
        print('(start = a run of the same playbook with an empty loop: %.2f s; ratio module/command %.2fx)'
              % (p['startup_s'], p['ratio']))
    print('(%s at the end of the run)' % _common.load_text())
    _common.emit(figures)
    return 0


if __name__ == '__main__':
    sys.exit(main())
