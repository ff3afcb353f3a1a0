# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress of long operations, written where a second task (``operation_info``) can read it.

One JSON record per operation, ``<progress_dir>/<operation id>.json``, host-local (default
:data:`DEFAULT_DIR`). A module opens a :func:`recording`; the places where work runs report to
:func:`current` (a :class:`NullRecorder` when nothing records, so hooks cost nothing in other callers):

* the step model (``_base/steps.py`` ``Executor``): :meth:`Recorder.plan` and :meth:`Recorder.step`, step n of m;
* byte copies and block jobs: :meth:`Recorder.bytes` (done/total);
* qemu-img's own progress: :meth:`Recorder.fraction`.

The record is written when the recording starts (step 0 of 0, ``starting``: a reader knows at once that the
operation runs; a run that finds nothing to do ends ``done`` at once), then at most
every :data:`MIN_INTERVAL` seconds (a change inside the interval is written by a timer at its end), always at the
end (state ``done`` or ``failed`` with the error). Writes go through :func:`._base.atomic.write_atomic` (temporary
file, ``O_NOFOLLOW|O_EXCL``, rename; no fsync: a record is not worth a disk flush). The directory is created 0700
and refused when it is a symbolic link, not a directory, owned by another user or writable by others.

Recording never makes an operation fail: the first error (a refused directory, a full disk) is reported once
through the ``warn`` callback and recording stops.

