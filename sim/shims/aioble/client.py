# Fake aioble.client: discovery, ClientService, ClientCharacteristic, ClientDescriptor.
# Notification semantics are the real library's: each notification "IRQ" goes through
# ClientCharacteristic._on_notify -> _on_notify_indicate, which appends to
# `_notify_queue`, a deque of length 1, so notified() only ever sees the latest one.
import struct
from collections import deque

import bluetooth

from .core import GattError, ThreadSafeFlag
from .device import DeviceConnection

_CCCD_UUID = 0x2902
_CCCD_NOTIFY = 1
_CCCD_INDICATE = 2

_FLAG_READ = 0x0002
_FLAG_WRITE_NO_RESPONSE = 0x0004
_FLAG_WRITE = 0x0008
_FLAG_NOTIFY = 0x0010
_FLAG_INDICATE = 0x0020


def _latest_only():
    try:
        return deque((), 1)
    except TypeError:  # pragma: no cover
        return deque(maxlen=1)


class ClientDiscover:
    # As in the real library the timeout is accepted but not implemented: a discovery on
    # a link that dies never finishes unless the caller bounds it (connection.timeout()).
    def __init__(self, connection, disc_type, parent, timeout_ms, *args):
        self._connection = connection
        self._queue = []
        self._status = None
        self._event = ThreadSafeFlag()
        self._disc_type = disc_type
        self._parent = parent
        self._timeout_ms = timeout_ms
        self._args = args

    async def _start(self):
        if self._connection._discover:
            raise ValueError("Discovery in progress")
        self._connection._discover = self
        self._disc_type._start_discovery(self._parent, *self._args)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._connection._discover is not self:
            await self._start()
        while True:
            while self._queue:
                return self._disc_type(self._parent, *self._queue.pop(0))
            if self._status is not None:
                self._connection._discover = None
                raise StopAsyncIteration
            await self._event.wait()

    @staticmethod
    def _discover_result(conn_handle, *args):
        connection = DeviceConnection._connected.get(conn_handle, None)
        if connection and connection._discover:
            connection._discover._queue.append(args)
            connection._discover._event.set()

    @staticmethod
    def _discover_done(conn_handle, status):
        connection = DeviceConnection._connected.get(conn_handle, None)
        if connection and connection._discover:
            connection._discover._status = status
            connection._discover._event.set()


class ClientService:
    def __init__(self, connection, start_handle, end_handle, uuid):
        self.connection = connection
        self._start_handle = start_handle
        self._end_handle = end_handle
        self.uuid = uuid

    def __str__(self):
        return "Service: %s %s %s" % (self._start_handle, self._end_handle, self.uuid)

    async def characteristic(self, uuid, timeout_ms=2000):
        result = None
        async for characteristic in self.characteristics(uuid, timeout_ms):
            if not result and characteristic.uuid == uuid:
                result = characteristic
        return result

    def characteristics(self, uuid=None, timeout_ms=2000):
        return ClientDiscover(self.connection, ClientCharacteristic, self, timeout_ms, uuid)

    @staticmethod
    def _start_discovery(connection, uuid=None):
        from . import sim

        sim._discover_services(connection._conn_handle, uuid)


class BaseClientCharacteristic:
    def _register_with_connection(self):
        self._connection()._characteristics[self._value_handle] = self

    @staticmethod
    def _find(conn_handle, value_handle):
        connection = DeviceConnection._connected.get(conn_handle, None)
        if connection:
            return connection._characteristics.get(value_handle, None)
        return None

    def _check(self, flag):
        if not (self.properties & flag):
            raise ValueError("Unsupported")

    async def read(self, timeout_ms=1000):
        self._check(_FLAG_READ)
        raise GattError(0x02)  # the simulated BMSes expose nothing readable

    async def write(self, data, response=False, timeout_ms=1000):
        from . import sim

        self._check(_FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE)
        if response is None:
            response = not (self.properties & _FLAG_WRITE_NO_RESPONSE)
        if response:
            self._register_with_connection()
            self._write_status = None
            self._write_event = self._write_event or ThreadSafeFlag()
        sim._gattc_write(self._connection()._conn_handle, self._value_handle, data, response)
        if response:
            with self._connection().timeout(timeout_ms):
                await self._write_event.wait()
                if self._write_status != 0:
                    raise GattError(self._write_status)

    @staticmethod
    def _write_done(conn_handle, value_handle, status):
        characteristic = BaseClientCharacteristic._find(conn_handle, value_handle)
        if characteristic and getattr(characteristic, "_write_event", None):
            characteristic._write_status = status
            characteristic._write_event.set()


