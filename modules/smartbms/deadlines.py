# Time limits for the web server's waits without asyncio.wait_for. On MicroPython every
# wait_for makes two tasks, two coroutines and an exception (about 1 KB of heap), and a
# request waits several times (its head, each body read, the answer, the close): a third of
# what a request allocated. Here a connection's task arms a deadline before a wait and
# disarms it after; one reaper task, alive only while a deadline is armed, cancels a task
# whose deadline passed, and the wait raises asyncio.TimeoutError as wait_for would.
# Only plain stream I/O is waited on this way: a task waiting on another task would pass
# the cancel on to that one.
import asyncio

from smartbms import clock

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

TICK_MS = const(100)  # how late a deadline may be noticed


class Deadlines:
    def __init__(self, squeezed=None):
        self._at = {}  # task -> real-time tick the wait began; None once cancelled for its deadline
        self._ms = {}  # task -> the wait's limit in ms
        self._short = {}  # task -> the shorter limit that holds while squeezed() is true
        self._squeezed = squeezed
        self._reaper = None
        self.expired = 0

    async def wait(self, aw, ms, squeezed_ms=0):
        """`await aw` for at most `ms` real milliseconds (`squeezed_ms` while the owner's
        squeezed() says others wait for the room this wait takes); asyncio.TimeoutError after."""
        t = self.arm(ms, squeezed_ms)
        try:
            return await aw
        except asyncio.CancelledError:
            if self.disarm(t):  # cancelled by the reaper, not from outside
                raise asyncio.TimeoutError
            raise
        finally:
            self.disarm(t)

    def arm(self, ms, squeezed_ms=0):
        """Arm the current task's deadline in place (a hot loop's wait, without wait()'s
        coroutine): `t = arm(ms)`, await, and disarm(t) in a finally; a CancelledError for
        which disarm(t) is true is the timeout. Returns the task."""
        t = asyncio.current_task()
        self._at[t] = clock.ticks_real_ms()
        self._ms[t] = ms
        if squeezed_ms:
            self._short[t] = squeezed_ms
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap())
        return t

    def disarm(self, t):
        """End the wait of task `t`; True when the reaper cancelled it for its deadline."""
        late = self._at.pop(t, 0) is None
        self._ms.pop(t, None)
        self._short.pop(t, None)
        if late and hasattr(t, "uncancel"):  # CPython: the task is not being cancelled after all
            t.uncancel()
        return late

    def armed(self):
        return len(self._at)

    async def _reap(self):
        try:
            while self._at:
                await clock.sleep_real_ms(TICK_MS)
                late = True
                squeezed = self._short and self._squeezed is not None and self._squeezed()
                while late is not None:
                    late = None
                    for t in self._at:  # no allocation: by key, not items()
                        at = self._at[t]
                        ms = self._ms[t]
                        if squeezed and t in self._short:
                            ms = min(ms, self._short[t])
                        if at is not None and clock.real_ms_since(at) >= ms:
                            late = t
                            break
                    if late is not None:
                        self._at[late] = None
                        self.expired += 1
                        late.cancel()
        finally:
            self._reaper = None
