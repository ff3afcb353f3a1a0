# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read and edit oslo.config ini files (cinder.conf, glance-api.conf) in place.

The file is read exactly as oslo.config's ``iniparser`` reads it:

* a line is stripped on the right; an empty line ends a multi-line value;
* a line starting with a space or a tab continues the previous assignment (an error when
  there is none);
* ``[name]`` starts a section; ``#`` or ``;`` starts a comment;
* anything else is ``key = value`` or ``key: value`` (whichever separator comes first); the
  value is stripped and one pair of matching outer quotes is removed; continuation lines are
  appended with ``\\n``;
* a section may appear several times; for a single-valued option the last assignment wins;
  section names are compared lower-cased, except ``DEFAULT``.

Edits touch only the lines of the assignments they change: every other byte of the file
(comments, blank lines, order, line endings, other sections) is kept. Values given as Python
booleans, integers, lists or dicts are compared with the value in the file the way oslo.config
would convert it (``True`` equals ``yes``), so an edit is only made when the meaning differs.

Cinder's backend model (cinder/volume/configuration.py): ``[DEFAULT] enabled_backends`` names
the backend sections; an option missing from a backend section falls back to the
``[backend_defaults]`` section, then to the option's default (``[DEFAULT]`` is not consulted).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import (
    FileAttributes, attributes_like, narrowing_steps, owner_id, write_atomic,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.steps import Actions, Executor, RunContext, Step

DEFAULT_SECTION = 'DEFAULT'
BACKEND_DEFAULTS_SECTION = 'backend_defaults'
ENABLED_BACKENDS = 'enabled_backends'
VOLUME_DRIVER = 'volume_driver'

BOOL_TRUE = ('true', '1', 'on', 'yes')
BOOL_FALSE = ('false', '0', 'off', 'no')

_EOL_RE = re.compile(r'(\r\n|\n|\r)')


class IniParseError(VolsnapError):
    """The file is not something oslo.config can read."""


def normalize_section(name: str) -> str:
    """oslo.config's ``_normalize_group_name``."""
    return name if name == DEFAULT_SECTION else name.lower()


@dataclass
class _Line:
    content: str                 # the line without its line ending
    eol: str                     # '\n', '\r\n', '\r' or '' (last line without one)
    kind: str                    # blank, comment, section, assign, cont
    section: Optional[str] = None  # normalized section the line belongs to
    key: Optional[str] = None      # assign: the key
    value_start: int = 0           # assign: index in content where the raw value starts


@dataclass
class _Entry:
    """One assignment: its first line and its continuation lines, [start, end)."""
    section: str
    key: str
    start: int
    end: int
    value: str


def split_lines(text: str) -> List[Tuple[str, str]]:
    """Split on universal newlines (as Python's text mode does), keeping each line ending."""
    parts = _EOL_RE.split(text)
    lines = []
    for index in range(0, len(parts) - 1, 2):
        lines.append((parts[index], parts[index + 1]))
    if parts[-1]:
        lines.append((parts[-1], ''))
    return lines


def _unquote(value: str) -> str:
    if value and value[0] == value[-1] and value.startswith(('"', "'")):
        return value[1:-1]
    return value


def _split_key_value(content: str) -> Tuple[str, int]:
    """Key and the index where the value starts (after separator and blanks); oslo's rules."""
    colon = content.find(':')
    equal = content.find('=')
    if colon < 0 and equal < 0:
        raise ValueError("No ':' or '=' found in assignment")
    if colon < 0 or (0 <= equal < colon):
        sep = equal
    else:
        sep = colon
    key = content[:sep].strip()
    start = sep + 1
    while start < len(content) and content[start] in ' \t':
        start += 1
    return key, start


