"""task_batches: a list of snapshot entries as the fewest volume_snapshot tasks with volumes (pure), and the
snapshot_batches filter that exposes it."""

from __future__ import annotations

import random

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.volsnap.openstack.plugins.filter.snapshot_batches import FilterModule
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.batch import batch_items
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.batch_entries import task_batches

V = ['%08d-1111-4222-8333-444444444444' % i for i in range(8)]
S = ['%08d-aaaa-4bbb-8ccc-dddddddddddd' % i for i in range(8)]


def test_one_state_and_format_is_one_batch_whatever_the_number_of_volumes():
    entries = [{'volume_id': V[i % 8] if i < 8 else None, 'volume_path': None if i < 8 else '/s/volume-%d' % i,
                'snapshot_id': S[0]} for i in range(300)]
    got = task_batches(entries, default_format='raw')
    assert len(got) == 1
    assert got[0]['state'] == 'present' and got[0]['volume_format'] == 'raw'
    assert [v.get('volume_id') or v['volume_path'] for v in got[0]['volumes']] == \
        [e['volume_id'] or e['volume_path'] for e in entries]
    assert all(None not in v.values() for v in got[0]['volumes'])  # keys given as null are left out


def test_state_and_format_split_batches_in_the_order_first_needed():
    got = task_batches([
        {'volume_id': V[0], 'snapshot_id': S[0], 'state': 'absent'},
        {'volume_id': V[1], 'snapshot_id': S[0]},
        {'volume_id': V[2], 'snapshot_id': S[0], 'volume_format': 'qcow2'},
        {'volume_id': V[3], 'snapshot_id': S[0], 'state': 'absent'},
    ], default_format='raw')
    assert [(b['state'], b['volume_format'], [v['volume_id'] for v in b['volumes']]) for b in got] == [
        ('absent', 'raw', [V[0], V[3]]), ('present', 'raw', [V[1]]), ('present', 'qcow2', [V[2]])]
    # the state and the format are the batch's: never left in an item (the module refuses unknown item keys)
    assert all(set(v) == {'volume_id', 'snapshot_id'} for b in got for v in b['volumes'])


def test_a_rotation_creates_before_it_deletes_and_a_volume_is_once_per_batch():
    got = task_batches([
        {'volume_id': V[0], 'snapshot_id': S[1]},
        {'volume_id': V[0], 'snapshot_id': S[0], 'state': 'absent'},
        {'volume_id': V[1], 'snapshot_id': S[1]},
        {'volume_id': V[1], 'snapshot_id': S[0], 'state': 'absent'},
        {'volume_id': V[0], 'snapshot_id': S[2]},  # after its delete: a third batch, not the first
        {'volume_id': V[2], 'snapshot_id': S[2]},  # a volume seen first: the first batch of its state
    ])
    assert [(b['state'], [(v['volume_id'], v['snapshot_id']) for v in b['volumes']]) for b in got] == [
        ('present', [(V[0], S[1]), (V[1], S[1]), (V[2], S[2])]),
        ('absent', [(V[0], S[0]), (V[1], S[0])]),
        ('present', [(V[0], S[2])])]
    assert got[0]['volume_format'] is None  # no default: the module's own


def test_batches_are_what_the_module_accepts_and_keep_each_volumes_order():
    """Randomized: every batch passes batch_items (each volume once), and each volume's entries run in the order
    listed, whatever the mix of states, formats and repeats."""
    rng = random.Random(20261203)
    for _round in range(200):
        entries = [{'volume_id': rng.choice(V[:4]), 'snapshot_id': rng.choice(S),
                    'state': rng.choice(['present', 'absent', None]), 'volume_format': rng.choice(['raw', 'qcow2', None])}
                   for _entry in range(rng.randint(1, 25))]
        got = task_batches(entries, default_format='raw')
        for batch in got:
            batch_items(batch['volumes'], '/share', batch['state'])
        order = {}
        for number, batch in enumerate(got):
            for volume in batch['volumes']:
                order.setdefault(volume['volume_id'], []).append((number, volume['snapshot_id'], batch['state'],
                                                                  batch['volume_format']))
        for volume in {e['volume_id'] for e in entries}:
            listed = [(e['snapshot_id'], e['state'] or 'present', e['volume_format'] or 'raw')
                      for e in entries if e['volume_id'] == volume]
            ran = order[volume]
            assert [r[1:] for r in ran] == listed
            assert [r[0] for r in ran] == sorted(r[0] for r in ran) and len({r[0] for r in ran}) == len(ran)
        assert sum(len(b['volumes']) for b in got) == len(entries)


def test_bad_entries_are_all_named_before_anything_runs():
    with pytest.raises(VolsnapError) as err:
        task_batches([{'volume_id': V[0], 'snapshot_id': S[0]}, 'volume-x', {'snapshot_id': S[0]},
                      {'volume_id': V[1], 'snapshotid': S[0], 'Name': 'x'}], where='snapshot_volumes_list')
    msg = err.value.msg
    assert 'snapshot_volumes_list[1] is not a mapping' in msg
    assert 'snapshot_volumes_list[2] names no volume: give volume_id or volume_path' in msg
    assert 'snapshot_volumes_list[3] has unknown keys Name, snapshotid (known: volume_path, volume_id' in msg
    assert 'snapshot_volumes_list[0]' not in msg and len(err.value.details['problems']) == 3


def test_the_filter_maps_errors_and_refuses_what_is_not_a_list():
    snapshot_batches = FilterModule().filters()['snapshot_batches']
    assert snapshot_batches([{'volume_id': V[0], 'snapshot_id': S[0]}], 'absent', 'qcow2') == [
        {'state': 'absent', 'volume_format': 'qcow2', 'volumes': [{'volume_id': V[0], 'snapshot_id': S[0]}]}]
    with pytest.raises(AnsibleFilterError, match=r'snapshot_batches: the list of snapshots is not valid: '
                                                 r'mylist\[0\] names no volume'):
        snapshot_batches([{}], name='mylist')
    with pytest.raises(AnsibleFilterError, match='the input must be a list of entries .* not dict'):
        snapshot_batches({'volume_id': V[0]})
