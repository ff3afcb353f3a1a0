# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many volumes in one ``volume_snapshot`` task (``volumes``, ``group=false``).

Every item is the same independent request a single-volume run makes (:class:`._nfs.snapshot.VolumeSnapshot`:
its own lock, journal, ``.info`` file and Cinder report); :func:`run_batch` runs them ``parallel`` at a time and
collects the outcomes in the input order. What the items can share is made once per task: one libvirt connection
and one listing of the running domains (:class:`SharedLibvirt`), one Cinder connection (:class:`LockedApi`), one
``qemu-img`` runner, and the listings of the share (:class:`ShareListings`): one read when the task starts, for
every item's decision before its lock exists; then the items that need their lock take it by chunks
(:func:`lock_chunks`, :func:`take_chunk`: up to ``LOCK_CHUNK`` locks of one directory taken without waiting, in
the order of their paths) and one listing read after a chunk's locks were taken serves all its items, so a
volume's cost does not grow with the share's size; and the fsyncs of the share's directory
(:func:`._base.atomic.shared_directory_syncs`). An item that fails does not stop the others: the task fails
afterwards naming the failed volumes (:func:`batch_result`), the others stay committed, and a rerun converges (done
items report no change).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, cast

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import shared_directory_syncs
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.fresh import FreshCall
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import DiskInfo, LazyLibvirt, disks_using
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.lock import VolumeLock
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import DirListing
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import ShareVolume
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.report import (
    CinderReporter,
    run_members_with_reports,
    run_with_report,
    volume_id_of,
)

# How many volumes' locks a batch takes before one listing of their directory serves them all.
LOCK_CHUNK = 64
T = TypeVar('T')


@dataclass(frozen=True)
class BatchItem:
    """One entry of ``volumes``: the volume file and its snapshot (``disk``: the domain's disk, as the
    single-volume option)."""

    volume_path: str
    snapshot_id: Optional[str]
    volume_id: Optional[str] = None
    disk: Optional[str] = None


def batch_items(volumes: Sequence[Mapping[str, Any]], share: Optional[str], state: str) -> List[BatchItem]:
    """The ``volumes`` option as :class:`BatchItem` s, checked before anything runs: each item names its volume
    (``volume_path``, or ``volume_id`` with the top-level ``share``), has a ``snapshot_id`` where the state needs
    one, and no volume is listed twice (two runs on one volume in one process would not exclude each other: the
    per-volume lock is a POSIX record lock, which is per process)."""
    items = []
    problems = []
    seen: Dict[str, int] = {}
    for index, raw in enumerate(volumes):
        where = 'volumes[%d]' % index
        volume_id = raw.get('volume_id')
        if raw.get('volume_path'):
            path = str(raw['volume_path'])
        elif volume_id:
            if not share:
                problems.append('%s gives volume_id %s but the task has no share: set share (the directory of the '
                                'volume files) or give volume_path' % (where, volume_id))
                continue
            try:
                path = ShareVolume.in_share(share, str(volume_id)).path
            except VolsnapError as exc:
                problems.append('%s: %s' % (where, exc.msg))
                continue
        else:
            problems.append('%s names no volume: give volume_path or volume_id' % where)
            continue
        if state in ('present', 'absent') and not raw.get('snapshot_id'):
            problems.append('%s (%s) has no snapshot_id, which state=%s needs' % (where, path, state))
        key = os.path.normpath(path)
        if key in seen:
            problems.append('%s lists %s again (already volumes[%d]): each volume at most once per task'
                            % (where, path, seen[key]))
        seen.setdefault(key, index)
        items.append(BatchItem(volume_path=path, snapshot_id=raw.get('snapshot_id'),
                               volume_id=str(volume_id) if volume_id else None, disk=raw.get('disk')))
    if problems:
        raise VolsnapError('the volumes option is not valid, nothing was run: %s' % '; '.join(problems),
                           problems=problems)
    return items


