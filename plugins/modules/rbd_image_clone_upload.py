#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: rbd_image_clone_upload
short_description: Upload an RBD-backed Cinder volume to Glance, as a copy-on-write clone when possible
version_added: 1.0.0
description:
  - Makes a Glance image from a Cinder volume on Ceph RBD (spec 003, "optimize upload volume to image for RBD").
  - "Clone path: when O(enable_clone_optimization=true) and Glance's target store is of type rbd on the same Ceph
    cluster (fsid) as the volume, the module snapshots the volume as C(<image id>.clone_snap), protects the snapshot,
    clones it into Glance's pool as C(<image id>), snapshots the clone C(snap) and protects it (glance_store's layout),
    and registers C(rbd://<fsid>/<pool>/<image id>/snap) with Glance. The image is active in about a second whatever
    the volume's size."
  - "Copy in the cluster (ceph_copy path): when O(copy_in_cluster=true) and Glance's target store is rbd on the
    volume's cluster, librbd copies the allocated extents of a temporary snapshot C(<image id>.upload_snap) into a new
    RBD image C(<image id>) in Glance's pool (sparse, no parent), snapshots it C(snap), protects it, removes the
    temporary snapshot and registers C(rbd://<fsid>/<pool>/<image id>/snap). The image does not depend on the volume
    (the volume can be deleted at once) and the time grows with the data the volume holds, not with its size. See
    O(checksum_by) for the image's checksum and hash."
  - "Copy path otherwise: the data of a temporary snapshot C(<image id>.upload_snap) is streamed into Glance through
    the image data API (unallocated extents are not read from Ceph), so the module works with every store."
  - "Dependencies: the clone keeps the volume's snapshot. The snapshot is named as Cinder's RBD driver names the snapshot
    of a clone, so deleting the volume in Cinder works: Cinder keeps the RBD image as C(volume-<id>.deleted) until
    the image is gone. Glance does not clean up parents when it deletes an image: use O(state=absent) to delete an
    image made here, or run O(state=cleanup) periodically after images were deleted in Glance; both remove the
    snapshot and a C(.deleted) volume left only for it."
  - O(state=absent) deletes the image in Glance and then releases the Ceph references its clone held.
    O(state=cleanup) removes, in O(volume_pool), this module's snapshots whose image is gone and deleted Cinder volumes
    kept only for them.
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - volsnap.openstack.openstack
  - volsnap.openstack.openstack.wait
  - volsnap.openstack.ceph
  - volsnap.openstack.progress
attributes:
  check_mode:
    support: full
    details:
      - Returns the path, the reason and the planned steps in RV(plan); nothing is created, written or removed.
  diff_mode:
    support: full
    details:
      - Shows the Glance image before and after, and the steps.
  idempotent:
    support: full
    details:
      - An active image made from the same volume by this module (found by O(image_id), or by O(image_name) and its
        C(volsnap_source) property) is no change. A run interrupted at any step is completed by the next run.
options:
  state:
    description:
      - V(present) makes sure the image exists, active, with the volume's data.
      - V(absent) deletes the image in Glance and removes the snapshot its clone hung on (and a deleted Cinder volume,
        C(volume-<id>.deleted), kept only for it). Without O(flatten_children), an image that volumes were cloned from
        is refused, as Glance refuses to delete it.
      - V(cleanup) removes, in O(volume_pool), the snapshots this module made whose image no longer exists (deleted in
        Glance) and deleted Cinder volumes left with no snapshot. Snapshots with clones, or whose image is still
        being uploaded, are kept.
    type: str
    choices: [present, absent, cleanup]
    default: present
  volume:
    description:
      - The Cinder volume to upload, by id or name. Its RBD image is O(volume_pool)/O(volume_name_template) % id.
      - Mutually exclusive with O(rbd_image).
    type: str
  rbd_image:
    description:
      - The RBD image in O(volume_pool) to upload, when there is no Cinder volume to look up.
    type: str
  volume_pool:
    description:
      - The RBD pool of the volumes (Cinder's C(rbd_pool)).
    type: str
    default: volumes
  volume_name_template:
    description:
      - "Cinder's C(volume_name_template): the RBD image name of a volume, C(%s) being its id."
    type: str
    default: volume-%s
  image_name:
    description:
      - Name of the image to create. A rerun finds the image by this name and its C(volsnap_source) property.
    type: str
  image_id:
    description:
      - An existing image to fill instead of creating one; it must be C(queued) (or already made from this volume).
      - With O(state=absent), the image to delete.
    type: str
  visibility:
    description:
      - Visibility of a new image. Unset leaves Glance's default (C(shared)).
    type: str
    choices: [public, private, shared, community]
  properties:
    description:
      - Extra image properties (values are sent as strings). The module adds C(volsnap_source)
        (C(<fsid>/<pool>/<rbd image>)) and C(volsnap_upload_path) (V(clone) or V(copy)).
    type: dict
    default: {}
  disk_format:
    description:
      - The image's disk format. The volume's data is raw, and Cinder clones only raw images.
    type: str
    choices: [raw]
    default: raw
  container_format:
    description:
      - The image's container format.
    type: str
    choices: [bare]
    default: bare
  store:
    description:
      - The Glance store to upload to (an id from C(GET /v2/info/stores)). Unset means Glance's default store.
    type: str
  enable_clone_optimization:
    description:
      - Take the clone path when the target store allows it (spec 003's C(enable_clone_optimization), off by default).
      - "Security: on the clone path no data passes through Glance during the upload, so Glance does not compute the
        image's C(checksum) and C(os_hash_value) while storing it, as it does for the copy path. Glance 2024.2 and
        newer with C(do_secure_hash=true) compute them afterwards in the background (reading the image once); with the
        older JSON-patch location API, or C(do_secure_hash=false), the image has no checksum or hash, and consumers
        that verify them (or image signatures) cannot."
      - The Ceph user (O(ceph_user)) then needs write access to Glance's pool, C(osd 'profile rbd pool=<images pool>'),
        and the cloud user must be allowed to register rbd locations (see O(location_api)).
      - "The clone reads its parent, the volume's snapshot, in O(volume_pool): every Ceph client that reads the image
        needs read access there too, C(osd 'profile rbd-read-only pool=<volume pool>') for Glance's C(rbd_store_user)
        (Glance opens the image when the location is registered and when serving it) and for Nova's user. Without it
        Glance answers HTTP 500 and the module says so and rolls back."

    type: bool
    default: false
  copy_in_cluster:
    description:
      - Make an image independent of the volume by copying the data inside the Ceph cluster (the ceph_copy path) when
        the target store is rbd on the volume's cluster, instead of streaming it through Glance. The volume can be
        deleted right after the upload; the image has no RBD parent.
      - Excludes O(enable_clone_optimization) (a clone depends on the volume's snapshot).
      - The Ceph user (O(ceph_user)) needs write access to Glance's pool, C(osd 'profile rbd pool=<images pool>'), and
        the location is registered with Glance as on the clone path (see O(location_api), O(checksum_by)).
      - "Measured on the project's lab (memstore OSD, loaded 2-core machine): 1 GiB holding 256 MiB in 2.1 s against
        17 s through Glance; 10 GiB and 100 GiB holding the same data in 2.5 s and 3.7 s (see benchmarks/README.md)."
    type: bool
    default: false
  checksum_by:
    description:
      - With O(copy_in_cluster), who computes the image's C(checksum) (md5) and C(os_hash_value) (O(hash_algo)); no
        data passes through Glance, so Glance does not hash it while storing it.
      - "V(glance) registers the location with C(POST /v2/images/{id}/locations) without validation data (this needs a
        token with the C(service) role, and Glance 2024.2 or newer with its default C(do_secure_hash=true)): Glance
        activates the image at once and then reads the whole image in the background to set the checksum and hash.
        The module does not wait for them; until Glance is done they are unset, and RV(checksum_by) says V(glance).
        The module's time grows with the data the volume holds only."
      - "V(module) computes both while uploading, reading the copy (holes are hashed as zeros without being read), and
        sends them with the location as validation data (either location API). Every byte of the size is hashed:
        7 to 10 s per GiB of size on the loaded 2-core lab (md5 and sha512 in two threads), so 100 GiB thin costs
        minutes."
      - V(auto) is V(glance) when the locations API is sure to be taken (O(location_api=locations), or V(auto) with a
        token that has the C(service) role), else V(module).
    type: str
    choices: [auto, glance, module]
    default: auto
  hash_algo:
    description:
      - The algorithm of C(os_hash_value) when O(checksum_by) resolves to V(module). Use Glance's
        C(hashing_algorithm) (C(sha512) by default).
    type: str
    default: sha512
  fallback_to_copy:
    description:
      - With O(enable_clone_optimization=true) or O(copy_in_cluster=true), take the copy path when the clone or
        ceph_copy path is not possible (the target store is not rbd, is on another Ceph cluster, or Glance hides its
        details), saying why in RV(why).
      - V(false) makes that an error instead, for example to refuse a slow copy when the stores are misconfigured.
    type: bool
    default: true
  force:
    description:
      - Upload an C(in-use) (attached) volume, or an RBD image open by a client, as Cinder's upload-to-image C(--force).
        The image is then crash-consistent only.
    type: bool
    default: false
  max_clone_depth:
    description:
      - Cinder's C(rbd_max_clone_depth). When the volume already has this many clone parents, the new clone is
        flattened (Ceph copies the data inside the cluster) and the volume's snapshot removed. V(0) always flattens.
    type: int
    default: 5
  flatten_children:
    description:
      - With O(state=absent), flatten the RBD clones of the image (volumes created from it) first, so that Glance can
        delete it.
    type: bool
    default: false
  location_api:
    description:
      - How the clone's location is registered with Glance.
      - V(locations) is C(POST /v2/images/{id}/locations) (Glance 2024.2 and newer). Glance accepts non-http locations
        there only from users with the C(service) role (Cinder uses its service user).
      - V(patch) is the older JSON-patch C(add /locations/-), which needs C(show_multiple_locations=true) in Glance.
      - V(auto) tries V(locations) first, or V(patch) first when the token lacks the C(service) role (Glance refuses
        the other to such users), then the other one.
      - V(patch) answers with the active image at once. After V(locations) Glance activates the image a moment
        later and, with its default C(do_secure_hash), reads the whole image in the background to checksum it.
    type: str
    choices: [auto, locations, patch]
    default: auto
notes:
  - "Cinder's RBD driver deletes a volume that has a C(*.clone_snap) snapshot by renaming it C(volume-<id>.deleted);
    Glance deletes an image whose C(snap) has no clones (a volume created from the image is a clone: Glance answers
    HTTP 409 then, as for any RBD image). Neither removes the volume snapshot a deleted clone image hung on: O(state=absent)
    does it when deleting the image, O(state=cleanup) afterwards."
  - Run it where both the Ceph bindings and openstacksdk are importable by the module's Python (for example a
    controller with C(python3-rados), C(python3-rbd) and openstacksdk for the system Python).
  - O(timeout) bounds the wait for the image to become active (and, with O(state=absent), gone), not the data copy.
  - Glance needs the admin or service role to show store details (C(GET /v2/info/stores/detail)); without them the
    module cannot see that the store is rbd and takes the copy path, saying so in RV(why).
seealso:
  - name: Spec 003, optimize upload volume to image for RBD
    description: The Cinder specification this module implements outside Cinder.
    link: https://specs.openstack.org/openstack/cinder-specs/specs/2023.2/optimize-upload-volume-to-rbd-store.html
  - module: openstack.cloud.image
    description: >-
      Creates and deletes Glance images, uploading their data from a file where the module runs. Use it for
      images from files; use this module to make an image from a Cinder volume (or RBD image) on Ceph, as a
      copy-on-write clone in Glance's pool or by a sparse copy, without a file in between.
  - module: openstack.cloud.volume
    description: >-
      Creates and deletes Cinder volumes, also from an image (the other direction). Use it to make the volumes
      this module uploads, or volumes from the images it made.
'''

EXAMPLES = r'''
- name: Upload a volume as a copy-on-write clone when Glance stores images in the same Ceph cluster
  volsnap.openstack.rbd_image_clone_upload:
    cloud: mycloud
    volume: db-volume
    image_name: db-golden
    enable_clone_optimization: true
    ceph_user: cinder
    keyring: /etc/ceph/ceph.client.cinder.keyring
  register: upload

- name: Show which path was taken and why
  ansible.builtin.debug:
    msg: "{{ upload.path }} in {{ upload.seconds.total }} s: {{ upload.why }}"

- name: Upload an independent copy made inside the Ceph cluster (the volume may be deleted afterwards)
  volsnap.openstack.rbd_image_clone_upload:
    cloud: mycloud-service-user
    volume: db-volume
    image_name: db-backup
    copy_in_cluster: true
    ceph_user: cinder
    keyring: /etc/ceph/ceph.client.cinder.keyring
  register: copied

- name: Delete that image and release the volume snapshot its clone used
  volsnap.openstack.rbd_image_clone_upload:
    cloud: mycloud
    state: absent
    image_id: "{{ upload.image_id }}"
    ceph_user: cinder
    keyring: /etc/ceph/ceph.client.cinder.keyring

- name: Periodically remove what images deleted directly in Glance left behind
  volsnap.openstack.rbd_image_clone_upload:
    cloud: mycloud
    state: cleanup
    ceph_user: cinder
    keyring: /etc/ceph/ceph.client.cinder.keyring
'''

RETURN = r'''
path:
  description: V(clone), V(ceph_copy) or V(copy), the way the image was (or would be) made; null for O(state=absent)
    and V(cleanup).
  returned: always
  type: str
  sample: clone
why:
  description: Why that path (or that action) was chosen.
  returned: always
  type: str
  sample: "enable_clone_optimization is true and Glance store rbd is rbd (pool images) on the volume's cluster ..."
image_id:
  description: The Glance image id (null in check mode when the image would be created).
  returned: always
  type: str
location:
  description: The rbd location registered for the clone path (C(rbd://<fsid>/<pool>/<image id>/snap)).
  returned: always
  type: str
image:
  description: The Glance image after the run (id, name, status, size, checksum, os_hash_value, locations, the
    C(volsnap_) properties).
  returned: when the image exists
  type: dict
plan:
  description: The steps run (or, in check mode, that would run); empty when nothing changed.
  returned: always
  type: list
  elements: str
notes:
  description: Remarks on the plan (for example that the clone is flattened).
  returned: when O(state=present)
  type: list
  elements: str
resumed:
  description: True when the run completed an image an interrupted run had started.
  returned: when O(state=present)
  type: bool
source:
  description: The source RBD image (pool, image, fsid, size in bytes, Cinder id and status, clone depth).
  returned: when O(state=present)
  type: dict
store:
  description: The target Glance store (id, default, type, pool, fsid, thin_provisioning).
  returned: when O(state=present)
  type: dict
seconds:
  description:
    - Time spent. C(total) for the run, C(ceph) for the Ceph steps only, C(phases) per step (discovery, each step).
  returned: always
  type: dict
  sample: {"total": 0.41, "ceph": 0.12, "phases": {"clone": 0.03, "register_location": 0.05}}
progress:
  description: Copy path only, samples of the upload (seconds, bytes, data_bytes_read, percent).
  returned: when data was copied
  type: list
  elements: dict
location_api:
  description: The Glance API the location was registered with (V(locations) or V(patch)).
  returned: when O(state=present)
  type: str
checksum_by:
  description: On the ceph_copy path, who computes the image's checksum and hash (V(glance) in the background after
    the run, or V(module) during the run), O(checksum_by) resolved.
  returned: when the path is ceph_copy
  type: str
  sample: glance
copied:
  description: On the ceph_copy path, the bytes written into the copy (C(bytes_written); zeros are not written) and
    the image's C(size).
  returned: when the ceph_copy path copied data
  type: dict
  sample: {"bytes_written": 268435456, "size": 1073741824}
removed:
  description: With O(state=absent) or V(cleanup), what was removed (or flattened).
  returned: when O(state) is absent or cleanup
  type: list
  elements: str
kept:
  description: With O(state=cleanup), snapshots of this module that were kept, and why.
  returned: when O(state=cleanup)
  type: list
  elements: dict
'''

from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import (
    ceph_argument_spec,
    rados_dependency,
    rbd_dependency,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import is_uuid
from ansible_collections.volsnap.openstack.plugins.module_utils._base.module import VolsnapModule
from ansible_collections.volsnap.openstack.plugins.module_utils._base.progress import DEFAULT_DIR as PROGRESS_DIR
from ansible_collections.volsnap.openstack.plugins.module_utils._base.progress import recording
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import (
    openstack_argument_spec,
    openstack_dependency,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.upload import Options, Upload


# the kind of operation (progress records) of each state; a copy upload says upload_copy once its copy starts
KINDS = dict(present='upload', absent='image_delete', cleanup='upload_cleanup')


class RbdImageCloneUploadModule(VolsnapModule):
    argument_spec = openstack_argument_spec(
        wait=True,
        state=dict(type='str', choices=['present', 'absent', 'cleanup'], default='present'),
        volume=dict(type='str'),
        rbd_image=dict(type='str'),
        volume_pool=dict(type='str', default='volumes'),
        volume_name_template=dict(type='str', default='volume-%s'),
        image_name=dict(type='str'),
        image_id=dict(type='str'),
        visibility=dict(type='str', choices=['public', 'private', 'shared', 'community']),
        properties=dict(type='dict', default={}),
        disk_format=dict(type='str', choices=['raw'], default='raw'),
        container_format=dict(type='str', choices=['bare'], default='bare'),
        store=dict(type='str'),
        enable_clone_optimization=dict(type='bool', default=False),
        force=dict(type='bool', default=False),
        max_clone_depth=dict(type='int', default=5),
        flatten_children=dict(type='bool', default=False),
        fallback_to_copy=dict(type='bool', default=True),
        copy_in_cluster=dict(type='bool', default=False),
        checksum_by=dict(type='str', choices=['auto', 'glance', 'module'], default='auto'),
        hash_algo=dict(type='str', default='sha512'),
        location_api=dict(type='str', choices=['auto', 'locations', 'patch'], default='auto'),
        progress_dir=dict(type='path', default=PROGRESS_DIR),
        **ceph_argument_spec()
    )
    module_kwargs = dict(
        mutually_exclusive=[('volume', 'rbd_image')],
    )

    def dependencies(self):
        return (rados_dependency(), rbd_dependency(), openstack_dependency())

    def run_module(self):
        p = self.params
        opts = Options(**{name: p[name] for name in Options.__dataclass_fields__ if name in p})
        volume = p['volume'] or p['rbd_image']
        targets = dict(volume_id=volume if is_uuid(volume or '') else None, volume=volume, image_id=p['image_id'])
        with recording(p['progress_dir'], KINDS[p['state']], 'rbd_image_clone_upload', targets,
                       warn=self.module.warn, enabled=not self.check_mode):
            return Upload(opts, p, self.check_mode, log=self.module.log).run()


def main():
    RbdImageCloneUploadModule().execute()


if __name__ == '__main__':
    main()
