# The BMS link: polls one BMS over BLE on aioble (the connection and the exchanges:
# smartbms.bms.session), publishes Readings, reconnects with backoff, follows the app's
# settings and keeps stats. Poll intervals and backoff are device time (smartbms.clock);
# radio waits are real milliseconds (smartbms.bms.session).
from smartbms import clock, unload
from smartbms.bms.connect import radio_up
from smartbms.bms.ring import NotifyRing as _Capture  # noqa: F401 (tests use the name)
from smartbms.bms.session import _SCAN, LinkError, Session  # noqa: F401 (LinkError re-exported)

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

try:
    from random import getrandbits as _getrandbits
except ImportError:  # pragma: no cover

    def _getrandbits(n):
        return clock.ticks_real_ms() & ((1 << n) - 1)


BACKOFF_MIN_MS = const(1000)
BACKOFF_MAX_MS = const(60000)
MAX_TIMEOUTS = const(3)  # consecutive unanswered polls before the link is rebuilt
_SLEEP_SLICE_MS = const(500)  # device ms; lets close() end a sleeping run() soon
_SCAN_MS = const(5000)

MODES = ("persistent", "release")


def backoff_ms(failures, rand8=None):
    """Delay before retry number `failures` (1, 2, ...): 1 s doubling to 60 s, minus up to
    a quarter at random so that devices restarted together do not retry in step."""
    if failures < 1:
        return 0
    base = BACKOFF_MIN_MS << (failures - 1 if failures < 8 else 7)
    if base > BACKOFF_MAX_MS:
        base = BACKOFF_MAX_MS
    if rand8 is None:
        rand8 = _getrandbits(8)
    return base - (base >> 2) * (rand8 & 0xFF) // 256


_sleep_real_ms = clock.sleep_real_ms

def _normal_mac(mac):
    # the scan module (MAC forms, finding a pack) loads for its use only: boot, a settings
    # change, a connect to a pack not yet found, a scan
    from smartbms.bms import scan

    try:
        return scan.normalize_mac(mac)
    finally:
        del scan
        unload(_SCAN)


