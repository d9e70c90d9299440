# Fake aioble.central: scan() and ScanResult (advertising payloads are real AD
# structures built by the simulated peripherals), and the connect path.
import asyncio
import struct

import bluetooth

from .core import ThreadSafeFlag, ble, ensure_active
from .device import Device, DeviceConnection, DeviceTimeout

_ADV_IND = 0
_ADV_SCAN_IND = 2
_ADV_NONCONN_IND = 3
_SCAN_RSP = 4

_ADV_TYPE_NAME = 0x09
_ADV_TYPE_SHORT_NAME = 0x08
_ADV_TYPE_UUID16 = (0x02, 0x03)
_ADV_TYPE_UUID32 = (0x04, 0x05)
_ADV_TYPE_UUID128 = (0x06, 0x07)
_ADV_TYPE_MANUFACTURER = 0xFF

_active_scanner = None
_connecting = set()


async def _cancel_pending():
    if _active_scanner:
        await _active_scanner.cancel()


async def _connect(connection, timeout_ms):
    device = connection.device
    if device in _connecting:
        return
    ensure_active()
    await _cancel_pending()
    _connecting.add(device)
    connection._event = connection._event or ThreadSafeFlag()
    try:
        with DeviceTimeout(None, timeout_ms):
            ble.gap_connect(device.addr_type, device.addr)
            await connection._event.wait()
            assert connection._conn_handle is not None
            DeviceConnection._connected[connection._conn_handle] = connection
    finally:
        _connecting.discard(device)


def _on_peripheral_connect(conn_handle, addr_type, addr, peer):
    # The "IRQ" for a completed connection: only a device still waiting gets it.
    for d in _connecting:
        if d.addr_type == addr_type and d.addr == addr:
            connection = d._connection
            connection._conn_handle = conn_handle
            connection._peer = peer
            connection._event.set()
            return True
    return False


class ScanResult:
    def __init__(self, device):
        self.device = device
        self.adv_data = None
        self.resp_data = None
        self.rssi = None
        self.connectable = False

    def _update(self, adv_type, rssi, adv_data):
        updated = False
        if rssi != self.rssi:
            self.rssi = rssi
            updated = True
        if adv_type in (_ADV_IND, _ADV_NONCONN_IND):
            if adv_data != self.adv_data:
                self.adv_data = adv_data
                self.connectable = adv_type == _ADV_IND
                updated = True
        elif adv_type == _ADV_SCAN_IND:
            if adv_data != self.adv_data and self.resp_data:
                updated = True
            self.adv_data = adv_data
        elif adv_type == _SCAN_RSP and adv_data:
            if adv_data != self.resp_data:
                self.resp_data = adv_data
                updated = True
        return updated

    def __str__(self):
        return "Scan result: %s %s" % (self.device, self.rssi)

    def _decode_field(self, *adv_type):
        for payload in (self.adv_data, self.resp_data):
            if not payload:
                continue
            i = 0
            while i + 1 < len(payload):
                if payload[i + 1] in adv_type:
                    yield payload[i + 2:i + payload[i] + 1]
                i += 1 + payload[i]

    def name(self):
        for n in self._decode_field(_ADV_TYPE_NAME, _ADV_TYPE_SHORT_NAME):
            return str(n, "utf-8") if n else ""

    def services(self):
        for size, codes in ((2, _ADV_TYPE_UUID16), (4, _ADV_TYPE_UUID32), (16, _ADV_TYPE_UUID128)):
            for u in self._decode_field(*codes):
                for i in range(0, len(u), size):
                    yield bluetooth.UUID(u[i:i + size])

    def manufacturer(self, filter=None):
        for u in self._decode_field(_ADV_TYPE_MANUFACTURER):
            if len(u) < 2:
                continue
            m = struct.unpack("<H", u[0:2])[0]
            if filter is None or m == filter:
                yield (m, u[2:])


class scan:
    """async with aioble.scan(duration_ms, active=True) as scanner: async for result in scanner: ..."""

    def __init__(self, duration_ms, interval_us=None, window_us=None, active=False):
        self._queue = []
        self._event = ThreadSafeFlag()
        self._done = False
        self._results = set()
        self._duration_ms = duration_ms
        self._active = active
        self._radio = None

    async def __aenter__(self):
        global _active_scanner
        from . import sim

        ensure_active()
        await _cancel_pending()
        _active_scanner = self
        self._radio = asyncio.create_task(sim._scan_task(self, self._duration_ms, self._active))
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb):
        if _active_scanner is self:
            await self.cancel()

    def __aiter__(self):
        return self

    async def __anext__(self):
        global _active_scanner
        if _active_scanner is not self:
            raise StopAsyncIteration
        while True:
            while self._queue:
                addr_type, addr, adv_type, rssi, adv_data = self._queue.pop(0)
                for r in self._results:
                    if r.device.addr_type == addr_type and r.device.addr == addr:
                        result = r
                        break
                else:
                    result = ScanResult(Device(addr_type, addr))
                    self._results.add(result)
                if result._update(adv_type, rssi, adv_data):
                    return result
            if self._done:
                _active_scanner = None
                raise StopAsyncIteration
            await self._event.wait()

    def _irq_result(self, addr_type, addr, adv_type, rssi, adv_data):
        self._queue.append((addr_type, bytes(addr), adv_type, rssi, bytes(adv_data)))
        self._event.set()

    def _irq_done(self):
        self._done = True
        self._event.set()

    async def cancel(self):
        global _active_scanner
        if self._done:
            return
        if self._radio:
            self._radio.cancel()
        self._irq_done()
        if _active_scanner is self:
            _active_scanner = None
