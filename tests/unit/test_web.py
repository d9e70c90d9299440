# The web layer against a small fake app context, over real loopback sockets, on both
# runtimes. Timeouts and connection limits are shrunk per app instance so the slow-client
# tests take well under a second; tests/host/test_api.py checks the real values on the sim.
import binascii
import json

from testutil import IS_MICROPYTHON, run_async

import asyncio
from smartbms import clock, web
from smartbms.auth import Auth, COOKIE
from smartbms.bms.reading import Reading
from smartbms.charge.controller import Controller
from smartbms.history import History
from smartbms.settings import Settings

PASSWORD = "web-test-password"
GZ = binascii.unhexlify("1f8b0800000000000203f3c8e4020070ca4e8303000000")  # gzip("Hi\n")
ASSETS = {
    "/index.html": (GZ, "text/html; charset=utf-8", 3),
    "/app.js": (GZ, "application/javascript", 3),
    "/public/login.html": (GZ, "text/html; charset=utf-8", 3),
    "/public/style.css": (GZ, "text/css", 3),
}


class MemFS:
    def __init__(self):
        self.files = {}

    def read(self, path):
        return self.files.get(path)

    def write(self, path, data):
        self.files[path] = data

    def rename(self, src, dst):
        self.files[dst] = self.files.pop(src)

    def remove(self, path):
        return self.files.pop(path, None) is not None


class FakeEvents:
    def __init__(self):
        self.items = []

    def add(self, kind, msg):
        self.items.append({"seq": len(self.items) + 1, "up_s": 0, "t": None, "kind": kind, "msg": msg})
        return len(self.items)

    @property
    def last_seq(self):
        return len(self.items)

    def recent(self, n=50, since_seq=None):
        if since_seq is not None:
            return [e for e in self.items if e["seq"] > since_seq][:n]
        return self.items[-n:] if n else []

    def iter_recent(self, n=50, since_seq=None):
        return iter(self.recent(n, since_seq))


class FakeLink:
    def __init__(self):
        self.latest = Reading()
        r = self.latest
        r.voltage, r.current, r.soc, r.cells = 13.31, -2.5, 76.0, [3.32, 3.33, 3.33, 3.33]
        self.connected = True
        self.stats = {"polls": 10, "bad_checksum": 1}

    def age_s(self):
        return 3


class FakeWifi:
    def __init__(self):
        self.configured = []

    def status(self):
        return {"mode": "sta", "ssid": "home", "ip": "192.168.1.9", "rssi": -60, "connected": True, "ap_ssid": ""}

    async def scan(self):
        await asyncio.sleep(0)
        return [{"ssid": "home", "rssi": -60, "secure": True}]

    def configure(self, ssid, password):
        from smartbms.settings import check_value  # validates as WifiManager.configure does

        check_value("wifi_ssid", ssid)
        check_value("wifi_password", password)
        self.configured.append((ssid, password))


class FakeCtx:
    def __init__(self, password=PASSWORD):
        self.settings = Settings("/mem/settings.json", log=lambda *a: None, fs=MemFS())
        self.settings.load()
        self.events = FakeEvents()
        self.controller = Controller(self.settings)
        self.history = History()
        self.history.add(0, 50, 13.2, 1.0)
        self.history.add(60, 51, 13.3, 1.5)
        self.auth_state = {}
        self.auth = Auth(self.settings, state=self.auth_state)  # the web's own Auth shares it
        self.auth.base_ms, self.auth.step_ms, self.auth.max_ms = 30, 5, 200
        if password:
            self.auth.set_password(password, iterations=50)
        self.link = FakeLink()
        self.wifi = FakeWifi()
        self.ota = None
        self.setup_mode = False
        self.safe_mode = False
        self.reboots = []
        self.web_hits = 0

    def uptime_s(self):
        return 1234

    def free_heap(self):
        return 54321

    def set_override(self, mode, minutes):
        self.controller.set_override(mode, minutes, clock.now())

    def reset_timeout(self):  # as App.reset_timeout: False when no timeout holds charging
        if not self.controller.timeout_active():
            return False
        self.controller.reset_timeout(clock.now())
        return True

    def apply_settings(self, partial):
        return self.settings.update(partial)

    async def scan_bms(self):
        return [{"name": "xiaoxiang", "mac": "A4:C1:38:00:00:01", "protocol": "jbd", "rssi": -70}]

    def request_reboot(self, reason):
        self.reboots.append(reason)

    def mark_web_alive(self):
        self.web_hits += 1

    def end_setup_mode(self, why):
        self.setup_mode = False


def basic(pw=PASSWORD, user="admin"):
    return "Basic " + binascii.b2a_base64(("%s:%s" % (user, pw)).encode()).decode().strip()


