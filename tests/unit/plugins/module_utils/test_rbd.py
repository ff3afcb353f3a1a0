# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _rbd on the in-memory fake (fake_rbd.py): URLs, extents, idempotent operations,
clone checks, the Cinder-style walk of parent references, the sparse read stream, and what rbd_pool_audit reads
and removes through it (ids, trash entries by id, several snapshots in one opening, one I/O context for threads)."""

from __future__ import annotations

import threading

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.rbd import (
    Extent,
    Rbd,
    Ref,
    clone_snap_name,
    live_name,
    merge_extents,
    parse_rbd_url,
    rbd_url,
)

from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils.fake_rbd import Cluster

FSID = '6a1b2c3d-0000-4000-8000-00000000f51d'
IMG = '0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f'


@pytest.fixture
def cluster():
    return Cluster(pools=('volumes', 'images'))


@pytest.fixture
def rbd(cluster):
    ops = Rbd(cluster, cluster.lib, 'cinder')
    yield ops
    ops.close()


def test_names():
    assert clone_snap_name(IMG) == IMG + '.clone_snap'
    assert live_name('volume-1.deleted') == 'volume-1'
    assert live_name('volume-1') == 'volume-1'


def test_rbd_url_round_trip_and_quoting():
    url = rbd_url(FSID, 'images', IMG)
    assert url == 'rbd://%s/images/%s/snap' % (FSID, IMG)
    assert parse_rbd_url(url) == (FSID, 'images', IMG, 'snap')
    odd = rbd_url(FSID, 'my pool/x', 'a/b', 's@1')
    assert odd == 'rbd://%s/my%%20pool%%2Fx/a%%2Fb/s%%401' % FSID
    assert parse_rbd_url(odd) == (FSID, 'my pool/x', 'a/b', 's@1')


@pytest.mark.parametrize('url', ['rbd://image-only', 'file:///x', 'rbd://a/b/c', 'rbd://a//c/d', None, 'rbd://a/b/c/d/e'])
def test_parse_rbd_url_rejects(url):
    assert parse_rbd_url(url) is None


def test_parse_rbd_url_lowers_fsid():
    assert parse_rbd_url('rbd://ABC/p/i/s')[0] == 'abc'


@pytest.mark.parametrize('size, allocated, expected', [
    (100, [], [Extent(0, 100, False)]),
    (100, [(0, 100)], [Extent(0, 100, True)]),
    (100, [(10, 10), (20, 5), (60, 100)],
     [Extent(0, 10, False), Extent(10, 15, True), Extent(25, 35, False), Extent(60, 40, True)]),
    (100, [(50, 10), (0, 10), (5, 10)],
     [Extent(0, 15, True), Extent(15, 35, False), Extent(50, 10, True), Extent(60, 40, False)]),
    (100, [(30, 0), (200, 5)], [Extent(0, 100, False)]),
])
def test_merge_extents(size, allocated, expected):
    extents = merge_extents(size, allocated)
    assert extents == expected
    assert sum(e.length for e in extents) == size


def test_snapshot_protect_remove_are_idempotent(cluster, rbd):
    cluster.create('volumes', 'volume-1', 1 << 20)
    snap = Ref('volumes', 'volume-1', 's1')
    assert rbd.create_snap(snap) is True
    assert rbd.create_snap(snap) is False
    assert rbd.protect(snap) is True
    assert rbd.protect(snap) is False
    info = rbd.snap('volumes', 'volume-1', 's1')
    assert info.protected and info.children == []
    assert rbd.remove_snap(snap) is True
    assert rbd.remove_snap(snap) is False
    assert rbd.snaps('volumes', 'volume-1') == []


def test_exists_and_missing_pool(cluster, rbd):
    cluster.create('volumes', 'volume-1', 4096)
    assert rbd.exists('volumes', 'volume-1')
    assert not rbd.exists('volumes', 'volume-2')
    with pytest.raises(VolsnapError, match='Pool nope does not exist'):
        rbd.exists('nope', 'volume-1')


def _clone_setup(cluster, rbd):
    cluster.create('volumes', 'volume-1', 8 * 4096, {0: b'A' * 4096, 5: b'B' * 4096})
    snap = Ref('volumes', 'volume-1', clone_snap_name(IMG))
    rbd.create_snap(snap)
    rbd.protect(snap)
    return snap


def test_clone_parent_depth_and_idempotence(cluster, rbd):
    snap = _clone_setup(cluster, rbd)
    child = Ref('images', IMG)
    assert rbd.clone(snap, child) is True
    assert rbd.clone(snap, child) is False
    assert rbd.parent(child) == snap
    assert rbd.depth(child) == 1
    assert rbd.depth(Ref('volumes', 'volume-1')) == 0
    assert rbd.snap('volumes', 'volume-1', snap.snap).children == [Ref('images', IMG)]
    with pytest.raises(VolsnapError, match='remove_snap|still has clones'):
        rbd.remove_snap(snap)


def test_clone_refuses_a_foreign_image(cluster, rbd):
    snap = _clone_setup(cluster, rbd)
    cluster.create('images', IMG, 4096)
    with pytest.raises(VolsnapError, match='already exists and is not a clone of'):
        rbd.clone(snap, Ref('images', IMG))


def test_clone_accepts_parent_renamed_by_cinder(cluster, rbd):
    snap = _clone_setup(cluster, rbd)
    rbd.clone(snap, Ref('images', IMG))
    cluster.lib.RBD().rename(rbd.ioctx('volumes'), 'volume-1', 'volume-1.deleted')
    assert rbd.parent(Ref('images', IMG)) == Ref('volumes', 'volume-1.deleted', snap.snap)
    assert rbd.clone(snap, Ref('images', IMG)) is False


def test_missing_write_cap_names_the_cap(cluster, rbd):
    snap = _clone_setup(cluster, rbd)
    cluster.read_only_pools.add('images')
    with pytest.raises(VolsnapError) as info:
        rbd.probe_write('images')
    assert "client.cinder lacks write access to pool images" in info.value.msg
    assert "osd 'profile rbd pool=images'" in info.value.msg
    with pytest.raises(VolsnapError, match="profile rbd pool=images"):
        rbd.clone(snap, Ref('images', IMG))
    cluster.read_only_pools.clear()
    rbd.probe_write('images')
    assert cluster.objects == {}


def test_flatten_detaches(cluster, rbd):
    snap = _clone_setup(cluster, rbd)
    child = Ref('images', IMG)
    rbd.clone(snap, child)
    assert rbd.flatten(child) is True
    assert rbd.parent(child) is None
    assert rbd.flatten(child) is False
    assert rbd.snap('volumes', 'volume-1', snap.snap).children == []
    assert cluster.read_all('images', IMG)[5] == b'B' * 4096


def test_release_parent_refs_walks_like_cinder(cluster, rbd):
    # volume-0 <- volume-1 (Cinder clone, snapshot volume-1.clone_snap), both deleted in Cinder (renamed);
    # the Glance image clone hung on volume-1.deleted@<img>.clone_snap and is gone now.
    cluster.create('volumes', 'volume-0', 4 * 4096, {1: b'x' * 4096})
    base_snap = Ref('volumes', 'volume-0', 'volume-1.clone_snap')
    rbd.create_snap(base_snap)
    rbd.protect(base_snap)
    cluster.lib.RBD().clone(rbd.ioctx('volumes'), 'volume-0', 'volume-1.clone_snap', rbd.ioctx('volumes'), 'volume-1')
    ours = Ref('volumes', 'volume-1', clone_snap_name(IMG))
    rbd.create_snap(ours)
    rbd.protect(ours)
    rbd.clone(ours, Ref('images', IMG))
    for name in ('volume-0', 'volume-1'):
        cluster.lib.RBD().rename(rbd.ioctx('volumes'), name, name + '.deleted')
    # while the clone exists, nothing is released
    assert rbd.release_parent_refs(Ref('volumes', 'volume-1.deleted', ours.snap)) == []
    rbd.remove(Ref('images', IMG))
    logged = []
    removed = rbd.release_parent_refs(Ref('volumes', 'volume-1.deleted', ours.snap), logged.append)
    assert removed == ['volumes/volume-1.deleted@%s' % ours.snap, 'volumes/volume-1.deleted',
                       'volumes/volume-0.deleted@volume-1.clone_snap', 'volumes/volume-0.deleted']
    assert cluster.pools['volumes'] == {}
    assert len(logged) == 4


def test_release_parent_refs_keeps_live_volume_and_other_snaps(cluster, rbd):
    snap = _clone_setup(cluster, rbd)
    rbd.create_snap(Ref('volumes', 'volume-1', 'snapshot-1'))
    rbd.clone(snap, Ref('images', IMG))
    rbd.remove(Ref('images', IMG))
    assert rbd.release_parent_refs(snap) == [str(snap)]
    assert 'volume-1' in cluster.pools['volumes']
    cluster.lib.RBD().rename(rbd.ioctx('volumes'), 'volume-1', 'volume-1.deleted')
    # a deleted volume that still has a (Cinder) snapshot stays
    assert rbd.release_parent_refs(Ref('volumes', 'volume-1.deleted', 'gone')) == []
    assert 'volume-1.deleted' in cluster.pools['volumes']


def test_allocated_and_read_stream_skip_holes(cluster, rbd):
    snap = _clone_setup(cluster, rbd)
    extents = rbd.allocated(snap)
    assert [(e.offset, e.length, e.data) for e in extents] == [
        (0, 4096, True), (4096, 4 * 4096, False), (5 * 4096, 4096, True), (6 * 4096, 2 * 4096, False)]
    seen = []
    data = b''.join(rbd.read_stream(snap, extents, chunk=4096 * 3, progress=lambda d, r: seen.append((d, r))))
    expected = bytearray(8 * 4096)
    expected[0:4096] = b'A' * 4096
    expected[5 * 4096:6 * 4096] = b'B' * 4096
    assert data == bytes(expected)
    assert seen[-1] == (8 * 4096, 2 * 4096)
    assert sum(read[1] for read in cluster.reads) == 2 * 4096  # holes were not read


def test_clone_reads_through_parent(cluster, rbd):
    snap = _clone_setup(cluster, rbd)
    child = Ref('images', IMG)
    rbd.clone(snap, child)
    data = b''.join(rbd.read_stream(child, rbd.allocated(child)))
    assert data[:4096] == b'A' * 4096 and data[5 * 4096:6 * 4096] == b'B' * 4096


def test_watchers_and_size(cluster, rbd):
    img = cluster.create('volumes', 'volume-1', 12345)
    img.watchers = 2
    assert rbd.watchers(Ref('volumes', 'volume-1')) == 2
    assert rbd.size(Ref('volumes', 'volume-1')) == 12345


def test_remove_missing_is_false_and_with_snaps_is_error(cluster, rbd):
    assert rbd.remove(Ref('volumes', 'nope')) is False
    cluster.create('volumes', 'volume-1', 4096)
    rbd.create_snap(Ref('volumes', 'volume-1', 's'))
    with pytest.raises(VolsnapError, match='It still has snapshots'):
        rbd.remove(Ref('volumes', 'volume-1'))


# ---- what rbd_pool_audit reads and removes through Rbd: ids, trash entries by id, several snapshots at once


def test_snaps_carry_their_ids_never_reused(cluster, rbd):
    cluster.create('volumes', 'volume-1', 4096)
    rbd.create_snap(Ref('volumes', 'volume-1', 'a'))
    rbd.create_snap(Ref('volumes', 'volume-1', 'b'))
    first = {s.name: s.id for s in rbd.snaps('volumes', 'volume-1')}
    assert all(isinstance(i, int) for i in first.values()) and first['a'] != first['b']
    rbd.remove_snap(Ref('volumes', 'volume-1', 'a'))
    rbd.create_snap(Ref('volumes', 'volume-1', 'a'))
    again = {s.name: s.id for s in rbd.snaps('volumes', 'volume-1')}
    assert again['b'] == first['b'] and again['a'] not in (first['a'], first['b'])


def test_describe_reads_id_snapshots_children_and_parent_in_one_opening(cluster, rbd):
    parent = cluster.create('volumes', 'volume-p', 4096)
    rbd.create_snap(Ref('volumes', 'volume-p', 's'))
    rbd.protect(Ref('volumes', 'volume-p', 's'))
    rbd.clone(Ref('volumes', 'volume-p', 's'), Ref('images', 'child'))
    info = rbd.describe(Ref('volumes', 'volume-p'))
    assert info.id == parent.id and info.parent is None
    [snap] = info.snaps
    assert (snap.name, snap.protected, [str(c) for c in snap.children]) == ('s', True, ['images/child'])
    child = rbd.describe(Ref('images', 'child'))
    assert str(child.parent) == 'volumes/volume-p@s' and child.snaps == []
    assert cluster.open_images == []  # every opening closed
    opened = []
    real = cluster.lib.Image

    def counting(*args, **kwargs):
        opened.append(args[1:2])
        return real(*args, **kwargs)
    cluster.lib.Image = counting
    rbd.describe(Ref('volumes', 'volume-p'))
    assert opened == [('volume-p',)]


def test_a_trash_entry_is_read_and_removed_by_its_id(cluster, rbd):
    cluster.create('volumes', 'volume-1', 4096)
    rbd.create_snap(Ref('volumes', 'volume-1', 'snapshot-x'))
    rbd.protect(Ref('volumes', 'volume-1', 'snapshot-x'))
    cluster.create('volumes', 'volume-2', 4096)
    image_id = cluster.trash_move('volumes', 'volume-1')
    listed, trash = rbd.images_and_trash('volumes')
    assert listed == [('volume-2', cluster.pools['volumes']['volume-2'].id)]
    assert [(e['id'], e['name'], e['source']) for e in trash] == [(image_id, 'volume-1', 'USER')]
    ref = Ref('volumes', 'volume-1', image_id=image_id)
    with pytest.raises(VolsnapError, match='RBD image not found'):
        rbd.describe(Ref('volumes', 'volume-1'))  # by name: a trash entry has none librbd opens
    info = rbd.describe(ref)
    assert info.id == image_id and [s.name for s in info.snaps] == ['snapshot-x']
    with pytest.raises(VolsnapError, match=r'^removing the RBD trash entry %s \(volumes/volume-1\) failed: '
                                           r'ImageHasSnapshots' % image_id):
        rbd.remove(ref)
    assert rbd.remove_snaps(ref, ['snapshot-x']) == ['snapshot-x']
    assert rbd.remove(ref) is True and cluster.trash['volumes'] == {}
    assert rbd.remove(ref) is False


def test_remove_snaps_opens_once_skips_missing_and_names_failures_by_action(cluster, rbd):
    cluster.create('volumes', 'volume-1', 4096)
    for name in ('a', 'b', 'c'):
        rbd.create_snap(Ref('volumes', 'volume-1', name))
    rbd.protect(Ref('volumes', 'volume-1', 'a'))
    assert rbd.remove_snaps(Ref('volumes', 'volume-1'), ['a', 'gone', 'b']) == ['a', 'b']
    assert [s.name for s in rbd.snaps('volumes', 'volume-1')] == ['c']
    rbd.protect(Ref('volumes', 'volume-1', 'c'))
    rbd.clone(Ref('volumes', 'volume-1', 'c'), Ref('volumes', 'clone'))
    # the default names the snapshot, with the hint about clones (what remove_snap always said)
    with pytest.raises(VolsnapError, match=r'^removing snapshot volumes/volume-1@c failed: ImageBusy: .*The snapshot '
                                           r'still has clones: flatten or remove them first$'):
        rbd.remove_snap(Ref('volumes', 'volume-1', 'c'))
    # a caller's action names every failure, the opening included, with the default hints
    with pytest.raises(VolsnapError, match=r'^removing volume-1@c from pool volumes failed: ImageBusy: .*It is in use'):
        rbd.remove_snaps(Ref('volumes', 'volume-1'), ['c'], action='removing volume-1@c from pool volumes')
    with pytest.raises(VolsnapError, match=r'^removing nope from pool volumes failed: ImageNotFound'):
        rbd.remove_snaps(Ref('volumes', 'nope'), ['c'], action='removing nope from pool volumes')
    with pytest.raises(VolsnapError, match=r'^removing volume-1 from pool volumes failed: ImageHasSnapshots'):
        rbd.remove(Ref('volumes', 'volume-1'), action='removing volume-1 from pool volumes')
    assert cluster.open_images == []


def test_one_io_context_per_pool_shared_by_threads(cluster, rbd):
    cluster.create('volumes', 'volume-1', 4096)
    barrier = threading.Barrier(8)
    real = cluster.open_ioctx

    def slow_open(pool):
        ioctx = real(pool)
        threading.Event().wait(0.01)  # widen the window two threads could both open in
        return ioctx
    cluster.open_ioctx = slow_open

    def read():
        barrier.wait()
        rbd.describe(Ref('volumes', 'volume-1'))
    threads = [threading.Thread(target=read) for _thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cluster.opened_ioctxs == ['volumes']


def test_a_trash_snapshot_is_listed_by_id_and_an_interrupted_removal_is_completed(cluster, rbd):
    """librbd's first step of removing a snapshot moves it to the trash namespace under a generated name; a kill
    then leaves it there, where librbd's lookups by name (is_protected_snap, set_snap) do not find it."""
    cluster.create('volumes', 'volume-1', 4096)
    for name in ('x.upload_snap', 'keep', 'used'):
        rbd.create_snap(Ref('volumes', 'volume-1', name))
    rbd.protect(Ref('volumes', 'volume-1', 'used'))
    rbd.clone(Ref('volumes', 'volume-1', 'used'), Ref('images', 'child'))
    trashed = cluster.trash_snap('volumes', 'volume-1', 'x.upload_snap')
    used = cluster.trash_snap('volumes', 'volume-1', 'used')  # a clone v2 parent removed: librbd keeps it
    snaps = {s.name: s for s in rbd.snaps('volumes', 'volume-1')}
    assert (snaps[trashed].namespace, snaps[trashed].original_name, snaps[trashed].protected,
            snaps[trashed].children) == ('trash', 'x.upload_snap', False, [])
    assert (snaps[used].namespace, snaps[used].children) == ('trash', [Ref('images', 'child')])
    assert (snaps['keep'].namespace, snaps['keep'].original_name) == ('user', None)
    # without children asked for, a trash snapshot still carries them (they say what it is)
    cheap = {s.name: s for s in rbd.snaps('volumes', 'volume-1', children=False)}
    assert cheap[used].children == [Ref('images', 'child')] and cheap['keep'].children == []
    # a name finds only a user snapshot
    assert rbd.snap('volumes', 'volume-1', trashed) is None
    assert rbd.create_snap(Ref('volumes', 'volume-1', 'x.upload_snap')) is True  # the trash one is not in the way
    # removing the name again removes the new snapshot and completes the interrupted removal; one with clones stays
    assert rbd.remove_snaps(Ref('volumes', 'volume-1'), ['x.upload_snap', 'used']) == ['x.upload_snap']
    assert sorted(s.name for s in rbd.snaps('volumes', 'volume-1')) == sorted(['keep', used])
    # by its generated name (what the audit lists) too
    again = cluster.trash_snap('volumes', 'volume-1', 'keep')
    assert rbd.remove_snap(Ref('volumes', 'volume-1', again)) is True
    assert rbd.remove_snap(Ref('volumes', 'volume-1', again)) is False
    assert [s.name for s in rbd.snaps('volumes', 'volume-1')] == [used]
    assert cluster.open_images == []


def test_release_parent_refs_completes_an_interrupted_removal(cluster, rbd):
    cluster.create('volumes', 'volume-1', 4096)
    ours = Ref('volumes', 'volume-1', clone_snap_name(IMG))
    rbd.create_snap(ours)
    cluster.trash_snap('volumes', 'volume-1', ours.snap)
    logged = []
    assert rbd.release_parent_refs(ours, logged.append) == [str(ours)]
    assert rbd.snaps('volumes', 'volume-1') == [] and logged == ['completed the removal of snapshot %s' % ours]
    assert rbd.release_parent_refs(ours) == []
