# The MQTT session: one asyncio task (App starts it only while mqtt_enabled is on). It waits
# for the app's WiFi (it never manages WiFi), connects within conn.CONNECT_MS, announces itself
# (retained "online"; the will says "offline"), publishes the discovery documents one at a
# time, then the state on change and every _STATE_EVERY_MS, and each tick (CHECK_MS) takes the
# <base>/set/<name> commands that have arrived (smartbms.mqtt.commands): one task reads and
# writes, so no receive task, lock or second coroutine chain lives on the heap. A lost broker
# means back-off with jitter, up to BACKOFF_MAX_MS. Memory stays bounded: one fixed receive
# buffer, a packet larger than it is skipped unread (a burst waits in the TCP window, not
# here), events wait in a short list (oldest dropped).
# The discovery documents (at connect) and the commands (as they come) are imported for their
# use and dropped after: a connected client that only publishes its state holds neither.
# Why not umqtt.simple (blocking sockets) or mqtt_as (manages WiFi itself): README.
import json
import random

from smartbms import clock, unload
from smartbms.alertkinds import pick
from smartbms.mqtt import codec, state
from smartbms.mqtt.conn import RX_LIMIT, Closed, Conn

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_PING_EVERY_MS = const(30000)  # half the keepalive: the broker never sees us idle too long
_SILENT_MS = const(90000)  # nothing from the broker this long (not even PINGRESP): reconnect
_STATE_EVERY_MS = const(60000)
CHECK_MS = const(1000)
BACKOFF_MIN_MS = const(2000)
BACKOFF_MAX_MS = const(300000)
_MAX_EVENTS = const(4)
_PER_TICK = const(4)  # packets taken per tick (CHECK_MS)
_OV_MINUTES = const(60)
# At boot the cell and temperature entities a pack before this boot may have left (another
# pack fitted, a changed cell count while the device was off) are removed once, up to the
# most any supported BMS reports: an empty retained config for each the pack now lacks.
_DISCOVERY = ("smartbms.mqtt.discovery",)
_COMMANDS = ("smartbms.mqtt.commands",)
_SWEEP_CELLS = const(32)
_SWEEP_TEMPS = const(16)