class OsloIni(object):
    """An oslo.config ini file as lines, with edits that keep everything else byte for byte."""

    def __init__(self, lines: List[_Line]) -> None:
        self.lines = lines
        self._index()

    # -- parsing -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> 'OsloIni':
        lines: List[_Line] = []
        section: Optional[str] = None
        in_assignment = False
        for lineno, (content, eol) in enumerate(split_lines(text), start=1):
            stripped = content.rstrip()
            if not stripped:
                lines.append(_Line(content, eol, 'blank', section))
                in_assignment = False
                continue
            if stripped.startswith((' ', '\t')):
                if not in_assignment:
                    raise IniParseError('line %d: unexpected continuation line (an indented line must follow '
                                        'an assignment): %r' % (lineno, shown_line(content)), line=lineno)
                lines.append(_Line(content, eol, 'cont', section))
                continue
            in_assignment = False
            if stripped.startswith('['):
                if not stripped.endswith(']'):
                    raise IniParseError('line %d: invalid section (must end with ]): %r'
                                        % (lineno, shown_line(content)), line=lineno)
                if len(stripped) <= 2:
                    raise IniParseError('line %d: empty section name: %r' % (lineno, shown_line(content)),
                                        line=lineno)
                section = normalize_section(stripped[1:-1])
                lines.append(_Line(content, eol, 'section', section, key=stripped[1:-1]))
                continue
            if stripped.startswith(('#', ';')):
                lines.append(_Line(content, eol, 'comment', section))
                continue
            try:
                key, value_start = _split_key_value(stripped)
            except ValueError as exc:
                raise IniParseError('line %d: %s: %r' % (lineno, exc, shown_line(content)), line=lineno)
            if not key:
                raise IniParseError('line %d: key cannot be empty: %r' % (lineno, shown_line(content)), line=lineno)
            if section is None:
                raise IniParseError('line %d: assignment before the first section header: %r'
                                    % (lineno, shown_line(content)),
                                    line=lineno)
            lines.append(_Line(content, eol, 'assign', section, key=key, value_start=value_start))
            in_assignment = True
        return cls(lines)

    def _index(self) -> None:
        self.entries: List[_Entry] = []
        self.section_names: Dict[str, str] = {}   # normalized -> name as first written
        index = 0
        while index < len(self.lines):
            line = self.lines[index]
            if line.kind == 'section' and line.section is not None and line.key is not None:
                self.section_names.setdefault(line.section, line.key)
            if line.kind != 'assign':
                index += 1
                continue
            end = index + 1
            while end < len(self.lines) and self.lines[end].kind == 'cont':
                end += 1
            first = self.lines[index].content.rstrip()[self.lines[index].value_start:]
            parts = [_unquote(first.strip())]
            parts.extend(self.lines[i].content.strip() for i in range(index + 1, end))
            self.entries.append(_Entry(line.section or '', line.key or '', index, end, '\n'.join(parts)))
            index = end

    # -- reading -------------------------------------------------------------------------
    def render(self) -> str:
        return ''.join(line.content + line.eol for line in self.lines)

    def has_section(self, name: str) -> bool:
        return normalize_section(name) in self.section_names

    def section_name(self, name: str) -> str:
        """The section's name as written in the file (first header), or ``name``."""
        return self.section_names.get(normalize_section(name), name)

    def sections(self) -> List[str]:
        return list(self.section_names.values())

    def _entries(self, section: str, key: str) -> List[_Entry]:
        norm = normalize_section(section)
        return [e for e in self.entries if e.section == norm and e.key == key]

    def get(self, section: str, key: str) -> Optional[str]:
        """The value oslo.config reads for a single-valued option (last assignment), or None."""
        entries = self._entries(section, key)
        return entries[-1].value if entries else None

    def enabled_backends(self) -> List[str]:
        value = self.get(DEFAULT_SECTION, ENABLED_BACKENDS)
        if value is None:
            return []
        return [item.strip() for item in value.split(',') if item.strip()]

    def backend_value(self, section: str, key: str,
                      fallback: Optional[str] = BACKEND_DEFAULTS_SECTION) -> Optional[str]:
        """A backend option as Cinder reads it: the backend section, then ``[backend_defaults]``."""
        value = self.get(section, key)
        if value is None and fallback:
            value = self.get(fallback, key)
        return value

    # -- editing -------------------------------------------------------------------------
    def _eol(self) -> str:
        counts: Dict[str, int] = {}
        for line in self.lines:
            if line.eol:
                counts[line.eol] = counts.get(line.eol, 0) + 1
        if not counts:
            return '\n'
        return max(sorted(counts), key=lambda eol: counts[eol])

    def set(self, section: str, key: str, text: str) -> None:
        """Give ``key`` the raw value ``text`` in ``section`` (which must exist)."""
        norm = normalize_section(section)
        if norm not in self.section_names:
            raise VolsnapError('section [%s] does not exist' % section)
        encoded = format_value(text)
        entries = self._entries(section, key)
        if entries:
            last = entries[-1]
            first = self.lines[last.start]
            prefix = first.content[:first.value_start]
            if not encoded:
                prefix = prefix.rstrip(' \t')
            eol = self.lines[last.end - 1].eol
            new = _Line(prefix + encoded, eol, 'assign', norm, key=key, value_start=len(prefix))
            self.lines[last.start:last.end] = [new]
        else:
            position = self._insert_position(norm)
            self._ensure_eol_before(position)
            line = _Line('%s = %s' % (key, encoded) if encoded else '%s =' % key, self._eol(), 'assign', norm,
                         key=key, value_start=len(key) + 3)
            self.lines.insert(position, line)
        self._index()

    def unset(self, section: str, key: str) -> None:
        """Remove every assignment of ``key`` in ``section`` (all its headers)."""
        for entry in reversed(self._entries(section, key)):
            del self.lines[entry.start:entry.end]
        self._index()

    def add_section(self, name: str) -> None:
        if self.has_section(name):
            return
        eol = self._eol()
        if self.lines:
            self._ensure_eol_before(len(self.lines))
            if self.lines[-1].kind != 'blank':
                self.lines.append(_Line('', eol, 'blank', self.lines[-1].section))
        norm = normalize_section(name)
        self.lines.append(_Line('[%s]' % name, eol, 'section', norm, key=name))
        self._index()

    def _ensure_eol_before(self, position: int) -> None:
        if position > 0 and not self.lines[position - 1].eol:
            self.lines[position - 1].eol = self._eol()

    def _insert_position(self, norm: str) -> int:
        """After the last assignment of the section's last header, else right after that header."""
        header = max(i for i, line in enumerate(self.lines) if line.kind == 'section' and line.section == norm)
        position = header + 1
        index = header + 1
        while index < len(self.lines) and self.lines[index].kind != 'section':
            if self.lines[index].kind in ('assign', 'cont'):
                position = index + 1
            index += 1
        return position


