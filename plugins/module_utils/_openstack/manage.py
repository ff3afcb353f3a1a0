# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manage an existing backend snapshot into Cinder, unmanage it, and list manageable snapshots.

Spec 004 ("import/export snapshots"), as merged into Cinder:

* manage: ``POST /manageable_snapshots`` (microversion >= 3.8) or the legacy extension
  ``POST /os-snapshot-manage`` with ``{"snapshot": {"volume_id", "ref", "name", "description",
  "metadata"}}``; Cinder creates a snapshot record in ``creating`` and the volume service ends it
  in ``available`` (the RBD driver renames the backend snapshot to ``snapshot-<id>`` and protects
  it) or in ``error`` (for example ``ManageExistingInvalidReference`` when the reference does not
  exist; the API keeps no reason).
* unmanage: ``os-unmanage`` action, only on ``available`` or ``error`` snapshots; Cinder forgets
  the record, the data stays on the backend.
* listing: ``GET /manageable_snapshots/detail?host=...`` (or ``cluster=``, microversion >= 3.17),
  legacy ``GET /os-snapshot-manage/detail``; entries carry ``reference``, ``size``,
  ``safe_to_manage``, ``reason_not_safe``, ``cinder_id``, ``source_reference``, ``extra_info``.

:class:`SnapshotManage` and :func:`list_manageable` are the logic over the Cinder client (``cinder.py``'s
:class:`CinderApi`, exercised against the real lab), unit tested with a fake of it;
:func:`manage_snapshot` and :func:`manageable_snapshots` are the whole run of the snapshot_manage and
manageable_snapshot_info modules, from their parameters.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, cast

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import UUID
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.cinder import cinder_api, snapshot_view
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import StatusError, WaitTimeout, wait_for_status

SOURCE_NAME = 'source-name'
UNMANAGEABLE = ('available', 'error')
PAGE_SIZE = 1000                  # Cinder's default osapi_max_limit

_CINDER_SNAPSHOT_NAME = re.compile(r'^(?:_?snapshot-)(%s)$' % UUID)


def normalize_ref(ref: Any) -> Dict[str, Any]:
    """A driver reference dict: a string is the backend snapshot's name (``{"source-name": ref}``)."""
    if isinstance(ref, str):
        if not ref.strip():
            raise VolsnapError('ref must not be empty: give the backend snapshot name (for RBD, the name of the '
                               'snapshot of the volume-<id> image) or a driver reference dict')
        return {SOURCE_NAME: ref}
    if isinstance(ref, Mapping):
        if not ref:
            raise VolsnapError('ref must not be an empty dict: give for example {"source-name": "<snapshot name>"}')
        return dict(ref)
    raise VolsnapError('ref must be a string (the backend snapshot name) or a dict (the driver reference, for '
                       'example {"source-name": "..."}), not %s' % type(ref).__name__)


def same_ref(a: Optional[Mapping[str, Any]], b: Optional[Mapping[str, Any]]) -> bool:
    if not a or not b:
        return False
    return {str(k): str(v) for k, v in a.items()} == {str(k): str(v) for k, v in b.items()}


def cinder_id_in_ref(ref: Mapping[str, Any]) -> Optional[str]:
    """The snapshot id when the reference is a name Cinder gives snapshots (``snapshot-<id>``)."""
    match = _CINDER_SNAPSHOT_NAME.match(str(ref.get(SOURCE_NAME, '')))
    return match.group(1).lower() if match else None


def entry_of_volume(entry: Mapping[str, Any], volume_id: str) -> bool:
    """True when a manageable-listing entry's source reference names this volume (``volume-<id>`` for RBD)."""
    source = entry.get('source_reference')
    if not source:
        return True  # drivers that give no source reference: the volume cannot be told, keep the entry
    values = source.values() if isinstance(source, Mapping) else [source]
    return any(volume_id.lower() in str(v).lower() for v in values)


