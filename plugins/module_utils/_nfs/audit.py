# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit of one whole NFS share (``nfs_share_audit``): every name classified, every volume judged, the share compared
with Cinder, and the removal of what the audit proved nobody references.

Three layers, kept apart:

* :func:`classify_name` (pure): what a name of the share is by the rules of :mod:`._nfs.share` (volume file, snapshot
  overlay, ``.info``, lock, journal, temporary file, clone record) or ``foreign``;
* :func:`scan_share` (reads): one ``lstat`` per name (never following a link: links, directories, devices are
  ``foreign``), each volume's chain read once from headers (:func:`._nfs.chain.inspect_chain`: no qemu-img, bounded
  reads), locks tested with ``F_GETLK`` (:func:`._nfs.lock.lock_held`), journals read through
  :class:`._nfs.volume.Journal` with its checks; :func:`judge_share` (pure) turns the facts into final classes and
  the cleanup candidates; :func:`compare_with_cinder` (pure) sets the share against Cinder's volumes and snapshots;
* :func:`clean_share`: removes candidates, each verified again immediately before its removal under the volume's
  lock (same inode, size and mtime as the audit saw; still unreferenced; lock not held).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import fsync_dir, is_temporary_name
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import FILE_ID, is_file_id
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import DEFAULT_MAX_DEPTH, inspect_chain
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.clone import SIDECAR_SUFFIX
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.image_format import inspect_image
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.lock import lock_held, remove_unused_lock
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import (
    INFO_SUFFIX,
    TEMP_SUFFIX,
    TMP_SNAP,
    VOLUME_PREFIX,
    ShareFileError,
    journal_filename,
    own_temporary_kind,
    split_volume_filename,
    volume_id_of_lock,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import ShareVolume

# Final classes of a file (RV files[].class). Only the last four may be cleanup candidates.
CLASSES = ('volume', 'info', 'snapshot_overlay', 'overlay_in_chain', 'pending_journal', 'lock_held', 'lock_idle',
           'clone_record', 'temporary_in_use', 'foreign',
           'orphan_overlay', 'lock_stale', 'stale_temporary', 'stale_clone_record')
CLEANABLE = ('orphan_overlay', 'lock_stale', 'stale_temporary', 'stale_clone_record')

_HIDDEN_VOLUME_RE = re.compile(r'^\.+(?:volsnap-)?(%s(%s))' % (re.escape(VOLUME_PREFIX), FILE_ID))


@dataclass
class NameClass:
    """What a name of the share is, by its name alone."""

    kind: str  # volume, info, snapshot, lock, journal, temporary, clone_record, foreign
    volume_id: Optional[str] = None
    snapshot_id: Optional[str] = None
    detail: Optional[str] = None


def classify_name(name: str) -> NameClass:
    """The class of ``name`` by the share's naming rules (pure; the file type is judged by the caller)."""
    parts = split_volume_filename(name)
    if parts is not None:
        _vname, vid, suffix = parts
        if suffix is None:
            return NameClass('volume', vid)
        if suffix == INFO_SUFFIX[1:]:
            return NameClass('info', vid)
        if is_file_id(suffix):
            return NameClass('snapshot', vid, suffix)
        if suffix.startswith(TMP_SNAP) and is_file_id(suffix[len(TMP_SNAP):]):
            return NameClass('snapshot', vid, suffix, "Cinder's temporary snapshot")
        return NameClass('foreign', detail='a name of volume %s that neither Cinder nor the collection writes' % vid)
    lock_of = volume_id_of_lock(name)
    if lock_of is not None:
        return NameClass('lock', lock_of)
    match = _HIDDEN_VOLUME_RE.match(name)
    if match is not None:
        vname, vid = match.group(1), match.group(2)
        if name == journal_filename(vname):
            return NameClass('journal', vid)
        kind = own_temporary_kind(name, vname)
        if kind is not None:
            return NameClass('temporary', vid, detail=kind)
        if name == '.%s%s' % (vname, TEMP_SUFFIX):
            return NameClass('temporary', vid, detail='clone output')
        sidecar = '.%s%s' % (vname, SIDECAR_SUFFIX)
        if name == sidecar:
            return NameClass('clone_record', vid)
        if is_temporary_name(name, sidecar, TEMP_SUFFIX):
            return NameClass('temporary', vid, detail='clone record')
    return NameClass('foreign')


@dataclass
class FileFacts:
    """One name of the share as the scan saw it (``lstat``, never followed)."""

    name: str
    type: str  # file, symlink, directory, other
    inode: int = 0
    size: int = 0
    mtime_ns: int = 0

    def identity(self) -> Dict[str, Any]:
        return {'inode': self.inode, 'size': self.size, 'mtime_ns': self.mtime_ns}


def file_type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return 'file'
    if stat.S_ISLNK(mode):
        return 'symlink'
    if stat.S_ISDIR(mode):
        return 'directory'
    return 'other'


def file_facts(directory: str, name: str) -> Optional[FileFacts]:
    """``lstat`` of one name (None when it is gone)."""
    try:
        st = os.lstat(os.path.join(directory, name))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return FileFacts(name, file_type(st.st_mode), st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class VolumeFacts:
    """What the scan read of one volume (its chain judged from headers, lock, journal)."""

    volume_id: str
    exists: bool = False          # volume file or .info present
    chain_safe: Optional[bool] = None
    info_consistent: Optional[bool] = None
    info_snapshots: Dict[str, str] = field(default_factory=dict)  # snapshot id -> file
    active: Optional[str] = None
    chain: List[str] = field(default_factory=list)
    backing_names: Set[str] = field(default_factory=set)  # every file any regular file of the volume backs onto
    problems: List[Dict[str, Any]] = field(default_factory=list)
    lock: Optional[str] = None    # held, free, refused (not a regular file), or None (no lock file)
    pending: Optional[Dict[str, Any]] = None
    pending_error: Optional[str] = None


def _lock_state(directory: str, volume_id: str) -> Optional[str]:
    try:
        held = lock_held(directory, volume_id)
    except ShareFileError:
        return 'refused'
    if held is None:
        return None
    return 'held' if held else 'free'


def read_volume(directory: str, volume_id: str, names: Set[str], regular: Set[str], max_depth: int,
                probe_lock: bool = True, volume_format: Optional[str] = None,
                listing: Optional[List[str]] = None) -> VolumeFacts:
    """Read one volume of the share (``names``: its names, ``regular``: those that are regular files): its chain and
    ``.info`` (headers only), the backing names its overlays declare, its lock and journal."""
    volume = ShareVolume(directory, volume_id)
    facts = VolumeFacts(volume_id)
    facts.exists = volume.name in names or (volume.name + INFO_SUFFIX) in names
    if facts.exists:
        report = inspect_chain(volume.path, share=directory, max_depth=max_depth, volume_format=volume_format,
                               listing=listing)
        for layer in report.layers:
            if layer.image.backing_file:
                facts.backing_names.add(os.path.basename(layer.image.backing_file))
        if report is not None:
            facts.chain_safe = report.safe
            facts.info_consistent = not any(p.code.startswith('info_') or p.code in ('snapshot_file_not_in_info',)
                                            for p in report.problems)
            facts.info_snapshots = dict(report.info.snapshots) if report.info else {}
            facts.active = report.active
            facts.chain = [layer.image.filename for layer in report.layers]
            facts.problems = [p.as_dict() for p in report.problems]
    for name in sorted(names & regular):
        cls = classify_name(name)
        if cls.kind == 'snapshot' and cls.volume_id == volume_id and name not in facts.chain:
            # any overlay of the volume that names this file as its backing keeps it (headers only, never followed)
            try:
                image = inspect_image(os.path.join(directory, name))
            except OSError:
                continue
            if image.backing_file:
                facts.backing_names.add(os.path.basename(image.backing_file))
    facts.lock = _lock_state(directory, volume_id) if probe_lock else None
    if journal_filename(volume.name) in names:
        journal = volume.journal()
        try:
            journal.load()
            facts.pending = journal.pending()
            facts.pending['text'] = journal.pending_text()
        except VolsnapError as exc:
            facts.pending = {'journal': journal.path}
            facts.pending_error = exc.msg
    return facts


@dataclass
class ShareFacts:
    directory: str
    files: List[FileFacts]
    volumes: Dict[str, VolumeFacts]


def scan_share(directory: str, max_depth: int = DEFAULT_MAX_DEPTH, volume_format: Optional[str] = None) -> ShareFacts:
    """Read the share: one ``lstat`` per name, each volume once (:func:`read_volume`)."""
    if not os.path.isdir(directory):
        raise VolsnapError('the share %s is not a directory: give the mount point of the NFS share (where Cinder '
                           'keeps volume-<id> files)' % directory)
    names = sorted(os.listdir(directory))
    files = [f for f in (file_facts(directory, name) for name in names) if f is not None]
    regular = set(f.name for f in files if f.type == 'file')
    present = set(f.name for f in files)
    volume_ids = sorted(set(c.volume_id for c in (classify_name(f.name) for f in files) if c.volume_id))
    per_volume: Dict[str, Set[str]] = {}
    for name in present:
        vid = classify_name(name).volume_id
        if vid:
            per_volume.setdefault(vid, set()).add(name)
    volumes = {}
    for vid in volume_ids:
        volumes[vid] = read_volume(directory, vid, per_volume.get(vid, set()), regular, max_depth,
                                   volume_format=volume_format, listing=names)
    return ShareFacts(directory, files, volumes)


def _entry(facts: FileFacts, cls: str, reason: str, volume_id: Optional[str] = None,
           snapshot_id: Optional[str] = None) -> Dict[str, Any]:
    entry = {'name': facts.name, 'class': cls, 'type': facts.type, 'volume_id': volume_id, 'snapshot_id': snapshot_id,
             'reason': reason, 'cleanable': cls in CLEANABLE}
    entry.update(facts.identity())
    return entry


def judge_file(facts: FileFacts, volumes: Mapping[str, VolumeFacts]) -> Dict[str, Any]:
    """The final class of one file of the share (pure), with why."""
    if facts.type != 'file':
        what = {'symlink': 'symbolic link', 'directory': 'directory'}.get(facts.type, 'special file')
        return _entry(facts, 'foreign', 'a %s; the collection never follows or removes anything but regular files it '
                      'recognises' % what)
    cls = classify_name(facts.name)
    vol = volumes.get(cls.volume_id or '')
    if cls.kind == 'foreign' or vol is None:
        return _entry(facts, 'foreign', cls.detail or 'not a name Cinder or the collection writes')
    vid = cls.volume_id
    if cls.kind == 'volume':
        return _entry(facts, 'volume', 'the volume file', vid)
    if cls.kind == 'info':
        return _entry(facts, 'info', "the volume's .info file", vid)
    if cls.kind == 'snapshot':
        named = [sid for sid, fname in vol.info_snapshots.items() if fname == facts.name]
        if named:
            return _entry(facts, 'snapshot_overlay', 'named by the .info file for snapshot %s' % named[0], vid,
                          named[0])
        if facts.name in vol.chain or facts.name == vol.active:
            return _entry(facts, 'overlay_in_chain', 'in the backing chain of the active file but no .info entry '
                          'names it', vid, cls.snapshot_id)
        keep = _overlay_kept_by(facts.name, vol)
        if keep:
            return _entry(facts, 'overlay_in_chain', 'no .info entry names it, but it is kept: %s' % keep, vid,
                          cls.snapshot_id)
        return _entry(facts, 'orphan_overlay', 'no .info entry names it, it is not in the chain and no file of the '
                      'volume backs onto it', vid, cls.snapshot_id)
    if cls.kind == 'lock':
        if vol.lock == 'held':
            return _entry(facts, 'lock_held', 'a process holds the lock now (an operation runs)', vid)
        if vol.exists or vol.pending is not None:
            return _entry(facts, 'lock_idle', 'the volume exists; nobody holds its lock', vid)
        return _entry(facts, 'lock_stale', 'the volume no longer has any file and nobody holds the lock', vid)
    if cls.kind == 'journal':
        reason = vol.pending_error or (vol.pending or {}).get('text') or 'an interrupted operation is pending'
        return _entry(facts, 'pending_journal', reason, vid)
    if cls.kind == 'temporary':
        if cls.detail in ('clone output', 'clone record'):
            # volume_clone writes them holding the lock of its *source* volume, which the name does not tell: only
            # their age (min_age) says no clone is writing them now
            return _entry(facts, 'stale_temporary', 'a temporary file (%s) of volume_clone, which holds its source '
                          'volume\'s lock: judged by its age only' % cls.detail, vid)
        if vol.lock == 'held':
            return _entry(facts, 'temporary_in_use', 'a temporary file (%s) while the lock is held: a run writes it '
                          'now' % cls.detail, vid)
        return _entry(facts, 'stale_temporary', 'a temporary file (%s) left by a killed run: the lock is not held'
                      % cls.detail, vid)
    # clone record
    if vol.exists:
        return _entry(facts, 'clone_record', 'the record of volume_clone for the volume file beside it', vid)
    return _entry(facts, 'stale_clone_record', 'the record of a clone whose volume file no longer exists', vid)


def _overlay_kept_by(name: str, vol: VolumeFacts) -> Optional[str]:
    """Why an overlay no ``.info`` entry names must stay anyway (None when nothing keeps it)."""
    if name in vol.backing_names:
        return 'another overlay of the volume backs onto it'
    if vol.pending is not None:
        return 'an operation is pending on the volume (journal)'
    if vol.lock == 'held':
        return 'a process holds the volume lock now'
    if vol.chain_safe is None or vol.active is None:
        return 'the volume has no readable chain (no volume file or .info to judge it by)'
    if any(p['code'] in ('info_invalid', 'info_missing') for p in vol.problems):
        return 'the .info file is missing or invalid, so it cannot prove the overlay unused'
    return None


def young(entry: Mapping[str, Any], now_ns: int, min_age: float) -> bool:
    """True when a file changed less than ``min_age`` seconds ago: an operation of Cinder itself (which does not take
    the collection's lock) may be writing it, so it is never a cleanup candidate yet."""
    return now_ns - int(entry['mtime_ns']) < int(min_age * 1e9)


def judge_share(facts: ShareFacts, now_ns: int = 0, min_age: float = 0.0) -> Dict[str, Any]:
    """Final classes, per-volume judgement, counts and cleanup candidates (pure over the facts).

    A leak younger than ``min_age`` seconds at ``now_ns`` (except a stale lock, judged by the lock itself) keeps its
    class but is not a candidate (``cleanable`` false, ``reason`` says why)."""
    files = [judge_file(f, facts.volumes) for f in facts.files]
    for f in files:
        if f['cleanable'] and f['class'] != 'lock_stale' and young(f, now_ns, min_age):
            f['cleanable'] = False
            f['reason'] += '; changed less than min_age=%g s ago, so not removed yet' % min_age
    volumes = []
    for vid, vol in sorted(facts.volumes.items()):
        volumes.append({
            'volume_id': vid, 'exists': vol.exists, 'active': vol.active, 'chain': vol.chain,
            'chain_safe': vol.chain_safe, 'info_consistent': vol.info_consistent,
            'snapshots': dict(vol.info_snapshots), 'lock': vol.lock, 'pending': vol.pending,
            'pending_error': vol.pending_error,
            'problems': [p for p in vol.problems if p.get('severity') == 'error'],
            'files': sorted(f['name'] for f in files if f['volume_id'] == vid),
        })
    counts: Dict[str, int] = {}
    for f in files:
        counts[f['class']] = counts.get(f['class'], 0) + 1
    keys = ('name', 'class', 'volume_id', 'snapshot_id', 'inode', 'size', 'mtime_ns', 'reason')
    candidates = [dict((k, f[k]) for k in keys) for f in files if f['cleanable']]
    return {'files': files, 'volumes': volumes, 'counts': counts, 'cleanup_candidates': candidates}


# --- Cinder ------------------------------------------------------------------------------------------------------

GONE_STATUSES = ('deleting', 'error_deleting', 'deleted')


def host_matches(volume_host: Optional[str], wanted: str) -> bool:
    """Cinder's ``host@backend#pool`` against ``wanted`` (``host@backend`` matches every pool of the backend)."""
    if not volume_host:
        return False
    if '#' in wanted:
        return volume_host == wanted
    return volume_host.split('#', 1)[0] == wanted


def compare_with_cinder(audit: Mapping[str, Any], cinder_volumes: Sequence[Mapping[str, Any]],
                        cinder_snapshots: Sequence[Mapping[str, Any]], cinder_host: str) -> Dict[str, Any]:
    """The share against Cinder (pure): volumes and snapshots Cinder has on ``cinder_host`` against the files.

    ``cinder_volumes``/``cinder_snapshots``: every volume and snapshot these credentials see (all projects), as
    :func:`._openstack.cinder.volume_view`/``snapshot_view``. Returns the findings and the ids Cinder knows.
    """
    by_id = dict((v['id'], v) for v in cinder_volumes)
    on_backend = dict((v['id'], v) for v in cinder_volumes if host_matches(v.get('host'), cinder_host))
    share_volumes = dict((v['volume_id'], v) for v in audit['volumes'])
    findings: List[Dict[str, Any]] = []

    def add(code: str, message: str, **ids: Any) -> None:
        findings.append(dict({'code': code, 'message': message}, **ids))

    for vid, vol in sorted(share_volumes.items()):
        if not vol['exists']:
            continue
        known = by_id.get(vid)
        if known is None:
            add('volume_unknown_to_cinder', 'volume-%s is in the share but Cinder has no volume %s' % (vid, vid),
                volume_id=vid)
        elif vid not in on_backend:
            add('volume_on_other_backend', 'volume-%s is in the share but Cinder places volume %s on %s, not %s'
                % (vid, vid, known.get('host'), cinder_host), volume_id=vid, cinder_status=known.get('status'))
        elif known.get('status') in GONE_STATUSES:
            add('volume_file_of_deleted_volume', 'Cinder holds volume %s as %s but its files are still in the share'
                % (vid, known.get('status')), volume_id=vid, cinder_status=known.get('status'))
    for vid, known in sorted(on_backend.items()):
        vol = share_volumes.get(vid)
        if (vol is None or not vol['exists']) and known.get('status') not in GONE_STATUSES + ('creating', 'error'):
            add('volume_file_missing', 'Cinder holds volume %s as %s on %s but the share has no volume-%s file'
                % (vid, known.get('status'), cinder_host, vid), volume_id=vid, cinder_status=known.get('status'))
    known_snapshots = set()
    all_snapshot_ids = set(s.get('id') for s in cinder_snapshots)
    for snap in cinder_snapshots:
        vid = snap.get('volume_id')
        if vid not in on_backend:
            continue
        sid = snap.get('id')
        known_snapshots.add(sid)
        vol = share_volumes.get(vid) or {'snapshots': {}, 'files': []}
        fname = vol['snapshots'].get(sid)
        present = fname is not None and fname in vol['files']
        status = snap.get('status')
        if status == 'available' and not present:
            add('snapshot_file_missing', 'Cinder holds snapshot %s of volume %s as available but %s' % (
                sid, vid, 'the .info file does not name it' if fname is None else 'its file %s is gone' % fname),
                volume_id=vid, snapshot_id=sid, cinder_status=status)
        elif status in ('error_deleting', 'deleted'):
            # the file the .info names, else the file named after the snapshot (its .info entry already dropped)
            by_name = 'volume-%s.%s' % (vid, sid)
            left = fname if present else (by_name if by_name in vol['files'] else None)
            if left is not None:
                add('snapshot_file_present', 'Cinder holds snapshot %s of volume %s as %s but its file %s is still '
                    'in the share' % (sid, vid, status, left), volume_id=vid, snapshot_id=sid, cinder_status=status,
                    file=left)
    for vid, vol in sorted(share_volumes.items()):
        if vid not in on_backend:
            continue
        named = set(vol['snapshots'].values())
        for sid, fname in sorted(vol['snapshots'].items()):
            if sid not in known_snapshots:
                add('snapshot_unknown_to_cinder', 'the .info file of volume %s names snapshot %s (%s) but Cinder has '
                    'no such snapshot' % (vid, sid, fname), volume_id=vid, snapshot_id=sid, file=fname)
        for name in vol['files']:
            cls = classify_name(name)
            if (cls.kind == 'snapshot' and cls.volume_id == vid and cls.detail is None and name not in named
                    and cls.snapshot_id not in all_snapshot_ids):
                add('snapshot_unknown_to_cinder', '%s is named after snapshot %s of volume %s, which Cinder does not '
                    'have and no .info entry names' % (name, cls.snapshot_id, vid), volume_id=vid,
                    snapshot_id=cls.snapshot_id, file=name)
    return {'host': cinder_host, 'findings': findings, 'volumes_on_backend': len(on_backend),
            'snapshots_on_backend': len(known_snapshots),
            'known_volume_ids': sorted(by_id), 'known_snapshot_ids': sorted(s.get('id') for s in cinder_snapshots)}


def restrict_candidates(audit: Dict[str, Any], cinder: Optional[Mapping[str, Any]]) -> None:
    """Drop the candidates Cinder knows (an overlay named after a snapshot Cinder has): never removed."""
    if cinder is None:
        return
    snapshots = set(cinder['known_snapshot_ids'])
    kept = []
    for cand in audit['cleanup_candidates']:
        if cand['class'] == 'orphan_overlay' and cand.get('snapshot_id') in snapshots:
            for f in audit['files']:
                if f['name'] == cand['name']:
                    f['class'], f['cleanable'] = 'overlay_in_chain', False
                    f['reason'] = 'no .info entry names it, but Cinder has snapshot %s' % cand['snapshot_id']
            continue
        kept.append(cand)
    audit['cleanup_candidates'] = kept
    counts: Dict[str, int] = {}
    for f in audit['files']:
        counts[f['class']] = counts.get(f['class'], 0) + 1
    audit['counts'] = counts


def summary_lines(directory: str, audit: Mapping[str, Any], cinder: Optional[Mapping[str, Any]]) -> List[str]:
    """The human summary: one line per kind of finding."""
    counts = audit['counts']
    lines = ['%s: %d files, %d volumes (%s)' % (
        directory, len(audit['files']), sum(1 for v in audit['volumes'] if v['exists']),
        ', '.join('%d %s' % (n, c) for c, n in sorted(counts.items())) or 'empty')]
    unsafe = [v['volume_id'] for v in audit['volumes'] if v['chain_safe'] is False]
    if unsafe:
        lines.append('%d volume(s) with an unsafe chain: %s' % (len(unsafe), ', '.join(unsafe[:10])))
    pending = [v['volume_id'] for v in audit['volumes'] if v['pending'] is not None]
    if pending:
        lines.append('%d volume(s) with a pending operation: %s' % (len(pending), ', '.join(pending[:10])))
    if cinder is not None:
        for finding in cinder['findings'][:20]:
            lines.append('cinder: %s' % finding['message'])
    cands = audit['cleanup_candidates']
    if cands:
        lines.append('%d file(s) to clean: %s' % (len(cands), ', '.join(c['name'] for c in cands[:10])))
    else:
        lines.append('nothing to clean')
    return lines


def audit_share(directory: str, max_depth: int = DEFAULT_MAX_DEPTH, min_age: float = 0.0,
                volume_format: Optional[str] = None,
                cinder_data: Optional[Tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]], str]] = None
                ) -> Dict[str, Any]:
    """The whole audit of ``directory`` (and, with ``cinder_data`` = (volumes, snapshots, host), the comparison)."""
    directory = os.path.abspath(directory)
    audit = judge_share(scan_share(directory, max_depth, volume_format), time.time_ns(), min_age)
    cinder = compare_with_cinder(audit, *cinder_data) if cinder_data is not None else None
    restrict_candidates(audit, cinder)
    audit['share'] = directory
    audit['cinder'] = None if cinder is None else dict(
        (k, v) for k, v in cinder.items() if k not in ('known_volume_ids', 'known_snapshot_ids'))
    audit['summary'] = summary_lines(directory, audit, cinder)
    audit['_cinder_known'] = cinder
    return audit


