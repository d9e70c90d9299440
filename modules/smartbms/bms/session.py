# The BLE side of one BMS link (smartbms.bms.link.BMSLink builds on it): open a connection
# (find, connect, discover, subscribe, MTU), start the BMS's stream, and request/response
# with bounded waits, assembling the captured notifications into frames and decoding them
# into a Reading. BMSLink adds the polling, reconnects and backoff, settings and stats.
#
# Every notification is captured at IRQ level: aioble hands each one to
# `_on_notify_indicate(queue, ...)`, which appends to the characteristic's one-slot deque
# (`_notify_queue`), so back-to-back fragments would overwrite each other before
# notified() runs. The session puts its own ring (NotifyRing) in that slot instead.
#
# Radio waits (connect, discovery, responses) are real milliseconds: the radio does not
# speed up with the simulator's clock.
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

from smartbms import clock, unload
from smartbms.bms.connect import connect
from smartbms.bms.gatt import open_characteristics
from smartbms.bms.reading import BMSError, Reading
from smartbms.bms.ring import NotifyRing

_SCAN = ("smartbms.bms.scan",)  # loaded to find a pack, then dropped (smartbms.bms.link)

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


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


_FLAG_WRITE_NO_RESPONSE = const(0x0004)
_WAIT_TICK_MS = const(10)  # how often a response wait looks at the capture ring
_sleep_real_ms = clock.sleep_real_ms


class LinkError(Exception):
    """The BMS is reachable but not usable (service or characteristics missing)."""


class Session:
    """The connection and the exchanges of one link; `driver` may be None until the BMS is
    recognised (BMSLink._set_driver)."""

    def __init__(self, driver):
        self._work = Reading()  # decoded into; swapped with latest when a poll completes
        self._assembler = driver.new_assembler() if driver is not None else None
        self._capture = NotifyRing()
        self._sink = self._on_frame  # bound once: a bound method allocates each time it is made
        self._device = None
        self._conn = None
        self._wchar = None
        self._nchar = None
        self._write_response = False
        self._answers = 0
        self._frame_error = None
        self._restart_stream = False
        self._fresh = False

    async def _open(self):
        import aioble

        if self._device is None or self.driver is None:
            from smartbms.bms import scan

            try:
                dev, family = await scan.find(self.mac, self.name, self.scan_ms)
            finally:
                del scan
                unload(_SCAN)
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

    async def _send_fet(self):
        req = self._fet_request
        self._fet_request = None
        self._arm()
        await self._wchar.write(req, self._write_response, self.request_timeout_ms)
        self._fet_done = await self._collect(0)
