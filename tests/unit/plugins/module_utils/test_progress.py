# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of progress recording (_base/progress.py), its hooks and its readers (_nfs/pending.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._base import progress
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.steps import Actions, Executor
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import qemu_img
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.pending import list_operations


class Clock(object):
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path, clock=None, **kwargs):
    clock = clock or Clock()
    recorder = progress.Recorder(str(tmp_path / 'progress'), 'upload_copy', 'rbd_image_clone_upload',
                                 {'volume_id': 'v1', 'image_id': None}, clock=clock, monotonic=clock,
                                 use_timer=False, **kwargs)
    return recorder, clock


def on_disk(recorder):
    with open(recorder.path) as handle:
        return json.load(handle)


def test_nothing_is_written_before_the_first_step_and_the_directory_is_private(tmp_path):
    recorder, clock = make(tmp_path)
    recorder.plan(['create_image', 'upload_data'])
    assert not (tmp_path / 'progress').exists()
    recorder.step(0, 'create image')
    assert (os.stat(str(tmp_path / 'progress')).st_mode & 0o777) == 0o700
    record = on_disk(recorder)
    assert (os.stat(recorder.path).st_mode & 0o777) == 0o600
    assert record['step'] == 1 and record['steps'] == 2 and record['step_description'] == 'create image'
    assert record['state'] == 'running' and record['pid'] == os.getpid()
    assert record['targets'] == {'volume_id': 'v1'}
    # no temporary file is left beside the record
    assert sorted(os.listdir(str(tmp_path / 'progress'))) == [recorder.id + '.json']


def test_writes_are_throttled_and_the_last_state_always_lands(tmp_path):
    recorder, clock = make(tmp_path)
    recorder.plan(['upload_data'])
    recorder.step(0, 'copy')
    assert recorder.writes == 1
    for done in range(1, 101):
        clock.now += 0.01  # 100 updates in one second
        recorder.bytes(done, 1000)
    assert recorder.writes <= 1 + 4 + 1
    assert on_disk(recorder)['bytes_done'] <= 100
    recorder.finish()
    record = on_disk(recorder)
    assert record['state'] == 'done' and record['percent'] == 100.0 and record['bytes_done'] == 100


def test_a_steps_first_total_is_written_at_once_then_throttled(tmp_path):
    """A block job that ends within one interval still leaves its size and progress in the record."""
    recorder, clock = make(tmp_path)
    recorder.plan(['commit', 'rebase'])
    recorder.step(0, 'blockCommit')
    clock.now += 0.01
    recorder.bytes(10, 1000)  # within the interval, but the first total of the step: written now
    record = on_disk(recorder)
    assert (record['step'], record['bytes_done'], record['bytes_total']) == (1, 10, 1000)
    clock.now += 0.01
    recorder.bytes(20, 1000)  # throttled again
    assert on_disk(recorder)['bytes_done'] == 10
    recorder.step(1, 'rebase')
    clock.now += 0.3
    recorder.bytes(0, 50)  # the next step's first total: written at once too
    assert (on_disk(recorder)['step'], on_disk(recorder)['bytes_total']) == (2, 50)
    writes = recorder.writes
    recorder.bytes(5, None)  # no total: nothing new to say at once
    recorder.bytes(6, None)
    assert recorder.writes == writes


def test_a_deferred_change_is_written_by_the_timer(tmp_path):
    recorder = progress.Recorder(str(tmp_path / 'p'), 'clone', 'volume_clone', {}, min_interval=0.2)
    recorder.plan(['convert'])
    recorder.step(0, 'convert')
    recorder.fraction(0.5)  # within the interval: deferred
    assert on_disk(recorder)['percent'] == 0.0
    deadline = time.monotonic() + 5
    while on_disk(recorder)['percent'] != 50.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert on_disk(recorder)['percent'] == 50.0
    recorder.finish()


def test_percent_weighs_data_steps_and_never_decreases(tmp_path):
    recorder, clock = make(tmp_path, min_interval=0)
    recorder.plan(['create_image', 'snapshot_volume', 'upload_data', 'set_properties'])
    seen = []
    recorder.step(0, 'a')
    seen.append(on_disk(recorder)['percent'])
    recorder.step(1, 'b')
    seen.append(on_disk(recorder)['percent'])
    recorder.step(2, 'copy')
    for done in (0, 250, 500, 400, 1000):  # a smaller value (a retried read) must not make it go back
        clock.now += 1
        recorder.bytes(done, 1000)
        seen.append(on_disk(recorder)['percent'])
    recorder.step(3, 'd')
    seen.append(on_disk(recorder)['percent'])
    recorder.finish()
    seen.append(on_disk(recorder)['percent'])
    assert seen == sorted(seen) and seen[-1] == 100.0
    # 2 light steps of 1, the copy 20, 1 light step: half the copy is (2 + 10) / 23
    assert seen[0] == 0.0 and abs(seen[4] - round(100 * 12 / 23.0, 2)) < 0.01


