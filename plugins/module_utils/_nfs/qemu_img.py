# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img, always with argv lists and an explicit ``-f`` (never format probing).

The runner is injected: in a module it is ``AnsibleModule.run_command``; tests pass a runner of their own.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
from typing import Callable, Dict, List, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import (
    ChainReport,
    normalize_format,
    qemu_format,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError

Runner = Callable[[List[str]], Tuple[int, str, str]]


class QemuImg:
    def __init__(self, runner: Runner, binary: str = 'qemu-img') -> None:
        self.runner = runner
        self.binary = binary

    def run(self, args: List[str]) -> str:
        argv = [self.binary] + args
        rc, out, err = self.runner(argv)
        if rc != 0:
            raise VolsnapError('%s failed (rc=%d): %s' % (' '.join(argv), rc, (err or out).strip()),
                               command=argv, rc=rc, stderr=err)
        return out

    def info(self, path: str, fmt: str) -> Dict[str, object]:
        """``qemu-img info`` of one layer with its format given (backing files are not opened)."""
        out = self.run(['info', '-U', '-f', qemu_format(fmt), '--output=json', path])
        try:
            return json.loads(out)
        except ValueError:
            raise VolsnapError('qemu-img info printed no JSON for %s: %s' % (path, out[:200]))


# qemu's image locking (block/file-posix.c): a process holding a permission keeps a shared
# lock on byte 100 + bit; BLK_PERM_WRITE is bit 1.
_QEMU_LOCK_PERM_BASE = 100
_QEMU_PERM_WRITE_BIT = 1


def opened_for_write_by_qemu(path: str) -> bool:
    """True when a qemu process (a running VM, qemu-img, qemu-nbd) has ``path`` open for writing.

    Asks the kernel whether an exclusive lock on qemu's write-permission byte would conflict
    (F_GETLK), which takes no lock and works on local files and NFS alike.
    """
    offset = _QEMU_LOCK_PERM_BASE + _QEMU_PERM_WRITE_BIT
    cmd = getattr(fcntl, 'F_OFD_GETLK', fcntl.F_GETLK)
    fd = os.open(path, os.O_RDONLY)
    try:
        request = struct.pack('hhqqi4x', fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
        answer = fcntl.fcntl(fd, cmd, request)
    finally:
        os.close(fd)
    return struct.unpack('hhqqi4x', answer)[0] != fcntl.F_UNLCK


def cross_check(report: ChainReport, qemu: QemuImg) -> List[Dict[str, object]]:
    """Compare every layer the native engine read with ``qemu-img info -f <detected>``.

    Layers with error findings are not handed to qemu (it could open an external data file).
    Each disagreement becomes an ``engine_mismatch`` error on the report. Returns qemu's
    answers, one per layer (None for layers not checked).
    """
    answers: List[Optional[Dict[str, object]]] = []
    for layer in report.layers:
        image = layer.image
        if any(f.severity == 'error' and f.filename == image.filename for f in report.problems):
            answers.append(None)
            continue
        try:
            answer = qemu.info(image.path, image.format)
        except VolsnapError as exc:
            report.problem('engine_error', str(exc), filename=image.filename)
            answers.append(None)
            continue
        answers.append(answer)
        expected = {
            'format': qemu_format(image.format),
            'virtual-size': image.virtual_size,
            'backing-filename': image.backing_file,
        }
        if image.format == 'qcow2':
            expected['cluster-size'] = image.cluster_size
            expected['backing-filename-format'] = image.backing_format
        for key, value in expected.items():
            got = answer.get(key)
            if key == 'backing-filename-format':
                got = normalize_format(got) if got else None
                value = normalize_format(value) if value else None
            if got != value:
                report.problem('engine_mismatch', 'qemu-img reports %s=%r for %s, the native engine read %r'
                               % (key, got, os.path.basename(image.path), value), filename=image.filename)
    return answers
