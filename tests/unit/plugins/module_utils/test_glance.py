# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _glance: request shapes and answers handled, with a fake image proxy returning real
``requests.Response`` objects (openstacksdk turns their errors into its exceptions, as with a cloud)."""

from __future__ import annotations

import json

import pytest
import requests

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.glance import (
    JSON_PATCH,
    Glance,
    SizedStream,
    location_api_order,
    parse_stores,
)

IMG = '0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f'
FSID = '6a1b2c3d-0000-4000-8000-00000000f51d'


def response(status, body=None, url='http://127.0.0.1:9292/v2/x', method='GET'):
    resp = requests.Response()
    resp.status_code = status
    if body is None:
        resp._content = b''
    elif isinstance(body, (dict, list)):
        resp._content = json.dumps(body).encode()
        resp.headers['content-type'] = 'application/json'
    else:
        resp._content = body.encode()
        resp.headers['content-type'] = 'text/plain'
    resp.request = requests.Request(method, url).prepare()
    resp.url = url
    return resp


class FakeProxy(object):
    """Answers from a queue of (method, url prefix, response); records every call."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def request(self, url, method, **kwargs):
        self.calls.append((method, url, kwargs))
        want_method, want_url, resp = self.answers.pop(0)
        assert (method, url) == (want_method, want_url), 'unexpected call %s %s' % (method, url)
        return resp


class Conn(object):
    def __init__(self, proxy):
        self.image = proxy


def glance_and_proxy(*answers):
    proxy = FakeProxy(answers)
    return Glance(Conn(proxy), sleep=lambda s: None), proxy


def glance(*answers):
    return glance_and_proxy(*answers)[0]


DETAIL = {'stores': [
    {'id': 'rbd', 'default': True, 'type': 'rbd', 'description': 'ceph',
     'properties': {'pool': 'images', 'fsid': FSID.upper(), 'chunk_size': 8, 'thin_provisioning': True}},
    {'id': 'file', 'type': 'file', 'properties': {'data_dir': '/x'}},
]}


def test_stores_detail():
    g, proxy = glance_and_proxy(('GET', '/info/stores/detail', response(200, DETAIL)))
    stores = g.stores()
    assert stores.detail and stores.error is None
    rbd, file_store = stores.stores
    assert (rbd.id, rbd.type, rbd.pool, rbd.fsid, rbd.default, rbd.thin_provisioning) == (
        'rbd', 'rbd', 'images', FSID, True, True)
    assert (file_store.type, file_store.default, file_store.pool) == ('file', False, None)
    assert stores.pick(None) is rbd


def test_stores_without_detail_permission():
    g = glance(('GET', '/info/stores/detail', response(403, {'message': 'forbidden'})),
               ('GET', '/info/stores', response(200, {'stores': [{'id': 'rbd', 'default': True}]})))
    stores = g.stores()
    assert not stores.detail
    assert 'HTTP 403 (Glance shows store details only to admin or service users)' in stores.error
    assert stores.stores[0].type is None


def test_stores_single_store_glance():
    g = glance(('GET', '/info/stores/detail', response(404, 'not found')),
               ('GET', '/info/stores', response(404, 'Multi backend is not supported at this site')))
    stores = g.stores()
    assert stores.stores == [] and 'no multiple stores' in stores.error


def test_stores_bad_credentials_raise():
    g = glance(('GET', '/info/stores/detail', response(401, {'message': 'unauthorized'})))
    with pytest.raises(VolsnapError, match='listing the Glance stores failed .HTTP 401'):
        g.stores()


def test_parse_stores_tolerates_missing_fields():
    assert parse_stores({}, True) == []
    store = parse_stores({'stores': [{'id': 'x'}]}, True)[0]
    assert (store.id, store.default, store.type, store.fsid) == ('x', False, None, None)


def test_get_image_missing_is_none():
    g = glance(('GET', '/images/%s' % IMG, response(404, 'no image')))
    assert g.get_image(IMG) is None


