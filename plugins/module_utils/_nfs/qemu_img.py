# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img: the one place that builds its command lines, always argv lists with an explicit ``-f``.

``*_args`` functions build the arguments of each qemu-img command the collection runs (never format
probing: every image and backing file is given its format); :func:`argv` puts the binary in front.
:class:`QemuImg` runs them through an injected runner: in a module it is ``AnsibleModule.run_command``;
tests pass a runner of their own. While an operation records its progress (:func:`._base.progress.current`), the
long commands (commit, convert, safe rebase) run with ``-p`` instead of ``-q``: ``run_command``'s
``before_communicate_callback`` (:func:`progress_runner_of`, :func:`pump`) reads qemu-img's own ``(NN.NN/100%)``
as it comes and hands it to the record; errors are captured as before. :func:`cross_check` compares the native
header reader with ``qemu-img info``; :func:`opened_for_write_by_qemu` asks whether a qemu process writes an image.
"""

from __future__ import annotations

import fcntl
import inspect
import json
import os
import re
import selectors
import struct
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import (
    ChainReport,
    normalize_format,
    qemu_format,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base import progress

Runner = Callable[[List[str]], Tuple[int, str, str]]
# (argv, called with each fraction 0..1 qemu-img prints) -> (rc, stdout without the progress, stderr)
ProgressRunner = Callable[[List[str], Callable[[float], None]], Tuple[int, str, str]]

# the qemu-img commands that print progress with -p (rebase only in safe mode: -u copies nothing)
PROGRESS_COMMANDS = ('commit', 'convert', 'rebase')
_PROGRESS = re.compile(r'\((\d{1,3}(?:[.,]\d+)?)/100%\)')


def argv(binary: str, args: Sequence[str]) -> List[str]:
    """The command line of the qemu-img ``binary`` with ``args`` (one of the ``*_args`` below)."""
    return [binary] + list(args)


def info_args(path: str, fmt: str) -> List[str]:
    """``qemu-img info`` of one layer, read as ``fmt`` (its backing files are not opened); JSON output.

    -U: a running instance may hold the image open.
    """
    return ['info', '-U', '-f', qemu_format(fmt), '--output=json', path]


def convert_args(source: str, source_format: str, output_format: str, output: str) -> List[str]:
    """``qemu-img convert`` of ``source`` (read as ``source_format``, with its backing chain) into ``output``.

    -U: a running instance may hold the chain open (its backing layers are read-only; the caller holds the volume
    lock). writeback caches (qemu-img flushes on close, then the caller fsyncs): cache=none needs O_DIRECT, which
    not every share supports. convert detects zeroes and leaves them unallocated (sparse output); no
    preallocation.
    """
    return ['convert', '-U', '-f', qemu_format(source_format), '-O', output_format,
            '-T', 'writeback', '-t', 'writeback', source, output]


def create_overlay_args(backing: str, backing_format: str, output: str, size: int) -> List[str]:
    """``qemu-img create`` of a qcow2 ``output`` on ``backing`` (declared as ``backing_format``) of ``size`` bytes.

    -u: the backing file is never opened (a running domain may use it); the size is explicit.
    """
    return ['create', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', qemu_format(backing_format), output,
            str(size)]


def commit_args(path: str) -> List[str]:
    """``qemu-img commit`` of the qcow2 ``path`` into its backing file, ``path`` itself left as it is (-d)."""
    return ['commit', '-q', '-f', 'qcow2', '-t', 'writeback', '-d', path]


def rebase_unsafe_args(path: str, backing: str, backing_format: str) -> List[str]:
    """``qemu-img rebase -u``: only the header of the qcow2 ``path`` names ``backing`` (``backing_format``) now."""
    return ['rebase', '-q', '-u', '-f', 'qcow2', '-b', backing, '-F', qemu_format(backing_format), path]


def rebase_args(path: str, backing: Optional[str], backing_format: Optional[str] = None) -> List[str]:
    """``qemu-img rebase`` (safe mode) of the qcow2 ``path`` onto ``backing`` (``backing_format``), the data that
    differs copied into ``path``; ``backing`` None: onto nothing (the whole chain's data pulled into ``path``)."""
    if backing is None:
        return ['rebase', '-q', '-f', 'qcow2', '-t', 'writeback', '-b', '', path]
    if backing_format is None:
        raise VolsnapError('internal error: a rebase onto %s without its format' % backing)
    return ['rebase', '-q', '-f', 'qcow2', '-t', 'writeback', '-b', backing, '-F', qemu_format(backing_format), path]


def progress_args(args: Sequence[str]) -> List[str]:
    """``args`` of a :data:`PROGRESS_COMMANDS` command printing its progress: ``-q`` becomes ``-p``."""
    out = ['-p' if arg == '-q' else arg for arg in args]
    if '-p' not in out:
        out.insert(1, '-p')
    return out


def wants_progress(args: Sequence[str]) -> bool:
    return bool(args) and args[0] in PROGRESS_COMMANDS and '-u' not in args


class ProgressParser(object):
    """Finds qemu-img's ``(NN.NN/100%)`` in output fed piece by piece (a number may be cut between pieces)."""

    def __init__(self) -> None:
        self._tail = ''

    def feed(self, text: str) -> Optional[float]:
        """The last fraction (0..1) complete in ``text`` (with what was left of the previous piece), or None."""
        scan = self._tail + text
        last = None
        end = 0
        for match in _PROGRESS.finditer(scan):
            last, end = match, match.end()
        self._tail = scan[end:][-32:]
        if last is None:
            return None
        return min(100.0, float(last.group(1).replace(',', '.'))) / 100.0


def strip_progress(text: str) -> str:
    """``text`` without qemu-img's progress lines (what is left is what it printed besides)."""
    return _PROGRESS.sub('', text).replace('\r', '').strip()


def pump(proc: Any, on_fraction: Callable[[float], None]) -> Tuple[bytes, bytes]:
    """Read the stdout and stderr of ``proc`` as they come, until both end; each progress qemu-img prints on stdout
    goes to ``on_fraction`` (whose errors are ignored: progress never makes the command fail)."""
    out_chunks: List[bytes] = []
    err_chunks: List[bytes] = []
    parser = ProgressParser()
    if proc.stdout is None or proc.stderr is None:
        return b'', b''
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out_chunks)
        selector.register(proc.stderr, selectors.EVENT_READ, err_chunks)
        while selector.get_map():
            for key, _events in selector.select():
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.append(chunk)
                if key.data is out_chunks:
                    fraction = parser.feed(chunk.decode('ascii', 'replace'))
                    if fraction is not None:
                        try:
                            on_fraction(fraction)
                        except Exception:  # pylint: disable=broad-except
                            pass
    return b''.join(out_chunks), b''.join(err_chunks)


