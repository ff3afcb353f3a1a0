# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _nfs/audit.py: every class of name, hostile names and links, the Cinder comparison, the cleanup's
verification before each removal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import audit as A
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B

VID = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
VOL = 'volume-' + VID
SID = '11111111-2222-4333-8444-555555555555'
SID2 = '66666666-7777-4888-9999-aaaaaaaaaaaa'
GONE = '99999999-8888-4777-a666-555555555555'


@pytest.mark.parametrize('name,kind,vid,detail', [
    (VOL, 'volume', VID, None),
    (VOL + '.info', 'info', VID, None),
    ('%s.%s' % (VOL, SID), 'snapshot', VID, None),
    ('%s.tmp-snap-%s' % (VOL, SID), 'snapshot', VID, "Cinder's temporary snapshot"),
    ('.volsnap-nfs-%s.lock' % VID, 'lock', VID, None),
    ('.volsnap-%s.journal' % VOL, 'journal', VID, None),
    ('.%s.info.0123456789abcdef.volsnap-tmp' % VOL, 'temporary', VID, 'info'),
    ('..volsnap-%s.journal.0123456789abcdef.volsnap-tmp' % VOL, 'temporary', VID, 'journal'),
    ('.%s.%s.volsnap-tmp' % (VOL, SID), 'temporary', VID, 'overlay'),
    ('.%s.volsnap-tmp' % VOL, 'temporary', VID, 'clone output'),
    ('.%s.volsnap-clone' % VOL, 'clone_record', VID, None),
    ('..%s.volsnap-clone.0123456789abcdef.volsnap-tmp' % VOL, 'temporary', VID, 'clone record'),
])
def test_classify_every_own_name(name, kind, vid, detail):
    cls = A.classify_name(name)
    assert (cls.kind, cls.volume_id, cls.detail) == (kind, vid, detail)


@pytest.mark.parametrize('name', [
    'volume-%s.bak' % VID, 'volume-%s/../x' % VID, 'json:{"file":"/etc/shadow"}', 'volume-NOTANID',
    '.volsnap-nfs-../../etc.lock', '.nfs000000001', 'volume-%s.%s.%s' % (VID, SID, SID2), 'VOLUME-%s' % VID,
    '.%s.info.short.volsnap-tmp' % VOL, 'lost+found',
])
def test_hostile_or_unknown_names_are_foreign(name):
    assert A.classify_name(name).kind == 'foreign'


def _info(share, snapshots, active):
    data = dict(snapshots, active=active)
    (share / (VOL + '.info')).write_text(json.dumps(data, indent=1, sort_keys=True))


@pytest.fixture
def share(tmp_path):
    directory = tmp_path / 'share'
    directory.mkdir()
    return directory


def _healthy(share):
    """volume-<id> (raw) with snapshot SID: overlay named by .info, active."""
    B.write(str(share / VOL), b'\0' * 4096)
    B.write_qcow2(share, '%s.%s' % (VOL, SID), backing=VOL, backing_fmt='raw', size=4096)
    _info(share, {SID: '%s.%s' % (VOL, SID)}, '%s.%s' % (VOL, SID))


def _classes(audit):
    return dict((f['name'], f['class']) for f in audit['files'])


def test_healthy_share_has_nothing_to_clean(share):
    _healthy(share)
    audit = A.audit_share(str(share))
    assert audit['cleanup_candidates'] == []
    assert _classes(audit) == {VOL: 'volume', VOL + '.info': 'info', '%s.%s' % (VOL, SID): 'snapshot_overlay'}
    [vol] = audit['volumes']
    assert vol['chain_safe'] is True and vol['info_consistent'] is True and vol['lock'] is None
    assert audit['summary'][-1] == 'nothing to clean'


