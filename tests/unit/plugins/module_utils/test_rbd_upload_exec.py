# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the rbd_image_clone_upload executor on fakes (fake_rbd.Cluster, FakeGlance, FakeCinder).

They pin the flow: the steps each path runs, rollback on errors, completion after an interruption,
check mode, and the Ceph state absent/cleanup leave. The same behaviour is exercised against the real
lab in tests/integration/test_rbd_image_clone_upload.py.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.glance import Store, Stores
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.upload import Options, Upload
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils.fake_glance import FakeCinder, FakeGlance
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils.fake_rbd import Cluster

VOL = '11111111-2222-4333-8444-555555555555'
BLOCK = 4096
SIZE = 64 * BLOCK
BLOCKS = {0: b'A' * BLOCK, 7: b'B' * BLOCK, 63: b'C' * BLOCK}


def volume_bytes():
    data = bytearray(SIZE)
    for index, block in BLOCKS.items():
        data[index * BLOCK:(index + 1) * BLOCK] = block
    return bytes(data)


class World(object):
    def __init__(self):
        self.cluster = Cluster(block=BLOCK)
        self.glance = FakeGlance(self.cluster)
        self.cinder = FakeCinder()
        self.cinder.add(VOL, name='data')
        self.cluster.create('volumes', 'volume-%s' % VOL, SIZE, dict(BLOCKS))
        self.logs = []

    def run(self, check_mode=False, **kw):
        base = dict(volume='data', image_name='img', ceph_user='cinder')
        base.update(kw)
        upload = Upload(Options(**base), {}, check_mode, log=self.logs.append)
        return upload.execute(self.glance, self.cinder, self.cluster, self.cluster.lib)

    def snaps(self, pool, name):
        return sorted(self.cluster.get(pool, name).snaps)


@pytest.fixture
def world():
    return World()


def test_clone_path_end_to_end_and_rerun(world):
    out = world.run(enable_clone_optimization=True)
    image_id = out['image_id']
    assert out['changed'] and out['path'] == 'clone'
    assert out['location'] == 'rbd://%s/images/%s/snap' % (world.cluster.fsid, image_id)
    assert out['image']['status'] == 'active'
    assert out['location_api'] == 'locations'
    assert [p.split(':')[0] for p in out['plan']] == ['check_caps', 'create_image', 'snapshot_volume',
                                                      'protect_volume_snapshot', 'clone', 'snapshot_clone',
                                                      'protect_clone_snapshot', 'register_location', 'wait_active']
    clone = world.cluster.get('images', image_id)
    assert clone.parent == ('volumes', 'volume-%s' % VOL, image_id + '.clone_snap')
    assert clone.snaps['snap']['protected']
    assert world.cluster.get('volumes', 'volume-%s' % VOL).snaps[image_id + '.clone_snap']['protected']
    assert world.cluster.objects == {}  # the write probe left nothing
    assert set(out['seconds']['phases']) >= {'clone', 'register_location'} and out['seconds']['ceph'] >= 0
    assert out['diff']['before'] == {'image': None}
    again = world.run(enable_clone_optimization=True)
    assert not again['changed'] and again['image_id'] == image_id and again['path'] == 'clone'
    assert 'diff' not in again


def test_copy_path_data_and_rerun(world):
    out = world.run()
    image_id = out['image_id']
    assert out['path'] == 'copy' and out['changed']
    assert world.glance.data[image_id] == volume_bytes()
    assert out['progress'][-1]['bytes'] == SIZE and out['progress'][-1]['data_bytes_read'] == 3 * BLOCK
    assert world.snaps('volumes', 'volume-%s' % VOL) == []  # temporary snapshot removed
    assert world.glance.images[image_id]['volsnap_upload_path'] == 'copy'
    assert world.glance.images[image_id]['volsnap_source'] == '%s/volumes/volume-%s' % (world.cluster.fsid, VOL)
    assert not world.run()['changed']