def test_rate_and_eta_over_the_recent_window(tmp_path):
    recorder, clock = make(tmp_path, min_interval=0)
    recorder.plan(['upload_data'])
    recorder.step(0, 'copy')
    for second in range(1, 31):
        clock.now += 1
        # 10 MB/s for 20 s, then 1 MB/s: the rate follows the last 10 s, not the average
        done = second * 10 ** 7 if second <= 20 else 2 * 10 ** 8 + (second - 20) * 10 ** 6
        recorder.bytes(done, 10 ** 9)
    record = on_disk(recorder)
    assert record['rate'] == pytest.approx(10 ** 6, rel=0.01)
    # 790 MB left at 1 MB/s
    assert record['eta'] == pytest.approx(790, rel=0.02)


def test_the_rate_is_known_from_the_second_byte_count_of_a_step(tmp_path):
    recorder, clock = make(tmp_path, min_interval=0)
    recorder.plan(['create_image', 'upload_data'])
    recorder.step(0, 'create')
    clock.now += 1
    recorder.step(1, 'copy')  # no bytes yet
    clock.now += 0.5
    recorder.bytes(0, 10 ** 9)
    assert on_disk(recorder)['rate'] is None
    clock.now += 2
    recorder.bytes(4 * 10 ** 7, 10 ** 9)
    assert on_disk(recorder)['rate'] == pytest.approx(2 * 10 ** 7)


def test_a_failed_operation_keeps_its_error(tmp_path):
    directory = str(tmp_path / 'p')
    with pytest.raises(VolsnapError):
        with progress.recording(directory, 'clone', 'volume_clone', {'dest': '/x'}) as recorder:
            Executor(Actions('t', {'convert': lambda a: 'convert'}),
                     {'convert': _fail}).run([Actions('t', {'convert': lambda a: 'convert'}).step('convert')])
    assert progress.current() is not recorder
    record = on_disk(recorder)
    assert record['state'] == 'failed' and record['error'] == 'no space'


def _fail(step, context):
    raise VolsnapError('no space')


def test_check_mode_leaves_nothing_and_a_run_is_seen_from_its_start(tmp_path):
    directory = tmp_path / 'p'
    with progress.recording(str(directory), 'clone', 'volume_clone', {}, enabled=False) as recorder:
        assert not recorder.active and progress.current() is recorder
    assert not directory.exists()
    with progress.recording(str(directory), 'clone', 'volume_clone', {}) as recorder:
        started = on_disk(recorder)
        assert started['state'] == 'running' and started['step_description'] == 'starting' and started['steps'] == 0
        Executor(Actions('t', {}), {}).run([])
    record = on_disk(recorder)
    assert record['state'] == 'done' and record['percent'] == 100.0 and record['steps'] == 0


@pytest.mark.parametrize('kind', ['symlink', 'foreign', 'open', 'file'])
def test_a_hostile_directory_is_refused_with_one_warning_and_the_operation_goes_on(tmp_path, kind, monkeypatch):
    target = tmp_path / 'elsewhere'
    target.mkdir(mode=0o700)
    directory = tmp_path / 'p'
    if kind == 'symlink':
        directory.symlink_to(target)
    elif kind == 'file':
        directory.write_text('x')
    else:
        directory.mkdir(mode=0o700)
        if kind == 'open':
            os.chmod(str(directory), 0o777)
        else:
            monkeypatch.setattr(progress.os, 'geteuid', lambda: os.getuid() + 1)
    warnings = []
    recorder = progress.Recorder(str(directory), 'clone', 'volume_clone', {}, warn=warnings.append, use_timer=False)
    recorder.plan(['convert', 'publish'])
    recorder.step(0, 'convert')
    recorder.fraction(0.5)
    recorder.step(1, 'publish')
    recorder.finish()
    assert len(warnings) == 1 and 'goes on without it' in warnings[0]
    assert os.listdir(str(target)) == []
    with pytest.raises(progress.ProgressDirError):
        progress.read_records(str(directory))


def test_a_full_disk_warns_once(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, 'No space left on device', 'x')
    monkeypatch.setattr(progress, 'write_atomic', full)
    warnings = []
    recorder, clock = make(tmp_path, warn=warnings.append, min_interval=0)
    recorder.plan(['upload_data'])
    recorder.step(0, 'copy')
    recorder.bytes(5, 10)
    recorder.finish()
    assert len(warnings) == 1 and 'No space left' in warnings[0]


