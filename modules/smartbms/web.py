# The HTTP API and the web UI (microdot), talking to the rest of the firmware only through
# the app context `ctx` (docs/design.md "The application context").
#
# Defences that keep a small device alive on a LAN:
# - the request head (line + headers, and a body up to BODY_LIMIT) must arrive within
#   HEAD_TIMEOUT_MS; a head over MAX_HEAD_BYTES (one long line or many) is 431, never read
#   past that cap into RAM, and the rest of it is swallowed (up to
#   DRAIN_MS) so the client reads the answer instead of a reset; a Content-Length that is
#   not plain digits, or a second one, is 400; a streamed body (OTA) may pause at most
#   IDLE_TIMEOUT_MS between reads; a client that does not take its answer within
#   WRITE_TIMEOUT_MS is dropped;
# - at most MAX_ACTIVE requests are handled at once, MAX_WAITING more wait a moment for a
#   slot, anything beyond is answered 503 at once (each open connection costs ~1-2 KB of
#   heap and an lwIP socket, of which the ESP32 build has 16 in all);
# - bodies over BODY_LIMIT get 413 before a byte of them is read, except on the routes
#   given a larger limit with set_body_limit() (the OTA upload), which must read
#   request.stream;
# - every error is JSON {"error", "field"} with a 4xx code, and a rejected request changes
#   nothing: bodies are validated completely before anything is applied.
import json
import gc
import sys

try:
    import asyncio
except ImportError:  # pragma: no cover
    asyncio = None

from microdot import Microdot, Request, Response

from smartbms import clock
from smartbms.auth import COOKIE, AuthError, AuthThrottled
from smartbms.version import VERSION

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

BODY_LIMIT = const(16 * 1024)
OTA_PATH = "/api/ota"
OTA_BODY_LIMIT = const(0x1D0000)  # one app slot (boards/SMARTBMS partition table)
HEAD_TIMEOUT_MS = const(5000)
IDLE_TIMEOUT_MS = const(10000)
WRITE_TIMEOUT_MS = const(10000)
SCAN_TIMEOUT_MS = const(20000)
MAX_HEAD_BYTES = const(4096)
MAX_ACTIVE = const(4)
MAX_WAITING = const(6)
QUEUE_WAIT_MS = const(3000)
DISCARD_BYTES = const(64 * 1024)
DISCARD_MS = const(300)
DRAIN_MS = const(3000)
DRAIN_GAP_MS = const(500)
MAX_LINGERING = const(4)
EVENTS_DEFAULT = const(50)
EVENTS_MAX = const(200)

PUBLIC_API = ("/api/auth", "/api/login", "/api/logout", "/api/setup")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'"),
)

Request.max_readline = MAX_HEAD_BYTES + 1  # _Reader enforces the real limit (431) first


