# Host-only: the device's end of the world link (sim/world/server.py describes the
# frames). The hardware shims (bluetooth, machine, network) reach the simulated world, a
# CPython process, through it, so the firmware's heap holds only the firmware. Frozen into
# the host interpreter, never into the firmware.
#
# SIM_WORLD=host:port names the world; without it there is no world (get() is None) and the
# shims stay local (unit tests that need no radio).
#
# Events arrive as the chip delivers IRQs: a C thread (_host.watch) waits for the event
# connection and schedules pump() on the main thread, so handlers run between bytecodes or
# while asyncio waits, as NimBLE's sync events do on the ESP32 (and, as there, the event wakes
# a main thread that sleeps in poll()). No Python runs outside the main thread. Frames are
# read into one preallocated buffer and handed to handlers as memoryviews into it.
import os
import socket
import struct

try:
    import _host  # the host interpreter's C helpers (sim/unix_variant/host.c)
except ImportError:  # CPython: no event delivery (the unit tests there use no world)
    _host = None

EV_BLE = 1
EV_PIN = 2
EV_WIFI = 3
ST_OK = 0
ST_CONTROL_ERROR = 0xFE

_link = None


def get():
    """The link to the world, connected on first use; None when SIM_WORLD is not set."""
    global _link
    if _link is None:
        addr = os.getenv("SIM_WORLD")
        if not addr:
            return None
        _link = _Link(addr)
    return _link


class WorldError(Exception):
    pass


def _connect(addr):
    host, _, port = addr.rpartition(":")
    s = socket.socket()
    s.connect(socket.getaddrinfo(host or "127.0.0.1", int(port))[0][-1])
    return s


def _buffer(n):
    # outside the Python heap where the host interpreter can (the chip's radio and network
    # buffers are ESP-IDF's), else an ordinary bytearray
    if _host is not None:
        return _host.static_buffer(n)
    return memoryview(bytearray(n))


class _Link:
    def __init__(self, addr):
        self.cmd = _connect(addr)
        self._out = _buffer(560)
        self._in = self._in_mv = _buffer(560)
        self.handlers = {}  # kind -> fn(memoryview of the event data)
        self.inputs = {}  # pin -> level the world drives (the button)
        st, data = self.call(0, b"\x01")
        self.speed = data[0] | data[1] << 8
        for i in range(2, len(data) - 1, 2):
            self.inputs[data[i]] = data[i + 1]
        self.evt = _connect(addr)
        self.evt.write(b"\x02\x00\x00\x02")
        self._ebuf = self._emv = _buffer(2048)
        self._en = 0
        if _host is not None:
            _host.wake_register()
            self.evt.setblocking(False)
            self._pump_ref = self.pump  # bound once, and kept: the C thread holds it too
            _host.watch(self.evt.fileno(), self._pump_ref)

    # ---- commands ----
    def call(self, op, args=b"", data=None):
        """Send command `op` with `args` (and `data` appended); returns (status, memoryview
        of the reply data, valid until the next call)."""
        out = self._out
        n = 1 + len(args) + (len(data) if data is not None else 0)
        if n + 2 > len(out):
            raise WorldError("command too long")
        struct.pack_into("<HB", out, 0, n, op)
        out[3:3 + len(args)] = args
        if data is not None:
            out[3 + len(args):2 + n] = data
        self.cmd.write(out[:2 + n])
        self._read_exactly(2)
        m = self._in[0] | self._in[1] << 8
        if not 1 <= m <= len(self._in):
            raise WorldError("bad reply from the world")
        self._read_exactly(m)
        return self._in[0], self._in_mv[1:m]

    def _read_exactly(self, n):
        got = 0
        mv = self._in_mv
        while got < n:
            k = self.cmd.readinto(mv[got:n])
            if not k:
                raise SystemExit("worldlink: the world went away")
            got += k

    def control(self, cmd):
        """A JSON control command (tests): returns the answer; WorldError on refusal."""
        import json

        body = json.dumps(cmd).encode()  # test-only: may be larger than the command buffer
        self.cmd.write(struct.pack("<HB", len(body) + 1, 0x20) + body)
        self._read_exactly(2)
        reply = bytearray(self._in[0] | self._in[1] << 8)
        got = 0
        while got < len(reply):
            k = self.cmd.readinto(memoryview(reply)[got:])
            if not k:
                raise SystemExit("worldlink: the world went away")
            got += k
        if reply[0] != ST_OK:
            raise WorldError(bytes(reply[1:]).decode() or "status %d" % reply[0])
        return json.loads(bytes(reply[1:]).decode())

    # ---- events ----
    def pump(self, _=None):
        try:
            buf = self._ebuf
            mv = self._emv
            while True:
                k = self.evt.readinto(mv[self._en:])
                if k is None:
                    break  # nothing more now
                if k == 0:
                    raise SystemExit("worldlink: the world went away")
                self._en += k
                i = 0
                while self._en - i >= 2:
                    n = buf[i] | buf[i + 1] << 8
                    if self._en - i - 2 < n:
                        break
                    self._dispatch(buf[i + 2], mv[i + 3:i + 2 + n])
                    i += 2 + n
                if i:
                    rest = self._en - i
                    mv[:rest] = mv[i:self._en]
                    self._en = rest
        finally:
            _host.watch_done()

    def _dispatch(self, kind, data):
        if kind == EV_PIN:
            pin, level = data[0], data[1]
            self.inputs[pin] = None if level == 0xFF else level
        h = self.handlers.get(kind)
        if h is not None:
            h(data)
