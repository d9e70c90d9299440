"""Helpers for the browser tests: chromium launch (skipping loudly when it is missing) and a small
in-process mock of the device's HTTP API (docs/design.md "Web routes") serving the real web/ files.

The mock lets the UI be tested without the simulator; the tests against the real sim use
tests/host/simfixture.py instead. It keeps the contract's shapes and nothing more."""
import base64
import http.client
import json
import json as jsonlib  # WebStack.request has a parameter named json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEB = os.path.join(ROOT, "web")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _skip_loudly(reason):
    # a warning too: it shows in pytest's summary even without -rs
    warnings.warn(reason)
    pytest.skip(reason)


def require_browser():
    """Skip (with a reason that says what to install) when playwright or chromium is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _skip_loudly("BROWSER TESTS SKIPPED: python package playwright is missing "
                     "(run `make` to build .venv with the pinned playwright==1.65.2)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _skip_loudly("BROWSER TESTS SKIPPED: chromium not found at %s; install it with "
                     "`apt-get update && apt-get install -y chromium` (as root; .ci/run does this)" % CHROMIUM)


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


sys.path.insert(0, os.path.join(ROOT, "modules"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import build_assets  # noqa: E402
from smartbms import settings as settings_mod  # noqa: E402  (pure logic: the real schema and rules)


class MockDevice:
    """State of the mock device; the handler mutates it under `lock`."""

    def __init__(self, password="secret-pw"):
        self.lock = threading.Lock()
        self.password = password
        self.sessions = set()
        self.t0 = time.time()
        self.tmp = tempfile.mkdtemp(prefix="smartbms-mock-")
        self.store = settings_mod.Settings(os.path.join(self.tmp, "settings.json"))
        self.store.load()
        self.override = {"mode": "auto", "remaining_min": None}  # as smartbms.web reports it
        self.events = [{"seq": i + 1, "up_s": i * 60, "t": None, "kind": "boot" if i == 0 else "relay",
                        "msg": "event %d" % (i + 1)} for i in range(3)]
        self.uploads = []
        self.ota_delay = 0  # seconds POST /api/ota takes to answer once it has the image
        self.posts = []  # bodies of the fire-and-forget POSTs (reboot, timeout reset, OTA by URL)
        self.wifi = None

    def soc(self):
        return 55 + 5 * math.sin((time.time() - self.t0) / 3.0)

    def status(self):
        soc = self.soc()
        cells = [3.30 + 0.01 * (i % 3) + soc / 10000 for i in range(4)]
        manual = self.override["mode"] != "auto"
        relay = self.override["mode"] == "on" if manual else True
        return {
            "bms": {"voltage": round(sum(cells), 3), "current": round(10 + soc / 10, 2), "soc": round(soc, 1),
                    "remaining_ah": round(soc, 1), "nominal_ah": 100, "cycles": 12, "cells": cells,
                    "temperatures": [21.5, 22.0], "charge_fet": True, "discharge_fet": True, "faults": [],
                    "age_s": 1, "connected": True,
                    "stats": {"polls": 20, "ok": 19, "errors": 1, "timeouts": 0, "last_error": "timeout"}},
            "charger": {"relay": relay, "state": "override" if manual else "charging",
                        "reason": "manual override" if manual else "soc below max_soc",
                        "since_s": 42, "next": "stop at 100 %",
                        "override": dict(self.override)},
            "device": {"version": "1.2.3", "uptime_s": int(time.time() - self.t0), "free_heap": 81234,
                       "wifi": {"mode": "sta", "ssid": "simnet", "ip": "127.0.0.1", "rssi": -60,
                                "connected": True, "ap_ssid": None},
                       "ota": {"running": "ota_0", "running_version": "1.2.3", "previous_version": "1.2.2",
                               "pending_verify": False},
                       "setup_mode": False, "safe_mode": False},
        }

    @property
    def settings(self):
        return self.store.public()

    def history(self):
        # GET /api/history's shape (smartbms.history.series): columns, null for minutes without data
        n = 121
        soc = [None if 40 <= i < 45 else round(50 + i / 12, 1) for i in range(n)]
        volt = [None if x is None else round(13.2 + i / 600, 2) for i, x in enumerate(soc)]
        amp = [None if x is None else round(10 - i / 20, 1) for i, x in enumerate(soc)]
        return {"interval_s": 60, "start_s": 0, "count": n, "soc": soc, "voltage": volt, "current": amp}

def _handler(dev):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body, ctype="application/json", headers=()):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _authed(self):
            cookie = self.headers.get("Cookie", "")
            return any(c.strip() == "session=" + s for s in dev.sessions for c in cookie.split(";"))

        def _file(self, rel, ctype):
            with open(os.path.join(WEB, rel), "rb") as f:
                self._send(200, f.read(), ctype)

        def _json(self):
            n = int(self.headers.get("Content-Length") or 0)
            try:
                return json.loads(self.rfile.read(n) or b"{}")
            except ValueError:
                return None

        def do_GET(self):
            path = self.path.split("?")[0]
            types = {".html": "text/html", ".js": "application/javascript", ".css": "text/css"}
            if path == "/login":
                return self._file("public/login.html", "text/html")
            if path.startswith("/public/") and ".." not in path:
                return self._file(path[1:], types[os.path.splitext(path)[1]])
            if path == "/api/auth":
                return self._send(200, {"setup_required": dev.password is None,
                                        "logged_in": self._authed(), "setup_mode": False})
            if not self._authed():
                if path.startswith("/api/"):
                    return self._send(401, {"error": "login required"})
                return self._send(302, b"", headers=[("Location", "/login")])
            if path == "/":
                return self._file("index.html", "text/html")
            if path in ("/app.js", "/app.css"):  # as the device serves them: shrunk, /app.js with web/js/
                return self._send(200, build_assets.read_asset(WEB, path), types[os.path.splitext(path)[1]])
            with dev.lock:
                answers = {
                    "/api/status": dev.status,
                    "/api/history": dev.history,
                    "/api/settings": dev.store.public,
                    "/api/settings/schema": settings_mod.schema_public,
                    "/api/events": lambda: {"events": dev.events, "last_seq": len(dev.events)},
                    "/api/wifi/scan": lambda: {"networks": [{"ssid": "cafe", "rssi": -80, "secure": False},
                                                            {"ssid": "simnet", "rssi": -50, "secure": True}]},
                    "/api/bms/scan": lambda: {"devices": [{"name": "xiaoxiang", "mac": "A4:C1:38:00:11:22",
                                                           "family": "jbd", "rssi": -70}]},
                }
                if path in answers:
                    return self._send(200, answers[path]())
            return self._send(404, {"error": "not found"})

        def do_PUT(self):
            if self.path != "/api/settings" or not self._authed():
                return self._send(401, {"error": "login required"})
            body = self._json()
            if not isinstance(body, dict):
                return self._send(400, {"error": "malformed JSON", "field": None})
            with dev.lock:
                try:
                    dev.store.update(body)
                except settings_mod.SettingsError as e:
                    return self._send(422, {"error": e.message, "field": e.field})
                return self._send(200, dev.store.public())

        def do_POST(self):
            path = self.path
            if path == "/api/ota":
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n)
                if not self._authed():
                    return self._send(401, {"error": "login required"})
                dev.uploads.append((self.headers.get("Content-Type"), data))
                time.sleep(dev.ota_delay)
                # the answers of smartbms.ota.http: 400 {"error"} or the image info
                if not data.startswith(b"\xe9"):
                    return self._send(400, {"error": "not an ESP32 app image (bad magic)"})
                return self._send(200, {"version": "9.9.9", "slot": "ota_1", "reboot": True})
            body = self._json()
            if body is None:
                return self._send(400, {"error": "malformed JSON"})
            with dev.lock:
                if path == "/api/login":
                    if dev.password is not None and body.get("password") == dev.password:
                        token = os.urandom(8).hex()
                        dev.sessions.add(token)
                        return self._send(200, {"ok": True},
                                          headers=[("Set-Cookie", "session=%s; Path=/; HttpOnly" % token)])
                    return self._send(401, {"error": "wrong password"})
                if path == "/api/setup":
                    if dev.password is not None:
                        return self._send(403, {"error": "password already set"})
                    dev.password = body.get("password")
                    return self._send(200, {"ok": True})
                if path == "/api/logout":
                    dev.sessions.clear()
                    return self._send(200, {"ok": True})
                if not self._authed():
                    return self._send(401, {"error": "login required"})
                if path == "/api/relay":
                    if body.get("mode") == "auto":
                        dev.override = {"mode": "auto", "remaining_min": None}
                    elif body.get("mode") in ("on", "off"):
                        dev.override = {"mode": body["mode"], "remaining_min": body.get("minutes")}
                    else:
                        return self._send(422, {"error": "bad mode", "field": "mode"})
                    return self._send(200, {"ok": True})
                if path == "/api/wifi":
                    dev.wifi = body
                    return self._send(200, {"ok": True})
                if path in ("/api/reboot", "/api/timeout/reset", "/api/ota/url"):
                    dev.posts.append((path, body))
                    return self._send(200, {"ok": True})
            return self._send(404, {"error": "not found"})

    return Handler


class MockServer:
    def __init__(self, password="secret-pw"):
        self.dev = MockDevice(password)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.dev))
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.password = password
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.dev.tmp, ignore_errors=True)


class WebStack:
    """tests/host/webstack_main.py on the MicroPython unix port: the real web layer and UI assets
    over a synthetic battery. Same surface as simfixture's Sim for what the browser tests use."""

    def __init__(self, state_dir, password="secret-pw-1"):
        self.dir = str(state_dir)
        os.makedirs(self.dir, exist_ok=True)
        self.password = password
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "build_assets.py"), "web",
                        os.path.join(ROOT, "build", "gen", "webassets.py")], check=True, stdout=subprocess.DEVNULL)
        self.start()

    def start(self, timeout=20):
        env = dict(os.environ, MICROPYPATH=os.environ.get("MPYPATH") or ":".join(
            [".frozen", ROOT + "/modules", ROOT + "/build/gen", ROOT + "/sim/shims", ROOT + "/sim",
             ROOT + "/build/vendor"]))
        mpy = os.environ.get("MICROPYTHON") or os.path.join(ROOT, ".venv", "bin", "micropython")
        self.proc = subprocess.Popen([mpy, os.path.join(ROOT, "tests", "host", "webstack_main.py"), str(self.port),
                                      self.dir, self.password or "-"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode("utf-8", "replace")
            if not line and self.proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("webstack ready"):
                # keep draining its output so it never blocks on a full pipe
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return self
        self.stop()
        raise RuntimeError("webstack did not start:\n" + "".join(lines))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self):
        """Power cut."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self):
        self.stop()
        return self.start()

    def request(self, method, path, json=None, auth=True):
        h = {}
        if auth:
            h["Authorization"] = "Basic " + base64.b64encode(("admin:%s" % self.password).encode()).decode()
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            h["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            if "json" in (r.getheader("Content-Type") or ""):
                data = jsonlib.loads(data.decode() or "null")
            return r.status, dict(r.getheaders()), data
        finally:
            conn.close()


def power_cycle(dev):
    """Cut the power (SIGKILL) and boot again on the same state: a saved setting must survive."""
    dev.kill()
    dev.start()
    if hasattr(dev, "wait_ready"):
        dev.wait_ready(30)


def stop_device(dev):
    """Stop cleanly; a device that ignores the request is killed and the test warned about it."""
    try:
        dev.stop()
    except subprocess.TimeoutExpired:
        dev.kill()
        warnings.warn("the sim did not stop on SIGTERM within its timeout: killed it")


def page_errors(page):
    """Collect uncaught page errors and CSP violations, so a test can assert the UI ran cleanly."""
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # the device sends a strict Content-Security-Policy: the UI must not trip it
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Content Security" in m.text else None)
    return errors


def login(page, url, password):
    page.goto(url + "/")
    page.wait_for_url("**/login")
    page.fill("#pw", password)
    page.click("#login button")
    page.wait_for_url(url + "/")
    # the first /api/status answer has arrived (the device part is there even without BMS data)
    wait_js(page, "document.getElementById('ver').textContent !== '–'", timeout=15)


def wait_js(page, expr, arg=None, timeout=10):
    """Poll a JS expression (or function of `arg`) until truthy. page.wait_for_function evaluates
    its predicate with eval, which the device's Content-Security-Policy rightly forbids."""
    deadline = time.monotonic() + timeout
    fn = expr if expr.lstrip().startswith("(") else "() => (%s)" % expr
    while True:
        value = page.evaluate(fn, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, expr))
        time.sleep(0.1)


