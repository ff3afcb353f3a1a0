#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: qcow2_chain_info
short_description: Read and judge the qcow2 backing chain of a volume file
version_added: 1.0.0
description:
  - Reads the backing chain of a file-based volume (Cinder NFS/RemoteFS layout, or any image file) from the
    image headers, or the chain a running libvirt domain uses for one of its disks (read from the domain XML,
    as the Nova volume snapshot improvements spec asks).
  - Reports every layer from the active file down to the base with its format (detected from content),
    sizes, backing link, qcow2 details, and the Cinder snapshot that owns it (from the volume's C(.info) file).
  - Judges whether the chain is safe to hand to qemu and Cinder, and lists every problem found.
  - Headers are parsed in pure Python from header bytes only; qemu is never asked to probe a file.
author:
  - volsnap.openstack contributors (@volsnap)
extends_documentation_fragment:
  - volsnap.openstack.attributes
  - volsnap.openstack.attributes.INFO_MODULE
  - volsnap.openstack.chain
  - volsnap.openstack.share
  - volsnap.openstack.libvirt
options:
  path:
    description:
      - The volume file to start from.
      - When it is a Cinder base volume file (C(volume-<id>)) with a C(volume-<id>.info) file beside it, the walk
        starts at the active file that the C(.info) file names (see O(follow_info)).
      - Mutually exclusive with O(domain).
    type: path
  domain:
    description:
      - Name or UUID of a libvirt domain whose disk chain is read from its XML.
      - The chain libvirt declares is compared with the image headers; any difference is a problem.
    type: str
  disk:
    description:
      - With O(domain), the disk to read, by target dev (for example C(vdb)) or by C(<serial>), which Nova sets
        to the Cinder volume id.
    type: str
  format:
    description:
      - The format the top file is known to have. A file declared raw whose content looks like an image format is
        reported as C(format_mismatch).
      - It is one more trusted source for the top file (see the notes); all the sources that speak of a file must
        agree. For the base volume file C(volume-<id>), prefer O(volume_format), which applies wherever that file is in
        the chain, at the top or below snapshot overlays.
      - With O(domain), the format libvirt declares for each layer of the disk is trusted as well.
    type: str
    choices: [raw, qcow2, qed, vmdk, vhd, vhdx, vdi, luks, iso]
  follow_info:
    description:
      - When O(path) is a Cinder base volume file, start at the active file its C(.info) file names.
    type: bool
    default: true
  fail_on_unsafe:
    description:
      - Fail when the chain is unsafe, with the problems in the message and in the result.
      - Set to V(false) to inspect an unsafe chain; RV(safe) and RV(problems) then say what is wrong.
    type: bool
    default: true
  engine:
    description:
      - V(native) reads headers in Python only.
      - V(qemu-img) also runs C(qemu-img info -f <detected format> --output=json) on each layer that has no
        error finding and reports any disagreement as C(engine_mismatch). qemu-img is always given the format.
    type: str
    choices: [native, qemu-img]
    default: native
notes:
  - "Every header is judged by the checks qemu itself makes when it opens the file, so that a chain called safe is one
    qemu opens, with the same files, formats and sizes (a differential test against qemu-img checks it): qcow2 version,
    cluster size, header length, table sizes and offsets (L1, refcount, snapshots, bitmaps), virtual size against
    the L1 table (qemu's C(Image is too big)), refcount order, subclusters, compression type, header extensions, crypto
    header; vmdk sparse headers and their descriptor; VHD checksum and dynamic header; VHDX checksums, log, metadata
    and BAT; VDI header; LUKS1 key slots and ciphers (LUKS2, which qemu cannot read, is refused). What qemu refuses is
    C(invalid_header)."
  - "A backing file or data file name that qemu parses as a protocol (C(json:{...}), C(file:), C(nbd:), C(http:), any
    C(<word>:) before the first C(/)) is never a file of the share, whatever file of that literal name exists there:
    C(backing_protocol) and C(data_file_protocol) make the chain unsafe. A backing format must be a qemu image format
    driver (C(raw), C(qcow2), C(qed), C(vmdk), C(vpc), C(vhdx), C(vdi), C(luks)): a protocol driver such as C(file) or
    an unknown name is C(backing_format_not_allowed)."
  - "Problem codes (severity error unless noted): C(invalid_header), C(not_regular_file), C(outside_share),
    C(backing_outside_share), C(absolute_backing_path) (warning), C(missing_backing_file), C(unreadable_backing_file),
    C(backing_loop), C(chain_too_deep), C(external_data_file), C(unknown_incompatible_features), C(corrupt),
    C(dirty) (warning), C(format_mismatch), C(backing_format_unspecified) (warning), C(backing_name_not_allowed),
    C(invalid_backing_name), C(format_not_allowed) (qed), C(vmdk_external_extent), C(vmdk_unsupported_type),
    C(vmdk_parent), C(unsupported_differencing_image), C(legacy_aes_encryption), C(backing_protocol),
    C(data_file_protocol), C(backing_format_not_allowed), C(info_invalid),
    C(info_missing), C(info_missing_file), C(info_file_not_in_chain), C(snapshot_file_not_in_info),
    C(orphan_snapshot_file) (warning), C(libvirt_chain_mismatch), C(engine_mismatch), C(engine_error)."
seealso:
  - name: qcow2 format specification
    description: The header layout this module parses.
    link: https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qcow2.rst
'''

EXAMPLES = r'''
- name: Read the chain of a Cinder NFS volume (starts at the active file named by the .info file)
  volsnap.openstack.qcow2_chain_info:
    path: /var/lib/cinder/mnt/4f1e2c0d/volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
  register: chain

- name: Show which snapshot owns which file
  ansible.builtin.debug:
    msg: "{{ chain.chain | map(attribute='snapshot_id') | list }}"

- name: Inspect a possibly unsafe file without failing, cross-checked with qemu-img
  volsnap.openstack.qcow2_chain_info:
    path: /srv/images/suspect.qcow2
    share: /srv/images
    fail_on_unsafe: false
    engine: qemu-img
  register: suspect

- name: Read the chain a running instance uses for a Cinder volume
  volsnap.openstack.qcow2_chain_info:
    domain: instance-0000002a
    disk: 0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f
    share: /var/lib/nova/mnt/4f1e2c0d
'''

RETURN = r'''
path:
  description: The file the walk was asked to start from.
  returned: always
  type: str
active:
  description: File name of the top (active, writable) layer.
  returned: always
  type: str
  sample: volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f.9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a
active_path:
  description: Path of the top layer.
  returned: always
  type: str
share:
  description: The resolved directory every file had to stay inside.
  returned: always
  type: str
volume_name:
  description: The Cinder volume file name (C(volume-<id>)) when the files follow Cinder's naming, else null.
  returned: always
  type: str
info_file:
  description: Path of the volume's C(.info) file when the files follow Cinder's naming (it may not exist).
  returned: always
  type: str
snapshots:
  description: The snapshot id to file name map of the C(.info) file (empty without one).
  returned: always
  type: dict
depth:
  description: Number of layers read.
  returned: always
  type: int
chain:
  description: One entry per layer, from the active file to the base.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: Path of the file.
      type: str
    filename:
      description: Base name of the file.
      type: str
    format:
      description: Format detected from the content (raw, qcow2, qed, vmdk, vhd, vhdx, vdi, luks, iso).
      type: str
    declared_format:
      description: The format the layer above (or libvirt, or O(format)) declares for this file.
      type: str
    expected_format:
      description:
        - The trusted format of this file (see O(volume_format) and the notes), which its content must have; null for a
          file outside Cinder's naming that nothing declares (its content's format is then used).
      type: str
    format_source:
      description: Which trusted source set RV(chain[].expected_format) (for example C(volume_format)).
      type: str
    virtual_size:
      description: Guest-visible size in bytes.
      type: int
    actual_size:
      description: Bytes allocated on disk.
      type: int
    file_size:
      description: Length of the file in bytes.
      type: int
    cluster_size:
      description: qcow2 cluster size in bytes.
      type: int
    qcow2_version:
      description: qcow2 version (2 or 3).
      type: int
    backing_file:
      description: The backing file name as written in the header.
      type: str
    backing_path:
      description: The backing file resolved against this file's directory.
      type: str
    backing_format:
      description: The backing format declared in the header.
      type: str
    encrypted:
      description: Whether the data is encrypted.
      type: bool
    encryption_format:
      description: C(luks) or C(aes).
      type: str
    dirty:
      description: qcow2 dirty bit.
      type: bool
    corrupt:
      description: qcow2 corrupt bit.
      type: bool
    data_file:
      description: qcow2 external data file name.
      type: str
    extended_l2:
      description: qcow2 extended L2 entries (subclusters).
      type: bool
    compression_type:
      description: qcow2 compression type (zlib or zstd) when the header records one.
      type: str
    incompatible_features:
      description: Names of the known qcow2 incompatible feature bits that are set.
      type: list
      elements: str
    internal_snapshots:
      description: Number of qcow2 internal snapshots.
      type: int
    snapshot_id:
      description: The Cinder snapshot whose C(.info) entry names this file.
      type: str
    data_of_snapshot_id:
      description: The Cinder snapshot whose point-in-time data this file holds (the one whose file is just above).
      type: str
