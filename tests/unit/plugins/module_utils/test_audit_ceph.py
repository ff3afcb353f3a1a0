# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _ceph/audit.py: the classification of a Cinder or Glance pool (pure), and the reading and cleanup
over a small in-memory librbd stand-in (list2, trash, images opened by id, snapshot ids, children, watchers)."""

from __future__ import annotations

import errno
from datetime import datetime, timedelta
from typing import Any, Dict, List

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph import audit as A
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.audit import ImageFacts, SnapFacts

V1 = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
V2 = '11111111-2222-4333-8444-555555555555'
V3 = '66666666-7777-4888-9999-aaaaaaaaaaaa'
S1 = '99999999-8888-4777-a666-555555555555'


def img(name, snaps=(), trash=False, image_id=None, **kw):
    return ImageFacts(name=name, id=image_id or 'id-' + name[-6:], trash=trash, snaps=list(snaps), **kw)


def snap(name, sid=1, protected=True, children=()):
    return SnapFacts(name=name, id=sid, protected=protected, children=list(children))


def classes(audit):
    return dict(((i['name'], i['trash']), i['class']) for i in audit['images'])


def codes(audit):
    return sorted((f['code'], f['image']) for f in audit['findings'])


def test_healthy_cinder_pool_has_nothing_to_clean():
    images = [img('volume-' + V1, [snap('snapshot-' + S1)]),
              img('volume-' + V2, [snap('volume-%s.clone_snap' % V3, 2, children=['volumes/volume-' + V3])]),
              img('volume-' + V3, parent='volumes/volume-%s@volume-%s.clone_snap' % (V2, V3))]
    audit = A.finish(A.judge_cinder_pool(images, [V1, V2, V3], [S1], 'volumes'))
    assert audit['cleanup_candidates'] == [] and audit['findings'] == []
    assert set(classes(audit).values()) == {'volume'} and audit['summary'][-1] == 'nothing to clean'


def test_cinder_leaks_are_classified():
    deleted = img('volume-%s.deleted' % V1, [snap('volume-%s.clone_snap' % V2)])  # Cinder 29: clone and source gone
    deleted_kept = img('volume-%s.deleted' % V3, [snap('volume-x.clone_snap', children=['volumes/volume-' + V2])])
    trashed = img('volume-' + S1, [snap('snapshot-' + V3)], trash=True)  # unmanaged snapshot, volume deleted
    unknown = img('volume-' + V2)
    foreign = img('bench-image')
    audit = A.finish(A.judge_cinder_pool([deleted, deleted_kept, trashed, unknown, foreign], [], [], 'volumes'))
    got = classes(audit)
    assert got[(deleted.name, False)] == 'deleted_unreferenced'
    assert got[(deleted_kept.name, False)] == 'deleted_with_dependents'
    assert got[(trashed.name, True)] == 'trash_unreferenced'
    assert got[(unknown.name, False)] == 'volume_unknown_to_cinder'
    assert got[(foreign.name, False)] == 'foreign'
    assert sorted((c['kind'], c['name']) for c in audit['cleanup_candidates']) == sorted([
        ('image', deleted.name), ('trash', trashed.name), ('image', unknown.name)])
    cand = [c for c in audit['cleanup_candidates'] if c['name'] == deleted.name][0]
    assert cand['id'] == deleted.id and cand['snapshot_ids'] == [1]


def test_snapshot_findings_on_a_volume_cinder_has():
    volume = img('volume-' + V1, [
        snap('snapshot-' + S1, 1),                                   # unmanaged: Cinder has no such snapshot
        snap('volume-%s.clone_snap' % V2, 2),                        # the clone V2 is gone: a candidate
        snap('volume-%s.clone_snap' % V3, 3),                        # V3 still exists: reported only
        snap('manual', 4, protected=True),                           # protected without children
        snap('other', 5, protected=False)])
    audit = A.judge_cinder_pool([volume], [V1, V3], [], 'volumes')
    assert codes(audit) == sorted([('snapshot_unknown_to_cinder', volume.name)] +
                                  [('clone_snap_without_clone', volume.name)] * 2 +
                                  [('protected_snapshot_without_children', volume.name),
                                   ('foreign_snapshot', volume.name)])
    [cand] = audit['cleanup_candidates']
    assert (cand['kind'], cand['snapshot'], cand['snapshot_id']) == ('snapshot', 'volume-%s.clone_snap' % V2, 2)


def test_a_trash_namespace_snapshot_is_an_interrupted_removal_unless_clones_use_it():
    """librbd moves a snapshot it removes to its trash namespace under a generated name; there it stays while clones
    use it (librbd's own), or for ever when the removal was interrupted (a candidate)."""
    left = SnapFacts(name='d3b07384-d9a0-4c9b-8f0e-0a1b2c3d4e5f', id=7, protected=False, namespace='trash',
                     original_name='snapshot-' + S1)
    kept = SnapFacts(name='c157a790-3a4b-4c5d-8e6f-7a8b9c0d1e2f', id=8, protected=False, namespace='trash',
                     original_name='other', children=['volumes/volume-' + V2])
    volume = img('volume-' + V1, [left, kept])
    audit = A.judge_cinder_pool([volume, img('volume-' + V2)], [V1, V2], [S1], 'volumes')
    assert codes(audit) == [('interrupted_snapshot_removal', volume.name)]
    assert 'the removal of snapshot snapshot-%s was interrupted' % S1 in audit['findings'][0]['message']
    [cand] = audit['cleanup_candidates']
    assert (cand['kind'], cand['snapshot'], cand['snapshot_id']) == ('snapshot', left.name, 7)
    assert left.as_dict()['namespace'] == 'trash' and left.as_dict()['original_name'] == 'snapshot-' + S1
    assert 'original_name' not in snap('s').as_dict() and snap('s').as_dict()['namespace'] == 'user'
    # the same in Glance's pool; the image's own 'snap' is still found (the trash one does not count as it)
    image = img(V1, [SnapFacts(name='snap', id=1, protected=True), left])
    audit = A.judge_glance_pool([image], {V1: {'id': V1, 'status': 'active', 'stores': 'rbd'}}, 'images', 'rbd')
    assert codes(audit) == [('interrupted_snapshot_removal', V1)]
    assert [c['snapshot'] for c in audit['cleanup_candidates']] == [left.name]
    audit = A.judge_glance_pool([img(V1, [left])], {V1: {'id': V1, 'status': 'active', 'stores': 'rbd'}},
                                'images', 'rbd')
    assert codes(audit) == [('image_without_snap', V1), ('interrupted_snapshot_removal', V1)]


def test_known_or_depended_on_or_deferred_is_never_a_candidate():
    now = datetime(2026, 1, 1)
    images = [img('volume-%s.deleted' % V1),                                   # Cinder still has V1
              img('volume-' + V2, trash=True),                                 # Cinder still has V2
              img('volume-' + V3, [snap('s', children=['volumes/x'])]),        # a clone depends on it
              img('volume-' + S1, trash=True, deferred=True, deferment_end=(now + timedelta(days=1)).isoformat()),
              img('volume-%s' % 'abcdefab-1234-4234-8234-123456789abc', error='ImageNotFound (not_found)')]
    audit = A.judge_cinder_pool(images, [V1, V2], [], 'volumes')
    assert audit['cleanup_candidates'] == []
    assert classes(audit)[('volume-' + V2, True)] == 'trash_known'


def test_glance_pool():
    records = {V1: {'id': V1, 'status': 'active', 'stores': 'rbd'},
               V2: {'id': V2, 'status': 'active', 'stores': 'rbd,file', 'name': 'lost'},
               V3: {'id': V3, 'status': 'active', 'stores': 'file'}}
    images = [img(V1, [snap('snap', children=['volumes/volume-' + S1])]),
              img(S1, [snap('snap')]),                      # no record, no clone: a candidate
              img('a6a6a6a6-1234-4234-8234-123456789abc', [snap('snap', children=['volumes/v'])]),  # clone depends
              img('not-an-id')]
    audit = A.finish(A.judge_glance_pool(images, records, 'images', 'rbd'))
    got = classes(audit)
    found = (got[(V1, False)], got[(S1, False)], got[('not-an-id', False)])
    assert found == ('image', 'image_without_record', 'foreign')
    assert [c['name'] for c in audit['cleanup_candidates']] == [S1]
    assert ('record_without_data', V2) in codes(audit) and ('record_without_data', V3) not in codes(audit)


def test_select_candidates_by_ids():
    cand = {'kind': 'image', 'name': 'volume-' + V1, 'id': 'abc', 'snapshot_ids': [1], 'class': 'x'}
    selected, kept = A.select_candidates([cand], [cand, dict(cand, id='other'), {'bogus': 1}])
    assert selected == [cand] and len(kept) == 2


# --- an in-memory librbd, enough for read_pool and clean_pool ---------------------------------------------------

class RbdError(Exception):
    def __init__(self, msg='', code=errno.ENOENT):
        Exception.__init__(self, msg)
        self.errno = code


ImageNotFound = type('ImageNotFound', (RbdError,), {'__module__': 'rbd'})
ImageBusy = type('ImageBusy', (RbdError,), {'__module__': 'rbd'})
RbdPermissionError = type('PermissionError', (RbdError,), {'__module__': 'rbd'})


class Store(object):
    def __init__(self) -> None:
        self.images: Dict[str, Dict[str, Any]] = {}   # id -> {name, snaps: {name: {id, protected, children}}, ...}
        self.trash: Dict[str, Dict[str, Any]] = {}
        self.next_snap = 100
        self.removed: List[str] = []

    def add(self, name, image_id, snaps=(), trash=False, watchers=0):
        record = {'name': name, 'snaps': {}, 'parent': None, 'watchers': watchers}
        for snap_name, protected, children in snaps:
            self.next_snap += 1
            record['snaps'][snap_name] = {'id': self.next_snap, 'protected': protected, 'children': list(children)}
        (self.trash if trash else self.images)[image_id] = record


class FakeLib(object):
    ImageNotFound = ImageNotFound

    def __init__(self, store: Store) -> None:
        self.store = store
        lib = self

        class RBD(object):
            def list2(self, ioctx):
                return [{'name': r['name'], 'id': i} for i, r in sorted(lib.store.images.items())]

            def trash_list(self, ioctx):
                return [{'id': i, 'name': r['name'], 'source': 'USER',
                         'deferment_end_time': datetime(2000, 1, 1)} for i, r in sorted(lib.store.trash.items())]

            def remove(self, ioctx, name):
                [image_id] = [i for i, r in lib.store.images.items() if r['name'] == name]
                assert not lib.store.images[image_id]['snaps']
                del lib.store.images[image_id]
                lib.store.removed.append(name)

            def trash_remove(self, ioctx, image_id, force=False):
                assert not lib.store.trash[image_id]['snaps']
                del lib.store.trash[image_id]
                lib.store.removed.append('trash ' + image_id)

        class Image(object):
            def __init__(self, ioctx, name=None, snapshot=None, read_only=False, image_id=None):
                table = lib.store.trash if image_id else lib.store.images
                found = [i for i, r in table.items() if (i == image_id if image_id else r['name'] == name)]
                if not found:
                    raise ImageNotFound('no image %s' % (name or image_id))
                self._id = found[0]
                self.rec = table[self._id]
                self.snap = None

            def id(self):
                return self._id

            def list_snaps(self):
                return [{'name': n, 'id': s['id']} for n, s in sorted(self.rec['snaps'].items())]

            def is_protected_snap(self, name):
                return self.rec['snaps'][name]['protected']

            def set_snap(self, name):
                self.snap = name

            def list_children2(self):
                return [{'pool': c.split('/')[0], 'image': c.split('/')[1]}
                        for c in self.rec['snaps'][self.snap]['children']]

            def parent_info(self):
                raise ImageNotFound('no parent')

            def watchers_list(self):
                return [{'addr': 'x'}] * self.rec['watchers']

            def unprotect_snap(self, name):
                if self.rec['snaps'][name]['children']:
                    raise ImageBusy('busy', errno.EBUSY)
                self.rec['snaps'][name]['protected'] = False

            def remove_snap(self, name):
                assert not self.rec['snaps'][name]['protected']
                del self.rec['snaps'][name]

            def close(self):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *args):
                self.close()

        self.RBD = RBD
        self.Image = Image


