"""rbd_image_clone_upload against the real lab: Ceph (librbd), Cinder's RBD driver and Glance.

Everything goes through real services: volumes are created and deleted by Cinder, images by
Glance, the module runs through ansible-playbook with the lab's Python (openstacksdk + Debian's
rados/rbd bindings). The data written into a volume's RBD image (with librbd, as a guest would
write it) is compared with the bytes Glance serves for the image.

Covered: both paths (copy with the optimization off and with a file store; clone), spec 003's
two dependency scenarios, data equality, rerun without change, check mode, the missing write cap
on Glance's pool (a restricted cephx user made for the test), refused volume and image states, an
interrupted clone-path run completed by the next run, a copy-path run killed (SIGKILL) during the
upload completed by the next run, state=absent and state=cleanup.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import pytest
from openstack import exceptions as sdk_exceptions

from ansible_run import collections_path, run_module, run_tasks
from openstack_helpers import interrupt_snap_removal, rbd_all_snaps, rbd_sha256

MODULE = 'volsnap.openstack.rbd_image_clone_upload'
GIB = 1 << 30
MIB = 1 << 20
# (offset, length, seed): what the tests write into a 1 GiB volume; the rest stays unallocated
PATTERN = [(0, 1 * MIB, 1), (300 * MIB + 4096, 3 * MIB + 17, 2), (GIB - 2 * MIB, 2 * MIB, 3)]
RBD_TOOL = r'''
import hashlib, json, sys
import rados, rbd
a = json.loads(sys.argv[1])
def pattern(length, seed):
    out = bytearray()
    i = 0
    while len(out) < length:
        out += hashlib.sha256(b"%d-%d" % (seed, i)).digest()
        i += 1
    return bytes(out[:length])
with rados.Rados(conffile=a["conf"], rados_id="admin", conf={"keyring": a["keyring"]}) as cluster:
    with cluster.open_ioctx(a["pool"]) as ioctx:
        if a["op"] == "write":
            with rbd.Image(ioctx, a["image"]) as img:
                for off, length, seed in a["writes"]:
                    img.write(pattern(length, seed), off)
            print(json.dumps({"ok": True}))
        elif a["op"] == "info":
            names = rbd.RBD().list(ioctx)
            out = {}
            for name in names:
                if a.get("prefix") and not name.startswith(a["prefix"]):
                    continue
                with rbd.Image(ioctx, name, read_only=True) as img:
                    snaps = []
                    for s in img.list_snaps():
                        if s.get("namespace", 0) != 0:  # as rbd snap ls: user snapshots only
                            continue
                        img.set_snap(s["name"])
                        children = ["%s/%s" % (c["pool"], c["image"]) for c in img.list_children2()]
                        img.set_snap(None)
                        snaps.append({"name": s["name"], "protected": img.is_protected_snap(s["name"]),
                                      "children": children})
                    try:
                        parent = "%s/%s@%s" % tuple(img.parent_info())
                    except rbd.ImageNotFound:
                        parent = None
                out[name] = {"snaps": snaps, "parent": parent}
            print(json.dumps(out))
'''


def pattern(length: int, seed: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < length:
        out += hashlib.sha256(b'%d-%d' % (seed, i)).digest()
        i += 1
    return bytes(out[:length])


def expected_sha256(size: int, writes: Iterable[Tuple[int, int, int]]) -> str:
    """sha256 of a ``size``-byte volume that is zero except for ``writes``."""
    h = hashlib.sha256()
    pos = 0
    zeros = bytes(8 * MIB)
    for off, length, seed in sorted(writes):
        while pos < off:
            n = min(len(zeros), off - pos)
            h.update(zeros[:n])
            pos += n
        h.update(pattern(length, seed))
        pos = off + length
    while pos < size:
        n = min(len(zeros), size - pos)
        h.update(zeros[:n])
        pos += n
    return h.hexdigest()


EXPECTED = expected_sha256(GIB, PATTERN)


class Lab(object):
    """The lab's Ceph and OpenStack, with the helpers the tests share; removes what a test made."""

    def __init__(self, ceph: Any, stack: Any, workdir: Path, through_ansible: bool = False) -> None:
        self.ceph = ceph
        # True: every module run is a real ansible-playbook play; False: the module's code path run directly
        self.through_ansible = through_ansible
        self.stack = stack
        self.workdir = workdir
        self.conn = stack.connection()
        self.volumes: List[str] = []
        self.images: List[str] = []
        self.tag = uuid.uuid4().hex[:8]
        self.runs = 0

    # -- librbd as admin (the lab's Python has the bindings) --------------------------------
    def rbd_tool(self, **args: Any) -> Any:
        args.setdefault('conf', self.ceph.conf)
        args.setdefault('keyring', self.ceph.admin_keyring)
        proc = subprocess.run([self.stack.python, '-c', RBD_TOOL, json.dumps(args)], capture_output=True, text=True,
                              timeout=600, check=False)
        if proc.returncode != 0:
            raise AssertionError('rbd helper failed (%s): %s' % (args.get('op'), proc.stderr[-3000:]))
        return json.loads(proc.stdout)

    def pool_info(self, pool: str, prefix: Optional[str] = None) -> Dict[str, Any]:
        return self.rbd_tool(op='info', pool=pool, prefix=prefix)

    def volume_sha(self, volume_id: str) -> str:
        return rbd_sha256(self.stack, self.ceph, 'volume-%s' % volume_id)

    # -- Cinder ------------------------------------------------------------------------------
    def create_volume(self, size_gib: int = 1, image_id: Optional[str] = None, write: bool = True) -> str:
        bs = self.conn.block_storage
        vol = bs.create_volume(size=size_gib, name='rbdup-%s-%d' % (self.tag, len(self.volumes)),
                               volume_type=self.stack.volume_type, image_id=image_id)
        self.volumes.append(vol.id)
        vol = bs.wait_for_status(vol, status='available', failures=['error'], interval=0.25, wait=300)
        if write:
            self.rbd_tool(op='write', pool=self.ceph.volumes_pool, image='volume-%s' % vol.id, writes=PATTERN)
        return vol.id

    def find_volume(self, volume_id: str) -> Any:
        """The volume, or None when Cinder no longer has it."""
        try:
            return self.conn.block_storage.get_volume(volume_id)
        except sdk_exceptions.NotFoundException:
            return None

    def delete_volume(self, volume_id: str) -> None:
        bs = self.conn.block_storage
        bs.delete_volume(volume_id)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            vol = self.find_volume(volume_id)
            if vol is None:
                return
            assert vol.status not in ('error_deleting', 'error'), 'Cinder could not delete volume %s: %s' % (
                volume_id, vol.status)
            time.sleep(0.25)
        raise AssertionError('volume %s still exists after 300 s' % volume_id)

    def attach(self, volume_id: str) -> str:
        """Attach the volume to a made-up instance with Cinder's legacy attach calls (no Nova in the lab)."""
        bs = self.conn.block_storage
        for body in ({'os-reserve': None}, {'os-attach': {'instance_uuid': str(uuid.uuid4()), 'mountpoint': '/dev/vdb'}}):
            resp = bs.post('/volumes/%s/action' % volume_id, json=body, raise_exc=False)
            assert resp.status_code == 202, resp.text
        vol = bs.wait_for_status(bs.get_volume(volume_id), status='in-use', failures=['error'], interval=0.25, wait=60)
        return vol.attachments[0]['attachment_id']

    def detach(self, volume_id: str, attachment_id: str) -> None:
        bs = self.conn.block_storage
        resp = bs.post('/volumes/%s/action' % volume_id, json={'os-detach': {'attachment_id': attachment_id}},
                       raise_exc=False)
        assert resp.status_code == 202, resp.text
        bs.wait_for_status(bs.get_volume(volume_id), status='available', failures=['error'], interval=0.25, wait=60)

    def volume_status(self, volume_id: str) -> str:
        return self.conn.block_storage.get_volume(volume_id).status

    # -- Glance ------------------------------------------------------------------------------
    def image(self, image_id: str) -> Optional[Dict[str, Any]]:
        resp = self.conn.image.get('/images/%s' % image_id, raise_exc=False)
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, resp.text
        return resp.json()

    def image_sha(self, image_id: str) -> Tuple[str, int]:
        resp = self.conn.image.get('/images/%s/file' % image_id, stream=True, raise_exc=False)
        assert resp.status_code == 200, 'download of image %s: HTTP %s %s' % (image_id, resp.status_code,
                                                                              resp.text[:500])
        h = hashlib.sha256()
        size = 0
        for chunk in resp.iter_content(8 * MIB):
            h.update(chunk)
            size += len(chunk)
        return h.hexdigest(), size

    def delete_image(self, image_id: str) -> int:
        """DELETE through Glance's API; returns the HTTP status."""
        return self.conn.image.delete('/images/%s' % image_id, raise_exc=False).status_code

    def images_named(self, name: str) -> List[Dict[str, Any]]:
        resp = self.conn.image.get('/images', params={'name': name}, raise_exc=False)
        assert resp.status_code == 200, resp.text
        return resp.json()['images']

    # -- the module --------------------------------------------------------------------------
    def args(self, **kw: Any) -> Dict[str, Any]:
        base = {'cloud': self.stack.cloud, 'ceph_conf': self.ceph.conf, 'ceph_user': self.ceph.cinder_user,
                'keyring': self.ceph.cinder_keyring, 'volume_pool': self.ceph.volumes_pool}
        base.update(kw)
        return base

    def _play(self, check: bool, diff: bool, ignore_errors: bool, kw: Dict[str, Any]) -> Tuple[int, Any, str]:
        self.runs += 1
        work = self.workdir / ('run%d' % self.runs)
        work.mkdir()
        if not self.through_ansible:
            # the module's own code path, run directly with the lab's Python (ansible_run.run_module)
            out = run_module(work, MODULE.rsplit('.', 1)[-1], self.args(**kw), check=check, diff=diff,
                             python=self.stack.python, env_extra=self.stack.env())
            if out.get('image_id'):
                self.images.append(out['image_id'])
            return (1 if out.get('failed') and not ignore_errors else 0), out, json.dumps(out, indent=1)
        task: Dict[str, Any] = {'name': 'upload', MODULE: self.args(**kw), 'register': 'out'}
        if ignore_errors:
            task['ignore_errors'] = True
        res = run_tasks(work, [task], ['out'], check=check, diff=diff, python=self.stack.python,
                        env_extra=self.stack.env())
        out = res.results.get('out')
        if out is None:
            raise AssertionError('the module left no result (rc %s):\n%s' % (res.rc, res.output[-6000:]))
        if out.get('image_id'):
            self.images.append(out['image_id'])
        return res.rc, out, res.output

    def run(self, check: bool = False, diff: bool = False, **kw: Any) -> Dict[str, Any]:
        """Run the module; it must succeed. Returns its result."""
        rc, out, output = self._play(check, diff, False, kw)
        assert rc == 0 and not out.get('failed'), output[-6000:]
        return out

    def fail(self, **kw: Any) -> Dict[str, Any]:
        """Run the module; it must fail. Returns its result (msg...)."""
        rc, out, output = self._play(False, False, True, kw)
        assert out.get('failed'), 'the module did not fail:\n%s' % output[-6000:]
        return out

    def cleanup(self) -> List[str]:
        problems = []
        for image_id in self.images:
            if self.image(image_id) is not None:
                # volumes cloned from it go first (below); try now and again after them
                self.delete_image(image_id)
        for volume_id in reversed(self.volumes):
            try:
                if self.find_volume(volume_id) is not None:
                    self.delete_volume(volume_id)
            except Exception as exc:  # keep cleaning
                problems.append('volume %s: %s' % (volume_id, exc))
        for image_id in self.images:
            if self.image(image_id) is not None and self.delete_image(image_id) not in (204, 404):
                problems.append('image %s could not be deleted' % image_id)
        return problems