class ApiError(Exception):
    def __init__(self, status, message, field=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers


def error(status, message, field=None, headers=None):
    doc = {"error": message}
    if field is not None:
        doc["field"] = field
    return Response(doc, status, headers)




class _HeadTooLarge(ValueError):
    pass


def _readline_upto(stream, limit):
    # MicroPython: asyncio's own Stream.readline() loop (v1.28.0) with a bound, so a line
    # never grows past `limit` bytes in RAM (a generator is a coroutine there)
    from asyncio import core

    line = b""
    while True:
        yield core._io_queue.queue_read(stream.s)
        part = stream.s.readline(limit - len(line))
        if part is None:
            continue
        line += part
        if not part or line[-1] == 10 or len(line) >= limit:
            return line


class _Reader:
    """The client stream as microdot reads it. The head is capped at MAX_HEAD_BYTES, however
    it is split into lines (on MicroPython no line is read past the cap: Stream.readline()
    would grow one without bound); its Content-Length must be plain digits, once. Once the
    head is in, every further read (a streamed body) is bounded by IDLE_TIMEOUT_MS."""

    def __init__(self, stream, idle_ms):
        self._s = stream
        self._idle_s = idle_ms / 1000
        self.head = 0
        self.timed = False
        self.body = 0  # bytes of a streamed body read so far
        self._length_seen = False

    def _got(self, n):
        if self.timed:
            self.body += n
        return n

    async def _t(self, coro):
        if not self.timed:
            return await coro
        return await asyncio.wait_for(coro, self._idle_s)

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
            raise _HeadTooLarge("request head too large")
        self._check_length(line)
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
        data = await self._t(self._s.readexactly(n))
        self._got(len(data))
        return data

    async def readinto(self, buf):
        if hasattr(self._s, "readinto"):
            return self._got(await self._t(self._s.readinto(buf)))
        data = await self._t(self._s.read(len(buf)))
        buf[:len(data)] = data
        return self._got(len(data))


class _Writer:
    """CPython's StreamWriter with the awrite/aclose that microdot uses (MicroPython's
    stream already has them)."""

    def __init__(self, w):
        self._w = w

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
        # the limits, per instance so tests can shrink them
        self.head_timeout_ms = HEAD_TIMEOUT_MS
        self.idle_timeout_ms = IDLE_TIMEOUT_MS
        self.write_timeout_ms = WRITE_TIMEOUT_MS
        self.max_active = MAX_ACTIVE
        self.max_waiting = MAX_WAITING
        self.queue_wait_ms = QUEUE_WAIT_MS

    # Static routes (every route of this app) live in one dict, path -> ((methods, handler),
    # ...): microdot's own table keeps a URLPattern object and a list per route, about 8 KB
    # for this app's thirty routes on the device's heap; the dict costs a fraction and finds
    # a route in one lookup. Patterns with <parts> still go to microdot.
    def route(self, url_pattern, methods=None, api=False):
        if "<" in url_pattern:
            return super().route(url_pattern, methods)
        ms = tuple(m.upper() for m in (methods or ("GET",)))

        def decorated(f):
            table = self.static_routes
            table[url_pattern] = table.get(url_pattern, ()) + ((ms, f, api),)
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
        for methods, handler, api in entry:
            if method in methods:
                if api:
                    req.api_handler = handler
                    return self._call_api_ref, "", None
                return handler, "", None
        return 405, "", None

    async def _call_api(self, req):
        try:
            res = req.api_handler(req)
            if hasattr(res, "send"):  # a coroutine
                res = await res
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
        allow = [m for methods, _, _ in entry for m in methods]
        if "GET" in allow:
            allow.append("HEAD")
        allow.append("OPTIONS")
        return {"Allow": ", ".join(allow)}

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
            writer = _Writer(writer)
        if not await self._slot():
            self.rejected += 1
            await self._answer(writer, error(503, "busy: too many connections", headers={"Retry-After": "1"}), reader)
            return
        self.active += 1
        try:
            await self._handle(reader, writer)
        finally:
            self.active -= 1

    async def _handle(self, reader, writer):
        r = _Reader(reader, self.idle_timeout_ms)
        req = None
        try:
            peer = writer.get_extra_info("peername")
        except Exception:  # noqa: BLE001
            peer = None
        try:
            req = await asyncio.wait_for(Request.create(self, r, writer, peer), self.head_timeout_ms / 1000)
        except _HeadTooLarge:
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
                await asyncio.wait_for(res.write(writer), self.write_timeout_ms / 1000)
        except Exception:  # noqa: BLE001 - a slow or vanished reader
            self.dropped += 1
        if unread is not None and self.lingering < MAX_LINGERING:
            self.lingering += 1
            try:
                await self._discard(unread, nbytes, limit_ms)
            finally:
                self.lingering -= 1
        await self._close(writer)

    @staticmethod
    async def _discard(reader, nbytes, limit_ms):
        # Closing a socket with unread input makes TCP send a reset, which can destroy the
        # answer before the client reads it (a browser reads it only once its upload is
        # sent): swallow the rest of the input first, nothing kept, so the client sees the
        # error instead of a reset. Bounded: `limit_ms` in all, DRAIN_GAP_MS of silence.
        t0 = clock.ticks_real_ms()
        try:
            while nbytes > 0 and clock.real_ms_since(t0) < limit_ms:
                chunk = await asyncio.wait_for(reader.read(min(nbytes, 1024)), DRAIN_GAP_MS / 1000)
                if not chunk:
                    break
                nbytes -= len(chunk)
        except Exception:  # noqa: BLE001 - silence or reset: done either way
            pass

    @staticmethod
    async def _close(writer):
        try:
            await asyncio.wait_for(writer.aclose(), 2)
        except Exception:  # noqa: BLE001
            pass


def set_body_limit(app, path, nbytes):
    """Let `path` accept a body of up to `nbytes`; above BODY_LIMIT the handler must read
    request.stream (the body is not read into RAM)."""
    app.body_limits[path] = nbytes
    if nbytes > Request.max_content_length:
        Request.max_content_length = nbytes


def _client(req):
    # the client's IP only (not the port): failures are counted per host
    a = req.client_addr
    if isinstance(a, (tuple, list)) and a:
        return str(a[0])
    if isinstance(a, (bytes, bytearray)) and len(a) >= 8:  # a raw sockaddr_in (unix port)
        return "%d.%d.%d.%d" % (a[4], a[5], a[6], a[7])
    return str(a)


def _mime(req):
    ct = req.headers.get("Content-Type") or ""
    return ct.split(";")[0].strip().lower()


def _body_object(req, allow_empty=False):
    """The request body as a JSON object; ApiError 400/415 otherwise."""
    raw = req.body
    if not raw:
        if allow_empty:
            return {}
        raise ApiError(400, "a JSON object body is required")
    if _mime(req) != "application/json":
        raise ApiError(415, "the body must be application/json")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeError):
        raise ApiError(400, "malformed JSON")
    if type(doc) is not dict:
        raise ApiError(400, "expected a JSON object")
    return doc


