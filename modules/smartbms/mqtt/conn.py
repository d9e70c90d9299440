# One MQTT connection: connect + CONNACK, serialised writes, and packets read into one fixed
# buffer (a packet larger than it is skipped, never stored). Every wait is bounded.
import gc

import asyncio

from smartbms import netio
from smartbms.mqtt import codec

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

KEEPALIVE_S = const(60)
CONNECT_MS = const(10000)
WRITE_MS = const(10000)
RX_LIMIT = const(256)  # the largest command payload taken; bigger ones are refused
RX_BUF = const(RX_LIMIT + 96)  # + topic and header; larger packets are skipped unread


class Closed(Exception):
    pass


class Conn:
    def __init__(self):
        self.buf = bytearray(RX_BUF)
        self.mv = memoryview(self.buf)
        self.reader = None
        self._writer = None
        self._lock = asyncio.Lock()  # the receive task answers on the same stream

    async def open(self, settings, will_topic=None):
        """Connect and log in (the will: retained "offline" on will_topic); raises on refusal."""
        s = settings
        tls = None
        if s["mqtt_tls"]:
            tls = netio.tls_context()  # encrypted; the broker is not authenticated (no CA store)
            if tls is None:
                raise OSError("this firmware build has no TLS: turn mqtt_tls off")
        gc.collect()  # the connection's objects live as long as it: low in the heap, out of the way
        self.reader, self._writer = await netio.connect(s["mqtt_host"], s["mqtt_port"], CONNECT_MS, tls)
        await self.send(codec.connect("smartbms-" + s["hostname"], KEEPALIVE_S, s["mqtt_user"],
                                      s.secret("mqtt_password"), will_topic, b"offline", True))
        t, _, n = await asyncio.wait_for(self.read(), CONNECT_MS / 1000)
        if t != codec.CONNACK:
            raise codec.ProtocolError("no CONNACK")
        rc = codec.connack(self.buf[:n])[1]
        if rc:
            raise codec.ProtocolError("refused: %s" % (codec.CONNACK_TEXT[rc] if rc < 6 else rc))

    async def send(self, data):
        async with self._lock:
            w = self._writer
            if w is None:
                raise Closed("not connected")
            w.write(data)
            await asyncio.wait_for(w.drain(), WRITE_MS / 1000)

    async def publish(self, topic, payload, retain=False):
        p = payload.encode() if type(payload) is str else payload
        async with self._lock:
            w = self._writer
            if w is None:
                raise Closed("not connected")
            w.write(codec.publish_header(topic, len(p), retain))
            w.write(p)
            await asyncio.wait_for(w.drain(), WRITE_MS / 1000)

    async def close(self):
        w = self._writer
        self._writer = None
        self.reader = None
        if w is not None:
            await netio.close(w)

    async def _fill(self, n):
        """Read exactly n bytes into the start of the fixed buffer."""
        mv = self.mv
        r = self.reader
        if r is None:
            raise Closed("not connected")
        if not hasattr(r, "readinto"):  # CPython
            mv[:n] = await r.readexactly(n)
            return
        got = 0
        while got < n:
            k = await r.readinto(mv[got:n])
            if not k:
                raise Closed("connection closed")
            got += k

    async def read(self):
        """(type, flags, length) of the next packet, its body at the start of buf; length -1:
        larger than the buffer, skipped."""
        await self._fill(1)
        first = self.buf[0]
        n = 0
        shift = 0
        while True:
            await self._fill(1)
            d = self.buf[0]
            n |= (d & 0x7F) << shift
            if not d & 0x80:
                break
            shift += 7
            if shift >= 28:
                raise codec.ProtocolError("malformed remaining length")
        if n > RX_BUF:
            left = n
            while left:
                k = min(left, RX_BUF)
                await self._fill(k)
                left -= k
            return first & 0xF0, first & 0x0F, -1
        await self._fill(n)
        return first & 0xF0, first & 0x0F, n
