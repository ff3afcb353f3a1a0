# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running snapshot plans: the handler of each action of ``SNAPSHOT_ACTIONS``, offline (qemu-img) and online
(libvirt), run in order by :class:`._base.steps.Executor` with the journal recording progress around each step.

The journal (:class:`._nfs.volume.Journal`, ``.volsnap-<volume name>.journal`` beside the volume, written
atomically) records the plan and how many steps are done (rewritten after each compute step; complete-stage steps are
idempotent and simply run again after a crash). It is written before the first step and removed after the last,
always under the per-volume lock. A run that finds a journal resumes it: every step checks whether
its effect is already there before acting, so a step interrupted half-way is simply run again.

Failures never leave a volume blocked for nothing, and never end in a traceback:

* before a step that moves data from one layer into another (``commit``, ``block_commit``: a part of it
  changes what the snapshot below shows) the journal records ``started``; a run that fails (or is
  killed) from then on may have changed that layer;
* a compute step that fails is rolled back when the files prove that nothing of the operation is in
  place (:meth:`Executor.undo_plan`: for a create, the overlay holds no data and nothing uses it; for a
  delete, no step is applied and a data-moving first step left its files exactly as they were): the
  partial file and the journal are removed and the volume is as before;
* otherwise the journal stays, and the error says which step failed, what is pending and what to do;
  ``state=abandoned`` runs the same :meth:`Executor.undo_plan` on request, for a next step that can
  never succeed;
