# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: a group snapshot of the --disks disks of one running domain against single-disk online snapshots.

One running libvirt domain (QEMU TCG, no OS) has --disks raw volumes attached as vdb, vdc, ... (serial = volume id,
as Nova attaches Cinder volumes). Each sample, in the same run and alternating:

* group: ONE ``volume_snapshot group=true`` request over every disk, with the code path the module runs
  (``GroupSnapshot(...).run()``: locks in order, chain reads, journals, overlays, the one atomic libvirt call,
  ``.info`` files);
* singles: --disks single-volume online snapshots one after the other (``VolumeSnapshot(...).run()`` each: what
  a loop of tasks runs, without Ansible's start-up per task), each of them timed too.

Figures: the group's time, one single-disk snapshot's time (the median of every single), the singles' total;
ratios group / one single (target at most 2x) and singles / group. Each figure is split into the libvirt call
(``snapshotCreateXML``: libvirt and QEMU switching the disks) and the module's own work (the rest), so the run
shows the floor of the ratio: the libvirt calls' ratio alone, what the group would cost with no work of its own. Every result is checked (each disk's libvirt
chain has the new overlay on top, each ``.info`` file names it): a wrong one exits 1.

Needs libvirtd with QEMU (the lab: ``bash tests/lab/lab.sh start libvirt``), the libvirt Python bindings and
qemu-img. Work files live in a temporary directory under /var/tmp (QEMU run by libvirt must reach it), removed at
the end with the domain.

