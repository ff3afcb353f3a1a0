# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _qemu_img with a fake runner: qemu-img is never executed."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import inspect_chain
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs import qemu_img as Q
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg, cross_check
from ansible_collections.volsnap.openstack.tests.unit.plugins.module_utils import image_builders as B


class FakeRunner:
    """Answers ``qemu-img info`` from canned JSON keyed by the path (last argv element)."""

    def __init__(self, answers=None, rc=0, stderr='', raw=None):
        self.answers = answers or {}
        self.rc = rc
        self.stderr = stderr
        self.raw = raw
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        if self.rc:
            return self.rc, '', self.stderr
        if self.raw is not None:
            return 0, self.raw, ''
        return 0, json.dumps(self.answers[argv[-1]]), ''


def qcow2_answer(path, size=1 << 30, backing=None, backing_fmt=None, cluster=65536):
    answer = {'filename': path, 'format': 'qcow2', 'virtual-size': size, 'actual-size': 4096,
              'cluster-size': cluster, 'dirty-flag': False}
    if backing:
        answer['backing-filename'] = backing
        answer['full-backing-filename'] = os.path.join(os.path.dirname(path), backing)
    if backing_fmt:
        answer['backing-filename-format'] = backing_fmt
    return answer


@pytest.fixture
def chain(tmp_path):
    B.write(tmp_path / 'base', b'\x00' * 8192)
    B.write_qcow2(tmp_path, 'mid', size=8192, backing='base', backing_fmt='raw')
    B.write_qcow2(tmp_path, 'top', size=8192, backing='mid', backing_fmt='qcow2')
    return tmp_path


def answers_for(directory):
    return {
        str(directory / 'top'): qcow2_answer(str(directory / 'top'), 8192, 'mid', 'qcow2'),
        str(directory / 'mid'): qcow2_answer(str(directory / 'mid'), 8192, 'base', 'raw'),
        str(directory / 'base'): {'filename': str(directory / 'base'), 'format': 'raw', 'virtual-size': 8192},
    }


def test_agreement(chain):
    report = inspect_chain(str(chain / 'top'))
    runner = FakeRunner(answers_for(chain))
    answers = cross_check(report, QemuImg(runner, binary='/usr/bin/qemu-img'))
    assert report.problems == []
    assert answers == [answers_for(chain)[str(chain / name)] for name in ('top', 'mid', 'base')]
    assert runner.calls == [
        ['/usr/bin/qemu-img', 'info', '-U', '-f', 'qcow2', '--output=json', str(chain / 'top')],
        ['/usr/bin/qemu-img', 'info', '-U', '-f', 'qcow2', '--output=json', str(chain / 'mid')],
        ['/usr/bin/qemu-img', 'info', '-U', '-f', 'raw', '--output=json', str(chain / 'base')],
    ]
    for argv in runner.calls:
        assert argv[argv.index('-f') + 1] in ('qcow2', 'raw')


def test_virtual_size_mismatch(chain):
    report = inspect_chain(str(chain / 'top'))
    canned = answers_for(chain)
    canned[str(chain / 'mid')]['virtual-size'] = 16384
    cross_check(report, QemuImg(FakeRunner(canned)))
    assert [p.code for p in report.problems] == ['engine_mismatch']
    assert report.problems[0].filename == 'mid'
    assert 'virtual-size' in report.problems[0].message
    assert report.safe is False


@pytest.mark.parametrize('key, value', [
    ('format', 'raw'),
    ('cluster-size', 4096),
    ('backing-filename', 'other'),
    ('backing-filename-format', 'qcow2'),
])
def test_other_mismatches(chain, key, value):
    report = inspect_chain(str(chain / 'top'))
    canned = answers_for(chain)
    canned[str(chain / 'mid')][key] = value
    cross_check(report, QemuImg(FakeRunner(canned)))
    assert [p.code for p in report.problems] == ['engine_mismatch']
    assert key in report.problems[0].message