def glance_caps(ceph: Any) -> Dict[str, str]:
    """The cephx caps of Glance's Ceph user (``{'mon': ..., 'osd': ...}``)."""
    return dict(json.loads(ceph.ceph('auth', 'get', 'client.%s' % ceph.glance_user, '--format', 'json'))[0]['caps'])


def set_glance_caps(ceph: Any, caps: Dict[str, str]) -> None:
    args: List[str] = []
    for kind, value in sorted(caps.items()):
        args += [kind, value]
    ceph.ceph('auth', 'caps', 'client.%s' % ceph.glance_user, *args)


# These tests run the module through real ansible-playbook; the others run its code path directly (the module is
# also run by ansible-playbook in test_operator_playbooks.py, through playbooks/upload_volume_to_image.yml).
THROUGH_ANSIBLE = {'test_copy_path_data_rerun_and_check_mode', 'test_clone_path_data_rerun_check_mode'}


@pytest.fixture
def lab(ceph_lab: Any, openstack_lab: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    helper = Lab(ceph_lab, openstack_lab, tmp_path, through_ansible=request.node.name in THROUGH_ANSIBLE)
    yield helper
    problems = helper.cleanup()
    # whatever the test left in Ceph for its images is released the supported way
    helper.run(state='cleanup')
    assert not problems, problems


def ours_in(info: Dict[str, Any], image_id: str) -> List[str]:
    """Names of snapshots/images in a pool listing that belong to image ``image_id``."""
    found = []
    for name, meta in info.items():
        if image_id in name:
            found.append(name)
        found += ['%s@%s' % (name, s['name']) for s in meta['snaps'] if image_id in s['name']]
    return found


# ---------------------------------------------------------------------------------------------

def test_copy_path_data_rerun_and_check_mode(lab: Any) -> None:
    vol = lab.create_volume()
    assert lab.volume_sha(vol) == EXPECTED
    name = 'rbdup-copy-%s' % lab.tag

    planned = lab.run(check=True, volume=vol, image_name=name)
    assert planned['changed'] is True and planned['path'] == 'copy'
    assert 'enable_clone_optimization is false' in planned['why']
    assert [s.split(':')[0] for s in planned['plan']] == ['create_image', 'snapshot_upload', 'upload_data',
                                                          'wait_active', 'remove_upload_snapshot']
    assert lab.images_named(name) == []
    assert ours_in(lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol), '') == ['volume-%s' % vol]

    out = lab.run(volume=vol, image_name=name)
    assert out['changed'] is True and out['path'] == 'copy'
    assert out['image']['status'] == 'active'
    assert out['progress'][-1]['bytes'] == GIB and out['progress'][-1]['percent'] == 100.0
    assert out['progress'][-1]['data_bytes_read'] < GIB  # holes were not read
    assert set(out['seconds']['phases']) >= {'create_image', 'snapshot_upload', 'upload_data', 'wait_active'}
    image_id = out['image_id']
    assert lab.image_sha(image_id) == (EXPECTED, GIB)
    image = lab.image(image_id)
    assert image['checksum'] and image['os_hash_value']  # Glance hashed the data it stored
    assert image['volsnap_upload_path'] == 'copy'
    # the temporary snapshot is gone
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps'] == []

    again = lab.run(volume=vol, image_name=name)
    assert again['changed'] is False and again['image_id'] == image_id and again['plan'] == []
    checked = lab.run(check=True, volume=vol, image_name=name)
    assert checked['changed'] is False


