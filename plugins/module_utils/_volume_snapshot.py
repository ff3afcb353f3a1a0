# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The volume_snapshot operation: lock, resume, choose the mode, plan, run, verify."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._chain import ChainReport, inspect_chain
from ansible_collections.volsnap.openstack.plugins.module_utils._errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._libvirt import find_disk
from ansible_collections.volsnap.openstack.plugins.module_utils._lock import VolumeLock
from ansible_collections.volsnap.openstack.plugins.module_utils._qemu_img import QemuImg, opened_for_write_by_qemu
from ansible_collections.volsnap.openstack.plugins.module_utils._remotefs import SnapshotInfo, info_path_for, split_volume_filename
from ansible_collections.volsnap.openstack.plugins.module_utils._snapshot_ops import Executor, Journal, journal_path_for
from ansible_collections.volsnap.openstack.plugins.module_utils._snapshot_plan import (
    OFFLINE,
    ONLINE,
    Plan,
    check_journaled_plan,
    check_snapshot_id,
    plan_create,
    plan_delete,
)


RESUMED = 'resumed'


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
    quiesce: bool = True
    share: Optional[str] = None
    max_depth: int = 100
    lock_timeout: float = 60.0
    timeout: float = 600.0
    volume_format: Optional[str] = None  # Cinder's format of volume-<id>; None: raw unless an overlay declares it

    @property
    def operation(self) -> Optional[str]:
        if self.state == RESUMED:
            return None  # the journal says which
        return 'create' if self.state == 'present' else 'delete'


def _info_text(info: Optional[Dict[str, str]]) -> str:
    if info is None:
        return ''
    rest = dict(info)
    return SnapshotInfo(rest.pop('active'), rest).dumps() + '\n'


