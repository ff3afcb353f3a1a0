# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one Cinder (Block Storage API) client of the collection, and the views of what it returns.

:class:`CinderApi` wraps an ``openstack.connection.Connection``: volume lookups (:meth:`CinderApi.find_volume`,
None when missing; :meth:`CinderApi.require_volume`, an error when missing), snapshot reads and updates, the
manage/unmanage calls and the manageable listing of spec 004, and ``os-update_snapshot_status`` (the report Nova
makes at the end of an assisted snapshot). Calls whose API changed with microversions are sent with an explicit,
negotiated one. :func:`cinder_api` builds it from a module's connection options.

Its answers are plain dicts (:func:`volume_view`, :func:`snapshot_view`, :func:`manageable_view`), so the logic
that uses it (``manage``, ``report``, the RBD upload) is unit tested with in-memory fakes of the same methods.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import (
    api_errors,
    connect,
    endpoint_microversions,
    negotiate_microversion,
    request_json,
    version_at_least,
)

MANAGE_MICROVERSION = '3.8'       # manageable_snapshots resource
CLUSTER_MICROVERSION = '3.17'     # cluster= in the manageable listing
CLIENT_MAX_MICROVERSION = '3.65'  # the newest snapshot view this module knows (as openstacksdk)

POLICY_HINTS = {
    'manage': {403: 'managing snapshots is an admin-only API by default (policy '
                    'snapshot_extension:snapshot_manage): use credentials with the admin role (for example '
                    'an admin cloud from clouds.yaml)'},
    'unmanage': {403: 'unmanaging snapshots is an admin-only API by default (policy '
                      'snapshot_extension:snapshot_unmanage): use credentials with the admin role'},
    'list': {403: 'listing manageable snapshots is an admin-only API by default (policy '
                  'snapshot_extension:list_manageable): use credentials with the admin role'},
    'delete': {403: 'deleting this snapshot record is not allowed to these credentials'},
}

ADMIN_LIST_HINT = {403: 'listing the volumes and snapshots of all projects is an admin-only API by default: use '
                        'credentials with the admin role'}


def _as_dict(raw: Any) -> Dict[str, Any]:
    """The API's JSON (a mapping) or an openstacksdk resource as a dict."""
    return dict(raw.to_dict() if hasattr(raw, 'to_dict') else raw)


def volume_view(raw: Any) -> Dict[str, Any]:
    """A plain dict of a Cinder volume (the API's JSON or an openstacksdk resource).

    ``host`` and ``cluster_name`` are admin attributes (None for other credentials).
    """
    data = _as_dict(raw)
    return {'id': data.get('id'), 'name': data.get('name'), 'status': data.get('status'), 'size': data.get('size'),
            'host': data.get('host'), 'cluster_name': data.get('cluster_name'), 'project_id': data.get('project_id'),
            'encrypted': bool(data.get('is_encrypted', data.get('encrypted')))}


_SNAPSHOT_KEYS = ('id', 'name', 'description', 'status', 'size', 'volume_id', 'metadata', 'progress',
                  'project_id', 'created_at', 'updated_at')


def snapshot_view(raw: Any) -> Optional[Dict[str, Any]]:
    """A plain dict of a Cinder snapshot from the API's JSON or an openstacksdk resource."""
    if raw is None:
        return None
    data = _as_dict(raw)
    view = {key: data.get(key) for key in _SNAPSHOT_KEYS}
    for key in ('progress', 'project_id'):
        if view[key] is None:
            view[key] = data.get('os-extended-snapshot-attributes:%s' % key)
    view['metadata'] = dict(view['metadata'] or {})
    return view


def manageable_view(raw: Mapping[str, Any]) -> Dict[str, Any]:
    return {
        'reference': raw.get('reference'),
        'size': raw.get('size'),
        'safe_to_manage': raw.get('safe_to_manage'),
        'reason_not_safe': raw.get('reason_not_safe'),
        'cinder_id': raw.get('cinder_id'),
        'source_reference': raw.get('source_reference'),
        'extra_info': raw.get('extra_info'),
    }


