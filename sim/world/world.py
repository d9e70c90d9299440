"""The simulated world around the device (CPython, outside the firmware's heap): the
battery with its charger behind the relay, the BLE air with its peers, the BOOT button
and the WiFi networks. The device process reaches it over the world link (server.py);
tests and the sim panel steer it through control() with JSON commands.

Time: the world runs in device time, `speed` times faster than real time, like the
firmware's own clock (smartbms.clock). The relay's wiring is hardware: GPIO `relay_pin`
drives a relay module that is active-low or not (`relay_active_low`); an undriven pin
(the device is off or starting, its C hook holds OFF) leaves the charger off.
"""
import asyncio
import time

from world.bms_peer import MACS, BMSPeer, battery_values
from world.radio import Peer, Radio, mac_bytes

BUTTON_PIN = 0
_BATTERY_KEYS = ("temperature_c", "charger_a", "load_a", "fault", "balance_a")
_PEER_KNOBS = ("silent", "in_range", "connect_delay_ms", "response_delay_ms", "fragment_gap_ms",
               "mtu_exchange_fails", "cccd_status", "cccd_no_response", "discovery_stalls",
               "drop_after_fragments", "advertise_when_connected", "rssi", "stream_ms", "name", "answer")


class ControlError(Exception):
    pass