def test_create_image_body():
    g, proxy = glance_and_proxy(('POST', '/images', response(201, {'id': IMG, 'status': 'queued'})))
    assert g.create_image('img', 'raw', 'bare', 'private', {'a': 'b', 'n': 3})['id'] == IMG
    body = proxy.calls[0][2]['json']
    assert body == {'name': 'img', 'disk_format': 'raw', 'container_format': 'bare', 'visibility': 'private',
                    'a': 'b', 'n': '3'}


def test_find_images_filters_and_pages():
    page1 = {'images': [{'id': '1', 'name': 'img', 'volsnap_source': 'k'}, {'id': '2', 'name': 'img'}],
             'next': '/v2/images?marker=2&name=img'}
    page2 = {'images': [{'id': '3', 'name': 'img', 'volsnap_source': 'k'}]}
    g, proxy = glance_and_proxy(('GET', '/images', response(200, page1)), ('GET', '/images?marker=2&name=img', response(200, page2)))
    found = g.find_images('img', {'volsnap_source': 'k'})
    assert [i['id'] for i in found] == ['1', '3']
    assert proxy.calls[0][2]['params'] == {'name': 'img', 'limit': 100}


def test_set_properties_json_patch():
    g, proxy = glance_and_proxy(('PATCH', '/images/%s' % IMG, response(200, {})))
    image = {'id': IMG, 'a': 'old', 'same': 'x'}
    assert g.set_properties(image, {'a': 'new', 'b': 1, 'same': 'x'}) is True
    kwargs = proxy.calls[0][2]
    assert kwargs['headers'] == {'Content-Type': JSON_PATCH}
    assert kwargs['json'] == [{'op': 'replace', 'path': '/a', 'value': 'new'}, {'op': 'add', 'path': '/b', 'value': '1'}]
    g, proxy = glance_and_proxy()
    assert g.set_properties(image, {'same': 'x'}) is False and proxy.calls == []


def test_register_location_new_api():
    g, proxy = glance_and_proxy(('POST', '/images/%s/locations' % IMG, response(202, None)))
    assert g.register_location(IMG, 'rbd://f/images/%s/snap' % IMG).api == 'locations'
    assert proxy.calls[0][2]['json'] == {'url': 'rbd://f/images/%s/snap' % IMG}


def test_register_location_falls_back_to_patch():
    refused = response(403, {'message': 'http store must be enabled to use location API by normal user.'})
    g, proxy = glance_and_proxy(('POST', '/images/%s/locations' % IMG, refused),
                                ('PATCH', '/images/%s' % IMG, response(200, {'id': IMG, 'status': 'active'})))
    assert g.register_location(IMG, 'rbd://x/p/i/snap').api == 'patch'
    assert proxy.calls[1][2]['json'] == [{'op': 'add', 'path': '/locations/-',
                                          'value': {'url': 'rbd://x/p/i/snap', 'metadata': {}}}]


def test_register_location_both_refused_explains_both():
    g = glance(('POST', '/images/%s/locations' % IMG,
                response(403, {'message': 'http store must be enabled to use location API by normal user.'})),
               ('PATCH', '/images/%s' % IMG,
                response(403, {'message': "It's not allowed to add locations if locations are invisible."})))
    with pytest.raises(VolsnapError) as info:
        g.register_location(IMG, 'rbd://x/p/i/snap')
    msg = info.value.msg
    assert 'refused the location rbd://x/p/i/snap both ways' in msg
    assert 'service role' in msg and 'show_multiple_locations' in msg


def test_register_location_explicit_api_does_not_fall_back():
    g = glance(('POST', '/images/%s/locations' % IMG, response(403, {'message': 'nope'})))
    with pytest.raises(VolsnapError, match='service role'):
        g.register_location(IMG, 'rbd://x/p/i/snap', api='locations')
    g, proxy = glance_and_proxy(('PATCH', '/images/%s' % IMG, response(200, {})))
    assert g.register_location(IMG, 'rbd://x/p/i/snap', api='patch').api == 'patch'
    assert len(proxy.calls) == 1


