# The BLE link to the BMS on aioble: find and connect, discover the service, pick the
# write/notify characteristics by their properties, subscribe, request/response with
# bounded waits, reconnect with backoff, and the poll loop that publishes Readings.
#
# Every notification is captured at IRQ level: aioble hands each one to
# `_on_notify_indicate(queue, ...)`, which appends to the characteristic's one-slot deque
# (`_notify_queue`), so back-to-back fragments would overwrite each other before
# notified() runs. The link puts its own ring (_Capture) in that slot instead.
#
# Radio waits (connect, discovery, responses) are real milliseconds: the radio does not
# speed up with the simulator's clock. Poll intervals and backoff are device time
# (smartbms.clock).
#
# Facts of the real stack (MicroPython v1.28.0's NimBLE binding, aioble at the commit it
# pins) that shape this code:
# - the connect: smartbms.bms.connect (the controller's attempt lasts the link's timeout; a
#   connect the controller gives up on ends the wait at once).
# - Discovery results come in bursts and aioble hands them out from the end of its queue,
#   so characteristics are ordered by handle before one is chosen (smartbms.bms.gatt).
# - subscribe() writes the CCCD with a response and may raise GattError.
import gc
import time

from smartbms import clock
from smartbms.bms.reading import BMSError, Reading
from smartbms.bms.connect import connect, radio_up
from smartbms.bms.gatt import open_characteristics
from smartbms.bms.ring import NotifyRing as _Capture  # noqa: F401 (tests use the name)
from smartbms.bms.scan import find, normalize_mac, scan  # noqa: F401 (scan re-exported)

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
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
    _ticks_add = time.ticks_add