class Resp:
    def __init__(self, raw):
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0] else 0
        self.headers = {}
        self.cookies = []
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            k, v = k.strip().lower(), v.strip()
            if k == "set-cookie":
                self.cookies.append(v)
            self.headers[k] = v
        self.body = body

    def json(self):
        return json.loads(self.body)


async def _read_all(reader, limit_ms=3000):
    out = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(4096), limit_ms / 1000)
        if not chunk:
            return out
        out += chunk


async def raw(port, data, close_write=False):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await _read_all(reader)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except Exception:
            pass


async def request(port, method, path, body=None, headers=None, auth=True, json_body=None):
    h = {"Host": "127.0.0.1:%d" % port}
    if auth is True:
        h["Authorization"] = basic()
    elif auth:
        h["Cookie"] = "%s=%s" % (COOKIE, auth)
    if json_body is not None:
        body = json.dumps(json_body)
        h["Content-Type"] = "application/json"
    if isinstance(body, str):
        body = body.encode()
    if body is not None:
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
    return Resp(await raw(port, head.encode() + (body or b"")))


def _port():
    import random

    return random.randint(20000, 60000) if not IS_MICROPYTHON else 20000 + (clock.now_ms() * 7919) % 40000


def serve(test, ctx=None, tweak=None):
    """Run `await test(port, ctx, app)` against a server on a random loopback port."""
    ctx = ctx or FakeCtx()

    async def main():
        app = web.create_app(ctx, assets=ASSETS)
        app.head_timeout_ms = 400
        app.idle_timeout_ms = 400
        app.write_timeout_ms = 400
        if tweak:
            tweak(app)
        server = None
        for attempt in range(20):
            port = _port() + attempt
            try:
                server = await web.start(app, "127.0.0.1", port)
                break
            except OSError:
                continue
        try:
            return await test(port, ctx, app)
        finally:
            server.close()
            await server.wait_closed()

    return run_async(main())


PROTECTED = (
    ("GET", "/api/status"), ("GET", "/api/settings"), ("PUT", "/api/settings"), ("GET", "/api/settings/schema"),
    ("GET", "/api/events"), ("GET", "/api/history"), ("POST", "/api/wifi"), ("GET", "/api/wifi/scan"),
    ("POST", "/api/relay"), ("POST", "/api/timeout/reset"), ("POST", "/api/reboot"), ("GET", "/api/bms/scan"),
    ("POST", "/api/ota"), ("GET", "/api/live"),
)


def test_every_protected_route_needs_credentials():
    async def t(port, ctx, app):
        for method, path in PROTECTED:
            r = await request(port, method, path, json_body={"mode": "on", "minutes": 5}, auth=False)
            assert r.status == 401, (method, path, r.status)
            assert "www-authenticate" not in r.headers
            assert r.json()["error"]
            r = await request(port, method, path, json_body={"mode": "on", "minutes": 5}, auth=None,
                              headers={"Authorization": basic("wrong-password")})
            assert r.status == 401, (method, path)
        assert ctx.reboots == [] and ctx.controller.state == "startup" and ctx.wifi.configured == []
        # pages redirect to the login page; the login page and its assets are public
        r = await request(port, "GET", "/", auth=False)
        assert r.status == 302 and r.headers["location"] == "/login"
        r = await request(port, "GET", "/app.js", auth=False)
        assert r.status == 302
        for p in ("/login", "/public/style.css", "/public/login.html"):
            r = await request(port, "GET", p, auth=False)
            assert r.status == 200 and r.body == GZ, p
        r = await request(port, "GET", "/api/auth", auth=False)
        assert r.json() == {"setup_required": False, "logged_in": False, "setup_mode": False}

    serve(t)


def test_basic_and_session_and_logout():
    async def t(port, ctx, app):
        r = await request(port, "GET", "/api/status")
        assert r.status == 200
        r = await request(port, "POST", "/api/login", json_body={"password": "not-it-at-all"}, auth=False)
        assert r.status == 401 and r.json()["field"] == "password" and not r.cookies
        r = await request(port, "POST", "/api/login", json_body={"password": PASSWORD}, auth=False)
        assert r.status == 200
        cookie = r.cookies[0]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        token = cookie.split(";")[0].split("=", 1)[1]
        r = await request(port, "GET", "/api/status", auth=token)
        assert r.status == 200 and r.json()["device"]["uptime_s"] == 1234
        r = await request(port, "GET", "/api/auth", auth=token)
        assert r.json()["logged_in"] is True
        r = await request(port, "GET", "/", auth=token)
        assert r.status == 200 and r.headers["content-encoding"] == "gzip"
        r = await request(port, "POST", "/api/logout", auth=token, body=b"")
        assert r.status == 200 and "Max-Age=0" in r.cookies[0]
        r = await request(port, "GET", "/api/status", auth=token)
        assert r.status == 401
        assert ctx.web_hits > 0

    serve(t)


