# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running snapshot plans: the journal and the steps, offline (qemu-img) and online (libvirt).

The journal (``.volsnap-<volume name>.journal`` beside the volume, written atomically) records the
plan and how many steps are done (rewritten after each compute step; complete-stage steps are
idempotent and simply run again after a crash). It is written before the first step and removed after the last,
always under the per-volume lock. A run that finds a journal resumes it: every step checks whether
its effect is already there before acting, so a step interrupted half-way is simply run again.
"""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Any, Dict, List, Optional

from ansible_collections.volsnap.openstack.plugins.module_utils._chain import qemu_format
from ansible_collections.volsnap.openstack.plugins.module_utils._atomic import fsync_dir
from ansible_collections.volsnap.openstack.plugins.module_utils._errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._image_format import inspect_image
from ansible_collections.volsnap.openstack.plugins.module_utils._qemu_img import QemuImg, opened_for_write_by_qemu
from ansible_collections.volsnap.openstack.plugins.module_utils._remotefs import (
    SnapshotInfo,
    copy_owner_mode,
    fsync_file,
    remove_if_exists,
    write_atomic,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._snapshot_plan import COMPLETE, Plan

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

    def advance(self, done: int, stage: str, write: bool = True) -> None:
        self.done, self.stage = done, stage
        if write:
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
        self._plan: Optional[Plan] = None

    def run(self, journal: Journal) -> None:
        plan = journal.plan
        if plan is None:
            raise VolsnapError('internal error: no plan to run')
        self._plan = plan
        for index in range(journal.done, len(plan.steps)):
            step = plan.steps[index]
            getattr(self, '_' + step.action)(step.args)
            # Only a compute step needs recording: running it again after later steps could do harm (commit a
            # deleted file). Complete-stage steps (.info written from the plan, files removed) are idempotent, so
            # after a crash they are simply run again, and two journal writes with their fsyncs are saved.
            journal.advance(index + 1, step.stage, write=step.stage != COMPLETE)
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
    #
    # The domain may have stopped, or gone, since the plan was made: a host that crashes kills the module
    # and its instances alike. A step then does what it would have done offline, so the next run with the
    # same arguments still finishes the operation.

    def _running_domain(self, name: str) -> Any:
        """The domain when it runs, else None (stopped, or undefined since the plan was made)."""
        lv = self._lv()
        dom = lv.find_domain(name)
        if dom is None or not lv.is_running(dom):
            return None
        return dom

    def _libvirt_snapshot(self, args: Dict[str, Any]) -> None:
        lv = self._lv()
        dom = lv.find_domain(args['domain'])
        if dom is None:
            # No domain any more: nothing to switch; the .info file alone makes the overlay the active file.
            _refuse_if_open(_backing_of(args['file']))
            return
        if _same_file(lv.disk_source(dom, args['disk']), args['file']):
            return  # done before the interruption
        # On a stopped domain libvirt switches the persistent definition to the overlay: the next boot uses it.
        lv.external_snapshot(dom, args['disk'], args['file'], args.get('quiesce', True))

    def _block_commit(self, args: Dict[str, Any]) -> None:
        lv = self._lv()
        dom = self._running_domain(args['domain'])
        if dom is None:
            self._commit_offline(args['top'], args['base'])
            return
        if not lv.job_running(dom, args['disk']):
            if not _in_chain(args['top'], lv.disk_chain_paths(dom, args['disk'])):
                return  # merged before the interruption
            lv.block_commit(dom, args['disk'], args['base'], args['top'])
        lv.wait_job(dom, args['disk'], self.timeout)
        # A job that fails or is cancelled (virsh blockjob --abort) also just ends: check its effect
        # before the later steps delete the file.
        if _in_chain(args['top'], lv.disk_chain_paths(dom, args['disk'])):
            if not lv.is_running(dom):
                self._commit_offline(args['top'], args['base'])  # the domain stopped during the job
                return
            raise VolsnapError('the blockCommit of %s into %s on domain %s disk %s ended, but %s is still in the chain '
                               'of the disk: the job failed or was cancelled. Nothing was deleted and the .info file '
                               'is unchanged; run the module again with the same arguments to retry the merge'
                               % (args['top'], args['base'], args['domain'], args['disk'], args['top']))

    def _block_rebase(self, args: Dict[str, Any]) -> None:
        lv = self._lv()
        dom = self._running_domain(args['domain'])
        if dom is None:
            self._pull_offline(args['top'], args['base'])
            return
        if not lv.job_running(dom, args['disk']):
            if _same_file(_below_active(lv.disk_chain_paths(dom, args['disk'])), args['base']):
                return  # pulled before the interruption
            lv.block_rebase(dom, args['disk'], args['base'])
        lv.wait_job(dom, args['disk'], self.timeout)
        below = _below_active(lv.disk_chain_paths(dom, args['disk']))
        if not _same_file(below, args['base']):
            if not lv.is_running(dom):
                self._pull_offline(args['top'], args['base'])  # the domain stopped during the job
                return
            raise VolsnapError('the blockRebase (pull) of domain %s disk %s onto %s ended, but %s is still in the chain '
                               'of the disk below the active file: the job failed or was cancelled. Nothing was deleted '
                               'and the .info file is unchanged; run the module again with the same arguments to retry '
                               'the merge' % (args['domain'], args['disk'], args['base'] or 'nothing (flatten)', below))

    # ---- the same merges with qemu-img, for a domain that stopped after the plan was made

    def _commit_offline(self, top: str, base: str) -> None:
        """blockCommit's effect: ``top``'s data into ``base``, the file above ``top`` rebased onto ``base``."""
        chain = _header_chain(self._active_path(top))
        if not _in_chain(top, chain):
            return  # merged before the interruption
        index = [os.path.realpath(p) for p in chain].index(os.path.realpath(top))
        if index == 0 or index + 1 >= len(chain) or not _same_file(chain[index + 1], base):
            raise VolsnapError('cannot finish the merge of %s into %s offline: the image headers give the chain %s'
                               % (top, base, ' -> '.join(os.path.basename(p) for p in chain)))
        _refuse_if_open(chain[0])
        self._commit({'file': top})
        self._rebase({'file': chain[index - 1], 'backing': os.path.basename(base),
                      'backing_format': inspect_image(base).format})

    def _pull_offline(self, top: str, base: Optional[str]) -> None:
        """blockRebase's effect: the data between ``top`` and ``base`` copied into ``top`` (qemu-img rebase, safe mode)."""
        if _same_file(_below_active(_header_chain(top)), base):
            return  # pulled before the interruption
        _refuse_if_open(top)
        if base is None:
            self.qemu.run(['rebase', '-q', '-f', 'qcow2', '-t', 'writeback', '-b', '', top])
        else:
            self.qemu.run(['rebase', '-q', '-f', 'qcow2', '-t', 'writeback', '-b', os.path.basename(base),
                           '-F', qemu_format(inspect_image(base).format), top])

    def _active_path(self, member: str) -> str:
        """The active file of the plan's volume (online block jobs never change which file is active)."""
        plan = self._plan
        if plan is None or not plan.info_before or not plan.info_before.get('active'):
            raise VolsnapError('internal error: an online delete without the .info file it was planned from')
        return os.path.join(os.path.dirname(member), plan.info_before['active'])

    def _lv(self) -> Any:
        if self.libvirt is None:
            raise VolsnapError('internal error: an online step without a libvirt connection')
        return self.libvirt


