# The web stack is loaded at the first connection and dropped after a quiet while
# (smartbms.webgate): requests are answered either way, an open connection or live stream
# keeps it, and a stack that cannot be loaded is a 503, not a crash.
import sys

import asyncio
from apputil import FakeMachine, fresh_root
from smartbms import app as app_mod
from smartbms import clock, webgate
from testutil import IS_MICROPYTHON, run_async


def _port():
    import random

    return random.randint(20000, 60000) if not IS_MICROPYTHON else 20000 + (clock.now_ms() * 7919) % 40000


async def _get(port, path="/api/auth"):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(("GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % path).encode())
    await writer.drain()
    out = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(1024), 3)
        if not chunk:
            break
        out += chunk
    writer.close()
    await writer.wait_closed()
    return int(out.split(b" ", 2)[1]), out


def _with_gate(test, make_app=None):
    fresh_root()
    a = app_mod.App(machine=FakeMachine(True), log=lambda *x: None)

    async def main():
        for attempt in range(20):
            gate = webgate.WebGate(a, "127.0.0.1", _port() + attempt, make_app)
            task = asyncio.create_task(gate.serve())
            await clock.sleep_real_ms(30)
            if not task.done():
                break
        try:
            return await test(gate)
        finally:
            task.cancel()
            await clock.sleep_real_ms(10)

    return run_async(main())


def test_loaded_on_the_first_connection_and_dropped_when_quiet():
    async def t(gate):
        assert gate.app is None and gate.loads == 0  # listening costs no web stack
        st, body = await _get(gate._port)
        assert st == 200 and b"{" in body and gate.loads == 1 and gate.app is not None
        assert "microdot" in sys.modules and "smartbms.web" in sys.modules
        assert gate.trim() is False  # used a moment ago
        gate.idle_s = 0
        assert gate.trim() is True and gate.app is None
        assert not [m for m in webgate.WEB_MODULES if m in sys.modules]
        st, _ = await _get(gate._port, "/api/status")
        assert st == 401 and gate.loads == 2  # loaded again, the guard as before
        assert "smartbms.web" in sys.modules

    _with_gate(t)


def test_an_open_connection_keeps_the_stack():
    async def t(gate):
        gate.idle_s = 0
        reader, writer = await asyncio.open_connection("127.0.0.1", gate._port)
        writer.write(b"GET /api/auth HTTP/1.0\r\n")  # the head is not finished yet
        await writer.drain()
        await clock.sleep_real_ms(50)
        assert gate.open == 1 and gate.app is not None and gate.busy()
        assert gate.trim() is False and gate.app is not None
        writer.write(b"\r\n")
        await writer.drain()
        got = await asyncio.wait_for(reader.read(200), 3)
        assert got.startswith(b"HTTP/1.0 200") or got.startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()
        for _ in range(50):
            if gate.open == 0:
                break
            await clock.sleep_real_ms(10)
        assert gate.trim() is True

    _with_gate(t)


def test_a_stack_that_cannot_load_is_a_503_and_changes_nothing():
    def no_memory():
        raise MemoryError

    async def t(gate):
        st, body = await _get(gate._port)
        assert st == 503 and b"low on memory" in body and gate.app is None and gate.open == 0

    _with_gate(t, no_memory)


def test_a_burst_of_connections_waits_outside_the_heap():
    # on the device, at most OPEN_MAX connections are taken in; the rest wait in the TCP
    # backlog (asyncio's own server would take every one: a burst filled the heap and a
    # MemoryError ended its accept task, leaving the device deaf)
    if not IS_MICROPYTHON:
        from testutil import skip

        skip("the bounded accept loop is the MicroPython path")

    async def t(gate):
        held = []
        for _ in range(webgate.OPEN_MAX + 4):  # connections that send nothing yet
            held.append(await asyncio.open_connection("127.0.0.1", gate._port))
        await clock.sleep_real_ms(100)
        assert gate.open == webgate.OPEN_MAX, gate.open
        for _, w in held:
            w.close()
            await w.wait_closed()
        for _ in range(300):
            if gate.open == 0:
                break
            await clock.sleep_real_ms(20)
        st, _ = await _get(gate._port)
        assert st == 200 and gate.open == 0

    _with_gate(t)
