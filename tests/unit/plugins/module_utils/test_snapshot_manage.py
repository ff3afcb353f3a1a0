# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _snapshot_manage's logic over the in-memory FakeCinder (fake_cinder.py)."""

from __future__ import annotations

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._openstack import cinder as _cinder
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import openstack_argument_spec
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.cinder import CinderApi, cinder_api, snapshot_view
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.manage import (
    ManageableQuery,
    ManageRequest,
    SnapshotManage,
    cinder_id_in_ref,
    entry_of_volume,
    list_manageable,
    manage_snapshot,
    manageable_info,
    manageable_snapshots,
    normalize_ref,
    same_ref,
)
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils.fake_cinder import FakeCinder, http_error


class Clock:
    def __init__(self):
        self.now = 0.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def run(api, check_mode=False, **kwargs):
    clock = Clock()
    kwargs.setdefault('state', 'present')
    kwargs.setdefault('volume', 'vol1')
    return SnapshotManage(api, ManageRequest(**kwargs), check_mode, interval=1, sleep=clock.sleep,
                          clock=clock.clock).run()


@pytest.fixture
def cinder():
    api = FakeCinder()
    vid = api.add_volume('vol1')
    api.add_backend_snapshot(vid, 'nightly', size=2)
    api.vid = vid
    return api


class TestHelpers:
    def test_normalize_ref(self):
        assert normalize_ref('snap') == {'source-name': 'snap'}
        assert normalize_ref({'source-id': 5}) == {'source-id': 5}
        for bad in ('', '  ', {}, 5, ['a']):
            with pytest.raises(VolsnapError):
                normalize_ref(bad)

    def test_same_ref_and_cinder_id(self):
        assert same_ref({'source-name': 'a'}, {'source-name': 'a'})
        assert same_ref({'source-id': 1}, {'source-id': '1'})
        assert not same_ref({'source-name': 'a'}, None)
        sid = '0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f'
        assert cinder_id_in_ref({'source-name': 'snapshot-%s' % sid}) == sid
        assert cinder_id_in_ref({'source-name': 'snapshot-%s' % sid.upper()}) == sid
        assert cinder_id_in_ref({'source-name': 'nightly'}) is None
        assert cinder_id_in_ref({'source-name': 'snapshot-%s.x' % sid}) is None

    def test_entry_of_volume(self):
        assert entry_of_volume({'source_reference': {'source-name': 'volume-abc'}}, 'abc')
        assert not entry_of_volume({'source_reference': {'source-name': 'volume-abd'}}, 'abc')
        assert entry_of_volume({'source_reference': None}, 'abc')

    def test_snapshot_view_from_api_json(self):
        view = snapshot_view({'id': 's', 'name': 'n', 'status': 'available', 'size': 1, 'volume_id': 'v',
                              'metadata': None, 'os-extended-snapshot-attributes:progress': '90%',
                              'os-extended-snapshot-attributes:project_id': 'p', 'extra': 1})
        assert view['progress'] == '90%' and view['project_id'] == 'p' and view['metadata'] == {}
        assert 'extra' not in view
        assert snapshot_view(None) is None


