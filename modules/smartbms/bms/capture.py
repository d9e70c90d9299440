# Capture mode for packs no driver reads yet: connect to any BLE device by MAC, list its
# services and characteristics, subscribe to every notify/indicate characteristic, write an
# optional request periodically, and record the raw notifications with timestamps in a
# bounded text file on flash that the owner downloads and attaches to a support request.
#
# Imported only when a capture is asked for (web routes): nothing of it is in the heap
# otherwise. While it runs, the BMS link is closed (App.pause_link) and charge control sees
# no BMS data, so the relay stays off; it is refused while the relay is on or the link holds
# the BMS charge MOSFET off (refusal()). The link resumes when the capture ends, however it
# ends.
#
# The parts that need no radio, and the file's format, are in smartbms.bms.capture_format.
import binascii

from smartbms import clock, paths
from smartbms.bms.capture_format import (  # noqa: F401 (the web routes use them from here)
    CAP_BYTES, DEFAULT_EVERY_S, DEFAULT_SECONDS, FILE, BoundedFile, CaptureArgError, CaptureRefused,
    FileReader, Ring, _Sink, check_args, props_text, record_line, refusal, uuid_text)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

_MAX_SERVICES = const(16)
_MAX_SUBSCRIBE = const(8)
_FLUSH_MS = const(200)
_CONNECT_MS = const(10000)
_GATT_MS = const(3000)
_SCAN_MS = const(5000)
_MTU = const(247)

_FLAG_READ = const(0x0002)
_FLAG_WRITE_NO_RESPONSE = const(0x0004)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_FLAG_INDICATE = const(0x0020)
# the GAP and GATT services (a writable device name): never sent a request
_SYSTEM_SERVICES = ("1800", "1801")


# ---- the capture -----------------------------------------------------------------

