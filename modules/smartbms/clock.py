# The device clock: monotonic seconds since boot, wrap-safe over months of uptime.
# Everything time-based in the firmware reads this clock and sleeps through it, so the
# host simulator can run the device faster (set_speed) and timeouts still behave as on
# the device, only sooner.
import time

try:
    import asyncio
except ImportError:  # pragma: no cover
    asyncio = None

try:
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
except AttributeError:  # CPython (host tools and tests)
    def _ticks_ms():
        return int(time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b

_speed = 1
_last = _ticks_ms()
# Seconds and leftover milliseconds are kept apart so that neither outgrows a small int
# (30 bits on the ESP32) and reading the clock never allocates.
_secs = 0
_rem_ms = 0


def set_speed(speed):
    """Run the device clock `speed` times faster than real time (simulator only)."""
    global _speed
    _tick()
    _speed = max(1, int(speed))


def speed():
    return _speed


def _tick():
    global _last, _secs, _rem_ms
    t = _ticks_ms()
    d = _ticks_diff(t, _last)
    _last = t
    if d > 0:
        _rem_ms += d * _speed
        if _rem_ms >= 1000:
            _secs += _rem_ms // 1000
            _rem_ms %= 1000


def now():
    """Whole seconds of device time since boot."""
    _tick()
    return _secs


def now_ms():
    """Milliseconds of device time since boot (may grow past a small int after ~12 days)."""
    _tick()
    return _secs * 1000 + _rem_ms


def ticks_real_ms():
    """A real-time millisecond tick (wraps: compare with real_ms_since)."""
    return _ticks_ms()


def real_ms_since(t0):
    """Real milliseconds since `t0` from ticks_real_ms()."""
    return _ticks_diff(_ticks_ms(), t0)


def real_ms(device_ms):
    """Real milliseconds that `device_ms` of device time take at the current speed."""
    return device_ms // _speed


if hasattr(asyncio, "sleep_ms"):
    # Real (not device) milliseconds: radio, network and UI timing, which the simulator does
    # not speed up. On MicroPython this is asyncio.sleep_ms itself: no coroutine per call.
    sleep_real_ms = asyncio.sleep_ms
else:  # CPython

    def sleep_real_ms(ms):
        return asyncio.sleep(ms / 1000)


async def sleep_ms(ms):
    """Sleep `ms` of device time."""
    await asyncio.sleep_ms(ms // _speed) if hasattr(asyncio, "sleep_ms") else await asyncio.sleep(ms / 1000 / _speed)


async def sleep(s):
    await sleep_ms(int(s * 1000))
