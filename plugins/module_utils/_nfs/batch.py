# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many volumes in one ``volume_snapshot`` task (``volumes``, ``group=false``).

Every item is the same independent request a single-volume run makes (:class:`._nfs.snapshot.VolumeSnapshot`:
its own lock, journal, ``.info`` file and Cinder report); :func:`run_batch` runs them ``parallel`` at a time and
collects the outcomes in the input order. What the items can share is made once per task: one libvirt connection
and one listing of the running domains (:class:`SharedLibvirt`), one Cinder connection (:class:`LockedApi`), one
``qemu-img`` runner, and the listings of the share (:class:`ShareListings`): one read when the task starts, for
every item's decision before its lock exists, and the listings read under the items' locks shared between the
items that ask at the same time (each one started after the item asked), and the fsyncs of the share's directory
(:func:`._base.atomic.shared_directory_syncs`). An item that fails does not stop the others: the task fails
afterwards naming the failed volumes (:func:`batch_result`), the others stay committed, and a rerun converges (done
items report no change).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, cast

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import shared_directory_syncs
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.fresh import FreshCall
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.group import GroupRequest, GroupSnapshot, Member
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import DiskInfo, LazyLibvirt, disks_using
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import DirListing
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import ShareVolume
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.report import (
    CinderReporter,
    run_members_with_reports,
    run_with_report,
    volume_id_of,
)

# The keys of an item of the ``volumes`` option.
ITEM_KEYS = ('volume_path', 'volume_id', 'snapshot_id', 'disk')


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


def run_batch(items: Sequence[BatchItem], run_one: Callable[[BatchItem], Dict[str, Any]],
              parallel: int) -> List[Dict[str, Any]]:
    """Run ``run_one`` for every item, at most ``parallel`` at once; the outcomes in the input order.

    An item that raises :class:`VolsnapError` (or anything else) gives a failed outcome (``failed``, ``msg`` and
    the error's details); the other items run on.
    """
    if parallel < 1:
        raise VolsnapError('parallel must be 1 or more (it is %d): how many volumes are worked on at once' % parallel)
    if not items:
        return []
    workers = min(parallel, len(items))
    if workers == 1:
        return [_run_one(item, run_one) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda item: _run_one(item, run_one), items))


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
    Cinder client for all of them. The result (or failure) of :func:`batch_result`."""
    items = batch_items(params['volumes'], params.get('share'), params['state'])
    libvirt = shared_factory(libvirt_factory)
    api = LockedApi(cinder_factory()) if cinder_factory is not None and items else None
    directories = [d for d in (_directory_of(item) for item in items) if d is not None]
    listings = ShareListings(directories)

    def run_one(item: BatchItem) -> Dict[str, Any]:
        request = snapshot_request(params, item)
        snapshot = VolumeSnapshot(request, qemu, libvirt, check_mode, lister=listings.fresh,
                                  listing=listings.before_lock(_directory_of(item) or ''))
        if api is None:
            return snapshot.run()
        volume_id = volume_id_of({'volume_id': item.volume_id, 'volume_path': item.volume_path})
        reporter = CinderReporter(api, str(item.snapshot_id), check_mode, volume_id)
        return run_with_report(snapshot.run, reporter, str(request.operation))

    # the items' renames in one directory made durable by shared fsyncs of it (each one started after its item asked)
    with shared_directory_syncs(directories if not check_mode else []):
        outcomes = run_batch(items, run_one, params['parallel'])
    return batch_result(outcomes, check_mode, want_diff)


def snapshot_group(params: Mapping[str, Any], qemu: Any, libvirt_factory: Callable[[], Any], check_mode: bool,
                   cinder_factory: Optional[Callable[[], Any]] = None) -> Dict[str, Any]:
    """``volume_snapshot`` with ``volumes`` and ``group=true``: one :class:`._nfs.group.GroupSnapshot` over the
    listed volumes (read and checked by :func:`batch_items`, as a batch's), and, when ``cinder_factory`` gives the
    Cinder client, each member's snapshot reported (:func:`._openstack.report.run_members_with_reports`: every
    member checked before any disk is touched)."""
    items = batch_items(params['volumes'], params.get('share'), params['state'])
    # snapshot_id is None only with a state the group refuses before it reads one (batch_items requires it for
    # present and absent)
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
