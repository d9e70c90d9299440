# The BLE link against the fake aioble (sim/shims/aioble), on both runtimes.
import asyncio

import aioble
import bluetooth
import bms_frames
from aioble import sim
from testutil import approx, raises, run_async

from smartbms import clock
from smartbms.bms import link as linkmod
from smartbms.bms import protocols
from smartbms.bms.link import BMSLink, backoff_ms

_R = bluetooth.FLAG_READ
_W = bluetooth.FLAG_WRITE
_WNR = bluetooth.FLAG_WRITE_NO_RESPONSE
_N = bluetooth.FLAG_NOTIFY

VALUES = {"voltage": 13.3, "current": -2.5, "soc": 77, "remaining_ah": 77.0, "nominal_ah": 100.0,
          "cycles": 12, "cells": (3.31, 3.32, 3.33, 3.32), "temperatures": (21.0, 22.0),
          "charge_fet": True, "discharge_fet": True}

MAC = {"jbd": "A4:C1:37:00:00:01", "jk02_32s": "C8:47:8C:00:00:02", "jk02_24s": "C8:47:8C:00:00:03",
       "daly": "17:71:06:00:00:04"}


class FakeBMS:
    """A simulated BMS answering in its protocol (frames from sim/bms_frames.py)."""

    def __init__(self, protocol, values=None, mtu_max=23, stream_ms=30, two_jk_chars=False, jbd_fff0=False):
        self.protocol = protocol
        self.values = dict(values or VALUES)
        self.stream_ms = stream_ms
        self.streamed = 0
        self._stream = None
        if protocol == "jbd":
            self.notify_uuid, name, mfr = 0xFF01, "SP04S034-L4S", None
            services = {0xFF00: [(0xFF01, _R | _N), (0xFF02, _W | _WNR)]}
            if jbd_fff0:  # the rebrand that serves JBD frames on FFF0/FFF1/FFF2
                self.notify_uuid = 0xFFF1
                services = {0xFFF0: [(0xFFF1, _R | _N), (0xFFF2, _W | _WNR)]}
        elif protocol == "daly":
            self.notify_uuid, name, mfr = 0xFFF1, "DL-177106000004", None
            services = {0xFFF0: [(0xFFF1, _R | _N), (0xFFF2, _W | _WNR)]}
        else:
            self.notify_uuid, name, mfr = 0xFFE1, "JK-B2A8S20P", (0x0B65, b"\x01\x02")
            chars = [(0xFFE1, _W | _WNR | _N)]
            if two_jk_chars == "real":  # as logged from a JK-B1A20S15P: write 0x0C, notify 0x12
                chars = [(0xFFE1, _W | _WNR), (0xFFE1, _R | _N)]
            elif two_jk_chars:  # a notify-only FFE1 first, then write(with response)+notify
                chars = [(0xFFE1, _R | _N), (0xFFE1, _W | _N)]
            services = {0xFFE0: chars}
        self.p = sim.add_peripheral(sim.Peripheral(MAC[protocol], name, services, mfr, rssi=-55,
                                                   mtu_max=mtu_max, on_write=self.on_write))

    def on_write(self, char_uuid, data):
        for frame in bms_frames.respond(self.protocol, data, self.values):
            self.p.notify(self.notify_uuid, frame)
        if self.protocol.startswith("jk02") and data[4] == 0x96 and self._stream is None:
            self._stream = asyncio.create_task(self._streaming())

    async def _streaming(self):
        req = b"\xaa\x55\x90\xeb\x96" + bytes(15)
        try:
            while self.p.connected:
                await sim.sleep_ms(self.stream_ms)
                for frame in bms_frames.respond(self.protocol, req, self.values):
                    if self.p.notify(self.notify_uuid, frame):
                        self.streamed += 1
        finally:
            self._stream = None


def _run(coro):
    async def with_cleanup():
        try:
            return await coro
        finally:
            await sim.shutdown()  # no task of this test may outlive its event loop

    return run_async(with_cleanup())


