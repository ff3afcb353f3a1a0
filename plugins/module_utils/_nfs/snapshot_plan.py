# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure planning of snapshot create and delete on a Cinder RemoteFS volume.

A plan is the list of steps that take the volume from its current chain and ``.info`` to the
wanted state, exactly as Cinder's RemoteFS driver (offline, qemu-img) and Nova's libvirt driver
(online, assisted snapshots) lay the files out. Nothing here touches a file: the plan is shown in
check mode, stored in the journal (:mod:`._nfs.volume`), and run by :mod:`._nfs.snapshot_exec`. Its steps are
:class:`._base.steps.Step` values built through :data:`SNAPSHOT_ACTIONS`, the one table of the snapshot actions:
each carries its arguments and its description, fixed here.

Every step is safe to run again after an interruption, and the order keeps the chain readable at
every point: the higher file is rebased onto the merge target *before* the merged file is
deleted (Cinder deletes first, which leaves a dangling backing link if it dies in between), and
files are deleted only after the ``.info`` file no longer names them.

Stages follow the assisted-snapshot spec: ``begin`` (nothing changed yet), ``compute`` (the data
steps: overlay, libvirt, qemu-img), ``complete`` (``.info`` updated, stale files removed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import is_file_id
from ansible_collections.volsnap.openstack.plugins.module_utils._base.steps import Actions, Step, describe_steps
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import ChainReport
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import (
    DirListing,
    SnapshotInfo,
    is_snapshot_like,
    snapshot_filename,
)

OFFLINE = 'offline'
ONLINE = 'online'
COMPUTE = 'compute'
COMPLETE = 'complete'


def _describe_write_info(a: Mapping[str, Any]) -> str:
    return 'write %s: %s' % (a['path'], SnapshotInfo.from_dict(a['info']).dumps().replace('\n', ''))


# The actions of a snapshot plan, defined once: name -> how a step of it reads (check mode, journal, errors).
# Their handlers are the one table of :class:`._nfs.snapshot_exec.Executor`.
SNAPSHOT_ACTIONS = Actions('volume_snapshot', {
    'create_overlay': lambda a: 'create qcow2 overlay %s backed by %s (%s), %d bytes' % (
        a['file'], a['backing'], a['backing_format'], a['size']),
    'libvirt_snapshot': lambda a: 'libvirt disk-only external snapshot of %s disk %s onto %s' % (
        a['domain'], a['disk'], a['file']),
    'write_info': _describe_write_info,
    'commit': lambda a: 'qemu-img commit %s into its backing file %s' % (a['file'], a['base']),
    'rebase': lambda a: 'qemu-img rebase -u %s onto %s (%s)' % (a['file'], a['backing'], a['backing_format']),
    'block_rebase': lambda a: 'libvirt blockRebase (pull) of %s disk %s onto %s' % (
        a['domain'], a['disk'], a['base'] or 'nothing (flatten)'),
    'block_commit': lambda a: 'libvirt blockCommit of %s disk %s: %s into %s' % (
        a['domain'], a['disk'], a['top'], a['base']),
    'delete_file': lambda a: 'delete %s' % a['file'],
})
_step = SNAPSHOT_ACTIONS.step


def names_made(steps: Sequence[Step]) -> Tuple[List[str], List[str]]:
    """(added, removed): the base names of the volume's directory that running ``steps`` creates and deletes (the
    overlay, a new ``.info`` file; a deleted snapshot file). Its temporaries come and go within a step."""
    added: List[str] = []
    removed: List[str] = []
    for step in steps:
        if step.action == 'create_overlay':
            added.append(os.path.basename(step.args['file']))
        elif step.action == 'write_info':
            added.append(os.path.basename(step.args['path']))
        elif step.action == 'delete_file':
            removed.append(os.path.basename(step.args['file']))
    return added, removed


@dataclass
class Plan:
    operation: str
    volume_id: str
    snapshot_id: str
    mode: str
    steps: List[Step] = field(default_factory=list)
    info_before: Optional[Dict[str, str]] = None
    info_after: Optional[Dict[str, str]] = None
    active_after: Optional[str] = None
    file_format: Dict[str, str] = field(default_factory=dict)
    merge: Dict[str, Optional[str]] = field(default_factory=dict)

    @property
    def compute_status(self) -> str:
        return 'creating_compute_complete' if self.operation == 'create' else 'deleting_compute_complete'

    def describe(self) -> List[str]:
        return describe_steps(self.steps)

    def as_dict(self) -> Dict[str, Any]:
        return {
            'operation': self.operation, 'volume_id': self.volume_id, 'snapshot_id': self.snapshot_id,
            'mode': self.mode, 'steps': [s.as_dict() for s in self.steps], 'info_before': self.info_before,
            'info_after': self.info_after, 'active_after': self.active_after, 'file_format': self.file_format,
            'merge': self.merge,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'Plan':
        return cls(operation=data['operation'], volume_id=data['volume_id'], snapshot_id=data['snapshot_id'],
                   mode=data['mode'], steps=[_stored_step(s) for s in data['steps']],
                   info_before=data.get('info_before'), info_after=data.get('info_after'),
                   active_after=data.get('active_after'), file_format=dict(data.get('file_format') or {}),
                   merge=dict(data.get('merge') or {}))


def _stored_step(data: Any) -> Step:
    """A stored step rebuilt through :data:`SNAPSHOT_ACTIONS`; one it refuses is named in the error (``step``)."""
    try:
        return SNAPSHOT_ACTIONS.from_dict(data)
    except VolsnapError as exc:
        raise VolsnapError(exc.msg, step=data)


def check_snapshot_id(snapshot_id: Optional[str]) -> str:
    """``snapshot_id`` when it is a Cinder snapshot id (file names are built from it), else a :class:`VolsnapError`."""
    if snapshot_id is None or not is_file_id(snapshot_id):
        raise VolsnapError('snapshot_id %r is not a Cinder snapshot id (a UUID such as '
                           '9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a); file names are built from it, so nothing else is '
                           'accepted' % snapshot_id)
    return snapshot_id


def _require_safe(report: ChainReport) -> None:
    if not report.safe:
        raise VolsnapError('the backing chain of %s is unsafe, nothing was changed: %s'
                           % (report.path, report.summary()), problems=[p.as_dict() for p in report.problems])
    unspecified = [layer.image.filename for layer in report.layers
                   if layer.image.backing_file and not layer.image.backing_format]
    if unspecified:
        raise VolsnapError('%s do(es) not declare the format of their backing file, so qemu-img would probe it; '
                           'set it first with qemu-img rebase -u -b <same backing file> -F <format> <file>, after '
                           'checking the format with qcow2_chain_info' % ', '.join(unspecified))


def _require_info(report: ChainReport) -> None:
    """Without its .info file a volume that has snapshot files cannot be told where its data goes on."""
    if report.info is not None or report.volume_name is None or any(p.code == 'info_invalid' for p in report.problems):
        return  # an unreadable .info file makes the chain unsafe: _require_safe refuses it
    volume_name = report.volume_name
    listing = report.listing  # the names the chain's inspection read (its phase's one listing)
    if listing is None:
        try:
            listing = DirListing.read(os.path.dirname(report.path))
        except OSError:
            listing = DirListing(())
    snapshot_files = [entry for entry in listing.of_volume(volume_name) if is_snapshot_like(entry, volume_name)]
    if snapshot_files:
        raise VolsnapError('%s does not exist but the volume has snapshot files (%s): which file is active is unknown, '
                           'so nothing was changed. Restore the .info file (from a backup, or rebuilt from '
                           'qcow2_chain_info run on each snapshot file) before managing snapshots of this volume'
                           % (report.info_file, ', '.join(snapshot_files)))


def _info_dict(report: ChainReport) -> Optional[Dict[str, str]]:
    return report.info.as_dict() if report.info is not None else None


def _path(report: ChainReport, filename: str) -> str:
    return os.path.join(os.path.dirname(report.path), filename)


def plan_create(report: ChainReport, volume_id: str, snapshot_id: str, mode: str,
                domain: Optional[str] = None, disk: Optional[str] = None, quiesce: str = 'auto') -> Plan:
    """Steps to create ``snapshot_id``; an empty plan when the .info already has it."""
    check_snapshot_id(snapshot_id)
    _require_info(report)
    info_before = _info_dict(report)
    plan = Plan('create', volume_id, snapshot_id, mode, info_before=info_before, info_after=info_before)
    # An unsafe chain is refused even when there is nothing to do: "no change" would vouch for it.
    _require_safe(report)
    if report.info is not None and snapshot_id in report.info.snapshots:
        plan.active_after = report.info.active
        return plan
    volume_name = report.volume_name or ''
    active = report.layers[0].image
    new = snapshot_filename(volume_name, snapshot_id)
    if os.path.lexists(_path(report, new)):
        raise VolsnapError('%s already exists but the .info file does not name it: it is left from an operation '
                           'this module did not journal; inspect it with qcow2_chain_info and remove it by hand '
                           'if it is stale' % _path(report, new))
    after = dict(info_before or {})
    after.update({'active': new, snapshot_id: new})
    plan.info_after = after
    plan.active_after = new
    plan.file_format = {new: 'qcow2'}
    plan.merge = {'new_file': new, 'backing_file': active.filename}
    # The trusted format (volume_format, the .info's chain, the overlays' declarations), never the content's.
    plan.steps.append(_step('create_overlay', COMPUTE, file=_path(report, new), backing=active.filename,
                            backing_format=report.layers[0].trusted_format, size=active.virtual_size, like=active.path))
    if mode == ONLINE:
        plan.steps.append(_step('libvirt_snapshot', COMPUTE, domain=domain, disk=disk, file=_path(report, new),
                                quiesce=quiesce))
    plan.steps.append(_step('write_info', COMPLETE, path=report.info_file, info=after, like=_path(report, volume_name)))
    return plan


def plan_delete(report: ChainReport, volume_id: str, snapshot_id: str, mode: str,
                domain: Optional[str] = None, disk: Optional[str] = None) -> Plan:
    """Steps to delete ``snapshot_id``, merging its data as Cinder (offline) or Nova (online) does."""
    check_snapshot_id(snapshot_id)
    _require_info(report)
    info_before = _info_dict(report)
    plan = Plan('delete', volume_id, snapshot_id, mode, info_before=info_before, info_after=info_before)
    info = report.info
    _require_safe(report)
    if info is None or snapshot_id not in info.snapshots:
        plan.active_after = info.active if info else report.active
        return plan
    names = [layer.image.filename for layer in report.layers]
    snap_file = info.snapshots[snapshot_id]
    if snap_file not in names:
        raise VolsnapError('snapshot %s file %s is not in the chain of %s' % (snapshot_id, snap_file, report.active))
    index = names.index(snap_file)
    if index + 1 >= len(names):
        raise VolsnapError('snapshot %s file %s has no backing file, so it holds no snapshot data to merge; the '
                           '.info file is inconsistent with the chain' % (snapshot_id, snap_file))
    base = report.layers[index + 1].image
    base_format = report.layers[index + 1].trusted_format  # never the content's format alone
    after = dict(info.as_dict())
    del after[snapshot_id]
    is_active = index == 0
    if mode == OFFLINE:
        plan.steps.append(_step('commit', COMPUTE, file=_path(report, snap_file), base=base.filename))
        if is_active:
            after['active'] = base.filename
        else:
            higher = report.layers[index - 1].image
            plan.steps.append(_step('rebase', COMPUTE, file=higher.path, backing=base.filename,
                                    backing_format=base_format))
        to_delete = snap_file
        plan.file_format = {base.filename: base_format}
        plan.merge = {'merge_target_file': base.filename, 'file_to_merge': snap_file, 'file_to_delete': snap_file}
    elif is_active:
        # Nova: the snapshot file is the active image, so pull its backing file's data into it.
        new_base = report.layers[index + 2].image if index + 2 < len(names) else None
        plan.steps.append(_step('block_rebase', COMPUTE, domain=domain, disk=disk, top=report.layers[0].image.path,
                                base=new_base.path if new_base else None))
        base_id = info.snapshot_for_file(base.filename)
        if base_id is not None:
            after[base_id] = snap_file
        to_delete = base.filename
        fmt_layer = report.layers[index + 2] if new_base else report.layers[0]
        plan.file_format = {fmt_layer.image.filename: fmt_layer.trusted_format}
        plan.merge = {'merge_target_file': None, 'file_to_merge': new_base.filename if new_base else None,
                      'file_to_delete': base.filename}
    else:
        plan.steps.append(_step('block_commit', COMPUTE, domain=domain, disk=disk, top=_path(report, snap_file),
                                base=base.path))
        to_delete = snap_file
        plan.file_format = {base.filename: base_format}
        plan.merge = {'merge_target_file': base.filename, 'file_to_merge': snap_file, 'file_to_delete': snap_file}
    plan.info_after = after
    plan.active_after = after['active']
    plan.steps.append(_step('write_info', COMPLETE, path=report.info_file, info=after, like=report.info_file))
    plan.steps.append(_step('delete_file', COMPLETE, file=_path(report, to_delete)))
    return plan