def test_file_store_takes_the_copy_path(lab: Any) -> None:
    vol = lab.create_volume()
    refused = lab.fail(volume=vol, image_name='rbdup-file-%s' % lab.tag, store='file', enable_clone_optimization=True,
                       fallback_to_copy=False)
    assert 'fallback_to_copy is false: Glance store file is of type file, not rbd' in refused['msg']
    assert lab.images_named('rbdup-file-%s' % lab.tag) == []
    out = lab.run(volume=vol, image_name='rbdup-file-%s' % lab.tag, store='file', enable_clone_optimization=True)
    assert out['path'] == 'copy'
    assert 'of type file, not rbd' in out['why']
    assert out['store']['type'] == 'file'
    assert lab.image_sha(out['image_id']) == (EXPECTED, GIB)


def test_clone_path_data_rerun_check_mode(lab: Any) -> None:
    vol = lab.create_volume()
    name = 'rbdup-clone-%s' % lab.tag
    planned = lab.run(check=True, diff=True, volume=vol, image_name=name, enable_clone_optimization=True)
    assert planned['changed'] is True and planned['path'] == 'clone'
    assert planned['location'] == 'rbd://%s/%s/<new image id>/snap' % (lab.ceph.fsid, lab.ceph.images_pool)
    assert lab.images_named(name) == []
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps'] == []

    out = lab.run(volume=vol, image_name=name, enable_clone_optimization=True,
                  properties={'os_distro': 'debian', 'hw_disk_bus': 'scsi'}, visibility='private')
    assert out['changed'] is True and out['path'] == 'clone'
    assert 'is rbd (pool %s)' % lab.ceph.images_pool in out['why']
    image_id = out['image_id']
    assert out['location'] == 'rbd://%s/%s/%s/snap' % (lab.ceph.fsid, lab.ceph.images_pool, image_id)
    assert out['image']['status'] == 'active'
    assert out['location_api'] in ('locations', 'patch')
    assert out['seconds']['ceph'] > 0 and 'clone' in out['seconds']['phases']

    # Ceph holds exactly glance_store's layout on a clone of the volume's snapshot
    images = lab.pool_info(lab.ceph.images_pool, image_id)
    assert images[image_id]['parent'] == '%s/volume-%s@%s.clone_snap' % (lab.ceph.volumes_pool, vol, image_id)
    assert images[image_id]['snaps'] == [{'name': 'snap', 'protected': True, 'children': []}]
    volume_snaps = lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps']
    assert volume_snaps == [{'name': '%s.clone_snap' % image_id, 'protected': True,
                             'children': ['%s/%s' % (lab.ceph.images_pool, image_id)]}]

    image = lab.image(image_id)
    assert image['os_distro'] == 'debian' and image['visibility'] == 'private'
    assert image['size'] == GIB
    assert lab.image_sha(image_id) == (EXPECTED, GIB)
    # the image is a point-in-time copy: writing to the volume afterwards does not change it
    lab.rbd_tool(op='write', pool=lab.ceph.volumes_pool, image='volume-%s' % vol, writes=[(0, 4096, 99)])
    assert lab.image_sha(image_id) == (EXPECTED, GIB)

    again = lab.run(volume=vol, image_name=name, enable_clone_optimization=True)
    assert again['changed'] is False and again['image_id'] == image_id and again['path'] == 'clone'
    checked = lab.run(check=True, volume=vol, image_name=name, enable_clone_optimization=True)
    assert checked['changed'] is False


