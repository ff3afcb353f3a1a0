#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: volume_clone
short_description: Create a new volume file from a snapshot of a Cinder NFS (RemoteFS) volume
version_added: 1.0.0
description:
  - Creates a new volume file holding exactly the point-in-time data of a snapshot of a file-based Cinder volume,
    as Cinder's NFS driver does for "create volume from snapshot".
  - The snapshot's data is the backing chain of the file the volume's C(.info) file names for the snapshot. That
    chain is flattened with C(qemu-img convert) into O(dest), raw or qcow2 (Cinder's C(nfs_qcow2_volumes) choice).
    The output is sparse (zeroes are not allocated) and a qcow2 output is not preallocated.
  - The chain is read and judged first, from the image headers (as M(volsnap.openstack.qcow2_chain_info) does); an
    unsafe chain, an unknown snapshot, or a layer that does not declare the format of its backing file is refused
    and nothing is changed. qemu-img is always given the source format and never probes one.
  - The volume's lock (Cinder's C(nfs-<volume id>)) is held for the whole operation.
  - The data is written to a hidden temporary file beside O(dest) (C(.<dest name>.volsnap-tmp)), which the module
    creates itself (never through a link) with the final mode and owner of O(dest) before qemu-img writes a byte of
    the snapshot's data into it through the module's descriptor; it is then synced, recorded in a
    sidecar file C(.<dest name>.volsnap-clone) (volume, snapshot, format, source file, virtual size), and only then
    given the name O(dest). An interrupted run leaves no O(dest); the next run removes its temporary file and
    starts again.
  - O(dest) is never overwritten. When it exists and its sidecar says it is this snapshot of this volume in this
    format, nothing is done; when it exists otherwise, the task fails.
  - O(dest) gets the mode and owner of the source volume file.
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - volsnap.openstack.chain
  - volsnap.openstack.share
  - volsnap.openstack.progress
attributes:
  check_mode:
    support: full
    details:
      - Reads the chain and returns RV(plan) without creating any file.
  diff_mode:
    support: full
  idempotent:
    support: full
    details:
      - A second run with the same volume, snapshot, O(dest) and O(format) finds the sidecar and changes nothing.
options:
  volume_path:
    description:
      - Path of the source volume's base file, C(<share>/volume-<volume id>) (not a snapshot file).
      - Mutually exclusive with O(volume_id); one of them is required.
    type: path
  volume_id:
    description:
      - The source volume's Cinder id; the volume file is C(<share>/volume-<volume_id>).
      - Requires O(share).
    type: str
  snapshot_id:
    description:
      - The Cinder id of the snapshot to clone. It must be a UUID and a key of the volume's C(.info) file.
    type: str
    required: true
  dest:
    description:
      - Path of the new volume file. Its directory must exist. An existing file is never overwritten.
    type: path
    required: true
  format:
    description:
      - Format of the new volume file. Cinder uses V(qcow2) when C(nfs_qcow2_volumes) is true, V(raw) otherwise.
    type: str
    choices: [raw, qcow2]
    default: raw
  lock_timeout:
    description:
      - Seconds to wait for the volume's lock before failing.
    type: int
    default: 60
notes:
  - A snapshot operation of M(volsnap.openstack.volume_snapshot) that was interrupted must be finished first; until
    then the chain may be half merged and the clone is refused.
  - When O(dest) was replaced by another file after it was cloned (another inode than the sidecar records), the task
    fails rather than reporting it unchanged.
  - An operating system error on the files the module writes (the lock, the temporary output, the sidecar record,
    O(dest)), such as no space or no inode left, a read-only file system, a refused access or an I/O error, is a
    failed result naming the file, never a traceback. The clone keeps no journal, so nothing is pending; the
    temporary output and record of a failed clone are removed and O(dest) is never published half-written; run
    the task again once the cause is fixed.
requirements:
  - qemu-img (Debian package qemu-utils) on the host that holds the share.
seealso:
  - module: volsnap.openstack.qcow2_chain_info
  - module: openstack.cloud.volume
    description: >-
      Creates a volume through Cinder, also from a snapshot (its C(snapshot_id) option).
      Use it for volumes Cinder should know; use this module for the file-level copy of a snapshot's data into
      a new volume file on the NFS share, with no Cinder API in the loop.
  - module: volsnap.openstack.volume_snapshot
