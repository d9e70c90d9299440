#!/usr/bin/env python3
"""Read a real BMS from a laptop over Bluetooth LE, through the firmware's own drivers.

    bms_probe.py --scan [--timeout S] [--all]
    bms_probe.py --mac AA:BB:CC:DD:EE:FF
                 [--protocol auto|jbd|jk02_24s|jk02_32s|daly|seplos|ant|redodo|renogy]
                 [--count N] [--interval S] [--timeout S]
    bms_probe.py --mac AA:BB:CC:DD:EE:FF --capture [--request HEX] [--every S] [--seconds S]
                 [--write-uuid FFF2] [--out FILE] [--max-bytes N] [--timeout S]

--scan prints one JSON line per advertising BMS: {"mac", "name", "rssi", "protocol"}
(--all: every device, protocol null when unknown). --mac connects, writes the driver's
start requests, then polls (JK streams on its own) and prints N readings as JSON lines with
the Reading fields (one reading merges the frames of a poll: JBD basic info + cells; Seplos
system, alarm and per-pack blocks; Renogy's three register blocks), plus one {"info": {...}}
line per frame without measurements (JK device info). Exits 2 on bad
arguments or when the BMS cannot be found/read, with a one-line reason on stderr.

--capture is the firmware's capture mode for packs no driver reads (README, *Capture mode*):
any device, its services and characteristics listed, every notify/indicate characteristic
subscribed, --request (hex) written every --every seconds (default 5) to the first writable
characteristic (or --write-uuid), the raw notifications recorded for --seconds (default 60)
into --out (default capture-<MAC>.txt, at most --max-bytes, 32768 by default), the device's
file format; then one JSON summary line {"file", "bytes", "notifications", "requests",
"subscribed", "end"}.

Needs `bleak` (pip install bleak): an optional laptop-only dependency, imported on use.
"""
import argparse
import asyncio
import json
import os
import re
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.join(os.path.dirname(_HERE), "modules"), _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bms_decode import reading_json  # noqa: E402
from smartbms.bms import protocols  # noqa: E402
from smartbms.bms.reading import BMSError, Reading  # noqa: E402

_MAC = re.compile(r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f-]{36}$")  # MAC or macOS UUID


class ProbeError(Exception):
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bms_probe.py", description="Read a BMS over BLE (needs bleak).")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--scan", action="store_true", help="list advertising BMSes")
    mode.add_argument("--mac", help="address of the BMS to read")
    p.add_argument("--protocol", default="auto", choices=("auto",) + protocols.NAMES)
    p.add_argument("--count", type=int, default=1, help="readings to print (default 1)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the BMS")
    p.add_argument("--all", action="store_true", help="--scan: list non-BMS devices too")
    p.add_argument("--capture", action="store_true", help="record any device's raw notifications to a file")
    p.add_argument("--request", help="--capture: hex request to write periodically, e.g. 'dd a5 03 00 ff fd 77'")
    p.add_argument("--every", type=float, default=5.0, help="--capture: seconds between requests (default 5)")
    p.add_argument("--seconds", type=float, default=60.0, help="--capture: how long to record (default 60)")
    p.add_argument("--write-uuid", help="--capture: 16-bit uuid of the characteristic to write (default: first writable)")
    p.add_argument("--out", help="--capture: file to write (default capture-<MAC>.txt)")
    p.add_argument("--max-bytes", type=int, default=32768, help="--capture: file size cap (default 32768)")
    args = p.parse_args(argv)
    if args.capture:
        _capture_args(p, args)
    elif args.request is not None or args.write_uuid is not None or args.out is not None:
        p.error("--request, --write-uuid and --out go with --capture")
    if args.mac is not None and not _MAC.match(args.mac):
        p.error("--mac must look like AA:BB:CC:DD:EE:FF")
    if args.count < 1:
        p.error("--count must be at least 1")
    if args.timeout <= 0 or args.interval < 0:
        p.error("--timeout must be > 0 and --interval >= 0")
    return args


