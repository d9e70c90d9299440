# The simulated radio behind the fake aioble: peripherals that advertise, accept one
# central, expose GATT services, answer writes and send notifications. See the package
# docstring (aioble/__init__.py) for the API.
import asyncio
import struct
import time

import bluetooth

from .core import ble, sleep_ms

FLAG_READ = bluetooth.FLAG_READ
FLAG_WRITE_NO_RESPONSE = bluetooth.FLAG_WRITE_NO_RESPONSE
FLAG_WRITE = bluetooth.FLAG_WRITE
FLAG_NOTIFY = bluetooth.FLAG_NOTIFY
FLAG_INDICATE = bluetooth.FLAG_INDICATE

DEFAULT_MTU = 23
_CCCD = bluetooth.UUID(0x2902)

try:
    ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
except AttributeError:  # CPython

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b


def _uuid(u):
    return u if isinstance(u, bluetooth.UUID) else bluetooth.UUID(u)


def _mac_bytes(mac):
    if isinstance(mac, (bytes, bytearray)) and len(mac) == 6:
        return bytes(mac)
    parts = str(mac).split(":")
    if len(parts) != 6:
        raise ValueError("MAC must look like AA:BB:CC:DD:EE:FF")
    return bytes(int(p, 16) for p in parts)


class _Char:
    def __init__(self, uuid, properties, value_handle):
        self.uuid = uuid
        self.properties = properties
        self.value_handle = value_handle
        self.cccd_handle = value_handle + 1 if properties & (FLAG_NOTIFY | FLAG_INDICATE) else None
        self.subscribed = False


class Peripheral:
    """A simulated BLE peripheral (one BMS).

    services: {service_uuid: [(char_uuid, properties), ...]} (uuids as int or bluetooth.UUID;
    a uuid may repeat, as on JK modules with two FFE1 characteristics).
    on_write(char_uuid, data) is called (a little later, as a radio would) for every write;
    it answers by calling notify(char_uuid, payload)."""

    def __init__(self, mac, name=None, services=None, manufacturer=None, rssi=-60, on_write=None,
                 addr_type=0, mtu_max=247, advertise_when_connected=False):
        self.mac = ":".join("%02X" % b for b in _mac_bytes(mac))
        self.addr = _mac_bytes(mac)
        self.addr_type = addr_type
        self.name = name
        self.manufacturer = manufacturer  # (company_id, bytes) or None
        self.rssi = rssi
        self.on_write = on_write
        self.mtu_max = mtu_max
        self.advertise_when_connected = advertise_when_connected
        self.services = []  # [(uuid, start, end, [_Char])]
        handle = 1
        for s_uuid in (services or {}):
            start = handle
            chars = []
            for c_uuid, props in services[s_uuid]:
                handle += 1  # declaration
                chars.append(_Char(_uuid(c_uuid), props, handle + 1))
                handle += 2 if props & (FLAG_NOTIFY | FLAG_INDICATE) else 1
            self.services.append((_uuid(s_uuid), start, handle, chars))
            handle += 1
        # knobs
        self.silent = False  # stop answering writes and drop notifications
        self.response_delay_ms = 0  # real ms between a write and on_write
        self.connect_delay_ms = 0
        self.refuse_connections = False  # connects never complete (out of range, busy)
        self.fragment_gap_ms = 0  # 0: all fragments of a payload back to back (one burst)
        self.mtu_exchange_fails = False  # the peer never answers an MTU exchange
        self.drop_after_fragments = None  # drop the link after this many more fragments
        # what happened (for tests)
        self.writes = []  # [(char_uuid, bytes)], the last `writes_kept` of them
        self.writes_kept = 64
        self.connects = 0
        self.disconnects = 0
        self.fragments_sent = 0
        self.notifications_lost = 0  # notify() while nobody subscribed / not connected
        self.mtu = DEFAULT_MTU
        self._conn_handle = None
        self._outq = []
        self._sending = False

    @property
    def connected(self):
        return self._conn_handle is not None

    def _chars(self):
        for _, _, _, chars in self.services:
            for c in chars:
                yield c

    def _char_by_handle(self, handle):
        for c in self._chars():
            if c.value_handle == handle or c.cccd_handle == handle:
                return c
        return None

    def subscribed(self, char_uuid=None):
        """Value handles of the characteristics the central subscribed to."""
        u = None if char_uuid is None else _uuid(char_uuid)
        return [c.value_handle for c in self._chars() if c.subscribed and (u is None or c.uuid == u)]

    def adv_payloads(self):
        """(advertising data, scan response) as AD structures."""
        adv = bytearray(b"\x02\x01\x06")
        u16 = b"".join(s[0]._b for s in self.services if len(s[0]._b) == 2)
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
        """Send payload as notifications of MTU-3 bytes each. Returns False if it went nowhere."""
        if self.silent or not self.connected:
            self.notifications_lost += 1
            return False
        handles = self.subscribed(char_uuid)
        if not handles:
            self.notifications_lost += 1
            return False
        size = self.mtu - 3
        chunks = [bytes(payload[i:i + size]) for i in range(0, len(payload), size)] or [b""]
        if self.fragment_gap_ms:
            # One notification per connection event; later payloads queue behind.
            self._outq.append((self._conn_handle, handles[0], chunks))
            if not self._sending:
                self._sending = True
                asyncio.create_task(self._send_spaced())
        else:
            # Back to back: every fragment's IRQ runs before the client's task can.
            for chunk in chunks:
                if not self._send(handles[0], chunk):
                    break
        return True

    async def _send_spaced(self):
        try:
            while self._outq:
                conn_handle, handle, chunks = self._outq.pop(0)
                for chunk in chunks:
                    if conn_handle != self._conn_handle or not self._send(handle, chunk):
                        break
                    await sleep_ms(self.fragment_gap_ms)
        finally:
            self._sending = False

    def _send(self, handle, chunk):
        from .client import ClientCharacteristic

        if self._conn_handle is None:
            return False
        if self.drop_after_fragments is not None:
            if self.drop_after_fragments <= 0:
                self.drop_after_fragments = None
                self.drop_link()
                return False
            self.drop_after_fragments -= 1
        self.fragments_sent += 1
        ClientCharacteristic._on_notify(self._conn_handle, handle, bytes(chunk))
        return True

    def drop_link(self):
        """The peripheral (or the air) ends the connection: the central sees a disconnect."""
        if self._conn_handle is not None:
            _disconnect(self._conn_handle)


