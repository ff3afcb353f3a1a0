# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Planner of rbd_image_clone_upload (spec 003): which path, why, and the steps still to do.

Pure logic on facts gathered by the executor (:mod:`.upload`): no I/O here. Every step is built
through :data:`UPLOAD_ACTIONS` (the shared step model, :mod:`.._base.steps`): it carries its
arguments and its description, fixed at planning time, so check mode shows the steps a real run
executes. A step of a new image names it ``<new image id>``; the executor takes the real id from
its run context once create_image made the image.

Clone path (``enable_clone_optimization`` and Glance's target store is rbd on the volume's
cluster): snapshot the volume as ``<image id>.clone_snap`` (Cinder's name for a snapshot a clone
hangs on, so Cinder's RBD driver keeps the volume as ``<name>.deleted`` instead of failing when
the volume is deleted), protect it, clone it into Glance's pool as ``<image id>``, snapshot the
clone ``snap`` and protect it (glance_store's layout), register ``rbd://<fsid>/<pool>/<id>/snap``.
Copy in the cluster (``copy_in_cluster`` and the same kind of store): a temporary snapshot
``<image id>.upload_snap`` is copied by librbd into a new image ``<images pool>/<image id>`` (only the
allocated extents, written sparsely, no parent), snapshotted ``snap`` and protected, the temporary
snapshot removed, and ``rbd://<fsid>/<pool>/<id>/snap`` registered: an image independent of the volume.
Its checksum and hash come from Glance (``POST /v2/images/{id}/locations`` without validation data:
Glance activates the image, then reads it in the background) or from the module (``compute_hash``
reads the copy, hashing every byte of the size, and the values go with the location as validation data).
A copy without its ``snap`` is a partial one (the run was killed while copying): it is removed and made again.
Copy path otherwise: a temporary snapshot ``<image id>.upload_snap`` is streamed into Glance
through the image data API (holes are not read), then removed.

Every step is idempotent and the planner derives the remaining steps from what exists, so a run
interrupted anywhere is completed by the next run with the same arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import is_uuid
from ansible_collections.volsnap.openstack.plugins.module_utils._base.steps import Actions, Step
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.glance import Store, Stores
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.rbd import (
    CLONE_SNAP_SUFFIX,
    GLANCE_SNAP,
    Ref,
    SnapInfo,
    clone_snap_name,
    rbd_url,
)

SOURCE_PROPERTY = 'volsnap_source'
PATH_PROPERTY = 'volsnap_upload_path'
UPLOAD_SNAP_SUFFIX = '.upload_snap'
NEW_IMAGE = '<new image id>'

# Cinder volume statuses (cinder/objects/fields.py VolumeStatus) an upload may start from.
UPLOADABLE = ('available',)
IN_USE = ('in-use',)
BUSY_IMAGE = ('saving', 'importing', 'uploading')
DONE_IMAGE = ('active',)
QUEUED = ('queued',)

CLONE_STEPS = ('check_caps', 'create_image', 'set_properties', 'snapshot_volume', 'protect_volume_snapshot',
               'clone', 'flatten_clone', 'snapshot_clone', 'protect_clone_snapshot', 'release_volume_snapshot',
               'register_location', 'wait_active', 'remove_upload_snapshot')
COPY_STEPS = ('create_image', 'set_properties', 'discard_copy', 'discard_clone', 'snapshot_upload', 'upload_data',
              'wait_active', 'remove_upload_snapshot')
CEPH_COPY_STEPS = ('check_caps', 'create_image', 'set_properties', 'discard_copy', 'discard_clone',
                   'release_volume_snapshot', 'snapshot_upload',
                   'copy_data', 'snapshot_clone', 'protect_clone_snapshot', 'remove_upload_snapshot', 'compute_hash',
                   'register_location', 'wait_active')
PATH_STEPS = {'clone': CLONE_STEPS, 'copy': COPY_STEPS, 'ceph_copy': CEPH_COPY_STEPS}
# Who computes the image's checksum and hash on the ceph_copy path.
CHECKSUM_BY = ('auto', 'glance', 'module')


def upload_snap_name(image_id: str) -> str:
    return image_id + UPLOAD_SNAP_SUFFIX


def clone_pool_of(store: Optional[Store]) -> Optional[str]:
    """Where a clone-path run makes the clone: the pool of Glance's rbd store (None when the store is no rbd pool)."""
    return store.pool if store is not None and store.pool and store.type == 'rbd' else None


def source_key(fsid: str, pool: str, image: str) -> str:
    """The value of the ``volsnap_source`` image property: which RBD image the data came from."""
    return '%s/%s/%s' % (fsid, pool, image)


@dataclass
class Volume:
    """The source: an RBD image in the volume pool, and the Cinder volume when one was named."""

    pool: str
    image: str
    fsid: str
    size: int = 0
    exists: bool = True
    watchers: int = 0
    depth: int = 0
    cinder_id: Optional[str] = None
    cinder_name: Optional[str] = None
    status: Optional[str] = None
    encrypted: bool = False

    @property
    def key(self) -> str:
        return source_key(self.fsid, self.pool, self.image)

    def describe(self) -> str:
        if self.cinder_id:
            return 'Cinder volume %s (%s/%s)' % (self.cinder_id, self.pool, self.image)
        return 'RBD image %s/%s' % (self.pool, self.image)


@dataclass
class CephState:
    """What exists in Ceph for one image id (all False/None for a new image)."""

    volume_snap: Optional[SnapInfo] = None      # <volume>@<id>.clone_snap
    upload_snap: Optional[SnapInfo] = None      # <volume>@<id>.upload_snap
    upload_snap_trashed: bool = False           # its removal was interrupted (trash namespace, no clone uses it)
    clone_exists: bool = False                  # <images pool>/<id>
    clone_parent: Optional[Ref] = None          # its parent, None when flattened or not a clone
    clone_snap: Optional[SnapInfo] = None       # <images pool>/<id>@snap


@dataclass
class Request:
    state: str = 'present'
    optimization: bool = False
    force: bool = False
    store: Optional[str] = None
    max_clone_depth: int = 5
    image_name: Optional[str] = None
    image_id: Optional[str] = None
    properties: Dict[str, Any] = field(default_factory=dict)
    flatten_children: bool = False
    fallback_to_copy: bool = True
    copy_in_cluster: bool = False
    checksum_by: str = 'module'     # resolved by the executor: glance | module
    hash_algo: str = 'sha512'
    location_api: str = 'auto'


@dataclass
class Plan:
    path: Optional[str]
    why: str
    image_id: Optional[str]
    location: Optional[str]
    steps: List[Step] = field(default_factory=list)
    resumed: bool = False
    notes: List[str] = field(default_factory=list)
    properties: Dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.steps)

    def names(self) -> List[str]:
        return [step.action for step in self.steps]


