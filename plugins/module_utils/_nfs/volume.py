# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One Cinder volume in an NFS share: the one door to its files (:class:`ShareVolume`), and its journal.

:class:`ShareVolume` owns, for ``volume-<id>`` in a share directory, everything the collection reads or writes
beside the images themselves, with the hostile-share rules of :mod:`._nfs.share` (names that can only be this
volume's, ``O_NOFOLLOW``, regular files only):

* its names: the volume file, ``.info``, journal, lock file, temporary files (snapshot files: the plans);
* its ``.info`` file (:meth:`ShareVolume.info_path`; read with the chain by :func:`._nfs.chain.inspect_chain`
  through :func:`._nfs.share.load_info`, rewritten atomically by the plan's ``write_info`` step);
* its :class:`Journal` (``.volsnap-<volume name>.journal``: the plan of an operation and how far it got), checked
  against hostile content by :func:`check_journaled_plan` before any of it runs;
* its lock (:meth:`ShareVolume.lock`, :mod:`._nfs.lock`) and the leftovers of killed runs;
* :meth:`ShareVolume.judge_unlocked`: deciding without the lock while no run ever locked the volume, so that check
  mode, a request with nothing to do and a refused one leave nothing in the share.
"""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, TypeVar

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import fsync_dir, remove_if_exists
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import is_file_id
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import VOLUME_FORMATS
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.lock import VolumeLock, lock_path_for
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import (
    INFO_SUFFIX,
    VOLUME_PREFIX,
    DirListing,
    ShareFileError,
    info_entry_problem,
    is_snapshot_like,
    journal_filename,
    open_regular,
    os_error_text,
    own_file_kind,
    remove_stale_temporaries,
    split_volume_filename,
    stale_temporaries,
    volume_files,
    write_atomic,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot_plan import (
    COMPLETE,
    COMPUTE,
    OFFLINE,
    ONLINE,
    SNAPSHOT_ACTIONS,
    Plan,
)

JOURNAL_VERSION = 1
_UNKNOWN = -1  # a journal without the ``started`` key (an older version): any step may have started
Judged = TypeVar('Judged')


class ShareVolume(object):
    """The files of volume ``volume-<volume_id>`` in ``directory``."""

    def __init__(self, directory: str, volume_id: str) -> None:
        self.directory = directory
        self.volume_id = volume_id
        self.name = VOLUME_PREFIX + volume_id
        self.path = os.path.join(directory, self.name)

    @classmethod
    def from_path(cls, volume_path: str, what: str = 'volume file itself, named volume-<volume id>') -> 'ShareVolume':
        """The volume whose file is ``volume_path`` (``volume-<id>``; a snapshot or ``.info`` file is refused: the
        error asks for the ``what`` of the request)."""
        path = os.path.abspath(volume_path)
        parts = split_volume_filename(os.path.basename(path))
        if parts is None or parts[2] is not None:
            raise VolsnapError('%s is not a Cinder volume file: give the %s' % (path, what))
        return cls(os.path.dirname(path), parts[1])

    @classmethod
    def in_share(cls, share: str, volume_id: str) -> 'ShareVolume':
        """Volume ``volume_id`` of ``share``, for an id that is a Cinder id and nothing else (no path tricks)."""
        if not is_file_id(volume_id):
            raise VolsnapError('volume_id %r is not a Cinder volume id (a UUID such as '
                               '0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f); the volume file name is built from it, so '
                               'nothing else is accepted' % volume_id)
        return cls(share, volume_id)

    @property
    def info_path(self) -> str:
        return self.path + INFO_SUFFIX

    @property
    def journal_path(self) -> str:
        return os.path.join(self.directory, journal_filename(self.name))

    @property
    def lock_path(self) -> str:
        return lock_path_for(self.directory, self.volume_id)

    def exists(self) -> bool:
        """The volume file or its ``.info`` file exists (after an online delete flattened the chain, the base
        file is gone and the ``.info`` file names the active file)."""
        return os.path.exists(self.path) or os.path.exists(self.info_path)

    def files(self) -> List[str]:
        """The names of the volume's data and state files (:func:`._nfs.share.volume_files`)."""
        return volume_files(self.directory, self.name)

    def journal(self) -> 'Journal':
        return Journal(self.journal_path, self.volume_id)

    def lock(self, timeout: float) -> VolumeLock:
        return VolumeLock(self.directory, self.volume_id, timeout)

    def listing(self) -> DirListing:
        """The names of the volume's directory, read now."""
        return DirListing.read(self.directory)

    def stale_temporaries(self, listing: Optional[DirListing] = None) -> List[str]:
        return stale_temporaries(self.directory, self.name, listing)

    def remove_stale_temporaries(self, check_mode: bool, listing: Optional[DirListing] = None) -> List[str]:
        """Temporary files of the volume left by a killed run: call it holding the lock (``listing``: the
        directory's names read after the lock was taken)."""
        return remove_stale_temporaries(self.directory, self.name, check_mode, listing)

    def judge_unlocked(self, judge: Callable[[], Judged], final: Callable[[Judged], bool]) -> Optional[Judged]:
        """Decide without the lock while no run has ever locked this volume (its lock file does not exist).

        ``judge`` decides without changing anything; its result is returned when ``final`` says it needs no
        change and the lock file still does not exist. None means the caller takes the lock (which creates its
        file) and decides again under it: there is something to change, another run created the lock meanwhile,
        or ``judge`` refused while another run may have been half-way through a step.
        """
        if os.path.exists(self.lock_path):
            return None
        try:
            result = judge()
        except VolsnapError:
            if os.path.exists(self.lock_path):
                return None
            raise
        if final(result) and not os.path.exists(self.lock_path):
            return result
        return None


_PATH_ARGS = ('file', 'path', 'like', 'top', 'base', 'backing')


def _never_planned(volume_id: str, why: str) -> VolsnapError:
    return VolsnapError('the journal of volume %s names %s, which this module never plans; nothing was run. Inspect '
                        'the volume with qcow2_chain_info and remove the journal by hand if it is not yours'
                        % (volume_id, why))


def check_journaled_plan(plan: Plan, directory: str, volume_name: str, volume_id: str,
                         volume_format: Optional[str] = None) -> None:
    """Refuse a journaled plan that this module would not have written for this volume.

    The journal lives in the share, so it is as untrusted as the image files: before anything of it
    runs, its operation, mode, volume and snapshot ids, actions, and every file it names (absolute
    paths in the volume's directory, or bare file names) must be what :func:`plan_create` and
    :func:`plan_delete` produce for ``volume_name`` in ``directory``. The formats it declares are what a plan
    trusts: snapshot files are qcow2, volume-<id> is raw or qcow2, and ``volume_format`` (Cinder's format, when the
    request gives it) when given.
    """
    def bad(why: str) -> VolsnapError:
        return _never_planned(volume_id, why)

    def own_file(name: Any, what: str) -> None:
        if not isinstance(name, str) or not name:
            raise bad('%s %r' % (what, name))
        if os.path.isabs(name):
            if os.path.dirname(os.path.normpath(name)) != os.path.normpath(directory) or name != os.path.normpath(name):
                raise bad('%s %s outside the volume\'s directory' % (what, name))
            name = os.path.basename(name)
        elif os.sep in name or name in ('.', '..'):
            raise bad('%s %s outside the volume\'s directory' % (what, name))
        if (own_file_kind(name, volume_name) is None and not is_snapshot_like(name, volume_name)
                and not (what in ('path', 'like') and name == volume_name + INFO_SUFFIX)):
            raise bad('%s %s, not a file of %s' % (what, name, volume_name))

    def check_format(name: Any, fmt: Any) -> None:
        why = _journaled_format_problem(name, fmt, volume_name, volume_format)
        if why is not None:
            raise bad(why)

    if plan.operation not in ('create', 'delete') or plan.mode not in (OFFLINE, ONLINE):
        raise bad('operation %r in mode %r' % (plan.operation, plan.mode))
    if plan.volume_id != volume_id:
        raise bad('another volume (%r)' % plan.volume_id)
    if not is_file_id(plan.snapshot_id):
        raise bad('snapshot id %r' % plan.snapshot_id)
    for step in plan.steps:
        if step.action not in SNAPSHOT_ACTIONS or step.stage not in (COMPUTE, COMPLETE):
            raise bad('step %r (%r)' % (step.action, step.stage))
        for key in _PATH_ARGS:
            if step.args.get(key) is not None:
                own_file(step.args[key], key)
        for key, value in dict(step.args.get('info') or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise bad('.info entry %r: %r' % (key, value))
            why = info_entry_problem(key, value, volume_name)
            if why is not None:
                raise bad('.info entry "%s": %s' % (key, why))
        if 'backing_format' in step.args:
            check_format(step.args.get('backing'), step.args['backing_format'])
    for name, fmt in dict(plan.file_format or {}).items():
        check_format(name, fmt)


def _journaled_format_problem(name: Any, fmt: Any, volume_name: str, volume_format: Optional[str]) -> Optional[str]:
    """Why a journal may not declare ``fmt`` as the format of file ``name`` (None when a plan could)."""
    base = os.path.basename(name) if isinstance(name, str) else name
    if base == volume_name:
        if fmt not in VOLUME_FORMATS:
            return 'format %r for %s (raw or qcow2 only)' % (fmt, base)
        if volume_format is not None and fmt != volume_format:
            return 'format %s for %s, which is %s (volume_format)' % (fmt, base, volume_format)
    elif fmt != 'qcow2':
        return 'format %r for snapshot file %s (always qcow2)' % (fmt, base)
    return None


class Journal(object):
    """The journal of one volume's snapshot operation: the plan (its steps as ``Step.as_dict()``), how many steps
    are done, and whether a data step has started. Read back through :meth:`load` (steps rebuilt through
    ``SNAPSHOT_ACTIONS``: an unknown action is refused); check it with :func:`check_journaled_plan` before it runs.
    """

    def __init__(self, path: str, volume_id: Optional[str] = None) -> None:
        self.path = path
        self.volume_id = volume_id
        self.plan: Optional[Plan] = None
        self.done = 0
        self.stage = 'begin'
        # index of a data step (DATA_STEPS) that has started and may be partly done, else None
        self.started: Optional[int] = None
        # the group snapshot this operation is one member of (:mod:`._nfs.group`), else None
        self.group: Optional[Dict[str, Any]] = None

    def load(self) -> bool:
        try:
            # never through a symlink planted at the journal's name (open_regular: O_NOFOLLOW, regular files only)
            with os.fdopen(open_regular(self.path), 'r') as handle:
                data = json.load(handle)
        except ShareFileError as exc:
            raise VolsnapError('the journal %s %s; nothing was run. It is not a journal this module wrote: remove it '
                               '(never its target) and run again' % (self.path, exc.strerror))
        except (IOError, OSError) as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise VolsnapError('cannot read the journal %s; an interrupted operation may be pending on this volume, '
                               'so nothing was run. Fix the cause and run again'
                               % os_error_text(exc, self.path), file=self.path, pending=None)
        except ValueError as exc:
            raise VolsnapError('the journal %s of an interrupted operation is unreadable (%s); inspect the volume '
                               'with qcow2_chain_info before removing it by hand' % (self.path, exc))
        try:
            self.plan = Plan.from_dict(data['plan'])
        except VolsnapError as exc:  # a step this module never plans (an unknown action, malformed arguments)
            raw = exc.details.get('step')
            if not isinstance(raw, dict):
                what = 'step %r' % (raw,)
            elif raw.get('action') in SNAPSHOT_ACTIONS:
                what = 'step %r (%r) with arguments it never has (%s)' % (raw.get('action'), raw.get('stage'), exc.msg)
            else:
                what = 'step %r (%r)' % (raw.get('action'), raw.get('stage'))
            raise _never_planned(self.volume_id or self.path, what)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VolsnapError('the journal %s of an interrupted operation is unreadable (%s); inspect the volume '
                               'with qcow2_chain_info before removing it by hand' % (self.path, exc))
        try:
            self.done = int(data['done'])
            self.stage = data.get('stage', 'begin')
            started = data.get('started', _UNKNOWN)
            if started is not None and (not isinstance(started, int) or isinstance(started, bool)):
                raise ValueError('started is %r' % (started,))
            self.started = started
            group = data.get('group')
            if group is not None and not isinstance(group, dict):
                raise ValueError('group is %r' % (group,))
            self.group = group
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VolsnapError('the journal %s of an interrupted operation is unreadable (%s); inspect the volume '
                               'with qcow2_chain_info before removing it by hand' % (self.path, exc))
        if not 0 <= self.done <= len(self.plan.steps):
            raise VolsnapError('the journal %s of an interrupted operation is unreadable (done %d of %d steps); '
                               'inspect the volume with qcow2_chain_info before removing it by hand'
                               % (self.path, self.done, len(self.plan.steps)))
        return True

    def _write(self) -> None:
        if self.plan is None:
            raise VolsnapError('internal error: journal written without a plan')
        # _atomic: on any error the temporary file is removed and the journal left as it was
        data = {'version': JOURNAL_VERSION, 'plan': self.plan.as_dict(), 'done': self.done, 'stage': self.stage,
                'started': self.started, 'updated': time.time()}
        if self.group is not None:
            data['group'] = self.group
        write_atomic(self.path, json.dumps(data, sort_keys=True))

    def _write_or_restore(self, done: int, stage: str, started: Optional[int]) -> None:
        """Write the journal with these values; on an error the object keeps what the file still says."""
        before = (self.done, self.stage, self.started)
        self.done, self.stage, self.started = done, stage, started
        try:
            self._write()
        except BaseException:
            self.done, self.stage, self.started = before
            raise

    def begin(self, plan: Plan, group: Optional[Dict[str, Any]] = None) -> None:
        """Write the journal of ``plan`` before its first step; ``group``: the group snapshot it is a member of."""
        self.plan = plan
        self.group = group
        self._write_or_restore(0, 'begin', None)

    def advance(self, done: int, stage: str, write: bool = True) -> None:
        if write:
            self._write_or_restore(done, stage, None)
        else:
            self.done, self.stage, self.started = done, stage, None

    def start(self, index: int) -> None:
        """Record that data step ``index`` starts (it may be partly done from now on)."""
        self._write_or_restore(self.done, self.stage, index)

    def finish(self) -> None:
        remove_if_exists(self.path)
        fsync_dir(os.path.dirname(self.path))

    def pending(self) -> Dict[str, Any]:
        """What is pending, for results and error details."""
        plan = self.plan
        if plan is None:
            return {'journal': self.path}
        nxt = plan.steps[self.done] if self.done < len(plan.steps) else None
        return {'journal': self.path, 'operation': plan.operation, 'snapshot_id': plan.snapshot_id, 'mode': plan.mode,
                'steps_done': self.done, 'steps_total': len(plan.steps),
                'next_step': nxt.description if nxt is not None else None,
                'started': self.started is not None}

    def pending_text(self) -> str:
        plan = self.plan
        if plan is None:
            return 'an operation is pending (journal %s)' % self.path
        text = ('the %s of snapshot %s (%s) is pending on this volume: %d of %d steps done (journal %s)'
                % (plan.operation, plan.snapshot_id, plan.mode, self.done, len(plan.steps), self.path))
        if self.done < len(plan.steps):
            text += '; next: step %d, %s' % (self.done + 1, plan.steps[self.done].description)
        return text
