# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An in-memory stand-in for _openstack/cinder.py's CinderApi, for unit tests of the pure logic.

It follows the rules of Cinder read from its sources (state transitions of manage, unmanage,
delete and os-update_snapshot_status; the RBD driver's rename to snapshot-<id> on manage; the
manageable listing's cinder_id and paging). The real API is exercised by the integration tests.
"""

from __future__ import annotations

import copy
import uuid

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError

STATUS_MAP = {'creating': ('creating', 'available', 'error'), 'deleting': ('deleting', 'error_deleting')}


def http_error(status, text):
    return VolsnapError('failed (HTTP %d): %s' % (status, text), status_code=status, api_message=text)


class FakeCinder:
    def __init__(self, host='node@ceph#ceph', legacy=False):
        self.host = host
        self.legacy = legacy
        self.volumes = {}      # id -> dict
        self.snapshots = {}    # id -> dict
        self.backend = {}      # volume id -> {snapshot name: size GiB}
        self.pending = {}      # snapshot id -> list of (status, action) applied on later reads
        self.calls = []
        self.fail = {}         # method name -> VolsnapError raised when called
        self.hide_host = False
        self.ignore_marker = False
        self.after_page = None  # called after each listing page (to change the backend between pages)

    # ---- set up -----------------------------------------------------------------------------

    def add_volume(self, name, size=1):
        vid = str(uuid.uuid4())
        self.volumes[vid] = {'id': vid, 'name': name, 'status': 'available', 'size': size, 'host': self.host,
                             'cluster_name': None, 'project_id': 'p'}
        self.backend[vid] = {}
        return vid

    def add_backend_snapshot(self, volume_id, name, size=1):
        self.backend[volume_id][name] = size

    def add_snapshot(self, volume_id, name, status='available', metadata=None, description=None, progress='100%'):
        sid = str(uuid.uuid4())
        self.snapshots[sid] = {'id': sid, 'name': name, 'description': description, 'status': status, 'size': 1,
                               'volume_id': volume_id, 'metadata': dict(metadata or {}), 'progress': progress,
                               'project_id': 'p', 'created_at': 'now', 'updated_at': None}
        return sid

    def _check(self, method):
        self.calls.append(method)
        if method in self.fail:
            raise self.fail[method]

    # ---- CinderApi ---------------------------------------------------------------------------

    def find_volume(self, name_or_id):
        self._check('find_volume')
        for vol in self.volumes.values():
            if name_or_id in (vol['id'], vol['name']):
                result = copy.deepcopy(vol)
                if self.hide_host:
                    result['host'] = None
                return result
        return None

    def volume_snapshots(self, volume_id):
        self._check('volume_snapshots')
        for sid in list(self.snapshots):
            self._advance(sid)
        return [copy.deepcopy(s) for s in self.snapshots.values() if s['volume_id'] == volume_id]

    def _advance(self, sid):
        steps = self.pending.get(sid)
        if not steps:
            return
        step = steps.pop(0)
        step()

    def get_snapshot(self, snapshot_id):
        self._check('get_snapshot')
        self._advance(snapshot_id)
        snap = self.snapshots.get(snapshot_id)
        return copy.deepcopy(snap) if snap else None

    def manage(self, volume_id, ref, name, description, metadata):
        self._check('manage')
        sid = self.add_snapshot(volume_id, name, status='creating', metadata=metadata, description=description,
                                progress='0%')
        source = ref.get('source-name')

        def finish():
            snap = self.snapshots[sid]
            if source in self.backend[volume_id]:
                size = self.backend[volume_id].pop(source)
                self.backend[volume_id]['snapshot-%s' % sid] = size
                snap.update(status='available', size=size, progress='100%')
            else:
                snap['status'] = 'error'
        self.pending[sid] = [lambda: None, finish]
        return copy.deepcopy(self.snapshots[sid]), self.legacy

    def unmanage(self, snapshot_id):
        self._check('unmanage')
        snap = self.snapshots.get(snapshot_id)
        if snap is None:
            raise http_error(404, 'Snapshot %s could not be found.' % snapshot_id)
        if snap['status'] not in ('available', 'error'):
            raise http_error(400, 'Invalid snapshot: Status must be available or error and must not be part of '
                                  'a group.')
        snap['status'] = 'unmanaging'
        name = 'snapshot-%s' % snapshot_id
        exists = name in self.backend[snap['volume_id']]

        def finish():
            if exists:
                del self.snapshots[snapshot_id]
            else:  # the RBD driver's set_snap fails: ImageNotFound
                snap['status'] = 'error_deleting'
        self.pending[snapshot_id] = [finish]

    def delete(self, snapshot_id):
        self._check('delete')
        snap = self.snapshots[snapshot_id]
        if snap['status'] not in ('available', 'error'):
            raise http_error(400, 'Invalid snapshot')
        snap['status'] = 'deleting'

        def finish():
            self.backend[snap['volume_id']].pop('snapshot-%s' % snapshot_id, None)
            del self.snapshots[snapshot_id]
        self.pending[snapshot_id] = [finish]

    def update(self, snapshot_id, name, description, metadata):
        self._check('update')
        snap = self.snapshots[snapshot_id]
        if name is not None:
            snap['name'] = name
        if description is not None:
            snap['description'] = description
        snap['metadata'].update(metadata or {})

    def update_snapshot_status(self, snapshot_id, status, progress=None):
        self._check('update_snapshot_status')
        snap = self.snapshots.get(snapshot_id)
        if snap is None:
            raise http_error(404, 'Snapshot could not be found')
        if snap['status'] not in STATUS_MAP:
            raise http_error(400, 'Snapshot status %s not allowed for update_snapshot_status' % snap['status'])
        if status not in STATUS_MAP[snap['status']]:
            raise http_error(400, 'Provided snapshot status %s not allowed for snapshot with status %s.'
                             % (status, snap['status']))
        snap['status'] = status
        if progress:
            snap['progress'] = progress

    def manageable_page(self, host, cluster, limit=None, marker=None, offset=None, sort=None):
        self._check('manageable_page')
        cinder_ids = set(self.snapshots)
        entries = []
        for vid, snaps in self.backend.items():
            for name, size in snaps.items():
                sid = name[len('snapshot-'):] if name.startswith('snapshot-') else None
                managed = sid in cinder_ids
                entries.append({'reference': {'source-name': name}, 'size': size,
                                'safe_to_manage': not managed and not name.endswith('.clone_snap'),
                                'reason_not_safe': 'already managed' if managed else (
                                    'used for clone snap' if name.endswith('.clone_snap') else None),
                                'cinder_id': sid if managed else None,
                                'source_reference': {'source-name': 'volume-%s' % vid}, 'extra_info': None})
        entries.sort(key=lambda e: e['reference']['source-name'], reverse=(sort == 'reference:desc'))
        start = 0
        if marker is not None and not self.ignore_marker:
            names = [e['reference'] for e in entries]
            if dict(marker) not in names:
                raise http_error(400, 'Invalid input received: marker not found: %s' % dict(marker))
            start = names.index(dict(marker)) + 1
        start += offset or 0
        end = start + limit if limit is not None else None
        page = copy.deepcopy(entries[start:end])
        if self.after_page is not None:
            self.after_page(self, page)
        return page, self.legacy
