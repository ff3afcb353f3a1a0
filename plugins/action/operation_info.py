# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""operation_info on the controller side: with ``wait``, print the progress while waiting.

Without ``wait`` the module runs once, as any module. With ``wait`` the module is run in rounds of at most
``report_interval`` seconds (it returns early when nothing matching runs); after each round one line per operation
still running (then once per operation that ended) is printed on the controller, so a play that started long work
with ``async`` and ``poll: 0`` shows its progress. Before any matching operation is recorded (a module still
starting), rounds go on for at most ``report_interval`` seconds (30 at least). Operations that had already ended at
the first reading are left out of the waiting and the printing (a record is kept a while after its end).
"""

from __future__ import annotations

import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

MODULE = 'volsnap.openstack.operation_info'
MIN_START_GRACE = 30


def _size(value):
    value = float(value)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if value < 1024 or unit == 'TiB':
            return '%.1f %s' % (value, unit) if unit != 'B' else '%d B' % value
        value /= 1024
    return '%d B' % value  # pragma: no cover


def progress_line(op):
    """One line saying where an operation is (also used by the tests)."""
    what = op.get('kind') or 'operation'
    targets = op.get('targets') or {}
    target = targets.get('volume') or targets.get('volume_id') or targets.get('image_id') or targets.get('dest') or ''
    text = '%s %s' % (what, target)
    if op.get('steps'):
        text += ': step %s of %s' % (op.get('step'), op.get('steps'))
        if op.get('step_description'):
            text += ' (%s)' % op['step_description']
    if op.get('bytes_total'):
        text += ', %s of %s' % (_size(op.get('bytes_done') or 0), _size(op['bytes_total']))
    if op.get('percent') is not None:
        text += ', %.1f %%' % op['percent']
    if op.get('rate'):
        text += ', %s/s' % _size(op['rate'])
    if op.get('eta') is not None and op.get('state') == 'running':
        text += ', about %d s left' % op['eta']
    text += ' [%s]' % op.get('state')
    if op.get('error'):
        text += ': %s' % op['error']
    return text


class ActionModule(ActionBase):

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        if not args.get('wait') or self._task.async_val:
            result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
            return result
        timeout = int(args.get('timeout', 30))
        interval = max(1, int(args.get('report_interval', 30)))
        start = time.monotonic()
        deadline = start + timeout
        ended_before = None
        printed_end = set()
        answer = {}
        while True:
            left = deadline - time.monotonic()
            round_args = dict(args, wait=True, timeout=max(0, int(min(interval, left))))
            answer = self._execute_module(module_name=MODULE, module_args=round_args, task_vars=task_vars)
            if answer.get('failed'):
                break
            operations = answer.get('operations') or []
            if ended_before is None:
                ended_before = set(op.get('id') for op in operations if op.get('state') != 'running')
            current = [op for op in operations if op.get('id') not in ended_before]
            running = [op for op in current if op.get('state') == 'running']
            for op in current:
                key = op.get('id') or op.get('journal')
                if op.get('state') == 'running':
                    display.display('%s: %s' % (self._task.get_name(), progress_line(op)))
                elif key not in printed_end:
                    printed_end.add(key)
                    display.display('%s: %s' % (self._task.get_name(), progress_line(op)))
            waited = time.monotonic() - start
            if time.monotonic() >= deadline:
                break
            if not running:
                if current or waited >= max(interval, MIN_START_GRACE):
                    break
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        # the module's last answer (every operation it found, also those that had ended before the wait)
        result.update(answer)
        return result
