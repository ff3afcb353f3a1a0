# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers shared by the benchmark scripts (not a benchmark itself: it measures nothing).

Imported as ``ansible_collections.volsnap.openstack.benchmarks._common``, found through the same
``PYTHONPATH`` as the collection. It holds what every ``bench_*.py`` needs: the error carrying
the exit code (1 wrong result, 2 failed setup), running a command, finding qemu-img, timing and
medians, the load average printed next to the figures, the text table, goal lines, and the JSON
last line.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import time

EXIT_WRONG = 1
EXIT_SETUP = 2


class BenchError(Exception):
    """A result was wrong (code 1) or a setup step failed (code 2)."""

    def __init__(self, message, code=EXIT_WRONG):
        super().__init__(message)
        self.code = code


def run(cmd, cwd=None, env=None):
    """Run a command and return its stdout; a BenchError (exit 2) when it cannot run or fails."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, check=False)
    except OSError as exc:
        raise BenchError('cannot run %s: %s' % (cmd[0], exc), EXIT_SETUP)
    if proc.returncode != 0:
        raise BenchError('%s failed (exit %d): %s' % (' '.join(cmd), proc.returncode,
                                                      (proc.stderr or proc.stdout).strip()[-2000:]), EXIT_SETUP)
    return proc.stdout


def qemu_img_tool(explicit=None, also=()):
    """``(path, version line)`` of qemu-img (``explicit`` or the one on PATH), after checking that the
    tools in ``also`` (for example ``qemu-io``) are on PATH; a BenchError (exit 2) saying what to install."""
    qemu_img = explicit or shutil.which('qemu-img')
    missing = [tool for tool in also if not shutil.which(tool)]
    if not qemu_img or missing:
        raise BenchError('%s not found (install qemu-utils)' % ', '.join(([] if qemu_img else ['qemu-img']) + missing),
                         EXIT_SETUP)
    lines = run([qemu_img, '--version']).splitlines()
    if not lines:
        raise BenchError('%s --version printed nothing' % qemu_img, EXIT_SETUP)
    return qemu_img, lines[0].strip()


def timed(func, *args, **kwargs):
    """``(seconds, result)`` of one call, on the monotonic high-resolution clock."""
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - start, result


def median(values):
    """The median of a non-empty list of numbers (a BenchError when nothing was measured)."""
    values = list(values)
    if not values:
        raise BenchError('no sample was taken (internal error)')
    return statistics.median(values)


def int_list(parser, text, option, minimum=1, maximum=None):
    """Comma-separated integers of ``option`` (argparse error when they are not, or out of range)."""
    try:
        values = [int(part) for part in text.split(',') if part.strip()]
    except ValueError:
        parser.error('%s takes comma-separated integers, got %r' % (option, text))
    if not values or min(values) < minimum or (maximum is not None and max(values) > maximum):
        upper = 'any' if maximum is None else maximum
        parser.error('%s: values must be between %d and %s' % (option, minimum, upper))
    return values


def load_average():
    """The 1, 5 and 15 minute load averages (the machine is shared: print them beside the figures)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def load_text(load=None):
    load = load_average() if load is None else load
    return 'load average %s' % (' '.join('%.2f' % value for value in load) if load else 'unknown')


def table(header, rows):
    """Print a text table: ``header`` is a list of (title, width), ``rows`` lists of pre-formatted cells."""
    line = ' '.join('%*s' % (width, title) for title, width in header)
    print(line)
    print('-' * len(line))
    for row in rows:
        print(' '.join('%*s' % (width, cell) for (_title, width), cell in zip(header, row)))


def goal(met):
    """The word a goal line uses: ``met``, ``not met`` or ``not measured`` (None)."""
    if met is None:
        return 'not measured'
    return 'met' if met else 'not met'


def emit(figures):
    """Print the figures as the last line: one JSON object naming its benchmark, with the Python version and the
    load average at the end of the run added when missing."""
    if 'benchmark' not in figures:
        raise BenchError('internal error: the figures do not name their benchmark')
    figures.setdefault('python', platform.python_version())
    figures.setdefault('load_average', load_average())
    print(json.dumps(figures))
