# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _ceph: option spec, client names, error mapping, connect() with a fake rados module.

The fake exception classes carry ``__module__ = 'rados'`` / ``'rbd'`` and the class names and errno
values of the real bindings (checked against Debian's python3-rados/python3-rbd 16.2).
"""

from __future__ import annotations

import errno

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._ceph import connection as _ceph
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import (
    CEPH_SPEC,
    ceph_argument_spec,
    ceph_error,
    ceph_errors,
    client_id,
    client_name,
    cluster_fsid,
    connect,
    open_ioctx,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.error_kinds import error_kind, is_ceph_exception
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError


def _exc_class(module, name, base=Exception):
    return type(name, (base,), {'__module__': module})


class FakeRados(object):
    """Stands for the ``rados`` module: the real class names, errno as the bindings set it."""

    Error = _exc_class('rados', 'Error')
    OSError = _exc_class('rados', 'OSError', Error)
    PermissionError = _exc_class('rados', 'PermissionError', OSError)
    ObjectNotFound = _exc_class('rados', 'ObjectNotFound', OSError)
    TimedOut = _exc_class('rados', 'TimedOut', OSError)

    def __init__(self, connect_error=None, fsid=b'6D3b0c1e-0000-4000-8000-000000000001'):
        self.connect_error = connect_error
        self.fsid = fsid
        self.made = []

    def Rados(self, **kwargs):  # pylint: disable=invalid-name
        cluster = FakeCluster(self, kwargs)
        self.made.append(cluster)
        return cluster


def os_error(klass, code, text):
    exc = klass(text)
    exc.errno = code
    return exc


class FakeCluster(object):
    def __init__(self, lib, kwargs):
        self.lib = lib
        self.kwargs = kwargs
        self.connected_with = None
        self.shut = 0
        self.ioctxs = []

    def connect(self, timeout=0):
        self.connected_with = timeout
        if self.lib.connect_error is not None:
            raise self.lib.connect_error

    def shutdown(self):
        self.shut += 1

    def get_fsid(self):
        return self.lib.fsid

    def open_ioctx(self, pool):
        if pool == 'missing':
            raise os_error(FakeRados.ObjectNotFound, errno.ENOENT, '[errno 2] RADOS object not found (error opening pool)')
        ioctx = FakeIoctx(pool)
        self.ioctxs.append(ioctx)
        return ioctx


class FakeIoctx(object):
    def __init__(self, pool):
        self.pool = pool
        self.closed = False

    def close(self):
        self.closed = True


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / 'ceph.conf'
    path.write_text('[global]\nmon_host = 127.0.0.1\n')
    return str(path)


@pytest.fixture
def keyring(tmp_path):
    path = tmp_path / 'ceph.client.cinder.keyring'
    path.write_text('[client.cinder]\nkey = AQ==\n')
    return str(path)


def test_spec_names_and_defaults():
    assert set(CEPH_SPEC) == {'ceph_conf', 'ceph_user', 'keyring', 'rados_connect_timeout'}
    assert CEPH_SPEC['ceph_conf']['default'] == '/etc/ceph/ceph.conf'
    assert CEPH_SPEC['keyring']['no_log'] is False
    spec = ceph_argument_spec(extra=dict(type='str'))
    assert spec['extra'] == {'type': 'str'}
    spec['ceph_conf']['default'] = 'changed'
    assert CEPH_SPEC['ceph_conf']['default'] == '/etc/ceph/ceph.conf'


@pytest.mark.parametrize('user, rados_id, name', [
    (None, None, 'client.admin'),
    ('cinder', 'cinder', 'client.cinder'),
    ('client.glance', 'glance', 'client.glance'),
    (' cinder ', 'cinder', 'client.cinder'),
])
def test_client_names(user, rados_id, name):
    assert client_id(user) == rados_id
    assert client_name(user) == name


@pytest.mark.parametrize('user', ['', 'client.', '  '])
def test_empty_client_name_refused(user):
    with pytest.raises(VolsnapError, match='without "client."'):
        client_id(user)


@pytest.mark.parametrize('klass, code, kind', [
    (FakeRados.PermissionError, errno.EPERM, 'permission'),
    (FakeRados.OSError, errno.EACCES, 'permission'),
    (FakeRados.ObjectNotFound, errno.ENOENT, 'not_found'),
    (_exc_class('rbd', 'ImageNotFound'), None, 'not_found'),
    (_exc_class('rbd', 'ImageExists'), None, 'exists'),
    (_exc_class('rbd', 'ImageBusy'), None, 'busy'),
    (_exc_class('rbd', 'ImageHasSnapshots'), None, 'has_snapshots'),
    (FakeRados.TimedOut, errno.ETIMEDOUT, 'timeout'),
    (_exc_class('rbd', 'Timeout'), None, 'timeout'),
    (_exc_class('rbd', 'DiskQuotaExceeded'), None, 'no_space'),
    (_exc_class('rbd', 'ReadOnlyImage'), None, 'read_only'),
    (_exc_class('rbd', 'InvalidArgument'), None, 'invalid'),
    (_exc_class('rbd', 'OperationNotSupported'), None, 'not_supported'),
    (_exc_class('rados', 'ConnectionShutdown'), None, 'shutdown'),
    (FakeRados.OSError, errno.EIO, 'io'),
    (FakeRados.OSError, errno.EXDEV, 'other'),
])
def test_error_kind(klass, code, kind):
    exc = klass('boom')
    if code is not None:
        exc.errno = code
    assert error_kind(exc) == kind


def test_is_ceph_exception():
    assert is_ceph_exception(FakeRados.PermissionError('x'))
    assert is_ceph_exception(_exc_class('rbd', 'ImageBusy')('x'))
    assert not is_ceph_exception(ValueError('x'))
    assert not is_ceph_exception(PermissionError('builtin'))


def test_permission_error_names_the_missing_cap():
    exc = os_error(FakeRados.PermissionError, errno.EPERM, '[errno 1] RBD permission error (error creating clone)')
    error = ceph_error(exc, 'cloning volumes/volume-1@snap into images/abc', user='cinder', pool='images')
    assert "client.cinder lacks write access to pool images" in error.msg
    assert "osd 'profile rbd pool=images'" in error.msg
    assert 'ceph auth caps client.cinder' in error.msg
    assert error.msg.startswith('cloning volumes/volume-1@snap into images/abc failed: PermissionError: ')
    assert error.details['ceph_error'] == 'permission'
    assert error.details['errno'] == errno.EPERM
    assert error.details['client'] == 'client.cinder'
    assert error.details['pool'] == 'images'


def test_permission_without_pool_and_read():
    exc = FakeRados.PermissionError('denied')
    assert 'Check the caps of client.admin' in ceph_error(exc, 'x').msg
    assert 'lacks read access to pool volumes' in ceph_error(exc, 'x', pool='volumes', write=False).msg


def test_hints_override_and_default_hint():
    exc = _exc_class('rbd', 'ImageBusy')('busy')
    assert 'It is in use' in ceph_error(exc, 'removing').msg
    assert ceph_error(exc, 'removing', hints={'busy': 'stop it first'}).msg.endswith('. stop it first')
    assert ceph_error(_exc_class('rbd', 'Weird')(''), 'doing').msg == 'doing failed: Weird: Weird'


def test_ceph_errors_context_manager():
    with pytest.raises(VolsnapError, match='opening image failed: ImageNotFound: gone. It does not exist'):
        with ceph_errors('opening image'):
            raise _exc_class('rbd', 'ImageNotFound')('gone')
    with pytest.raises(KeyError):
        with ceph_errors('other'):
            raise KeyError('not ceph')
    original = VolsnapError('mine')
    with pytest.raises(VolsnapError) as info:
        with ceph_errors('other'):
            raise original
    assert info.value is original


def test_connect_passes_options_and_shuts_down(conf, keyring):
    lib = FakeRados()
    with connect(conf, 'client.cinder', keyring, 7, rados_lib=lib) as cluster:
        assert cluster.kwargs == {
            'conffile': conf, 'rados_id': 'cinder',
            'conf': {'keyring': keyring, 'client_mount_timeout': '7', 'rados_mon_op_timeout': '7',
                     'rados_osd_op_timeout': '7'}}
        assert cluster.connected_with == 7
        assert cluster_fsid(cluster) == '6d3b0c1e-0000-4000-8000-000000000001'
        assert cluster.shut == 0
    assert cluster.shut == 1


def test_connect_defaults_without_user_keyring_timeout(conf):
    lib = FakeRados()
    with connect(conf, None, None, 0, rados_lib=lib) as cluster:
        assert cluster.kwargs == {'conffile': conf, 'conf': {}}
        assert cluster.connected_with == 0


def test_connect_shuts_down_when_the_block_raises(conf):
    lib = FakeRados()
    with pytest.raises(RuntimeError):
        with connect(conf, 'cinder', None, 5, rados_lib=lib):
            raise RuntimeError('inside')
    assert lib.made[0].shut == 1


def test_connect_missing_files(tmp_path, conf):
    with pytest.raises(VolsnapError, match='configuration file .*nope.conf does not exist'):
        with connect(str(tmp_path / 'nope.conf'), rados_lib=FakeRados()):
            pass
    with pytest.raises(VolsnapError, match='keyring .*nokey does not exist: .*client.cinder'):
        with connect(conf, 'cinder', str(tmp_path / 'nokey'), rados_lib=FakeRados()):
            pass


@pytest.mark.parametrize('klass, code, expected', [
    (FakeRados.ObjectNotFound, errno.ENOENT, 'No key for client.cinder was found in'),
    (FakeRados.PermissionError, errno.EPERM, "The cluster refused client.cinder's key"),
    (FakeRados.TimedOut, errno.ETIMEDOUT, 'No monitor answered within 3 seconds'),
])
def test_connect_errors_are_explained(conf, keyring, klass, code, expected):
    lib = FakeRados(connect_error=os_error(klass, code, 'error connecting to the cluster'))
    with pytest.raises(VolsnapError) as info:
        with connect(conf, 'cinder', keyring, 3, rados_lib=lib):
            pytest.fail('the block must not run')
    assert expected in info.value.msg
    assert info.value.msg.startswith('connecting to the Ceph cluster (%s) as client.cinder failed' % conf)
    assert lib.made[0].shut == 1


def test_open_ioctx(conf):
    with connect(conf, rados_lib=FakeRados()) as cluster:
        with open_ioctx(cluster, 'volumes') as ioctx:
            assert ioctx.pool == 'volumes'
        assert ioctx.closed
        with pytest.raises(VolsnapError, match='Pool missing does not exist on this cluster'):
            with open_ioctx(cluster, 'missing'):
                pass


def test_missing_bindings_are_reported(monkeypatch):
    monkeypatch.setitem(_ceph._LIBS, 'rados', (None, 'Traceback: No module named rados'))
    monkeypatch.setitem(_ceph._LIBS, 'rbd', (None, 'Traceback: No module named rbd'))
    name, error, url = _ceph.rados_dependency()
    assert name == 'rados (python3-rados)' and 'No module named rados' in error and url
    assert _ceph.rbd_dependency()[1] == 'Traceback: No module named rbd'
    with pytest.raises(VolsnapError, match='apt install python3-rbd'):
        _ceph.rbd_module()
    with pytest.raises(VolsnapError, match='apt install python3-rados'):
        with connect('/etc/ceph/ceph.conf'):
            pass
