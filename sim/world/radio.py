"""The air between the device and its BLE peers, as MicroPython v1.28.0's NimBLE binding
shows it to the central (the device). CPython, in the world process; the device's
`bluetooth` shim (sim/shims/bluetooth.py) forwards every BLE call here and gets the IRQs
back over the world link.

NimBLE facts modelled, with where each comes from (v1.28.0 unless noted):
- gap_connect(addr_type, addr, scan_duration_ms=2000): the low-level attempt gives up after
  scan_duration_ms; the failure (and a cancel through gap_connect(None)) is reported as
  _IRQ_PERIPHERAL_DISCONNECT with conn_handle 0xFFFF, addr_type 0xFF and a zero address
  (extmod/nimble/modbluetooth_nimble.c peripheral_gap_event_cb; modbluetooth.c's default
  MP_BLUETOOTH_CONNECT_DEFAULT_SCAN_DURATION_MS). A second connect while one is pending,
  and a cancel with none pending, raise OSError(EALREADY) (ble_hs_err_to_errno_table).
- Calls on a connection that does not exist raise OSError(ENOTCONN); calls while the
  stack is off raise OSError(ENODEV) (ERRNO_BLUETOOTH_NOT_ACTIVE).
- Discovery results arrive in one burst (NimBLE's host task runs the callbacks back to
  back), then one *_DONE with status 0; a link that drops mid-discovery sends no DONE.
- The CCCD (0x2902) is a descriptor written with a response: _IRQ_GATTC_WRITE_DONE follows
  with a status (aioble's subscribe() waits for it).
- Notifications are at most MTU-3 bytes; MTU is 23 until an exchange settles on
  min(local, peer); a notification sent while the central is not subscribed is lost.
- Every IRQ's buffers (addresses, data) are memoryviews valid only during the handler
  (modbluetooth.c); the device shim hands them out the same way.
"""
import asyncio
import struct

# IRQ numbers (extmod/modbluetooth.h)
SCAN_RESULT = 5
SCAN_DONE = 6
PERIPHERAL_CONNECT = 7
PERIPHERAL_DISCONNECT = 8
SERVICE_RESULT = 9
SERVICE_DONE = 10
CHARACTERISTIC_RESULT = 11
CHARACTERISTIC_DONE = 12
DESCRIPTOR_RESULT = 13
DESCRIPTOR_DONE = 14
READ_RESULT = 15
READ_DONE = 16
WRITE_DONE = 17
NOTIFY = 18
INDICATE = 19
MTU_EXCHANGED = 21

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020

# errors, as codes of the world link (the device shim raises OSError with its own errno
# module's ENODEV, EINVAL, EALREADY, ENOTCONN for them)
ENODEV = 1
EINVAL = 2
EALREADY = 3
ENOTCONN = 4
CONN_NONE = 0xFFFF
DEFAULT_MTU = 23
DEFAULT_CONNECT_SCAN_MS = 2000
ATT_ERR_WRITE_NOT_PERMITTED = 0x03


def uuid_bytes(u):
    """Little-endian UUID bytes (as bluetooth.UUID stores them) from an int or bytes."""
    if isinstance(u, int):
        return struct.pack("<H", u)
    return bytes(u)


def mac_bytes(mac):
    if isinstance(mac, (bytes, bytearray)) and len(mac) == 6:
        return bytes(mac)
    parts = str(mac).split(":")
    if len(parts) != 6:
        raise ValueError("MAC must look like AA:BB:CC:DD:EE:FF, not %r" % (mac,))
    return bytes(int(p, 16) for p in parts)


def mac_text(addr):
    return ":".join("%02X" % b for b in addr)


class Char:
    def __init__(self, uuid, properties, value_handle):
        self.uuid = uuid_bytes(uuid)
        self.properties = properties
        self.value_handle = value_handle
        self.cccd_handle = value_handle + 1 if properties & (FLAG_NOTIFY | FLAG_INDICATE) else None
        self.subscribed = False
        self.value = b""