def series_pixels(page, css_var, selector="#chart"):
    """Canvas pixels drawn in a series' colour (the CSS variable the chart uses for it): the lane
    frames and axis labels are in other colours, so an empty chart counts only its small legend."""
    return page.evaluate("""([sel, name]) => {
        const c = document.querySelector(sel); if (!c.width) return 0;
        const probe = document.createElement('canvas').getContext('2d');
        probe.fillStyle = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
        probe.fillRect(0, 0, 1, 1);
        const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
            if (d[i + 3] > 200 && Math.abs(d[i] - r) < 40 && Math.abs(d[i + 1] - g) < 40 && Math.abs(d[i + 2] - b) < 40) n++;
        return n; }""", [selector, css_var])


def have_sim():
    """The sim tests need simfixture and the application's web layer to exist."""
    try:
        import simfixture  # noqa: F401
    except ImportError:
        return False
    return all(os.path.exists(os.path.join(ROOT, "modules", "smartbms", n)) for n in ("app.py", "web.py"))


def image_head(version="9.9.9", project="micropython", chip=0, size=200000):
    """Bytes that start like an ESP32 app image of `project` `version` (header, a DROM first
    segment, the app descriptor), padded with random bytes to `size`: enough for the browser's
    check (web/fw.js), not a valid image for the device."""
    import struct

    head = bytearray(24)
    head[0], head[1], head[23] = 0xE9, 3, 1
    struct.pack_into("<H", head, 12, chip)
    seg = struct.pack("<II", 0x3F400020, 0x1000)
    desc = bytearray(256)
    struct.pack_into("<I", desc, 0, 0xABCD5432)
    desc[0x10:0x10 + len(version)] = version.encode()
    desc[0x30:0x30 + len(project)] = project.encode()
    data = bytes(head) + seg + bytes(desc)
    return data + os.urandom(size - len(data))


__all__ = ["image_head", "MockServer", "require_browser", "launch", "login", "page_errors", "series_pixels",
           "have_sim", "wait_js", "WebStack", "power_cycle", "stop_device"]


# ---- fixtures the browser tests share (imported by name into each test module) ----
PHONE = dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def sim(tmp_path):
    if not have_sim():
        pytest.skip("the simulator is not available")
    from simfixture import start_sim
    s = start_sim(tmp_path, speed=60)
    yield s
    stop_device(s)


@pytest.fixture
def phone(browser):
    ctx = browser.new_context(**PHONE)
    page = ctx.new_page()
    page.set_default_timeout(15000)
    yield page
    ctx.close()