def test_an_interrupted_removal_of_the_upload_snapshot_is_completed(lab: Any) -> None:
    """A run killed inside the removal of <volume>@<image id>.upload_snap (librbd moved it to its trash namespace
    under a generated name, then the kill): the next run is not stopped by it and completes the removal."""
    vol = lab.create_volume()
    name = 'rbdup-trashsnap-%s' % lab.tag
    image = 'volume-%s' % vol
    out = lab.run(volume=vol, image_name=name, copy_in_cluster=True, checksum_by='module')
    image_id = out['image_id']
    assert out['path'] == 'ceph_copy'
    trashed = interrupt_snap_removal(lab.stack, lab.ceph, lab.ceph.volumes_pool, image, image_id + '.upload_snap')
    assert rbd_all_snaps(lab.stack, lab.ceph, lab.ceph.volumes_pool, image) == [(trashed, 2)]

    planned = lab.run(check=True, volume=vol, image_name=name, copy_in_cluster=True, checksum_by='module')
    assert planned['changed'] is True and planned['image_id'] == image_id
    assert planned['plan'] == ['remove_upload_snapshot: remove leftover snapshot %s/%s@%s.upload_snap' % (
        lab.ceph.volumes_pool, image, image_id)], planned['plan']
    assert rbd_all_snaps(lab.stack, lab.ceph, lab.ceph.volumes_pool, image) == [(trashed, 2)]
    done = lab.run(volume=vol, image_name=name, copy_in_cluster=True, checksum_by='module')
    assert done['changed'] is True and done['image']['status'] == 'active'
    assert rbd_all_snaps(lab.stack, lab.ceph, lab.ceph.volumes_pool, image) == []
    again = lab.run(volume=vol, image_name=name, copy_in_cluster=True, checksum_by='module')
    assert again['changed'] is False and again['plan'] == []

    # state=cleanup finds one whatever image it belonged to, by the name it had
    other = str(uuid.uuid4())
    trashed = interrupt_snap_removal(lab.stack, lab.ceph, lab.ceph.volumes_pool, image, other + '.upload_snap')
    cleaned = lab.run(state='cleanup')
    assert '%s/%s@%s.upload_snap' % (lab.ceph.volumes_pool, image, other) in cleaned['removed'], cleaned
    assert rbd_all_snaps(lab.stack, lab.ceph, lab.ceph.volumes_pool, image) == []
    assert lab.image_sha(image_id) == (EXPECTED, GIB)


