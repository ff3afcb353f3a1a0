#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: nfs_share_audit
short_description: Audit a whole Cinder NFS share, compare it with Cinder, and remove proven leaks
version_added: 1.0.0
description:
  - Classifies every name in one NFS share the way Cinder's RemoteFS driver and this collection lay it out
    (RV(files[].class)) - volume file, C(.info) file, snapshot overlay named by the C(.info) file, overlay in the chain
    that no C(.info) entry names, orphan overlay, lock held, idle or stale, pending journal, temporary file in use or
    stale, clone record (stale without its volume file), foreign file - and judges each volume (chain safe, C(.info)
    consistent with the files, pending operation).
  - Headers are parsed in pure Python, a few bytes per file; qemu-img is never run, no link is followed, and
    symbolic links, directories and devices are C(foreign).
  - With O(cinder_host), compares the share with Cinder, read through the connection options (O(cloud), O(auth),
    ...) - volumes and snapshots Cinder has on that backend against the files (RV(cinder.findings)).
  - With O(state=audited) (the default) nothing is changed. With O(state=cleaned) the module removes the
    RV(cleanup_candidates) - and only them - verifying each again immediately before its removal, under the
    volume's lock (the same inode, size and mtime as the audit saw; still unreferenced; no process holding the
    lock; with O(cinder_host), no Cinder snapshot of that id).
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - volsnap.openstack.chain
  - volsnap.openstack.share
  - volsnap.openstack.openstack
attributes:
  check_mode:
    support: full
    details:
      - With O(state=cleaned), RV(removed) and RV(plan) list exactly what a real run would remove.
  diff_mode:
    support: full
    details:
      - With O(state=cleaned), the names removed (or that would be).
  idempotent:
    support: full