class BMSLink(Session):
    """Polls one BMS over BLE. `driver` comes from smartbms.bms.protocols.get(); the BMS
    is found by `mac` ('AA:BB:CC:DD:EE:FF') or by advertised `name`.
    mode "persistent" keeps the connection; "release" connects for each poll and
    disconnects after it, leaving the BMS free for its phone app in between.

    Public state: latest (Reading or None; the object is reused every other poll, so copy
    it with to_dict() to keep it), age_s(), connected, stats (dict)."""

    def __init__(self, driver, mac=None, name=None, mode="persistent", interval_s=5,
                 request_timeout_ms=3000, connect_timeout_ms=10000, mtu=247, scan_ms=_SCAN_MS,
                 events=None):
        self.settings = None
        self.events = events
        if not hasattr(driver, "service_uuids") and hasattr(driver, "__getitem__"):
            # The app's Settings: follow bms_protocol/bms_mac/bms_name/bms_mode/poll_interval_s.
            self.settings = driver
            driver = None
            mac = name = None
            mode = "persistent"
        if mac is not None and mac != "":
            mac = _normal_mac(mac)
        else:
            mac = None
        if name is not None:
            name = str(name).strip() or None
        if mac is None and name is None and self.settings is None:
            raise ValueError("BMSLink needs the BMS's MAC address or its advertised name")
        if mode not in MODES:
            raise ValueError("mode must be one of %s, not %r" % (", ".join(MODES), mode))
        if not 0 < interval_s <= 3600:
            raise ValueError("interval_s must be in (0, 3600]")
        if not 50 <= request_timeout_ms <= 60000 or not 50 <= connect_timeout_ms <= 60000:
            raise ValueError("timeouts must be 50..60000 ms")
        if not 100 <= scan_ms <= 60000:
            raise ValueError("scan_ms must be 100..60000")
        if mtu and not 23 <= mtu <= 517:
            raise ValueError("mtu must be 23..517 (0 = keep the default)")
        if driver is not None:
            for attr in ("service_uuids", "streams", "start_requests", "poll_requests", "new_assembler", "decode"):
                if not hasattr(driver, attr):
                    raise ValueError("driver lacks %s" % attr)
        self.driver = driver
        self.mac = mac
        self.name = name
        self.mode = mode
        self.interval_s = interval_s
        self.request_timeout_ms = request_timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.mtu = mtu
        self.scan_ms = scan_ms
        self.latest = None
        self.stats = {
            "polls": 0, "ok": 0, "errors": 0, "timeouts": 0, "reconnects": 0, "connects": 0,
            "frames": 0, "bad_frames": 0, "dropped_bytes": 0, "failures": 0, "last_error": None,
            "bad_checksum": 0, "oversize": 0, "stalled": 0,
        }
        Session.__init__(self, driver)
        self._fet_request = None  # a charge-MOSFET command for the next cycle
        self._fet_done = None  # its outcome: True acknowledged, False not
        self._failures = 0  # consecutive failed cycles: drives the backoff
        self._timeouts_in_row = 0
        self._lost = False  # a link failed: the next connection is a reconnect
        self._restoring = False  # reconnected after a failure, "restored" not logged yet
        self._running = False
        self._closing = False
        self._published_ms = 0
        self._reconfigure = False
        self._announced = False  # the first connection to this BMS is logged
        if self.settings is not None:
            self._from_settings()

    # ---- public -------------------------------------------------------------------
    @property
    def connected(self):
        """True while a link to the BMS is up (it may drop between polls)."""
        return self._conn is not None and self._conn.is_connected()

    def age_s(self):
        """Device seconds since the latest reading arrived, None before the first."""
        if self.latest is None:
            return None
        return clock.now() - self.latest.received

    def reconfigure(self):
        """Settings changed: re-read them and reconnect at the next poll (settings mode)."""
        self._reconfigure = True

    async def scan(self, duration_ms=5000):
        """Nearby BMSes for the setup page (see smartbms.bms.scan.scan), the connected one
        (which does not advertise) first."""
        from smartbms.bms import scan

        try:
            return scan.with_connected(await scan.scan(duration_ms), self)
        finally:
            del scan
            unload(_SCAN)

    def _from_settings(self):
        s = self.settings
        proto = s["bms_protocol"]
        mac = s["bms_mac"] or None
        self.mac = _normal_mac(mac) if mac else None
        self.name = (s["bms_name"] or "").strip() or None
        self.mode = s["bms_mode"] if s["bms_mode"] in MODES else "persistent"
        self.interval_s = s["poll_interval_s"]
        self._device = None
        self._announced = False
        if proto == "auto":
            self.driver = None  # detected from the advertisement at the next connect
        else:
            from smartbms.bms import protocols

            self._set_driver(protocols.get(proto))

    def _set_driver(self, driver):
        if self.driver is not driver:
            self.driver = driver
            self._assembler = driver.new_assembler()

    def _log(self, message):
        if self.events is not None:
            try:
                self.events.add("bms", message)
            except Exception:  # noqa: BLE001 - logging never stops the poller
                pass

    async def run(self, on_reading=None):
        """Poll every interval_s until close(); on_reading(reading) after each good poll."""
        self._running = True
        while self._running:
            started = clock.now_ms()
            ok = await self.poll_once()
            if ok:
                if self.driver.streams:
                    # A stream is sampled: space the readings, not the cycle starts (the
                    # first cycle also connects and starts the stream).
                    started = self._published_ms
                if on_reading is not None:
                    on_reading(self.latest)
            if not self._running:
                break
            if self._failures:
                wait = backoff_ms(self._failures)
            else:
                wait = self.interval_s * 1000 - (clock.now_ms() - started)
            await self._sleep(wait)
        await self._drop()

    async def close(self):
        """Stop run() (at its next wake-up) and disconnect now."""
        self._running = False
        self._closing = True
        try:
            await self._drop()
        finally:
            self._closing = False

    async def poll_once(self):
        """One cycle: connect if needed, poll, publish. True when a Reading was published."""
        st = self.stats
        if self._reconfigure:
            self._reconfigure = False
            await self._drop()
            try:
                self._from_settings()
            except Exception as e:  # noqa: BLE001 - bad stored settings: report, keep idle
                st["last_error"] = "settings: %s" % e
                self.mac = self.name = None
        if self.mac is None and self.name is None:
            st["last_error"] = "no BMS configured (set its MAC address or name)"
            return False
        st["polls"] += 1
        ok = False
        was_ok = self._failures == 0 and self._timeouts_in_row == 0
        try:
            if self._conn is None or not self._conn.is_connected():
                if self._conn is not None:
                    self._lost = True
                    await self._drop()
                await self._open()
            if self._fet_request is not None:
                await self._send_fet()
            ok = await self._poll()
            if ok:
                self._timeouts_in_row = 0
                self._failures = 0
                if self._restoring:
                    self._restoring = False
                    self._log("BMS link restored")
            else:
                st["timeouts"] += 1
                st["errors"] += 1
                st["last_error"] = "timeout: no answer from the BMS"
                self._timeouts_in_row += 1
                self._restart_stream = True
                if self._timeouts_in_row >= MAX_TIMEOUTS:
                    # A BMS that stays mute over a live link is often wedged: rebuild it.
                    self._timeouts_in_row = 0
                    self._lost = True
                    self._failures += 1
                    await self._drop()
        except Exception as e:  # noqa: BLE001 - any radio failure ends this cycle only
            if self._closing:
                return False  # close() pulled the link away: not the BMS's fault
            self._fail(e)
            await self._drop()
            if was_ok:  # log transitions only: a missing BMS must not flood the log
                self._log("BMS link failed: %s" % st["last_error"])
        finally:
            self._capture.listening = False
            asm = self._assembler
            if asm is not None:
                st["frames"] = asm.frames
                st["dropped_bytes"] = asm.dropped_bytes + self._capture.overflow_bytes
                st["bad_checksum"] = asm.bad_checksum
                st["oversize"] = asm.oversize
                st["stalled"] = asm.stalled
            st["failures"] = self._failures
            if self.mode == "release":
                await self._drop()
        return ok

    async def set_charge_fet(self, on):
        """Switch the BMS's own charge MOSFET (the second cut-off of a stuck relay). The
        command goes out at the start of the next poll cycle, on the link's connection (in
        release mode too); LinkError when the family has no command or the BMS does not
        answer it within a minute."""
        req = self.driver.charge_fet_request(on) if self.driver is not None else None
        if req is None:
            raise LinkError("this BMS has no charge MOSFET command")
        self._fet_request = req
        self._fet_done = None
        waited = 0
        while self._fet_done is None and waited < 60000:
            await _sleep_real_ms(200)
            waited += 200
        if not self._fet_done:
            self._fet_request = None
            raise LinkError("the BMS did not answer the charge MOSFET command")

    def preload(self):
        """Import what the first connection needs (aioble's central and client, the
        configured driver), so that it comes to rest early in the heap (App does this at boot)."""
        try:
            import aioble  # noqa: F401
            from aioble import client  # noqa: F401
        except ImportError:  # CPython (host tools): no radio
            pass

    def radio_up(self):
        """Whether the BLE stack is up, bringing it up if needed. The OTA health check asks
        this: a new image must be able to use the radio, whether or not the BMS is in range."""
        return radio_up()

    # ---- connection ---------------------------------------------------------------
    def _fail(self, e):
        st = self.stats
        st["errors"] += 1
        if isinstance(e, asyncio.TimeoutError):
            st["timeouts"] += 1
            msg = "timeout"
        else:
            msg = str(e) or type(e).__name__
            if type(e).__name__ == "DeviceDisconnectedError":
                msg = "disconnected"
            elif type(e).__name__ == "GattError":  # aioble keeps the ATT status aside
                msg = "ATT status 0x%02x" % (getattr(e, "_status", 0) or 0)
        st["last_error"] = "%s: %s" % (type(e).__name__, msg) if msg != type(e).__name__ else msg
        self._failures += 1
        st["failures"] = self._failures
        self._lost = True

    async def _sleep(self, ms):
        while ms > 0 and self._running:
            step = ms if ms < _SLEEP_SLICE_MS else _SLEEP_SLICE_MS
            await clock.sleep_ms(step)
            ms -= step
