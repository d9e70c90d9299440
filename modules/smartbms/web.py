# The HTTP API and the web UI (microdot), talking to the rest of the firmware only through
# the app context `ctx` (docs/design.md "The application context"). The server under it,
# with its limits, is smartbms.httpd.
try:
    import asyncio
except ImportError:  # pragma: no cover
    asyncio = None

from microdot import Response

from smartbms.auth import COOKIE, Auth, AuthThrottled
from smartbms.actions import ApiError, number as _number, only as _only, relay_args, reset_timeout  # noqa: F401
from smartbms.httpd import (  # noqa: F401 (BODY_LIMIT and start are part of this module's API)
    BODY_LIMIT, WebApp, error, set_body_limit, start)
from smartbms.status import alarms_doc, charger_doc, status_doc
from smartbms.version import VERSION
from smartbms.webreq import body_object, client_host, int_arg, mime

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

OTA_PATH = "/api/ota"
OTA_BODY_LIMIT = const(0x1D0000)  # one app slot (boards/SMARTBMS partition table)
SCAN_TIMEOUT_MS = const(20000)
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


_PAGES = {"/": "/index.html", "/login": "/public/login.html"}


async def _asset(req):
    # one handler for every file of the UI (a closure per file, with its cells, cost about
    # 80 B each while the stack is loaded); the ETag is computed per answer (a CRC of a few KB)
    data, ctype = req.app.assets[_PAGES.get(req.path, req.path)][:2]
    tag = _etag(data)
    headers = {"Content-Type": ctype, "Cache-Control": "private, no-cache", "ETag": tag}
    if req.headers.get("If-None-Match") == tag:
        return Response(b"", 304, headers)
    headers["Content-Encoding"] = "gzip"
    return Response(data, 200, headers)


# ---- the app ----

def create_app(ctx, assets=None):
    """The microdot app for `ctx`; `assets` defaults to the frozen webassets.ASSETS."""
    app = WebApp(ctx)
    auth = Auth(ctx.settings, state=ctx.auth_state)  # the sessions live on in ctx
    set_body_limit(app, OTA_PATH, OTA_BODY_LIMIT)

    def api(path, methods=("GET",)):
        # handlers raise ApiError (or a validation error) for any rejected request; one shared
        # wrapper (WebApp._call_api) turns those into answers, not a closure per route
        def deco(f):
            app.route(path, methods, api=True)(f)
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
                    ok = await auth.check_basic(req.headers.get("Authorization"), client_host(req))
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
            if req.content_length and mime(req) in _FORM_TYPES and path not in app.body_limits:
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
        doc = body_object(req)
        _only(doc, ("password",))
        pw = doc.get("password")
        if not isinstance(pw, str):
            raise ApiError(422, "must be a string", "password")
        if not auth.has_password():
            raise ApiError(409, "no password is set yet: use setup")
        try:
            ok = await auth.check_password(pw, client_host(req))
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
        doc = body_object(req)
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
        doc = body_object(req)
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
        limit = int_arg(req, "limit", EVENTS_DEFAULT, 1, EVENTS_MAX)
        since = int_arg(req, "since", None, 0, 0x3FFFFFFF)
        # read from the event files as the answer is written (smartbms.jsonpieces)
        return {"last_seq": ctx.events.last_seq, "events": ctx.events.iter_recent(limit, since)}

    @api("/api/history")
    def history(req):
        return Response(ctx.history.series(), 200, {"Content-Type": "application/json"})

    from smartbms import web_upkeep  # WiFi, the BMS scan and capture

    web_upkeep.install(app, ctx, api)

    @api("/api/relay", ("POST",))
    def relay(req):
        mode, minutes = relay_args(body_object(req))
        ctx.set_override(mode, minutes)
        return {"ok": True, "charger": charger_doc(ctx)}

    @api("/api/timeout/reset", ("POST",))
    def timeout_reset(req):
        _only(body_object(req, True), ())
        reset_timeout(ctx)
        return {"ok": True, "charger": charger_doc(ctx)}

    @api("/api/alarms/clear", ("POST",))
    def alarms_clear(req):
        _only(body_object(req, True), ())
        cleared = ctx.clear_alarms()
        return {"ok": True, "cleared": cleared, "alarms": alarms_doc(ctx), "charger": charger_doc(ctx)}

    @api("/api/charge/allow", ("POST",))
    def charge_allow(req):
        doc = body_object(req)
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
        _only(body_object(req, True), ())
        ctx.request_reboot("web request")
        return {"ok": True, "message": "rebooting"}

    # ---- pages and assets ----
    if assets is None:
        assets = _assets()
    app.assets = assets
    for url in assets:
        app.route(url)(_asset)
    for url, name in _PAGES.items():
        if name in assets:
            app.route(url)(_asset)

    from smartbms.mqtt import routes as mqtt_routes  # MQTT status and the alert test (tiny)

    mqtt_routes.install(app, ctx)
    from smartbms import live  # GET /api/live: status and events pushed (server-sent events)

    app.live = live.install(app, ctx, status_doc)

    # The OTA code (its routes, the writer, the pull client: 2 KB of the heap) is loaded for
    # an upload and dropped after it; a device needs it a few times a year.
    @app.route(OTA_PATH, ("POST",))
    async def ota_upload(req):
        return await _ota("upload", ctx, req)

    @app.route(OTA_PATH + "/url", ("POST",))
    async def ota_url(req):
        return await _ota("pull_url", ctx, req)

    return app


_OTA_MODULES = ("smartbms.ota.http", "smartbms.ota.updater", "smartbms.ota.pull", "smartbms.ota.image")


async def _ota(name, ctx, req):
    from smartbms.ota import http

    try:
        return await getattr(http, name)(ctx, req)
    finally:
        del http
        from smartbms import unload

        unload(_OTA_MODULES)


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