class Peer:
    """A BLE peripheral: advertising data, a GATT database, behaviour knobs.

    services: [(service_uuid, [(char_uuid, properties), ...]), ...] in handle order (a
    characteristic uuid may repeat, as on JK modules). on_write(char, data) runs (after
    response_delay_ms) for each write to a characteristic value; it answers with notify()."""

    def __init__(self, mac, name=None, services=(), manufacturer=None, rssi=-60, mtu_max=247,
                 addr_type=0, on_write=None):
        self.addr = mac_bytes(mac)
        self.mac = mac_text(self.addr)
        self.addr_type = addr_type
        self.name = name
        self.manufacturer = manufacturer  # (company id, bytes) or None
        self.rssi = rssi
        self.mtu_max = mtu_max
        self.on_write = on_write
        self.services = []  # [(uuid bytes, start, end, [Char])]
        handle = 1
        for s_uuid, chars_spec in services:
            start = handle
            chars = []
            for c_uuid, props in chars_spec:
                handle += 1  # the characteristic declaration
                chars.append(Char(c_uuid, props, handle + 1))
                handle += 2 if props & (FLAG_NOTIFY | FLAG_INDICATE) else 1
            self.services.append((uuid_bytes(s_uuid), start, handle, chars))
            handle += 1
        # knobs (tests and the sim panel set them through the world's control)
        self.silent = False  # answers nothing (writes are still acknowledged by the stack)
        self.in_range = True  # False: neither advertises nor accepts a connection
        self.connect_delay_ms = 30
        self.response_delay_ms = 15
        self.fragment_gap_ms = 8  # one notification per connection event
        self.mtu_exchange_fails = False  # never answers an MTU exchange
        self.cccd_status = 0  # ATT status of the CCCD write (non-zero: aioble raises GattError)
        self.cccd_no_response = False  # the CCCD write is never acknowledged
        self.discovery_stalls = False  # service discovery never completes
        self.drop_after_fragments = None  # the link drops after this many more fragments
        self.advertise_when_connected = False
        # what happened
        self.conn_handle = None
        self.mtu = DEFAULT_MTU
        self.writes = []  # the last 64 (char uuid hex, data hex)
        self.connects = 0
        self.disconnects = 0
        self.fragments_sent = 0
        self.notifications_lost = 0
        self._outq = []
        self._sender = None
        self.radio = None

    @property
    def connected(self):
        return self.conn_handle is not None

    def chars(self):
        for _, _, _, chars in self.services:
            yield from chars

    def char_by_handle(self, handle):
        for c in self.chars():
            if handle in (c.value_handle, c.cccd_handle):
                return c
        return None

    def adv_payloads(self):
        adv = bytearray(b"\x02\x01\x06")
        u16 = b"".join(s[0] for s in self.services if len(s[0]) == 2)
        if u16:
            adv += bytes((len(u16) + 1, 0x03)) + u16
        if self.manufacturer:
            m = struct.pack("<H", self.manufacturer[0]) + bytes(self.manufacturer[1])
            adv += bytes((len(m) + 1, 0xFF)) + m
        resp = b""
        if self.name:
            n = self.name.encode()
            resp = bytes((len(n) + 1, 0x09)) + n
        return bytes(adv), resp

    def notify(self, char_uuid, payload):
        """Send payload as notifications of MTU-3 bytes on the first subscribed
        characteristic with this uuid. False when it went nowhere (lost)."""
        u = uuid_bytes(char_uuid)
        target = None
        for c in self.chars():
            if c.uuid == u and c.subscribed:
                target = c
                break
        if self.silent or not self.connected or target is None:
            self.notifications_lost += 1
            return False
        size = self.mtu - 3
        chunks = [bytes(payload[i:i + size]) for i in range(0, len(payload), size)] or [b""]
        self._outq.append((self.conn_handle, target.value_handle, chunks))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send_spaced())
        return True

    async def _send_spaced(self):
        while self._outq:
            conn, handle, chunks = self._outq.pop(0)
            for chunk in chunks:
                if conn != self.conn_handle:
                    break
                if self.drop_after_fragments is not None:
                    if self.drop_after_fragments <= 0:
                        self.drop_after_fragments = None
                        self.drop_link()
                        break
                    self.drop_after_fragments -= 1
                self.fragments_sent += 1
                self.radio.irq(NOTIFY, struct.pack("<HH", conn, handle) + chunk)
                if self.fragment_gap_ms:
                    await asyncio.sleep(self.fragment_gap_ms / 1000)
        self._outq.clear()

    def drop_link(self):
        """The peer (or the air) ends the connection."""
        if self.radio is not None and self.conn_handle is not None:
            self.radio.disconnected(self.conn_handle)


