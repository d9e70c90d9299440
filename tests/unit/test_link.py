# The BLE link against the real aioble over the simulated radio (sim/world/radio.py), on the
# unix port. The tests that need no radio (backoff, the capture ring, argument checks) run on
# CPython too; the others skip there.
import asyncio
import time

import bms_frames
import worldctl
from testutil import approx, raises, run_async

from smartbms import clock
from smartbms.bms import link as linkmod
from smartbms.bms import protocols
from smartbms.bms import scan as scanmod
from smartbms.bms.link import BMSLink, backoff_ms

_R, _W, _WNR, _N = 0x02, 0x08, 0x04, 0x10

VALUES = {"voltage": 13.3, "current": -2.5, "soc": 77, "remaining_ah": 77.0, "nominal_ah": 100.0,
          "cycles": 12, "cells": (3.31, 3.32, 3.33, 3.32), "temperatures": (21.0, 22.0),
          "charge_fet": True, "discharge_fet": True}

MAC = {"jbd": "A4:C1:37:00:00:01", "jk02_32s": "C8:47:8C:00:00:02", "jk02_24s": "C8:47:8C:00:00:03",
       "daly": "17:71:06:00:00:04", "seplos": "60:6E:41:00:00:05", "ant": "AA:BB:CC:00:00:06",
       "redodo": "C8:47:80:00:00:07", "renogy": "80:6F:B0:00:00:08"}
HEADPHONES = ("01:02:03:04:05:06", "Headphones", [[0x180F, [[0x2A19, _R]]]])


def _ms():
    return time.ticks_ms()


def _bms(protocol, **kw):
    """A simulated BMS with the test values on the air; returns its MAC."""
    kw.setdefault("values", VALUES)
    kw.setdefault("mac", MAC[protocol])
    return worldctl.add_bms(protocol, **kw)["mac"]


def _run(coro):
    try:
        worldctl.link()  # skips where there is no world (CPython)
    except BaseException:
        coro.close()  # never started: no "never awaited" warning
        raise

    async def with_cleanup():
        try:
            return await coro
        finally:
            worldctl.reset()  # no link of this test outlives it
            await asyncio.sleep_ms(30)

    return run_async(with_cleanup())


def _link(protocol, **kw):
    kw.setdefault("request_timeout_ms", 300)
    kw.setdefault("connect_timeout_ms", 300)
    kw.setdefault("scan_ms", 300)
    if "name" not in kw:
        kw.setdefault("mac", MAC[protocol])
    return BMSLink(protocols.get(protocol), **kw)


# what a family does not report (None in its Reading)
LACKS = {"ant": ("cycles",), "redodo": ("charge_fet", "discharge_fet")}
CELL_STEP = {"renogy": 0.1}  # cell voltage resolution where coarser than 1 mV


def _check_reading(r, values, family=None):
    lacks = LACKS.get(family, ())
    assert approx(r.voltage, values["voltage"], 0.011), (family, r.voltage)
    assert approx(r.current, values["current"], 0.011), (family, r.current)
    assert r.soc == values["soc"], (family, r.soc)
    assert approx(r.remaining_ah, values["remaining_ah"], 0.011), (family, r.remaining_ah)
    assert r.cycles == (None if "cycles" in lacks else values["cycles"]), (family, r.cycles)
    assert len(r.cells) == len(values["cells"]), (family, r.cells)
    for a, b in zip(r.cells, values["cells"]):
        assert approx(a, b, CELL_STEP.get(family, 0.001) / 2 + 0.0001), (family, r.cells)
    for k in ("charge_fet", "discharge_fet"):
        assert getattr(r, k) is (None if k in lacks else True), (family, k, getattr(r, k))
    assert r.faults == [], (family, r.faults)


