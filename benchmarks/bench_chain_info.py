# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: inspect a qcow2 backing chain natively vs. with ``qemu-img info --backing-chain``.

A real chain is built with qemu-img in a temporary directory: a base image (raw or qcow2,
64 MiB by default, sparse) and N qcow2 overlays, each made with
``qemu-img create -f qcow2 -b <relative previous> -F <format of previous> <new>``. One chain
of max(--depths) overlays is built; depth N is measured from overlay N as top, whose chain is
overlays N..1 plus the base, i.e. N + 1 layers.

For every depth, in the same run:

* native: ``inspect_chain(top, max_depth=1000)`` in-process. One sample is a batch of calls
  (sized to last at least ~20 ms) divided by the batch size; the figure is the median of
  --repeat samples (at least 7). The report must be safe and hold N + 1 layers in the order
  the chain was built, else the script exits 1.
* qemu-img: ``qemu-img info --backing-chain --output=json -U <top>`` as a subprocess, the
  median of --repeat runs (at least 5). Its JSON must list N + 1 images, else exit 1.

Output: a human-readable table, a target line, and as the LAST line one JSON object.
Timings are reported, never asserted: only wrong results make the script fail.

Run: PYTHONPATH=<dir holding ansible_collections/> python benchmarks/bench_chain_info.py
     [--depths 1,10,50,200] [--repeat N] [--base-format raw|qcow2] [--base-size-mib 64]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time

from ansible_collections.volsnap.openstack.benchmarks import _common
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain

BENCHMARK = 'qcow2_chain_info'
TARGET_RATIO = 20.0
TARGET_DEPTH = 50
MIN_NATIVE_RUNS = 7
MIN_QEMU_RUNS = 5
MIN_BATCH_SECONDS = 0.02
MAX_DEPTH = 1000


def parse_args(argv):
    parser = _common.argument_parser(__doc__)
    parser.add_argument('--depths', default='1,10,50,200',
                        help='comma-separated overlay counts to measure (default: %(default)s)')
    parser.add_argument('--repeat', type=int, default=9,
                        help='timed samples per depth and engine; at least %d native and %d qemu-img samples '
                             'are taken whatever is given (default: %%(default)s)' % (MIN_NATIVE_RUNS, MIN_QEMU_RUNS))
    parser.add_argument('--base-format', choices=('raw', 'qcow2'), default='raw',
                        help='format of the base image (default: %(default)s)')
    parser.add_argument('--base-size-mib', type=int, default=64,
                        help='virtual size of the base image in MiB (default: %(default)s)')
    parser.add_argument('--qemu-img', default=None, help='qemu-img binary (default: qemu-img on PATH)')
    args = parser.parse_args(argv)
    depths = sorted(set(_common.int_list(parser, args.depths, '--depths', 1, MAX_DEPTH - 1)))
    if args.repeat < 1:
        parser.error('--repeat must be at least 1')
    if args.base_size_mib < 1:
        parser.error('--base-size-mib must be at least 1')
    args.depths = depths
    return args


def overlay_name(index):
    return 'overlay-%04d.qcow2' % index


def build_chain(qemu_img, directory, depth, base_format, base_size_mib):
    """Create base + ``depth`` overlays in ``directory``; return the file names, base first."""
    base = 'base.%s' % base_format
    _common.run([qemu_img, 'create', '-q', '-f', base_format, base, '%dM' % base_size_mib], cwd=directory)
    names = [base]
    prev_format = base_format
    for index in range(1, depth + 1):
        name = overlay_name(index)
        _common.run([qemu_img, 'create', '-q', '-f', 'qcow2', '-b', names[-1], '-F', prev_format, name], cwd=directory)
        names.append(name)
        prev_format = 'qcow2'
    return names


def check_native(report, expected):
    """``expected``: the file names of the chain, top first."""
    if not report.safe:
        raise _common.BenchError('native report of %s is not safe: %s' % (report.path, report.summary()))
    got = [layer.image.filename for layer in report.layers]
    if got != expected:
        raise _common.BenchError('native report of %s has %d layers %s..., expected %d %s...'
                                 % (report.path, len(got), got[:3], len(expected), expected[:3]))


def check_qemu(output, top, expected):
    try:
        chain = json.loads(output)
    except ValueError as exc:
        raise _common.BenchError('qemu-img info of %s did not print JSON: %s' % (top, exc))
    got = [os.path.basename(image.get('filename', '')) for image in chain] if isinstance(chain, list) else None
    if got != expected:
        raise _common.BenchError('qemu-img info --backing-chain of %s listed %s images, expected %d'
                                 % (top, 'no list of' if got is None else len(got), len(expected)))


def time_native(top, expected, repeat):
    """Median seconds of one ``inspect_chain`` call, from batched samples."""
    check_native(inspect_chain(top, max_depth=MAX_DEPTH), expected)  # warm-up and correctness
    start = time.perf_counter()
    report = inspect_chain(top, max_depth=MAX_DEPTH)
    once = time.perf_counter() - start
    check_native(report, expected)
    batch = max(1, int(MIN_BATCH_SECONDS / max(once, 1e-7)))
    samples = []
    for dummy in range(max(repeat, MIN_NATIVE_RUNS)):
        start = time.perf_counter()
        for dummy in range(batch):
            report = inspect_chain(top, max_depth=MAX_DEPTH)
        samples.append((time.perf_counter() - start) / batch)
        check_native(report, expected)
    return _common.median(samples), batch


