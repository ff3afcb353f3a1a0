# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A list of snapshot entries as ``volume_snapshot`` tasks with ``volumes`` (pure; the filter
``volsnap.openstack.snapshot_batches`` calls it on the controller, so it imports nothing heavy: a template that
loads the filter pays for this file only).

The items themselves are checked by the task (:func:`._nfs.batch.batch_items`: each volume once, a snapshot id
where the state needs one)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError

# The keys of an item of volume_snapshot's ``volumes`` option.
ITEM_KEYS = ('volume_path', 'volume_id', 'snapshot_id', 'disk')
# The keys of an entry of a list split by :func:`task_batches`: an item's keys and the two it may set per volume.
ENTRY_KEYS = ITEM_KEYS + ('state', 'volume_format')


def task_batches(entries: Sequence[Any], default_state: str = 'present',
                 default_format: Optional[str] = None, where: str = 'entry') -> List[Dict[str, Any]]:
    """A list of snapshot entries (each an item of ``volumes`` plus its own ``state`` and ``volume_format``) as the
    fewest ``volume_snapshot`` tasks with ``volumes`` that do the same: each batch one state and one volume format,
    each volume at most once per batch (:func:`._nfs.batch.batch_items` refuses it twice), and the entries of one
    volume in the order listed (an entry goes to the first batch after its volume's previous one that has its
    state and format). Batches come in the order they are first needed; each is ``{'state', 'volume_format',
    'volumes'}``.

    A volume is known by its ``volume_id`` or its normalized ``volume_path`` (the same file named both ways is
    refused by the task itself). Entries that are not mappings, name no volume or have unknown keys are refused,
    all at once, naming each (``where[i]``)."""
    problems = []
    batches: List[Dict[str, Any]] = []
    last_batch: Dict[str, int] = {}
    for index, entry in enumerate(entries):
        here = '%s[%d]' % (where, index)
        if not isinstance(entry, Mapping):
            problems.append('%s is not a mapping (volume_id or volume_path, snapshot_id, state, volume_format)'
                            % here)
            continue
        unknown = sorted(str(key) for key in entry if key not in ENTRY_KEYS)
        if unknown:
            problems.append('%s has unknown keys %s (known: %s)' % (here, ', '.join(unknown), ', '.join(ENTRY_KEYS)))
            continue
        if entry.get('volume_id'):
            volume = 'id:%s' % entry['volume_id']
        elif entry.get('volume_path'):
            volume = 'path:%s' % os.path.normpath(str(entry['volume_path']))
        else:
            problems.append('%s names no volume: give volume_id or volume_path' % here)
            continue
        state = entry.get('state') or default_state
        volume_format = entry.get('volume_format') or default_format
        after = last_batch.get(volume, -1)
        number = next((n for n in range(after + 1, len(batches))
                       if batches[n]['state'] == state and batches[n]['volume_format'] == volume_format), None)
        if number is None:
            number = len(batches)
            batches.append({'state': state, 'volume_format': volume_format, 'volumes': []})
        batches[number]['volumes'].append({key: entry[key] for key in ITEM_KEYS if entry.get(key) is not None})
        last_batch[volume] = number
    if problems:
        raise VolsnapError('the list of snapshots is not valid: %s' % '; '.join(problems), problems=problems)
    return batches