# --- cleanup -----------------------------------------------------------------------------------------------------

def _identity_key(item: Mapping[str, Any]) -> Tuple[str, int, int, int]:
    return (str(item['name']), int(item['inode']), int(item['size']), int(item['mtime_ns']))


def select_candidates(candidates: Sequence[Mapping[str, Any]],
                      only: Optional[Iterable[Mapping[str, Any]]]) -> Tuple[List[Mapping[str, Any]], List[str]]:
    """The candidates to remove: all of them, or with ``only`` (candidates of an earlier audit) those that are still
    candidates with the same identity (inode, size, mtime). Returns (selected, why each other of ``only`` is kept)."""
    if only is None:
        return list(candidates), []
    fresh = dict((_identity_key(c), c) for c in candidates)
    selected, kept = [], []
    for item in only:
        try:
            key = _identity_key(item)
        except (KeyError, TypeError, ValueError):
            kept.append('kept %r: not a candidate of this module\'s audit (name, inode, size, mtime_ns)' % (item,))
            continue
        if key in fresh:
            selected.append(fresh[key])
        else:
            kept.append('kept %s: changed since the audit or no longer a proven leak' % key[0])
    return selected, kept


def _verify_unchanged(directory: str, cand: Mapping[str, Any]) -> Optional[str]:
    """Why ``cand`` must not be removed now (None when it is still the file the audit saw)."""
    now = file_facts(directory, str(cand['name']))
    if now is None:
        return 'gone meanwhile'
    if now.type != 'file':
        return 'no longer a regular file'
    if (now.inode, now.size, now.mtime_ns) != (cand['inode'], cand['size'], cand['mtime_ns']):
        return 'changed since the audit (inode, size or mtime)'
    return None


