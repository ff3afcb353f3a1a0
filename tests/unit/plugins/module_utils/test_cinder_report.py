# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _cinder_report over the in-memory FakeCinder (Cinder's update_snapshot_status rules)."""

from __future__ import annotations

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.report import (
    CANNOT,
    NOTHING,
    SEND,
    CinderReporter,
    decide,
    run_members_with_reports,
    run_with_report,
    volume_id_of,
    wanted_update,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils.fake_cinder import FakeCinder, http_error

FILE_FORMAT = {'volume-v.s': 'qcow2'}


def op_result(changed=True, compute_status='creating_compute_complete'):
    return lambda: {'changed': changed, 'compute_status': compute_status if changed else None,
                    'file_format': FILE_FORMAT if changed else {}}


def failing():
    raise VolsnapError('the chain is unsafe', findings=['x'])


class Operation:
    """A share operation that records whether it ran (and what it returned)."""

    def __init__(self, changed=True, compute_status='creating_compute_complete'):
        self.ran = 0
        self.changed = changed
        self.compute_status = compute_status

    def __call__(self):
        self.ran += 1
        return op_result(self.changed, self.compute_status)()


def reporter(cinder, sid, check_mode=False, volume_id=None):
    return CinderReporter(cinder, sid, check_mode, volume_id or cinder.vid)


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

    @pytest.mark.parametrize('operation,ok,current,changed,visible,verdict', [
        # Cinder waits: send (a rerun that changed nothing sends too: the first report was lost or refused)
        ('create', True, {'status': 'creating', 'progress': '0%'}, True, True, SEND),
        ('create', True, {'status': 'creating', 'progress': '0%'}, False, True, SEND),
        ('create', True, {'status': 'creating', 'progress': '90%'}, False, True, NOTHING),
        ('create', False, {'status': 'creating', 'progress': '90%'}, False, True, SEND),
        ('delete', True, {'status': 'deleting', 'progress': None}, True, True, SEND),
        ('delete', False, {'status': 'deleting', 'progress': '90%'}, False, True, SEND),
        # Cinder moved on and the rerun changed nothing: no change
        ('create', True, {'status': 'available', 'progress': '100%'}, False, True, NOTHING),
        ('create', True, {'status': 'deleting', 'progress': '100%'}, False, True, NOTHING),
        ('delete', True, None, False, True, NOTHING),
        # the share changed now but Cinder was not waiting: the report cannot be made
        ('create', True, {'status': 'available', 'progress': '100%'}, True, True, CANNOT),
        ('delete', True, {'status': 'available', 'progress': '100%'}, True, True, CANNOT),
        ('delete', True, {'status': 'available', 'progress': '100%'}, False, True, CANNOT),
        ('delete', True, None, True, True, CANNOT),
        # Cinder gave up waiting: the share has the result, Cinder says error
        ('create', True, {'status': 'error', 'progress': '0%'}, False, True, CANNOT),
        ('delete', True, {'status': 'error_deleting', 'progress': None}, False, True, CANNOT),
        # not found
        ('create', True, None, True, True, CANNOT),
        ('create', True, None, False, False, CANNOT),
        ('delete', True, None, False, False, CANNOT),
        # the operation failed and Cinder is not waiting: nothing to report (the task fails anyway)
        ('create', False, {'status': 'available', 'progress': '100%'}, False, True, NOTHING),
    ])
    def test_decide(self, operation, ok, current, changed, visible, verdict):
        assert decide(operation, ok, current, changed=changed, volume_visible=visible)[0] == verdict

    def test_volume_id_of(self):
        vid = '0B1E5A04-7c2d-4f6e-9d8a-3a1b2c3d4e5f'
        assert volume_id_of({'volume_path': '/share/volume-%s' % vid}) == vid.lower()
        assert volume_id_of({'volume_path': None, 'volume_id': vid}) == vid.lower()
        assert volume_id_of({'volume_path': '/share/volume-%s.info' % vid}) is None
        assert volume_id_of({'volume_path': '/share/disk.img'}) is None


class TestReport:
    def test_create_success_reports_compatible_form(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating', progress='0%')
        result = run_with_report(op_result(), reporter(cinder, sid), 'create')
        report = result['cinder_report']
        assert report['reported'] and report['status'] == 'creating' and report['progress'] == '90%'
        assert report['error'] is None
        assert report['compute_status'] == 'creating_compute_complete' and report['file_format'] == FILE_FORMAT
        assert cinder.snapshots[sid]['status'] == 'creating' and cinder.snapshots[sid]['progress'] == '90%'
        assert result['compute_status'] == 'creating_compute_complete'  # the spec's status stays in the result
        # rerun: Cinder already has it
        again = run_with_report(op_result(changed=False), reporter(cinder, sid), 'create')
        assert not again['changed'] and not again['cinder_report']['reported']
        assert cinder.calls.count('update_snapshot_status') == 1

    def test_rerun_reports_when_first_report_was_lost(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating', progress='0%')
        result = run_with_report(op_result(changed=False), reporter(cinder, sid), 'create')
        assert result['changed'] and result['cinder_report']['reported']

    def test_delete_success(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='deleting', progress='100%')
        result = run_with_report(op_result(compute_status='deleting_compute_complete'), reporter(cinder, sid),
                                 'delete')
        assert result['cinder_report']['status'] == 'deleting'
        assert cinder.snapshots[sid]['progress'] == '90%'

    def test_delete_rerun_after_cinder_finished(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='deleting', progress='90%')
        del cinder.snapshots[sid]  # Cinder finished the delete: the record is gone, the volume is still there
        operation = Operation(changed=False, compute_status=None)
        result = run_with_report(operation, reporter(cinder, sid), 'delete')
        assert operation.ran == 1 and not result['changed'] and 'no longer exists' in result['cinder_report']['reason']

    @pytest.mark.parametrize('operation,start,final', [('create', 'creating', 'error'),
                                                       ('delete', 'deleting', 'error_deleting')])
    def test_failure_reports_error_and_reraises(self, cinder, operation, start, final):
        sid = cinder.add_snapshot(cinder.vid, 's', status=start)
        with pytest.raises(VolsnapError) as info:
            run_with_report(failing, reporter(cinder, sid), operation)
        assert info.value.msg == 'the chain is unsafe' and info.value.details['findings'] == ['x']
        assert info.value.details['cinder_report']['reported']
        assert info.value.details['cinder_report']['status'] == final
        assert cinder.snapshots[sid]['status'] == final

    def test_failure_to_report_a_failure_says_so(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating')
        cinder.fail['update_snapshot_status'] = http_error(403, 'Policy does not allow update_snapshot_status')
        with pytest.raises(VolsnapError) as info:
            run_with_report(failing, reporter(cinder, sid), 'create')
        msg = info.value.msg
        assert msg.startswith('the chain is unsafe. Cinder could not be told about this failure')
        assert 'HTTP 403' in msg and 'run the same task again' in msg and str(info.value) == msg
        report = info.value.details['cinder_report']
        assert report['reported'] is False and report['api_status_code'] == 403
        assert cinder.snapshots[sid]['status'] == 'creating'

    def test_check_mode_reads_only(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating', progress='0%')
        result = run_with_report(op_result(changed=False), reporter(cinder, sid, check_mode=True), 'create')
        assert result['changed'] and result['cinder_report']['would_report']
        assert not result['cinder_report']['reported'] and 'update_snapshot_status' not in cinder.calls
        assert cinder.snapshots[sid]['progress'] == '0%'
        with pytest.raises(VolsnapError):
            run_with_report(failing, reporter(cinder, sid, check_mode=True), 'create')
        assert cinder.snapshots[sid]['status'] == 'creating'

    def test_no_reporter(self):
        assert run_with_report(op_result(), None, 'create') == op_result()()


class TestCannotReport:
    """A report that cannot be made fails the task; the share operation is never undone because of it."""

    def test_refused_update_fails_after_the_operation_and_a_rerun_reports(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating', progress='0%')
        cinder.fail['update_snapshot_status'] = http_error(403, "Policy doesn't allow snapshot_extension:"
                                                                "snapshot_actions:update_snapshot_status")
        operation = Operation()
        with pytest.raises(VolsnapError) as info:
            run_with_report(operation, reporter(cinder, sid), 'create')
        err = info.value
        assert operation.ran == 1
        assert 'is complete on the share and journaled' in err.msg and 'nothing is rolled back' in err.msg
        assert 'Cinder refused the status update' in err.msg and 'HTTP 403' in err.msg
        assert 'in status creating (progress 0%)' in err.msg and 'run the same task again' in err.msg
        # the operation's result is in the failure: changed, compute status, file format
        assert err.details['changed'] is True and err.details['file_format'] == FILE_FORMAT
        assert err.details['cinder_report']['reported'] is False and err.details['cinder_report']['error']
        assert cinder.snapshots[sid] == dict(cinder.snapshots[sid], status='creating', progress='0%')
        # with working credentials a rerun (no change on the share) sends the report
        del cinder.fail['update_snapshot_status']
        again = run_with_report(Operation(changed=False), reporter(cinder, sid), 'create')
        assert again['changed'] and again['cinder_report']['reported'] and cinder.snapshots[sid]['progress'] == '90%'
        # and the next one is a no-op
        assert not run_with_report(Operation(changed=False), reporter(cinder, sid), 'create')['changed']

    @pytest.mark.parametrize('operation', ['create', 'delete'])
    def test_snapshot_and_volume_invisible_refused_before_the_operation(self, cinder, operation):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating' if operation == 'create' else 'deleting')
        other = FakeCinder()  # another project: neither the snapshot nor the volume exist for it
        share_op = Operation()
        with pytest.raises(VolsnapError) as info:
            run_with_report(share_op, reporter(other, sid, volume_id=cinder.vid), operation)
        assert share_op.ran == 0 and info.value.msg.startswith('Nothing was changed on the share')
        assert 'see neither the Cinder snapshot nor its volume' in info.value.msg
        assert 'member of the project that owns it' in info.value.msg
        assert info.value.details['cinder_report']['reported'] is False
        assert 'update_snapshot_status' not in other.calls

    def test_unreadable_snapshot_refused_before_the_operation(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='creating')
        cinder.fail['get_snapshot'] = http_error(403, 'Policy does not allow volume:get_snapshot')
        share_op = Operation()
        with pytest.raises(VolsnapError, match='Nothing was changed on the share.*HTTP 403'):
            run_with_report(share_op, reporter(cinder, sid, check_mode=True), 'create')
        assert share_op.ran == 0

    def test_create_of_a_snapshot_cinder_does_not_have(self, cinder):
        share_op = Operation()
        with pytest.raises(VolsnapError, match='does not exist .HTTP 404., although its volume is visible'):
            run_with_report(share_op, reporter(cinder, '0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f'), 'create')
        assert share_op.ran == 0

    def test_snapshot_of_another_volume(self, cinder):
        other_volume = cinder.add_volume('other')
        sid = cinder.add_snapshot(other_volume, 's', status='creating')
        share_op = Operation()
        with pytest.raises(VolsnapError, match='belongs to volume %s, not to volume %s' % (other_volume, cinder.vid)):
            run_with_report(share_op, reporter(cinder, sid), 'create')
        assert share_op.ran == 0 and cinder.snapshots[sid]['status'] == 'creating'

    def test_delete_merged_now_but_snapshot_gone(self, cinder):
        share_op = Operation(compute_status='deleting_compute_complete')
        with pytest.raises(VolsnapError, match='is complete on the share') as info:
            run_with_report(share_op, reporter(cinder, '0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f'), 'delete')
        assert share_op.ran == 1 and info.value.details['changed'] is True

    def test_not_waiting_fails_when_the_share_changed_and_converges_on_rerun(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='available')
        with pytest.raises(VolsnapError) as info:
            run_with_report(Operation(), reporter(cinder, sid), 'create')
        assert 'status available' in info.value.msg and 'not waiting' in info.value.msg
        assert 'openstack snapshot set --state' in info.value.msg
        assert 'update_snapshot_status' not in cinder.calls
        again = run_with_report(Operation(changed=False), reporter(cinder, sid), 'create')
        assert not again['changed'] and 'moved on' in again['cinder_report']['reason']

    def test_check_mode_predicts_the_failure(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='available')
        with pytest.raises(VolsnapError, match='^check mode: a real run would complete the create on the share and '
                                               'then fail'):
            run_with_report(Operation(), reporter(cinder, sid, check_mode=True), 'create')

    def test_cinder_gave_up(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 's', status='error')
        with pytest.raises(VolsnapError, match='gave up waiting'):
            run_with_report(Operation(changed=False), reporter(cinder, sid), 'create')


class TestMembersReport:
    """run_members_with_reports: a group snapshot's (or group delete's) members each reported."""

    def members(self, cinder, statuses):
        vids = [cinder.add_volume('vol%d' % index) for index in range(len(statuses))]
        sids = [cinder.add_snapshot(vid, 's%d' % index, status=status, progress='0%')
                for index, (vid, status) in enumerate(zip(vids, statuses))]
        reporters = [CinderReporter(cinder, sid, False, vid) for sid, vid in zip(sids, vids)]
        return sids, reporters, ['/share/volume-%s' % vid for vid in vids]

    @staticmethod
    def group_result(paths, changed=True):
        return {'changed': changed, 'volumes': [
            {'volume_path': path, 'changed': changed, 'failed': False, 'file_format': FILE_FORMAT,
             'compute_status': 'creating_compute_complete' if changed else None} for path in paths]}

    def test_success_reports_every_member_and_a_rerun_nothing(self, cinder):
        sids, reporters, paths = self.members(cinder, ['creating', 'creating'])
        result = run_members_with_reports(lambda: self.group_result(paths), reporters, paths, 'create')
        assert [v['cinder_report']['reported'] for v in result['volumes']] == [True, True]
        assert [cinder.snapshots[sid]['progress'] for sid in sids] == ['90%', '90%']
        again = run_members_with_reports(lambda: self.group_result(paths, changed=False), reporters, paths, 'create')
        assert again['changed'] is False and not any(v['cinder_report']['reported'] for v in again['volumes'])

    def test_one_member_that_cannot_be_reported_stops_the_group_before_it_runs(self, cinder):
        sids, reporters, paths = self.members(cinder, ['creating', 'creating'])
        del cinder.snapshots[sids[1]]  # a create of a snapshot Cinder does not have
        ran = []
        with pytest.raises(VolsnapError) as info:
            run_members_with_reports(lambda: ran.append(1) or self.group_result(paths), reporters, paths, 'create')
        assert not ran and info.value.details['failed_volumes'] == [paths[1]]
        assert 'nothing was changed on any volume' in info.value.msg and paths[1] in info.value.msg
        assert cinder.snapshots[sids[0]]['progress'] == '0%'

    def test_a_rolled_back_group_reports_every_members_failure(self, cinder):
        sids, reporters, paths = self.members(cinder, ['creating', 'creating'])

        def rolled_back():
            raise VolsnapError('Every member was rolled back', rolled_back=True, failed_volumes=[paths[1]],
                               volumes=[{'volume_path': paths[0], 'failed': False},
                                        {'volume_path': paths[1], 'failed': True}])

        with pytest.raises(VolsnapError) as info:
            run_members_with_reports(rolled_back, reporters, paths, 'create')
        assert [cinder.snapshots[sid]['status'] for sid in sids] == ['error', 'error']
        assert [v['cinder_report']['status'] for v in info.value.details['volumes']] == ['error', 'error']
        assert info.value.msg == 'Every member was rolled back'

    def test_a_committed_group_reports_the_completed_members_success(self, cinder):
        sids, reporters, paths = self.members(cinder, ['creating', 'creating'])

        def half_complete():
            raise VolsnapError('completing 1 of its volumes failed', committed=True, failed_volumes=[paths[0]],
                               volumes=[{'volume_path': paths[0], 'failed': True},
                                        {'volume_path': paths[1], 'failed': False}])

        with pytest.raises(VolsnapError):
            run_members_with_reports(half_complete, reporters, paths, 'create')
        assert [cinder.snapshots[sid]['status'] for sid in sids] == ['error', 'creating']
        assert cinder.snapshots[sids[1]]['progress'] == '90%'

    def test_a_report_refused_after_success_fails_naming_the_volume(self, cinder):
        sids, reporters, paths = self.members(cinder, ['creating', 'creating'])
        cinder.fail['update_snapshot_status'] = http_error(403, 'Policy does not allow update_snapshot_status')
        with pytest.raises(VolsnapError) as info:
            run_members_with_reports(lambda: self.group_result(paths), reporters, paths, 'create')
        assert info.value.details['failed_volumes'] == paths and 'HTTP 403' in info.value.msg
        assert info.value.details['changed'] is True  # the share operation is complete and kept
