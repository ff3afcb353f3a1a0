# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers shared by the benchmark scripts (not a benchmark itself: it measures nothing).

Imported as ``ansible_collections.volsnap.openstack.benchmarks._common``, found through the same
``PYTHONPATH`` as the collection. It holds what every ``bench_*.py`` needs: the error carrying
the exit code (1 wrong result, 2 failed setup), running a command, finding qemu-img, timing and
medians, the load average printed next to the figures, the text table, goal lines, and the JSON
last line. For the benchmarks that run ``ansible-playbook``: where the collection is, the Ansible
tools, a localhost playbook run. For those that use the lab's Ceph and OpenStack: their options
and default paths, and running the script again under the lab's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid

EXIT_WRONG = 1
EXIT_SETUP = 2
MIB = 1 << 20
GIB = 1 << 30
HOST_PYTHON = '/usr/bin/python3'  # the interpreter of a compute or storage node, which runs the modules


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


def cpu_seconds():
    """CPU time the whole machine has spent busy so far (/proc/stat: user, nice, system, irq, softirq; not the time a
    hypervisor stole), and the number of CPUs. The delta over a run counts every process of it (ansible-playbook,
    its forks, ssh, the remote modules in namespace hosts) and whatever else ran meanwhile; on a quiet machine,
    delta / CPUs bounds how short the run can be when CPU-bound."""
    with open('/proc/stat') as handle:
        fields = handle.readline().split()
    ticks = os.sysconf('SC_CLK_TCK')
    user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[1:8])
    return (user + nice + system + irq + softirq) / float(ticks), os.cpu_count() or 1


def cpu_timed(func, *args, **kwargs):
    """``(seconds, machine CPU seconds, result)`` of one call (see :func:`cpu_seconds`)."""
    cpu_before, _cpus = cpu_seconds()
    seconds, result = timed(func, *args, **kwargs)
    return seconds, cpu_seconds()[0] - cpu_before, result


def median(values):
    """The median of a non-empty list of numbers (a BenchError when nothing was measured)."""
    values = list(values)
    if not values:
        raise BenchError('no sample was taken (internal error)')
    return statistics.median(values)


def argument_parser(doc):
    """The script's argparse parser, described by the first paragraph of its docstring ``doc``."""
    return argparse.ArgumentParser(description=doc.split('\n\n', maxsplit=1)[0])


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


def failed(script, exc, refused=None):
    """Print why ``script`` failed (``script: FAILED: ...`` on stderr) and return its exit code: a BenchError's
    own, 1 for an error the module code raised (pass its class as ``refused``: it refused the request)."""
    if refused is not None and isinstance(exc, refused):
        print('%s: FAILED: the module code refused: %s' % (script, exc), file=sys.stderr)
        return EXIT_WRONG
    print('%s: FAILED: %s' % (script, exc), file=sys.stderr)
    return getattr(exc, 'code', EXIT_WRONG)


def thin_volumes(share, count, size=GIB):
    """A new directory ``share`` holding ``count`` sparse raw volume files ``volume-<new id>`` of ``size`` bytes;
    their ids, in creation order."""
    os.mkdir(share)
    volumes = [str(uuid.uuid4()) for _index in range(count)]
    for volume in volumes:
        with open(os.path.join(share, 'volume-%s' % volume), 'wb') as handle:
            handle.truncate(size)
    return volumes


# ---------------------------------------------------------------- the collection and ansible-playbook


def collection_dir():
    """The collection's directory (``<root>/ansible_collections/volsnap/openstack``) these benchmarks are in."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def collections_root():
    """The directory holding ``ansible_collections/`` (what ``ANSIBLE_COLLECTIONS_PATH`` names)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(collection_dir())))


