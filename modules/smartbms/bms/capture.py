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
# The pure parts (argument checks, hex, the file's lines, the bounded file, the ring the
# notify IRQ fills) need no radio; Capture.run() is the radio part (aioble).
#
# File format (text, one record a line; `#` lines are the header and the end):
#   # smartbms BLE capture
#   # version: <firmware version>
#   # mac: AA:BB:CC:DD:EE:FF  name: <advertised name>  rssi: -60
#   # advertised: services fff0  manufacturer 0x585a 0102...
#   # service fff0 handles 0x0001-0x0007
#   #   char fff1 handle 0x0003 props read,notify subscribed
#   #   char fff2 handle 0x0005 props write-no-response,write request-target
#   # request: <hex> every 5 s to fff2 (handle 0x0005)
#   # columns: ms handle uuid kind hex
#   <ms since start> <value handle 0x....> <uuid> notify|indicate|write|error <hex or text>
#   # end: <why>; <n> notifications, <n> lost, <n> requests, <ms> ms
import binascii
import time

from smartbms import clock, paths

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

try:
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
except AttributeError:  # CPython

    def _ticks_ms():
        return int(time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b


FILE = "capture.txt"
CAP_BYTES = const(32 * 1024)  # the file never grows past this
_END_ROOM = const(160)  # kept free for the end line
MAX_SECONDS = const(600)
DEFAULT_SECONDS = const(60)
MAX_EVERY_S = const(600)
DEFAULT_EVERY_S = const(5)
MAX_REQUEST = const(64)  # bytes; one ATT write
_SLOTS = const(32)  # notifications held between two flushes to the file
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
_PROPS = ((0x0001, "broadcast"), (0x0002, "read"), (0x0004, "write-no-response"), (0x0008, "write"),
          (0x0010, "notify"), (0x0020, "indicate"), (0x0040, "signed-write"))
# the GAP and GATT services (a writable device name): never sent a request
_SYSTEM_SERVICES = ("1800", "1801")


class CaptureArgError(ValueError):
    """A bad argument (the web layer answers 422 naming the field)."""

    def __init__(self, message, field):
        super().__init__(message)
        self.message = message
        self.field = field


class CaptureRefused(Exception):
    """The capture cannot run now (the web layer answers 409)."""


# ---- pure parts ------------------------------------------------------------------

def parse_hex(text):
    """Bytes from hex text ('01 03 ff', '01:03:FF', '0103ff'); CaptureArgError otherwise."""
    if not isinstance(text, str):
        raise CaptureArgError("must be a hex string", "request_hex")
    s = text.replace(" ", "").replace(":", "").replace("-", "")
    if s[:2] in ("0x", "0X"):
        s = s[2:]
    if not s or len(s) % 2 or any(c not in "0123456789abcdefABCDEF" for c in s):
        raise CaptureArgError("must be whole bytes in hex, e.g. 'dd a5 03 00 ff fd 77'", "request_hex")
    if len(s) // 2 > MAX_REQUEST:
        raise CaptureArgError("at most %d bytes" % MAX_REQUEST, "request_hex")
    return binascii.unhexlify(s)


def _number(doc, key, default, lo, hi):
    v = doc.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise CaptureArgError("must be a number from %s to %s" % (lo, hi), key)
    return v


def check_args(doc):
    """The POST body as capture arguments: {mac, request, every_s, seconds, write_uuid}.
    Keys: mac (required), request_hex, every_s (1..600, default 5), seconds (5..600,
    default 60), write_uuid (a 16-bit uuid in hex, e.g. 'fff2': the characteristic the
    request goes to instead of the first writable one)."""
    from smartbms.bms.scan import normalize_mac

    for k in doc:
        if k not in ("mac", "request_hex", "every_s", "seconds", "write_uuid"):
            raise CaptureArgError("unknown key", k)
    mac = doc.get("mac")
    if not isinstance(mac, str) or not mac:
        raise CaptureArgError("the device's MAC address is required", "mac")
    try:
        mac = normalize_mac(mac)
    except ValueError as e:
        raise CaptureArgError(str(e), "mac")
    req = doc.get("request_hex")
    req = parse_hex(req) if req not in (None, "") else None
    wu = doc.get("write_uuid")
    if wu in (None, ""):
        wu = None
    else:
        w = str(wu).lower().replace("0x", "")
        if not isinstance(wu, str) or len(w) != 4 or any(c not in "0123456789abcdef" for c in w):
            raise CaptureArgError("a 16-bit uuid in hex, e.g. fff2", "write_uuid")
        wu = w
    return {"mac": mac, "request": req, "every_s": _number(doc, "every_s", DEFAULT_EVERY_S, 1, MAX_EVERY_S),
            "seconds": _number(doc, "seconds", DEFAULT_SECONDS, 5, MAX_SECONDS), "write_uuid": wu}


def refusal(ctx):
    """Why a capture may not run now, or None. It closes the BMS link, so it never runs while
    charging depends on that link."""
    if getattr(ctx, "safe_mode", False):
        return None  # the relay is held off and no link runs
    c = ctx.controller
    relay = getattr(ctx, "relay", None)
    if (relay is not None and relay.on) or c.relay:
        return ("the charger relay is on: charging depends on the BMS link. Stop charging first "
                "(Status: relay override off), then start the capture")
    if c.state in ("charging", "balancing"):
        return "a charge is in progress (%s): wait for it to end or override the relay off" % c.state
    if getattr(c, "bms_charge_off", False):
        return "the BMS charge MOSFET is held off over the link (relay stuck alarm): clear the alarm first"
    return None


def uuid_text(u):
    """'fff1' for a 16-bit uuid (an int, or bluetooth.UUID printing as UUID(0xfff1)), else
    the full text of a longer one."""
    if isinstance(u, int):
        return "%04x" % u
    s = str(u)
    if s.startswith("UUID("):
        s = s[5:-1].strip("'\"")
    s = s.lower()
    if s.startswith("0x"):
        return "%04x" % int(s, 16)
    if len(s) == 36 and s.startswith("0000") and s.endswith("-0000-1000-8000-00805f9b34fb"):
        return s[4:8]
    return s


def props_text(p):
    out = [name for bit, name in _PROPS if p & bit]
    return ",".join(out) if out else "none"


def record_line(t_ms, handle, uuid, kind, data):
    """One record: ms since the start, value handle, uuid, kind, hex (or text for an error)."""
    if isinstance(data, str):
        body = data.replace("\n", " ")
    else:
        body = binascii.hexlify(data).decode()
    return "%d 0x%04x %s %s %s\n" % (t_ms, handle, uuid, kind, body)


class BoundedFile:
    """A text file written in appends that never grows past `cap` bytes: records stop
    fitting `_END_ROOM` bytes before the cap, which is kept for the end line."""

    def __init__(self, path, cap=CAP_BYTES):
        self.path = path
        self.cap = cap
        self.size = 0
        self.full = False

    def begin(self, text):
        with open(self.path, "w") as f:
            f.write(text)
        self.size = len(text)

    def append(self, lines):
        """Append the lines that fit; False once one did not (the file is full)."""
        if self.full:
            return False
        limit = self.cap - _END_ROOM
        with open(self.path, "a") as f:
            for line in lines:
                n = len(line)
                if self.size + n > limit:
                    self.full = True
                    break
                f.write(line)
                self.size += n
        return not self.full

    def finish(self, line):
        line = line[:_END_ROOM - 1].replace("\n", " ") + "\n"
        if self.size + len(line) > self.cap:
            return
        with open(self.path, "a") as f:
            f.write(line)
        self.size += len(line)


class Ring:
    """What the notify IRQ fills: (ms, handle, kind, data) in three lists, no tuple per
    notification; full drops and counts. Single producer (the IRQ), single consumer."""

    def __init__(self, slots=_SLOTS):
        self._t = [0] * slots
        self._h = [0] * slots  # handle << 1 | indicate
        self._d = [None] * slots
        self._n = slots
        self._head = 0
        self._tail = 0
        self.t0 = 0
        self.count = 0
        self.lost = 0

    def __len__(self):
        return (self._head - self._tail) % (2 * self._n)

    def put(self, handle, data):
        if len(self) >= self._n:
            self.lost += 1
            return
        i = self._head % self._n
        self._t[i] = _ticks_diff(_ticks_ms(), self.t0)
        self._h[i] = handle
        self._d[i] = data
        self._head = (self._head + 1) % (2 * self._n)
        self.count += 1

    def pop(self):
        """(ms, handle << 1 | indicate, data) of the oldest; IndexError when empty."""
        if not len(self):
            raise IndexError("empty")
        i = self._tail % self._n
        out = (self._t[i], self._h[i], self._d[i])
        self._d[i] = None
        self._tail = (self._tail + 1) % (2 * self._n)
        return out


class _Sink:
    """Takes the place of a characteristic's one-slot deque in aioble: its notify IRQ calls
    append(data). Always looks empty, so aioble keeps nothing of its own."""

    def __init__(self, ring, key):
        self._ring = ring
        self._key = key

    def __len__(self):
        return 0

    def append(self, data):
        self._ring.put(self._key, data)


class FileReader:
    """The capture file as a response body: at most `size` bytes (the size when the
    download started, though a running capture appends), read in the server's chunks."""

    def __init__(self, path, size):
        self._f = open(path, "rb")
        self._left = size

    def read(self, n):
        if self._left <= 0:
            return b""
        data = self._f.read(n if n < self._left else self._left)
        self._left -= len(data)
        return data

    def close(self):
        self._f.close()


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
        why = "done"
        paused = False
        try:
            pause = getattr(ctx, "pause_link", None)
            if pause is not None:
                paused = True
                await pause()
            await self._capture()
            why = ("stopped by the user" if self._stop else "file full (%d bytes)" % self.file.cap
                   if self.file.full else self.end or "%s s passed" % self.seconds)
            self.state = "done"
        except Exception as e:  # noqa: BLE001 - any failure ends the capture, never the device
            self.error = why = "%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__
            self.state = "failed"
        finally:
            await self._disconnect()
            if paused:
                ctx.resume_link()
            self.end = why
            try:
                self.file.finish("# end: %s; %d notifications, %d lost, %d requests, %d ms\n" % (
                    why, self.ring.count, self.ring.lost, self.requests, self.elapsed_ms))
            except OSError:
                pass
            _event(ctx, "capture of %s ended: %s (%d notifications)" % (self.mac, why, self.ring.count))

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
        ring.t0 = _ticks_ms()
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
            now = _ticks_diff(_ticks_ms(), ring.t0)
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
        self.elapsed_ms = _ticks_diff(_ticks_ms(), ring.t0)
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
    """A running capture stops (its file stays); otherwise the file is erased."""
    c = _current
    if c is not None and c.running:
        c.stop()
        return {"stopping": True}
    import os

    try:
        os.remove(path or paths.path(FILE))
        erased = True
    except OSError:
        erased = False
    return {"erased": erased}
