# Capture mode for unknown packs, the parts that need no radio (smartbms.bms.capture runs
# the capture): the API's arguments, the refusal while charging depends on the BMS link, the
# capture file's lines, the bounded file, the ring the notify IRQ fills, and the file as a
# download. scripts/bms_probe.py --capture writes the same file from a laptop.
#
# File format (text, one record a line; `#` lines are the header and the end):
#   # smartbms BLE capture
#   # version: <firmware version>
#   # mac: AA:BB:CC:DD:EE:FF  name: <advertised name>  rssi: -58
#   # advertised: services ffb0 180f  manufacturer 0x1234 c0ffee
#   # service ffb0 handles 0x0001-0x0009
#   #   char ffb1 handle 0x0003 props read,notify
#   #   char ffb2 handle 0x0006 props write-no-response,write request-target
#   # mtu: 185
#   # subscribed 0x0003 ffb1 (notify)
#   # request: a50102 every 5 s to ffb2 (handle 0x0006)
#   # columns: ms handle uuid kind hex
#   41 0x0006 ffb2 write a50102
#   57 0x0003 ffb1 notify a51ca503000102...
#   # end: 60 s passed; 24 notifications, 0 lost, 12 requests, 60012 ms
# ms: real milliseconds since the subscriptions, stamped when the notification arrived;
# handle: the characteristic's value handle; kind: notify, indicate, write (the request
# as sent) or error (text instead of hex). At most CAP_BYTES in all.
import binascii
import time

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


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
_PROPS = ((0x0001, "broadcast"), (0x0002, "read"), (0x0004, "write-no-response"), (0x0008, "write"),
          (0x0010, "notify"), (0x0020, "indicate"), (0x0040, "signed-write"))


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
    """'ffb1' for a 16-bit uuid (an int, or bluetooth.UUID printing as UUID(0xffb1)), else
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
