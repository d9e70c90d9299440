# The bounded HTTP server under the API (microdot's app, request reading and answering),
# apart from the routes (smartbms.web). Defences that keep a small device alive on a LAN:
# - the request head (line + headers, and a body up to BODY_LIMIT) must arrive within
#   HEAD_TIMEOUT_MS (HEAD_SQUEEZED_MS while other connections wait for a slot); a head over
#   MAX_HEAD_BYTES (one long line or many) is 431, never read past that cap into RAM, and
#   the rest of it is swallowed (up to DRAIN_MS) so the client reads the answer instead of
#   a reset (reading and writing the connection: smartbms.httpio); a Content-Length that is
#   not plain digits, or a second one, is 400; a streamed body (OTA) may pause at most
#   IDLE_TIMEOUT_MS between reads; a client that does not take its answer within
#   WRITE_TIMEOUT_MS is dropped;
# - at most MAX_ACTIVE requests are handled at once, MAX_WAITING more wait a moment for a
#   slot, anything beyond is answered 503 at once (each open connection costs ~1-2 KB of
#   heap and an lwIP socket, of which the ESP32 build has 16 in all). One at a time: the
#   chip's one core gains nothing from interleaving two answers, and the second one's
#   coroutines, buffers and open files cost the heap 3-4 KB at its fullest (README "Memory");
#   live streams give their slot back (smartbms.live);
# - bodies over BODY_LIMIT get 413 before a byte of them is read, except on the routes
#   given a larger limit with set_body_limit() (the OTA upload), which must read
#   request.stream;
# - every error is JSON {"error", "field"} with a 4xx code, and a rejected request changes
#   nothing: bodies are validated completely before anything is applied.
import gc
import sys

try:
    import asyncio
except ImportError:  # pragma: no cover
    asyncio = None

from microdot import Microdot, Request, Response

from smartbms import clock, jsonpieces
from smartbms.actions import ApiError  # noqa: F401 (part of this module's API)
from smartbms.auth import AuthError
from smartbms.deadlines import Deadlines
from smartbms.httpio import MAX_HEAD_BYTES, HeadTooLarge, Reader, Writer, send

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

BODY_LIMIT = const(16 * 1024)
HEAD_TIMEOUT_MS = const(5000)
HEAD_SQUEEZED_MS = const(1000)  # ... while other connections wait for a slot (a stalled flood)
IDLE_TIMEOUT_MS = const(10000)
WRITE_TIMEOUT_MS = const(10000)
MAX_ACTIVE = const(1)
MAX_WAITING = const(6)
QUEUE_WAIT_MS = const(3000)
DISCARD_BYTES = const(64 * 1024)
DISCARD_MS = const(300)
DRAIN_MS = const(3000)
DRAIN_GAP_MS = const(500)
MAX_LINGERING = const(4)
_JSON_HEADERS = {"Content-Type": "application/json; charset=UTF-8"}  # Response copies it

Request.max_readline = MAX_HEAD_BYTES + 1  # Reader enforces the real limit (431) first


def error(status, message, field=None, headers=None):
    doc = {"error": message}
    if field is not None:
        doc["field"] = field
    return Response(doc, status, headers)


