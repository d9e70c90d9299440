# Capture mode for unknown packs (smartbms.bms.capture). The pure parts (arguments, hex, the
# file's lines, the bounded file, the IRQ ring, the refusal) run on both runtimes; the
# captures themselves run against the simulated world's unknown peer
# (sim/world/unknown_peer.py) on the unix port, with the real aioble.
import asyncio
import os

import worldctl
from apputil import FakeMachine, fresh_root
from battery import Battery
from testutil import raises, run_async

from smartbms import app as app_mod
from smartbms import clock, paths
from smartbms.bms import capture
from smartbms.bms import capture_format as fmt
from smartbms.bms.link import BMSLink

UNKNOWN = "11:22:33:44:55:66"
JBD = "A4:C1:37:00:00:09"
VALUES = {"voltage": 13.3, "current": -2.5, "soc": 77, "remaining_ah": 77.0, "nominal_ah": 100.0,
          "cycles": 12, "cells": (3.31, 3.32, 3.33, 3.32), "temperatures": (21.0, 22.0),
          "charge_fet": True, "discharge_fet": True}


def _quiet(*a):
    pass


def _read(path):
    with open(path) as f:
        return f.read()


def _records(text):
    """The data lines as [ms, handle, uuid, kind, rest]."""
    out = []
    for line in text.split("\n"):
        if line and not line.startswith("#"):
            p = line.split(" ", 4)
            out.append([int(p[0]), int(p[1], 16), p[2], p[3], p[4]])
    return out


# ---- pure parts ------------------------------------------------------------------

def test_hex_requests_in_the_usual_spellings_and_refusals():
    assert fmt.parse_hex("dd a5 03 00 ff fd 77") == b"\xdd\xa5\x03\x00\xff\xfd\x77"
    assert fmt.parse_hex("01:03:FF") == b"\x01\x03\xff"
    assert fmt.parse_hex("0x0103") == b"\x01\x03"
    for bad in ("", "0", "zz", "01 0", 12, "00" * 65):
        e = raises(capture.CaptureArgError, fmt.parse_hex, bad)
        assert e.field == "request_hex"


def test_arguments_are_checked_with_the_field_named():
    a = fmt.check_args({"mac": "11-22-33-44-55-66", "request_hex": "a5 01", "every_s": 2, "seconds": 30,
                            "write_uuid": "FFB2"})
    assert a == {"mac": UNKNOWN, "request": b"\xa5\x01", "every_s": 2, "seconds": 30, "write_uuid": "ffb2"}
    a = fmt.check_args({"mac": UNKNOWN})
    assert a["request"] is None and a["every_s"] == 5 and a["seconds"] == 60 and a["write_uuid"] is None
    for doc, field in (({}, "mac"), ({"mac": "nope"}, "mac"), ({"mac": UNKNOWN, "seconds": 601}, "seconds"),
                       ({"mac": UNKNOWN, "seconds": 4}, "seconds"), ({"mac": UNKNOWN, "every_s": 0}, "every_s"),
                       ({"mac": UNKNOWN, "every_s": True}, "every_s"),
                       ({"mac": UNKNOWN, "write_uuid": "f2"}, "write_uuid"),
                       ({"mac": UNKNOWN, "write_uuid": 65522}, "write_uuid"), ({"mac": UNKNOWN, "x": 1}, "x")):
        e = raises(capture.CaptureArgError, fmt.check_args, doc)
        assert e.field == field, (doc, e.field)


def test_uuids_properties_and_record_lines():
    assert fmt.uuid_text(0xFFB1) == "ffb1"
    assert fmt.uuid_text("UUID(0xffb1)") == "ffb1"
    assert fmt.uuid_text("UUID('0000ffb1-0000-1000-8000-00805f9b34fb')") == "ffb1"
    long = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
    assert fmt.uuid_text("UUID('%s')" % long) == long
    assert fmt.props_text(0x02 | 0x10) == "read,notify"
    assert fmt.props_text(0x04 | 0x08) == "write-no-response,write"
    assert fmt.props_text(0) == "none"
    assert fmt.record_line(1234, 3, "ffb1", "notify", b"\xa5\x01") == "1234 0x0003 ffb1 notify a501\n"
    assert fmt.record_line(5, 5, "ffb2", "error", "write failed:\nx") == "5 0x0005 ffb2 error write failed: x\n"


