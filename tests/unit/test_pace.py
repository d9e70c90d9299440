# The control loop keeps its pace while the web server takes an OTA upload and a flood of bad
# requests (both runtimes): the real App, web stack and OTA writer over the simulated flash,
# with the device clock at x10 so a control tick is 100 ms of real time.
import binascii
import os

import otaflash  # first: puts the esp32 shim on the path under pytest
import asyncio
import esp_image
from apputil import FakeLink, FakeMachine, fresh_root
from battery import Battery
from smartbms import app as app_mod
from smartbms import clock, ota
from smartbms.auth import Auth
from testutil import run_async

PASSWORD = "pace-password"
SPEED = 10
TICK_REAL_MS = app_mod.TICK_MS // SPEED
MAX_GAP_MS = 400  # a starved loop would stall for the whole upload (seconds)


def _auth():
    return "Basic " + binascii.b2a_base64(("admin:" + PASSWORD).encode()).decode().strip()


async def _exchange(port, head, body=b"", chunk=4096, pause_ms=0):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        for i in range(0, len(body), chunk):
            writer.write(body[i:i + chunk])
            await writer.drain()
            if pause_ms:
                await clock.sleep_real_ms(pause_ms)
        line = await asyncio.wait_for(reader.readline(), 20)
        return int(line.split()[1])
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except Exception:  # noqa: BLE001
            pass


def _upload(port, img):
    head = ("POST /api/ota HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % (_auth(), len(img)))
    return _exchange(port, head.encode(), img, pause_ms=16)


BAD = (
    b"PUT /api/settings HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\n"
    b"Content-Length: 9\r\n\r\n{not json",
    b"PUT /api/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
    b'{"max_soc": 50}',
    b"POST /api/relay HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\n"
    b'Content-Length: 16\r\n\r\n{"mode": "fast"}',
    b"garbage\r\n\r\n",
)


def test_control_loop_keeps_its_pace_during_an_upload_and_a_flood():
    import gc

    gc.collect()  # the image needs one contiguous piece of the runner's shared heap
    img = esp_image.app_image("0.2.0", 256 * 1024)
    fresh_root()
    otaflash.fresh("pace")
    port = 21000 + int.from_bytes(os.urandom(2), "big") % 30000
    a = app_mod.App(machine=FakeMachine(raises=False), log=lambda *x: None, port=port, host="127.0.0.1")
    a.link = FakeLink(Battery(soc=55.0).reading(received=clock.now()))
    Auth(a.settings, state=a.auth_state).set_password(PASSWORD, iterations=50)
    before = a.settings.public()
    stamps = []
    step = a.control_step

    def timed():
        stamps.append(clock.ticks_real_ms())
        a.link.latest.received = clock.now()  # keep the reading fresh
        return step()

    a.control_step = timed
    old = clock.speed()
    clock.set_speed(SPEED)
    result = {}

    async def go():
        tasks = [asyncio.create_task(a.control_loop()), asyncio.create_task(a.web_task())]
        await clock.sleep_real_ms(400)
        t0 = clock.ticks_real_ms()
        up = asyncio.create_task(_upload(port, img))
        codes = []

        async def flood(k):  # three clients at once, beside the upload: within the 4 served at once
            for i in range(8):
                raw = BAD[(i + k) % len(BAD)]
                if b"%s" in raw:
                    raw = raw.replace(b"%s", _auth().encode())
                codes.append(await _exchange(port, raw))

        floods = [asyncio.create_task(flood(k)) for k in range(3)]
        for f in floods:
            await f
        result["upload"] = await up
        result["codes"] = codes
        result["t"] = (t0, clock.ticks_real_ms())
        for t in tasks:
            t.cancel()
        await clock.sleep_real_ms(10)

    try:
        run_async(go())
    finally:
        clock.set_speed(old)
        ota.release()
    assert result["upload"] == 200, result
    assert sorted(set(result["codes"])) == [400, 401, 422], result["codes"]
    assert a.settings.public() == before  # nothing the flood sent was applied
    t0, t1 = result["t"]
    during = [t for t in stamps if t0 <= t <= t1 + TICK_REAL_MS]
    gaps = [during[i + 1] - during[i] for i in range(len(during) - 1)]
    took = t1 - t0
    assert len(during) >= took // (3 * TICK_REAL_MS), (len(during), took)
    assert max(gaps) <= MAX_GAP_MS, (max(gaps), took)
    print("upload + flood took %d ms; %d control ticks, longest gap %d ms (tick %d ms)"
          % (took, len(during), max(gaps), TICK_REAL_MS))