* an ``OSError`` on the module's own files (journal, ``.info``, temporary files, the overlay) becomes
  a :class:`VolsnapError` naming the file, the error, and what is pending.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import FileAttributes, fsync_dir, remove_if_exists
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.steps import Executor as StepExecutor, RunContext, Step
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.image_format import inspect_image
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import qemu_format
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import quiesce_mode
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qcow2_overlay import (
    native_overlay_supported,
    write_overlay,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import (
    QemuImg,
    commit_args,
    create_overlay_args,
    opened_for_write_by_qemu,
    rebase_args,
    rebase_unsafe_args,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import (
    SnapshotInfo,
    create_share_file,
    descriptor_path,
    load_info,
    os_error_file,
    os_error_text,
    publish_descriptor,
    remove_if_same,
    share_file_attributes,
    temporary_path,
    write_atomic,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_plan import COMPLETE, COMPUTE, SNAPSHOT_ACTIONS
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import Journal

# Steps that write one layer's data into another: a part of one changes what a snapshot shows, and
# running it again is the only way to finish it. The journal records when one has started.
DATA_STEPS = ('commit', 'block_commit')


FIX_AND_RERUN = ('Fix the cause (free space or inodes on the share, a read-only or failing file system, '
                 'permissions), then run the module again with the same arguments or with state=resumed: every '
                 'step checks its effect first, so nothing is done twice. If the next step can never succeed, '
                 'state=abandoned undoes the operation when that loses nothing (see the module documentation)')


class _StepFailed(VolsnapError):
    """The final error of a failed step (rolled back, or pending with what to do): raised through the run as is."""


class Executor(object):
    """Runs the steps of a journaled plan through one handler table (``SNAPSHOT_ACTIONS`` -> handler).

    ``libvirt`` is a :class:`._nfs.libvirt.Libvirt` for online plans. Around each step the journal records
    progress (:meth:`Journal.start` before a data step, :meth:`Journal.advance` after each step); what the run
    learns goes into its :class:`RunContext`, never into the plan.
    """

    def __init__(self, qemu: QemuImg, libvirt: Any = None, timeout: float = 600.0) -> None:
        self.qemu = qemu
        self.libvirt = libvirt
        self.timeout = timeout
        self.steps = StepExecutor(SNAPSHOT_ACTIONS, {
            'create_overlay': self._create_overlay,
            'libvirt_snapshot': self._libvirt_snapshot,
            'write_info': self._write_info,
            'commit': self._commit,
            'rebase': self._rebase,
            'block_rebase': self._block_rebase,
            'block_commit': self._block_commit,
            'delete_file': self._delete_file,
        })

    def run(self, journal: Journal) -> RunContext:
        plan = journal.plan
        if plan is None:
            raise VolsnapError('internal error: no plan to run')
        context = RunContext()
        # online block jobs never change which file is active: the offline fallback finds the chain from it
        context.set('active', (plan.info_before or {}).get('active'))

        def before(step: Step, context: RunContext) -> None:
            self._before(journal, step, context)

        def after(step: Step, _context: RunContext) -> None:
            index = journal.done
            # Only a compute step needs recording: running it again after later steps could do harm (commit a
            # deleted file). Complete-stage steps (.info written from the plan, files removed) are idempotent, so
            # after a crash they are simply run again, and two journal writes with their fsyncs are saved.
            try:
                journal.advance(index + 1, step.stage, write=step.stage != COMPLETE)
            except OSError as exc:
                raise self._failed(journal, index, step, 'it was done, but the journal %s could not record it (%s)'
                                   % (journal.path, os_error_text(exc, journal.path)), {'file': journal.path},
                                   proven=None)

        try:
            self.steps.run(plan.steps[journal.done:], context, before=before, after=after)
        except _StepFailed:
            raise
        except (VolsnapError, OSError) as exc:
            index = journal.done  # the step that failed: every step before it advanced the journal
            step = plan.steps[index]
            if isinstance(exc, OSError):
                # an error on a descriptor (a write, an fsync) has no file name: the file the step writes
                target = step.args.get('path') or step.args.get('file') or step.args.get('top')
                cause, details = os_error_text(exc, target), {'file': os_error_file(exc, target)}
            else:
                cause, details = exc.msg, dict(exc.details)
            # A data step proves it changed nothing when this very attempt started it and its files are untouched.
            fingerprint = context.get('fingerprint')
            unchanged = fingerprint is not None and self._fingerprint(step) == fingerprint
            raise self._failed(journal, index, step, cause, details, proven=index if unchanged else None)
        try:
            journal.finish()
        except OSError as exc:
            if not os.path.lexists(journal.path):
                raise VolsnapError('the %s of snapshot %s is complete and its journal removed, but the share\'s '
                                   'directory could not be synced (%s): check the share; nothing is pending'
                                   % (plan.operation, plan.snapshot_id, os_error_text(exc, journal.path)),
                                   file=exc.filename or journal.path, pending=None, rolled_back=False)
            raise VolsnapError('the %s of snapshot %s is complete, but its journal could not be removed (%s). The '
                               'volume stays locked for other operations until it is: fix the cause and run the '
                               'module again with state=resumed (the remaining steps only find their effects in '
                               'place)' % (plan.operation, plan.snapshot_id, os_error_text(exc, journal.path)),
                               file=exc.filename or journal.path, pending=journal.pending(), rolled_back=False)
        return context

    def _before(self, journal: Journal, step: Step, context: RunContext) -> None:
        """A data step is recorded as started; the files of one this attempt starts are fingerprinted."""
        index = journal.done
        fresh = False
        if step.action in DATA_STEPS and journal.started != index:
            # Only a step no earlier attempt started (None; an older journal without the key says -1) can prove
            # below that it wrote nothing.
            earlier = journal.started is not None
            try:
                journal.start(index)
            except OSError as exc:
                raise self._failed(journal, index, step, 'the journal %s could not record that it starts, so it did '
                                   'not run (%s)' % (journal.path, os_error_text(exc, journal.path)),
                                   {'file': journal.path}, proven=None if earlier else index)
            fresh = not earlier
        context.set('fingerprint', self._fingerprint(step) if fresh else None)

    @staticmethod
    def _fingerprint(step: Any) -> Tuple[Any, ...]:
        """Identity, size and times of the files a data step writes (equal before and after: nothing written)."""
        args = step.args
        if step.action == 'commit':
            paths = [args['file'], os.path.join(os.path.dirname(args['file']), args['base'])]
        else:
            paths = [args['top'], args['base']]
        prints: List[Any] = []
        for path in paths:
            try:
                st = os.lstat(path)
            except OSError:
                prints.append(None)
                continue
            prints.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(prints)

    def _failed(self, journal: Journal, index: int, step: Any, cause: str, details: Dict[str, Any],
                proven: Optional[int]) -> VolsnapError:
        """The error of a failed step: rolled back when nothing of the operation is in place, else pending."""
        plan = journal.plan
        total = len(plan.steps) if plan is not None else 0
        head = 'step %d of %d (%s) failed: %s' % (index + 1, total, step.description, cause.rstrip('.'))
        details = dict(details)
        not_undone = ''
        if step.stage == COMPUTE:
            try:
                actions, files, refusal = self.undo_plan(journal, proven=proven)
            except (VolsnapError, OSError) as exc:
                actions, files, refusal = [], [], (exc.msg if isinstance(exc, VolsnapError) else os_error_text(exc))
            if refusal is None:
                try:
                    self.undo(journal, files)
                except OSError as exc:
                    not_undone = ' It could not be rolled back either (%s).' % os_error_text(exc)
                else:
                    details.update(rolled_back=True, undone=actions, pending=None)
                    return _StepFailed('%s. Nothing of the operation was in place, so it was rolled back (%s): '
                                       'nothing is pending and the volume is as it was before the request'
                                       % (head, '; '.join(actions)), **details)
            else:
                not_undone = ' It was not rolled back: %s.' % refusal.rstrip('.')
        details.update(rolled_back=False, pending=journal.pending())
        text = '%s.%s The operation is pending: %s. %s.' % (head, not_undone, journal.pending_text(), FIX_AND_RERUN)
        return _StepFailed(text, **details)

    # ---- undoing a pending operation (after a failed step, or state=abandoned)

    def undo_plan(self, journal: Journal, proven: Optional[int] = None) -> Tuple[List[str], List[str], Optional[str]]:
        """How to undo the pending operation of ``journal`` without losing anything, judged on the files.

        Returns ``(actions, files, refusal)``: the actions as sentences, the files to remove (then the journal),
        or ``refusal``, why undoing would lose data or an applied step (and nothing may be done). ``proven`` is a
        data step this run started and found to have written nothing.

        * The ``.info`` file must be exactly as before the operation (else its effect is recorded: finish it).
        * Create: the overlay may be removed when nothing uses it (no QEMU has it open for writing, the online
          domain's disk does not have it in its chain) and it holds no data (empty, or qcow2 with an all-zero L1
          table, no internal snapshot and no data file); its temporary file too.
        * Delete: only while no step is applied (the first one pending), the image headers still give the planned
          chain, no block job runs on the online disk, and a data step (commit, blockCommit) has not started in an
          attempt that may have written part of it (``started`` in the journal). Then only the journal goes.
        """
        plan = journal.plan
        if plan is None:
            return [], [], 'the journal holds no plan'
        info_step = next((s for s in plan.steps if s.action == 'write_info'), None)
        if info_step is None:
            return [], [], 'the plan has no .info step'
        refusal = _info_unchanged(info_step.args['path'], plan.info_before, plan.info_after)
        if refusal is not None:
            return [], [], refusal
        if plan.operation == 'create':
            return self._undo_create(journal)
        return self._undo_delete(journal, proven)

    def undo(self, journal: Journal, files: List[str]) -> None:
        """Remove ``files`` (from :meth:`undo_plan`), then the journal: the operation is no longer pending."""
        for path in files:
            remove_if_exists(path)
        if files:
            fsync_dir(os.path.dirname(files[0]))
        journal.finish()

    def _undo_create(self, journal: Journal) -> Tuple[List[str], List[str], Optional[str]]:
        plan = journal.plan
        steps = plan.steps if plan is not None else []
        create = next((s for s in steps if s.action == 'create_overlay'), None)
        if create is None:
            return [], [], 'the plan has no overlay step'
        overlay = create.args['file']
        snap = next((s for s in steps if s.action == 'libvirt_snapshot'), None)
        if snap is not None:
            refusal = self._domain_uses(snap.args, overlay)
            if refusal is not None:
                return [], [], refusal
        actions: List[str] = []
        files: List[str] = []
        tmp = temporary_path(overlay)
        for path in (tmp, overlay):
            try:
                st = os.lstat(path)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue
                return [], [], 'cannot check %s' % os_error_text(exc, path)
            if path == overlay:
                problem = overlay_data_problem(path, st)
                if problem is not None:
                    return [], [], ('the overlay %s %s, so removing it could lose data; finish the operation with '
                                    'state=resumed' % (path, problem))
                if opened_for_write_by_qemu(path):
                    return [], [], ('the overlay %s is open for writing by a QEMU process; finish the operation with '
                                    'state=resumed' % path)
            elif stat.S_ISDIR(st.st_mode):
                return [], [], '%s is a directory, not the temporary file of the overlay step' % path
            files.append(path)
            actions.append('removed %s (%s)' % (path, 'the overlay, which held no data and nothing used'
                                                if path == overlay else 'the overlay step\'s temporary file'))
        actions.append('removed the journal %s' % journal.path)
        return actions, files, None

    def _domain_uses(self, args: Mapping[str, Any], overlay: str) -> Optional[str]:
        """Why the online domain may use ``overlay`` (libvirt took the snapshot), or None when it provably does not."""
        lv = self.libvirt
        if lv is None:
            return 'cannot ask libvirt whether domain %s uses %s (no libvirt connection)' % (args['domain'], overlay)
        try:
            dom = lv.find_domain(args['domain'])
            if dom is None:
                return None  # no domain any more: nothing can have switched to the overlay
            chain = lv.disk_chain_paths(dom, args['disk'])
        except VolsnapError as exc:
            return 'cannot ask libvirt whether domain %s uses %s: %s' % (args['domain'], overlay, exc.msg)
        if _in_chain(overlay, chain):
            return ('domain %s disk %s already uses %s (libvirt took the snapshot; the guest writes into it), so it '
                    'cannot be removed; finish the operation with state=resumed' % (args['domain'], args['disk'],
                                                                                    overlay))
        return None

    def _undo_delete(self, journal: Journal, proven: Optional[int]) -> Tuple[List[str], List[str], Optional[str]]:
        plan = journal.plan
        steps = plan.steps if plan is not None else []
        if journal.done > 0:
            applied = '; '.join('step %d, %s' % (i + 1, steps[i].description) for i in range(journal.done))
            return [], [], ('%s %s already applied (the snapshot\'s data is merged), so abandoning would lose it; '
                            'fix the cause and finish the operation with state=resumed'
                            % (applied, 'is' if journal.done == 1 else 'are'))
        first = steps[0]
        if first.action in DATA_STEPS and journal.started is not None and proven != 0:
            return [], [], ('step 1 (%s) has started (the journal records it: an attempt was killed, failed after '
                            'it began, or could not record its end), so it may have written part or all of the data '
                            'it merges: the snapshot would show altered data if the operation were abandoned. Fix '
                            'the cause and finish the operation with state=resumed' % first.description)
        refusal = self._chain_as_planned(first, steps)
        if refusal is not None:
            return [], [], refusal
        return ['removed the journal %s (no step was applied: the chain and the .info file are as before)'
                % journal.path], [], None

    def _chain_as_planned(self, first: Any, steps: List[Any]) -> Optional[str]:
        """Why the chain is no longer as the delete planned it (a header was switched, a job runs), else None."""
        args = first.args
        if first.action == 'commit':
            top, below = args['file'], os.path.join(os.path.dirname(args['file']), args['base'])
        elif first.action == 'block_commit':
            top, below = args['top'], args['base']
        elif first.action == 'block_rebase':
            deleted = next((s.args['file'] for s in steps if s.action == 'delete_file'), None)
            top, below = args['top'], deleted
        else:
            return 'step 1 is %s, which is not a first step of a delete' % first.action
        try:
            backing = _backing_of(top)
        except (VolsnapError, OSError) as exc:
            why = exc.msg if isinstance(exc, VolsnapError) else os_error_text(exc, top)
            return 'cannot read the backing file of %s: %s' % (top, why)
        if not _same_file(backing, below):
            return ('the header of %s now names %s as its backing file, not %s: step 1 (%s) is at least partly '
                    'applied; finish the operation with state=resumed' % (top, backing, below, first.description))
        if first.action in ('block_commit', 'block_rebase'):
            lv = self.libvirt
            if lv is None:
                return 'cannot ask libvirt whether a block job runs on domain %s (no libvirt connection)' % args['domain']
            try:
                dom = self._running_domain(args['domain'])
                if dom is not None:
                    if lv.job_running(dom, args['disk']):
                        return ('a block job still runs on domain %s disk %s: wait for it, then run state=resumed'
                                % (args['domain'], args['disk']))
                    if not _in_chain(top, lv.disk_chain_paths(dom, args['disk'])):
                        return ('domain %s disk %s no longer has %s in its chain: step 1 is applied; finish the '
                                'operation with state=resumed' % (args['domain'], args['disk'], top))
            except VolsnapError as exc:
                return 'cannot ask libvirt about domain %s: %s' % (args['domain'], exc.msg)
        return None

    # ---- offline steps

    def _create_overlay(self, step: Step, _context: RunContext) -> None:
        args = step.args
        path = args['file']
        # An existing overlay is only reachable when this very step was interrupted: nothing has used it yet.
        remove_if_exists(path)
        tmp = temporary_path(path)
        remove_if_exists(tmp)  # never followed: a leftover of this step, or a link planted under our name
        # The module creates the file itself (O_CREAT | O_EXCL | O_NOFOLLOW) with its final owner and mode, and
        # qemu-img writes it through this process's descriptor: a link planted at the overlay's or the temporary
        # name is never followed, and the file that gets the overlay's name is the one qemu-img wrote.
        attributes = share_file_attributes(args['like']) if args.get('like') else FileAttributes(0o644)
        fd = create_share_file(tmp, attributes)
        try:
            backing_format = qemu_format(args['backing_format'])
            if native_overlay_supported(args['backing'], backing_format, args['size']):
                # qemu-img's very bytes, without starting it (see _nfs/qcow2_overlay.py); the backing file is never
                # opened (it may be in use by a running domain); the size is explicit.
                write_overlay(fd, args['backing'], backing_format, args['size'])
            else:
                # -u: as above. qemu-img makes what the native writer does not know, or says what is wrong with it.
                self.qemu.run(create_overlay_args(args['backing'], args['backing_format'], descriptor_path(fd),
                                                  args['size']))
            os.fsync(fd)
            publish_descriptor(fd, path)
        finally:
            try:
                remove_if_same(tmp, fd)
            finally:
                os.close(fd)
        fsync_dir(os.path.dirname(path))

    def _commit(self, step: Step, _context: RunContext) -> None:
        self._qemu_commit(step.args['file'])

    def _qemu_commit(self, path: str) -> None:
        # Committing again after an interruption writes the same clusters again: harmless.
        self.qemu.run(commit_args(path))

    def _rebase(self, step: Step, _context: RunContext) -> None:
        self._qemu_rebase(step.args['file'], step.args['backing'], step.args['backing_format'])

    def _qemu_rebase(self, path: str, backing: str, backing_format: str) -> None:
        self.qemu.run(rebase_unsafe_args(path, backing, backing_format))

    def _write_info(self, step: Step, _context: RunContext) -> None:
        write_atomic(step.args['path'], SnapshotInfo.from_dict(step.args['info']).dumps(), like=step.args.get('like'))

    def _delete_file(self, step: Step, _context: RunContext) -> None:
        remove_if_exists(step.args['file'])
        fsync_dir(os.path.dirname(step.args['file']))

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

    def _libvirt_snapshot(self, step: Step, context: RunContext) -> None:
        args = step.args
        lv = self._lv()
        dom = lv.find_domain(args['domain'])
        if dom is None:
            # No domain any more: nothing to switch; the .info file alone makes the overlay the active file.
            _refuse_if_open(_backing_of(args['file']))
            return
        if _same_file(lv.disk_source(dom, args['disk']), args['file']):
            return  # done before the interruption
        # On a stopped domain libvirt switches the persistent definition to the overlay: the next boot uses it.
        context.set('quiesced', lv.external_snapshot(dom, args['disk'], args['file'], quiesce_mode(args.get('quiesce'))))

    def _block_commit(self, step: Step, context: RunContext) -> None:
        args = step.args
        lv = self._lv()
        dom = self._running_domain(args['domain'])
        if dom is None:
            self._commit_offline(args['top'], args['base'], context)
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
                self._commit_offline(args['top'], args['base'], context)  # the domain stopped during the job
                return
            raise VolsnapError('the blockCommit of %s into %s on domain %s disk %s ended, but %s is still in the chain '
                               'of the disk: the job failed or was cancelled. Nothing was deleted and the .info file '
                               'is unchanged; run the module again with the same arguments to retry the merge'
                               % (args['top'], args['base'], args['domain'], args['disk'], args['top']))

    def _block_rebase(self, step: Step, _context: RunContext) -> None:
        args = step.args
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

    def _commit_offline(self, top: str, base: str, context: RunContext) -> None:
        """blockCommit's effect: ``top``'s data into ``base``, the file above ``top`` rebased onto ``base``."""
        active = context.get('active')
        if not active:
            raise VolsnapError('internal error: an online delete without the .info file it was planned from')
        chain = _header_chain(os.path.join(os.path.dirname(top), active))
        if not _in_chain(top, chain):
            return  # merged before the interruption
        index = [os.path.realpath(p) for p in chain].index(os.path.realpath(top))
        if index == 0 or index + 1 >= len(chain) or not _same_file(chain[index + 1], base):
            raise VolsnapError('cannot finish the merge of %s into %s offline: the image headers give the chain %s'
                               % (top, base, ' -> '.join(os.path.basename(p) for p in chain)))
        _refuse_if_open(chain[0])
        self._qemu_commit(top)
        self._qemu_rebase(chain[index - 1], os.path.basename(base), _declared_format_of(chain, base))

    def _pull_offline(self, top: str, base: Optional[str]) -> None:
        """blockRebase's effect: the data between ``top`` and ``base`` copied into ``top`` (qemu-img rebase, safe mode)."""
        if _same_file(_below_active(_header_chain(top)), base):
            return  # pulled before the interruption
        _refuse_if_open(top)
        if base is None:
            self.qemu.run(rebase_args(top, None))
        else:
            self.qemu.run(rebase_args(top, os.path.basename(base), _declared_format_of(_header_chain(top), base)))

    def _lv(self) -> Any:
        if self.libvirt is None:
            raise VolsnapError('internal error: an online step without a libvirt connection')
        return self.libvirt


_QCOW2_MAX_L1_BYTES = 32 * 1024 * 1024  # qemu's QCOW_MAX_L1_SIZE


def overlay_data_problem(path: str, st: Optional[os.stat_result] = None) -> Optional[str]:
    """None when the file ``path`` provably holds no data of its own, else what it is.

    Provably empty: a file of no bytes (its creation was cut short), or a qcow2 file with no internal snapshot,
    no external data file and an all-zero L1 table (no cluster was ever allocated: nothing was written into it).
    """
    if st is None:
        st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return 'is not a regular file'
    if st.st_size == 0:
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0))
    with os.fdopen(fd, 'rb') as handle:
        head = handle.read(80)
        if len(head) < 72 or head[:4] != b'QFI\xfb':
            return 'is not a qcow2 file'
        version, = struct.unpack('>I', head[4:8])
        l1_size, = struct.unpack('>I', head[36:40])
        l1_offset, = struct.unpack('>Q', head[40:48])
        snapshots, = struct.unpack('>I', head[60:64])
        incompatible = struct.unpack('>Q', head[72:80])[0] if version >= 3 and len(head) >= 80 else 0
        if snapshots:
            return 'has internal snapshots'
        if incompatible & 4:
            return 'has an external data file'
        if l1_size * 8 > _QCOW2_MAX_L1_BYTES:
            return 'has an L1 table larger than qemu allows'
        handle.seek(l1_offset)
        table = handle.read(l1_size * 8)
    if table.strip(b'\x00'):
        return 'has data clusters (its L1 table is not empty: something wrote into it)'
    return None


def _info_unchanged(path: str, before: Optional[Dict[str, str]], after: Optional[Dict[str, str]]) -> Optional[str]:
    """Why the .info file ``path`` is not exactly as before the operation, or None when it is."""
    try:
        info = load_info(path)
    except (ValueError, OSError) as exc:
        why = os_error_text(exc, path) if isinstance(exc, OSError) else str(exc)
        return 'cannot read the .info file %s (%s)' % (path, why)
    current = info.as_dict() if info is not None else None
    if current == before:
        return None
    if current == after:
        return ('the .info file %s already records the operation\'s outcome, so its effect is in place; finish it '
                'with state=resumed' % path)
    return 'the .info file %s is neither as before the operation nor as after it (it is %s)' % (path, current)


def _declared_format_of(chain: List[str], base: str) -> str:
    """The format the file above ``base`` in ``chain`` declares for it: the trusted format (set when that overlay was
    created), never the one ``base``'s content looks like (OSSA 2014-033: a commit may have written a guest's image
    header into a raw base)."""
    for upper, lower in zip(chain, chain[1:]):
        if _same_file(lower, base):
            declared = inspect_image(upper).backing_format
            if declared:
                return declared
            break
    raise VolsnapError('cannot finish the merge onto %s offline: no file of the chain %s declares its format'
                       % (base, ' -> '.join(os.path.basename(p) for p in chain)))


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