def test_spec_scenario_1_delete_the_volume_after_upload(lab: Any) -> None:
    """Spec 003 test 1: upload volume to image (clone), then delete the original volume in Cinder."""
    vol = lab.create_volume()
    out = lab.run(volume=vol, image_name='rbdup-s1-%s' % lab.tag, enable_clone_optimization=True)
    image_id = out['image_id']
    assert out['path'] == 'clone'

    lab.delete_volume(vol)  # Cinder's RBD driver must succeed: it keeps the RBD image as volume-<id>.deleted
    volumes = lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)
    assert list(volumes) == ['volume-%s.deleted' % vol]
    assert lab.image_sha(image_id) == (EXPECTED, GIB)  # the image is intact

    # Glance deletes the image; nobody but this module's cleanup would remove the .deleted volume
    assert lab.delete_image(image_id) == 204
    assert image_id not in lab.pool_info(lab.ceph.images_pool)
    planned = lab.run(check=True, state='cleanup')
    assert any('volume-%s.deleted@%s.clone_snap' % (vol, image_id) in step for step in planned['plan'])
    assert 'volume-%s.deleted' % vol in lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)
    cleaned = lab.run(state='cleanup')
    assert cleaned['changed'] is True
    assert '%s/volume-%s.deleted' % (lab.ceph.volumes_pool, vol) in cleaned['removed']
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol) == {}
    again = lab.run(state='cleanup')
    assert not any(image_id in step for step in again['plan'])


def test_spec_scenario_1_state_absent_releases_everything(lab: Any) -> None:
    vol = lab.create_volume()
    out = lab.run(volume=vol, image_name='rbdup-s1a-%s' % lab.tag, enable_clone_optimization=True)
    image_id = out['image_id']
    lab.delete_volume(vol)
    planned = lab.run(check=True, state='absent', image_id=image_id)
    assert planned['changed'] is True and lab.image(image_id)['status'] == 'active'
    gone = lab.run(state='absent', image_id=image_id)
    assert gone['changed'] is True
    assert lab.image(image_id) is None or lab.image(image_id)['status'] == 'deleted'
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol) == {}
    assert image_id not in lab.pool_info(lab.ceph.images_pool)
    again = lab.run(state='absent', image_id=image_id)
    assert again['changed'] is False


def test_spec_scenario_2_volume_from_image_then_delete_image(lab: Any) -> None:
    """Spec 003 test 2: upload (clone), create a volume from the image in Cinder, delete the image in Glance.

    Glance refuses to delete an RBD image that volumes were cloned from (HTTP 409) whatever way the
    image was made; the copy path is run next to the clone path to show the clone adds nothing to
    that. The volume made from the image keeps the right data throughout, and once it is flattened
    (state=absent with flatten_children) or deleted, the image goes and nothing is left in Ceph.
    """
    outcomes = {}
    made = {}
    for path in ('clone', 'copy'):
        vol = lab.create_volume()
        out = lab.run(volume=vol, image_name='rbdup-s2-%s-%s' % (path, lab.tag),
                      enable_clone_optimization=path == 'clone')
        assert out['path'] == path
        image_id = out['image_id']
        child = lab.create_volume(image_id=image_id, write=False)
        assert lab.volume_sha(child) == EXPECTED
        status = lab.delete_image(image_id)
        outcomes[path] = status
        made[path] = (vol, image_id, child)
        assert lab.volume_sha(child) == EXPECTED
        assert status in (204, 409)
        if status == 409:
            assert lab.image(image_id)['status'] == 'active'
            assert lab.image_sha(image_id) == (EXPECTED, GIB)
    assert outcomes['clone'] == outcomes['copy'], outcomes

    vol, image_id, child = made['clone']
    if outcomes['clone'] == 409:
        refused = lab.fail(state='absent', image_id=image_id)
        assert 'flatten_children=true' in refused['msg'] and 'volume-%s' % child in refused['msg']
        gone = lab.run(state='absent', image_id=image_id, flatten_children=True)
        assert any('flattened %s/volume-%s' % (lab.ceph.volumes_pool, child) in r for r in gone['removed'])
    else:
        gone = lab.run(state='absent', image_id=image_id)
    assert lab.image(image_id) is None or lab.image(image_id)['status'] == 'deleted'
    assert lab.volume_sha(child) == EXPECTED
    lab.delete_volume(child)
    lab.delete_volume(vol)
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol) == {}
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % child) == {}
    assert image_id not in lab.pool_info(lab.ceph.images_pool)


def test_missing_write_cap_on_glance_pool(lab: Any) -> None:
    vol = lab.create_volume()
    user = 'volsnap-test-%s' % lab.tag
    keyring = lab.workdir / ('ceph.client.%s.keyring' % user)
    lab.ceph.ceph('auth', 'get-or-create', 'client.%s' % user, 'mon', 'profile rbd', 'osd',
                  'profile rbd pool=%s, profile rbd-read-only pool=%s' % (lab.ceph.volumes_pool, lab.ceph.images_pool),
                  '-o', str(keyring))
    try:
        name = 'rbdup-cap-%s' % lab.tag
        out = lab.fail(volume=vol, image_name=name, enable_clone_optimization=True, ceph_user=user,
                       keyring=str(keyring))
        assert "client.%s lacks write access to pool %s" % (user, lab.ceph.images_pool) in out['msg']
        assert "osd 'profile rbd pool=%s'" % lab.ceph.images_pool in out['msg']
        # refused before anything was made
        assert lab.images_named(name) == []
        assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps'] == []
    finally:
        lab.ceph.ceph('auth', 'del', 'client.%s' % user)