# ---------------------------------------------------------------------------------------------
# the steps: every action of the upload (present, absent, cleanup), defined once

def _ref(value: Sequence[Optional[str]]) -> Ref:
    """A :class:`Ref` from its step form ``[pool, image, snap]``."""
    return Ref(str(value[0]), str(value[1]), value[2])


def ref_arg(ref: Ref) -> List[Optional[str]]:
    """The step form of a :class:`Ref` (plain values, as every step argument)."""
    return [ref.pool, ref.image, ref.snap]


def volume_snap(args: Mapping[str, Any], image_id: Optional[str] = None) -> Ref:
    """``<volume>@<image id>.clone_snap``: the snapshot a clone hangs on (``image_id`` the run's, else the plan's)."""
    return Ref(args['pool'], args['image'], clone_snap_name(image_id or args['image_id']))


def upload_snap(args: Mapping[str, Any], image_id: Optional[str] = None) -> Ref:
    """``<volume>@<image id>.upload_snap``: the snapshot the copy path streams."""
    return Ref(args['pool'], args['image'], upload_snap_name(image_id or args['image_id']))


def clone_ref(args: Mapping[str, Any], image_id: Optional[str] = None) -> Ref:
    """``<images pool>/<image id>``: the clone Glance's rbd store holds."""
    return Ref(args['store_pool'], image_id or args['image_id'])


