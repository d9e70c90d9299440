"""Start the simulator (scripts/run_sim.py, the `make sim` supervisor) for host tests.

    from simfixture import start_sim

    def test_x(tmp_path):
        sim = start_sim(tmp_path, speed=60, bms="jbd", password="smartbms")
        try:
            status, headers, body = sim.get("/api/status")      # Basic auth admin:password
            status, headers, body = sim.request("POST", "/api/relay", json={"mode": "off"})
        finally:
            sim.stop()

start_sim() picks a free loopback port, uses tmp_path/"sim" as SIM_DIR and waits until the
web server answers (TimeoutError with the sim's output otherwise). The sim restarts the
firmware after a reset, as the device would; pass once=True to let a reset end it instead.
`body` is the decoded JSON when the answer is JSON, else bytes. `sim.output()` is
everything the sim printed so far. Also usable as a context manager.
"""
import base64
import http.client
import json as jsonlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READY = "smartbms sim ready: "
WORLD = "smartbms sim world: "


MOSQUITTO = next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None)


def start_broker(directory):
    """Debian's mosquitto on a free loopback port (.ci/run installs it): (port, process).
    MOSQUITTO is None where it is not installed: callers skip with that reason."""
    port = free_port()
    conf = os.path.join(str(directory), "mosquitto.conf")
    with open(conf, "w") as f:
        f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % port)
    proc = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError("mosquitto did not start: " + proc.stdout.read().decode())
    return port, proc


class AlertSink:
    """An ntfy stand-in: records each POST (headers, body); answers `status`."""

    def __init__(self):
        sink = self
        self.posts = []
        self.status = 200

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.posts.append((self.path, dict(self.headers), body.decode()))
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Sim:
    def __init__(self, sim_dir, port, password, env, once):
        self.dir = sim_dir
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        self.password = password
        self._env = env
        self._once = once
        self.proc = None
        self._lines = []
        self._ready = 0
        self._cond = threading.Condition()
        self.world_port = None
        self._world = None

    # ---- process ----
    def start(self):
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "run_sim.py")] + (["--once"] if self._once else [])
        self._ready_seen = self._ready
        self.proc = subprocess.Popen(cmd, env=self._env, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def _read(self, proc):
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self._lines.append(line)
                if line.startswith(READY):
                    self._ready += 1
                elif line.startswith(WORLD):
                    self.world_port = int(line.rsplit(":", 1)[1])
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def output(self):
        with self._cond:
            return "\n".join(self._lines)

    def ready_count(self):
        with self._cond:
            return self._ready

    def wait_ready(self, timeout=30, after=None):
        """Wait for the next readiness line (after `after` of them, default: since start())."""
        n = self._ready_seen if after is None else after
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._ready <= n:
                if self.proc.poll() is not None and self._ready <= n:
                    self._cond.wait(0.2)  # let the reader drain the last lines
                    if self._ready > n:
                        break
                    raise RuntimeError("sim exited (%s) before it was ready:\n%s"
                                       % (self.proc.returncode, "\n".join(self._lines[-60:])))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("sim not ready after %ss:\n%s" % (timeout, "\n".join(self._lines[-60:])))
                self._cond.wait(min(left, 0.5))
        return self

    def wait_output(self, text, timeout=30):
        """Wait until the sim printed a line containing `text`; returns that line."""
        deadline = time.monotonic() + timeout
        with self._cond:
            start = 0
            while True:
                for line in self._lines[start:]:
                    if text in line:
                        return line
                start = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and start == len(self._lines):
                    if left > 0:
                        self._cond.wait(0.2)
                        if len(self._lines) > start:
                            continue
                    raise TimeoutError("no %r in the sim output:\n%s" % (text, "\n".join(self._lines[-60:])))
                self._cond.wait(min(left, 0.5))

    def stop(self, timeout=10):
        """SIGTERM (as Ctrl-C would): returns the supervisor's exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self):
        """Power cut: SIGKILL the supervisor and the firmware at once."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def restart(self, timeout=30):
        """Stop (cleanly) and start again on the same SIM_DIR and port; waits for readiness."""
        self.stop()
        if self._world is not None:
            self._world.close()
            self._world = None
        self.start()
        return self.wait_ready(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            self.kill()

    # ---- the simulated world (battery, BMS on the air, button, WiFi; sim/world/world.py) ----
    def world(self, op, **kw):
        """One control command to the world, e.g. sim.world("battery", temperature_c=-5)."""
        if self._world is None:
            sys.path.insert(0, os.path.join(ROOT, "sim"))
            from world.host import WorldClient

            self._world = WorldClient(self.world_port)
        return self._world.call(op, **kw)

    # ---- HTTP ----
    def request(self, method, path, json=None, body=None, headers=None, auth=True, timeout=10):
        h = dict(headers or {})
        if auth:
            token = base64.b64encode(("admin:%s" % self.password).encode()).decode()
            h.setdefault("Authorization", "Basic " + token)
        if json is not None:
            body = jsonlib.dumps(json).encode()
            h.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            rh = {k.lower(): v for k, v in resp.getheaders()}
            if "json" in rh.get("content-type", ""):
                try:
                    data = jsonlib.loads(data.decode() or "null")
                except ValueError:
                    pass
            return resp.status, rh, data
        finally:
            conn.close()

    def get(self, path, auth=True, **kw):
        return self.request("GET", path, auth=auth, **kw)


def start_sim(tmp_path, speed=60, bms="jbd", password="smartbms", extra_env=None, port=None,
              once=False, timeout=40):
    """Start the sim in tmp_path/"sim" on a free loopback port and wait until it serves.
    password=None starts a device with no admin password (first-time setup)."""
    sim_dir = os.path.join(str(tmp_path), "sim")
    port = port or free_port()
    env = dict(os.environ)
    for k in ("SIM_ONCE", "SIM_WIFI", "SIM_HEAP", "SIM_MQTT", "SIM_ALERT_URL"):  # a test asks for them in extra_env
        env.pop(k, None)
    env.update(SIM_SPEED=str(speed), SIM_PORT=str(port), SIM_DIR=sim_dir, SIM_BMS=bms,
               PYTHONUNBUFFERED="1")
    if password is None:  # a device whose owner has not set a password yet
        env["SIM_NO_PASSWORD"] = "1"
        env.pop("SIM_PASSWORD", None)
    else:
        env["SIM_PASSWORD"] = password
    env.update(extra_env or {})
    sim = Sim(sim_dir, port, password, env, once).start()
    try:
        sim.wait_ready(timeout)
    except BaseException:
        sim.kill()
        raise
    return sim