def test_refused_states(lab: Any) -> None:
    vol = lab.create_volume(write=False)
    # an image that is active and not made from this volume
    out = lab.run(volume=vol, image_name='rbdup-ref-%s' % lab.tag)
    foreign = out['image_id']
    other = lab.create_volume(write=False)
    refused = lab.fail(volume=other, image_id=foreign)
    assert 'is active and was not made from Cinder volume %s' % other in refused['msg']
    # volumes in states that forbid it (in-use only without force, as Cinder's upload-to-image)
    lab.conn.block_storage.reset_volume_status(other, status='error', attach_status=None, migration_status=None)
    try:
        refused = lab.fail(volume=other, image_name='rbdup-err-%s' % lab.tag)
        assert 'is in status error' in refused['msg']
    finally:
        lab.conn.block_storage.reset_volume_status(other, status='available', attach_status=None,
                                                   migration_status=None)
    attachment = lab.attach(other)
    try:
        refused = lab.fail(volume=other, image_name='rbdup-err-%s' % lab.tag)
        assert 'is in-use (attached)' in refused['msg'] and 'force=true' in refused['msg']
        forced = lab.run(volume=other, image_name='rbdup-err-%s' % lab.tag, force=True)
        assert forced['changed'] and forced['source']['status'] == 'in-use'
    finally:
        lab.detach(other, attachment)
    # an unknown volume, an encrypted-free but missing RBD image
    refused = lab.fail(volume='no-such-volume-%s' % lab.tag, image_name='x')
    assert 'was not found' in refused['msg']
    refused = lab.fail(rbd_image='no-such-image', image_name='x')
    assert 'does not exist: check volume_pool' in refused['msg']


def test_interrupted_clone_run_is_completed(lab: Any) -> None:
    """What a run killed after the clone leaves (queued image, protected snapshot, clone) is finished."""
    vol = lab.create_volume()
    name = 'rbdup-resume-%s' % lab.tag
    key = '%s/%s/volume-%s' % (lab.ceph.fsid, lab.ceph.volumes_pool, vol)
    resp = lab.conn.image.post('/images', json={'name': name, 'disk_format': 'raw', 'container_format': 'bare',
                                                'volsnap_source': key, 'volsnap_upload_path': 'clone'})
    assert resp.status_code == 201, resp.text
    image_id = resp.json()['id']
    lab.images.append(image_id)
    snap = 'volume-%s@%s.clone_snap' % (vol, image_id)
    lab.ceph.rbd('snap', 'create', '%s/%s' % (lab.ceph.volumes_pool, snap))
    lab.ceph.rbd('snap', 'protect', '%s/%s' % (lab.ceph.volumes_pool, snap))
    lab.ceph.rbd('clone', '%s/%s' % (lab.ceph.volumes_pool, snap), '%s/%s' % (lab.ceph.images_pool, image_id))
    out = lab.run(volume=vol, image_name=name, enable_clone_optimization=True)
    assert out['changed'] is True and out['resumed'] is True and out['image_id'] == image_id
    assert [s.split(':')[0] for s in out['plan']] == ['snapshot_clone', 'protect_clone_snapshot',
                                                      'register_location', 'wait_active']
    assert lab.image(image_id)['status'] == 'active'
    assert lab.image_sha(image_id) == (EXPECTED, GIB)


def test_cleanup_after_glance_deleted_an_image(lab: Any) -> None:
    vol = lab.create_volume()
    out = lab.run(volume=vol, image_name='rbdup-gc-%s' % lab.tag, enable_clone_optimization=True)
    image_id = out['image_id']
    assert lab.delete_image(image_id) == 204
    snaps = lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps']
    assert [s['name'] for s in snaps] == ['%s.clone_snap' % image_id]  # left behind by Glance
    cleaned = lab.run(state='cleanup')
    assert '%s/volume-%s@%s.clone_snap' % (lab.ceph.volumes_pool, vol, image_id) in cleaned['removed']
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps'] == []
    # the volume is untouched and Cinder deletes it the normal way
    assert lab.volume_sha(vol) == EXPECTED
    lab.delete_volume(vol)
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol) == {}


def test_location_api_choices(lab: Any) -> None:
    """The service-only location API with a user that has the service role (as Cinder's), and its refusal."""
    vol = lab.create_volume()
    # admin without the service role: Glance refuses POST /locations for rbd URLs; the clone is rolled back
    name = 'rbdup-locapi-%s' % lab.tag
    refused = lab.fail(volume=vol, image_name=name, enable_clone_optimization=True, location_api='locations')
    assert 'service role' in refused['msg']
    assert any(r.startswith('clone and snapshots of image') for r in refused['rolled_back'])
    assert lab.images_named(name) == []
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps'] == []

    identity = lab.conn.identity
    project = identity.find_project('admin', ignore_missing=False)
    password = uuid.uuid4().hex
    user = identity.create_user(name='volsnap-rbdup-svc-%s' % lab.tag, password=password,
                                default_project_id=project.id, domain_id=project.domain_id)
    try:
        for role_name in ('admin', 'service'):
            identity.assign_project_role_to_user(project, user, identity.find_role(role_name, ignore_missing=False))
        cloud = {'auth': {'auth_url': 'http://127.0.0.1:5000/v3', 'username': user.name, 'password': password,
                          'project_name': 'admin', 'user_domain_name': 'Default', 'project_domain_name': 'Default'},
                 'region_name': 'RegionOne', 'identity_api_version': 3, 'image_api_version': 2}
        out = lab.run(cloud=cloud, volume=vol, image_name=name, enable_clone_optimization=True,
                      location_api='locations')
        assert out['path'] == 'clone' and out['location_api'] == 'locations'
        assert lab.image(out['image_id'])['status'] == 'active'
        assert lab.image_sha(out['image_id']) == (EXPECTED, GIB)
        again = lab.run(cloud=cloud, volume=vol, image_name=name, enable_clone_optimization=True,
                        location_api='locations')
        assert again['changed'] is False
    finally:
        identity.delete_user(user)


