# The two ends of a client connection as the web server (smartbms.httpd) uses them: the
# request stream microdot reads (a head bounded in size and read in small pieces, one plain
# Content-Length, a JSON body read without its whitespace, every body read bounded in time)
# and the answer written with few allocations (the status line and headers in one write, a
# body of chunks written as they come).
import sys

import asyncio

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

MAX_HEAD_BYTES = const(4096)
LINE_PIECE = const(256)  # bytes of a head line or body piece read (and allocated) at a time
COMPACT_FROM = const(1024)  # JSON bodies above this are read without their whitespace
COMPACT_LIMIT = const(4096)  # bytes of content no valid JSON body of this API exceeds


class HeadTooLarge(ValueError):
    pass


def _readline_upto(stream, limit):
    # MicroPython: asyncio's own Stream.readline() loop (v1.28.0) with a bound, so a line
    # never grows past `limit` bytes in RAM (a generator is a coroutine there). A socket's
    # readline(n) allocates n bytes before it reads one: asked for the whole 4 KB head
    # allowance, every line of every request needed a free 4 KB block (under load, most
    # 503s), so each call asks for a small piece.
    from asyncio import core

    line = b""
    while True:
        yield core._io_queue.queue_read(stream.s)
        part = stream.s.readline(min(limit - len(line), LINE_PIECE))
        if part is None:
            continue
        line += part
        if not part or line[-1] == 10 or len(line) >= limit:
            return line


class Reader:
    """The client stream as microdot reads it. The head is capped at MAX_HEAD_BYTES, however
    it is split into lines (on MicroPython no line is read past the cap: Stream.readline()
    would grow one without bound); its Content-Length must be plain digits, once. Once the
    head is in, every further read (a streamed body) is bounded by IDLE_TIMEOUT_MS."""

    def __init__(self, stream, idle_ms, deadlines):
        self._s = stream
        self._idle_ms = idle_ms
        self._dl = deadlines
        self.head = 0
        self.timed = False
        self.body = 0  # bytes of a streamed body read so far
        self._length_seen = False
        self._json = False  # the head says the body is JSON

    def _got(self, n):
        if self.timed:
            self.body += n
        return n

    async def _t(self, coro):
        if not self.timed:
            return await coro
        return await self._dl.wait(coro, self._idle_ms)

    async def readline(self):
        if self.timed:
            line = await self._t(self._s.readline())
            self._got(len(line))
            return line
        if hasattr(self._s, "s") and sys.implementation.name == "micropython":
            line = await _readline_upto(self._s, MAX_HEAD_BYTES - self.head + 1)
        else:  # CPython (tests, host tools): its StreamReader bounds lines at 64 KB itself
            line = await self._s.readline()
        self.head += len(line)
        if self.head > MAX_HEAD_BYTES:
            raise HeadTooLarge("request head too large")
        self._check_length(line)
        if line[:1] in b"Cc" and line[:13].lower() == b"content-type:" and b"json" in line.lower():
            self._json = True
        return line

    def _check_length(self, line):
        # microdot takes int() of it, which also accepts "+15", "1_5" and " 15": a proxy in
        # front may read those differently (request smuggling); one plain decimal, once
        if line[:1] not in b"Cc" or line[:15].lower() != b"content-length:":
            return
        v = line[15:].strip()
        if self._length_seen or not v or len(v) > 10 or not v.isdigit():
            raise ValueError("bad Content-Length")
        self._length_seen = True

    async def read(self, n=-1):
        data = await self._t(self._s.read(n))
        self._got(len(data))
        return data

    async def readexactly(self, n):
        if n < 0:  # a negative Content-Length
            raise ValueError("bad length")
        if self._json and n > COMPACT_FROM:
            return await self._read_compact(n)
        data = await self._t(self._s.readexactly(n))
        self._got(len(data))
        return data

    async def _read_compact(self, n):
        # a JSON body read a piece at a time, kept without the whitespace between its
        # tokens (smartbms.jsonbody): a padded 16 KB settings body needs no 16 KB block
        from smartbms.jsonbody import Compactor

        c = Compactor(COMPACT_LIMIT)
        while n:
            data = await self._t(self._s.read(min(n, LINE_PIECE)))
            if not data:
                raise EOFError("body ended early")
            self._got(len(data))
            n -= len(data)
            c.feed(data)
        return bytes(c.out)

    async def readinto(self, buf):
        s = self._s
        if not hasattr(s, "readinto"):  # CPython's StreamReader
            data = await self._t(s.read(len(buf)))
            buf[:len(data)] = data
            return self._got(len(data))
        if not self.timed:
            return self._got(await s.readinto(buf))
        # a streamed body's read (the OTA upload, piece after piece): the deadline armed in
        # place, no coroutine of its own per piece
        dl = self._dl
        t = dl.arm(self._idle_ms)
        try:
            n = await s.readinto(buf)
        except asyncio.CancelledError:
            if dl.disarm(t):
                raise asyncio.TimeoutError
            raise
        finally:
            dl.disarm(t)
        return self._got(n)


class Writer:
    """CPython's StreamWriter with the awrite/aclose that microdot uses (MicroPython's
    stream already has them)."""

    def __init__(self, w):
        self._w = w
        self.write = w.write
        self.drain = w.drain

    async def awrite(self, data):
        self._w.write(data)
        await self._w.drain()

    async def aclose(self):
        self._w.close()
        try:
            await self._w.wait_closed()
        except Exception:  # noqa: BLE001 - the peer may be gone already
            pass

    def get_extra_info(self, name):
        return self._w.get_extra_info(name)


def _head(res):
    # the status line and headers as one write (microdot writes each header on its own:
    # a coroutine, a formatted string and its bytes per line, on every answer)
    reason = res.reason if res.reason is not None else ("OK" if res.status_code == 200 else "N/A")
    parts = ["HTTP/1.0 %d %s\r\n" % (res.status_code, reason)]
    for name, value in res.headers.items():
        for one in value if type(value) is list else (value,):
            parts.append("%s: %s\r\n" % (name, one))
    parts.append("\r\n")
    return "".join(parts).encode()


async def send(writer, res):
    """Write `res` as microdot's Response.write does, for the bodies this API answers with
    (bytes, or a generator of chunks such as jsonpieces.chunks) without its per-header
    writes and the class it makes per answer to iterate a body; others go to microdot."""
    body = res.body
    if not (type(body) in (bytes, bytearray) or hasattr(body, "__next__")):
        await res.write(writer)
        return
    res.complete()
    writer.write(_head(res))
    await writer.drain()
    if res.is_head:
        return
    if type(body) is not bytes and type(body) is not bytearray:
        try:
            for chunk in body:
                writer.write(chunk if type(chunk) is not str else chunk.encode())
                await writer.drain()
        finally:
            if hasattr(body, "close"):
                body.close()
    elif body:
        writer.write(body)
        await writer.drain()
