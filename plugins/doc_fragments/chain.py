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
notes:
  - Image headers are parsed in pure Python by reading only header bytes; qemu is never asked to probe the
    format of a file, so a guest that wrote an image header into a raw volume cannot make it be read as that
    format (OSSA 2014-033, CVE-2024-32498).
'''
