# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RBD operations on one connected cluster, each idempotent and mapped to clear errors.

:class:`Rbd` wraps a connected ``rados.Rados`` and the ``rbd`` module (both passed in, so the
logic runs against fakes in unit tests). Names follow the conventions of the services that share
the pools:

* glance_store: an image is ``<images pool>/<image id>`` with a protected snapshot ``snap``;
  its location is ``rbd://<fsid>/<pool>/<image>/<snap>``, each part URL-quoted.
* Cinder's RBD driver: a clone's parent snapshot is named ``<child name>.clone_snap``; a volume
  that still has ``*.clone_snap`` snapshots is renamed ``<name>.deleted`` on delete and removed
  when its last reference goes (``_delete_clone_parent_refs``). :meth:`Rbd.release_parent_refs`
  walks a chain the same way.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import math
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generator, Iterator, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import quote, unquote

from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import ceph_errors
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.error_kinds import error_kind, is_ceph_exception
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError

GLANCE_SNAP = 'snap'
CLONE_SNAP_SUFFIX = '.clone_snap'
DELETED_SUFFIX = '.deleted'
# Reading and sending data in pieces of this size (glance_store's rbd chunk size is 8 MiB).
CHUNK = 8 * 1024 * 1024
# glance_store creates its RBD images with objects of rbd_store_chunk_size (8 MiB by default): order 23.
GLANCE_ORDER = int(math.log(CHUNK, 2))
# Concurrent reads/writes of copy_sparse (librbd releases the GIL while it waits for the OSDs).
COPY_WORKERS = 4
# A progress callback: (bytes done, bytes in all).
Progress = Callable[[int, int], None]
# librbd's snapshot namespaces (RBD_SNAP_NAMESPACE_TYPE_*): only a user snapshot is found by its name. Removing a
# snapshot first moves it to the trash namespace under a generated name (its name kept as original_name); librbd
# removes it there once no clone uses it, so an interrupted removal, or one of a snapshot clones still use, leaves it.
SNAP_NAMESPACES = {0: 'user', 1: 'group', 2: 'trash', 3: 'mirror'}
USER = 'user'
TRASH = 'trash'


def clone_snap_name(child: str) -> str:
    """The parent snapshot name Cinder's RBD driver uses for a clone named ``child``."""
    return child + CLONE_SNAP_SUFFIX


def live_name(name: str) -> str:
    """``name`` without Cinder's ``.deleted`` suffix."""
    return name[:-len(DELETED_SUFFIX)] if name.endswith(DELETED_SUFFIX) else name


def rbd_url(fsid: str, pool: str, image: str, snap: str = GLANCE_SNAP) -> str:
    """glance_store's location URL of ``pool/image@snap`` on cluster ``fsid``."""
    return 'rbd://%s/%s/%s/%s' % tuple(quote(part, '') for part in (fsid, pool, image, snap))


def parse_rbd_url(url: str) -> Optional[Tuple[str, str, str, str]]:
    """(fsid, pool, image, snap) of a 4-part ``rbd://`` URL, else None (as Cinder's ``_parse_location``)."""
    prefix = 'rbd://'
    if not isinstance(url, str) or not url.startswith(prefix):
        return None
    pieces = [unquote(piece) for piece in url[len(prefix):].split('/')]
    if len(pieces) != 4 or any(piece == '' for piece in pieces):
        return None
    return pieces[0].lower(), pieces[1], pieces[2], pieces[3]


@dataclass
class Ref:
    """An RBD image (``snap`` None) or snapshot; with ``image_id`` the image is opened by its id (a trash entry, which
    has no name librbd opens; ``image`` is the name it had)."""

    pool: str
    image: str
    snap: Optional[str] = None
    image_id: Optional[str] = None

    def __str__(self) -> str:
        return '%s/%s%s' % (self.pool, self.image, '@' + self.snap if self.snap else '')


