# bms_probe.py --capture without bleak or hardware: argument handling, and the capture
# (scripts/ble_capture.py) against a stand-in client that answers like the simulator's unknown
# peer (sim/world/unknown_peer.py), in the device's file format.
import asyncio
import io
import json
import os
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for sub in ("scripts", "sim", "modules"):
    if os.path.join(ROOT, sub) not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, sub))

import ble_capture  # noqa: E402
import bms_probe  # noqa: E402
from world import unknown_peer  # noqa: E402

MAC = "11:22:33:44:55:66"


def u128(u16):
    return "0000%04x-0000-1000-8000-00805f9b34fb" % u16


class Desc:
    def __init__(self, handle):
        self.handle = handle


class Char:
    def __init__(self, uuid, handle, props, cccd=None):
        self.uuid = u128(uuid)
        self.handle = handle
        self.properties = props
        self.descriptors = [Desc(cccd)] if cccd else []


class Service:
    def __init__(self, uuid, handle, chars):
        self.uuid = u128(uuid)
        self.handle = handle
        self.characteristics = chars


class FakeClient:
    """The part of bleak.BleakClient a capture uses; the layout and handles of the sim's
    unknown peer, and its answers to a write on FFB2."""

    def __init__(self, fail_write=False, fail_subscribe=None):
        self.ffb1 = Char(0xFFB1, 3, ["read", "notify"], 4)
        self.ffb2 = Char(0xFFB2, 6, ["write-without-response", "write"])
        self.ffb3 = Char(0xFFB3, 8, ["notify"], 9)
        self.level = Char(0x2A19, 12, ["read", "notify"], 13)
        self.services = [Service(0x180F, 10, [self.level]),  # out of order: sorted by handle
                         Service(0xFFB0, 1, [self.ffb1, self.ffb2, self.ffb3])]
        self.mtu_size = 185
        self.is_connected = True
        self.callbacks = {}
        self.writes = []
        self.fail_write = fail_write
        self.fail_subscribe = fail_subscribe

    async def start_notify(self, char, cb):
        if char.handle == self.fail_subscribe:
            raise RuntimeError("CCCD write refused")
        self.callbacks[char.handle] = cb

    async def stop_notify(self, char):
        self.callbacks.pop(char.handle, None)

    async def write_gatt_char(self, char, data, response=None):
        if self.fail_write:
            raise OSError("not connected")
        self.writes.append((char.handle, bytes(data), response))
        loop = asyncio.get_running_loop()
        for uuid, payload in unknown_peer.answer_frames(bytes(data)):
            ch = {0xFFB1: self.ffb1, 0xFFB3: self.ffb3}[uuid]
            if ch.handle in self.callbacks:
                loop.call_later(0.01, self.callbacks[ch.handle], ch, bytearray(payload))


def _records(text):
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            p = line.split(" ", 4)
            out.append((int(p[0]), int(p[1], 16), p[2], p[3], p[4]))
    return out


def _capture(tmp_path, client, **kw):
    path = str(tmp_path / "cap.txt")
    kw.setdefault("request", b"\xa5\x01\x02")
    kw.setdefault("every_s", 0.25)
    kw.setdefault("seconds", 1.0)
    summary = asyncio.run(ble_capture.capture(client, path, MAC, "Mystery BMS", -58, [u128(0xFFB0)],
                                              {0x1234: b"\xc0\xff\xee"}, **kw))
    with open(path) as f:
        return summary, f.read()


def test_capture_file_has_the_devices_format(tmp_path):
    client = FakeClient()
    summary, text = _capture(tmp_path, client)
    head = [line for line in text.splitlines() if line.startswith("#")]
    assert head[0] == "# smartbms BLE capture" and head[1].startswith("# version: ")
    # the same header lines as the device writes for the sim's unknown peer (tests/unit/test_capture.py)
    for line in ("# mac: 11:22:33:44:55:66  name: Mystery BMS  rssi: -58",
                 "# advertised: services ffb0  manufacturer 0x1234 c0ffee",
                 "# service ffb0 handles 0x0001-0x0009",
                 "#   char ffb1 handle 0x0003 props read,notify",
                 "#   char ffb2 handle 0x0006 props write-no-response,write request-target",
                 "#   char ffb3 handle 0x0008 props notify",
                 "#   char 2a19 handle 0x000c props read,notify",
                 "# mtu: 185", "# subscribed 0x0003 ffb1 (notify)", "# subscribed 0x0008 ffb3 (notify)",
                 "# subscribed 0x000c 2a19 (notify)",
                 "# request: a50102 every 0.25 s to ffb2 (handle 0x0006)", "# columns: ms handle uuid kind hex"):
        assert line in head, line
    assert head.index("# service ffb0 handles 0x0001-0x0009") < head.index("# service 180f handles 0x000a-0x000d")
    assert head[-1].startswith("# end: 1.0 s passed; %d notifications, 0 lost, %d requests"
                               % (summary["notifications"], summary["requests"]))
    recs = _records(text)
    writes = [r for r in recs if r[3] == "write"]
    notes = [r for r in recs if r[3] == "notify"]
    assert 3 <= len(writes) <= 5 and len(writes) == len(client.writes) == summary["requests"]
    assert all(w == (6, b"\xa5\x01\x02", False) for w in client.writes)  # without response where it can
    assert len(notes) == summary["notifications"] >= 2 * (len(writes) - 1)
    frame = unknown_peer.answer_frames(b"\xa5\x01\x02")[0][1].hex()
    assert all(r[4] == frame for r in notes if r[2] == "ffb1" and r[1] == 3)
    assert [r[0] for r in recs] == sorted(r[0] for r in recs)
    assert recs[0][3] == "write" and recs[1][3] == "notify"
    assert summary == {"file": str(tmp_path / "cap.txt"), "bytes": len(text), "notifications": len(notes),
                       "requests": len(writes), "subscribed": 3, "end": "1.0 s passed"}
    assert client.callbacks == {}  # unsubscribed at the end