class TestManage:
    def test_manage_then_idempotent(self, cinder):
        result = run(cinder, ref='nightly', name='imported', description='d', metadata={'a': 1})
        snap = result['snapshot']
        assert result['changed'] and result['action'] == 'manage'
        assert snap['status'] == 'available' and snap['size'] == 2 and snap['metadata'] == {'a': '1'}
        assert 'snapshot-%s' % snap['id'] in cinder.backend[cinder.vid]
        assert 'nightly' not in cinder.backend[cinder.vid]
        assert result['diff'] == {'before': {}, 'after': snap}
        again = run(cinder, ref='nightly', name='imported', description='d', metadata={'a': '1'})
        assert not again['changed'] and again['action'] == 'none' and again['found_by'] == 'name'
        assert again['snapshot']['id'] == snap['id']

    def test_check_mode_changes_nothing(self, cinder):
        result = run(cinder, check_mode=True, ref='nightly', name='imported')
        assert result['changed'] and result['action'] == 'manage' and result['snapshot']['id'] is None
        assert 'manage' not in cinder.calls and not cinder.snapshots
        assert 'warnings' not in result

    @pytest.mark.parametrize('cleanup', [False, True])
    def test_check_mode_fails_like_the_real_run_when_ref_not_on_backend(self, cinder, cleanup):
        with pytest.raises(VolsnapError) as check:
            run(cinder, check_mode=True, ref='missing', name='imported', cleanup_on_error=cleanup)
        msg = check.value.msg
        assert msg.startswith('check mode: a real run would fail: Cinder could not manage {"source-name": "missing"}')
        assert 'the reference is not on the backend' in msg and 'Manageable on this volume: {"source-name": ' \
            '"nightly"}' in msg
        assert ('remove that error record' in msg) is cleanup and ('leave that error record' in msg) is not cleanup
        assert check.value.details['manageable_references'] == [{'source-name': 'nightly'}]
        assert 'manage' not in cinder.calls and not cinder.snapshots
        # the real run: the same reason, after Cinder put the record in error
        with pytest.raises(VolsnapError) as real:
            run(cinder, ref='missing', name='imported', cleanup_on_error=cleanup)
        assert 'the reference is not on the backend' in real.value.msg and 'manage' in cinder.calls
        reason = msg.split('the reference is not on the backend')[1].split('.')[0]
        assert reason in real.value.msg

    def test_check_mode_without_listing_says_it_cannot_tell(self, cinder):
        cinder.fail['manageable_page'] = http_error(403, 'Policy does not allow list_manageable')
        with pytest.raises(VolsnapError, match='check mode cannot tell whether Cinder can manage .*HTTP 403'):
            run(cinder, check_mode=True, ref='nightly', name='imported')
        cinder.hide_host = True
        with pytest.raises(VolsnapError, match='check mode cannot tell.*host is not visible'):
            run(cinder, check_mode=True, ref='nightly', name='imported')
        assert 'manage' not in cinder.calls

    def test_check_mode_refuses_not_safe_as_the_real_run(self, cinder):
        cinder.add_backend_snapshot(cinder.vid, 'volume-x.clone_snap')
        for check_mode in (True, False):
            with pytest.raises(VolsnapError, match='not safe to manage: used for clone snap'):
                run(cinder, check_mode=check_mode, ref='volume-x.clone_snap', name='x')
        assert 'manage' not in cinder.calls

    def test_found_through_listing_cinder_id_and_renamed(self, cinder):
        first = run(cinder, ref='nightly', name='imported')
        sid = first['snapshot']['id']
        result = run(cinder, ref='snapshot-%s' % sid, name='renamed')
        assert result['changed'] and result['action'] == 'update' and result['found_by'] == 'reference'
        assert cinder.snapshots[sid]['name'] == 'renamed'
        assert result['diff']['before']['name'] == 'imported' and result['diff']['after']['name'] == 'renamed'

    def test_listing_cinder_id_finds_snapshot_of_other_name(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 'other')
        cinder.add_backend_snapshot(cinder.vid, 'custom-ref')
        # a driver whose listing gives the cinder_id for a reference that is not snapshot-<id>
        original = cinder.manageable_page

        def page(*args, **kwargs):
            entries, legacy = original(*args, **kwargs)
            for entry in entries:
                if entry['reference'] == {'source-name': 'custom-ref'}:
                    entry.update(cinder_id=sid, safe_to_manage=False, reason_not_safe='already managed')
            return entries, legacy
        cinder.manageable_page = page
        result = run(cinder, ref='custom-ref', name='wanted')
        assert result['found_by'] == 'manageable listing' and result['action'] == 'update'
        assert cinder.snapshots[sid]['name'] == 'wanted' and 'manage' not in cinder.calls

    def test_update_description_and_metadata_merge(self, cinder):
        sid = run(cinder, ref='nightly', name='imported', metadata={'a': '1', 'b': '2'})['snapshot']['id']
        result = run(cinder, check_mode=True, ref='nightly', name='imported', description='new', metadata={'b': '3'})
        assert result['changed'] and result['action'] == 'update'
        assert cinder.snapshots[sid]['metadata'] == {'a': '1', 'b': '2'} and cinder.snapshots[sid]['description'] is None
        result = run(cinder, ref='nightly', name='imported', description='new', metadata={'b': '3'})
        assert result['changed'] and cinder.snapshots[sid]['metadata'] == {'a': '1', 'b': '3'}
        assert result['snapshot']['description'] == 'new'

    def test_parent_volume_missing(self, cinder):
        with pytest.raises(VolsnapError, match='parent volume nope was not found'):
            run(cinder, volume='nope', ref='nightly', name='x')

    def test_requires_ref_and_name(self, cinder):
        with pytest.raises(VolsnapError, match='needs ref'):
            run(cinder, ref='nightly')

    def test_not_safe_is_refused(self, cinder):
        cinder.add_backend_snapshot(cinder.vid, 'volume-x.clone_snap')
        with pytest.raises(VolsnapError, match='not safe to manage: used for clone snap'):
            run(cinder, ref='volume-x.clone_snap', name='x')
        assert 'manage' not in cinder.calls

    def test_bad_ref_keeps_error_record_by_default(self, cinder):
        with pytest.raises(VolsnapError) as info:
            run(cinder, ref='missing', name='x')
        err = info.value
        sid = err.details['snapshot']['id']
        assert 'ended in status error' in err.msg and 'the reference is not on the backend' in err.msg
        assert 'stays in Cinder' in err.msg and err.details['cleaned_up'] is False
        assert cinder.snapshots[sid]['status'] == 'error'
        # a rerun finds the error record by name and refuses
        with pytest.raises(VolsnapError, match='exists in status error'):
            run(cinder, ref='missing', name='x')

    def test_bad_ref_cleanup_deletes_record(self, cinder):
        with pytest.raises(VolsnapError) as info:
            run(cinder, ref='missing', name='x', cleanup_on_error=True)
        assert info.value.details['cleaned_up'] is True and 'was removed' in info.value.msg
        assert not cinder.snapshots and 'delete' in cinder.calls and 'unmanage' not in cinder.calls
        assert cinder.backend[cinder.vid] == {'nightly': 2}

    def test_cleanup_unmanages_when_backend_holds_the_record(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 'x', status='error')
        cinder.add_backend_snapshot(cinder.vid, 'snapshot-%s' % sid, size=2)
        result = run(cinder, ref='nightly', name='x', cleanup_on_error=True)
        assert result['changed'] and result['replaced'] == sid
        assert 'unmanage' in cinder.calls and 'delete' not in cinder.calls
        assert 'snapshot-%s' % sid in cinder.backend[cinder.vid]  # data kept
        assert result['snapshot']['status'] == 'available' and result['snapshot']['id'] != sid

    def test_cleanup_refused_without_listing(self, cinder):
        cinder.add_snapshot(cinder.vid, 'x', status='error')
        cinder.fail['manageable_page'] = http_error(403, 'Policy does not allow list_manageable')
        with pytest.raises(VolsnapError, match='cannot remove the error record .* safely'):
            run(cinder, ref='nightly', name='x', cleanup_on_error=True)

    def test_check_mode_with_error_record_and_cleanup(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 'x', status='error')
        result = run(cinder, check_mode=True, ref='nightly', name='x', cleanup_on_error=True)
        assert result['changed'] and result['replaced'] == sid and cinder.snapshots[sid]['status'] == 'error'
        assert 'would be removed' in result['warnings'][0]

    def test_check_mode_with_error_record_and_bad_ref(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 'x', status='error')
        with pytest.raises(VolsnapError) as info:
            run(cinder, check_mode=True, ref='missing', name='x', cleanup_on_error=True)
        assert 'a real run would fail' in info.value.msg and 'remove the error record %s, send' % sid in info.value.msg
        assert cinder.snapshots[sid]['status'] == 'error' and 'delete' not in cinder.calls
        cinder.hide_host = True
        with pytest.raises(VolsnapError, match='cannot remove the error record .* safely'):
            run(cinder, check_mode=True, ref='nightly', name='x', cleanup_on_error=True)

    def test_existing_in_wrong_state(self, cinder):
        cinder.add_snapshot(cinder.vid, 'x', status='deleting')
        with pytest.raises(VolsnapError, match='is in status deleting'):
            run(cinder, ref='nightly', name='x')

    def test_existing_creating_is_waited_for(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 'x', status='creating')
        cinder.pending[sid] = [lambda: None, lambda: cinder.snapshots[sid].update(status='available')]
        result = run(cinder, ref='nightly', name='x')
        assert not result['changed'] and result['snapshot']['status'] == 'available'

    def test_no_wait_returns_creating(self, cinder):
        result = run(cinder, ref='nightly', name='x', wait=False)
        assert result['changed'] and result['snapshot']['status'] == 'creating'

    def test_timeout(self, cinder):
        cinder.pending.clear()
        original = cinder.manage

        def manage(*args):
            snap, legacy = original(*args)
            cinder.pending[snap['id']] = []
            return snap, legacy
        cinder.manage = manage
        with pytest.raises(VolsnapError, match='still creating after 5 seconds'):
            run(cinder, ref='nightly', name='x', timeout=5)

    def test_policy_refusal_is_passed_through(self, cinder):
        cinder.fail['manage'] = http_error(403, "Policy doesn't allow snapshot_extension:snapshot_manage")
        with pytest.raises(VolsnapError, match='HTTP 403'):
            run(cinder, ref='nightly', name='x')

    def test_listing_unreadable_still_manages(self, cinder):
        cinder.hide_host = True
        result = run(cinder, ref='nightly', name='x')
        assert result['changed'] and result['snapshot']['status'] == 'available'

    def test_bad_ref_without_listing_explains(self, cinder):
        cinder.hide_host = True
        with pytest.raises(VolsnapError, match='keeps no reason in its API'):
            run(cinder, ref='missing', name='x')

    def test_duplicate_names(self, cinder):
        cinder.add_snapshot(cinder.vid, 'x')
        cinder.add_snapshot(cinder.vid, 'x')
        with pytest.raises(VolsnapError, match='has 2 snapshots named x'):
            run(cinder, ref='nightly', name='x')