def list_manageable(api: Any, host: Optional[str], cluster: Optional[str], limit: Optional[int] = None,
                    marker: Optional[Mapping[str, Any]] = None, offset: Optional[int] = None,
                    sort: Optional[str] = None, page_size: int = PAGE_SIZE) -> Dict[str, Any]:
    """The manageable snapshots of a host or cluster.

    With ``limit`` one page is returned and ``next_marker`` is the reference to pass as ``marker``
    for the next one (None when this page is the last). Without ``limit`` every page is fetched.
    """
    if not host and not cluster:
        raise VolsnapError('give host (the cinder-volume host, for example <host>@<backend>) or cluster')
    if host and cluster:
        raise VolsnapError('give either host or cluster, not both')
    if limit is not None and limit < 1:
        raise VolsnapError('limit must be at least 1')
    if offset is not None and offset < 0:
        raise VolsnapError('offset must not be negative')
    if limit is not None:
        try:
            entries, legacy = api.manageable_page(host, cluster, limit=limit, marker=marker, offset=offset,
                                                  sort=sort)
        except VolsnapError as exc:
            if marker is not None and _marker_lost(exc):
                raise VolsnapError('%s. The backend no longer has the marker entry %s (the listing changed since the '
                                   'previous page): start again without marker' % (exc.msg, json.dumps(dict(marker))),
                                   **exc.details)
            raise
        next_marker = entries[-1]['reference'] if len(entries) >= limit and entries else None
        return {'manageable_snapshots': entries, 'next_marker': next_marker, 'legacy_api': legacy}
    attempt = 0
    while True:
        attempt += 1
        try:
            return _fetch_all(api, host, cluster, marker, offset, sort, page_size)
        except VolsnapError as exc:
            # an entry used as the marker of the next page was removed meanwhile: read the listing again
            if attempt >= MARKER_RETRIES or not _marker_lost(exc):
                raise


MARKER_RETRIES = 3


def _marker_lost(exc: VolsnapError) -> bool:
    return exc.details.get('status_code') == 400 and 'marker not found' in str(exc.details.get('api_message', ''))


def _fetch_all(api: Any, host: Optional[str], cluster: Optional[str], marker: Optional[Mapping[str, Any]],
               offset: Optional[int], sort: Optional[str], page_size: int) -> Dict[str, Any]:
    collected: List[Dict[str, Any]] = []
    legacy = False
    page_marker = marker
    first = True
    while True:
        entries, legacy = api.manageable_page(host, cluster, limit=page_size, marker=page_marker,
                                              offset=offset if first else None, sort=sort)
        first = False
        collected.extend(entries)
        if len(entries) < page_size:
            break
        last = entries[-1]['reference']
        if page_marker is not None and same_ref(last, page_marker):
            break  # a backend that ignores the marker would loop forever
        page_marker = last
    return {'manageable_snapshots': collected, 'next_marker': None, 'legacy_api': legacy}


@dataclass
class ManageableQuery:
    host: Optional[str] = None
    cluster: Optional[str] = None
    volume: Optional[str] = None
    limit: Optional[int] = None
    marker: Any = None
    offset: Optional[int] = None
    sort: Optional[str] = None


def manageable_info(api: Any, query: ManageableQuery) -> Dict[str, Any]:
    """The manageable_snapshot_info result: the listing of a host or cluster, or of one volume's backend."""
    host, cluster = query.host, query.cluster
    volume = None
    if query.volume:
        volume = api.find_volume(query.volume)
        if volume is None:
            raise VolsnapError('volume %s was not found in Cinder (looked up as name and id with these credentials)'
                               % query.volume)
        if not host and not cluster:
            host = volume.get('host')
            if not host:
                cluster = volume.get('cluster_name')
            if not host and not cluster:
                raise VolsnapError('the host of volume %s is not visible to these credentials (admin attribute '
                                   'os-vol-host-attr:host): give host or cluster' % volume['id'])
    marker = normalize_ref(query.marker) if query.marker is not None else None
    listed = list_manageable(api, host, cluster, limit=query.limit, marker=marker, offset=query.offset,
                             sort=query.sort)
    entries = listed['manageable_snapshots']
    if volume is not None:
        entries = [e for e in entries if entry_of_volume(e, volume['id'])]
    return {'changed': False, 'manageable_snapshots': entries, 'next_marker': listed['next_marker'],
            'host': host, 'cluster': cluster, 'legacy_api': listed['legacy_api']}