def test_check_mode_changes_nothing(world):
    for optimization in (True, False):
        out = world.run(check_mode=True, enable_clone_optimization=optimization)
        assert out['changed'] and out['image_id'] is None and out['plan']
    assert world.glance.images == {}
    assert world.snaps('volumes', 'volume-%s' % VOL) == []
    assert world.cluster.pools['images'] == {}


def test_missing_write_cap_changes_nothing(world):
    world.cluster.read_only_pools.add('images')
    with pytest.raises(VolsnapError) as info:
        world.run(enable_clone_optimization=True)
    assert "client.cinder lacks write access to pool images" in info.value.msg
    assert "osd 'profile rbd pool=images'" in info.value.msg
    assert world.glance.images == {} and world.snaps('volumes', 'volume-%s' % VOL) == []


def test_location_refused_rolls_back(world):
    world.glance.fail['add_location'] = VolsnapError('Glance refused the location both ways')
    with pytest.raises(VolsnapError) as info:
        world.run(enable_clone_optimization=True)
    rolled = info.value.details['rolled_back']
    assert any(r.startswith('clone and snapshots of image') for r in rolled)
    assert any(r.startswith('Glance image') for r in rolled)
    assert info.value.details['steps_done'][-1] == 'protect_clone_snapshot'
    assert world.cluster.pools['images'] == {}
    assert world.snaps('volumes', 'volume-%s' % VOL) == []
    assert all(i['status'] == 'deleted' for i in world.glance.images.values())


def test_upload_failure_rolls_back(world):
    world.glance.fail['upload'] = VolsnapError('uploading failed (HTTP 413)')
    with pytest.raises(VolsnapError, match='HTTP 413'):
        world.run()
    assert world.snaps('volumes', 'volume-%s' % VOL) == []
    assert all(i['status'] == 'deleted' for i in world.glance.images.values())


@pytest.mark.parametrize('step', ['add_location', 'set_properties'])
def test_interrupted_run_is_completed_by_the_next(world, step):
    if step == 'set_properties':
        # killed right after creating the image: simulate by creating it as the module would
        world.glance.create_image('img', 'raw', 'bare', None, {
            'volsnap_source': '%s/volumes/volume-%s' % (world.cluster.fsid, VOL)})
    else:
        world.glance.fail[step] = KeyboardInterrupt()
        with pytest.raises(KeyboardInterrupt):
            world.run(enable_clone_optimization=True)
        # no rollback on an interruption: the clone is there, the image queued
        assert len(world.cluster.pools['images']) == 1
    out = world.run(enable_clone_optimization=True)
    assert out['changed'] and out['resumed'] is True
    assert world.glance.get_image(out['image_id'])['status'] == 'active'
    assert len(world.glance.find_images('img')) == 1
    assert not world.run(enable_clone_optimization=True)['changed']


def test_switch_to_copy_discards_clone_leftovers(world):
    world.glance.fail['add_location'] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        world.run(enable_clone_optimization=True)
    out = world.run(enable_clone_optimization=False)
    assert out['path'] == 'copy' and 'discard_clone' in [p.split(':')[0] for p in out['plan']]
    assert world.cluster.pools['images'] == {}
    assert world.snaps('volumes', 'volume-%s' % VOL) == []
    assert world.glance.data[out['image_id']] == volume_bytes()


def test_refusals(world):
    world.cinder.add('22222222-2222-4333-8444-555555555555', name='busy', status='in-use')
    world.cluster.create('volumes', 'volume-22222222-2222-4333-8444-555555555555', SIZE)
    with pytest.raises(VolsnapError, match='in-use'):
        world.run(volume='busy')
    assert world.run(volume='busy', force=True)['changed']
    with pytest.raises(VolsnapError, match='was not found'):
        world.run(volume='nope')
    with pytest.raises(VolsnapError, match='is not a Glance image id'):
        world.run(image_id='../x', image_name=None)
    with pytest.raises(VolsnapError, match='needs image_name'):
        world.run(image_name=None)
    with pytest.raises(VolsnapError, match='does not exist: omit image_id'):
        world.run(image_id='33333333-2222-4333-8444-555555555555', image_name=None)


