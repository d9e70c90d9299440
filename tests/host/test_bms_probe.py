# bms_probe without bleak: argument handling, advertisement -> protocol, characteristic
# choice, and the notification -> Reading pipeline against a fake bleak client that
# answers like each BMS family (frames from sim/bms_frames.py, split into notifications).
import asyncio
import io
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for sub in ("scripts", "sim", "modules"):
    if os.path.join(ROOT, sub) not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, sub))

import bms_frames as bf  # noqa: E402
import bms_probe  # noqa: E402
from smartbms.bms import protocols  # noqa: E402

VALUES = {"voltage": 13.28, "current": -2.5, "soc": 64, "remaining_ah": 64.0, "nominal_ah": 100.0,
          "cycles": 12, "cells": (3.32, 3.321, 3.319, 3.32), "temperatures": (21.0, 22.0),
          "charge_fet": True, "discharge_fet": True}


class Char:
    def __init__(self, uuid, properties):
        self.uuid = uuid
        self.properties = properties


class Service:
    def __init__(self, uuid, chars):
        self.uuid = uuid
        self.characteristics = chars


class FakeClient:
    """The part of bleak.BleakClient the probe uses."""

    def __init__(self, protocol, mtu=20, corrupt=False, silent=False):
        self.protocol = protocol
        self.mtu = mtu
        self.corrupt = corrupt
        self.silent = silent
        self.writes = []
        self._cb = None
        self._stream = None
        self._busy_until = 0.0
        if protocol == "jbd":
            self.services = [Service(bms_probe.uuid128(0xFF00), [
                Char(bms_probe.uuid128(0xFF01), ["read", "notify"]),
                Char(bms_probe.uuid128(0xFF02), ["write", "write-without-response"])])]
        elif protocol == "daly":
            self.services = [Service(bms_probe.uuid128(0xFFF0), [
                Char(bms_probe.uuid128(0xFFF1), ["notify"]),
                Char(bms_probe.uuid128(0xFFF2), ["write-without-response"])])]
        elif protocol == "seplos":
            self.services = [Service(bms_probe.uuid128(0xFFF0), [
                Char(bms_probe.uuid128(0xFFF1), ["read", "notify"]),
                Char(bms_probe.uuid128(0xFFF2), ["read", "write-without-response", "write"])])]
        elif protocol == "ant":  # one FFE1 for both; syssi's log also shows a writable FFE2
            self.services = [Service(bms_probe.uuid128(0xFFE0), [
                Char(bms_probe.uuid128(0xFFE1), ["notify", "write-without-response", "write"]),
                Char(bms_probe.uuid128(0xFFE2), ["write-without-response", "write"])])]
        elif protocol == "redodo":  # FFE3 is the module's AT-command channel
            self.services = [Service(bms_probe.uuid128(0xFFE0), [
                Char(bms_probe.uuid128(0xFFE1), ["notify"]),
                Char(bms_probe.uuid128(0xFFE2), ["write"]),
                Char(bms_probe.uuid128(0xFFE3), ["write-without-response"])])]
        elif protocol == "renogy":  # write in FFD0, notify in FFF0
            self.services = [Service(bms_probe.uuid128(0xFFD0), [
                Char(bms_probe.uuid128(0xFFD1), ["write-without-response"])]),
                Service(bms_probe.uuid128(0xFFF0), [Char(bms_probe.uuid128(0xFFF1), ["notify"])])]
        else:  # the newer JK module: two FFE1 characteristics, told apart by properties
            self.services = [Service(bms_probe.uuid128(0xFFE0), [
                Char(bms_probe.uuid128(0xFFE1), ["write", "write-without-response"]),
                Char(bms_probe.uuid128(0xFFE1), ["notify"])])]

    async def start_notify(self, char, cb):
        assert "notify" in char.properties
        self._cb = cb

    def _send(self, frame):
        if self.corrupt:
            frame = bytearray(frame)
            frame[len(frame) // 2] ^= 0xFF
        # One notification per millisecond, frames one after another, as on the air.
        loop = asyncio.get_event_loop()
        t = max(loop.time(), self._busy_until)
        for part in bf.fragments(frame, self.mtu):
            t += 0.001
            loop.call_at(t, self._cb, None, bytearray(part))
        self._busy_until = t

    async def write_gatt_char(self, char, data, response=False):
        assert "write" in char.properties or "write-without-response" in char.properties
        if self.protocol in ("ant", "redodo", "renogy"):  # the family's own write characteristic
            assert char.uuid == bms_probe.uuid128(protocols.get(self.protocol).write_uuid)
        self.writes.append(bytes(data))
        if self.silent:
            return
        for frame in bf.respond(self.protocol, data, VALUES):
            self._send(frame)
        if self.protocol.startswith("jk02") and data[4] == 0x96 and self._stream is None:
            self._stream = asyncio.ensure_future(self._stream_cells(data))

    async def _stream_cells(self, request):
        while True:
            await asyncio.sleep(0.02)
            for frame in bf.respond(self.protocol, request, VALUES):
                self._send(frame)


def run_probe(client, protocol, count=2, timeout=2.0):
    out = io.StringIO()

    async def go():
        try:
            return await bms_probe.probe(client, protocol, count=count, interval=0, timeout=timeout, out=out)
        finally:
            if client._stream:
                client._stream.cancel()

    session = asyncio.run(go())
    return session, [json.loads(x) for x in out.getvalue().splitlines()]


@pytest.mark.parametrize("protocol", protocols.NAMES)
def test_probe_prints_readings(protocol):
    client = FakeClient(protocol, mtu=20)
    session, lines = run_probe(client, protocol, count=2)
    readings = [x for x in lines if "info" not in x]
    assert len(readings) == 2
    r = readings[-1]
    if protocol in ("seplos", "ant", "redodo", "renogy"):
        _check_new_family(protocol, r, client)
        return
    assert r["cells"] == [3.32, 3.321, 3.319, 3.32]
    assert r["current"] == -2.5
    assert r["voltage"] == (13.3 if protocol == "daly" else 13.28)  # Daly: 0.1 V steps
    assert r["charge_fet"] is True and r["faults"] == []
    if protocol == "daly":
        assert r["soc"] == 64 and r["temperatures"] == [21, 22]
    else:
        assert r["soc"] == 64 and r["temperatures"] == [21.0, 22.0] and r["cycles"] == 12
    if protocol.startswith("jk02"):
        assert client.writes[:2] == list(protocols.get(protocol).start_requests())
        assert any("info" in x and x["info"]["type"] == "device_info" for x in lines)
    else:
        assert len(client.writes) == 2 * len(protocols.get(protocol).poll_requests())


def _check_new_family(protocol, r, client):
    # Each family's own resolution: Renogy cells and voltage in 0.1 V, ANT/Redodo temperatures and SOC
    # in whole units, Seplos four sensors per pack, Redodo one sensor and no FET state.
    cells = [3.3] * 4 if protocol == "renogy" else [3.32, 3.321, 3.319, 3.32]
    assert r["cells"] == cells and r["current"] == -2.5
    assert r["voltage"] == (13.3 if protocol == "renogy" else 13.28)
    assert r["soc"] == 64 and r["faults"] == []
    temps = {"seplos": [21.0, 22.0, 22.0, 22.0], "ant": [21, 22], "redodo": [21], "renogy": [21.0, 22.0]}
    assert r["temperatures"] == temps[protocol]
    assert r["cycles"] == (None if protocol == "ant" else 12)
    assert r["charge_fet"] is (None if protocol == "redodo" else True)
    driver = protocols.get(protocol)
    polls = 2 * len(driver.poll_requests())
    assert client.writes == list(driver.start_requests()) + list(driver.poll_requests()) * 2
    assert len(client.writes) == polls + len(driver.start_requests())


def test_probe_times_out_on_silence():
    with pytest.raises(bms_probe.ProbeError, match="no answer"):
        run_probe(FakeClient("jbd", silent=True), "jbd", count=1, timeout=0.2)


def test_probe_reports_bad_checksums():
    with pytest.raises(bms_probe.ProbeError, match="bad checksum [1-9]"):
        run_probe(FakeClient("daly", corrupt=True), "daly", count=1, timeout=0.2)


def test_wrong_protocol_has_no_service():
    with pytest.raises(bms_probe.ProbeError, match="no jbd service"):
        run_probe(FakeClient("jk02_32s"), "jbd", count=1)


def test_characteristics_are_picked_by_their_properties():
    # a JBD on FFF0/FFF1/FFF2: the firmware's link reads it too
    s = Service(bms_probe.uuid128(0xFFF0), [Char(bms_probe.uuid128(0xFFF2), ["write-without-response"]),
                                             Char(bms_probe.uuid128(0xFFF1), ["read", "notify"])])
    notify, write = bms_probe.pick_characteristics([s], bms_probe.protocols.get("jbd"))
    assert notify.uuid == bms_probe.uuid128(0xFFF1) and write.uuid == bms_probe.uuid128(0xFFF2)
    s = Service(bms_probe.uuid128(0xFF00), [Char(bms_probe.uuid128(0xFF01), ["read"])])
    with pytest.raises(bms_probe.ProbeError, match="lacks a notify"):
        bms_probe.pick_characteristics([s], bms_probe.protocols.get("jbd"))


def test_renogy_notify_comes_from_its_own_service():
    write = Service(bms_probe.uuid128(0xFFD0), [Char(bms_probe.uuid128(0xFFD1), ["write-without-response"])])
    notify = Service(bms_probe.uuid128(0xFFF0), [Char(bms_probe.uuid128(0xFFF1), ["notify"]),
                                                  Char(bms_probe.uuid128(0xFFF2), ["write"])])
    n, w = bms_probe.pick_characteristics([notify, write], protocols.get("renogy"))
    assert n.uuid == bms_probe.uuid128(0xFFF1) and w.uuid == bms_probe.uuid128(0xFFD1)
    with pytest.raises(bms_probe.ProbeError, match="no renogy notify service"):
        bms_probe.pick_characteristics([write], protocols.get("renogy"))


def test_describe_advertisement():
    line = bms_probe.describe_advertisement("C8:47:8C:00:00:01", "JK-B2A8S20P",
                                            [bms_probe.uuid128(0xFFE0)], {0x0B65: b"\x01"}, -70)
    assert line == {"mac": "C8:47:8C:00:00:01", "name": "JK-B2A8S20P", "rssi": -70, "protocol": "jk02_32s"}
    assert bms_probe.describe_advertisement("x", "SP04S034", [])["protocol"] == "jbd"
    assert bms_probe.describe_advertisement("x", None, [bms_probe.uuid128(0xFFF0)])["protocol"] == "daly"
    assert bms_probe.describe_advertisement("x", "Phone", [], {76: b""})["protocol"] is None
    assert bms_probe.describe_advertisement("x", "SP05B2312190075", [bms_probe.uuid128(0xFFF0)])["protocol"] == "seplos"
    assert bms_probe.describe_advertisement("x", "L-12100BNNA70-A09683", [bms_probe.uuid128(0xFFE0)],
                                            {0x585A: b"\xc8"})["protocol"] == "redodo"


def test_parse_args():
    a = bms_probe.parse_args(["--mac", "AA:BB:CC:DD:EE:FF", "--count", "3", "--protocol", "daly"])
    assert a.mac == "AA:BB:CC:DD:EE:FF" and a.count == 3 and a.protocol == "daly" and not a.scan
    assert bms_probe.parse_args(["--scan"]).scan
    assert bms_probe.parse_args(["--mac", "AA:BB:CC:DD:EE:FF"]).protocol == "auto"
    for bad in ([], ["--scan", "--mac", "AA:BB:CC:DD:EE:FF"], ["--mac", "nope"],
                ["--mac", "AA:BB:CC:DD:EE:FF", "--count", "0"],
                ["--mac", "AA:BB:CC:DD:EE:FF", "--protocol", "foo"]):
        with pytest.raises(SystemExit) as e:
            bms_probe.parse_args(bad)
        assert e.value.code == 2


def test_missing_bleak_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bleak", None)  # makes `import bleak` fail
    err = io.StringIO()
    assert bms_probe.main(["--scan"], io.StringIO(), err) == 2
    assert err.getvalue().strip() == "bms_probe: bms_probe needs the 'bleak' package on the laptop: pip install bleak"
