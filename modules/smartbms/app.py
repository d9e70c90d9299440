# The device application: owns every part and runs them as asyncio tasks. The web layer
# reads and drives the parts only through this object (`ctx`, docs/design.md); what the
# owner asks of it (overrides, settings, setup mode, reboots) is smartbms.owner.Owner's.
#
# Boot sequence (main.py -> App().start()):
#  1. settings load (never fails: defaults on a missing/corrupt file), the event log opens;
#  2. the boot guard counts this boot; 5 unhealthy boots in a row -> safe mode;
#  3. the relay pin is driven OFF before anything else can fail;
#  4. BOOT button (GPIO0) held -> setup mode (access point + setup page);
#  5. tasks: control loop (which also feeds the watchdog), BMS link, WiFi supervisor, web
#     server, status LED + button, health watch (confirms an OTA image after 60 s healthy).
#     Safe mode starts only WiFi, the web server, the health watch and a watchdog feeder; the
#     relay stays off.
# Charge control never waits on WiFi or the web server. An uncaught error in any task, or a
# part that should run for ever returning, is logged, turns the relay off and resets the
# device. The hardware watchdog is fed only while the control loop ticked within the last
# _WDT_STALE_S seconds.
import gc
import json

try:
    import os
except ImportError:  # pragma: no cover
    import uos as os

import asyncio

from smartbms import clock, paths, unload
from smartbms.bms.link import BMSLink
from smartbms.charge.controller import Controller
from smartbms.charge.relay import Relay
from smartbms.eventlog import EventLog, wall_time
from smartbms.history import DEVICE_INTERVAL_S, DEVICE_SLOTS, History
from smartbms.owner import REBOOT_DELAY_MS, SETUP_MODE_S, Owner  # noqa: F401 (constants re-exported)
from smartbms.settings import Settings


try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

TICK_MS = const(1000)  # control loop period (device time)
WDT_TIMEOUT_MS = const(30000)  # the hardware watchdog's timeout
_WDT_STALE_S = const(10)
_GC_THRESHOLD = const(2048)  # bytes allocated between collections (see start())
_FLUSH_EVERY_S = const(60)

_RELAY_HEALTH_S = const(5)
_WEB_HEALTH_S = const(30)  # the web server answered a request within this many seconds
_PROBE_TIMEOUT_MS = const(3000)  # real ms for the health check's request to itself