def _link(protocol, **kw):
    kw.setdefault("request_timeout_ms", 300)
    kw.setdefault("connect_timeout_ms", 200)
    kw.setdefault("scan_ms", 100)
    if "name" not in kw:
        kw.setdefault("mac", MAC[protocol])
    return BMSLink(protocols.get(protocol), **kw)


def _check_reading(r, values, protocol):
    assert approx(r.voltage, values["voltage"], 0.011)
    assert approx(r.current, values["current"], 0.011)
    assert r.soc == values["soc"]
    assert approx(r.remaining_ah, values["remaining_ah"], 0.011)
    assert r.cycles == values["cycles"]
    assert len(r.cells) == len(values["cells"])
    for a, b in zip(r.cells, values["cells"]):
        assert approx(a, b, 0.0011)
    assert r.charge_fet is True and r.discharge_fet is True
    assert r.faults == []


def _poll_family(protocol, mtu_max):
    async def go():
        sim.reset()
        bms = FakeBMS(protocol, mtu_max=mtu_max)
        link = _link(protocol)
        assert link.latest is None and link.age_s() is None
        for _ in range(3):
            assert await link.poll_once()
        _check_reading(link.latest, VALUES, protocol)
        assert link.latest.received == clock.now()
        assert link.age_s() == 0
        assert link.connected and bms.p.connected
        st = link.stats
        assert st["polls"] == 3 and st["ok"] == 3 and st["errors"] == 0 and st["timeouts"] == 0
        assert st["connects"] == 1 and st["reconnects"] == 0
        assert st["frames"] >= 3
        assert bms.p.connects == 1
        assert bms.p.mtu == min(247, mtu_max)
        await link.close()
        assert not bms.p.connected and not link.connected
        return bms

    return _run(go())


def test_jbd_polls_basic_and_cells_with_write_without_response():
    bms = _poll_family("jbd", mtu_max=23)
    drv = protocols.get("jbd")
    reqs = [w[1] for w in bms.p.writes]
    assert reqs == list(drv.poll_requests()) * 3
    assert all(w[0] == bluetooth.UUID(0xFF02) for w in bms.p.writes)


def test_daly_polls_a_129_byte_frame_over_20_byte_notifications():
    bms = _poll_family("daly", mtu_max=23)
    assert bms.p.fragments_sent == 3 * 7  # 129 bytes in 20-byte fragments, three polls


def test_jk02_32s_start_requests_then_streamed_cell_info():
    bms = _poll_family("jk02_32s", mtu_max=247)
    drv = protocols.get("jk02_32s")
    assert [w[1] for w in bms.p.writes] == list(drv.start_requests())


def test_jk02_24s_layout():
    _poll_family("jk02_24s", mtu_max=23)


def test_jk_with_two_ffe1_characteristics_picks_by_properties():
    async def go():
        sim.reset()
        bms = FakeBMS("jk02_32s", two_jk_chars=True)
        link = _link("jk02_32s")
        assert await link.poll_once()
        # notify on the first (notify-only) FFE1, writes on the second (write+notify)
        assert bms.p.subscribed(0xFFE1) == [bms.p.services[0][3][0].value_handle]
        assert len(bms.p.writes) == 2
        assert link._write_response  # that characteristic has no write-without-response
        await link.close()
        sim.reset()
        bms = FakeBMS("jk02_32s", two_jk_chars="real")
        link = _link("jk02_32s")
        assert await link.poll_once()
        assert bms.p.subscribed(0xFFE1) == [bms.p.services[0][3][1].value_handle]
        assert not link._write_response and link._wchar.properties == _W | _WNR
        await link.close()

    _run(go())