class TestUnmanage:
    def test_unmanage_then_idempotent(self, cinder):
        sid = run(cinder, ref='nightly', name='imported')['snapshot']['id']
        check = run(cinder, check_mode=True, state='absent', name='imported')
        assert check['changed'] and sid in cinder.snapshots
        result = run(cinder, state='absent', name='imported')
        assert result['changed'] and result['action'] == 'unmanage' and result['snapshot']['id'] == sid
        assert sid not in cinder.snapshots and 'snapshot-%s' % sid in cinder.backend[cinder.vid]
        assert result['diff'] == {'before': result['snapshot'], 'after': {}}
        again = run(cinder, state='absent', name='imported')
        assert not again['changed'] and again['snapshot'] is None

    def test_unmanage_by_id_and_by_ref(self, cinder):
        sid = run(cinder, ref='nightly', name='a')['snapshot']['id']
        assert run(cinder, state='absent', name=sid)['found_by'] == 'id'
        cinder.add_backend_snapshot(cinder.vid, 'other')
        sid2 = run(cinder, ref='other', name='b')['snapshot']['id']
        assert run(cinder, state='absent', ref='snapshot-%s' % sid2)['found_by'] == 'reference'

    def test_wrong_state(self, cinder):
        cinder.add_snapshot(cinder.vid, 'x', status='creating')
        with pytest.raises(VolsnapError, match='is in status creating: Cinder unmanages only snapshots in status '
                                               'available or error'):
            run(cinder, state='absent', name='x')

    def test_missing_volume_is_no_change(self, cinder):
        result = run(cinder, state='absent', volume='gone', name='x')
        assert not result['changed'] and 'does not exist' in result['msg']

    def test_needs_name_or_ref(self, cinder):
        with pytest.raises(VolsnapError, match='state=absent needs name'):
            run(cinder, state='absent')

    def test_unmanage_failure_reported(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 'x', status='available')  # no backend snapshot behind it
        with pytest.raises(VolsnapError, match='could not unmanage snapshot .* error_deleting'):
            run(cinder, state='absent', name='x')
        assert cinder.snapshots[sid]['status'] == 'error_deleting'

    def test_unmanaging_already(self, cinder):
        sid = cinder.add_snapshot(cinder.vid, 'x', status='unmanaging')
        cinder.pending[sid] = [lambda: None, lambda: cinder.snapshots.pop(sid)]
        result = run(cinder, state='absent', name='x')
        assert not result['changed'] and sid not in cinder.snapshots