def progress_runner_of(runner: Runner) -> Optional[ProgressRunner]:
    """A :data:`ProgressRunner` on ``runner`` when it is ``AnsibleModule.run_command`` (anything that takes a
    ``before_communicate_callback``: the callback reads the output as it comes), else None (no progress)."""
    try:
        parameters = inspect.signature(runner).parameters
    except (TypeError, ValueError):
        return None
    if 'before_communicate_callback' not in parameters:
        return None
    run_command = cast(Callable[..., Tuple[int, str, str]], runner)

    def run(command: List[str], on_fraction: Callable[[float], None]) -> Tuple[int, str, str]:
        read: List[Tuple[bytes, bytes]] = []

        def callback(proc: Any) -> None:
            read.append(pump(proc, on_fraction))

        rc, out, err = run_command(command, before_communicate_callback=callback)
        out_bytes, err_bytes = read[0] if read else (b'', b'')
        return (rc, strip_progress(out_bytes.decode('utf-8', 'replace') + (out or '')),
                err_bytes.decode('utf-8', 'replace') + (err or ''))
    return run


class QemuImg:
    def __init__(self, runner: Runner, binary: str = 'qemu-img',
                 progress_runner: Optional[ProgressRunner] = None) -> None:
        self.runner = runner
        self.binary = binary
        # in a module (runner = run_command) the long commands report their progress
        self.progress_runner = progress_runner if progress_runner is not None else progress_runner_of(runner)

    def run(self, args: List[str]) -> str:
        recorder = progress.current()
        if recorder.active and self.progress_runner is not None and wants_progress(args):
            command = argv(self.binary, progress_args(args))
            rc, out, err = self.progress_runner(command, recorder.fraction)
        else:
            command = argv(self.binary, args)
            rc, out, err = self.runner(command)
        if rc != 0:
            raise VolsnapError('%s failed (rc=%d): %s' % (' '.join(command), rc, (err or out).strip()),
                               command=command, rc=rc, stderr=err)
        return out

    def info(self, path: str, fmt: str) -> Dict[str, object]:
        """``qemu-img info`` of one layer with its format given (backing files are not opened)."""
        out = self.run(info_args(path, fmt))
        try:
            answer: Dict[str, object] = json.loads(out)
        except ValueError:
            raise VolsnapError('qemu-img info printed no JSON for %s: %s' % (path, out[:200]))
        return answer


