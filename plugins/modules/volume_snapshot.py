#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: volume_snapshot
short_description: Create and delete snapshots of file-based (NFS) Cinder volumes
version_added: 1.0.0
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
  - volsnap.openstack.share
  - volsnap.openstack.libvirt
  - volsnap.openstack.openstack
  - volsnap.openstack.progress
attributes:
  check_mode:
    support: full
    details:
      - Returns the planned steps in RV(plan) and changes nothing. With O(report_to_cinder=true) Cinder is only read,
        and RV(cinder_report) says what would be reported; a report that a real run could not make fails.
      - With O(volumes), per volume in RV(volumes), and the group's steps in RV(group.plan); no lock file is created.
  diff_mode:
    support: full
    details:
      - Shows the C(.info) file before and after; with O(volumes), one diff per volume that changes, each headed by
        its C(.info) file.
  idempotent:
    support: full
options:
  volume_path:
    description:
      - The volume file, C(<share>/volume-<volume id>). Mutually exclusive with O(volume_id) and O(volumes).
    type: path
  volume_id:
    description:
      - The Cinder volume id; the volume file is C(<share>/volume-<volume_id>). Needs O(share).
    type: str
  snapshot_id:
    description:
      - The Cinder snapshot id (a UUID). It becomes part of a file name, so nothing but a UUID is accepted.
      - Required with O(state=present) and O(state=absent); not used with O(state=resumed). With
        O(state=abandoned) it is optional and, when given, must be the snapshot of the pending operation.
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
      - "V(abandoned) undoes the operation pending on the volume instead of finishing it, for a next step that can
        never succeed (for example a C(qemu-img commit) that qemu refuses every time). It is done only when the
        files prove that nothing is lost, else it is refused with the reason and nothing is changed. The C(.info)
        file must be exactly as before the operation. A create is undone by removing the overlay it made, only
        while the overlay holds no data (empty, or a qcow2 file whose L1 table is all zero, without internal
        snapshots or data file), no QEMU process has it open for writing and, online, the domain's disk does not
        have it in its chain (after libvirt took the snapshot the guest writes into it, so it can only be finished). A delete
        is abandoned only while none of its steps is applied and the image headers still give the planned chain:
        at its first step, when that step (a C(qemu-img commit) or libvirt C(blockCommit), which writes part of
        the snapshot's data into the layer below) never started in an attempt that could have written part of
        it, or when it is a C(blockRebase) pull (which only copies data the active layer already shows) and no
        block job runs. A delete whose commit started in a run that was killed or failed half-way, or that merged
        data already, can only be finished (O(state=resumed), after fixing the cause). Abandoning never deletes
        anything else; the journal is removed last and RV(abandoned) says what was removed. No change when nothing
        is pending. Check mode shows what would be removed."
      - Every state first finishes an interrupted operation of the same snapshot and state, and refuses to start
        anything else while another one is pending.
      - "When a step fails: a failed step of a create (the overlay, the libvirt snapshot) and a failed first step
        of a delete that provably wrote nothing are rolled back (the overlay the step made and the journal are
        removed, under the lock): the failed result says so (C(rolled_back=true), C(pending=null)) and the volume
        is not blocked. Otherwise the journal stays; the failed result says which step failed, what is pending
        (C(pending): journal, operation, snapshot, steps done, next step) and what to do."
      - "An operating system error on the module's own files (the lock, the journal, the C(.info) file, temporary
        files, the overlay), such as no space or no inode left (ENOSPC, EDQUOT), a read-only file system (EROFS),
        a refused access (EACCES) or an I/O error (EIO), gives a failed result, never a traceback: C(msg) names
        the file and the error, says whether an operation is pending, and what to do; C(file) and C(pending) carry
        the same. The journal and the C(.info) file are replaced atomically, so a failed write leaves the previous
        one intact: a journal that could not be written means nothing ran, and a C(.info) write that failed leaves
        the operation pending at that step, finished by a rerun (or O(state=resumed)) once there is space."
      - "V(cleanup) removes what the collection left in the share for the volume, and nothing else (O(snapshot_id)
        is not used): the volume's stale temporary files (an atomic rewrite of its C(.info) file or journal, or a
        new overlay, killed before its rename; removed under the volume's lock), and, when the volume no longer
        exists (no volume file, snapshot file, C(.info) file or journal: Cinder deleted it), its lock file
        C(.volsnap-nfs-<volume id>.lock), only when no process holds the lock (taken without waiting; the file is
        unlinked while it is held). Links are never followed. RV(removed) lists what was (in check mode, would be)
        removed; RV(cleanup) says why the lock file was kept or removed. The playbook C(volsnap.openstack.cleanup)
        runs it for every lock file of a share."
      - Every other state also removes (check mode, lists) the volume's stale temporary files once it holds the
        lock, in RV(removed_temporaries); that alone does not make the result changed.
    type: str
    choices: [present, absent, resumed, abandoned, cleanup]
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
      - How an online create freezes the guest's file systems through the QEMU guest agent (C(fsfreeze)) around the
        snapshot.
      - V(auto) tries a quiesced snapshot first and, when no guest agent answers, takes it without, as Nova does;
        RV(quiesced) says which happened.
      - V(required) fails when no guest agent answers, with nothing changed (the overlays made for it are removed).
      - V(never) takes a crash-consistent snapshot without asking the agent.
      - Offline snapshots are never quiesced (no guest runs).
    type: str
    choices: [never, auto, required]
    default: auto
  volumes:
    description:
      - Many volumes in one task, instead of O(volume_path)/O(volume_id), O(snapshot_id) and O(disk) (mutually
        exclusive with them). Each item is one volume (O(volumes[].volume_path), or O(volumes[].volume_id) with the
        top-level O(share)) and its O(volumes[].snapshot_id). O(state), O(mode), O(domain), O(quiesce),
        O(lock_timeout), O(timeout), O(report_to_cinder), O(share), O(volume_format), O(max_depth) and the connection
        options apply to every item.
      - "With O(group=false) every item is the same independent operation a single-volume task makes: its own
        per-volume lock, journal, C(.info) file and Cinder report, run O(parallel) at a time. What the items can
        share is made once per task: the libvirt connection and the listing of the running domains (which decides
        each volume's mode), the Cinder connection, the C(qemu-img) lookup. A volume is listed at most once per
        task."
      - "An item that fails does not stop the others: the task fails afterwards, C(msg) says how many and which
        volumes failed (also in RV(failed_volumes)), the other volumes are committed, and each failed item in
        RV(volumes) carries its own C(msg) (what is pending, what to do) and details. Running the same task again
        converges: the volumes already done report no change, a pending operation is finished."
      - With O(group=true), the items are ONE group snapshot of one instance's volumes (see O(group)).
      - With O(state=resumed), O(state=abandoned) and O(state=cleanup) the items need no snapshot id (not with
        O(group=true)).
      - An empty list does nothing (C(changed=false)).
    type: list
    elements: dict
    suboptions:
      volume_path:
        description:
          - The volume file. Mutually exclusive with O(volumes[].volume_id).
        type: path
      volume_id:
        description:
          - The Cinder volume id; the volume file is C(<share>/volume-<volume_id>). Needs O(share).
        type: str
      snapshot_id:
        description:
          - The Cinder snapshot id of this volume's snapshot (a UUID). Required with O(state=present) and
            O(state=absent).
        type: str
      disk:
        description:
          - The domain's disk of this volume (target dev or serial); only used with O(group=true). Default, the disk
            whose serial is the volume id, or the disk found using the volume.
        type: str
  parallel:
    description:
      - With O(volumes) and O(group=false), how many volumes are worked on at once; V(1) runs them one after
        another. Must be 1 or more. Each volume holds only its own lock, so independent volumes never wait for each
        other.
      - The volumes that need their lock take it by chunks of up to 64 volumes of one share, without waiting (in the
        order of the lock files' names), and one listing of the share read after a chunk's locks were taken serves
        all its volumes, so a volume's cost does not grow with the number of files in the share. A volume whose lock
        another operation holds is worked on after its chunk, waiting up to O(lock_timeout) while the task holds no
        other lock. Each lock is released as soon as its volume is done.
      - With O(group=true), how many of the group's overlays are created (and C(.info) files written) at once; the
        group itself is one operation, one libvirt call switches every disk.
    type: int
    default: 4
  group:
    description:
      - With O(volumes), whether the items are ONE group snapshot of the volumes of one instance.
      - "V(true) with O(state=present): every listed volume's disk of the one running libvirt domain switches to its
        new overlay in ONE disk-only external snapshot call with libvirt's atomic flag: all disks at the same instant,
        or none (quiesced as O(quiesce) says). The volumes' locks are taken in one fixed order (sorted paths), every
        volume's journal names the group, and a run interrupted at any step (a crash, a kill) is converged by running
        the same task again: rolled back on every volume when the libvirt call had not happened, completed on every
        volume when it had. A failure before that call (an overlay that cannot be written, libvirt refusing) rolls
        every volume back: no disk, C(.info) file or journal is changed and RV(failed_volumes) names the volume that
        failed. Without a running domain (offline), the overlays are all created before the first C(.info) file is
        written, with the same all-or-nothing rerun. Each volume keeps Cinder's own layout (its C(.info) file and
        snapshot file)."
      - "V(true) with O(state=absent): each volume's snapshot is deleted on its own, one libvirt blockCommit or
        blockRebase per disk online (libvirt has no atomic multi-disk commit), each crash-safe as a single delete;
        no data is lost whichever of them ran, and a rerun finishes the rest."
      - Other states are refused with O(group=true). While a volume's group create is interrupted, single-volume
        requests on it are refused (only the group converges it).
    type: bool
    default: false
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
      - "A report that cannot be made fails the task, because Cinder then stays in C(creating)/C(deleting) waiting
        for it. Before the share is touched: credentials that cannot read the snapshot (no permission, or another
        project: Cinder answers 404 for its snapshot and its volume), a snapshot of another volume, or a create of a
        snapshot Cinder does not have fail with nothing changed. After the operation: Cinder refusing the update
        (for example HTTP 403, policy C(snapshot_extension:snapshot_actions:update_snapshot_status)), Cinder not
        waiting although the share was just changed, or Cinder having given up (C(error)/C(error_deleting)) fail
        the task; the operation on the share is then complete and journaled and is not rolled back, the failure
        carries its whole result (C(changed), RV(file_format), RV(cinder_report) with C(error)) and says what Cinder
        shows and what to do."
      - A rerun with working credentials changes no file and sends the report while Cinder still waits; once Cinder
        has moved on (C(available) after a create, the snapshot gone after a delete) a rerun reports no change.
        There is no option to turn the failure into a warning; use C(ignore_errors) or C(failed_when) to go on.
      - Needs openstacksdk on the host that runs the module. Refused with O(state=resumed) and O(state=abandoned),
        which do not know the snapshot beforehand.
      - With O(volumes), each volume's snapshot is reported (its item's C(cinder_report)). With O(group=true) every
        member is checked before any disk is touched (when one cannot be reported nothing is changed), and after the
        group each member's outcome is reported; a group rolled back reports every member's failure, a group taken
        whose completion failed on some volumes reports those failures and the others' success.
    type: bool
    default: false
  return_chain:
    description:
      - Whether the result carries RV(chain), the volume's whole chain after the operation (every layer's format,
        sizes, backing links and owner), in the result and in each item of RV(volumes).
      - V(false) leaves it out, which makes a task over many volumes return about a third of the data (1.5 KB per
        volume instead of 4.1 KB for a one-snapshot chain) and Ansible process it faster (0.15-0.2 s less controller
        CPU per 100 volumes, measured). The chain is still read and judged; M(volsnap.openstack.qcow2_chain_info)
        reports it on demand.
    type: bool
    default: true