def time_qemu(qemu_img, top, expected, repeat):
    """Median seconds of one ``qemu-img info --backing-chain`` subprocess."""
    cmd = [qemu_img, 'info', '--backing-chain', '--output=json', '-U', top]
    check_qemu(_common.run(cmd), top, expected)  # warm-up and correctness
    samples = []
    for dummy in range(max(repeat, MIN_QEMU_RUNS)):
        seconds, output = _common.timed(_common.run, cmd)
        samples.append(seconds)
        check_qemu(output, top, expected)
    return _common.median(samples)


def per_layer_us(seconds, depth):
    return seconds / (depth + 1) * 1e6


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        qemu_img, version = _common.qemu_img_tool(args.qemu_img)
    except _common.BenchError as exc:
        return _common.failed('bench_chain_info', exc)

    workdir = tempfile.mkdtemp(prefix='volsnap-bench-chain-')
    try:
        max_depth = args.depths[-1]
        build_start = time.perf_counter()
        names = build_chain(qemu_img, workdir, max_depth, args.base_format, args.base_size_mib)
        build_s = time.perf_counter() - build_start
        print('%s: %s base %d MiB + %d qcow2 overlays built in %.1f s with %s'
              % (BENCHMARK, args.base_format, args.base_size_mib, max_depth, build_s, version))
        print('python %s on %s; native: median of %d batched samples, qemu-img: median of %d runs'
              % (platform.python_version(), platform.machine(), max(args.repeat, MIN_NATIVE_RUNS),
                 max(args.repeat, MIN_QEMU_RUNS)))

        results = {}
        for depth in args.depths:
            top = os.path.join(workdir, names[depth])
            expected = list(reversed(names[:depth + 1]))
            native_s, batch = time_native(top, expected, args.repeat)
            qemu_s = time_qemu(qemu_img, top, expected, args.repeat)
            results[depth] = {
                'layers': depth + 1,
                'native_s': native_s,
                'native_batch': batch,
                'qemu_img_s': qemu_s,
                'ratio': qemu_s / native_s,
                'native_us_per_layer': per_layer_us(native_s, depth),
            }
    except _common.BenchError as exc:
        return _common.failed('bench_chain_info', exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    _common.table([('depth', 6), ('layers', 7), ('native ms', 12), ('qemu-img ms', 13), ('ratio', 9),
                   ('native us/layer', 16)],
                  [[str(depth), str(results[depth]['layers']), '%.3f' % (results[depth]['native_s'] * 1e3),
                    '%.3f' % (results[depth]['qemu_img_s'] * 1e3), '%.1fx' % results[depth]['ratio'],
                    '%.1f' % results[depth]['native_us_per_layer']] for depth in args.depths])
    print('(depth = overlays above the base; layers = depth + 1; ratio = qemu_img_s / native_s)')
    print('(%s at the end of the run)' % _common.load_text())

    target = results.get(TARGET_DEPTH)
    if target is None:
        met = None
        print('target ratio>=%dx at depth %d: not measured (depth %d not in --depths)'
              % (TARGET_RATIO, TARGET_DEPTH, TARGET_DEPTH))
    else:
        met = target['ratio'] >= TARGET_RATIO
        print('target ratio>=%dx at depth %d: %s (%.1fx)'
              % (TARGET_RATIO, TARGET_DEPTH, _common.goal(met), target['ratio']))

    linear = {'us_per_layer_depth%d' % d: (results[d]['native_us_per_layer'] if d in results else None)
              for d in (50, 200)}
    if len(args.depths) >= 2:
        lo, hi = args.depths[-2], args.depths[-1]
        # marginal cost of one more layer between the two deepest chains: excludes fixed per-call overhead
        linear['marginal_us_per_layer'] = (results[hi]['native_s'] - results[lo]['native_s']) / (hi - lo) * 1e6
        linear['marginal_between_depths'] = [lo, hi]
        print('native marginal cost between depth %d and %d: %.1f us/layer' % (lo, hi, linear['marginal_us_per_layer']))

    figures = {
        'benchmark': BENCHMARK,
        'depths': {str(d): {'native_s': r['native_s'], 'qemu_img_s': r['qemu_img_s'], 'ratio': r['ratio'],
                            'layers': r['layers'], 'native_us_per_layer': r['native_us_per_layer']}
                   for d, r in sorted(results.items())},  # insertion order: depths ascending
        'linear': linear,
        'target': {'ratio_min': TARGET_RATIO, 'depth': TARGET_DEPTH, 'met': met},
        'repeat': {'native': max(args.repeat, MIN_NATIVE_RUNS), 'qemu_img': max(args.repeat, MIN_QEMU_RUNS)},
        'base_format': args.base_format,
        'base_size_mib': args.base_size_mib,
        'qemu_img_version': version,
        'python': platform.python_version(),
    }
    _common.emit(figures)
    return 0


if __name__ == '__main__':
    sys.exit(main())