def _failed_item(item: BatchItem, msg: str, details: Mapping[str, Any]) -> Dict[str, Any]:
    result: Dict[str, Any] = {'changed': False, 'snapshot_id': item.snapshot_id}
    result.update(details)
    result.update(failed=True, msg=msg, volume_path=item.volume_path)
    result.pop('diff', None)
    return result


def _run_one(item: BatchItem, run_one: Callable[[BatchItem], Dict[str, Any]]) -> Dict[str, Any]:
    try:
        result = dict(run_one(item))
    except VolsnapError as exc:
        return _failed_item(item, exc.msg, exc.details)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # One volume's unexpected error must not hide the outcome of the others (already committed).
        return _failed_item(item, 'internal error on %s: %s: %s' % (item.volume_path, type(exc).__name__, exc), {})
    result['volume_path'] = item.volume_path
    return result


def _map(function: Callable[[BatchItem], T], items: Sequence[BatchItem], parallel: int) -> List[T]:
    """``function`` of every item, ``parallel`` at a time, in the items' order (``function`` never raises;
    one worker: in this thread)."""
    if parallel <= 1 or len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(parallel, len(items))) as pool:
        return list(pool.map(function, items))


def run_batch(items: Sequence[BatchItem], run_one: Callable[[BatchItem], Dict[str, Any]],
              parallel: int) -> List[Dict[str, Any]]:
    """Run ``run_one`` for every item, at most ``parallel`` at once; the outcomes in the input order.

    An item that raises :class:`VolsnapError` (or anything else) gives a failed outcome (``failed``, ``msg`` and
    the error's details); the other items run on.
    """
    if parallel < 1:
        raise VolsnapError('parallel must be 1 or more (it is %d): how many volumes are worked on at once' % parallel)
    return _map(lambda item: _run_one(item, run_one), items, parallel)


def batch_result(outcomes: List[Dict[str, Any]], check_mode: bool, want_diff: bool = True) -> Dict[str, Any]:
    """The module result of a batch: ``changed`` (any item), ``volumes`` (the outcomes, without their diffs),
    ``failed_volumes`` and ``diff`` (the per-item diffs of the items that changed). Raises the task's failure
    (with the same keys) when an item failed."""
    diffs = []
    items = []
    for outcome in outcomes:
        item = dict(outcome)
        diff = item.pop('diff', None)
        if want_diff and diff and item.get('changed'):
            diffs.append(diff)
        items.append(item)
    failed = [item['volume_path'] for item in items if item.get('failed')]
    changed = any(item.get('changed') for item in items)
    if failed:
        done = len(items) - len(failed)
        others = '%d other %s' % (done, 'volume' if done == 1 else 'volumes')
        raise VolsnapError(
            '%d of %d volumes failed: %s. %s. Each failed volume is left as its own message in volumes[].msg says '
            '(what is pending, what to do): fix the cause and run the same task again; the volumes already done '
            'report no change and the failed ones are finished or retried'
            % (len(failed), len(items), _names(failed),
               'Check mode: nothing was changed, the %s would succeed' % others if check_mode
               else 'The %s succeeded and are committed' % others),
            changed=changed, volumes=items, failed_volumes=failed)
    result: Dict[str, Any] = {'changed': changed, 'volumes': items, 'failed_volumes': []}
    if diffs:
        result['diff'] = diffs
    return result


def _names(paths: List[str], shown: int = 10) -> str:
    """The first ``shown`` paths, then how many more (all of them are in ``failed_volumes``)."""
    if len(paths) <= shown:
        return ', '.join(paths)
    return '%s and %d more (all in failed_volumes)' % (', '.join(paths[:shown]), len(paths) - shown)