def _capture_args(p, args):
    from smartbms.bms import capture_format

    if args.mac is None:
        p.error("--capture needs --mac")
    try:
        args.request = capture_format.parse_hex(args.request) if args.request else None
    except ValueError as e:
        p.error("--request %s" % e)
    if args.write_uuid is not None:
        w = args.write_uuid.lower().replace("0x", "")
        if len(w) != 4 or any(c not in "0123456789abcdef" for c in w):
            p.error("--write-uuid must be a 16-bit uuid in hex, e.g. fff2")
        args.write_uuid = w
    if not 0.05 <= args.every <= 3600 or not 0 < args.seconds <= 86400:
        p.error("--every must be 0.05 to 3600 and --seconds 0 to 86400")
    if not 1024 <= args.max_bytes <= 16 * 1024 * 1024:
        p.error("--max-bytes must be 1024 to 16777216")
    if args.out is None:
        args.out = "capture-%s.txt" % args.mac.replace(":", "").replace("-", "").upper()


def uuid128(u16):
    return "0000%04x-0000-1000-8000-00805f9b34fb" % u16


def describe_advertisement(address, name, service_uuids=(), manufacturer_data=None, rssi=None):
    """The scan line for one advertisement (bleak gives service UUID strings and a dict
    company id -> bytes)."""
    mfr = tuple((manufacturer_data or {}).keys())
    return {"mac": address, "name": name, "rssi": rssi,
            "protocol": protocols.detect(name, tuple(service_uuids or ()), mfr)}


def _props(char):
    return set(getattr(char, "properties", ()) or ())


def pick_characteristics(services, driver):
    """(notify, write) characteristics for the driver, as the firmware's link picks them: in
    the first of the driver's services the device has, by their properties (JK modules may
    expose two FFE1 characteristics; some JBD packs serve FFF1/FFF2 instead of FF01/FF02).
    A driver with `notify_service_uuid` (Renogy: write FFD1 in FFD0, notify FFF1 in FFF0)
    takes the notify characteristic from that service."""
    by_uuid = {}
    for service in services:
        by_uuid.setdefault(protocols.uuid16(service.uuid), service)
    service = None
    for u in driver.service_uuids:
        service = by_uuid.get(u)
        if service is not None:
            break
    if service is None:
        raise ProbeError("the device has no %s service (%s)" % (
            driver.name, ", ".join("0x%04X" % u for u in driver.service_uuids)))
    notify_service = service
    split = getattr(driver, "notify_service_uuid", None)
    if split is not None:
        notify_service = by_uuid.get(split)
        if notify_service is None:
            raise ProbeError("the device has no %s notify service (0x%04X)" % (driver.name, split))
    chars = list(getattr(service, "characteristics", ()))
    notify = write = None
    for char in getattr(notify_service, "characteristics", ()):
        if "notify" in _props(char):
            notify = char
            break
    best = -1
    for char in chars:  # a write characteristic other than the notify one, without response
        props = _props(char)
        if not props & {"write", "write-without-response"}:
            continue
        score = (2 if char is not notify else 0) + (1 if "write-without-response" in props else 0)
        if protocols.uuid16(char.uuid) == getattr(driver, "write_uuid", None):
            score += 4  # the family's own write characteristic (Redodo: FFE2, not FFE3)
        if score > best:
            best, write = score, char
    if notify is None or write is None:
        raise ProbeError("the %s service lacks a %s characteristic" % (
            driver.name, "notify" if notify is None else "write"))
    return notify, write


class Session:
    """Notifications in, decoded frames merged into one Reading: the non-BLE half of the probe."""

    def __init__(self, protocol):
        self.driver = protocols.get(protocol)
        self.assembler = self.driver.new_assembler()
        self.reading = Reading()
        self.infos = []
        self.measured = 0
        self.errors = []

    def _sink(self, frame):
        try:
            if self.driver.decode(frame, self.reading):
                self.measured += 1
            else:
                info = self.driver.info(frame)
                if info is not None:
                    self.infos.append(info)
        except BMSError as e:
            self.errors.append(str(e))

    def feed(self, data):
        self.assembler.feed(bytes(data), self._sink, int(time.monotonic() * 1000))

    def take_infos(self):
        out, self.infos = self.infos, []
        return out

    def snapshot(self):
        return reading_json(self.reading, None, self.driver.name)


async def _wait_measured(session, queue, target, timeout, out):
    loop = asyncio.get_event_loop()
    deadline = loop.time() + timeout
    while session.measured < target:
        left = deadline - loop.time()
        if left <= 0:
            raise ProbeError("no answer from the BMS within %.1f s (%s)" % (timeout, _why(session)))
        try:
            data = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            continue
        session.feed(data)
        for info in session.take_infos():
            out.write(json.dumps({"info": info}) + "\n")


