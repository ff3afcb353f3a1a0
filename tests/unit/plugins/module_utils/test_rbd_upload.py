# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the rbd_image_clone_upload planner (_rbd_upload): path choice and why, volume and
image checks, the steps left for every partial state (resume after an interruption), absent and
cleanup decisions."""

from __future__ import annotations

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.glance import Store, Stores
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.rbd import Ref, SnapInfo
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.upload_plan import (
    CLONE_STEPS,
    COPY_STEPS,
    NEW_IMAGE,
    PATH_PROPERTY,
    SOURCE_PROPERTY,
    Candidate,
    CephState,
    Request,
    Volume,
    check_existing_image,
    check_volume,
    choose_path,
    classify_candidate,
    parse_our_snap,
    plan_absent,
    plan_present,
    source_key,
)

FSID = '6a1b2c3d-0000-4000-8000-00000000f51d'
OTHER_FSID = 'ffffffff-0000-4000-8000-00000000f51d'
IMG = '0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f'
RBD_STORE = Store('rbd', True, 'rbd', 'images', FSID, True)
FILE_STORE = Store('file', False, 'file')
STORES = Stores([RBD_STORE, FILE_STORE], True)


def volume(**kw):
    base = dict(pool='volumes', image='volume-1', fsid=FSID, size=1 << 30, cinder_id='1', status='available')
    base.update(kw)
    return Volume(**base)


def request(**kw):
    base = dict(optimization=True, image_name='img')
    base.update(kw)
    return Request(**base)


def ours(status='queued', path='clone', **kw):
    image = {'id': IMG, 'status': status, 'name': 'img', 'disk_format': 'raw', 'container_format': 'bare',
             SOURCE_PROPERTY: volume().key, PATH_PROPERTY: path}
    image.update(kw)
    return image


# -- path choice -------------------------------------------------------------------------------

@pytest.mark.parametrize('optimization, stores, store, fsid, path, why', [
    (False, STORES, RBD_STORE, FSID, 'copy', 'enable_clone_optimization is false'),
    (True, STORES, RBD_STORE, FSID, 'clone', 'is rbd (pool images) on the volume\'s cluster'),
    (True, STORES, FILE_STORE, FSID, 'copy', 'store file is of type file, not rbd'),
    (True, STORES, RBD_STORE, OTHER_FSID, 'copy', 'cannot cross clusters'),
    (True, STORES, Store('rbd', True, 'rbd', 'images', None), FSID, 'copy', 'does not report the cluster fsid'),
    (True, STORES, Store('rbd', True, 'rbd', None, FSID), FSID, 'copy', 'does not report the pool'),
    (True, Stores([Store('rbd', True)], False, 'HTTP 403'), Store('rbd', True), FSID, 'copy',
     'type of Glance store rbd is unknown (HTTP 403'),
    (True, Stores([], False, 'HTTP 404'), None, FSID, 'copy', 'Glance names no target store (HTTP 404)'),
])
def test_choose_path(optimization, stores, store, fsid, path, why):
    chosen, reason = choose_path(optimization, stores, store, fsid)
    assert chosen == path
    assert why in reason


def test_choose_path_fsid_case_insensitive():
    assert choose_path(True, STORES, Store('rbd', True, 'rbd', 'images', FSID.upper()), FSID)[0] == 'clone'


def test_stores_pick():
    assert STORES.pick(None) is RBD_STORE
    assert STORES.pick('file') is FILE_STORE
    with pytest.raises(VolsnapError, match='Glance has no store s3 .it has: rbd, file'):
        STORES.pick('s3')
    assert Stores([FILE_STORE], True).pick(None) is None


# -- volume checks -------------------------------------------------------------------------------

@pytest.mark.parametrize('kw, force, message', [
    (dict(exists=False), False, 'does not exist: check volume_pool'),
    (dict(encrypted=True), False, 'is encrypted'),
    (dict(status='in-use'), False, 'is in-use .attached.* set force=true'),
    (dict(status='error'), True, 'is in status error'),
    (dict(status='creating'), True, 'is in status creating'),
    (dict(status='uploading'), False, 'is in status uploading'),
    (dict(status='maintenance'), False, 'in status maintenance'),
    (dict(status=None, cinder_id=None, watchers=1), False, 'RBD image volumes/volume-1 is open by 1 client'),
])
def test_check_volume_refuses(kw, force, message):
    with pytest.raises(VolsnapError, match=message):
        check_volume(volume(**kw), force)


@pytest.mark.parametrize('kw, force', [
    (dict(), False),
    (dict(status='in-use'), True),
    (dict(status=None, cinder_id=None, watchers=1), True),
    (dict(status=None, cinder_id=None, watchers=0), False),
])
def test_check_volume_accepts(kw, force):
    check_volume(volume(**kw), force)


# -- existing image checks ---------------------------------------------------------------------------

def test_existing_image_actions():
    vol = volume()
    assert check_existing_image(ours('queued'), vol, False) == 'fill'
    assert check_existing_image({'id': IMG, 'status': 'queued'}, vol, True) == 'fill'
    assert check_existing_image(ours('active'), vol, False) == 'done'


@pytest.mark.parametrize('image, message', [
    ({'id': IMG, 'status': 'active'}, 'is active and was not made from Cinder volume 1'),
    ({'id': IMG, 'status': 'saving'}, 'in status saving: data is being written'),
    ({'id': IMG, 'status': 'importing'}, 'in status importing'),
    ({'id': IMG, 'status': 'killed'}, 'in status killed, not queued'),
    ({'id': IMG, 'status': 'deactivated'}, 'in status deactivated'),
    ({'id': IMG, 'status': 'queued', 'disk_format': 'qcow2', 'container_format': 'bare'}, 'must be raw/bare'),
    ({'id': IMG, 'status': 'queued', SOURCE_PROPERTY: 'x/y/z'}, 'being filled from another source'),
])
def test_existing_image_refused(image, message):
    with pytest.raises(VolsnapError, match=message):
        check_existing_image(image, volume(), True)


# -- plans -------------------------------------------------------------------------------------

def test_new_image_clone_plan_has_every_step_in_order():
    plan = plan_present(request(), volume(), STORES, RBD_STORE, None, CephState())
    assert plan.path == 'clone'
    assert plan.names() == ['check_caps', 'create_image', 'snapshot_volume', 'protect_volume_snapshot', 'clone',
                            'snapshot_clone', 'protect_clone_snapshot', 'register_location', 'wait_active']
    assert plan.location == 'rbd://%s/images/<new image id>/snap' % FSID
    assert plan.properties == {SOURCE_PROPERTY: source_key(FSID, 'volumes', 'volume-1'), PATH_PROPERTY: 'clone'}
    assert plan.changed and not plan.resumed
    assert 'snapshot volumes/volume-1@%s.clone_snap' % NEW_IMAGE in [s.description for s in plan.steps][2]


def test_new_image_copy_plan():
    plan = plan_present(request(optimization=False, properties={'os_distro': 'debian', 'n': 3}), volume(), STORES,
                        RBD_STORE, None, CephState())
    assert plan.path == 'copy' and plan.location is None
    assert plan.names() == ['create_image', 'snapshot_upload', 'upload_data', 'wait_active', 'remove_upload_snapshot']
    assert plan.properties['os_distro'] == 'debian' and plan.properties['n'] == '3'
    assert plan.properties[PATH_PROPERTY] == 'copy'


def snap(protected=True, children=()):
    return SnapInfo('x', protected, list(children))


@pytest.mark.parametrize('ceph, expected', [
    # killed after create_image
    (CephState(), ['check_caps', 'snapshot_volume', 'protect_volume_snapshot', 'clone', 'snapshot_clone',
                   'protect_clone_snapshot', 'register_location', 'wait_active']),
    # killed after snapshot_volume
    (CephState(volume_snap=snap(False)), ['check_caps', 'protect_volume_snapshot', 'clone', 'snapshot_clone',
                                          'protect_clone_snapshot', 'register_location', 'wait_active']),
    # killed after protect
    (CephState(volume_snap=snap(True)), ['check_caps', 'clone', 'snapshot_clone', 'protect_clone_snapshot',
                                         'register_location', 'wait_active']),
    # killed after clone
    (CephState(volume_snap=snap(True, [Ref('images', IMG)]), clone_exists=True,
               clone_parent=Ref('volumes', 'volume-1', IMG + '.clone_snap')),
     ['snapshot_clone', 'protect_clone_snapshot', 'register_location', 'wait_active']),
    # killed after snapshot_clone
    (CephState(volume_snap=snap(True, [Ref('images', IMG)]), clone_exists=True,
               clone_parent=Ref('volumes', 'volume-1', IMG + '.clone_snap'), clone_snap=snap(False)),
     ['protect_clone_snapshot', 'register_location', 'wait_active']),
    # killed after protect_clone_snapshot (or during register_location)
    (CephState(volume_snap=snap(True, [Ref('images', IMG)]), clone_exists=True,
               clone_parent=Ref('volumes', 'volume-1', IMG + '.clone_snap'), clone_snap=snap(True)),
     ['register_location', 'wait_active']),
])
def test_clone_resume_after_each_step(ceph, expected):
    plan = plan_present(request(), volume(), STORES, RBD_STORE, ours('queued'), ceph)
    assert plan.names() == expected
    assert plan.image_id == IMG
    assert plan.location == 'rbd://%s/images/%s/snap' % (FSID, IMG)
    assert plan.resumed is True


def test_clone_resume_with_leftover_upload_snapshot():
    plan = plan_present(request(), volume(), STORES, RBD_STORE, ours('queued'),
                        CephState(upload_snap=snap(False)))
    assert plan.names()[-1] == 'remove_upload_snapshot'


def test_switch_from_clone_to_copy_discards_the_clone():
    ceph = CephState(volume_snap=snap(True, [Ref('images', IMG)]), clone_exists=True,
                     clone_parent=Ref('volumes', 'volume-1', IMG + '.clone_snap'))
    plan = plan_present(request(optimization=False), volume(), STORES, RBD_STORE, ours('queued', path='clone'), ceph)
    assert plan.names() == ['set_properties', 'discard_clone', 'snapshot_upload', 'upload_data', 'wait_active',
                            'remove_upload_snapshot']


def test_an_interrupted_removal_of_the_upload_snapshot_is_completed_on_a_done_image():
    for path in ('clone', 'copy', 'ceph_copy'):
        plan = plan_present(request(), volume(), STORES, RBD_STORE, ours('active', path=path),
                            CephState(upload_snap_trashed=True))
        assert plan.names() == ['remove_upload_snapshot'], path
    plan = plan_present(request(), volume(), STORES, RBD_STORE, ours('queued'), CephState(upload_snap_trashed=True))
    assert plan.names()[-1] == 'remove_upload_snapshot'


def test_copy_resume_reuses_upload_snapshot():
    plan = plan_present(request(optimization=False), volume(), STORES, RBD_STORE, ours('queued', path='copy'),
                        CephState(upload_snap=snap(False)))
    assert plan.names() == ['upload_data', 'wait_active', 'remove_upload_snapshot']


def test_given_queued_image_gets_properties():
    plan = plan_present(request(image_id=IMG, image_name=None), volume(), STORES, RBD_STORE,
                        {'id': IMG, 'status': 'queued'}, CephState())
    assert plan.names()[:2] == ['check_caps', 'set_properties']
    assert plan.resumed is False


def test_done_image_is_no_change():
    ceph = CephState(volume_snap=snap(True, [Ref('images', IMG)]), clone_exists=True,
                     clone_parent=Ref('volumes', 'volume-1', IMG + '.clone_snap'), clone_snap=snap(True))
    plan = plan_present(request(), volume(), STORES, RBD_STORE, ours('active'), ceph)
    assert not plan.changed
    assert plan.path == 'clone'
    assert plan.location == 'rbd://%s/images/%s/snap' % (FSID, IMG)
    assert 'nothing to do' in plan.why
    # the optimization switched off does not redo a finished image
    plan = plan_present(request(optimization=False), volume(), STORES, RBD_STORE, ours('active'), ceph)
    assert not plan.changed and plan.path == 'clone'


def test_done_copy_image_only_tidies_leftover():
    image = ours('active', path='copy', locations=[{'url': 'file:///var/lib/glance/images/%s' % IMG}])
    plan = plan_present(request(), volume(), STORES, FILE_STORE, image, CephState(upload_snap=snap(False)))
    assert plan.names() == ['remove_upload_snapshot']
    assert plan.location == 'file:///var/lib/glance/images/%s' % IMG


def test_done_flattened_clone_releases_volume_snapshot():
    ceph = CephState(volume_snap=snap(True), clone_exists=True, clone_parent=None, clone_snap=snap(True))
    plan = plan_present(request(), volume(), STORES, RBD_STORE, ours('active'), ceph)
    assert plan.names() == ['release_volume_snapshot']


def test_max_clone_depth_flattens():
    plan = plan_present(request(max_clone_depth=2), volume(depth=2), STORES, RBD_STORE, None, CephState())
    assert plan.names() == ['check_caps', 'create_image', 'snapshot_volume', 'protect_volume_snapshot', 'clone',
                            'flatten_clone', 'snapshot_clone', 'protect_clone_snapshot', 'release_volume_snapshot',
                            'register_location', 'wait_active']
    assert 'flattened' in plan.notes[0]
    plan = plan_present(request(max_clone_depth=3), volume(depth=2), STORES, RBD_STORE, None, CephState())
    assert 'flatten_clone' not in plan.names()
    plan = plan_present(request(max_clone_depth=0), volume(depth=0), STORES, RBD_STORE, None, CephState())
    assert 'flatten_clone' in plan.names()


def test_step_orders_are_complete():
    assert len(set(CLONE_STEPS)) == len(CLONE_STEPS)
    assert len(set(COPY_STEPS)) == len(COPY_STEPS)


def test_plan_refuses_bad_volume_before_anything():
    with pytest.raises(VolsnapError, match='in-use'):
        plan_present(request(), volume(status='in-use'), STORES, RBD_STORE, None, CephState())


# -- absent -------------------------------------------------------------------------------------

PARENT = Ref('volumes', 'volume-1', IMG + '.clone_snap')


def test_absent_plans():
    plan = plan_absent(request(), {'id': IMG, 'status': 'active'}, IMG, PARENT, [], [PARENT])
    assert plan.names() == ['delete_image', 'release_parent']
    plan = plan_absent(request(), None, IMG, None, [], [])
    assert not plan.changed and 'nothing to do' in plan.why
    plan = plan_absent(request(), None, IMG, None, [], [Ref('volumes', 'volume-1.deleted', IMG + '.clone_snap')])
    assert plan.names() == ['release_parent']


def test_absent_with_children():
    child = Ref('volumes', 'volume-2')
    with pytest.raises(VolsnapError, match='has 1 RBD clone.*volumes/volume-2.*flatten_children=true') as info:
        plan_absent(request(), {'id': IMG, 'status': 'active'}, IMG, PARENT, [child], [])
    assert info.value.details['children'] == ['volumes/volume-2']
    plan = plan_absent(request(flatten_children=True), {'id': IMG, 'status': 'active'}, IMG, PARENT, [child], [])
    assert plan.names() == ['flatten_children', 'delete_image', 'release_parent']


# -- cleanup ------------------------------------------------------------------------------------

def test_parse_our_snap():
    assert parse_our_snap(IMG + '.clone_snap') == (IMG, 'clone_snap')
    assert parse_our_snap(IMG + '.upload_snap') == (IMG, 'upload_snap')
    assert parse_our_snap('volume-%s.clone_snap' % IMG) is None  # Cinder's own clone snapshots
    assert parse_our_snap('snapshot-%s' % IMG) is None
    assert parse_our_snap(IMG.upper() + '.clone_snap') is None


@pytest.mark.parametrize('candidate, remove, why', [
    (Candidate(PARENT, IMG, 'clone_snap', 1, 'active', True), False, '1 clone'),
    (Candidate(PARENT, IMG, 'clone_snap', 0, 'queued'), False, 'upload may be in progress'),
    (Candidate(PARENT, IMG, 'upload_snap', 0, 'saving'), False, 'upload may be in progress'),
    (Candidate(PARENT, IMG, 'clone_snap', 0, 'active', True), False, 'still exists'),
    (Candidate(PARENT, IMG, 'clone_snap', 0, None), True, 'no longer exists'),
    (Candidate(PARENT, IMG, 'clone_snap', 0, 'deleted'), True, 'is deleted'),
    (Candidate(PARENT, IMG, 'upload_snap', 0, 'active'), True, 'is active'),
])
def test_classify_candidate(candidate, remove, why):
    decision, reason = classify_candidate(candidate)
    assert decision is remove
    assert why in reason


def test_no_fallback_makes_a_different_cluster_an_error():
    other = Store('rbd', True, 'rbd', 'images', OTHER_FSID)
    with pytest.raises(VolsnapError, match='clone path is not possible and fallback_to_copy is false: Glance store rbd '
                                           'is on Ceph cluster %s, the volume on cluster %s: a copy-on-write clone '
                                           'cannot cross clusters$' % (OTHER_FSID, FSID)):
        plan_present(request(fallback_to_copy=False), volume(), STORES, other, None, CephState())
    with pytest.raises(VolsnapError, match='fallback_to_copy is false: Glance store file is of type file, not rbd$'):
        plan_present(request(fallback_to_copy=False), volume(), STORES, FILE_STORE, None, CephState())
    # without the optimization the copy path is what was asked for
    assert plan_present(request(optimization=False, fallback_to_copy=False), volume(), STORES, other, None,
                        CephState()).path == 'copy'
    assert plan_present(request(), volume(), STORES, other, None, CephState()).path == 'copy'


# -- ceph_copy path (copy_in_cluster) ------------------------------------------------------------

@pytest.mark.parametrize('stores, store, fsid, path, why', [
    (STORES, RBD_STORE, FSID, 'ceph_copy', 'copy_in_cluster is true and Glance store rbd is rbd (pool images)'),
    (STORES, FILE_STORE, FSID, 'copy', 'store file is of type file, not rbd'),
    (STORES, RBD_STORE, OTHER_FSID, 'copy', 'cannot cross clusters'),
    (Stores([], False, 'HTTP 404'), None, FSID, 'copy', 'Glance names no target store (HTTP 404)'),
])
def test_choose_path_copy_in_cluster(stores, store, fsid, path, why):
    chosen, reason = choose_path(False, stores, store, fsid, copy_in_cluster=True)
    assert chosen == path
    assert why in reason


def ceph_copy_request(**kw):
    base = dict(optimization=False, copy_in_cluster=True, checksum_by='module')
    base.update(kw)
    return request(**base)


def test_new_image_ceph_copy_plan_module_hash():
    plan = plan_present(ceph_copy_request(), volume(), STORES, RBD_STORE, None, CephState())
    assert plan.path == 'ceph_copy'
    assert plan.names() == ['check_caps', 'create_image', 'snapshot_upload', 'copy_data', 'snapshot_clone',
                            'protect_clone_snapshot', 'remove_upload_snapshot', 'compute_hash', 'register_location',
                            'wait_active']
    assert plan.location == 'rbd://%s/images/<new image id>/snap' % FSID
    assert plan.properties[PATH_PROPERTY] == 'ceph_copy'
    texts = {s.action: s.description for s in plan.steps}
    assert 'into a new RBD image images/%s' % NEW_IMAGE in texts['copy_data']
    assert 'compute md5 and sha512 of the %d bytes' % (1 << 30) in texts['compute_hash']
    assert 'computed checksum and hash as validation data' in texts['register_location']
    register = [s for s in plan.steps if s.action == 'register_location'][0]
    assert register.args['api'] == 'auto' and register.args['checksum_by'] == 'module'
    assert any('independent of the volume' in note for note in plan.notes)


def test_new_image_ceph_copy_plan_glance_hash():
    plan = plan_present(ceph_copy_request(checksum_by='glance', hash_algo='sha256'), volume(), STORES, RBD_STORE,
                        None, CephState())
    assert 'compute_hash' not in plan.names()
    register = [s for s in plan.steps if s.action == 'register_location'][0]
    assert register.args['api'] == 'locations'
    assert 'Glance computes the checksum and hash in the background' in register.description
    assert any('in the background' in note for note in plan.notes)


def test_ceph_copy_refused_without_fallback():
    with pytest.raises(VolsnapError, match='the ceph_copy path is not possible and fallback_to_copy is false: '
                                           'Glance store file is of type file, not rbd$'):
        plan_present(ceph_copy_request(fallback_to_copy=False), volume(), STORES, FILE_STORE, None, CephState())
    plan = plan_present(ceph_copy_request(), volume(), STORES, FILE_STORE, None, CephState())
    assert plan.path == 'copy' and 'copy_data' not in plan.names()


CLONE_PARENT = Ref('volumes', 'volume-1', IMG + '.clone_snap')
TAIL = ['compute_hash', 'register_location', 'wait_active']


@pytest.mark.parametrize('ceph, expected', [
    # killed after create_image
    (CephState(), ['check_caps', 'snapshot_upload', 'copy_data', 'snapshot_clone', 'protect_clone_snapshot',
                   'remove_upload_snapshot'] + TAIL),
    # killed after snapshot_upload
    (CephState(upload_snap=snap(False)), ['check_caps', 'copy_data', 'snapshot_clone', 'protect_clone_snapshot',
                                          'remove_upload_snapshot'] + TAIL),
    # killed while copying: the copy has no snap yet, it is removed and made again
    (CephState(upload_snap=snap(False), clone_exists=True),
     ['check_caps', 'discard_copy', 'copy_data', 'snapshot_clone', 'protect_clone_snapshot',
      'remove_upload_snapshot'] + TAIL),
    # killed after snapshot_clone
    (CephState(upload_snap=snap(False), clone_exists=True, clone_snap=snap(False)),
     ['protect_clone_snapshot', 'remove_upload_snapshot'] + TAIL),
    # killed after protect_clone_snapshot
    (CephState(upload_snap=snap(False), clone_exists=True, clone_snap=snap(True)),
     ['remove_upload_snapshot'] + TAIL),
    # killed after remove_upload_snapshot, in compute_hash or register_location
    (CephState(clone_exists=True, clone_snap=snap(True)), TAIL),
    # killed inside remove_upload_snapshot: librbd had moved the snapshot to its trash namespace; removed again
    (CephState(clone_exists=True, clone_snap=snap(True), upload_snap_trashed=True),
     ['remove_upload_snapshot'] + TAIL),
    # ... before the copy was made: a new upload snapshot is taken (the trash one is not found by its name)
    (CephState(upload_snap_trashed=True), ['check_caps', 'snapshot_upload', 'copy_data', 'snapshot_clone',
                                           'protect_clone_snapshot', 'remove_upload_snapshot'] + TAIL),
    # an earlier clone-path run left its clone (the user switched paths): it goes first
    (CephState(volume_snap=snap(True, [Ref('images', IMG)]), clone_exists=True, clone_parent=CLONE_PARENT),
     ['check_caps', 'discard_clone', 'snapshot_upload', 'copy_data', 'snapshot_clone', 'protect_clone_snapshot',
      'remove_upload_snapshot'] + TAIL),
    # ... or only its protected volume snapshot
    (CephState(volume_snap=snap(True)),
     ['check_caps', 'release_volume_snapshot', 'snapshot_upload', 'copy_data', 'snapshot_clone',
      'protect_clone_snapshot', 'remove_upload_snapshot'] + TAIL),
])
def test_ceph_copy_resume_after_each_step(ceph, expected):
    plan = plan_present(ceph_copy_request(), volume(), STORES, RBD_STORE, ours('queued', path='ceph_copy'), ceph)
    assert plan.names() == expected
    assert plan.image_id == IMG and plan.location == 'rbd://%s/images/%s/snap' % (FSID, IMG)
    leftover = [s for s in plan.steps if s.action == 'remove_upload_snapshot']
    if leftover:
        assert leftover[0].args['leftover'] is (ceph.clone_snap is not None and ceph.clone_parent is None
                                                and ceph.clone_exists)


def test_ceph_copy_done_is_no_change():
    image = ours('active', path='ceph_copy')
    plan = plan_present(ceph_copy_request(), volume(), STORES, RBD_STORE, image,
                        CephState(clone_exists=True, clone_snap=snap(True)))
    assert plan.path == 'ceph_copy' and not plan.changed
    assert plan.location == 'rbd://%s/images/%s/snap' % (FSID, IMG)
    left = plan_present(ceph_copy_request(), volume(), STORES, RBD_STORE, image,
                        CephState(clone_exists=True, clone_snap=snap(True), upload_snap=snap(False)))
    assert left.names() == ['remove_upload_snapshot']


def test_copy_path_discards_a_ceph_copy_leftover():
    plan = plan_present(request(optimization=False), volume(), STORES, RBD_STORE, ours('queued', path='ceph_copy'),
                        CephState(clone_exists=True, clone_snap=snap(True), upload_snap=snap(False)))
    assert plan.path == 'copy'
    assert plan.names() == ['set_properties', 'discard_copy', 'upload_data', 'wait_active', 'remove_upload_snapshot']