def test_planted_leaks_are_classified(share):
    _healthy(share)
    orphan = '%s.%s' % (VOL, SID2)
    B.write_qcow2(share, orphan, backing=VOL, backing_fmt='raw', size=4096)
    stale_lock = '.volsnap-nfs-%s.lock' % GONE
    (share / stale_lock).write_text('')
    temp = '.%s.info.0123456789abcdef.volsnap-tmp' % VOL
    (share / temp).write_text('{}')
    record = '.volume-%s.volsnap-clone' % GONE
    (share / record).write_text('{}')
    (share / 'notes.txt').write_text('x')
    os.symlink('/etc/passwd', str(share / ('volume-%s' % SID2)))
    os.mkdir(str(share / ('volume-%s.%s' % (GONE, SID))))
    audit = A.audit_share(str(share))
    classes = _classes(audit)
    assert classes[orphan] == 'orphan_overlay'
    assert classes[stale_lock] == 'lock_stale'
    assert classes[temp] == 'stale_temporary'
    assert classes[record] == 'stale_clone_record'
    assert classes['notes.txt'] == 'foreign'
    assert classes['volume-%s' % SID2] == 'foreign'  # a symlink, never followed
    assert classes['volume-%s.%s' % (GONE, SID)] == 'foreign'  # a directory
    assert sorted(c['name'] for c in audit['cleanup_candidates']) == sorted([orphan, stale_lock, temp, record])
    assert all({'inode', 'size', 'mtime_ns'} <= set(c) for c in audit['cleanup_candidates'])


def test_overlay_another_overlay_backs_onto_is_kept(share):
    _healthy(share)
    # a chain the .info file does not know: SID2 backs onto X, neither named
    x = '%s.%s' % (VOL, GONE)
    B.write_qcow2(share, x, backing=VOL, backing_fmt='raw', size=4096)
    B.write_qcow2(share, '%s.%s' % (VOL, SID2), backing=x, backing_fmt='qcow2', size=4096)
    classes = _classes(A.audit_share(str(share)))
    assert classes[x] == 'overlay_in_chain'
    assert classes['%s.%s' % (VOL, SID2)] == 'orphan_overlay'


def test_overlay_without_info_or_with_pending_journal_is_kept(share):
    B.write(str(share / VOL), b'\0' * 4096)
    overlay = '%s.%s' % (VOL, SID)
    B.write_qcow2(share, overlay, backing=VOL, backing_fmt='raw', size=4096)
    (share / (VOL + '.info')).write_text('not json')
    audit = A.audit_share(str(share))
    assert _classes(audit)[overlay] == 'overlay_in_chain' and audit['cleanup_candidates'] == []
    (share / (VOL + '.info')).unlink()
    _info(share, {}, VOL)
    (share / ('.volsnap-%s.journal' % VOL)).write_text('{"broken": ')
    audit = A.audit_share(str(share))
    classes = _classes(audit)
    assert classes[overlay] == 'overlay_in_chain' and classes['.volsnap-%s.journal' % VOL] == 'pending_journal'
    assert audit['volumes'][0]['pending_error']


def test_young_leaks_are_not_candidates(share):
    _healthy(share)
    temp = '.%s.info.0123456789abcdef.volsnap-tmp' % VOL
    (share / temp).write_text('{}')
    audit = A.audit_share(str(share), min_age=3600)
    assert _classes(audit)[temp] == 'stale_temporary' and audit['cleanup_candidates'] == []


def _hold_lock(directory, vid):
    proc = subprocess.Popen([sys.executable, '-c', 'import sys, time\n'
                             'from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.lock import '
                             'VolumeLock\n'
                             'lock = VolumeLock(sys.argv[1], sys.argv[2], 5); lock.acquire()\n'
                             'print("held", flush=True); sys.stdin.read()', directory, vid],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ))
    assert proc.stdout.readline().strip() == b'held'
    return proc


def test_held_lock_and_its_temporaries_are_in_use(share):
    _healthy(share)
    temp = '.%s.info.0123456789abcdef.volsnap-tmp' % VOL
    (share / temp).write_text('{}')
    proc = _hold_lock(str(share), VID)
    try:
        audit = A.audit_share(str(share))
        classes = _classes(audit)
        assert classes['.volsnap-nfs-%s.lock' % VID] == 'lock_held' and classes[temp] == 'temporary_in_use'
        assert audit['cleanup_candidates'] == []
        # cleanup with the candidate of an earlier audit: kept, the lock is held
        cleaned = A.clean_share(str(share), [dict(_cand(share, temp), **{'class': 'stale_temporary',
                                                                         'volume_id': VID})], False, 0.1)
        assert cleaned['removed'] == [] and 'timed out' in cleaned['kept'][0]
    finally:
        proc.communicate(b'')
    classes = _classes(A.audit_share(str(share)))
    assert classes['.volsnap-nfs-%s.lock' % VID] == 'lock_idle' and classes[temp] == 'stale_temporary'


