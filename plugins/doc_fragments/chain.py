# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # Options bounding how a backing chain is read (shared by every module that walks one).
    DOCUMENTATION = r'''
options:
  share:
    description:
      - The directory every file of the chain must stay inside (the NFS share's mount point).
      - A backing file or external data file that resolves outside it (absolute path, C(..), symlink) makes the chain unsafe.
      - Defaults to the directory of the volume file.
    type: path
  max_depth:
    description:
      - The deepest chain that is read; a deeper one is reported as C(chain_too_deep) and is unsafe.
    type: int
    default: 100
  volume_format:
    description:
      - The format Cinder knows for the base volume file C(volume-<volume id>), V(raw) or V(qcow2). The format of a
        file is never taken from its content alone (a guest can write any image header into a raw volume, OSSA
        2014-033); see the notes for where each layer's format comes from.
      - Cinder's NFS driver creates volume files raw, or qcow2 with C(nfs_qcow2_volumes = true) in the backend's
        section of cinder.conf, and records the format of each volume in its admin metadata (key C(format), plus
        C(base_format), the format of C(volume-<id>), once the volume has had snapshots). The API does not show
        admin metadata; read it in Cinder's database (table C(volume_admin_metadata), for example
        C(SELECT key, value FROM volume_admin_metadata WHERE volume_id = '<id>' AND deleted = 0)).
      - Volumes that Cinder creates from an image are raw files whatever C(nfs_qcow2_volumes) says (Cinder 29
        converts the image to raw over the new file).
      - When not set, the base volume file is raw unless the overlay above it declares its format (a volume with
        snapshots); a qcow2 volume without snapshots then needs V(qcow2) here. When set, the backing format that
        the overlay above C(volume-<id>) declares must be this format too.
      - Content of another format, or trusted sources that disagree, are reported as C(format_mismatch), which makes
        the chain unsafe; the modules that change files then refuse and change nothing.
    type: str
    choices: [raw, qcow2]
notes:
  - Image headers are parsed in pure Python by reading only header bytes; qemu is never asked to probe the
    format of a file, so a guest that wrote an image header into a raw volume cannot make it be read as that
    format (OSSA 2014-033, CVE-2024-32498).
  - "The format of each layer comes from trusted sources, never from the layer's content alone: the top file, when
    it is a snapshot file C(volume-<id>.<snapshot id>) (the active file the C(.info) file names), is qcow2 (Cinder and
    Nova create only qcow2 overlays); the base file C(volume-<id>) has the format O(volume_format), raw when it is not
    set. A layer below an overlay has the backing format the overlay declares in its header (written when the overlay
    was created), and C(volume-<id>) must also have O(volume_format) when it is set. The C(<driver type>) of each layer
    that a running domain's XML declares (Nova's knowledge) is trusted too, and so is the C(format) option of
    M(volsnap.openstack.qcow2_chain_info) for the top file. All the sources that speak of a layer must
    agree, and the layer's content must have that format, else the chain is unsafe (C(format_mismatch)). Only files
    outside Cinder's naming that nothing declares are judged by their content."
  - qemu-img is always given these trusted formats (C(-f), C(-F), C(backing_fmt)); a new overlay declares the format
    of the file it is created on as the trusted sources give it, and a clone reads the snapshot's data with its
    trusted format.
'''