def test_back_to_back_fragments_naive_notified_loses_them_link_does_not():
    frame = bms_frames.daly_status(**dict((k, VALUES[k]) for k in ("cells", "voltage", "soc")))
    assert len(frame) == 129

    async def go():
        sim.reset()
        bms = FakeBMS("daly", mtu_max=23)
        # The naive aioble client: subscribe, write, loop on notified().
        conn = await aioble.Device(0, MAC["daly"]).connect(timeout_ms=200)
        svc = await conn.service(bluetooth.UUID(0xFFF0))
        n = await svc.characteristic(bluetooth.UUID(0xFFF1))
        w = await svc.characteristic(bluetooth.UUID(0xFFF2))
        await n.subscribe()
        await w.write(protocols.get("daly").poll_requests()[0])
        got = []
        try:
            while True:
                got.append(await n.notified(timeout_ms=100))
        except asyncio.TimeoutError:
            pass
        assert bms.p.fragments_sent == 7
        assert len(got) == 1 and len(b"".join(got)) < 129  # six of seven fragments lost
        await conn.disconnect()
        # The link captures every fragment of the same burst.
        link = _link("daly", mtu=0)
        assert await link.poll_once()
        assert bms.p.mtu == 23 and bms.p.fragments_sent == 14
        assert link.stats["dropped_bytes"] == 0
        _check_reading(link.latest, VALUES, "daly")
        await link.close()

    _run(go())


def test_disconnect_mid_frame_then_reconnect():
    async def go():
        sim.reset()
        bms = FakeBMS("jbd", mtu_max=23)
        link = _link("jbd")
        assert await link.poll_once()
        first = link.latest.to_dict()
        bms.p.drop_after_fragments = 1  # the next answer stops after its first fragment
        bms.values["voltage"] = 13.1
        assert not await link.poll_once()
        assert not link.connected and not bms.p.connected
        assert link.stats["errors"] == 1 and "disconnect" in link.stats["last_error"]
        assert link.latest.to_dict() == first  # a half frame published nothing
        assert await link.poll_once()
        assert approx(link.latest.voltage, 13.1, 0.001)
        assert link.stats["reconnects"] == 1 and bms.p.connects == 2
        await link.close()

    _run(go())


def test_never_answering_bms_times_out_bounded_and_link_is_rebuilt():
    async def go():
        sim.reset()
        bms = FakeBMS("jbd")
        link = _link("jbd", request_timeout_ms=60)
        assert await link.poll_once()
        bms.p.silent = True
        t0 = sim.ticks_ms()
        for i in range(linkmod.MAX_TIMEOUTS):
            assert not await link.poll_once()
        took = sim.ticks_ms() - t0
        assert took < linkmod.MAX_TIMEOUTS * 60 + 400, took  # each poll bounded by its timeout
        st = link.stats
        assert st["timeouts"] == linkmod.MAX_TIMEOUTS and st["errors"] == linkmod.MAX_TIMEOUTS
        assert "timeout" in st["last_error"]
        assert not bms.p.connected  # rebuilt after MAX_TIMEOUTS mute polls
        bms.p.silent = False
        assert await link.poll_once()
        assert bms.p.connects == 2 and st["reconnects"] == 1 and st["ok"] == 2
        await link.close()

    _run(go())


def test_run_keeps_polling_through_a_mute_bms():
    async def go():
        sim.reset()
        bms = FakeBMS("jbd")
        bms.p.silent = True
        link = _link("jbd", request_timeout_ms=50, interval_s=1)
        seen = []
        clock.set_speed(20)  # 1 s interval = 50 real ms
        try:
            task = asyncio.create_task(link.run(seen.append))
            await sim.sleep_ms(600)
            assert link.stats["polls"] >= 3 and link.stats["timeouts"] >= 3 and not seen
            bms.p.silent = False
            await sim.sleep_ms(400)
            await link.close()
            await task
        finally:
            clock.set_speed(1)
        assert seen and seen[-1] is link.latest
        _check_reading(link.latest, VALUES, "jbd")
        assert not bms.p.connected

    _run(go())


def test_release_mode_disconnects_between_polls():
    async def go():
        sim.reset()
        bms = FakeBMS("jbd")
        link = _link("jbd", mode="release")
        for i in range(3):
            assert await link.poll_once()
            assert not bms.p.connected and not link.connected
        assert bms.p.connects == 3 and bms.p.disconnects == 3
        assert link.stats["ok"] == 3 and link.stats["reconnects"] == 0
        _check_reading(link.latest, VALUES, "jbd")

    _run(go())