def test_fill_given_queued_image(world):
    given = world.glance.create_image('mine', 'raw', 'bare', 'private', {'owner_note': 'x'})
    out = world.run(image_id=given['id'], image_name=None, enable_clone_optimization=True)
    assert out['image_id'] == given['id'] and out['path'] == 'clone'
    assert world.glance.images[given['id']]['volsnap_upload_path'] == 'clone'
    # the same source given as an RBD image is the same image: no change
    assert not world.run(volume=None, rbd_image='volume-%s' % VOL, image_id=given['id'], image_name=None)['changed']
    world.cluster.create('volumes', 'other', SIZE)
    with pytest.raises(VolsnapError, match='is active and was not made from RBD image volumes/other'):
        world.run(volume=None, rbd_image='other', image_id=given['id'], image_name=None)


def test_max_clone_depth_flattens_and_releases(world):
    out = world.run(enable_clone_optimization=True, max_clone_depth=0)
    image_id = out['image_id']
    assert 'flatten_clone' in [p.split(':')[0] for p in out['plan']]
    assert world.cluster.get('images', image_id).parent is None
    assert world.snaps('volumes', 'volume-%s' % VOL) == []
    assert world.cluster.read_all('images', image_id) == BLOCKS
    assert not world.run(enable_clone_optimization=True, max_clone_depth=0)['changed']


def test_absent_after_cinder_deleted_the_volume(world):
    out = world.run(enable_clone_optimization=True)
    image_id = out['image_id']
    # Cinder's delete_volume finds the *.clone_snap snapshot and renames the volume
    world.cluster.lib.RBD().rename(world.cluster.open_ioctx('volumes'), 'volume-%s' % VOL, 'volume-%s.deleted' % VOL)
    del world.cinder.volumes[VOL]
    planned = world.run(check_mode=True, state='absent', volume=None, image_id=image_id, image_name=None)
    assert planned['changed'] and world.glance.get_image(image_id) is not None
    gone = world.run(state='absent', volume=None, image_id=image_id, image_name=None)
    assert gone['removed'] == ['Glance image %s' % image_id, 'volumes/volume-%s.deleted@%s.clone_snap' % (VOL, image_id),
                               'volumes/volume-%s.deleted' % VOL]
    assert world.cluster.pools == {'volumes': {}, 'images': {}}
    assert not world.run(state='absent', volume=None, image_id=image_id, image_name=None)['changed']


def test_absent_by_name_with_live_volume(world):
    out = world.run(enable_clone_optimization=True)
    gone = world.run(state='absent')
    assert gone['image_id'] == out['image_id']
    assert world.snaps('volumes', 'volume-%s' % VOL) == []
    assert list(world.cluster.pools['volumes']) == ['volume-%s' % VOL]


def test_absent_with_children(world):
    out = world.run(enable_clone_optimization=True)
    image_id = out['image_id']
    # Cinder creates a volume from the image: a clone of images/<id>@snap
    world.cluster.lib.RBD().clone(world.cluster.open_ioctx('images'), image_id, 'snap',
                                  world.cluster.open_ioctx('volumes'), 'volume-child')
    with pytest.raises(VolsnapError, match='has 1 RBD clone.*volumes/volume-child'):
        world.run(state='absent', image_id=image_id, image_name=None, volume=None)
    gone = world.run(state='absent', image_id=image_id, image_name=None, volume=None, flatten_children=True)
    assert 'flattened volumes/volume-child' in gone['removed']
    assert world.cluster.read_all('volumes', 'volume-child') == BLOCKS
    assert sorted(world.cluster.pools['volumes']) == ['volume-%s' % VOL, 'volume-child']
    assert world.snaps('volumes', 'volume-%s' % VOL) == []