def ansible_tool(name='ansible-playbook'):
    """An Ansible command: the one beside this Python (the venv's) first, else the one on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(candidate):
        return candidate
    found = shutil.which(name)
    if not found:
        raise BenchError('%s not found (make deps)' % name, EXIT_SETUP)
    return found


def run_playbook(workdir, name, tasks, host_python=HOST_PYTHON):
    """Write a localhost playbook of ``tasks`` in ``<workdir>/playbook-<name>``, run it with this collection and
    return its wall-clock seconds (the whole ansible-playbook run)."""
    directory = os.path.join(workdir, 'playbook-%s' % name)
    os.makedirs(directory, exist_ok=True)
    playbook = os.path.join(directory, 'playbook.yml')
    with open(playbook, 'w') as handle:
        json.dump([{'name': name, 'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}], handle, indent=1)
    return run_playbook_file(workdir, name, playbook, host_python=host_python)


def run_playbook_file(workdir, name, playbook, extra_vars=None, group=None, host_python=HOST_PYTHON):
    """Run ``playbook`` (a file: one of the collection's playbooks, or one written by :func:`run_playbook`) on
    localhost, in inventory group ``group`` when given, with ``extra_vars`` (a JSON file passed with ``-e @``);
    its wall-clock seconds (the whole ansible-playbook run)."""
    directory = os.path.join(workdir, 'playbook-%s' % name)
    os.makedirs(directory, exist_ok=True)
    inventory = os.path.join(directory, 'inventory.ini')
    with open(inventory, 'w') as handle:
        handle.write(('[%s]\n' % group if group else '')
                     + 'localhost ansible_connection=local ansible_python_interpreter=%s\n' % host_python)
    argv = [ansible_tool(), '-i', inventory, playbook]
    if extra_vars is not None:
        extra = os.path.join(directory, 'extra-vars.json')
        with open(extra, 'w') as handle:
            json.dump(extra_vars, handle)
        argv += ['-e', '@' + extra]
    env = dict(os.environ)
    env.update({'ANSIBLE_COLLECTIONS_PATH': collections_root(), 'ANSIBLE_NOCOLOR': '1',
                'ANSIBLE_RETRY_FILES_ENABLED': '0', 'ANSIBLE_LOCAL_TEMP': os.path.join(directory, 'tmp')})
    seconds, _out = timed(run, argv, cwd=directory, env=env)
    return seconds


# ---------------------------------------------------------------- the lab's Ceph and OpenStack


def lab_dir():
    """The lab's state directory: ``$VOLSNAP_LAB_DIR``, else ``/var/tmp/volsnap-lab``."""
    return os.environ.get('VOLSNAP_LAB_DIR') or '/var/tmp/volsnap-lab'


def add_lab_options(parser):
    """--lab-dir, --python (the lab's interpreter, with the Ceph bindings and openstacksdk) and --clouds-yaml."""
    parser.add_argument('--lab-dir', default=lab_dir(), help='the lab state directory (default %(default)s)')
    parser.add_argument('--python', default=None, help='interpreter with rados/rbd and openstacksdk '
                        '(default <lab-dir>/openstack/venv/bin/python)')
    parser.add_argument('--clouds-yaml', default=None, help='default <lab-dir>/openstack/clouds.yaml')


def add_ceph_options(parser):
    """--ceph-conf, --ceph-user (the module's client), --keyring, --admin-keyring (the benchmark's own client)
    and --volume-pool."""
    parser.add_argument('--ceph-conf', default=None, help='default <lab-dir>/ceph/ceph.conf')
    parser.add_argument('--ceph-user', default='cinder', help='client the module uses (default cinder)')
    parser.add_argument('--keyring', default=None, help='default <lab-dir>/ceph/ceph.client.<ceph-user>.keyring')
    parser.add_argument('--admin-keyring', default=None, help='default <lab-dir>/ceph/ceph.client.admin.keyring')
    parser.add_argument('--volume-pool', default='volumes')


def lab_defaults(args):
    """Fill in the paths of add_lab_options/add_ceph_options left unset, from --lab-dir."""
    args.python = args.python or os.path.join(args.lab_dir, 'openstack', 'venv', 'bin', 'python')
    args.clouds_yaml = args.clouds_yaml or os.path.join(args.lab_dir, 'openstack', 'clouds.yaml')
    args.ceph_conf = args.ceph_conf or os.path.join(args.lab_dir, 'ceph', 'ceph.conf')
    args.keyring = args.keyring or os.path.join(args.lab_dir, 'ceph', 'ceph.client.%s.keyring' % args.ceph_user)
    args.admin_keyring = args.admin_keyring or os.path.join(args.lab_dir, 'ceph', 'ceph.client.admin.keyring')


def reexec_if_needed(python, script):
    """Run ``script`` again under ``python`` (with the same arguments) when rados/rbd or openstacksdk cannot be
    imported here; a BenchError (exit 2) when they cannot be imported there either."""
    try:
        import rados  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
        import rbd  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
        import openstack  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
        return
    except ImportError as exc:
        if os.environ.get('VOLSNAP_BENCH_REEXEC') == '1':
            raise BenchError('%s cannot import the Ceph bindings or openstacksdk: %s' % (sys.executable, exc),
                             EXIT_SETUP)
    if not os.path.exists(python):
        raise BenchError('%s has no Ceph bindings; the lab interpreter %s does not exist either: start the lab '
                         '(bash tests/lab/lab.sh start) or pass --python' % (sys.executable, python), EXIT_SETUP)
    env = dict(os.environ, VOLSNAP_BENCH_REEXEC='1')
    sys.stdout.flush()
    os.execve(python, [python, os.path.abspath(script)] + sys.argv[1:], env)