def _still_orphan(directory: str, cand: Mapping[str, Any], max_depth: int, volume_format: Optional[str]) -> Optional[str]:
    """Under the volume's lock: is the overlay still unreferenced? (None when it is)."""
    vid = str(cand['volume_id'])
    names = set(n for n in os.listdir(directory) if classify_name(n).volume_id == vid)
    regular = set(n for n in names if (file_facts(directory, n) or FileFacts(n, 'gone')).type == 'file')
    # this process holds the lock: not probed (closing the lock file would release it)
    vol = read_volume(directory, vid, names, regular, max_depth, probe_lock=False, volume_format=volume_format)
    facts = file_facts(directory, str(cand['name']))
    if facts is None:
        return 'gone meanwhile'
    judged = judge_file(facts, {vid: vol})
    if judged['class'] != 'orphan_overlay':
        return 'no longer an orphan overlay (%s)' % judged['reason']
    return None


def clean_share(directory: str, candidates: Sequence[Mapping[str, Any]], check_mode: bool, lock_timeout: float,
                max_depth: int = DEFAULT_MAX_DEPTH, volume_format: Optional[str] = None,
                snapshot_known: Optional[Any] = None) -> Dict[str, Any]:
    """Remove (in check mode: list) ``candidates``, each verified again immediately before its removal.

    Stale locks go through :func:`._nfs.lock.remove_unused_lock` (removed only while this run holds the lock and the
    volume has no file); every other candidate is removed under the volume's lock, after checking that it is the very
    file the audit saw and, for an overlay, that it is still unreferenced (``snapshot_known(snapshot id)`` asks Cinder
    again when given). Returns removed paths and why each other candidate was kept.
    """
    removed: List[str] = []
    kept: List[str] = []
    by_volume: Dict[str, List[Mapping[str, Any]]] = {}
    for cand in candidates:
        by_volume.setdefault(str(cand['volume_id']), []).append(cand)
    for vid, cands in sorted(by_volume.items()):
        volume = ShareVolume.in_share(directory, vid)
        locks = [c for c in cands if c['class'] == 'lock_stale']
        others = [c for c in cands if c['class'] != 'lock_stale']
        if others:
            _clean_locked(volume, others, check_mode, lock_timeout, max_depth, volume_format, snapshot_known, removed,
                          kept)
        for cand in locks:
            why = _verify_unchanged(directory, cand)
            if why is not None:
                kept.append('kept %s: %s' % (cand['name'], why))
                continue
            gone, reason = remove_unused_lock(directory, vid, volume.name, check_mode)
            if gone:
                removed.extend(gone)
            else:
                kept.append('kept %s: %s' % (cand['name'], reason))
    return {'removed': removed, 'kept': kept}