Percent: each step weighs 1, a step of an action that moves data (:data:`DATA_ACTIONS`: copies, commits, block
jobs) weighs :data:`DATA_STEP_WEIGHT`; percent is the weighted share of the steps done plus the current step's
fraction (bytes done/total or qemu-img's own percent), never lower than a value already written, 100 when done. ``rate`` is bytes per second over
the last :data:`RATE_WINDOW` seconds; ``eta`` the seconds left at the recent pace of ``percent``.

Readers (:func:`read_records`) open every record without following links, refuse what is not a small regular file
of the expected shape, report a ``running`` record whose process is gone (pid not alive, or alive with another
start time) as ``interrupted``, and forget finished records after :data:`KEEP_FINISHED` seconds and interrupted
ones after :data:`KEEP_INTERRUPTED` (removing their files unless told not to).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import FileAttributes, write_atomic

DEFAULT_DIR = '/var/tmp/volsnap.openstack/progress'
RECORD_VERSION = 1
RECORD_SUFFIX = '.json'
TEMP_SUFFIX = '.progress-tmp'
MIN_INTERVAL = 0.25
RATE_WINDOW = 10.0
DATA_STEP_WEIGHT = 20.0
KEEP_FINISHED = 300.0
KEEP_INTERRUPTED = 86400.0
MAX_RECORD_BYTES = 65536
# the actions (of every feature's Actions table) whose steps move data and take most of the time
DATA_ACTIONS = frozenset(('upload_data', 'copy_data', 'compute_hash', 'flatten_clone', 'flatten_children', 'commit',
                          'rebase', 'block_commit', 'block_rebase', 'convert'))
STATES = ('running', 'done', 'failed')
TARGET_KEYS = ('volume_path', 'volume_id', 'snapshot_id', 'image_id', 'share', 'dest')

Warn = Callable[[str], None]


class ProgressDirError(OSError):
    """The progress directory cannot be used safely (a link, a foreign owner, open to others)."""


def process_start(pid: int) -> Optional[str]:
    """The start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22), None when unknown."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as handle:
            data = handle.read().decode('ascii', 'replace')
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ')': split after the last ')'
    fields = data[data.rfind(')') + 2:].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, start: Optional[str]) -> bool:
    """``pid`` runs, and (when ``start`` is known) is still the process that started at ``start``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        if exc.errno != errno.EPERM:
            return False
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start


def _check_dir_stat(path: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise ProgressDirError(errno.ELOOP, 'the progress directory is a symbolic link; give a real directory', path)
    if not stat.S_ISDIR(st.st_mode):
        raise ProgressDirError(errno.ENOTDIR, 'the progress directory is not a directory', path)
    if st.st_uid != os.geteuid():
        raise ProgressDirError(errno.EPERM, 'the progress directory is owned by uid %d, not by this user (uid %d)'
                               % (st.st_uid, os.geteuid()), path)
    if st.st_mode & 0o022:
        raise ProgressDirError(errno.EPERM, 'the progress directory is writable by others (mode %04o); make it '
                               '0700' % (st.st_mode & 0o7777), path)


def ensure_dir(path: str, create: bool = True) -> bool:
    """Check (and with ``create``, make, 0700 with its missing parents) the progress directory.

    Returns False when it does not exist and ``create`` is off; raises :class:`ProgressDirError` for a directory
    that cannot be trusted (:func:`_check_dir_stat`), ``OSError`` when it cannot be made.
    """
    path = os.path.abspath(path)
    try:
        st = os.lstat(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        if not create:
            return False
        parent = os.path.dirname(path)
        if parent != path and not os.path.isdir(parent):
            os.makedirs(parent, 0o700)
        try:
            os.mkdir(path, 0o700)
        except OSError as mkdir_exc:
            if mkdir_exc.errno != errno.EEXIST:
                raise
        st = os.lstat(path)
    _check_dir_stat(path, st)
    return True


def now_iso(epoch: float) -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


class NullRecorder(object):
    """What :func:`current` returns when no operation records: every call does nothing."""

    active = False

    def begin(self) -> None:
        pass

    def plan(self, actions: List[str]) -> None:
        pass

    def step(self, index: int, description: str) -> None:
        pass

    def bytes(self, done: int, total: Optional[int]) -> None:
        pass

    def fraction(self, value: float) -> None:
        pass

    def set(self, kind: Optional[str] = None, **targets: Optional[str]) -> None:
        pass

    def finish(self, error: Optional[str] = None) -> None:
        pass


class Recorder(NullRecorder):
    """The progress record of one running operation (see the module documentation)."""

    active = True

    def __init__(self, directory: str, kind: str, module: str, targets: Mapping[str, Optional[str]],
                 warn: Optional[Warn] = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, min_interval: float = MIN_INTERVAL,
                 use_timer: bool = True) -> None:
        self.directory = os.path.abspath(directory)
        self.id = uuid.uuid4().hex
        self.path = os.path.join(self.directory, self.id + RECORD_SUFFIX)
        self.warn = warn
        self.clock = clock
        self.monotonic = monotonic
        self.min_interval = min_interval
        self.use_timer = use_timer
        self.broken = False
        self.writes = 0
        self._lock = threading.RLock()
        self._timer: Optional[threading.Timer] = None
        self._last_write: Optional[float] = None
        self._dir_ready = False
        self._samples: Deque[Tuple[float, Optional[int], float]] = deque()
        # the weights of the steps of the current plan (DATA_ACTIONS weigh more)
        self._weights: List[float] = []
        self._index = -1
        self._fraction = 0.0
        self._written_percent = 0.0
        pid = os.getpid()
        started = clock()
        self.record: Dict[str, Any] = {
            'version': RECORD_VERSION, 'id': self.id, 'kind': kind, 'module': module,
            'targets': {k: v for k, v in targets.items() if v is not None},
            'host': socket.gethostname(), 'pid': pid, 'pid_start': process_start(pid),
            'started': started, 'updated': started,
            'step': 0, 'steps': 0, 'step_description': None,
            'bytes_done': None, 'bytes_total': None, 'percent': 0.0, 'rate': None, 'eta': None,
            'state': 'running', 'error': None,
        }

    # -- what the work reports ------------------------------------------------------------

    def begin(self) -> None:
        """The operation starts: its record is written now."""
        with self._lock:
            self.record['step_description'] = 'starting'
            self._update()

    def plan(self, actions: List[str]) -> None:
        """A plan of ``len(actions)`` steps starts (a new plan replaces the previous one's step count)."""
        with self._lock:
            self._weights = [DATA_STEP_WEIGHT if action in DATA_ACTIONS else 1.0 for action in actions]
            self._index = -1
            self._fraction = 0.0
            self.record['steps'] = len(actions)

    def step(self, index: int, description: str) -> None:
        """Step ``index`` (0-based) of the plan starts."""
        with self._lock:
            self._index = index
            self._fraction = 0.0
            self.record.update(step=index + 1, step_description=description, bytes_done=None, bytes_total=None)
            self._samples.clear()
            self._update()

    def bytes(self, done: int, total: Optional[int]) -> None:
        """The current step has copied ``done`` of ``total`` bytes (total None: unknown). Written at once when the
        step's total is first known (a reader learns the size of the work even when it ends within one interval)
        and when the step is done; throttled otherwise."""
        with self._lock:
            first_total = total is not None and self.record['bytes_total'] is None
            self.record.update(bytes_done=int(done), bytes_total=None if total is None else int(total))
            if total:
                self._set_fraction(float(done) / float(total))
            self._update(done_now=first_total or (bool(total) and done >= (total or 0)))

    def fraction(self, value: float) -> None:
        """The current step is ``value`` (0..1) done (qemu-img's own progress)."""
        with self._lock:
            self._set_fraction(value)
            self._update()

    def set(self, kind: Optional[str] = None, **targets: Optional[str]) -> None:
        """What is learnt on the way: the precise kind (``upload_copy``...), a target (an image id)."""
        with self._lock:
            if kind is not None:
                self.record['kind'] = kind
            for key, value in targets.items():
                if value is not None:
                    self.record['targets'][key] = value

    def finish(self, error: Optional[str] = None) -> None:
        """The operation ended: ``done`` (100 %) or ``failed`` with ``error``; written now (when anything was)."""
        with self._lock:
            self._cancel_timer()
            if error is None:
                self.record.update(state='done', percent=100.0, eta=0.0)
            else:
                self.record.update(state='failed', error=error[:2000])
            if self._last_write is not None:
                self._write()

    # -- computing ------------------------------------------------------------------------

    def _set_fraction(self, value: float) -> None:
        value = min(max(value, 0.0), 1.0)
        self._fraction = max(self._fraction, value)

    def _percent(self) -> float:
        weights = self._weights
        total = sum(weights)
        if not total or self._index < 0:
            return self._written_percent
        done = sum(weights[:self._index]) + weights[self._index] * self._fraction if self._index < len(weights) \
            else total
        return max(self._written_percent, min(100.0, 100.0 * done / total))

    def _rates(self, now: float, percent: float) -> Tuple[Optional[float], Optional[float]]:
        samples = self._samples
        samples.append((now, self.record['bytes_done'], percent))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        first = samples[0]
        elapsed = now - first[0]
        if elapsed <= 0:
            return self.record['rate'], self.record['eta']
        rate = None
        # the first sample that counted bytes (a step's first sample may come before its first bytes)
        counted = next((sample for sample in samples if sample[1] is not None), None)
        if counted is not None and now > counted[0] and self.record['bytes_done'] is not None:
            rate = round(max(0.0, (self.record['bytes_done'] - counted[1]) / (now - counted[0])), 1)
        pace = (percent - first[2]) / elapsed
        eta = round((100.0 - percent) / pace, 1) if pace > 0 else None
        return rate, eta

    # -- writing --------------------------------------------------------------------------

    def _update(self, done_now: bool = False) -> None:
        if self.broken:
            return
        mono = self.monotonic()
        percent = self._percent()
        self.record['percent'] = round(percent, 2)
        rate, eta = self._rates(mono, percent)
        self.record.update(rate=rate, eta=eta)
        if self._last_write is None or done_now or mono - self._last_write >= self.min_interval:
            self._cancel_timer()
            self._write()
        elif self.use_timer and self._timer is None:
            self._timer = threading.Timer(max(0.0, self._last_write + self.min_interval - mono), self._flush)
            self._timer.daemon = True
            self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            if self.record['state'] == 'running':
                self._write()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _write(self) -> None:
        if self.broken:
            return
        self._last_write = self.monotonic()
        self.record['updated'] = self.clock()
        try:
            if not self._dir_ready:
                ensure_dir(self.directory)
                self._dir_ready = True
            data = json.dumps(self.record, sort_keys=True).encode('utf-8')
            write_atomic(self.path, data, FileAttributes(0o600), suffix=TEMP_SUFFIX, durable=False)
            self.writes += 1
            self._written_percent = max(self._written_percent, float(self.record['percent']))
        except OSError as exc:
            self.broken = True
            if self.warn is not None:
                self.warn('progress is not recorded (%s: %s); the operation goes on without it'
                          % (exc.filename or self.directory, exc.strerror or exc))


_CURRENT: List[NullRecorder] = []
_NULL = NullRecorder()


def current() -> NullRecorder:
    """The recorder of the operation running in this process (a :class:`NullRecorder` when none)."""
    return _CURRENT[-1] if _CURRENT else _NULL


@contextlib.contextmanager
def recording(directory: Optional[str], kind: str, module: str, targets: Mapping[str, Optional[str]],
              warn: Optional[Warn] = None, enabled: bool = True) -> Iterator[NullRecorder]:
    """Record the progress of the operation run inside the block (nothing when not ``enabled``: check mode).

    The record ends ``done`` when the block returns, ``failed`` with the error's message when it raises.
    """
    if not enabled:
        yield _NULL
        return
    recorder = Recorder(directory or DEFAULT_DIR, kind, module, targets, warn=warn)
    _CURRENT.append(recorder)
    try:
        recorder.begin()
        yield recorder
    except BaseException as exc:
        recorder.finish(error=str(getattr(exc, 'msg', None) or exc) or type(exc).__name__)
        raise
    else:
        recorder.finish()
    finally:
        _CURRENT.remove(recorder)


def volume_targets(volume_path: Optional[str], share: Optional[str], volume_id: Optional[str],
                   **more: Optional[str]) -> Dict[str, Optional[str]]:
    """The targets of an operation on a share volume, given by path or by share and id: both forms filled in
    (``volume-<id>`` is the file name Cinder's RemoteFS driver gives; nothing here opens a file)."""
    if volume_path is None and share is not None and volume_id is not None:
        volume_path = os.path.join(share, 'volume-' + volume_id)
    if volume_id is None and volume_path is not None:
        name = os.path.basename(volume_path)
        volume_id = name[len('volume-'):] if name.startswith('volume-') and '.' not in name else None
    targets: Dict[str, Optional[str]] = dict(volume_path=os.path.abspath(volume_path) if volume_path else None,
                                             volume_id=volume_id, share=share)
    targets.update(more)
    return targets


# -- reading ------------------------------------------------------------------------------

def _valid(data: Any) -> bool:
    if not isinstance(data, dict) or data.get('version') != RECORD_VERSION:
        return False
    checks: Dict[str, Tuple[type, ...]] = {
        'id': (str,), 'kind': (str,), 'module': (str,), 'targets': (dict,), 'host': (str,), 'pid': (int,),
        'started': (int, float), 'updated': (int, float), 'step': (int,), 'steps': (int,), 'percent': (int, float),
        'state': (str,)}
    for key, types in checks.items():
        if not isinstance(data.get(key), types) or isinstance(data.get(key), bool):
            return False
    optional: Dict[str, Tuple[type, ...]] = {
        'pid_start': (str,), 'step_description': (str,), 'bytes_done': (int,), 'bytes_total': (int,),
        'rate': (int, float), 'eta': (int, float), 'error': (str,)}
    for key, types in optional.items():
        if data.get(key) is not None and not isinstance(data.get(key), types):
            return False
    return data['state'] in STATES and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in data['targets'].items())


def _read_one(directory_fd: int, name: str) -> Optional[Dict[str, Any]]:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_CLOEXEC', 0),
                     dir_fd=directory_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RECORD_BYTES:
            return None
        raw = os.read(fd, MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        data = json.loads(raw.decode('utf-8'))
    except ValueError:
        return None
    if not _valid(data) or data['id'] + RECORD_SUFFIX != name:
        return None
    return dict(data)


def read_records(directory: Optional[str], remove_expired: bool = True, clock: Callable[[], float] = time.time,
                 host: Optional[str] = None) -> List[Dict[str, Any]]:
    """Every progress record in ``directory`` (oldest first) with its state judged now (``interrupted``).

    Records that are not this collection's (malformed, links, too big) are skipped. Expired records (see the module
    documentation) are left out and, with ``remove_expired``, removed. A missing directory has no records; a
    directory that cannot be trusted raises :class:`ProgressDirError`.
    """
    directory = os.path.abspath(directory or DEFAULT_DIR)
    if not ensure_dir(directory, create=False):
        return []
    host = host or socket.gethostname()
    now = clock()
    records = []
    dir_fd = os.open(directory, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, 'O_DIRECTORY', 0))
    try:
        _check_dir_stat(directory, os.fstat(dir_fd))
        for name in sorted(os.listdir(dir_fd)):
            if not name.endswith(RECORD_SUFFIX) or name.startswith('.'):
                continue
            data = _read_one(dir_fd, name)
            if data is None:
                continue
            if data['state'] == 'running' and data['host'] == host \
                    and not process_alive(data['pid'], data.get('pid_start')):
                data['state'] = 'interrupted'
            keep = KEEP_INTERRUPTED if data['state'] in ('interrupted', 'running') else KEEP_FINISHED
            if now - data['updated'] > keep:
                if remove_expired:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=dir_fd)
                continue
            records.append(data)
    finally:
        os.close(dir_fd)
    records.sort(key=lambda r: (r['started'], r['id']))
    return records


def view(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A record as ``operation_info`` returns it (times as ISO 8601 UTC, ages in seconds)."""
    out = {key: record.get(key) for key in (
        'id', 'kind', 'module', 'targets', 'host', 'pid', 'step', 'steps', 'step_description', 'bytes_done',
        'bytes_total', 'percent', 'rate', 'eta', 'state', 'error')}
    out['source'] = 'progress'
    out['started'] = now_iso(record['started'])
    out['updated'] = now_iso(record['updated'])
    out['elapsed'] = round(float(record['updated']) - float(record['started']), 1)
    if out['state'] == 'interrupted':
        out['rate'] = None
        out['eta'] = None
    return out


def matches(record: Mapping[str, Any], filters: Mapping[str, Optional[str]]) -> bool:
    """The record's targets hold every filter given (``volume_path`` compared as absolute paths)."""
    targets = record.get('targets') or {}
    for key, wanted in filters.items():
        if wanted is None:
            continue
        got = targets.get(key)
        if key in ('volume_path', 'share', 'dest'):
            if got is None or os.path.normpath(os.path.abspath(got)) != os.path.normpath(os.path.abspath(wanted)):
                return False
        elif got != wanted:
            return False
    return True
