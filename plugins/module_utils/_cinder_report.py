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

The report is idempotent: Cinder's current status and progress are read first and the update is
sent only when Cinder still waits for it (status ``creating``/``deleting`` and, for a success,
progress not yet ``90%``). Check mode only reads.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack import connect
from ansible_collections.volsnap.openstack.plugins.module_utils._snapshot_manage import CinderApi

COMPUTE_DONE_PROGRESS = '90%'

# operation -> (status Cinder must be in, status reported on success, status reported on failure)
STATUSES = {
    'create': ('creating', 'creating', 'error'),
    'delete': ('deleting', 'deleting', 'error_deleting'),
}


def wanted_update(operation: str, succeeded: bool) -> Dict[str, str]:
    """The ``os-update_snapshot_status`` body Cinder accepts for this outcome (as Nova sends it)."""
    if operation not in STATUSES:
        raise VolsnapError('unknown snapshot operation %r (expected create or delete)' % operation)
    ok, failed = STATUSES[operation][1:]
    if succeeded:
        return {'status': ok, 'progress': COMPUTE_DONE_PROGRESS}
    return {'status': failed}


def decide(operation: str, succeeded: bool, current: Optional[Mapping[str, Any]]) -> Tuple[bool, str]:
    """(send the update?, why) for Cinder's current view of the snapshot (None: it does not exist)."""
    expected = STATUSES[operation][0]
    if current is None:
        return False, 'the Cinder snapshot does not exist'
    status = current.get('status')
    if status != expected:
        return False, ('the Cinder snapshot is in status %s; Cinder takes this report only while it is %s'
                       % (status, expected))
    if succeeded and current.get('progress') == COMPUTE_DONE_PROGRESS:
        return False, 'already reported (Cinder shows %s with progress %s)' % (status, COMPUTE_DONE_PROGRESS)
    return True, 'Cinder is waiting for the compute side (status %s, progress %s)' % (status, current.get('progress'))


class CinderReporter(object):
    """Sends the report through ``api`` (``get_snapshot(id)`` and ``update_snapshot_status(id, status, progress)``)."""

    def __init__(self, api: Any, snapshot_id: str, check_mode: bool) -> None:
        self.api = api
        self.snapshot_id = snapshot_id
        self.check_mode = check_mode

    def report(self, operation: str, succeeded: bool, result: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        update = wanted_update(operation, succeeded)
        current = self.api.get_snapshot(self.snapshot_id)
        send, why = decide(operation, succeeded, current)
        report: Dict[str, Any] = {
            'snapshot_id': self.snapshot_id,
            'status': update['status'],
            'progress': update.get('progress'),
            'cinder_status_before': current.get('status') if current else None,
            'cinder_progress_before': current.get('progress') if current else None,
            'reported': False,
            'would_report': send,
            'reason': why,
            'compute_status': (result or {}).get('compute_status'),
            'file_format': dict((result or {}).get('file_format') or {}),
        }
        if send and not self.check_mode:
            self.api.update_snapshot_status(self.snapshot_id, update['status'], update.get('progress'))
            report['reported'] = True
        return report


def cinder_reporter(params: Mapping[str, Any], check_mode: bool) -> CinderReporter:
    """A reporter for the module parameters: the connection options and ``snapshot_id``."""
    return CinderReporter(CinderApi(connect(params)), params['snapshot_id'], check_mode)


def run_with_report(run: Callable[[], Dict[str, Any]], reporter: Optional[CinderReporter],
                    operation: str) -> Dict[str, Any]:
    """Run the snapshot operation and report its outcome to Cinder (nothing when ``reporter`` is None).

    Success: ``result['cinder_report']`` says what was reported; a report that changed Cinder makes
    the result ``changed``. Failure (a :class:`VolsnapError`): the failure status is reported and the
    error is re-raised with ``cinder_report`` in its details.
    """
    if reporter is None:
        return run()
    try:
        result = run()
    except VolsnapError as exc:
        try:
            exc.details['cinder_report'] = reporter.report(operation, False)
        except VolsnapError as report_error:
            exc.details['cinder_report'] = {'snapshot_id': reporter.snapshot_id, 'reported': False,
                                            'error': report_error.msg}
        raise
    report = reporter.report(operation, True, result)
    result['cinder_report'] = report
    if report['reported'] or (reporter.check_mode and report['would_report']):
        result['changed'] = True
    if result.get('changed') and report['cinder_status_before'] != STATUSES[operation][0]:
        result.setdefault('warnings', []).append('nothing reported to Cinder for snapshot %s: %s'
                                                 % (reporter.snapshot_id, report['reason']))
    return result