class Radio:
    """The central's view of the air. `send_irq(event, payload)` delivers an IRQ to the
    device (set by the world server); None while no device is attached (events are lost,
    as they are for a device that is off)."""

    def __init__(self, time_scale=1.0):
        self.peers = {}  # addr -> Peer
        self.active = False
        self.mtu = DEFAULT_MTU
        self.send_irq = None
        self.time_scale = time_scale  # device-time delays shrink with the sim's clock speed
        self._pending = None  # (addr_type, addr, timer) of a connect in progress
        self._scan = None
        self._conns = {}  # conn_handle -> Peer
        self._next_conn = 1
        self.counts = {"connects": 0, "connect_failures": 0, "scans": 0}

    # ---- world side ----
    def add(self, peer):
        peer.radio = self
        old = self.peers.get(peer.addr)
        if old is not None:
            old.drop_link()
        self.peers[peer.addr] = peer
        return peer

    def remove(self, mac):
        p = self.peers.pop(mac_bytes(mac), None)
        if p is not None:
            p.drop_link()
        return p

    def irq(self, event, payload=b""):
        if self.send_irq is not None:
            self.send_irq(event, payload)

    def device_gone(self):
        """The device reset or lost power: every link and pending operation ends."""
        for handle in list(self._conns):
            self._end(handle)
        self._cancel_pending_timer()
        self._pending = None
        self._stop_scan_task()
        self.active = False
        self.mtu = DEFAULT_MTU

    def later(self, ms, fn, *args):
        return asyncio.get_event_loop().call_later(ms * self.time_scale / 1000, fn, *args)

    # ---- the binding's calls (each returns a value or raises OSError(errno)) ----
    def _check_active(self):
        if not self.active:
            raise OSError(ENODEV, "BLE not active")

    def _peer(self, conn):
        p = self._conns.get(conn)
        if p is None:
            raise OSError(ENOTCONN, "not connected")
        return p

    def set_active(self, on):
        if not on and self.active:
            self.device_gone()
        self.active = bool(on)
        return self.active

    def set_mtu(self, mtu):
        if not 23 <= mtu <= 517:
            raise OSError(EINVAL, "mtu out of range")
        self.mtu = mtu

    def gap_scan(self, duration_ms, active):
        self._check_active()
        self._stop_scan_task()
        if duration_ms is None:  # stop: SCAN_DONE follows (as NimBLE's disc-complete)
            self.later(0, self.irq, SCAN_DONE)
            return
        self.counts["scans"] += 1
        self._scan = asyncio.ensure_future(self._scan_task(duration_ms, active))

    def _stop_scan_task(self):
        if self._scan is not None and not self._scan.done():
            self._scan.cancel()
        self._scan = None

    async def _scan_task(self, duration_ms, active):
        # duration 0 scans until stopped; each peer answers once per pass, about every 100 ms
        t = 0.0
        step = 0.1
        while duration_ms == 0 or t * 1000 < duration_ms:
            for p in list(self.peers.values()):
                if not p.in_range or (p.connected and not p.advertise_when_connected):
                    continue
                adv, resp = p.adv_payloads()
                self.irq(SCAN_RESULT, struct.pack("<B6sBb", p.addr_type, p.addr, 0, p.rssi) + adv)
                if active and resp:
                    self.irq(SCAN_RESULT, struct.pack("<B6sBb", p.addr_type, p.addr, 4, p.rssi) + resp)
            await asyncio.sleep(step * self.time_scale)
            t += step
        self._scan = None
        self.irq(SCAN_DONE)

    def gap_connect(self, addr_type, addr, scan_duration_ms):
        self._check_active()
        if addr is None:  # cancel
            if self._pending is None:
                raise OSError(EALREADY, "no connect in progress")
            self._fail_connect()
            return
        if self._pending is not None:
            raise OSError(EALREADY, "a connect is in progress")
        self._stop_scan_task()  # NimBLE stops a running scan to connect
        p = self.peers.get(addr)
        if p is not None and p.in_range and p.addr_type == addr_type and not p.connected:
            timer = self.later(p.connect_delay_ms, self._connected, p)
        else:
            timer = None
        give_up = self.later(scan_duration_ms, self._fail_connect)
        self._pending = (addr_type, addr, timer, give_up)

    def _cancel_pending_timer(self):
        if self._pending is not None:
            for t in self._pending[2:]:
                if t is not None:
                    t.cancel()

    def _fail_connect(self):
        self._cancel_pending_timer()
        self._pending = None
        self.counts["connect_failures"] += 1
        self.irq(PERIPHERAL_DISCONNECT, struct.pack("<HB6s", CONN_NONE, 0xFF, bytes(6)))

    def _connected(self, p):
        if self._pending is None or self._pending[1] != p.addr or p.connected or not p.in_range:
            return
        self._cancel_pending_timer()
        self._pending = None
        handle = self._next_conn
        self._next_conn = self._next_conn % 0x0EFF + 1
        p.conn_handle = handle
        p.mtu = DEFAULT_MTU
        p.connects += 1
        for c in p.chars():
            c.subscribed = False
        self._conns[handle] = p
        self.counts["connects"] += 1
        self.irq(PERIPHERAL_CONNECT, struct.pack("<HB6s", handle, p.addr_type, p.addr))

    def gap_disconnect(self, conn):
        self._check_active()
        if conn not in self._conns:
            return False
        self.later(10, self.disconnected, conn)
        return True

    def disconnected(self, conn):
        p = self._conns.get(conn)
        if p is None:
            return
        self._end(conn)
        self.irq(PERIPHERAL_DISCONNECT, struct.pack("<HB6s", conn, p.addr_type, p.addr))

    def _end(self, conn):
        p = self._conns.pop(conn, None)
        if p is not None:
            p.conn_handle = None
            p.disconnects += 1
            p._outq.clear()
            for c in p.chars():
                c.subscribed = False

    def _burst(self, conn, results, done_event):
        """Discovery: every result, then DONE, back to back, unless the link went away."""
        def run():
            if conn not in self._conns:
                return
            for event, payload in results:
                self.irq(event, payload)
            self.irq(done_event, struct.pack("<HH", conn, 0))
        self.later(5, run)

    def discover_services(self, conn, uuid):
        self._check_active()
        p = self._peer(conn)
        if p.discovery_stalls:
            return
        res = [(SERVICE_RESULT, struct.pack("<HHH", conn, start, end) + s_uuid)
               for s_uuid, start, end, _ in p.services if uuid is None or uuid == s_uuid]
        self._burst(conn, res, SERVICE_DONE)

    def discover_characteristics(self, conn, start, end, uuid):
        self._check_active()
        p = self._peer(conn)
        res = []
        for _, s_start, s_end, chars in p.services:
            if s_start >= start and s_end <= end:
                for i, c in enumerate(chars):
                    c_end = chars[i + 1].value_handle - 2 if i + 1 < len(chars) else s_end
                    if uuid is None or uuid == c.uuid:
                        res.append((CHARACTERISTIC_RESULT,
                                    struct.pack("<HHHB", conn, c_end, c.value_handle, c.properties) + c.uuid))
        self._burst(conn, res, CHARACTERISTIC_DONE)

    def discover_descriptors(self, conn, start, end):
        self._check_active()
        p = self._peer(conn)
        res = []
        for c in p.chars():
            if c.cccd_handle is not None and start <= c.cccd_handle <= end:
                res.append((DESCRIPTOR_RESULT, struct.pack("<HH", conn, c.cccd_handle) + uuid_bytes(0x2902)))
        self._burst(conn, res, DESCRIPTOR_DONE)

    def gattc_read(self, conn, handle):
        self._check_active()
        p = self._peer(conn)
        c = p.char_by_handle(handle)

        def run():
            if conn not in self._conns:
                return
            if c is None or not c.properties & FLAG_READ and handle == c.value_handle:
                self.irq(READ_DONE, struct.pack("<HHH", conn, handle, 0x02))  # read not permitted
                return
            value = struct.pack("<H", 1 if c.subscribed else 0) if handle == c.cccd_handle else c.value
            self.irq(READ_RESULT, struct.pack("<HH", conn, handle) + value)
            self.irq(READ_DONE, struct.pack("<HHH", conn, handle, 0))
        self.later(10, run)

    def gattc_write(self, conn, handle, data, mode):
        self._check_active()
        p = self._peer(conn)
        if len(data) > p.mtu - 3:
            raise OSError(EINVAL, "longer than one ATT write at this MTU")
        c = p.char_by_handle(handle)
        if c is None:
            raise OSError(EINVAL, "no such handle")
        status = 0
        if handle == c.cccd_handle:
            status = p.cccd_status
            if status == 0 and len(data) == 2:
                c.subscribed = bool(data[0] & 3)
            if p.cccd_no_response:
                return
        else:
            p.writes.append((c.uuid[::-1].hex(), bytes(data).hex()))
            del p.writes[:-64]
            if p.on_write is not None and not p.silent:
                self.later(p.response_delay_ms, self._deliver, p, conn, c, bytes(data))
            if mode == 1 and not c.properties & FLAG_WRITE:
                status = ATT_ERR_WRITE_NOT_PERMITTED
        if mode == 1:
            self.later(5, self._write_done, conn, handle, status)

    def _write_done(self, conn, handle, status):
        if conn in self._conns:
            self.irq(WRITE_DONE, struct.pack("<HHH", conn, handle, status))

    def _deliver(self, p, conn, c, data):
        if p.conn_handle == conn and not p.silent:
            p.on_write(c, data)

    def exchange_mtu(self, conn):
        self._check_active()
        p = self._peer(conn)
        if p.mtu_exchange_fails:
            return

        def run():
            if p.conn_handle != conn:
                return
            p.mtu = max(DEFAULT_MTU, min(self.mtu, p.mtu_max))
            self.irq(MTU_EXCHANGED, struct.pack("<HH", conn, p.mtu))
        self.later(10, run)
