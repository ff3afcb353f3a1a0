# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # The rules on names in a share, decided in one place (module_utils/_nfs/share.py) for every module.
    DOCUMENTATION = r'''
options: {}
notes:
  - "Names in the share are judged as hostile input, by one set of rules shared by every module. A volume's files
    are C(volume-<volume id>) and C(volume-<volume id>.<snapshot uuid>); each entry of its C(.info) file
    (C(active) and every snapshot) must name one of them, and it must be a regular file in the share, not a
    symbolic link. An entry naming another volume's file, the C(.info) file itself, a lock file, a journal or any
    other name (C(info_foreign_entry)), or a file of the volume that is a link or not a regular file
    (C(info_entry_not_regular)), makes the chain unsafe; the C(.info) file itself must be a regular file
    (C(info_invalid) otherwise). The modules that change files refuse an unsafe chain before they touch any file."
  - "The collection's own files in the share: the lock C(.volsnap-nfs-<volume id>.lock), the journal
    C(.volsnap-volume-<volume id>.journal), temporary files C(.<name>.<16 hex digits>.volsnap-tmp) (atomic rewrites
    of the C(.info) file, the journal and the clone's sidecar) and C(.<file>.volsnap-tmp) (a new overlay or clone
    output before its rename). Every one is opened without following symbolic links (C(O_NOFOLLOW)) and created
    with C(O_CREAT|O_EXCL) with its final owner and mode before any data is written; qemu-img writes a new overlay
    or clone output through the module's descriptor of that file. A link planted under any of these names is
    refused or replaced, never followed: nothing outside the share is created, written or renamed."
'''
