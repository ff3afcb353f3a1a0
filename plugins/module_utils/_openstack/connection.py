# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connecting to OpenStack and talking to its APIs: what every OpenStack client of the collection shares.

* :data:`CONNECTION_SPEC` / :func:`openstack_argument_spec`: the cloud options, named and behaving
  as openstack.cloud's (``cloud``, ``auth``, ``auth_type``, ``region_name``, ``interface``,
  ``validate_certs``, ``ca_cert``, ``client_cert``, ``client_key``, ``api_timeout``,
  ``sdk_log_path``, ``sdk_log_level``, plus ``wait``/``timeout`` for modules that wait).
* :func:`openstack_dependency` / :func:`sdk_error_types`: openstacksdk is imported lazily, only by modules (or
  options) that need it; they feed ``VolsnapModule.dependencies()`` (``missing_required_lib``) and its error
  mapping (the module base is ``module.py``'s ``OpenStackModule``).
* :func:`connect`: an ``openstack.connection.Connection`` from the module parameters, with an
  optional block-storage default microversion.
* :func:`api_error` / :func:`api_errors`: SDK and keystoneauth exceptions become a
  :class:`VolsnapError` carrying the API's own message, the HTTP status and the request id.
* :func:`wait_for_status`: the one way to poll a resource until it reaches a wanted status
  (:class:`StatusError`, :class:`WaitTimeout`).
* :func:`endpoint_microversions`, :func:`negotiate_microversion`, :func:`version_at_least`: the highest
  microversion both sides speak; :func:`request_json`: one REST call with an explicit microversion.

The service clients are built on these: ``cinder.py`` (Block Storage) and ``glance.py`` (Image).
"""

from __future__ import annotations

import contextlib
import copy
import re
import time
import traceback
from typing import Any, Callable, Collection, Dict, Iterator, List, Mapping, Optional, Tuple, Type

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError

SDK_NAME = 'openstacksdk'
SDK_URL = 'https://pypi.org/project/openstacksdk/'
# The oldest openstacksdk the modules are tested with (requirements.txt; tests/integration/test_user_install.py
# runs them with it). Older releases (Debian 12's python3-openstacksdk is 0.101) are refused with this minimum.
SDK_MIN_VERSION = '1.0.0'

# Connection options, as openstack.cloud's openstack_full_argument_spec names them.
CONNECTION_SPEC: Dict[str, Dict[str, Any]] = dict(
    cloud=dict(type='raw'),
    auth=dict(type='dict', no_log=True),
    auth_type=dict(type='str'),
    region_name=dict(type='str'),
    interface=dict(type='str', default='public', choices=['public', 'internal', 'admin'],
                   aliases=['endpoint_type']),
    validate_certs=dict(type='bool', aliases=['verify']),
    ca_cert=dict(type='str', aliases=['cacert']),
    client_cert=dict(type='str', aliases=['cert']),
    client_key=dict(type='str', no_log=True, aliases=['key']),
    api_timeout=dict(type='int'),
    sdk_log_path=dict(type='str'),
    sdk_log_level=dict(type='str', default='INFO', choices=['INFO', 'DEBUG']),
)

# Waiting options of modules that wait for a resource (openstack.cloud's defaults).
WAIT_SPEC: Dict[str, Dict[str, Any]] = dict(
    wait=dict(type='bool', default=True),
    timeout=dict(type='int', default=180),
)

# Options that must not be combined with a cloud given as a dict (openstack.cloud refuses them too).
_DICT_CLOUD_EXCLUSIVE = ('auth', 'auth_type', 'region_name', 'validate_certs', 'ca_cert', 'client_cert',
                         'client_key', 'api_timeout')


def openstack_argument_spec(wait: bool = True, **extra: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """A fresh argument spec: the connection options, ``wait``/``timeout`` when ``wait``, then ``extra``."""
    spec = copy.deepcopy(CONNECTION_SPEC)
    if wait:
        spec.update(copy.deepcopy(WAIT_SPEC))
    spec.update(extra)
    return spec


_SDK: Dict[str, Any] = {}


def version_tuple(text: str) -> Tuple[int, ...]:
    """The leading numeric part of a version string as a tuple (``'4.22.0.dev3'`` -> ``(4, 22, 0)``)."""
    match = re.match(r'\d+(?:\.\d+)*', text or '')
    return tuple(int(part) for part in match.group(0).split('.')) if match else ()


def sdk_too_old(version: Optional[str]) -> bool:
    """True when ``version`` (openstacksdk's ``__version__``; None when unknown) is below :data:`SDK_MIN_VERSION`."""
    return version_tuple(version or '') < version_tuple(SDK_MIN_VERSION)


def _sdk_version() -> Optional[str]:
    """The version of the installed openstacksdk distribution (None when its metadata cannot be read)."""
    # imported here: importlib.metadata costs every module that has the OpenStack options ~30 ms to start
    # (AnsiballZ compiles what it imports on each run), and only a run that talks to OpenStack needs it
    import importlib.metadata as importlib_metadata  # pylint: disable=import-outside-toplevel
    try:
        return importlib_metadata.version(SDK_NAME)
    except (importlib_metadata.PackageNotFoundError, ValueError):
        return None


def _import_sdk() -> Tuple[Any, Optional[str]]:
    """(the ``openstack`` package or None, the import traceback or None); imported once, on first use.

    A release older than :data:`SDK_MIN_VERSION` counts as missing; :func:`openstack_dependency` then names the
    minimum and the version found.
    """
    if 'module' not in _SDK:
        _SDK['name'] = SDK_NAME
        try:
            import openstack  # pylint: disable=import-outside-toplevel
        except ImportError:
            _SDK['module'], _SDK['error'] = None, traceback.format_exc()
        else:
            version = _sdk_version()
            if sdk_too_old(version):
                found = version or 'of unknown version'
                _SDK['name'] = '%s >= %s (found %s)' % (SDK_NAME, SDK_MIN_VERSION, found)
                _SDK['module'], _SDK['error'] = None, ('openstacksdk %s is installed at %s; these modules need %s or '
                                                       'newer' % (found, getattr(openstack, '__file__', '?'),
                                                                  SDK_MIN_VERSION))
            else:
                _SDK['module'], _SDK['error'] = openstack, None
    return _SDK['module'], _SDK['error']


def openstack_dependency() -> Tuple[str, Optional[str], Optional[str]]:
    """The ``(name, import error, url)`` triple ``VolsnapModule.dependencies()`` returns for openstacksdk."""
    error = _import_sdk()[1]
    return _SDK.get('name', SDK_NAME), error, SDK_URL


def sdk_error_types() -> Tuple[Type[BaseException], ...]:
    """openstacksdk's and keystoneauth's base exception types, for ``VolsnapModule.error_types()``.

    A safety net only: the API calls are wrapped in :func:`api_errors`, which keeps more detail.
    """
    module = _import_sdk()[0]
    if module is None:
        return ()
    types: List[Type[BaseException]] = [module.exceptions.SDKException]
    try:
        from keystoneauth1 import exceptions as ks_exceptions  # pylint: disable=import-outside-toplevel
    except ImportError:
        pass
    else:
        types.append(ks_exceptions.ClientException)
    return tuple(types)


def sdk() -> Any:
    """The imported ``openstack`` package; a :class:`VolsnapError` when it is missing."""
    module, error = _import_sdk()
    if module is None:
        raise VolsnapError('the openstacksdk Python library is needed, %s or newer, on the host that runs this module '
                           '(pip install "openstacksdk>=%s"): %s' % (SDK_MIN_VERSION, SDK_MIN_VERSION,
                                                                     _SDK.get('name', SDK_NAME)), exception=error)
    return module


def connection_kwargs(params: Mapping[str, Any],
                      block_storage_microversion: Optional[str] = None) -> Dict[str, Any]:
    """The keyword arguments of ``openstack.connect`` for these module parameters.

    A ``cloud`` given as a dict is a whole clouds.yaml entry; then the other connection options
    must stay unset (and ``interface`` at its default), exactly as openstack.cloud requires.
    """
    cloud = params.get('cloud')
    if isinstance(cloud, dict):
        for name in _DICT_CLOUD_EXCLUSIVE:
            if params.get(name) is not None:
                raise VolsnapError('cloud is given as a dict (a whole cloud configuration), so %s must not be '
                                   'set as well: put it inside the cloud dict' % name)
        if params.get('interface', 'public') != 'public':
            raise VolsnapError('cloud is given as a dict (a whole cloud configuration), so interface must not be '
                               'set as well: put it inside the cloud dict')
        kwargs = dict(cloud)
    elif cloud is not None and not isinstance(cloud, str):
        raise VolsnapError('cloud must be the name of a cloud in clouds.yaml or a dict with a cloud '
                           'configuration, not %s' % type(cloud).__name__)
    else:
        kwargs = dict(
            cloud=cloud,
            auth_type=params.get('auth_type'),
            auth=params.get('auth'),
            region_name=params.get('region_name'),
            verify=params.get('validate_certs'),
            cacert=params.get('ca_cert'),
            cert=params.get('client_cert'),
            key=params.get('client_key'),
            api_timeout=params.get('api_timeout'),
            interface=params.get('interface') or 'public',
        )
    if block_storage_microversion is not None:
        kwargs['block_storage_default_microversion'] = block_storage_microversion
    return kwargs


def connect(params: Mapping[str, Any], block_storage_microversion: Optional[str] = None) -> Any:
    """An ``openstack.connection.Connection`` for the module parameters.

    ``sdk_log_path`` turns on the SDK's log (HTTP requests too with ``sdk_log_level=DEBUG``).
    Configuration and authentication problems become a :class:`VolsnapError`.
    """
    openstack = sdk()
    kwargs = connection_kwargs(params, block_storage_microversion)
    if params.get('sdk_log_path'):
        debug = params.get('sdk_log_level') == 'DEBUG'
        openstack.enable_logging(debug=debug, http_debug=debug, path=params['sdk_log_path'])
    with api_errors('connecting to the cloud'):
        return openstack.connect(**kwargs)


def _http_status(exc: BaseException) -> Optional[int]:
    for name in ('status_code', 'http_status'):
        value = getattr(exc, name, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, 'response', None)
    value = getattr(response, 'status_code', None)
    return value if isinstance(value, int) else None


def _is_api_exception(exc: BaseException) -> bool:
    """True for exceptions of openstacksdk and keystoneauth (the only ones :func:`api_error` maps)."""
    for klass in type(exc).__mro__:
        module = getattr(klass, '__module__', '') or ''
        if module == 'openstack' or module.startswith(('openstack.', 'keystoneauth1')):
            return True
    return False


_STATUS_HINTS = {
    401: 'the cloud did not accept the credentials: check cloud/auth (clouds.yaml, OS_* variables)',
    403: 'the cloud\'s policy refuses this to these credentials: use a user with the needed role '
         '(by default the admin role for admin-only APIs) or ask the operator to change the policy',
    404: 'the resource or API was not found',
    406: 'the API does not accept the requested microversion',
}


def api_error(exc: BaseException, action: str, hints: Optional[Mapping[int, str]] = None) -> VolsnapError:
    """A :class:`VolsnapError` for an SDK or keystoneauth exception raised while doing ``action``.

    The message keeps the API's own text (``details``); the HTTP status and request id are in the
    message and in the error details (``status_code``, ``request_id``, ``api_message``, ``url``,
    ``method``, ``exception_type``). ``hints`` add a per-status sentence saying what to do.
    """
    status = _http_status(exc)
    details = getattr(exc, 'details', None)
    request_id = getattr(exc, 'request_id', None)
    text = str(details) if details else (getattr(exc, 'message', None) or str(exc) or type(exc).__name__)
    text = text.strip()
    parts = ['%s failed' % action]
    if status is not None:
        parts.append('(HTTP %d)' % status)
    msg = ' '.join(parts) + ': ' + text
    if request_id:
        msg += ' [request id %s]' % request_id
    hint = None
    if status is not None:
        hint = (hints or {}).get(status) or _STATUS_HINTS.get(status)
    if hint:
        msg += '. ' + hint[0].upper() + hint[1:]
    error_details: Dict[str, Any] = {
        'exception_type': type(exc).__name__,
        'api_message': text,
        'status_code': status,
        'request_id': request_id,
    }
    for name in ('url', 'method'):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            error_details[name] = value
    return VolsnapError(msg, **error_details)


@contextlib.contextmanager
def api_errors(action: str, hints: Optional[Mapping[int, str]] = None) -> Iterator[None]:
    """Translate openstacksdk/keystoneauth exceptions raised inside the block with :func:`api_error`."""
    try:
        yield
    except VolsnapError:
        raise
    except Exception as exc:  # only SDK/keystoneauth ones are translated, the rest propagates unchanged
        if not _is_api_exception(exc):
            raise
        raise api_error(exc, action, hints) from exc


def status_of(resource: Any) -> Optional[str]:
    """``resource.status`` (SDK resource) or ``resource['status']`` (dict); None for None (gone)."""
    if resource is None:
        return None
    if isinstance(resource, Mapping):
        value = resource.get('status')
    else:
        value = getattr(resource, 'status', None)
    return None if value is None else str(value)


class StatusError(VolsnapError):
    """The resource reached a status of ``fail`` (``self.resource``, ``self.status``)."""

    def __init__(self, msg: str, resource: Any, status: Optional[str]) -> None:
        super(StatusError, self).__init__(msg, status=status)
        self.resource = resource
        self.status = status


class WaitTimeout(VolsnapError):
    """The resource did not reach a wanted status in time (``self.resource``, ``self.status``)."""

    def __init__(self, msg: str, resource: Any, status: Optional[str]) -> None:
        super(WaitTimeout, self).__init__(msg, status=status)
        self.resource = resource
        self.status = status


def wait_for_status(get: Callable[[], Any], ok: Collection[Optional[str]], fail: Collection[Optional[str]],
                    timeout: float, interval: float = 1.0, what: str = 'the resource',
                    sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> Any:
    """Poll ``get()`` until its status is in ``ok``; return the last resource.

    ``get()`` returns the resource (SDK object or dict) or None when it is gone; None counts as the
    status ``None`` so ``ok=[None]`` waits for a deletion. A status in ``fail`` raises
    :class:`StatusError`; still waiting after ``timeout`` seconds raises :class:`WaitTimeout`.
    ``get`` is always called at least once, even with ``timeout <= 0``.
    """
    deadline = clock() + max(timeout, 0)
    delay = min(interval, 0.25) if interval > 0 else 0
    while True:
        resource = get()
        status = status_of(resource)
        if status in ok:
            return resource
        if status in fail:
            raise StatusError('%s went to status %s' % (what, status if status is not None else 'gone (deleted)'),
                              resource, status)
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimeout('%s is still in status %s after %s seconds (waiting for %s)'
                              % (what, status, timeout, ', '.join(str(s) for s in ok)), resource, status)
        sleep(min(delay, remaining))
        delay = min(delay * 2 if delay else interval, interval)


def _version_tuple(version: Optional[str]) -> Optional[Tuple[int, int]]:
    if not version:
        return None
    text = str(version).strip().lower()
    if text == 'latest':
        return None
    try:
        major, minor = text.split('.', 1)
        return int(major), int(minor)
    except ValueError:
        raise VolsnapError('%r is not a microversion (expected <major>.<minor>, for example 3.8)' % version)


def negotiate_microversion(server_min: Optional[str], server_max: Optional[str], wanted: str,
                           minimum: Optional[str] = None) -> Optional[str]:
    """The microversion to send: ``wanted`` capped at the server's maximum.

    Returns None when the server announces no microversions (a legacy endpoint) or when its
    maximum is below ``minimum`` (the caller then uses the legacy API). A ``wanted`` below the
    server's minimum is raised to it.
    """
    want = _version_tuple(wanted)
    high = _version_tuple(server_max)
    if want is None or high is None:
        return None
    low = _version_tuple(server_min)
    need = _version_tuple(minimum)
    if need is not None and high < need:
        return None
    chosen = min(want, high)
    if low is not None and chosen < low:
        chosen = low
    if need is not None and chosen < need:
        chosen = need
    return '%d.%d' % chosen


def version_at_least(version: Optional[str], minimum: str) -> bool:
    """True when ``version`` (``<major>.<minor>``) is set and >= ``minimum``."""
    have = _version_tuple(version)
    need = _version_tuple(minimum)
    return have is not None and need is not None and have >= need


def endpoint_microversions(proxy: Any) -> Tuple[Optional[str], Optional[str]]:
    """(min, max) microversion the service announces through version discovery, or (None, None)."""
    with api_errors('discovering the %s API versions' % getattr(proxy, 'service_type', 'service')):
        data = proxy.get_endpoint_data()
    if data is None:
        return None, None

    def text(value: Any) -> Optional[str]:
        if not value:
            return None
        if isinstance(value, (tuple, list)):
            return '.'.join(str(int(v)) for v in value[:2])
        return str(value)

    return text(getattr(data, 'min_microversion', None)), text(getattr(data, 'max_microversion', None))


def request_json(proxy: Any, method: str, url: str, action: str, microversion: Optional[str] = None,
                 body: Optional[Mapping[str, Any]] = None, hints: Optional[Mapping[int, str]] = None,
                 params: Optional[Mapping[str, Any]] = None) -> Any:
    """One REST call through a service proxy (``conn.block_storage``) with an explicit microversion.

    Returns the decoded JSON body (None when empty); an HTTP error becomes a :class:`VolsnapError`
    with the API's message (see :func:`api_error`).
    """
    openstack = sdk()
    kwargs: Dict[str, Any] = {'microversion': microversion, 'raise_exc': False}
    if body is not None:
        kwargs['json'] = body
    if params:
        kwargs['params'] = dict(params)
    with api_errors(action, hints):
        response = proxy.request(url, method, **kwargs)
        openstack.exceptions.raise_from_response(response)
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise VolsnapError('%s: the API answered HTTP %s with a body that is not JSON: %.200r'
                           % (action, response.status_code, response.text))