file_format:
  description: File name to detected format, for every layer (the dict the Nova spec sends to Cinder).
  returned: always
  type: dict
  sample: {"volume-0b1e5a04-7c2d-4f6e-9d8a-3a1b2c3d4e5f": "raw"}
safe:
  description: True when no problem of severity error was found.
  returned: always
  type: bool
problems:
  description: Every finding, each with C(code), C(severity) (error or warning), C(message) and C(filename).
  returned: always
  type: list
  elements: dict
domain:
  description: With O(domain), the disk that was read (target, serial, source, format).
  returned: when O(domain) is set
  type: dict
engine_results:
  description: With O(engine=qemu-img), the C(qemu-img info) answer per layer (null for layers not checked).
  returned: when O(engine=qemu-img)
  type: list
  elements: dict
'''

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import (
    DEFAULT_MAX_DEPTH,
    VOLUME_FORMATS,
    inspect_chain,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.image_format import FORMATS
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.libvirt import (
    DEFAULT_URI,
    LIBVIRT_IMPORT_ERROR,
    Libvirt,
    find_disk,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.module import VolsnapModule
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg, cross_check


class Qcow2ChainInfo(VolsnapModule):
    argument_spec = dict(
        path=dict(type='path'),
        domain=dict(type='str'),
        disk=dict(type='str'),
        libvirt_uri=dict(type='str', default=DEFAULT_URI),
        share=dict(type='path'),
        max_depth=dict(type='int', default=DEFAULT_MAX_DEPTH),
        volume_format=dict(type='str', choices=list(VOLUME_FORMATS)),
        format=dict(type='str', choices=list(FORMATS)),
        follow_info=dict(type='bool', default=True),
        fail_on_unsafe=dict(type='bool', default=True),
        engine=dict(type='str', choices=['native', 'qemu-img'], default='native'),
    )
    module_kwargs = dict(
        mutually_exclusive=[('path', 'domain')],
        required_one_of=[('path', 'domain')],
        required_together=[('domain', 'disk')],
    )

    def dependencies(self):
        if self.params['domain']:
            return (('libvirt-python', LIBVIRT_IMPORT_ERROR, None),)
        return ()

    def run_module(self):
        params = self.params
        if params['max_depth'] < 1:
            raise VolsnapError('max_depth must be at least 1, got %d' % params['max_depth'])
        result = {}
        declared = None
        path = params['path']
        if params['domain']:
            conn = Libvirt(params['libvirt_uri'])
            try:
                disk = find_disk(conn.xml(params['domain']), params['disk'])
            finally:
                conn.close()
            result['domain'] = dict(name=params['domain'], target=disk.target, serial=disk.serial,
                                    source=disk.source, format=disk.format)
            declared = disk.declared()
            path = disk.source
        try:
            report = inspect_chain(path, share=params['share'], max_depth=params['max_depth'],
                                   expected_format=params['format'], follow_info=params['follow_info'],
                                   declared=declared, volume_format=params['volume_format'])
        except (IOError, OSError) as exc:
            raise VolsnapError('cannot read %s: %s; give the path of an existing volume file'
                               % (exc.filename or path, exc.strerror or exc))
        if params['engine'] == 'qemu-img':
            binary = self.module.get_bin_path('qemu-img', required=True)
            result['engine_results'] = cross_check(report, QemuImg(self.module.run_command, binary))
        result.update(report.as_dict())
        if params['fail_on_unsafe'] and not report.safe:
            raise VolsnapError('the backing chain of %s is unsafe: %s. Repair or remove the offending files, or set '
                               'fail_on_unsafe=false to inspect the chain' % (report.path, report.summary()), **result)
        return result


def main():
    Qcow2ChainInfo().execute()


if __name__ == '__main__':
    main()