def test_jk_stream_is_throttled_to_the_interval():
    async def go():
        sim.reset()
        bms = FakeBMS("jk02_32s", mtu_max=247, stream_ms=10)
        link = _link("jk02_32s", interval_s=1)
        seen = []
        clock.set_speed(10)  # interval = 100 real ms, the BMS streams every 10 ms
        try:
            task = asyncio.create_task(link.run(lambda r: seen.append(clock.now_ms())))
            await sim.sleep_ms(500)
            await link.close()
            await task
        finally:
            clock.set_speed(1)
        assert 2 <= len(seen) <= 6, seen
        assert bms.streamed >= 2 * len(seen)
        for a, b in zip(seen, seen[1:]):
            assert b - a >= 900, seen  # device ms between readings: the interval, not the stream rate

    _run(go())


def test_reading_object_is_reused_between_polls():
    async def go():
        sim.reset()
        FakeBMS("jbd")
        link = _link("jbd")
        ids = set()
        for _ in range(4):
            assert await link.poll_once()
            ids.add(id(link.latest))
        assert len(ids) == 2  # two Readings alternate: no new object per poll
        await link.close()

    _run(go())


def test_connect_by_name_and_missing_bms_backs_off():
    async def go():
        sim.reset()
        FakeBMS("daly")
        link = _link("daly", name="DL-177106000004")
        assert await link.poll_once()
        await link.close()
        missing = _link("jbd", name="nobody")
        assert not await missing.poll_once()
        assert not await missing.poll_once()
        assert missing.stats["errors"] == 2 and "nobody" in missing.stats["last_error"]
        assert missing._failures == 2
        # a MAC that never answers: connect times out, the controller attempt is cancelled
        absent = _link("jbd", mac="00:11:22:33:44:55")
        assert not await absent.poll_once()
        assert "TimeoutError" in absent.stats["last_error"] and absent.stats["timeouts"] == 1
        assert aioble.core.ble._pending_addr is None

    _run(go())


def test_backoff_doubles_from_1s_and_caps_at_60s_with_jitter():
    assert backoff_ms(0) == 0
    assert backoff_ms(1, 0) == 1000 and backoff_ms(2, 0) == 2000 and backoff_ms(6, 0) == 32000
    for n in range(7, 40):
        assert backoff_ms(n, 0) == 60000
    for n in range(1, 40):
        for r in (0, 1, 128, 255):
            d = backoff_ms(n, r)
            base = min(60000, 1000 << min(n - 1, 7))
            assert base * 3 // 4 <= d <= base
    assert backoff_ms(3, 255) < backoff_ms(3, 0)
    assert max(backoff_ms(50) for _ in range(50)) <= 60000


def test_backoff_drives_the_run_loop():
    async def go():
        sim.reset()
        link = _link("jbd", name="SP04S034-L4S")
        waits = []

        async def record(ms):  # instead of sleeping: note what run() asked for
            waits.append(ms)
            if len(waits) == 5:
                FakeBMS("jbd")  # the BMS appears
            elif len(waits) == 6:
                link._running = False

        link._sleep = record
        await link.run()
        assert link.stats["polls"] == 6 and link.stats["ok"] == 1
        for i in range(5):
            base = 1000 << i
            assert base * 3 // 4 <= waits[i] <= base, waits
        assert 4000 < waits[5] <= 5000, waits  # back to the interval once a poll worked
        assert link._failures == 0

    _run(go())