Run: PYTHONPATH=<dir holding ansible_collections/> python benchmarks/bench_group_snapshot.py
     [--disks 8] [--repeat 5] [--libvirt-uri qemu:///system]
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ET

from ansible_collections.volsnap.openstack.benchmarks import _common
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.group import GroupRequest, GroupSnapshot, Member
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import DEFAULT_URI, LIBVIRT_IMPORT_ERROR, Libvirt
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import load_info
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot

BENCHMARK = 'group_snapshot'
TARGET_RATIO = 2.0  # the group's time at most 2x one single-disk snapshot


def parse_args(argv):
    parser = _common.argument_parser(__doc__)
    parser.add_argument('--disks', type=int, default=8, help='disks of the domain in the group (default: %(default)s)')
    parser.add_argument('--repeat', type=int, default=5, help='samples after a warm-up (default: %(default)s)')
    parser.add_argument('--libvirt-uri', default=DEFAULT_URI, help='libvirt URI (default: %(default)s)')
    parser.add_argument('--qemu-img', help='qemu-img to use (default: the one on PATH)')
    args = parser.parse_args(argv)
    if not 1 <= args.disks <= 20 or args.repeat < 1:
        parser.error('--disks must be 1 to 20 and --repeat at least 1')
    return args


def runner(argv):
    """The command runner of QemuImg outside a module."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def domain_xml(name, volumes):
    """An OS-less TCG domain (64 MiB, no network, no graphics) with the volumes as raw virtio disks vdb, vdc..."""
    dom = ET.Element('domain', type='qemu')
    ET.SubElement(dom, 'name').text = name
    ET.SubElement(dom, 'memory', unit='MiB').text = '64'
    ET.SubElement(dom, 'vcpu').text = '1'
    os_el = ET.SubElement(dom, 'os')
    ET.SubElement(os_el, 'type', arch='x86_64', machine='pc').text = 'hvm'
    devices = ET.SubElement(dom, 'devices')
    for index, (path, volume_id) in enumerate(volumes):
        disk = ET.SubElement(devices, 'disk', type='file', device='disk')
        ET.SubElement(disk, 'driver', name='qemu', type='raw')
        ET.SubElement(disk, 'source', file=path)
        ET.SubElement(disk, 'target', dev='vd' + chr(ord('b') + index), bus='virtio')
        ET.SubElement(disk, 'serial').text = volume_id
    ET.SubElement(devices, 'controller', type='usb', model='none')
    video = ET.SubElement(devices, 'video')
    ET.SubElement(video, 'model', type='none')
    ET.SubElement(devices, 'memballoon', model='none')
    return ET.tostring(dom, encoding='unicode')


def check_top(lv, dom, target, volume, snap_id):
    """The disk's libvirt chain has the snapshot's overlay on top and the .info file names it (else exit 1)."""
    overlay = '%s.%s' % (os.path.basename(volume), snap_id)
    chain = lv.disk_chain_paths(dom, target)
    info = load_info(volume + '.info')
    if os.path.basename(chain[0]) != overlay or info is None or info.active != overlay:
        raise _common.BenchError('disk %s: libvirt chain %s, .info %s; expected %s on top'
                                 % (target, chain, info, overlay))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        qemu_img, version = _common.qemu_img_tool(args.qemu_img)
        if LIBVIRT_IMPORT_ERROR is not None:
            raise _common.BenchError('the libvirt Python bindings are missing (pip install libvirt-python)',
                                     _common.EXIT_SETUP)
    except _common.BenchError as exc:
        return _common.failed('bench_group_snapshot', exc)
    workdir = tempfile.mkdtemp(prefix='volsnap-bench-group-', dir='/var/tmp' if os.path.isdir('/var/tmp') else None)
    os.chmod(workdir, 0o777)  # QEMU run by libvirt (libvirt-qemu) writes the overlays
    lv = Libvirt(args.libvirt_uri)
    dom = None
    print('%s: %d disks of one running domain, %s, python %s, libvirt at %s; median of %d samples after a warm-up'
          % (BENCHMARK, args.disks, version, platform.python_version(), args.libvirt_uri, args.repeat))
    figures = {'benchmark': BENCHMARK, 'disks': args.disks, 'repeat': args.repeat, 'qemu_img_version': version}
    try:
        volumes = []
        for _index in range(args.disks):
            volume_id = str(uuid.uuid4())
            path = os.path.join(workdir, 'volume-%s' % volume_id)
            _common.run([qemu_img, 'create', '-q', '-f', 'raw', path, '16M'])
            os.chmod(path, 0o666)
            volumes.append((path, volume_id))
        try:
            dom = lv.conn.createXML(domain_xml('volsnap-bench-group-%s' % uuid.uuid4().hex[:8], volumes), 0)
        except Exception as exc:  # libvirt.libvirtError, whatever the bindings raise
            raise _common.BenchError('cannot start the benchmark domain at %s: %s (bash tests/lab/lab.sh start libvirt)'
                                     % (args.libvirt_uri, exc), _common.EXIT_SETUP)
        qemu = QemuImg(runner, qemu_img)
        calls = []  # seconds of each libvirt snapshotCreateXML call (one per request)
        external_snapshot_disks = lv.external_snapshot_disks

        def timed_call(*call_args, **call_kwargs):
            seconds, value = _common.timed(lambda: external_snapshot_disks(*call_args, **call_kwargs))
            calls.append(seconds)
            return value

        lv.external_snapshot_disks = timed_call
        group_s, singles_total_s, single_s, group_call_s, single_call_s = [], [], [], [], []
        for sample in range(args.repeat + 1):
            members = [Member(path, str(uuid.uuid4())) for path, _id in volumes]
            del calls[:]
            seconds, result = _common.timed(GroupSnapshot(GroupRequest(members), qemu, lambda: lv, False).run)
            if len(calls) != 1:
                raise _common.BenchError('the group made %d libvirt snapshot calls, not one' % len(calls))
            group_call = calls[0]
            if not result['changed'] or result['group']['mode'] != 'online' or not result['group']['atomic']:
                raise _common.BenchError('the group snapshot did not run online and atomic: %s' % result['group'])
            for index, member in enumerate(members):
                check_top(lv, dom, 'vd' + chr(ord('b') + index), member.volume_path, member.snapshot_id)
            total, each = 0.0, []
            for index, (path, _id) in enumerate(volumes):
                snap = str(uuid.uuid4())
                del calls[:]
                one, single = _common.timed(VolumeSnapshot(Request(path, snap), qemu, lambda: lv, False).run)
                if len(calls) != 1:
                    raise _common.BenchError('a single-disk snapshot made %d libvirt snapshot calls' % len(calls))
                single_call_each = calls[0]
                if not single['changed'] or single['mode'] != 'online':
                    raise _common.BenchError('a single-disk snapshot did not run online: %s' % single['plan'])
                check_top(lv, dom, 'vd' + chr(ord('b') + index), path, snap)
                total += one
                each.append((one, single_call_each))
            if sample:  # the first round is the warm-up
                group_s.append(seconds)
                group_call_s.append(group_call)
                singles_total_s.append(total)
                single_s.extend(one for one, _call in each)
                single_call_s.extend(call for _one, call in each)
    except (_common.BenchError, VolsnapError) as exc:
        return _common.failed('bench_group_snapshot', exc, VolsnapError)
    finally:
        if dom is not None:
            try:
                dom.destroy()
            except Exception:  # pylint: disable=broad-exception-caught
                pass  # already gone
        lv.close()
        shutil.rmtree(workdir, ignore_errors=True)

    group, one, singles = _common.median(group_s), _common.median(single_s), _common.median(singles_total_s)
    group_call, one_call = _common.median(group_call_s), _common.median(single_call_s)
    group_own, one_own = _common.median([g - c for g, c in zip(group_s, group_call_s)]), _common.median(
        [s - c for s, c in zip(single_s, single_call_s)])
    figures.update({'group_s': group, 'single_disk_s': one, 'singles_total_s': singles,
                    'libvirt_call_group_s': group_call, 'libvirt_call_single_s': one_call,
                    'module_work_group_s': group_own, 'module_work_single_s': one_own,
                    'ratio_libvirt_calls': group_call / one_call,
                    'ratio_group_vs_one_single': group / one, 'ratio_singles_vs_group': singles / group,
                    'target': {'ratio_group_vs_one_single_max': TARGET_RATIO, 'met': group / one <= TARGET_RATIO}})
    print()
    _common.table([('', -58), ('seconds', 10)], [
        ['group: %d disks, one atomic libvirt call' % args.disks, '%.3f' % group],
        ['one single-disk online snapshot (median of all)', '%.3f' % one],
        ['%d single-disk online snapshots, one after the other' % args.disks, '%.3f' % singles],
        ['  the libvirt call of the group (%d disks)' % args.disks, '%.3f' % group_call],
        ['  the libvirt call of one single-disk snapshot', '%.3f' % one_call],
        ['  the module\'s own work: group', '%.3f' % group_own],
        ['  the module\'s own work: one single-disk snapshot', '%.3f' % one_own],
    ])
    print('libvirt call of the group / of one single: %.2fx (the floor of the ratio below: a group with no work of '
          'its own)' % (group_call / one_call))
    print('group / one single-disk snapshot: %.2fx; %d singles / group: %.2fx'
          % (group / one, args.disks, singles / group))
    print('target group <= %.0fx one single-disk snapshot: %s (%.2fx)'
          % (TARGET_RATIO, _common.goal(figures['target']['met']), group / one))
    print('(%s at the end of the run)' % _common.load_text())
    _common.emit(figures)
    return 0


if __name__ == '__main__':
    sys.exit(main())