class WebApp(Microdot):
    """Microdot with bounded connections, timeouts and per-route body limits."""

    def __init__(self, ctx):
        self.static_routes = {}  # before microdot's own set-up, which may add routes
        self._call_api_ref = self._call_api  # bound once: a bound method allocates each time
        super().__init__()
        self.ctx = ctx
        self.body_limits = {}
        self.active = 0
        self.waiting = 0
        self.rejected = 0  # connections answered 503
        self.dropped = 0  # connections closed for a timeout or an oversize head
        self.served = 0
        self.lingering = 0  # refused connections swallowing their unread input
        self.deadlines = Deadlines(self._squeezed)  # every wait of a connection is bounded by one
        # the limits, per instance so tests can shrink them
        self.head_timeout_ms = HEAD_TIMEOUT_MS
        self.idle_timeout_ms = IDLE_TIMEOUT_MS
        self.write_timeout_ms = WRITE_TIMEOUT_MS
        self.max_active = MAX_ACTIVE
        self.max_waiting = MAX_WAITING
        self.queue_wait_ms = QUEUE_WAIT_MS

    # Static routes (every route of this app) live in one dict, path -> (methods, handler,
    # api, methods, handler, api, ...), one flat tuple per path: microdot's own table keeps a
    # URLPattern object and a list per route, about 8 KB for this app's thirty routes on the
    # device's heap; the dict costs a fraction and finds a route in one lookup (a tuple per
    # route inside one per path cost 16 B more a route). Patterns with <parts> still go to
    # microdot.
    def route(self, url_pattern, methods=None, api=False):
        if "<" in url_pattern:
            return super().route(url_pattern, methods)
        # a literal tuple of upper-case names is a constant in flash: kept as it is (upper()
        # makes a new string per method and route, about 1 KB for this app)
        ms = methods or ("GET",)
        if type(ms) is not tuple or [m for m in ms if m != m.upper()]:
            ms = tuple(m.upper() for m in ms)

        def decorated(f):
            table = self.static_routes
            table[url_pattern] = table.get(url_pattern, ()) + (ms, f, api)
            return f

        return decorated

    def find_route(self, req):
        entry = self.static_routes.get(req.path)
        if entry is None:
            return super().find_route(req)
        method = req.method.upper()
        if method == "OPTIONS" and self.options_handler:
            return self.options_handler(req), "", None
        if method == "HEAD":
            method = "GET"
        req.url_args = {}
        for i in range(0, len(entry), 3):
            if method in entry[i]:
                handler = entry[i + 1]
                if entry[i + 2]:
                    req.api_handler = handler
                    return self._call_api_ref, "", None
                return handler, "", None
        return 405, "", None

    async def _call_api(self, req):
        try:
            res = req.api_handler(req)
            if hasattr(res, "send"):  # a coroutine
                res = await res
            if type(res) is dict:  # written in chunks: no block as large as the answer
                return Response(jsonpieces.chunks(res), 200, _JSON_HEADERS)
            return res
        except ApiError as e:
            return error(e.status, e.message, e.field, e.headers)
        except AuthError as e:
            return error(422, e.message, e.field)
        except ValueError as e:  # SettingsError and controller errors
            return error(422, getattr(e, "message", None) or str(e), getattr(e, "field", None))

    def default_options_handler(self, req):
        entry = self.static_routes.get(req.path)
        if entry is None:
            return super().default_options_handler(req)
        allow = [m for i in range(0, len(entry), 3) for m in entry[i]]
        if "GET" in allow:
            allow.append("HEAD")
        allow.append("OPTIONS")
        return {"Allow": ", ".join(allow)}

    def _squeezed(self):
        # a client that has not sent its head within HEAD_SQUEEZED_MS while others wait for
        # its slot is cut: a flood of stalled connections cannot hold the server for long
        return self.waiting > 0

    async def _slot(self):
        if self.active < self.max_active:
            return True
        if self.waiting >= self.max_waiting:
            return False
        self.waiting += 1
        try:
            waited = 0
            while self.active >= self.max_active:
                if waited >= self.queue_wait_ms:
                    return False
                await clock.sleep_real_ms(10)
                waited += 10
            return True
        finally:
            self.waiting -= 1

    async def handle_request(self, reader, writer):
        if not hasattr(writer, "awrite"):
            writer = Writer(writer)
        if self.active >= self.max_active and not await self._slot():  # no coroutine when a slot is free
            self.rejected += 1
            ota = getattr(self.ctx, "ota", None)  # the one slot streams an upload for a while
            why = "a firmware upload is running" if ota is not None and ota.busy() else "too many connections"
            await self._answer(writer, error(503, "busy: " + why, headers={"Retry-After": "1"}), reader)
            return
        self.active += 1
        try:
            await self._handle(reader, writer)
        finally:
            self.active -= 1

    async def _handle(self, reader, writer):
        r = Reader(reader, self.idle_timeout_ms, self.deadlines)
        req = None
        try:
            peer = writer.get_extra_info("peername")
        except Exception:  # noqa: BLE001
            peer = None
        try:
            req = await self.deadlines.wait(Request.create(self, r, writer, peer), self.head_timeout_ms,
                                            min(HEAD_SQUEEZED_MS, self.head_timeout_ms))
        except HeadTooLarge:
            self.dropped += 1
            # the client may still be sending a large head: read it away for up to DRAIN_MS
            await self._answer(writer, error(431, "request head too large (at most %d bytes)" % MAX_HEAD_BYTES),
                               reader, Request.max_content_length, DRAIN_MS)
            return
        except (ValueError, IndexError, UnicodeError):
            await self._answer(writer, error(400, "malformed request"), reader)
            return
        except MemoryError:  # the documented answer, not a reset: try again shortly
            self.rejected += 1
            gc.collect()
            await self._answer(writer, error(503, "low on memory: retry shortly", headers={"Retry-After": "1"}), reader)
            return
        except Exception:  # noqa: BLE001 - timeout, reset, cancelled: just hang up
            self.dropped += 1
            await self._close(writer)
            return
        if req is None:  # connection opened and closed without a request
            await self._close(writer)
            return
        r.timed = True
        res = await self.dispatch_request(req)
        self.served += 1
        # A refused body that was not read in full (over max_body_length: the handler
        # streams it, or it was refused unread) is still on its way: drain what is left.
        unread = 0
        if req.content_length > Request.max_body_length and getattr(res, "status_code", 200) >= 400:
            unread = min(req.content_length, Request.max_content_length) - r.body
        await self._answer(writer, res, reader if unread > 0 else None, unread, DRAIN_MS)

    async def _answer(self, writer, res, unread=None, nbytes=DISCARD_BYTES, limit_ms=DISCARD_MS):
        try:
            if res is not Response.already_handled:
                await self.deadlines.wait(send(writer, res), self.write_timeout_ms)
        except Exception:  # noqa: BLE001 - a slow or vanished reader
            self.dropped += 1
        if unread is not None and self.lingering < MAX_LINGERING:
            self.lingering += 1
            try:
                await self._discard(unread, nbytes, limit_ms)
            finally:
                self.lingering -= 1
        await self._close(writer)

    async def _discard(self, reader, nbytes, limit_ms):
        # Closing a socket with unread input makes TCP send a reset, which can destroy the
        # answer before the client reads it (a browser reads it only once its upload is
        # sent): swallow the rest of the input first, nothing kept, so the client sees the
        # error instead of a reset. Bounded: `limit_ms` in all, DRAIN_GAP_MS of silence.
        t0 = clock.ticks_real_ms()
        try:
            while nbytes > 0 and clock.real_ms_since(t0) < limit_ms:
                chunk = await self.deadlines.wait(reader.read(min(nbytes, 1024)), DRAIN_GAP_MS)
                if not chunk:
                    break
                nbytes -= len(chunk)
        except Exception:  # noqa: BLE001 - silence or reset: done either way
            pass

    async def _close(self, writer):
        try:
            await self.deadlines.wait(writer.aclose(), 2000)
        except Exception:  # noqa: BLE001
            pass


def set_body_limit(app, path, nbytes):
    """Let `path` accept a body of up to `nbytes`; above BODY_LIMIT the handler must read
    request.stream (the body is not read into RAM)."""
    app.body_limits[path] = nbytes
    if nbytes > Request.max_content_length:
        Request.max_content_length = nbytes


async def serve_client(app, reader, writer):
    """Answer one connection on `app` (what the listening socket's callback runs)."""
    try:
        await app.handle_request(reader, writer)
    except Exception as e:  # noqa: BLE001 - one bad connection must not end the server
        sys.print_exception(e) if hasattr(sys, "print_exception") else None
        # every normal path closed it already; this one must too (wait_closed, not close:
        # MicroPython's close() leaves the socket open)
        await app._close(writer if hasattr(writer, "aclose") else Writer(writer))


async def start(app, host, port):
    """Start listening; returns the asyncio server (close() to stop)."""

    async def on_client(reader, writer):
        await serve_client(app, reader, writer)

    return await asyncio.start_server(on_client, host, port, backlog=app.max_active + app.max_waiting)
