# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glance image API v2 calls through an openstacksdk Connection's image proxy.

Only the calls the RBD upload needs: store discovery (``GET /v2/info/stores/detail``), image
create/get/find/patch/delete, location registration (``POST /v2/images/{id}/locations``, or the
older JSON-patch ``add /locations/-`` that needs ``show_multiple_locations``) and the data upload
(``PUT /v2/images/{id}/file``, streamed with a known length). Errors become :class:`VolsnapError`
with Glance's own message (:func:`api_errors`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, cast

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import (
    api_errors,
    sdk,
    wait_for_status,
)

JSON_PATCH = 'application/openstack-images-v2.1-json-patch'
# Polling an image whose location Glance registers in a background task: the first look comes at once, then
# after FIRST_POLL seconds, the wait doubling up to the caller's interval (a fixed interval costs up to its length).
FIRST_POLL = 0.05
LOCATION_APIS = ('locations', 'patch')
LOCATION_SERVICE_HINT = ('Glance accepts rbd locations through POST /v2/images/{id}/locations only from users with the '
                         'service role (as Cinder sends them): use the credentials of a service user, or give this '
                         'user the service role')
PATCH_HINT = ('the older JSON-patch location API needs show_multiple_locations = True in glance-api.conf')


@dataclass
class Store:
    """A Glance store as ``/v2/info/stores[/detail]`` describes it (type/pool/fsid only with detail)."""

    id: str
    default: bool
    type: Optional[str] = None
    pool: Optional[str] = None
    fsid: Optional[str] = None
    thin_provisioning: Optional[bool] = None

    def as_dict(self) -> Dict[str, Any]:
        return {'id': self.id, 'default': self.default, 'type': self.type, 'pool': self.pool, 'fsid': self.fsid,
                'thin_provisioning': self.thin_provisioning}


@dataclass
class Stores:
    stores: List[Store]
    detail: bool
    error: Optional[str] = None

    def pick(self, wanted: Optional[str]) -> Optional[Store]:
        """The store named ``wanted``, or the default store; None when Glance lists none."""
        for store in self.stores:
            if wanted is not None and store.id == wanted:
                return store
        if wanted is not None:
            raise VolsnapError('Glance has no store %s (it has: %s)' % (wanted, ', '.join(s.id for s in self.stores)
                                                                        or 'none listed'))
        for store in self.stores:
            if store.default:
                return store
        return None


def parse_stores(body: Any, detail: bool) -> List[Store]:
    stores = []
    for item in (body or {}).get('stores', []) or []:
        props = item.get('properties') or {}
        fsid = props.get('fsid')
        stores.append(Store(id=str(item.get('id')), default=bool(item.get('default', False)),
                            type=item.get('type') if detail else None,
                            pool=props.get('pool'), fsid=str(fsid).lower() if fsid else None,
                            thin_provisioning=props.get('thin_provisioning')))
    return stores


class SizedStream(object):
    """An iterable of byte chunks with a known total length.

    requests sends it with ``Content-Length`` (not chunked, which uwsgi-served Glance may refuse)
    and http.client writes the chunks as they come, without copying them into small blocks.
    """

    def __init__(self, chunks: Iterable[bytes], length: int) -> None:
        self._chunks = chunks
        self._length = length
        self.sent = 0

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.sent += len(chunk)
            yield chunk
        if self.sent != self._length:
            raise VolsnapError('the upload stream produced %d bytes instead of %d' % (self.sent, self._length))


@dataclass
class Registered:
    """What :meth:`Glance.register_location` did: the API used, and the image record when Glance answered with it
    (the JSON-patch API returns the updated image, already active; the locations API only starts a task)."""

    api: str
    image: Optional[Dict[str, Any]] = None

    @property
    def active(self) -> bool:
        return (self.image or {}).get('status') == 'active'


def location_api_order(api: str, service_role: Optional[bool]) -> Tuple[str, ...]:
    """The location APIs to try, in order, for the option ``location_api`` and the token's service role.

    ``auto`` tries ``POST /v2/images/{id}/locations`` first, as Glance recommends, unless the token is known to
    lack the ``service`` role: Glance refuses rbd locations there to other users, so asking first would only cost
    a refused request. The other API is still tried when the first is refused.
    """
    if api in LOCATION_APIS:
        return (api,)
    if api != 'auto':
        raise VolsnapError('location_api must be one of auto, locations, patch, not %r' % api)
    return ('patch', 'locations') if service_role is False else ('locations', 'patch')


