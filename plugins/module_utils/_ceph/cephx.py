# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cephx clients and their caps, managed through the monitors' command interface.

* :func:`entity_name` / :func:`normalize_caps` / :func:`caps_equal` / :func:`merge_caps`: pure logic on
  client names and caps. Caps are compared grant by grant (a cap string is a list of grants separated
  by ``,`` or ``;``); white space and the order of the grants do not matter, anything else does.
* :class:`AuthApi`: ``auth get``, ``auth get-or-create``, ``auth caps`` and ``auth rm`` over a
  ``mon_command`` callable (``rados.Rados.mon_command`` in a module, a fake in unit tests).
* :func:`ensure_client`: the idempotent create / update / remove of one client, honest in check mode,
  with a diff of the caps (never the key). Its steps are built through :data:`CLIENT_ACTIONS` (the shared
  step model); a step's description is the ``ceph`` command it sends, as ``commands`` reports it.

The key of a client is read only when the caller asks for it (``return_key``); nothing here writes it
anywhere, logs it or puts it in a diff or an error message.
"""

from __future__ import annotations

import errno as errno_codes
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import ceph_errors
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.steps import Actions, Executor, Handler, RunContext, Step

# The daemon types a cephx client can hold caps for.
CAP_TYPES = ('mon', 'osd', 'mgr', 'mds')
CAPS_MODES = ('exact', 'merge')
STATES = ('present', 'absent')

# What Ceph accepts as the id of an entity (after "client."): no white space, brackets, quotes or '='.
_CLIENT_ID = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.@:-]*$')

# (return code, output buffer, status string) as ``rados.Rados.mon_command`` returns them.
MonReply = Tuple[int, bytes, str]
MonCommand = Callable[[Dict[str, Any]], MonReply]
Caps = Dict[str, str]


def entity_name(name: str) -> str:
    """``client.<id>`` for ``name`` given as ``<id>`` or ``client.<id>``; only client entities are accepted."""
    value = (name or '').strip()
    if value.startswith('client.'):
        ident = value[len('client.'):]
    elif '.' in value and value.split('.', 1)[0] in ('osd', 'mon', 'mgr', 'mds'):
        raise VolsnapError('%r is a daemon entity: only cephx clients (client.<id>) are managed here' % name)
    else:
        ident = value
    if not ident or not _CLIENT_ID.match(ident):
        raise VolsnapError('%r is not a valid cephx client name: give the id alone (cinder) or with its type '
                           '(client.cinder); letters, digits and _ . - @ : only' % name)
    return 'client.' + ident


def split_grants(cap: str) -> List[str]:
    """The grants of one cap string, each with its white space collapsed (quoted text is kept as is).

    Ceph separates grants with ``,`` or ``;``; a separator inside quotes is part of the grant.
    """
    grants: List[str] = []
    current: List[str] = []
    quote: Optional[str] = None
    pending_space = False
    for char in cap:
        if quote:
            current.append(char)
            if char == quote:
                quote = None
            continue
        if char in ('"', "'"):
            quote = char
        elif char in (',', ';'):
            grants.append(''.join(current).strip())
            current, pending_space = [], False
            continue
        elif char.isspace():
            pending_space = True
            continue
        if pending_space and current:
            current.append(' ')
        pending_space = False
        current.append(char)
    if quote:
        raise VolsnapError('the cap %r has an unterminated quote' % cap)
    grants.append(''.join(current).strip())
    return [grant for grant in grants if grant]


def normalize_cap(cap: str) -> str:
    """One cap string in Ceph's usual spelling: grants joined by ``, ``."""
    return ', '.join(split_grants(cap))


def normalize_caps(caps: Optional[Mapping[str, Any]]) -> Caps:
    """Validated caps: known daemon types only, strings, white space normalized, empty caps dropped."""
    result: Caps = {}
    for kind, value in (caps or {}).items():
        key = str(kind).strip().lower()
        if key not in CAP_TYPES:
            raise VolsnapError('unknown cap type %r: caps are given per daemon type, one of %s'
                               % (kind, ', '.join(CAP_TYPES)))
        if value is None:
            continue
        if not isinstance(value, str):
            raise VolsnapError('the %s cap must be a string such as "profile rbd pool=volumes", not %r'
                               % (key, value))
        if '\n' in value or '\r' in value:
            raise VolsnapError('the %s cap contains a line break' % key)
        text = normalize_cap(value)
        if text:
            result[key] = text
    return result