def _release_text(args: Mapping[str, Any]) -> str:
    ref = _ref(args['ref'])
    if args.get('orphan'):
        return 'remove %s: a deleted Cinder volume with no snapshot left' % ref
    if args.get('why'):
        return 'remove %s (%s)' % (ref, args['why'])
    return 'remove %s and, when it was the last reference of a deleted Cinder volume (*.deleted), that volume' % ref


_TEXTS: Dict[str, Callable[[Mapping[str, Any]], str]] = {
    # present
    'check_caps': lambda a: 'check that the Ceph client can write to pool %s' % a['store_pool'],
    'create_image': lambda a: 'create Glance image %s (%s/%s, queued)' % (a['name'], 'raw', 'bare'),
    'set_properties': lambda a: ('set properties %s on Glance image %s'
                                 % (', '.join(sorted(a['properties'])), a['image_id'])),
    'snapshot_volume': lambda a: 'snapshot %s' % volume_snap(a),
    'protect_volume_snapshot': lambda a: 'protect %s' % volume_snap(a),
    'clone': lambda a: 'clone %s into %s' % (volume_snap(a), clone_ref(a)),
    'flatten_clone': lambda a: ('flatten %s: the volume already has %d clone parent(s), max_clone_depth is %d'
                                % (clone_ref(a), a['depth'], a['max_clone_depth'])),
    'snapshot_clone': lambda a: 'snapshot %s@%s' % (clone_ref(a), GLANCE_SNAP),
    'protect_clone_snapshot': lambda a: 'protect %s@%s' % (clone_ref(a), GLANCE_SNAP),
    'release_volume_snapshot': lambda a: ('remove %s%s: the flattened clone no longer needs it'
                                          % ('snapshot ' if a.get('leftover') else '', volume_snap(a))),
    'register_location': lambda a: 'register %s with Glance image %s%s' % (
        a['location'], a['image_id'], _hash_text(a.get('checksum_by'))),
    'discard_copy': lambda a: ('remove %s, a copy an interrupted run left without its snapshot %s (or another '
                               'path\'s leftover)' % (clone_ref(a), GLANCE_SNAP)),
    'copy_data': lambda a: ('copy the allocated extents of %s (%d bytes in all) into a new RBD image %s inside the '
                            'cluster (sparse, no parent: independent of the volume)'
                            % (upload_snap(a), a['size'], clone_ref(a))),
    'compute_hash': lambda a: ('compute md5 and %s of the %d bytes of %s@%s (holes hashed as zeros, not read)'
                               % (a['hash_algo'], a['size'], clone_ref(a), GLANCE_SNAP)),
    'wait_active': lambda a: 'wait until Glance image %s is active' % a['image_id'],
    'discard_clone': lambda a: ('remove what an earlier clone-path run left for image %s (clone, its snapshot, %s)'
                                % (a['image_id'], volume_snap(a))),
    'snapshot_upload': lambda a: 'snapshot %s (a consistent point in time to read)' % upload_snap(a),
    'upload_data': lambda a: ('stream %d bytes of %s (holes not read) into Glance image %s, store %s'
                              % (a['size'], upload_snap(a), a['image_id'],
                                 a['store'] if a['store'] is not None else 'the default store')),
    'remove_upload_snapshot': lambda a: ('remove %s%s' % ('leftover snapshot ' if a.get('leftover') else '',
                                                          upload_snap(a))),
    # absent
    'flatten_children': lambda a: ('flatten %s so they no longer depend on the image'
                                   % ', '.join(str(_ref(child)) for child in a['children'])),
    'delete_image': lambda a: 'delete Glance image %s (Glance removes its RBD image)' % a['image_id'],
    # absent and cleanup
    'release_parent': _release_text,
}


def _hash_text(checksum_by: Optional[str]) -> str:
    if checksum_by == 'glance':
        return (' through POST /v2/images/{id}/locations: Glance computes the checksum and hash in the background '
                'after the image is active')
    if checksum_by == 'module':
        return ' with the computed checksum and hash as validation data'
    return ''


def _describer(name: str) -> Callable[[Mapping[str, Any]], str]:
    text = _TEXTS[name]
    return lambda args: '%s: %s' % (name, text(args))