class TestListing:
    def fill(self, api, count):
        vid = api.add_volume('big')
        for i in range(count):
            api.add_backend_snapshot(vid, 's%03d' % i)
        return vid

    def test_fetch_all_pages(self):
        api = FakeCinder()
        self.fill(api, 7)
        got = list_manageable(api, 'h', None, page_size=3)
        assert [e['reference']['source-name'] for e in got['manageable_snapshots']] == ['s%03d' % i for i in range(7)]
        assert got['next_marker'] is None
        assert api.calls.count('manageable_page') == 3

    def test_one_page_and_next_marker(self):
        api = FakeCinder()
        self.fill(api, 5)
        page = list_manageable(api, 'h', None, limit=2)
        assert page['next_marker'] == {'source-name': 's001'}
        page2 = list_manageable(api, 'h', None, limit=2, marker=page['next_marker'])
        assert [e['reference']['source-name'] for e in page2['manageable_snapshots']] == ['s002', 's003']
        last = list_manageable(api, 'h', None, limit=2, marker={'source-name': 's003'})
        assert len(last['manageable_snapshots']) == 1 and last['next_marker'] is None

    def test_backend_ignoring_marker_does_not_loop(self):
        api = FakeCinder()
        self.fill(api, 4)
        api.ignore_marker = True
        got = list_manageable(api, 'h', None, page_size=2)
        assert len(got['manageable_snapshots']) == 4 and api.calls.count('manageable_page') == 2

    def test_fetch_all_restarts_when_marker_entry_vanishes(self):
        api = FakeCinder()
        vid = self.fill(api, 5)
        removed = []

        def remove_once(fake, _page):
            if not removed:  # someone removes the last entry of the first page, once
                removed.append(fake.backend[vid].pop('s001'))
        api.after_page = remove_once
        got = list_manageable(api, 'h', None, page_size=2)
        assert [e['reference']['source-name'] for e in got['manageable_snapshots']] == ['s000', 's002', 's003',
                                                                                        's004']

    def test_fetch_all_gives_up_after_retries(self):
        api = FakeCinder()
        vid = self.fill(api, 30)

        def remove_last_of_page(fake, page):  # the marker of the next page always vanishes
            if page:
                fake.backend[vid].pop(page[-1]['reference']['source-name'], None)
        api.after_page = remove_last_of_page
        with pytest.raises(VolsnapError, match='marker not found'):
            list_manageable(api, 'h', None, page_size=2)
        assert api.calls.count('manageable_page') == 6

    def test_lost_marker_of_one_page_explained(self):
        api = FakeCinder()
        self.fill(api, 3)
        with pytest.raises(VolsnapError, match='no longer has the marker entry .* start again without marker'):
            list_manageable(api, 'h', None, limit=2, marker={'source-name': 'gone'})

    def test_argument_errors(self):
        api = FakeCinder()
        for kwargs, match in (({'host': None, 'cluster': None}, 'give host'),
                              ({'host': 'h', 'cluster': 'c'}, 'not both'),
                              ({'host': 'h', 'cluster': None, 'limit': 0}, 'limit must be at least 1'),
                              ({'host': 'h', 'cluster': None, 'offset': -1}, 'offset must not be negative')):
            with pytest.raises(VolsnapError, match=match):
                list_manageable(api, **kwargs)

    def test_info_of_one_volume(self, cinder):
        other = cinder.add_volume('vol2')
        cinder.add_backend_snapshot(other, 'foreign')
        sid = run(cinder, ref='nightly', name='imported')['snapshot']['id']
        cinder.add_backend_snapshot(cinder.vid, 'fresh')
        info = manageable_info(cinder, ManageableQuery(volume='vol1'))
        assert info['host'] == cinder.host and not info['changed']
        by_name = {e['reference']['source-name']: e for e in info['manageable_snapshots']}
        assert set(by_name) == {'fresh', 'snapshot-%s' % sid}
        assert by_name['snapshot-%s' % sid]['cinder_id'] == sid and not by_name['snapshot-%s' % sid]['safe_to_manage']
        assert by_name['fresh']['safe_to_manage'] and by_name['fresh']['cinder_id'] is None
        after = manageable_info(cinder, ManageableQuery(host=cinder.host, marker='foreign'))
        assert [e['reference']['source-name'] for e in after['manageable_snapshots']] == [
            'fresh', 'snapshot-%s' % sid]

    def test_info_volume_errors(self, cinder):
        with pytest.raises(VolsnapError, match='volume nope was not found'):
            manageable_info(cinder, ManageableQuery(volume='nope'))
        cinder.hide_host = True
        with pytest.raises(VolsnapError, match='give host or cluster'):
            manageable_info(cinder, ManageableQuery(volume='vol1'))