def test_clone_temporaries_are_judged_by_age_only(share):
    """volume_clone holds its *source* volume's lock while it writes the output of another volume: the dest volume's
    lock says nothing, so min_age alone protects a clone that is running."""
    _healthy(share)
    output = '.volume-%s.volsnap-tmp' % GONE
    (share / output).write_text('data')
    proc = _hold_lock(str(share), GONE)
    try:
        audit = A.audit_share(str(share), min_age=3600)
        [entry] = [f for f in audit['files'] if f['name'] == output]
        assert entry['class'] == 'stale_temporary' and 'age' in entry['reason'] and not entry['cleanable']
        assert [c['name'] for c in A.audit_share(str(share))['cleanup_candidates']] == [output]
    finally:
        proc.communicate(b'')


def _cand(share, name):
    st = os.lstat(str(share / name))
    return {'name': name, 'inode': st.st_ino, 'size': st.st_size, 'mtime_ns': st.st_mtime_ns}


def _params(share, **kw):
    params = dict(share=str(share), state='cleaned', only=None, min_age=0.0, lock_timeout=1, max_depth=100,
                  volume_format=None, cinder_host=None)
    params.update(kw)
    return params


def test_cleanup_removes_exactly_the_leaks_check_mode_first(share):
    _healthy(share)
    orphan = '%s.%s' % (VOL, SID2)
    B.write_qcow2(share, orphan, backing=VOL, backing_fmt='raw', size=4096)
    stale_lock = '.volsnap-nfs-%s.lock' % GONE
    (share / stale_lock).write_text('')
    before = sorted(os.listdir(str(share)))
    checked = A.run_share_audit(_params(share), check_mode=True)
    assert checked['changed'] is True and sorted(os.listdir(str(share))) == before
    assert sorted(os.path.basename(p) for p in checked['removed']) == sorted([orphan, stale_lock])
    assert checked['diff']['before'] == ''.join('%s\n' % n for n in sorted([orphan, stale_lock]))
    done = A.run_share_audit(_params(share), check_mode=False)
    assert sorted(os.path.basename(p) for p in done['removed']) == sorted([orphan, stale_lock])
    assert sorted(os.listdir(str(share))) == sorted(set(before) - {orphan, stale_lock} | {'.volsnap-nfs-%s.lock' % VID})
    again = A.run_share_audit(_params(share), check_mode=False)
    assert again['changed'] is False and again['removed'] == []


def test_cleanup_keeps_what_changed_since_the_audit(share):
    _healthy(share)
    temp = '.%s.info.0123456789abcdef.volsnap-tmp' % VOL
    (share / temp).write_text('{}')
    audit = A.audit_share(str(share))
    (share / temp).write_text('{"changed": 1}')
    result = A.run_share_audit(_params(share, only=audit['cleanup_candidates']), check_mode=False)
    assert result['removed'] == [] and 'changed since the audit' in result['kept'][0]
    assert (share / temp).exists()


def test_cleanup_rechecks_the_overlay_under_the_lock(share):
    _healthy(share)
    orphan = '%s.%s' % (VOL, SID2)
    B.write_qcow2(share, orphan, backing=VOL, backing_fmt='raw', size=4096)
    [cand] = A.audit_share(str(share))['cleanup_candidates']
    _info(share, {SID: '%s.%s' % (VOL, SID), SID2: orphan}, orphan)  # meanwhile, a snapshot now uses it
    cleaned = A.clean_share(str(share), [cand], False, 1)
    assert cleaned['removed'] == [] and 'no longer an orphan overlay' in cleaned['kept'][0]
    assert (share / orphan).exists()


def test_cleanup_never_removes_an_overlay_cinder_knows(share):
    _healthy(share)
    orphan = '%s.%s' % (VOL, SID2)
    B.write_qcow2(share, orphan, backing=VOL, backing_fmt='raw', size=4096)
    [cand] = A.audit_share(str(share))['cleanup_candidates']
    cleaned = A.clean_share(str(share), [cand], False, 1, snapshot_known=lambda sid: sid == SID2)
    assert cleaned['removed'] == [] and 'Cinder has snapshot' in cleaned['kept'][0]


HOST = 'node@nfs#127.0.0.1:/export'


def _vol(vid, status='available', host=HOST):
    return {'id': vid, 'status': status, 'host': host}


def _snap(sid, vid, status='available'):
    return {'id': sid, 'volume_id': vid, 'status': status}