def _poll_family(protocol, mtu_max, **kw):
    async def go():
        worldctl.reset()
        mac = _bms(protocol, mtu_max=mtu_max, **kw)
        link = _link(protocol)
        assert link.latest is None and link.age_s() is None
        for _ in range(3):
            assert await link.poll_once(), link.stats
        _check_reading(link.latest, VALUES, protocol)
        assert link.latest.received == clock.now()
        assert link.age_s() == 0
        p = worldctl.peer(mac)
        assert link.connected and p["connected"]
        st = link.stats
        assert st["polls"] == 3 and st["ok"] == 3 and st["errors"] == 0 and st["timeouts"] == 0
        assert st["connects"] == 1 and st["reconnects"] == 0
        assert st["frames"] >= 3
        assert p["connects"] == 1
        assert p["mtu"] == min(247, mtu_max)
        await link.close()
        await asyncio.sleep_ms(30)
        p = worldctl.peer(mac)
        assert not p["connected"] and not link.connected
        return p

    return _run(go())


def test_jbd_polls_basic_and_cells_with_write_without_response():
    p = _poll_family("jbd", mtu_max=23)
    drv = protocols.get("jbd")
    assert [w[1] for w in p["writes"]] == [bytes(r).hex() for r in drv.poll_requests()] * 3
    assert all(w[0] == "ff02" for w in p["writes"])


def test_daly_polls_a_129_byte_frame_over_20_byte_notifications():
    p = _poll_family("daly", mtu_max=23)
    assert p["fragments_sent"] == 3 * 7  # 129 bytes in 20-byte fragments, three polls


def test_jk02_32s_start_requests_then_streamed_cell_info():
    p = _poll_family("jk02_32s", mtu_max=247, stream_ms=50)
    drv = protocols.get("jk02_32s")
    assert [w[1] for w in p["writes"]] == [bytes(r).hex() for r in drv.start_requests()]


def test_jk02_24s_layout():
    _poll_family("jk02_24s", mtu_max=23, stream_ms=50)


def test_new_families_poll_through_their_own_gatt_layouts():
    # Seplos (multi-block Modbus), ANT (writes to FFE1, not the other writable FFE2),
    # Redodo (FFE2, not its AT channel FFE3), Renogy (writes in FFD0, listens in FFF0)
    want_write = {"seplos": "fff2", "ant": "ffe1", "redodo": "ffe2", "renogy": "ffd1"}
    for family in ("seplos", "ant", "redodo", "renogy"):
        p = _poll_family(family, mtu_max=23)
        assert p["writes"] and all(w[0] == want_write[family] for w in p["writes"]), (family, p["writes"])


def test_jk_with_two_ffe1_characteristics_picks_by_handle_order_whatever_order_discovery_gives():
    # NimBLE delivers discovery results in a burst and aioble hands them out from the end of
    # its queue: the link must not depend on that order.
    async def go():
        worldctl.reset()
        mac = _bms("jk02_32s", variant="two_chars", stream_ms=50)
        link = _link("jk02_32s")
        assert await link.poll_once(), link.stats
        p = worldctl.peer(mac)
        # notify on the first (notify-only) FFE1 (value handle 3), writes on the second
        assert p["subscribed"] == [3], p
        assert len(p["writes"]) == 2
        assert link._write_response  # that characteristic has no write-without-response
        await link.close()
        worldctl.reset()
        mac = _bms("jk02_32s", variant="split", stream_ms=50)
        link = _link("jk02_32s")
        assert await link.poll_once(), link.stats
        p = worldctl.peer(mac)
        assert p["subscribed"] == [5], p  # the notify FFE1 comes second (write 3, notify 5)
        assert not link._write_response and link._wchar.properties == _W | _WNR
        await link.close()

    _run(go())


def test_back_to_back_fragments_naive_notified_loses_them_link_does_not():
    worldctl.link()
    import aioble
    import bluetooth

    async def go():
        worldctl.reset()
        mac = _bms("daly", mtu_max=23, fragment_gap_ms=0)  # the whole answer in one burst
        # The naive aioble client: subscribe, write, loop on notified().
        conn = await aioble.Device(0, mac).connect(timeout_ms=500)
        svc = await conn.service(bluetooth.UUID(0xFFF0))
        n = await svc.characteristic(bluetooth.UUID(0xFFF1))
        w = await svc.characteristic(bluetooth.UUID(0xFFF2))
        await n.subscribe()
        lost = 0
        for attempt in range(3):  # a burst the host happens to deliver in pieces loses nothing
            await w.write(protocols.get("daly").poll_requests()[0])
            got = []
            try:
                while True:
                    got.append(await n.notified(timeout_ms=150))
            except asyncio.TimeoutError:
                pass
            assert worldctl.peer(mac)["fragments_sent"] == 7 * (attempt + 1)
            if len(b"".join(got)) < 129:  # the one-slot queue kept only some of the seven
                lost += 1
                break
        assert lost, "the naive client never lost a fragment"
        sent = worldctl.peer(mac)["fragments_sent"]
        await conn.disconnect()
        # The link captures every fragment of the same burst.
        link = _link("daly", mtu=0)
        assert await link.poll_once(), link.stats
        p = worldctl.peer(mac)
        assert p["mtu"] == 23 and p["fragments_sent"] == sent + 7
        assert link.stats["dropped_bytes"] == 0
        _check_reading(link.latest, VALUES)
        await link.close()

    _run(go())