def caps_equal(first: Mapping[str, str], second: Mapping[str, str]) -> bool:
    """True when both grant exactly the same: same types, same grants (any order, any white space)."""
    left, right = normalize_caps(first), normalize_caps(second)
    if set(left) != set(right):
        return False
    return all(Counter(split_grants(left[kind])) == Counter(split_grants(right[kind])) for kind in left)


def merge_caps(current: Mapping[str, str], wanted: Mapping[str, str]) -> Caps:
    """``current`` plus every grant of ``wanted`` it does not have yet (types and grants are only added)."""
    merged = normalize_caps(current)
    for kind, cap in normalize_caps(wanted).items():
        grants = split_grants(merged.get(kind, ''))
        for grant in split_grants(cap):
            if grant not in grants:
                grants.append(grant)
        merged[kind] = ', '.join(grants)
    return merged


def caps_argument(caps: Mapping[str, str]) -> List[str]:
    """The flat ``[type, cap, type, cap...]`` list the ``auth`` commands take, in a stable order."""
    flat: List[str] = []
    for kind in CAP_TYPES:
        if kind in caps:
            flat.extend([kind, caps[kind]])
    return flat


def caps_cli(caps: Mapping[str, str]) -> str:
    """The caps as a ``ceph auth`` command line shows them (for messages and the returned commands)."""
    return ' '.join("%s '%s'" % (kind, caps[kind]) for kind in CAP_TYPES if kind in caps)


# ---------------------------------------------------------------------------------------------
# the monitors' auth commands

@dataclass
class AuthEntry:
    """One entity of the auth database. ``key`` is filled only when it was asked for."""

    entity: str
    caps: Caps = field(default_factory=dict)
    key: Optional[str] = field(default=None, repr=False)


def _errno_name(code: int) -> str:
    return errno_codes.errorcode.get(abs(code), 'errno %d' % abs(code))


class AuthApi(object):
    """The ``auth`` commands of the monitors over ``mon_command``."""

    def __init__(self, mon_command: MonCommand, admin: str = 'client.admin') -> None:
        self._mon_command = mon_command
        self.admin = admin

    def _run(self, command: Dict[str, Any], what: str) -> MonReply:
        ret, out, status = self._mon_command(command)
        if ret != 0 and ret != -errno_codes.ENOENT:
            raise self._error(ret, status, what)
        return ret, out, status

    def _error(self, ret: int, status: str, what: str) -> VolsnapError:
        code = abs(ret)
        msg = '%s failed: %s (%s)' % (what, (status or '').strip() or 'no message', _errno_name(ret))
        if code in (errno_codes.EACCES, errno_codes.EPERM):
            msg += ('. %s may not change the auth database: use a client with mon \'allow *\' (client.admin) '
                    'through ceph_user and keyring' % self.admin)
        elif code == errno_codes.EINVAL:
            msg += '. Ceph refused the caps: check their spelling (ceph auth caps syntax)'
        elif code == errno_codes.ETIMEDOUT:
            msg += '. The monitors did not answer in time: check the cluster (ceph -s) or raise rados_connect_timeout'
        return VolsnapError(msg, errno=code, ceph_message=(status or '').strip())

    def get(self, entity: str, with_key: bool = False) -> Optional[AuthEntry]:
        """The entity, or None when it does not exist. The key is kept only when ``with_key``."""
        ret, out, _status = self._run({'prefix': 'auth get', 'entity': entity, 'format': 'json'},
                                      'reading %s (ceph auth get)' % entity)
        if ret == -errno_codes.ENOENT:
            return None
        return self._parse(out, entity, 'ceph auth get', with_key=with_key)

    @staticmethod
    def _parse(out: Any, entity: str, command: str, with_key: bool = False) -> AuthEntry:
        try:
            data = json.loads(out.decode('utf-8') if isinstance(out, bytes) else out)
        except ValueError:
            raise VolsnapError('%s %s returned something that is not JSON' % (command, entity))
        records = data if isinstance(data, list) else [data]
        for record in records:
            if isinstance(record, dict) and record.get('entity') == entity:
                caps = record.get('caps') or {}
                return AuthEntry(entity=entity, caps=normalize_caps(caps),
                                 key=record.get('key') if with_key else None)
        raise VolsnapError('%s %s returned no record for that entity' % (command, entity))

    def create(self, entity: str, caps: Mapping[str, str]) -> Caps:
        """``auth get-or-create``; returns the caps the entity has afterwards.

        When the entity appeared since it was read, the monitors return it unchanged (with its own caps).
        """
        what = 'creating %s (ceph auth get-or-create)' % entity
        command = {'prefix': 'auth get-or-create', 'entity': entity, 'caps': caps_argument(caps), 'format': 'json'}
        ret, out, status = self._run(command, what)
        if ret != 0:
            raise self._error(ret, status, what)
        entry = self._parse(out, entity, 'ceph auth get-or-create')
        return entry.caps

    def set_caps(self, entity: str, caps: Mapping[str, str]) -> None:
        ret, _out, status = self._run({'prefix': 'auth caps', 'entity': entity, 'caps': caps_argument(caps)},
                                      'changing the caps of %s (ceph auth caps)' % entity)
        if ret != 0:
            raise self._error(ret, status, 'changing the caps of %s (ceph auth caps)' % entity)

    def remove(self, entity: str) -> None:
        """``auth rm`` (the monitors answer 0 also when the entity does not exist)."""
        self._run({'prefix': 'auth rm', 'entity': entity}, 'removing %s (ceph auth rm)' % entity)


