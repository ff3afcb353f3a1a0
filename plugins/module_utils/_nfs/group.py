# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Group snapshots: the listed volumes of one instance snapshotted at the same instant (``volume_snapshot`` with
``volumes`` and ``group=true``).

Each member stays a Cinder RemoteFS volume of its own: its lock, its journal and its ``.info`` file, laid out exactly
as a single-volume snapshot lays them out (its plan is :func:`._nfs.snapshot_plan.plan_create`'s). What makes them
a group:

* the locks are taken in one fixed order (sorted volume paths), so two groups sharing volumes never deadlock;
* each member's journal names the group (:func:`group_record`: domain, mode, every member);
* online, ONE libvirt call switches every disk (a disk-only external snapshot naming every member's disk with
  ``VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC``: all disks switch to their overlays at the same instant, or none does).
  That call is the commit point. Before it, a rerun rolls every member back (the prepared, empty overlays and the
  journals are removed) and starts again; after it (the domain's disks have their overlays), a rerun completes every
  member's ``.info`` file. Offline (no running domain), the commit point is the first ``.info`` file written: the
  overlays are all created first, then the ``.info`` files are written. :func:`judge_recovery` decides, on the
  files and on libvirt, which side of the commit point an interrupted group is.

Deleting a group's snapshots is one independent, journaled delete per volume (libvirt has no atomic multi-disk
commit): each is crash-safe as a single delete, and no data is lost whichever of them has run.

The planning here is pure (:func:`check_members`, :func:`lock_order`, :func:`plan_group`, :func:`judge_recovery`);
:class:`GroupSnapshot` gathers the facts, takes the locks and runs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import shared_directory_syncs
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import ChainReport, inspect_chain, judge_declared
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import (
    QUIESCE_AUTO,
    LazyLibvirt,
    find_disk,
    quiesce_mode,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg, opened_for_write_by_qemu
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import SnapshotInfo, load_info, os_error_text
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_exec import Executor, overlay_data_problem
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_plan import (
    COMPUTE,
    OFFLINE,
    ONLINE,
    Plan,
    check_snapshot_id,
    plan_create,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import Journal, ShareVolume, check_journaled_plan

COMPLETE_GROUP = 'complete'
ROLL_BACK_GROUP = 'roll back'


@dataclass
class Member:
    """One volume of a group: its file, its snapshot and (online) the domain's disk (target dev or serial)."""

    volume_path: str
    snapshot_id: str
    disk: Optional[str] = None


@dataclass
class GroupRequest:
    """``volume_snapshot`` with ``volumes`` and ``group=true``: ``state`` present (create) or absent (delete)."""

    members: List[Member]
    state: str = 'present'
    mode: str = 'auto'
    domain: Optional[str] = None
    quiesce: str = QUIESCE_AUTO
    share: Optional[str] = None
    max_depth: int = 100
    lock_timeout: float = 60.0
    timeout: float = 600.0
    volume_format: Optional[str] = None
    parallel: int = 4  # overlays created at once while the group is prepared


# ---- pure planning

def check_members(members: Sequence[Member]) -> None:
    """A group names at least one volume, each once, each with its own Cinder snapshot id."""
    if not members:
        raise VolsnapError('a group snapshot needs at least one volume in volumes')
    seen: Dict[str, int] = {}
    snaps: Dict[str, int] = {}
    for index, member in enumerate(members):
        check_snapshot_id(member.snapshot_id)
        path = os.path.normpath(member.volume_path)
        if path in seen:
            raise VolsnapError('volumes[%d] and volumes[%d] are the same volume %s: a group names each volume once'
                               % (seen[path], index, path))
        if member.snapshot_id in snaps:
            raise VolsnapError('volumes[%d] and volumes[%d] have the same snapshot_id %s: every volume of a group '
                               'gets its own Cinder snapshot' % (snaps[member.snapshot_id], index, member.snapshot_id))
        seen[path] = index
        snaps[member.snapshot_id] = index


def lock_order(paths: Sequence[str]) -> List[int]:
    """The indices of ``paths`` in the one order every group takes the volumes' locks (sorted paths): two groups
    sharing volumes wait for each other instead of deadlocking."""
    return sorted(range(len(paths)), key=lambda i: os.path.normpath(paths[i]))


def group_record(mode: str, domain: Optional[str], quiesce: str, members: Sequence[Member],
                 disks: Sequence[Optional[str]]) -> Dict[str, Any]:
    """What every member's journal says about the group (the members in lock order)."""
    order = lock_order([m.volume_path for m in members])
    return {'mode': mode, 'domain': domain, 'quiesce': quiesce, 'operation': 'create',
            'members': [{'volume_path': os.path.normpath(members[i].volume_path),
                         'snapshot_id': members[i].snapshot_id, 'disk': disks[i]} for i in order]}


def same_group(record: Any, members: Sequence[Member]) -> Optional[str]:
    """Why the group a journal names (``record``, hostile input) is not the requested one, else None."""
    journaled = record.get('members') if isinstance(record, dict) else None
    if not isinstance(journaled, list) or not all(isinstance(m, dict) for m in journaled):
        return 'its journal names no readable group'
    pending = sorted((str(m.get('volume_path')), str(m.get('snapshot_id'))) for m in journaled)
    wanted = sorted((os.path.normpath(m.volume_path), m.snapshot_id) for m in members)
    if pending != wanted:
        return ('it is a member of another group snapshot (%s)'
                % ', '.join('%s snapshot %s' % pair for pair in pending))
    return None


@dataclass
class GroupPlan:
    """The group create: each member's plan (in the request's order), the lock order, and the one commit point."""

    mode: str
    domain: Optional[str]
    quiesce: str
    members: List[Member]
    plans: List[Plan]
    disks: List[Optional[str]] = field(default_factory=list)
    order: List[int] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return any(plan.steps for plan in self.plans)

    def overlays(self) -> Dict[str, str]:
        """Online: target dev -> overlay of every member (what the one atomic libvirt call names)."""
        found: Dict[str, str] = {}
        for plan, disk in zip(self.plans, self.disks):
            step = next((s for s in plan.steps if s.action == 'libvirt_snapshot'), None)
            if step is not None and disk is not None:
                found[disk] = step.args['file']
        return found

    def commit_description(self) -> str:
        if self.mode == ONLINE:
            disks = self.overlays()
            return ('libvirt: ONE disk-only external snapshot of %s disks %s with the atomic flag (every disk switches '
                    'to its overlay at the same instant, or none does), quiesce %s'
                    % (self.domain, ', '.join(sorted(disks)), self.quiesce))
        return 'offline: every overlay exists; the first .info file written commits the group'

    def describe(self) -> List[str]:
        """The group's steps in the order they run: prepare every overlay, the commit point, every .info file."""
        lines = ['lock %s' % ', '.join(self.members[i].volume_path for i in self.order)]
        for i in self.order:
            lines += [s.description for s in self.plans[i].steps if s.action == 'create_overlay']
        lines.append(self.commit_description())
        for i in self.order:
            lines += [s.description for s in self.plans[i].steps if s.action == 'write_info']
        return lines


def plan_group(members: Sequence[Member], plans: Sequence[Plan], mode: str, domain: Optional[str], quiesce: str,
               disks: Sequence[Optional[str]]) -> GroupPlan:
    """The group create from each member's own plan: all of them change, or none does (refused otherwise)."""
    if mode == ONLINE:
        targets = [d for d in disks if d is not None]
        if len(targets) != len(members):
            raise VolsnapError('internal error: an online group without the disk of every member')
        dup = sorted(set(d for d in targets if targets.count(d) > 1))
        if dup:
            raise VolsnapError('several volumes of the group are the same disk %s of domain %s' % (', '.join(dup), domain))
    done = [m.volume_path for m, p in zip(members, plans) if not p.steps]
    todo = [m.volume_path for m, p in zip(members, plans) if p.steps]
    if done and todo:
        raise VolsnapError('the .info files of %s already have their snapshot but those of %s do not: the snapshots of '
                           'a group are taken at one instant, so they cannot be completed now; nothing was changed. '
                           'Delete the existing ones (state=absent) and take the group again, or snapshot the others '
                           'with new snapshot ids' % (', '.join(done), ', '.join(todo)))
    return GroupPlan(mode=mode, domain=domain, quiesce=quiesce, members=list(members), plans=list(plans),
                     disks=list(disks), order=lock_order([m.volume_path for m in members]))


@dataclass
class PendingMember:
    """What the files and libvirt say about one member of an interrupted group (for :func:`judge_recovery`)."""

    volume_path: str
    info_done: bool          # its .info file records the snapshot (written after the commit point)
    overlay_has_data: bool   # its overlay holds data (only a domain running on it writes there)
    switched: Optional[bool]  # online: the domain's disk has the overlay in its chain; None: no such domain


def judge_recovery(pending: Sequence[PendingMember]) -> Tuple[str, Optional[str]]:
    """Which side of the commit point an interrupted group is: (:data:`COMPLETE_GROUP` or :data:`ROLL_BACK_GROUP`,
    None), or (``''``, why neither is safe).

    Committed when any member shows it: its disk switched (the atomic call ran), its ``.info`` file written, or data
    in its overlay. Then every member is completed; a member whose disk of a running domain did not switch while
    another's did cannot be (the atomic call switches all or none: something else changed the domain)."""
    committed = [p for p in pending if p.switched or p.info_done or p.overlay_has_data]
    if not committed:
        return ROLL_BACK_GROUP, None
    stray = [p.volume_path for p in pending if p.switched is False and not p.info_done]
    if stray:
        return '', ('the snapshot was taken for %s but the disks of %s do not have their overlays, which the atomic '
                    'call rules out: the domain was changed by something else. Inspect the domain\'s disks (virsh '
                    'domblklist) and the chains (qcow2_chain_info) before removing the journals by hand'
                    % (', '.join(p.volume_path for p in committed), ', '.join(stray)))
    return COMPLETE_GROUP, None


# ---- running

def _info_text(info: Optional[Dict[str, str]]) -> str:
    return SnapshotInfo.from_dict(info).dumps() + '\n' if info is not None else ''


class GroupSnapshot(object):
    """One group request (:class:`GroupRequest`) over the members' :class:`._nfs.volume.ShareVolume` s.

    ``libvirt_factory()`` returns a :class:`._nfs.libvirt.Libvirt`, or None when the bindings are missing; it is
    called on first use, once (:class:`._nfs.libvirt.LazyLibvirt`), and the members' deletes share that connection.
    """

    def __init__(self, request: GroupRequest, qemu: QemuImg, libvirt_factory: Callable[[], Any],
                 check_mode: bool) -> None:
        self.req = request
        self.qemu = qemu
        self.libvirt = LazyLibvirt(libvirt_factory, 'online group snapshots')
        self.check_mode = check_mode
        self.volumes: List[ShareVolume] = []

    def run(self) -> Dict[str, Any]:
        try:
            return self._run()
        except VolsnapError as exc:
            raise self._with_volumes(exc)

    def _with_volumes(self, exc: VolsnapError) -> VolsnapError:
        """Every failed result names the failed volumes and lists every volume (a refusal of the whole group names
        them all; nothing was changed on any)."""
        details = dict(exc.details)
        paths = [os.path.normpath(m.volume_path) for m in self.req.members]
        failed = details.get('failed_volumes') or paths
        details['failed_volumes'] = failed
        if 'volumes' not in details or len(details['volumes']) != len(paths):
            details['volumes'] = [{'volume_path': path, 'snapshot_id': m.snapshot_id, 'changed': False,
                                   'failed': path in failed, 'msg': exc.msg if path in failed else None}
                                  for path, m in zip(paths, self.req.members)]
        return VolsnapError(exc.msg, **details)

    def _run(self) -> Dict[str, Any]:
        req = self.req
        if req.state not in ('present', 'absent'):
            raise VolsnapError('group=true takes state=present (create the group snapshot) or state=absent (delete '
                               'the snapshots of the group), not state=%s; a group interrupted half-way is converged '
                               'by running state=present again with the same volumes' % req.state)
        check_members(req.members)
        if req.state == 'absent':
            return self._delete()
        self.volumes = [ShareVolume.from_path(m.volume_path) for m in req.members]
        for volume in self.volumes:
            if not volume.exists():
                raise VolsnapError('the volume file %s does not exist (nor its .info file); nothing was changed'
                                   % volume.path, failed_volumes=[volume.path])
        started = time.monotonic()
        order = lock_order([v.path for v in self.volumes])
        waited = 0.0
        removed: Dict[int, List[str]] = {}
        try:
            with contextlib.ExitStack() as stack:
                if not self.check_mode:
                    # the members' renames in one directory made durable by fsyncs of it shared between the members'
                    # threads (each one started after its member asked), as a batch of single volumes does
                    stack.enter_context(shared_directory_syncs(set(v.directory for v in self.volumes)))
                for index in order:
                    volume = self.volumes[index]
                    if self.check_mode and not os.path.exists(volume.lock_path):
                        removed[index] = volume.stale_temporaries()
                        continue  # check mode never creates a lock file
                    lock = stack.enter_context(volume.lock(req.lock_timeout))
                    waited += lock.waited
                    removed[index] = volume.remove_stale_temporaries(self.check_mode)
                result = self._create(order)
        except OSError as exc:
            raise VolsnapError('group snapshot: %s. %s' % (os_error_text(exc), self._pending_text()),
                               file=exc.filename, failed_volumes=[])
        for index, item in enumerate(result['volumes']):
            item['removed_temporaries'] = removed.get(index, [])
        result['group']['lock_waited'] = round(waited, 3)
        result['group']['seconds'] = round(time.monotonic() - started, 3)
        return result

    def _pending_text(self) -> str:
        pending = [v.path for v in self.volumes if os.path.lexists(v.journal_path)]
        if not pending:
            return 'Nothing of the group is pending'
        return ('The group is pending on %s: run the same request again (it completes or rolls back every member)'
                % ', '.join(pending))

    # ---- create

    def _journals(self) -> List[Journal]:
        journals = []
        for volume in self.volumes:
            journal = volume.journal()
            if journal.load() and journal.plan is not None:
                check_journaled_plan(journal.plan, volume.directory, volume.name, volume.volume_id,  # hostile input
                                     self.req.volume_format)
            journals.append(journal)
        return journals

    def _create(self, order: List[int]) -> Dict[str, Any]:
        journals = self._journals()
        pending = [i for i in order if journals[i].plan is not None]
        recovered: Optional[str] = None
        recovery_steps: List[str] = []
        if pending:
            for i in pending:
                journal = journals[i]
                why = ('it has an interrupted single-volume operation pending (%s); finish it first with '
                       'volume_snapshot state=resumed on that volume' % journal.pending_text()
                       if journal.group is None else same_group(journal.group, self.req.members))
                if why is None and journal.plan is not None and journal.plan.operation != 'create':
                    why = 'its journal names a %s, not the group create' % journal.plan.operation
                if why is not None:
                    raise VolsnapError('volume %s cannot join this group snapshot: %s; nothing was changed'
                                       % (self.volumes[i].path, why), failed_volumes=[self.volumes[i].path],
                                       pending=journal.pending())
            recovered, recovery_steps = self._recover(journals, pending)
            if recovered == COMPLETE_GROUP:
                return self._recovered_result(journals, pending, recovery_steps)
            if self.check_mode:
                # the prepared overlays are still there: what the rerun does after rolling back is planned then
                return self._recovered_result(journals, pending, recovery_steps + [
                    'then take the group snapshot again, as a request without anything pending does'],
                    recovered=ROLL_BACK_GROUP)
        return self._fresh(order, recovered, recovery_steps)

    def _pending_state(self, index: int, journal: Journal, lv: Any) -> PendingMember:
        plan = journal.plan
        steps = plan.steps if plan is not None else []
        overlay = next((s.args['file'] for s in steps if s.action == 'create_overlay'), '')
        info_step = next((s for s in steps if s.action == 'write_info'), None)
        snap = next((s for s in steps if s.action == 'libvirt_snapshot'), None)
        info_done = False
        if info_step is not None:
            try:
                info = load_info(info_step.args['path'])
            except (ValueError, OSError):
                info = None
            info_done = info is not None and plan is not None and plan.snapshot_id in info.snapshots
        has_data = False
        if overlay and os.path.lexists(overlay):
            has_data = overlay_data_problem(overlay) is not None or opened_for_write_by_qemu(overlay)
        switched: Optional[bool] = None
        if snap is not None and lv is not None:
            dom = lv.find_domain(snap.args['domain'])
            if dom is not None:
                chain = lv.disk_chain_paths(dom, snap.args['disk'])
                switched = any(os.path.realpath(p) == os.path.realpath(overlay) for p in chain)
        return PendingMember(self.volumes[index].path, info_done, has_data, switched)

    def _recover(self, journals: List[Journal], pending: List[int]) -> Tuple[str, List[str]]:
        """Converge an interrupted group: complete every member after the commit point, else roll every one back."""
        plans = [journals[i].plan for i in pending]
        online = any(step.action == 'libvirt_snapshot' for plan in plans if plan is not None for step in plan.steps)
        lv = self.libvirt.get(online)
        states = [self._pending_state(i, journals[i], lv) for i in pending]
        decision, refusal = judge_recovery(states)
        if refusal is not None:
            raise VolsnapError('an interrupted group snapshot is pending and cannot be converged: %s; nothing was '
                               'changed' % refusal, failed_volumes=[s.volume_path for s in states],
                               pending=[journals[i].pending() for i in pending])
        executor = Executor(self.qemu, lv, self.req.timeout)
        steps: List[str] = []
        undo: List[Tuple[Journal, List[str]]] = []
        if decision == COMPLETE_GROUP:
            for i in pending:
                plan = journals[i].plan
                if plan is not None:
                    steps += [s.description for s in plan.steps[journals[i].done:]]
            if not self.check_mode:
                self._complete(executor, journals, pending, resumed=True)
            return decision, steps
        for i in pending:
            actions, files, refusal = executor.undo_plan(journals[i])
            if refusal is not None:
                raise VolsnapError('an interrupted group snapshot is pending; it was never committed, but volume %s '
                                   'cannot be rolled back: %s. Nothing was changed'
                                   % (self.volumes[i].path, refusal.rstrip('.')),
                                   failed_volumes=[self.volumes[i].path], pending=journals[i].pending())
            undo.append((journals[i], files))
            steps += actions if not self.check_mode else ['would have ' + a for a in actions]
        if not self.check_mode:
            for journal, files in undo:
                executor.undo(journal, files)
        return decision, steps

    def _complete(self, executor: Executor, journals: List[Journal], indices: List[int], resumed: bool) -> None:
        """After the commit point: each member's remaining steps (its .info file), every member tried.

        Committed means every overlay was complete (the commit comes after all of them), so a journal that does not
        record its overlay step (not written, to save a write per member) is advanced past it in memory. Right after
        this run's own libvirt call, its ``libvirt_snapshot`` step is known done too; a resumed one checks the disk."""
        for i in indices:
            journal = journals[i]
            steps = journal.plan.steps if journal.plan is not None else []
            info_index = next((n for n, s in enumerate(steps) if s.action == 'write_info'), len(steps))
            if not resumed:
                journal.advance(max(journal.done, info_index), COMPUTE, write=False)
            elif journal.done == 0:
                journal.advance(1, COMPUTE, write=False)
        errors = self._in_parallel(indices, lambda i: executor.run(journals[i]), stop_at_first=False)
        failures = [(i, exc.msg if isinstance(exc, VolsnapError) else
                     os_error_text(exc) if isinstance(exc, OSError) else str(exc))
                    for i, exc in sorted(errors.items(), key=lambda item: indices.index(item[0]))]
        if failures:
            raise VolsnapError('the group snapshot was %s (every disk has its overlay), but completing %d of its '
                               'volumes failed: %s. The others are complete; running the same request again '
                               'completes the rest' % ('taken before' if resumed else 'taken',
                                                       len(failures),
                                                       '; '.join('%s: %s' % (self.volumes[i].path, why)
                                                                 for i, why in failures)),
                               failed_volumes=[self.volumes[i].path for i, _why in failures],
                               volumes=[{'volume_path': self.volumes[i].path, 'failed': True, 'msg': why}
                                        for i, why in failures],
                               committed=True)  # the volumes not failed are complete

    def _recovered_result(self, journals: List[Journal], pending: List[int], steps: List[str],
                          recovered: str = COMPLETE_GROUP) -> Dict[str, Any]:
        plans = []
        for index, journal in enumerate(journals):
            plan = journal.plan if index in pending else None
            plans.append(plan)
        first = next(p for p in plans if p is not None)
        record = journals[pending[0]].group or {}
        return self._result(plans, changed=True, resumed=True, mode=first.mode,
                            domain=record.get('domain'), quiesce=str(record.get('quiesce') or QUIESCE_AUTO),
                            quiesced=None, recovered=recovered, steps=steps)

    def _fresh(self, order: List[int], recovered: Optional[str], recovery_steps: List[str]) -> Dict[str, Any]:
        req = self.req
        quiesce = quiesce_mode(req.quiesce)
        mode, domain, dom, disks, reports = self._choose_mode()
        plans = [plan_create(reports[i], self.volumes[i].volume_id, m.snapshot_id, mode, domain, disks[i], quiesce)
                 for i, m in enumerate(req.members)]
        group = plan_group(req.members, plans, mode, domain, quiesce, disks)
        if not group.changes:
            return self._result(plans, changed=bool(recovered), resumed=False, mode=mode, domain=domain,
                                quiesce=quiesce, quiesced=None, recovered=recovered, steps=recovery_steps,
                                reports=reports)
        if mode == OFFLINE:
            for report in reports:
                top = report.layers[0].image
                if opened_for_write_by_qemu(top.path):
                    raise VolsnapError('%s is open for writing by a running QEMU; an offline group snapshot would '
                                       'corrupt it: use mode=online (or name its domain), or stop the instance; '
                                       'nothing was changed' % top.path, failed_volumes=[report.path])
        quiesced: Optional[bool] = None
        if not self.check_mode:
            quiesced = self._execute(group, dom)
        return self._result(plans, changed=True, resumed=False, mode=mode, domain=domain, quiesce=quiesce,
                            quiesced=quiesced, recovered=recovered, steps=recovery_steps + group.describe(),
                            group_plan=group)

    def _inspect(self, index: int, declared: Any = None) -> ChainReport:
        path = self.volumes[index].path
        return inspect_chain(path, share=self.req.share or os.path.dirname(path), max_depth=self.req.max_depth,
                             declared=declared, volume_format=self.req.volume_format)

    def _choose_mode(self) -> Tuple[str, Optional[str], Any, List[Optional[str]], List[ChainReport]]:
        """The mode, the domain (name and object), each member's disk target and chain (read once, judged against
        the chain the domain declares)."""
        req = self.req
        members = req.members
        count = len(members)
        lv = self.libvirt.get(req.mode == ONLINE or req.domain is not None)
        if req.domain is not None:
            dom = lv.domain(req.domain)
            if lv.is_running(dom):
                if req.mode == OFFLINE:
                    raise VolsnapError('mode=offline but domain %s runs; use mode=online or auto' % req.domain)
                xml = str(dom.XMLDesc(0))
                found = [find_disk(xml, m.disk or self.volumes[i].volume_id) for i, m in enumerate(members)]
                reports = [self._inspect(i, f.declared()) for i, f in enumerate(found)]
                return ONLINE, req.domain, dom, [f.target for f in found], reports
            if req.mode == ONLINE:
                raise VolsnapError('mode=online but domain %s is not running' % req.domain)
            return OFFLINE, None, None, [None] * count, [self._inspect(i) for i in range(count)]
        reports = [self._inspect(i) for i in range(count)]
        users: List[List[Tuple[str, Any]]] = [[] for _index in range(count)]
        if lv is not None:
            paths = [layer.image.path for r in reports for layer in r.layers] + [v.path for v in self.volumes]
            try:
                found_all = list(lv.running_disks_using(paths))
            except VolsnapError:
                if req.mode == ONLINE:
                    raise
                found_all = []  # no libvirtd on this host: nothing runs the volumes here
            for i, report in enumerate(reports):
                mine = set(os.path.realpath(layer.image.path) for layer in report.layers) | {
                    os.path.realpath(self.volumes[i].path)}
                users[i] = [(name, d) for name, d in found_all if any(os.path.realpath(p) in mine for p, _f in d.chain)]
        used = [i for i in range(count) if users[i]]
        if req.mode == OFFLINE:
            if used:
                name, disk = users[used[0]][0]
                raise VolsnapError('mode=offline but running domain %s uses volume %s (disk %s); use mode=online or '
                                   'auto, or stop the domain' % (name, self.volumes[used[0]].path, disk.target))
            return OFFLINE, None, None, [None] * count, reports
        if not used:
            if req.mode == ONLINE:
                raise VolsnapError('mode=online but no running domain has the volumes of the group attached')
            return OFFLINE, None, None, [None] * count, reports
        unused = [self.volumes[i].path for i in range(count) if not users[i]]
        domains = sorted(set(name for i in used for name, _d in users[i]))
        if unused:
            raise VolsnapError('%s are attached to running domain %s but %s to none: a group snapshot is the '
                               'volumes of one instance, all attached or all detached; nothing was changed'
                               % (', '.join(self.volumes[i].path for i in used), ', '.join(domains),
                                  ', '.join(unused)), failed_volumes=unused)
        if len(domains) > 1:
            raise VolsnapError('the volumes of the group are used by several running domains (%s): a group snapshot '
                               'is the volumes of one instance; name it with domain' % ', '.join(domains))
        disks: List[Optional[str]] = []
        judged = []
        for i, member in enumerate(members):
            if len(users[i]) > 1:
                raise VolsnapError('volume %s is attached as several disks (%s) of domain %s'
                                   % (self.volumes[i].path, ', '.join(d.target for _n, d in users[i]), domains[0]))
            disk = users[i][0][1]
            if member.disk is not None and member.disk not in (disk.target, disk.serial):
                raise VolsnapError('volume %s is disk %s (serial %s) of domain %s, not disk %s'
                                   % (self.volumes[i].path, disk.target, disk.serial or '-', domains[0], member.disk))
            disks.append(disk.target)
            judged.append(judge_declared(reports[i], disk.declared()))
        return ONLINE, domains[0], lv.domain(domains[0]), disks, judged

    def _execute(self, group: GroupPlan, dom: Any) -> Optional[bool]:
        """Prepare every member (journal naming the group, then its overlay), commit (the one atomic libvirt call;
        offline, the first .info file), then complete every member. A failure before the commit rolls back all."""
        lv = self.libvirt.get(group.mode == ONLINE)
        executor = Executor(self.qemu, lv, self.req.timeout)
        record = group_record(group.mode, group.domain, group.quiesce, group.members, group.disks)
        journals = [self.volumes[i].journal() for i in range(len(self.volumes))]
        begun: List[int] = []
        failed: Optional[int] = None

        def prepare(index: int) -> None:
            journals[index].begin(group.plans[index], group=record)
            begun.append(index)  # atomic in CPython; the order does not matter (rolled back in lock order)
            executor.steps.run([group.plans[index].steps[0]])  # create_overlay

        try:
            errors = self._in_parallel(group.order, prepare, stop_at_first=True)
            failed = next((i for i in group.order if i in errors), None)
            if failed is not None:
                raise errors[failed]
            for i in group.order:
                # Not written: a rerun knows every overlay exists once the group is committed (the commit comes
                # after all of them), and rolls back from any step before that.
                journals[i].advance(1, COMPUTE, write=False)
            quiesced: Optional[bool] = None
            if group.mode == ONLINE:
                quiesced = lv.external_snapshot_disks(dom, group.overlays(), group.quiesce, atomic=True)
        except (VolsnapError, OSError) as exc:
            cause = exc.msg if isinstance(exc, VolsnapError) else os_error_text(exc)
            raise self._rolled_back(executor, journals, begun, failed, cause, exc, group.domain)
        self._complete(executor, journals, group.order, resumed=False)
        return quiesced

    def _in_parallel(self, indices: List[int], func: Callable[[int], Any],
                     stop_at_first: bool) -> Dict[int, BaseException]:
        """``func(i)`` for every member index, ``parallel`` at a time (each member's files are its own; the locks are
        held): the errors (VolsnapError or OSError) by member. One after another when ``parallel`` is 1, stopping at
        the first error when ``stop_at_first``."""
        workers = max(1, min(self.req.parallel, len(indices)))
        errors: Dict[int, BaseException] = {}
        if workers == 1:
            for i in indices:
                try:
                    func(i)
                except (VolsnapError, OSError) as exc:
                    errors[i] = exc
                    if stop_at_first:
                        break
            return errors
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {i: pool.submit(func, i) for i in indices}
        for i in indices:
            error = futures[i].exception()
            if isinstance(error, (VolsnapError, OSError)):
                errors[i] = error
            elif error is not None:
                raise error
        return errors

    def _rolled_back(self, executor: Executor, journals: List[Journal], begun: List[int], failed: Optional[int],
                     cause: str, exc: BaseException, domain: Optional[str]) -> VolsnapError:
        """The error of a group that failed before its commit point, after rolling back every member it prepared."""
        left: List[str] = []
        for i in sorted(begun, key=lambda index: self.volumes[index].path, reverse=True):
            try:
                actions, files, refusal = executor.undo_plan(journals[i])
                if refusal is None:
                    executor.undo(journals[i], files)
                else:
                    left.append('%s (%s)' % (self.volumes[i].path, refusal.rstrip('.')))
            except (VolsnapError, OSError) as undo_exc:
                left.append('%s (%s)' % (self.volumes[i].path, undo_exc.msg if isinstance(undo_exc, VolsnapError)
                                         else os_error_text(undo_exc)))
        where = ('while preparing volume %s' % self.volumes[failed].path if failed is not None
                 else 'at the atomic libvirt snapshot of domain %s' % domain)
        failed_paths = [self.volumes[failed].path] if failed is not None else [v.path for v in self.volumes]
        details: Dict[str, Any] = {k: v for k, v in (exc.details.items() if isinstance(exc, VolsnapError) else [])
                                   if k in ('quiesced',)}
        items = [{'volume_path': v.path, 'snapshot_id': m.snapshot_id, 'changed': False,
                  'failed': v.path in failed_paths, 'msg': cause if v.path in failed_paths else None}
                 for v, m in zip(self.volumes, self.req.members)]
        if left:
            return VolsnapError('the group snapshot failed %s: %s. No disk was switched, but %d member(s) could not be '
                                'rolled back: %s. Fix the cause and run the same request again: it rolls them back '
                                'and takes the group' % (where, cause.rstrip('.'), len(left), '; '.join(left)),
                                failed_volumes=failed_paths, volumes=items, rolled_back=False, **details)
        return VolsnapError('the group snapshot failed %s: %s. Every member was rolled back (the prepared overlays and '
                            'journals removed): no disk was switched and no .info file changed, nothing is pending. '
                            'Fix the cause and run again' % (where, cause.rstrip('.')),
                            failed_volumes=failed_paths, volumes=items, rolled_back=True, **details)

    # ---- results

    def _result(self, plans: Sequence[Optional[Plan]], changed: bool, resumed: bool, mode: str,
                domain: Optional[str], quiesce: str, quiesced: Optional[bool], recovered: Optional[str],
                steps: List[str], reports: Optional[List[ChainReport]] = None,
                group_plan: Optional[GroupPlan] = None) -> Dict[str, Any]:
        items: List[Dict[str, Any]] = []
        diffs: List[Dict[str, str]] = []
        for i, member in enumerate(self.req.members):
            plan = plans[i]
            item_changed = changed and plan is not None and (bool(plan.steps) or resumed)
            if reports is not None and not item_changed:
                report = reports[i]
            else:
                report = self._inspect(i)
                if item_changed and not self.check_mode and not report.safe:
                    raise VolsnapError('the group snapshot finished but the chain of %s is not consistent: %s'
                                       % (self.volumes[i].path, report.summary()), chain=report.as_dict())
            info_after = plan.info_after if plan is not None and item_changed else (
                report.info.as_dict() if report.info else None)
            item: Dict[str, Any] = {
                'volume_path': self.volumes[i].path, 'changed': item_changed, 'snapshot_id': member.snapshot_id,
                'state': 'present', 'operation': 'create', 'mode': mode, 'resumed': resumed and plan is not None,
                'active': plan.active_after if plan is not None and item_changed else report.active,
                'file_format': plan.file_format if plan is not None and item_changed else {},
                'compute_status': plan.compute_status if plan is not None and item_changed else None,
                'merge': plan.merge if plan is not None and item_changed else {},
                'plan': plan.describe() if plan is not None and item_changed else [],
                'info': info_after, 'chain': report.as_dict(), 'quiesced': quiesced if mode == ONLINE else None,
                'failed': False,
            }
            if mode == ONLINE and group_plan is not None:
                item['domain'] = domain
                item['disk'] = group_plan.disks[i]
            if item_changed and plan is not None:
                diffs.append({'before': _info_text(plan.info_before), 'after': _info_text(plan.info_after),
                              'before_header': report.info_file or '', 'after_header': report.info_file or ''})
            items.append(item)
        result: Dict[str, Any] = {
            'changed': changed, 'volumes': items, 'failed_volumes': [], 'quiesced': quiesced if mode == ONLINE else None,
            'group': {'operation': 'create', 'mode': mode, 'domain': domain, 'quiesce': quiesce, 'quiesced': quiesced,
                      'atomic': mode == ONLINE, 'recovered': recovered, 'resumed': resumed,
                      'disks': list(group_plan.disks) if group_plan is not None else [], 'plan': steps},
        }
        if diffs:
            result['diff'] = diffs
        return result

    # ---- delete

    def _delete(self) -> Dict[str, Any]:
        """Each member's snapshot deleted as a single volume (its own lock, journal and merge), in lock order; a
        failed one does not stop the others."""
        req = self.req
        started = time.monotonic()
        order = lock_order([m.volume_path for m in req.members])
        items: List[Optional[Dict[str, Any]]] = [None] * len(req.members)
        for i in order:
            member = req.members[i]
            request = Request(volume_path=member.volume_path, snapshot_id=member.snapshot_id, state='absent',
                              mode=req.mode, domain=req.domain, disk=member.disk, quiesce=req.quiesce,
                              share=req.share, max_depth=req.max_depth, lock_timeout=req.lock_timeout,
                              timeout=req.timeout, volume_format=req.volume_format)
            try:
                item = VolumeSnapshot(request, self.qemu, self.libvirt, self.check_mode).run()
                item.update(volume_path=member.volume_path, failed=False)
            except VolsnapError as exc:
                item = dict(exc.details, volume_path=member.volume_path, snapshot_id=member.snapshot_id,
                            changed=False, failed=True, msg=exc.msg)
            items[i] = item
        done = [item for item in items if item is not None]
        diffs = [item.pop('diff') for item in done if item.get('diff')]
        failed = [item['volume_path'] for item in done if item.get('failed')]
        result: Dict[str, Any] = {
            'changed': any(item.get('changed') for item in done), 'volumes': done, 'failed_volumes': failed,
            'quiesced': None,
            'group': {'operation': 'delete', 'mode': None, 'domain': req.domain, 'quiesce': req.quiesce,
                      'quiesced': None, 'atomic': False, 'recovered': None, 'resumed': False, 'disks': [],
                      'plan': [], 'seconds': round(time.monotonic() - started, 3)},
        }
        if failed:
            raise VolsnapError('deleting the snapshots of the group failed on %d of %d volumes (%s): %s. Each volume is '
                               'deleted on its own (libvirt has no atomic multi-disk commit), so the others are '
                               'committed and no data is lost; fix the cause and run the same request again: it '
                               'converges' % (len(failed), len(done), ', '.join(failed),
                                              '; '.join('%s: %s' % (item['volume_path'], item['msg'])
                                                        for item in done if item.get('failed'))),
                               committed=True, **result)  # each volume deleted on its own: the others are complete
        if diffs:
            result['diff'] = diffs
        return result