class CinderApi(object):
    """The Block Storage calls this module makes, on an ``openstack.connection.Connection``.

    Manage, unmanage and the listing are sent with an explicit, negotiated microversion (the SDK's
    own helpers always send 3.65, which older clouds refuse); everything else goes through the SDK.
    ``max_microversion`` caps what is sent (None: the highest the cloud and this module support).
    """

    def __init__(self, conn: Any, max_microversion: Optional[str] = None) -> None:
        self.conn = conn
        self.proxy = conn.block_storage
        self.cap = max_microversion
        self._versions: Optional[Tuple[Optional[str], Optional[str]]] = None

    def microversion(self, minimum: Optional[str] = None) -> Optional[str]:
        """The microversion to send (None: the cloud has none, or its maximum is below ``minimum``)."""
        if self._versions is None:
            self._versions = endpoint_microversions(self.proxy)
        wanted = CLIENT_MAX_MICROVERSION
        if self.cap and not version_at_least(self.cap, wanted):
            wanted = self.cap
        if minimum and not version_at_least(wanted, minimum):
            return None
        return negotiate_microversion(self._versions[0], self._versions[1], wanted, minimum)

    @property
    def server_max_microversion(self) -> Optional[str]:
        if self._versions is None:
            self._versions = endpoint_microversions(self.proxy)
        return self._versions[1]

    def _lookup(self, name_or_id: str, action: str) -> Optional[Dict[str, Any]]:
        with api_errors(action):
            volume = self.proxy.find_volume(name_or_id, ignore_missing=True)
        return None if volume is None else volume_view(volume)

    def find_volume(self, name_or_id: str) -> Optional[Dict[str, Any]]:
        """The volume (:func:`volume_view`) of this name or id, None when these credentials see none."""
        return self._lookup(name_or_id, 'looking up volume %s' % name_or_id)

    def require_volume(self, name_or_id: str) -> Dict[str, Any]:
        """The volume (:func:`volume_view`) of this name or id; a :class:`VolsnapError` when there is none."""
        volume = self._lookup(name_or_id, 'looking up Cinder volume %s' % name_or_id)
        if volume is None:
            raise VolsnapError('Cinder volume %s was not found (by id or name, in the project of these credentials)'
                               % name_or_id)
        return volume

    def volume_snapshots(self, volume_id: str) -> List[Dict[str, Any]]:
        with api_errors('listing the snapshots of volume %s' % volume_id):
            return [v for v in (snapshot_view(s) for s in self.proxy.snapshots(volume_id=volume_id)) if v]

    def all_volumes(self) -> List[Dict[str, Any]]:
        """Every volume these credentials see, in all projects (:func:`volume_view`; ``host`` needs an admin)."""
        with api_errors('listing the volumes of all projects', ADMIN_LIST_HINT):
            return [volume_view(v) for v in self.proxy.volumes(details=True, all_projects=True)]

    def all_snapshots(self) -> List[Dict[str, Any]]:
        """Every snapshot these credentials see, in all projects (:func:`snapshot_view`)."""
        with api_errors('listing the snapshots of all projects', ADMIN_LIST_HINT):
            return [v for v in (snapshot_view(s) for s in self.proxy.snapshots(details=True, all_projects=True)) if v]

    def get_snapshot(self, snapshot_id: str) -> Optional[Dict[str, Any]]:
        try:
            with api_errors('reading snapshot %s' % snapshot_id):
                return snapshot_view(self.proxy.get_snapshot(snapshot_id))
        except VolsnapError as exc:
            if exc.details.get('status_code') == 404:
                return None
            raise

    def manage(self, volume_id: str, ref: Mapping[str, Any], name: Optional[str], description: Optional[str],
               metadata: Optional[Mapping[str, str]]) -> Tuple[Dict[str, Any], bool]:
        """POST the manage request; (the new snapshot record, True when the legacy API was used)."""
        body: Dict[str, Any] = {'volume_id': volume_id, 'ref': dict(ref)}
        if name is not None:
            body['name'] = name
        if description is not None:
            body['description'] = description
        if metadata is not None:
            body['metadata'] = dict(metadata)
        version = self.microversion(MANAGE_MICROVERSION)
        legacy = version is None
        url = '/os-snapshot-manage' if legacy else '/manageable_snapshots'
        answer = request_json(self.proxy, 'POST', url, 'managing %s on volume %s' % (json.dumps(dict(ref)), volume_id),
                              microversion=version, body={'snapshot': body}, hints=POLICY_HINTS['manage'])
        return snapshot_view((answer or {}).get('snapshot') or {}) or {}, legacy

    def _action(self, snapshot_id: str, body: Mapping[str, Any], action: str,
                hints: Optional[Mapping[int, str]] = None) -> None:
        request_json(self.proxy, 'POST', '/snapshots/%s/action' % snapshot_id, action,
                     microversion=self.microversion(), body=body, hints=hints)

    def unmanage(self, snapshot_id: str) -> None:
        self._action(snapshot_id, {'os-unmanage': {}}, 'unmanaging snapshot %s' % snapshot_id,
                     POLICY_HINTS['unmanage'])

    def update_snapshot_status(self, snapshot_id: str, status: str, progress: Optional[str] = None) -> None:
        """``os-update_snapshot_status`` (the call Nova makes at the end of an assisted snapshot)."""
        body: Dict[str, Any] = {'status': status}
        if progress is not None:
            body['progress'] = progress
        self._action(snapshot_id, {'os-update_snapshot_status': body},
                     'reporting status %s%s of snapshot %s to Cinder'
                     % (status, ' (progress %s)' % progress if progress else '', snapshot_id),
                     {403: 'the cloud\'s policy (snapshot_extension:snapshot_actions:update_snapshot_status) refuses '
                           'status updates to these credentials'})

    def delete(self, snapshot_id: str) -> None:
        request_json(self.proxy, 'DELETE', '/snapshots/%s' % snapshot_id, 'deleting snapshot record %s' % snapshot_id,
                     microversion=self.microversion(), hints=POLICY_HINTS['delete'])

    def update(self, snapshot_id: str, name: Optional[str], description: Optional[str],
               metadata: Optional[Mapping[str, str]]) -> None:
        attrs = {k: v for k, v in (('name', name), ('description', description)) if v is not None}
        with api_errors('updating snapshot %s' % snapshot_id):
            if attrs:
                self.proxy.update_snapshot(snapshot_id, **attrs)
            if metadata:
                self.proxy.set_snapshot_metadata(snapshot_id, **dict(metadata))

    def manageable_page(self, host: Optional[str], cluster: Optional[str], limit: Optional[int] = None,
                        marker: Optional[Mapping[str, Any]] = None, offset: Optional[int] = None,
                        sort: Optional[str] = None) -> Tuple[List[Dict[str, Any]], bool]:
        """One page of the detailed manageable listing; (entries, True when the legacy API was used)."""
        version = self.microversion(CLUSTER_MICROVERSION if cluster else MANAGE_MICROVERSION)
        if cluster and version is None:
            raise VolsnapError('listing manageable snapshots by cluster needs Block Storage API microversion %s; the '
                               'cloud offers up to %s: give host instead'
                               % (CLUSTER_MICROVERSION, self.server_max_microversion or 'none'))
        legacy = version is None
        url = '/os-snapshot-manage/detail' if legacy else '/manageable_snapshots/detail'
        query: Dict[str, Any] = {}
        if host:
            query['host'] = host
        if cluster:
            query['cluster'] = cluster
        if limit is not None:
            query['limit'] = limit
        if marker is not None:
            query['marker'] = json.dumps(dict(marker))
        if offset:
            query['offset'] = offset
        if sort:
            query['sort'] = sort
        where = 'cluster %s' % cluster if cluster else 'host %s' % host
        answer = request_json(self.proxy, 'GET', url, 'listing the manageable snapshots of %s' % where,
                              microversion=version, params=query, hints=POLICY_HINTS['list'])
        entries = (answer or {}).get('manageable-snapshots') or []
        return [manageable_view(e) for e in entries], legacy


def cinder_api(params: Mapping[str, Any]) -> CinderApi:
    """A :class:`CinderApi` on a connection made from the module's connection options.

    ``block_storage_microversion`` is both the connection's default and the cap of the
    microversions :class:`CinderApi` negotiates.
    """
    microversion = params.get('block_storage_microversion')
    return CinderApi(connect(params, microversion), microversion)