class ClientCharacteristic(BaseClientCharacteristic):
    def __init__(self, service, end_handle, value_handle, properties, uuid):
        self.service = service
        self.connection = service.connection
        self._end_handle = end_handle if end_handle > value_handle else value_handle + 2
        self._value_handle = value_handle
        self.properties = properties
        self.uuid = uuid
        self._write_event = None
        self._write_status = None
        if properties & _FLAG_NOTIFY:
            self._notify_event = ThreadSafeFlag()
            self._notify_queue = _latest_only()
        if properties & _FLAG_INDICATE:
            self._indicate_event = ThreadSafeFlag()
            self._indicate_queue = _latest_only()

    def __str__(self):
        return "Characteristic: %s %s %s %s" % (self._end_handle, self._value_handle, self.properties, self.uuid)

    def _connection(self):
        return self.service.connection

    async def descriptor(self, uuid, timeout_ms=2000):
        result = None
        async for descriptor in self.descriptors(timeout_ms):
            if not result and descriptor.uuid == uuid:
                result = descriptor
        return result

    def descriptors(self, timeout_ms=2000):
        return ClientDiscover(self.connection, ClientDescriptor, self, timeout_ms)

    @staticmethod
    def _start_discovery(service, uuid=None):
        from . import sim

        sim._discover_characteristics(service.connection._conn_handle, service._start_handle, service._end_handle, uuid)

    async def _notified_indicated(self, queue, event, timeout_ms):
        self._register_with_connection()
        if len(queue) <= 1:
            with self._connection().timeout(timeout_ms):
                await event.wait()
        return queue.popleft()

    async def notified(self, timeout_ms=None):
        self._check(_FLAG_NOTIFY)
        return await self._notified_indicated(self._notify_queue, self._notify_event, timeout_ms)

    async def indicated(self, timeout_ms=None):
        self._check(_FLAG_INDICATE)
        return await self._notified_indicated(self._indicate_queue, self._indicate_event, timeout_ms)

    def _on_notify_indicate(self, queue, event, data):
        wake = len(queue) == 0
        queue.append(data)  # replaces the previous item: the deque holds one
        if wake:
            event.set()

    @staticmethod
    def _on_notify(conn_handle, value_handle, notify_data):
        characteristic = ClientCharacteristic._find(conn_handle, value_handle)
        if characteristic:
            characteristic._on_notify_indicate(characteristic._notify_queue, characteristic._notify_event, notify_data)
            return True
        return False

    async def subscribe(self, notify=True, indicate=False):
        self._register_with_connection()
        cccd = await self.descriptor(bluetooth.UUID(_CCCD_UUID))
        if cccd:
            await cccd.write(struct.pack("<H", _CCCD_NOTIFY * notify + _CCCD_INDICATE * indicate))
        else:
            raise ValueError("CCCD not found")


class ClientDescriptor(BaseClientCharacteristic):
    def __init__(self, characteristic, dsc_handle, uuid):
        self.characteristic = characteristic
        self.uuid = uuid
        self._value_handle = dsc_handle
        self.properties = _FLAG_READ | _FLAG_WRITE_NO_RESPONSE
        self._write_event = None
        self._write_status = None

    def _connection(self):
        return self.characteristic.service.connection

    @staticmethod
    def _start_discovery(characteristic, uuid=None):
        from . import sim

        sim._discover_descriptors(characteristic._connection()._conn_handle, characteristic._value_handle, characteristic._end_handle)
