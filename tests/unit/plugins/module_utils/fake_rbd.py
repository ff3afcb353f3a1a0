# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An in-memory stand-in for the ``rbd`` module and a connected ``rados.Rados`` (unit tests only).

It models what the RBD logic relies on, with librbd's rules (checked against Ceph 16 on the lab):
clones hang on protected snapshots; a protected snapshot cannot be removed; unprotecting a snapshot
that has clones is EBUSY; an image with snapshots cannot be removed (ImageHasSnapshots); reads of
a clone fall through to its parent where the clone has no data; exception classes carry the
bindings' names and ``__module__``. Images have ids and snapshots ids (never reused); an image moved
to the trash (:meth:`Cluster.trash_move`) is opened by its id only.
"""

from __future__ import annotations

import errno
import itertools
from typing import Any, Dict, List, Optional, Tuple

_IDS = itertools.count(0x1000)


def _exc(name, code):
    def init(self, message='', errno=code):  # pylint: disable=redefined-outer-name
        Exception.__init__(self, message)
        self.errno = errno
    return type(name, (Exception,), {'__module__': 'rbd', '__init__': init})


class FakeRbdLib(object):
    """The ``rbd`` module: ``RBD``, ``Image`` and the exception classes, over a :class:`Cluster`."""

    ImageNotFound = _exc('ImageNotFound', errno.ENOENT)
    ImageExists = _exc('ImageExists', errno.EEXIST)
    ImageBusy = _exc('ImageBusy', errno.EBUSY)
    ImageHasSnapshots = _exc('ImageHasSnapshots', errno.ENOTEMPTY)
    InvalidArgument = _exc('InvalidArgument', errno.EINVAL)
    PermissionError = _exc('PermissionError', errno.EPERM)

    def __init__(self, cluster: 'Cluster') -> None:
        self.cluster = cluster
        lib = self

        class RBD(object):
            def list(self, ioctx):
                return sorted(lib.cluster.pools[ioctx.pool])

            def list2(self, ioctx):
                return [{'name': name, 'id': img.id} for name, img in sorted(lib.cluster.pools[ioctx.pool].items())]

            def trash_list(self, ioctx):
                return [{'id': image_id, 'name': name, 'source': 'USER', 'deferment_end_time': lib.cluster.deferment_end}
                        for image_id, (name, _img) in sorted(lib.cluster.trash[ioctx.pool].items())]

            def trash_remove(self, ioctx, image_id, force=False):
                lib.cluster.check_write(ioctx.pool)
                if image_id not in lib.cluster.trash[ioctx.pool]:
                    raise lib.ImageNotFound('[errno 2] RBD image not found (error removing image from trash)')
                if lib.cluster.trash[ioctx.pool][image_id][1].snaps:
                    raise lib.ImageHasSnapshots('image has snapshots')
                del lib.cluster.trash[ioctx.pool][image_id]

            def remove(self, ioctx, name):
                lib.cluster.check_write(ioctx.pool)
                img = lib.cluster.get(ioctx.pool, name)
                if img.snaps:
                    raise lib.ImageHasSnapshots('image has snapshots')
                if img.parent:
                    lib.cluster.get(img.parent[0], img.parent[1]).snaps[img.parent[2]]['children'].discard(
                        (ioctx.pool, name))
                del lib.cluster.pools[ioctx.pool][name]

            def rename(self, ioctx, src, dst):
                img = lib.cluster.get(ioctx.pool, src)
                del lib.cluster.pools[ioctx.pool][src]
                lib.cluster.pools[ioctx.pool][dst] = img
                old, new = (ioctx.pool, src), (ioctx.pool, dst)
                for other in lib.cluster.all_images():
                    if other.parent and other.parent[:2] == old:
                        other.parent = new + (other.parent[2],)
                    for snap in other.snaps.values():
                        if snap['parent'] and snap['parent'][:2] == old:
                            snap['parent'] = new + (snap['parent'][2],)
                        if old in snap['children']:
                            snap['children'].discard(old)
                            snap['children'].add(new)

            def clone(self, p_ioctx, p_name, p_snap, c_ioctx, c_name, features=None):
                lib.cluster.check_write(c_ioctx.pool)
                parent = lib.cluster.get(p_ioctx.pool, p_name)
                if p_snap not in parent.snaps:
                    raise lib.ImageNotFound('no snapshot %s' % p_snap)
                if not parent.snaps[p_snap]['protected']:
                    raise lib.InvalidArgument('parent snapshot must be protected')
                if c_name in lib.cluster.pools[c_ioctx.pool]:
                    raise lib.ImageExists('exists')
                child = FakeImage(parent.snaps[p_snap]['size'])
                child.parent = (p_ioctx.pool, p_name, p_snap)
                lib.cluster.pools[c_ioctx.pool][c_name] = child
                parent.snaps[p_snap]['children'].add((c_ioctx.pool, c_name))

            def create(self, ioctx, name, size, order=None, old_format=True, features=None):
                lib.cluster.check_write(ioctx.pool)
                if name in lib.cluster.pools[ioctx.pool]:
                    raise lib.ImageExists('exists')
                lib.cluster.create(ioctx.pool, name, size)
                lib.cluster.created.append((ioctx.pool, name, order, old_format, features))

        self.RBD = RBD

        class Image(object):
            def __init__(self, ioctx, name=None, snapshot=None, read_only=False, image_id=None):
                self.pool = ioctx.pool
                if image_id is not None:
                    assert name is None, 'fake: an image is opened by its name or by its id'
                    name, self.img = lib.cluster.by_id(ioctx.pool, image_id)
                else:
                    self.img = lib.cluster.get(ioctx.pool, name)
                self.name = name
                self.read_only = read_only
                self.snap = None
                if snapshot is not None:
                    self.set_snap(snapshot)
                self.closed = False
                lib.cluster.open_images.append(self)

            def _writable(self):
                if self.read_only:
                    raise lib.InvalidArgument('read-only')
                lib.cluster.check_write(self.pool)

            def close(self):
                if not self.closed:
                    self.closed = True
                    lib.cluster.open_images.remove(self)

            def size(self):
                if self.snap:
                    return self.img.snaps[self.snap]['size']
                return self.img.size

            def id(self):
                return self.img.id

            def list_snaps(self):
                out = []
                for n, s in self.img.snaps.items():
                    entry = {'name': n, 'id': s['id'], 'size': s['size'], 'namespace': s.get('namespace', 0)}
                    if s.get('namespace') == 2:
                        entry['trash'] = {'original_name': s['original_name']}
                    out.append(entry)
                return out

            def _user_snap(self, name):
                # as librbd: a name finds only a user-namespace snapshot
                if name not in self.img.snaps or self.img.snaps[name].get('namespace', 0) != 0:
                    raise lib.ImageNotFound('no snapshot %s' % name)
                return self.img.snaps[name]

            def is_protected_snap(self, name):
                return self._user_snap(name)['protected']

            def set_snap(self, name):
                if name is not None:
                    self._user_snap(name)
                self.snap = name

            def set_snap_by_id(self, snap_id):
                found = [n for n, s in self.img.snaps.items() if s['id'] == snap_id]
                if not found:
                    raise lib.ImageNotFound('no snapshot id %s' % snap_id)
                self.snap = found[0]

            def remove_snap_by_id(self, snap_id):
                self._writable()
                found = [n for n, s in self.img.snaps.items() if s['id'] == snap_id]
                if not found:
                    raise lib.ImageNotFound('no snapshot id %s' % snap_id)
                if self.img.snaps[found[0]]['children']:
                    raise lib.ImageBusy('snapshot has children')
                del self.img.snaps[found[0]]

            def create_snap(self, name):
                self._writable()
                if name in self.img.snaps and self.img.snaps[name].get('namespace', 0) == 0:
                    raise lib.ImageExists('snapshot exists')
                self.img.snaps[name] = {'protected': False, 'children': set(), 'size': self.img.size,
                                        'data': dict(self.img.data), 'parent': self.img.parent, 'id': next(_IDS)}

            def protect_snap(self, name):
                self._writable()
                if self.img.snaps[name]['protected']:
                    raise lib.ImageBusy('already protected')
                self.img.snaps[name]['protected'] = True

            def unprotect_snap(self, name):
                self._writable()
                snap = self.img.snaps[name]
                if not snap['protected']:
                    raise lib.InvalidArgument('not protected')
                if snap['children']:
                    raise lib.ImageBusy('snapshot has children')
                snap['protected'] = False

            def remove_snap(self, name):
                self._writable()
                self._user_snap(name)
                if self.img.snaps[name]['protected']:
                    raise lib.ImageBusy('snapshot is protected')
                del self.img.snaps[name]

            def list_children2(self):
                assert self.snap is not None, 'fake: list_children2 needs a snapshot set'
                return [{'pool': p, 'image': n, 'trash': False} for p, n in sorted(self.img.snaps[self.snap]['children'])]

            def parent_info(self):
                parent = self.img.snaps[self.snap]['parent'] if self.snap else self.img.parent
                if parent is None:
                    raise lib.ImageNotFound('no parent')
                return parent

            def watchers_list(self):
                return [{'addr': '127.0.0.1:0', 'id': i, 'cookie': i} for i in range(self.img.watchers)]

            def flatten(self):
                self._writable()
                if self.img.parent is None:
                    raise lib.InvalidArgument('not a clone')
                merged = lib.cluster.read_all(self.pool, self.name)
                pool, name, snap = self.img.parent
                if not any(s['parent'] for s in self.img.snaps.values()):
                    # as librbd: snapshots taken before the flatten keep the clone attached to its parent
                    lib.cluster.get(pool, name).snaps[snap]['children'].discard((self.pool, self.name))
                self.img.data = merged
                self.img.parent = None

            def diff_iterate(self, offset, length, from_snapshot, cb, include_parent=True, whole_object=False):
                assert from_snapshot is None and include_parent
                data = lib.cluster.read_all(self.pool, self.name, self.snap)
                for block in sorted(data):
                    cb(block * lib.cluster.block, lib.cluster.block, True)

            def write(self, data, offset):
                self._writable()
                block = lib.cluster.block
                assert offset % block == 0 and len(data) % block == 0, 'fake: block-aligned writes only'
                for pos in range(0, len(data), block):
                    self.img.data[(offset + pos) // block] = bytes(data[pos:pos + block])
                lib.cluster.writes.append((self.pool, self.name, offset, len(data)))
                return len(data)

            def flush(self):
                pass

            def read(self, offset, length):
                data = lib.cluster.read_all(self.pool, self.name, self.snap)
                out = bytearray(length)
                block = lib.cluster.block
                for pos in range(offset - offset % block, offset + length, block):
                    chunk = data.get(pos // block)
                    if chunk is None:
                        continue
                    for i, byte in enumerate(chunk):
                        at = pos + i
                        if offset <= at < offset + length:
                            out[at - offset] = byte
                lib.cluster.reads.append((offset, length))
                return bytes(out)

        self.Image = Image


class FakeImage(object):
    def __init__(self, size: int) -> None:
        self.id = '%x' % next(_IDS)
        self.size = size
        self.data: Dict[int, bytes] = {}
        self.snaps: Dict[str, dict] = {}
        self.parent: Optional[Tuple[str, str, str]] = None
        self.watchers = 0


class FakeIoctx(object):
    def __init__(self, cluster: 'Cluster', pool: str) -> None:
        self.cluster = cluster
        self.pool = pool
        self.closed = False

    def write_full(self, name, data):
        self.cluster.check_write(self.pool)
        self.cluster.objects[(self.pool, name)] = data

    def remove_object(self, name):
        del self.cluster.objects[(self.pool, name)]

    def close(self):
        self.closed = True


class RadosPermissionError(Exception):
    __module__ = 'rados'

    def __init__(self, message):
        Exception.__init__(self, message)
        self.errno = errno.EPERM


class Cluster(object):
    """Pools of :class:`FakeImage`; ``read_only_pools`` refuse writes as a missing osd cap does."""

    def __init__(self, pools=('volumes', 'images'), block=4096, fsid='6a1b2c3d-0000-4000-8000-00000000f51d') -> None:
        self.pools: Dict[str, Dict[str, FakeImage]] = {p: {} for p in pools}
        self.block = block
        self.fsid = fsid
        self.read_only_pools: set = set()
        self.objects: Dict[Tuple[str, str], bytes] = {}
        self.reads: List[Tuple[int, int]] = []
        self.open_images: List[Any] = []  # rbd.Image objects not closed yet
        self.created: List[Tuple[Any, ...]] = []  # RBD().create calls: (pool, name, order, old_format, features)
        self.writes: List[Tuple[str, str, int, int]] = []
        self.conf: Dict[str, str] = {}
        self.trash: Dict[str, Dict[str, Tuple[str, FakeImage]]] = {p: {} for p in pools}  # pool -> id -> (name, image)
        self.deferment_end: Any = None
        self.opened_ioctxs: List[str] = []
        self.lib = FakeRbdLib(self)

    def open_ioctx(self, pool):
        if pool not in self.pools:
            exc = type('ObjectNotFound', (Exception,), {'__module__': 'rados'})('pool not found')
            exc.errno = errno.ENOENT
            raise exc
        self.opened_ioctxs.append(pool)
        return FakeIoctx(self, pool)

    def conf_get(self, name):
        return self.conf.get(name)

    def get_fsid(self):
        return self.fsid

    def check_write(self, pool):
        if pool in self.read_only_pools:
            raise RadosPermissionError('[errno 1] RADOS permission error (error writing object)')

    def trash_snap(self, pool, name, snap) -> str:
        """What librbd's first step of removing ``snap`` does (an interrupted removal leaves this): the snapshot
        moves to the trash namespace under a generated name; returns that name."""
        img = self.get(pool, name)
        new = 'trashed-%x' % next(_IDS)
        img.snaps[new] = dict(img.snaps.pop(snap), namespace=2, original_name=snap, protected=False)
        return new

    def get(self, pool, name) -> FakeImage:
        try:
            return self.pools[pool][name]
        except KeyError:
            raise self.lib.ImageNotFound('[errno 2] RBD image not found (error opening image %s)' % name)

    def by_id(self, pool, image_id) -> Tuple[str, FakeImage]:
        """(name, image) of the image or trash entry ``image_id``."""
        for name, img in self.pools[pool].items():
            if img.id == image_id:
                return name, img
        if image_id in self.trash[pool]:
            return self.trash[pool][image_id]
        raise self.lib.ImageNotFound('[errno 2] RBD image not found (error opening image id %s)' % image_id)

    def trash_move(self, pool, name) -> str:
        """Move an image to the pool's trash (as ``rbd trash mv``); its id."""
        img = self.pools[pool].pop(name)
        self.trash[pool][img.id] = (name, img)
        return img.id

    def all_images(self):
        for images in self.pools.values():
            yield from images.values()

    def create(self, pool, name, size, blocks=None) -> FakeImage:
        img = FakeImage(size)
        for index, data in (blocks or {}).items():
            img.data[index] = data
        self.pools[pool][name] = img
        return img

    def read_all(self, pool, name, snap=None) -> Dict[int, bytes]:
        img = self.get(pool, name)
        source = img.snaps[snap] if snap else None
        data = dict(source['data'] if source else img.data)
        parent = source['parent'] if source else img.parent
        if parent is not None:
            inherited = self.read_all(parent[0], parent[1], parent[2])
            for index, block in inherited.items():
                data.setdefault(index, block)
        return data