def test_disconnect_mid_frame_then_reconnect():
    async def go():
        worldctl.reset()
        mac = _bms("jbd", mtu_max=23)
        link = _link("jbd")
        assert await link.poll_once()
        first = link.latest.to_dict()
        changed = dict(VALUES, voltage=13.1)
        worldctl.set_peer(mac, drop_after_fragments=1, values=changed)  # the next answer stops after one fragment
        assert not await link.poll_once()
        assert not link.connected and not worldctl.peer(mac)["connected"]
        assert link.stats["errors"] == 1 and "disconnect" in link.stats["last_error"]
        assert link.latest.to_dict() == first  # a half frame published nothing
        assert await link.poll_once()
        assert approx(link.latest.voltage, 13.1, 0.001)
        assert link.stats["reconnects"] == 1 and worldctl.peer(mac)["connects"] == 2
        await link.close()

    _run(go())


def test_never_answering_bms_times_out_bounded_and_link_is_rebuilt():
    async def go():
        worldctl.reset()
        mac = _bms("jbd")
        link = _link("jbd", request_timeout_ms=80)
        assert await link.poll_once()
        worldctl.set_peer(mac, silent=True)
        t0 = _ms()
        for i in range(linkmod.MAX_TIMEOUTS):
            assert not await link.poll_once()
        took = _ms() - t0
        assert took < linkmod.MAX_TIMEOUTS * 80 + 500, took  # each poll bounded by its timeout
        st = link.stats
        assert st["timeouts"] == linkmod.MAX_TIMEOUTS and st["errors"] == linkmod.MAX_TIMEOUTS
        assert "timeout" in st["last_error"]
        await asyncio.sleep_ms(30)
        assert not worldctl.peer(mac)["connected"]  # rebuilt after MAX_TIMEOUTS mute polls
        worldctl.set_peer(mac, silent=False)
        assert await link.poll_once()
        assert worldctl.peer(mac)["connects"] == 2 and st["reconnects"] == 1 and st["ok"] == 2
        await link.close()

    _run(go())


def test_run_keeps_polling_through_a_mute_bms():
    async def go():
        worldctl.reset()
        mac = _bms("jbd", silent=True)
        link = _link("jbd", request_timeout_ms=60, interval_s=1)
        seen = []
        clock.set_speed(20)  # 1 s interval = 50 real ms
        try:
            task = asyncio.create_task(link.run(seen.append))
            await asyncio.sleep_ms(900)
            assert link.stats["polls"] >= 3 and link.stats["timeouts"] >= 3 and not seen, link.stats
            worldctl.set_peer(mac, silent=False)
            await asyncio.sleep_ms(1500)
            await link.close()
            await task
        finally:
            clock.set_speed(1)
        assert seen and seen[-1] is link.latest, link.stats
        _check_reading(link.latest, VALUES)
        await asyncio.sleep_ms(30)
        assert not worldctl.peer(mac)["connected"]

    _run(go())


def test_release_mode_disconnects_between_polls():
    async def go():
        worldctl.reset()
        mac = _bms("jbd")
        link = _link("jbd", mode="release")
        for i in range(3):
            assert await link.poll_once()
            assert not link.connected
        await asyncio.sleep_ms(30)
        p = worldctl.peer(mac)
        assert not p["connected"] and p["connects"] == 3 and p["disconnects"] == 3
        assert link.stats["ok"] == 3 and link.stats["reconnects"] == 0
        _check_reading(link.latest, VALUES)

    _run(go())