# The one table of the upload's actions: the planners build their steps through it, the executor
# (:mod:`.upload`) has one handler per action.
UPLOAD_ACTIONS = Actions('rbd_image_clone_upload', {name: _describer(name) for name in _TEXTS})


# ---------------------------------------------------------------------------------------------
# checks

def glance_read_hint(volume_pool: str) -> str:
    """Why Glance may fail to open a clone: its Ceph user cannot read the parent in the volume pool."""
    return ('Glance opens the clone to register it, and a clone reads its parent, the volume\'s snapshot in pool %s: '
            'Glance\'s Ceph user (rbd_store_user, for example client.glance) needs osd \'profile rbd-read-only '
            'pool=%s\' in addition to \'profile rbd pool=<images pool>\', and so does every client that reads images '
            '(Nova\'s, Cinder\'s). The glance-api log shows the librbd error (Operation not permitted)'
            % (volume_pool, volume_pool))


def check_volume(volume: Volume, force: bool) -> None:
    """Refuse sources an upload must not read (Cinder's own rules for upload-to-image)."""
    what = volume.describe()
    if not volume.exists:
        raise VolsnapError('%s does not exist: check volume_pool (Cinder\'s rbd_pool) and that the volume is on the '
                           'Ceph backend' % what)
    if volume.encrypted:
        raise VolsnapError('%s is encrypted: its RBD data is ciphertext, and an image made from it would need '
                           'Cinder\'s key handling; upload it with Cinder (openstack image create --volume)' % what)
    if volume.status is not None:
        if volume.status in IN_USE:
            if not force:
                raise VolsnapError('%s is in-use (attached): the image would be crash-consistent at best. Detach it, '
                                   'or set force=true as Cinder\'s upload-to-image --force does' % what,
                                   volume_status=volume.status)
        elif volume.status not in UPLOADABLE:
            raise VolsnapError('%s is in status %s: only available volumes (or in-use ones with force=true) can be '
                               'uploaded. Wait until the operation on it finishes, or repair it' % (what, volume.status),
                               volume_status=volume.status)
    elif volume.watchers and not force:
        raise VolsnapError('%s is open by %d client(s) (for example an attached volume\'s QEMU): the image would be '
                           'crash-consistent at best. Close it, or set force=true' % (what, volume.watchers),
                           watchers=volume.watchers)


def choose_path(optimization: bool, stores: Stores, store: Optional[Store], fsid: str,
                copy_in_cluster: bool = False) -> Tuple[str, str]:
    """``('clone' | 'ceph_copy' | 'copy', why)`` for the target store."""
    if copy_in_cluster:
        path, why = _same_cluster(stores, store, fsid)
        if path != 'clone':
            return path, why
        return 'ceph_copy', ('copy_in_cluster is true and Glance store %s is rbd (pool %s) on the volume\'s cluster '
                             '%s: librbd copies the data inside the cluster (an image independent of the volume)'
                             % (store.id if store else '', store.pool if store else '', fsid))
    if not optimization:
        return 'copy', 'enable_clone_optimization is false (the default): the data is copied through Glance'
    return _same_cluster(stores, store, fsid)


def _same_cluster(stores: Stores, store: Optional[Store], fsid: str) -> Tuple[str, str]:
    """``('clone', why)`` when the store is rbd on cluster ``fsid``, else ``('copy', why not)``."""
    if store is None:
        why = 'Glance names no target store'
        if stores.error:
            why += ' (%s)' % stores.error
        return 'copy', why + ': the data is copied through Glance'
    if not stores.detail or store.type is None:
        return 'copy', ('the type of Glance store %s is unknown (%s): the data is copied through Glance'
                        % (store.id, stores.error or 'no store details'))
    if store.type != 'rbd':
        return 'copy', ('Glance store %s is of type %s, not rbd: the data is copied through Glance'
                        % (store.id, store.type))
    if not store.pool:
        return 'copy', 'Glance does not report the pool of rbd store %s: the data is copied through Glance' % store.id
    if not store.fsid:
        return 'copy', ('Glance does not report the cluster fsid of rbd store %s (it could not reach its cluster): '
                        'the data is copied through Glance' % store.id)
    if store.fsid.lower() != fsid.lower():
        return 'copy', ('Glance store %s is on Ceph cluster %s, the volume on cluster %s: a copy-on-write clone '
                        'cannot cross clusters, the data is copied through Glance' % (store.id, store.fsid, fsid))
    return 'clone', ('enable_clone_optimization is true and Glance store %s is rbd (pool %s) on the volume\'s cluster '
                     '%s: copy-on-write clone' % (store.id, store.pool, fsid))