# -- values ------------------------------------------------------------------------------
def format_value(text: str) -> str:
    """The text to write so that oslo.config reads back exactly ``text``."""
    if '\n' in text or '\r' in text:
        raise VolsnapError('a value cannot contain a line break (oslo.config would read the lines after it as other '
                           'options); the value is not shown')
    if text != text.strip() or (text and text[0] == text[-1] and text[0] in '"\''):
        quote = "'" if text.startswith('"') else '"'
        return quote + text + quote
    return text


def to_text(value: Any) -> str:
    """The oslo.config text for a value given by a playbook."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ','.join(to_text(item) for item in value)
    if isinstance(value, dict):
        return ','.join('%s:%s' % (to_text(k), to_text(v)) for k, v in value.items())
    if value is None:
        raise VolsnapError('a value to set cannot be null; list the option in unset instead')
    return str(value)


def parse_bool(text: Optional[str]) -> Optional[bool]:
    """oslo.config's Boolean type; None when ``text`` is None or not a boolean."""
    if text is None:
        return None
    lowered = text.lower()
    if lowered in BOOL_TRUE:
        return True
    if lowered in BOOL_FALSE:
        return False
    return None


def same_value(current: Optional[str], wanted: Any) -> bool:
    """Whether the file's text ``current`` means ``wanted`` for oslo.config."""
    if current is None:
        return False
    if isinstance(wanted, bool):
        return parse_bool(current) is wanted
    if isinstance(wanted, int):
        try:
            return int(current.strip()) == wanted
        except ValueError:
            return False
    if isinstance(wanted, float):
        try:
            return float(current.strip()) == wanted
        except ValueError:
            return False
    if isinstance(wanted, (list, tuple)):
        items = [item.strip() for item in current.split(',')] if current.strip() else []
        return items == [to_text(item) for item in wanted]
    if isinstance(wanted, dict):
        pairs = []
        for item in current.split(','):
            if not item.strip():
                continue
            key, sep, val = item.partition(':')
            if not sep:
                return False
            pairs.append((key.strip(), val.strip()))
        return pairs == [(to_text(k), to_text(v)) for k, v in wanted.items()]
    return current == to_text(wanted)


# -- secrets -----------------------------------------------------------------------------
HIDDEN = '<hidden>'
HIDDEN_CHANGED = '<hidden, changed>'

# Parts of option names that make an option secret (oslo.config's secret=True options are named so:
# password, admin_password, transport_url credentials, fixed_key, memcache_secret_key, auth_token...).
_SECRET_PARTS = ('password', 'passwd', 'passphrase', 'secret', 'token', 'credential', 'private_key', 'privatekey',
                 'api_key', 'apikey')
