# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the operator playbook volsnap.openstack.snapshot_hosts over many hosts against one host.

Hosts are network-namespace machines of tests/hosts/hosts.sh (each its own root filesystem, sshd and share,
reached over real ssh; their rootfs has qemu-utils). Each host gets --volumes thin raw volumes (1 GiB, made on the
host with its own qemu-img) in its own share; then, in the same run:

* one host: ``ansible-playbook volsnap.openstack.snapshot_hosts`` limited to the first host (--volumes volumes);
* many hosts: the same playbook on all --hosts hosts (--hosts x --volumes volumes), ``--forks`` = --hosts.

Both create a snapshot of every volume (one volume_snapshot task per host, ``volumes``); the snapshots are then
deleted again (state=absent, not timed) so that the next sample starts from the same share. Each figure is the
median of --repeat samples (whole ansible-playbook runs). Every result is checked (the recap: one changed task per
host, nothing failed). Goal (reported, not enforced): many hosts within 1.5x of one host. Beside each figure the
machine's CPU seconds of the run (/proc/stat: every process of it, and whatever else ran) and the CPU-bound floor
of the ratio they imply on this machine's CPUs.

Needs root (namespaces) and the host rootfs (``bash tests/hosts/hosts.sh build-rootfs``, about 70 s once). The
hosts are started as scenario ``bench-hosts-<pid>`` and stopped at the end.

Run: PYTHONPATH=<dir holding ansible_collections/> python benchmarks/bench_snapshot_hosts.py
     [--hosts 3] [--volumes 100] [--repeat 3]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

from ansible_collections.volsnap.openstack.benchmarks import _common

TARGET = 1.5


def parse_args(argv):
    parser = _common.argument_parser(__doc__)
    parser.add_argument('--hosts', type=int, default=3, help='hosts of the many-hosts run (default 3)')
    parser.add_argument('--volumes', type=int, default=100, help='volumes per host (default 100)')
    parser.add_argument('--repeat', type=int, default=3, help='samples of each figure (default 3)')
    args = parser.parse_args(argv)
    if args.hosts < 2 or args.volumes < 1 or args.repeat < 1:
        parser.error('--hosts must be 2 or more, --volumes and --repeat 1 or more')
    return args


class Hosts(object):
    def __init__(self, count):
        self.script = os.path.join(_common.collection_dir(), 'tests', 'hosts', 'hosts.sh')
        self.name = 'bench-hosts-%d' % os.getpid()
        self.names = ['bh%d' % (index + 1) for index in range(count)]
        self.inventory = None

    def __enter__(self):
        if not os.path.exists(self.script):
            raise _common.BenchError('%s is missing' % self.script, _common.EXIT_SETUP)
        try:
            _common.run(['bash', self.script, 'start', self.name, str(len(self.names)), '--names', ','.join(self.names)])
            hosts_dir = os.environ.get('VOLSNAP_HOSTS_DIR', '/var/tmp/volsnap-hosts')
            self.inventory = os.path.join(hosts_dir, 'scenarios', self.name, 'inventory.yml')
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        subprocess.run(['bash', self.script, 'stop', self.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)


def recap(output):
    return dict((host, dict((k, int(v)) for k, v in re.findall(r'(\w+)=(\d+)', counts)))
                for host, counts in re.findall(r'^(\S+)\s+:\s+(ok=.*)$', output, re.M))


class Bench(object):
    def __init__(self, args, hosts, workdir):
        self.args = args
        self.hosts = hosts
        self.workdir = workdir
        self.vars = os.path.join(workdir, 'volumes.json')
        self.volumes = dict((host, [{'volume_id': str(uuid.uuid4())} for _i in range(args.volumes)])
                            for host in hosts.names)
        self.env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=_common.collections_root(), ANSIBLE_NOCOLOR='1',
                        ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_PIPELINING='1',
                        ANSIBLE_LOCAL_TEMP=os.path.join(workdir, 'tmp'))

    def write_inventory(self):
        """Every volume a new snapshot id (each sample creates new snapshots)."""
        hosts = {}
        for host, volumes in self.volumes.items():
            for volume in volumes:
                volume['snapshot_id'] = str(uuid.uuid4())
            hosts[host] = {'snapshot_hosts_share': '/srv/bench-share', 'snapshot_hosts_volumes': volumes}
        with open(self.vars, 'w') as handle:
            json.dump({'cinder_volume': {'hosts': hosts}}, handle)

    def playbook(self, playbook, limit, *extra):
        """(seconds, machine CPU seconds, output) of one ansible-playbook run."""
        argv = [_common.ansible_tool('ansible-playbook'), '-i', self.hosts.inventory, '-i', self.vars, playbook,
                '--forks', str(len(self.hosts.names)), '--limit', ','.join(limit)] + list(extra)
        return _common.cpu_timed(_common.run, argv, cwd=self.workdir, env=self.env)

    def prepare(self):
        self.write_inventory()
        play = os.path.join(self.workdir, 'prepare.yml')
        make = ("cd {{ snapshot_hosts_share }} && for v in {{ snapshot_hosts_volumes | map(attribute='volume_id') "
                "| join(' ') }}; do truncate -s 1G volume-$v; done")
        tasks = [{'ansible.builtin.file': {'path': '{{ snapshot_hosts_share }}', 'state': 'directory'}},
                 {'ansible.builtin.shell': {'cmd': make}}]
        with open(play, 'w') as handle:
            json.dump([{'hosts': 'cinder_volume', 'become': True, 'gather_facts': False, 'tasks': tasks}], handle)
        self.playbook(play, self.hosts.names)

    def sample(self, limit):
        """(seconds, machine CPU seconds) of one snapshot run over ``limit``."""
        self.write_inventory()
        seconds, cpu, out = self.playbook('volsnap.openstack.snapshot_hosts', limit)
        counts = recap(out)
        if sorted(counts) != sorted(limit) or any(counts[h]['changed'] != 1 or counts[h]['failed'] for h in limit):
            raise _common.BenchError('unexpected recap: %s' % counts)
        _s, _cpu, out = self.playbook('volsnap.openstack.snapshot_hosts', limit, '-e', 'snapshot_hosts_state=absent')
        if any(recap(out)[h]['failed'] for h in limit):
            raise _common.BenchError('the delete failed: %s' % out[-3000:])
        return seconds, cpu