def _why(session):
    if session.errors:
        return "last error: " + session.errors[-1]
    a = session.assembler
    return "frames %d, bad checksum %d, dropped bytes %d" % (a.frames, a.bad_checksum, a.dropped_bytes)


async def probe(client, protocol, count=1, interval=2.0, timeout=10.0, out=None):
    """Read `count` readings from a connected client with bleak's interface
    (services, start_notify, write_gatt_char) and print them as JSON lines."""
    out = out or sys.stdout
    session = Session(protocol)
    driver = session.driver
    notify, write = pick_characteristics(client.services, driver)
    queue = asyncio.Queue()
    await client.start_notify(notify, lambda _sender, data: queue.put_nowait(bytes(data)))
    response = "write" in _props(write)
    for req in driver.start_requests():
        target = session.measured + 1
        await client.write_gatt_char(write, req, response=response)
        if not driver.streams:  # answered by a measurement (Seplos: the system block)
            await _wait_measured(session, queue, target, timeout, out)
    for n in range(count):
        if n and interval:
            await asyncio.sleep(interval)
        if driver.streams:
            await _wait_measured(session, queue, session.measured + 1, timeout, out)
        else:
            # One request at a time: the BMS answers each with one frame.
            for req in driver.poll_requests():
                target = session.measured + 1
                await client.write_gatt_char(write, req, response=response)
                await _wait_measured(session, queue, target, timeout, out)
        out.write(json.dumps(session.snapshot()) + "\n")
        if hasattr(out, "flush"):
            out.flush()
    return session


def _bleak():
    try:
        import bleak
    except ImportError:
        raise ProbeError("bms_probe needs the 'bleak' package on the laptop: pip install bleak")
    return bleak


async def run_scan(args, out):
    bleak = _bleak()
    found = await bleak.BleakScanner.discover(timeout=args.timeout, return_adv=True)
    for device, adv in found.values():
        line = describe_advertisement(device.address, adv.local_name or device.name,
                                      adv.service_uuids, adv.manufacturer_data, adv.rssi)
        if line["protocol"] or args.all:
            out.write(json.dumps(line) + "\n")


async def run_probe(args, out):
    bleak = _bleak()
    protocol = args.protocol
    device = None
    if protocol == "auto":
        found = await bleak.BleakScanner.discover(timeout=args.timeout, return_adv=True)
        for dev, adv in found.values():
            if dev.address.lower() == args.mac.lower():
                device = dev
                protocol = describe_advertisement(dev.address, adv.local_name or dev.name,
                                                  adv.service_uuids, adv.manufacturer_data)["protocol"]
                break
        if device is None:
            raise ProbeError("%s not found (is it advertising, or connected to something else?)" % args.mac)
        if protocol is None:
            raise ProbeError("%s is no known BMS: pass --protocol" % args.mac)
    else:
        device = await bleak.BleakScanner.find_device_by_address(args.mac, timeout=args.timeout)
        if device is None:
            raise ProbeError("%s not found (is it advertising, or connected to something else?)" % args.mac)
    async with bleak.BleakClient(device, timeout=args.timeout) as client:
        await probe(client, protocol, args.count, args.interval, args.timeout, out)


async def run_capture(args, out):
    import ble_capture

    bleak = _bleak()
    found = await bleak.BleakScanner.discover(timeout=args.timeout, return_adv=True)
    for dev, adv in found.values():
        if dev.address.lower() == args.mac.lower():
            break
    else:
        raise ProbeError("%s not found (is it advertising, or connected to something else?)" % args.mac)
    async with bleak.BleakClient(dev, timeout=args.timeout) as client:
        summary = await ble_capture.capture(
            client, args.out, args.mac.upper(), adv.local_name or dev.name, adv.rssi, adv.service_uuids,
            adv.manufacturer_data, args.request, args.every, args.seconds, args.write_uuid, args.max_bytes)
    out.write(json.dumps(summary) + "\n")


def main(argv=None, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(run_scan(args, out) if args.scan else run_capture(args, out) if args.capture
                    else run_probe(args, out))
    except (ProbeError, BMSError) as e:
        err.write("bms_probe: %s\n" % e)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