def image_locations(image: Mapping[str, Any]) -> List[str]:
    urls = [loc.get('url') for loc in image.get('locations') or [] if isinstance(loc, Mapping)]
    if image.get('direct_url'):
        urls.append(image['direct_url'])
    unique: List[str] = []
    for url in urls:
        if url and url not in unique:
            unique.append(url)
    return unique


def is_ours(image: Mapping[str, Any], volume: Volume) -> bool:
    return str(image.get(SOURCE_PROPERTY, '')) == volume.key


def check_existing_image(image: Mapping[str, Any], volume: Volume, given_id: bool) -> str:
    """What to do with an existing image: ``fill`` (queued) or ``done`` (active and made from this volume)."""
    status = image.get('status')
    image_id = image.get('id')
    if status in QUEUED:
        if image.get('disk_format') not in (None, 'raw') or image.get('container_format') not in (None, 'bare'):
            raise VolsnapError('Glance image %s is %s/%s: the volume\'s data is raw, so the image must be raw/bare'
                               % (image_id, image.get('disk_format'), image.get('container_format')))
        source = image.get(SOURCE_PROPERTY)
        if source and source != volume.key:
            raise VolsnapError('Glance image %s is being filled from another source (%s=%s), not from %s'
                               % (image_id, SOURCE_PROPERTY, source, volume.describe()))
        return 'fill'
    if status in DONE_IMAGE:
        if is_ours(image, volume):
            return 'done'
        raise VolsnapError('Glance image %s is active and was not made from %s by this module (its %s is %s): an '
                           'image can only be filled while it is queued; pass another image_id or an image_name'
                           % (image_id, volume.describe(), SOURCE_PROPERTY, image.get(SOURCE_PROPERTY) or 'unset'),
                           image_status=status)
    if status in BUSY_IMAGE:
        raise VolsnapError('Glance image %s is in status %s: data is being written to it (another upload or import). '
                           'Wait until it is active or back to queued, then run again' % (image_id, status),
                           image_status=status)
    raise VolsnapError('Glance image %s is in status %s, not queued: only a queued image can receive data. '
                       '%s' % (image_id, status, 'Create a new one (omit image_id)' if given_id else
                               'Delete it or choose another image_name'), image_status=status)


# ---------------------------------------------------------------------------------------------
# plans