class Glance(object):
    """Image API calls through ``conn.image`` (a keystoneauth adapter on the image endpoint)."""

    def __init__(self, conn: Any, sleep: Callable[[float], None] = time.sleep) -> None:
        self.conn = conn
        self.proxy = conn.image
        self.sleep = sleep

    def service_role(self) -> Optional[bool]:
        """Whether the token carries the ``service`` role; None when that cannot be told.

        Read from the token the session already holds (keystoneauth fetches it on first use anyway).
        """
        try:
            session = self.conn.session
            roles = session.auth.get_access(session).role_names
        except Exception:  # not a keystoneauth identity plugin, or no token yet obtainable: unknown
            return None
        if not isinstance(roles, (list, tuple, set, frozenset)):
            return None
        return 'service' in roles

    def _request(self, method: str, url: str, action: str, hints: Optional[Mapping[int, str]] = None,
                 missing_ok: bool = False, **kwargs: Any) -> Any:
        openstack = sdk()
        with api_errors(action, hints):
            response = self.proxy.request(url, method, raise_exc=False, **kwargs)
            if missing_ok and response.status_code == 404:
                return None
            openstack.exceptions.raise_from_response(response)
        return response

    def _json(self, response: Any) -> Any:
        if response is None or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise VolsnapError('Glance answered HTTP %s with a body that is not JSON: %.200r'
                               % (response.status_code, response.text))

    # -- stores ---------------------------------------------------------------------------

    def stores(self) -> Stores:
        """Glance's stores, with type, pool and fsid when ``/v2/info/stores/detail`` is allowed.

        Without detail (403: only admin or service users see it) or without multiple stores (404)
        the result says why in ``error``; the module then takes the copy path.
        """
        openstack = sdk()
        with api_errors('listing the Glance stores'):
            response = self.proxy.request('/info/stores/detail', 'GET', raise_exc=False)
        if response.status_code < 400:
            return Stores(parse_stores(self._json(response), True), True)
        if response.status_code in (401,):
            with api_errors('listing the Glance stores'):
                openstack.exceptions.raise_from_response(response)
        reason = 'GET /v2/info/stores/detail answered HTTP %d' % response.status_code
        if response.status_code == 403:
            reason += ' (Glance shows store details only to admin or service users)'
        with api_errors('listing the Glance stores'):
            plain = self.proxy.request('/info/stores', 'GET', raise_exc=False)
        if plain.status_code >= 400:
            reason += '; GET /v2/info/stores answered HTTP %d (Glance has no multiple stores configured)' % (
                plain.status_code)
            return Stores([], False, reason)
        return Stores(parse_stores(self._json(plain), False), False, reason)

    # -- images ---------------------------------------------------------------------------

    def get_image(self, image_id: str) -> Optional[Dict[str, Any]]:
        response = self._request('GET', '/images/%s' % image_id, 'reading Glance image %s' % image_id,
                                 missing_ok=True)
        return self._json(response) if response is not None else None

    def all_images(self) -> List[Dict[str, Any]]:
        """Every image record these credentials see (an admin sees every project's), all pages."""
        found: List[Dict[str, Any]] = []
        url: Optional[str] = '/images'
        params: Optional[Dict[str, Any]] = {'limit': 1000}
        while url:
            response = self._request('GET', url, 'listing Glance images', params=params)
            body = self._json(response) or {}
            found.extend(body.get('images', []))
            following = body.get('next')
            url = following[len('/v2'):] if following and following.startswith('/v2/') else following
            params = None
        return found

    def find_images(self, name: str, properties: Optional[Mapping[str, str]] = None) -> List[Dict[str, Any]]:
        """Images named ``name`` (all pages) whose properties include ``properties``."""
        found: List[Dict[str, Any]] = []
        url: Optional[str] = '/images'
        params: Optional[Dict[str, Any]] = {'name': name, 'limit': 100}
        while url:
            response = self._request('GET', url, 'listing Glance images named %s' % name, params=params)
            body = self._json(response) or {}
            for image in body.get('images', []):
                if all(str(image.get(k)) == str(v) for k, v in (properties or {}).items()):
                    found.append(image)
            following = body.get('next')
            url = following[len('/v2'):] if following and following.startswith('/v2/') else following
            params = None
        return found

    def create_image(self, name: str, disk_format: str, container_format: str, visibility: Optional[str],
                     properties: Mapping[str, Any], image_id: Optional[str] = None) -> Dict[str, Any]:
        body: Dict[str, Any] = {'name': name, 'disk_format': disk_format, 'container_format': container_format}
        if visibility:
            body['visibility'] = visibility
        if image_id:
            body['id'] = image_id
        for key, value in properties.items():
            body[key] = value if isinstance(value, str) else str(value)
        response = self._request('POST', '/images', 'creating Glance image %s' % name, json=body)
        return cast(Dict[str, Any], self._json(response))

    def set_properties(self, image: Mapping[str, Any], properties: Mapping[str, Any]) -> bool:
        """Add or replace properties; False when they already have these values."""
        ops = []
        for key, value in properties.items():
            text = value if isinstance(value, str) else str(value)
            if key in image:
                if image[key] != text:
                    ops.append({'op': 'replace', 'path': '/%s' % key, 'value': text})
            else:
                ops.append({'op': 'add', 'path': '/%s' % key, 'value': text})
        if not ops:
            return False
        self._request('PATCH', '/images/%s' % image['id'], 'setting properties of Glance image %s' % image['id'],
                      json=ops, headers={'Content-Type': JSON_PATCH})
        return True

    def delete_image(self, image_id: str, hints: Optional[Mapping[int, str]] = None) -> bool:
        """Delete an image; False when it does not exist."""
        response = self._request('DELETE', '/images/%s' % image_id, 'deleting Glance image %s' % image_id,
                                 hints=hints, missing_ok=True)
        return response is not None

    def wait_image(self, image_id: str, ok: Tuple[str, ...], fail: Tuple[Optional[str], ...], timeout: float,
                   interval: float = 0.5) -> Dict[str, Any]:
        return cast(Dict[str, Any], wait_for_status(lambda: self.get_image(image_id), ok, fail, timeout,
                                                    interval=interval, what='Glance image %s' % image_id,
                                                    sleep=self.sleep))

    def image_tasks(self, image_id: str) -> List[Dict[str, Any]]:
        """The tasks Glance ran on the image (``GET /v2/images/{id}/tasks``, API 2.12+); [] when unavailable."""
        response = self._request('GET', '/images/%s/tasks' % image_id, 'listing the tasks of Glance image %s'
                                 % image_id, missing_ok=True)
        body = self._json(response) if response is not None else None
        return list((body or {}).get('tasks', []))

    def wait_location(self, image_id: str, timeout: float, interval: float = 0.5,
                      clock: Callable[[], float] = time.monotonic) -> Dict[str, Any]:
        """Wait until a registered location made the image active; a failed ``location_import`` task is an error.

        ``POST /v2/images/{id}/locations`` only starts a task; when the task fails Glance puts the image
        back to ``queued`` and keeps the reason in the task, which is returned here. The image is read at
        once, then after :data:`FIRST_POLL` seconds, the wait doubling up to ``interval``.
        """
        deadline = clock() + max(timeout, 0)
        delay = min(FIRST_POLL, interval)
        while True:
            image = self.get_image(image_id)
            status = image.get('status') if image else None
            if status == 'active':
                return image or {}
            if status in (None, 'killed', 'deleted', 'pending_delete'):
                raise VolsnapError('Glance image %s went to status %s while its location was registered'
                                   % (image_id, status or 'gone (deleted)'), image_status=status)
            if status == 'queued' and image is not None and 'os_glance_import_task' not in image:
                failed = [t for t in self.image_tasks(image_id)
                          if t.get('type') == 'location_import' and t.get('status') == 'failure']
                if failed:
                    raise VolsnapError('Glance could not import the location of image %s: %s (task %s)'
                                       % (image_id, failed[-1].get('message') or 'no message', failed[-1].get('id')),
                                       task=failed[-1])
            if clock() >= deadline:
                raise VolsnapError('Glance image %s is still %s %s seconds after its location was registered; see '
                                   'its tasks (GET /v2/images/%s/tasks) and the glance-api log'
                                   % (image_id, status, timeout, image_id), image_status=status)
            self.sleep(max(0.0, min(delay, deadline - clock())))
            delay = min(delay * 2, interval)

    # -- locations ------------------------------------------------------------------------

    def register_location(self, image_id: str, url: str, api: str = 'auto',
                          validation_data: Optional[Mapping[str, str]] = None) -> Registered:
        """Register ``url`` as the image's location.

        ``locations`` is ``POST /v2/images/{id}/locations`` (Glance 2024.2+, asynchronous: a task adds the
        location, turns the image active, then reads the whole image to compute its checksum unless
        ``do_secure_hash`` is off); ``patch`` is the JSON-patch ``add /locations/-`` (synchronous: Glance checks
        the location, the image is active in the answer; no checksum is computed). ``auto`` tries both, in the
        order of :func:`location_api_order`, going on to the other when the first is missing or refused.

        ``validation_data`` (``checksum``, ``os_hash_algo``, ``os_hash_value``) goes with the location either
        way: the JSON-patch API stores the values; the locations API with ``do_secure_hash`` computes them before
        activating the image and refuses the location when they differ.
        """
        order = location_api_order(api, self.service_role() if api == 'auto' else None)
        errors: Dict[str, VolsnapError] = {}
        for index, which in enumerate(order):
            last = index == len(order) - 1
            try:
                if which == 'locations':
                    self._post_location(image_id, url, validation_data)
                    return Registered('locations')
                return Registered('patch', self._patch_location(image_id, url, validation_data))
            except VolsnapError as exc:
                status = exc.details.get('status_code')
                refused = status in (403, 404, 405) if which == 'locations' else status == 403
                if last or not refused:
                    if not errors:
                        raise
                    first, first_error = next(iter(errors.items()))
                    raise VolsnapError('Glance refused the location %s both ways. %s. Then %s'
                                       % (url, first_error.msg, exc.msg),
                                       **{'%s_api' % first: first_error.details, '%s_api' % which: exc.details})
                errors[which] = exc
        raise VolsnapError('internal error: no location API was tried')  # pragma: no cover - order is never empty

    def _post_location(self, image_id: str, url: str, validation_data: Optional[Mapping[str, str]] = None) -> None:
        body: Dict[str, Any] = {'url': url}
        if validation_data:
            body['validation_data'] = dict(validation_data)
        self._request('POST', '/images/%s/locations' % image_id,
                      'registering the location with POST /v2/images/%s/locations' % image_id,
                      hints={403: LOCATION_SERVICE_HINT}, json=body)

    def _patch_location(self, image_id: str, url: str,
                        validation_data: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
        value: Dict[str, Any] = {'url': url, 'metadata': {}}
        if validation_data:
            value['validation_data'] = dict(validation_data)
        ops = [{'op': 'add', 'path': '/locations/-', 'value': value}]
        response = self._request('PATCH', '/images/%s' % image_id,
                                 'registering the location with the JSON-patch API of image %s' % image_id,
                                 hints={403: PATCH_HINT}, json=ops, headers={'Content-Type': JSON_PATCH})
        try:
            body = self._json(response)
        except VolsnapError:  # the location is registered; the answer is only a convenience
            return None
        return body if isinstance(body, dict) and body.get('id') == image_id else None

    # -- data -----------------------------------------------------------------------------

    def upload(self, image_id: str, stream: SizedStream, store: Optional[str] = None) -> None:
        """``PUT /v2/images/{id}/file``: Glance writes the data to ``store`` (its default when None)."""
        headers = {'Content-Type': 'application/octet-stream'}
        if store:
            headers['X-Image-Meta-Store'] = store
        self._request('PUT', '/images/%s/file' % image_id, 'uploading the data of Glance image %s' % image_id,
                      data=stream, headers=headers)
