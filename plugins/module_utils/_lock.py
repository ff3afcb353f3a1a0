# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-volume lock (Cinder's ``nfs-<volume id>``), as a POSIX record lock on a file in the share.

``fcntl.lockf`` locks are forwarded to the NFS server (NLM for NFSv3, built into NFSv4), so two
hosts that mount the same share serialise on the same volume; other volumes are never blocked.
The lock is released by the kernel when the holder dies, so a killed run never leaves it held.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Optional

from ansible_collections.volsnap.openstack.plugins.module_utils._errors import VolsnapError


def lock_path_for(directory: str, volume_id: str) -> str:
    # Not ".nfs*": that prefix belongs to the NFS client's silly-renamed files.
    return os.path.join(directory, '.volsnap-nfs-%s.lock' % volume_id)


class VolumeLock(object):
    def __init__(self, directory: str, volume_id: str, timeout: float) -> None:
        self.path = lock_path_for(directory, volume_id)
        self.name = 'nfs-%s' % volume_id
        self.timeout = timeout
        self.fd: Optional[int] = None
        self.waited = 0.0

    def acquire(self) -> None:
        start = time.monotonic()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o600)
        delay = 0.01
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() - start >= self.timeout:
                os.close(fd)
                raise VolsnapError('timed out after %.0f s waiting for the volume lock %s (%s): another operation on '
                                   'this volume is running; retry later or raise lock_timeout'
                                   % (self.timeout, self.name, self.path))
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        self.fd = fd
        self.waited = time.monotonic() - start

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self) -> 'VolumeLock':
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