def test_a_record_never_replaces_a_planted_link(tmp_path):
    recorder, clock = make(tmp_path, min_interval=0)
    recorder.plan(['upload_data'])
    recorder.step(0, 'copy')
    victim = tmp_path / 'victim'
    victim.write_text('keep')
    os.unlink(recorder.path)
    os.symlink(str(victim), recorder.path)
    recorder.bytes(1, 2)
    assert victim.read_text() == 'keep'
    assert not os.path.islink(recorder.path) and on_disk(recorder)['bytes_done'] == 1


def _record(directory, **fields):
    os.makedirs(directory, 0o700, exist_ok=True)
    base = {'version': 1, 'id': 'a' * 32, 'kind': 'clone', 'module': 'volume_clone', 'targets': {},
            'host': progress.socket.gethostname(), 'pid': os.getpid(), 'pid_start': progress.process_start(os.getpid()),
            'started': time.time() - 5, 'updated': time.time(), 'step': 1, 'steps': 2, 'step_description': 'x',
            'bytes_done': None, 'bytes_total': None, 'percent': 10.0, 'rate': None, 'eta': None, 'state': 'running',
            'error': None}
    base.update(fields)
    with open(os.path.join(directory, base['id'] + '.json'), 'w') as handle:
        json.dump(base, handle)
    return base


def test_a_running_record_whose_process_is_gone_is_interrupted(tmp_path):
    directory = str(tmp_path / 'p')
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    _record(directory, id='1' * 32, pid=dead.pid, pid_start=None)
    _record(directory, id='2' * 32)  # this very process: running
    _record(directory, id='3' * 32, pid_start='1')  # this pid, but another process started under it before
    states = {r['id'][0]: r['state'] for r in progress.read_records(directory)}
    assert states == {'1': 'interrupted', '2': 'running', '3': 'interrupted'}


def test_finished_records_are_kept_a_while_then_removed(tmp_path):
    directory = str(tmp_path / 'p')
    _record(directory, id='1' * 32, state='done', percent=100.0, updated=time.time() - 60)
    _record(directory, id='2' * 32, state='done', percent=100.0, updated=time.time() - 600)
    assert [r['id'][0] for r in progress.read_records(directory, remove_expired=False)] == ['1']
    assert len(os.listdir(directory)) == 2
    assert [r['id'][0] for r in progress.read_records(directory)] == ['1']
    assert os.listdir(directory) == ['1' * 32 + '.json']


def test_readers_skip_what_this_collection_did_not_write(tmp_path):
    directory = str(tmp_path / 'p')
    good = _record(directory, id='1' * 32)
    _record(directory, id='2' * 32, state='exploded')
    _record(directory, id='3' * 32, pid='1')
    _record(directory, id='4' * 32, targets={'volume_id': 7})
    with open(os.path.join(directory, '5' * 32 + '.json'), 'w') as handle:
        handle.write('{not json')
    with open(os.path.join(directory, '6' * 32 + '.json'), 'w') as handle:
        handle.write(' ' * (progress.MAX_RECORD_BYTES + 10))
    outside = tmp_path / 'outside.json'
    outside.write_text(open(os.path.join(directory, good['id'] + '.json')).read().replace('1' * 32, '7' * 32))
    os.symlink(str(outside), os.path.join(directory, '7' * 32 + '.json'))
    os.mkfifo(os.path.join(directory, '8' * 32 + '.json'))
    assert [r['id'] for r in progress.read_records(directory)] == [good['id']]


def test_operation_info_filters(tmp_path):
    directory = str(tmp_path / 'p')
    _record(directory, id='1' * 32, targets={'volume_path': '/share/volume-a', 'volume_id': 'a', 'snapshot_id': 's'})
    _record(directory, id='2' * 32, targets={'volume_id': 'b', 'image_id': 'i'})
    _record(directory, id='3' * 32, targets={'volume_id': 'a', 'image_id': 'j'})

    def ids(**filters):
        return [op['id'][0] for op in list_operations(directory, filters)]

    assert ids() == ['1', '2', '3']
    assert ids(volume_id='a') == ['1', '3']
    assert ids(volume_path='/share/../share/volume-a') == ['1']
    assert ids(snapshot_id='s', volume_id='a') == ['1']
    assert ids(image_id='i') == ['2']
    assert ids(image_id='nope') == []
    op = list_operations(directory, {'image_id': 'i'})[0]
    assert op['source'] == 'progress' and op['started'].endswith('Z') and op['elapsed'] >= 4
    assert list_operations(str(tmp_path / 'missing'), {}) == []


