# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Report the compute side of a snapshot operation to Cinder, as Nova's assisted snapshots do.

Nova ends its part of an assisted snapshot with ``os-update_snapshot_status``: ``creating`` or
``deleting`` with ``progress: 90%`` on success, ``error`` or ``error_deleting`` on failure. Spec 000
wanted ``creating_compute_complete`` / ``deleting_compute_complete`` and a ``file_format`` field
instead; they were never merged and real Cinder refuses them (its schema allows only ``status`` and
``progress``, and from ``creating`` only ``creating``/``available``/``error``, from ``deleting`` only
``deleting``/``error_deleting``). So the API gets the compatible form and the module result keeps
the spec's ``compute_status`` and ``file_format``.

While Cinder waits for that report its snapshot stays in ``creating`` (or ``deleting``) and nothing
else moves it on, so a report that cannot be made is a failure of the task, never a silent success:

* Before the operation touches the share, the snapshot is read with the given credentials
  (:meth:`CinderReporter.preflight`): credentials that cannot read it (403, another project: 404 for
  the snapshot and for its volume), a snapshot of another volume, or a create of a snapshot Cinder
  does not have fail the task with nothing changed.
* After the operation, :func:`decide` says whether to send the update, whether nothing is to be
  done (already reported; a rerun that changed nothing after Cinder moved on), or whether the report
  cannot be made (Cinder refused it, or Cinder was not waiting although the share was changed just
  now, or Cinder gave up waiting). In the last case the task fails with a message saying what
  Cinder shows, that the share operation is complete and kept, and how to re-report: a rerun with
  working credentials changes no file and sends the report while Cinder still waits.

Check mode only reads, and fails where a real run would.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import is_uuid
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import VOLUME_PREFIX
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.cinder import cinder_api

COMPUTE_DONE_PROGRESS = '90%'

# operation -> (status Cinder must be in, status reported on success, status reported on failure)
STATUSES = {
    'create': ('creating', 'creating', 'error'),
    'delete': ('deleting', 'deleting', 'error_deleting'),
}

# Statuses in which a rerun that changed nothing finds Cinder after it took the report and went on
# (a later delete of a created snapshot included). A deleted snapshot is gone (404) instead.
MOVED_ON = {
    'create': ('available', 'deleting', 'error_deleting'),
    'delete': (),
}

# decide()'s verdicts
SEND = 'send'
NOTHING = 'nothing'
CANNOT = 'cannot'

UPDATE_POLICY = 'snapshot_extension:snapshot_actions:update_snapshot_status'


def wanted_update(operation: str, succeeded: bool) -> Dict[str, str]:
    """The ``os-update_snapshot_status`` body Cinder accepts for this outcome (as Nova sends it)."""
    if operation not in STATUSES:
        raise VolsnapError('unknown snapshot operation %r (expected create or delete)' % operation)
    ok, failed = STATUSES[operation][1:]
    if succeeded:
        return {'status': ok, 'progress': COMPUTE_DONE_PROGRESS}
    return {'status': failed}


def decide(operation: str, succeeded: bool, current: Optional[Mapping[str, Any]], changed: bool = True,
           volume_visible: bool = True) -> Tuple[str, str]:
    """(verdict, why) for Cinder's current view of the snapshot.

    ``current`` is the snapshot as these credentials read it (None: not found); ``changed`` whether
    the operation changed the share in this run; ``volume_visible`` whether the snapshot's volume
    can be read with these credentials (it tells "deleted" from "not ours" when the snapshot is not
    found). The verdict is :data:`SEND` (Cinder waits: send the update), :data:`NOTHING` (nothing to
    report, and nothing is stuck) or :data:`CANNOT` (the report is needed or expected but cannot be
    made: the task must fail).
    """
    waiting, _ok, gave_up = STATUSES[operation]
    if current is None:
        if not volume_visible:
            return CANNOT, ('these credentials see neither the Cinder snapshot nor its volume (HTTP 404): they are '
                            'not those of the project that owns them')
        if operation == 'delete' and not changed:
            return NOTHING, 'the Cinder snapshot no longer exists (Cinder finished its delete)'
        return CANNOT, 'the Cinder snapshot does not exist (HTTP 404), although its volume is visible'
    status = current.get('status')
    progress = current.get('progress')
    if status == waiting:
        if succeeded and progress == COMPUTE_DONE_PROGRESS:
            return NOTHING, 'already reported (Cinder shows %s with progress %s)' % (status, progress)
        return SEND, 'Cinder is waiting for the compute side (status %s, progress %s)' % (status, progress)
    if not succeeded:
        return NOTHING, ('the Cinder snapshot is in status %s, not %s: Cinder is not waiting for this operation, so '
                         'there is no failure to report' % (status, waiting))
    if not changed and status in MOVED_ON[operation]:
        return NOTHING, ('Cinder has moved on (status %s): the share had nothing left to do and Cinder no longer '
                         'waits for a report' % status)
    if status == gave_up:
        return CANNOT, ('the Cinder snapshot is in status %s: Cinder gave up waiting for the compute side of this %s'
                        % (status, operation))
    if changed:
        return CANNOT, ('the Cinder snapshot is in status %s: Cinder takes this report only while the snapshot is %s, '
                        'so it was not waiting for the %s done on the share just now' % (status, waiting, operation))
    return CANNOT, ('the Cinder snapshot is in status %s, which does not match a %s that is complete on the share'
                    % (status, operation))