class VolumeSnapshot(object):
    """``libvirt_factory()`` returns a :class:`_libvirt.Libvirt`, or None when the bindings are missing."""

    def __init__(self, request: Request, qemu: QemuImg, libvirt_factory: Callable[[], Any], check_mode: bool) -> None:
        self.req = request
        self.qemu = qemu
        self.libvirt_factory = libvirt_factory
        self.check_mode = check_mode
        self._libvirt: Any = None

    def libvirt(self, needed: bool) -> Any:
        if self._libvirt is None:
            self._libvirt = self.libvirt_factory()
        if self._libvirt is None and needed:
            raise VolsnapError('online snapshots need the libvirt Python bindings on this host (python3-libvirt)')
        return self._libvirt

    def run(self) -> Dict[str, Any]:
        req = self.req
        if req.state != RESUMED:
            check_snapshot_id(req.snapshot_id)
        path = os.path.abspath(req.volume_path)
        parts = split_volume_filename(os.path.basename(path))
        if parts is None or parts[2] is not None:
            raise VolsnapError('%s is not a Cinder volume file: give the volume file itself, named volume-<volume id>'
                               % path)
        volume_name, volume_id = parts[0], parts[1]
        directory = os.path.dirname(path)
        # After an online delete flattened the chain the base file is gone: the .info file names the active file.
        if not os.path.exists(path) and not os.path.exists(info_path_for(path)):
            raise VolsnapError('the volume file %s does not exist (nor its .info file)' % path)
        lock = VolumeLock(directory, volume_id, req.lock_timeout)
        if not os.path.exists(lock.path):
            probed = self._probe(path, volume_name, volume_id, lock.path)
            if probed is not None:
                return probed
        with lock:
            result = self._decide(path, volume_name, volume_id)
        result['lock_waited'] = round(lock.waited, 3)
        return result

    def _decide(self, path: str, volume_name: str, volume_id: str) -> Dict[str, Any]:
        journal = Journal(journal_path_for(os.path.dirname(path), volume_name))
        if journal.load():
            check_journaled_plan(journal.plan, os.path.dirname(path), volume_name, volume_id)  # hostile input
            return self._resume(journal, path)
        if self.req.state == RESUMED:
            return self._nothing_pending(path)
        return self._fresh(journal, path, volume_id)

    def _probe(self, path: str, volume_name: str, volume_id: str, lock_path: str) -> Optional[Dict[str, Any]]:
        """Decide without the lock while no run has ever locked this volume (its lock file does not exist).

        So check mode, a request that changes nothing and a refused request leave nothing in the share. Returns the
        result, or None when there is something to change (or another run created the lock meanwhile): the caller
        then takes the lock, which creates its file, and decides again under it.
        """
        check_mode = self.check_mode
        self.check_mode = True
        try:
            result = self._decide(path, volume_name, volume_id)
        except VolsnapError:
            if os.path.exists(lock_path):
                return None  # the state may have been another run's half-done step: judge it again under the lock
            raise
        finally:
            self.check_mode = check_mode
        if (check_mode or not result['changed']) and not os.path.exists(lock_path):
            result['lock_waited'] = 0.0
            return result
        return None

    def _inspect(self, path: str, declared: Any = None) -> ChainReport:
        # Without a share, the volume's own directory (a volume file that is a symlink must not move it elsewhere).
        return inspect_chain(path, share=self.req.share or os.path.dirname(path), max_depth=self.req.max_depth,
                             declared=declared, volume_format=self.req.volume_format)

    def _resume(self, journal: Journal, path: str) -> Dict[str, Any]:
        plan = journal.plan
        if plan is None or (self.req.state != RESUMED
                            and (plan.operation, plan.snapshot_id) != (self.req.operation, self.req.snapshot_id)):
            pending = '%s of snapshot %s' % (plan.operation, plan.snapshot_id) if plan else 'operation'
            raise VolsnapError('an interrupted %s (%s mode, %d of %d steps done) is pending on this volume; run '
                               'volume_snapshot with snapshot_id=%s state=%s (or state=resumed) to finish it first'
                               % (pending, plan.mode if plan else '?', journal.done, len(plan.steps) if plan else 0,
                                  plan.snapshot_id if plan else '?',
                                  'present' if plan and plan.operation == 'create' else 'absent'))
        remaining = plan.steps[journal.done:]
        if not self.check_mode:
            Executor(self.qemu, self.libvirt(plan.mode == ONLINE), self.req.timeout).run(journal)
        return self._result(plan, path, changed=True, resumed=True, steps=[s.describe() for s in remaining])

    def _nothing_pending(self, path: str) -> Dict[str, Any]:
        """state=resumed on a volume without an interrupted operation: nothing to do; the chain as it is."""
        report = self._inspect(path)
        return {'changed': False, 'snapshot_id': None, 'state': RESUMED, 'operation': None, 'mode': None,
                'resumed': False, 'active': report.active, 'file_format': {}, 'compute_status': None, 'merge': {},
                'plan': [], 'info': report.info.as_dict() if report.info else None, 'chain': report.as_dict()}

    def _fresh(self, journal: Journal, path: str, volume_id: str) -> Dict[str, Any]:
        req = self.req
        mode, domain, disk, declared = self._choose_mode(path, volume_id)
        report = self._inspect(path, declared)
        if req.operation == 'create':
            plan = plan_create(report, volume_id, req.snapshot_id, mode, domain, disk, req.quiesce)
        else:
            plan = plan_delete(report, volume_id, req.snapshot_id, mode, domain, disk)
        if not plan.steps:
            return self._result(plan, path, changed=False, report=report)
        if mode == OFFLINE:
            self._refuse_if_in_use(report)
        if not self.check_mode:
            journal.begin(plan)
            Executor(self.qemu, self.libvirt(mode == ONLINE), req.timeout).run(journal)
        return self._result(plan, path, changed=True, steps=plan.describe())

    def _choose_mode(self, path: str, volume_id: str) -> Tuple[str, Optional[str], Optional[str], Any]:
        req = self.req
        if req.mode == OFFLINE and req.domain is None:
            lv = self.libvirt(False)
            users = self._users(lv, path) if lv is not None else []
            if users:
                raise VolsnapError('mode=offline but running domain %s uses the volume (disk %s); use mode=online '
                                   'or auto, or stop the domain' % users[0])
            return OFFLINE, None, None, None
        lv = self.libvirt(req.mode == ONLINE or req.domain is not None)
        if lv is None:
            return OFFLINE, None, None, None
        if req.domain is not None:
            xml = lv.xml(req.domain)
            if lv.domain(req.domain).isActive() != 1:
                if req.mode == ONLINE:
                    raise VolsnapError('mode=online but domain %s is not running' % req.domain)
                return OFFLINE, None, None, None
            disk = find_disk(xml, req.disk or volume_id)
            return ONLINE, req.domain, disk.target, disk.declared()
        users = self._users(lv, path)
        if not users:
            if req.mode == ONLINE:
                raise VolsnapError('mode=online but no running domain on %s has volume %s attached' % (lv.uri, path))
            return OFFLINE, None, None, None
        if len(users) > 1:
            raise VolsnapError('several running domains use the volume: %s; name one with domain' % users)
        domain, target = users[0]
        return ONLINE, domain, target, find_disk(lv.xml(domain), target).declared()

    def _users(self, lv: Any, path: str):
        report = self._inspect(path)
        try:
            return lv.running_domains_using([layer.image.path for layer in report.layers] or [path])
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
            report = self._inspect(path)
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
        }
        online_step = next((step for step in plan.steps if step.args.get('domain')), None)
        if online_step is not None:
            result['domain'] = online_step.args['domain']
            result['disk'] = online_step.args['disk']
        if changed:
            result['diff'] = {'before': _info_text(plan.info_before), 'after': _info_text(plan.info_after),
                              'before_header': report.info_file, 'after_header': report.info_file}
        return result