def _need_snap(ref: Ref) -> None:
    if not ref.snap:
        raise VolsnapError('internal error: %s names no snapshot' % ref)


@dataclass
class SnapInfo:
    name: str
    protected: bool
    children: List[Ref] = field(default_factory=list)
    id: Optional[int] = None  # librbd's snapshot id (a new snapshot of the same name has another)
    namespace: str = USER  # a snapshot of another namespace is not found by its name (see SNAP_NAMESPACES)
    original_name: Optional[str] = None  # a trash snapshot's name before its removal began

    @property
    def known_as(self) -> Optional[str]:
        """The name it goes by: a user snapshot's name, a trash snapshot's name before its removal began (removing
        that name again completes the removal, :meth:`Rbd.remove_snaps`); None in any other namespace."""
        if self.namespace == USER:
            return self.name
        return self.original_name if self.namespace == TRASH else None


def snap_namespace(listed: Mapping[str, Any]) -> str:
    """The namespace of one entry of ``Image.list_snaps()`` (an entry without one is a user snapshot)."""
    kind = listed.get('namespace', 0)
    return SNAP_NAMESPACES.get(kind, str(kind)) if isinstance(kind, int) else str(kind)


def user_snap_names(img: Any) -> Set[str]:
    """The names of an open image's user snapshots: the only ones librbd finds by name."""
    return {str(s['name']) for s in img.list_snaps() if snap_namespace(s) == USER}


def original_name(listed: Mapping[str, Any]) -> Optional[str]:
    """The name a trash snapshot (one entry of ``Image.list_snaps()``) had before its removal began."""
    return (listed.get('trash') or {}).get('original_name')


def _clones_of(img: Any, name: Optional[str] = None, snap_id: Optional[int] = None) -> List[Ref]:
    """The clones of an open image's snapshot, found by ``name`` (a user snapshot) or by ``snap_id`` (any)."""
    if name is not None:
        img.set_snap(name)
    else:
        img.set_snap_by_id(snap_id)
    try:
        return [Ref(child['pool'], child['image']) for child in img.list_children2()]
    finally:
        img.set_snap(None)


@dataclass
class ImageInfo:
    """What :meth:`Rbd.describe` reads of an image in one opening."""

    id: str
    snaps: List[SnapInfo]
    parent: Optional[Ref]


@dataclass
class Extent:
    offset: int
    length: int
    data: bool


def merge_extents(size: int, allocated: List[Tuple[int, int]]) -> List[Extent]:
    """The whole range ``[0, size)`` as alternating data and hole extents, from allocated ranges.

    ``allocated`` may be unsorted, overlapping or adjacent (``diff_iterate`` reports per object);
    they are clipped to ``size`` and merged.
    """
    spans = sorted((max(0, off), min(size, off + length)) for off, length in allocated if length > 0)
    merged: List[List[int]] = []
    for start, end in spans:
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    extents: List[Extent] = []
    pos = 0
    for start, end in merged:
        if start > pos:
            extents.append(Extent(pos, start - pos, False))
        extents.append(Extent(start, end - start, True))
        pos = end
    if pos < size:
        extents.append(Extent(pos, size - pos, False))
    return extents


