# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``volsnap.openstack.snapshot_batches`` filter (documented in ``snapshot_batches.yml``): a list of snapshot
entries as the fewest ``volume_snapshot`` tasks with ``volumes``; the logic is
:func:`._nfs.batch_entries.task_batches`."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.batch_entries import task_batches


def snapshot_batches(entries, default_state='present', default_format=None, name='entries'):
    """See snapshot_batches.yml."""
    if not isinstance(entries, (list, tuple)):
        raise AnsibleFilterError('snapshot_batches: the input must be a list of entries (volume_id or volume_path, '
                                 'snapshot_id, state, volume_format), not %s' % type(entries).__name__)
    try:
        return task_batches(entries, default_state=default_state, default_format=default_format, where=name)
    except VolsnapError as exc:
        raise AnsibleFilterError('snapshot_batches: %s' % exc.msg) from None


class FilterModule(object):
    """volsnap.openstack filters."""

    def filters(self):
        return {'snapshot_batches': snapshot_batches}