_peripherals = {}
_connections = {}  # conn_handle -> (peripheral, DeviceConnection) once connected
_next_handle = [1]


def add_peripheral(p):
    _peripherals[p.addr] = p
    return p


def remove_peripheral(mac):
    p = _peripherals.pop(_mac_bytes(mac), None)
    if p:
        p.drop_link()
    return p


def peripherals():
    return list(_peripherals.values())


def reset():
    """Forget every peripheral and connection (call at the start of each test)."""
    from .central import _connecting
    from .device import DeviceConnection
    from . import central

    _peripherals.clear()
    _connections.clear()
    DeviceConnection._connected.clear()
    _connecting.clear()
    central._active_scanner = None
    ble.gap_connect(None)
    ble.config(mtu=DEFAULT_MTU)


async def shutdown():
    """Drop every link and let the fake's tasks finish (end of a test: MicroPython's
    asyncio carries tasks left waiting into the next asyncio.run)."""
    from . import central

    for handle in list(_connections):
        _disconnect(handle)
    if central._active_scanner is not None:
        await central._active_scanner.cancel()
    for _ in range(5):
        await sleep_ms(0)
    ble.gap_connect(None)


def _start_connect(addr_type, addr):
    p = _peripherals.get(addr)
    if p is None or p.addr_type != addr_type or p.refuse_connections or p.connected:
        return  # nothing answers: the attempt only ends by timeout or cancel
    asyncio.create_task(_complete_connect(p))


async def _complete_connect(p):
    from .central import _on_peripheral_connect

    await sleep_ms(p.connect_delay_ms)
    if ble._pending_addr != p.addr or p.connected:
        return  # cancelled meanwhile
    ble._connect_done()
    handle = _next_handle[0]
    _next_handle[0] += 1
    if _on_peripheral_connect(handle, p.addr_type, p.addr, p):
        p._conn_handle = handle
        p.mtu = DEFAULT_MTU
        p.connects += 1
        _connections[handle] = p


def _peer(conn_handle):
    p = _connections.get(conn_handle)
    if p is None:
        raise OSError(128)  # ENOTCONN
    return p