def test_bounded_file_never_passes_its_cap_and_keeps_room_for_the_end():
    fresh_root()
    path = paths.path("cap_test.txt")
    f = fmt.BoundedFile(path, cap=1000)
    f.begin("# head\n")
    line = "x" * 49 + "\n"
    n = 0
    while f.append((line, line)):
        n += 2
    assert f.full and f.size <= 1000 - 160
    f.finish("# end: file full; " + "y" * 400)  # an end line longer than its room is cut
    size = os.stat(path)[6]
    assert size == f.size and size <= 1000
    text = _read(path)
    assert text.startswith("# head\n") and text.endswith("\n")
    assert text.split("\n")[-2].startswith("# end: file full")
    assert not f.append((line,))  # nothing more once full
    assert os.stat(path)[6] == size


def test_ring_keeps_order_with_times_and_counts_what_it_drops():
    r = fmt.Ring(slots=4)
    r.t0 = 0
    for i in range(6):
        r.put(3 << 1, bytes([i]))
    assert len(r) == 4 and r.count == 4 and r.lost == 2
    got = [r.pop() for _ in range(4)]
    assert [d for _, _, d in got] == [b"\x00", b"\x01", b"\x02", b"\x03"]
    assert all(k == 6 for _, k, _ in got)
    raises(IndexError, r.pop)
    sink = fmt._Sink(r, 7)
    assert len(sink) == 0  # aioble keeps nothing of its own
    sink.append(b"\xff")
    assert r.pop()[1:] == (7, b"\xff")


def test_file_reader_stops_at_the_size_the_download_started_with():
    fresh_root()
    path = paths.path("cap_read.txt")
    with open(path, "w") as f:
        f.write("a" * 2500)
    rd = fmt.FileReader(path, 2100)
    chunks = []
    while True:
        c = rd.read(1024)
        chunks.append(len(c))
        if len(c) < 1024:
            break
    rd.close()
    assert chunks == [1024, 1024, 52]


class _Ctl:
    def __init__(self, relay=False, state="resting", fet_off=False):
        self.relay = relay
        self.state = state
        self.bms_charge_off = fet_off


class _Ctx:
    def __init__(self, **kw):
        self.controller = _Ctl(**kw)
        self.safe_mode = False


def test_refused_while_charging_depends_on_the_link():
    assert fmt.refusal(_Ctx()) is None
    assert fmt.refusal(_Ctx(state="no_data")) is None
    assert "relay is on" in fmt.refusal(_Ctx(relay=True, state="charging"))
    assert "charge is in progress" in fmt.refusal(_Ctx(state="balancing"))
    assert "MOSFET" in fmt.refusal(_Ctx(fet_off=True, state="fault"))
    c = _Ctx(relay=True)
    c.safe_mode = True  # the relay is held off in safe mode, whatever the controller says
    assert fmt.refusal(c) is None


def test_the_app_refuses_a_capture_while_it_charges_and_starts_none():
    fresh_root()
    a = app_mod.App(machine=FakeMachine(False), log=_quiet)
    a.link.latest = Battery(soc=55.0).reading(received=clock.now())  # fresh data, SOC below target

    a.control_step()
    assert a.relay.on and a.controller.state == "charging"
    e = raises(capture.CaptureRefused, capture.start, a, {"mac": UNKNOWN})
    assert "relay is on" in str(e)
    assert capture.current() is None or not capture.current().running
    assert not a.link_paused


# ---- against the world -------------------------------------------------------------

def _run(go):
    worldctl.link()  # skips where there is no world (CPython)

    async def with_cleanup():
        try:
            return await go()
        finally:
            worldctl.reset()
            await asyncio.sleep_ms(30)

    return run_async(with_cleanup())