def test_jk_stream_is_throttled_to_the_interval():
    async def go():
        worldctl.reset()
        mac = _bms("jk02_32s", mtu_max=247, stream_ms=50)
        link = _link("jk02_32s", interval_s=1)
        seen = []
        clock.set_speed(4)  # interval = 250 real ms, the BMS streams every 50 ms
        try:
            task = asyncio.create_task(link.run(lambda r: seen.append(clock.now_ms())))
            await asyncio.sleep_ms(1200)
            await link.close()
            await task
        finally:
            clock.set_speed(1)
        assert 2 <= len(seen) <= 6, seen
        assert worldctl.peer(mac)["streamed"] >= 2 * len(seen)
        for a, b in zip(seen, seen[1:]):
            assert b - a >= 900, seen  # device ms between readings: the interval, not the stream rate

    _run(go())


def test_reading_object_is_reused_between_polls():
    async def go():
        worldctl.reset()
        _bms("jbd")
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
        worldctl.reset()
        _bms("daly")
        link = _link("daly", name="DL-177106000004")
        assert await link.poll_once(), link.stats
        await link.close()
        missing = _link("jbd", name="nobody")
        assert not await missing.poll_once()
        assert not await missing.poll_once()
        assert missing.stats["errors"] == 2 and "nobody" in missing.stats["last_error"]
        assert missing._failures == 2
        # a MAC that never answers: the controller gives up when the link does (whichever is
        # seen first) and nothing is left pending
        absent = _link("jbd", mac="00:11:22:33:44:55")
        assert not await absent.poll_once()
        err = absent.stats["last_error"]
        assert "did not answer" in err or "TimeoutError" in err, err
        assert absent.stats["errors"] == 1 and absent._failures == 1
        await asyncio.sleep_ms(20)
        assert not worldctl.status()["connect_pending"]

    _run(go())


def test_slow_connect_completes_within_the_connect_timeout():
    # aioble's connect() passes no scan_duration_ms: the binding's 2 s default then ends the
    # attempt (as PERIPHERAL_DISCONNECT, which aioble ignores) and the link would wait out its
    # whole timeout for nothing. The link gives the controller its own connect timeout.
    async def go():
        worldctl.reset()
        mac = _bms("jbd", connect_delay_ms=2600)
        link = _link("jbd", connect_timeout_ms=4000, scan_ms=100)
        t0 = _ms()
        assert await link.poll_once(), link.stats
        assert 2500 <= _ms() - t0 < 3800
        assert worldctl.peer(mac)["connects"] == 1
        await link.close()

    _run(go())


def test_a_failed_connect_ends_the_wait_early():
    # A controller that gives up (the peer went out of range) ends the link's wait at once,
    # not at connect_timeout_ms.
    worldctl.link()
    import aioble

    async def go():
        worldctl.reset()
        link = _link("jbd", connect_timeout_ms=3000, scan_ms=100)
        link._device = aioble.Device(0, MAC["jbd"])  # skip the scan: a known address
        link.driver = protocols.get("jbd")
        t0 = _ms()
        ble = aioble.core.ble
        real = ble.gap_connect

        def short(addr_type, addr=None, scan_duration_ms=None, *a):
            return real(addr_type, addr, 300) if addr_type is not None else real(None)

        ble.gap_connect = short  # the controller gives up after 300 ms
        try:
            assert not await link.poll_once()
        finally:
            ble.gap_connect = real
        assert _ms() - t0 < 1500, _ms() - t0
        assert "connect" in link.stats["last_error"], link.stats

    _run(go())