def test_volume_targets_fill_both_forms():
    targets = progress.volume_targets(None, '/share', 'abc', snapshot_id='s')
    assert targets == {'volume_path': '/share/volume-abc', 'volume_id': 'abc', 'share': '/share', 'snapshot_id': 's'}
    assert progress.volume_targets('/share/volume-abc', None, None)['volume_id'] == 'abc'


# -- qemu-img ---------------------------------------------------------------------------------------

def test_qemu_img_progress_is_parsed_across_pieces():
    parser = qemu_img.ProgressParser()
    assert parser.feed('    (0.00/100%)\r') == 0.0
    assert parser.feed('    (12.') is None
    assert parser.feed('50/100%)\r    (25.00/100%)\r    (3') == 0.25
    assert parser.feed('7.5/100%)\r') == 0.375
    assert parser.feed('(100.00/100%)\r\n') == 1.0
    assert qemu_img.strip_progress('    (0.00/100%)\r    (100.00/100%)\r\nImage committed.\n') == 'Image committed.'


def test_long_qemu_img_commands_run_with_p_only_while_recording():
    expected = ['commit', '-p', '-f', 'qcow2', '-t', 'writeback', '-d', '/s/f']
    assert qemu_img.progress_args(qemu_img.commit_args('/s/f')) == expected
    assert qemu_img.progress_args(['convert', '-U', '-f', 'raw']) == ['convert', '-p', '-U', '-f', 'raw']
    assert qemu_img.wants_progress(qemu_img.rebase_args('/s/f', None))
    assert not qemu_img.wants_progress(qemu_img.rebase_unsafe_args('/s/f', 'b', 'raw'))
    assert not qemu_img.wants_progress(qemu_img.info_args('/s/f', 'raw'))
    calls = []

    def runner(command):
        calls.append(('plain', command))
        return 0, '', ''

    def progress_runner(command, on_fraction):
        calls.append(('progress', command))
        on_fraction(0.5)
        return 0, '', ''

    qemu = qemu_img.QemuImg(runner, 'qemu-img', progress_runner=progress_runner)
    qemu.run(qemu_img.commit_args('/s/f'))
    assert calls[-1] == ('plain', ['qemu-img'] + qemu_img.commit_args('/s/f'))
    recorder = progress.Recorder('/nonexistent/never-written', 'x', 'y', {}, use_timer=False)
    progress._CURRENT.append(recorder)
    try:
        qemu.run(qemu_img.commit_args('/s/f'))
    finally:
        progress._CURRENT.remove(recorder)
    assert calls[-1][0] == 'progress' and '-p' in calls[-1][1] and '-q' not in calls[-1][1]


SCRIPT = ("import sys, time\n"
          "for p in (0, 33.3, 66.6, 100):\n"
          "    sys.stdout.write('    (%.2f/100%%)\\r' % p); sys.stdout.flush(); time.sleep(0.02)\n"
          "sys.stdout.write('Image committed.\\n')\n"
          "sys.stderr.write('qemu-img: a warning\\n'); sys.exit(3)\n")


def test_the_progress_runner_reads_progress_as_it_comes_through_run_command_and_keeps_errors():
    """A stand-in for AnsibleModule.run_command with its before_communicate_callback and its own pipe loop."""
    def run_command(args, before_communicate_callback=None):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        before_communicate_callback(proc)
        out, err = proc.communicate()  # what is left after the callback: nothing
        return proc.returncode, out.decode(), err.decode()

    runner = qemu_img.progress_runner_of(run_command)
    assert runner is not None and qemu_img.progress_runner_of(lambda argv: (0, '', '')) is None
    seen = []
    rc, out, err = runner([sys.executable, '-c', SCRIPT], seen.append)
    assert rc == 3 and out == 'Image committed.' and err == 'qemu-img: a warning\n'
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 2
    qemu = qemu_img.QemuImg(lambda c: (0, '', ''), sys.executable,
                            progress_runner=lambda c, f: runner([sys.executable, '-c', SCRIPT], f))
    recorder = progress.Recorder('/nonexistent/never-written', 'x', 'y', {}, use_timer=False)
    progress._CURRENT.append(recorder)
    try:
        with pytest.raises(VolsnapError, match='a warning'):
            qemu.run(qemu_img.commit_args('/s/f'))
    finally:
        progress._CURRENT.remove(recorder)


def test_qemu_img_progress_in_a_comma_locale():
    assert qemu_img.ProgressParser().feed('    (12,50/100%)\r') == 0.125