def test_missing_backing_filename_in_answer(chain):
    report = inspect_chain(str(chain / 'top'))
    canned = answers_for(chain)
    del canned[str(chain / 'top')]['backing-filename']
    cross_check(report, QemuImg(FakeRunner(canned)))
    assert [p.code for p in report.problems] == ['engine_mismatch']
    assert report.problems[0].filename == 'top'


def test_backing_format_aliases_agree(tmp_path):
    B.write(tmp_path / 'base.vhd', B.vhd_footer(1 << 20, 3) + b'\x00' * 512)
    B.write_qcow2(tmp_path, 'top', size=1 << 20, backing='base.vhd', backing_fmt='vpc')
    report = inspect_chain(str(tmp_path / 'top'))
    canned = {
        str(tmp_path / 'top'): qcow2_answer(str(tmp_path / 'top'), 1 << 20, 'base.vhd', 'vpc'),
        str(tmp_path / 'base.vhd'): {'format': 'vpc', 'virtual-size': 1 << 20},
    }
    runner = FakeRunner(canned)
    cross_check(report, QemuImg(runner))
    assert report.problems == []
    assert runner.calls[1][runner.calls[1].index('-f') + 1] == 'vpc'


def test_runner_error(chain):
    report = inspect_chain(str(chain / 'top'))
    runner = FakeRunner(rc=1, stderr='qemu-img: Could not open: Permission denied\n')
    answers = cross_check(report, QemuImg(runner))
    assert answers == [None, None, None]
    assert [p.code for p in report.problems] == ['engine_error'] * 3
    assert [p.filename for p in report.problems] == ['top', 'mid', 'base']
    assert 'Permission denied' in report.problems[0].message
    assert 'rc=1' in report.problems[0].message
    assert len(runner.calls) == 3
    assert report.safe is False


def test_runner_prints_no_json(chain):
    report = inspect_chain(str(chain / 'top'))
    cross_check(report, QemuImg(FakeRunner(raw='image: top\nfile format: qcow2\n')))
    assert [p.code for p in report.problems] == ['engine_error'] * 3
    assert 'no JSON' in report.problems[0].message


def test_layers_with_errors_are_not_passed_to_qemu(tmp_path):
    B.write_qcow2(tmp_path, 'base', size=8192)
    B.write_qcow2(tmp_path, 'mid', size=8192, backing='base', backing_fmt='qcow2', data_file='/etc/shadow',
                  incompatible=1 << 2)
    B.write_qcow2(tmp_path, 'top', size=8192, backing='mid', backing_fmt='qcow2', incompatible=1)  # dirty: warning
    report = inspect_chain(str(tmp_path / 'top'))
    assert [p.code for p in report.problems] == ['dirty', 'external_data_file']
    canned = {
        str(tmp_path / 'top'): qcow2_answer(str(tmp_path / 'top'), 8192, 'mid', 'qcow2'),
        str(tmp_path / 'base'): qcow2_answer(str(tmp_path / 'base'), 8192),
    }
    runner = FakeRunner(canned)
    answers = cross_check(report, QemuImg(runner))
    assert [argv[-1] for argv in runner.calls] == [str(tmp_path / 'top'), str(tmp_path / 'base')]
    assert str(tmp_path / 'mid') not in [arg for argv in runner.calls for arg in argv]
    assert all('-f' in argv for argv in runner.calls)
    assert answers[1] is None
    assert answers[0] == canned[str(tmp_path / 'top')]
    assert [p.code for p in report.problems] == ['dirty', 'external_data_file']


def test_layer_with_chain_error_not_passed(tmp_path):
    # A format mismatch (raw volume holding a qcow2 header) must never reach qemu with -f qcow2.
    B.write_qcow2(tmp_path, 'vol', size=8192, backing='/etc/passwd', backing_fmt='raw')
    report = inspect_chain(str(tmp_path / 'vol'), expected_format='raw')
    assert 'format_mismatch' in [p.code for p in report.problems]
    runner = FakeRunner({})
    assert cross_check(report, QemuImg(runner)) == [None]
    assert runner.calls == []