# qemu's image locking (block/file-posix.c): a process holding a permission keeps a shared
# lock on byte 100 + bit; BLK_PERM_WRITE is bit 1.
_QEMU_LOCK_PERM_BASE = 100
_QEMU_PERM_WRITE_BIT = 1


def opened_for_write_by_qemu(path: str) -> bool:
    """True when a qemu process (a running VM, qemu-img, qemu-nbd) has ``path`` open for writing.

    Asks the kernel whether an exclusive lock on qemu's write-permission byte would conflict
    (F_GETLK), which takes no lock and works on local files and NFS alike.
    """
    offset = _QEMU_LOCK_PERM_BASE + _QEMU_PERM_WRITE_BIT
    cmd = getattr(fcntl, 'F_OFD_GETLK', fcntl.F_GETLK)
    fd = os.open(path, os.O_RDONLY)
    try:
        request = struct.pack('hhqqi4x', fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
        answer = fcntl.fcntl(fd, cmd, request)
    finally:
        os.close(fd)
    lock_type: int = struct.unpack('hhqqi4x', answer)[0]
    return lock_type != fcntl.F_UNLCK


def cross_check(report: ChainReport, qemu: QemuImg) -> List[Optional[Dict[str, object]]]:
    """Compare every layer the native engine read with ``qemu-img info -f <detected>``.

    Layers with error findings are not handed to qemu (it could open an external data file).
    Each disagreement becomes an ``engine_mismatch`` error on the report. Returns qemu's
    answers, one per layer (None for layers not checked).
    """
    answers: List[Optional[Dict[str, object]]] = []
    for layer in report.layers:
        image = layer.image
        if any(f.severity == 'error' and f.filename == image.filename for f in report.problems):
            answers.append(None)
            continue
        try:
            answer = qemu.info(image.path, image.format)
        except VolsnapError as exc:
            report.problem('engine_error', str(exc), filename=image.filename)
            answers.append(None)
            continue
        answers.append(answer)
        expected = {
            'format': qemu_format(image.format),
            'virtual-size': image.virtual_size,
            'backing-filename': image.backing_file,
        }
        if image.format == 'qcow2':
            expected['cluster-size'] = image.cluster_size
            expected['backing-filename-format'] = image.backing_format
        for key, value in expected.items():
            got = answer.get(key)
            if key == 'backing-filename-format':
                got = normalize_format(cast(str, got)) if got else None
                value = normalize_format(cast(str, value)) if value else None
            if got != value:
                report.problem('engine_mismatch', 'qemu-img reports %s=%r for %s, the native engine read %r'
                               % (key, got, os.path.basename(image.path), value), filename=image.filename)
    return answers