class Rbd(object):
    """RBD operations as client ``user`` on a connected cluster.

    I/O contexts are opened on first use per pool (once, also when threads ask at the same time: librados' I/O
    contexts serve several threads) and closed by :meth:`close`. Reading methods may run in several threads at once.
    """

    def __init__(self, cluster: Any, rbd_lib: Any, user: Optional[str] = None) -> None:
        self.cluster = cluster
        self.lib = rbd_lib
        self.user = user
        self._ioctxs: Dict[str, Any] = {}
        self._ioctx_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        for ioctx in self._ioctxs.values():
            with contextlib.suppress(Exception):
                ioctx.close()
        self._ioctxs.clear()

    def ioctx(self, pool: str) -> Any:
        with self._ioctx_lock:
            if pool not in self._ioctxs:
                hints = {'not_found': 'Pool %s does not exist on this cluster (ceph osd pool ls)' % pool}
                with ceph_errors('opening pool %s' % pool, user=self.user, pool=pool, write=False, hints=hints):
                    self._ioctxs[pool] = self.cluster.open_ioctx(pool)
            return self._ioctxs[pool]

    @contextlib.contextmanager
    def image(self, ref: Ref, read_only: bool = True, action: Optional[str] = None) -> Iterator[Any]:
        """An open ``rbd.Image`` (at ``ref.snap`` when set; by its id when ``ref.image_id`` is set), closed on exit."""
        what = action or 'opening RBD image %s' % ref
        with ceph_errors(what, user=self.user, pool=ref.pool, write=not read_only):
            if ref.image_id:
                img = self.lib.Image(self.ioctx(ref.pool), None, snapshot=ref.snap, read_only=read_only,
                                     image_id=ref.image_id)
            else:
                img = self.lib.Image(self.ioctx(ref.pool), ref.image, snapshot=ref.snap, read_only=read_only)
        try:
            yield img
        finally:
            with contextlib.suppress(Exception):
                img.close()

    def _errors(self, action: str, pool: str, write: bool = True,
                hints: Optional[Dict[str, str]] = None) -> Any:
        return ceph_errors(action, user=self.user, pool=pool, write=write, hints=hints)

    # -- reading state --------------------------------------------------------------------

    def _raise(self, exc: BaseException, action: str, pool: str, write: bool = False) -> None:
        with self._errors(action, pool, write=write):
            raise exc

    def exists(self, pool: str, name: str) -> bool:
        """True when ``pool/name`` exists; a missing pool is an error, not False."""
        ioctx = self.ioctx(pool)
        try:
            img = self.lib.Image(ioctx, name, read_only=True)
        except Exception as exc:  # only "not found" means False
            if is_ceph_exception(exc) and error_kind(exc) == 'not_found':
                return False
            self._raise(exc, 'opening RBD image %s/%s' % (pool, name), pool)
            raise
        with contextlib.suppress(Exception):
            img.close()
        return True

    def names(self, pool: str) -> List[str]:
        with self._errors('listing the RBD images of pool %s' % pool, pool, write=False):
            return list(self.lib.RBD().list(self.ioctx(pool)))

    def images_and_trash(self, pool: str) -> Tuple[List[Tuple[str, str]], List[Dict[str, Any]]]:
        """(name, id) of every image of ``pool``, and its trash entries as librbd lists them (``id``, ``name``,
        ``source``, ``deferment_end_time``...)."""
        with self._errors('listing the RBD images and trash of pool %s' % pool, pool, write=False):
            ioctx = self.ioctx(pool)
            listed = [(str(e['name']), str(e['id'])) for e in self.lib.RBD().list2(ioctx)]
            trash = [dict(e) for e in self.lib.RBD().trash_list(ioctx)]
        return listed, trash

    def size(self, ref: Ref) -> int:
        with self.image(ref) as img:
            with self._errors('reading the size of %s' % ref, ref.pool, write=False):
                return int(img.size())

    def snaps(self, pool: str, name: str, children: bool = True) -> List[SnapInfo]:
        """The image's snapshots with their id, protection and (optionally) their children."""
        ref = Ref(pool, name)
        with self.image(ref) as img:
            return self._snaps_of(img, ref, children)

    def _snaps_of(self, img: Any, ref: Ref, children: bool) -> List[SnapInfo]:
        """Every snapshot, of every namespace: a trash (group, mirror) snapshot has no name librbd finds it by, so it
        is read by its id (not protected: protection is a user snapshot's), always with its children (whether clones
        still use it decides what it is; such snapshots are rare)."""
        out: List[SnapInfo] = []
        with self._errors('listing the snapshots of %s' % ref, ref.pool, write=False):
            for snap in list(img.list_snaps()):
                namespace = snap_namespace(snap)
                user = namespace == USER
                info = SnapInfo(name=str(snap['name']), protected=bool(img.is_protected_snap(snap['name'])) if user
                                else False, id=int(snap['id']), namespace=namespace, original_name=original_name(snap))
                if children or not user:
                    info.children = _clones_of(img, name=info.name) if user else _clones_of(img, snap_id=info.id)
                out.append(info)
        return out

    def describe(self, ref: Ref) -> ImageInfo:
        """The image's id, snapshots (with their children) and parent, read in one opening (read-only; a trash
        entry by its id, ``ref.image_id``)."""
        with self.image(ref) as img:
            with self._errors('reading the id of %s' % ref, ref.pool, write=False):
                image_id = ref.image_id or str(img.id())
            return ImageInfo(id=image_id, snaps=self._snaps_of(img, ref, True), parent=self._parent_of(img, ref))

    def snap(self, pool: str, name: str, snap: str) -> Optional[SnapInfo]:
        """The user snapshot named ``snap``, None when there is none."""
        for info in self.snaps(pool, name):
            if info.name == snap and info.namespace == USER:
                return info
        return None

    def parent(self, ref: Ref) -> Optional[Ref]:
        """The parent snapshot of an image (or of one of its snapshots), None when it has none."""
        with self.image(ref) as img:
            return self._parent_of(img, ref)

    def _parent_of(self, img: Any, ref: Ref) -> Optional[Ref]:
        try:
            pool, image, snap = img.parent_info()
        except Exception as exc:  # ImageNotFound means "no parent"
            if is_ceph_exception(exc) and error_kind(exc) == 'not_found':
                return None
            self._raise(exc, 'reading the parent of %s' % ref, ref.pool)
            raise
        return Ref(pool, image, snap)

    def depth(self, ref: Ref, limit: int = 64) -> int:
        """How many ancestors (clone parents) the image has."""
        count = 0
        current: Optional[Ref] = self.parent(ref)
        while current is not None and count < limit:
            count += 1
            current = self.parent(Ref(current.pool, current.image, current.snap))
        return count

    def watchers(self, ref: Ref) -> int:
        """How many clients have the image open (an attached volume has one: its QEMU)."""
        with self.image(Ref(ref.pool, ref.image)) as img:
            with self._errors('listing the watchers of %s' % ref, ref.pool, write=False):
                return len(list(img.watchers_list()))

    def allocated(self, ref: Ref) -> List[Extent]:
        """Data and hole extents of an image or snapshot, parents included (``diff_iterate``)."""
        ranges: List[Tuple[int, int]] = []

        def collect(offset: int, length: int, exists: bool) -> int:
            if exists:
                ranges.append((offset, length))
            return 0

        with self.image(ref) as img:
            with self._errors('listing the allocated extents of %s' % ref, ref.pool, write=False):
                size = int(img.size())
                img.diff_iterate(0, size, None, collect, include_parent=True, whole_object=True)
        return merge_extents(size, ranges)

    # -- changing state (each idempotent: returns True when it changed something) ----------

    def create_snap(self, ref: Ref) -> bool:
        _need_snap(ref)
        with self.image(Ref(ref.pool, ref.image), read_only=False) as img:
            with self._errors('creating snapshot %s' % ref, ref.pool):
                if ref.snap in user_snap_names(img):
                    return False
                img.create_snap(ref.snap)
        return True

    def protect(self, ref: Ref) -> bool:
        _need_snap(ref)
        with self.image(Ref(ref.pool, ref.image), read_only=False) as img:
            with self._errors('protecting snapshot %s' % ref, ref.pool):
                if img.is_protected_snap(ref.snap):
                    return False
                img.protect_snap(ref.snap)
        return True

    def remove_snap(self, ref: Ref) -> bool:
        """Unprotect (if needed) and remove a snapshot; False when it does not exist.

        A snapshot that still has clones is refused with the list of clones.
        """
        _need_snap(ref)
        return bool(self.remove_snaps(ref, [str(ref.snap)]))

    def remove_snaps(self, ref: Ref, names: Sequence[str], action: Optional[str] = None) -> List[str]:
        """Unprotect (if needed) and remove the snapshots ``names`` of the image ``ref`` (by its id when
        ``ref.image_id`` is set), opened once; returns those removed (a missing one is skipped).

        A removal that was interrupted (its snapshot left in the trash namespace, named ``name`` in
        ``original_name`` or by its generated name) is completed when no clone uses the snapshot: librbd would
        otherwise keep it for ever. A snapshot that still has clones is refused (EBUSY). ``action`` names every
        failure (the opening included); by default the opening and each snapshot are named, with a hint for a
        snapshot with clones.
        """
        image = Ref(ref.pool, ref.image, image_id=ref.image_id)
        hints = None if action else {'busy': 'The snapshot still has clones: flatten or remove them first'}
        removed: List[str] = []
        with self.image(image, read_only=False, action=action) as img:
            for name in names:
                with self._errors(action or 'removing snapshot %s' % Ref(ref.pool, ref.image, name), ref.pool,
                                  hints=hints):
                    listed = list(img.list_snaps())  # one listing per name serves both kinds
                    if any(snap_namespace(s) == USER and s['name'] == name for s in listed):
                        if img.is_protected_snap(name):
                            img.unprotect_snap(name)
                        img.remove_snap(name)
                        removed.append(name)
                    if self._finish_trashed(img, name, listed):
                        removed.append(name)
        return sorted(set(removed), key=removed.index)

    @staticmethod
    def _finish_trashed(img: Any, name: str, listed: Sequence[Mapping[str, Any]]) -> bool:
        """Remove the trash-namespace snapshots of ``listed`` (the image's snapshots) left by interrupted removals
        of ``name`` that no clone uses."""
        done = False
        for snap in listed:
            if snap_namespace(snap) != TRASH or name not in (snap['name'], original_name(snap)):
                continue
            if not _clones_of(img, snap_id=int(snap['id'])):
                img.remove_snap_by_id(int(snap['id']))
                done = True
        return done

    def clone(self, parent: Ref, child: Ref, features: Optional[int] = None) -> bool:
        """Clone ``parent`` (a snapshot) as ``child``; False when ``child`` already is that clone."""
        _need_snap(parent)
        if self.exists(child.pool, child.image):
            actual = self.parent(child)
            if actual is not None and self._same_snap(actual, parent):
                return False
            raise VolsnapError('RBD image %s already exists and is not a clone of %s (its parent is %s): remove it '
                               'or choose another image' % (child, parent, actual or 'none'), ceph_error='exists')
        kwargs: Dict[str, Any] = {}
        if features is not None:
            kwargs['features'] = features
        with self._errors('cloning %s into %s' % (parent, child), child.pool):
            self.lib.RBD().clone(self.ioctx(parent.pool), parent.image, parent.snap,
                                 self.ioctx(child.pool), child.image, **kwargs)
        return True

    def _same_snap(self, actual: Ref, wanted: Ref) -> bool:
        if actual.pool != wanted.pool or actual.snap != wanted.snap:
            return False
        if actual.image == wanted.image:
            return True
        # Cinder may have renamed the parent to <name>.deleted since.
        return live_name(actual.image) == live_name(wanted.image)

    def flatten(self, ref: Ref) -> bool:
        """Copy the parent's data into the clone so it no longer depends on it; False when not a clone."""
        if self.parent(Ref(ref.pool, ref.image)) is None:
            return False
        with self.image(Ref(ref.pool, ref.image), read_only=False) as img:
            with self._errors('flattening %s' % ref, ref.pool):
                img.flatten()
        return True

    def remove(self, ref: Ref, action: Optional[str] = None) -> bool:
        """Remove an image (a trash entry when ``ref.image_id`` is set: for good, even before its deferment ends);
        False when it does not exist. ``action`` names a failure (default: what is removed)."""
        trash = bool(ref.image_id)
        what = action or ('removing the RBD trash entry %s (%s)' % (ref.image_id, ref) if trash
                          else 'removing RBD image %s' % ref)
        with self._errors(what, ref.pool):
            try:
                if trash:
                    self.lib.RBD().trash_remove(self.ioctx(ref.pool), ref.image_id, True)
                else:
                    self.lib.RBD().remove(self.ioctx(ref.pool), ref.image)
            except Exception as exc:
                if is_ceph_exception(exc) and error_kind(exc) == 'not_found':
                    return False
                raise
        return True

    def default_features(self) -> int:
        """The features glance_store gives a new image: the client's ``rbd_default_features``, else layering."""
        try:
            value = self.cluster.conf_get('rbd_default_features')
            features = int(value) if value is not None else 0
        except Exception:  # an option this client does not know: glance_store falls back the same way
            features = 0
        return features or int(getattr(self.lib, 'RBD_FEATURE_LAYERING', 1))

    def copy_sparse(self, src: Ref, dst: Ref, order: int = GLANCE_ORDER, features: Optional[int] = None,
                    progress: Optional[Progress] = None, workers: int = COPY_WORKERS) -> Tuple[int, int]:
        """Copy the data of ``src`` (a snapshot) into a new image ``dst`` of the same size; (bytes written, size).

        Only the extents ``diff_iterate`` reports allocated are read (``CHUNK`` at a time, ``workers`` at
        once), and a chunk that reads as zeros is not written: the copy costs the data held, not the
        size, and ``dst`` stays thin. ``dst`` must not exist (a partial copy is removed by the caller);
        it has no parent and no snapshot when this returns. ``progress(done, total)`` counts the
        allocated bytes, from the thread that called.
        """
        _need_snap(src)
        extents = [e for e in self.allocated(src) if e.data]
        size = self.size(src)
        total = sum(e.length for e in extents)
        chunks = [(pos, min(CHUNK, e.offset + e.length - pos)) for e in extents
                  for pos in range(e.offset, e.offset + e.length, CHUNK)]
        feats = self.default_features() if features is None else features
        with self._errors('creating RBD image %s' % dst, dst.pool):
            self.lib.RBD().create(self.ioctx(dst.pool), dst.image, size, order, old_format=False, features=feats)
        written = 0
        done = 0
        if progress is not None:
            progress(0, total)
        with self.image(src) as source, self.image(dst, read_only=False) as target:
            def one(chunk: Tuple[int, int]) -> Tuple[int, int]:
                offset, length = chunk
                buf = source.read(offset, length)
                if len(buf) != length:
                    raise VolsnapError('short read from %s at offset %d: %d of %d bytes'
                                       % (src, offset, len(buf), length))
                if buf.count(0) == length:
                    return length, 0
                target.write(buf, offset)
                return length, length

            with self._errors('copying %s into %s' % (src, dst), dst.pool):
                with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                    futures = [pool.submit(one, chunk) for chunk in chunks]
                    try:
                        for future in concurrent.futures.as_completed(futures):
                            read, wrote = future.result()
                            done += read
                            written += wrote
                            if progress is not None:
                                progress(done, total)
                    finally:
                        for future in futures:
                            future.cancel()
                target.flush()
        return written, size

    def image_hashes(self, ref: Ref, algo: str, progress: Optional[Progress] = None) -> Dict[str, str]:
        """Glance's ``checksum`` (md5) and ``os_hash_value`` (``algo``) of the whole image, holes hashed as zeros.

        Holes are not read, but every byte of the size is hashed: the cost grows with the size.
        ``progress(done, size)``.
        """
        size = self.size(ref)
        checksum = hashlib.md5()
        value = hashlib.new(algo)
        report = None if progress is None else (lambda done, read: progress(done, size))
        # hashlib releases the GIL on large updates: md5 runs in a second thread beside the other hash.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pending: Optional[concurrent.futures.Future[None]] = None
            for buf in self.read_stream(ref, self.allocated(ref), progress=report):
                if pending is not None:
                    pending.result()
                pending = pool.submit(checksum.update, buf)
                value.update(buf)
            if pending is not None:
                pending.result()
        if progress is not None:
            progress(size, size)
        return {'checksum': checksum.hexdigest(), 'os_hash_algo': algo, 'os_hash_value': value.hexdigest()}

    def probe_write(self, pool: str) -> None:
        """Write and remove a small object in ``pool``: fails with the missing cap when the client cannot write."""
        name = 'volsnap_write_probe.%s' % uuid.uuid4().hex
        ioctx = self.ioctx(pool)
        with self._errors('checking that %s can write to pool %s' % (self._client(), pool), pool):
            ioctx.write_full(name, b'volsnap write probe')
            ioctx.remove_object(name)

    def _client(self) -> str:
        return 'client.%s' % (self.user or 'admin')

    def release_parent_refs(self, parent: Ref, log: Optional[Callable[[str], None]] = None) -> List[str]:
        """Drop a reference a removed clone held, as Cinder's ``_delete_clone_parent_refs`` does.

        ``parent`` is the snapshot the clone was made from. The snapshot is removed when it has no
        clone left; then, when the parent image is a deleted Cinder volume (``<name>.deleted``) with no
        snapshot left, it is removed too and the walk continues with its own parent, provided that
        parent snapshot follows Cinder's ``<name>.clone_snap`` convention. Returns what was removed.
        """
        removed: List[str] = []
        current: Optional[Ref] = parent
        while current is not None:
            info = self.snap(current.pool, current.image, current.snap or '')
            if info is not None:
                if info.children:
                    break
                grand = self.parent(current)
                self.remove_snap(current)
                removed.append(str(current))
                if log:
                    log('removed snapshot %s' % current)
            else:
                grand = None
                if current.snap and self.remove_snaps(Ref(current.pool, current.image), [current.snap]):
                    removed.append(str(current))  # its removal had been interrupted (a trash snapshot): completed
                    if log:
                        log('completed the removal of snapshot %s' % current)
            if not current.image.endswith(DELETED_SUFFIX) or not self.exists(current.pool, current.image):
                break
            if self.snaps(current.pool, current.image, children=False):
                break
            if grand is None:
                grand = self.parent(Ref(current.pool, current.image))
            self.remove(Ref(current.pool, current.image))
            removed.append('%s/%s' % (current.pool, current.image))
            if log:
                log('removed deleted volume %s/%s' % (current.pool, current.image))
            if grand is None or grand.snap != clone_snap_name(live_name(current.image)):
                break
            current = grand
        return removed

    # -- data -----------------------------------------------------------------------------

    def read_stream(self, ref: Ref, extents: List[Extent], chunk: int = CHUNK,
                    progress: Optional[Callable[[int, int], None]] = None) -> Generator[bytes, None, None]:
        """The image's bytes in order, holes as zeros without reading them; ``progress(done, data_read)``.

        The image stays open until the generator is exhausted or closed: close it when the reader stops early.
        """
        zeros = bytes(chunk)
        done = 0
        data_read = 0
        with self.image(ref) as img:
            for extent in extents:
                pos = extent.offset
                end = extent.offset + extent.length
                while pos < end:
                    length = min(chunk, end - pos)
                    if extent.data:
                        with self._errors('reading %s at offset %d' % (ref, pos), ref.pool, write=False):
                            buf = img.read(pos, length)
                        if len(buf) != length:
                            raise VolsnapError('short read from %s at offset %d: %d of %d bytes'
                                               % (ref, pos, len(buf), length))
                        data_read += length
                    else:
                        buf = zeros if length == chunk else zeros[:length]
                    pos += length
                    done += length
                    yield buf
                    if progress is not None:
                        progress(done, data_read)