def test_first_setup_then_locked():
    ctx = FakeCtx(password=None)

    async def t(port, ctx, app):
        r = await request(port, "GET", "/api/auth", auth=False)
        assert r.json()["setup_required"] is True
        r = await request(port, "GET", "/api/status", auth=False)
        assert r.status == 401
        r = await request(port, "POST", "/api/login", json_body={"password": "whatever-pass"}, auth=False)
        assert r.status == 409
        r = await request(port, "POST", "/api/setup", json_body={"password": "short"}, auth=False)
        assert r.status == 422 and r.json()["field"] == "password"
        assert not ctx.auth.has_password()
        r = await request(port, "POST", "/api/setup", json_body={"password": "my-new-password"}, auth=False)
        assert r.status == 200 and ctx.auth.has_password()
        r = await request(port, "POST", "/api/setup", json_body={"password": "attacker-password"}, auth=False)
        assert r.status == 403
        r = await request(port, "GET", "/api/status", auth=None, headers={"Authorization": basic("my-new-password")})
        assert r.status == 200
        ctx.setup_mode = True  # the BOOT button: a new password may be set
        r = await request(port, "POST", "/api/setup", json_body={"password": "second-password"}, auth=False)
        assert r.status == 200
        r = await request(port, "GET", "/api/status", auth=None, headers={"Authorization": basic("second-password")})
        assert r.status == 200
        # setting it ended setup mode: nobody else on the access point may set another one
        assert ctx.setup_mode is False
        r = await request(port, "POST", "/api/setup", json_body={"password": "attacker-password"}, auth=False)
        assert r.status == 403

    serve(t, ctx)


def test_status_document():
    async def t(port, ctx, app):
        d = (await request(port, "GET", "/api/status")).json()
        b, c, dev = d["bms"], d["charger"], d["device"]
        assert b["soc"] == 76.0 and b["voltage"] == 13.31 and b["cells"] == [3.32, 3.33, 3.33, 3.33]
        assert b["age_s"] == 3 and b["connected"] is True and b["stats"]["bad_checksum"] == 1
        for k in ("relay", "state", "reason", "since_s", "next", "override"):
            assert k in c
        assert c["override"] == {"mode": "auto", "remaining_min": None}
        assert dev["free_heap"] == 54321 and dev["wifi"]["ssid"] == "home" and dev["ota"] is None
        assert dev["setup_mode"] is False and dev["safe_mode"] is False and dev["version"]
        ctx.link.latest = None
        ctx.link.connected = False
        b = (await request(port, "GET", "/api/status")).json()["bms"]
        assert b["connected"] is False and b["age_s"] is None

    serve(t)


