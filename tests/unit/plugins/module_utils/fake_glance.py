# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""In-memory stand-ins for the executor's Glance and Cinder interfaces (unit tests only).

:class:`FakeGlance` has the methods of ``_glance.Glance`` the executor calls and behaves as Glance
with an rbd store on a :class:`fake_rbd.Cluster`: a registered ``rbd://`` location must point at an
existing protected snapshot, deleting an image removes its RBD image as glance_store does
(unprotect ``snap``, remove it, remove the image) and answers 409 while the snapshot has clones.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Dict, List, Optional

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.glance import Registered, Store, Stores
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.rbd import parse_rbd_url


class FakeGlance(object):
    def __init__(self, cluster, stores: Optional[Stores] = None) -> None:
        self.cluster = cluster
        self.images: Dict[str, Dict[str, Any]] = {}
        self.data: Dict[str, bytes] = {}
        self.calls: List[str] = []
        self.fail: Dict[str, BaseException] = {}
        self.stores_answer = stores or Stores([Store('rbd', True, 'rbd', 'images', cluster.fsid, True),
                                               Store('file', False, 'file')], True)
        # the API register_location uses: 'locations' answers nothing, 'patch' answers with the active image
        self.location_api = 'locations'
        self.has_service_role: Optional[bool] = None
        self.registered: List[Any] = []  # register_location calls: (image id, url, api, validation data)

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        exc = self.fail.pop(name, None)
        if exc is not None:
            raise exc

    def stores(self) -> Stores:
        self._maybe_fail('stores')
        return self.stores_answer

    def get_image(self, image_id: str) -> Optional[Dict[str, Any]]:
        self.calls.append('get_image')
        image = self.images.get(image_id)
        return dict(image) if image is not None and image['status'] != 'deleted' else None

    def find_images(self, name: str, properties=None) -> List[Dict[str, Any]]:
        return [dict(i) for i in self.images.values() if i['name'] == name and i['status'] != 'deleted'
                and all(str(i.get(k)) == str(v) for k, v in (properties or {}).items())]

    def create_image(self, name, disk_format, container_format, visibility, properties, image_id=None):
        self._maybe_fail('create_image')
        image_id = image_id or str(uuid.uuid4())
        image = {'id': image_id, 'name': name, 'status': 'queued', 'disk_format': disk_format,
                 'container_format': container_format, 'visibility': visibility or 'shared', 'locations': []}
        image.update({k: str(v) for k, v in properties.items()})
        self.images[image_id] = image
        return dict(image)

    def set_properties(self, image, properties) -> bool:
        self._maybe_fail('set_properties')
        stored = self.images[image['id']]
        changed = any(stored.get(k) != str(v) for k, v in properties.items())
        stored.update({k: str(v) for k, v in properties.items()})
        return changed

    def service_role(self) -> Optional[bool]:
        return self.has_service_role

    def register_location(self, image_id: str, url: str, api: str = 'auto', validation_data=None) -> Registered:
        self.registered.append((image_id, url, api, dict(validation_data) if validation_data else None))
        self.add_location(image_id, url, api)
        if validation_data:
            self.images[image_id].update(validation_data)
        if self.location_api == 'patch':
            return Registered('patch', dict(self.images[image_id]))
        return Registered('locations')

    def add_location(self, image_id: str, url: str, api: str = 'auto') -> str:
        self._maybe_fail('add_location')
        image = self.images[image_id]
        if image['status'] != 'queued':
            raise VolsnapError('HTTP 409: It is not allowed to add locations if image status is %s' % image['status'])
        fsid, pool, name, snap = parse_rbd_url(url)
        assert fsid == self.cluster.fsid
        img = self.cluster.get(pool, name)
        assert img.snaps[snap]['protected'], 'glance would serve an unprotected snapshot'
        image.update(status='active', locations=[{'url': url, 'metadata': {'store': 'rbd'}}],
                     size=img.snaps[snap]['size'])
        return 'locations'

    def upload(self, image_id: str, stream, store=None) -> None:
        self._maybe_fail('upload')
        image = self.images[image_id]
        broken = self.fail.pop('upload_midway', None)
        if broken is not None:  # the connection breaks after the first piece (Glance restarted)
            next(iter(stream))
            raise broken
        data = b''.join(stream)
        self.data[image_id] = data
        image.update(status='active', size=len(data), checksum=hashlib.md5(data).hexdigest(),
                     locations=[{'url': 'file:///glance/%s' % image_id, 'metadata': {'store': store or 'rbd'}}])

    def delete_image(self, image_id: str, hints=None) -> bool:
        self._maybe_fail('delete_image')
        image = self.images.get(image_id)
        if image is None or image['status'] == 'deleted':
            return False
        for loc in image['locations']:
            parsed = parse_rbd_url(loc['url'])
            if parsed is None:
                continue
            _fsid, pool, name, snap = parsed
            img = self.cluster.pools[pool].get(name)
            if img is None:
                continue
            if snap in img.snaps:
                if img.snaps[snap]['children']:
                    raise VolsnapError('deleting Glance image %s failed (HTTP 409): Image %s could not be deleted '
                                       'because it is in use' % (image_id, image_id), status_code=409)
                img.snaps[snap]['protected'] = False
                del img.snaps[snap]
            self.cluster.lib.RBD().remove(self.cluster.open_ioctx(pool), name)
        image['status'] = 'deleted'
        return True

    def wait_location(self, image_id, timeout):
        return self.wait_image(image_id, ('active',), ('killed', None), timeout)

    def wait_image(self, image_id, ok, fail, timeout, interval=0.5):
        image = self.get_image(image_id)
        status = image['status'] if image else None
        if status in fail:
            raise VolsnapError('image %s went to status %s' % (image_id, status))
        assert status in ok, 'fake Glance: image %s is %s, not %s' % (image_id, status, ok)
        return image


class FakeCinder(object):
    def __init__(self) -> None:
        self.volumes: Dict[str, Dict[str, Any]] = {}

    def add(self, volume_id: str, name: str = 'vol', status: str = 'available', size: int = 1,
            encrypted: bool = False) -> None:
        self.volumes[volume_id] = {'id': volume_id, 'name': name, 'status': status, 'size': size,
                                   'encrypted': encrypted}

    def require_volume(self, name_or_id: str) -> Dict[str, Any]:
        """As _openstack/cinder.py's CinderApi.require_volume."""
        for volume in self.volumes.values():
            if name_or_id in (volume['id'], volume['name']):
                return dict(volume)
        raise VolsnapError('Cinder volume %s was not found (by id or name, in the project of these credentials)'
                           % name_or_id)