def test_cleanup_after_glance_deleted_images(world):
    kept = world.run(enable_clone_optimization=True, image_name='kept')
    dropped = world.run(enable_clone_optimization=True, image_name='dropped')
    world.glance.delete_image(dropped['image_id'])  # straight through Glance: the volume snapshot stays
    assert world.snaps('volumes', 'volume-%s' % VOL) == sorted([kept['image_id'] + '.clone_snap',
                                                               dropped['image_id'] + '.clone_snap'])
    planned = world.run(check_mode=True, state='cleanup', volume=None, image_name=None)
    assert planned['changed'] and len(planned['plan']) == 1 and dropped['image_id'] in planned['plan'][0]
    assert any(k['why'].startswith('kept: 1 clone') for k in planned['kept'])
    assert len(world.snaps('volumes', 'volume-%s' % VOL)) == 2
    done = world.run(state='cleanup', volume=None, image_name=None)
    assert done['removed'] == ['volumes/volume-%s@%s.clone_snap' % (VOL, dropped['image_id'])]
    assert world.snaps('volumes', 'volume-%s' % VOL) == [kept['image_id'] + '.clone_snap']
    assert not world.run(state='cleanup', volume=None, image_name=None)['changed']


def test_cleanup_removes_deleted_volume_kept_only_for_the_image(world):
    out = world.run(enable_clone_optimization=True)
    world.cluster.lib.RBD().rename(world.cluster.open_ioctx('volumes'), 'volume-%s' % VOL, 'volume-%s.deleted' % VOL)
    world.glance.delete_image(out['image_id'])
    done = world.run(state='cleanup', volume=None, image_name=None)
    assert done['removed'][-1] == 'volumes/volume-%s.deleted' % VOL
    assert world.cluster.pools == {'volumes': {}, 'images': {}}


def test_store_without_details_copies(world):
    world.glance.stores_answer = Stores([Store('rbd', True)], False, 'GET /v2/info/stores/detail answered HTTP 403')
    out = world.run(enable_clone_optimization=True)
    assert out['path'] == 'copy' and 'HTTP 403' in out['why']


def test_glance_failing_on_the_clone_explains_the_read_cap(world):
    world.glance.fail['add_location'] = VolsnapError('registering the location failed (HTTP 500): Internal Server '
                                                     'Error', status_code=500)
    with pytest.raises(VolsnapError) as info:
        world.run(enable_clone_optimization=True)
    assert "Likely cause: Glance opens the clone" in info.value.msg
    assert "osd 'profile rbd-read-only pool=volumes'" in info.value.msg
    assert world.cluster.pools['images'] == {}
    world.glance.fail['add_location'] = VolsnapError('HTTP 409: conflict', status_code=409)
    with pytest.raises(VolsnapError) as info:
        world.run(enable_clone_optimization=True)
    assert 'Likely cause' not in info.value.msg


def glance_calls_after(world, call):
    calls = world.glance.calls
    return calls[len(calls) - calls[::-1].index(call):]


def test_clone_path_takes_the_active_image_glance_answered_with(world):
    """The JSON-patch API answers with the active image: no polling, and no read of the image after the steps."""
    world.glance.location_api = 'patch'
    out = world.run(enable_clone_optimization=True)
    assert out['location_api'] == 'patch' and out['image']['status'] == 'active'
    assert out['image']['locations'] == [out['location']]
    assert glance_calls_after(world, 'add_location') == []
    assert [p.split(':')[0] for p in out['plan']][-2:] == ['register_location', 'wait_active']


def test_clone_path_reads_the_image_once_after_the_locations_api(world):
    """POST /locations answers nothing: the image is read until active, and that read is the result's image."""
    out = world.run(enable_clone_optimization=True)
    assert out['location_api'] == 'locations' and out['image']['status'] == 'active'
    assert glance_calls_after(world, 'add_location') == ['get_image']


def test_copy_path_reports_the_image_it_waited_for(world):
    out = world.run()
    assert out['image']['status'] == 'active' and out['image']['checksum']
    assert glance_calls_after(world, 'upload') == ['get_image']


def test_given_queued_image_result_is_glance_record_after_the_steps(world):
    """A queued image given by id gets its properties set; the result shows Glance's record after that."""
    image = world.glance.create_image('given', 'raw', 'bare', None, {})
    out = world.run(image_id=image['id'], image_name=None, properties={'os_distro': 'debian'})
    assert out['image']['status'] == 'active' and out['image']['properties']['volsnap_upload_path'] == 'copy'
    assert world.glance.images[image['id']]['os_distro'] == 'debian'