def _only(doc, allowed):
    for k in doc:
        if k not in allowed:
            raise ApiError(422, "unknown key", k)


def json_object(req, allowed):
    """The body as a JSON object with only `allowed` keys; ApiError (400/415/422) otherwise.
    For routes installed outside create_app (OTA)."""
    doc = _body_object(req)
    _only(doc, allowed)
    return doc


def _int_arg(req, name, default, lo, hi):
    v = req.args.get(name)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        raise ApiError(400, "must be an integer", name)
    if not lo <= n <= hi:
        raise ApiError(422, "must be %d to %d" % (lo, hi), name)
    return n


def _number(x):
    return not isinstance(x, bool) and isinstance(x, (int, float))


# ---- documents ----

def override_doc(ctl, now):
    if hasattr(ctl, "override_info"):
        return ctl.override_info(now)
    mode = {1: "on", 2: "off"}.get(getattr(ctl, "_ov_mode", 0), "auto")
    until = getattr(ctl, "_ov_until", 0)
    if mode == "auto" or until <= now:
        return {"mode": "auto", "remaining_min": None}
    return {"mode": mode, "remaining_min": (until - now + 59) // 60}


def charger_doc(ctx):
    c = ctx.controller
    now = clock.now()
    return {
        "relay": bool(c.relay) and not ctx.safe_mode,
        "state": c.state,
        "reason": c.reason,
        "since_s": max(0, now - c.since) if c.since is not None else None,
        "next": c.next,
        "override": override_doc(c, now),
        "allow": c.allow_info(now) if hasattr(c, "allow_info") else None,
    }


def alarms_doc(ctx):
    """The controller's active alarms: [{name, message, latched, stops_charging, since_s}]."""
    c = ctx.controller
    return c.alarms_info(clock.now()) if hasattr(c, "alarms_info") else []


def _safe(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a broken part must not break the status page
        return {"error": str(e)}


def bms_doc(ctx):
    link = ctx.link
    r = link.latest if link is not None else None
    if r is not None:
        out = r.to_dict()
    else:  # the same keys before the first reading, all null: clients need not special-case it
        from smartbms.bms.reading import FIELDS

        out = {}
        for k in FIELDS:
            out[k] = None
    out["age_s"] = link.age_s() if r is not None else None
    out["connected"] = bool(link is not None and link.connected)
    out["stats"] = dict(link.stats) if link is not None and link.stats else {}
    return out


def _overrides():
    from smartbms import overrides

    return overrides.status()


def status_doc(ctx):
    return {
        "bms": bms_doc(ctx),
        "charger": charger_doc(ctx),
        "alarms": alarms_doc(ctx),
        "device": {
            "version": VERSION,
            "uptime_s": ctx.uptime_s(),
            "free_heap": ctx.free_heap(),
            "wifi": _safe(ctx.wifi.status) if ctx.wifi is not None else None,
            "ota": _safe(ctx.ota.status) if ctx.ota is not None else None,
            "setup_mode": bool(ctx.setup_mode),
            "safe_mode": bool(ctx.safe_mode),
            # modules running from the filesystem (`make deploy`) instead of the image
            "overrides": _safe(_overrides),
        },
    }


# ---- static assets ----

def _assets():
    try:
        import webassets

        return webassets.ASSETS
    except ImportError:
        return {}


def _etag(data):
    import binascii

    return '"%s-%08x"' % (VERSION, binascii.crc32(data) & 0xFFFFFFFF)


def _asset_handler(url, entry):
    data, ctype = entry[0], entry[1]
    tag = _etag(data)

    async def handler(req):
        headers = {"Content-Type": ctype, "Cache-Control": "private, no-cache", "ETag": tag}
        if req.headers.get("If-None-Match") == tag:
            return Response(b"", 304, headers)
        headers["Content-Encoding"] = "gzip"
        return Response(data, 200, headers)

    return handler


# ---- the app ----

def create_app(ctx, assets=None):
    """The microdot app for `ctx`; `assets` defaults to the frozen webassets.ASSETS."""
    app = WebApp(ctx)
    auth = ctx.auth
    set_body_limit(app, OTA_PATH, OTA_BODY_LIMIT)
    scans = {"wifi": False, "bms": False}

    def api(path, methods=("GET",)):
        # handlers raise ApiError (or a validation error) for any rejected request; one shared
        # wrapper (WebApp._call_api) turns those into answers, not a closure per route
        def deco(f):
            app.route(path, methods=list(methods), api=True)(f)
            return f

        return deco

    def session_token(req):
        return req.cookies.get(COOKIE)

    @app.before_request
    async def guard(req):
        try:
            ctx.mark_web_alive()
        except AttributeError:
            pass
        path = req.path
        public = path in PUBLIC_API or path == "/login" or path.startswith("/public/")
        if not public:
            ok = auth.session_valid(session_token(req))
            if not ok and req.headers.get("Authorization"):
                try:
                    ok = await auth.check_basic(req.headers.get("Authorization"), _client(req))
                except AuthThrottled as e:
                    return error(429, "too many attempts: retry later", headers={"Retry-After": str(e.retry_after_s)})
            if not ok:
                if not path.startswith("/api/") and req.method in ("GET", "HEAD"):
                    return Response.redirect("/login")
                return error(401, "login required" if auth.has_password() else "set the admin password first")
        if req.method not in ("GET", "HEAD", "OPTIONS"):
            origin = req.headers.get("Origin")
            host = req.headers.get("Host")
            # "null" is what a sandboxed frame, a file: page or a redirect chain sends
            if origin and (origin == "null" or not host or origin.split("://", 1)[-1] != host):
                return error(403, "cross-origin request refused")
            # raw-body routes (OTA) judge their own content type: a form cannot carry an image
            if req.content_length and _mime(req) in _FORM_TYPES and path not in app.body_limits:
                return error(415, "form submissions are not accepted: send application/json")
            if "Transfer-Encoding" in req.headers:
                return error(411, "send a Content-Length")
        limit = app.body_limits.get(path, BODY_LIMIT)
        if req.content_length > limit:
            return error(413, "body too large (at most %d bytes)" % limit)
        return None

    @app.after_request
    async def after(req, res):
        return _decorate(req, res)

    @app.after_error_request
    async def after_error(req, res):
        return _decorate(req, res)

    @app.errorhandler(404)
    async def not_found(req):
        return error(404, "not found")

    @app.errorhandler(405)
    async def not_allowed(req):
        return error(405, "method not allowed")

    @app.errorhandler(413)
    async def too_large(req):
        limit = app.body_limits.get(req.path, BODY_LIMIT) if req is not None else BODY_LIMIT
        return error(413, "body too large (at most %d bytes)" % limit)

    @app.errorhandler(400)
    async def bad_request(req):
        return error(400, "malformed request")

    @app.errorhandler(500)
    async def internal(req):
        return error(500, "internal error")

    @app.errorhandler(MemoryError)
    async def low_memory(req, exc):
        # a fragmented heap under a burst of requests: a moment later the answer fits
        import gc

        gc.collect()
        return error(503, "low on memory: retry shortly", headers={"Retry-After": "1"})

    # ---- public ----
    @api("/api/auth")
    def auth_state(req):
        return {"setup_required": not auth.has_password(), "logged_in": auth.session_valid(session_token(req)),
                "setup_mode": bool(ctx.setup_mode)}

    @api("/api/login", ("POST",))
    async def login(req):
        doc = _body_object(req)
        _only(doc, ("password",))
        pw = doc.get("password")
        if not isinstance(pw, str):
            raise ApiError(422, "must be a string", "password")
        if not auth.has_password():
            raise ApiError(409, "no password is set yet: use setup")
        try:
            ok = await auth.check_password(pw, _client(req))
        except AuthThrottled as e:
            raise ApiError(429, "too many attempts: retry later", None, {"Retry-After": str(e.retry_after_s)})
        if not ok:
            raise ApiError(401, "wrong password", "password")
        token = auth.new_session()
        return Response({"ok": True}, 200, {"Set-Cookie": auth.cookie(token)})

    @api("/api/logout", ("POST",))
    def logout(req):
        auth.end_session(session_token(req))
        return Response({"ok": True}, 200, {"Set-Cookie": auth.clear_cookie()})

    @api("/api/setup", ("POST",))
    async def setup(req):
        if auth.has_password() and not ctx.setup_mode:
            raise ApiError(403, "a password is already set (hold the BOOT button for setup mode to reset it)")
        doc = _body_object(req)
        _only(doc, ("password",))
        await auth.set_password_async(doc.get("password"))
        _event(ctx, "auth", "admin password set%s" % (" in setup mode" if ctx.setup_mode else ""))
        if ctx.setup_mode:  # one reset per BOOT press: the window closes behind the owner
            ctx.end_setup_mode("admin password set")
        return {"ok": True}

    # ---- protected API ----
    @api("/api/status")
    def status(req):
        return status_doc(ctx)

    @api("/api/settings")
    def settings_get(req):
        return ctx.settings.public()

    @api("/api/settings", ("PUT",))
    def settings_put(req):
        doc = _body_object(req)
        changed = ctx.apply_settings(doc)
        out = {"ok": True, "changed": list(changed or ()), "settings": ctx.settings.public()}
        needs = getattr(ctx.wifi, "reboot_needed", None)
        if changed and "hostname" in changed and needs is not None and needs():
            # the ESP32 port starts mDNS once and cannot rename it (smartbms.wifi)
            out["reboot_needed"] = True
            out["message"] = "DHCP uses the new hostname now; NAME.local answers to it after a reboot"
        return out

    @api("/api/settings/schema")
    def settings_schema(req):
        try:
            from webassets import SCHEMA_JSON  # built with the firmware, read from flash
        except ImportError:  # tests that run without the generated module
            from smartbms import settings as settings_mod

            return settings_mod.schema_public()
        return Response(SCHEMA_JSON, 200, {"Content-Type": "application/json"})

    @api("/api/events")
    def events(req):
        limit = _int_arg(req, "limit", EVENTS_DEFAULT, 1, EVENTS_MAX)
        since = _int_arg(req, "since", None, 0, 0x3FFFFFFF)
        return {"events": ctx.events.recent(limit, since), "last_seq": ctx.events.last_seq}

    @api("/api/history")
    def history(req):
        return Response(ctx.history.series(), 200, {"Content-Type": "application/json"})

    @api("/api/wifi", ("POST",))
    def wifi_set(req):
        doc = _body_object(req)
        _only(doc, ("ssid", "password"))
        ssid = doc.get("ssid")
        pw = doc.get("password", "")
        if not isinstance(ssid, str) or not ssid:
            raise ApiError(422, "a network name is required", "ssid")
        if len(ssid.encode()) > 32:
            raise ApiError(422, "at most 32 bytes", "ssid")
        if not isinstance(pw, str):
            raise ApiError(422, "must be a string", "password")
        if pw and not 8 <= len(pw) <= 63:
            raise ApiError(422, "must be empty (open network) or 8 to 63 characters", "password")
        try:
            ctx.wifi.configure(ssid, pw)
        except ValueError as e:  # SettingsError names the setting; answer with this route's keys
            field = getattr(e, "field", None)
            raise ApiError(422, getattr(e, "message", None) or str(e),
                           {"wifi_ssid": "ssid", "wifi_password": "password"}.get(field, field))
        return {"ok": True}

    async def _scan(kind, coro_fn):
        if scans[kind]:
            raise ApiError(409, "a scan is already running")
        scans[kind] = True
        try:
            return await asyncio.wait_for(coro_fn(), SCAN_TIMEOUT_MS / 1000)
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - timeout or radio error
            raise ApiError(503, "scan failed: %s" % (e or type(e).__name__))
        finally:
            scans[kind] = False

    @api("/api/wifi/scan")
    async def wifi_scan(req):
        return {"networks": await _scan("wifi", ctx.wifi.scan)}

    @api("/api/bms/scan")
    async def bms_scan(req):
        cap = sys.modules.get("smartbms.bms.capture")
        if cap is not None and cap.current() is not None and cap.current().running:
            raise ApiError(409, "a capture is running: the radio is busy")
        if req.args.get("all") == "1":  # every device, those of no known family too (for a capture)
            from smartbms.bms.scan import scan

            return {"devices": await _scan("bms", lambda: scan(5000, True))}
        return {"devices": await _scan("bms", ctx.scan_bms)}

    # capture mode for unknown packs (smartbms.bms.capture, imported on first use)
    @api("/api/bms/capture")
    def capture_state(req):
        from smartbms.bms import capture

        return capture.status()

    @api("/api/bms/capture", ("POST",))
    def capture_start(req):
        from smartbms.bms import capture

        try:
            return capture.start(ctx, _body_object(req))
        except capture.CaptureRefused as e:
            raise ApiError(409, str(e))

    @api("/api/bms/capture", ("DELETE",))
    def capture_stop(req):
        from smartbms.bms import capture

        return capture.stop_or_erase()

    @api("/api/bms/capture/file")
    def capture_file(req):
        from smartbms.bms import capture

        size = capture.file_size()
        if size is None:
            raise ApiError(404, "no capture file: start a capture first")
        return Response(capture.FileReader(capture.paths.path(capture.FILE), size), 200, {
            "Content-Type": "text/plain; charset=utf-8", "Content-Length": str(size),
            "Content-Disposition": 'attachment; filename="smartbms-capture.txt"'})

    @api("/api/relay", ("POST",))
    def relay(req):
        doc = _body_object(req)
        _only(doc, ("mode", "minutes"))
        mode = doc.get("mode")
        if mode not in ("auto", "on", "off") or not isinstance(mode, str):
            raise ApiError(422, "must be auto, on or off", "mode")
        minutes = doc.get("minutes")
        if mode != "auto":
            if not _number(minutes):
                raise ApiError(422, "a number of minutes is required", "minutes")
            if not 1 <= minutes <= 1440:
                raise ApiError(422, "must be 1 to 1440", "minutes")
        elif minutes is not None and not _number(minutes):
            raise ApiError(422, "must be a number", "minutes")
        ctx.set_override(mode, minutes)
        return {"ok": True, "charger": charger_doc(ctx)}

    @api("/api/timeout/reset", ("POST",))
    def timeout_reset(req):
        _only(_body_object(req, True), ())
        ctx.reset_timeout()
        return {"ok": True, "charger": charger_doc(ctx)}

    @api("/api/alarms/clear", ("POST",))
    def alarms_clear(req):
        _only(_body_object(req, True), ())
        cleared = ctx.clear_alarms()
        return {"ok": True, "cleared": cleared, "alarms": alarms_doc(ctx), "charger": charger_doc(ctx)}

    @api("/api/charge/allow", ("POST",))
    def charge_allow(req):
        doc = _body_object(req)
        _only(doc, ("allow", "minutes"))
        allow = doc.get("allow")
        if not isinstance(allow, bool):
            raise ApiError(422, "must be true or false", "allow")
        minutes = doc.get("minutes")
        if minutes is not None and (not _number(minutes) or not 1 <= minutes <= 1440):
            raise ApiError(422, "must be 1 to 1440", "minutes")
        ctx.set_allow(allow, minutes)
        return {"ok": True, "charger": charger_doc(ctx)}

    @api("/api/reboot", ("POST",))
    def reboot(req):
        _only(_body_object(req, True), ())
        ctx.request_reboot("web request")
        return {"ok": True, "message": "rebooting"}

    # ---- pages and assets ----
    if assets is None:
        assets = _assets()
    for url, entry in assets.items():
        app.route(url)(_asset_handler(url, entry))
    if "/index.html" in assets:
        app.route("/")(_asset_handler("/", assets["/index.html"]))
    if "/public/login.html" in assets:
        app.route("/login")(_asset_handler("/login", assets["/public/login.html"]))

    try:
        from smartbms.ota import http as ota_http
    except ImportError:
        ota_http = None
    if ota_http is not None and hasattr(ota_http, "install"):
        ota_http.install(app, ctx)
    return app


def _decorate(req, res):
    h = res.headers
    for k, v in SECURITY_HEADERS:
        h[k] = v
    if req is not None and req.path.startswith("/api/"):
        h["Cache-Control"] = "no-store"
    return res


def _event(ctx, kind, msg):
    try:
        ctx.events.add(kind, msg)
    except Exception:  # noqa: BLE001 - logging must not fail the request
        pass


def default_host():
    # the device listens on every interface; a host run (sim, tests) only on loopback
    return "0.0.0.0" if sys.platform == "esp32" else "127.0.0.1"


async def serve(ctx, host=None, port=80, app=None):
    """Run the web server until cancelled (returns the asyncio server when `ready` wanted)."""
    app = app or create_app(ctx)
    if host is None:
        host = getattr(ctx, "web_host", None) or default_host()
    server = await start(app, host, port)
    try:
        while True:
            await asyncio.sleep(3600)
    finally:
        server.close()


async def start(app, host, port):
    """Start listening; returns the asyncio server (close() to stop)."""

    async def on_client(reader, writer):
        try:
            await app.handle_request(reader, writer)
        except Exception as e:  # noqa: BLE001 - one bad connection must not end the server
            sys.print_exception(e) if hasattr(sys, "print_exception") else None
            # every normal path closed it already; this one must too (wait_closed, not close:
            # MicroPython's close() leaves the socket open)
            await WebApp._close(writer if hasattr(writer, "aclose") else _Writer(writer))

    return await asyncio.start_server(on_client, host, port, backlog=app.max_active + app.max_waiting)