def test_compare_with_cinder_every_finding(share):
    _healthy(share)
    other = 'volume-%s' % GONE
    B.write(str(share / other), b'\0' * 512)
    missing = '12345678-1234-4234-8234-123456789abc'
    orphan = '%s.%s' % (VOL, SID2)
    B.write_qcow2(share, orphan, backing=VOL, backing_fmt='raw', size=4096)
    vols = [_vol(VID), _vol(missing)]
    snaps = [_snap(SID2, VID, 'error_deleting'), _snap('abcdefab-1234-4234-8234-123456789abc', VID)]
    audit = A.audit_share(str(share), cinder_data=(vols, snaps, HOST))
    codes = sorted((f['code'], f.get('volume_id'), f.get('snapshot_id')) for f in audit['cinder']['findings'])
    assert codes == sorted([
        ('volume_unknown_to_cinder', GONE, None),
        ('volume_file_missing', missing, None),
        ('snapshot_file_missing', VID, 'abcdefab-1234-4234-8234-123456789abc'),
        ('snapshot_unknown_to_cinder', VID, SID),
        # Cinder holds SID2 as error_deleting: no .info entry names it, but its file is still there
        ('snapshot_file_present', VID, SID2),
    ])
    # the orphan overlay is named after a snapshot Cinder has: never a candidate
    assert audit['cleanup_candidates'] == [] and _classes(audit)[orphan] == 'overlay_in_chain'


def test_compare_with_cinder_error_deleting_file_present(share):
    _healthy(share)
    audit = A.audit_share(str(share), cinder_data=([_vol(VID)], [_snap(SID, VID, 'error_deleting')], HOST))
    assert [f['code'] for f in audit['cinder']['findings']] == ['snapshot_file_present']


def test_compare_with_cinder_snapshot_file_unknown_to_cinder(share):
    _healthy(share)
    orphan = '%s.%s' % (VOL, SID2)
    B.write_qcow2(share, orphan, backing=VOL, backing_fmt='raw', size=4096)
    temporary = '%s.tmp-snap-%s' % (VOL, GONE)  # Cinder's own temporary snapshot of a clone: not a snapshot id
    B.write_qcow2(share, temporary, backing=VOL, backing_fmt='raw', size=4096)
    audit = A.audit_share(str(share), cinder_data=([_vol(VID)], [_snap(SID, VID)], HOST))
    assert [(f['code'], f['snapshot_id'], f['file']) for f in audit['cinder']['findings']] == [
        ('snapshot_unknown_to_cinder', SID2, orphan)]
    assert 'no .info entry names' in audit['cinder']['findings'][0]['message']
    assert [c['name'] for c in audit['cleanup_candidates']] == sorted([orphan, temporary])
    # a file named after a snapshot Cinder has (of any volume) is no such finding, and never a candidate
    audit = A.audit_share(str(share), cinder_data=([_vol(VID)], [_snap(SID, VID), _snap(SID2, GONE)], HOST))
    assert audit['cinder']['findings'] == []
    assert [c['name'] for c in audit['cleanup_candidates']] == [temporary]


def test_compare_with_cinder_error_deleting_file_named_by_info_first(share):
    _healthy(share)
    audit = A.audit_share(str(share), cinder_data=([_vol(VID)], [_snap(SID, VID, 'deleted')], HOST))
    [finding] = audit['cinder']['findings']
    assert (finding['code'], finding['file'], finding['cinder_status']) == (
        'snapshot_file_present', '%s.%s' % (VOL, SID), 'deleted')


def test_healthy_share_agrees_with_cinder(share):
    _healthy(share)
    audit = A.audit_share(str(share), cinder_data=([_vol(VID)], [_snap(SID, VID)], HOST))
    assert audit['cinder']['findings'] == [] and audit['cleanup_candidates'] == []


@pytest.mark.parametrize('host,wanted,ok', [
    (HOST, HOST, True), (HOST, 'node@nfs', True), ('node@nfs2#x', 'node@nfs', False), (None, 'node@nfs', False),
    ('node@nfs#other', HOST, False)])
def test_host_matches(host, wanted, ok):
    assert A.host_matches(host, wanted) is ok


def test_select_candidates_only_the_same_files():
    cand = {'name': 'a', 'class': 'stale_temporary', 'inode': 1, 'size': 2, 'mtime_ns': 3, 'volume_id': VID}
    selected, kept = A.select_candidates([cand], [dict(cand), dict(cand, name='b'), {'name': 'c'}])
    assert selected == [cand] and len(kept) == 2
    assert A.select_candidates([cand], None) == ([cand], [])


def test_share_that_is_not_a_directory(tmp_path):
    with pytest.raises(Exception) as err:
        A.audit_share(str(tmp_path / 'missing'))
    assert 'not a directory' in str(err.value)