class FakeCluster(object):
    def open_ioctx(self, pool):
        return type('Ioctx', (), {'close': lambda self: None, 'pool': pool})()


@pytest.fixture
def store():
    s = Store()
    s.add('volume-%s.deleted' % V1, 'aaa', [('volume-%s.clone_snap' % V2, True, ())])
    s.add('volume-' + V3, 'ccc', [('snapshot-' + S1, True, ())])
    s.add('volume-' + S1, 'ddd', [('snapshot-x', True, ())], trash=True)
    s.add('volume-' + V2, 'eee', watchers=1)   # unknown to Cinder but open by a client
    return s


def _params(**kw):
    params = {'pool': 'volumes', 'role': 'cinder', 'state': 'audited', 'only': None, 'workers': 2,
              'ceph_user': None, 'glance_store': None}
    params.update(kw)
    return params


class FakeCinder(object):
    def __init__(self, volumes, snapshots):
        self.volumes, self.snapshots = volumes, snapshots

    def all_volumes(self):
        return [{'id': v} for v in self.volumes]

    def all_snapshots(self):
        return [{'id': s} for s in self.snapshots]

    def find_volume(self, vid):
        return {'id': vid} if vid in self.volumes else None


def test_read_audit_and_clean_over_librbd(store):
    lib, cinder = FakeLib(store), FakeCinder([V3], [S1])
    audit = A.run_pool_audit(_params(), False, FakeCluster(), lib, cinder, None)
    assert sorted(c['name'] for c in audit['cleanup_candidates']) == sorted(
        ['volume-%s.deleted' % V1, 'volume-' + S1, 'volume-' + V2])
    checked = A.run_pool_audit(_params(state='cleaned'), True, FakeCluster(), lib, cinder, None)
    assert checked['changed'] is True and store.removed == []
    assert sorted(checked['removed']) == sorted(['volumes/volume-%s.deleted' % V1, 'volumes/trash volume-' + S1])
    assert 'a client has it open' in ' '.join(checked['kept'])
    done = A.run_pool_audit(_params(state='cleaned', only=audit['cleanup_candidates']), False, FakeCluster(), lib,
                            cinder, None)
    assert sorted(store.removed) == sorted(['volume-%s.deleted' % V1, 'trash ddd'])
    assert 'volume-' + V3 in [r['name'] for r in store.images.values()]  # a volume Cinder has: untouched
    again = A.run_pool_audit(_params(state='cleaned'), False, FakeCluster(), lib, cinder, None)
    assert again['changed'] is False and done['changed'] is True