def _same_file(a: Optional[str], b: Optional[str]) -> bool:
    if a is None or b is None:
        return a is b
    return os.path.realpath(a) == os.path.realpath(b)


def _in_chain(path: str, chain: List[str]) -> bool:
    return any(_same_file(path, member) for member in chain)


def _below_active(chain: List[str]) -> Optional[str]:
    return chain[1] if len(chain) > 1 else None


def _backing_of(path: str) -> str:
    backing = inspect_image(path).backing_file
    if not backing:
        raise VolsnapError('%s has no backing file' % path)
    return os.path.join(os.path.dirname(path), backing)


def _header_chain(active: str, limit: int = 1000) -> List[str]:
    """The files of the chain below ``active``, read from the image headers (already judged safe by the plan)."""
    chain = [active]
    while len(chain) < limit:
        image = inspect_image(chain[-1])
        if image.format != 'qcow2' or not image.backing_file:
            break
        chain.append(os.path.normpath(os.path.join(os.path.dirname(chain[-1]), image.backing_file)))
    return chain


def _refuse_if_open(path: str) -> None:
    if opened_for_write_by_qemu(path):
        raise VolsnapError('the domain of this online operation no longer runs, but %s is open for writing by another '
                           'QEMU process, so the operation cannot be finished offline; stop that process (or let the '
                           'domain that uses it finish the operation) and run the module again' % path)