options:
  share:
    description:
      - The mount point of the NFS share, where Cinder keeps the C(volume-<id>) files. Required here.
      - Every backing file must stay inside it.
    required: true
  state:
    description:
      - V(audited) only reads. V(cleaned) also removes the cleanup candidates (a stale lock, a stale temporary file,
        an orphan overlay, a stale clone record), each verified again before its removal.
    type: str
    choices: [audited, cleaned]
    default: audited
  only:
    description:
      - With O(state=cleaned), remove only these entries of RV(cleanup_candidates) of an earlier audit, and only if
        each is still a candidate with the same inode, size and mtime; any other is kept and reported in RV(kept).
      - Unset removes every candidate the audit of this run finds.
    type: list
    elements: dict
  min_age:
    description:
      - Seconds since a file last changed before it may be a cleanup candidate (stale locks are judged by the lock
        itself). Cinder's own operations do not take this collection's lock, so a file Cinder is creating right now
        looks like a leak for a moment; leave a margin.
    type: float
    default: 600
  lock_timeout:
    description:
      - Seconds to wait for a volume's lock in O(state=cleaned); a volume whose lock stays held is skipped.
    type: int
    default: 10
  cinder_host:
    description:
      - The Cinder backend that owns this share, C(<host>@<backend>#<pool>) as in a volume's C(os-vol-host-attr:host)
        (Cinder's NFS driver reports the backend name as the pool, for example C(node1@nfs#nfs)). C(<host>@<backend>)
        takes every pool of the backend. When a backend has several shares, give the
        pool of this share, or expect RV(cinder.findings) of kind C(volume_file_missing) for the volumes of the other
        shares.
      - When given, Cinder's volumes and snapshots (of all projects; admin credentials) are compared with the files,
        and an overlay named after a snapshot Cinder has is never removed.
    type: str
notes:
  - Cleanup candidates are only ever the collection's own leftovers and overlays that nothing references. Volume files,
    C(.info) files, journals, held locks and anything not a regular file are never removed, whatever Cinder says;
    RV(cinder.findings) reports them for a human to decide.
  - Removing an orphan overlay or a temporary file of a volume that still exists takes the volume's lock, which
    creates its lock file C(.volsnap-nfs-<volume id>.lock) when it had none, as M(volsnap.openstack.volume_snapshot)
    does; once Cinder deletes the volume, that file is a C(lock_stale) candidate of a later audit.
seealso:
  - module: volsnap.openstack.volume_snapshot
    description: C(state=cleanup) removes the leftovers of one volume.
  - module: volsnap.openstack.qcow2_chain_info
  - module: volsnap.openstack.rbd_pool_audit
'''

EXAMPLES = r'''
- name: Audit the share and compare it with Cinder
  volsnap.openstack.nfs_share_audit:
    share: /var/lib/cinder/mnt/71dd48cf8f3aeee27d4f82c78f051cf8
    cloud: admin
    cinder_host: "node1@nfs#nfs"
  register: audit

- name: Show the summary
  ansible.builtin.debug:
    var: audit.summary

- name: Remove exactly what that audit proved unused, if nothing changed since
  volsnap.openstack.nfs_share_audit:
    share: /var/lib/cinder/mnt/71dd48cf8f3aeee27d4f82c78f051cf8
    state: cleaned
    only: "{{ audit.cleanup_candidates }}"
  when: audit.cleanup_candidates | length > 0
'''

RETURN = r'''
share:
  description: The share audited (absolute path).
  returned: always
  type: str
summary:
  description: The human summary, one line per kind of finding.
  returned: always
  type: list
  elements: str
counts:
  description: How many files of each RV(files[].class).
  returned: always
  type: dict
files:
  description: Every name in the share with its class.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The name in the share.
      type: str
    class:
      description:
        - V(volume), V(info), V(snapshot_overlay) (the C(.info) file names it), V(overlay_in_chain) (no entry names it
          but it is used or cannot be proven unused), V(orphan_overlay), V(lock_held), V(lock_idle), V(lock_stale),
          V(pending_journal), V(temporary_in_use), V(stale_temporary), V(clone_record), V(stale_clone_record),
          V(foreign).
      type: str
    type:
      description: V(file), V(symlink), V(directory) or V(other) (never followed).
      type: str
    volume_id:
      description: The volume the name belongs to (null for foreign names).
      type: str
    snapshot_id:
      description: For an overlay, the snapshot id its name (or the C(.info) file) gives.
      type: str
    reason:
      description: Why it has this class.
      type: str
    cleanable:
      description: Whether it is a cleanup candidate.
      type: bool
    inode:
      description: Its inode, as the audit saw it.
      type: int
    size:
      description: Its size in bytes.
      type: int
    mtime_ns:
      description: Its modification time in nanoseconds.
      type: int
volumes:
  description: Each volume that has a name in the share.
  returned: always
  type: list
  elements: dict
  contains:
    volume_id:
      description: The volume id.
      type: str
    exists:
      description: Whether its volume file or C(.info) file exists.
      type: bool
    active:
      description: The active file (what the C(.info) file names, else the volume file).
      type: str
    chain:
      description: The backing chain from the active file down.
      type: list
      elements: str
    chain_safe:
      description: Whether the chain is safe (see M(volsnap.openstack.qcow2_chain_info)); null without a volume.
      type: bool
    info_consistent:
      description: Whether the C(.info) file agrees with the files.
      type: bool
    snapshots:
      description: The snapshots the C(.info) file names (id to file).
      type: dict
    lock:
      description: V(held), V(free), V(refused) (not a regular file) or null (no lock file).
      type: str
    pending:
      description: The pending operation of its journal, or null.
      type: dict
    pending_error:
      description: Why the journal could not be read, or null.
      type: str
    problems:
      description: The errors found in its chain and C(.info) file.
      type: list
      elements: dict
    files:
      description: Its names in the share.
      type: list
      elements: str
cleanup_candidates:
  description:
    - The files proven to be leaks, with their identity; pass them as O(only) to a later O(state=cleaned) run.
  returned: always
  type: list
  elements: dict
cinder:
  description: The comparison with Cinder, null without O(cinder_host).
  returned: always
  type: dict
  contains:
    host:
      description: O(cinder_host).
      type: str
    volumes_on_backend:
      description: How many Cinder volumes are on that backend.
      type: int
    snapshots_on_backend:
      description: How many Cinder snapshots belong to those volumes.
      type: int
    findings:
      description:
        - Each difference, with C(code) (V(volume_unknown_to_cinder), V(volume_on_other_backend),
          V(volume_file_of_deleted_volume), V(volume_file_missing), V(snapshot_file_missing), V(snapshot_file_present),
          V(snapshot_unknown_to_cinder)), C(message) and the ids (C(volume_id), C(snapshot_id); C(cinder_status) when
          Cinder has the object; C(file), the file of the share, for V(snapshot_file_present) and
          V(snapshot_unknown_to_cinder)).
        - V(snapshot_file_missing) - Cinder holds the snapshot as C(available) but its file is gone or the C(.info)
          file does not name it. V(snapshot_file_present) - Cinder holds it as C(error_deleting) or C(deleted) but
          the file the C(.info) file names, or the C(volume-<id>.<snapshot id>) file, is still in the share.
          V(snapshot_unknown_to_cinder) - the C(.info) file names a snapshot Cinder does not have, or a
          C(volume-<id>.<snapshot id>) file is named after one and no C(.info) entry names it.
      type: list
      elements: dict
removed:
  description: With O(state=cleaned), the paths removed (in check mode, that would be).
  returned: when O(state=cleaned)
  type: list
  elements: str
kept:
  description: With O(state=cleaned), each candidate not removed and why.
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
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.audit import run_share_audit
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import DEFAULT_MAX_DEPTH, VOLUME_FORMATS
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.cinder import cinder_api
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import (
    openstack_argument_spec,
    openstack_dependency,
    sdk_error_types,
)


class NfsShareAuditModule(VolsnapModule):
    argument_spec = dict(
        share=dict(type='path', required=True),
        state=dict(type='str', choices=['audited', 'cleaned'], default='audited'),
        only=dict(type='list', elements='dict'),
        min_age=dict(type='float', default=600),
        lock_timeout=dict(type='int', default=10),
        max_depth=dict(type='int', default=DEFAULT_MAX_DEPTH),
        volume_format=dict(type='str', choices=list(VOLUME_FORMATS)),
        cinder_host=dict(type='str'),
        **openstack_argument_spec(wait=False)
    )

    def dependencies(self):
        return (openstack_dependency(),) if self.params['cinder_host'] else ()

    def error_types(self):
        return sdk_error_types() if self.params['cinder_host'] else ()

    def run_module(self):
        cinder = cinder_api(self.params) if self.params['cinder_host'] else None
        return run_share_audit(self.params, self.check_mode, cinder)


def main():
    NfsShareAuditModule().execute()


if __name__ == '__main__':
    main()