def test_upload_headers_and_stream():
    g, proxy = glance_and_proxy(('PUT', '/images/%s/file' % IMG, response(204, None)))
    stream = SizedStream(iter([b'ab', b'cd']), 4)
    g.upload(IMG, stream, 'rbd')
    kwargs = proxy.calls[0][2]
    assert kwargs['headers'] == {'Content-Type': 'application/octet-stream', 'X-Image-Meta-Store': 'rbd'}
    assert kwargs['data'] is stream and len(stream) == 4
    assert b''.join(stream) == b'abcd' and stream.sent == 4


def test_sized_stream_detects_wrong_length():
    stream = SizedStream(iter([b'abc']), 4)
    with pytest.raises(VolsnapError, match='produced 3 bytes instead of 4'):
        list(stream)


def test_delete_and_conflict():
    g = glance(('DELETE', '/images/%s' % IMG, response(204, None)), ('DELETE', '/images/%s' % IMG, response(404, 'x')))
    assert g.delete_image(IMG) is True
    assert g.delete_image(IMG) is False
    g = glance(('DELETE', '/images/%s' % IMG, response(409, {'message': 'Image could not be deleted because it is in '
                                                                        'use'})))
    with pytest.raises(VolsnapError, match=r'HTTP 409.*in use.*clone'):
        g.delete_image(IMG, hints={409: 'a clone exists'})


def test_wait_image():
    g = glance(('GET', '/images/%s' % IMG, response(200, {'id': IMG, 'status': 'queued'})),
               ('GET', '/images/%s' % IMG, response(200, {'id': IMG, 'status': 'active'})))
    assert g.wait_image(IMG, ('active',), ('killed',), 10)['status'] == 'active'
    g = glance(('GET', '/images/%s' % IMG, response(404, 'gone')))
    assert g.wait_image(IMG, (None, 'deleted'), (), 10) is None


def test_wait_location_reports_a_failed_task():
    queued = {'id': IMG, 'status': 'queued'}
    tasks = {'tasks': [{'id': 't1', 'type': 'location_import', 'status': 'failure',
                        'message': 'RBD image images/x does not exist'}]}
    g = glance(('GET', '/images/%s' % IMG, response(200, dict(queued, os_glance_import_task='t1'))),
               ('GET', '/images/%s' % IMG, response(200, queued)),
               ('GET', '/images/%s/tasks' % IMG, response(200, tasks)))
    with pytest.raises(VolsnapError, match='could not import the location .*RBD image images/x does not exist'):
        g.wait_location(IMG, 10)


def test_wait_location_active_and_timeout():
    g = glance(('GET', '/images/%s' % IMG, response(200, {'id': IMG, 'status': 'importing'})),
               ('GET', '/images/%s' % IMG, response(200, {'id': IMG, 'status': 'active'})))
    assert g.wait_location(IMG, 10)['status'] == 'active'
    clock = iter([0.0, 100.0])
    g = glance(('GET', '/images/%s' % IMG, response(200, {'id': IMG, 'status': 'importing'})))
    with pytest.raises(VolsnapError, match='still importing 5 seconds after'):
        g.wait_location(IMG, 5, clock=lambda: next(clock))
    g = glance(('GET', '/images/%s' % IMG, response(404, 'gone')))
    with pytest.raises(VolsnapError, match='went to status gone'):
        g.wait_location(IMG, 5)


class Token(object):
    """The parts of a keystoneauth session the service-role check reads."""

    def __init__(self, roles):
        self.role_names = roles
        self.auth = self

    def get_access(self, session):
        assert session is self
        if isinstance(self.role_names, Exception):
            raise self.role_names
        return self


def glance_with_roles(roles, *answers):
    proxy = FakeProxy(answers)
    conn = Conn(proxy)
    conn.session = Token(roles)
    return Glance(conn, sleep=lambda s: None), proxy


def test_location_api_order():
    assert location_api_order('auto', None) == ('locations', 'patch')
    assert location_api_order('auto', True) == ('locations', 'patch')
    assert location_api_order('auto', False) == ('patch', 'locations')
    assert location_api_order('locations', False) == ('locations',)
    assert location_api_order('patch', True) == ('patch',)
    with pytest.raises(VolsnapError, match='location_api must be one of'):
        location_api_order('post', None)