class World:
    def __init__(self, speed=1, battery=None, bms=None, relay_pin=33, relay_active_low=True,
                 networks="simnet", log=None):
        self.speed = max(1, int(speed))
        self.radio = Radio(time_scale=1.0 / self.speed)
        self.battery = battery
        self.relay_pin = relay_pin
        self.relay_active_low = relay_active_low
        self.networks = networks
        self.log = log or (lambda msg: None)
        self.pins = {}  # pin -> level the device drives (None: not driven)
        self.inputs = {}  # pin -> level the world drives on an input (button)
        self.relay_switches = 0
        self.welded = False  # the relay contact is stuck closed
        self.device = None  # the attached device session (server.DeviceSession)
        self.t = 0.0  # device seconds the world has run
        self.bms = None
        if bms is not None:
            self.bms = self.add_bms(bms)
        self._stepper = None

    # ---- the device's side ----
    def attach(self, session):
        self.device = session
        self.radio.send_irq = session.send_irq
        # what the world drives on the device's inputs holds across a reset
        for pin, level in self.inputs.items():
            session.send_pin(pin, level)

    def detach(self, session):
        if self.device is session:
            self.device = None
            self.radio.send_irq = None
            self.radio.device_gone()
            self.pins.clear()  # power gone: nothing is driven; the C hook keeps OFF at boot

    def pin_written(self, pin, level):
        old = self.charger_on()
        self.pins[pin] = level
        if self.charger_on() != old:
            self.relay_switches += 1

    def charger_on(self):
        if self.welded:
            return True
        level = self.pins.get(self.relay_pin)
        if level is None:
            return False
        return level == (0 if self.relay_active_low else 1)

    # ---- time ----
    def start(self):
        if self._stepper is None and self.battery is not None:
            self._stepper = asyncio.ensure_future(self._step_battery())

    async def _step_battery(self):
        last = time.monotonic()
        while True:
            await asyncio.sleep(max(0.05, 1.0 / self.speed))
            now = time.monotonic()
            dt = (now - last) * self.speed
            last = now
            self.t += dt
            self.battery.step(dt, self.charger_on())

    # ---- peers ----
    def add_bms(self, protocol, mac=None, values=None, variant=None, mtu_max=None, stream_ms=500, **knobs):
        """A BMS peer; values None: it reports this world's battery."""
        if values is None:
            if self.battery is None:
                raise ControlError("no battery in this world: give the peer values")
            values = self._battery_values
        peer = BMSPeer(protocol, values, mac=mac, variant=variant, mtu_max=mtu_max, stream_ms=stream_ms)
        if self.battery is not None and values == self._battery_values:
            peer.on_fet = self._bms_fet
        self.radio.add(peer)
        self.set_peer(peer.mac, **knobs)
        return peer

    def _bms_fet(self, off):
        """The BMS was told to open (or close again) its charge MOSFET."""
        self.battery.fet_cmd_off = off
        self.log("world: BMS charge MOSFET %s by command" % ("off" if off else "on"))

    def _battery_values(self):
        return battery_values(self.battery.reading())

    def peer(self, mac):
        try:
            p = self.radio.peers.get(mac_bytes(mac))
        except ValueError as e:
            raise ControlError(str(e))
        if p is None:
            raise ControlError("no peer %s" % mac)
        return p

    def set_peer(self, mac, **knobs):
        p = self.peer(mac)
        for k, v in knobs.items():
            if k == "values":
                p.set_values(v)
            elif k in _PEER_KNOBS and hasattr(p, k):
                setattr(p, k, v)
            else:
                raise ControlError("unknown peer setting %r" % k)
            if k == "in_range" and not v:
                p.drop_link()
        return p

    # ---- control (tests, the sim panel) ----
    def control(self, cmd):
        """Run one JSON command; returns a JSON-able answer or raises ControlError."""
        op = cmd.pop("op", None)
        fn = getattr(self, "_ctl_" + str(op), None)
        if fn is None:
            raise ControlError("unknown op %r" % op)
        try:
            return fn(**cmd)
        except TypeError as e:
            raise ControlError("%s: %s" % (op, e))

    def _ctl_status(self):
        out = {"t": self.t, "speed": self.speed, "charger_on": self.charger_on(),
               "relay_switches": self.relay_switches, "pins": {str(k): v for k, v in self.pins.items()},
               "device": self.device is not None, "radio": dict(self.radio.counts),
               "connect_pending": self.radio._pending is not None, "ble_active": self.radio.active,
               "peers": [self._peer_info(p) for p in self.radio.peers.values()]}
        if self.battery is not None:
            b = self.battery
            out["battery"] = {"soc": b.soc(), "current": b.current, "temperature_c": b.temperature_c,
                              "fault": b.fault, "charge_fet": b.charge_fet}
        return out

    def _peer_info(self, p):
        return {"mac": p.mac, "name": p.name, "connected": p.connected, "mtu": p.mtu,
                "connects": p.connects, "disconnects": p.disconnects, "fragments_sent": p.fragments_sent,
                "notifications_lost": p.notifications_lost, "writes": list(p.writes),
                "subscribed": [c.value_handle for c in p.chars() if c.subscribed],
                "requests": getattr(p, "requests", 0), "streamed": getattr(p, "streamed", 0),
                "charge_fet_off": getattr(p, "charge_fet_off", None)}

    def _ctl_peer_info(self, mac):
        return self._peer_info(self.peer(mac))

    def _ctl_add_bms(self, protocol, **kw):
        if protocol not in MACS:
            raise ControlError("unknown BMS protocol %r (known: %s)" % (protocol, ", ".join(sorted(MACS))))
        return self._peer_info(self.add_bms(protocol, **kw))

    def _ctl_add_peer(self, mac, name=None, services=(), manufacturer=None, rssi=-60, **knobs):
        """A plain peripheral: services [[uuid, [[uuid, props], ...]], ...]."""
        mfr = (manufacturer[0], bytes.fromhex(manufacturer[1])) if manufacturer else None
        p = self.radio.add(Peer(mac, name, [(s, [tuple(c) for c in cs]) for s, cs in services], mfr, rssi))
        self.set_peer(p.mac, **knobs)
        return self._peer_info(p)

    def _ctl_add_unknown_peer(self, mac=None, name=None, **knobs):
        """A device no driver knows (sim/world/unknown_peer.py), for the capture mode."""
        from world.unknown_peer import MAC, NAME, UnknownPeer

        p = self.radio.add(UnknownPeer(mac or MAC, name or NAME))
        self.set_peer(p.mac, **knobs)
        return self._peer_info(p)

    def _ctl_set_peer(self, mac, **knobs):
        return self._peer_info(self.set_peer(mac, **knobs))

    def _ctl_notify(self, mac, uuid, hex):
        return {"sent": self.peer(mac).notify(uuid, bytes.fromhex(hex))}

    def _ctl_drop_link(self, mac):
        self.peer(mac).drop_link()
        return {}

    def _ctl_remove_peer(self, mac):
        self.radio.remove(mac)
        return {}

    def _ctl_clear_peers(self):
        for addr in list(self.radio.peers):
            self.radio.remove(addr)
        self.bms = None
        return {}

    def _ctl_button(self, level, pin=BUTTON_PIN):
        """The outside world drives an input: 0 pressed (BOOT pulls GPIO0 low), None released."""
        if level is None:
            self.inputs.pop(pin, None)
        else:
            self.inputs[pin] = 1 if level else 0
        if self.device is not None:
            self.device.send_pin(pin, level)
        return {}

    def _ctl_wifi(self, networks=None, drop=None):
        if networks is not None:
            self.networks = networks
            if self.device is not None:
                self.device.send_wifi(1, networks)
        if drop is not None and self.device is not None:
            self.device.send_wifi(2, drop)
        return {}

    def _ctl_speed(self, speed):
        """The world's clock speed (the device takes SIM_SPEED at boot: the sim panel restarts it)."""
        if isinstance(speed, bool) or not isinstance(speed, int) or not 1 <= speed <= 3600:
            raise ControlError("speed must be a whole number 1..3600")
        self.speed = speed
        self.radio.time_scale = 1.0 / speed
        return {"speed": speed}

    def _ctl_bms_lie(self, **kw):
        """How the BMS's report differs from the truth (battery.BMSLie: temps_missing, ...)."""
        if self.battery is None:
            raise ControlError("no battery in this world")
        lie = self.battery.lie
        for k, v in kw.items():
            if k.startswith("_") or not hasattr(lie, k):
                raise ControlError("unknown BMS lie %r" % k)
            setattr(lie, k, v)
        return {k: v for k, v in lie.__dict__.items()}

    def _ctl_battery(self, **kw):
        if self.battery is None:
            raise ControlError("no battery in this world")
        for k, v in kw.items():
            if k == "welded":
                self.welded = bool(v)
            elif k in _BATTERY_KEYS:
                setattr(self.battery, k, v)
            else:
                raise ControlError("unknown battery setting %r" % k)
        return self._ctl_status()["battery"]
