#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: rbd_pool_audit
short_description: Audit an RBD pool against Cinder or Glance, and remove proven leaks
version_added: 1.0.0
description:
  - Reads every image and trash entry of one RBD pool (id, parent, snapshots with their protection and clones) and
    compares the pool with the service that owns it.
  - With O(role=cinder) (Cinder's volume pool, C(rbd_pool)), against Cinder's volumes and snapshots of all projects -
    images of volumes Cinder no longer has, C(volume-<id>.deleted) images and whether a clone still depends on them,
    C(<clone>.clone_snap) snapshots whose clone is gone, protected snapshots without children, snapshots Cinder does
    not know (unmanaged), trash entries.
  - In either pool, a snapshot whose removal was interrupted (librbd first moves a snapshot it removes to its trash
    namespace under a generated name; a client killed then leaves it there for ever, and it blocks the removal of its
    image) is the finding V(interrupted_snapshot_removal) and a cleanup candidate when no clone uses it. One that
    clones still use is librbd's own (removed with its last clone) and only listed.
  - With O(role=glance) (Glance's C(rbd_store_pool)), against Glance's image records - images without a record, and
    records of O(glance_store) whose data is gone.
  - With O(state=audited) (the default) nothing is changed. With O(state=cleaned) the module removes the
    RV(cleanup_candidates) - images, trash entries, interrupted snapshot removals and C(clone_snap) snapshots that no
    clone depends on and that Cinder or Glance does not know - each verified again immediately before its removal (same image id and snapshot
    ids as the audit saw, still no clone, no client has the image open, still unknown to Cinder or Glance). Their
    snapshots are unprotected and removed first.
  - Images are opened read-only, several at a time (O(workers)); nothing is read from their data.
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - volsnap.openstack.ceph
  - volsnap.openstack.openstack
attributes:
  check_mode:
    support: full
    details:
      - With O(state=cleaned), RV(removed) and RV(plan) list exactly what a real run would remove.
  diff_mode:
    support: full
    details:
      - With O(state=cleaned), what is removed (or would be).
  idempotent:
    support: full
options:
  pool:
    description:
      - The RBD pool to audit.
    type: str
    required: true
  role:
    description:
      - Whose pool it is - V(cinder) (the volume pool of Cinder's RBD backend) or V(glance) (Glance's rbd store).
    type: str
    choices: [cinder, glance]
    required: true
  state:
    description:
      - V(audited) only reads. V(cleaned) also removes the cleanup candidates.
    type: str
    choices: [audited, cleaned]
    default: audited
  only:
    description:
      - With O(state=cleaned), remove only these entries of RV(cleanup_candidates) of an earlier audit, and only if
        each is still a candidate with the same image id and snapshot ids; any other is kept and reported in RV(kept).
    type: list
    elements: dict
  glance_store:
    description:
      - With O(role=glance), the id of the Glance store kept in this pool (as in Glance's C(enabled_backends)); active
        images stored there whose RBD image is missing are reported. Unset skips that check.
    type: str
  workers:
    description:
      - How many images are read at a time.
    type: int
    default: 8
notes:
  - The cephx caps needed are C(mon 'profile rbd') and C(osd 'profile rbd pool=<pool>') (read-only,
    C(profile rbd-read-only), is enough for O(state=audited)). Cinder and Glance are read with admin credentials (all
    projects).
  - Volumes, Glance images, snapshots Cinder knows, anything a clone depends on and anything a client has open are
    never removed. Findings that are not cleanup candidates (for example a snapshot Cinder does not know on a volume it
    has, or a Glance record whose data is gone) are reported for a human to decide.
seealso:
  - module: volsnap.openstack.nfs_share_audit
  - module: volsnap.openstack.rbd_image_clone_upload
'''

EXAMPLES = r'''
- name: Audit Cinder's volume pool
  volsnap.openstack.rbd_pool_audit:
    pool: volumes
    role: cinder
    cloud: admin
    ceph_user: cinder
  register: volumes_audit

- name: Remove what that audit proved unused, if nothing changed since
  volsnap.openstack.rbd_pool_audit:
    pool: volumes
    role: cinder
    cloud: admin
    ceph_user: cinder
    state: cleaned
    only: "{{ volumes_audit.cleanup_candidates }}"
  when: volumes_audit.cleanup_candidates | length > 0

- name: Audit Glance's pool
  volsnap.openstack.rbd_pool_audit:
    pool: images
    role: glance
    glance_store: rbd
    cloud: admin
    ceph_user: glance
'''

RETURN = r'''
pool:
  description: The pool audited.
  returned: always
  type: str
role:
  description: O(role).
  returned: always
  type: str
summary:
  description: The human summary.
  returned: always
  type: list
  elements: str
counts:
  description: How many images of each RV(images[].class).
  returned: always
  type: dict
images:
  description: Every image and trash entry of the pool.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The image name.
      type: str
    id:
      description: The RBD image id.
      type: str
    trash:
      description: Whether it is a trash entry.
      type: bool
    class:
      description:
        - With O(role=cinder) V(volume), V(volume_unknown_to_cinder), V(deleted_unreferenced),
          V(deleted_with_dependents), V(deleted_known), V(trash_unreferenced), V(trash_kept), V(trash_known),
          V(foreign); with O(role=glance) V(image), V(image_without_record), V(trash_unreferenced), V(trash_kept),
          V(foreign).
      type: str
    reason:
      description: Why.
      type: str
    cleanable:
      description: Whether it is (or holds) a cleanup candidate as a whole.
      type: bool
    parent:
      description: The parent snapshot of a clone, C(pool/image@snap).
      type: str
    snapshots:
      description:
        - Its snapshots (C(name), C(id), C(protected), C(children), C(namespace)), of every librbd namespace. A
          snapshot of the V(trash) namespace has a generated C(name) and the name it had in C(original_name).
      type: list
      elements: dict
findings:
  description: Each difference with Cinder or Glance, with C(code), C(image), C(id) and C(message).
  returned: always
  type: list
  elements: dict
cleanup_candidates:
  description:
    - What may be removed (C(kind) V(image), V(trash) or V(snapshot)), with the ids a later O(state=cleaned) run
      verifies; pass them as O(only).
  returned: always
  type: list
  elements: dict
removed:
  description: With O(state=cleaned), what was removed (in check mode, would be).
  returned: when O(state=cleaned)
  type: list
  elements: str
kept:
  description: With O(state=cleaned), each candidate kept and why.
  returned: when O(state=cleaned)
  type: list
  elements: str
plan:
  description: With O(state=cleaned), one line per removal.
  returned: when O(state=cleaned)
  type: list
  elements: str
'''

from ansible_collections.volsnap.openstack.plugins.module_utils._base.module import VolsnapModule
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.audit import DEFAULT_WORKERS, audit_pool_module
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import (
    ceph_argument_spec,
    rados_dependency,
    rbd_dependency,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import (
    openstack_argument_spec,
    openstack_dependency,
    sdk_error_types,
)


class RbdPoolAuditModule(VolsnapModule):
    argument_spec = openstack_argument_spec(
        wait=False,
        pool=dict(type='str', required=True),
        role=dict(type='str', choices=['cinder', 'glance'], required=True),
        state=dict(type='str', choices=['audited', 'cleaned'], default='audited'),
        only=dict(type='list', elements='dict'),
        glance_store=dict(type='str'),
        workers=dict(type='int', default=DEFAULT_WORKERS),
        **ceph_argument_spec()
    )

    def dependencies(self):
        return (rados_dependency(), rbd_dependency(), openstack_dependency())

    def error_types(self):
        return sdk_error_types()

    def run_module(self):
        return audit_pool_module(self.params, self.check_mode)


def main():
    RbdPoolAuditModule().execute()


if __name__ == '__main__':
    main()