notes:
  - The share must be the same directory Cinder mounts (for example C(/var/lib/cinder/mnt/<hash>)); the C(.info) and
    journal files live beside the volume file.
  - A real Cinder expects the snapshot status updates that Nova sends; O(report_to_cinder=true) sends them, and the
    result carries the spec's RV(compute_status) and RV(file_format).
seealso:
  - module: volsnap.openstack.qcow2_chain_info
  - module: openstack.cloud.volume_snapshot
    description: >-
      API-level Cinder snapshots (Cinder records the snapshot and does the work, on any backend). Use it for
      ordinary snapshots; use this module for the file-level work on an NFS share (what Cinder's RemoteFS driver
      and Nova's libvirt driver do), for example the compute side of an assisted snapshot with O(report_to_cinder),
      or to finish interrupted operations.
  - ref: ansible_collections.volsnap.openstack.docsite.which_volume_snapshot
    description: "User guide: volsnap.openstack.volume_snapshot or openstack.cloud.volume_snapshot?"
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

- name: Snapshot the data and log volumes of one instance at the same instant (one atomic libvirt call)
  volsnap.openstack.volume_snapshot:
    share: /var/lib/nova/mnt/4f1e2c0d
    group: true
    quiesce: auto   # freeze the guest's file systems when its guest agent answers
    volumes:
      - volume_id: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
        snapshot_id: 9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a
      - volume_id: 5d2c7e1a-3b4f-4a6d-8e9c-1f2a3b4c5d6e
        snapshot_id: 7a1b2c3d-4e5f-4a6b-9c8d-0e1f2a3b4c5d
  register: group   # group.quiesced: whether the guest was frozen

- name: Undo the pending operation whose next step can never succeed (refused when that would lose anything)
  volsnap.openstack.volume_snapshot:
    share: /var/lib/cinder/mnt/4f1e2c0d
    volume_id: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    state: abandoned
  register: abandoned   # abandoned.abandoned.removed: the files removed (the journal last)

- name: Snapshot many volumes of one share in one task, 8 at a time (each its own lock, journal and .info)
  volsnap.openstack.volume_snapshot:
    share: /var/lib/cinder/mnt/4f1e2c0d
    volumes:
      - volume_id: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
        snapshot_id: 9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a
      - volume_id: 5d2c7e1a-8b3f-4a6d-9e0c-1f2a3b4c5d6e
        snapshot_id: 0e4d8b3a-2c1f-4e5d-8a9b-7c6d5e4f3a2b
    parallel: 8
  register: many   # many.volumes: one result per volume, in this order; many.failed_volumes on failure
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
abandoned:
  description:
    - With O(state=abandoned), the operation that was (in check mode, would be) abandoned and what was undone.
  returned: when O(state=abandoned) found an operation pending
  type: dict
  contains:
    journal:
      description: The journal of the abandoned operation (removed).
      type: str
    operation:
      description: C(create) or C(delete).
      type: str
    snapshot_id:
      description: Its snapshot.
      type: str
    steps_done:
      description: How many of its steps were done.
      type: int
    steps_total:
      description: How many steps it had.
      type: int
    next_step:
      description: The step it was waiting at.
      type: str
    undone:
      description: What was done (in check mode, would be done) to abandon it, one sentence each.
      type: list
      elements: str
    removed:
      description: The files removed (the overlay and its temporary file for a create, then the journal).
      type: list
      elements: str
  sample: {"journal": "/var/lib/cinder/mnt/4f1e2c0d/.volsnap-volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f.journal",
           "operation": "create", "snapshot_id": "9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a", "steps_done": 1,
           "steps_total": 2, "next_step": "write /var/lib/cinder/mnt/4f1e2c0d/volume-0b1e5a04-...info: {...}",
           "undone": ["removed /var/lib/cinder/mnt/4f1e2c0d/volume-0b1e5a04-...9c3f6a2e-... (the overlay)",
                      "removed the journal /var/lib/cinder/mnt/4f1e2c0d/.volsnap-volume-0b1e5a04-....journal"],
           "removed": ["/var/lib/cinder/mnt/4f1e2c0d/volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f.9c3f6a2e-...",
                       "/var/lib/cinder/mnt/4f1e2c0d/.volsnap-volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f.journal"]}
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
  returned: unless O(return_chain=false)
  type: dict
domain:
  description: The libvirt domain used by an online operation.
  returned: when online
  type: str
disk:
  description: The domain's disk target used by an online operation.
  returned: when online
  type: str
quiesced:
  description:
    - For an online create, whether the snapshot was quiesced through the guest agent (O(quiesce=auto) falls back to
      an unquiesced one when no agent answers); null offline, in check mode and when nothing was created.
  returned: always
  type: bool
group:
  description: With O(group=true), what the group did.
  returned: with O(group=true)
  type: dict
  contains:
    operation:
      description: C(create) or C(delete).
      type: str
    mode:
      description: C(online) (one atomic libvirt call) or C(offline) for a create.
      type: str
    domain:
      description: The libvirt domain of an online group.
      type: str
    disks:
      description: The domain's disk targets switched, one per volume in the order of O(volumes).
      type: list
      elements: str
    atomic:
      description: True when the disks were switched by one libvirt call with the atomic flag.
      type: bool
    quiesce:
      description: The O(quiesce) choice.
      type: str
    quiesced:
      description: Whether the guest was frozen through its agent (null when no libvirt call was made).
      type: bool
    recovered:
      description:
        - "How an interrupted group found pending was converged: C(complete) (the libvirt call had happened, every
          volume's C(.info) file completed) or C(roll back) (it had not, every prepared overlay removed, then the group
          taken again); null when none was pending."
      type: str
    resumed:
      description: True when the run only completed an interrupted group.
      type: bool
    plan:
      description: The group's steps in order (prepare every overlay, the one commit point, every C(.info) file).
      type: list
      elements: str
    seconds:
      description: Seconds the group took, locks included.
      type: float
    lock_waited:
      description: Seconds spent waiting for the volumes' locks.
      type: float
  sample: {"operation": "create", "mode": "online", "domain": "instance-0000002a", "disks": ["vdb", "vdc"],
           "atomic": true, "quiesce": "auto", "quiesced": false, "recovered": null, "resumed": false,
           "seconds": 0.42, "lock_waited": 0.0, "plan": ["..."]}
