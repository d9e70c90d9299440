# Fake aioble.core: the shared controller object, GattError, logging, and the asyncio
# helpers that let the fake run on both MicroPython and CPython.
import asyncio

import bluetooth

log_level = 1


def log_error(*args):
    if log_level > 0:
        print("[aioble] E:", *args)


def log_warn(*args):
    if log_level > 1:
        print("[aioble] W:", *args)


def log_info(*args):
    if log_level > 2:
        print("[aioble] I:", *args)


class GattError(Exception):
    def __init__(self, status):
        super().__init__(status)
        self._status = status


# The fake's "IRQs" run on the event loop's own thread, so an Event-backed flag has the
# same semantics as asyncio.ThreadSafeFlag. It is used on the unix port too: there,
# ThreadSafeFlag waiters plus a few half-read sockets crash the interpreter (SIGSEGV) and
# delay socket wake-ups until the next timer, which made every HTTP request ~50 ms.
class ThreadSafeFlag:
    def __init__(self):
        self._event = asyncio.Event()

    def set(self):
        self._event.set()

    def clear(self):
        self._event.clear()

    async def wait(self):
        await self._event.wait()
        self._event.clear()


async def sleep_ms(ms):
    if hasattr(asyncio, "sleep_ms"):
        await asyncio.sleep_ms(ms)
    else:
        await asyncio.sleep(ms / 1000)


def current_task():
    return asyncio.current_task()


class _Controller(bluetooth.BLE):
    """The radio as aioble sees it. Only what the fake needs beyond the config: the
    low-level connect attempt, which (as on NimBLE) outlives an aioble connect timeout
    until gap_connect(None) cancels it or its own 2 s window ends."""

    def __init__(self):
        self._pending_addr = None
        self._pending_until = 0

    def _pending(self, now_ms):
        if self._pending_addr is not None and now_ms >= self._pending_until:
            self._pending_addr = None
        return self._pending_addr

    def gap_connect(self, addr_type, addr=None, scan_duration_ms=2000):
        from . import sim

        now = sim.ticks_ms()
        if addr_type is None:  # cancel
            self._pending_addr = None
            return
        if self._pending(now) is not None:
            raise OSError(22)  # EINVAL: a connect attempt is still in progress
        self._pending_addr = bytes(addr)
        self._pending_until = now + scan_duration_ms
        sim._start_connect(addr_type, bytes(addr))

    def _connect_done(self):
        self._pending_addr = None


ble = _Controller()


def ensure_active():
    if not ble.active():
        ble.active(True)


def config(*args, **kwargs):
    ensure_active()
    return ble.config(*args, **kwargs)


def stop():
    ble.active(False)