# ---------------------------------------------------------------------------------------------
# the idempotent operation

@dataclass
class ClientRequest:
    name: str
    state: str = 'present'
    caps: Optional[Mapping[str, Any]] = None
    caps_mode: str = 'exact'
    return_key: bool = False


@dataclass
class ClientOutcome:
    """What :func:`ensure_client` did (or would do in check mode)."""

    entity: str
    changed: bool
    exists: bool
    caps: Caps
    caps_before: Optional[Caps]
    commands: List[str]
    key: Optional[str] = field(default=None, repr=False)

    def result(self) -> Dict[str, Any]:
        result: Dict[str, Any] = {
            'changed': self.changed,
            'entity': self.entity,
            'exists': self.exists,
            'caps': dict(self.caps),
            'commands': list(self.commands),
        }
        return result

    def diff(self) -> Dict[str, Any]:
        before: Dict[str, Any] = {'entity': self.entity, 'exists': self.caps_before is not None}
        if self.caps_before is not None:
            before['caps'] = dict(self.caps_before)
        after: Dict[str, Any] = {'entity': self.entity, 'exists': self.exists}
        if self.exists:
            after['caps'] = dict(self.caps)
        return {'before': before, 'after': after}


def desired_caps(request: ClientRequest, current: Optional[Caps]) -> Optional[Caps]:
    """The caps the client must end with; None when the request leaves them alone."""
    if request.caps is None:
        return None
    wanted = normalize_caps(request.caps)
    if request.caps_mode == 'merge':
        return merge_caps(current or {}, wanted)
    return wanted


# The actions on a cephx client, defined once; a step is described by the command it sends.
CLIENT_ACTIONS = Actions('ceph_auth_client', {
    'create': lambda a: ('ceph auth get-or-create %s %s' % (a['entity'], caps_cli(a['caps']))).rstrip(),
    'set_caps': lambda a: 'ceph auth caps %s %s' % (a['entity'], caps_cli(a['caps'])),
    'remove': lambda a: 'ceph auth rm %s' % a['entity'],
})


def _client_handlers(api: AuthApi) -> Dict[str, Handler]:
    def create(step: Step, context: RunContext) -> None:
        entity, caps = step.args['entity'], step.args['caps']
        created = api.create(entity, caps)
        if not caps_equal(created, caps):
            # Another run created it between our read and our create: make its caps ours.
            fix = CLIENT_ACTIONS.step('set_caps', entity=entity, caps=caps)
            set_caps(fix, context)
            context.results.setdefault('also', []).append(fix)

    def set_caps(step: Step, context: RunContext) -> None:
        api.set_caps(step.args['entity'], step.args['caps'])

    def remove(step: Step, context: RunContext) -> None:
        api.remove(step.args['entity'])

    return {'create': create, 'set_caps': set_caps, 'remove': remove}


