"""The sim panel: a small page on its own loopback port (SIM_PANEL_PORT, default SIM_PORT + 1)
that plays the world around the simulated device, so a newcomer can see every screen of the
web UI: a cold or hot pack, a BMS protection, a lost BLE link, a dead charger, a welded
relay, a reboot, a faster or slower clock. CPython, in the supervisor's process
(scripts/run_sim.py); it calls the world's own JSON control ops (sim/world/world.py) and
nothing of it is frozen into the firmware.

    GET  /           the page (sim/panel.html)
    GET  /state      {"world": <status op>, "speed", "restarts", "bms_mac"}
    POST /action     {"name": one of ACTIONS} -> {"ok": true, "did": "..."} or 4xx {"error"}

POSTs must be application/json: a page on another site cannot send that to loopback
without a CORS preflight, which this server never grants.
"""
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "panel.html")

# name -> (what the page says it does, [world ops]); "$mac" is the simulated BMS's address
ACTIONS = {
    "cold": ("pack at -5 °C", [{"op": "battery", "temperature_c": -5}]),
    "hot": ("pack at 60 °C", [{"op": "battery", "temperature_c": 60}]),
    "mild": ("pack at 25 °C", [{"op": "battery", "temperature_c": 25}]),
    "protect": ("BMS protection: cell over-voltage", [{"op": "battery", "fault": "cell_overvoltage"}]),
    "protect_off": ("BMS protection cleared", [{"op": "battery", "fault": None}]),
    "link_lost": ("BMS out of range (the link drops and cannot reconnect)",
                  [{"op": "set_peer", "mac": "$mac", "in_range": False}]),
    "link_back": ("BMS back in range", [{"op": "set_peer", "mac": "$mac", "in_range": True}]),
    "charger_dead": ("charger gives no current", [{"op": "battery", "charger_a": 0}]),
    "charger_ok": ("charger gives 20 A", [{"op": "battery", "charger_a": 20}]),
    "welded": ("relay contacts welded (the charger runs whatever the relay says)", [{"op": "battery", "welded": True}]),
    "unwelded": ("relay repaired", [{"op": "battery", "welded": False}]),
    "load_high": ("load 15 A", [{"op": "battery", "load_a": 15}]),
    "load_low": ("load 3 A", [{"op": "battery", "load_a": 3}]),
}
SPEEDS = (1, 10, 60, 300, 900)


class Panel:
    """`supervisor` has .world (WorldHost), .bms_mac, .restarts, .set_speed(n) and
    .power_cycle(why)."""

    def __init__(self, supervisor, port):
        self.sup = supervisor
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]

    def start(self):
        threading.Thread(target=self.httpd.serve_forever, name="sim-panel", daemon=True).start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def state(self):
        return {"world": self.sup.world.control({"op": "status"}), "speed": int(self.sup.speed),
                "restarts": self.sup.restarts, "bms_mac": self.sup.bms_mac, "speeds": SPEEDS,
                "actions": {k: v[0] for k, v in ACTIONS.items()}}

    def act(self, doc):
        name = doc.get("name")
        if name == "reboot":
            self.sup.power_cycle("power cycle from the sim panel")
            return "the device restarts (power cycle)"
        if name == "speed":
            speed = doc.get("speed")
            if speed not in SPEEDS:
                raise ValueError("speed must be one of %s" % ", ".join(map(str, SPEEDS)))
            self.sup.set_speed(speed)
            return "clock x%d: the device restarts to take it" % speed
        if name not in ACTIONS:
            raise ValueError("unknown action %r" % name)
        what, ops = ACTIONS[name]
        for op in ops:
            op = {k: (self.sup.bms_mac if v == "$mac" else v) for k, v in op.items()}
            self.sup.world.control(op)
        return what


def _handler(panel):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body, ctype="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            # as the device's: the page's `data:,` favicon is an image
            self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/":
                with open(PAGE, "rb") as f:
                    return self._send(200, f.read(), "text/html; charset=utf-8")
            if self.path == "/panel.js":
                with open(PAGE[:-5] + ".js", "rb") as f:
                    return self._send(200, f.read(), "application/javascript")
            if self.path == "/state":
                return self._send(200, panel.state())
            return self._send(404, {"error": "not found"})

        def do_POST(self):
            if self.path != "/action":
                return self._send(404, {"error": "not found"})
            if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
                return self._send(415, {"error": "send application/json"})
            try:
                doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if not isinstance(doc, dict):
                    raise ValueError("expected a JSON object")
                return self._send(200, {"ok": True, "did": panel.act(doc)})
            except ValueError as e:
                return self._send(422, {"error": str(e)})
            except Exception as e:  # noqa: BLE001 - a world error is the answer, not a crash
                return self._send(500, {"error": str(e)})

    return Handler
