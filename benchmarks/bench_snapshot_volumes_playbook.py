# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the snapshot_volumes playbook (the list in the fewest volume_snapshot tasks with ``volumes``, through
the snapshot_batches filter) against the same playbook written as one task per entry (a ``loop:`` over the list,
as the playbook was before the filter).

On a share of N thin volumes (sparse raw, 1 GiB each), for each N of --counts (default 50), two lists, each run
by both playbooks on its own copy of the share:

* create: N entries, one new snapshot per volume (one batch);
* rotation: 2N entries, per volume a newer snapshot created, then the first one deleted (two batches, run in that
  order; the delete merges the first snapshot's empty overlay into the volume).

Both playbooks run ``ansible-playbook`` with the same inventory, share and list, and each ends with the same
report (a debug line per volume). Every result is checked: after create each ``.info`` names the new overlay,
after the rotation each ``.info`` names only the newer snapshot and the first overlay is gone. The figures are
whole ``ansible-playbook`` runs (Ansible's start included) and the ratio per-entry loop / playbook.

Run: PYTHONPATH=<dir holding ansible_collections/> python benchmarks/bench_snapshot_volumes_playbook.py
     [--counts 50] [--repeat 1]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

from ansible_collections.volsnap.openstack.benchmarks import _common

GROUP = 'cinder_volume'
# the playbook before the snapshot_batches filter: one volume_snapshot task per entry, then the same report
PER_ENTRY_PLAYBOOK = [{
    'name': 'Snapshot NFS volumes, one task per entry', 'hosts': GROUP, 'become': True, 'gather_facts': False,
    'tasks': [
        {'name': 'Create or delete each snapshot',
         'volsnap.openstack.volume_snapshot': {
             'share': '{{ snapshot_volumes_share }}', 'volume_id': '{{ snapshot.volume_id }}',
             'snapshot_id': '{{ snapshot.snapshot_id }}', 'state': "{{ snapshot.state | default('present') }}",
             'volume_format': "{{ snapshot.volume_format | default(snapshot_volumes_volume_format"
                              " | default('raw')) }}"},
         'loop': '{{ snapshot_volumes_list }}',
         'loop_control': {'loop_var': 'snapshot', 'label': '{{ snapshot.volume_id }} {{ snapshot.snapshot_id }}'},
         'register': 'snapshot_volumes_results'},
        {'name': 'Report', 'ansible.builtin.debug': {
            'msg': "{{ item.snapshot.volume_id }}: {{ item.compute_status | default('no change', true) }}"},
         'loop': '{{ snapshot_volumes_results.results }}', 'loop_control': {'label': '{{ item.snapshot.volume_id }}'}},
    ]}]


def parse_args(argv):
    parser = _common.argument_parser(__doc__)
    parser.add_argument('--counts', default='50', help='volume counts of one share (default 50)')
    parser.add_argument('--repeat', type=int, default=1, help='samples (medians) of each run (default 1)')
    args = parser.parse_args(argv)
    args.counts = _common.int_list(parser, args.counts, '--counts')
    return args


def make_share(workdir, name, count):
    """A share of ``count`` sparse raw volumes of 1 GiB; (share, [volume id])."""
    share = os.path.join(workdir, name)
    return share, _common.thin_volumes(share, count)


def check_info(share, volumes, snapshot, gone=None):
    """Each volume's .info names ``snapshot`` as its only snapshot and active file; ``gone``'s overlay is removed."""
    for volume in volumes:
        overlay = 'volume-%s.%s' % (volume, snapshot)
        with open(os.path.join(share, 'volume-%s.info' % volume)) as handle:
            info = json.load(handle)
        if info != {'active': overlay, snapshot: overlay}:
            raise _common.BenchError('volume-%s.info is %s, not only %s' % (volume, info, snapshot))
        if gone and os.path.exists(os.path.join(share, 'volume-%s.%s' % (volume, gone))):
            raise _common.BenchError('the overlay of deleted snapshot %s of volume %s is still there' % (gone, volume))


def run_list(workdir, name, playbook, share, entries):
    extra = {'snapshot_volumes_share': share, 'snapshot_volumes_list': entries}
    return _common.run_playbook_file(workdir, name, playbook, extra_vars=extra, group=GROUP)


def one_sample(workdir, count, shape, playbook, sample):
    """(create seconds, rotation seconds) of one playbook on a fresh share."""
    first, newer = str(uuid.uuid4()), str(uuid.uuid4())
    share, volumes = make_share(workdir, '%s-%d-%d' % (shape, count, sample), count)
    create = [{'volume_id': v, 'snapshot_id': first} for v in volumes]
    rotation = []
    for volume in volumes:
        rotation += [{'volume_id': volume, 'snapshot_id': newer},
                     {'volume_id': volume, 'snapshot_id': first, 'state': 'absent'}]
    create_s = run_list(workdir, '%s-create-%d-%d' % (shape, count, sample), playbook, share, create)
    check_info(share, volumes, first)
    rotation_s = run_list(workdir, '%s-rotation-%d-%d' % (shape, count, sample), playbook, share, rotation)
    check_info(share, volumes, newer, gone=first)
    shutil.rmtree(share)
    return create_s, rotation_s


def main(argv=None):
    args = parse_args(argv)
    try:
        _qemu_img, version = _common.qemu_img_tool()
        workdir = tempfile.mkdtemp(prefix='bench-snapshot-volumes-')
        try:
            return report(args, version, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    except _common.BenchError as exc:
        return _common.failed('bench_snapshot_volumes_playbook', exc)
    except subprocess.SubprocessError as exc:
        print('bench_snapshot_volumes_playbook: FAILED: %s' % exc, file=sys.stderr)
        return _common.EXIT_SETUP


def report(args, version, workdir):
    playbook = os.path.join(_common.collection_dir(), 'playbooks', 'snapshot_volumes.yml')
    per_entry = os.path.join(workdir, 'per-entry.yml')
    with open(per_entry, 'w') as handle:
        json.dump(PER_ENTRY_PLAYBOOK, handle, indent=1)
    counts = {}
    rows = []
    for count in args.counts:
        samples = {'playbook': [], 'per_entry': []}
        for sample in range(args.repeat):  # alternating, so drift hits both
            samples['playbook'].append(one_sample(workdir, count, 'playbook', playbook, sample))
            samples['per_entry'].append(one_sample(workdir, count, 'per-entry', per_entry, sample))
        figures = {}
        for shape, runs in samples.items():
            figures[shape] = {'create_s': round(_common.median([r[0] for r in runs]), 3),
                              'rotation_s': round(_common.median([r[1] for r in runs]), 3)}
        figures['create_speedup'] = round(figures['per_entry']['create_s'] / figures['playbook']['create_s'], 1)
        figures['rotation_speedup'] = round(figures['per_entry']['rotation_s'] / figures['playbook']['rotation_s'],
                                            1)
        counts[str(count)] = figures
        rows.append((str(count), '%.2f' % figures['playbook']['create_s'], '%.2f' % figures['per_entry']['create_s'],
                     '%.1f' % figures['create_speedup'], '%.2f' % figures['playbook']['rotation_s'],
                     '%.2f' % figures['per_entry']['rotation_s'], '%.1f' % figures['rotation_speedup']))
    print('%s; %s; medians of %d samples; whole ansible-playbook runs' % (version, _common.load_text(), args.repeat))
    _common.table([('volumes', 7), ('create s', 9), ('per-entry s', 11), ('x', 6), ('rotation s', 10),
                   ('per-entry s', 11), ('x', 6)], rows)
    print('create: N entries (one batch); rotation: 2N entries (a newer snapshot, then the first one deleted: two '
          'batches); x: per-entry loop / playbook')
    _common.emit({'benchmark': 'snapshot_volumes_playbook', 'qemu_img': version, 'repeat': args.repeat,
                  'counts': counts})
    return 0


if __name__ == '__main__':
    sys.exit(main())
