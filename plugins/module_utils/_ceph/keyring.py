# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keyring files of cephx clients: content, ownership and mode, compared and written honestly.

* :func:`render_keyring` writes the text Ceph itself writes (``ceph auth get -o``): a section per
  entity with its key and, optionally, its caps (in Ceph's order: by daemon type name).
* :func:`same_keyring` compares two keyring texts by what they say (sections, keys, caps), so a file
  Ceph wrote with other white space or another grant order is not rewritten.
* :func:`redact` is the text safe to show in a diff: every key hidden however the line is written (inline
  comments, extra words, quotes, any spacing, any section, commented out), anything that looks like a key hidden in
  comments and caps, any line it does not understand hidden as a whole; :func:`scrub_keys` does the same for free
  text such as messages. A key never leaves this module in a result, a diff or a message.
* :func:`inspect_file` reads what is on disk; :func:`plan_keyring` compares it with what is wanted,
  says which of content, owner, group and mode differ, and plans the steps (:data:`KEYRING_ACTIONS`, the shared
  step model: remove stale temporaries, then write, or set attributes, or remove; then Ansible's own attributes).
  No step holds the key.
* :func:`apply_keyring` runs the plan's steps through one handler table (outside check mode); it changes owner,
  group and mode of an existing file through the intersection of the old and the new mode
  (:func:`.._base.atomic.change_attributes_narrowing`): no one ever gains an access that neither grants.
* :func:`write_keyring` replaces the file atomically (:mod:`.._base.atomic`): a temporary file in the same directory created
  0600, given its final owner, group and mode *before* the key is written into it, fsynced, renamed
  over the old file, directory fsynced. At no moment does the path hold the new key with a looser mode
  than asked, and a crash leaves either the old or the new file.
"""

from __future__ import annotations

import base64
import binascii
import errno
import grp
import os
import pwd
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import (
    FileAttributes,
    change_attributes_narrowing,
    fsync_dir,
    owner_id,
    write_atomic,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.cephx import CAP_TYPES, caps_equal, entity_name, normalize_caps
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.steps import Actions, Executor, Handler, RunContext, Step

HIDDEN = '<hidden>'
HIDDEN_NEW = '<hidden, another key>'
# A cephx secret is base64 text (40 characters for the usual AES key); nothing that could break the file.
_KEY = re.compile(r'^[A-Za-z0-9+/]+={0,2}$')
_SECTION = re.compile(r'^\s*\[(?P<name>[^\]]+)\]\s*$')
_KEY_LINE = re.compile(r'^(?P<lead>\s*key\s*=\s*)(?P<key>\S+)(?P<trail>\s*)$')
_CAPS_LINE = re.compile(r'^\s*caps\s+(?P<kind>[A-Za-z]+)\s*=\s*(?P<value>.*?)\s*$')
MAX_KEYRING_BYTES = 1024 * 1024


def validate_key(key: str) -> str:
    """The key, stripped, when it looks like a cephx secret; a clear error otherwise (the key is not shown)."""
    value = (key or '').strip()
    if not value or not _KEY.match(value):
        raise VolsnapError('the key is not a cephx secret (base64 text as "ceph auth get-key" prints it); the value '
                           'is not shown')
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VolsnapError('the key is not valid base64 (as "ceph auth get-key" prints it); the value is not shown')
    if len(raw) < 12:
        raise VolsnapError('the key is too short to be a cephx secret; the value is not shown')
    return value


def _quote_cap(kind: str, cap: str) -> str:
    if '"' not in cap:
        return '"%s"' % cap
    if "'" not in cap:
        return "'%s'" % cap
    raise VolsnapError('the %s cap contains both quote characters and cannot be written to a keyring file' % kind)


def render_keyring(entity: str, key: str, caps: Optional[Mapping[str, str]] = None) -> bytes:
    """The keyring file for one entity, as ``ceph auth get -o`` writes it."""
    lines = ['[%s]' % entity, '\tkey = %s' % key]
    normalized = normalize_caps(caps)
    for kind in sorted(normalized):  # Ceph keeps caps in a map sorted by type: mds, mgr, mon, osd
        lines.append('\tcaps %s = %s' % (kind, _quote_cap(kind, normalized[kind])))
    return ('\n'.join(lines) + '\n').encode('utf-8')


Entry = Tuple[Optional[str], Dict[str, str]]


def parse_keyring(content: bytes) -> Optional[Dict[str, Entry]]:
    """``{section: (key, caps)}`` of a keyring text, or None when it holds anything else than sections, keys,
    caps, comments and blank lines (such a file is compared byte for byte). For comparisons only."""
    found: Dict[str, Entry] = {}
    section: Optional[str] = None
    for line in content.decode('utf-8', 'replace').splitlines():
        if not line.strip() or line.lstrip().startswith(('#', ';')):
            continue
        match = _SECTION.match(line)
        if match:
            section = match.group('name').strip()
            if section in found:
                return None
            found[section] = (None, {})
            continue
        if section is None:
            return None
        key, caps = found[section]
        match = _KEY_LINE.match(line)
        if match and key is None:
            found[section] = (match.group('key'), caps)
            continue
        match = _CAPS_LINE.match(line)
        if not match or match.group('kind').lower() in caps:
            return None
        value = match.group('value')
        if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
            value = value[1:-1]
        caps[match.group('kind').lower()] = value
    return found


def same_keyring(first: bytes, second: bytes) -> bool:
    """True when both texts hold the same sections with the same keys and caps that grant the same (any white
    space, quoting or grant order): a keyring written by ``ceph auth get -o`` equals the one we would write."""
    if first == second:
        return True
    left, right = parse_keyring(first), parse_keyring(second)
    if left is None or right is None or set(left) != set(right):
        return False
    try:
        return all(left[s][0] == right[s][0] and caps_equal(left[s][1], right[s][1]) for s in left)
    except VolsnapError:  # an unknown cap type in the file: not something we would write
        return False


# Any line that assigns ``key`` as Ceph's parser could read it: any case, optional quotes around the name, any
# white space, ``=`` (or ``:``), then anything (the key, quotes, an inline ``;``/``#`` comment, extra words).
_KEY_ASSIGN = re.compile(r'^(?P<lead>\s*(?P<quote>["\']?)key(?P=quote)\s*[=:]\s*)(?P<rest>.*)$', re.IGNORECASE | re.DOTALL)
# A run of base64 text long enough to be a secret (a cephx key is 40 characters).
_KEY_LIKE = re.compile(r'[A-Za-z0-9+/]{16,}={0,2}')
HIDDEN_TEXT = '<hidden text>'
HIDDEN_LINE = '<hidden: not a section, key or caps line>'
# Control characters (but tab) in a line that would be shown: the line is hidden, as another reader could split it.
_CONTROL = re.compile('[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]')


def _lines(content: bytes) -> List[str]:
    """The lines of a keyring text as Ceph splits them (on LF; a CR before it is dropped)."""
    text = content.decode('utf-8', 'replace')
    lines = text.split('\n')
    if lines and lines[-1] == '':
        lines.pop()
    return [line[:-1] if line.endswith('\r') else line for line in lines]


def _key_token(rest: str) -> str:
    """The key of a key line's value as a lenient reader sees it: its first word, without quotes."""
    words = rest.strip().split()
    return words[0].strip('"\'') if words else ''


def _looks_like_key(text: str) -> bool:
    return (text.endswith('=') or text.startswith('AQ')
            or (any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)))


def scrub_keys(text: Optional[str]) -> str:
    """``text`` with every run of base64 text that could be a key (16 characters or more, mixed case and digits, or
    ``=`` padding, or cephx's ``AQ`` prefix) replaced by ``<hidden>``: for free text (comments, caps, messages)."""
    if not text:
        return text or ''
    return _KEY_LIKE.sub(lambda m: HIDDEN if _looks_like_key(m.group(0)) else m.group(0), text)


def scrub_value(value: Any) -> Any:
    """:func:`scrub_keys` on every string of a result or message detail (dicts, lists and tuples walked)."""
    if isinstance(value, str):
        return scrub_keys(value)
    if isinstance(value, dict):
        return dict((scrub_value(k), scrub_value(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [scrub_value(item) for item in value]
    return value


def _section_keys(content: bytes) -> Iterator[Tuple[Optional[str], str]]:
    """(section, key) of every key line of a keyring text, read leniently (any key line, in any section, even
    one without a name: None)."""
    section = None
    for line in _lines(content):
        match = _SECTION.match(line)
        if match:
            section = match.group('name').strip()
            continue
        match = _KEY_ASSIGN.match(line)
        if match:
            yield section, _key_token(match.group('rest'))


def keys_of(content: bytes) -> Dict[Optional[str], str]:
    """``{section: key}`` of a keyring text (the last key line of each section), to tell whether a key changed.
    For comparisons only; never returned."""
    return dict(_section_keys(content))


def _key_sets(content: bytes) -> Dict[Optional[str], Set[str]]:
    """Every key of each section (read as :func:`keys_of` does)."""
    found: Dict[Optional[str], Set[str]] = {}
    for section, key in _section_keys(content):
        found.setdefault(section, set()).add(key)
    return found


def _redact_comment(line: str) -> str:
    stripped = line.lstrip()
    body = stripped[1:]
    match = _KEY_ASSIGN.match(body)
    if match:  # a key commented out (an old key, typically)
        return line[:len(line) - len(stripped) + 1] + match.group('lead') + HIDDEN
    return scrub_keys(line)


def redact(content: Optional[bytes], reference: Optional[bytes] = None) -> str:
    """``content`` safe to show: each key replaced by ``<hidden>``, or by ``<hidden, another key>`` when
    ``reference`` holds another key for that section (so a diff shows that the key changed without showing it).

    Only what is understood is shown: section headers, caps lines and comments (with anything that looks like a key
    hidden), blank lines. A key line shows its name only, followed by ``<hidden text>`` when it held more than the
    key (a comment, other words). Any other line is replaced as a whole, as it could hold a key in a form this
    function does not know."""
    if content is None:
        return ''
    others = _key_sets(reference) if reference is not None else {}
    out: List[str] = []
    section = None
    for line in _lines(content):
        stripped = line.strip()
        if not stripped:
            out.append('' if _CONTROL.search(line) else line)
            continue
        match = _KEY_ASSIGN.match(line)
        if match:
            rest = match.group('rest').strip()
            token = _key_token(rest)
            marker = HIDDEN
            if reference is not None and token not in others.get(section, ()):
                marker = HIDDEN_NEW
            if rest.strip('"\'') != token:
                marker += ' ' + HIDDEN_TEXT
            out.append(_CONTROL.sub(' ', match.group('lead')) + marker)
            continue
        if _CONTROL.search(line):
            out.append(HIDDEN_LINE)
            continue
        match = _SECTION.match(line)
        if match:
            section = match.group('name').strip()
            out.append(scrub_keys(line))
            continue
        if stripped.startswith(('#', ';')):
            out.append(_redact_comment(line))
            continue
        match = _CAPS_LINE.match(line)
        if match and match.group('kind').lower() in CAP_TYPES:
            out.append(scrub_keys(line))
            continue
        out.append(HIDDEN_LINE)
    return '\n'.join(out) + ('\n' if out else '')


# ---------------------------------------------------------------------------------------------
# owners and modes

def parse_mode(mode: Any) -> int:
    """An octal mode (``'0640'``, ``'640'``, or an int as YAML gives ``0640``) as an int; symbolic modes are refused."""
    if isinstance(mode, bool):
        raise VolsnapError('mode must be an octal string such as "0640", not %r' % mode)
    if isinstance(mode, int):
        value = mode
    else:
        text = str(mode).strip()
        if text.lower().startswith('0o'):
            text = text[2:]
        if not text or not re.match(r'^[0-7]{1,4}$', text):
            raise VolsnapError('mode must be an octal string such as "0640" (symbolic modes are not accepted for key '
                               'files), not %r' % mode)
        value = int(text, 8)
    if value < 0 or value > 0o777:
        raise VolsnapError('mode %r is not a permission mode for a key file (0000 to 0777; setuid, setgid and sticky '
                           'bits are refused). Quote it in YAML ("0640"): an unquoted 640 is a decimal number'
                           % (mode,))
    return value


def mode_text(mode: Optional[int]) -> Optional[str]:
    return None if mode is None else '%04o' % mode


def _resolve_id(kind: str, value: Optional[str], lookup: Callable[[str], int], option: str) -> Optional[int]:
    try:
        return owner_id(value, lookup)
    except KeyError:
        raise VolsnapError('the %s %s does not exist on this host: create it (or install the service that owns '
                           'it) before its keyring, or set %s' % (kind, str(value).strip(), option))


def resolve_user(owner: Optional[str]) -> Optional[int]:
    return _resolve_id('user', owner, lambda name: pwd.getpwnam(name).pw_uid, 'owner')


def resolve_group(group: Optional[str]) -> Optional[int]:
    return _resolve_id('group', group, lambda name: grp.getgrnam(name).gr_gid, 'group')


def user_name(uid: Optional[int]) -> Optional[str]:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: Optional[int]) -> Optional[str]:
    if gid is None:
        return None
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# ---------------------------------------------------------------------------------------------
# what is there, what is wanted, what differs

@dataclass
class FileState:
    """The keyring path as found on disk."""

    path: str
    exists: bool
    uid: Optional[int] = None
    gid: Optional[int] = None
    mode: Optional[int] = None
    content: Optional[bytes] = field(default=None, repr=False)

    def summary(self) -> Dict[str, Any]:
        if not self.exists:
            return {'path': self.path, 'state': 'absent'}
        return {'path': self.path, 'state': 'file', 'owner': user_name(self.uid), 'group': group_name(self.gid),
                'mode': mode_text(self.mode)}


def inspect_file(path: str) -> FileState:
    """Read the keyring path (without following a symlink). Anything but a regular file is refused."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return FileState(path=path, exists=False)
        raise VolsnapError('cannot read %s: %s' % (path, exc.strerror))
    if stat.S_ISLNK(info.st_mode):
        raise VolsnapError('%s is a symbolic link: give the real path of the keyring file (a link is never replaced '
                           'or followed, so that a key is not written where the link points)' % path)
    if not stat.S_ISREG(info.st_mode):
        raise VolsnapError('%s exists and is not a regular file' % path)
    if info.st_size > MAX_KEYRING_BYTES:
        raise VolsnapError('%s is %d bytes: too large to be a keyring, refusing to replace it' % (path, info.st_size))
    try:
        with open(path, 'rb') as handle:
            content = handle.read(MAX_KEYRING_BYTES + 1)
    except OSError as exc:
        raise VolsnapError('cannot read %s: %s' % (path, exc.strerror))
    return FileState(path=path, exists=True, uid=info.st_uid, gid=info.st_gid, mode=stat.S_IMODE(info.st_mode),
                     content=content)


def _describe(summary: Mapping[str, Any], text: str) -> str:
    lines = ['# %s: %s' % (name, summary[name]) for name in ('state', 'owner', 'group', 'mode') if name in summary]
    return '\n'.join(lines) + '\n' + text


def _attributes_text(args: Mapping[str, Any]) -> str:
    owner = user_name(args['uid']) if args['uid'] is not None else '(kept)'
    group = group_name(args['gid']) if args['gid'] is not None else '(kept)'
    return 'owner %s, group %s, mode %s' % (owner, group, mode_text(args['mode']))


# The actions of a keyring change, defined once. No step ever holds the key: the file's content stays on the plan
# (never shown), and ``write`` takes it from there.
KEYRING_ACTIONS = Actions('ceph_keyring', {
    'remove_stale': lambda a: 'remove %s (a temporary file an interrupted write left)' % a['path'],
    'remove': lambda a: 'remove %s' % a['path'],
    'write': lambda a: ('write %s atomically, %s set before the key is written' % (a['path'], _attributes_text(a))),
    'set_attributes': lambda a: ('set %s on %s through the intersection of the old and the new mode'
                                 % (_attributes_text(a), a['path'])),
    'file_attributes': lambda a: 'apply the remaining file attributes of %s (SELinux context, attributes)' % a['path'],
})


@dataclass
class KeyringRequest:
    path: str
    name: str
    state: str = 'present'
    key: Optional[str] = field(default=None, repr=False)
    caps: Optional[Mapping[str, Any]] = None
    owner: Optional[str] = None
    group: Optional[str] = None
    mode: Any = '0600'


@dataclass
class KeyringPlan:
    """What differs between the file on disk and the wanted one."""

    path: str
    entity: str
    state: str
    current: FileState
    content: Optional[bytes] = field(default=None, repr=False)
    uid: Optional[int] = None
    gid: Optional[int] = None
    mode: Optional[int] = None
    changes: List[str] = field(default_factory=list)
    stale: List[str] = field(default_factory=list)
    steps: List[Step] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def after_summary(self) -> Dict[str, Any]:
        if self.state == 'absent':
            return {'path': self.path, 'state': 'absent'}
        current = self.current
        uid = self.uid if self.uid is not None else (current.uid if current.exists else os.geteuid())
        gid = self.gid if self.gid is not None else (current.gid if current.exists else os.getegid())
        return {'path': self.path, 'state': 'file', 'owner': user_name(uid), 'group': group_name(gid),
                'mode': mode_text(self.mode)}

    def diff(self) -> Dict[str, Any]:
        """Before and after as text: owner, group, mode, then the file's text with the keys hidden."""
        before = _describe(self.current.summary(), redact(self.current.content) if self.current.exists else '')
        if self.state == 'present':
            text = redact(self.content, self.current.content if self.current.exists else None) \
                if self.content is not None else '[%s]\n\tkey = %s\n' % (self.entity, HIDDEN_NEW)
        else:
            text = ''
        after = _describe(self.after_summary(), text)
        return {'before': before, 'after': after, 'before_header': self.path, 'after_header': self.path}

    def result(self, found: Sequence[str] = ()) -> Dict[str, Any]:
        """The module's result; ``found``: changes a run found beyond the plan's (see :class:`KeyringOutcome`)."""
        after = self.after_summary()
        changes = list(self.changes) + list(found)
        result: Dict[str, Any] = {
            'changed': bool(changes),
            'path': self.path,
            'entity': self.entity,
            'state': 'absent' if self.state == 'absent' else 'file',
            'changes': changes,
        }
        for name in ('owner', 'group', 'mode'):
            if name in after:
                result[name] = after[name]
        return result


def plan_keyring(request: KeyringRequest, current: FileState, key_known: bool = True,
                 stale: Sequence[str] = ()) -> KeyringPlan:
    """Compare ``current`` with ``request`` and plan the steps. ``key_known`` False (check mode, client not created
    yet) counts the content as changed; ``stale``: temporary files an interrupted write left (removed first)."""
    entity = entity_name(request.name)
    if request.state == 'absent':
        plan = KeyringPlan(path=request.path, entity=entity, state='absent', current=current)
        if current.exists:
            plan.changes.append('removed')
            plan.steps.append(KEYRING_ACTIONS.step('remove', path=request.path))
        _plan_stale(plan, stale)
        return plan
    mode = parse_mode(request.mode)
    uid = resolve_user(request.owner)
    gid = resolve_group(request.group)
    content = None
    if key_known:
        content = render_keyring(entity, validate_key(request.key or ''), request.caps)
    plan = KeyringPlan(path=request.path, entity=entity, state='present', current=current, content=content,
                       uid=uid, gid=gid, mode=mode)
    if not current.exists:
        plan.changes.append('created')
    else:
        if content is None or current.content is None or not same_keyring(current.content, content):
            plan.changes.append('content')
        if uid is not None and current.uid != uid:
            plan.changes.append('owner')
        if gid is not None and current.gid != gid:
            plan.changes.append('group')
        if current.mode != mode:
            plan.changes.append('mode')
    attributes: Dict[str, Any] = dict(path=request.path, uid=uid, gid=gid, mode=mode)
    if 'created' in plan.changes or 'content' in plan.changes:
        plan.steps.append(KEYRING_ACTIONS.step('write', **attributes))
    elif set(plan.changes) & {'owner', 'group', 'mode'}:
        plan.steps.append(KEYRING_ACTIONS.step('set_attributes', **attributes))
    # Then Ansible's own helper (SELinux context or attributes where the platform has them); owner, group and
    # mode are already right, so it reports only what remains different.
    plan.steps.append(KEYRING_ACTIONS.step('file_attributes', **attributes))
    _plan_stale(plan, stale)
    return plan


def _plan_stale(plan: KeyringPlan, stale: Sequence[str]) -> None:
    """Temporary files left by an interrupted write are removed before anything else."""
    plan.stale = list(stale)
    if plan.stale:
        plan.changes.append('stale temporary files')
        plan.steps[:0] = [KEYRING_ACTIONS.step('remove_stale', path=name) for name in plan.stale]


def write_keyring(path: str, content: bytes, uid: Optional[int], gid: Optional[int], mode: int) -> None:
    """Replace ``path`` atomically with ``content``; owner, group and mode are set before the key is written.

    ``uid``/``gid`` None keep the current file's (or the process's, for a new file). A refused chown fails.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise VolsnapError('the directory %s does not exist: create it first (for example /etc/ceph with the '
                           'ceph-common package)' % directory)
    try:
        current = os.lstat(path)
    except OSError:
        current = None
    owner = uid if uid is not None else (current.st_uid if current is not None else -1)
    group = gid if gid is not None else (current.st_gid if current is not None else -1)
    write_atomic(path, content, FileAttributes(mode, owner, group))


def remove_keyring(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise VolsnapError('cannot remove %s: %s' % (path, exc.strerror))
        return
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def stale_temporaries(path: str) -> List[str]:
    """Temporary files an interrupted :func:`write_keyring` left beside ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = '.%s.' % os.path.basename(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, name) for name in names
                  if name.startswith(prefix) and name.endswith('.tmp'))


# (path, owner, group, mode as '0640') -> whether anything differed; the module passes a wrapper of
# AnsibleModule.set_fs_attributes_if_different, which also honours check mode.
SetAttributes = Callable[[str, Optional[str], Optional[str], str], bool]


@dataclass
class KeyringOutcome:
    """A keyring plan and what its run found: the Ansible attribute helper may report a difference the plan could
    not see (an SELinux context). The plan itself is never written to."""

    plan: KeyringPlan
    context: RunContext = field(default_factory=RunContext)

    @property
    def found(self) -> List[str]:
        return ['attributes'] if self.context.get('attributes') and not self.plan.changes else []

    @property
    def changes(self) -> List[str]:
        return list(self.plan.changes) + self.found

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def diff(self) -> Dict[str, Any]:
        return self.plan.diff()

    def result(self) -> Dict[str, Any]:
        return self.plan.result(self.found)


def _keyring_handlers(plan: KeyringPlan, set_attributes: SetAttributes) -> Dict[str, Handler]:
    """One handler per action of :data:`KEYRING_ACTIONS`; ``write`` takes the content from ``plan``."""

    def remove(step: Step, context: RunContext) -> None:
        remove_keyring(step.args['path'])

    def write(step: Step, context: RunContext) -> None:
        path = step.args['path']
        try:
            write_keyring(path, plan.content or b'', step.args['uid'], step.args['gid'], step.args['mode'])
        except OSError as exc:
            raise VolsnapError('writing %s failed: %s; the file is unchanged (a new key is never left in a temporary '
                               'file). Fix the cause and run again' % (path, exc.strerror or exc),
                               path=path, errno=exc.errno)

    def narrow(step: Step, context: RunContext) -> None:
        # Owner or group and mode together: through the intersection of both modes, so that no one gains, even
        # for a moment, an access that neither the old nor the new attributes grant (see narrowing_steps).
        path, uid, gid = step.args['path'], step.args['uid'], step.args['gid']
        wanted = FileAttributes(step.args['mode'], uid if uid is not None else -1, gid if gid is not None else -1)
        try:
            change_attributes_narrowing(path, wanted)
        except OSError as exc:
            raise VolsnapError('changing the owner, group or mode of %s failed: %s. The change may be part done, '
                               'never granting more than the old or the new attributes; run again once the cause is '
                               'fixed' % (path, exc.strerror or exc), path=path, errno=exc.errno)

    def file_attributes(step: Step, context: RunContext) -> None:
        uid, gid = step.args['uid'], step.args['gid']
        owner = str(uid) if uid is not None else None
        group = str(gid) if gid is not None else None
        context.set('attributes', set_attributes(step.args['path'], owner, group, mode_text(step.args['mode']) or
                                                 '0600'))

    return {'remove_stale': remove, 'remove': remove, 'write': write, 'set_attributes': narrow,
            'file_attributes': file_attributes}


def apply_keyring(request: KeyringRequest, check_mode: bool, set_attributes: SetAttributes) -> KeyringOutcome:
    """Make the keyring file match ``request`` (or, in check mode, say what would change).

    In check mode a request without a key (the client does not exist yet) reports the file as changed.
    """
    if request.state == 'present' and request.key is None and not check_mode:
        raise VolsnapError('key is required with state=present (outside check mode): pass the key of %s, for example '
                           'from volsnap.openstack.ceph_auth_client with return_key and no_log' % request.name)
    current = inspect_file(request.path)
    plan = plan_keyring(request, current, key_known=request.key is not None, stale=stale_temporaries(request.path))
    if check_mode:
        return KeyringOutcome(plan)
    context = Executor(KEYRING_ACTIONS, _keyring_handlers(plan, set_attributes)).run(plan.steps)
    return KeyringOutcome(plan, context)
