# One MQTT connection: connect + CONNACK, writes, and packets taken from what has arrived
# into one fixed buffer (a packet larger than it is skipped, never stored). Nothing waits
# for the broker: the session's one task asks for packets each tick (poll), so no receive
# task, no lock and no coroutine chain live beside it. On MicroPython it reads and writes
# its non-blocking socket itself: asyncio's stream module (1.8 KB of heap) need not stay
# loaded for it. Every wait is bounded.
import gc
import sys

import asyncio

from smartbms import clock, netio, unload
from smartbms.mqtt import codec

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_KEEPALIVE_S = const(60)
CONNECT_MS = const(10000)
_WRITE_MS = const(10000)
RX_LIMIT = const(256)  # the largest command payload taken; bigger ones are refused
RX_BUF = const(RX_LIMIT + 96)  # + topic and header; larger packets are skipped unread
_EAGAIN = const(11)
_HELLO = ("smartbms.mqtt.hello",)
_MICROPYTHON = sys.implementation.name == "micropython"


class Closed(Exception):
    pass


class Conn:
    def __init__(self):
        self.buf = bytearray(RX_BUF)
        self.mv = memoryview(self.buf)
        self.sock = None  # read from without waiting: the non-blocking socket (MicroPython)
        self._writer = None  # CPython: asyncio's stream writer (sock is then a Staged reader)
        self._have = 0  # bytes of buf holding what arrived
        self._used = 0  # of them, the packet poll() last gave out (dropped at the next call)
        self._skip = 0  # bytes still to come of a packet too large for buf

    async def open(self, settings, will_topic=None, subscribe=None):
        """Connect and log in (the will: retained "offline" on will_topic), then subscribe to
        `subscribe` if given; raises on refusal."""
        from smartbms.mqtt import hello  # the start's packets: loaded only while connecting

        try:
            await self._open(hello, settings, will_topic, subscribe)
        finally:
            del hello
            unload(_HELLO)

    async def _open(self, hello, s, will_topic, subscribe):
        tls = None
        if s["mqtt_tls"]:
            tls = netio.tls_context()  # encrypted; the broker is not authenticated (no CA store)
            if tls is None:
                raise OSError("this firmware build has no TLS: turn mqtt_tls off")
        gc.collect()  # the connection's objects live as long as it: low in the heap, out of the way
        self._have = self._used = self._skip = 0
        if _MICROPYTHON:
            self.sock = await netio.connect_socket(s["mqtt_host"], s["mqtt_port"], CONNECT_MS, tls)
        else:
            from smartbms.mqtt.staged import Staged  # CPython only: never loaded on the chip

            reader, self._writer = await netio.connect(s["mqtt_host"], s["mqtt_port"], CONNECT_MS, tls)
            self.sock = Staged(reader)
        await self.send(hello.connect("smartbms-" + s["hostname"], _KEEPALIVE_S, s["mqtt_user"],
                                      s.secret("mqtt_password"), will_topic, b"offline", True))
        t0 = clock.ticks_real_ms()
        while True:
            await self.fill()
            p = self.poll()
            if p is not None:
                break
            if clock.real_ms_since(t0) > CONNECT_MS:
                raise asyncio.TimeoutError()
            await clock.sleep_real_ms(20)
        if p[0] != codec.CONNACK or p[2] is None:
            raise codec.ProtocolError("no CONNACK")
        rc = hello.connack(p[2])[1]
        if rc:
            raise codec.ProtocolError("refused: %s" % (hello.CONNACK_TEXT[rc] if rc < 6 else rc))
        if subscribe is not None:
            await self.send(hello.subscribe(1, subscribe))

    async def send(self, data):
        await self._write(data)

    async def publish(self, topic, payload, retain=False):
        p = payload.encode() if type(payload) is str else payload
        await self._write(codec.publish_header(topic, len(p), retain))
        await self._write(p)

    async def _write(self, data):
        sock, w = self.sock, self._writer
        if w is not None:  # CPython
            w.write(data)
            await asyncio.wait_for(w.drain(), _WRITE_MS / 1000)
            return
        if sock is None:
            raise Closed("not connected")
        mv = memoryview(data)
        t0 = clock.ticks_real_ms()
        while len(mv):
            try:
                n = sock.write(mv)
            except OSError as e:
                if e.args[0] != _EAGAIN:
                    raise
                n = None
            if n:
                mv = mv[n:]
            elif clock.real_ms_since(t0) > _WRITE_MS:
                raise Closed("the broker takes no data")
            else:  # the send buffer is full (or TLS is still shaking hands): a moment
                await clock.sleep_real_ms(10)

    async def close(self):
        sock, w = self.sock, self._writer
        self.sock = self._writer = None
        if sock is not None and w is None:
            try:
                sock.close()
            except OSError:
                pass
        if w is not None:
            await netio.close(w)

    @property
    def staged(self):
        """CPython: what has arrived must be fetched (fill()) before poll() sees it."""
        return self._writer is not None

    async def fill(self):
        if self._writer is not None:
            await self.sock.fill()

    def poll(self):
        """The next whole packet that has arrived, as (type, flags, body memoryview), body
        None for one larger than the buffer (skipped); None when no whole packet is here yet.
        Never waits, allocates nothing while nothing arrives (no coroutine: the session calls
        it each second). Raises Closed when the broker closed the connection."""
        if self._used:  # the packet handed out last time: gone
            self._have -= self._used
            if self._have:
                self.mv[:self._have] = self.mv[self._used:self._used + self._have]
            self._used = 0
        while True:
            h = codec.header(self.mv[:self._have]) if self._have else None
            if h is not None:
                t, flags, n, size = h
                if size + n > RX_BUF:  # too large to hold: skip it as it comes
                    self._skip = size + n - self._have
                    self._have = 0
                    return t, flags, None
                if self._have >= size + n:
                    self._used = size + n
                    return t, flags, self.mv[size:size + n]
            if not self._recv():
                return None

    def _recv(self):
        # what is waiting on the connection, without waiting: into buf's free end, or dropped
        # while a large packet is skipped. The number of bytes taken (0: nothing yet).
        sock = self.sock
        if sock is None:
            raise Closed("not connected")
        into = self.mv  # the common case (nothing held): no slice made each tick
        if self._skip:
            into = into[:min(self._skip, RX_BUF)]
        elif self._have:
            into = into[self._have:]
        try:
            k = sock.readinto(into)  # non-blocking: None when nothing has arrived
        except OSError as e:
            if e.args[0] != _EAGAIN:
                raise
            k = None
        if k is None:
            return 0
        if not k:
            raise Closed("connection closed")
        if self._skip:
            self._skip -= k
        else:
            self._have += k
        return k