def _disconnect(conn_handle):
    from .device import DeviceConnection

    p = _connections.pop(conn_handle, None)
    if p is not None:
        p._conn_handle = None
        p.disconnects += 1
        for c in p._chars():
            c.subscribed = False
    connection = DeviceConnection._connected.get(conn_handle)
    if connection is not None and connection._event:
        connection._event.set()


def _gap_disconnect(conn_handle):
    _peer(conn_handle)
    asyncio.create_task(_later(0, _disconnect, conn_handle))


async def _later(ms, fn, *args):
    await sleep_ms(ms)
    fn(*args)


def _exchange_mtu(conn_handle):
    p = _peer(conn_handle)
    if p.mtu_exchange_fails:
        return

    def done():
        from .device import DeviceConnection

        if p._conn_handle != conn_handle:
            return
        p.mtu = max(DEFAULT_MTU, min(ble.config("mtu"), p.mtu_max))
        connection = DeviceConnection._connected.get(conn_handle)
        if connection:
            connection.mtu = p.mtu
            if connection._mtu_event:
                connection._mtu_event.set()

    asyncio.create_task(_later(0, done))


def _discover_services(conn_handle, uuid):
    from .client import ClientDiscover

    p = _peer(conn_handle)

    def run():
        if p._conn_handle != conn_handle:
            return  # link gone: no result and no done, as on the device
        for s_uuid, start, end, _ in p.services:
            if uuid is None or uuid == s_uuid:
                ClientDiscover._discover_result(conn_handle, start, end, s_uuid)
        ClientDiscover._discover_done(conn_handle, 0)

    asyncio.create_task(_later(0, run))


def _discover_characteristics(conn_handle, start, end, uuid):
    from .client import ClientDiscover

    p = _peer(conn_handle)

    def run():
        if p._conn_handle != conn_handle:
            return
        for _, s_start, s_end, chars in p.services:
            if s_start >= start and s_end <= end:
                for c in chars:
                    if uuid is None or uuid == c.uuid:
                        ClientDiscover._discover_result(conn_handle, s_end, c.value_handle, c.properties, c.uuid)
        ClientDiscover._discover_done(conn_handle, 0)

    asyncio.create_task(_later(0, run))


def _discover_descriptors(conn_handle, value_handle, end_handle):
    from .client import ClientDiscover

    p = _peer(conn_handle)

    def run():
        if p._conn_handle != conn_handle:
            return
        c = p._char_by_handle(value_handle)
        if c is not None and c.cccd_handle is not None:
            ClientDiscover._discover_result(conn_handle, c.cccd_handle, _CCCD)
        ClientDiscover._discover_done(conn_handle, 0)

    asyncio.create_task(_later(0, run))


def _gattc_write(conn_handle, value_handle, data, response):
    from .client import BaseClientCharacteristic

    p = _peer(conn_handle)
    data = bytes(data)
    if len(data) > p.mtu - 3:
        raise OSError(22)  # longer than one ATT write at this MTU
    c = p._char_by_handle(value_handle)
    if c is None:
        raise OSError(22)
    if value_handle == c.cccd_handle:
        c.subscribed = bool(struct.unpack("<H", data)[0] & 1) if len(data) == 2 else False
    else:
        p.writes.append((c.uuid, data))
        if len(p.writes) > p.writes_kept:  # a long-running sim must not grow without bound
            del p.writes[0]
        if p.on_write and not p.silent:
            asyncio.create_task(_later(p.response_delay_ms, _deliver_write, p, conn_handle, c.uuid, data))
    if response:
        asyncio.create_task(_later(0, BaseClientCharacteristic._write_done, conn_handle, value_handle, 0))


def _deliver_write(p, conn_handle, uuid, data):
    if p._conn_handle == conn_handle and not p.silent:
        p.on_write(uuid, data)


async def _scan_task(scanner, duration_ms, active):
    try:
        t0 = ticks_ms()
        for p in list(_peripherals.values()):
            if p.connected and not p.advertise_when_connected:
                continue
            adv, resp = p.adv_payloads()
            scanner._irq_result(p.addr_type, p.addr, 0, p.rssi, adv)
            if active and resp:
                scanner._irq_result(p.addr_type, p.addr, 4, p.rssi, resp)
            await sleep_ms(0)
        left = duration_ms - _ticks_diff(ticks_ms(), t0)
        if left > 0:
            await sleep_ms(left)
    except asyncio.CancelledError:
        return
    scanner._irq_done()