def test_cleanup_keeps_what_changed_or_became_known(store):
    lib, cinder = FakeLib(store), FakeCinder([V3], [S1])
    audit = A.run_pool_audit(_params(), False, FakeCluster(), lib, cinder, None)
    # meanwhile: a clone now depends on the .deleted image, and Cinder now has a volume of the trash entry's id
    store.images['aaa']['snaps']['volume-%s.clone_snap' % V2]['children'].append('volumes/new')
    cinder.volumes.append(S1)
    result = A.run_pool_audit(_params(state='cleaned', only=audit['cleanup_candidates']), False, FakeCluster(), lib,
                              cinder, None)
    assert result['removed'] == [] and store.removed == []
    assert len(result['kept']) == 3


def test_clone_snap_whose_clone_is_gone_is_removed_alone():
    store = Store()
    gone_clone = 'abcdefab-1234-4234-8234-123456789abc'
    store.add('volume-' + V1, 'aaa', [('snapshot-' + S1, True, ()), ('volume-%s.clone_snap' % gone_clone, True, ())])
    lib, cinder = FakeLib(store), FakeCinder([V1], [S1])
    audit = A.run_pool_audit(_params(), False, FakeCluster(), lib, cinder, None)
    [cand] = audit['cleanup_candidates']
    assert (cand['kind'], cand['snapshot']) == ('snapshot', 'volume-%s.clone_snap' % gone_clone)
    done = A.run_pool_audit(_params(state='cleaned'), False, FakeCluster(), lib, cinder, None)
    assert done['removed'] == ['volumes/volume-%s@volume-%s.clone_snap' % (V1, gone_clone)]
    assert list(store.images['aaa']['snaps']) == ['snapshot-' + S1] and store.removed == []