class SharedLibvirt(object):
    """One :class:`._nfs.libvirt.Libvirt` for every item of a batch: one connection, and the running domains and
    their disks listed once (on first use) for the whole task instead of once per volume.

    The listing decides the mode and the declared chain of each volume; an online step itself reads the domain's
    XML again when it runs. Every other call goes to the wrapped connection.
    """

    def __init__(self, libvirt: Any) -> None:
        self._libvirt = libvirt
        self._lock = threading.Lock()
        self._running: Optional[List[Tuple[str, DiskInfo]]] = None
        self.scans = 0

    def running_disks(self) -> List[Tuple[str, DiskInfo]]:
        with self._lock:
            if self._running is None:
                self._running = list(self._libvirt.running_disks())
                self.scans += 1
            return self._running

    def running_disks_using(self, paths: List[str]) -> List[Tuple[str, DiskInfo]]:
        return disks_using(self.running_disks(), paths)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._libvirt, name)


def shared_factory(factory: Callable[[], Any]) -> LazyLibvirt:
    """A libvirt factory for a batch: ``factory()`` is called once (None: no bindings), under a lock
    (:class:`._nfs.libvirt.LazyLibvirt`), so the items' threads share one :class:`SharedLibvirt`."""

    def shared() -> Optional[SharedLibvirt]:
        libvirt = factory()
        return SharedLibvirt(libvirt) if libvirt is not None else None
    return LazyLibvirt(shared)


class ShareListings(object):
    """The listings of the items' directories (usually one share) for a batch.

    :meth:`before_lock`: the names read once when the task starts, for what an item decides before its lock exists
    (it changes nothing then; whatever would change something is decided again under the lock). :meth:`fresh`: a
    listing that started after the call (:class:`._base.fresh.FreshCall`): an item holding its lock asks for one,
    and the items that ask while one is being read share the next one, which is exactly as fresh for each of them as
    its own would be.
    """

    def __init__(self, directories: Sequence[str]) -> None:
        self._before: Dict[str, Optional[DirListing]] = {}
        self._fresh: Dict[str, FreshCall[DirListing]] = {}
        for directory in directories:
            if directory in self._before:
                continue
            try:
                self._before[directory] = DirListing.read(directory)
            except OSError:
                self._before[directory] = None  # each item reads it itself, and reports what is wrong
            self._fresh[directory] = FreshCall(lambda d=directory: DirListing.read(d))  # type: ignore[misc]

    def before_lock(self, directory: str) -> Optional[DirListing]:
        return self._before.get(directory)

    def fresh(self, directory: str) -> DirListing:
        shared = self._fresh.get(directory)
        return shared.fresh() if shared is not None else DirListing.read(directory)

    @property
    def reads(self) -> int:
        """How many listings were read (for tests and benchmarks)."""
        return sum(1 for listing in self._before.values() if listing is not None) + sum(
            shared.calls for shared in self._fresh.values())


def _directory_of(item: BatchItem) -> Optional[str]:
    try:
        return ShareVolume.from_path(item.volume_path).directory
    except VolsnapError:
        return None  # the item fails on its own


class LockedApi(object):
    """One Cinder client for every item of a batch, its calls made one at a time (the items' threads share the
    openstacksdk connection, which is not meant to be used by several threads at once)."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._api, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)
        return call


def snapshot_request(params: Mapping[str, Any], item: BatchItem) -> Request:
    """The single-volume :class:`._nfs.snapshot.Request` of one item: its volume, snapshot and disk, and the
    task's other options."""
    return Request(volume_path=item.volume_path, snapshot_id=item.snapshot_id, state=params['state'],
                   mode=params['mode'], domain=params['domain'], disk=item.disk, quiesce=params['quiesce'],
                   share=params['share'], max_depth=params['max_depth'], lock_timeout=params['lock_timeout'],
                   timeout=params['timeout'], volume_format=params['volume_format'])