class FakeEndpoint:
    def __init__(self, low, high):
        self.min_microversion = low
        self.max_microversion = high


class FakeProxy:
    def __init__(self, low, high):
        self.endpoint = FakeEndpoint(low, high)
        self.requests = []

    def get_endpoint_data(self):
        return self.endpoint

    def request(self, url, method, **kwargs):
        import json
        import requests
        self.requests.append((method, url, kwargs))
        resp = requests.Response()
        resp.status_code = 202
        body = {'snapshot': {'id': 's1', 'status': 'creating', 'volume_id': 'v'}} if method == 'POST' else \
            {'manageable-snapshots': []}
        resp._content = json.dumps(body).encode()
        resp.headers['content-type'] = 'application/json'
        return resp


class FakeConn:
    def __init__(self, low, high):
        self.block_storage = FakeProxy(low, high)


class TestCinderApiMicroversions:
    """Which URL and microversion CinderApi sends (the REST layer itself is tested on the real lab)."""

    def test_new_cloud_uses_manageable_snapshots(self):
        api = CinderApi(FakeConn('3.0', '3.70'))
        snap, legacy = api.manage('v', {'source-name': 'a'}, 'n', None, None)
        method, url, kwargs = api.proxy.requests[0]
        assert (url, kwargs['microversion'], legacy) == ('/manageable_snapshots', '3.65', False)
        assert kwargs['json'] == {'snapshot': {'volume_id': 'v', 'ref': {'source-name': 'a'}, 'name': 'n'}}
        assert snap['id'] == 's1'

    def test_old_cloud_uses_legacy_extension(self):
        api = CinderApi(FakeConn('3.0', '3.7'))
        _snap, legacy = api.manage('v', {'source-name': 'a'}, None, None, None)
        assert legacy and api.proxy.requests[0][1] == '/os-snapshot-manage'
        assert api.proxy.requests[0][2]['microversion'] is None
        _entries, legacy = api.manageable_page('h', None)
        assert legacy and api.proxy.requests[1][1] == '/os-snapshot-manage/detail'

    def test_cap_forces_legacy(self):
        api = CinderApi(FakeConn('3.0', '3.70'), max_microversion='3.7')
        assert api.manage('v', {'source-name': 'a'}, None, None, None)[1]
        assert CinderApi(FakeConn('3.0', '3.70'), max_microversion='3.20').microversion('3.8') == '3.20'

    def test_cluster_needs_3_17(self):
        api = CinderApi(FakeConn('3.0', '3.10'))
        with pytest.raises(VolsnapError, match='needs Block Storage API microversion 3.17'):
            api.manageable_page(None, 'cl')
        api = CinderApi(FakeConn('3.0', '3.70'))
        api.manageable_page(None, 'cl', limit=5, marker={'source-name': 'x'}, offset=1, sort='size:desc')
        method, url, kwargs = api.proxy.requests[0]
        assert (method, url, kwargs['microversion']) == ('GET', '/manageable_snapshots/detail', '3.65')
        assert kwargs['params'] == {'cluster': 'cl', 'limit': 5, 'marker': '{"source-name": "x"}', 'offset': 1,
                                    'sort': 'size:desc'}

    def test_status_update_body(self):
        api = CinderApi(FakeConn('3.0', '3.70'))
        api.update_snapshot_status('s1', 'creating', '90%')
        method, url, kwargs = api.proxy.requests[0]
        assert (method, url) == ('POST', '/snapshots/s1/action')
        assert kwargs['json'] == {'os-update_snapshot_status': {'status': 'creating', 'progress': '90%'}}