def test_glance_without_read_access_to_volumes_is_explained(lab: Any) -> None:
    """Without osd 'profile rbd-read-only pool=volumes' for Glance's user, Glance cannot open the clone."""
    vol = lab.create_volume(write=False)
    name = 'rbdup-glancecap-%s' % lab.tag
    saved = glance_caps(lab.ceph)
    read_volumes = 'profile rbd-read-only pool=%s' % lab.ceph.volumes_pool
    assert read_volumes in saved['osd'], ('the lab gives client.glance %s (tests/lab/ceph.sh): %s'
                                          % (read_volumes, saved))
    without = [cap.strip() for cap in saved['osd'].split(',') if cap.strip() != read_volumes]
    set_glance_caps(lab.ceph, dict(saved, osd=', '.join(without)))
    try:
        refused = lab.fail(volume=vol, image_name=name, enable_clone_optimization=True)
    finally:
        set_glance_caps(lab.ceph, saved)
    assert glance_caps(lab.ceph) == saved
    assert "Likely cause: Glance opens the clone" in refused['msg']
    assert "osd 'profile rbd-read-only pool=%s'" % lab.ceph.volumes_pool in refused['msg']
    assert lab.images_named(name) == []
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps'] == []
    # the copy path needs nothing of the kind
    out = lab.run(volume=vol, image_name=name)
    assert out['path'] == 'copy'


KILLED_RUN = r'''
import json, sys
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.upload import Options, Upload
args = json.loads(sys.argv[1])
cloud = args.pop("cloud")
Upload(Options(**args), {"cloud": cloud}, False).run()
'''


