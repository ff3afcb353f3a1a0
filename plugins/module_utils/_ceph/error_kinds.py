# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What kind of failure a rados/rbd exception is: the one classification of Ceph errors.

:mod:`.connection` builds its messages on it (:func:`.connection.ceph_error`), and the role
``ceph_client_keyrings`` sends this file, followed by its check script (``files/ceph_client_check.py``),
to the system Python of each host it verifies, where the collection is not installed. So this file
imports nothing but the standard library and defines only functions.
"""

from __future__ import annotations

import errno as errno_codes
from typing import Optional


def is_ceph_exception(exc: BaseException) -> bool:
    """True for exceptions of the rados and rbd bindings (the only ones :func:`error_kind` classifies)."""
    for klass in type(exc).__mro__:
        if (getattr(klass, '__module__', '') or '') in ('rados', 'rbd'):
            return True
    return False


def errno_of(exc: BaseException) -> Optional[int]:
    """The positive errno of an exception (the bindings give some negative), None when it has none."""
    value = getattr(exc, 'errno', None)
    if isinstance(value, int):
        return abs(value)
    return None


def error_kind(exc: BaseException) -> str:
    """A short kind for a rados/rbd exception, from its class name and errno.

    One of ``permission``, ``not_found``, ``exists``, ``busy``, ``has_snapshots``, ``timeout``,
    ``no_space``, ``read_only``, ``invalid``, ``not_supported``, ``shutdown``, ``io``, ``other``.
    """
    names = [klass.__name__ for klass in type(exc).__mro__]
    code = errno_of(exc)
    if {'PermissionError', 'PermissionDeniedError'} & set(names) or code in (errno_codes.EPERM, errno_codes.EACCES):
        return 'permission'
    if {'ImageNotFound', 'ObjectNotFound'} & set(names) or code == errno_codes.ENOENT:
        return 'not_found'
    if {'ImageExists', 'ObjectExists'} & set(names) or code == errno_codes.EEXIST:
        return 'exists'
    if 'ImageHasSnapshots' in names or code == errno_codes.ENOTEMPTY:
        return 'has_snapshots'
    if {'ImageBusy', 'ObjectBusy'} & set(names) or code == errno_codes.EBUSY:
        return 'busy'
    if {'TimedOut', 'Timeout', 'InterruptedOrTimeoutError'} & set(names) or code == errno_codes.ETIMEDOUT:
        return 'timeout'
    if {'NoSpace', 'DiskQuotaExceeded'} & set(names) or code in (errno_codes.ENOSPC, errno_codes.EDQUOT):
        return 'no_space'
    if 'ReadOnlyImage' in names or code == errno_codes.EROFS:
        return 'read_only'
    if {'InvalidArgument', 'InvalidArgumentError', 'ArgumentOutOfRange'} & set(names) or code == errno_codes.EINVAL:
        return 'invalid'
    if {'FunctionNotSupported', 'OperationNotSupported'} & set(names) or code in (errno_codes.ENOSYS,
                                                                                  errno_codes.EOPNOTSUPP):
        return 'not_supported'
    if {'ConnectionShutdown', 'NotConnected', 'RadosStateError', 'IoctxStateError'} & set(names):
        return 'shutdown'
    if 'IOError' in names or code == errno_codes.EIO:
        return 'io'
    return 'other'
