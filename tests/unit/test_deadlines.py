# Time limits for the web server's waits (smartbms.deadlines): a wait returns its value in
# time, raises asyncio.TimeoutError past its limit (a shorter one while squeezed), and a
# cancel from outside stays a cancel. The same on CPython and MicroPython.
import asyncio
from smartbms import clock
from smartbms.deadlines import Deadlines
from testutil import run_async


async def _slow(ms, value="done"):
    await clock.sleep_real_ms(ms)
    return value


def _timed_out(dl, aw, ms, squeezed_ms=0):
    async def go():
        t0 = clock.ticks_real_ms()
        try:
            await dl.wait(aw, ms, squeezed_ms)
        except asyncio.TimeoutError:
            return clock.real_ms_since(t0)
        return None

    return go()


def test_a_wait_in_time_returns_its_value_and_leaves_nothing_armed():
    dl = Deadlines()

    async def main():
        v = await dl.wait(_slow(20, 7), 1000)
        await clock.sleep_real_ms(250)  # the reaper ends once nothing is armed
        return v

    assert run_async(main()) == 7
    assert dl.armed() == 0 and dl.expired == 0 and dl._reaper is None


def test_a_wait_past_its_limit_raises_timeout():
    dl = Deadlines()
    took = run_async(_timed_out(dl, _slow(5000), 300))
    assert took is not None and 300 <= took < 1500, took
    assert dl.expired == 1 and dl.armed() == 0


def test_while_squeezed_the_shorter_limit_holds():
    squeezed = [True]
    dl = Deadlines(lambda: squeezed[0])
    took = run_async(_timed_out(dl, _slow(5000), 3000, 200))
    assert took is not None and took < 1500, took
    squeezed[0] = False
    took = run_async(_timed_out(dl, _slow(600), 3000, 200))
    assert took is None  # not squeezed: the full limit, and the wait ended in time


def test_two_tasks_each_keep_their_own_deadline():
    dl = Deadlines()
    out = {}

    async def one(name, ms, limit):
        try:
            out[name] = await dl.wait(_slow(ms, name), limit)
        except asyncio.TimeoutError:
            out[name] = "timeout"

    async def main():
        await asyncio.gather(one("a", 50, 2000), one("b", 3000, 300))

    run_async(main())
    assert out == {"a": "a", "b": "timeout"}, out


def test_a_cancel_from_outside_is_not_a_timeout():
    dl = Deadlines()
    seen = []

    async def waiter():
        try:
            await dl.wait(_slow(5000), 10000)
        except asyncio.TimeoutError:
            seen.append("timeout")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        t = asyncio.create_task(waiter())
        await clock.sleep_real_ms(100)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass

    run_async(main())
    assert seen == ["cancelled"] and dl.armed() == 0