class Capture:
    """One capture run (state in info()); run() does it all and always gives the radio back."""

    def __init__(self, ctx, mac, request=None, every_s=DEFAULT_EVERY_S, seconds=DEFAULT_SECONDS,
                 write_uuid=None, cap=CAP_BYTES, path=None, scan_ms=_SCAN_MS, connect_ms=_CONNECT_MS):
        self.ctx = ctx
        self.mac = mac
        self.request = request
        self.every_s = every_s
        self.seconds = seconds
        self.write_uuid = write_uuid
        self.scan_ms = scan_ms
        self.connect_ms = connect_ms
        self.file = BoundedFile(path or paths.path(FILE), cap)
        self.ring = Ring()
        self.state = "starting"
        self.name = None
        self.error = None
        self.end = None
        self.requests = 0
        self.subscribed = 0
        self.elapsed_ms = 0
        self._stop = False
        self._conn = None
        self._targets = {}  # handle << 1 | indicate -> uuid text, for the records
        self._write = None

    @property
    def running(self):
        return self.state in ("starting", "running")

    def stop(self):
        self._stop = True

    def info(self):
        return {"state": self.state, "mac": self.mac, "name": self.name, "error": self.error, "end": self.end,
                "seconds": self.seconds, "elapsed_s": self.elapsed_ms // 1000,
                "request_hex": binascii.hexlify(self.request).decode() if self.request else None,
                "every_s": self.every_s, "subscribed": self.subscribed, "notifications": self.ring.count,
                "lost": self.ring.lost, "requests": self.requests, "bytes": self.file.size,
                "cap_bytes": self.file.cap, "full": self.file.full}

    async def run(self):
        ctx = self.ctx
        state = "done"
        paused = False
        try:
            pause = getattr(ctx, "pause_link", None)
            if pause is not None:
                paused = True
                await pause()
            await self._capture()
        except Exception as e:  # noqa: BLE001 - any failure ends the capture, never the device
            if not self._stop:
                self.error = "%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__
                state = "failed"
        finally:
            await self._disconnect()
            if paused:
                ctx.resume_link()
            why = self.error or ("stopped by the user" if self._stop else "file full (%d bytes)" % self.file.cap
                                 if self.file.full else self.end or "%s s passed" % self.seconds)
            self.end = why
            try:
                self.file.finish("# end: %s; %d notifications, %d lost, %d requests, %d ms\n" % (
                    why, self.ring.count, self.ring.lost, self.requests, self.elapsed_ms))
            except OSError:
                pass
            _event(ctx, "capture of %s ended: %s (%d notifications)" % (self.mac, why, self.ring.count))
            self.state = state  # last: the link runs again and the file is complete

    async def _capture(self):
        import aioble

        from smartbms.version import VERSION

        self.file.begin("# smartbms BLE capture\n# version: %s\n" % VERSION)
        dev = await self._find(aioble)
        t = self.connect_ms
        try:
            conn = await dev.connect(timeout_ms=t, scan_duration_ms=t)
        except Exception:
            try:  # aioble leaves the controller's attempt running
                aioble.core.ble.gap_connect(None)
            except Exception:  # noqa: BLE001
                pass
            raise
        self._conn = conn
        mtu = 23
        try:
            mtu = await conn.exchange_mtu(_MTU, timeout_ms=_GATT_MS)
        except Exception:  # noqa: BLE001 - the default MTU works
            pass
        subs = await self._discover(conn)
        self.file.append(("# mtu: %s\n" % mtu,))
        await self._subscribe(conn, subs)
        w = self._write
        if self.request is not None:
            if w is None:
                line = "# request: none sent (no writable characteristic%s)\n" % (
                    " " + self.write_uuid if self.write_uuid else "")
            else:
                line = "# request: %s every %s s to %s (handle 0x%04x)\n" % (
                    binascii.hexlify(self.request).decode(), self.every_s, uuid_text(w.uuid), w._value_handle)
        else:
            line = "# request: none\n"
        self.file.append((line, "# columns: ms handle uuid kind hex\n"))
        self.state = "running"
        await self._record(conn)

    async def _find(self, aioble):
        from smartbms.bms.scan import mac_str

        found = None
        async with aioble.scan(self.scan_ms, interval_us=30000, window_us=30000, active=True) as scanner:
            async for r in scanner:
                if self._stop:
                    break
                if mac_str(r.device.addr) != self.mac:
                    continue
                found = r
                # aioble takes its queue from the end: the scan response may come first
                if r.name() and r.adv_data:
                    break
        if self._stop:
            raise RuntimeError("stopped")
        if found is None:
            self.file.append(("# mac: %s  (not seen advertising; tried its public address)\n" % self.mac,))
            return aioble.Device(aioble.ADDR_PUBLIC, self.mac)
        self.name = found.name() or None
        svc = " ".join(uuid_text(u) for u in found.services())
        mfr = " ".join("0x%04x %s" % (m, binascii.hexlify(bytes(d)).decode()) for m, d in found.manufacturer())
        self.file.append(("# mac: %s  name: %s  rssi: %s\n" % (self.mac, self.name or "(none)", found.rssi),
                          "# advertised: services %s  manufacturer %s\n" % (svc or "-", mfr or "-")))
        return found.device

    async def _discover(self, conn):
        """Writes the GATT layout to the header; returns the characteristics to subscribe."""
        services = []
        more = 0
        with conn.timeout(_GATT_MS):
            async for s in conn.services():
                if len(services) < _MAX_SERVICES:
                    services.append(s)
                else:
                    more += 1
        services.sort(key=lambda s: s._start_handle)
        subs = []
        for s in services:
            su = uuid_text(s.uuid)
            chars = []
            with conn.timeout(_GATT_MS):
                async for ch in s.characteristics():
                    chars.append(ch)
            chars.sort(key=lambda c: c._value_handle)
            lines = ["# service %s handles 0x%04x-0x%04x\n" % (su, s._start_handle, s._end_handle)]
            for ch in chars:
                p = ch.properties
                cu = uuid_text(ch.uuid)
                note = ""
                if p & (_FLAG_NOTIFY | _FLAG_INDICATE):
                    if len(subs) < _MAX_SUBSCRIBE:
                        subs.append(ch)
                    else:
                        note = " not-subscribed(limit)"
                if (p & (_FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE) and self._write is None
                        and su not in _SYSTEM_SERVICES and self.write_uuid in (None, cu)):
                    self._write = ch
                    note += " request-target" if self.request is not None else " first-writable"
                lines.append("#   char %s handle 0x%04x props %s%s\n" % (cu, ch._value_handle, props_text(p), note))
            self.file.append(lines)
        if more:
            self.file.append(("# %d more services not listed\n" % more,))
        return subs

    async def _subscribe(self, conn, subs):
        ring = self.ring
        ring.t0 = clock.ticks_real_ms()
        for ch in subs:
            p = ch.properties
            h = ch._value_handle
            ind = not p & _FLAG_NOTIFY  # both: notifications (no confirmation round trip)
            key = h << 1 | (1 if ind else 0)
            self._targets[key] = uuid_text(ch.uuid)
            if ind:
                ch._indicate_queue = _Sink(ring, key)
            else:
                ch._notify_queue = _Sink(ring, key)
            try:
                with conn.timeout(_GATT_MS):
                    await ch.subscribe(notify=not ind, indicate=ind)
                self.subscribed += 1
                self.file.append(("# subscribed 0x%04x %s (%s)\n" % (h, self._targets[key],
                                                                      "indicate" if ind else "notify"),))
            except Exception as e:  # noqa: BLE001 - listed as failed, the others still run
                self.file.append(("# subscribe 0x%04x failed: %s %s\n" % (h, type(e).__name__, e),))

    async def _record(self, conn):
        ring = self.ring
        w = self._write
        req = self.request if w is not None else None
        every_ms = int(self.every_s * 1000)
        end_ms = int(self.seconds * 1000)
        next_req = 0
        lines = []
        while not self._stop and not self.file.full:
            now = clock.real_ms_since(ring.t0)
            self.elapsed_ms = now
            if now >= end_ms:
                break
            if not conn.is_connected():
                self.end = "the device disconnected"
                break
            self._drain(lines)  # what came before this request, first
            if req is not None and now >= next_req:
                next_req = now + every_ms
                try:
                    await w.write(req, not (w.properties & _FLAG_WRITE_NO_RESPONSE), _GATT_MS)
                    lines.append(record_line(now, w._value_handle, uuid_text(w.uuid), "write", req))
                except Exception as e:  # noqa: BLE001 - recorded; the capture goes on
                    lines.append(record_line(now, w._value_handle, uuid_text(w.uuid), "error",
                                             "write failed: %s %s" % (type(e).__name__, e)))
                self.requests += 1
            await clock.sleep_real_ms(_FLUSH_MS)  # radio time: real ms, also in the sim
        self.elapsed_ms = clock.real_ms_since(ring.t0)
        self._drain(lines)

    def _drain(self, lines):
        ring = self.ring
        while len(ring):
            t, key, data = ring.pop()
            lines.append(record_line(t, key >> 1, self._targets.get(key, "?"),
                                     "indicate" if key & 1 else "notify", data))
        if lines:
            self.file.append(lines)
            del lines[:]

    async def _disconnect(self):
        conn = self._conn
        self._conn = None
        self._write = None
        if conn is not None and conn.is_connected():
            try:
                await conn.disconnect(timeout_ms=2000)
            except Exception:  # noqa: BLE001 - gone either way
                pass


