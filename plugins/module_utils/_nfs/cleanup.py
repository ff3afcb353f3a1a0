# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the collection leaves in a share for one volume, and its removal (``volume_snapshot state=cleanup``).

* stale temporary files of the volume (:meth:`._nfs.volume.ShareVolume.stale_temporaries`: an atomic rewrite of its
  ``.info`` file or journal, or a new overlay, killed before its rename): removed under the volume's lock;
* the lock file ``.volsnap-nfs-<volume id>.lock`` of a volume that no longer exists (Cinder deleted it: no
  volume file, snapshot file, ``.info`` file or journal is left): removed only when no process holds the lock
  (:func:`._nfs.lock.remove_unused_lock`).

Nothing else is ever removed, no link is followed, and check mode says what would go.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.lock import remove_unused_lock
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import ShareVolume


def cleanup_volume(volume: ShareVolume, lock_timeout: float, check_mode: bool) -> Dict[str, Any]:
    """Remove (or, in check mode, list) what the collection left in the share for ``volume``."""
    directory, volume_name = volume.directory, volume.name
    if not os.path.isdir(directory):
        raise VolsnapError('the share %s does not exist' % directory)
    removed: List[str]
    waited = 0.0
    files = volume.files()
    if files:
        why = 'kept: the volume still has files (%s%s)' % (', '.join(files[:4]), ', ...' if len(files) > 4 else '')
        if not volume.stale_temporaries():
            removed = []
        elif check_mode and not os.path.lexists(volume.lock_path):
            removed = volume.stale_temporaries()
        else:
            lock = volume.lock(lock_timeout)
            with lock:
                removed = volume.remove_stale_temporaries(check_mode)
            waited = lock.waited
    else:
        removed, why = remove_unused_lock(directory, volume.volume_id, volume_name, check_mode)
    verb = 'would remove' if check_mode else 'removed'
    plan = ['%s %s' % (verb, path) for path in removed]
    return {
        'changed': bool(removed),
        'removed': removed,
        'cleanup': why,
        'plan': plan,
        'lock_waited': round(waited, 3),
        'diff': {'before': ''.join('%s\n' % os.path.basename(p) for p in removed), 'after': '',
                 'before_header': '%s: files of %s left by the collection' % (directory, volume_name),
                 'after_header': directory},
    }
