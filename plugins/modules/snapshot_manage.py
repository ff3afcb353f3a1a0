#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: snapshot_manage
short_description: Manage an existing backend snapshot into Cinder, or unmanage a Cinder snapshot
version_added: 1.0.0
description:
  - "V(present): brings a snapshot that already exists on the storage backend (for example an RBD snapshot of the
    C(volume-<id>) image made with C(rbd snap create)) under Cinder's management as a snapshot of an existing Cinder
    volume, through the Block Storage API's manage call (C(POST /manageable_snapshots), microversion 3.8 or later, or
    the legacy C(os-snapshot-manage) extension on clouds that offer no 3.8)."
  - "V(absent): unmanages a Cinder snapshot (C(os-unmanage)): Cinder forgets it and the data stays on the backend."
  - The RBD driver renames a managed backend snapshot to C(snapshot-<Cinder snapshot id>) and protects it; unmanaging
    unprotects it (when it has no clones) and leaves that name.
  - The snapshot is identified by O(name) on the volume; a managed snapshot is also recognised through the backend's
    manageable listing (its C(cinder_id)) or a reference named C(snapshot-<id>).
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - volsnap.openstack.openstack
  - volsnap.openstack.openstack.wait
attributes:
  check_mode:
    support: full
    details:
      - Looks the volume, the snapshot and the manageable listing up and returns what would be done; nothing is sent
        that changes Cinder. Whether the policy allows the change is only known when it is tried.
      - A manage that the real run cannot complete fails in check mode too, with the reason the real run gives, never
        C(changed=true) - a reference that the manageable listing of the volume's host or cluster does not contain
        (Cinder would end the new record in C(error)), or lists as not safe to manage (refused by the module).
      - When that listing cannot be read (it is admin-only by default, like managing), check mode cannot tell what a
        real run would do and fails, saying so.
  diff_mode:
    support: full
    details:
      - Shows the Cinder snapshot before and after.
  idempotent:
    support: full
options:
  state:
    description:
      - V(present) makes sure the backend snapshot O(ref) is a Cinder snapshot named O(name) of O(volume) (managing it
        when it is not yet, and setting O(description) and O(metadata) on it when it is).
      - V(absent) unmanages the snapshot O(name) (or the managed snapshot of reference O(ref)); no change when the
        volume has no such snapshot, or when O(volume) does not exist.
    type: str
    choices: [present, absent]
    default: present
  volume:
    description:
      - The Cinder volume (name or id) the backend snapshot belongs to. It must already exist in Cinder.
    type: str
    required: true
  ref:
    description:
      - "The backend snapshot. A string is its name on the backend (sent as C({\"source-name\": ref})); a dict is passed
        as the driver reference as is."
      - For RBD, the name of the snapshot of the C(volume-<volume id>) image.
      - Required with O(state=present).
    type: raw
  name:
    description:
      - The name of the Cinder snapshot. With O(state=present) it is required and identifies the snapshot on later
        runs (a snapshot of O(volume) with this name is the managed one).
      - With O(state=absent), the name or id of the Cinder snapshot to unmanage.
    type: str
  description:
    description:
      - The description of the Cinder snapshot.
    type: str
  metadata:
    description:
      - Metadata of the Cinder snapshot. Values are sent as strings. On an existing snapshot the given keys are set;
        other keys are left alone.
    type: dict
  cleanup_on_error:
    description:
      - When Cinder cannot manage O(ref) (for example it does not exist on the backend), Cinder leaves a snapshot
        record in status C(error). With V(true) the module removes that record before failing, and a later run
        finds an error record of the same name and replaces it.
      - The record is removed without touching backend data; if the backend holds a snapshot belonging to the record,
        the record is unmanaged, otherwise deleted.
      - With V(false) the record stays for inspection and later runs fail until it is removed.
    type: bool
    default: false
  block_storage_microversion:
    description:
      - The highest Block Storage API microversion to use. By default the highest the cloud and this module support.
      - Below C(3.8) the legacy C(os-snapshot-manage) API is used to manage.
    type: str