def volume_id_of(params: Mapping[str, Any]) -> Optional[str]:
    """The Cinder volume id of the module's volume (``volume_id``, or the id in the file name: the share's volume
    prefix, then an API id in either case)."""
    if params.get('volume_id'):
        return str(params['volume_id']).lower()
    name = os.path.basename(str(params.get('volume_path') or ''))
    if not name.startswith(VOLUME_PREFIX) or not is_uuid(name[len(VOLUME_PREFIX):]):
        return None
    return name[len(VOLUME_PREFIX):].lower()


class CinderReporter(object):
    """Reports through ``api`` (``get_snapshot(id)``, ``find_volume(id)``, ``update_snapshot_status(id, status,
    progress)``, as ``cinder.py``'s :class:`CinderApi`)."""

    def __init__(self, api: Any, snapshot_id: str, check_mode: bool, volume_id: Optional[str] = None) -> None:
        self.api = api
        self.snapshot_id = snapshot_id
        self.check_mode = check_mode
        self.volume_id = volume_id

    # ---- reading Cinder ------------------------------------------------------------------------

    def _read(self) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        """(the snapshot or None when not found, the error when it could not be read)."""
        try:
            return self.api.get_snapshot(self.snapshot_id), None
        except VolsnapError as exc:
            return None, exc.msg.rstrip('.')

    def _volume_visible(self) -> bool:
        if not self.volume_id:
            return False
        try:
            return self.api.find_volume(self.volume_id) is not None
        except VolsnapError:
            return False

    def _other_volume(self, current: Optional[Mapping[str, Any]]) -> Optional[str]:
        owner = (current or {}).get('volume_id')
        if owner and self.volume_id and str(owner).lower() != self.volume_id:
            return str(owner)
        return None

    def preflight(self, operation: str) -> None:
        """Refuse, before the share is touched, a report that cannot be made whatever the operation does."""
        current, error = self._read()
        why = None
        if error is not None:
            why = 'reading the Cinder snapshot failed: %s' % error
        elif current is None:
            visible = self._volume_visible()
            # a delete may find the snapshot gone when Cinder finished it; decide() tells after the operation
            if not visible or operation == 'create':
                why = decide(operation, True, None, changed=True, volume_visible=visible)[1]
        elif self._other_volume(current):
            why = ('Cinder snapshot %s belongs to volume %s, not to volume %s of this file: check snapshot_id and '
                   'the volume' % (self.snapshot_id, self._other_volume(current), self.volume_id))
        if why is None:
            return
        report = self._report_dict(operation, True, current, None, False, why)
        advice = self.advice(operation, current, error)
        raise VolsnapError('Nothing was changed on the share: the %s was not started because its outcome could not be '
                           'reported to Cinder for snapshot %s: %s. %s' % (operation, self.snapshot_id, why, advice),
                           cinder_report=report)

    # ---- reporting -------------------------------------------------------------------------------

    def _report_dict(self, operation: str, succeeded: bool, current: Optional[Mapping[str, Any]],
                     result: Optional[Mapping[str, Any]], send: bool, why: str,
                     error: Optional[str] = None) -> Dict[str, Any]:
        update = wanted_update(operation, succeeded)
        return {
            'snapshot_id': self.snapshot_id,
            'status': update['status'],
            'progress': update.get('progress'),
            'cinder_status_before': current.get('status') if current else None,
            'cinder_progress_before': current.get('progress') if current else None,
            'reported': False,
            'would_report': send,
            'reason': why,
            'error': error,
            'compute_status': (result or {}).get('compute_status'),
            'file_format': dict((result or {}).get('file_format') or {}),
        }

    def report(self, operation: str, succeeded: bool, result: Optional[Mapping[str, Any]] = None,
               changed: bool = True) -> Dict[str, Any]:
        """Send the update when Cinder waits for it. Never raises for Cinder's answers: ``error`` in the
        returned dict says why the report could not be made (None when it was made or not needed)."""
        current, error = self._read()
        if error is not None:
            return self._report_dict(operation, succeeded, None, result, False,
                                     'reading the Cinder snapshot failed', error='reading the Cinder snapshot '
                                     'failed: %s' % error)
        other = self._other_volume(current)
        if other:
            why = 'Cinder snapshot %s belongs to volume %s, not to volume %s' % (self.snapshot_id, other,
                                                                                 self.volume_id)
            return self._report_dict(operation, succeeded, current, result, False, why, error=why)
        visible = True if current is not None else self._volume_visible()
        verdict, why = decide(operation, succeeded, current, changed=changed, volume_visible=visible)
        report = self._report_dict(operation, succeeded, current, result, verdict == SEND, why,
                                   error=why if verdict == CANNOT else None)
        if verdict != SEND or self.check_mode:
            return report
        update = wanted_update(operation, succeeded)
        try:
            self.api.update_snapshot_status(self.snapshot_id, update['status'], update.get('progress'))
        except VolsnapError as exc:
            report['error'] = 'Cinder refused the status update: %s' % exc.msg.rstrip('.')
            report['api_status_code'] = exc.details.get('status_code')
            return report
        report['reported'] = True
        return report

    # ---- messages --------------------------------------------------------------------------------

    def advice(self, operation: str, current: Optional[Mapping[str, Any]], error: Optional[str],
               refused: bool = False) -> str:
        waiting = STATUSES[operation][0]
        if current is not None and current.get('status') == waiting:
            stuck = ('Cinder shows snapshot %s in status %s (progress %s) and keeps it there, waiting, until the '
                     'report reaches it' % (self.snapshot_id, waiting, current.get('progress')))
        elif current is None:
            stuck = ('If Cinder is waiting for this %s, its snapshot stays in status %s until the report reaches it'
                     % (operation, waiting))
        else:
            stuck = ''
        if refused or error is not None or current is None:
            fix = ('Use credentials that may read and update this snapshot (a member of the project that owns it, or '
                   'an admin; policy %s) and run the same task again' % UPDATE_POLICY)
        else:
            fix = ('Check that snapshot_id is the snapshot Cinder is working on for this volume; to bring Cinder in '
                   'line with the share an admin can set the snapshot\'s status (openstack snapshot set --state '
                   'available|error <id>) or delete it in Cinder')
        return '%s%s.' % (stuck + '. ' if stuck else '', fix)

    def failure_after_success(self, operation: str, report: Mapping[str, Any]) -> str:
        """The message of a task whose share operation is complete but whose report could not be made."""
        current = cinder_view(report)
        refused = str(report.get('error') or '').startswith('Cinder refused')
        done = ('check mode: a real run would complete the %s on the share and then fail' % operation
                if self.check_mode else
                'The %s of snapshot %s is complete on the share and journaled (the files are consistent and are kept, '
                'nothing is rolled back), but the task fails' % (operation, self.snapshot_id))
        rerun = ('A rerun changes no file: it sends the report if Cinder still waits for it, and reports no change '
                 'if Cinder has moved on.')
        return '%s because the outcome could not be reported to Cinder: %s. %s %s' % (
            done, report.get('error'), self.advice(operation, current, None, refused), rerun)


