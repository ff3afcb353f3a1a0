# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One call shared by the threads that ask for it at about the same time, each answered by a call that STARTED
after it asked.

Several threads of one process (the items of a ``volume_snapshot`` task with ``volumes``) each need "a listing of
the share taken after I took my volume's lock" or "an fsync of the share's directory made after my rename". A call
that started before a thread asked may miss what that thread did just before asking, so it never answers that
thread; a call that starts after it asked is exactly as good as the thread's own call would have been (the thread
made it a little later, as any scheduling delay could). :class:`FreshCall` runs at most one call at a time; every
thread that asked while a call ran waits for the next one, which one of them starts, and all of them share its
outcome (its value, or its exception raised in each of them). The calls are ordered: when one finishes, every call
that started before it has finished too.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Optional, Tuple, TypeVar, cast

T = TypeVar('T')


class FreshCall(Generic[T]):
    """``fresh()`` returns the outcome of a call of ``function`` that started after ``fresh()`` was called."""

    def __init__(self, function: Callable[[], T]) -> None:
        self._function = function
        self._cond = threading.Condition()
        self._started = 0  # calls started (numbered from 1)
        self._finished = 0  # number of the last call finished
        self._running = False
        self._outcome: Optional[Tuple[Optional[T], Optional[BaseException]]] = None
        self.calls = 0  # calls made (for tests and benchmarks)

    def fresh(self) -> T:
        with self._cond:
            # a call numbered `wanted` or later starts after this point (one running now started before it)
            wanted = self._started + 1
            while self._finished < wanted:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                number = self._started
                self._cond.release()
                try:
                    outcome: Tuple[Optional[T], Optional[BaseException]] = (self._function(), None)
                except BaseException as exc:  # pylint: disable=broad-exception-caught
                    outcome = (None, exc)  # raised in every thread that waited for this call
                finally:
                    self._cond.acquire()
                self.calls += 1
                self._running = False
                self._finished = number
                self._outcome = outcome
                self._cond.notify_all()
            if self._outcome is None:
                raise RuntimeError('internal error: a fresh call finished without an outcome')
            value, error = self._outcome
        if error is not None:
            raise error
        return cast(T, value)  # None only with an error