def _event(ctx, msg):
    ev = getattr(ctx, "events", None)
    if ev is not None:
        try:
            ev.add("bms", msg)
        except Exception:  # noqa: BLE001
            pass


# ---- the one capture of the device (web routes) ------------------------------------

_current = None


def current():
    return _current


def start(ctx, doc, **kw):
    """Check, refuse or start a capture (as an asyncio task); its info()."""
    global _current
    args = check_args(doc)
    if _current is not None and _current.running:
        raise CaptureRefused("a capture is already running")
    why = refusal(ctx)
    if why is not None:
        raise CaptureRefused(why)
    c = Capture(ctx, args["mac"], args["request"], args["every_s"], args["seconds"], args["write_uuid"], **kw)
    _current = c
    _event(ctx, "capture of %s started (the BMS link pauses; charging stays off)" % c.mac)
    asyncio.create_task(c.run())
    return c.info()


def status(path=None):
    """The current capture's info(), or {state: idle}, with the file's size on flash."""
    c = _current
    out = c.info() if c is not None else {"state": "idle"}
    out["file_bytes"] = file_size(path)
    return out


def file_size(path=None):
    import os

    try:
        return os.stat(path or paths.path(FILE))[6]
    except OSError:
        return None


def stop_or_erase(path=None):
    """A running capture stops (its file stays); otherwise the file is erased and the
    state is idle again."""
    global _current
    c = _current
    if c is not None and c.running:
        c.stop()
        return {"stopping": True}
    _current = None
    import os

    try:
        os.remove(path or paths.path(FILE))
        erased = True
    except OSError:
        erased = False
    return {"erased": erased}