'''

EXAMPLES = r'''
- name: Create volume 5d2c... from snapshot 9c3f... of volume 0b1e... (raw, as Cinder's default)
  volsnap.openstack.volume_clone:
    volume_path: /var/lib/cinder/mnt/4f1e2c0d/volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    snapshot_id: 9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a
    dest: /var/lib/cinder/mnt/4f1e2c0d/volume-5d2c8e1f-3a4b-4c6d-9e8f-7a6b5c4d3e2f
  register: clone

- name: The same as qcow2 (nfs_qcow2_volumes = true), naming the volume by share and id
  volsnap.openstack.volume_clone:
    share: /var/lib/cinder/mnt/4f1e2c0d
    volume_id: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    snapshot_id: 9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a
    dest: /var/lib/cinder/mnt/4f1e2c0d/volume-6e3d9f20-4b5c-4d7e-8f90-8b7c6d5e4f30
    format: qcow2

- name: Show what would be done
  volsnap.openstack.volume_clone:
    volume_path: /var/lib/cinder/mnt/4f1e2c0d/volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    snapshot_id: 9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a
    dest: /var/lib/cinder/mnt/4f1e2c0d/volume-5d2c8e1f-3a4b-4c6d-9e8f-7a6b5c4d3e2f
  check_mode: true
  register: would
'''

RETURN = r'''
dest:
  description: Path of the new volume file.
  returned: always
  type: str
format:
  description: Format of the new volume file.
  returned: always
  type: str
  sample: raw
snapshot_id:
  description: The snapshot that was cloned.
  returned: always
  type: str
volume_id:
  description: The Cinder id of the source volume.
  returned: always
  type: str
source:
  description:
    - Path of the file converted (the backing file of the snapshot's file, with its own backing chain).
    - When nothing was done, the one recorded in the sidecar.
  returned: always
  type: str
  sample: /var/lib/cinder/mnt/4f1e2c0d/volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
virtual_size:
  description: Guest-visible size of the new volume in bytes.
  returned: always
  type: int
command:
  description: The qemu-img argv that makes (or would make) the new file; empty when nothing is to be done.
  returned: always
  type: list
  elements: str
removed_temporaries:
  description:
    - Stale temporary files of the source volume (left by a C(volume_snapshot) run killed before a rename) removed
      while the volume's lock was held; in check mode, those that would be removed.
  returned: always
  type: list
  elements: str
plan:
  description: What is done (or would be done in check mode), one human-readable step per item, with the qemu-img argv.
  returned: always
  type: list
  elements: str
'''

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import DEFAULT_MAX_DEPTH, VOLUME_FORMATS
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.clone import (
    OUTPUT_FORMATS,
    CloneRequest,
    clone_volume,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.module import VolsnapModule
from ansible_collections.volsnap.openstack.plugins.module_utils._base.progress import DEFAULT_DIR as PROGRESS_DIR
from ansible_collections.volsnap.openstack.plugins.module_utils._base.progress import recording, volume_targets


class VolumeClone(VolsnapModule):
    argument_spec = dict(
        volume_path=dict(type='path'),
        share=dict(type='path'),
        volume_id=dict(type='str'),
        snapshot_id=dict(type='str', required=True),
        dest=dict(type='path', required=True),
        format=dict(type='str', choices=list(OUTPUT_FORMATS), default='raw'),
        max_depth=dict(type='int', default=DEFAULT_MAX_DEPTH),
        volume_format=dict(type='str', choices=list(VOLUME_FORMATS)),
        lock_timeout=dict(type='int', default=60),
        progress_dir=dict(type='path', default=PROGRESS_DIR),
    )
    module_kwargs = dict(
        mutually_exclusive=[('volume_path', 'volume_id')],
        required_one_of=[('volume_path', 'volume_id')],
        required_by=dict(volume_id=['share']),
    )

    def run_module(self):
        params = self.params
        qemu_img = self.module.get_bin_path('qemu-img', required=True)
        request = CloneRequest(snapshot_id=params['snapshot_id'], dest=params['dest'], format=params['format'],
                               volume_path=params['volume_path'], share=params['share'],
                               volume_id=params['volume_id'], max_depth=params['max_depth'],
                               lock_timeout=params['lock_timeout'], qemu_img=qemu_img,
                               volume_format=params['volume_format'])
        targets = volume_targets(params['volume_path'], params['share'], params['volume_id'],
                                 snapshot_id=params['snapshot_id'], dest=params['dest'])
        with recording(params['progress_dir'], 'clone', 'volume_clone', targets, warn=self.module.warn,
                       enabled=not self.check_mode):
            result = clone_volume(request, self.module.run_command, check_mode=self.check_mode)
        self.set_diff({'exists': False},
                      {'dest': result['dest'], 'format': result['format'], 'snapshot_id': result['snapshot_id']})
        return result


def main():
    VolumeClone().execute()


if __name__ == '__main__':
    main()
