# Fake aioble.device: Device, DeviceConnection, DeviceTimeout, with the real library's
# semantics: operations wrapped in `connection.timeout(ms)` end in asyncio.TimeoutError
# or, when the link drops, DeviceDisconnectedError; a Device keeps its (possibly dead)
# DeviceConnection after a failed connect, as the real one does.
import asyncio
import binascii

from .core import ThreadSafeFlag, current_task, log_error, sleep_ms


class DeviceDisconnectedError(Exception):
    pass


class DeviceTimeout:
    def __init__(self, connection, timeout_ms):
        self._connection = connection
        self._timeout_ms = timeout_ms
        self._timeout_task = None
        self._task = current_task()
        if connection:
            connection._timeouts.append(self)

    async def _timeout_sleep(self):
        try:
            await sleep_ms(self._timeout_ms)
        except asyncio.CancelledError:
            return
        self._timeout_task = None
        self._task.cancel()

    def __enter__(self):
        if self._timeout_ms:
            self._timeout_task = asyncio.create_task(self._timeout_sleep())

    def __exit__(self, exc_type, exc_val, exc_tb):
        if self._connection:
            self._connection._timeouts.remove(self)
        try:
            if exc_type == asyncio.CancelledError:
                if self._timeout_ms and self._timeout_task is None:
                    _uncancel(self._task)
                    raise asyncio.TimeoutError
                if self._connection and self._connection._conn_handle is None:
                    _uncancel(self._task)
                    raise DeviceDisconnectedError
        finally:
            if self._timeout_task:
                self._timeout_task.cancel()


def _uncancel(task):
    # CPython >= 3.11 remembers a cancel() request; MicroPython has no such counter.
    if hasattr(task, "uncancel"):
        task.uncancel()


class Device:
    def __init__(self, addr_type, addr):
        self.addr_type = addr_type
        self.addr = bytes(addr) if len(addr) == 6 else binascii.unhexlify(addr.replace(":", ""))
        if len(self.addr) != 6:
            raise ValueError("address must be 6 bytes")
        self._connection = None

    def __eq__(self, rhs):
        return self.addr_type == rhs.addr_type and self.addr == rhs.addr

    def __hash__(self):
        return hash((self.addr_type, self.addr))

    def __str__(self):
        return "Device(%s, %s%s)" % (
            "ADDR_PUBLIC" if self.addr_type == 0 else "ADDR_RANDOM",
            self.addr_hex(),
            ", CONNECTED" if self._connection else "",
        )

    def addr_hex(self):
        return ":".join("%02x" % b for b in self.addr)

    async def connect(self, timeout_ms=10000):
        if self._connection:
            return self._connection
        from .central import _connect

        await _connect(DeviceConnection(self), timeout_ms)
        self._connection._run_task()
        return self._connection


class DeviceConnection:
    _connected = {}

    def __init__(self, device):
        self.device = device
        device._connection = self
        self.encrypted = False
        self.authenticated = False
        self.bonded = False
        self.key_size = False
        self.mtu = None
        self._conn_handle = None
        self._event = None
        self._mtu_event = None
        self._discover = None
        self._characteristics = {}
        self._task = None
        self._timeouts = []
        self._peer = None  # the simulated peripheral (fake only)

    async def device_task(self):
        await self._event.wait()
        del DeviceConnection._connected[self._conn_handle]
        self._conn_handle = None
        self.device._connection = None
        for t in self._timeouts:
            t._task.cancel()

    def _run_task(self):
        self._event = self._event or ThreadSafeFlag()
        self._task = asyncio.create_task(self.device_task())

    async def disconnect(self, timeout_ms=2000):
        await self.disconnected(timeout_ms, disconnect=True)

    async def disconnected(self, timeout_ms=60000, disconnect=False):
        if not self.is_connected():
            return
        if disconnect:
            from . import sim

            try:
                sim._gap_disconnect(self._conn_handle)
            except OSError as e:
                log_error("Disconnect", e)
        with DeviceTimeout(None, timeout_ms):
            # CPython would cancel the awaited task along with us; MicroPython does not.
            await (asyncio.shield(self._task) if hasattr(asyncio, "shield") else self._task)

    async def service(self, uuid, timeout_ms=2000):
        result = None
        async for service in self.services(uuid, timeout_ms):
            if not result and service.uuid == uuid:
                result = service
        return result

    def services(self, uuid=None, timeout_ms=2000):
        from .client import ClientDiscover, ClientService

        return ClientDiscover(self, ClientService, self, timeout_ms, uuid)

    def is_connected(self):
        return self._conn_handle is not None

    def timeout(self, timeout_ms):
        return DeviceTimeout(self, timeout_ms)

    async def exchange_mtu(self, mtu=None, timeout_ms=1000):
        if not self.is_connected():
            raise ValueError("Not connected")
        from . import sim
        from .core import ble

        if mtu:
            ble.config(mtu=mtu)
        self._mtu_event = self._mtu_event or ThreadSafeFlag()
        sim._exchange_mtu(self._conn_handle)
        with self.timeout(timeout_ms):
            await self._mtu_event.wait()
        return self.mtu

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb):
        await self.disconnect()
