# Host-only stand-in for MicroPython's `network` on the ESP32 (never frozen).
#
# The simulated air holds the networks listed in SIM_WIFI: "ssid[:password][,ssid...]"
# (default "simnet", open). A station connect() to a listed SSID with the right password
# (or to an open one) completes after CONNECT_DELAY_MS of device time (smartbms.clock); anything else ends in
# STAT_NO_AP_FOUND / STAT_WRONG_PASSWORD. The address is always 127.0.0.1, so the web
# server the firmware binds is reachable from the host. Host side: set_networks(),
# drop() (the AP vanishes: the station disconnects), reset(); with a world (worldlink),
# the world's "wifi" control does the same from outside the device.
import os

try:
    import worldlink
except ImportError:  # pragma: no cover
    worldlink = None

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython (host tests)
    import time as _t

    def ticks_ms():
        return int(_t.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

STA_IF = 0
AP_IF = 1

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_BEACON_TIMEOUT = 200
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204

AUTH_OPEN = 0
AUTH_WPA2_PSK = 3

CONNECT_DELAY_MS = 300
_MAC = b"\x24\x0a\xc4\x5b\xe1\x7c"

def _real_ms(ms):
    # the association takes device time: a sped-up sim connects proportionally sooner
    try:
        from smartbms import clock

        return clock.real_ms(ms)
    except ImportError:
        return ms


_hostname = ["espressif"]
_networks = None  # {ssid: password or ""}
_order = []  # SSIDs in the order given (MicroPython dicts are unordered): scan() order
_ifaces = {}


def _parse(spec):
    nets = {}
    del _order[:]
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        ssid, _, pw = item.partition(":")
        nets[ssid] = pw
        _order.append(ssid)
    return nets


def networks():
    global _networks
    if _networks is None:
        _networks = _parse(os.getenv("SIM_WIFI") or "simnet")
        link = worldlink.get() if worldlink is not None else None
        if link is not None:
            link.handlers[worldlink.EV_WIFI] = _from_world
    return _networks


def _from_world(data):
    text = bytes(data[1:]).decode()
    if data[0] == 1:
        set_networks(text)
    elif data[0] == 2:
        drop(text)


def set_networks(spec):
    """spec: "ssid[:password],..." as in SIM_WIFI."""
    global _networks
    _networks = _parse(spec)


def drop(ssid=None):
    """The network `ssid` (or every network) vanishes from the air."""
    for name in list(networks()):
        if ssid is None or name == ssid:
            del _networks[name]
            _order.remove(name)
    sta = _ifaces.get(STA_IF)
    if sta is not None and sta._ssid not in networks():
        sta._link = False
        if sta._status == STAT_GOT_IP:
            sta._status = STAT_BEACON_TIMEOUT


def reset():
    global _networks
    _networks = None
    _ifaces.clear()
    _hostname[0] = "espressif"


def hostname(name=None):
    if name is None:
        return _hostname[0]
    if not isinstance(name, str) or not 0 < len(name) <= 32:
        raise ValueError("hostname must be 1..32 characters")
    _hostname[0] = name


class WLAN:
    IF_STA = STA_IF
    IF_AP = AP_IF
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2

    def __new__(cls, interface=STA_IF):
        w = _ifaces.get(interface)
        if w is None:
            w = object.__new__(cls)
            w._if = interface
            w._active = False
            w._status = STAT_IDLE
            w._ssid = None
            w._link = False
            w._started = 0
            w._essid = "ESP_%02X%02X%02X" % (_MAC[3], _MAC[4], _MAC[5])
            w._ap_password = ""
            _ifaces[interface] = w
        return w

    def __init__(self, interface=STA_IF):
        pass

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self._status = STAT_IDLE
            self._link = False

    def connect(self, ssid=None, key=None, bssid=None):
        if not self._active:
            raise OSError("STA must be active")
        if self._if != STA_IF:
            raise OSError("connect() is for the station interface")
        self._ssid = ssid
        self._key = key or ""
        self._link = False
        self._status = STAT_CONNECTING
        self._started = ticks_ms()

    def disconnect(self):
        self._link = False
        self._status = STAT_IDLE

    def _settle(self):
        if self._status != STAT_CONNECTING:
            return
        if ticks_diff(ticks_ms(), self._started) < _real_ms(CONNECT_DELAY_MS):
            return
        nets = networks()
        if self._ssid not in nets:
            self._status = STAT_NO_AP_FOUND
        elif nets[self._ssid] and nets[self._ssid] != self._key:
            self._status = STAT_WRONG_PASSWORD
        else:
            self._status = STAT_GOT_IP
            self._link = True

    def status(self, param=None):
        if param == "rssi":
            self._settle()
            if not self._link:
                raise OSError("not connected")
            return -55
        if param is not None:
            raise ValueError("unknown status param")
        if self._if == AP_IF:
            return STAT_GOT_IP if self._active else STAT_IDLE
        self._settle()
        return self._status

    def isconnected(self):
        if self._if == AP_IF:
            return self._active
        self._settle()
        return self._link

    def scan(self):
        if not self._active:
            raise OSError("STA must be active")
        out = []
        rssi = -48
        nets = networks()
        for ssid in _order:
            pw = nets[ssid]
            out.append((ssid.encode(), b"\x24\x0a\xc4\x00\x00\x01", 6, rssi, AUTH_WPA2_PSK if pw else AUTH_OPEN, False))
            rssi -= 9
        return out

    def ifconfig(self, cfg=None):
        if cfg is not None:
            return
        if self._if == STA_IF and not self.isconnected():
            return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        if self._if == AP_IF and not self._active:
            return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def ipconfig(self, key):
        if key == "addr4":
            c = self.ifconfig()
            return (c[0], c[1])
        raise ValueError("unknown ipconfig key")

    def config(self, *args, **kwargs):
        if kwargs:
            for k, v in kwargs.items():
                if k in ("essid", "ssid"):
                    self._essid = v
                elif k in ("password", "key"):
                    self._ap_password = v
                elif k == "hostname" or k == "dhcp_hostname":
                    hostname(v)
                # authmode, channel, max_clients, pm, reconnects, txpower: accepted, ignored
            return None
        if len(args) != 1:
            raise TypeError("config() takes one parameter name or keyword arguments")
        k = args[0]
        if k == "mac":
            return _MAC if self._if == STA_IF else _MAC[:5] + bytes((_MAC[5] + 1,))
        if k in ("essid", "ssid"):
            return self._essid if self._if == AP_IF else (self._ssid or "")
        if k in ("hostname", "dhcp_hostname"):
            return _hostname[0]
        if k == "channel":
            return 6
        raise ValueError("unknown config param")