except AttributeError:  # CPython

    def _ticks_ms():
        return int(time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b

    def _ticks_add(a, b):
        return a + b


try:
    from random import getrandbits as _getrandbits
except ImportError:  # pragma: no cover

    def _getrandbits(n):
        return _ticks_ms() & ((1 << n) - 1)


_FLAG_WRITE_NO_RESPONSE = const(0x0004)

BACKOFF_MIN_MS = const(1000)
BACKOFF_MAX_MS = const(60000)
MAX_TIMEOUTS = const(3)  # consecutive unanswered polls before the link is rebuilt
_WAIT_TICK_MS = const(10)  # how often a response wait looks at the capture ring
_SLEEP_SLICE_MS = const(500)  # device ms; lets close() end a sleeping run() soon
_SCAN_MS = const(5000)

MODES = ("persistent", "release")


class LinkError(Exception):
    """The BMS is reachable but not usable (service or characteristics missing)."""


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

class BMSLink:
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
            mac = normalize_mac(mac)
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
        self._work = Reading()  # decoded into; swapped with latest when a poll completes
        self._assembler = driver.new_assembler() if driver is not None else None
        self._capture = _Capture()
        self._sink = self._on_frame  # bound once: a bound method allocates each time it is made
        self._device = None
        self._conn = None
        self._wchar = None
        self._nchar = None
        self._write_response = False
        self._answers = 0
        self._frame_error = None
        self._fet_request = None  # a charge-MOSFET command for the next cycle
        self._fet_done = None  # its outcome: True acknowledged, False not
        self._failures = 0  # consecutive failed cycles: drives the backoff
        self._timeouts_in_row = 0
        self._lost = False  # a link failed: the next connection is a reconnect
        self._restoring = False  # reconnected after a failure, "restored" not logged yet
        self._restart_stream = False
        self._fresh = False
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
        from smartbms.bms.scan import with_connected

        return with_connected(await scan(duration_ms), self)

    def _from_settings(self):
        s = self.settings
        proto = s["bms_protocol"]
        mac = s["bms_mac"] or None
        self.mac = normalize_mac(mac) if mac else None
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

    async def _send_fet(self):
        req = self._fet_request
        self._fet_request = None
        self._arm()
        await self._wchar.write(req, self._write_response, self.request_timeout_ms)
        self._fet_done = await self._collect(0)

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

    async def _open(self):
        import aioble

        if self._device is None or self.driver is None:
            dev, family = await find(self.mac, self.name, self.scan_ms)
            if self.driver is None:
                if family is None:
                    raise LinkError("BMS %s not found or not recognised (set bms_protocol)" % (self.mac or self.name))
                from smartbms.bms import protocols

                self._set_driver(protocols.get(family))
            if dev is None:
                if self.mac is None:
                    raise LinkError("no BMS advertising as %r" % self.name)
                # Not seen (maybe not advertising right now): try the public address.
                dev = aioble.Device(aioble.ADDR_PUBLIC, self.mac)
            self._device = dev
        # The connection's objects live until the next drop: collected first, the heap
        # places them in its lowest free blocks, not amid a burst of requests' garbage
        # (which, once freed, would leave them splitting the free space for days).
        gc.collect()
        try:
            conn = await connect(self._device, self.connect_timeout_ms)
        except Exception:
            self._device = None  # aioble keeps the dead connection on it: rescan next time
            raise
        if not conn.is_connected():
            self._device = None
            raise LinkError("connection closed while opening")
        self._conn = conn
        self.stats["connects"] += 1
        if self._lost:
            self.stats["reconnects"] += 1
            self._lost = False
            # Announced once data flows again: a link that connects but then fails every
            # poll must not log "restored" on each attempt.
            self._restoring = True
        elif not self._announced:
            self._log("BMS connected: %s %s" % (self.driver.name, self.mac or self.name))
        self._announced = True
        t = self.request_timeout_ms
        gc.collect()  # the services and characteristics live as long: as above
        try:
            self._nchar, self._wchar = await open_characteristics(conn, self.driver, t)
        except BaseException:
            # a discovery cut short (its timeout) stays "in progress" on aioble's connection,
            # and aioble hands that connection back to the next connect() while it lives:
            # every later discovery on it failed with "Discovery in progress", for good
            conn._discover = None
            self._device = None
            raise
        self._write_response = not (self._wchar.properties & _FLAG_WRITE_NO_RESPONSE)
        self._nchar._notify_queue = self._capture
        self._capture.listening = False
        with conn.timeout(t):
            await self._nchar.subscribe(notify=True)
        if self.mtu:
            try:
                await conn.exchange_mtu(self.mtu, timeout_ms=t)
            except Exception:  # noqa: BLE001 - the default MTU works, only slower
                pass
        await self._start()

    async def _start(self):
        self._fresh = False
        for req in self.driver.start_requests():
            self._arm()
            await self._wchar.write(req, self._write_response, self.request_timeout_ms)
            # Give each start request a chance to be answered; a mute one is judged by the poll.
            await self._collect(0)
        # A measurement that answered the last start request (JK's first cell info) is
        # the first poll's reading.
        self._fresh = self._answers > 0 and self._frame_error is None
        self._restart_stream = False

    async def _drop(self):
        conn = self._conn
        self._conn = None
        self._nchar = self._wchar = None
        self._capture.listening = False
        self._capture.clear()
        if conn is not None and conn.is_connected():
            try:
                await conn.disconnect(timeout_ms=2000)
            except Exception:  # noqa: BLE001 - the link is gone either way
                pass

    # ---- request/response ---------------------------------------------------------
    def _on_frame(self, frame):
        try:
            if self.driver.decode(frame, self._work):
                self._answers += 1
        except BMSError as e:
            self.stats["bad_frames"] += 1
            self._frame_error = e

    def _arm(self):
        self._capture.clear()
        asm = self._assembler
        n = asm.pending()
        if n:  # a frame the last cycle left unfinished will never complete: count it
            asm.stalled += 1
            asm.dropped_bytes += n
        asm.reset()
        self._answers = 0
        self._frame_error = None
        self._capture.listening = True

    async def _collect(self, want):
        """Feed captured fragments to the assembler until `want` measurement frames were
        decoded (want 0: until any frame arrived). False on timeout; raises when the
        link drops or the BMS answers with an error frame."""
        cap = self._capture
        asm = self._assembler
        sink = self._sink
        deadline = _ticks_add(_ticks_ms(), self.request_timeout_ms)
        frames0 = asm.frames
        while True:
            while len(cap):
                asm.feed(cap.popleft(), sink, _ticks_ms())
            if self._frame_error is not None:
                raise self._frame_error
            if (want and self._answers >= want) or (not want and asm.frames != frames0):
                return True
            if self._conn is None or not self._conn.is_connected():
                raise LinkError("disconnected")
            if _ticks_diff(deadline, _ticks_ms()) <= 0:
                return False
            await _sleep_real_ms(_WAIT_TICK_MS)

    async def _poll(self):
        # One wait loop for the whole cycle (no coroutine per request): write request i
        # once the answers to the ones before it are in; a stream needs one fresh frame.
        cap = self._capture
        asm = self._assembler
        sink = self._sink
        reqs = ()
        if self.driver.streams:
            if self._restart_stream:
                await self._start()
            if self._fresh:
                self._fresh = False
                cap.listening = False
                self._publish()
                return True
        else:
            reqs = self.driver.poll_requests()
        n = len(reqs)
        want = n if n else 1
        sent = 0
        self._arm()  # only frames that start after now count: no stale data
        deadline = _ticks_add(_ticks_ms(), self.request_timeout_ms)
        while True:
            while len(cap):
                asm.feed(cap.popleft(), sink, _ticks_ms())
            if self._frame_error is not None:
                raise self._frame_error
            if self._answers >= want:
                break
            if sent < n and self._answers >= sent:
                await self._wchar.write(reqs[sent], self._write_response, self.request_timeout_ms)
                sent += 1
                deadline = _ticks_add(_ticks_ms(), self.request_timeout_ms)
                continue
            if self._conn is None or not self._conn.is_connected():
                raise LinkError("disconnected")
            if _ticks_diff(deadline, _ticks_ms()) <= 0:
                return False
            await _sleep_real_ms(_WAIT_TICK_MS)
        cap.listening = False
        self._publish()
        return True

    def _publish(self):
        r = self._work
        r.received = clock.now()
        self._published_ms = clock.now_ms()
        self._work = self.latest if self.latest is not None else Reading()
        self.latest = r
        self.stats["ok"] += 1

    async def _sleep(self, ms):
        while ms > 0 and self._running:
            step = ms if ms < _SLEEP_SLICE_MS else _SLEEP_SLICE_MS
            await clock.sleep_ms(step)
            ms -= step