def test_iso_checked_as_raw(tmp_path):
    data = B.iso()
    B.write(tmp_path / 'cd.iso', data)
    report = inspect_chain(str(tmp_path / 'cd.iso'))
    runner = FakeRunner({str(tmp_path / 'cd.iso'): {'format': 'raw', 'virtual-size': len(data)}})
    cross_check(report, QemuImg(runner))
    assert report.problems == []
    assert runner.calls[0][3:5] == ['-f', 'raw']


def test_qemu_img_run_error_details():
    runner = FakeRunner(rc=2, stderr='boom\n')
    with pytest.raises(VolsnapError) as exc:
        QemuImg(runner).run(['check', '-f', 'qcow2', '/x'])
    assert exc.value.details == {'command': ['qemu-img', 'check', '-f', 'qcow2', '/x'], 'rc': 2, 'stderr': 'boom\n'}
    assert 'boom' in exc.value.msg
    assert runner.calls == [['qemu-img', 'check', '-f', 'qcow2', '/x']]


def test_qemu_img_info_maps_format():
    runner = FakeRunner({'/x': {'format': 'vpc'}})
    assert QemuImg(runner).info('/x', 'vhd') == {'format': 'vpc'}
    assert runner.calls == [['qemu-img', 'info', '-U', '-f', 'vpc', '--output=json', '/x']]


# ---------------------------------------------------------------------------------------------
# The command lines: every one gives each image its format (never probing) and takes argv lists
# ---------------------------------------------------------------------------------------------

def test_convert_args():
    assert Q.argv('/usr/bin/qemu-img', Q.convert_args('/s/volume-x', 'vhd', 'qcow2', '/s/.new.volsnap-tmp')) == [
        '/usr/bin/qemu-img', 'convert', '-U', '-f', 'vpc', '-O', 'qcow2', '-T', 'writeback', '-t', 'writeback',
        '/s/volume-x', '/s/.new.volsnap-tmp']


def test_create_overlay_args():
    assert Q.create_overlay_args('volume-x', 'raw', '/proc/self/fd/7', 1 << 30) == [
        'create', '-q', '-f', 'qcow2', '-u', '-b', 'volume-x', '-F', 'raw', '/proc/self/fd/7', str(1 << 30)]
    assert Q.create_overlay_args('volume-x.vhd', 'vhd', '/o', 512)[7:9] == ['-F', 'vpc']


def test_commit_args():
    assert Q.commit_args('/s/volume-x.snap') == ['commit', '-q', '-f', 'qcow2', '-t', 'writeback', '-d',
                                                 '/s/volume-x.snap']


def test_rebase_args():
    assert Q.rebase_unsafe_args('/s/top', 'base', 'raw') == ['rebase', '-q', '-u', '-f', 'qcow2', '-b', 'base',
                                                             '-F', 'raw', '/s/top']
    assert Q.rebase_args('/s/top', 'base', 'qcow2') == ['rebase', '-q', '-f', 'qcow2', '-t', 'writeback', '-b',
                                                        'base', '-F', 'qcow2', '/s/top']
    assert Q.rebase_args('/s/top', None) == ['rebase', '-q', '-f', 'qcow2', '-t', 'writeback', '-b', '', '/s/top']
    with pytest.raises(VolsnapError):
        Q.rebase_args('/s/top', 'base')


def test_run_puts_the_binary_in_front():
    runner = FakeRunner(raw='ok')
    assert QemuImg(runner, binary='/opt/qemu-img').run(Q.commit_args('/s/top')) == 'ok'
    assert runner.calls == [['/opt/qemu-img'] + Q.commit_args('/s/top')]
