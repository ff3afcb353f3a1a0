# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # Where long operations write their progress (module_utils/_base/progress.py) and operation_info reads it.
    DOCUMENTATION = r'''
options:
  progress_dir:
    description:
      - The host-local directory of progress records, one JSON file per operation, where the modules that run long
        work (M(volsnap.openstack.volume_snapshot), M(volsnap.openstack.volume_clone),
        M(volsnap.openstack.rbd_image_clone_upload)) write their progress and M(volsnap.openstack.operation_info)
        reads it (from another task, for example while the long task runs with C(async) and C(poll=0)).
      - Created with mode 0700 (and its missing parents) by the first operation that records; a directory that is a
        symbolic link, is not owned by the user the module runs as, or is writable by others is refused.
      - The writer and the reader must run as the same user (C(become) alike) and use the same directory.
      - Recording never makes an operation fail; when the directory cannot be used, the module warns once and goes on
        without recording.
    type: path
    default: /var/tmp/volsnap.openstack/progress
'''