def main(argv=None):
    args = parse_args(argv)
    try:
        workdir = tempfile.mkdtemp(prefix='bench-hosts-')
        try:
            with Hosts(args.hosts) as hosts:
                return report(args, Bench(args, hosts, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    except _common.BenchError as exc:
        print('error: %s' % exc, file=sys.stderr)
        return exc.code


def report(args, bench):
    bench.prepare()
    one, many = [], []
    bench.sample(bench.hosts.names[:1])  # warm-up (ssh masters, caches)
    for _index in range(args.repeat):  # alternate, so drift hits both
        one.append(bench.sample(bench.hosts.names[:1]))
        many.append(bench.sample(bench.hosts.names))
    one_s, many_s = _common.median(s for s, _c in one), _common.median(s for s, _c in many)
    one_cpu, many_cpu = _common.median(c for _s, c in one), _common.median(c for _s, c in many)
    cpus = _common.cpu_seconds()[1]
    ratio = many_s / one_s
    # CPU-bound floor: the many-hosts run cannot end before its CPU work is spread over every CPU
    floor = many_cpu / cpus / one_s
    print('%d hosts x %d volumes against 1 host x %d volumes, forks=%d, %d CPUs; %s'
          % (args.hosts, args.volumes, args.volumes, args.hosts, cpus, _common.load_text()))
    _common.table([('run', 28), ('seconds', 8), ('ms/volume', 10), ('CPU s (machine)', 16)],
                  [('1 host x %d' % args.volumes, '%.2f' % one_s, '%.1f' % (1000 * one_s / args.volumes),
                    '%.2f' % one_cpu),
                   ('%d hosts x %d' % (args.hosts, args.volumes), '%.2f' % many_s,
                    '%.1f' % (1000 * many_s / (args.hosts * args.volumes)), '%.2f' % many_cpu)])
    met = ratio <= TARGET
    print('ratio many/one %.2f; target many hosts within %.1fx of one host: %s' % (ratio, TARGET, _common.goal(met)))
    print('CPU-bound floor of the ratio: (many-hosts CPU s / %d CPUs) / one-host s = %.2f (the machine CPU time of a '
          'run counts every process of it; meaningful on a quiet machine)' % (cpus, floor))
    _common.emit({'benchmark': 'snapshot_hosts', 'hosts': args.hosts, 'volumes_per_host': args.volumes,
                  'one_host_s': round(one_s, 3), 'many_hosts_s': round(many_s, 3), 'ratio': round(ratio, 3),
                  'one_host_cpu_s': round(one_cpu, 3), 'many_hosts_cpu_s': round(many_cpu, 3), 'cpus': cpus,
                  'cpu_floor_ratio': round(floor, 3),
                  'samples': {'one': [round(s, 3) for s, _c in one], 'many': [round(s, 3) for s, _c in many]},
                  'target': {'ratio_max': TARGET, 'met': met}})
    return 0


if __name__ == '__main__':
    sys.exit(main())