removed_temporaries:
  description:
    - Stale temporary files of the volume (left by a run that was killed before a rename) removed once the lock was
      held; in check mode, those that would be removed.
  returned: always
  type: list
  elements: str
removed:
  description: With O(state=cleanup), the files removed (in check mode, that would be), the lock file last.
  returned: when O(state=cleanup)
  type: list
  elements: str
cleanup:
  description: With O(state=cleanup), why the lock file was removed or kept.
  returned: when O(state=cleanup)
  type: str
  sample: "kept: another process holds the lock"
lock_waited:
  description: Seconds spent waiting for the per-volume lock.
  returned: always
  type: float
volumes:
  description:
    - "With O(volumes), one result per item in the input order. Each is the dict a single-volume task returns (the
      keys documented here, RV(snapshot_id), RV(state), RV(operation), RV(mode), RV(plan), RV(info), RV(chain),
      RV(file_format), RV(compute_status), RV(cinder_report)...; RV(chain) unless O(return_chain=false)) plus
      C(volume_path); an item that failed has
      C(failed=true), its C(msg) and the details of its error (such as C(pending)). The top-level result then has
      only C(changed) (any item changed), RV(volumes) and RV(failed_volumes) (and RV(group) with O(group=true))."
    - Also returned in the failed result of a task where some volumes failed.
  returned: when O(volumes) is given
  type: list
  elements: dict
  sample: [{"volume_path": "/var/lib/cinder/mnt/4f1e2c0d/volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f",
            "changed": true, "snapshot_id": "9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a", "state": "present",
            "operation": "create", "mode": "offline"},
           {"volume_path": "/var/lib/cinder/mnt/4f1e2c0d/volume-5d2c7e1a-8b3f-4a6d-9e0c-1f2a3b4c5d6e",
            "changed": false, "failed": true, "msg": "..."}]