def test_discovery_errors_still_surface(world):
    """The volume lookup fails while Glance is read in the other thread: the volume's error is raised."""
    with pytest.raises(VolsnapError, match='Cinder volume missing was not found'):
        world.run(volume='missing')
    world.glance.fail['stores'] = VolsnapError('listing the Glance stores failed (HTTP 503)')
    with pytest.raises(VolsnapError, match='HTTP 503'):
        world.run()


def test_upload_broken_midway_closes_the_snapshot_it_read(world):
    """Glance drops the connection during the upload: the RBD image being read is closed before the cluster
    connection is (a suspended read left open would hang librados' shutdown when the module exits)."""
    world.glance.fail['upload_midway'] = VolsnapError('uploading the data failed: Connection aborted')
    with pytest.raises(VolsnapError, match='Connection aborted'):
        world.run()
    assert world.cluster.open_images == []
    assert world.snaps('volumes', 'volume-%s' % VOL) == []


def executed(logs):
    """The steps a run logged as it executed them ('rbd_image_clone_upload: <step description>')."""
    prefix = 'rbd_image_clone_upload: '
    return [line[len(prefix):] for line in logs
            if line.startswith(prefix) and re.match(r'^[a-z_]+: ', line[len(prefix):])]


@pytest.mark.parametrize('optimization', [True, False])
def test_check_mode_shows_the_steps_a_run_executes(world, optimization):
    planned = world.run(check_mode=True, enable_clone_optimization=optimization)
    assert world.logs == []
    out = world.run(enable_clone_optimization=optimization)
    assert out['plan'] == planned['plan'] and executed(world.logs) == planned['plan']
    image_id = out['image_id']
    assert '<new image id>' in ' '.join(planned['plan']) and image_id in world.glance.images
    world.logs.clear()
    planned = world.run(check_mode=True, state='absent', image_id=image_id, image_name=None)
    gone = world.run(state='absent', image_id=image_id, image_name=None)
    assert gone['plan'] == planned['plan'] and executed(world.logs) == planned['plan'] and gone['removed']
    assert not world.run(state='absent', image_id=image_id, image_name=None)['changed']


# -- ceph_copy path (copy_in_cluster) ------------------------------------------------------------

def expected_hashes(algo='sha512'):
    import hashlib
    data = volume_bytes()
    return {'checksum': hashlib.md5(data).hexdigest(), 'os_hash_algo': algo,
            'os_hash_value': hashlib.new(algo, data).hexdigest()}


def test_ceph_copy_end_to_end_module_hash_and_rerun(world):
    seen = []
    base = dict(volume='data', image_name='img', ceph_user='cinder', copy_in_cluster=True)
    upload = Upload(Options(**base), {}, False, log=world.logs.append, copy_progress=lambda d, t: seen.append((d, t)))
    out = upload.execute(world.glance, world.cinder, world.cluster, world.cluster.lib)
    image_id = out['image_id']
    assert out['changed'] and out['path'] == 'ceph_copy' and out['checksum_by'] == 'module'
    assert [p.split(':')[0] for p in out['plan']] == ['check_caps', 'create_image', 'snapshot_upload', 'copy_data',
                                                      'snapshot_clone', 'protect_clone_snapshot',
                                                      'remove_upload_snapshot', 'compute_hash', 'register_location',
                                                      'wait_active']
    copy = world.cluster.get('images', image_id)
    assert copy.parent is None and copy.snaps['snap']['protected']  # independent, glance_store's layout
    assert world.cluster.read_all('images', image_id, 'snap') == BLOCKS
    assert world.cluster.created[-1][2] == 23  # glance_store's order (8 MiB objects)
    assert world.snaps('volumes', 'volume-%s' % VOL) == []  # the temporary snapshot is gone
    assert world.glance.registered[-1][3] == expected_hashes()
    assert {k: out['image'][k] for k in ('checksum', 'os_hash_value')} == {
        k: expected_hashes()[k] for k in ('checksum', 'os_hash_value')}
    assert out['copied'] == {'bytes_written': len(BLOCKS) * BLOCK, 'size': SIZE}
    allocated = len(BLOCKS) * BLOCK
    assert (0, allocated) in seen and (allocated, allocated) in seen and (SIZE, SIZE) in seen
    again = world.run(copy_in_cluster=True)
    assert not again['changed'] and again['path'] == 'ceph_copy' and again['image_id'] == image_id


