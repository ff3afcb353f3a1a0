# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume_snapshot request: on its :class:`._nfs.volume.ShareVolume`, judge before the lock exists or take the
lock, resume or abandon a journaled operation, or choose the mode, plan (:mod:`._nfs.snapshot_plan`), run
(:mod:`._nfs.snapshot_exec`) and verify; ``state=cleanup`` is :mod:`._nfs.cleanup`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import remove_if_exists
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import VOLUME_FORMATS, ChainReport, inspect_chain, judge_declared
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.cleanup import cleanup_volume
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import LazyLibvirt, find_disk
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.lock import VolumeLock
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg, opened_for_write_by_qemu
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import DirListing, SnapshotInfo, os_error_text
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_exec import FIX_AND_RERUN, Executor
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_plan import (
    OFFLINE,
    ONLINE,
    Plan,
    check_snapshot_id,
    names_made,
    plan_create,
    plan_delete,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import Journal, ShareVolume, check_journaled_plan

T = TypeVar('T')


def group_member_pending(journal: Journal) -> VolsnapError:
    """A single-volume request finding a member of an interrupted group snapshot: refused, the group converges it."""
    group = journal.group or {}
    members = group.get('members')
    paths = [str(m.get('volume_path')) for m in members if isinstance(m, dict)] if isinstance(members, list) else []
    return VolsnapError('this volume is a member of an interrupted group snapshot (domain %s, volumes %s): only the '
                        'group converges it, all members together (completed when the snapshot was taken, else rolled '
                        'back). Run volume_snapshot again with the same volumes list and group=true; nothing was '
                        'changed' % (group.get('domain') or '-', ', '.join(paths) or '?'),
                        pending=journal.pending(), group=group)


RESUMED = 'resumed'
ABANDONED = 'abandoned'
CLEANUP = 'cleanup'


@dataclass
class Request:
    """``state`` present (create), absent (delete) or resumed (finish whatever operation was interrupted on
    the volume, if any; ``snapshot_id`` is then not needed)."""

    volume_path: str
    snapshot_id: Optional[str]
    state: str = 'present'
    mode: str = 'auto'
    domain: Optional[str] = None
    disk: Optional[str] = None
    quiesce: str = 'auto'  # never, auto (try the guest agent, fall back), required
    share: Optional[str] = None
    max_depth: int = 100
    lock_timeout: float = 60.0
    timeout: float = 600.0
    volume_format: Optional[str] = None  # Cinder's format of volume-<id>; None: raw unless an overlay declares it

    @property
    def operation(self) -> Optional[str]:
        if self.state in (RESUMED, ABANDONED):
            return None  # the journal says which
        if self.state == CLEANUP:
            return None  # no snapshot operation
        return 'create' if self.state == 'present' else 'delete'


def _pending_of(journal_path: Optional[str]) -> Optional[Dict[str, Any]]:
    """What the journal at ``journal_path`` says is pending (None: nothing; a dict with an error when unreadable)."""
    if journal_path is None:
        return None  # not a volume file: nothing can be pending
    journal = Journal(journal_path)
    try:
        if not journal.load():
            return None
    except VolsnapError as exc:
        return {'journal': journal_path, 'error': exc.msg}
    return journal.pending()


def _pending_after_error(cause: str, journal_path: Optional[str]) -> str:
    pending = _pending_of(journal_path)
    if pending is None:
        return ('%s. Nothing is pending on this volume (it has no journal of an interrupted operation): fix the '
                'cause and run again' % cause)
    if 'error' in pending:
        return '%s. An operation may be pending on this volume: %s' % (cause, pending['error'])
    journal = Journal(journal_path or '')
    journal.load()
    return '%s. %s. %s' % (cause, journal.pending_text()[0].upper() + journal.pending_text()[1:], FIX_AND_RERUN)


def _begin_failed(journal: Journal, exc: OSError) -> VolsnapError:
    """journal.begin failed: _atomic removed its temporary file; a journal that got its name after all goes too."""
    try:
        remove_if_exists(journal.path)
        left = False
    except OSError:
        left = True
    if left:
        return VolsnapError('cannot write the journal %s (%s). No step ran, but the journal could not be removed '
                            'either: run state=abandoned once the share is writable (it removes it)'
                            % (journal.path, os_error_text(exc, journal.path)), file=journal.path,
                            pending=_pending_of(journal.path), rolled_back=False)
    return VolsnapError('cannot write the journal %s (%s), so no step ran: nothing is pending and the volume is '
                        'unchanged. Fix the cause (free space or inodes on the share, a read-only file system, '
                        'permissions) and run again' % (journal.path, os_error_text(exc, journal.path)),
                        file=journal.path, pending=None, rolled_back=False)


def _info_text(info: Optional[Dict[str, str]]) -> str:
    return SnapshotInfo.from_dict(info).dumps() + '\n' if info is not None else ''


def _planned_volume_format(plan: Plan) -> Optional[str]:
    """The format the plan trusted for volume-<id> (the format its overlay declared when the plan was made), if any."""
    volume_name = 'volume-%s' % plan.volume_id
    fmt = plan.file_format.get(volume_name)
    for step in plan.steps:
        if fmt is None and step.action in ('create_overlay', 'rebase') and step.args.get('backing') == volume_name:
            fmt = step.args.get('backing_format')
    return fmt if fmt in VOLUME_FORMATS else None


class VolumeSnapshot(object):
    """One volume_snapshot request on one volume (:class:`._nfs.volume.ShareVolume`).

    ``libvirt_factory()`` returns a :class:`._nfs.libvirt.Libvirt`, or None when the bindings are missing; it is
    called on first use, once (:class:`._nfs.libvirt.LazyLibvirt`). A request reads the chain once before it acts (a
    running domain's declared chain is judged on that same read) and once after.

    The volume's directory is listed once per phase, and every check of that phase uses that listing: before the
    lock (stale temporaries, the judgement while no lock file exists), under the lock (read after the lock was
    taken: stale temporaries, the chain's checks, the plan), and after the steps ran (a create or delete: that same
    listing with the names its steps made and removed, :func:`._nfs.snapshot_plan.names_made`, since only the lock
    holder changes the volume's names; a resume or an abandon: one read after the last step).
    ``lister(directory)`` returns a listing that started after it was called (default: ``os.listdir`` now; a
    batch shares one between its items, :class:`._base.fresh.FreshCall`). ``listing``: the directory's names read
    earlier in the task, used only before the lock exists, where nothing is changed (what would change something is
    decided again under the lock from a listing read then).
    """

    def __init__(self, request: Request, qemu: QemuImg, libvirt_factory: Callable[[], Any], check_mode: bool,
                 lister: Optional[Callable[[str], DirListing]] = None, listing: Optional[DirListing] = None) -> None:
        self.req = request
        self.qemu = qemu
        self.libvirt = LazyLibvirt(libvirt_factory, 'online snapshots')
        self.check_mode = check_mode
        self.volume: Optional[ShareVolume] = None
        self.lister: Callable[[str], DirListing] = lister if lister is not None else DirListing.read
        self.unlocked_listing = listing
        # the listing of the current phase (None: the next inspection reads one, started after the steps ran)
        self._listing: Optional[DirListing] = None

    def run(self) -> Dict[str, Any]:
        """The request: :meth:`before_lock`, then (when that did not decide it) :meth:`under_lock` holding the
        volume's lock taken here, with a listing (``lister``) started after it was taken."""
        return self._guarded(self._run)

    def before_lock(self) -> Optional[Dict[str, Any]]:
        """The first phase, without the volume's lock: the result when it is decided here (state=cleanup, or nothing
        to change while no run ever locked the volume), None when the caller must take the lock and call
        :meth:`under_lock`. A batch does this for every item first, then takes the locks of many items before one
        listing serves them all."""
        return self._guarded(self._before_lock)

    def under_lock(self, lock: VolumeLock, listing: Optional[DirListing]) -> Dict[str, Any]:
        """The second phase, holding ``lock`` (this volume's, taken after :meth:`before_lock` returned None) with
        ``listing``, the directory's names read after the lock was taken (None: read one now, ``lister``)."""
        return self._guarded(lambda: self._locked(lock, listing))

    def _guarded(self, phase: Callable[[], T]) -> T:
        try:
            return phase()
        except OSError as exc:
            # Executor and Journal map the errors of every step; this is the net for the rest (the lock file, a
            # temporary file, a read): a failed result that names the file and says what is pending, no traceback.
            journal_path = self.volume.journal_path if self.volume is not None else None
            raise VolsnapError(_pending_after_error(os_error_text(exc), journal_path), file=exc.filename,
                               pending=_pending_of(journal_path), rolled_back=False)

    def under_own_lock(self) -> Dict[str, Any]:
        """The second phase after :meth:`before_lock` returned None: waits up to ``lock_timeout`` for the volume's
        lock, then decides and acts under it with a listing read after it was taken."""
        return self._guarded(self._under_own_lock)

    def _run(self) -> Dict[str, Any]:
        early = self._before_lock()
        return early if early is not None else self._under_own_lock()

    def _under_own_lock(self) -> Dict[str, Any]:
        lock = self._share_volume().lock(self.req.lock_timeout)
        with lock:
            return self._locked(lock, None)

    def _before_lock(self) -> Optional[Dict[str, Any]]:
        req = self.req
        if req.state not in (RESUMED, CLEANUP, ABANDONED) or req.snapshot_id is not None:
            check_snapshot_id(req.snapshot_id)
        volume = self.volume = ShareVolume.from_path(req.volume_path)
        if req.state == CLEANUP:
            return self._cleanup(volume)
        if not volume.exists():
            raise VolsnapError('the volume file %s does not exist (nor its .info file)' % volume.path)
        before = self.unlocked_listing if self.unlocked_listing is not None else volume.listing()
        if not volume.stale_temporaries(before):
            # So check mode, a request that changes nothing and a refused request leave nothing in the share.
            self._listing = before
            try:
                probed = volume.judge_unlocked(self._judge, lambda result: self.check_mode or not result['changed'])
            finally:
                self._listing = None
            if probed is not None:
                probed.update(lock_waited=0.0, removed_temporaries=[])
                return probed
        return None

    def _locked(self, lock: VolumeLock, listing: Optional[DirListing]) -> Dict[str, Any]:
        volume = self._share_volume()
        # One listing read after the lock was taken serves every check made under it.
        if listing is None:
            listing = self.lister(volume.directory)
        # Temporary files of this volume found while we hold its lock were left by a killed run: removed (check
        # mode: listed) before anything else, so they never pile up.
        removed = volume.remove_stale_temporaries(self.check_mode, listing)
        self._listing = listing if self.check_mode else listing.without(os.path.basename(p) for p in removed)
        try:
            result = self._decide(volume)
        finally:
            self._listing = None
        result['lock_waited'] = round(lock.waited, 3)
        result['removed_temporaries'] = removed
        return result

    def _judge(self) -> Dict[str, Any]:
        """The decision without changing anything (check mode), for :meth:`ShareVolume.judge_unlocked`."""
        check_mode, self.check_mode = self.check_mode, True
        try:
            return self._decide(self._share_volume())
        finally:
            self.check_mode = check_mode

    def _share_volume(self) -> ShareVolume:
        if self.volume is None:
            raise VolsnapError('internal error: no volume')
        return self.volume

    def _cleanup(self, volume: ShareVolume) -> Dict[str, Any]:
        """state=cleanup: what the collection left for the volume (stale temporary files; the lock file of a
        volume that no longer exists), removed when no process holds the lock."""
        result = cleanup_volume(volume, self.req.lock_timeout, self.check_mode)
        result.update({'snapshot_id': None, 'state': CLEANUP, 'operation': None, 'mode': None, 'resumed': False,
                       'active': None, 'file_format': {}, 'compute_status': None, 'merge': {}, 'info': None,
                       'chain': {}, 'removed_temporaries': [p for p in result['removed'] if not p.endswith('.lock')]})
        return result

    def _decide(self, volume: ShareVolume) -> Dict[str, Any]:
        journal = volume.journal()
        if journal.load() and journal.plan is not None:
            check_journaled_plan(journal.plan, volume.directory, volume.name, volume.volume_id,  # hostile input
                                 self.req.volume_format)
            if journal.group is not None:
                raise group_member_pending(journal)  # only the group converges it (all or nothing)
            if self.req.state == ABANDONED:
                return self._abandon(journal, volume.path)
            return self._resume(journal, volume.path)
        if self.req.state in (RESUMED, ABANDONED):
            return self._nothing_pending(volume.path)
        return self._fresh(journal, volume.path, volume.volume_id)

    def _inspect(self, path: str, declared: Any = None, planned_format: Optional[str] = None) -> ChainReport:
        # The phase's listing; after steps ran (no phase listing), one read now.
        listing = self._listing if self._listing is not None else self.lister(os.path.dirname(os.path.abspath(path)))
        # Without a share, the volume's own directory (a volume file that is a symlink must not move it elsewhere).
        return inspect_chain(path, share=self.req.share or os.path.dirname(path), max_depth=self.req.max_depth,
                             declared=declared, volume_format=self.req.volume_format or planned_format,
                             listing=listing)

    def _steps_ran(self) -> None:
        """Steps changed the directory: the next inspection reads a listing of its own."""
        self._listing = None

    def _executor(self, mode: str) -> Executor:
        return Executor(self.qemu, self.libvirt.get(mode == ONLINE), self.req.timeout)

    def _resume(self, journal: Journal, path: str) -> Dict[str, Any]:
        plan = journal.plan
        if plan is None or (self.req.state != RESUMED
                            and (plan.operation, plan.snapshot_id) != (self.req.operation, self.req.snapshot_id)):
            pending = '%s of snapshot %s' % (plan.operation, plan.snapshot_id) if plan else 'operation'
            raise VolsnapError('an interrupted %s (%s mode, %d of %d steps done) is pending on this volume; run '
                               'volume_snapshot with snapshot_id=%s state=%s (or state=resumed) to finish it first '
                               '(or, when its next step can never succeed, state=abandoned to undo it if that loses '
                               'nothing)'
                               % (pending, plan.mode if plan else '?', journal.done, len(plan.steps) if plan else 0,
                                  plan.snapshot_id if plan else '?',
                                  'present' if plan and plan.operation == 'create' else 'absent'),
                               pending=journal.pending())
        remaining = plan.steps[journal.done:]
        quiesced = None
        if not self.check_mode:
            self._steps_ran()
            quiesced = self._executor(plan.mode).run(journal).get('quiesced')
        result = self._result(plan, path, changed=True, resumed=True, steps=[s.description for s in remaining])
        result['quiesced'] = quiesced
        return result

    def _abandon(self, journal: Journal, path: str) -> Dict[str, Any]:
        """state=abandoned: undo the pending operation when the files prove that loses nothing, else refuse."""
        plan = journal.plan
        if plan is None:
            raise VolsnapError('internal error: a journal without a plan')
        if self.req.snapshot_id is not None and self.req.snapshot_id != plan.snapshot_id:
            raise VolsnapError('the operation pending on this volume is the %s of snapshot %s, not of snapshot %s; '
                               'nothing was abandoned' % (plan.operation, plan.snapshot_id, self.req.snapshot_id),
                               pending=journal.pending())
        executor = self._executor(plan.mode)
        pending = journal.pending()
        actions, files, refusal = executor.undo_plan(journal)
        if refusal is not None:
            raise VolsnapError('the %s of snapshot %s cannot be abandoned, nothing was changed: %s. %s'
                               % (plan.operation, plan.snapshot_id, refusal.rstrip('.'), journal.pending_text()),
                               pending=pending, abandoned=None)
        if not self.check_mode:
            self._steps_ran()
            try:
                executor.undo(journal, files)
            except OSError as exc:
                raise VolsnapError('abandoning the %s of snapshot %s failed: %s. The journal is removed last, so '
                                   'the operation stays pending until everything is removed: fix the cause and run '
                                   'state=abandoned again'
                                   % (plan.operation, plan.snapshot_id, os_error_text(exc)),
                                   file=exc.filename, pending=_pending_of(journal.path))
        else:
            actions = ['would remove ' + a[len('removed '):] if a.startswith('removed ') else a for a in actions]
        report = self._inspect(path)
        return {'changed': True, 'snapshot_id': plan.snapshot_id, 'state': ABANDONED, 'operation': plan.operation,
                'mode': plan.mode, 'resumed': False, 'active': report.active, 'file_format': {},
                'compute_status': None, 'merge': {}, 'plan': actions,
                'abandoned': dict(pending, undone=actions, removed=files + [journal.path]),
                'info': report.info.as_dict() if report.info else None, 'chain': report.as_dict()}

    def _nothing_pending(self, path: str) -> Dict[str, Any]:
        """state=resumed (or abandoned) on a volume without an interrupted operation: nothing to do; the chain."""
        report = self._inspect(path)
        return {'changed': False, 'snapshot_id': None, 'state': self.req.state, 'operation': None, 'mode': None,
                'resumed': False, 'active': report.active, 'file_format': {}, 'compute_status': None, 'merge': {},
                'plan': [], 'info': report.info.as_dict() if report.info else None, 'chain': report.as_dict()}

    def _fresh(self, journal: Journal, path: str, volume_id: str) -> Dict[str, Any]:
        req = self.req
        snapshot_id = check_snapshot_id(req.snapshot_id)
        mode, domain, disk, report = self._choose_mode(path, volume_id)
        if req.operation == 'create':
            plan = plan_create(report, volume_id, snapshot_id, mode, domain, disk, req.quiesce)
        else:
            plan = plan_delete(report, volume_id, snapshot_id, mode, domain, disk)
        if not plan.steps:
            return self._result(plan, path, changed=False, report=report)
        if mode == OFFLINE:
            self._refuse_if_in_use(report)
        quiesced = None
        if not self.check_mode:
            executor = self._executor(mode)
            try:
                journal.begin(plan)
            except OSError as exc:
                raise _begin_failed(journal, exc)
            locked = self._listing
            self._steps_ran()
            quiesced = executor.run(journal).get('quiesced')
            if locked is not None:
                # Holding the lock, only this run changed the volume's names: the listing read after the lock was
                # taken, with the names the steps made and removed and the finished journal gone, is what a new
                # read would say of them (one read of the share per volume instead of two).
                added, removed = names_made(plan.steps)
                self._listing = locked.changed(added, removed + [os.path.basename(journal.path)])
        result = self._result(plan, path, changed=True, steps=plan.describe())
        result['quiesced'] = quiesced
        return result

    def _choose_mode(self, path: str, volume_id: str) -> Tuple[str, Optional[str], Optional[str], ChainReport]:
        """The mode, the online domain and disk, and the chain read once (with the chain the domain declares)."""
        req = self.req
        if req.mode == OFFLINE and req.domain is None:
            lv = self.libvirt.get(False)
            report = self._inspect(path)
            users = self._users(lv, path, report) if lv is not None else []
            if users:
                raise VolsnapError('mode=offline but running domain %s uses the volume (disk %s); use mode=online '
                                   'or auto, or stop the domain' % (users[0][0], users[0][1].target))
            return OFFLINE, None, None, report
        lv = self.libvirt.get(req.mode == ONLINE or req.domain is not None)
        if lv is None:
            return OFFLINE, None, None, self._inspect(path)
        if req.domain is not None:
            xml = lv.xml(req.domain)
            if lv.domain(req.domain).isActive() != 1:
                if req.mode == ONLINE:
                    raise VolsnapError('mode=online but domain %s is not running' % req.domain)
                return OFFLINE, None, None, self._inspect(path)
            found = find_disk(xml, req.disk or volume_id)
            return ONLINE, req.domain, found.target, self._inspect(path, found.declared())
        report = self._inspect(path)
        users = self._users(lv, path, report)
        if not users:
            if req.mode == ONLINE:
                raise VolsnapError('mode=online but no running domain on %s has volume %s attached' % (lv.uri, path))
            return OFFLINE, None, None, report
        if len(users) > 1:
            raise VolsnapError('several running domains use the volume: %s; name one with domain'
                               % [(name, found.target) for name, found in users])
        domain, found = users[0]
        # The same read of the chain, judged against the one the running domain declares (its XML was read once,
        # above): what inspect_chain(declared=...) gives, without reading the files again.
        return ONLINE, domain, found.target, judge_declared(report, found.declared())

    def _users(self, lv: Any, path: str, report: ChainReport) -> List[Tuple[str, Any]]:
        try:
            return list(lv.running_disks_using([layer.image.path for layer in report.layers] or [path]))
        except VolsnapError:
            if self.req.mode == ONLINE:
                raise
            return []  # no libvirtd on this host (a storage node): nothing runs the volume here

    def _refuse_if_in_use(self, report: ChainReport) -> None:
        top = report.layers[0].image
        if opened_for_write_by_qemu(top.path):
            raise VolsnapError('%s is open for writing by a running QEMU (it holds qemu\'s image lock); an offline '
                               'snapshot would corrupt it: use mode=online or stop the instance' % top.path)

    def _result(self, plan: Plan, path: str, changed: bool, resumed: bool = False, steps: Any = None,
                report: Optional[ChainReport] = None) -> Dict[str, Any]:
        if report is None:
            # After the offline delete of its last snapshot volume-<id> is the top again: its trusted format is the
            # one the plan used (its overlay's declaration), not the default.
            report = self._inspect(path, planned_format=_planned_volume_format(plan))
            if changed and not self.check_mode and not report.safe:
                raise VolsnapError('the operation finished but the chain is not consistent: %s' % report.summary(),
                                   chain=report.as_dict())
        result: Dict[str, Any] = {
            'changed': changed,
            'snapshot_id': plan.snapshot_id,
            'state': self.req.state,
            'operation': plan.operation,
            'mode': plan.mode,
            'resumed': resumed,
            'active': plan.active_after if changed else report.active,
            'file_format': plan.file_format if changed else {},
            'compute_status': plan.compute_status if changed else None,
            'merge': plan.merge if changed else {},
            'plan': steps or [],
            'info': plan.info_after if changed else (report.info.as_dict() if report.info else None),
            'chain': report.as_dict(),
            'quiesced': None,
        }
        online_step = next((step for step in plan.steps if step.args.get('domain')), None)
        if online_step is not None:
            result['domain'] = online_step.args['domain']
            result['disk'] = online_step.args['disk']
        if changed:
            result['diff'] = {'before': _info_text(plan.info_before), 'after': _info_text(plan.info_after),
                              'before_header': report.info_file, 'after_header': report.info_file}
        return result