def test_settings_updates_are_all_or_nothing():
    async def t(port, ctx, app):
        before = (await request(port, "GET", "/api/settings")).json()
        assert "admin_hash" not in before and "wifi_password" not in before
        assert not any(PASSWORD in str(v) for v in before.values())
        bad = [
            ('{"max_soc": 90, "min_soc": "x"}', 422, "min_soc"),
            ('{"max_soc": 90, "nonsense": 1}', 422, "nonsense"),
            ('{"max_soc": 101}', 422, "max_soc"),
            ('{"min_soc": 99, "max_soc": 100}', 422, "min_soc"),
            ('{"admin_hash": "pbkdf2$1$00$00"}', 422, "admin_hash"),
            ('{"max_soc": 90', 400, None),
            ('[1, 2]', 400, None),
            ('', 400, None),
        ]
        for body, status, field in bad:
            r = await request(port, "PUT", "/api/settings", body=body, headers={"Content-Type": "application/json"})
            assert r.status == status, (body, r.status, r.body)
            assert r.json().get("field") == field, (body, r.json())
        r = await request(port, "PUT", "/api/settings", body='{"max_soc": 90}',
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 415
        assert (await request(port, "GET", "/api/settings")).json() == before
        r = await request(port, "PUT", "/api/settings", json_body={"max_soc": 90, "min_soc": 70})
        assert r.status == 200 and sorted(r.json()["changed"]) == ["max_soc", "min_soc"]
        after = (await request(port, "GET", "/api/settings")).json()
        assert after["max_soc"] == 90 and after["min_soc"] == 70
        schema = (await request(port, "GET", "/api/settings/schema")).json()
        assert "max_soc" in schema["fields"] and "admin_hash" not in schema["fields"]
        # served from the generated module, and that copy is the schema of this code
        from smartbms import settings as settings_mod

        assert schema == json.loads(json.dumps(settings_mod.schema_public()))

    serve(t)


SECRETS = {"wifi_password": "hunter2hunter2", "mqtt_password": "broker-pw-9", "alert_token": "tk_3f9a"}


def test_null_clears_a_secret_absent_keeps_it_and_the_log_never_shows_a_value():
    ctx = FakeCtx()
    ctx.settings._logger = ctx.events  # as the App: settings changes go to the event log

    async def put(port, doc):
        return await request(port, "PUT", "/api/settings", json_body=doc)

    async def t(port, ctx, app):
        r = await put(port, SECRETS)
        assert r.status == 200 and sorted(r.json()["changed"]) == sorted(SECRETS)
        assert (await put(port, {"max_soc": 90})).status == 200  # absent: kept
        got = (await request(port, "GET", "/api/settings")).json()
        for k, v in SECRETS.items():
            assert got[k + "_set"] is True and k not in got and ctx.settings.secret(k) == v
        for k in SECRETS:
            r = await put(port, {k: None})
            assert r.status == 200 and r.json()["changed"] == [k], r.body
            assert r.json()["settings"][k + "_set"] is False and ctx.settings.secret(k) == ""
            assert (await request(port, "GET", "/api/settings")).json()[k + "_set"] is False
        r = await put(port, {"alert_token": None})  # already clear: no change
        assert r.status == 200 and r.json()["changed"] == []
        # a setting that is not a secret cannot be nulled; nothing of the request is applied
        assert (await put(port, {"alert_token": "tk_again"})).status == 200
        before = (await request(port, "GET", "/api/settings")).json()
        for doc, field in (({"max_soc": None}, "max_soc"), ({"alert_token": None, "hostname": None}, "hostname"),
                           ({"alert_token": None, "max_soc": 101}, "max_soc"), ({"admin_hash": None}, "admin_hash")):
            r = await put(port, doc)
            assert r.status == 422 and r.json()["field"] == field, (doc, r.body)
            if doc[field] is None and field != "admin_hash":
                assert "null" in r.json()["error"] and "secret" in r.json()["error"], r.body
        assert (await request(port, "GET", "/api/settings")).json() == before
        assert ctx.settings.secret("alert_token") == "tk_again"
        ev = await request(port, "GET", "/api/events?limit=200")
        msgs = [e["msg"] for e in ev.json()["events"] if e["kind"] == "settings"]
        for k, v in SECRETS.items():
            assert any(k + " cleared" in m for m in msgs), (k, msgs)
            assert v not in ev.body.decode()
        assert "tk_again" not in ev.body.decode()

    serve(t, ctx)


def test_relay_override_validation():
    async def t(port, ctx, app):
        bad = [
            ({"mode": "maybe"}, "mode"), ({"mode": 1}, "mode"), ({"minutes": 5}, "mode"),
            ({"mode": "on"}, "minutes"), ({"mode": "on", "minutes": 0}, "minutes"),
            ({"mode": "on", "minutes": 1441}, "minutes"), ({"mode": "off", "minutes": True}, "minutes"),
            ({"mode": "off", "minutes": "5"}, "minutes"), ({"mode": "on", "minutes": 5, "x": 1}, "x"),
        ]
        for body, field in bad:
            r = await request(port, "POST", "/api/relay", json_body=body)
            assert r.status == 422 and r.json()["field"] == field, (body, r.status, r.body)
        assert ctx.controller.state == "startup"
        assert (await request(port, "GET", "/api/status")).json()["charger"]["override"]["mode"] == "auto"
        r = await request(port, "POST", "/api/relay", json_body={"mode": "off", "minutes": 30})
        assert r.status == 200
        ov = r.json()["charger"]["override"]
        assert ov["mode"] == "off" and 29 <= ov["remaining_min"] <= 30
        r = await request(port, "POST", "/api/relay", json_body={"mode": "auto"})
        assert r.json()["charger"]["override"]["mode"] == "auto"
        # no timeout holds charging: nothing to reset, said so, nothing logged
        r = await request(port, "POST", "/api/timeout/reset", body=b"")
        assert r.status == 409 and r.json()["error"] == "no charge timeout is active: nothing to reset"
        assert not [e for e in ctx.events.items if "timeout" in e["msg"]]
        ctx.controller._phase = "timeout"  # a hold: the reset goes through
        r = await request(port, "POST", "/api/timeout/reset", body=b"")
        assert r.status == 200 and r.json()["charger"]["state"] != "timeout"
        r = await request(port, "POST", "/api/timeout/reset", json_body={"now": 1})
        assert r.status == 422
        r = await request(port, "POST", "/api/reboot", json_body={})
        assert r.status == 200 and ctx.reboots == ["web request"]

    serve(t)


def test_running_out_of_memory_is_a_503_to_retry_not_a_500():
    def tweak(app):
        @app.route("/api/test-oom")
        async def oom(req):
            raise MemoryError("memory allocation failed")

    async def t(port, ctx, app):
        r = await request(port, "GET", "/api/test-oom")
        assert r.status == 503 and r.headers.get("retry-after") == "1" and "memory" in r.json()["error"]
        assert (await request(port, "GET", "/api/status")).status == 200

    serve(t, tweak=tweak)


def test_status_before_the_first_reading_has_every_field_null():
    async def t(port, ctx, app):
        from smartbms.bms.reading import FIELDS

        ctx.link.latest = None
        b = (await request(port, "GET", "/api/status")).json()["bms"]
        for k in FIELDS:
            assert k in b and b[k] is None, k
        assert b["age_s"] is None

    serve(t)


def test_events_history_wifi_and_scans():
    async def t(port, ctx, app):
        for i in range(5):
            ctx.events.add("test", "event %d" % i)
        d = (await request(port, "GET", "/api/events?since=2&limit=2")).json()
        assert [e["seq"] for e in d["events"]] == [3, 4] and d["last_seq"] == 5
        assert (await request(port, "GET", "/api/events?limit=abc")).status == 400
        assert (await request(port, "GET", "/api/events?limit=100000")).status == 422
        assert (await request(port, "GET", "/api/events?since=-1")).json()["field"] == "since"
        h = (await request(port, "GET", "/api/history")).json()
        assert h["soc"] == [50.0, 51.0] and h["interval_s"] == 60
        r = await request(port, "GET", "/api/wifi/scan")
        assert r.json()["networks"][0]["ssid"] == "home"
        r = await request(port, "GET", "/api/bms/scan")
        assert r.json()["devices"][0]["protocol"] == "jbd"
        for body, field in (({"ssid": ""}, "ssid"), ({"ssid": "x" * 33}, "ssid"),
                            ({"ssid": "net", "password": "short"}, "password"),
                            ({"ssid": "net", "password": 12345678}, "password"), ({"ssid": "net", "pw": ""}, "pw"),
                            ({"ssid": "n\x01t"}, "ssid"), ({"ssid": "net", "password": "p\u00e4ssw\u00f6rd"}, "password")):
            r = await request(port, "POST", "/api/wifi", json_body=body)
            assert r.status == 422 and r.json()["field"] == field, body
        assert ctx.wifi.configured == []
        r = await request(port, "POST", "/api/wifi", json_body={"ssid": "net", "password": "longenough"})
        assert r.status == 200 and ctx.wifi.configured == [("net", "longenough")]

    serve(t)


def test_errors_are_json_with_security_headers():
    async def t(port, ctx, app):
        r = await request(port, "GET", "/api/nothing-here")
        assert r.status == 404 and r.json()["error"]
        r = await request(port, "DELETE", "/api/status")
        assert r.status == 405 and r.json()["error"]
        r = await request(port, "GET", "/api/status")
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        r = await request(port, "POST", "/api/relay", json_body={"mode": "off", "minutes": 5},
                          headers={"Origin": "http://evil.example"})
        assert r.status == 403 and ctx.controller.state == "startup"
        r = await request(port, "GET", "/app.js")
        tag = r.headers["etag"]
        assert r.status == 200 and r.headers["content-encoding"] == "gzip" and "no-cache" in r.headers["cache-control"]
        r = await request(port, "GET", "/app.js", headers={"If-None-Match": tag})
        assert r.status == 304 and r.body == b""

    serve(t)


def test_oversize_bodies_get_413_without_being_read():
    async def t(port, ctx, app):
        before = ctx.settings.public()
        # the header claims 1 MB; only a few bytes follow: the answer must not wait for the rest
        head = ("PUT /api/settings HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000000\r\n\r\n" % basic())
        r = Resp(await raw(port, head.encode() + b'{"max_soc": 90'))
        assert r.status == 413 and r.json()["error"]
        body = '{"bms_name": "%s"}' % ("x" * (web.BODY_LIMIT + 10))
        r = await request(port, "PUT", "/api/settings", body=body, headers={"Content-Type": "application/json"})
        assert r.status == 413
        assert ctx.settings.public() == before
        # a big body on an unknown route is not read either
        r = Resp(await raw(port, b"POST /nowhere HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"))
        assert r.status in (404, 413)

    serve(t)


def test_half_open_and_oversize_heads_are_dropped():
    async def t(port, ctx, app):
        t0 = clock.now_ms()
        out = await raw(port, b"GET /api/status HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        assert out == b"" and clock.now_ms() - t0 < 2500
        r = Resp(await raw(port, b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 1000 + b"\r\n" * 1 +
                           (b"X-More: " + b"b" * 1000 + b"\r\n") * 5 + b"\r\n"))
        assert r.status == 431
        r = Resp(await raw(port, b"garbage\r\n\r\n"))
        assert r.status == 400
        assert app.dropped >= 2
        r = await request(port, "GET", "/api/status")  # still serving
        assert r.status == 200

    serve(t)


def test_connection_limit_answers_503_and_recovers():
    def tweak(app):
        app.max_active = 2
        app.max_waiting = 1
        app.queue_wait_ms = 200
        app.head_timeout_ms = 1500

    async def t(port, ctx, app):
        stalled = []
        for _ in range(3):  # two take the handler slots, one waits
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /api/status HTTP/1.1\r\n")
            await w.drain()
            stalled.append((r, w))
        await asyncio.sleep(0.05)
        r = await request(port, "GET", "/api/status")
        assert r.status == 503 and r.headers.get("retry-after") == "1"
        assert app.rejected >= 1
        for r_, w in stalled:
            w.close()
            await w.wait_closed()  # MicroPython closes the socket only here
        await asyncio.sleep(0.3)
        r = await request(port, "GET", "/api/status")
        assert r.status == 200, (r.status, r.body, app.active, app.waiting)

    serve(t, tweak=tweak)


def test_wrong_password_delay_grows_over_http():
    async def t(port, ctx, app):
        times = []
        for _ in range(3):
            t0 = clock.now_ms()
            r = await request(port, "GET", "/api/status", auth=None, headers={"Authorization": basic("bad-guess-123")})
            assert r.status == 401
            times.append(clock.now_ms() - t0)
        assert times[0] >= 25 and times[1] >= 55 and times[2] >= 110, times
        assert times[2] > times[0]

    serve(t)


def test_only_routes_given_a_limit_take_big_bodies():
    def tweak(app):
        web.set_body_limit(app, "/api/test-upload", 50000)

        @app.route("/api/test-upload", methods=["POST"])
        async def upload(req):
            n = 0
            buf = bytearray(1024)
            while n < req.content_length:
                k = await req.stream.readinto(buf)
                if not k:
                    break
                n += k
            return {"received": n, "in_ram": len(req.body)}

    async def t(port, ctx, app):
        assert app.body_limits[web.OTA_PATH] == web.OTA_BODY_LIMIT
        head = ("POST /api/ota HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/octet-stream\r\n"
                "Content-Length: %d\r\n\r\n" % (basic(), web.OTA_BODY_LIMIT + 1))
        r = Resp(await raw(port, head.encode() + b"\xe9" * 100))
        assert r.status == 413
        # 40 KB reach the route as a stream, never as one bytes object
        r = await request(port, "POST", "/api/test-upload", body=b"\x01" * 40000,
                          headers={"Content-Type": "application/octet-stream"})
        assert r.status == 200 and r.json() == {"received": 40000, "in_ram": 0}
        r = await request(port, "POST", "/api/test-upload", body=b"\x01" * 50001,
                          headers={"Content-Type": "application/octet-stream"})
        assert r.status == 413
        # the same size elsewhere is refused
        r = await request(port, "POST", "/api/relay", body=b"\x01" * 40000,
                          headers={"Content-Type": "application/json"})
        assert r.status == 413 and ctx.controller.state == "startup"
        # a stalled stream is dropped after the idle timeout
        head = ("POST /api/test-upload HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 30000\r\n\r\n" % basic())
        t0 = clock.now_ms()
        out = await raw(port, head.encode() + b"\x02" * 1000)
        assert clock.now_ms() - t0 < 2500
        assert (await request(port, "GET", "/api/status")).status == 200

    serve(t, tweak=tweak)


# ---- hardening (issue 11): origins, head and length limits, UTF-8 answers ----

def test_origin_null_and_foreign_origins_are_refused():
    async def t(port, ctx, app):
        for origin in ("null", "http://evil.example", "http://127.0.0.1:1"):
            r = await request(port, "POST", "/api/relay", json_body={"mode": "off", "minutes": 5},
                              headers={"Origin": origin})
            assert r.status == 403, origin
        assert ctx.controller.state == "startup"
        r = await request(port, "POST", "/api/relay", json_body={"mode": "off", "minutes": 5},
                          headers={"Origin": "http://127.0.0.1:%d" % port})
        assert r.status == 200  # the device's own page

    serve(t)


def test_head_limit_is_431_at_4_kb_whatever_the_line_length():
    async def t(port, ctx, app):
        # one header line of 3 KB is within the 4 KB head (microdot alone said 400 over 2 KB)
        r = await request(port, "GET", "/api/status", headers={"X-Long": "a" * 3000})
        assert r.status == 200
        # a single line over 4 KB, and many lines over 4 KB together: 431 with the limit
        for head in (b"GET /api/status HTTP/1.1\r\nX-Long: " + b"a" * 5000 + b"\r\n\r\n",
                     b"GET /api/status HTTP/1.1\r\n" + b"X-Pad: " + b"b" * 90 + b"\r\n" * 1 +
                     (b"X-More: " + b"c" * 90 + b"\r\n") * 45 + b"\r\n",
                     b"GET /" + b"d" * 6000 + b" HTTP/1.1\r\n\r\n"):
            r = Resp(await raw(port, head))
            assert r.status == 431 and "4096" in r.json()["error"], r.status

    serve(t)


async def _send_all_then_read(port, data):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await _read_all(reader, 5000)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except Exception:  # noqa: BLE001
            pass


def test_a_huge_head_gets_its_431_not_a_reset():
    # a client that sends 200 KB of head before it reads: the rest is read away, so it sees
    # the answer (closing with unread input would send a reset that destroys it)
    async def t(port, ctx, app):
        head = b"GET /api/status HTTP/1.1\r\n" + (b"X-Pad: " + b"e" * 200 + b"\r\n") * 1000 + b"\r\n"
        assert len(head) > 200000
        r = Resp(await _send_all_then_read(port, head))
        assert r.status == 431
        assert (await request(port, "GET", "/api/status")).status == 200

    serve(t, tweak=lambda app: setattr(app, "head_timeout_ms", 3000))


def test_content_length_must_be_plain_digits_and_single():
    async def t(port, ctx, app):
        body = b'{"mode": "off", "minutes": 5}'
        for lengths in (("1_5",), ("+29",), ("29", "29"), ("29", "30"), ("-1",), ("0x1d",), ("",)):
            head = "POST /api/relay HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n" \
                   "Content-Type: application/json\r\n" % (port, basic())
            head += "".join("Content-Length: %s\r\n" % v for v in lengths)
            r = Resp(await raw(port, head.encode() + b"\r\n" + body))
            assert r.status == 400, (lengths, r.status)
        assert ctx.controller.state == "startup"
        r = await request(port, "POST", "/api/relay", body=body, headers={"Content-Type": "application/json"})
        assert r.status == 200  # a plain one is fine

    serve(t)


def test_413_names_the_route_s_own_limit():
    async def t(port, ctx, app):
        head = ("POST /api/ota HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/octet-stream\r\n"
                "Content-Length: %d\r\n\r\n" % (basic(), web.OTA_BODY_LIMIT + 1))
        r = Resp(await raw(port, head.encode() + b"\xe9" * 100))
        assert r.status == 413 and str(web.OTA_BODY_LIMIT) in r.json()["error"], r.body
        r = await request(port, "PUT", "/api/settings", body=b"{" + b" " * web.BODY_LIMIT + b"}",
                          headers={"Content-Type": "application/json"})
        assert r.status == 413 and str(web.BODY_LIMIT) in r.json()["error"]

    serve(t)


def test_json_answers_stay_valid_utf8():
    async def t(port, ctx, app):
        for text in ('"\\ud800"', '"a\\udfffb"', '"nul\\u0000"', '"esc\\u001b"'):
            r = await request(port, "PUT", "/api/settings", body='{"bms_name": %s}' % text,
                              headers={"Content-Type": "application/json"})
            assert r.status == 422 and r.json()["field"] == "bms_name", text
        r = await request(port, "PUT", "/api/settings", json_body={"bms_name": "Akku \u00e9"})
        assert r.status == 200
        for path in ("/api/settings", "/api/events", "/api/status"):
            r = await request(port, "GET", path)
            assert r.status == 200
            r.body.decode("utf-8")  # raises on invalid UTF-8 (CPython; strict on MicroPython too)
            assert "\\ud8" not in r.body.decode() and "\\udf" not in r.body.decode()

    serve(t)


def test_a_hostname_change_says_when_mdns_needs_a_reboot():
    ctx = FakeCtx()
    ctx.wifi.reboot_needed = lambda: ctx.settings["hostname"] != "smartbms"

    async def t(port, ctx, app):
        r = await request(port, "PUT", "/api/settings", json_body={"hostname": "garage"})
        assert r.status == 200 and r.json()["reboot_needed"] is True and "reboot" in r.json()["message"]
        r = await request(port, "PUT", "/api/settings", json_body={"max_soc": 95})
        assert "reboot_needed" not in r.json()

    serve(t, ctx)


def test_a_connection_whose_handler_fails_is_closed_all_the_same():
    def tweak(app):
        async def broken(reader, writer):
            raise RuntimeError("handler bug")
        app._handle = broken

    async def t(port, ctx, app):
        t0 = clock.ticks_real_ms()
        try:
            out = await raw(port, b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:  # closed with the request unread: a reset, which is closed too
            out = b""
        # EOF (or a reset) at once, not the 3 s read timeout of a socket left open
        assert out == b"" and clock.real_ms_since(t0) < 2000

    serve(t, tweak=tweak)


def test_the_ota_code_loads_for_an_upload_only_and_is_dropped_after():
    import sys

    import otaflash

    otaflash.fresh("web_lazy_ota")
    for name in web._OTA_MODULES:
        sys.modules.pop(name, None)

    async def t(port, ctx, app):
        assert not [n for n in web._OTA_MODULES if n in sys.modules]
        r = await request(port, "POST", "/api/ota", body=b"\x00" * 2000,
                          headers={"Content-Type": "application/octet-stream"})
        assert r.status == 400 and "error" in r.json(), (r.status, r.body[:200])
        assert not [n for n in web._OTA_MODULES if n in sys.modules]
        r = await request(port, "POST", "/api/ota/url", json_body={"url": "ftp://x/y.bin"})
        assert r.status == 422 and r.json()["field"] == "url"
        assert not [n for n in web._OTA_MODULES if n in sys.modules]


async def _open_live(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "GET /api/live HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n\r\n" % (port, basic())
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def _read_until(reader, marker, limit_ms=3000):
    out = b""
    while marker not in out:
        chunk = await asyncio.wait_for(reader.read(512), limit_ms / 1000)
        if not chunk:
            break
        out += chunk
    return out


async def _close(writer):
    writer.close()
    try:
        await writer.wait_closed()
    except Exception:
        pass


def test_live_stream_pushes_status_and_new_events_and_is_bounded():
    async def t(port, ctx, app):
        app.live.period_ms = 50
        r1, w1 = await _open_live(port)
        got = await _read_until(r1, b"event: status\ndata: ")
        assert got.startswith(b"HTTP/1.1 200 OK") and b"text/event-stream" in got and b"retry: 3000" in got
        got += await _read_until(r1, b"\n\n", 2000) if not got.endswith(b"\n\n") else b""
        doc = json.loads(got.split(b"event: status\ndata: ", 1)[1].split(b"\n\n", 1)[0])
        assert doc["charger"]["summary"] and doc["bms"]["soc"] == 76.0
        # a stream gives its request slot back: plain requests are served beside it
        assert app.active == 0 and app.live.streams == 1
        ctx.events.add("fault", "alarm relay_stuck: welded")
        got = await _read_until(r1, b"alarm relay_stuck: welded")
        assert b"event: events\ndata: " in got
        # at most 2 streams: the third is refused at once, the UI then polls
        r2, w2 = await _open_live(port)
        await _read_until(r2, b"event: status")
        r = await request(port, "GET", "/api/live")
        assert r.status == 503 and "poll" in r.json()["error"]
        assert (await request(port, "GET", "/api/status")).status == 200
        await _close(w1)
        await _close(w2)
        for _ in range(100):  # the next push finds the reader gone
            if app.live.streams == 0:
                break
            await asyncio.sleep(0.05)
        assert app.live.streams == 0 and app.active == 0
        r3, w3 = await _open_live(port)
        assert b"event: status" in await _read_until(r3, b"event: status")
        await _close(w3)

    serve(t)


def test_live_stream_is_well_framed_with_non_ascii_text():
    # asyncio's Stream compares what the socket took (bytes) with len() of what it was given
    # and keeps the rest by slicing it: a str with "°" in it would be sent twice in part
    async def t(port, ctx, app):
        app.live.period_ms = 5
        ctx.controller.reason = "temperature -5.0 °C < 2 °C"  # non-ASCII in every push
        reader, writer = await _open_live(port)
        got = b""
        while got.count(b"event: status") < 30:
            got += await asyncio.wait_for(reader.read(8192), 3)
        assert app.live.streams == 1
        await _close(writer)
        body = got.split(b"\r\n\r\n", 1)[1]
        msgs = body.split(b"\n\n")[:-1]  # the last one may be cut off
        assert msgs[0] == b"retry: 3000" and len(msgs) > 25
        for m in msgs[1:]:
            kind, data = m.split(b"\n", 1)
            assert kind == b"event: status" and data.startswith(b"data: "), m[:80]
            assert "°C" in json.loads(data[6:])["charger"]["reason"]

    serve(t)