def test_scan_lists_bms_with_family():
    async def go():
        sim.reset()
        FakeBMS("jbd").p.rssi = -70
        FakeBMS("jk02_32s").p.rssi = -50
        FakeBMS("daly").p.rssi = -60
        sim.add_peripheral(sim.Peripheral("01:02:03:04:05:06", "Headphones", {0x180F: [(0x2A19, _R)]}, rssi=-40))
        found = await linkmod.scan(200)
        assert [(d["family"], d["rssi"]) for d in found] == [("jk02_32s", -50), ("daly", -60), ("jbd", -70)]
        assert found[0]["mac"] == MAC["jk02_32s"] and found[0]["name"] == "JK-B2A8S20P"
        everything = await linkmod.scan(200, include_unknown=True)
        assert len(everything) == 4 and everything[0]["family"] is None
        try:
            await linkmod.scan(0)
            raise AssertionError("scan(0) accepted")
        except ValueError:
            pass

    _run(go())


def test_bad_arguments_are_refused():
    drv = protocols.get("jbd")
    raises(ValueError, BMSLink, drv)
    raises(ValueError, BMSLink, drv, mac="not-a-mac")
    raises(ValueError, BMSLink, drv, mac="A4:C1:37:00:00:0G")
    raises(ValueError, BMSLink, drv, mac=MAC["jbd"], mode="sometimes")
    raises(ValueError, BMSLink, drv, mac=MAC["jbd"], interval_s=0)
    raises(ValueError, BMSLink, drv, mac=MAC["jbd"], request_timeout_ms=0)
    raises(ValueError, BMSLink, drv, mac=MAC["jbd"], mtu=10)
    assert BMSLink(drv, mac="a4-c1-37-00-00-01").mac == "A4:C1:37:00:00:01"
    assert BMSLink(drv, mac="a4c137000001").mac == "A4:C1:37:00:00:01"


def test_capture_ring_keeps_order_and_counts_overflow():
    cap = linkmod._Capture(slots=4)
    cap.append(b"x")  # not listening: dropped silently
    assert len(cap) == 0
    cap.listening = True
    for _ in range(3):  # wraps the indexes several times
        for i in range(4):
            cap.append(bytes((i,)))
        cap.append(b"over")
        assert len(cap) == 4 and cap.overflow_bytes % 4 == 0
        assert [cap.popleft() for _ in range(4)] == [b"\x00", b"\x01", b"\x02", b"\x03"]
    assert cap.overflow_bytes == 12
    raises(IndexError, cap.popleft)


class _Events:
    def __init__(self):
        self.items = []

    def add(self, kind, message):
        self.items.append((kind, message))


def _settings(**kw):
    s = {"bms_protocol": "auto", "bms_mac": "", "bms_name": "", "bms_mode": "persistent", "poll_interval_s": 5}
    s.update(kw)
    return s


def test_settings_mode_detects_family_and_follows_reconfigure():
    async def go():
        sim.reset()
        FakeBMS("daly")
        jbd = FakeBMS("jbd")
        settings = _settings()
        events = _Events()
        link = BMSLink(settings, events=events, request_timeout_ms=300, connect_timeout_ms=200, scan_ms=100)
        assert not await link.poll_once()  # nothing configured: idle, no exception
        assert "no BMS configured" in link.stats["last_error"] and link.stats["polls"] == 0
        settings["bms_mac"] = MAC["daly"].lower()
        link.reconfigure()
        assert await link.poll_once()
        assert link.driver.name == "daly" and link.mac == MAC["daly"]
        _check_reading(link.latest, VALUES, "daly")
        settings.update(bms_mac="", bms_name="SP04S034-L4S", bms_protocol="jbd", bms_mode="release")
        link.reconfigure()
        assert await link.poll_once()
        assert link.driver.name == "jbd" and link.mode == "release" and not jbd.p.connected
        assert jbd.p.connects == 1
        assert [k for k, _ in events.items] == ["bms", "bms"] and "daly" in events.items[0][1]
        jbd.p.silent = True  # a failing link is logged once, not per poll
        sim.remove_peripheral(MAC["jbd"])
        for _ in range(3):
            assert not await link.poll_once()
        assert len(events.items) == 3 and "failed" in events.items[2][1]
        assert link.stats["errors"] == 3

    _run(go())