def cinder_view(report: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """Cinder's snapshot status and progress as a report read them (None when it was not found or read)."""
    if report.get('cinder_status_before') is None:
        return None
    return {'status': report['cinder_status_before'], 'progress': report.get('cinder_progress_before')}


def cinder_reporter(params: Mapping[str, Any], check_mode: bool) -> CinderReporter:
    """A reporter for the module parameters: the connection options, ``snapshot_id`` and the volume."""
    return CinderReporter(cinder_api(params), params['snapshot_id'], check_mode, volume_id_of(params))


def run_with_report(run: Callable[[], Dict[str, Any]], reporter: Optional[CinderReporter],
                    operation: str) -> Dict[str, Any]:
    """Run the snapshot operation and report its outcome to Cinder (nothing when ``reporter`` is None).

    Before: :meth:`CinderReporter.preflight` (a failure changes nothing). Success: ``result['cinder_report']``
    says what was reported and a report that changed Cinder makes the result ``changed``; a report that cannot
    be made fails the task with the operation's whole result in the failure (``changed`` included). Failure of
    the operation (a :class:`VolsnapError`): the failure status is reported when Cinder waits for it and the
    error is re-raised with ``cinder_report`` in its details (and a sentence when Cinder could not be told).
    """
    if reporter is None:
        return run()
    reporter.preflight(operation)
    try:
        result = run()
    except VolsnapError as exc:
        report = reporter.report(operation, False)
        exc.details['cinder_report'] = report
        if report.get('error'):
            exc.msg = '%s. Cinder could not be told about this failure: %s. %s' % (
                exc.msg.rstrip('.'), report['error'], reporter.advice(operation, cinder_view(report), report['error'],
                                                                      True))
            exc.args = (exc.msg,)
        raise
    changed = bool(result.get('changed'))
    report = reporter.report(operation, True, result, changed=changed)
    result['cinder_report'] = report
    if report.get('error'):
        details = dict((k, v) for k, v in result.items() if k != 'diff')
        raise VolsnapError(reporter.failure_after_success(operation, report), **details)
    if report['reported'] or (reporter.check_mode and report['would_report']):
        result['changed'] = True
    return result


def run_members_with_reports(run: Callable[[], Dict[str, Any]], reporters: Sequence[CinderReporter],
                             paths: Sequence[str], operation: str) -> Dict[str, Any]:
    """:func:`run_with_report` for a request over several volumes whose result lists them in ``volumes`` (in the
    order of ``reporters`` / ``paths``): a group snapshot and the group delete.

    Before: every member's :meth:`CinderReporter.preflight` (one refusal: nothing changed on any volume). Success:
    each member's report in its item (``cinder_report``); a report that changed Cinder makes the item and the result
    ``changed``; reports that cannot be made fail the task with the whole result. Failure of the operation: a
    failure the members' completion survived (``committed`` in the error: the group was taken, or each delete ran
    on its own) reports the failed members' failure and the others' success; any other failure (refused, rolled
    back) reports every member's failure where Cinder waits for it, as a single volume's failure does.
    """
    for reporter, path in zip(reporters, paths):
        try:
            reporter.preflight(operation)
        except VolsnapError as exc:
            raise VolsnapError('%s (volume %s; nothing was changed on any volume of the request)'
                               % (exc.msg.rstrip('.'), path), **dict(exc.details, failed_volumes=[path]))
    try:
        result = run()
    except VolsnapError as exc:
        items = list(exc.details.get('volumes') or [])
        committed = bool(exc.details.get('committed'))
        problems: List[str] = []
        for index, reporter in enumerate(reporters):
            item = items[index] if index < len(items) else {}
            succeeded = committed and not item.get('failed')
            report = reporter.report(operation, succeeded, item if succeeded else None, changed=True)
            if index < len(items):
                items[index] = dict(item, cinder_report=report)
            if report.get('error'):
                problems.append('%s (snapshot %s): %s' % (paths[index], reporter.snapshot_id, report['error']))
        if items:
            exc.details['volumes'] = items
        if problems:
            exc.msg = '%s. Cinder could not be told about %d of the snapshots: %s' % (
                exc.msg.rstrip('.'), len(problems), '; '.join(problems))
            exc.args = (exc.msg,)
        raise
    problems = []
    for reporter, item, path in zip(reporters, result.get('volumes') or [], paths):
        report = reporter.report(operation, True, item, changed=bool(item.get('changed')))
        item['cinder_report'] = report
        if report.get('error'):
            problems.append('%s: %s' % (path, reporter.failure_after_success(operation, report)))
        elif report['reported'] or (reporter.check_mode and report['would_report']):
            item['changed'] = True
            result['changed'] = True
    if problems:
        details = dict((k, v) for k, v in result.items() if k != 'diff')
        details['failed_volumes'] = [path for path, item in zip(paths, result.get('volumes') or [])
                                     if item['cinder_report'].get('error')]
        raise VolsnapError('%d of the reports to Cinder could not be made: %s' % (len(problems), ' | '.join(problems)),
                           **details)
    return result
