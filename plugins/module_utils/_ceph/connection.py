# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Ceph side of the shared module base: librados connections and error messages.

* :data:`CEPH_SPEC` / :func:`ceph_argument_spec`: the Ceph options, named as librados and Cinder's RBD
  driver name them (``ceph_conf``, ``ceph_user`` = the client name without ``client.``, ``keyring``,
  ``rados_connect_timeout``); documented by the ``volsnap.openstack.ceph`` doc fragment.
* :func:`rados_dependency` / :func:`rbd_dependency`: the Python bindings are imported lazily; the
  result feeds ``VolsnapModule.dependencies()`` (``missing_required_lib``).
* :func:`connect`: a context manager yielding a connected ``rados.Rados`` (shut down on exit).
* :func:`ceph_error` / :func:`ceph_errors`: rados and rbd exceptions become a :class:`VolsnapError`
  saying what failed, for which client and pool, and what to do (for example which cap is missing);
  the kind of failure comes from :mod:`.error_kinds`.
* :func:`cluster_fsid`: the cluster's fsid.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.error_kinds import (
    errno_of,
    error_kind,
    is_ceph_exception,
)

DEFAULT_CEPH_CONF = '/etc/ceph/ceph.conf'
DEFAULT_CONNECT_TIMEOUT = 30
RADOS_LIB = 'rados (python3-rados)'
RBD_LIB = 'rbd (python3-rbd)'
CEPH_LIB_URL = 'https://docs.ceph.com/en/latest/rados/api/python/'

# The Ceph options of every module that talks to a cluster (doc fragment volsnap.openstack.ceph).
CEPH_SPEC: Dict[str, Dict[str, Any]] = dict(
    ceph_conf=dict(type='path', default=DEFAULT_CEPH_CONF),
    ceph_user=dict(type='str'),
    keyring=dict(type='path', no_log=False),
    rados_connect_timeout=dict(type='int', default=DEFAULT_CONNECT_TIMEOUT),
)


