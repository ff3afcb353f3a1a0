# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running snapshot plans: the journal and the steps, offline (qemu-img) and online (libvirt).

The journal (``.volsnap-<volume name>.journal`` beside the volume, written atomically) records the
plan and how many steps are done. It is written before the first step and removed after the last,
always under the per-volume lock. A run that finds a journal resumes it: every step checks whether
its effect is already there before acting, so a step interrupted half-way is simply run again.
"""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Any, Dict, Optional

from ansible_collections.volsnap.openstack.plugins.module_utils._chain import qemu_format
from ansible_collections.volsnap.openstack.plugins.module_utils._errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._remotefs import (
    SnapshotInfo,
    copy_owner_mode,
    fsync_dir,
    fsync_file,
    remove_if_exists,
    write_atomic,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._snapshot_plan import Plan

JOURNAL_VERSION = 1


def journal_path_for(directory: str, volume_name: str) -> str:
    return os.path.join(directory, '.volsnap-%s.journal' % volume_name)


class Journal(object):
    def __init__(self, path: str) -> None:
        self.path = path
        self.plan: Optional[Plan] = None
        self.done = 0
        self.stage = 'begin'

    def load(self) -> bool:
        try:
            with open(self.path, 'r') as handle:
                data = json.load(handle)
        except IOError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        except ValueError as exc:
            raise VolsnapError('the journal %s of an interrupted operation is unreadable (%s); inspect the volume '
                               'with qcow2_chain_info before removing it by hand' % (self.path, exc))
        self.plan = Plan.from_dict(data['plan'])
        self.done = int(data['done'])
        self.stage = data.get('stage', 'begin')
        return True

    def _write(self) -> None:
        if self.plan is None:
            raise VolsnapError('internal error: journal written without a plan')
        write_atomic(self.path, json.dumps({'version': JOURNAL_VERSION, 'plan': self.plan.as_dict(), 'done': self.done,
                                            'stage': self.stage, 'updated': time.time()}, sort_keys=True))

    def begin(self, plan: Plan) -> None:
        self.plan, self.done, self.stage = plan, 0, 'begin'
        self._write()

    def advance(self, done: int, stage: str) -> None:
        self.done, self.stage = done, stage
        self._write()

    def finish(self) -> None:
        remove_if_exists(self.path)
        fsync_dir(os.path.dirname(self.path))


class Executor(object):
    """Runs the steps of a plan. ``libvirt`` is a :class:`_libvirt.Libvirt` for online plans."""

    def __init__(self, qemu: QemuImg, libvirt: Any = None, timeout: float = 600.0) -> None:
        self.qemu = qemu
        self.libvirt = libvirt
        self.timeout = timeout

    def run(self, journal: Journal) -> None:
        plan = journal.plan
        if plan is None:
            raise VolsnapError('internal error: no plan to run')
        for index in range(journal.done, len(plan.steps)):
            step = plan.steps[index]
            getattr(self, '_' + step.action)(step.args)
            journal.advance(index + 1, step.stage)
        journal.finish()

    # ---- offline steps

    def _create_overlay(self, args: Dict[str, Any]) -> None:
        path = args['file']
        # An existing overlay is only reachable when this very step was interrupted: nothing has used it yet.
        remove_if_exists(path)
        tmp = os.path.join(os.path.dirname(path), '.%s.volsnap-tmp' % os.path.basename(path))
        remove_if_exists(tmp)
        # -u: never open the backing file (it may be in use by a running domain); the size is explicit.
        self.qemu.run(['create', '-q', '-f', 'qcow2', '-u', '-b', args['backing'], '-F', qemu_format(args['backing_format']),
                       tmp, str(args['size'])])
        if args.get('like'):
            copy_owner_mode(args['like'], tmp)
        fsync_file(tmp)
        os.rename(tmp, path)
        fsync_dir(os.path.dirname(path))

    def _commit(self, args: Dict[str, Any]) -> None:
        # Committing again after an interruption writes the same clusters again: harmless.
        self.qemu.run(['commit', '-q', '-f', 'qcow2', '-t', 'writeback', '-d', args['file']])

    def _rebase(self, args: Dict[str, Any]) -> None:
        self.qemu.run(['rebase', '-q', '-u', '-f', 'qcow2', '-b', args['backing'],
                       '-F', qemu_format(args['backing_format']), args['file']])

    def _write_info(self, args: Dict[str, Any]) -> None:
        info = dict(args['info'])
        active = info.pop('active')
        write_atomic(args['path'], SnapshotInfo(active, info).dumps(), like=args.get('like'))

    def _delete_file(self, args: Dict[str, Any]) -> None:
        remove_if_exists(args['file'])
        fsync_dir(os.path.dirname(args['file']))

    # ---- online steps (Nova's assisted snapshot calls)

    def _libvirt_snapshot(self, args: Dict[str, Any]) -> None:
        lv = self._lv()
        dom = lv.domain(args['domain'])
        if lv.disk_source(dom, args['disk']) == args['file']:
            return  # done before the interruption
        lv.external_snapshot(dom, args['disk'], args['file'], args.get('quiesce', True))

    def _block_commit(self, args: Dict[str, Any]) -> None:
        lv = self._lv()
        dom = lv.domain(args['domain'])
        if not lv.job_running(dom, args['disk']):
            if args['top'] not in lv.disk_chain_paths(dom, args['disk']):
                return  # merged before the interruption
            lv.block_commit(dom, args['disk'], args['base'], args['top'])
        lv.wait_job(dom, args['disk'], self.timeout)

    def _block_rebase(self, args: Dict[str, Any]) -> None:
        lv = self._lv()
        dom = lv.domain(args['domain'])
        if not lv.job_running(dom, args['disk']):
            chain = lv.disk_chain_paths(dom, args['disk'])
            below = chain[1] if len(chain) > 1 else None
            if below == args['base']:
                return  # pulled before the interruption
            lv.block_rebase(dom, args['disk'], args['base'])
        lv.wait_job(dom, args['disk'], self.timeout)

    def _lv(self) -> Any:
        if self.libvirt is None:
            raise VolsnapError('internal error: an online step without a libvirt connection')
        return self.libvirt