def test_ceph_copy_glance_hash_with_service_role(world):
    world.glance.has_service_role = True
    out = world.run(copy_in_cluster=True)
    assert out['checksum_by'] == 'glance'
    assert 'compute_hash' not in [p.split(':')[0] for p in out['plan']]
    assert world.glance.registered[-1][2:] == ('locations', None)


def test_ceph_copy_refusals(world):
    with pytest.raises(VolsnapError, match='exclude each other'):
        world.run(copy_in_cluster=True, enable_clone_optimization=True)
    with pytest.raises(VolsnapError, match='checksum_by=glance needs location_api=locations or auto'):
        world.run(copy_in_cluster=True, checksum_by='glance', location_api='patch')
    with pytest.raises(VolsnapError, match='hash_algo .nosuch. is not a hash algorithm'):
        world.run(copy_in_cluster=True, hash_algo='nosuch')
    assert world.glance.images == {} and world.cluster.pools['images'] == {}


def test_ceph_copy_location_refused_rolls_back(world):
    world.glance.fail['add_location'] = VolsnapError('Glance refused the location both ways')
    with pytest.raises(VolsnapError) as info:
        world.run(copy_in_cluster=True)
    assert any(r.startswith('copy images/') for r in info.value.details['rolled_back'])
    assert world.cluster.pools['images'] == {}
    assert world.snaps('volumes', 'volume-%s' % VOL) == []
    assert all(i['status'] == 'deleted' for i in world.glance.images.values())


def test_ceph_copy_killed_while_copying_is_completed(world):
    calls = []

    def die(done, total):
        calls.append(done)
        if done:  # after the first chunk: the copy exists without its snap
            raise KeyboardInterrupt()

    base = dict(volume='data', image_name='img', ceph_user='cinder', copy_in_cluster=True)
    with pytest.raises(KeyboardInterrupt):
        Upload(Options(**base), {}, False, copy_progress=die).execute(world.glance, world.cinder, world.cluster,
                                                                      world.cluster.lib)
    (image_id,) = world.glance.images
    assert world.glance.images[image_id]['status'] == 'queued'
    assert 'snap' not in world.cluster.get('images', image_id).snaps
    planned = world.run(check_mode=True, copy_in_cluster=True)
    out = world.run(copy_in_cluster=True)
    assert out['plan'] == planned['plan'] and out['resumed']
    assert [p.split(':')[0] for p in out['plan']][:3] == ['check_caps', 'discard_copy', 'copy_data']
    assert world.cluster.read_all('images', image_id, 'snap') == BLOCKS
    assert world.glance.get_image(image_id)['status'] == 'active'
    assert world.snaps('volumes', 'volume-%s' % VOL) == []


def test_ceph_copy_check_mode_shows_the_steps_a_run_executes(world):
    planned = world.run(check_mode=True, copy_in_cluster=True)
    assert world.logs == [] and world.glance.images == {}
    out = world.run(copy_in_cluster=True)
    assert out['plan'] == planned['plan'] and executed(world.logs) == planned['plan']


def test_ceph_copy_falls_back_to_the_glance_copy_on_another_cluster(world):
    world.glance.stores_answer = Stores([Store('rbd', True, 'rbd', 'images', 'ffffffff-0000-4000-8000-00000000f51d',
                                               True)], True)
    out = world.run(copy_in_cluster=True)
    assert out['path'] == 'copy' and 'cannot cross clusters' in out['why']
    assert world.glance.data[out['image_id']] == volume_bytes()
    with pytest.raises(VolsnapError, match='the ceph_copy path is not possible and fallback_to_copy is false'):
        world.run(copy_in_cluster=True, fallback_to_copy=False, image_name='other')