def test_capture_lists_the_gatt_layout_subscribes_and_records_answers():
    async def go():
        worldctl.reset()
        fresh_root()
        worldctl.call("add_unknown_peer", mac=UNKNOWN, name="Mystery BMS")
        path = paths.path("c1.txt")
        c = capture.Capture(object(), UNKNOWN, b"\xa5\x01\x02", every_s=0.5, seconds=2, path=path)
        await c.run()
        assert c.state == "done", c.info()
        p = worldctl.peer(UNKNOWN)
        assert not p["connected"] and p["disconnects"] == 1  # the radio is given back
        writes = [w for w in p["writes"] if w[0] == "ffb2"]
        assert 3 <= len(writes) <= 5 and all(w[1] == "a50102" for w in writes), p["writes"]
        text = _read(path)
        head = [line for line in text.split("\n") if line.startswith("#")]
        assert head[0] == "# smartbms BLE capture"
        assert head[1].startswith("# version: ")
        assert "# mac: 11:22:33:44:55:66  name: Mystery BMS  rssi: -58" in head
        assert "# advertised: services ffb0 180f  manufacturer 0x1234 c0ffee" in head
        assert "# service ffb0 handles 0x0001-0x0009" in head
        assert "#   char ffb1 handle 0x0003 props read,notify" in head
        assert "#   char ffb2 handle 0x0006 props write-no-response,write request-target" in head
        assert "#   char ffb3 handle 0x0008 props notify" in head
        assert "#   char 2a19 handle 0x000c props read,notify" in head
        assert "# request: a50102 every 0.5 s to ffb2 (handle 0x0006)" in head
        assert "# mtu: 185" in head
        assert sum(1 for h in head if h.startswith("# subscribed ")) == 3 and c.subscribed == 3
        assert head[-1].startswith("# end: 2 s passed; ")
        recs = _records(text)
        kinds = [r[3] for r in recs]
        assert kinds.count("write") == len(writes)
        notes = [r for r in recs if r[3] == "notify"]
        # each write is answered with a 30-byte frame on ffb1 and two bytes on ffb3
        assert len(notes) >= 2 * (len(writes) - 1) and c.ring.count == len(notes) and c.ring.lost == 0
        f1 = [r for r in notes if r[2] == "ffb1"]
        assert f1 and all(r[1] == 3 and r[4].startswith("a51ca503") and len(r[4]) == 60 for r in f1)
        assert all(r[1] == 8 and r[4] == "eea5" for r in notes if r[2] == "ffb3")
        ms = [r[0] for r in recs]
        assert ms == sorted(ms) and 0 <= ms[0] and ms[-1] <= 2500
        # the first answer follows the first write
        assert recs[0][3] == "write" and recs[1][3] == "notify"
        info = c.info()
        assert info["notifications"] == len(notes) and info["bytes"] == len(text) and info["end"] == "2 s passed"

    _run(go)


def test_capture_file_is_bounded_and_says_why_it_ended():
    async def go():
        worldctl.reset()
        fresh_root()
        worldctl.call("add_unknown_peer", mac=UNKNOWN)
        path = paths.path("c2.txt")
        c = capture.Capture(object(), UNKNOWN, b"\x01", every_s=0.05, seconds=20, cap=2048, path=path)
        t0 = clock.ticks_real_ms()
        await c.run()
        assert clock.real_ms_since(t0) < 10000  # a full file ends the capture
        assert c.state == "done" and c.file.full
        size = os.stat(path)[6]
        assert size <= 2048 and size == c.file.size
        text = _read(path)
        assert text.endswith("\n") and text.split("\n")[-2].startswith("# end: file full (2048 bytes); ")
        assert not worldctl.peer(UNKNOWN)["connected"]

    _run(go)


def test_stop_ends_a_running_capture_with_its_file_complete():
    async def go():
        worldctl.reset()
        fresh_root()
        worldctl.call("add_unknown_peer", mac=UNKNOWN)
        path = paths.path("c4.txt")
        c = capture.Capture(object(), UNKNOWN, b"\x01", every_s=1, seconds=60, path=path)
        task = asyncio.create_task(c.run())
        t0 = clock.ticks_real_ms()
        while c.state != "running" and clock.real_ms_since(t0) < 8000:
            await asyncio.sleep_ms(50)
        assert c.state == "running" and c.running
        await asyncio.sleep_ms(500)
        c.stop()
        await task
        assert c.state == "done" and c.end == "stopped by the user" and c.error is None
        assert clock.real_ms_since(t0) < 5000
        assert _read(path).split("\n")[-2].startswith("# end: stopped by the user; ")
        assert not worldctl.peer(UNKNOWN)["connected"]
        # stopped while it still looks for the device: no error either
        c = capture.Capture(object(), "11:22:33:44:55:77", None, path=path, scan_ms=3000)
        task = asyncio.create_task(c.run())
        await asyncio.sleep_ms(200)
        c.stop()
        await task
        assert c.state == "done" and c.end == "stopped by the user"

    _run(go)


