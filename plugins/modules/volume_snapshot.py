#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: volume_snapshot
short_description: Create and delete snapshots of file-based (NFS) Cinder volumes
version_added: 0.1.0
description:
  - Creates or deletes a snapshot of a Cinder NFS (RemoteFS) volume file exactly as Cinder's RemoteFS driver lays
    it out, so a real Cinder NFS driver can take over what this module leaves.
  - "Create: a qcow2 overlay C(volume-<volume id>.<snapshot id>) with a relative backing reference and an explicit
    backing format becomes the new active layer; the C(.info) file records it."
  - "Delete: the snapshot's data is merged as Cinder (offline, C(qemu-img commit) and C(rebase)) or Nova
    (online, libvirt C(blockRebase) when the snapshot file is the active image, C(blockCommit) otherwise) do."
  - Offline when no running domain uses the volume, online through libvirt (Nova's assisted snapshot calls) when
    one does.
  - Every operation holds the per-volume lock, is journaled step by step beside the volume, and resumes after an
    interruption when the module is run again with the same arguments.
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - volsnap.openstack.chain
  - volsnap.openstack.libvirt
  - volsnap.openstack.openstack
attributes:
  check_mode:
    support: full
    details:
      - Returns the planned steps in RV(plan) and changes nothing. With O(report_to_cinder=true) Cinder is only read,
        and RV(cinder_report) says what would be reported.
  diff_mode:
    support: full
    details:
      - Shows the C(.info) file before and after.
  idempotent:
    support: full
options:
  volume_path:
    description:
      - The volume file, C(<share>/volume-<volume id>). Mutually exclusive with O(volume_id).
    type: path
  volume_id:
    description:
      - The Cinder volume id; the volume file is C(<share>/volume-<volume_id>). Needs O(share).
    type: str
  snapshot_id:
    description:
      - The Cinder snapshot id (a UUID). It becomes part of a file name, so nothing but a UUID is accepted.
      - Required with O(state=present) and O(state=absent); not used with O(state=resumed).
    type: str
  state:
    description:
      - V(present) creates the snapshot (no change when the C(.info) file has it).
      - V(absent) deletes it, merging its data (no change when the C(.info) file does not have it).
      - V(resumed) finishes the operation (create or delete, of whichever snapshot) that an earlier run started on
        the volume and was interrupted in, as that run planned it; no change when none is pending. An interrupted run
        leaves its journal C(.volsnap-volume-<volume id>.journal) beside the volume file, so
        C(ansible.builtin.find) on a share with O(ignore:hidden=true) lists the volumes to resume. RV(operation) and
        RV(snapshot_id) say what was finished.
      - Every state first finishes an interrupted operation of the same snapshot and state, and refuses to start
        anything else while another one is pending.
    type: str
    choices: [present, absent, resumed]
    default: present
  mode:
    description:
      - V(auto) works online when a running libvirt domain on this host uses the volume, else offline.
      - V(offline) uses qemu-img and is refused while a running domain or QEMU process uses the volume.
      - V(online) uses libvirt and is refused when no running domain has the volume attached.
    type: str
    choices: [auto, offline, online]
    default: auto
  domain:
    description:
      - Name or UUID of the libvirt domain that has the volume attached (found automatically when omitted).
    type: str
  disk:
    description:
      - The domain's disk, by target dev or by C(<serial>) (the Cinder volume id, the default).
    type: str
  quiesce:
    description:
      - Online create tries a quiesced snapshot first (needs the guest agent) and retries without, as Nova does.
    type: bool
    default: true
  lock_timeout:
    description:
      - Seconds to wait for the per-volume lock held by another operation on the same volume.
    type: int
    default: 60
  timeout:
    description:
      - Seconds to wait for an online block job (commit or pull) to finish. A job still running then keeps
        running in libvirt; running the module again waits for it and completes the operation.
    type: int
    default: 600
  report_to_cinder:
    description:
      - Report the outcome to Cinder as Nova does at the end of an assisted snapshot, with
        C(os-update_snapshot_status) on the Cinder snapshot O(snapshot_id), through the cloud given by the connection
        options (O(cloud), O(auth), ...).
      - "Success: status C(creating) (create) or C(deleting) (delete) with progress C(90%). Failure: status C(error) or
        C(error_deleting)."
      - Spec 000's C(creating_compute_complete)/C(deleting_compute_complete) statuses and its C(file_format) field are
        refused by real Cinder, so they are only returned in RV(compute_status) and RV(file_format).
      - Sent only while Cinder shows the snapshot as C(creating) (create) or C(deleting) (delete) and, on success,
        its progress is not C(90%) yet; so a rerun reports again only when the report did not reach Cinder.
      - Needs openstacksdk on the host that runs the module. Refused with O(state=resumed), which does not know the
        snapshot beforehand.
    type: bool
    default: false
notes:
  - The share must be the same directory Cinder mounts (for example C(/var/lib/cinder/mnt/<hash>)); the C(.info) and
    journal files live beside the volume file.
  - A real Cinder expects the snapshot status updates that Nova sends; O(report_to_cinder=true) sends them, and the
    result carries the spec's RV(compute_status) and RV(file_format).
seealso:
  - module: volsnap.openstack.qcow2_chain_info
'''

EXAMPLES = r'''
- name: Snapshot a volume (offline, or online when an instance uses it)
  volsnap.openstack.volume_snapshot:
    volume_path: /var/lib/cinder/mnt/4f1e2c0d/volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    snapshot_id: 9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a

- name: Delete it again, merging its data as Nova does for an attached volume
  volsnap.openstack.volume_snapshot:
    share: /var/lib/nova/mnt/4f1e2c0d
    volume_id: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    snapshot_id: 9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a
    state: absent
    mode: online

- name: Finish whatever snapshot operation was interrupted on a volume (a crash, a killed run)
  volsnap.openstack.volume_snapshot:
    share: /var/lib/cinder/mnt/4f1e2c0d
    volume_id: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    state: resumed
'''

RETURN = r'''
snapshot_id:
  description: The snapshot id (with O(state=resumed), the one of the finished operation; null when none was pending).
  returned: always
  type: str
state:
  description: The requested state.
  returned: always
  type: str
operation:
  description: C(create) or C(delete), the operation that ran (or would run); null when nothing was pending for
    O(state=resumed).
  returned: always
  type: str
mode:
  description: C(offline) or C(online), the way the snapshot was (or would be) handled; null when O(state=resumed)
    found nothing pending.
  returned: always
  type: str
resumed:
  description: True when the run finished an operation an earlier run had started and was interrupted in.
  returned: always
  type: bool
active:
  description: The active file after the operation.
  returned: always
  type: str
file_format:
  description:
    - Spec 000's file format report. Create, the new file; delete, the merge target, or the merged file when there
      is none. Empty when nothing changed.
  returned: always
  type: dict
  sample: {"volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f.9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a": "qcow2"}
compute_status:
  description: C(creating_compute_complete) or C(deleting_compute_complete) when the operation ran, else null.
  returned: always
  type: str
merge:
  description: For a delete, C(merge_target_file), C(file_to_merge) and C(file_to_delete) as Nova names them.
  returned: always
  type: dict
plan:
  description: The steps run (or, in check mode, that would run).
  returned: always
  type: list
  elements: str
info:
  description: The C(.info) content after the operation.
  returned: always
  type: dict
chain:
  description: The volume's chain after the operation, as returned by M(volsnap.openstack.qcow2_chain_info).
  returned: always
  type: dict
domain:
  description: The libvirt domain used by an online operation.
  returned: when online
  type: str
disk:
  description: The domain's disk target used by an online operation.
  returned: when online
  type: str
lock_waited:
  description: Seconds spent waiting for the per-volume lock.
  returned: always
  type: float
cinder_report:
  description:
    - What was reported to Cinder with O(report_to_cinder=true). On failure it is returned next to C(msg).
  returned: when O(report_to_cinder=true)
  type: dict
  contains:
    snapshot_id:
      description: The Cinder snapshot.
      type: str
    status:
      description: The status reported (or to report), C(creating), C(deleting), C(error) or C(error_deleting).
      type: str
    progress:
      description: The progress reported, C(90%) on success, null on failure.
      type: str
    reported:
      description: True when the update was sent (Cinder accepted it).
      type: bool
    would_report:
      description: True when Cinder was waiting for the report (in check mode, whether a real run would send it).
      type: bool
    reason:
      description: Why the update was or was not sent.
      type: str
    cinder_status_before:
      description: Cinder's status of the snapshot before the report (null when it does not exist).
      type: str
    cinder_progress_before:
      description: Cinder's progress of the snapshot before the report.
      type: str
    compute_status:
      description: Spec 000's compute status (not sent, Cinder refuses it).
      type: str
    file_format:
      description: Spec 000's file format report (not sent, Cinder refuses it).
      type: dict
  sample: {"snapshot_id": "9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a", "status": "creating", "progress": "90%",
           "reported": true, "would_report": true, "cinder_status_before": "creating",
           "cinder_progress_before": "0%", "compute_status": "creating_compute_complete",
           "file_format": {"volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f.9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a": "qcow2"},
           "reason": "Cinder is waiting for the compute side (status creating, progress 0%)"}
'''

from ansible_collections.volsnap.openstack.plugins.module_utils._chain import DEFAULT_MAX_DEPTH, VOLUME_FORMATS
from ansible_collections.volsnap.openstack.plugins.module_utils._cinder_report import cinder_reporter, run_with_report
from ansible_collections.volsnap.openstack.plugins.module_utils._errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._libvirt import (
    DEFAULT_URI,
    LIBVIRT_IMPORT_ERROR,
    Libvirt,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._module import VolsnapModule
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack import (
    openstack_argument_spec,
    openstack_dependency,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._snapshot_plan import volume_file
from ansible_collections.volsnap.openstack.plugins.module_utils._volume_snapshot import Request, VolumeSnapshot


class VolumeSnapshotModule(VolsnapModule):
    argument_spec = dict(
        volume_path=dict(type='path'),
        volume_id=dict(type='str'),
        share=dict(type='path'),
        snapshot_id=dict(type='str'),
        state=dict(type='str', choices=['present', 'absent', 'resumed'], default='present'),
        mode=dict(type='str', choices=['auto', 'offline', 'online'], default='auto'),
        domain=dict(type='str'),
        disk=dict(type='str'),
        libvirt_uri=dict(type='str', default=DEFAULT_URI),
        quiesce=dict(type='bool', default=True),
        max_depth=dict(type='int', default=DEFAULT_MAX_DEPTH),
        volume_format=dict(type='str', choices=list(VOLUME_FORMATS)),
        lock_timeout=dict(type='int', default=60),
        timeout=dict(type='int', default=600),
        report_to_cinder=dict(type='bool', default=False),
        **openstack_argument_spec(wait=False)
    )
    module_kwargs = dict(
        mutually_exclusive=[('volume_path', 'volume_id')],
        required_one_of=[('volume_path', 'volume_id')],
        required_by={'volume_id': 'share'},
        required_if=[('state', 'present', ('snapshot_id',)), ('state', 'absent', ('snapshot_id',))],
    )

    def dependencies(self):
        deps = ()
        if self.params['mode'] == 'online' or self.params['domain']:
            deps += (('libvirt-python', LIBVIRT_IMPORT_ERROR, None),)
        if self.params['report_to_cinder'] and self.params['state'] != 'resumed':  # refused with resumed
            deps += (openstack_dependency(),)
        return deps

    def libvirt(self):
        if LIBVIRT_IMPORT_ERROR is not None:
            return None
        return Libvirt(self.params['libvirt_uri'])

    def run_module(self):
        p = self.params
        if p['state'] == 'resumed' and p['report_to_cinder']:
            raise VolsnapError('report_to_cinder needs the snapshot it reports on: finish the interrupted operation '
                               'with state=resumed first, or run state=present/absent with its snapshot_id')
        path = p['volume_path'] or volume_file(p['share'], p['volume_id'])
        request = Request(volume_path=path, snapshot_id=p['snapshot_id'], state=p['state'], mode=p['mode'],
                          domain=p['domain'], disk=p['disk'], quiesce=p['quiesce'], share=p['share'],
                          max_depth=p['max_depth'], lock_timeout=p['lock_timeout'], timeout=p['timeout'],
                          volume_format=p['volume_format'])
        qemu = QemuImg(self.module.run_command, self.module.get_bin_path('qemu-img', required=True))
        reporter = cinder_reporter(p, self.check_mode) if p['report_to_cinder'] else None
        return run_with_report(VolumeSnapshot(request, qemu, self.libvirt, self.check_mode).run, reporter,
                               request.operation)


def main():
    VolumeSnapshotModule().execute()


if __name__ == '__main__':
    main()