def module_params(with_wait, **options):
    """Parameters as AnsibleModule gives them: every option of the spec, unset ones None or their default."""
    params = {name: spec.get('default') for name, spec in openstack_argument_spec(wait=with_wait).items()}
    params.update(options)
    return params


class TestModuleRuns:
    """manage_snapshot and manageable_snapshots: the modules' whole run, from their parameters."""

    MANAGE_OPTIONS = dict(state='present', volume='vol1', ref=None, name=None, description=None, metadata=None,
                          cleanup_on_error=False, block_storage_microversion=None)
    INFO_OPTIONS = dict(host=None, cluster=None, volume=None, limit=None, marker=None, offset=None, sort=None,
                        block_storage_microversion=None)

    def manage_params(self, **options):
        return module_params(True, **dict(self.MANAGE_OPTIONS, **options))

    def test_manage_maps_every_option(self, cinder):
        result = manage_snapshot(self.manage_params(ref='nightly', name='imported', description='d',
                                                    metadata={'a': '1'}, wait=False), False, api=cinder)
        assert result['changed'] and result['action'] == 'manage'
        snap = result['snapshot']
        assert (snap['name'], snap['description'], snap['metadata'], snap['status']) == (
            'imported', 'd', {'a': '1'}, 'creating')  # wait=false: not waited for
        assert result['diff']['before'] == {} and result['diff']['after']['id'] == snap['id']

    def test_manage_check_mode_and_absent(self, cinder):
        planned = manage_snapshot(self.manage_params(ref='nightly', name='imported'), True, api=cinder)
        assert planned['changed'] and planned['snapshot']['id'] is None and 'manage' not in cinder.calls
        sid = cinder.add_snapshot(cinder.vid, 'old')
        gone = manage_snapshot(self.manage_params(state='absent', name='old', wait=False), False, api=cinder)
        assert gone['action'] == 'unmanage' and gone['snapshot']['id'] == sid and 'unmanage' in cinder.calls

    def test_manageable_snapshots_is_manageable_info(self, cinder):
        params = module_params(False, **self.INFO_OPTIONS)
        params.update(volume='vol1', limit=5)
        assert manageable_snapshots(params, api=cinder) == manageable_info(
            cinder, ManageableQuery(volume='vol1', limit=5))
        assert manageable_snapshots(params, api=cinder)['manageable_snapshots'][0]['reference'] == {
            'source-name': 'nightly'}

    def test_cinder_api_caps_at_the_microversion_option(self, monkeypatch):
        seen = []

        def connect(params, microversion):
            seen.append((params['cloud'], microversion))
            return FakeConn('3.0', '3.70')
        monkeypatch.setattr(_cinder, 'connect', connect)
        api = cinder_api(module_params(False, cloud='lab', block_storage_microversion='3.10'))
        assert seen == [('lab', '3.10')]
        assert api.microversion() == '3.10'
        assert cinder_api(module_params(False, cloud='lab', block_storage_microversion=None)).microversion() == '3.65'
