# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit of one RBD pool (``rbd_pool_audit``): Cinder's volume pool against Cinder, Glance's image pool against
Glance, and the removal of what the audit proved nobody references.

* :func:`read_pool` (I/O, through :class:`._ceph.rbd.Rbd`, the one place that talks to librbd): every image and trash
  entry of the pool with its id, parent, snapshots (id, protection, children); images are opened read-only, several
  at a time on one I/O context (librbd releases the GIL);
* :func:`judge_cinder_pool` / :func:`judge_glance_pool` (pure): each image classified by the naming of Cinder's RBD
  driver (``volume-<id>``, ``volume-<id>.deleted``, snapshots ``snapshot-<id>`` and ``<clone>.clone_snap``) or
  glance_store (``<image id>`` with snapshot ``snap``) against the ids Cinder or Glance has; the findings; the
  cleanup candidates (only what nobody references: no snapshot with children, not known to Cinder or Glance);
* :func:`clean_pool`: removes candidates, each verified again immediately before (same image id and snapshot ids,
  still no children and no watchers, still unknown to Cinder or Glance), through :class:`._ceph.rbd.Rbd`.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import UUID, is_uuid
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import rbd_module
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.connection import connect as ceph_connect
from ansible_collections.volsnap.openstack.plugins.module_utils._ceph.rbd import (
    CLONE_SNAP_SUFFIX,
    DELETED_SUFFIX,
    GLANCE_SNAP,
    TRASH,
    USER,
    Rbd,
    Ref,
    SnapInfo,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.cinder import CinderApi
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.connection import connect
from ansible_collections.volsnap.openstack.plugins.module_utils._openstack.glance import Glance

CINDER_IMAGE_RE = re.compile(r'^volume-(%s)(%s)?\Z' % (UUID, re.escape(DELETED_SUFFIX)))
CINDER_SNAP_RE = re.compile(r'^snapshot-(%s)\Z' % UUID)
CLONE_SNAP_RE = re.compile(r'^(volume-(%s))%s\Z' % (UUID, re.escape(CLONE_SNAP_SUFFIX)))
DEFAULT_WORKERS = 8


@dataclass
class SnapFacts:
    name: str
    id: int
    protected: bool
    children: List[str] = field(default_factory=list)  # "pool/image" of each clone
    namespace: str = USER  # librbd's snapshot namespace (trash: its removal began; see _ceph.rbd.SNAP_NAMESPACES)
    original_name: Optional[str] = None  # a trash snapshot's name before its removal began

    def as_dict(self) -> Dict[str, Any]:
        out = {'name': self.name, 'id': self.id, 'protected': self.protected, 'children': list(self.children),
               'namespace': self.namespace}
        if self.original_name is not None:
            out['original_name'] = self.original_name
        return out

    @classmethod
    def of(cls, snap: SnapInfo) -> 'SnapFacts':
        """The audit's view of a snapshot :class:`._ceph.rbd.Rbd` read."""
        return cls(name=snap.name, id=int(snap.id or 0), protected=snap.protected,
                   children=sorted(str(child) for child in snap.children), namespace=snap.namespace,
                   original_name=snap.original_name)


@dataclass
class ImageFacts:
    """One image of the pool (``trash``: a trash entry, opened by its id)."""

    name: str
    id: str
    trash: bool = False
    trash_source: Optional[str] = None
    deferment_end: Optional[str] = None
    deferred: bool = False
    parent: Optional[str] = None
    snaps: List[SnapFacts] = field(default_factory=list)
    error: Optional[str] = None

    def snap_ids(self) -> List[int]:
        return sorted(s.id for s in self.snaps)

    def children(self) -> List[str]:
        return sorted(child for snap in self.snaps for child in snap.children)

    def ref(self, pool: str) -> Ref:
        """The image (a trash entry: by its id) as :class:`._ceph.rbd.Rbd` opens it."""
        return Ref(pool, self.name, image_id=self.id if self.trash else None)


def _image_facts(rbd: Rbd, pool: str, name: str, image_id: str, trash: bool) -> ImageFacts:
    facts = ImageFacts(name=name, id=image_id, trash=trash)
    try:
        info = rbd.describe(facts.ref(pool))
    except VolsnapError as exc:  # gone meanwhile, or not openable: reported, never a candidate
        kind = exc.details.get('ceph_error')
        if kind is None:  # not an error of librbd
            raise
        facts.error = '%s (%s)' % (exc.details.get('exception_type'), kind)
        return facts
    facts.id = info.id
    facts.snaps = [SnapFacts.of(snap) for snap in info.snaps]
    facts.parent = str(info.parent) if info.parent is not None else None
    return facts


def read_pool(rbd: Rbd, pool: str, workers: int = DEFAULT_WORKERS, now: Optional[datetime] = None) -> List[ImageFacts]:
    """Every image and trash entry of ``pool`` (read-only; ``workers`` images at a time, sharing ``rbd``'s I/O
    context of the pool)."""
    listed, trash = rbd.images_and_trash(pool)
    jobs: List[Tuple[str, str, bool]] = [(name, image_id, False) for name, image_id in listed]
    jobs += [(str(e['name']), str(e['id']), True) for e in trash]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool_exec:
        facts = list(pool_exec.map(lambda job: _image_facts(rbd, pool, *job), jobs))
    moment = now or datetime.now(timezone.utc).replace(tzinfo=None)  # librbd gives naive UTC times
    for entry, item in zip(trash, facts[len(listed):]):
        item.trash_source = str(entry.get('source'))
        end = entry.get('deferment_end_time')
        if isinstance(end, datetime):
            item.deferment_end = end.isoformat()
            item.deferred = end > moment
    return facts


# --- judging (pure) ----------------------------------------------------------------------------------------------

def _image_entry(img: ImageFacts, cls: str, reason: str, cleanable: bool, **extra: Any) -> Dict[str, Any]:
    entry = {'name': img.name, 'id': img.id, 'trash': img.trash, 'class': cls, 'reason': reason,
             'cleanable': cleanable, 'parent': img.parent, 'snapshots': [s.as_dict() for s in img.snaps]}
    if img.trash:
        entry.update(trash_source=img.trash_source, deferment_end=img.deferment_end)
    entry.update(extra)
    return entry


def _candidate(img: ImageFacts, kind: str, cls: str, reason: str, snap: Optional[SnapFacts] = None) -> Dict[str, Any]:
    cand: Dict[str, Any] = {'kind': kind, 'class': cls, 'name': img.name, 'id': img.id,
                            'snapshot_ids': img.snap_ids(), 'reason': reason}
    if snap is not None:
        cand.update(snapshot=snap.name, snapshot_id=snap.id)
    return cand


def _removable_whole(img: ImageFacts) -> Optional[str]:
    """Why the whole image (with its snapshots) must stay even when nobody else knows it; None when it may go."""
    if img.error:
        return 'it could not be read (%s)' % img.error
    if img.children():
        return 'clones depend on its snapshots (%s)' % ', '.join(img.children()[:5])
    if img.deferred:
        return 'its deferred deletion has not expired yet (%s)' % img.deferment_end
    return None


def judge_cinder_pool(images: Sequence[ImageFacts], volume_ids: Iterable[str], snapshot_ids: Iterable[str],
                      pool: str) -> Dict[str, Any]:
    """Cinder's volume pool against the volume and snapshot ids Cinder has (all projects)."""
    volumes = set(v.lower() for v in volume_ids)
    snapshots = set(s.lower() for s in snapshot_ids)
    live = set(i.name for i in images if not i.trash)
    out: List[Dict[str, Any]] = []
    findings: List[Dict[str, Any]] = []
    cands: List[Dict[str, Any]] = []

    finding = _finder(findings)
    for img in images:
        match = CINDER_IMAGE_RE.match(img.name)
        vid = match.group(1).lower() if match else None
        deleted = bool(match and match.group(2))
        keep = _removable_whole(img)
        if img.trash:
            if vid is not None and vid in volumes:
                out.append(_image_entry(img, 'trash_known', 'in the trash, but Cinder still has volume %s' % vid,
                                        False))
            elif keep:
                out.append(_image_entry(img, 'trash_kept', 'in the trash; kept: %s' % keep, False))
                finding('trash_entry', img, 'trash entry %s (%s) stays: %s' % (img.id, img.name, keep))
            else:
                reason = 'in the trash (%s), no clone depends on it%s' % (
                    img.trash_source, ' and Cinder has no volume %s' % vid if vid else '')
                out.append(_image_entry(img, 'trash_unreferenced', reason, True))
                finding('trash_entry', img, 'trash entry %s (%s) holds %d snapshot(s) nobody uses'
                        % (img.id, img.name, len(img.snaps)))
                cands.append(_candidate(img, 'trash', 'trash_unreferenced', reason))
            continue
        if vid is None:
            out.append(_image_entry(img, 'foreign', 'not a name Cinder\'s RBD driver gives a volume', False))
            continue
        if deleted:
            if vid in volumes:
                out.append(_image_entry(img, 'deleted_known', 'renamed .deleted but Cinder still has volume %s'
                                        % vid, False))
            elif keep:
                out.append(_image_entry(img, 'deleted_with_dependents', 'deleted by Cinder; kept: %s' % keep, False))
                finding('deleted_with_dependents', img, '%s is kept by Cinder because %s' % (img.name, keep))
            else:
                reason = 'deleted by Cinder (renamed .deleted) and no clone depends on it any more'
                out.append(_image_entry(img, 'deleted_unreferenced', reason, True))
                finding('deleted_unreferenced', img, '%s stays in the pool for ever: %s' % (img.name, reason))
                cands.append(_candidate(img, 'image', 'deleted_unreferenced', reason))
            continue
        if vid not in volumes:
            if keep:
                out.append(_image_entry(img, 'volume_unknown_to_cinder', 'Cinder has no volume %s; kept: %s'
                                        % (vid, keep), False))
            else:
                reason = 'Cinder has no volume %s and no clone depends on it' % vid
                out.append(_image_entry(img, 'volume_unknown_to_cinder', reason, True))
                cands.append(_candidate(img, 'image', 'volume_unknown_to_cinder', reason))
            finding('volume_unknown_to_cinder', img, '%s: Cinder has no volume %s' % (img.name, vid))
            continue
        out.append(_image_entry(img, 'volume', 'a volume Cinder has', False))
        for snap in img.snaps:
            _judge_cinder_snapshot(img, snap, volumes, snapshots, live, finding, cands)
    return {'pool': pool, 'role': 'cinder', 'images': out, 'findings': findings, 'cleanup_candidates': cands}


def _judge_cinder_snapshot(img: ImageFacts, snap: SnapFacts, volumes: Set[str], snapshots: Set[str], live: Set[str],
                           finding: Callable[..., None], cands: List[Dict[str, Any]]) -> None:
    if _judge_trashed(img, snap, finding, cands):
        return
    snap_match = CINDER_SNAP_RE.match(snap.name)
    clone_match = CLONE_SNAP_RE.match(snap.name)
    if snap_match is not None:
        if snap_match.group(1).lower() not in snapshots:
            finding('snapshot_unknown_to_cinder', img, '%s@%s: Cinder has no snapshot %s (unmanaged?)'
                    % (img.name, snap.name, snap_match.group(1)), snapshot=snap.name)
        return
    if clone_match is not None:
        clone, clone_id = clone_match.group(1), clone_match.group(2).lower()
        if snap.children:
            return
        if clone_id in volumes or clone in live:
            finding('clone_snap_without_clone', img, '%s@%s has no clone, but volume %s still exists'
                    % (img.name, snap.name, clone_id), snapshot=snap.name)
            return
        reason = 'the clone %s is gone and no image depends on the snapshot' % clone
        finding('clone_snap_without_clone', img, '%s@%s: %s' % (img.name, snap.name, reason), snapshot=snap.name)
        cands.append(_candidate(img, 'snapshot', 'clone_snap_without_clone', reason, snap))
        return
    if snap.protected and not snap.children:
        finding('protected_snapshot_without_children', img, '%s@%s is protected but has no clone'
                % (img.name, snap.name), snapshot=snap.name)
    else:
        finding('foreign_snapshot', img, '%s@%s is not a snapshot Cinder makes' % (img.name, snap.name),
                snapshot=snap.name)


def _finder(findings: List[Dict[str, Any]]) -> Callable[..., None]:
    """``finding(code, img, message, **extra)`` appending to ``findings``."""
    def finding(code: str, img: ImageFacts, message: str, **extra: Any) -> None:
        findings.append(dict({'code': code, 'image': img.name, 'id': img.id, 'message': message}, **extra))
    return finding


def _judge_trashed(img: ImageFacts, snap: SnapFacts, finding: Callable[..., None],
                   cands: List[Dict[str, Any]]) -> bool:
    """A snapshot not in the user namespace: True when judged here. A trash snapshot with clones is librbd's
    (removed when its last clone goes); one without is an interrupted removal, which stays for ever: a candidate."""
    if snap.namespace == USER:
        return False
    if snap.namespace == TRASH and not snap.children:
        reason = ('the removal of snapshot %s was interrupted (left in the trash namespace as %s) and no clone uses it'
                  % (snap.original_name or '?', snap.name))
        finding('interrupted_snapshot_removal', img, '%s: %s' % (img.name, reason), snapshot=snap.name)
        cands.append(_candidate(img, 'snapshot', 'interrupted_snapshot_removal', reason, snap))
    return True


def judge_glance_pool(images: Sequence[ImageFacts], records: Mapping[str, Mapping[str, Any]], pool: str,
                      store: Optional[str]) -> Dict[str, Any]:
    """Glance's image pool against Glance's image records (id -> record, all the admin sees).

    ``store``: the Glance store id of this pool; records stored there (``stores``) whose image is missing are
    findings (never removed: a record is Glance's to delete).
    """
    out: List[Dict[str, Any]] = []
    findings: List[Dict[str, Any]] = []
    cands: List[Dict[str, Any]] = []
    finding = _finder(findings)
    present = set()
    for img in images:
        if img.trash:
            keep = _removable_whole(img)
            known = img.name.lower() in records
            if known or keep:
                out.append(_image_entry(img, 'trash_kept', 'in the trash; kept: %s' % (
                    'Glance has image %s' % img.name if known else keep), False))
            else:
                out.append(_image_entry(img, 'trash_unreferenced', 'in the trash, no record, no clone', True))
                cands.append(_candidate(img, 'trash', 'trash_unreferenced', 'in the trash, no record, no clone'))
            findings.append({'code': 'trash_entry', 'image': img.name, 'id': img.id,
                             'message': 'trash entry %s (%s)' % (img.id, img.name)})
            continue
        if not is_uuid(img.name):
            out.append(_image_entry(img, 'foreign', 'not a name glance_store gives an image', False))
            continue
        present.add(img.name.lower())
        record = records.get(img.name.lower())
        if record is not None:
            snaps = dict((s.name, s) for s in img.snaps if s.namespace == USER)
            for snap in img.snaps:
                _judge_trashed(img, snap, finding, cands)
            extra = {'glance_status': record.get('status')}
            if GLANCE_SNAP not in snaps and record.get('status') == 'active':
                findings.append({'code': 'image_without_snap', 'image': img.name, 'id': img.id,
                                 'message': '%s has no snapshot %s, which glance_store creates' % (img.name,
                                                                                                   GLANCE_SNAP)})
            out.append(_image_entry(img, 'image', 'Glance has this image (%s)' % record.get('status'), False, **extra))
            continue
        keep = _removable_whole(img)
        reason = 'Glance has no image %s%s' % (img.name, '; kept: %s' % keep if keep else ' and no clone depends on it')
        out.append(_image_entry(img, 'image_without_record', reason, keep is None))
        findings.append({'code': 'image_without_record', 'image': img.name, 'id': img.id, 'message': reason})
        if keep is None:
            cands.append(_candidate(img, 'image', 'image_without_record', reason))
    for image_id, record in sorted(records.items()):
        if image_id in present or record.get('status') != 'active':
            continue
        stores = str(record.get('stores') or '').split(',')
        if store is not None and store in stores:
            findings.append({'code': 'record_without_data', 'image': image_id, 'id': None,
                             'message': 'Glance image %s (%s) is active in store %s but pool %s has no image %s'
                             % (image_id, record.get('name'), store, pool, image_id)})
    return {'pool': pool, 'role': 'glance', 'images': out, 'findings': findings, 'cleanup_candidates': cands}


def finish(audit: Dict[str, Any]) -> Dict[str, Any]:
    """Counts and the human summary."""
    counts: Dict[str, int] = {}
    for img in audit['images']:
        counts[img['class']] = counts.get(img['class'], 0) + 1
    audit['counts'] = counts
    lines = ['pool %s (%s): %d images and trash entries (%s)' % (
        audit['pool'], audit['role'], len(audit['images']),
        ', '.join('%d %s' % (n, c) for c, n in sorted(counts.items())) or 'empty')]
    lines += [f['message'] for f in audit['findings'][:20]]
    cands = audit['cleanup_candidates']
    if cands:
        lines.append('%d to clean: %s' % (len(cands), ', '.join(
            '%s%s' % (c['name'], '@%s' % c['snapshot'] if c.get('snapshot') else '') for c in cands[:10])))
    else:
        lines.append('nothing to clean')
    audit['summary'] = lines
    return audit


# --- cleanup -----------------------------------------------------------------------------------------------------

def _cand_key(cand: Mapping[str, Any]) -> Tuple[str, str, str, Optional[str], Tuple[int, ...]]:
    return (str(cand['kind']), str(cand['name']), str(cand['id']), cand.get('snapshot'),
            tuple(int(i) for i in cand.get('snapshot_ids') or ()))


def select_candidates(candidates: Sequence[Mapping[str, Any]],
                      only: Optional[Iterable[Mapping[str, Any]]]) -> Tuple[List[Mapping[str, Any]], List[str]]:
    """All candidates, or with ``only`` (candidates of an earlier audit) those still candidates with the same image id
    and snapshot ids."""
    if only is None:
        return list(candidates), []
    fresh = dict((_cand_key(c), c) for c in candidates)
    selected, kept = [], []
    for item in only:
        try:
            key = _cand_key(item)
        except (KeyError, TypeError, ValueError):
            kept.append('kept %r: not a candidate of this module\'s audit' % (item,))
            continue
        if key in fresh:
            selected.append(fresh[key])
        else:
            kept.append('kept %s: changed since the audit or no longer a proven leak' % key[1])
    return selected, kept


def _verify(rbd: Rbd, pool: str, cand: Mapping[str, Any]) -> Tuple[Optional[str], Optional[ImageFacts]]:
    """Read the candidate again: why it must stay (None when it is still what the audit saw, unreferenced)."""
    trash = cand['kind'] == 'trash'
    now = _image_facts(rbd, pool, str(cand['name']), str(cand['id']), trash)
    if now.error:
        return 'it cannot be read now (%s)' % now.error, None
    if now.id != cand['id']:
        return 'its image id changed (%s, audited %s)' % (now.id, cand['id']), None
    if now.snap_ids() != sorted(int(i) for i in cand.get('snapshot_ids') or ()):
        return 'its snapshots changed since the audit', None
    if cand['kind'] == 'snapshot':
        snap = [s for s in now.snaps if s.id == cand.get('snapshot_id')]
        if not snap or snap[0].children:
            return 'the snapshot is gone or has clones now', None
    elif now.children():
        return 'clones depend on it now (%s)' % ', '.join(now.children()[:5]), None
    return None, now


def clean_pool(rbd: Rbd, pool: str, candidates: Sequence[Mapping[str, Any]], check_mode: bool,
               still_unknown: Callable[[Mapping[str, Any]], Optional[str]]) -> Dict[str, Any]:
    """Remove (in check mode: list) ``candidates``; each verified again just before (:func:`_verify`, no watchers,
    ``still_unknown(candidate)`` None: Cinder or Glance still does not know it)."""
    removed: List[str] = []
    kept: List[str] = []
    for cand in candidates:
        what = '%s%s%s' % ('trash ' if cand['kind'] == 'trash' else '', cand['name'],
                           '@%s' % cand['snapshot'] if cand.get('snapshot') else '')
        why, now = _verify(rbd, pool, cand)
        if why is None:
            why = still_unknown(cand)
        if why is None and cand['kind'] == 'image':
            why = _watched(rbd, pool, str(cand['name']))
        if why is not None or now is None:
            kept.append('kept %s: %s' % (what, why))
            continue
        if not check_mode and not _remove(rbd, pool, cand, now, 'removing %s from pool %s' % (what, pool)):
            kept.append('kept %s: another client removed it meanwhile' % what)
            continue
        removed.append('%s/%s' % (pool, what))
    return {'removed': removed, 'kept': kept}


def _watched(rbd: Rbd, pool: str, name: str) -> Optional[str]:
    watchers = rbd.watchers(Ref(pool, name))
    return 'a client has it open (%d watcher(s))' % watchers if watchers else None


def _remove(rbd: Rbd, pool: str, cand: Mapping[str, Any], now: ImageFacts, action: str) -> bool:
    """Unprotect and remove the snapshots (all, or the one), then the image or trash entry; False when another client
    removed it meanwhile (nothing was removed here)."""
    ref = now.ref(pool)
    names = [snap.name for snap in now.snaps if cand['kind'] != 'snapshot' or snap.id == cand.get('snapshot_id')]
    removed = rbd.remove_snaps(ref, names, action=action)
    if cand['kind'] == 'snapshot':
        return bool(removed)
    return rbd.remove(ref, action=action) or bool(removed)


# --- the module's request ---------------------------------------------------------------------------------------

def glance_records(images: Iterable[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return dict((str(i['id']).lower(), dict(i)) for i in images if i.get('id'))


def run_pool_audit(params: Mapping[str, Any], check_mode: bool, cluster: Any, rbd_lib: Any,
                   cinder: Optional[Any], glance: Optional[Any]) -> Dict[str, Any]:
    """``rbd_pool_audit`` on connected services: ``cinder`` (:class:`._openstack.cinder.CinderApi`) for
    ``role=cinder``, ``glance`` (:class:`._openstack.glance.Glance`) for ``role=glance``."""
    rbd = Rbd(cluster, rbd_lib, params.get('ceph_user'))
    try:
        return _run_pool_audit(params, check_mode, rbd, cinder, glance)
    finally:
        rbd.close()


def _run_pool_audit(params: Mapping[str, Any], check_mode: bool, rbd: Rbd, cinder: Optional[Any],
                    glance: Optional[Any]) -> Dict[str, Any]:
    pool = params['pool']
    images = read_pool(rbd, pool, int(params.get('workers') or DEFAULT_WORKERS))
    if params['role'] == 'cinder':
        if cinder is None:
            raise VolsnapError('internal error: role=cinder without a Cinder client')
        volume_ids = [str(v['id']) for v in cinder.all_volumes()]
        snapshot_ids = [str(s['id']) for s in cinder.all_snapshots()]
        audit = judge_cinder_pool(images, volume_ids, snapshot_ids, pool)
    else:
        if glance is None:
            raise VolsnapError('internal error: role=glance without a Glance client')
        audit = judge_glance_pool(images, glance_records(glance.all_images()), pool, params.get('glance_store'))
    result = finish(audit)
    result['changed'] = False
    if params['state'] != 'cleaned':
        return result
    selected, kept = select_candidates(audit['cleanup_candidates'], params.get('only'))

    def still_unknown(cand: Mapping[str, Any]) -> Optional[str]:
        name = str(cand['name'])
        if params['role'] == 'cinder' and cinder is not None:
            match = CINDER_IMAGE_RE.match(name)
            # a clone_snap candidate sits on a volume Cinder has: only its clone must still be unknown
            if cand['kind'] != 'snapshot' and match and cinder.find_volume(match.group(1)) is not None:
                return 'Cinder has volume %s now' % match.group(1)
            clone = CLONE_SNAP_RE.match(str(cand.get('snapshot') or ''))
            if clone and cinder.find_volume(clone.group(2)) is not None:
                return 'Cinder has the clone volume %s now' % clone.group(2)
        if params['role'] == 'glance' and glance is not None and is_uuid(name) and glance.get_image(name) is not None:
            return 'Glance has image %s now' % name
        return None

    cleaned = clean_pool(rbd, pool, selected, check_mode, still_unknown)
    removed = cleaned['removed']
    verb = 'would remove' if check_mode else 'removed'
    result.update({
        'changed': bool(removed), 'removed': removed, 'kept': kept + cleaned['kept'],
        'plan': ['%s %s' % (verb, what) for what in removed],
        'diff': {'before': ''.join('%s\n' % what for what in sorted(removed)), 'after': '',
                 'before_header': 'pool %s: proven leaks' % pool, 'after_header': 'pool %s' % pool},
    })
    if removed:
        result['summary'] = result['summary'] + ['%s %d: %s' % (verb, len(removed), ', '.join(removed[:10]))]
    return result


def audit_pool_module(params: Mapping[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Connect (librados, and the cloud) and run :func:`run_pool_audit` with the module's options."""
    rbd_lib = rbd_module()
    conn = connect(params)
    cinder = CinderApi(conn) if params['role'] == 'cinder' else None
    glance = Glance(conn) if params['role'] == 'glance' else None
    with ceph_connect(params.get('ceph_conf'), params.get('ceph_user'), params.get('keyring'),
                      params.get('rados_connect_timeout')) as cluster:
        return run_pool_audit(params, check_mode, cluster, rbd_lib, cinder, glance)
