# The web server's door. Only the listening socket and this small accept handler stay in
# the heap for the device's life; the web stack behind it (microdot, smartbms.httpd, the
# routes of smartbms.web, the status and live documents: about 14 KB of the heap) is loaded
# at the first connection and dropped again after IDLE_S without one (device time, as the
# rest of the firmware's timing: the simulator's fast clock drops it sooner). A device nobody
# looks at, its normal state, keeps that heap for WiFi, BLE and MQTT.
import gc
import sys

import asyncio

from smartbms import clock, unload

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

IDLE_S = const(60)  # s with nothing open before the stack is dropped
CHECK_MS = const(5000)
# Connections taken in at once, live streams apart: httpd's 1 active + 1 waiting for the slot
# (httpd answers one at a time, so a third taken in would only wait in the heap). More wait
# in the TCP backlog, outside the heap, until one ends: a burst of clients cannot fill the
# heap with connections (each costs about 1 KB in coroutines, a task and a stream before its
# request is read; 8 open took the largest free block under load from 12-15 KB down to 9-10,
# and 4 rather than 2 raised the peak live heap by 2 KB), and a MemoryError can never end the
# listening task (asyncio's own server task dies of one, and the device stays deaf).
OPEN_MAX = const(2)
_BACKLOG = const(8)
# What a request loads and nothing else holds: dropped together, so that nothing of it stays
# pinned in the middle of the heap. (The login sessions live on in the app's auth_state;
# MQTT imports smartbms.actions per command and its package is empty.)
WEB_MODULES = ("smartbms.web", "smartbms.web_upkeep", "smartbms.webreq", "smartbms.httpd", "smartbms.httpio",
               "smartbms.auth", "smartbms.status", "smartbms.live", "smartbms.jsonpieces", "smartbms.jsonbody",
               "smartbms.actions", "smartbms.deadlines", "smartbms.mqtt.routes", "smartbms.mqtt", "smartbms.charge.plain",
               "smartbms.ota.image", "smartbms.ota.otadata", "smartbms.ota", "smartbms.alertpost", "webassets", "microdot", "microdot.microdot")
# Answered when the stack cannot be loaded (no memory): what httpd would say, from flash.
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\n\r\n{\"error\": \"low on memory: retry shortly\"}")


def default_host():
    # the device listens on every interface; a host run (sim, tests) only on loopback
    return "0.0.0.0" if sys.platform == "esp32" else "127.0.0.1"


class WebGate:
    def __init__(self, ctx, host, port, make_app=None):
        self._ctx = ctx
        self._host = host
        self._port = port
        self._make = make_app  # tests: makes the app instead of web.create_app
        self.app = None
        self.open = 0  # connections in progress
        self.loads = 0
        self.idle_s = IDLE_S  # per instance, so tests can shorten it
        self._last = clock.now()

    def _load(self):
        gc.collect()  # the stack's long-lived objects then sit low in the heap, together
        if self._make is not None:
            self.app = self._make()
        else:
            from smartbms import web

            self.app = web.create_app(self._ctx)
        self.loads += 1

    def _streams(self):
        live = getattr(self.app, "live", None)
        return live.streams if live is not None else 0

    def busy(self):
        """Something of the stack is in use: a connection, a live stream, a lingering drain."""
        a = self.app
        live = getattr(a, "live", None)
        return self.open > 0 or (a is not None and (a.lingering > 0 or (live is not None and live.streams > 0)))

    def trim(self):
        """Drop the stack when it has been unused for IDLE_S; True when it did."""
        if self.app is None or self.busy():
            return False
        if clock.now() - self._last < self.idle_s:
            return False
        self.app = None
        unload(WEB_MODULES)
        _drop_streams()
        gc.collect()
        return True

    async def _client(self, reader, writer, counted=False):
        if not counted:
            self.open += 1
        try:
            if self.app is None:
                try:
                    self._load()
                except MemoryError:
                    self.app = None
                    gc.collect()
                    await _refuse(reader, writer)
                    return
            # the app's own coroutine, no wrapper: each layer is a generator frame per
            # connection (about 100 B)
            await self.app.handle_request(reader, writer)
        except Exception as e:  # noqa: BLE001 - MemoryError too: this connection ends, nothing else
            if hasattr(sys, "print_exception") and not isinstance(e, MemoryError):
                sys.print_exception(e)
        finally:
            self.open -= 1
            self._last = clock.now()
            _drop(writer)  # closed however it ended (a socket is a scarce lwIP resource)

    def _accept(self, sock):
        # MicroPython: a generator is a coroutine; this is asyncio.stream's accept loop,
        # taking a connection only while fewer than OPEN_MAX are open
        from asyncio import core

        while True:
            while self.open - self._streams() >= OPEN_MAX:
                yield from clock.sleep_real_ms(20)
            yield core._io_queue.queue_read(sock)
            if not self._take(sock):
                gc.collect()
                yield from clock.sleep_real_ms(100)

    def _take(self, sock):
        # one connection, its stream and task; False when memory ran out. Its own frame: the
        # loop's, which lives for ever, would keep the last stream and asyncio's stream
        # module (loaded with the stack, dropped with it) alive
        try:
            s, addr = sock.accept()
        except OSError:
            return True
        try:
            s.setblocking(False)
            from asyncio.stream import Stream

            st = Stream(s, {"peername": addr})
            self.open += 1
            try:
                asyncio.create_task(self._client(st, st, True))
            except MemoryError:
                self.open -= 1
                raise
        except MemoryError:
            s.close()
            return False
        return True

    async def serve(self):
        """Listen until cancelled; drops the stack whenever it has been unused a while."""
        if sys.implementation.name == "micropython":
            import socket

            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(socket.getaddrinfo(self._host, self._port)[0][-1])
            sock.listen(_BACKLOG)
            sock.setblocking(False)
            accept = asyncio.create_task(self._accept(sock))
            close = sock.close
        else:  # CPython (host tools, tests): asyncio's server, unbounded
            server = await asyncio.start_server(self._client, self._host, self._port, backlog=_BACKLOG)
            accept, close = None, server.close
        try:
            while True:
                await clock.sleep_ms(CHECK_MS)
                if accept is not None and accept.done():  # cannot end; if it ever does: the app's supervisor
                    raise RuntimeError("the web server's accept loop ended")
                self.trim()
        finally:
            if accept is not None:
                accept.cancel()
            close()


def _drop_streams():
    # asyncio's stream module (1.8 KB) goes with the stack: nothing else keeps it while the
    # device idles (MQTT uses its socket itself). asyncio's lazy loader keeps what it handed
    # out in the package's globals: they go too. The next connection loads it again.
    if unload(("asyncio.stream",)):
        for name in ("StreamReader", "StreamWriter", "open_connection", "start_server"):
            try:
                delattr(asyncio, name)
            except (AttributeError, KeyError):  # never handed out (MicroPython says KeyError)
                pass


def _drop(writer):
    try:
        s = getattr(writer, "s", None)  # MicroPython's Stream: close() alone leaves the socket open
        if s is not None:
            s.close()
        else:
            writer.close()
    except Exception:  # noqa: BLE001 - closed already
        pass


async def _refuse(reader, writer):
    try:
        writer.write(_BUSY)
        await asyncio.wait_for(writer.drain(), 2)
        # closing with the request unread would send a reset that can destroy the answer:
        # swallow what the client sent (small pieces, a short while)
        for _ in range(32):
            if not await asyncio.wait_for(reader.read(128), 0.2):
                break
    except Exception:  # noqa: BLE001 - a vanished or quiet client
        pass
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)
    except Exception:  # noqa: BLE001
        pass