def ceph_argument_spec(**extra: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """A fresh argument spec: the Ceph options, then ``extra``."""
    spec = {name: dict(value) for name, value in CEPH_SPEC.items()}
    spec.update(extra)
    return spec


_LIBS: Dict[str, Tuple[Any, Optional[str]]] = {}


def _import(name: str) -> Tuple[Any, Optional[str]]:
    """(the module or None, the import traceback or None); imported once, on first use."""
    if name not in _LIBS:
        try:
            if name == 'rados':
                import rados as lib  # pylint: disable=import-outside-toplevel
            else:
                import rbd as lib  # pylint: disable=import-outside-toplevel
        except ImportError:
            _LIBS[name] = (None, traceback.format_exc())
        else:
            _LIBS[name] = (lib, None)
    return _LIBS[name]


def rados_dependency() -> Tuple[str, Optional[str], Optional[str]]:
    """``(name, import error, url)`` of the rados bindings, for ``VolsnapModule.dependencies()``."""
    return RADOS_LIB, _import('rados')[1], CEPH_LIB_URL


def rbd_dependency() -> Tuple[str, Optional[str], Optional[str]]:
    """``(name, import error, url)`` of the rbd bindings, for ``VolsnapModule.dependencies()``."""
    return RBD_LIB, _import('rbd')[1], CEPH_LIB_URL


def _lib(name: str, package: str) -> Any:
    module, error = _import(name)
    if module is None:
        raise VolsnapError('the %s Python bindings of Ceph are needed on the host that runs this module '
                           '(Debian/Ubuntu: apt install %s; they are built for the system Python 3)'
                           % (name, package), exception=error)
    return module


def rados_module() -> Any:
    """The imported ``rados`` module; a :class:`VolsnapError` when it is missing."""
    return _lib('rados', 'python3-rados')


def rbd_module() -> Any:
    """The imported ``rbd`` module; a :class:`VolsnapError` when it is missing."""
    return _lib('rbd', 'python3-rbd')


def client_id(ceph_user: Optional[str]) -> Optional[str]:
    """The librados ``rados_id`` for ``ceph_user``: a leading ``client.`` is dropped; None stays None."""
    if ceph_user is None:
        return None
    user = ceph_user.strip()
    if user.startswith('client.'):
        user = user[len('client.'):]
    if not user:
        raise VolsnapError('ceph_user %r is empty: give the client name without "client." (for example cinder)'
                           % ceph_user)
    return user


def client_name(ceph_user: Optional[str]) -> str:
    """The full cephx entity name (``client.<id>``); librados' default is ``client.admin``."""
    return 'client.%s' % (client_id(ceph_user) or 'admin')


# ---------------------------------------------------------------------------------------------
# errors

def cap_hint(user: Optional[str], pool: Optional[str], write: bool = True) -> str:
    """The sentence telling an operator which cap ``client.<user>`` needs on ``pool``."""
    name = client_name(user)
    if not pool:
        return ('Check the caps of %s (ceph auth get %s): RBD needs mon \'profile rbd\' and osd \'profile rbd '
                'pool=<pool>\' for every pool it uses' % (name, name))
    what = 'write' if write else 'read'
    return ('%s lacks %s access to pool %s: it needs the cap osd \'profile rbd pool=%s\' (and mon \'profile rbd\'). '
            'Add it to the client\'s existing caps with ceph auth caps %s mon \'profile rbd\' osd \'<existing osd '
            'caps>, profile rbd pool=%s\'; cap changes reach only new connections'
            % (name, what, pool, pool, name, pool))


_KIND_HINTS = {
    'not_found': 'It does not exist (or the client may not see it)',
    'exists': 'It already exists',
    'busy': 'It is in use (open by a client, for example an attached volume, or watched)',
    'has_snapshots': 'It still has snapshots',
    'timeout': 'The cluster did not answer in time: check that the monitors in ceph_conf are reachable and the '
               'cluster is healthy (ceph -s), or raise rados_connect_timeout',
    'no_space': 'The cluster or pool is full or over its quota',
    'read_only': 'The image or snapshot is read-only',
    'shutdown': 'The connection to the cluster was closed',
}


def ceph_error(exc: BaseException, action: str, user: Optional[str] = None, pool: Optional[str] = None,
               write: bool = True, hints: Optional[Mapping[str, str]] = None) -> VolsnapError:
    """A :class:`VolsnapError` for a rados/rbd exception raised while doing ``action``.

    ``user`` and ``pool`` name the client and pool involved, so a permission error says which cap is
    missing; ``hints`` map an :func:`error_kind` to a sentence replacing the default one. The details
    carry ``ceph_error`` (the kind), ``errno``, ``exception_type``, ``ceph_message``, ``client`` and ``pool``.
    """
    kind = error_kind(exc)
    text = str(exc).strip() or type(exc).__name__
    msg = '%s failed: %s: %s' % (action, type(exc).__name__, text)
    hint = (hints or {}).get(kind)
    if hint is None:
        if kind == 'permission':
            hint = cap_hint(user, pool, write)
        else:
            hint = _KIND_HINTS.get(kind)
    if hint:
        msg += '. ' + hint
    return VolsnapError(msg, ceph_error=kind, errno=errno_of(exc), exception_type=type(exc).__name__,
                        ceph_message=text, client=client_name(user), pool=pool)


@contextlib.contextmanager
def ceph_errors(action: str, user: Optional[str] = None, pool: Optional[str] = None, write: bool = True,
                hints: Optional[Mapping[str, str]] = None) -> Iterator[None]:
    """Translate rados/rbd exceptions raised inside the block with :func:`ceph_error`."""
    try:
        yield
    except VolsnapError:
        raise
    except Exception as exc:  # only the bindings' exceptions are translated, the rest propagates unchanged
        if not is_ceph_exception(exc):
            raise
        raise ceph_error(exc, action, user=user, pool=pool, write=write, hints=hints) from exc


# ---------------------------------------------------------------------------------------------
# connection

def _connect_hints(ceph_conf: str, user: Optional[str], keyring: Optional[str], timeout: int) -> Dict[str, str]:
    name = client_name(user)
    where = keyring or 'the default locations (/etc/ceph/ceph.%s.keyring, /etc/ceph/keyring...)' % name
    return {
        'not_found': 'No key for %s was found in %s: set keyring to the file holding it, and ceph_user to the client '
                     'name without "client."' % (name, where),
        'permission': 'The cluster refused %s\'s key (cephx authentication): check that keyring %s holds the key '
                      'ceph auth get %s shows' % (name, where, name),
        'timeout': 'No monitor answered within %s seconds: check mon_host in %s, that the monitors run and are '
                   'reachable from this host, or raise rados_connect_timeout' % (timeout, ceph_conf),
        'invalid': 'The Ceph configuration %s or the keyring %s is not valid' % (ceph_conf, where),
    }


@contextlib.contextmanager
def connect(ceph_conf: Optional[str] = None, ceph_user: Optional[str] = None, keyring: Optional[str] = None,
            timeout: Optional[int] = DEFAULT_CONNECT_TIMEOUT, rados_lib: Any = None) -> Iterator[Any]:
    """A connected ``rados.Rados`` for the block; it is shut down on exit.

    ``ceph_conf`` is the configuration file (default ``/etc/ceph/ceph.conf``), ``ceph_user`` the client
    name without ``client.`` (librados' ``rados_id``; default admin), ``keyring`` the keyring file
    (default: librados' search path). ``timeout`` (seconds, None or <= 0 for none) bounds the connection
    and every monitor and OSD operation, so an unreachable cluster fails instead of hanging.
    ``rados_lib`` replaces the ``rados`` module (tests).
    """
    rados = rados_lib if rados_lib is not None else rados_module()
    conf_path = ceph_conf or DEFAULT_CEPH_CONF
    if not os.path.isfile(conf_path):
        raise VolsnapError('the Ceph configuration file %s does not exist: set ceph_conf to the cluster\'s ceph.conf '
                           '(the file Cinder\'s rbd_ceph_conf names)' % conf_path, ceph_error='not_found')
    if keyring and not os.path.isfile(keyring):
        raise VolsnapError('the keyring %s does not exist: set keyring to the file holding the key of %s'
                           % (keyring, client_name(ceph_user)), ceph_error='not_found')
    user = client_id(ceph_user)
    conf: Dict[str, str] = {}
    if keyring:
        conf['keyring'] = keyring
    seconds = int(timeout) if timeout and timeout > 0 else 0
    if seconds:
        for option in ('client_mount_timeout', 'rados_mon_op_timeout', 'rados_osd_op_timeout'):
            conf[option] = str(seconds)
    hints = _connect_hints(conf_path, user, keyring, seconds)
    with ceph_errors('connecting to the Ceph cluster (%s) as %s' % (conf_path, client_name(user)),
                     user=user, hints=hints):
        kwargs: Dict[str, Any] = {'conffile': conf_path, 'conf': conf}
        if user is not None:
            kwargs['rados_id'] = user
        cluster = rados.Rados(**kwargs)
        try:
            if seconds:
                cluster.connect(timeout=seconds)
            else:
                cluster.connect()
        except BaseException:
            with contextlib.suppress(Exception):
                cluster.shutdown()
            raise
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.shutdown()


def cluster_fsid(cluster: Any) -> str:
    """The fsid of the connected cluster, lower case."""
    with ceph_errors('reading the cluster fsid'):
        value = cluster.get_fsid()
    if isinstance(value, bytes):
        value = value.decode('ascii')
    return str(value).strip().lower()


@contextlib.contextmanager
def open_ioctx(cluster: Any, pool: str, user: Optional[str] = None) -> Iterator[Any]:
    """An I/O context on ``pool`` for the block; closed on exit. A missing pool is a clear error."""
    hints = {'not_found': 'Pool %s does not exist on this cluster (ceph osd pool ls)' % pool}
    with ceph_errors('opening pool %s' % pool, user=user, pool=pool, write=False, hints=hints):
        ioctx = cluster.open_ioctx(pool)
    try:
        yield ioctx
    finally:
        with contextlib.suppress(Exception):
            ioctx.close()