def test_absent_after_a_ceph_copy_run_killed_before_the_location_removes_the_copy(world):
    world.glance.fail['add_location'] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        world.run(copy_in_cluster=True)
    (image_id,) = world.glance.images
    assert world.glance.images[image_id]['status'] == 'queued' and image_id in world.cluster.pools['images']
    planned = world.run(check_mode=True, state='absent', image_id=image_id, image_name=None)
    assert [p.split(':')[0] for p in planned['plan']] == ['delete_image', 'discard_copy']
    assert image_id in world.cluster.pools['images']
    gone = world.run(state='absent', image_id=image_id, image_name=None)
    assert gone['plan'] == planned['plan'] and 'images/%s' % image_id in gone['removed']
    assert world.cluster.pools['images'] == {} and world.snaps('volumes', 'volume-%s' % VOL) == []
    assert not world.run(state='absent', image_id=image_id, image_name=None)['changed']


def test_ceph_copy_progress_reaches_the_operation_record(world, tmp_path):
    """Without a copy_progress callback, the copy and the hash report their bytes into the running operation's
    progress record (what operation_info reads): kind upload_ceph_copy, the image id, 100 % at the end."""
    from ansible_collections.volsnap.openstack.plugins.module_utils._base import progress

    seen = []
    base = dict(volume='data', image_name='img', ceph_user='cinder', copy_in_cluster=True)
    with progress.recording(str(tmp_path / 'progress'), 'upload', 'rbd_image_clone_upload', {'volume': 'data'}) as rec:
        original = rec.bytes

        def spy(done, total):
            seen.append((rec.record['step_description'].split(':')[0], done, total))
            original(done, total)

        rec.bytes = spy
        out = Upload(Options(**base), {}, False).execute(world.glance, world.cinder, world.cluster, world.cluster.lib)
    (name,) = os.listdir(str(tmp_path / 'progress'))
    with open(str(tmp_path / 'progress' / name)) as handle:
        record = json.load(handle)
    assert record['kind'] == 'upload_ceph_copy' and record['targets']['image_id'] == out['image_id']
    assert record['state'] == 'done' and record['percent'] == 100.0
    allocated = len(BLOCKS) * BLOCK
    assert ('copy_data', allocated, allocated) in seen and ('compute_hash', SIZE, SIZE) in seen


def test_an_interrupted_removal_of_an_upload_snapshot_is_completed_unless_clones_use_it(world):
    out = world.run()  # the copy path: its upload snapshot is removed at the end
    image_id = out['image_id']
    upload_snap = '%s.upload_snap' % image_id
    volume = 'volume-%s' % VOL
    world.cluster.lib.Image(world.cluster.open_ioctx('volumes'), volume).create_snap(upload_snap)
    trashed = world.cluster.trash_snap('volumes', volume, upload_snap)  # a removal killed after librbd's first step
    again = world.run()
    assert again['changed'] and [p.split(':')[0] for p in again['plan']] == ['remove_upload_snapshot']
    assert world.snaps('volumes', volume) == []
    assert not world.run()['changed']
    # one clones still use (librbd keeps it until the last goes) is left alone, and a rerun does not plan it again
    image = world.cluster.lib.Image(world.cluster.open_ioctx('volumes'), volume)
    image.create_snap(upload_snap)
    image.protect_snap(upload_snap)
    world.cluster.lib.RBD().clone(world.cluster.open_ioctx('volumes'), volume, upload_snap,
                                  world.cluster.open_ioctx('volumes'), 'volume-user-clone')
    trashed = world.cluster.trash_snap('volumes', volume, upload_snap)
    for _run in range(2):
        assert not world.run()['changed']
        gone = world.run(check_mode=True, state='absent', image_id=image_id, image_name=None)
        assert not [p for p in gone['plan'] if upload_snap in p], gone['plan']
    assert world.snaps('volumes', volume) == [trashed]