def plan_present(req: Request, volume: Volume, stores: Stores, store: Optional[Store],
                 image: Optional[Mapping[str, Any]], ceph: CephState) -> Plan:
    """The steps that make the image exist, active, with the volume's data."""
    check_volume(volume, req.force)
    path, why = choose_path(req.optimization, stores, store, volume.fsid, req.copy_in_cluster)
    if (req.optimization or req.copy_in_cluster) and path == 'copy' and not req.fallback_to_copy:
        reason = why
        for tail in (': the data is copied through Glance', ', the data is copied through Glance'):
            reason = reason.replace(tail, '')
        raise VolsnapError('the %s path is not possible and fallback_to_copy is false: %s'
                           % ('ceph_copy' if req.copy_in_cluster else 'clone', reason), why=why)
    given_id = req.image_id is not None
    action = 'create'
    if image is not None:
        action = check_existing_image(image, volume, given_id)
    image_id = str(image['id']) if image is not None else None
    shown_id = image_id or NEW_IMAGE
    on_volume = dict(pool=volume.pool, image=volume.image, image_id=shown_id)
    step = UPLOAD_ACTIONS.step

    if action == 'done':
        # Made earlier by this module: report how, and only tidy up what an interrupted run may have left.
        if image is None:  # pragma: no cover - 'done' needs an image
            raise VolsnapError('internal error: no image to report')
        done_path = str(image.get(PATH_PROPERTY) or 'copy')
        urls = image_locations(image)
        location = urls[0] if urls else None
        if done_path in ('clone', 'ceph_copy') and store is not None and store.pool:
            location = rbd_url(volume.fsid, store.pool, shown_id)
        plan = Plan(done_path, 'Glance image %s is active and was made from %s (%s path); nothing to do'
                    % (image_id, volume.describe(), done_path), image_id, location)
        if ceph.upload_snap is not None or ceph.upload_snap_trashed:
            plan.steps.append(step('remove_upload_snapshot', leftover=True, **on_volume))
        if done_path == 'clone' and ceph.clone_exists and ceph.clone_parent is None and ceph.volume_snap is not None \
                and not ceph.volume_snap.children:
            plan.steps.append(step('release_volume_snapshot', leftover=True, **on_volume))
        return plan

    plan = Plan(path, why, image_id, None, resumed=image is not None and not given_id)
    wanted_props = dict(req.properties)
    wanted_props[SOURCE_PROPERTY] = volume.key
    wanted_props[PATH_PROPERTY] = path
    plan.properties = {k: v if isinstance(v, str) else str(v) for k, v in wanted_props.items()}
    if image is None:
        plan.steps.append(step('create_image', name=req.image_name, properties=dict(plan.properties)))
    if image is not None and any(str(image.get(k)) != str(v) for k, v in wanted_props.items()):
        plan.steps.append(step('set_properties', image_id=image_id, properties=dict(plan.properties)))
    if image is not None and (ceph.volume_snap or ceph.clone_exists or ceph.upload_snap):
        plan.resumed = True
    if path == 'clone':
        if store is None or not store.pool:  # pragma: no cover - choose_path checked it
            raise VolsnapError('internal error: the clone path needs an rbd store with a pool')
        on_clone = dict(on_volume, store_pool=store.pool)
        plan.location = (rbd_url(volume.fsid, store.pool, image_id) if image_id
                         else 'rbd://%s/%s/%s/%s' % (volume.fsid, store.pool, NEW_IMAGE, GLANCE_SNAP))
        flatten = volume.depth >= req.max_clone_depth
        if not ceph.clone_exists:
            plan.steps.append(step('check_caps', **on_clone))
            if ceph.volume_snap is None:
                plan.steps.append(step('snapshot_volume', **on_volume))
            if ceph.volume_snap is None or not ceph.volume_snap.protected:
                plan.steps.append(step('protect_volume_snapshot', **on_volume))
            plan.steps.append(step('clone', **on_clone))
        if flatten and (not ceph.clone_exists or ceph.clone_parent is not None):
            plan.steps.append(step('flatten_clone', depth=volume.depth, max_clone_depth=req.max_clone_depth,
                                   **on_clone))
            plan.notes.append('the clone is flattened (Ceph copies the data inside the cluster) because the clone '
                              'chain would exceed max_clone_depth=%d' % req.max_clone_depth)
        if ceph.clone_snap is None:
            plan.steps.append(step('snapshot_clone', **on_clone))
        if ceph.clone_snap is None or not ceph.clone_snap.protected:
            plan.steps.append(step('protect_clone_snapshot', **on_clone))
        if flatten and (ceph.volume_snap is not None or not ceph.clone_exists):
            plan.steps.append(step('release_volume_snapshot', **on_volume))
        plan.steps.append(step('register_location', location=plan.location, fsid=volume.fsid, **on_clone))
        plan.steps.append(step('wait_active', path=path, **on_volume))
        if ceph.upload_snap is not None or ceph.upload_snap_trashed:
            plan.steps.append(step('remove_upload_snapshot', leftover=True, **on_volume))
    elif path == 'ceph_copy':
        if store is None or not store.pool:  # pragma: no cover - choose_path checked it
            raise VolsnapError('internal error: the ceph_copy path needs an rbd store with a pool')
        _plan_ceph_copy(req, plan, volume, store.pool, ceph, on_volume)
    else:
        if ceph.clone_exists and ceph.clone_parent is None:
            plan.steps.append(step('discard_copy', store_pool=clone_pool_of(store), **on_volume))
        if (ceph.clone_exists and ceph.clone_parent is not None) or ceph.volume_snap is not None:
            plan.steps.append(step('discard_clone', clone_pool=clone_pool_of(store), **on_volume))
        if ceph.upload_snap is None:
            plan.steps.append(step('snapshot_upload', **on_volume))
        plan.steps.append(step('upload_data', size=volume.size, store=store.id if store is not None else None,
                               **on_volume))
        plan.steps.append(step('wait_active', path=path, **on_volume))
        plan.steps.append(step('remove_upload_snapshot', **on_volume))
    order = PATH_STEPS[path]
    plan.steps.sort(key=lambda planned: order.index(planned.action))
    return plan