def test_service_role_from_the_token():
    assert glance_with_roles(['admin', 'service'])[0].service_role() is True
    assert glance_with_roles(['admin', 'member'])[0].service_role() is False
    assert glance_with_roles(RuntimeError('no token'))[0].service_role() is None
    assert glance().service_role() is None  # a connection without a keystoneauth session


def test_register_location_without_service_role_patches_first_and_takes_the_answer():
    active = {'id': IMG, 'status': 'active', 'locations': [{'url': 'rbd://x/p/i/snap', 'metadata': {}}]}
    g, proxy = glance_with_roles(['admin'], ('PATCH', '/images/%s' % IMG, response(200, active)))
    registered = g.register_location(IMG, 'rbd://x/p/i/snap')
    assert registered.api == 'patch' and registered.active and registered.image == active
    assert [call[0] for call in proxy.calls] == ['PATCH']  # no POST that Glance would refuse


def test_register_location_with_service_role_posts_and_waits():
    g, proxy = glance_with_roles(['admin', 'service'], ('POST', '/images/%s/locations' % IMG, response(202, None)))
    registered = g.register_location(IMG, 'rbd://x/p/i/snap')
    assert registered.api == 'locations' and registered.image is None and not registered.active
    assert [call[0] for call in proxy.calls] == ['POST']


def test_register_location_patch_refused_then_post():
    g, proxy = glance_with_roles(
        ['admin'],
        ('PATCH', '/images/%s' % IMG, response(403, {'message': "It's not allowed to add locations if locations are "
                                                                "invisible."})),
        ('POST', '/images/%s/locations' % IMG, response(202, None)))
    assert g.register_location(IMG, 'rbd://x/p/i/snap').api == 'locations'
    assert [call[0] for call in proxy.calls] == ['PATCH', 'POST']


def test_register_location_patch_refused_then_post_refused_explains_both():
    g = glance_with_roles(
        ['admin'],
        ('PATCH', '/images/%s' % IMG, response(403, {'message': "It's not allowed to add locations if locations are "
                                                                "invisible."})),
        ('POST', '/images/%s/locations' % IMG, response(403, {'message': 'http store must be enabled'})))[0]
    with pytest.raises(VolsnapError) as info:
        g.register_location(IMG, 'rbd://x/p/i/snap')
    assert 'both ways' in info.value.msg and 'show_multiple_locations' in info.value.msg
    assert 'service role' in info.value.msg
    assert info.value.details['patch_api']['status_code'] == 403
    assert info.value.details['locations_api']['status_code'] == 403


def test_register_location_patch_error_other_than_refusal_is_not_retried():
    g, proxy = glance_with_roles(['admin'], ('PATCH', '/images/%s' % IMG, response(500, {'message': 'rbd EPERM'})))
    with pytest.raises(VolsnapError, match='HTTP 500') as info:
        g.register_location(IMG, 'rbd://x/p/i/snap')
    assert info.value.details['status_code'] == 500 and len(proxy.calls) == 1


def test_register_location_patch_answer_without_the_image():
    g = glance_with_roles(['admin'], ('PATCH', '/images/%s' % IMG, response(200, 'not json')))[0]
    registered = g.register_location(IMG, 'rbd://x/p/i/snap')
    assert registered.api == 'patch' and registered.image is None and not registered.active


def test_wait_location_backs_off_from_a_short_first_wait():
    sleeps = []
    now = [0.0]

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    importing = response(200, {'id': IMG, 'status': 'importing', 'os_glance_import_task': 't'})
    active = response(200, {'id': IMG, 'status': 'active'})
    answers = [('GET', '/images/%s' % IMG, importing)] * 6 + [('GET', '/images/%s' % IMG, active)]
    g = Glance(Conn(FakeProxy(answers)), sleep=sleep)
    assert g.wait_location(IMG, 60, clock=lambda: now[0])['status'] == 'active'
    assert sleeps == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