def _commands(steps: List[Step], context: Optional[RunContext] = None) -> List[str]:
    """The commands of the planned steps, then of what the run also had to send."""
    also: List[Step] = context.get('also', []) if context is not None else []
    return [step.description for step in steps + also]


def ensure_client(api: AuthApi, request: ClientRequest, check_mode: bool = False) -> ClientOutcome:
    """Create, update or remove one cephx client so that it matches ``request``.

    * present, missing: ``auth get-or-create`` with the caps (none when ``caps`` is None).
    * present, existing: ``auth caps`` only when the desired caps differ from the current ones.
    * absent: ``auth rm`` when it exists.
    In check mode nothing is sent but the reads, and the outcome says what would change.
    """
    if request.state not in STATES:
        raise VolsnapError('state must be one of %s, not %r' % (', '.join(STATES), request.state))
    if request.caps_mode not in CAPS_MODES:
        raise VolsnapError('caps_mode must be one of %s, not %r' % (', '.join(CAPS_MODES), request.caps_mode))
    entity = entity_name(request.name)
    if request.state == 'absent' and request.caps is not None:
        raise VolsnapError('caps cannot be given with state=absent: the client %s is removed' % entity)
    if request.state == 'absent' and request.return_key:
        raise VolsnapError('return_key cannot be used with state=absent')
    # Validate the caps before anything is read or changed.
    if request.caps is not None:
        normalize_caps(request.caps)
    current = api.get(entity, with_key=request.return_key)
    before = dict(current.caps) if current is not None else None

    if request.state == 'absent':
        if current is None:
            return ClientOutcome(entity, False, False, {}, None, [])
        steps = [CLIENT_ACTIONS.step('remove', entity=entity)]
        caps: Caps = {}
        exists = False
    else:
        target = desired_caps(request, before)
        if current is None:
            caps = target or {}
            steps = [CLIENT_ACTIONS.step('create', entity=entity, caps=caps)]
        elif target is None or caps_equal(before or {}, target):
            return ClientOutcome(entity, False, True, before or {}, before, [], key=current.key)
        else:
            caps = target
            steps = [CLIENT_ACTIONS.step('set_caps', entity=entity, caps=target)]
        exists = True
    # The key of an existing client was read with it; a new client's is read once it exists (never in a step).
    key = current.key if exists and current is not None else None
    if check_mode:
        return ClientOutcome(entity, True, exists, caps, before, _commands(steps), key=key)
    context = Executor(CLIENT_ACTIONS, _client_handlers(api)).run(steps)
    if current is None and request.return_key:
        entry = api.get(entity, with_key=True)
        key = entry.key if entry is not None else None
    return ClientOutcome(entity, True, exists, caps, before, _commands(steps, context), key=key)


def mon_command_of(cluster: Any, timeout: Optional[int]) -> MonCommand:
    """A :data:`MonCommand` sending JSON commands through a connected ``rados.Rados``."""
    seconds = int(timeout) if timeout and timeout > 0 else 0

    def send(command: Dict[str, Any]) -> MonReply:
        with ceph_errors('sending "ceph %s %s" to the monitors' % (command.get('prefix'), command.get('entity', ''))):
            ret, out, status = cluster.mon_command(json.dumps(command), b'', timeout=seconds)
        return ret, out, status
    return send


def run_client(connect: Callable[..., Any], ceph_conf: Optional[str], ceph_user: Optional[str],
               keyring: Optional[str], timeout: Optional[int], name: str, state: str,
               caps: Optional[Mapping[str, Any]], caps_mode: str, return_key: bool, check_mode: bool,
               admin: str = 'client.admin') -> ClientOutcome:
    """Connect with ``connect`` (``_ceph.connect``) and run :func:`ensure_client`."""
    request = ClientRequest(name=name, state=state, caps=caps, caps_mode=caps_mode, return_key=return_key)
    # Validate the request before connecting, so a typo fails without touching the cluster.
    entity_name(name)
    if caps is not None:
        normalize_caps(caps)
    with connect(ceph_conf=ceph_conf, ceph_user=ceph_user, keyring=keyring, timeout=timeout) as cluster:
        api = AuthApi(mon_command_of(cluster, timeout), admin=admin)
        return ensure_client(api, request, check_mode=check_mode)