def test_scan_method_and_unrecognised_auto_device():
    async def go():
        sim.reset()
        FakeBMS("jk02_32s")
        sim.add_peripheral(sim.Peripheral("01:02:03:04:05:06", "Headphones", {0x180F: [(0x2A19, _R)]}))
        link = BMSLink(_settings(bms_mac="01:02:03:04:05:06"), scan_ms=100, connect_timeout_ms=200)
        found = await link.scan(200)
        assert [d["family"] for d in found] == ["jk02_32s"]
        assert not await link.poll_once()
        assert "not recognised" in link.stats["last_error"]

    _run(go())


def _real_frames():
    import json

    path = "../shared/bms-frames/frames.json"
    try:
        with open(path) as f:
            return json.load(f)["frames"]
    except OSError:
        raise AssertionError("real BMS frames missing: %s (run from the project root)" % path)


def _unhex(h):
    import binascii

    return binascii.unhexlify(h)


def test_real_captured_notifications_through_the_link():
    frames = _real_frames()
    by_name = dict((f["name"], f) for f in frames)
    cases = []
    for f in frames:
        if f["protocol"] == "jbd" and f["name"].startswith("jbd-basic"):
            cases.append(("jbd", f, by_name["jbd-cells-4s"]))
        elif f["protocol"] in ("jk02_32s", "daly"):
            cases.append((f["protocol"], f, None))
    assert len(cases) >= 4

    async def go(protocol, main, cells):
        sim.reset()
        bms = FakeBMS(protocol, mtu_max=247)

        def answer(char_uuid, data):  # the captured notifications, back to back, as they came
            if protocol == "jbd":
                chosen = main if data[2] == 0x03 else cells
            elif protocol == "daly" or data[4] == 0x96:
                chosen = main
            else:
                return
            for frag in chosen["fragments"]:
                bms.p.notify(bms.notify_uuid, _unhex(frag))

        bms.p.on_write = answer
        link = _link(protocol)
        # JK: the capture has no stream, the answer to the start request is the reading
        ok = await link.poll_once()
        assert ok, (main["name"], link.stats)
        r = link.latest
        for k, v in main["expect"].items():
            got = getattr(r, k)
            if isinstance(v, list):
                assert len(got) == len(v), (main["name"], k, got)
                for a, b in zip(got, v):
                    assert approx(a, b, 0.011), (main["name"], k, got, v)
            elif isinstance(v, bool) or v is None:
                assert got == v, (main["name"], k, got, v)
            else:
                assert approx(got, v, 0.011), (main["name"], k, got, v)
        assert bool(r.faults) == bool(main.get("faults", False))
        if cells is not None:
            assert [round(c, 3) for c in r.cells] == cells["expect"]["cells"]
        await link.close()

    for protocol, main, cells in cases:
        _run(go(protocol, main, cells))


def test_mtu_exchange_failure_is_tolerated():
    async def go():
        sim.reset()
        bms = FakeBMS("daly", mtu_max=247)
        bms.p.mtu_exchange_fails = True
        link = _link("daly", request_timeout_ms=100)
        assert await link.poll_once()
        assert bms.p.mtu == 23 and bms.p.fragments_sent == 7  # fell back to 20-byte fragments
        _check_reading(link.latest, VALUES, "daly")
        await link.close()

    _run(go())


def test_discovery_that_never_finishes_is_bounded():
    async def go():
        sim.reset()
        bms = FakeBMS("jbd")
        real = sim._discover_services
        sim._discover_services = lambda conn_handle, uuid: None  # the peer never answers
        try:
            link = _link("jbd", request_timeout_ms=80)
            t0 = sim.ticks_ms()
            assert not await link.poll_once()
            assert sim.ticks_ms() - t0 < 1000
        finally:
            sim._discover_services = real
        assert "TimeoutError" in link.stats["last_error"]
        assert not bms.p.connected and not link.connected  # gave the BMS back
        assert await link.poll_once()
        assert link.stats["reconnects"] == 1

    _run(go())