def _plan_ceph_copy(req: Request, plan: Plan, volume: Volume, store_pool: str, ceph: CephState,
                    on_volume: Mapping[str, Any]) -> None:
    """The steps of the ceph_copy path still to do, from what exists (``ceph``)."""
    step = UPLOAD_ACTIONS.step
    on_copy = dict(on_volume, store_pool=store_pool)
    image_id = plan.image_id
    plan.location = (rbd_url(volume.fsid, store_pool, image_id) if image_id
                     else 'rbd://%s/%s/%s/%s' % (volume.fsid, store_pool, NEW_IMAGE, GLANCE_SNAP))
    copied = ceph.clone_exists and ceph.clone_parent is None and ceph.clone_snap is not None
    if ceph.clone_exists and ceph.clone_parent is None and ceph.clone_snap is None:
        plan.steps.append(step('discard_copy', **on_copy))
    if ceph.clone_exists and ceph.clone_parent is not None:
        plan.steps.append(step('discard_clone', clone_pool=store_pool, **on_volume))
    elif ceph.volume_snap is not None:
        plan.steps.append(step('release_volume_snapshot', leftover=True, **on_volume))
    if not copied:
        plan.steps.append(step('check_caps', **on_copy))
        if ceph.upload_snap is None:
            plan.steps.append(step('snapshot_upload', **on_volume))
        plan.steps.append(step('copy_data', size=volume.size, **on_copy))
        plan.steps.append(step('snapshot_clone', **on_copy))
    if not copied or ceph.clone_snap is None or not ceph.clone_snap.protected:
        plan.steps.append(step('protect_clone_snapshot', **on_copy))
    if not copied or ceph.upload_snap is not None or ceph.upload_snap_trashed:
        plan.steps.append(step('remove_upload_snapshot', leftover=copied, **on_volume))
    if req.checksum_by == 'module':
        plan.steps.append(step('compute_hash', size=volume.size, hash_algo=req.hash_algo, **on_copy))
    api = 'locations' if req.checksum_by == 'glance' else req.location_api
    plan.steps.append(step('register_location', location=plan.location, fsid=volume.fsid, api=api,
                           checksum_by=req.checksum_by, **on_copy))
    plan.steps.append(step('wait_active', path='ceph_copy', **on_volume))
    plan.notes.append('the image is independent of the volume (no RBD parent): the volume can be deleted at once')
    if req.checksum_by == 'glance':
        plan.notes.append('Glance computes the checksum and os_hash_value in the background once the image is '
                          'active (it reads the whole image); until then they are unset')


