# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-volume lock (Cinder's ``nfs-<volume id>``), as a POSIX record lock on a file in the share.

``fcntl.lockf`` locks are forwarded to the NFS server (NLM for NFSv3, built into NFSv4), so two
hosts that mount the same share serialise on the same volume; other volumes are never blocked.
The lock is released by the kernel when the holder dies, so a killed run never leaves it held.

The lock file is opened with ``O_NOFOLLOW`` and must be a regular file: a symlink planted under its
name is refused, never followed, so nothing outside the share is ever created through it. Lock files
of volumes that no longer exist are removed by :func:`remove_unused_lock` (``volume_snapshot``
``state=cleanup``), which unlinks the file only while it holds the lock; :meth:`VolumeLock.acquire`
therefore checks, once it holds the lock, that the name still leads to the file it locked, and
starts again with the new file otherwise.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from typing import List, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import fsync_dir
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import (
    ShareFileError,
    lock_filename,
    names_descriptor,
    open_regular,
    remove_stale_temporaries,
    volume_files,
)


def lock_path_for(directory: str, volume_id: str) -> str:
    return os.path.join(directory, lock_filename(volume_id))


def _refused(path: str, exc: ShareFileError) -> VolsnapError:
    return VolsnapError('the lock file %s %s; nothing was changed. It is not a file this collection made: remove it '
                        '(never its target) and run again' % (path, exc.strerror))


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (IOError, OSError) as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False


class VolumeLock(object):
    def __init__(self, directory: str, volume_id: str, timeout: float) -> None:
        self.path = lock_path_for(directory, volume_id)
        self.name = 'nfs-%s' % volume_id
        self.timeout = timeout
        self.fd: Optional[int] = None
        self.waited = 0.0

    def _open(self) -> int:
        try:
            return open_regular(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except ShareFileError as exc:
            raise _refused(self.path, exc)

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds for another holder to release it."""
        self._acquire(True)

    def try_acquire(self) -> bool:
        """One attempt, no wait: True when the lock is held now. A batch takes many volumes' locks this way before
        one listing serves them all: never waiting while it holds others, it cannot deadlock."""
        return self._acquire(False)

    def _acquire(self, wait: bool) -> bool:
        start = time.monotonic()
        delay = 0.01
        fd = self._open()
        while True:
            try:
                locked = _try_lock(fd)
                if locked and not names_descriptor(self.path, fd):
                    # state=cleanup removed the file between our open and our lock: lock the file the name
                    # leads to now (a new one), or two runs could each hold a lock on a different file.
                    os.close(fd)
                    fd = self._open()
                    continue
            except BaseException:
                os.close(fd)
                raise
            if locked:
                break
            if not wait:
                os.close(fd)
                return False
            if time.monotonic() - start >= self.timeout:
                os.close(fd)
                raise VolsnapError('timed out after %.0f s waiting for the volume lock %s (%s): another operation on '
                                   'this volume is running; retry later or raise lock_timeout'
                                   % (self.timeout, self.name, self.path))
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        self.fd = fd
        self.waited = time.monotonic() - start
        return True

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


# struct flock on Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid (pid_t), padded to 8 bytes
_FLOCK = struct.Struct('hhqqi4x')


def lock_held(directory: str, volume_id: str) -> Optional[bool]:
    """Whether another process holds the lock of ``volume_id`` now: True, False, or None without a lock file.

    Asked with ``F_GETLK`` on a read-only descriptor, so nothing is taken, created or waited for (NFS forwards the
    test to the server). A symlink or anything but a regular file under the lock's name raises
    :class:`._nfs.share.ShareFileError`. Never call it while this process holds the lock: closing the descriptor would
    release it.
    """
    try:
        fd = open_regular(lock_path_for(directory, volume_id), os.O_RDONLY)
    except ShareFileError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
    finally:
        os.close(fd)
    return bool(_FLOCK.unpack(answer)[0] != fcntl.F_UNLCK)


def remove_unused_lock(directory: str, volume_id: str, volume_name: str,
                       check_mode: bool = False) -> Tuple[List[str], str]:
    """Remove the lock file (and stale temporary files) of a volume that no longer exists, when no process holds
    the lock.

    Returns ``(removed, why)``: the paths removed (in check mode, that would be), the lock file last, and what was
    decided. The lock file is removed only when it is a regular file, none of the volume's files
    (:func:`._nfs.share.volume_files`: volume file, snapshot files, ``.info``, journal) exists, and the lock can be
    taken without waiting; the volume's files are checked again and the file unlinked while the lock is held, so a
    run that opened the file meanwhile finds it gone once it gets the lock (:meth:`VolumeLock.acquire`) and makes
    a new one.
    """
    path = lock_path_for(directory, volume_id)
    left = volume_files(directory, volume_name)
    if left:
        return [], 'kept: the volume still has files (%s)' % ', '.join(left)
    if not os.path.lexists(path):
        # no lock file: no run can be writing temporary files of this volume (a writer holds the lock)
        return remove_stale_temporaries(directory, volume_name, check_mode), 'no lock file'
    try:
        fd = open_regular(path, os.O_RDWR)
    except ShareFileError as exc:
        return [], 'kept: %s %s (not a lock file of this collection; remove it by hand)' % (path, exc.strerror)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return [], 'kept: the lock file disappeared meanwhile (another cleanup?)'
        raise
    try:
        if not _try_lock(fd):
            return [], 'kept: another process holds the lock'
        if not names_descriptor(path, fd):
            return [], 'kept: the lock file was replaced meanwhile (another cleanup?)'
        left = volume_files(directory, volume_name)
        if left:
            return [], 'kept: the volume still has files (%s)' % ', '.join(left)
        removed = remove_stale_temporaries(directory, volume_name, check_mode)
        if not check_mode:
            os.unlink(path)
            fsync_dir(directory)
        return removed + [path], 'the volume no longer exists and no process holds its lock'
    finally:
        os.close(fd)  # releases the lock