class Mqtt:
    def __init__(self, ctx):
        self.ctx = ctx
        self.state = "connecting"
        self.error = None
        self.ov_minutes = _OV_MINUTES  # how long an override from the select lasts
        self._conn = Conn()
        self._stop = False  # turned off: say goodbye and end
        self._restart = False  # settings changed: a new session
        self._events = []
        self._dirty = True
        self._rx_ms = 0
        self._published = None  # (node, prefix, cells, temps) of the discovery documents out there
        self._shrunk_from = (_SWEEP_CELLS, _SWEEP_TEMPS)  # (cells, temps) that may be out there beyond the pack's
        self._sig = None
        self._soc_lims = None
        self.done = False
        c = ctx.controller
        self._charger = c.state if c is not None else None  # for listener()

    # ---- the app's side ----
    def status(self):
        s = self.ctx.settings
        return {"enabled": True, "state": self.state,
                "broker": "%s:%d%s" % (s["mqtt_host"], s["mqtt_port"], " (TLS)" if s["mqtt_tls"] else ""),
                "error": self.error}

    def reconfigure(self):
        """MQTT settings changed: a new session with them, or goodbye when turned off."""
        self._stop = not self.ctx.settings["mqtt_enabled"]
        self._restart = True

    def listener(self, kind, msg):
        """The event log's listener while no alert URL is set (smartbms.alerts is then not
        loaded): the alerts among its entries go to <base>/events."""
        try:
            self._charger, k = pick(kind, msg, self._charger)
            if k is not None:
                self.event(k, msg)
        except Exception:  # noqa: BLE001 - must never fail the event log's add()
            pass

    def event(self, kind, text):
        """An alert-worthy event (smartbms.alertkinds) for <base>/events; never blocks."""
        if len(self._events) >= _MAX_EVENTS:
            self._events.pop(0)
        self._events.append((kind, text))

    def changed(self):
        self._dirty = True

    # ---- topics ----
    def base(self):
        s = self.ctx.settings
        return s["mqtt_base_topic"] or "smartbms/" + s["hostname"]

    # ---- the task ----
    async def run(self):
        try:
            while True:
                await self._run()
                await self._goodbye()
                if not self.ctx.settings["mqtt_enabled"]:  # not turned on again meanwhile
                    break
                self._stop = False
        except Exception as e:  # noqa: BLE001 - a bug here must not reset a charging device
            self.error = "stopped: %s: %s" % (type(e).__name__, e)
            self.ctx.events.add("error", "mqtt " + self.error)
        finally:
            self.state = "off"
            self.done = True
            await self._close()

    async def _run(self):
        backoff = BACKOFF_MIN_MS
        while not self._stop:
            self._restart = False
            if not self._can_connect():
                await clock.sleep_real_ms(CHECK_MS)
                continue
            self.state = "connecting"
            try:
                base = self.base()
                await self._start(base)  # returns once announced: its frame does not stay
                await self._loop(base)
                backoff = BACKOFF_MIN_MS  # a session that was up: start again quickly
            except Exception as e:  # noqa: BLE001 - any failure: log once, back off, retry
                msg = str(e) or type(e).__name__
                if msg != self.error:
                    self.ctx.events.add("mqtt", "broker %s: %s" % (self.status()["broker"], msg))
                self.error = msg
            await self._close()
            if self._stop or self._restart:
                continue
            self.state = "waiting"
            wait = backoff // 2 + random.getrandbits(16) % (backoff // 2 + 1)  # jitter: 50-100 %
            backoff = min(backoff * 2, BACKOFF_MAX_MS)
            t0 = clock.ticks_real_ms()
            while clock.real_ms_since(t0) < wait and not (self._stop or self._restart):
                await clock.sleep_real_ms(CHECK_MS // 2)

    def _can_connect(self):
        s = self.ctx.settings
        if not s["mqtt_host"]:
            self.state, self.error = "waiting", "no broker host set"
            return False
        w = self.ctx.wifi
        if w is not None and not w.connected:
            self.state, self.error = "waiting", "no WiFi"
            return False
        return True

    async def _start(self, base):
        conn = self._conn
        await conn.open(self.ctx.settings, base + "/availability", base + "/set/+")
        self._rx_ms = clock.ticks_real_ms()
        await self.publish(base + "/availability", "online", True)
        self.state = "connected"
        if self.error:
            self.ctx.events.add("mqtt", "connected to %s" % self.status()["broker"])
        self.error = None
        await self._discovery()

    async def _loop(self, base):
        sent = None
        ping = clock.ticks_real_ms()
        while not (self._stop or self._restart):
            await self._receive(base)
            if clock.real_ms_since(self._rx_ms) > _SILENT_MS:
                raise Closed("the broker stopped answering")
            self._check_discovery()
            sig = state.signature(self.ctx)
            if sig != self._sig or self._dirty or sent is None or clock.real_ms_since(sent) >= _STATE_EVERY_MS:
                self._sig = sig
                self._dirty = False
                sent = clock.ticks_real_ms()
                await self._publish_state(base)
                if self._published is None:
                    await self._discovery()
            while self._events:
                kind, text = self._events.pop(0)
                await self.publish(base + "/events", json.dumps({"kind": kind, "message": text}))
            if clock.real_ms_since(ping) >= _PING_EVERY_MS:
                ping = clock.ticks_real_ms()
                await self._conn.send(codec.PINGREQ_PACKET)
            await clock.sleep_real_ms(CHECK_MS)

    def _publish_state(self, base):
        # the document is made here, not in _loop: a coroutine's frame keeps what its stack
        # last held, and the loop's would keep the last document alive for a whole tick
        return self.publish(base + "/state", state.payload(self.ctx, self.ov_minutes))

    # ---- discovery ----
    def _shape(self):
        r = self.ctx.link.latest if self.ctx.link is not None else None
        cells = len(r.cells) if r is not None and r.cells else 0
        temps = len(r.temperatures) if r is not None and r.temperatures else 0
        s = self.ctx.settings
        return s["hostname"], s["mqtt_discovery_prefix"], cells, temps

    def _check_discovery(self):
        p = self._published
        if p is None:
            return
        r = self.ctx.link.latest if self.ctx.link is not None else None
        if r is not None and (len(r.cells or ()) != p[2] or len(r.temperatures or ()) != p[3]):
            self._published = None  # the pack's shape changed (first reading): publish again
            old = self._shrunk_from or (0, 0)
            self._shrunk_from = (max(old[0], p[2]), max(old[1], p[3]))

    async def _discovery(self):
        try:
            await self._announce()
        finally:
            unload(_DISCOVERY)

    async def _announce(self):
        from smartbms.mqtt import discovery
        from smartbms.settings import _entry
        from smartbms.version import VERSION

        node, prefix, cells, temps = self._shape()
        w = self.ctx.wifi
        ip = w.status().get("ip") if w is not None else None
        info = {"version": VERSION, "url": "http://%s/" % ip if ip else None}
        lims = {"min_soc": _entry("min_soc")[3:5], "max_soc": _entry("max_soc")[3:5]}
        for topic, payload in discovery.configs(node, self.base(), prefix, info, cells, temps, lims):
            await self.publish(topic, payload, True)
        old = self._shrunk_from
        if old is not None and (cells or temps):  # entities of cells and sensors the pack lacks: removed
            # (not before the first reading: the pack's shape is not known yet)
            for topic, payload in discovery.shrunk(node, prefix, old[0], old[1], cells, temps):
                await self.publish(topic, payload, True)
            self._shrunk_from = None
        self._published = (node, prefix, cells, temps)

    async def _goodbye(self):
        """Turned off: remove the discovery documents, say offline, disconnect (bounded)."""
        if not self._can_connect():
            return
        from smartbms.mqtt import discovery

        try:
            self.state = "connecting"
            await self._conn.open(self.ctx.settings)
            node, prefix, cells, temps = self._published or self._shape()
            for topic, payload in discovery.removals(node, prefix, cells, temps):
                await self.publish(topic, payload, True)
            await self.publish(self.base() + "/availability", "offline", True)
            await self._conn.send(codec.DISCONNECT_PACKET)
            self.ctx.events.add("mqtt", "turned off: discovery removed")
        except Exception as e:  # noqa: BLE001 - the broker is away: the will says offline anyway
            self.ctx.events.add("mqtt", "turning off: %s" % (str(e) or type(e).__name__))
        del discovery
        unload(_DISCOVERY)
        await self._close()

    def publish(self, topic, payload, retain=False):
        return self._conn.publish(topic, payload, retain)

    async def _close(self):
        await self._conn.close()

    async def _receive(self, base):
        """Take the packets that have arrived (the broker's pings, commands), at most
        _PER_TICK of them: a burst of commands waits in the TCP window for the next ticks
        instead of holding the loop (reading the socket never yields). Raises Closed when the
        connection ended."""
        conn = self._conn
        if conn.staged:  # CPython only: the stream's bytes fetched first
            await conn.fill()
        for _ in range(_PER_TICK):
            p = conn.poll()
            if p is None:
                return
            t, flags, body = p
            self._rx_ms = clock.ticks_real_ms()
            if t != codec.PUBLISH:
                continue  # PINGRESP, SUBACK: only their arrival matters
            if body is None:
                await self._refuse("?", "message larger than %d bytes dropped" % RX_LIMIT, None)
                continue
            topic, payload = codec.publish_in(flags, body)
            prefix = base + "/set/"  # made only for a message: the idle tick allocates nothing
            if not topic.startswith(prefix):
                continue
            name = topic[len(prefix):]
            if len(payload) > RX_LIMIT:
                await self._refuse(name, "message larger than %d bytes dropped" % RX_LIMIT, None)
                continue
            from smartbms.mqtt import commands

            try:
                err = commands.apply(self.ctx, self, name, payload)
            finally:
                del commands
                unload(_COMMANDS)
            if err is not None:
                await self._refuse(name, err[0], err[1])
            self._dirty = True  # answer with the state at once

    async def _refuse(self, name, message, field):
        self.ctx.events.add("mqtt", "command %s refused: %s" % (name, message))
        doc = {"command": name, "error": message}
        if field is not None:
            doc["field"] = field
        await self.publish(self.base() + "/error", json.dumps(doc))