def test_a_device_that_is_not_there_fails_the_capture_cleanly():
    async def go():
        worldctl.reset()
        fresh_root()
        path = paths.path("c3.txt")
        c = capture.Capture(object(), "11:22:33:44:55:77", None, seconds=2, path=path, scan_ms=300, connect_ms=500)
        await c.run()
        assert c.state == "failed" and c.error, c.info()
        text = _read(path)
        assert "(not seen advertising; tried its public address)" in text
        assert text.split("\n")[-2].startswith("# end: ")
        assert not worldctl.status()["connect_pending"]  # the controller's attempt was cancelled

    _run(go)


def test_the_bms_link_pauses_for_a_capture_and_resumes_after():
    async def go():
        worldctl.reset()
        fresh_root()
        worldctl.add_bms("jbd", mac=JBD, values=VALUES)
        worldctl.call("add_unknown_peer", mac=UNKNOWN)
        a = app_mod.App(machine=FakeMachine(False), log=_quiet)
        a.link = BMSLink({"bms_protocol": "jbd", "bms_mac": JBD, "bms_name": "", "bms_mode": "persistent",
                          "poll_interval_s": 2}, request_timeout_ms=500, connect_timeout_ms=2000, scan_ms=1000)
        task = asyncio.create_task(a._link_task())
        try:
            t0 = clock.ticks_real_ms()
            while a.link.latest is None and clock.real_ms_since(t0) < 8000:
                await asyncio.sleep_ms(50)
            assert a.link.latest is not None, a.link.stats
            assert worldctl.peer(JBD)["connected"]
            a.control_step()
            assert a.relay.on  # SOC 77 %: charging, so a capture is refused
            raises(capture.CaptureRefused, capture.start, a, {"mac": UNKNOWN})
            a.set_override("off", 30)  # what the refusal tells the owner to do
            assert not a.relay.on
            first = a.link.stats["connects"]
            info = capture.start(a, {"mac": UNKNOWN, "request_hex": "a5", "every_s": 1, "seconds": 5})
            assert info["state"] == "starting" and info["mac"] == UNKNOWN
            raises(capture.CaptureRefused, capture.start, a, {"mac": UNKNOWN})  # one at a time
            saw_paused = False
            while capture.current().running:
                if capture.current().state == "running":
                    saw_paused = True
                    assert a.link_paused
                    # the world is another process: it may see the link's disconnect a moment
                    # after the device (under load, CI saw it still connected once)
                    t1 = clock.ticks_real_ms()
                    while worldctl.peer(JBD)["connected"] and clock.real_ms_since(t1) < 1000:
                        await asyncio.sleep_ms(20)
                    assert not worldctl.peer(JBD)["connected"]
                    assert worldctl.peer(UNKNOWN)["connected"]
                    a.control_step()  # charge control gets no BMS data meanwhile: relay off
                    assert not a.relay.on and a.controller.state == "no_data"
                    assert a.controller.reason == "no BMS reading"
                await asyncio.sleep_ms(100)
            assert saw_paused and capture.current().state == "done", capture.current().info()
            assert not a.link_paused
            st = capture.status()
            assert st["state"] == "done" and st["notifications"] >= 6 and st["file_bytes"] == st["bytes"]
            # the link comes back by itself and reads again
            before = a.link.latest.received
            t0 = clock.ticks_real_ms()
            while (a.link.stats["connects"] == first or a.link.latest.received == before) \
                    and clock.real_ms_since(t0) < 10000:
                await asyncio.sleep_ms(50)
            assert a.link.stats["connects"] == first + 1 and a.link.latest.received > before, a.link.stats
            assert worldctl.peer(JBD)["connected"] and not worldctl.peer(UNKNOWN)["connected"]
            assert any("capture of 11:22:33:44:55:66 ended: 5 s passed" in e["msg"] for e in a.events.recent(20))
            # the file stays until erased; DELETE erases it once no capture runs
            assert capture.stop_or_erase() == {"erased": True}
            assert capture.status() == {"state": "idle", "file_bytes": None}
        finally:
            task.cancel()
            await a.link.close()

    _run(go)