def test_error_frame_and_missing_service_are_errors_not_crashes():
    async def go():
        sim.reset()
        bms = FakeBMS("jbd")
        good = bms.on_write

        def refuse(char_uuid, data):  # JBD answers with status 0x80 (error)
            bms.p.notify(0xFF01, bms_frames.jbd_frame(data[2], b"", status=0x80))

        bms.p.on_write = refuse
        link = _link("jbd")
        assert not await link.poll_once()
        assert link.stats["bad_frames"] == 1 and link.stats["errors"] == 1 and link.latest is None
        assert "BMSError" in link.stats["last_error"]
        bms.p.on_write = good
        assert await link.poll_once()
        await link.close()
        # a device without the family's service
        sim.reset()
        sim.add_peripheral(sim.Peripheral(MAC["jbd"], "SP04S034", {0x180F: [(0x2A19, _R | _N)]}))
        link = _link("jbd")
        assert not await link.poll_once()
        assert "no service FF00" in link.stats["last_error"]
        assert not sim.peripherals()[0].connected

    _run(go())


def test_connected_follows_a_link_dropped_between_polls():
    async def go():
        sim.reset()
        bms = FakeBMS("jbd")
        link = _link("jbd")
        assert await link.poll_once() and link.connected
        bms.p.drop_link()
        await sim.sleep_ms(5)
        assert not link.connected
        assert await link.poll_once()  # reconnects on its own
        assert link.connected and link.stats["reconnects"] == 1 and link.stats["errors"] == 0
        await link.close()
        assert not link.connected

    _run(go())


def test_restored_is_logged_once_data_flows_not_per_reconnect():
    async def go():
        sim.reset()
        bms = FakeBMS("jbd", mtu_max=23)
        events = _Events()
        link = _link("jbd", events=events)
        assert await link.poll_once()
        for _ in range(4):  # every reconnect opens, then loses the link mid-answer
            bms.p.drop_after_fragments = 1
            assert not await link.poll_once()
        msgs = [m for _, m in events.items]
        assert not [m for m in msgs if "restored" in m], msgs
        assert len([m for m in msgs if "failed" in m]) == 1, msgs
        bms.p.drop_after_fragments = None
        assert await link.poll_once()
        assert await link.poll_once()
        msgs = [m for _, m in events.items]
        assert len([m for m in msgs if "restored" in m]) == 1, msgs
        await link.close()

    _run(go())


def test_radio_up_brings_the_ble_stack_up_without_a_bms():
    import aioble

    sim.reset()
    aioble.core.ble.active(False)
    link = _link("jbd")  # nothing advertising: the BMS is away
    assert link.radio_up() is True
    assert aioble.core.ble.active()


def test_corrupt_and_unfinished_frames_are_counted_in_the_link_stats():
    async def go():
        sim.reset()
        bms = FakeBMS("jbd")
        good = bms.on_write
        link = _link("jbd", request_timeout_ms=100)
        assert await link.poll_once()
        first = link.latest.to_dict()

        def corrupt(char_uuid, data):  # a flipped bit: the checksum no longer matches
            f = bytearray(bms_frames.jbd_frame(data[2], bytes(8)))
            f[5] ^= 0x01
            bms.p.notify(0xFF01, bytes(f))

        bms.p.on_write = corrupt
        assert not await link.poll_once()
        assert link.stats["bad_checksum"] == 1 and link.latest.to_dict() == first

        def half(char_uuid, data):  # the first half of a frame, then nothing
            f = bms_frames.jbd_frame(data[2], bytes(8))
            bms.p.notify(0xFF01, f[:6])

        bms.p.on_write = half
        assert not await link.poll_once()
        bms.p.on_write = good
        assert await link.poll_once()  # the next cycle drops the leftover and counts it
        assert link.stats["stalled"] == 1 and link.stats["dropped_bytes"] >= 6
        assert link.latest.to_dict() == first
        await link.close()

    _run(go())


def test_jbd_on_the_fff0_service_variant():
    async def go():
        sim.reset()
        FakeBMS("jbd", jbd_fff0=True)
        link = _link("jbd")
        assert await link.poll_once()
        _check_reading(link.latest, VALUES, "jbd")
        await link.close()

    _run(go())