def test_subscribe_waits_for_the_cccd_write_and_survives_its_failure():
    async def go():
        worldctl.reset()
        mac = _bms("jbd", cccd_status=0x03)  # the peer refuses the CCCD write
        link = _link("jbd")
        assert not await link.poll_once()
        assert "GattError" in link.stats["last_error"], link.stats
        await asyncio.sleep_ms(30)
        assert not worldctl.peer(mac)["connected"]  # the half-open link was given back
        worldctl.set_peer(mac, cccd_status=0, cccd_no_response=True)  # never acknowledged
        t0 = _ms()
        assert not await link.poll_once()
        assert _ms() - t0 < 1500 and "TimeoutError" in link.stats["last_error"], link.stats
        worldctl.set_peer(mac, cccd_no_response=False)
        assert await link.poll_once(), link.stats
        _check_reading(link.latest, VALUES)
        await link.close()

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
        worldctl.reset()
        link = _link("jbd", name="SP04S034-L4S")
        waits = []

        async def record(ms):  # instead of sleeping: note what run() asked for
            waits.append(ms)
            if len(waits) == 5:
                _bms("jbd", name="SP04S034-L4S")  # the BMS appears
            elif len(waits) == 6:
                link._running = False

        link._sleep = record
        await link.run()
        assert link.stats["polls"] == 6 and link.stats["ok"] == 1, link.stats
        for i in range(5):
            base = 1000 << i
            assert base * 3 // 4 <= waits[i] <= base, waits
        assert 4000 < waits[5] <= 5000, waits  # back to the interval once a poll worked
        assert link._failures == 0

    _run(go())


def test_scan_lists_bms_with_family():
    async def go():
        worldctl.reset()
        _bms("jbd", rssi=-70)
        _bms("jk02_32s", rssi=-50)
        _bms("daly", rssi=-60)
        worldctl.add_peer(*HEADPHONES, rssi=-40)
        found = await scanmod.scan(400)
        assert [(d["family"], d["rssi"]) for d in found] == [("jk02_32s", -50), ("daly", -60), ("jbd", -70)]
        assert found[0]["mac"] == MAC["jk02_32s"] and found[0]["name"] == "JK-B2A8S20P"
        everything = await scanmod.scan(400, include_unknown=True)
        assert len(everything) == 4 and everything[0]["family"] is None
        try:
            await scanmod.scan(0)
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
        worldctl.reset()
        _bms("daly")
        jbd = _bms("jbd")
        settings = _settings()
        events = _Events()
        link = BMSLink(settings, events=events, request_timeout_ms=300, connect_timeout_ms=300, scan_ms=300)
        assert not await link.poll_once()  # nothing configured: idle, no exception
        assert "no BMS configured" in link.stats["last_error"] and link.stats["polls"] == 0
        settings["bms_mac"] = MAC["daly"].lower()
        link.reconfigure()
        assert await link.poll_once(), link.stats
        assert link.driver.name == "daly" and link.mac == MAC["daly"]
        _check_reading(link.latest, VALUES)
        settings.update(bms_mac="", bms_name="SP04S034-L4S-200A", bms_protocol="jbd", bms_mode="release")
        link.reconfigure()
        assert await link.poll_once(), link.stats
        await asyncio.sleep_ms(30)
        assert link.driver.name == "jbd" and link.mode == "release" and not worldctl.peer(jbd)["connected"]
        assert worldctl.peer(jbd)["connects"] == 1
        assert [k for k, _ in events.items] == ["bms", "bms"] and "daly" in events.items[0][1]
        worldctl.call("remove_peer", mac=jbd)  # a failing link is logged once, not per poll
        for _ in range(3):
            assert not await link.poll_once()
        assert len(events.items) == 3 and "failed" in events.items[2][1], events.items
        assert link.stats["errors"] == 3

    _run(go())


def test_scan_method_and_unrecognised_auto_device():
    async def go():
        worldctl.reset()
        _bms("jk02_32s")
        worldctl.add_peer(*HEADPHONES)
        link = BMSLink(_settings(bms_mac="01:02:03:04:05:06"), scan_ms=300, connect_timeout_ms=300)
        found = await link.scan(400)
        assert [d["family"] for d in found] == ["jk02_32s"]
        assert not await link.poll_once()
        assert "not recognised" in link.stats["last_error"]

    _run(go())


def test_scan_lists_the_connected_pack_that_does_not_advertise():
    async def go():
        worldctl.reset()
        mac = _bms("jbd")
        link = BMSLink(_settings(bms_mac=mac, bms_protocol="jbd"), scan_ms=300, connect_timeout_ms=600,
                       request_timeout_ms=600)
        assert await link.poll_once() and link.connected
        found = await link.scan(400)
        assert found and found[0]["mac"] == mac and found[0]["connected"] is True
        assert found[0]["family"] == "jbd" and len([d for d in found if d["mac"] == mac]) == 1
        await link.close()

    _run(go())