def snapshot_many(params: Mapping[str, Any], qemu: Any, libvirt_factory: Callable[[], Any], check_mode: bool,
                  cinder_factory: Optional[Callable[[], Any]] = None, want_diff: bool = True) -> Dict[str, Any]:
    """``volume_snapshot`` with ``volumes`` and ``group=false``: every item an independent
    :class:`._nfs.snapshot.VolumeSnapshot` (and Cinder report when ``cinder_factory`` gives the client), run
    ``params['parallel']`` at a time with one libvirt connection, one listing of the running domains and one
    Cinder client for all of them. The result (or failure) of :func:`batch_result`.

    Two phases: every item's :meth:`~._nfs.snapshot.VolumeSnapshot.before_lock` (what is decided without a lock),
    then the items that need their lock in :func:`lock_chunks` (one listing of the share, read after a chunk's locks
    were taken, serves the whole chunk: a volume's cost does not grow with the share's size).
    """
    items = batch_items(params['volumes'], params.get('share'), params['state'])
    libvirt = shared_factory(libvirt_factory)
    api = LockedApi(cinder_factory()) if cinder_factory is not None and items else None
    directories = [d for d in (_directory_of(item) for item in items) if d is not None]
    listings = ShareListings(directories)
    snapshots = [VolumeSnapshot(snapshot_request(params, item), qemu, libvirt, check_mode, lister=listings.fresh,
                                listing=listings.before_lock(_directory_of(item) or '')) for item in items]

    def probe(item: BatchItem) -> Tuple[Optional[Dict[str, Any]], Optional[BaseException]]:
        try:
            return snapshots[index_of[id(item)]].before_lock(), None
        except Exception as exc:  # pylint: disable=broad-exception-caught
            return None, exc  # raised again in phase two, where the item's outcome (and Cinder report) is made

    index_of = {id(item): index for index, item in enumerate(items)}
    probed = _map(probe, items, params['parallel'])
    held: Dict[int, Held] = {}  # the locks a chunk took for its items (each released when its item is done)

    def locked_phase(index: int) -> Dict[str, Any]:
        early, error = probed[index]
        if error is not None:
            raise error
        if early is not None:
            return early
        if index not in held:  # another run held it when the chunk was taken: waited for the usual way
            return snapshots[index].under_own_lock()
        lock, listing = held[index]
        return snapshots[index].under_lock(lock, listing)

    def run_one(item: BatchItem) -> Dict[str, Any]:
        index = index_of[id(item)]
        try:
            if api is None:
                return locked_phase(index)
            volume_id = volume_id_of({'volume_id': item.volume_id, 'volume_path': item.volume_path})
            reporter = CinderReporter(api, str(item.snapshot_id), check_mode, volume_id)
            return run_with_report(lambda: locked_phase(index), reporter, str(snapshots[index].req.operation))
        finally:
            taken = held.pop(index, None)
            if taken is not None:
                taken[0].release()  # also when Cinder's preflight refused before the item ran

    decided = [i for i, (early, error) in enumerate(probed) if early is not None or error is not None]
    undecided = sorted(set(range(len(items))) - set(decided))
    outcomes: Dict[int, Dict[str, Any]] = {}

    def run(indices: List[int]) -> None:
        for index, outcome in zip(indices, run_batch([items[i] for i in indices], run_one, params['parallel'])):
            outcomes[index] = outcome

    # the items' renames in one directory made durable by shared fsyncs of it (each one started after its item asked)
    with shared_directory_syncs(directories if not check_mode else []):
        run(decided)
        waiting: List[int] = []
        for chunk in lock_chunks([(i, _volume_of(snapshots[i])) for i in undecided]):
            taken = take_chunk(chunk, params['lock_timeout'], listings.fresh)
            held.update(taken)
            run([i for i, _volume in chunk if i in taken])  # each releases its lock when done
            waiting += [i for i, _volume in chunk if i not in taken]
        # Locks another run held: each waited for on its own (the usual way), holding no other lock meanwhile.
        run(waiting)
    return batch_result([outcomes[i] for i in range(len(items))], check_mode, want_diff)


def _volume_of(snapshot: VolumeSnapshot) -> ShareVolume:
    if snapshot.volume is None:  # pragma: no cover - before_lock set it, or the item failed there
        raise VolsnapError('internal error: an item without its volume reached its lock')
    return snapshot.volume


