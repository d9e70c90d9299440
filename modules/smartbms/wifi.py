# WiFi supervisor: station mode with the stored credentials, reconnect with backoff, and an
# access point "smartbms-XXXX" (last MAC bytes, open) for setup when there are no credentials,
# after AP_AFTER_S of failed connection, or in setup mode. The station keeps retrying while
# the AP is up, so the device comes back by itself once the router does; the AP goes down
# again once the station is connected (never in setup mode). Time is device time (clock).
# Charge control never waits on anything here.
# The hostname: DHCP takes a new one at the next connection, but the ESP32 port starts its
# mDNS responder once, at the first IP, with the name of that moment, and has no way to
# rename it: after a change, NAME.local answers with the old name until a reboot, and
# status() says so (mdns_name, reboot_needed).
from smartbms import clock

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

AP_AFTER_S = const(120)  # failed station time before the AP comes up as well
_CONNECT_TIMEOUT_S = const(20)  # one connection attempt
BACKOFF_MIN_S = const(5)
BACKOFF_MAX_S = const(300)
POLL_MS = const(500)
HOSTNAME = "smartbms"

_STAT_GOT_IP = 1010


class WifiManager:
    def __init__(self, settings, events=None, setup_mode=False, network=None):
        if network is None:
            import network
        self._net = network
        self._settings = settings
        self._events = events
        self.setup_mode = bool(setup_mode)
        self._sta = network.WLAN(network.STA_IF)
        self._ap = network.WLAN(network.AP_IF)
        self._connected = False
        self._attempt_at = None  # device time the current attempt started (None: idle)
        self._retry_at = 0
        self._backoff = BACKOFF_MIN_S
        self._down_since = None  # device time the station lost (or never had) its link
        self._kick = False
        self._mdns_name = None  # what mDNS answers to since the first IP (None: not yet up)
        self.connects = 0
        self.failures = 0

    # ---- helpers ----
    def _log(self, msg):
        if self._events is not None:
            self._events.add("wifi", msg)

    def _credentials(self):
        ssid = self._settings.get("wifi_ssid", "")
        try:
            pw = self._settings.secret("wifi_password")
        except KeyError:
            pw = ""
        return ssid, pw

    def ap_ssid(self):
        mac = self._ap.config("mac")
        return "smartbms-%02X%02X" % (mac[-2], mac[-1])

    def _hostname(self):
        return self._settings.get("hostname", HOSTNAME) or HOSTNAME

    def _set_hostname(self):
        name = self._hostname()
        try:
            self._net.hostname(name)  # DHCP; mDNS only if it is not running yet
        except (AttributeError, ValueError, OSError):
            pass
        if self._mdns_name is not None and name != self._mdns_name:
            self._log("hostname %s for DHCP now; mDNS answers as %s.local until a reboot"
                      % (name, self._mdns_name))

    def reboot_needed(self):
        """True when mDNS still answers with a hostname the settings no longer have."""
        return self._mdns_name is not None and self._mdns_name != self._hostname()

    def _ap_on(self, why):
        if not self._ap.active():
            self._ap.active(True)
            self._ap.config(essid=self.ap_ssid())
            self._log("access point %s up (%s)" % (self.ap_ssid(), why))

    def _ap_off(self):
        if self._ap.active():
            self._ap.active(False)
            self._log("access point down")

    # ---- public ----
    @property
    def connected(self):
        return self._connected

    def status(self):
        sta_up = self._connected
        ap_up = self._ap.active()
        ssid, _ = self._credentials()
        rssi = None
        ip = None
        if sta_up:
            try:
                rssi = self._sta.status("rssi")
            except (OSError, ValueError):
                pass
            ip = self._sta.ifconfig()[0]
        elif ap_up:
            ip = self._ap.ifconfig()[0]
        return {"mode": "sta" if sta_up or (not ap_up and self._sta.active()) else "ap" if ap_up else "off",
                "ssid": ssid, "ip": ip, "rssi": rssi, "connected": sta_up,
                "ap_ssid": self.ap_ssid() if ap_up else None,
                "mdns_name": self._mdns_name, "reboot_needed": self.reboot_needed()}

    async def scan(self):
        if not self._sta.active():
            self._sta.active(True)
        await clock.sleep_ms(0)
        from smartbms.settings import SettingsError, check_value

        best = {}
        for entry in self._sta.scan():
            try:
                name = entry[0].decode()
                # only names the settings can store; MicroPython decodes encoded surrogates
                # without complaint, and they would make the JSON answer invalid UTF-8
                if name:
                    check_value("wifi_ssid", name)
            except (UnicodeError, AttributeError, SettingsError):
                continue
            if not name:
                continue  # hidden network
            rssi = entry[3]
            if name not in best or rssi > best[name]["rssi"]:
                best[name] = {"ssid": name, "rssi": rssi, "secure": entry[4] != 0}
        out = list(best.values())
        out.sort(key=lambda n: -n["rssi"])
        return out

    def configure(self, ssid, password):
        """Store new credentials (validated first; SettingsError changes nothing) and reconnect."""
        from smartbms.settings import check_value

        check_value("wifi_ssid", ssid)
        check_value("wifi_password", password)
        if not ssid:
            from smartbms.settings import SettingsError

            raise SettingsError("wifi_ssid", "required")
        self._settings.set_secret("wifi_password", password)
        self._settings.update({"wifi_ssid": ssid})
        self._log("credentials for %s stored" % ssid)
        self.setup_mode = False
        self.reconnect()

    def reconnect(self):
        """Drop the current connection and try again now (new credentials or hostname)."""
        self._kick = True

    def enter_setup_mode(self):
        self.setup_mode = True
        self._ap_on("setup mode")

    # ---- the supervisor ----
    def step(self, now):
        """One supervision step at device time `now` (the run loop calls it twice a second)."""
        ssid, pw = self._credentials()
        if self._down_since is None:
            self._down_since = now
        if self._kick:
            self._kick = False
            self._set_hostname()
            if self._sta.active():
                self._sta.disconnect()
            if self._connected:
                self._connected = False
                self._down_since = now
            self._attempt_at = None
            self._retry_at = now
            self._backoff = BACKOFF_MIN_S
        if self.setup_mode:
            self._ap_on("setup mode")
        elif not ssid:
            self._ap_on("no WiFi credentials")
        if not ssid:
            return
        if not self._sta.active():
            self._sta.active(True)
        up = self._sta.isconnected()
        if up:
            if not self._connected:
                self._connected = True
                self.connects += 1
                if self._mdns_name is None:  # the port starts mDNS now, with today's name
                    self._mdns_name = self._hostname()
                self._attempt_at = None
                self._backoff = BACKOFF_MIN_S
                self._log("connected to %s as %s" % (ssid, self._sta.ifconfig()[0]))
            if not self.setup_mode:
                self._ap_off()
            return
        if self._connected:
            self._connected = False
            self._down_since = now
            self._retry_at = now
            self._log("lost %s" % ssid)
        if now - self._down_since >= AP_AFTER_S:
            self._ap_on("no connection to %s for %d s" % (ssid, now - self._down_since))
        if self._attempt_at is not None:
            st = self._sta.status()
            failed = st != 1001 and st != _STAT_GOT_IP and st != 1000  # not connecting/idle
            if failed or now - self._attempt_at >= _CONNECT_TIMEOUT_S:
                self.failures += 1
                self._attempt_at = None
                self._retry_at = now + self._backoff
                self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
                try:
                    self._sta.disconnect()
                except OSError:
                    pass
            return
        if now >= self._retry_at:
            self._attempt_at = now
            self._sta.connect(ssid, pw)

    async def run(self):
        self._set_hostname()
        while True:
            self.step(clock.now())
            await clock.sleep_ms(POLL_MS)