def _real_frames():
    import json

    path = "../shared/bms-frames/frames.json"
    try:
        with open(path) as f:
            return json.load(f)["frames"]
    except OSError:
        raise AssertionError("real BMS frames missing: %s (run from the project root)" % path)


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
        worldctl.reset()
        # the captured notifications, back to back, as they came
        if protocol == "jbd":
            rules = [{"at": 2, "byte": 3, "fragments": main["fragments"]},
                     {"at": 2, "byte": 4, "fragments": cells["fragments"]}]
        elif protocol == "daly":
            rules = [{"at": None, "fragments": main["fragments"]}]
        else:  # JK: no stream in the capture; the answer to the start request is the reading
            rules = [{"at": 4, "byte": 0x96, "fragments": main["fragments"]}]
        _bms(protocol, mtu_max=247, answer=rules, fragment_gap_ms=0)
        link = _link(protocol)
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
        worldctl.reset()
        mac = _bms("daly", mtu_max=247, mtu_exchange_fails=True)
        link = _link("daly", request_timeout_ms=150)
        assert await link.poll_once(), link.stats
        p = worldctl.peer(mac)
        assert p["mtu"] == 23 and p["fragments_sent"] == 7  # fell back to 20-byte fragments
        _check_reading(link.latest, VALUES)
        await link.close()

    _run(go())


def test_discovery_that_never_finishes_is_bounded():
    async def go():
        worldctl.reset()
        mac = _bms("jbd", discovery_stalls=True)  # the peer never answers service discovery
        link = _link("jbd", request_timeout_ms=120)
        t0 = _ms()
        assert not await link.poll_once()
        assert _ms() - t0 < 1500
        assert "TimeoutError" in link.stats["last_error"]
        # aioble leaves a discovery cut short "in progress" on its connection and hands that
        # connection to the next connect() while it lives: the link starts from a new Device
        assert link._device is None
        await asyncio.sleep_ms(30)
        assert not worldctl.peer(mac)["connected"] and not link.connected  # gave the BMS back
        worldctl.set_peer(mac, discovery_stalls=False)
        assert await link.poll_once()
        assert link.stats["reconnects"] == 1

    _run(go())


def test_error_frame_and_missing_service_are_errors_not_crashes():
    async def go():
        worldctl.reset()
        mac = _bms("jbd", answer="error")  # JBD answers with status 0x80 (error)
        link = _link("jbd")
        assert not await link.poll_once()
        assert link.stats["bad_frames"] == 1 and link.stats["errors"] == 1 and link.latest is None
        assert "BMSError" in link.stats["last_error"]
        worldctl.set_peer(mac, answer=None)
        assert await link.poll_once(), link.stats
        await link.close()
        # a device without the family's service
        worldctl.reset()
        worldctl.add_peer(MAC["jbd"], "SP04S034", [[0x180F, [[0x2A19, _R | _N]]]])
        link = _link("jbd")
        assert not await link.poll_once()
        assert "no service FF00" in link.stats["last_error"], link.stats
        await asyncio.sleep_ms(30)
        assert not worldctl.peer(MAC["jbd"])["connected"]

    _run(go())


def test_connected_follows_a_link_dropped_between_polls():
    async def go():
        worldctl.reset()
        mac = _bms("jbd")
        link = _link("jbd")
        assert await link.poll_once() and link.connected
        worldctl.call("drop_link", mac=mac)
        await asyncio.sleep_ms(30)
        assert not link.connected
        assert await link.poll_once()  # reconnects on its own
        assert link.connected and link.stats["reconnects"] == 1 and link.stats["errors"] == 0
        await link.close()
        assert not link.connected

    _run(go())