failed_volumes:
  description: With O(volumes), the volume files whose operation failed (empty when none did).
  returned: when O(volumes) is given
  type: list
  elements: str
cinder_report:
  description:
    - What was reported to Cinder with O(report_to_cinder=true). On failure (of the operation or of the report) it
      is returned next to C(msg).
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
    error:
      description:
        - Why the report could not be made (the task then fails); null when it was made or was not needed.
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
           "error": null, "reason": "Cinder is waiting for the compute side (status creating, progress 0%)"}
'''

import functools

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.batch import snapshot_group, snapshot_many
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import DEFAULT_MAX_DEPTH, VOLUME_FORMATS
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.cinder import cinder_api
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.report import cinder_reporter, run_with_report
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import (
    DEFAULT_URI,
    LIBVIRT_IMPORT_ERROR,
    Libvirt,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.module import VolsnapModule
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import (
    openstack_argument_spec,
    openstack_dependency,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.progress import DEFAULT_DIR as PROGRESS_DIR
from ansible_collections.volsnap.openstack.plugins.module_utils._base.progress import recording, volume_targets
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.snapshot import Request, VolumeSnapshot
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import ShareVolume


# the kind of operation (progress records) of each state
KINDS = dict(present='create', absent='delete', resumed='resume', abandoned='abandon', cleanup='cleanup')


class VolumeSnapshotModule(VolsnapModule):
    argument_spec = dict(
        volume_path=dict(type='path'),
        volume_id=dict(type='str'),
        share=dict(type='path'),
        snapshot_id=dict(type='str'),
        state=dict(type='str', choices=['present', 'absent', 'resumed', 'abandoned', 'cleanup'], default='present'),
        mode=dict(type='str', choices=['auto', 'offline', 'online'], default='auto'),
        domain=dict(type='str'),
        disk=dict(type='str'),
        libvirt_uri=dict(type='str', default=DEFAULT_URI),
        quiesce=dict(type='str', choices=['never', 'auto', 'required'], default='auto'),
        volumes=dict(type='list', elements='dict', options=dict(
            volume_path=dict(type='path'),
            volume_id=dict(type='str'),
            snapshot_id=dict(type='str'),
            disk=dict(type='str'),
        ), mutually_exclusive=[('volume_path', 'volume_id')], required_one_of=[('volume_path', 'volume_id')]),
        parallel=dict(type='int', default=4),
        group=dict(type='bool', default=False),
        max_depth=dict(type='int', default=DEFAULT_MAX_DEPTH),
        volume_format=dict(type='str', choices=list(VOLUME_FORMATS)),
        lock_timeout=dict(type='int', default=60),
        timeout=dict(type='int', default=600),
        report_to_cinder=dict(type='bool', default=False),
        progress_dir=dict(type='path', default=PROGRESS_DIR),
        return_chain=dict(type='bool', default=True),
        **openstack_argument_spec(wait=False)
    )
    module_kwargs = dict(
        mutually_exclusive=[('volume_path', 'volume_id'), ('volumes', 'volume_path'), ('volumes', 'volume_id'),
                            ('volumes', 'snapshot_id'), ('volumes', 'disk')],
        required_one_of=[('volume_path', 'volume_id', 'volumes')],
        required_by={'volume_id': 'share'},
        required_if=[('state', 'present', ('snapshot_id', 'volumes'), True),
                     ('state', 'absent', ('snapshot_id', 'volumes'), True)],
    )

    def dependencies(self):
        deps = ()
        if self.params['mode'] == 'online' or self.params['domain']:
            deps += (('libvirt-python', LIBVIRT_IMPORT_ERROR, None),)
        if self.params['report_to_cinder'] and self.params['state'] not in ('resumed', 'abandoned', 'cleanup'):
            deps += (openstack_dependency(),)
        return deps

    def libvirt(self):
        if LIBVIRT_IMPORT_ERROR is not None:
            return None
        return Libvirt(self.params['libvirt_uri'])

    def run_module(self):
        try:
            return self._without_chains(self.run_request())
        except VolsnapError as exc:
            self._without_chains(exc.details)  # a failed batch's items too
            raise

    def _without_chains(self, result):
        """The result (or a failure's details) without the chains when return_chain is false."""
        if not self.params['return_chain']:
            result.pop('chain', None)
            for item in result.get('volumes') or ():
                if isinstance(item, dict):
                    item.pop('chain', None)
        return result

    def run_request(self):
        p = self.params
        if p['state'] in ('resumed', 'abandoned', 'cleanup') and p['report_to_cinder']:
            raise VolsnapError('report_to_cinder needs the snapshot it reports on: finish the interrupted operation '
                               'with state=resumed first, or run state=present/absent with its snapshot_id')
        if p['volumes'] is not None:
            return self.run_volumes()
        if p['group']:
            raise VolsnapError('group=true needs the volumes option: the list of the volumes (disks of one domain) '
                               'of the group snapshot')
        path = p['volume_path'] or ShareVolume.in_share(p['share'], p['volume_id']).path
        request = Request(volume_path=path, snapshot_id=p['snapshot_id'], state=p['state'], mode=p['mode'],
                          domain=p['domain'], disk=p['disk'], quiesce=p['quiesce'], share=p['share'],
                          max_depth=p['max_depth'], lock_timeout=p['lock_timeout'], timeout=p['timeout'],
                          volume_format=p['volume_format'])
        qemu = QemuImg(self.module.run_command, self.module.get_bin_path('qemu-img', required=True))
        snapshot = VolumeSnapshot(request, qemu, self.libvirt, self.check_mode)
        targets = volume_targets(path, p['share'], p['volume_id'], snapshot_id=p['snapshot_id'])
        with recording(p['progress_dir'], 'snapshot_' + KINDS[p['state']], 'volume_snapshot', targets,
                       warn=self.module.warn, enabled=not self.check_mode):
            if not p['report_to_cinder']:
                return snapshot.run()
            return run_with_report(snapshot.run, cinder_reporter(p, self.check_mode), request.operation)

    def run_volumes(self):
        p = self.params
        if p['parallel'] < 1:
            raise VolsnapError('parallel must be 1 or more (it is %d): how many volumes are worked on at once'
                               % p['parallel'])
        qemu = QemuImg(self.module.run_command, self.module.get_bin_path('qemu-img', required=True))
        cinder = functools.partial(cinder_api, p) if p['report_to_cinder'] else None
        if p['group']:
            return snapshot_group(p, qemu, self.libvirt, self.check_mode, cinder)
        return snapshot_many(p, qemu, self.libvirt, self.check_mode, cinder, want_diff=self.module._diff)


def main():
    VolumeSnapshotModule().execute()


if __name__ == '__main__':
    main()