def _clean_locked(volume: ShareVolume, cands: Sequence[Mapping[str, Any]], check_mode: bool, lock_timeout: float,
                  max_depth: int, volume_format: Optional[str], snapshot_known: Optional[Any], removed: List[str],
                  kept: List[str]) -> None:
    directory = volume.directory
    if check_mode:
        for cand in cands:
            why = _verify_unchanged(directory, cand)
            if why is None and lock_held(directory, volume.volume_id):
                why = 'a process holds the volume lock'
            if why is None:
                removed.append(os.path.join(directory, str(cand['name'])))
            else:
                kept.append('kept %s: %s' % (cand['name'], why))
        return
    had_lock_file = os.path.lexists(volume.lock_path)
    lock = volume.lock(lock_timeout)
    try:
        lock.acquire()
    except VolsnapError as exc:
        kept.extend('kept %s: %s' % (c['name'], exc.msg) for c in cands)
        return
    changed = False
    try:
        for cand in cands:
            why = _verify_unchanged(directory, cand)
            if why is None and cand['class'] == 'orphan_overlay':
                why = _still_orphan(directory, cand, max_depth, volume_format)
                if why is None and snapshot_known is not None and snapshot_known(cand.get('snapshot_id')):
                    why = 'Cinder has snapshot %s' % cand.get('snapshot_id')
            if why is not None:
                kept.append('kept %s: %s' % (cand['name'], why))
                continue
            path = os.path.join(directory, str(cand['name']))
            try:
                os.unlink(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                kept.append('kept %s: gone meanwhile' % cand['name'])
                continue
            removed.append(path)
            changed = True
        if changed:
            fsync_dir(directory)
    finally:
        lock.release()
    if not had_lock_file and not volume.files():
        # the lock file this run created for a volume that has no file: leave the share as it found it
        remove_unused_lock(directory, volume.volume_id, volume.name, False)


# --- the module's request ---------------------------------------------------------------------------------------

def _public(audit: Mapping[str, Any]) -> Dict[str, Any]:
    return dict((k, v) for k, v in audit.items() if not k.startswith('_'))


def run_share_audit(params: Mapping[str, Any], check_mode: bool, cinder: Optional[Any] = None) -> Dict[str, Any]:
    """``nfs_share_audit``: audit the share (``state=audited``) or remove the proven leaks (``state=cleaned``).

    ``cinder``: a :class:`._openstack.cinder.CinderApi` when ``cinder_host`` is given (the comparison), else None.
    """
    directory = os.path.abspath(params['share'])
    cinder_data = None
    if cinder is not None:
        cinder_data = (cinder.all_volumes(), cinder.all_snapshots(), params['cinder_host'])
    audit = audit_share(directory, params['max_depth'], float(params['min_age']), params.get('volume_format'),
                        cinder_data)
    result = _public(audit)
    result['changed'] = False
    if params['state'] != 'cleaned':
        return result
    selected, kept = select_candidates(audit['cleanup_candidates'], params.get('only'))

    def snapshot_known(snapshot_id: Optional[str]) -> bool:
        return bool(cinder is not None and snapshot_id and cinder.get_snapshot(snapshot_id) is not None)

    cleaned = clean_share(directory, selected, check_mode, float(params['lock_timeout']), params['max_depth'],
                          params.get('volume_format'), snapshot_known if cinder is not None else None)
    removed = cleaned['removed']
    verb = 'would remove' if check_mode else 'removed'
    result.update({
        'changed': bool(removed),
        'removed': removed,
        'kept': kept + cleaned['kept'],
        'plan': ['%s %s' % (verb, path) for path in removed],
        'diff': {'before': ''.join('%s\n' % os.path.basename(p) for p in sorted(removed)), 'after': '',
                 'before_header': '%s: proven leaks' % directory, 'after_header': directory},
    })
    if removed:
        result['summary'] = result['summary'] + ['%s %d file(s): %s' % (verb, len(removed), ', '.join(
            os.path.basename(p) for p in removed[:10]))]
    return result