@dataclass
class ManageRequest:
    state: str
    volume: str
    ref: Any = None
    name: Optional[str] = None
    description: Optional[str] = None
    metadata: Optional[Dict[str, Any]] = None
    wait: bool = True
    timeout: int = 180
    cleanup_on_error: bool = False


class SnapshotManage(object):
    """The snapshot_manage logic over a :class:`CinderApi`-like object."""

    def __init__(self, api: Any, request: ManageRequest, check_mode: bool, interval: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.req = request
        self.check_mode = check_mode
        self.interval = interval
        self.sleep = sleep
        self.clock = clock
        self.warnings: List[str] = []
        self.listing_error: Optional[str] = None
        self._listing: Optional[List[Dict[str, Any]]] = None
        self._listing_done = False
        self.legacy = False

    # ---- helpers ---------------------------------------------------------------------------

    def _metadata(self) -> Optional[Dict[str, str]]:
        if self.req.metadata is None:
            return None
        return {str(k): '' if v is None else str(v) for k, v in self.req.metadata.items()}

    def _wait(self, snapshot_id: str, ok: Any, fail: Any, what: str) -> Optional[Dict[str, Any]]:
        return cast(Optional[Dict[str, Any]],
                    wait_for_status(lambda: self.api.get_snapshot(snapshot_id), ok=ok, fail=fail, timeout=self.req.timeout,
                                    interval=self.interval, what=what, sleep=self.sleep, clock=self.clock))

    def _volume(self, required: bool) -> Optional[Dict[str, Any]]:
        volume: Optional[Dict[str, Any]] = self.api.find_volume(self.req.volume)
        if volume is None and required:
            raise VolsnapError('the parent volume %s was not found in Cinder (looked up as name and id with these '
                               'credentials): a backend snapshot can only be managed onto an existing Cinder volume; '
                               'manage the volume first (openstack.cloud.volume_manage) or fix volume'
                               % self.req.volume)
        return volume

    def listing(self, volume: Mapping[str, Any]) -> Optional[List[Dict[str, Any]]]:
        """The manageable entries of this volume's backend that belong to the volume; None if not readable."""
        if self._listing_done:
            return self._listing
        self._listing_done = True
        host, cluster = volume.get('host'), None
        if not host and volume.get('cluster_name'):
            host, cluster = None, volume.get('cluster_name')
        if not host and not cluster:
            self.listing_error = ('the volume\'s host is not visible to these credentials (admin attribute '
                                  'os-vol-host-attr:host)')
            return None
        try:
            entries = list_manageable(self.api, host, cluster)['manageable_snapshots']
        except VolsnapError as exc:
            self.listing_error = exc.msg
            return None
        self._listing = [e for e in entries if entry_of_volume(e, volume['id'])]
        return self._listing

    def _listing_entry(self, volume: Mapping[str, Any], ref: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        for entry in self.listing(volume) or []:
            if same_ref(entry.get('reference'), ref):
                return entry
        return None

    def find_existing(self, volume: Mapping[str, Any], ref: Optional[Mapping[str, Any]],
                      name: Optional[str], by_id: bool) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        """The Cinder snapshot of the volume this request is about, and how it was found."""
        snaps = self.api.volume_snapshots(volume['id'])
        if name is not None:
            if by_id:
                match = [s for s in snaps if s['id'] == name]
                if match:
                    return match[0], 'id'
            match = [s for s in snaps if s['name'] == name]
            if len(match) > 1:
                raise VolsnapError('volume %s has %d snapshots named %s (%s): give the snapshot id as name instead'
                                   % (volume['id'], len(match), name, ', '.join(s['id'] for s in match)))
            if match:
                return match[0], 'name'
        if ref is not None:
            cinder_id = cinder_id_in_ref(ref)
            if cinder_id:
                match = [s for s in snaps if s['id'].lower() == cinder_id]
                if match:
                    return match[0], 'reference'
            entry = self._listing_entry(volume, ref)
            if entry is not None and entry.get('cinder_id'):
                snapshot = self.api.get_snapshot(entry['cinder_id'])
                if snapshot is not None:
                    return snapshot, 'manageable listing'
        return None, None

    def _result(self, changed: bool, action: str, volume: Optional[Mapping[str, Any]],
                snapshot: Optional[Mapping[str, Any]], before: Optional[Mapping[str, Any]],
                after: Optional[Mapping[str, Any]], **extra: Any) -> Dict[str, Any]:
        result: Dict[str, Any] = {
            'changed': changed,
            'action': action,
            'snapshot': dict(snapshot) if snapshot is not None else None,
            'volume': {'id': volume['id'], 'name': volume.get('name')} if volume else None,
            'legacy_api': self.legacy,
            'diff': {'before': dict(before) if before else {}, 'after': dict(after) if after else {}},
        }
        if self.warnings:
            result['warnings'] = list(self.warnings)
        result.update(extra)
        return result

    # ---- state=present ---------------------------------------------------------------------

    def run(self) -> Dict[str, Any]:
        if self.req.state == 'present':
            return self.present()
        return self.absent()

    def present(self) -> Dict[str, Any]:
        req = self.req
        if req.ref is None or not req.name:
            raise VolsnapError('state=present needs ref (the backend snapshot) and name (the Cinder snapshot name, '
                               'which also identifies it on later runs)')
        ref = normalize_ref(req.ref)
        volume = self._volume(required=True)
        if volume is None:  # _volume raises first; this keeps the type checker informed
            raise VolsnapError('the parent volume %s was not found' % req.volume)
        existing, found_by = self.find_existing(volume, ref, req.name, by_id=False)
        if existing is not None:
            return self._present_existing(volume, ref, existing, found_by or 'name')
        return self._manage(volume, ref, before=None)

    def _present_existing(self, volume: Mapping[str, Any], ref: Mapping[str, Any], snapshot: Dict[str, Any],
                          found_by: str) -> Dict[str, Any]:
        req = self.req
        status = snapshot.get('status')
        if status == 'creating' and req.wait and not self.check_mode:
            snapshot = self._wait_managed(volume, ref, snapshot)
            status = snapshot.get('status')
        if status == 'error':
            if not req.cleanup_on_error:
                raise VolsnapError('snapshot %s (%s) of volume %s exists in status error (an earlier manage of this '
                                   'reference failed, or the snapshot broke): set cleanup_on_error=true to remove the '
                                   'error record and manage the reference again, or remove it yourself'
                                   % (snapshot.get('name'), snapshot['id'], volume['id']),
                                   snapshot=snapshot)
            if self.check_mode:
                if self.listing(volume) is None:  # the real run's _cleanup refuses then
                    raise VolsnapError('cannot remove the error record %s safely: the manageable listing, needed to '
                                       'tell whether the backend holds data for it, could not be read (%s)'
                                       % (snapshot['id'], self.listing_error), snapshot=snapshot)
                self.warnings.append('the error record %s would be removed and the reference managed again'
                                     % snapshot['id'])
                return self._manage(volume, ref, before=snapshot, replaced=snapshot['id'])
            self._cleanup(volume, snapshot)
            return self._manage(volume, ref, before=snapshot, replaced=snapshot['id'])
        if status not in ('available', 'creating'):
            raise VolsnapError('snapshot %s (%s) of volume %s is in status %s, not available: it cannot be taken as '
                               'the managed snapshot; wait for the running operation to end or fix the snapshot'
                               % (snapshot.get('name'), snapshot['id'], volume['id'], status), snapshot=snapshot)
        updates: Dict[str, Any] = {}
        if snapshot.get('name') != req.name:
            updates['name'] = req.name
        if req.description is not None and (snapshot.get('description') or '') != req.description:
            updates['description'] = req.description
        wanted_meta = self._metadata()
        if wanted_meta:
            current = snapshot.get('metadata') or {}
            changed_meta = {k: v for k, v in wanted_meta.items() if current.get(k) != v}
            if changed_meta:
                updates['metadata'] = changed_meta
        if not updates:
            return self._result(False, 'none', volume, snapshot, snapshot, snapshot, found_by=found_by)
        after = dict(snapshot)
        for key in ('name', 'description'):
            if key in updates:
                after[key] = updates[key]
        if 'metadata' in updates:
            after['metadata'] = dict(snapshot.get('metadata') or {}, **updates['metadata'])
        if not self.check_mode:
            self.api.update(snapshot['id'], updates.get('name'), updates.get('description'), updates.get('metadata'))
            after = self.api.get_snapshot(snapshot['id']) or after
        return self._result(True, 'update', volume, after, snapshot, after, found_by=found_by)

    def _planned(self, volume: Mapping[str, Any]) -> Dict[str, Any]:
        return {'id': None, 'name': self.req.name, 'description': self.req.description, 'status': None,
                'size': None, 'volume_id': volume['id'], 'metadata': self._metadata() or {}, 'progress': None,
                'project_id': None, 'created_at': None, 'updated_at': None}

    def _manage(self, volume: Mapping[str, Any], ref: Mapping[str, Any], before: Optional[Mapping[str, Any]],
                **extra: Any) -> Dict[str, Any]:
        req = self.req
        entry = self._listing_entry(volume, ref)
        listing = self.listing(volume)
        if entry is not None and not entry.get('safe_to_manage') and not entry.get('cinder_id'):
            raise VolsnapError('Cinder reports %s on volume %s as not safe to manage: %s'
                               % (json.dumps(dict(ref)), volume['id'], entry.get('reason_not_safe') or 'no reason given'),
                               manageable=entry)
        if self.check_mode:
            self._predict_manage(volume, ref, replacing=extra.get('replaced'))
        elif entry is None and listing is not None:
            self.warnings.append('%s is not in the manageable listing of volume %s\'s backend: Cinder will most '
                                 'likely put the new snapshot in error' % (json.dumps(dict(ref)), volume['id']))
        planned = self._planned(volume)
        if self.check_mode:
            return self._result(True, 'manage', volume, planned, before, planned, **extra)
        created, self.legacy = self.api.manage(volume['id'], ref, req.name, req.description, self._metadata())
        if not created.get('id'):
            raise VolsnapError('Cinder accepted the manage request but returned no snapshot id', answer=created)
        if not req.wait:
            return self._result(True, 'manage', volume, created, before, created, **extra)
        final = self._wait_managed(volume, ref, created)
        return self._result(True, 'manage', volume, final, before, final, **extra)

    def _not_listed(self, volume: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
        return ('the reference is not on the backend: the manageable listing of %s %s has no snapshot %s on volume %s '
                '(ManageExistingInvalidReference)'
                % ('host' if volume.get('host') else 'cluster', volume.get('host') or volume.get('cluster_name'),
                   json.dumps(dict(ref)), volume['id']))

    def _predict_manage(self, volume: Mapping[str, Any], ref: Mapping[str, Any],
                        replacing: Optional[str] = None) -> None:
        """Check mode: fail as the real run will when the reference is not on the backend.

        The real run sends the manage request and Cinder's volume service ends the new record in
        ``error`` when the reference does not exist (the RBD driver opens ``volume-<id>@<ref>``; the
        manageable listing of the volume's host lists exactly those snapshots). So a listing without
        the reference means the real run fails. A listing that cannot be read leaves the outcome
        unknown: check mode says so and fails rather than promising a change.
        """
        listing = self.listing(volume)
        if listing is None:
            raise VolsnapError('check mode cannot tell whether Cinder can manage %s on volume %s: the manageable '
                               'listing of its backend, the only way to see the backend snapshots, could not be read '
                               '(%s). Listing and managing are both admin-only in Cinder\'s default policy, so a real '
                               'run with these credentials is most likely refused as well; run with admin credentials'
                               % (json.dumps(dict(ref)), volume['id'], self.listing_error),
                               volume={'id': volume['id'], 'name': volume.get('name')})
        if self._listing_entry(volume, ref) is not None:
            return
        names = sorted(json.dumps(e.get('reference')) for e in listing
                       if e.get('safe_to_manage') and not e.get('cinder_id'))
        if self.req.cleanup_on_error:
            record = 'then remove that error record (cleanup_on_error=true) and fail'
        else:
            record = ('then fail and leave that error record in Cinder (set cleanup_on_error=true to have it '
                      'removed)')
        raise VolsnapError('check mode: a real run would fail: Cinder could not manage %s on volume %s: %s. A real '
                           'run would %ssend the manage request, Cinder would end the new snapshot record in status '
                           'error, and the module would %s. Manageable on this volume: %s (see '
                           'volsnap.openstack.manageable_snapshot_info)'
                           % (json.dumps(dict(ref)), volume['id'], self._not_listed(volume, ref),
                              'remove the error record %s, ' % replacing if replacing else '', record,
                              ', '.join(names[:20]) + (' ...' if len(names) > 20 else '') if names else 'nothing'),
                           volume={'id': volume['id'], 'name': volume.get('name')}, action='manage',
                           manageable_references=[json.loads(n) for n in names])

    def _wait_managed(self, volume: Mapping[str, Any], ref: Mapping[str, Any],
                      snapshot: Mapping[str, Any]) -> Dict[str, Any]:
        try:
            final = self._wait(snapshot['id'], ok={'available'}, fail={'error', None},
                               what='snapshot %s' % snapshot['id'])
        except StatusError as exc:
            if exc.status is None:
                raise VolsnapError('snapshot %s disappeared while Cinder was managing it (someone removed the record)'
                                   % snapshot['id'])
            self._manage_failed(volume, ref, exc.resource or dict(snapshot))
            raise  # not reached: _manage_failed raises
        except WaitTimeout as exc:
            raise VolsnapError('snapshot %s is still %s after %s seconds; Cinder keeps working on it: run again later '
                               '(an identical run waits for it) or raise timeout'
                               % (snapshot['id'], exc.status, self.req.timeout), snapshot=snapshot_view(exc.resource))
        if final is None:  # gone is a failure status above, so this does not happen
            raise VolsnapError('snapshot %s disappeared while Cinder was managing it' % snapshot['id'])
        return final

    def _manage_failed(self, volume: Mapping[str, Any], ref: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        listing = self.listing(volume)
        entry = self._listing_entry(volume, ref)
        if listing is None:
            reason = ('Cinder keeps no reason in its API (see the cinder-volume log; a reference that does not exist '
                      'raises ManageExistingInvalidReference); the manageable listing could not be read to check: %s'
                      % self.listing_error)
        elif entry is None:
            reason = self._not_listed(volume, ref)
        else:
            reason = ('the backend lists the reference (%s), so the driver failed for another reason: see the '
                      'cinder-volume log' % json.dumps(entry))
        cleaned = False
        if self.req.cleanup_on_error:
            self._cleanup(volume, record)
            cleaned = True
            tail = 'The error record was removed (cleanup_on_error=true).'
        else:
            tail = ('The error record %s stays in Cinder; set cleanup_on_error=true to have it removed (the next run '
                    'then retries), or remove it yourself.' % record['id'])
        raise VolsnapError('Cinder could not manage %s on volume %s: snapshot %s ended in status error; %s. %s'
                           % (json.dumps(dict(ref)), volume['id'], record['id'], reason, tail),
                           snapshot=snapshot_view(record), cleaned_up=cleaned, reason=reason)

    def _cleanup(self, volume: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        """Remove an error record without ever destroying backend data.

        When the backend holds a snapshot that belongs to the record (the listing's ``cinder_id``), the
        record is unmanaged (data kept); otherwise it is deleted, which on the backend is a no-op
        because nothing carries its name.
        """
        self._listing_done = False  # the listing may have changed since it was read
        listing = self.listing(volume)
        if listing is None:
            raise VolsnapError('cannot remove the error record %s safely: the manageable listing, needed to tell '
                               'whether the backend holds data for it, could not be read (%s)'
                               % (record['id'], self.listing_error), snapshot=snapshot_view(record))
        owned = any((e.get('cinder_id') or '').lower() == str(record['id']).lower() for e in listing)
        if owned:
            self.api.unmanage(record['id'])
        else:
            self.api.delete(record['id'])
        try:
            self._wait(record['id'], ok={None}, fail={'error_deleting', 'available'},
                       what='error record %s' % record['id'])
        except (StatusError, WaitTimeout) as exc:
            raise VolsnapError('the error record %s could not be removed: %s' % (record['id'], exc.msg),
                               snapshot=snapshot_view(exc.resource))

    # ---- state=absent ----------------------------------------------------------------------

    def absent(self) -> Dict[str, Any]:
        req = self.req
        if req.ref is None and not req.name:
            raise VolsnapError('state=absent needs name (the Cinder snapshot name or id) or ref (the backend '
                               'reference of a managed snapshot)')
        ref = normalize_ref(req.ref) if req.ref is not None else None
        volume = self._volume(required=False)
        if volume is None:
            return self._result(False, 'none', None, None, None, None,
                                msg='volume %s does not exist, so it has no snapshot to unmanage' % req.volume)
        snapshot, found_by = self.find_existing(volume, ref, req.name, by_id=True)
        if snapshot is None:
            return self._result(False, 'none', volume, None, None, None)
        status = snapshot.get('status')
        if status == 'unmanaging':
            if req.wait and not self.check_mode:
                self._wait_gone(snapshot)
            return self._result(False, 'none', volume, snapshot, snapshot, snapshot, found_by=found_by)
        if status not in UNMANAGEABLE:
            raise VolsnapError('snapshot %s (%s) is in status %s: Cinder unmanages only snapshots in status %s. Wait '
                               'for the running operation to end, or (admin) reset the status if it is stuck'
                               % (snapshot.get('name'), snapshot['id'], status, ' or '.join(UNMANAGEABLE)),
                               snapshot=snapshot)
        if self.check_mode:
            return self._result(True, 'unmanage', volume, snapshot, snapshot, None, found_by=found_by)
        self.api.unmanage(snapshot['id'])
        if req.wait:
            self._wait_gone(snapshot)
        return self._result(True, 'unmanage', volume, snapshot, snapshot, None, found_by=found_by)

    def _wait_gone(self, snapshot: Mapping[str, Any]) -> None:
        try:
            self._wait(snapshot['id'], ok={None}, fail={'error_deleting', 'available', 'error'},
                       what='snapshot %s' % snapshot['id'])
        except StatusError as exc:
            raise VolsnapError('Cinder could not unmanage snapshot %s: it went to status %s (see the cinder-volume '
                               'log; the RBD driver fails when the backend snapshot is gone or busy)'
                               % (snapshot['id'], exc.status), snapshot=snapshot_view(exc.resource))
        except WaitTimeout as exc:
            raise VolsnapError('snapshot %s is still %s after %s seconds; Cinder keeps working on it: run again later '
                               'or raise timeout' % (snapshot['id'], exc.status, self.req.timeout))


# ---- the modules' runs ---------------------------------------------------------------------

def _from_params(cls: Any, params: Mapping[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` from the module parameters of the same names."""
    return cls(**{item.name: params[item.name] for item in fields(cls)})


def manage_snapshot(params: Mapping[str, Any], check_mode: bool, api: Any = None) -> Dict[str, Any]:
    """The snapshot_manage module's result (with its ``diff``); ``api`` defaults to :func:`cinder_api`."""
    request = _from_params(ManageRequest, params)
    return SnapshotManage(api if api is not None else cinder_api(params), request, check_mode).run()


def manageable_snapshots(params: Mapping[str, Any], api: Any = None) -> Dict[str, Any]:
    """The manageable_snapshot_info module's result; ``api`` defaults to :func:`cinder_api`."""
    query = _from_params(ManageableQuery, params)
    return manageable_info(api if api is not None else cinder_api(params), query)
