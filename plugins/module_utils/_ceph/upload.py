# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Executor of rbd_image_clone_upload: gathers the facts, asks the planner, runs the steps.

One Ceph connection (librados, :mod:`_ceph`) and one OpenStack connection (openstacksdk,
:mod:`_openstack`): the Cinder volume is looked up through the block-storage API, Glance through
:mod:`.._openstack.glance`, RBD through :mod:`.rbd`. The planner (:mod:`.upload_plan`) decides; this module
only does what the plan says, through one handler per action of ``UPLOAD_ACTIONS`` run by the shared
:class:`Executor`, times every step, keeps what the run learns (the image id, its location, the location
API used, the upload's progress) in a :class:`RunContext`, never in the plan, and on an error rolls back what
the failed run made (so an error leaves nothing behind), while an interruption (a killed process) is completed
by the next run because every step is idempotent and the plan is derived from what exists.

Independent waits overlap: the Keystone token is fetched while librados connects, and Glance's
stores and images are read while the volume is looked up (Cinder and Ceph). The steps themselves
run one after the other, in the planner's order.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import (
    client_id,
    cluster_fsid,
    connect as ceph_connect,
    rbd_module,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base import progress as progress_record
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import is_uuid
from ansible_collections.volsnap.openstack.plugins.module_utils._base.steps import Executor, Handler, RunContext, Step
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.cinder import CinderApi
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.glance import (
    Glance,
    Registered,
    SizedStream,
    Store,
    Stores,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import api_errors, connect as os_connect
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.rbd import (
    DELETED_SUFFIX,
    GLANCE_SNAP,
    Progress,
    TRASH,
    USER,
    Rbd,
    Ref,
    clone_snap_name,
    parse_rbd_url,
    rbd_url,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.upload_plan import (
    CHECKSUM_BY,
    PATH_PROPERTY,
    QUEUED,
    SOURCE_PROPERTY,
    UPLOAD_ACTIONS,
    Candidate,
    CephState,
    Plan,
    Request,
    Volume,
    classify_candidate,
    clone_pool_of,
    clone_ref,
    glance_read_hint,
    image_locations,
    parse_our_snap,
    plan_absent,
    plan_cleanup,
    plan_present,
    upload_snap,
    upload_snap_name,
    volume_snap,
)

CEPH_STEPS = frozenset(('check_caps', 'snapshot_volume', 'protect_volume_snapshot', 'clone', 'flatten_clone',
                        'snapshot_clone', 'protect_clone_snapshot', 'release_volume_snapshot', 'snapshot_upload',
                        'remove_upload_snapshot', 'discard_clone', 'release_parent', 'flatten_children',
                        'discard_copy', 'copy_data', 'compute_hash'))
PROGRESS_EVERY = 2.0
MAX_PROGRESS_SAMPLES = 60


@dataclass
class Options:
    """The module parameters the executor needs (see the module's DOCUMENTATION)."""

    state: str = 'present'
    volume: Optional[str] = None
    volume_pool: str = 'volumes'
    rbd_image: Optional[str] = None
    volume_name_template: str = 'volume-%s'
    image_name: Optional[str] = None
    image_id: Optional[str] = None
    visibility: Optional[str] = None
    properties: Dict[str, Any] = field(default_factory=dict)
    disk_format: str = 'raw'
    container_format: str = 'bare'
    store: Optional[str] = None
    enable_clone_optimization: bool = False
    force: bool = False
    max_clone_depth: int = 5
    flatten_children: bool = False
    fallback_to_copy: bool = True
    copy_in_cluster: bool = False
    checksum_by: str = 'auto'
    hash_algo: str = 'sha512'
    location_api: str = 'auto'
    wait: bool = True
    timeout: int = 180
    ceph_conf: Optional[str] = None
    ceph_user: Optional[str] = None
    keyring: Optional[str] = None
    rados_connect_timeout: int = 30

    def request(self) -> Request:
        return Request(state=self.state, optimization=self.enable_clone_optimization, force=self.force,
                       store=self.store, max_clone_depth=self.max_clone_depth, image_name=self.image_name,
                       image_id=self.image_id, properties=dict(self.properties or {}),
                       flatten_children=self.flatten_children, fallback_to_copy=self.fallback_to_copy,
                       copy_in_cluster=self.copy_in_cluster, hash_algo=self.hash_algo,
                       location_api=self.location_api)


class Timer(object):
    """Seconds per phase, in the order they ran."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.phases: Dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = self.clock()
        try:
            yield
        finally:
            self.phases[name] = round(self.phases.get(name, 0.0) + self.clock() - began, 6)

    def summary(self) -> Dict[str, Any]:
        ceph = sum(v for k, v in self.phases.items() if k in CEPH_STEPS)
        return {'total': round(self.clock() - self.start, 6), 'ceph': round(ceph, 6), 'phases': dict(self.phases)}


def _image_id(context: RunContext) -> str:
    """The id of the image the run works on (known once the image exists: found, or made by create_image)."""
    image_id = context.get('image_id')
    if image_id is None:  # pragma: no cover - the planner puts create_image before every step that needs the id
        raise VolsnapError('internal error: a step needs the image id before the image exists')
    return str(image_id)


def _record_bytes(done: int, total: int) -> None:
    """The current step's bytes, into the running operation's progress record."""
    progress_record.current().bytes(done, total)


class Upload(object):
    """One run of the module: ``run()`` returns the result dict (``changed``, ``path``, ``why``...)."""

    def __init__(self, opts: Options, cloud_params: Mapping[str, Any], check_mode: bool,
                 log: Optional[Callable[[str], None]] = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, copy_progress: Optional[Progress] = None) -> None:
        self.opts = opts
        self.cloud_params = cloud_params
        self.check_mode = check_mode
        self.log = log or (lambda msg: None)
        self.clock = clock
        self.sleep = sleep
        self.timer = Timer(clock)
        self.req = opts.request()
        self.user = client_id(opts.ceph_user)
        self.rbd: Rbd = None  # type: ignore[assignment]
        self.glance: Any = None
        self.cinder: Any = None
        self.fsid = ''
        # ceph_copy path: called with (bytes done, bytes in all) while the data is copied and while it is hashed;
        # by default the operation's progress record (operation_info) gets them
        self.copy_progress: Progress = copy_progress or _record_bytes

    # -- entry ----------------------------------------------------------------------------

    def run(self) -> Dict[str, Any]:
        """Connect to the cloud and the cluster (at the same time), then :meth:`execute`."""
        self._validate()
        rbd_lib = rbd_module()
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool, contextlib.ExitStack() as stack:
            cloud = pool.submit(self._connect_cloud)
            with self.timer.phase('connect_ceph'):
                cluster = stack.enter_context(ceph_connect(self.opts.ceph_conf, self.opts.ceph_user,
                                                           self.opts.keyring, self.opts.rados_connect_timeout))
            conn = cloud.result()
            return self.execute(Glance(conn, sleep=self.sleep), CinderApi(conn), cluster, rbd_lib)

    def _connect_cloud(self) -> Any:
        """The OpenStack connection with its token (fetched here, while librados connects)."""
        with self.timer.phase('connect'):
            conn = os_connect(self.cloud_params)
            with api_errors('authenticating with the cloud (Keystone)'):
                conn.authorize()
        return conn

    def execute(self, glance: Any, cinder: Any, cluster: Any, rbd_lib: Any) -> Dict[str, Any]:
        """The run on connected services: ``cinder`` is a :class:`CinderApi` (tests pass fakes of the same
        interfaces)."""
        self._validate()
        self.glance = glance
        self.cinder = cinder
        self.fsid = cluster_fsid(cluster)
        self.rbd = Rbd(cluster, rbd_lib, self.user)
        try:
            if self.opts.state == 'present':
                return self._present()
            if self.opts.state == 'absent':
                return self._absent()
            return self._cleanup()
        finally:
            self.rbd.close()

    def _validate(self) -> None:
        o = self.opts
        if o.image_id is not None and not is_uuid(o.image_id):
            raise VolsnapError('image_id %r is not a Glance image id (a UUID)' % o.image_id)
        if o.max_clone_depth < 0:
            raise VolsnapError('max_clone_depth must be 0 or more (0: always flatten the clone)')
        if o.state == 'present':
            if not o.volume and not o.rbd_image:
                raise VolsnapError('state=present needs the source: volume (Cinder id or name) or rbd_image')
            if not o.image_id and not o.image_name:
                raise VolsnapError('state=present needs image_name (a new image) or image_id (an existing queued '
                                   'image)')
        if o.state == 'absent' and not o.image_id and not o.image_name:
            raise VolsnapError('state=absent needs image_id or image_name (with the source) to find the image')
        if o.copy_in_cluster and o.enable_clone_optimization:
            raise VolsnapError('copy_in_cluster (an image independent of the volume, copied inside the cluster) and '
                               'enable_clone_optimization (a copy-on-write clone that depends on the volume) exclude '
                               'each other: set one of them')
        if o.checksum_by not in CHECKSUM_BY:
            raise VolsnapError('checksum_by must be one of %s, not %r' % (', '.join(CHECKSUM_BY), o.checksum_by))
        if o.checksum_by == 'glance' and o.location_api == 'patch':
            raise VolsnapError('checksum_by=glance needs location_api=locations or auto: the JSON-patch location API '
                               'computes no checksum (use checksum_by=module with it)')
        try:
            hashlib.new(o.hash_algo)
        except (ValueError, TypeError):
            raise VolsnapError('hash_algo %r is not a hash algorithm this Python knows (Glance\'s hashing_algorithm '
                               'default is sha512)' % o.hash_algo)
        if '%s' not in o.volume_name_template:
            raise VolsnapError('volume_name_template must contain %%s (Cinder\'s default is volume-%%s), not %r'
                               % o.volume_name_template)

    # -- facts ----------------------------------------------------------------------------

    def _volume(self) -> Volume:
        o = self.opts
        cinder: Optional[Dict[str, Any]] = None
        with self.timer.phase('discover_volume'):
            if o.volume:
                cinder = self.cinder.require_volume(o.volume)
                name = o.volume_name_template % cinder['id']
            else:
                name = str(o.rbd_image)
            ref = Ref(o.volume_pool, name)
            exists = self.rbd.exists(o.volume_pool, name)
            volume = Volume(pool=o.volume_pool, image=name, fsid=self.fsid, exists=exists)
            if cinder is not None:
                volume.cinder_id = cinder['id']
                volume.cinder_name = cinder['name']
                volume.status = cinder['status']
                volume.encrypted = cinder['encrypted']
            if exists:
                volume.size = self.rbd.size(ref)
                volume.watchers = self.rbd.watchers(ref)
                volume.depth = self.rbd.depth(ref)
        return volume

    def _stores(self) -> Tuple[Stores, Optional[Store]]:
        with self.timer.phase('discover_stores'):
            stores = self.glance.stores()
            store = stores.pick(self.opts.store)
            if store is None and self.opts.store is not None:
                store = Store(id=self.opts.store, default=False)
        return stores, store

    def _find_image(self, volume: Optional[Volume]) -> Optional[Dict[str, Any]]:
        return self._pick_image(volume, self._list_images())

    def _list_images(self) -> List[Dict[str, Any]]:
        """The image named by image_id ([] when it does not exist), or the images named image_name."""
        o = self.opts
        with self.timer.phase('discover_image'):
            if o.image_id:
                image: Optional[Dict[str, Any]] = self.glance.get_image(o.image_id)
                return [image] if image is not None else []
            images: List[Dict[str, Any]] = self.glance.find_images(str(o.image_name))
            return images

    def _pick_image(self, volume: Optional[Volume], listed: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        """The image this run works on, from :meth:`_list_images`: image_id's, or the one made from ``volume``."""
        o = self.opts
        if o.image_id:
            if not listed and o.state == 'present':
                raise VolsnapError('Glance image %s does not exist: omit image_id to create a new image named '
                                   'image_name' % o.image_id)
            return listed[0] if listed else None
        if volume is not None:
            found = [img for img in listed if str(img.get(SOURCE_PROPERTY)) == volume.key]
        else:
            found = [img for img in listed if img.get(SOURCE_PROPERTY)]
        if not found:
            return None
        if len(found) > 1:
            raise VolsnapError('%d Glance images named %s were made by this module%s (%s): pass image_id to choose one'
                               % (len(found), o.image_name, ' from %s' % volume.describe() if volume else '',
                                  ', '.join(str(i['id']) for i in found)))
        return found[0]

    def _ceph_state(self, volume: Volume, store: Optional[Store], image_id: Optional[str]) -> CephState:
        state = CephState()
        if not image_id or not volume.exists:
            return state
        with self.timer.phase('discover_ceph'):
            listed = self.rbd.snaps(volume.pool, volume.image)
            snaps = {s.name: s for s in listed if s.namespace == USER}
            state.volume_snap = snaps.get(clone_snap_name(image_id))
            state.upload_snap = snaps.get(upload_snap_name(image_id))
            state.upload_snap_trashed = any(s.namespace == TRASH and s.original_name == upload_snap_name(image_id)
                                            and not s.children for s in listed)
            if store is not None and store.type == 'rbd' and store.pool and store.fsid == self.fsid:
                state.clone_exists = self.rbd.exists(store.pool, image_id)
                if state.clone_exists:
                    state.clone_parent = self.rbd.parent(Ref(store.pool, image_id))
                    state.clone_snap = self.rbd.snap(store.pool, image_id, GLANCE_SNAP)
        return state

    # -- present --------------------------------------------------------------------------

    def _glance_facts(self) -> Tuple[Stores, Optional[Store], List[Dict[str, Any]]]:
        stores, store = self._stores()
        return stores, store, self._list_images()

    def _discover(self) -> Tuple[Volume, Stores, Optional[Store], Optional[Dict[str, Any]]]:
        """The volume (Cinder and Ceph, in this thread) while Glance's stores and images are read in another."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            glance = pool.submit(self._glance_facts)
            volume = self._volume()  # on an error the pool still waits for the Glance reads, then it is raised
            stores, store, listed = glance.result()
        return volume, stores, store, self._pick_image(volume, listed)

    def _checksum_by(self) -> str:
        """Who computes the checksum on the ceph_copy path: ``glance`` (in the background, after POST
        /v2/images/{id}/locations) or ``module`` (while uploading: it costs the image's whole size).

        ``auto`` is ``glance`` when the locations API is sure to be taken (location_api=locations, or auto with a
        token that has the service role Glance requires for rbd locations), else ``module``.
        """
        o = self.opts
        if not o.copy_in_cluster or o.checksum_by != 'auto':
            return o.checksum_by if o.checksum_by != 'auto' else 'module'
        if o.location_api == 'locations':
            return 'glance'
        if o.location_api == 'patch':
            return 'module'
        return 'glance' if self.glance.service_role() is True else 'module'

    def _present(self) -> Dict[str, Any]:
        self.req.checksum_by = self._checksum_by()
        volume, stores, store, image = self._discover()
        image_id = str(image['id']) if image else None
        ceph = self._ceph_state(volume, store, image_id)
        plan = plan_present(self.req, volume, stores, store, image, ceph)
        before = self._image_view(image)
        context = RunContext()
        # What the run knows of Glance's image: its id and record (``fresh``: no Glance step ran since it was read).
        context.set('image_id', plan.image_id)
        context.set('location', plan.location)
        context.set('image', image)
        context.set('fresh', True)
        if self.check_mode or not plan.changed:
            return self._result(plan, context, volume, store, before)
        try:
            self._run(plan.steps, context)
        except Exception as exc:  # an interruption (signal, kill) is not caught: the next run completes it
            rolled = self._rollback(plan, context, volume, store)
            if isinstance(exc, VolsnapError):
                exc.details.setdefault('rolled_back', rolled)
                exc.details.setdefault('steps_done', [step.action for step in context.done])
                exc.details.setdefault('path', plan.path)
                raise
            raise
        if not context.get('fresh'):
            context.set('image', self.glance.get_image(str(context.get('image_id'))) or context.get('image'))
        return self._result(plan, context, volume, store, before)

    # -- the steps: one handler per action of UPLOAD_ACTIONS --------------------------------

    def _handlers(self) -> Dict[str, Handler]:
        return {
            'check_caps': self._check_caps,
            'create_image': self._create_image,
            'set_properties': self._set_properties,
            'snapshot_volume': self._snapshot_volume,
            'protect_volume_snapshot': self._protect_volume_snapshot,
            'clone': self._clone,
            'flatten_clone': self._flatten_clone,
            'snapshot_clone': self._snapshot_clone,
            'protect_clone_snapshot': self._protect_clone_snapshot,
            'release_volume_snapshot': self._release_volume_snapshot,
            'register_location': self._register_location,
            'wait_active': self._wait_active_step,
            'discard_clone': self._discard_clone_step,
            'discard_copy': self._discard_copy_step,
            'copy_data': self._copy_data,
            'compute_hash': self._compute_hash,
            'snapshot_upload': self._snapshot_upload,
            'upload_data': self._upload_data,
            'remove_upload_snapshot': self._remove_upload_snapshot,
            'flatten_children': self._flatten_children,
            'delete_image': self._delete_image,
            'release_parent': self._release_parent,
        }

    def _run(self, steps: List[Step], context: RunContext, timed: bool = True) -> RunContext:
        """Run ``steps`` through the handler table, logging each; ``timed``: a phase per step."""
        handlers = self._handlers()
        if timed:
            handlers = {name: self._timed(name, handler) for name, handler in handlers.items()}
            return Executor(UPLOAD_ACTIONS, handlers).run(
                steps, context, before=lambda step, ctx: self.log('rbd_image_clone_upload: %s' % step))
        return Executor(UPLOAD_ACTIONS, handlers).run(steps, context)

    def _timed(self, name: str, handler: Handler) -> Handler:
        def run(step: Step, context: RunContext) -> None:
            with self.timer.phase(name):
                handler(step, context)
        return run

    @staticmethod
    def _glance_answer(context: RunContext, answer: Optional[Dict[str, Any]]) -> None:
        """After a Glance step: its answer is the image's current record; none means it must be read again."""
        context.set('image', answer or context.get('image'))
        context.set('fresh', answer is not None)

    def _create_image(self, step: Step, context: RunContext) -> None:
        o = self.opts
        image = self.glance.create_image(str(step.args['name']), o.disk_format, o.container_format, o.visibility,
                                         dict(step.args['properties']))
        context.set('created_image', True)
        image_id = str(image['id'])
        context.set('image_id', image_id)
        self._glance_answer(context, image)

    def _set_properties(self, step: Step, context: RunContext) -> None:
        image_id = _image_id(context)
        self.glance.set_properties(context.get('image') or {'id': image_id}, dict(step.args['properties']))
        self._glance_answer(context, self.glance.get_image(image_id))

    def _check_caps(self, step: Step, context: RunContext) -> None:
        self.rbd.probe_write(step.args['store_pool'])

    def _snapshot_volume(self, step: Step, context: RunContext) -> None:
        self.rbd.create_snap(volume_snap(step.args, _image_id(context)))

    def _protect_volume_snapshot(self, step: Step, context: RunContext) -> None:
        self.rbd.protect(volume_snap(step.args, _image_id(context)))

    def _clone(self, step: Step, context: RunContext) -> None:
        self.rbd.clone(volume_snap(step.args, _image_id(context)), clone_ref(step.args, _image_id(context)))

    def _flatten_clone(self, step: Step, context: RunContext) -> None:
        self.rbd.flatten(clone_ref(step.args, _image_id(context)))

    def _clone_snap(self, step: Step, context: RunContext) -> Ref:
        clone = clone_ref(step.args, _image_id(context))
        return Ref(clone.pool, clone.image, GLANCE_SNAP)

    def _snapshot_clone(self, step: Step, context: RunContext) -> None:
        self.rbd.create_snap(self._clone_snap(step, context))

    def _protect_clone_snapshot(self, step: Step, context: RunContext) -> None:
        self.rbd.protect(self._clone_snap(step, context))

    def _release_volume_snapshot(self, step: Step, context: RunContext) -> None:
        self._release_volume_snap(volume_snap(step.args, _image_id(context)))

    def _discard_clone_step(self, step: Step, context: RunContext) -> None:
        self._discard_clone(step.args['pool'], step.args['image'], step.args['clone_pool'], _image_id(context))

    def _snapshot_upload(self, step: Step, context: RunContext) -> None:
        self.rbd.create_snap(upload_snap(step.args, _image_id(context)))

    def _remove_upload_snapshot(self, step: Step, context: RunContext) -> None:
        self.rbd.remove_snap(upload_snap(step.args, _image_id(context)))

    def _register_location(self, step: Step, context: RunContext) -> None:
        image_id = _image_id(context)
        location = rbd_url(step.args['fsid'], step.args['store_pool'], image_id)  # the plan's, with the real id
        context.set('location', location)
        with self._explain_glance_read(step.args['pool']):
            registered = self.glance.register_location(image_id, location, step.args.get('api', self.opts.location_api),
                                                       validation_data=context.get('hashes'))
        context.set('registered', registered)
        context.set('location_api', registered.api)
        self._glance_answer(context, registered.image)

    def _wait_active_step(self, step: Step, context: RunContext) -> None:
        image_id = _image_id(context)
        registered: Optional[Registered] = context.get('registered')
        clone = step.args['path'] in ('clone', 'ceph_copy')  # both register an rbd location
        if clone and registered is not None and registered.active:
            answer = registered.image  # Glance answered the registration with the active image
        elif clone and self.opts.wait:
            with self._explain_glance_read(step.args['pool']):
                answer = self.glance.wait_location(image_id, self.opts.timeout)
        else:
            answer = self._wait_active(image_id)
        self._glance_answer(context, answer)

    def _upload_data(self, step: Step, context: RunContext) -> None:
        self._upload(upload_snap(step.args, _image_id(context)), _image_id(context), step.args['store'], context)
        self._glance_answer(context, None)

    def _copy_ref(self, step: Step, context: RunContext) -> Ref:
        """``<images pool>/<image id>``: the copy (ceph_copy path) Glance's rbd store will hold."""
        return clone_ref(step.args, _image_id(context))

    def _discard_copy_step(self, step: Step, context: RunContext) -> None:
        copy = self._copy_ref(step, context)
        if self._discard_copy(copy):
            context.results.setdefault('removed', []).append(str(copy))

    def _discard_copy(self, copy: Ref) -> bool:
        """Remove ``<images pool>/<image id>`` when it has no parent (a copy; a clone is discard_clone's)."""
        if not self.rbd.exists(copy.pool, copy.image):
            return False
        if self.rbd.parent(copy) is not None:
            raise VolsnapError('RBD image %s is a clone, not the copy this module makes: remove it by hand if it is '
                               'garbage' % copy)
        self.rbd.remove_snap(Ref(copy.pool, copy.image, GLANCE_SNAP))
        return self.rbd.remove(copy)

    def _copy_data(self, step: Step, context: RunContext) -> None:
        src = upload_snap(step.args, _image_id(context))
        dst = self._copy_ref(step, context)
        self.log('rbd_image_clone_upload: copying %s into %s inside the cluster' % (src, dst))
        progress_record.current().set(kind='upload_ceph_copy', image_id=_image_id(context))
        written, size = self.rbd.copy_sparse(src, dst, progress=self.copy_progress)
        context.set('copied', {'bytes_written': written, 'size': size})

    def _compute_hash(self, step: Step, context: RunContext) -> None:
        copy = self._copy_ref(step, context)
        context.set('hashes', self.rbd.image_hashes(Ref(copy.pool, copy.image, GLANCE_SNAP), step.args['hash_algo'],
                                                    progress=self.copy_progress))

    @contextlib.contextmanager
    def _explain_glance_read(self, volume_pool: str) -> Iterator[None]:
        """Add the likely cause when Glance fails on the clone (HTTP 5xx, or its location task failed)."""
        try:
            yield
        except VolsnapError as exc:
            status = exc.details.get('status_code')
            statuses = [status] + [(exc.details.get(k) or {}).get('status_code') for k in ('locations_api',
                                                                                           'patch_api')]
            if any(isinstance(s, int) and s >= 500 for s in statuses) or 'task' in exc.details:
                exc.msg = '%s. Likely cause: %s' % (exc.msg, glance_read_hint(volume_pool))
                exc.args = (exc.msg,)
            raise

    def _release_volume_snap(self, vol_snap: Ref) -> None:
        info = self.rbd.snap(vol_snap.pool, vol_snap.image, str(vol_snap.snap))
        if info is not None and not info.children:
            self.rbd.release_parent_refs(vol_snap, self.log)

    def _discard_clone(self, pool: str, image: str, clone_pool: Optional[str], image_id: str) -> None:
        """Remove a clone an earlier clone-path run made for this (still queued) image in ``clone_pool``."""
        if clone_pool and self.rbd.exists(clone_pool, image_id):
            clone = Ref(clone_pool, image_id)
            parent = self.rbd.parent(clone)
            if parent is None or parent.image.split(DELETED_SUFFIX)[0] != image \
                    or parent.snap != clone_snap_name(image_id):
                raise VolsnapError('RBD image %s exists but is not the clone this module makes for image %s (its '
                                   'parent is %s): remove it by hand if it is garbage' % (clone, image_id, parent))
            self.rbd.remove_snap(Ref(clone.pool, clone.image, GLANCE_SNAP))
            self.rbd.remove(clone)
        self._release_volume_snap(Ref(pool, image, clone_snap_name(image_id)))

    def _wait_active(self, image_id: str) -> Dict[str, Any]:
        if not self.opts.wait:
            image: Optional[Dict[str, Any]] = self.glance.get_image(image_id)
            return image or {}
        active: Dict[str, Any] = self.glance.wait_image(image_id, ('active',), ('killed', 'deleted', 'pending_delete',
                                                                                None), self.opts.timeout)
        return active

    def _upload(self, snap: Ref, image_id: str, store_id: Optional[str], context: RunContext) -> None:
        extents = self.rbd.allocated(snap)
        total = sum(e.length for e in extents)
        data_bytes = sum(e.length for e in extents if e.data)
        started = self.clock()
        last = [started]
        samples: List[Dict[str, Any]] = context.results.setdefault('progress', [])
        recorder = progress_record.current()
        recorder.set(kind='upload_copy', image_id=image_id)
        recorder.bytes(0, total)

        def progress(done: int, read: int) -> None:
            recorder.bytes(done, total)
            now = self.clock()
            if now - last[0] >= PROGRESS_EVERY or done == total:
                last[0] = now
                sample = {'seconds': round(now - started, 3), 'bytes': done, 'data_bytes_read': read,
                          'percent': round(100.0 * done / total, 1) if total else 100.0}
                if len(samples) < MAX_PROGRESS_SAMPLES or done == total:
                    samples.append(sample)
                self.log('rbd_image_clone_upload: uploaded %(bytes)d bytes (%(percent)s%%) in %(seconds)s s' % sample)

        self.log('rbd_image_clone_upload: %d bytes, %d of them allocated, to upload' % (total, data_bytes))
        chunks = self.rbd.read_stream(snap, extents, progress=progress)
        target = store_id if self.opts.store else None
        try:
            self.glance.upload(image_id, SizedStream(chunks, total), target)
        finally:
            # An upload that broke off leaves the reader suspended with the snapshot open: close it now, while the
            # cluster is connected (closed later, at exit, it would hang librados' shutdown).
            chunks.close()

    def _rollback(self, plan: Plan, context: RunContext, volume: Volume, store: Optional[Store]) -> List[str]:
        """Undo what this failed run made (best effort); return what was undone."""
        undone: List[str] = []
        if context.get('image_id') is None:
            return undone
        image_id = str(context.get('image_id'))
        registered = 'register_location' in [step.action for step in context.done]
        attempts: List[Tuple[str, Callable[[], Any]]] = []
        if not registered:
            if plan.path == 'ceph_copy' and store is not None and store.pool:
                copy = Ref(store.pool, image_id)
                attempts.append(('copy %s' % copy, lambda: self._discard_copy(copy)))
            if plan.path == 'clone':
                attempts.append(('clone and snapshots of image %s' % image_id,
                                 lambda: self._discard_clone(volume.pool, volume.image, clone_pool_of(store),
                                                             image_id)))
        attempts.append(('snapshot %s' % Ref(volume.pool, volume.image, upload_snap_name(image_id)),
                         lambda: self.rbd.remove_snap(Ref(volume.pool, volume.image, upload_snap_name(image_id)))))
        if context.get('created_image') and not registered:
            attempts.append(('Glance image %s' % image_id, lambda: self.glance.delete_image(image_id)))
        for what, undo in attempts:
            try:
                if undo() is not False:
                    undone.append(what)
            except Exception as exc:  # best effort: report, keep undoing the rest
                undone.append('%s: NOT rolled back (%s)' % (what, exc))
        return undone

    # -- absent ---------------------------------------------------------------------------

    def _absent(self) -> Dict[str, Any]:
        o = self.opts
        volume: Optional[Volume] = None
        if o.volume or o.rbd_image:
            try:
                volume = self._volume()
            except VolsnapError as exc:
                if 'was not found' not in exc.msg:
                    raise
                # The Cinder volume is gone (deleting the image is still possible)
        image = self._find_image(volume)
        image_id = str(image['id']) if image else o.image_id
        clone_parent: Optional[Ref] = None
        children: List[Ref] = []
        clone_ref_: Optional[Ref] = None
        unregistered: Optional[Ref] = None
        with self.timer.phase('discover_ceph'):
            if image is not None:
                for url in image_locations(image):
                    parsed = parse_rbd_url(url)
                    if parsed and parsed[0] == self.fsid and parsed[2] == image_id:
                        clone_ref_ = Ref(parsed[1], parsed[2], parsed[3])
                if clone_ref_ is None:
                    clone_ref_ = self._guess_clone(image_id)
                if clone_ref_ is not None and self.rbd.exists(clone_ref_.pool, clone_ref_.image):
                    clone_parent = self.rbd.parent(Ref(clone_ref_.pool, clone_ref_.image))
                    if clone_parent is None and image.get('status') in QUEUED and not image_locations(image) \
                            and image.get(PATH_PROPERTY) == 'ceph_copy':
                        unregistered = Ref(clone_ref_.pool, clone_ref_.image)
                    if clone_parent is not None and clone_parent.snap != clone_snap_name(str(image_id)):
                        clone_parent = None  # not a clone this module made: leave its parent alone
                    info = self.rbd.snap(clone_ref_.pool, clone_ref_.image, clone_ref_.snap or GLANCE_SNAP)
                    children = list(info.children) if info else []
            leftover = self._leftovers(image_id, volume) if image_id else []
        plan = plan_absent(self.req, image, image_id, clone_parent, children, leftover, unregistered)
        if self.check_mode or not plan.changed:
            return self._absent_result(plan, image)
        context = RunContext()
        context.set('image_id', image_id)
        context = self._run(plan.steps, context)
        # The release phase is reported even when no reference was left to release.
        self.timer.phases.setdefault('release_parent', 0.0)
        result = self._absent_result(plan, image)
        result['removed'] = list(context.get('removed', []))
        return result

    def _flatten_children(self, step: Step, context: RunContext) -> None:
        removed: List[str] = context.results.setdefault('removed', [])
        for child in step.args['children']:
            ref = Ref(child[0], child[1], child[2])
            self.rbd.flatten(ref)
            removed.append('flattened %s' % ref)

    def _delete_image(self, step: Step, context: RunContext) -> None:
        image_id = str(step.args['image_id'])
        self.glance.delete_image(image_id, hints={409: 'Glance still sees a clone of the image (a volume created '
                                                       'from it)'})
        if self.opts.wait:
            self.glance.wait_image(image_id, (None, 'deleted'), (), self.opts.timeout)
        context.results.setdefault('removed', []).append('Glance image %s' % image_id)

    def _release_parent(self, step: Step, context: RunContext) -> None:
        """Drop a snapshot this module made (and the deleted volume it kept), or a deleted volume left alone."""
        removed: List[str] = context.results.setdefault('removed', [])
        pool, image, snap = step.args['ref']
        ref = Ref(pool, image, snap)
        if not step.args.get('orphan'):
            removed += self.rbd.release_parent_refs(ref, self.log)
            return
        parent = self.rbd.parent(ref)
        if self.rbd.remove(ref):
            removed.append(str(ref))
        if parent is not None and parent.snap == clone_snap_name(ref.image[:-len(DELETED_SUFFIX)]):
            removed += self.rbd.release_parent_refs(parent, self.log)

    def _guess_clone(self, image_id: Optional[str]) -> Optional[Ref]:
        if not image_id:
            return None
        stores = self.glance.stores()
        for store in stores.stores:
            if store.type == 'rbd' and store.pool and store.fsid == self.fsid:
                return Ref(store.pool, image_id, GLANCE_SNAP)
        return None

    def _leftovers(self, image_id: str, volume: Optional[Volume]) -> List[Ref]:
        """This module's snapshots for ``image_id`` in the volume pool (on the source, or anywhere)."""
        pool = self.opts.volume_pool
        names = [volume.image] if volume is not None and volume.exists else self.rbd.names(pool)
        wanted = (clone_snap_name(image_id), upload_snap_name(image_id))
        found = []
        for name in names:
            try:
                snaps = self.rbd.snaps(pool, name, children=False)
            except VolsnapError as exc:
                if exc.details.get('ceph_error') == 'not_found':
                    continue
                raise
            # a trash one (an interrupted removal) only when no clone uses it: removing its name again completes it
            found += [Ref(pool, name, s.known_as) for s in snaps
                      if s.known_as in wanted and (s.namespace == USER or not s.children)]
        return found

    def _absent_result(self, plan: Plan, image: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        return {'changed': plan.changed, 'state': 'absent', 'image_id': plan.image_id, 'why': plan.why,
                'plan': [str(s) for s in plan.steps], 'image': self._image_view(image),
                'seconds': self.timer.summary(), 'path': None, 'location': None, 'removed': []}

    # -- cleanup --------------------------------------------------------------------------

    def _cleanup(self) -> Dict[str, Any]:
        pool = self.opts.volume_pool
        kept: List[Dict[str, str]] = []
        to_remove: List[Tuple[Ref, str]] = []
        orphans: List[Ref] = []
        with self.timer.phase('discover_ceph'):
            stores = self.glance.stores()
            image_pools = sorted({s.pool for s in stores.stores if s.type == 'rbd' and s.pool and s.fsid == self.fsid})
            statuses: Dict[str, Optional[str]] = {}
            for name in self.rbd.names(pool):
                try:
                    snaps = self.rbd.snaps(pool, name)
                except VolsnapError as exc:
                    if exc.details.get('ceph_error') == 'not_found':
                        continue
                    raise
                if name.endswith(DELETED_SUFFIX) and not snaps:
                    orphans.append(Ref(pool, name))
                for snap in snaps:
                    # a trash snapshot is one whose removal was interrupted: judged (and removed) by its old name
                    ours = snap.known_as
                    parsed = parse_our_snap(ours) if ours else None
                    if parsed is None:
                        continue
                    image_id, kind = parsed
                    if image_id not in statuses:
                        image = self.glance.get_image(image_id)
                        statuses[image_id] = image.get('status') if image else None
                    candidate = Candidate(Ref(pool, name, ours), image_id, kind, len(snap.children),
                                          statuses[image_id],
                                          any(self.rbd.exists(p, image_id) for p in image_pools))
                    remove, why = classify_candidate(candidate)
                    if remove:
                        to_remove.append((candidate.ref, why))
                    else:
                        kept.append({'snapshot': str(candidate.ref), 'why': why})
        plan = plan_cleanup(pool, to_remove, orphans)
        removed: List[str] = []
        if not self.check_mode:
            with self.timer.phase('release_parent'):
                removed = list(self._run(plan.steps, RunContext(), timed=False).get('removed', []))
        return {'changed': plan.changed, 'state': 'cleanup', 'why': plan.why, 'plan': [str(s) for s in plan.steps],
                'kept': kept, 'removed': removed, 'seconds': self.timer.summary(), 'path': None, 'image_id': None,
                'location': None}

    # -- results --------------------------------------------------------------------------

    @staticmethod
    def _image_view(image: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
        if image is None:
            return None
        keys = ('id', 'name', 'status', 'size', 'virtual_size', 'disk_format', 'container_format', 'visibility',
                'checksum', 'os_hash_algo', 'os_hash_value', 'direct_url', 'owner', 'stores')
        view = {k: image.get(k) for k in keys if k in image}
        view['locations'] = image_locations(image)
        view['properties'] = {k: v for k, v in image.items() if k.startswith('volsnap_')}
        return view

    def _result(self, plan: Plan, context: RunContext, volume: Volume, store: Optional[Store],
                before: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """The result: the plan as planned, what the run learnt (image id, location, image, progress) from ``context``."""
        after = self._image_view(context.get('image')) if not self.check_mode else before
        result: Dict[str, Any] = {
            'changed': plan.changed,
            'state': 'present',
            'path': plan.path,
            'why': plan.why,
            'image_id': context.get('image_id'),
            'location': context.get('location'),
            'plan': [str(s) for s in plan.steps],
            'notes': plan.notes,
            'resumed': plan.resumed,
            'image': after,
            'source': {'pool': volume.pool, 'image': volume.image, 'fsid': volume.fsid, 'size': volume.size,
                       'cinder_id': volume.cinder_id, 'status': volume.status, 'clone_depth': volume.depth},
            'store': store.as_dict() if store is not None else None,
            'seconds': self.timer.summary(),
            'location_api': context.get('location_api'),
        }
        if plan.path == 'ceph_copy':
            result['checksum_by'] = self.req.checksum_by
            if context.get('copied'):
                result['copied'] = context.get('copied')
        if context.get('progress'):
            result['progress'] = context.get('progress')
        if plan.changed:
            result['diff'] = {'before': {'image': before},
                              'after': {'image': after if not self.check_mode else None, 'plan': result['plan']}}
        return result
