# The firmware's real web layer (smartbms.web, auth, settings, controller, history, eventlog) with
# the real frozen UI assets, on the MicroPython unix port, fed by a small synthetic battery instead
# of the BLE link. The browser tests use it when the full simulator is not available, to check the
# UI against the real server (gzip, CSP, cookies, redirects, validation) rather than a mock.
#   micropython webstack_main.py PORT STATE_DIR PASSWORD   (PASSWORD "-" = none set: first-time setup)
import sys

import asyncio
from smartbms import clock, paths, web
from smartbms.auth import Auth
from smartbms.bms.reading import Reading
from smartbms.charge.controller import Controller
from smartbms.eventlog import EventLog
from smartbms.history import History
from smartbms.settings import Settings

PORT, STATE, PASSWORD = int(sys.argv[1]), sys.argv[2], sys.argv[3]
paths.ROOT = STATE


class Battery:
    """A 4s LFP pack on a charger: SOC rises while the relay is on, falls slowly when off."""

    def __init__(self):
        self.latest = Reading()
        self.connected = True
        self.stats = {"polls": 0, "ok": 0, "errors": 0}
        self.soc = 55.0
        self.received = 0
        self.step(False)

    def step(self, charging):
        self.soc = min(100.0, max(0.0, self.soc + (0.2 if charging else -0.05)))
        r = self.latest
        cell = 3.2 + self.soc / 1000 + (0.05 if charging else 0)
        r.cells = [cell, cell + 0.004, cell - 0.003, cell + 0.001]
        r.voltage = sum(r.cells)
        r.current = 20.0 if charging else -1.5
        r.soc = self.soc
        r.remaining_ah = self.soc
        r.nominal_ah = 100.0
        r.cycles = 7
        r.temperatures = [20.5, 21.0]
        r.charge_fet = r.discharge_fet = True
        r.faults = []
        self.received = clock.now()
        r.received = self.received
        self.stats["polls"] += 1
        self.stats["ok"] += 1

    def age_s(self):
        return clock.now() - self.received


class Wifi:
    def status(self):
        return {"mode": "sta", "ssid": "simnet", "ip": "127.0.0.1", "rssi": -55, "connected": True, "ap_ssid": None}

    async def scan(self):
        return [{"ssid": "simnet", "rssi": -55, "secure": True}]

    def configure(self, ssid, password):
        ctx.settings.update({"wifi_ssid": ssid, "wifi_password": password})


class Ctx:
    def __init__(self):
        self.settings = Settings(STATE + "/settings.json")
        self.settings.load()
        self.events = EventLog(STATE + "/events")
        self.controller = Controller(self.settings)
        self.history = History()
        self.auth_state = {}
        self.auth = Auth(self.settings, state=self.auth_state)
        if PASSWORD != "-" and not self.auth.has_password():
            self.auth.set_password(PASSWORD)
        self.link = Battery()
        self.wifi = Wifi()
        self.ota = None
        self.relay = None
        self.setup_mode = False
        self.safe_mode = False

    def uptime_s(self):
        return clock.now()

    def free_heap(self):
        import gc
        return gc.mem_free()

    def set_override(self, mode, minutes):
        self.controller.set_override(mode, minutes, clock.now())

    def reset_timeout(self):
        self.controller.reset_timeout(clock.now())

    def apply_settings(self, partial):
        return self.settings.update(partial)

    async def scan_bms(self):
        return [{"name": "SP04S034", "mac": "A4:C1:37:10:20:30", "rssi": -61, "family": "jbd"}]

    def request_reboot(self, reason):
        self.events.add("reboot", reason)

    def mark_web_alive(self):
        pass

    def web_alive(self):
        return True


ctx = Ctx()


async def control():
    # 3 h of history before "now", then the live loop: once a second as the app does
    for m in range(180):
        ctx.history.add(m * 60, 40 + m / 10, 13.1 + m / 1000, 15.0 - m / 20)
    t = 0
    while True:
        ctx.link.step(ctx.controller.relay)
        ctx.controller.update(ctx.link.latest, clock.now())
        t += 1
        ctx.events.flush() if hasattr(ctx.events, "flush") else None
        await asyncio.sleep(1)


async def main():
    ctx.events.add("boot", "webstack started")
    asyncio.create_task(control())
    app = web.create_app(ctx)
    await web.start(app, "127.0.0.1", PORT)
    print("webstack ready", PORT)
    while True:
        await asyncio.sleep(3600)


asyncio.run(main())