def test_capture_is_bounded(tmp_path):
    summary, text = _capture(tmp_path, FakeClient(), every_s=0.05, seconds=30.0, cap=1500)
    assert len(text.encode()) <= 1500 and summary["end"] == "file full (1500 bytes)"
    assert text.splitlines()[-1].startswith("# end: file full (1500 bytes); ")


def test_failures_are_recorded_not_fatal(tmp_path):
    summary, text = _capture(tmp_path, FakeClient(fail_write=True, fail_subscribe=8), seconds=0.5)
    assert "# subscribe 0x0008 failed: RuntimeError CCCD write refused" in text
    errs = [r for r in _records(text) if r[3] == "error"]
    assert errs and errs[0][4] == "write failed: OSError not connected"
    assert summary["subscribed"] == 2


def test_no_request_and_a_named_write_characteristic(tmp_path):
    summary, text = _capture(tmp_path, FakeClient(), request=None, seconds=0.3)
    assert "# request: none" in text and "props write-no-response,write first-writable" in text
    assert summary["requests"] == 0
    _, text = _capture(tmp_path, FakeClient(), write_uuid="fff9", seconds=0.3)
    assert "# request: none sent (no writable characteristic fff9)" in text


def test_parse_args_for_capture():
    a = bms_probe.parse_args(["--mac", MAC, "--capture", "--request", "dd a5 03 00 ff fd 77", "--every", "2",
                              "--seconds", "30", "--write-uuid", "FFB2"])
    assert a.capture and a.request == bytes.fromhex("dda50300fffd77") and a.every == 2 and a.seconds == 30
    assert a.write_uuid == "ffb2" and a.out == "capture-112233445566.txt" and a.max_bytes == 32768
    a = bms_probe.parse_args(["--mac", MAC, "--capture", "--out", "x.txt"])
    assert a.request is None and a.out == "x.txt"
    for bad in (["--scan", "--capture"], ["--mac", MAC, "--capture", "--request", "zz"],
                ["--mac", MAC, "--capture", "--request", "0"],
                ["--mac", MAC, "--capture", "--write-uuid", "f2"], ["--mac", MAC, "--capture", "--every", "0"],
                ["--mac", MAC, "--capture", "--seconds", "0"], ["--mac", MAC, "--capture", "--max-bytes", "10"],
                ["--mac", MAC, "--request", "01"], ["--mac", MAC, "--out", "x.txt"]):
        with pytest.raises(SystemExit) as e:
            bms_probe.parse_args(bad)
        assert e.value.code == 2, bad


def _fake_bleak(monkeypatch, client, address=MAC):
    class Dev:
        def __init__(self):
            self.address = address
            self.name = "Mystery BMS"

    class Adv:
        local_name = "Mystery BMS"
        rssi = -58
        service_uuids = [u128(0xFFB0)]
        manufacturer_data = {0x1234: b"\xc0\xff\xee"}

    class Scanner:
        @staticmethod
        async def discover(timeout, return_adv):
            return {address: (Dev(), Adv())}

    class Client:
        def __init__(self, dev, timeout):
            pass

        async def __aenter__(self):
            return client

        async def __aexit__(self, *a):
            return False

    monkeypatch.setitem(sys.modules, "bleak", types.SimpleNamespace(BleakScanner=Scanner, BleakClient=Client))


def test_main_writes_the_file_and_prints_a_summary(tmp_path, monkeypatch):
    _fake_bleak(monkeypatch, FakeClient())
    out, err = io.StringIO(), io.StringIO()
    path = str(tmp_path / "m.txt")
    rc = bms_probe.main(["--mac", MAC.lower(), "--capture", "--request", "a5", "--every", "0.2", "--seconds", "0.6",
                         "--out", path], out, err)
    assert rc == 0, err.getvalue()
    summary = json.loads(out.getvalue())
    assert summary["file"] == path and summary["requests"] >= 2 and summary["notifications"] >= 2
    with open(path) as f:
        text = f.read()
    assert "# mac: 11:22:33:44:55:66  name: Mystery BMS  rssi: -58" in text
    assert "# request: a5 every 0.2 s to ffb2 (handle 0x0006)" in text


def test_main_device_not_found_exits_2(tmp_path, monkeypatch):
    _fake_bleak(monkeypatch, FakeClient(), address="AA:BB:CC:DD:EE:FF")
    out, err = io.StringIO(), io.StringIO()
    rc = bms_probe.main(["--mac", MAC, "--capture", "--seconds", "1", "--out", str(tmp_path / "n.txt")], out, err)
    assert rc == 2 and "not found" in err.getvalue() and out.getvalue() == ""
    assert not os.path.exists(str(tmp_path / "n.txt"))
