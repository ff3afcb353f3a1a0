#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: operation_info
short_description: Progress of the long operations running on a host, and the pending ones of an NFS share
version_added: 1.0.0
description:
  - Reports the operations of M(volsnap.openstack.volume_snapshot), M(volsnap.openstack.volume_clone) and
    M(volsnap.openstack.rbd_image_clone_upload) running on this host, and the ones that finished, failed or were
    interrupted recently, with their step, bytes, percent, rate and estimated time left, read from the progress
    records those modules write in O(progress_dir).
  - Meant to be polled by a second task while a long task runs with C(async) and C(poll) V(0), see the guide
    R(Long work and progress,ansible_collections.volsnap.openstack.docsite.async).
  - With O(share), also the snapshot operations journaled in that NFS share (by any host mounting it) that are
    running (a process holds the volume's lock) or pending (interrupted; finish them with
    M(volsnap.openstack.volume_snapshot) O(volsnap.openstack.volume_snapshot#module:state=resumed)).
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - volsnap.openstack.attributes.INFO_MODULE
  - volsnap.openstack.progress
options:
  volume_path:
    description:
      - Only the operations on this volume file, C(<share>/volume-<volume id>).
    type: path
  volume_id:
    description:
      - Only the operations on this volume (Cinder id).
    type: str
  snapshot_id:
    description:
      - Only the operations on this snapshot (Cinder id).
    type: str
  image_id:
    description:
      - Only the operations on this Glance image (an upload reports its image id once the image exists).
    type: str
  volume:
    description:
      - Only the operations of M(volsnap.openstack.rbd_image_clone_upload) given this
        O(volsnap.openstack.rbd_image_clone_upload#module:volume) or
        O(volsnap.openstack.rbd_image_clone_upload#module:rbd_image) (a name or an id, as the task gave it).
    type: str
  wait:
    description:
      - Wait until the operations found have ended, at most O(timeout) seconds, printing on the controller, every
        O(report_interval) seconds, one line per operation still running (step, bytes, percent, rate, time left)
        and one line per operation once it ended. Meant for a task run after one started with C(async) and
        C(poll=0), see the examples.
      - When no operation is found at first (a module still starting), it waits up to O(report_interval) seconds
        (30 at least) for one to appear. Operations that had already ended at the first reading (records are kept a
        while after their end) are not waited for.
      - Returns the last reading; a timeout is not a failure (RV(operations[].state) says what still runs).
    type: bool
    default: false
  timeout:
    description:
      - With O(wait), the most seconds to wait.
    type: int
    default: 30
  report_interval:
    description:
      - With O(wait), the seconds between two progress lines.
    type: int
    default: 30
  share:
    description:
      - An NFS share (mount point) whose journaled snapshot operations are reported too, with RV(operations[].source)
        V(journal). The journals are read as hostile input (no symbolic link followed, regular files only, steps this
        collection never plans refused); one that fails these checks is reported with state V(unreadable).
    type: path
notes:
  - Outside check mode, records that finished more than 5 minutes ago (interrupted ones after a day) are removed from
    O(progress_dir) while they are read; in check mode they are only left out.
  - The records are host-local; run this module on the host (and as the user, C(become) alike) that runs the
    operation. Journals in a share are seen from every host that mounts it.
seealso:
  - module: volsnap.openstack.volume_snapshot
  - module: volsnap.openstack.rbd_image_clone_upload
  - module: ansible.builtin.async_status
'''

EXAMPLES = r'''
- name: Upload a volume into Glance in the background
  volsnap.openstack.rbd_image_clone_upload:
    volume: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    image_name: golden
  async: 7200
  poll: 0
  register: upload_job

- name: Print its progress every 30 seconds until it ended
  volsnap.openstack.operation_info:
    volume: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    wait: true
    timeout: 7200
    report_interval: 30
  when: not ansible_check_mode  # check mode records no progress

- name: The upload's result
  ansible.builtin.async_status:
    jid: "{{ upload_job.ansible_job_id }}"
  register: upload
  until: upload.finished
  retries: 720
  delay: 10

- name: What runs on this host now
  volsnap.openstack.operation_info:
  register: now_running

- name: Pending (interrupted) snapshot operations of a share
  volsnap.openstack.operation_info:
    share: /var/lib/cinder/mnt/4f1e2c0d
  register: share_ops

- name: Finish them
  volsnap.openstack.volume_snapshot:
    volume_path: "{{ item.targets.volume_path }}"
    state: resumed
  loop: "{{ share_ops.operations | selectattr('state', 'equalto', 'pending') | list }}"
'''

RETURN = r'''
operations:
  description:
    - The operations found, oldest first (progress records, then journals of O(share)).
  returned: always
  type: list
  elements: dict
  contains:
    source:
      description: V(progress) (a record of O(progress_dir)) or V(journal) (a journal in O(share)).
      type: str
      sample: progress
    id:
      description: The operation id (the record's file name without C(.json)); progress records only.
      type: str
      sample: 5c1d0b8f2e6a4b1c9d7e3f2a1b0c9d8e
    kind:
      description:
        - What runs. V(snapshot_create), V(snapshot_delete), V(snapshot_resume), V(snapshot_abandon),
          V(snapshot_cleanup) (M(volsnap.openstack.volume_snapshot)); V(clone) (M(volsnap.openstack.volume_clone));
          V(upload) (becomes V(upload_copy) once a copy through Glance starts copying, V(upload_ceph_copy) once a copy
          inside the cluster does), V(image_delete), V(upload_cleanup)
          (M(volsnap.openstack.rbd_image_clone_upload)). A journal says V(snapshot_create) or V(snapshot_delete).
      type: str
      sample: upload_copy
    module:
      description: The module that runs it.
      type: str
      sample: rbd_image_clone_upload
    targets:
      description:
        - What it works on, those known of C(volume_path), C(volume_id), C(volume) (name or id as given),
          C(snapshot_id), C(image_id), C(share), C(dest).
      type: dict
      sample: {volume_id: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f, image_id: 7d2f4c1a-5b3e-4f6d-8a9b-0c1d2e3f4a5b}
    host:
      description: The host name of the process (null for journals).
      type: str
    pid:
      description: The process id of the module run (null for journals).
      type: int
    started:
      description: When the operation started recording, ISO 8601 UTC; progress records only.
      type: str
      sample: '2026-12-03T07:10:00Z'
    updated:
      description: When the record was last written, ISO 8601 UTC; progress records only.
      type: str
    elapsed:
      description: Seconds from RV(operations[].started) to RV(operations[].updated); progress records only.
      type: float
    step:
      description:
        - The step running, 1-based, of RV(operations[].steps). For a journal, the next step to run.
        - After an interruption, a run that resumes counts the steps left.
      type: int
      sample: 4
    steps:
      description: How many steps the plan has.
      type: int
      sample: 7
    step_description:
      description: What the step does, as the module's RV(volsnap.openstack.volume_snapshot#module:plan) says it.
      type: str
    bytes_done:
      description:
        - Bytes done by the current step when it counts bytes (a copy upload, a libvirt block job's cur), else null.
          qemu-img reports percent only.
      type: int
    bytes_total:
      description: Bytes the current step moves in all (a block job's end), else null.
      type: int
    percent:
      description:
        - Done, 0 to 100, over the whole operation; a data step (copy, commit, block job, convert) weighs 20 times a
          step that only changes metadata. Never decreases while the operation runs; 100 when done.
        - For a journal, the share of steps done.
      type: float
      sample: 42.5
    rate:
      description: Bytes per second over the last 10 seconds, when the current step counts bytes; else null.
      type: float
    eta:
      description: Seconds left at the pace of the last 10 seconds, when known; else null.
      type: float
    state:
      description:
        - V(running); V(done) or V(failed) (kept 5 minutes after the end, so a poller sees 100 %); V(interrupted)
          (its process is gone without finishing it; for M(volsnap.openstack.volume_snapshot), run it again with
          the same arguments or O(volsnap.openstack.volume_snapshot#module:state=resumed)).
        - For a journal, V(running) (a process holds the volume lock), V(pending) (interrupted), or V(unreadable)
          (RV(operations[].error) says why).
      type: str
      sample: running
    error:
      description: Why it failed (state V(failed)) or why a journal is V(unreadable); else null.
      type: str
    journal:
      description: The journal's path; journals only.
      type: str
    mode:
      description: V(offline) or V(online); journals only.
      type: str
    data_step_started:
      description: Whether a data step had started when the journal was last written; journals only.
      type: bool
'''

from ansible_collections.volsnap.openstack.plugins.module_utils._base.module import VolsnapModule
from ansible_collections.volsnap.openstack.plugins.module_utils._base.progress import DEFAULT_DIR as PROGRESS_DIR
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.pending import wait_operations


class OperationInfo(VolsnapModule):
    argument_spec = dict(
        progress_dir=dict(type='path', default=PROGRESS_DIR),
        volume_path=dict(type='path'),
        volume_id=dict(type='str'),
        snapshot_id=dict(type='str'),
        image_id=dict(type='str'),
        volume=dict(type='str'),
        share=dict(type='path'),
        wait=dict(type='bool', default=False),
        timeout=dict(type='int', default=30),
        report_interval=dict(type='int', default=30),
    )

    def run_module(self):
        p = self.params
        filters = dict(volume_path=p['volume_path'], volume_id=p['volume_id'], snapshot_id=p['snapshot_id'],
                       image_id=p['image_id'], volume=p['volume'])
        return dict(operations=wait_operations(p['progress_dir'], filters, share=p['share'],
                                               remove_expired=not self.check_mode,
                                               timeout=p['timeout'] if p['wait'] else 0))


def main():
    OperationInfo().execute()


if __name__ == '__main__':
    main()