_SECRET_WORDS = ('key', 'keys', 'pass', 'pwd', 'psk', 'pw', 'sshkey', 'privkey', 'authkey', 'hostkey', 'secretkey',
                 'accesskey', 'enckey')
_URL_WORDS = ('url', 'urls', 'uri', 'uris', 'connection', 'dsn')
_SCHEME = re.compile(r'[A-Za-z][A-Za-z0-9+.\-]*://')
_QUERY_PARAM = re.compile(r'(?P<lead>[?&;](?P<name>[^=&;#?]*)=)(?P<value>[^&;#]*)')


def _words(name: str) -> List[str]:
    return [word for word in re.split(r'[_\-.\s]+', name.lower()) if word]


def is_secret_option(name: str) -> bool:
    """Whether the value of option ``name`` is a secret, by its name (conservative: anything named like a password,
    passphrase, secret, token, credential, private or API key, or with a word ``key``, ``pass``, ``pwd``...)."""
    lowered = re.sub(r'[\-.\s]+', '_', name.lower())
    if any(part in lowered for part in _SECRET_PARTS):
        return True
    return any(word in _SECRET_WORDS for word in _words(name))


def is_url_option(name: str) -> bool:
    """Options whose value is a URL that may hold credentials even without a scheme (transport_url, connection)."""
    return any(word in _URL_WORDS for word in _words(name))


def mask_urls(text: str, marker: str = HIDDEN, url_option: bool = False) -> str:
    """``text`` with the credentials of URLs replaced by ``marker``: everything between the first ``scheme://`` and
    the last ``@`` (user, password, and for several hosts the hosts before the last), and the values of query
    parameters named like secrets (``?password=``). With ``url_option`` a value without a scheme is treated as a
    URL too (``user:password@host``)."""
    if not text:
        return text
    scheme = _SCHEME.search(text)
    if scheme:
        start = scheme.end()
    elif url_option:
        start = 0
    else:
        return text
    head, tail = text[:start], text[start:]
    at = tail.rfind('@')
    if at >= 0:
        tail = marker + tail[at:]

    def query(match: 're.Match[str]') -> str:
        if is_secret_option(match.group('name')) and match.group('value'):
            return str(match.group('lead')) + marker
        return str(match.group(0))
    return head + _QUERY_PARAM.sub(query, tail)


def mask_value(option: str, value: Optional[str], marker: str = HIDDEN) -> Optional[str]:
    """A value safe to return: a secret option's value replaced by ``marker`` (an empty one stays empty), URL
    credentials hidden in any other."""
    if value is None:
        return None
    if is_secret_option(option):
        return marker if value else value
    return mask_urls(value, marker, url_option=is_url_option(option))