class RacingCinder(FakeCinder):
    """A Cinder client that runs ``meanwhile()`` once, when the audit asks for the snapshots: after the pool was read,
    before the candidates are verified again and removed."""

    def __init__(self, volumes, snapshots, meanwhile):
        FakeCinder.__init__(self, volumes, snapshots)
        self.meanwhile = meanwhile

    def all_snapshots(self):
        if self.meanwhile is not None:
            self.meanwhile()
            self.meanwhile = None
        return FakeCinder.all_snapshots(self)


def test_an_image_replaced_under_the_same_name_after_the_audit_read_it_is_kept():
    store = Store()
    store.add('volume-' + V1, 'aaa')  # unknown to Cinder, no snapshot: a candidate

    def replace():
        del store.images['aaa']
        store.add('volume-' + V1, 'bbb')  # a new image of the same name (no snapshot ids to tell them apart)
    result = A.run_pool_audit(_params(state='cleaned'), False, FakeCluster(), FakeLib(store),
                              RacingCinder([], [], replace), None)
    assert result['removed'] == [] and store.removed == [] and result['changed'] is False
    assert result['kept'] == ['kept volume-%s: its image id changed (bbb, audited aaa)' % V1]


def test_a_snapshot_another_client_removed_meanwhile_is_not_reported_removed():
    store = Store()
    gone_clone = 'abcdefab-1234-4234-8234-123456789abc'
    store.add('volume-' + V1, 'aaa', [('volume-%s.clone_snap' % gone_clone, True, ())])

    class Remover(FakeCinder):
        def find_volume(self, vid):  # asked just before the removal: another client removes the snapshot then
            store.images['aaa']['snaps'].clear()
            return FakeCinder.find_volume(self, vid)
    result = A.run_pool_audit(_params(state='cleaned'), False, FakeCluster(), FakeLib(store), Remover([V1], []), None)
    assert result['removed'] == [] and result['changed'] is False
    assert result['kept'] == ['kept volume-%s@volume-%s.clone_snap: another client removed it meanwhile'
                              % (V1, gone_clone)]