def _write_json_atomic(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _error_of(task):
    """The exception that ended a finished task; None when it returned or was cancelled."""
    try:
        return task.exception()  # CPython
    except AttributeError:  # MicroPython keeps the outcome in .data
        d = task.data
        return d if isinstance(d, Exception) and not isinstance(d, StopIteration) else None
    except BaseException:  # noqa: BLE001 - CPython: it was cancelled
        return None


class App(Owner):
    def __init__(self, setup_mode=False, port=80, host="0.0.0.0", machine=None, log=print):
        if machine is None:
            import machine
        self._machine = machine
        self._log = log
        self.port = port
        self.host = host
        self.started = clock.now()
        self.setup_mode = bool(setup_mode)
        self.safe_mode = False
        self.events = EventLog()
        gc.collect()  # reading the event files left garbage: what lives long goes below it
        self.settings = Settings(log=self.events)  # load problems and changes go to the event log
        # healthy settings = a stored document, or none yet (a fresh device), never a corrupt one
        self._settings_ok = self.settings.load() != "defaults" or not _exists(self.settings.path)
        self.relay = self._make_relay()
        self.relay_set(False, "boot")  # before anything else can fail: the charger stays off
        self.history = History(DEVICE_SLOTS, DEVICE_INTERVAL_S)
        from smartbms.health import BootGuard  # until the boot is judged healthy (_supervise)

        self.guard = BootGuard()
        try:
            self.safe_mode = self.guard.begin()
        except OSError as e:
            self.events.add("error", "boot counter: %s" % e)
        saved = _read_json(paths.path("charge.json"))
        self.controller = Controller(self.settings, saved if type(saved) is dict else None)
        self.link = None if self.safe_mode else BMSLink(self.settings, events=self.events)
        # the web's login sessions and brake (smartbms.auth, loaded with the web stack): kept
        # here so they outlive its unloading
        self.auth_state = {}
        from smartbms.wifi import WifiManager

        self.wifi = WifiManager(self.settings, events=self.events, setup_mode=self.setup_mode)
        from smartbms.board import Board

        self.board = Board(self.settings.get("led_pin", 2), on_long_press=self.enter_setup_mode)
        self._last_tick = None
        self._last_state = None
        self._last_alarms = 0  # the controller's alarm bits already logged
        self._fet_off = False  # the BMS charge MOSFET is commanded off (relay_stuck)
        self._fet_sent = 0  # device time of the last MOSFET command
        self._last_hist = None
        self._last_flush = clock.now()
        self._web_started = False
        self._web_seen = None
        self._tasks = []  # the running tasks, and for each (name, runs for ever) in _task_info
        self._task_info = []
        self._wdt = None  # machine.WDT once the tasks run
        self._reboot_pending = None
        self.link_paused = False  # a BLE capture has the radio (smartbms.bms.capture)
        self._link_idle = True  # link.run() is not running
        self.failed = None
        self.web = None  # smartbms.webgate.WebGate once the web task runs
        self.mqtt = None  # smartbms.mqtt.client.Mqtt while MQTT is on
        self.alerts = None  # smartbms.alerts.Alerts while MQTT or alerts are on
        self.events.add("boot", "smartbms started%s%s" % (
            " in SAFE MODE (repeated failed boots): relay off" if self.safe_mode else "",
            " in setup mode" if self.setup_mode else ""))
        from smartbms import overrides  # loaded at boot by main.py (`make deploy`)

        note = overrides.summary()
        if note:
            self.events.add("boot", note)
        # The BMS driver lives as long as the device: made now, after a collection, it
        # settles at the bottom of the heap instead of between the garbage of the first
        # polls, which would leave the heap in small pieces (the budget needs a free block of
        # 16 KB at all times). The web stack is loaded per use (smartbms.webgate).
        gc.collect()
        if self.link is not None:
            self.link.preload()
        gc.collect()
        # Collect after every _GC_THRESHOLD bytes allocated, not only when the heap is full:
        # the allocator then starts again from the lowest free block each time, so what is
        # made in steady state (readings, requests) stays at the bottom and the rest of the
        # heap remains in large pieces, instead of being peppered with objects that live a
        # while (which left no 1 KB block in 40 KB free).
        if hasattr(gc, "threshold"):
            gc.threshold(_GC_THRESHOLD)

    # ---- parts ----
    def _make_relay(self):
        return Relay(self.settings["relay_pin"], self.settings["relay_active_low"], log=self.events)

    def relay_set(self, on, reason=""):
        self.relay.set(on, reason)

    # ---- ctx API (docs/design.md) ----
    def uptime_s(self):
        return clock.now() - self.started

    def free_heap(self):
        f = getattr(gc, "mem_free", None)  # None on CPython (host tools)
        return f() if f else None

    def mark_web_alive(self):
        self._web_seen = clock.now()

    def web_alive(self):
        t = self._web_seen
        return t is not None and clock.now() - t <= _WEB_HEALTH_S

    async def probe_web(self):
        """For the OTA health check: unless a client was answered lately, send the web server
        one request over loopback (its guard marks the server alive when it answers)."""
        if not self._web_started or self.web_alive():
            return
        from smartbms import netio  # a connect that times out leaves no socket open

        writer = None
        try:
            reader, writer = await netio.connect("127.0.0.1", self.port, _PROBE_TIMEOUT_MS)
            writer.write(b"GET /api/auth HTTP/1.0\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.readline(), _PROBE_TIMEOUT_MS / 1000)
        except Exception:  # noqa: BLE001 - a server that does not answer is the answer
            pass
        if writer is not None:
            await netio.close(writer)

    @property
    def ota(self):
        """The OTA service (smartbms.ota), loaded for its use (a status answer, an upload, the
        image's confirmation): at idle the device holds none of it."""
        from smartbms import ota

        return ota

    def health(self):
        t = self._last_tick
        return {
            "settings": self._settings_ok,
            "control": t is not None and clock.now() - t <= _RELAY_HEALTH_S,
            "web": self.web_alive(),
            "ble": self.link is not None and self.link.radio_up(),
        }

    def _log_alarms(self, c):
        from smartbms.charge.alarms import NAMES

        old, new = self._last_alarms, c.alarms.mask
        self._last_alarms = new
        for i in range(len(NAMES)):
            bit = 1 << i
            if (old ^ new) & bit:  # kind "fault": written to flash at once
                self.events.add("fault", ("alarm %s: %s" % (NAMES[i], c.alarms.messages[i])) if new & bit
                                else "alarm %s ended" % NAMES[i])

    def _bms_charge_fet(self, c):
        """The second cut-off of a stuck relay: the BMS's own charge MOSFET, where its protocol
        has a command for it (JBD, JK) and the link can send it (BMSLink.set_charge_fet)."""
        off = c.bms_charge_off
        self._fet_off = off
        self._fet_sent = clock.now()
        link = self.link
        driver = getattr(link, "driver", None)
        req = driver.charge_fet_request(not off) if driver is not None else None
        send = getattr(link, "set_charge_fet", None)
        c.set_fet_control(req is not None and send is not None)
        if not c.fet_control:
            if off:
                self.events.add("fault", "relay stuck: this BMS link cannot switch the charge MOSFET off; "
                                         "disconnect the charger by hand")
            return
        self.events.add("fault", "BMS charge MOSFET %s" % (
            "switched off as a second cut-off (relay stuck)" if off else "switched back on (alarm cleared)"))
        asyncio.create_task(self._send_fet(send, not off))

    async def _send_fet(self, send, on):
        try:
            await send(on)
        except Exception as e:  # noqa: BLE001 - the relay is off anyway: log it, no reset
            self.events.add("error", "BMS charge MOSFET command failed: %s" % e)

    async def _link_task(self):
        # link.run() returns only after link.close(): a capture closed it; run it again
        # once the capture gives the radio back
        while True:
            self._link_idle = False
            try:
                await self.link.run()
            finally:
                self._link_idle = True
            await clock.sleep_real_ms(100)
            while self.link_paused:
                await clock.sleep_real_ms(100)

    def shutdown(self):
        """Relay off and everything on flash, before a reset."""
        try:
            self.relay_set(False, "shutdown")
        finally:
            self._save_controller(force=True)
            self.events.flush(force=True)

    # ---- control ----
    def control_step(self):
        """One control decision: feed the controller, drive the relay, log and persist."""
        now = clock.now()
        link = self.link
        # no reading while a capture has the radio: the relay stays off (no_data)
        reading = link.latest if link is not None and not self.link_paused else None
        c = self.controller
        if self.safe_mode:
            self.relay_set(False, "safe mode")
        else:
            on = c.update(reading, now, wall_time())
            self.relay_set(on, c.reason)  # the relay logs its own switching
            if c.state != self._last_state:
                self._last_state = c.state
                self.events.add("charge", "%s: %s" % (c.state, c.reason))
            if c.alarms.mask != self._last_alarms:
                self._log_alarms(c)
            if c.bms_charge_off != self._fet_off or (
                    # the BMS switched its MOSFET back on by itself (its own restart): again
                    c.bms_charge_off and c.fet_control and reading is not None and reading.charge_fet
                    and now - self._fet_sent >= 60):
                self._bms_charge_fet(c)
        self._save_controller()
        if reading is not None:
            rx = getattr(reading, "received", None)
            if rx != self._last_hist and reading.soc is not None:
                self._last_hist = rx
                self.history.add(now, reading.soc, reading.voltage, reading.current)
        if now - self._last_flush >= _FLUSH_EVERY_S:
            self._last_flush = now
            self.events.flush()
        self._last_tick = now
        return self.relay.on

    def _save_controller(self, force=False):
        c = self.controller
        if c.dirty or force:
            try:
                _write_json_atomic(paths.path("charge.json"), c.persisted())
                c.dirty = False
            except OSError as e:
                self.events.add("error", "saving charge state: %s" % e)

    async def control_loop(self):
        while True:
            self.control_step()
            self._supervise()  # fed here, by the loop it guards: a hung control loop ends in a reset
            await clock.sleep_ms(TICK_MS)

    async def watchdog_loop(self):
        """Safe mode's watchdog feeder and supervisor: there is no control loop to do it."""
        while True:
            self._supervise()
            await clock.sleep_ms(TICK_MS)

    async def web_task(self):
        from smartbms.webgate import WebGate, default_host

        self.web = WebGate(self, self.host or default_host(), self.port)
        self._web_started = True
        await self.web.serve()

    # ---- task supervision ----
    # asyncio reports an exception that ended a task to the loop's exception handler (no
    # wrapper coroutine per task: 112 bytes of heap each); a part that should run for ever
    # and returned is noticed at the next tick.
    def _spawn(self, name, coro, forever=True):
        asyncio.get_event_loop().set_exception_handler(self._task_failed)
        self._tasks.append(asyncio.create_task(coro))
        self._task_info.append((name, forever))

    def _task_failed(self, loop, context):
        exc = context.get("exception")
        t = context.get("future")
        tasks = self._tasks
        name = self._task_info[tasks.index(t)][0] if t in tasks else "task"
        self.fail(name, exc if exc is not None else RuntimeError(context.get("message")))

    def _supervise(self):
        # a task that ended is looked at once: a crash (CPython reports one only when the task
        # is collected) or a part that should run for ever fails the device; a part whose end
        # is its job (the health watch, an MQTT session) leaves the lists
        tasks, info = self._tasks, self._task_info
        for i in range(len(tasks) - 1, -1, -1):
            if self.failed is None and tasks[i].done():
                exc = _error_of(tasks[i])
                if exc is not None or info[i][1]:
                    self.fail(info[i][0], exc or RuntimeError("task ended"))
                else:
                    tasks.pop(i)
                    if info.pop(i)[0] == "health":  # judged healthy: the guard's work is done
                        self.guard = None
                        unload(("smartbms.health",))
        t = self._last_tick
        if self._wdt is not None and (self.safe_mode or (t is not None and clock.now() - t <= _WDT_STALE_S)):
            self._wdt.feed()

    def fail(self, name, exc):
        """An uncaught error in a task: log it, relay off, reset the device."""
        if self.failed is not None:
            return
        self.failed = (name, exc)
        msg = "%s crashed: %s: %s" % (name, type(exc).__name__, exc)
        self._log("app: " + msg)
        try:
            import sys

            sys.print_exception(exc)
        except (AttributeError, ImportError):
            pass
        try:
            self.events.add("error", msg)
        finally:
            self.shutdown()
        self._machine.reset()

    def start(self):
        """Create the tasks (in an event loop); returns them."""
        self._wdt = self._machine.WDT(timeout=WDT_TIMEOUT_MS)
        spawn = self._spawn
        if not self.safe_mode:
            spawn("control", self.control_loop())
            if self.link is not None:
                spawn("bms", self._link_task())
        else:
            spawn("watchdog", self.watchdog_loop())
        spawn("wifi", self.wifi.run())
        spawn("web", self.web_task())
        spawn("board", self.board.run(self))
        spawn("health", self.guard.watch(self), forever=False)
        if self.setup_mode:
            spawn("setup", self.setup_window(), forever=False)
        self._integrations()
        return self._tasks

    async def run(self):
        self.start()
        while True:
            await clock.sleep_real_ms(60000)


async def main(setup_mode=False, port=80):
    app = App(setup_mode=setup_mode, port=port)
    await app.run()