def mask_given(values: Dict[str, Any]) -> Dict[str, Any]:
    """The ``set`` values of a task, safe to return (as the task's arguments in a result)."""
    def walk(option: str, value: Any) -> Any:
        if isinstance(value, str):
            return mask_value(option, value)
        if isinstance(value, dict):
            return dict((k, walk(option, v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return [walk(option, item) for item in value]
        return value
    return dict((option, HIDDEN if is_secret_option(option) and value not in (None, '') else walk(option, value))
                for option, value in values.items())


def _mask_assignment(content: str, marker: str) -> str:
    """One ``key = value`` line (maybe commented out) with its value masked as :func:`mask_value` does."""
    try:
        key, value_start = _split_key_value(content)
    except ValueError:
        return content
    value = content[value_start:]
    name = key.lstrip('#; \t')
    if not name:  # no name to judge by
        return content[:value_start] + (marker if value.strip() else value)
    masked = mask_value(name, value, marker)
    return content[:value_start] + (masked or '')


def shown_line(content: str) -> str:
    """A line of a file safe to put in a message: a section header, or an assignment with its value masked; any
    other line (an indented or stray line could be part of a secret) is hidden."""
    stripped = content.strip()
    if content[:1] in (' ', '\t') or not stripped:
        return HIDDEN
    if stripped.startswith('['):
        return mask_urls(content)
    if stripped.startswith(('#', ';')):
        return _comment(content)
    if '=' in stripped or ':' in stripped:
        return _mask_assignment(content, HIDDEN)
    return HIDDEN


def _comment(content: str) -> str:
    """A comment with a commented-out secret assignment masked (``#password = x``) and URL credentials hidden."""
    stripped = content.lstrip()
    if '=' in stripped or ':' in stripped:
        masked = _mask_assignment(content, HIDDEN)
        return mask_urls(masked) if masked == content else masked
    return mask_urls(content)


def mask_text(text: str, reference: Optional[str] = None) -> str:
    """An ini text safe to show in a diff: secret option values, URL credentials and commented-out secrets masked.

    With ``reference`` (the text before an edit), the values of assignments that differ from every assignment of
    that option in ``reference`` are ``<hidden, changed>``, so the diff still shows the line changed.
    Text oslo.config cannot parse has every value masked."""
    try:
        ini = OsloIni.parse(text)
    except IniParseError:
        return ''.join(shown_line(content) + eol if content.strip() else content + eol
                       for content, eol in split_lines(text))
    known = None
    if reference is not None:
        try:
            before = OsloIni.parse(reference)
            known = set((e.section, e.key, tuple(line.content for line in before.lines[e.start:e.end]))
                        for e in before.entries)
        except IniParseError:
            known = set()
    shown = [line.content for line in ini.lines]
    for index, line in enumerate(ini.lines):
        if line.kind == 'comment':
            shown[index] = _comment(line.content)
    for entry in ini.entries:
        raw = tuple(line.content for line in ini.lines[entry.start:entry.end])
        marker = HIDDEN
        if known is not None and (entry.section, entry.key, raw) not in known:
            marker = HIDDEN_CHANGED
        first = ini.lines[entry.start]
        secret = is_secret_option(entry.key)
        url = is_url_option(entry.key)
        value = first.content[first.value_start:]
        if secret:
            shown[entry.start] = first.content[:first.value_start] + (marker if value.strip() else value)
        else:
            shown[entry.start] = first.content[:first.value_start] + mask_urls(value, marker, url_option=url)
        for index in range(entry.start + 1, entry.end):
            content = ini.lines[index].content
            indent = content[:len(content) - len(content.lstrip())]
            shown[index] = indent + marker if secret or url else mask_urls(content, marker)
    return ''.join(content + line.eol for content, line in zip(shown, ini.lines))


def mask_changes(changes: List[Dict[str, Optional[str]]]) -> List[Dict[str, Optional[str]]]:
    """:attr:`EditResult.changes` safe to return; a secret's new value is ``<hidden, changed>``."""
    masked = []
    for change in changes:
        option = change['option'] or ''
        before = mask_value(option, change['before'])
        after = mask_value(option, change['after'])
        if after is not None and after == before:
            after = mask_value(option, change['after'], HIDDEN_CHANGED)
        masked.append(dict(change, before=before, after=after))
    return masked


# -- the edit plan -----------------------------------------------------------------------
@dataclass
class EditRequest:
    sections: Sequence[str] = ()
    volume_driver: Sequence[str] = ()
    require_enabled: bool = False
    create_sections: bool = False
    set_values: Dict[str, Any] = field(default_factory=dict)
    unset_options: Sequence[str] = ()
    query: Sequence[str] = ()
    fallback_section: Optional[str] = BACKEND_DEFAULTS_SECTION


# The edits of an ini file, planned as steps (their descriptions never show a value: it may be a secret).
INI_EDITS = Actions('ini edit', {
    'add_section': lambda args: 'add section [%s]' % args['section'],
    'set': lambda args: 'set %s in [%s]' % (args['option'], args['section']),
    'unset': lambda args: 'remove %s from [%s]' % (args['option'], args['section']),
})


@dataclass(frozen=True)
class EditPlan:
    """The steps that turn ``before`` into the wanted file, planned by :func:`plan_steps`.

    ``set`` and ``unset`` steps carry ``section``, ``option``, ``before`` (the value oslo.config read) and
    ``after`` (the text written, None for unset); ``add_section`` carries ``section``.
    """

    before: str
    sections: Tuple[str, ...]
    steps: Tuple[Step, ...]
    request: EditRequest

    @property
    def changes(self) -> List[Dict[str, Optional[str]]]:
        """One item per option changed: ``section``, ``option``, ``before``, ``after``."""
        return [{'section': step.args['section'], 'option': step.args['option'], 'before': step.args['before'],
                 'after': step.args['after']} for step in self.steps if step.action in ('set', 'unset')]


def _document(context: RunContext) -> OsloIni:
    ini = context.get('ini')
    if not isinstance(ini, OsloIni):  # pragma: no cover - run_edit puts it there
        raise VolsnapError('internal error: an ini edit runs without its document')
    return ini


def _add_section(step: Step, context: RunContext) -> None:
    _document(context).add_section(step.args['section'])


def _set(step: Step, context: RunContext) -> None:
    _document(context).set(step.args['section'], step.args['option'], step.args['after'])


def _unset(step: Step, context: RunContext) -> None:
    _document(context).unset(step.args['section'], step.args['option'])


INI_EXECUTOR = Executor(INI_EDITS, {'add_section': _add_section, 'set': _set, 'unset': _unset})


@dataclass(frozen=True)
class EditResult:
    """An :class:`EditPlan` run on the file's text in memory (check mode and a real run alike): the text it gives
    and the values oslo.config reads in it."""

    plan: EditPlan
    after: str
    values: Dict[str, Dict[str, Optional[str]]]
    fallback_values: Dict[str, Optional[str]]
    effective_values: Dict[str, Dict[str, Optional[str]]]
    enabled_backends: List[str]
    volume_drivers: Dict[str, Optional[str]]

    @property
    def before(self) -> str:
        return self.plan.before

    @property
    def sections(self) -> List[str]:
        return list(self.plan.sections)

    @property
    def changes(self) -> List[Dict[str, Optional[str]]]:
        return self.plan.changes

    @property
    def changed(self) -> bool:
        return self.before != self.after


def select_sections(ini: OsloIni, request: EditRequest, path: str = 'the file') -> List[str]:
    """The sections an edit applies to, in file order of the request; raises when one is wrong."""
    enabled = ini.enabled_backends()
    enabled_norm = [normalize_section(name) for name in enabled]
    drivers = list(request.volume_driver)
    fallback = request.fallback_section

    def driver_of(name: str) -> Optional[str]:
        return ini.backend_value(name, VOLUME_DRIVER, fallback)

    if not request.sections and not drivers:
        raise VolsnapError('nothing selects a section: give sections, volume_driver or both')

    selected: List[str] = []
    if request.sections:
        for name in request.sections:
            if not name or '[' in name or ']' in name or name != name.strip():
                raise VolsnapError('%r is not a valid section name' % name)
            norm = normalize_section(name)
            if not ini.has_section(name) and not request.create_sections:
                raise VolsnapError(
                    'section [%s] does not exist in %s (sections: %s); check the name, or set create_sections=true '
                    'to add it' % (name, path, ', '.join(ini.sections()) or 'none'),
                    missing_section=name, available_sections=ini.sections())
            if request.require_enabled and norm not in enabled_norm:
                raise VolsnapError(
                    'section [%s] is not an enabled backend: [DEFAULT] enabled_backends in %s is %r; add it there '
                    'or name another section' % (name, path, ','.join(enabled)),
                    section=name, enabled_backends=enabled)
            if drivers and driver_of(name) not in drivers:
                raise VolsnapError(
                    'section [%s] has volume_driver %r, not one of %s; this is not a backend to change here'
                    % (name, driver_of(name), ', '.join(drivers)),
                    section=name, volume_driver=driver_of(name))
            display = ini.section_name(name)
            if display not in selected:
                selected.append(display)
        return selected

    for name in enabled:
        if driver_of(name) in drivers:
            if not ini.has_section(name) and not request.create_sections:
                raise VolsnapError(
                    'enabled backend %r has no [%s] section in %s' % (name, name, path), section=name)
            display = ini.section_name(name)
            if display not in selected:
                selected.append(display)
    if not selected:
        found = dict((name, driver_of(name)) for name in enabled)
        raise VolsnapError(
            'no enabled backend in %s uses volume_driver %s; enabled_backends and their drivers: %s. Check the '
            'driver path or name the sections explicitly' % (path, ' or '.join(drivers), found or 'none'),
            enabled_backends=enabled, volume_drivers=found)
    return selected


def plan_steps(text: str, request: EditRequest, path: str = 'the file') -> EditPlan:
    """The steps that apply ``request`` to ``text``; raises VolsnapError when it cannot be done."""
    for option in list(request.set_values) + list(request.unset_options) + list(request.query):
        if not option or not re.match(r'^[A-Za-z0-9_.-]+\Z', option):
            raise VolsnapError('%r is not an option name' % option)
    overlap = sorted(set(request.set_values) & set(request.unset_options))
    if overlap:
        raise VolsnapError('options both set and unset: %s' % ', '.join(overlap))
    if request.fallback_section is not None and not request.fallback_section:
        raise VolsnapError('fallback_section cannot be empty (use null to disable the fallback)')
    ini = OsloIni.parse(text)
    sections = select_sections(ini, request, path)
    steps: List[Step] = []
    # each step is also run on this scratch copy, so that later steps read what earlier ones leave (an option
    # listed twice in unset, two spellings of one new section)
    scratch = RunContext(results={'ini': ini})

    def plan(action: str, **args: Any) -> None:
        step = INI_EDITS.step(action, **args)
        INI_EXECUTOR.run([step], scratch)
        steps.append(step)

    for section in sections:
        if not ini.has_section(section):
            plan('add_section', section=section)
        for option, wanted in request.set_values.items():
            current = ini.get(section, option)
            if same_value(current, wanted):
                continue
            new = to_text(wanted)
            if '\n' in new or '\r' in new:
                raise VolsnapError('the value given for %s contains a line break: oslo.config would read the lines '
                                   'after it as other options (the value is not shown)' % option, option=option)
            plan('set', section=section, option=option, before=current, after=new)
        for option in request.unset_options:
            current = ini.get(section, option)
            if current is None:
                continue
            plan('unset', section=section, option=option, before=current, after=None)
    return EditPlan(before=text, sections=tuple(sections), steps=tuple(steps), request=request)


def run_edit(plan: EditPlan) -> EditResult:
    """Run ``plan``'s steps on its text in memory (through :data:`INI_EXECUTOR`); what the file then reads."""
    context = INI_EXECUTOR.run(plan.steps, RunContext(results={'ini': OsloIni.parse(plan.before)}))
    ini = _document(context)
    request = plan.request
    options = list(dict.fromkeys(list(request.set_values) + list(request.unset_options) + list(request.query)))
    values = dict((section, dict((option, ini.get(section, option)) for option in options))
                  for section in plan.sections)
    fallback_values: Dict[str, Optional[str]] = {}
    if request.fallback_section:
        fallback_values = dict((option, ini.get(request.fallback_section, option)) for option in options)
    effective = dict((section, dict((option, ini.backend_value(section, option, request.fallback_section))
                                    for option in options)) for section in plan.sections)
    volume_drivers = dict((section, ini.backend_value(section, VOLUME_DRIVER, request.fallback_section))
                          for section in plan.sections)
    return EditResult(plan=plan, after=ini.render(), values=values, fallback_values=fallback_values,
                      effective_values=effective, enabled_backends=ini.enabled_backends(),
                      volume_drivers=volume_drivers)


def plan_edit(text: str, request: EditRequest, path: str = 'the file') -> EditResult:
    """The steps of ``request`` on ``text`` (:func:`plan_steps`), run in memory (:func:`run_edit`)."""
    return run_edit(plan_steps(text, request, path))


def edit_request(params: Mapping[str, Any], set_values: Dict[str, Any]) -> EditRequest:
    """The :class:`EditRequest` of cinder_backend_config's parameters (``set_values``: the unmasked ``set``)."""
    return EditRequest(sections=params['sections'] or (), volume_driver=params['volume_driver'] or (),
                       require_enabled=params['require_enabled'], create_sections=params['create_sections'],
                       set_values=set_values, unset_options=params['unset'], query=params['query'],
                       fallback_section=params['fallback_section'] or None)


def mask_values(values: Mapping[str, Any]) -> Dict[str, Any]:
    """``{section: {option: value}}`` or ``{option: value}`` with secret values masked."""
    return dict((name, mask_values(value)) if isinstance(value, dict) else (name, mask_value(name, value))
                for name, value in values.items())


def edit_summary(edit: EditResult, path: str) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """(the module result of ``edit`` on ``path``, the diff of its content or None when unchanged), every secret
    value masked."""
    result: Dict[str, Any] = dict(path=path, sections=edit.sections, changes=mask_changes(edit.changes),
                                  section_values=mask_values(edit.values),
                                  fallback_values=mask_values(edit.fallback_values),
                                  effective_values=mask_values(edit.effective_values),
                                  enabled_backends=edit.enabled_backends,
                                  volume_drivers=edit.volume_drivers, content_changed=edit.changed)
    if not edit.changed:
        return result, None
    return result, dict(before=display(mask_text(edit.before)),
                        after=display(mask_text(edit.after, reference=edit.before)),
                        before_header='%s (content)' % path, after_header='%s (content)' % path)


# -- file I/O ----------------------------------------------------------------------------
def decode(data: bytes) -> str:
    """Bytes to text so that ``encode(decode(data)) == data`` for any bytes."""
    return data.decode('utf-8', 'surrogateescape')


def encode(text: str) -> bytes:
    return text.encode('utf-8', 'surrogateescape')


def display(text: str) -> str:
    """Text safe to return in a result (undecodable bytes replaced)."""
    return encode(text).decode('utf-8', 'replace')


def read_config(path: str) -> Tuple[str, str]:
    """(the real path, its text); raises VolsnapError with advice when it cannot be read."""
    real = os.path.realpath(path)
    if not os.path.lexists(path):
        raise VolsnapError('%s does not exist; this module edits an existing configuration file (check path, and '
                           'that the service is installed on this host)' % path, path=path)
    if not os.path.exists(real):
        raise VolsnapError('%s is a symbolic link to %s, which does not exist' % (path, real), path=path)
    if not os.path.isfile(real):
        raise VolsnapError('%s is not a regular file' % path, path=path)
    try:
        with open(real, 'rb') as handle:
            data = handle.read()
    except OSError as exc:
        raise VolsnapError('cannot read %s: %s' % (path, exc.strerror or exc), path=path)
    check_utf8(data, path)
    return real, decode(data)


def check_utf8(data: bytes, path: str = 'the file') -> None:
    """Refuse what oslo.config cannot read: it opens configuration files as UTF-8 (strict), so a file with another
    encoding or stray bytes stops the service at start. The bytes are not shown (they may be part of a password)."""
    try:
        data.decode('utf-8')
    except UnicodeDecodeError as exc:
        line = data.count(b'\n', 0, exc.start) + 1
        column = exc.start - (data.rfind(b'\n', 0, exc.start) + 1) + 1
        raise VolsnapError(
            '%s is not UTF-8 text (line %d, byte %d of the line: %s): oslo.config reads configuration files as UTF-8 '
            'and the service could not start with it. Nothing was changed. Convert the file to UTF-8 (for example '
            '"iconv -f latin1 -t utf-8", if it is Latin-1) or correct that line, then run again'
            % (path, line, column, exc.reason), path=path, line=line)


def _octal_mode(mode: Any) -> Optional[int]:
    """An octal mode as Ansible's ``mode`` takes it (int, or a string of octal digits); None when symbolic."""
    if isinstance(mode, bool) or mode is None:
        return None
    if isinstance(mode, int):
        return mode & 0o7777
    text = str(mode).strip()
    if re.match(r'^[0-7]{1,5}\Z', text):
        return int(text, 8) & 0o7777
    return None


def _resolve(name: Any, lookup: Callable[[str], int]) -> Optional[int]:
    try:
        return owner_id(name, lookup)
    except KeyError:
        return None


def narrow_mode_first(path: str, mode: Any, owner: Any, group: Any) -> Optional[int]:
    """Before owner or group change together with the mode (Ansible changes owner, then group, then mode), take the
    file to ``current mode & new mode``, so that at no moment a new owner or group gets what only the old mode gave
    it, nor an old one what only the new mode gives: the chown happens on a mode both allow. Returns the mode the
    file had when it was narrowed, else None (nothing to narrow, a symbolic mode, an unknown owner or group: then
    Ansible's own order applies, and its own error)."""
    import grp
    import pwd
    wanted = _octal_mode(mode)
    if wanted is None:
        return None
    uid = _resolve(owner, lambda text: pwd.getpwnam(text).pw_uid)
    gid = _resolve(group, lambda text: grp.getgrnam(text).gr_gid)
    if (owner is not None and uid is None) or (group is not None and gid is None):
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_NONBLOCK', 0))
    try:
        info = os.fstat(fd)
        current = stat.S_IMODE(info.st_mode)
        # the first of atomic.narrowing_steps (the one rule): a chmod before a chown
        steps = narrowing_steps(current, info.st_uid, info.st_gid, FileAttributes(
            mode=wanted, uid=-1 if uid is None else uid, gid=-1 if gid is None else gid))
        if len(steps) < 2 or steps[0][0] != 'chmod' or steps[1][0] != 'chown':
            return None
        os.fchmod(fd, steps[0][1])
        return current
    finally:
        os.close(fd)


def write_atomic_bytes(path: str, data: bytes) -> None:
    """Replace the existing ``path`` by ``data`` atomically, keeping its mode, owner and group.

    :func:`._atomic.write_atomic` with :func:`._atomic.attributes_like` ``path``: temporary file beside it
    (``.<name>.<random>.volsnap-tmp``), fsync, rename, fsync of the directory. Not being root, the group is
    kept when the process may give it.
    """
    write_atomic(path, data, attributes_like(path), suffix='.volsnap-tmp')