def lock_chunks(volumes: Sequence[Tuple[int, ShareVolume]],
                size: int = LOCK_CHUNK) -> List[List[Tuple[int, ShareVolume]]]:
    """The items (index, volume) that need their volume's lock, in chunks of at most ``size`` of one directory, each
    in the order of the lock files' paths (a fixed order; :func:`take_chunk` never waits while it holds locks, so no
    order could deadlock with another run)."""
    by_directory: Dict[str, List[Tuple[int, ShareVolume]]] = {}
    for index, volume in volumes:
        by_directory.setdefault(volume.directory, []).append((index, volume))
    chunks: List[List[Tuple[int, ShareVolume]]] = []
    for directory in sorted(by_directory):
        ordered = sorted(by_directory[directory], key=lambda member: member[1].lock_path)
        chunks += [ordered[start:start + size] for start in range(0, len(ordered), size)]
    return chunks


Held = Tuple[VolumeLock, Optional[DirListing]]


def take_chunk(volumes: Sequence[Tuple[int, ShareVolume]], timeout: float,
               lister: Callable[[str], DirListing] = DirListing.read) -> Dict[int, Held]:
    """Take the locks of one chunk (one directory) without waiting (:meth:`._nfs.lock.VolumeLock.try_acquire`),
    then read ONE listing of the directory, started after all of them were taken: it serves every item of the
    chunk as the listing each would have read after taking its own lock. Returns the locks taken (index -> (lock,
    listing; None when the directory cannot be read: each item reads its own and reports the error)). A volume
    whose lock another run holds, or whose lock file cannot be opened, is not in it: the caller runs that item the
    usual way afterwards, which waits for the lock or reports the error."""
    taken: Dict[int, VolumeLock] = {}
    for index, volume in volumes:
        lock = volume.lock(timeout)
        try:
            if lock.try_acquire():
                taken[index] = lock
        except (VolsnapError, OSError):
            continue  # reported by the item's own run
    listing: Optional[DirListing] = None
    if taken:
        try:
            listing = lister(volumes[0][1].directory)
        except OSError:
            listing = None
    return {index: (lock, listing) for index, lock in taken.items()}


def snapshot_group(params: Mapping[str, Any], qemu: Any, libvirt_factory: Callable[[], Any], check_mode: bool,
                   cinder_factory: Optional[Callable[[], Any]] = None) -> Dict[str, Any]:
    """``volume_snapshot`` with ``volumes`` and ``group=true``: one :class:`._nfs.group.GroupSnapshot` over the
    listed volumes (read and checked by :func:`batch_items`, as a batch's), and, when ``cinder_factory`` gives the
    Cinder client, each member's snapshot reported (:func:`._openstack.report.run_members_with_reports`: every
    member checked before any disk is touched)."""
    items = batch_items(params['volumes'], params.get('share'), params['state'])
    # snapshot_id is None only with a state the group refuses before it reads one (batch_items requires it for
    # present and absent)
    # imported here: a task without group=true does not pay for compiling the group layer (AnsiballZ compiles
    # every module_utils file a run imports, on every run)
    from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.group import (  # pylint: disable=import-outside-toplevel
        GroupRequest,
        GroupSnapshot,
        Member,
    )
    members = [Member(volume_path=item.volume_path, snapshot_id=cast(str, item.snapshot_id), disk=item.disk)
               for item in items]
    request = GroupRequest(members=members, state=params['state'], mode=params['mode'], domain=params['domain'],
                           quiesce=params['quiesce'], share=params['share'], max_depth=params['max_depth'],
                           lock_timeout=params['lock_timeout'], timeout=params['timeout'],
                           volume_format=params['volume_format'], parallel=params['parallel'])
    run = GroupSnapshot(request, qemu, libvirt_factory, check_mode).run
    if cinder_factory is None or params['state'] not in ('present', 'absent'):
        return run()  # any other state is refused by the group itself
    api = cinder_factory()
    reporters = [CinderReporter(api, str(item.snapshot_id), check_mode,
                                volume_id_of({'volume_id': item.volume_id, 'volume_path': item.volume_path}))
                 for item in items]
    return run_members_with_reports(run, reporters, [m.volume_path for m in members],
                                    'create' if params['state'] == 'present' else 'delete')