notes:
  - Managing and unmanaging snapshots and listing manageable snapshots are admin-only APIs in Cinder's default policy;
    a refusal is reported with the policy name.
  - An unmanaged RBD snapshot keeps its C(snapshot-<id>) name on the backend; managing it again uses that name as
    O(ref).
  - "Deleting a volume whose RBD image still holds unmanaged snapshots does not fail (observed with Cinder 29 and
    Ceph 16): Cinder's RBD driver cannot remove an image that has snapshots, so after its retries it moves the
    image C(volume-<volume id>) to the pool's RBD trash, snapshots included, and deletes the volume record. Nothing
    removes it from there: Cinder purges the trash only with C(enable_deferred_deletion), and that purge, like
    C(rbd trash rm) and C(rbd trash purge), refuses an image that has snapshots. The data keeps using space in the
    pool."
  - "What to do with such an image - find it with C(rbd trash ls <pool>) (its name is C(volume-<volume id>)) and
    C(rbd snap ls --pool <pool> --image-id <trash id>). To keep the data, C(rbd trash restore <pool>/<trash id>)
    and manage the image into Cinder as a volume again (for example C(openstack volume manage), which renames it),
    then its snapshots with this module. To drop it, C(rbd snap purge --pool <pool> --image-id <trash id>) (a
    protected snapshot must be unprotected first, which needs its clones flattened) and
    C(rbd trash rm <pool>/<trash id>). Better, unmanage or delete the snapshots you do not need before deleting
    the volume."
seealso:
  - module: volsnap.openstack.manageable_snapshot_info
  - module: openstack.cloud.volume_snapshot
    description: >-
      Creates a new snapshot (or deletes one, with its data) through Cinder. Use this module instead to bring a
      snapshot that already exists on the backend under Cinder's management, or to make Cinder forget one while
      its data stays on the backend.
  - module: openstack.cloud.volume_snapshot_info
    description: >-
      Lists the snapshots Cinder already manages; M(volsnap.openstack.manageable_snapshot_info) lists what the
      backend holds that Cinder could manage.
'''

EXAMPLES = r'''
- name: Bring an RBD snapshot made outside Cinder under Cinder's management
  volsnap.openstack.snapshot_manage:
    cloud: mycloud
    volume: db-data
    ref: nightly-2024-05-01
    name: db-data-nightly
    description: imported from the backend
    metadata:
      origin: rbd

- name: Unmanage it again (Cinder forgets it, the data stays in Ceph)
  volsnap.openstack.snapshot_manage:
    cloud: mycloud
    volume: db-data
    name: db-data-nightly
    state: absent

- name: Manage with a driver-specific reference and remove the error record if it fails
  volsnap.openstack.snapshot_manage:
    cloud: mycloud
    volume: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    ref:
      source-name: snap-before-upgrade
    name: before-upgrade
    cleanup_on_error: true
'''

RETURN = r'''
snapshot:
  description:
    - The Cinder snapshot. After a manage it is the new snapshot (status C(available) when O(wait=true)); after an
      unmanage, the snapshot as it was; null when there is none. In check mode a planned snapshot has a null id.
  returned: always
  type: dict
  contains:
    id:
      description: Snapshot id.
      type: str
    name:
      description: Snapshot name.
      type: str
    description:
      description: Snapshot description.
      type: str
    status:
      description: Snapshot status.
      type: str
    size:
      description: Size in GiB.
      type: int
    volume_id:
      description: The parent volume's id.
      type: str
    metadata:
      description: Snapshot metadata.
      type: dict
    progress:
      description: Progress as Cinder records it.
      type: str
    project_id:
      description: Owning project (admin view).
      type: str
    created_at:
      description: Creation time.
      type: str
    updated_at:
      description: Last update time.
      type: str
volume:
  description: The parent volume (id and name); null when it does not exist (O(state=absent)).
  returned: always
  type: dict
action:
  description: What was (or in check mode would be) done, V(manage), V(update), V(unmanage) or V(none).
  returned: always
  type: str
found_by:
  description: How the existing snapshot was found, C(name), C(id), C(reference) or C(manageable listing).
  returned: when an existing snapshot was found
  type: str
replaced:
  description: The id of an error record that was removed before managing again (O(cleanup_on_error=true)).
  returned: when an error record was replaced
  type: str
legacy_api:
  description: True when the legacy C(os-snapshot-manage) API was used to manage.
  returned: always
  type: bool
'''

from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import openstack_argument_spec
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.module import OpenStackModule
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.manage import manage_snapshot


class SnapshotManageModule(OpenStackModule):
    argument_spec = openstack_argument_spec(
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        volume=dict(type='str', required=True),
        ref=dict(type='raw'),
        name=dict(type='str'),
        description=dict(type='str'),
        metadata=dict(type='dict'),
        cleanup_on_error=dict(type='bool', default=False),
        block_storage_microversion=dict(type='str'),
    )
    module_kwargs = dict(
        required_if=[('state', 'present', ('ref', 'name')), ('state', 'absent', ('name', 'ref'), True)],
    )

    def run(self):
        return manage_snapshot(self.params, self.check_mode)


def main():
    SnapshotManageModule().execute()


if __name__ == '__main__':
    main()