def plan_absent(req: Request, image: Optional[Mapping[str, Any]], image_id: Optional[str],
                clone_parent: Optional[Ref], clone_children: List[Ref], leftover: List[Ref],
                unregistered_copy: Optional[Ref] = None) -> Plan:
    """Delete the image in Glance, then drop the Ceph references its clone held.

    ``clone_parent``: the parent snapshot of the image's RBD clone (found before deleting);
    ``clone_children``: volumes cloned from the image's ``snap``; ``leftover``: this module's
    snapshots for ``image_id`` that remain in the volume pool (after an interrupted run);
    ``unregistered_copy``: the ceph_copy path's copy of a queued image whose run was interrupted before
    the location was registered (Glance does not know it, so deleting the image would leave it).
    """
    plan = Plan(None, '', image_id, None)
    if image is not None:
        if clone_children:
            names = ', '.join(str(child) for child in clone_children)
            if not req.flatten_children:
                raise VolsnapError('Glance image %s has %d RBD clone(s) (%s), usually volumes created from it: Glance '
                                   'refuses to delete it while they exist (HTTP 409, as for every RBD-backed image). '
                                   'Delete those volumes first, or set flatten_children=true to copy the image\'s data '
                                   'into them (Ceph flatten) so they no longer depend on it'
                                   % (image_id, len(clone_children), names), children=[str(c) for c in clone_children])
            plan.steps.append(UPLOAD_ACTIONS.step('flatten_children',
                                                  children=[ref_arg(child) for child in clone_children]))
        plan.steps.append(UPLOAD_ACTIONS.step('delete_image', image_id=image_id))
        if unregistered_copy is not None:
            plan.steps.append(UPLOAD_ACTIONS.step('discard_copy', store_pool=unregistered_copy.pool,
                                                  image_id=image_id))
    refs = [clone_parent] if clone_parent is not None else []
    refs += [ref for ref in leftover if clone_parent is None or str(ref) != str(clone_parent)]
    for ref in refs:
        plan.steps.append(UPLOAD_ACTIONS.step('release_parent', ref=ref_arg(ref)))
    plan.why = ('delete the image and the snapshot its copy-on-write clone hung on' if plan.steps
                else 'the image does not exist and no snapshot of this module is left for it; nothing to do')
    return plan


def plan_cleanup(pool: str, to_remove: List[Tuple[Ref, str]], orphans: List[Ref]) -> Plan:
    """Remove this module's snapshots nobody needs (``(ref, why)``), then deleted volumes left without snapshots."""
    plan = Plan(None, '', None, None)
    for ref, why in to_remove:
        plan.steps.append(UPLOAD_ACTIONS.step('release_parent', ref=ref_arg(ref), why=why))
    for ref in orphans:
        plan.steps.append(UPLOAD_ACTIONS.step('release_parent', ref=ref_arg(ref), orphan=True))
    plan.why = ('%d snapshot(s) and %d deleted volume(s) nobody else will clean up' % (len(to_remove), len(orphans))
                if plan.steps else 'nothing left behind in pool %s' % pool)
    return plan


@dataclass
class Candidate:
    """A snapshot this module made (``<uuid>.clone_snap`` / ``<uuid>.upload_snap``) found by cleanup."""

    ref: Ref
    image_id: str
    kind: str                       # clone_snap | upload_snap
    children: int
    image_status: Optional[str]     # the Glance image's status; None when it no longer exists
    clone_exists: bool = False      # <images pool>/<image id> still exists


def classify_candidate(candidate: Candidate) -> Tuple[bool, str]:
    """(remove?, why) for one snapshot found by cleanup."""
    if candidate.children:
        return False, 'kept: %d clone(s) still depend on it' % candidate.children
    if candidate.image_status in QUEUED + BUSY_IMAGE:
        return False, ('kept: Glance image %s is %s (an upload may be in progress)'
                       % (candidate.image_id, candidate.image_status))
    if candidate.kind == 'clone_snap' and candidate.clone_exists:
        return False, 'kept: the RBD image of Glance image %s still exists' % candidate.image_id
    if candidate.image_status is None:
        return True, 'Glance image %s no longer exists' % candidate.image_id
    return True, 'Glance image %s is %s and no clone depends on the snapshot' % (candidate.image_id,
                                                                                 candidate.image_status)


def parse_our_snap(name: str) -> Optional[Tuple[str, str]]:
    """(image id, kind) when ``name`` is a snapshot name this module makes (a lowercase Glance id), else None."""
    for suffix, kind in ((CLONE_SNAP_SUFFIX, 'clone_snap'), (UPLOAD_SNAP_SUFFIX, 'upload_snap')):
        image_id = name[:-len(suffix)]
        if name.endswith(suffix) and is_uuid(image_id) and image_id == image_id.lower():
            return image_id, kind
    return None