def test_an_image_that_cannot_be_read_is_reported_and_never_a_candidate(store):
    lib = FakeLib(store)
    real = lib.Image

    def failing(ioctx, name=None, **kwargs):
        if name == 'volume-' + V2:
            raise ImageNotFound('gone between the listing and the opening')
        return real(ioctx, name, **kwargs)
    lib.Image = failing
    audit = A.run_pool_audit(_params(), False, FakeCluster(), lib, FakeCinder([V3], [S1]), None)
    [entry] = [i for i in audit['images'] if i['name'] == 'volume-' + V2]
    assert entry['cleanable'] is False and 'ImageNotFound (not_found)' in entry['reason']
    assert 'volume-' + V2 not in [c['name'] for c in audit['cleanup_candidates']]


def test_an_error_while_removing_names_the_candidate_and_the_pool(store):
    lib = FakeLib(store)
    cinder = FakeCinder([V3], [S1])
    audit = A.run_pool_audit(_params(), False, FakeCluster(), lib, cinder, None)
    only = [c for c in audit['cleanup_candidates'] if c['kind'] == 'trash']
    real_remove_snap = lib.Image.remove_snap

    def refused(self, name):
        raise RbdPermissionError('[errno 1] RBD permission error (error removing snapshot)', errno.EPERM)
    lib.Image.remove_snap = refused
    try:
        with pytest.raises(VolsnapError, match=r'^removing trash volume-%s from pool volumes failed: PermissionError: '
                                               r'\[errno 1\] RBD permission error' % S1) as err:
            A.run_pool_audit(_params(state='cleaned', only=only), False, FakeCluster(), lib, cinder, None)
    finally:
        lib.Image.remove_snap = real_remove_snap
    assert err.value.details['ceph_error'] == 'permission' and err.value.details['pool'] == 'volumes'
