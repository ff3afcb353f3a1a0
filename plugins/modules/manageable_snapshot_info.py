#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: manageable_snapshot_info
short_description: List the backend snapshots Cinder could manage on a host or cluster
version_added: 1.0.0
description:
  - Lists the snapshots a cinder-volume backend holds, as Cinder's manageable listing reports them
    (C(GET /manageable_snapshots/detail), microversion 3.8 or later, or the legacy C(os-snapshot-manage) listing on
    older clouds). For each, the reference to pass to M(volsnap.openstack.snapshot_manage), the size, whether it is
    safe to manage and why not, and the id of the Cinder snapshot when it is already managed.
  - One page (O(limit)) or every page.
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - volsnap.openstack.attributes.info_module
  - volsnap.openstack.openstack
options:
  host:
    description:
      - The cinder-volume host to list, C(<host>@<backend>) (a C(#<pool>) suffix is accepted and ignored).
      - Defaults to the host of O(volume) when that is given.
    type: str
  cluster:
    description:
      - The cinder-volume cluster to list instead of a host (needs microversion 3.17). Mutually exclusive with O(host).
    type: str
  volume:
    description:
      - Only the snapshots of this Cinder volume (name or id); the backend is the volume's host unless O(host) or
        O(cluster) is given. Needs an admin view of the volume to read its host.
      - With O(limit), a page is cut before the entries of other volumes are left out, so it may hold fewer entries.
    type: str
  limit:
    description:
      - Return one page of at most this many entries; RV(next_marker) then gives the O(marker) of the next page.
      - When unset every page is fetched.
    type: int
  marker:
    description:
      - "Start after this entry. A string is a backend snapshot name (C({\"source-name\": marker})); a dict is a
        reference as returned in RV(manageable_snapshots[].reference)."
    type: raw
  offset:
    description:
      - Skip this many entries (after O(marker), if given).
    type: int
  sort:
    description:
      - Sort order as Cinder takes it, C(<key>[:<dir>]) separated by commas; keys C(reference) and C(size), directions
        C(asc) and C(desc). Cinder's default is C(reference:desc).
    type: str
  block_storage_microversion:
    description:
      - The highest Block Storage API microversion to use. By default the highest the cloud and this module support.
      - Below C(3.8) the legacy C(os-snapshot-manage) listing is used.
    type: str
notes:
  - Listing manageable snapshots is an admin-only API in Cinder's default policy.
seealso:
  - module: volsnap.openstack.snapshot_manage
  - module: openstack.cloud.volume_snapshot_info
    description: >-
      Lists the snapshots Cinder already manages (its records). Use this module to list what a backend holds,
      managed or not, and whether Cinder could take it over.
  - module: openstack.cloud.volume_snapshot
    description: >-
      Creates or deletes snapshots through Cinder; M(volsnap.openstack.snapshot_manage) manages or unmanages
      snapshots that already exist on the backend.
'''

EXAMPLES = r'''
- name: Everything the Ceph backend of a host holds
  volsnap.openstack.manageable_snapshot_info:
    cloud: mycloud
    host: storage1@ceph
  register: manageable

- name: Snapshots of one volume that Cinder could take over
  ansible.builtin.debug:
    msg: "{{ manageable.manageable_snapshots | selectattr('safe_to_manage') | map(attribute='reference') }}"

- name: First page of 50 entries of one volume's backend, biggest first
  volsnap.openstack.manageable_snapshot_info:
    cloud: mycloud
    volume: db-data
    limit: 50
    sort: size:desc
'''

RETURN = r'''
manageable_snapshots:
  description: The manageable snapshots, as Cinder lists them.
  returned: always
  type: list
  elements: dict
  contains:
    reference:
      description:
        - "The driver reference (for RBD C({\"source-name\": \"<snapshot name>\"})), to pass as
          O(volsnap.openstack.snapshot_manage#module:ref)."
      type: dict
    size:
      description: Size in GiB (rounded up).
      type: int
    safe_to_manage:
      description: Whether Cinder considers it safe to manage.
      type: bool
    reason_not_safe:
      description: Why it is not safe (for example C(already managed)).
      type: str
    cinder_id:
      description: The Cinder snapshot id when it is already managed.
      type: str
    source_reference:
      description:
        - "The backend object the snapshot belongs to (for RBD C({\"source-name\": \"volume-<id>\"}))."
      type: dict
    extra_info:
      description: Driver-specific extra information.
      type: raw
  sample:
    - reference: {"source-name": "nightly"}
      size: 1
      safe_to_manage: true
      reason_not_safe: null
      cinder_id: null
      source_reference: {"source-name": "volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f"}
      extra_info: null
next_marker:
  description: With O(limit), the O(marker) of the next page, or null when this page is the last.
  returned: always
  type: dict
host:
  description: The host that was listed.
  returned: always
  type: str
cluster:
  description: The cluster that was listed.
  returned: always
  type: str
legacy_api:
  description: True when the legacy C(os-snapshot-manage) listing was used.
  returned: always
  type: bool
'''

from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import openstack_argument_spec
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.module import OpenStackModule
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.manage import manageable_snapshots


class ManageableSnapshotInfoModule(OpenStackModule):
    argument_spec = openstack_argument_spec(
        wait=False,
        host=dict(type='str'),
        cluster=dict(type='str'),
        volume=dict(type='str'),
        limit=dict(type='int'),
        marker=dict(type='raw'),
        offset=dict(type='int'),
        sort=dict(type='str'),
        block_storage_microversion=dict(type='str'),
    )
    module_kwargs = dict(
        mutually_exclusive=[('host', 'cluster')],
        required_one_of=[('host', 'cluster', 'volume')],
    )

    def run(self):
        return manageable_snapshots(self.params)


def main():
    ManageableSnapshotInfoModule().execute()


if __name__ == '__main__':
    main()