def test_restored_is_logged_once_data_flows_not_per_reconnect():
    async def go():
        worldctl.reset()
        mac = _bms("jbd", mtu_max=23)
        events = _Events()
        link = _link("jbd", events=events)
        assert await link.poll_once()
        for _ in range(4):  # every reconnect opens, then loses the link mid-answer
            worldctl.set_peer(mac, drop_after_fragments=1)
            assert not await link.poll_once()
        msgs = [m for _, m in events.items]
        assert not [m for m in msgs if "restored" in m], msgs
        assert len([m for m in msgs if "failed" in m]) == 1, msgs
        worldctl.set_peer(mac, drop_after_fragments=None)
        assert await link.poll_once(), link.stats
        assert await link.poll_once()
        msgs = [m for _, m in events.items]
        assert len([m for m in msgs if "restored" in m]) == 1, msgs
        await link.close()

    _run(go())


def test_radio_up_brings_the_ble_stack_up_without_a_bms():
    worldctl.link()
    import aioble

    worldctl.reset()
    aioble.core.ble.active(False)
    assert not worldctl.status()["ble_active"]
    link = _link("jbd")  # nothing advertising: the BMS is away
    assert link.radio_up() is True
    assert aioble.core.ble.active() and worldctl.status()["ble_active"]


def test_corrupt_and_unfinished_frames_are_counted_in_the_link_stats():
    async def go():
        worldctl.reset()
        mac = _bms("jbd")
        link = _link("jbd", request_timeout_ms=150)
        assert await link.poll_once()
        first = link.latest.to_dict()
        worldctl.set_peer(mac, answer="corrupt")  # a flipped bit: the checksum no longer matches
        assert not await link.poll_once()
        assert link.stats["bad_checksum"] == 1 and link.latest.to_dict() == first, link.stats
        worldctl.set_peer(mac, answer="half")  # the first half of a frame, then nothing
        assert not await link.poll_once()
        worldctl.set_peer(mac, answer=None)
        assert await link.poll_once()  # the next cycle drops the leftover and counts it
        assert link.stats["stalled"] == 1 and link.stats["dropped_bytes"] >= 6, link.stats
        assert link.latest.to_dict() == first
        await link.close()

    _run(go())


def test_jbd_on_the_fff0_service_variant():
    async def go():
        worldctl.reset()
        _bms("jbd", variant="fff0")
        link = _link("jbd")
        assert await link.poll_once(), link.stats
        _check_reading(link.latest, VALUES)
        await link.close()

    _run(go())


def test_notifications_arrive_as_memoryviews_valid_only_during_the_irq():
    # As on the chip: the IRQ's data is a memoryview into the stack's buffer; a handler that
    # keeps it sees it change. aioble copies (bytes(...)) before it queues, so must anyone else.
    worldctl.link()
    import aioble

    async def go():
        worldctl.reset()
        _bms("jbd")
        kept = []
        ble = aioble.core.ble
        real = ble._irq

        def spy(event, data):
            if event == 18:
                kept.append((data[2], bytes(data[2])))
            return real(event, data)

        ble.irq(spy)
        try:
            link = _link("jbd")
            assert await link.poll_once() and await link.poll_once()
            await link.close()
        finally:
            ble.irq(real)
        assert len(kept) >= 4, kept
        assert all(isinstance(mv, memoryview) for mv, _ in kept), kept
        assert any(bytes(mv) != copy for mv, copy in kept), kept  # the buffer was reused

    _run(go())


def test_charge_fet_command_reaches_the_bms_at_the_next_cycle():
    # the second cut-off of a stuck relay (smartbms.app): JBD register 0xE1, JK command 0x1D
    async def go():
        for family in ("jbd", "jk02_32s"):
            worldctl.reset()
            mac = _bms(family, stream_ms=50)
            link = _link(family)
            assert await link.poll_once(), link.stats
            task = asyncio.create_task(link.set_charge_fet(False))
            await asyncio.sleep_ms(0)
            assert await link.poll_once(), link.stats
            await task  # answered: no error
            assert worldctl.peer(mac)["charge_fet_off"] is True, family
            task = asyncio.create_task(link.set_charge_fet(True))
            await asyncio.sleep_ms(0)
            assert await link.poll_once()
            await task
            assert worldctl.peer(mac)["charge_fet_off"] is False, family
            await link.close()
        worldctl.reset()
        _bms("daly")
        daly = _link("daly")
        try:
            await daly.set_charge_fet(False)
            raise AssertionError("a Daly has no charge MOSFET command here")
        except linkmod.LinkError as e:
            assert "no charge MOSFET command" in str(e)

    _run(go())