def test_copy_run_killed_during_the_upload_is_completed(lab: Any) -> None:
    """SIGKILL while Glance receives the data; the next run uploads again from the same snapshot."""
    vol = lab.create_volume()
    name = 'rbdup-kill-%s' % lab.tag
    args = lab.args(volume=vol, image_name=name)
    env = dict(os.environ, PYTHONPATH=collections_path(), **lab.stack.env())
    proc = subprocess.Popen([lab.stack.python, '-c', KILLED_RUN, json.dumps(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        saving = None
        while time.monotonic() < deadline and proc.poll() is None:
            images = lab.images_named(name)
            if images and images[0]['status'] == 'saving':
                saving = images[0]['id']
                break
            time.sleep(0.2)
        assert saving, 'the upload never started: %s' % (proc.stdout.read().decode()[-3000:] if proc.poll() is not None
                                                         else 'still running')
        lab.images.append(saving)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    # Glance puts an interrupted upload back to queued; the temporary snapshot is still there
    deadline = time.monotonic() + 120
    while lab.image(saving)['status'] == 'saving' and time.monotonic() < deadline:
        time.sleep(0.25)
    assert lab.image(saving)['status'] == 'queued'
    snaps = lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps']
    assert [s['name'] for s in snaps] == ['%s.upload_snap' % saving]

    out = lab.run(volume=vol, image_name=name)
    assert out['changed'] and out['resumed'] and out['image_id'] == saving
    assert [s.split(':')[0] for s in out['plan']] == ['upload_data', 'wait_active', 'remove_upload_snapshot']
    assert lab.image_sha(saving) == (EXPECTED, GIB)
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps'] == []


# -- ceph_copy path (copy_in_cluster): an independent image copied inside the cluster ----------------

CEPH_COPY_STEPS = ['check_caps', 'create_image', 'snapshot_upload', 'copy_data', 'snapshot_clone',
                   'protect_clone_snapshot', 'remove_upload_snapshot']


def image_hashes(lab: Any, image_id: str) -> Tuple[str, str, int]:
    """(md5, sha512, size) of the bytes Glance serves for the image."""
    resp = lab.conn.image.get('/images/%s/file' % image_id, stream=True, raise_exc=False)
    assert resp.status_code == 200, resp.text[:500]
    md5, sha512, size = hashlib.md5(), hashlib.sha512(), 0
    for chunk in resp.iter_content(8 * MIB):
        md5.update(chunk)
        sha512.update(chunk)
        size += len(chunk)
    return md5.hexdigest(), sha512.hexdigest(), size


def wait_hashed(lab: Any, image_id: str, timeout: float = 120) -> Dict[str, Any]:
    """The image once Glance has set its os_hash_value (computed in the background after POST locations)."""
    deadline = time.monotonic() + timeout
    while True:
        image = lab.image(image_id)
        if image['os_hash_value'] and 'os_glance_hash_op_host' not in image:
            return image
        assert time.monotonic() < deadline, 'Glance did not hash image %s in %s s: %s' % (image_id, timeout, image)
        time.sleep(0.5)


def assert_independent_copy(lab: Any, image_id: str, vol: str) -> None:
    """glance_store's layout (images/<id>@snap, protected), no RBD parent, nothing left on the volume."""
    images = lab.pool_info(lab.ceph.images_pool, image_id)
    assert images[image_id]['parent'] is None
    assert images[image_id]['snaps'] == [{'name': 'snap', 'protected': True, 'children': []}]
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps'] == []


def test_ceph_copy_glance_hashes_and_the_volume_can_go_at_once(lab: Any) -> None:
    """Service user (POST locations): Glance hashes in the background; delete the volume right after the upload."""
    vol = lab.create_volume()
    name = 'rbdup-cc-%s' % lab.tag
    cloud = lab.stack.service_cloud
    planned = lab.run(check=True, cloud=cloud, volume=vol, image_name=name, copy_in_cluster=True)
    assert planned['changed'] is True and planned['path'] == 'ceph_copy'
    assert [s.split(':')[0] for s in planned['plan']] == CEPH_COPY_STEPS + ['register_location', 'wait_active']
    assert lab.images_named(name) == []
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol)['volume-%s' % vol]['snaps'] == []

    out = lab.run(cloud=cloud, volume=vol, image_name=name, copy_in_cluster=True)
    image_id = out['image_id']
    assert out['changed'] is True and out['path'] == 'ceph_copy' and out['plan'] == planned['plan']
    assert out['checksum_by'] == 'glance' and out['location_api'] == 'locations'
    assert out['location'] == 'rbd://%s/%s/%s/snap' % (lab.ceph.fsid, lab.ceph.images_pool, image_id)
    assert out['image']['status'] == 'active'
    assert out['image']['properties']['volsnap_upload_path'] == 'ceph_copy'
    assert out['copied']['size'] == GIB and out['copied']['bytes_written'] < 16 * MIB  # only the data was written
    assert_independent_copy(lab, image_id, vol)

    again = lab.run(cloud=cloud, volume=vol, image_name=name, copy_in_cluster=True)
    assert again['changed'] is False and again['image_id'] == image_id and again['plan'] == []
    assert lab.run(check=True, cloud=cloud, volume=vol, image_name=name, copy_in_cluster=True)['changed'] is False

    lab.delete_volume(vol)  # at once: nothing of the image hangs on it
    assert lab.pool_info(lab.ceph.volumes_pool, 'volume-%s' % vol) == {}
    image = wait_hashed(lab, image_id)
    md5, sha512, size = image_hashes(lab, image_id)
    assert size == GIB and image['status'] == 'active'
    assert (image['checksum'], image['os_hash_algo'], image['os_hash_value']) == (md5, 'sha512', sha512)
    assert lab.image_sha(image_id) == (EXPECTED, GIB)
    gone = lab.run(state='absent', image_id=image_id)
    assert gone['changed'] is True and image_id not in lab.pool_info(lab.ceph.images_pool)


def test_ceph_copy_module_hashes_and_a_killed_run_converges(lab: Any) -> None:
    """Admin without the service role (JSON-patch API): the module hashes; SIGKILL while it hashes, rerun."""
    vol = lab.create_volume()
    name = 'rbdup-cck-%s' % lab.tag
    refused = lab.fail(volume=vol, image_name=name, copy_in_cluster=True, store='file', fallback_to_copy=False)
    assert 'the ceph_copy path is not possible and fallback_to_copy is false' in refused['msg']
    assert 'of type file, not rbd' in refused['msg'] and lab.images_named(name) == []

    args = lab.args(volume=vol, image_name=name, copy_in_cluster=True, checksum_by='module')
    env = dict(os.environ, PYTHONPATH=collections_path(), **lab.stack.env())
    proc = subprocess.Popen([lab.stack.python, '-c', KILLED_RUN, json.dumps(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    image_id = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            images = lab.images_named(name)
            if images:
                image_id = images[0]['id']
                try:
                    snaps = lab.ceph.rbd('snap', 'ls', '%s/%s' % (lab.ceph.images_pool, image_id))
                except Exception:  # the copy does not exist yet
                    snaps = ''
                if ' snap ' in snaps:
                    break  # the copy is complete; the module hashes it now
            time.sleep(0.05)
        assert proc.poll() is None, 'the run ended before it could be killed: %s' % proc.stdout.read().decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert image_id is not None
    lab.images.append(image_id)
    assert lab.image(image_id)['status'] == 'queued'

    out = lab.run(volume=vol, image_name=name, copy_in_cluster=True, checksum_by='module')
    assert out['changed'] and out['resumed'] and out['image_id'] == image_id and out['checksum_by'] == 'module'
    assert [s.split(':')[0] for s in out['plan']][-3:] == ['compute_hash', 'register_location', 'wait_active']
    assert 'copy_data' not in ' '.join(out['plan'])
    assert_independent_copy(lab, image_id, vol)
    image = lab.image(image_id)
    md5, sha512, size = image_hashes(lab, image_id)
    assert (image['checksum'], image['os_hash_algo'], image['os_hash_value'], size) == (md5, 'sha512', sha512, GIB)
    assert lab.image_sha(image_id) == (EXPECTED, GIB)
    assert lab.run(volume=vol, image_name=name, copy_in_cluster=True, checksum_by='module')['changed'] is False
