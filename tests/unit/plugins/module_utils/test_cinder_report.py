# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _cinder_report over the in-memory FakeCinder (Cinder's update_snapshot_status rules)."""

from __future__ import annotations

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._cinder_report import (
    CinderReporter,
    decide,
    run_with_report,
    wanted_update,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._errors import VolsnapError
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils.fake_cinder import FakeCinder

FILE_FORMAT = {'volume-v.s': 'qcow2'}


def op_result(changed=True, compute_status='creating_compute_complete'):
    return lambda: {'changed': changed, 'compute_status': compute_status if changed else None,
                    'file_format': FILE_FORMAT if changed else {}}


def failing():
    raise VolsnapError('the chain is unsafe', findings=['x'])


@pytest.fixture
def cinder():
    api = FakeCinder()
    api.vid = api.add_volume('vol')
    return api


class TestPure:
    def test_wanted(self):
        assert wanted_update('create', True) == {'status': 'creating', 'progress': '90%'}
        assert wanted_update('delete', True) == {'status': 'deleting', 'progress': '90%'}
        assert wanted_update('create', False) == {'status': 'error'}
        assert wanted_update('delete', False) == {'status': 'error_deleting'}
        with pytest.raises(VolsnapError):
            wanted_update('clone', True)

    @pytest.mark.parametrize('operation,ok,current,send', [
        ('create', True, {'status': 'creating', 'progress': '0%'}, True),
        ('create', True, {'status': 'creating', 'progress': '90%'}, False),
        ('create', True, {'status': 'available', 'progress': '100%'}, False),
        ('create', False, {'status': 'creating', 'progress': '90%'}, True),
        ('delete', True, {'status': 'deleting', 'progress': None}, True),
        ('delete', True, {'status': 'available', 'progress': '100%'}, False),
        ('delete', False, {'status': 'deleting', 'progress': '90%'}, True),
        ('delete', True, None, False),
    ])
    def test_decide(self, operation, ok, current, send):
        assert decide(operation, ok, current)[0] is send


class TestReport:
    def test_create_success_reports_compatible_form(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating', progress='0%')
        result = run_with_report(op_result(), CinderReporter(cinder, sid, False), 'create')
        report = result['cinder_report']
        assert report['reported'] and report['status'] == 'creating' and report['progress'] == '90%'
        assert report['compute_status'] == 'creating_compute_complete' and report['file_format'] == FILE_FORMAT
        assert cinder.snapshots[sid]['status'] == 'creating' and cinder.snapshots[sid]['progress'] == '90%'
        assert result['compute_status'] == 'creating_compute_complete'  # the spec's status stays in the result
        # rerun: Cinder already has it
        again = run_with_report(op_result(changed=False), CinderReporter(cinder, sid, False), 'create')
        assert not again['changed'] and not again['cinder_report']['reported']
        assert cinder.calls.count('update_snapshot_status') == 1

    def test_rerun_reports_when_first_report_was_lost(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating', progress='0%')
        result = run_with_report(op_result(changed=False), CinderReporter(cinder, sid, False), 'create')
        assert result['changed'] and result['cinder_report']['reported']

    def test_delete_success(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='deleting', progress='100%')
        result = run_with_report(op_result(compute_status='deleting_compute_complete'),
                                 CinderReporter(cinder, sid, False), 'delete')
        assert result['cinder_report']['status'] == 'deleting'
        assert cinder.snapshots[sid]['progress'] == '90%'

    @pytest.mark.parametrize('operation,start,final', [('create', 'creating', 'error'),
                                                       ('delete', 'deleting', 'error_deleting')])
    def test_failure_reports_error_and_reraises(self, cinder, operation, start, final):
        sid = cinder.add_snapshot(cinder.vid, 's', status=start)
        with pytest.raises(VolsnapError) as info:
            run_with_report(failing, CinderReporter(cinder, sid, False), operation)
        assert info.value.msg == 'the chain is unsafe' and info.value.details['findings'] == ['x']
        assert info.value.details['cinder_report']['reported']
        assert info.value.details['cinder_report']['status'] == final
        assert cinder.snapshots[sid]['status'] == final

    def test_failure_to_report_keeps_original_error(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating')
        cinder.fail['update_snapshot_status'] = VolsnapError('reporting failed (HTTP 403): Policy')
        with pytest.raises(VolsnapError) as info:
            run_with_report(failing, CinderReporter(cinder, sid, False), 'create')
        assert info.value.msg == 'the chain is unsafe'
        assert info.value.details['cinder_report'] == {'snapshot_id': sid, 'reported': False,
                                                       'error': 'reporting failed (HTTP 403): Policy'}

    def test_check_mode_reads_only(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating', progress='0%')
        result = run_with_report(op_result(changed=False), CinderReporter(cinder, sid, True), 'create')
        assert result['changed'] and result['cinder_report']['would_report']
        assert not result['cinder_report']['reported'] and 'update_snapshot_status' not in cinder.calls
        assert cinder.snapshots[sid]['progress'] == '0%'
        with pytest.raises(VolsnapError):
            run_with_report(failing, CinderReporter(cinder, sid, True), 'create')
        assert cinder.snapshots[sid]['status'] == 'creating'

    def test_wrong_cinder_status_warns(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='available')
        result = run_with_report(op_result(), CinderReporter(cinder, sid, False), 'create')
        assert not result['cinder_report']['reported'] and 'update_snapshot_status' not in cinder.calls
        assert 'status available' in result['warnings'][0]

    def test_missing_snapshot(self, cinder):
        result = run_with_report(op_result(), CinderReporter(cinder, 'nope', False), 'create')
        assert result['cinder_report']['reason'] == 'the Cinder snapshot does not exist'

    def test_no_reporter(self):
        assert run_with_report(op_result(), None, 'create') == op_result()()
