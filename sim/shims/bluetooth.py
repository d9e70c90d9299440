# Host-only stand-in for MicroPython's `bluetooth` module, at the level the real aioble
# uses it: `BLE` forwards every call to the simulated radio in the world process
# (sim/world/radio.py lists the NimBLE behaviours it models and where each comes from) and
# calls the registered irq handler with the events as the v1.28.0 NimBLE binding shapes
# them: tuples whose addresses and data are memoryviews valid only during the call.
# `UUID` compares and hashes like the C type (16-bit, 32-bit and 128-bit forms, copy from a
# UUID). Frozen into the host interpreter only; the firmware uses the real module.
import struct

import worldlink

FLAG_BROADCAST = 0x0001
FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020
FLAG_AUTHENTICATED_SIGNED_WRITE = 0x0040

_HEX = "0123456789abcdef"


def _parse_128(text):
    digits = text.replace("-", "").lower()
    if len(digits) != 32 or any(c not in _HEX for c in digits):
        raise ValueError("invalid UUID string: %r" % (text,))
    return bytes(int(digits[i:i + 2], 16) for i in range(30, -2, -2))  # stored little-endian


class UUID:
    """UUID(0xFF00), UUID("0000ff00-0000-1000-8000-00805f9b34fb") or UUID(b"\\x00\\xff")."""

    def __init__(self, value):
        if isinstance(value, UUID):
            self._b = value._b
        elif isinstance(value, int):
            if not 0 <= value <= 0xFFFF:
                raise ValueError("16-bit UUID out of range: %r" % (value,))
            self._b = bytes((value & 0xFF, value >> 8))
        elif isinstance(value, str):
            self._b = _parse_128(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            if len(value) not in (2, 4, 16):
                raise ValueError("UUID bytes must be 2, 4 or 16 long")
            self._b = bytes(value)
        else:
            raise TypeError("UUID from int, str or bytes")

    def __bytes__(self):
        return self._b

    def __len__(self):
        return len(self._b)

    def __eq__(self, other):
        return isinstance(other, UUID) and other._b == self._b

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self._b)

    def __repr__(self):
        if len(self._b) == 2:
            return "UUID(0x%04x)" % (self._b[0] | self._b[1] << 8)
        h = "".join("%02x" % x for x in reversed(self._b))
        if len(self._b) == 4:
            return "UUID(0x%s)" % h
        return "UUID('%s-%s-%s-%s-%s')" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])

    __str__ = __repr__


# errno codes of the world link -> this interpreter's errno values
try:
    import errno as _errno

    _ERRNO = (0, _errno.ENODEV, _errno.EINVAL, _errno.EALREADY, _errno.ENOTCONN)
except ImportError:  # pragma: no cover
    _ERRNO = (0, 19, 22, 114, 107)

_OP_ACTIVE, _OP_MTU, _OP_SCAN, _OP_CONNECT, _OP_DISCONNECT = 1, 2, 3, 4, 5
_OP_DISC_SVC, _OP_DISC_CHR, _OP_DISC_DSC, _OP_READ, _OP_WRITE, _OP_MTU_EXCHANGE = 6, 7, 8, 9, 10, 11
_DEFAULT_CONNECT_SCAN_MS = 2000  # modbluetooth.c MP_BLUETOOTH_CONNECT_DEFAULT_SCAN_DURATION_MS


def _uuid_arg(u):
    return b"" if u is None else UUID(u)._b


class BLE:
    """The one BLE controller (BLE() returns the same object, as on the device)."""

    _self = None

    def __new__(cls):
        if BLE._self is None:
            o = BLE._self = object.__new__(cls)
            o._irq = None
            o._config = {"mtu": 23, "mac": (0, b"\x24\x0a\xc4\x5b\xe1\x7e"), "gap_name": "MPY ESP32",
                         "rxbuf": 256, "addr_mode": 0}
            o._args = bytearray(16)
            link = worldlink.get()
            if link is not None:
                link.handlers[worldlink.EV_BLE] = o._on_event
        return BLE._self

    def _call(self, op, args=b"", data=None):
        link = worldlink.get()
        if link is None:
            raise OSError(_ERRNO[1])  # no radio at all: as a stack that is not active
        st, reply = link.call(op, args, data)
        if st:
            raise OSError(_ERRNO[st] if st < len(_ERRNO) else _ERRNO[2])
        return reply

    def active(self, value=None):
        if worldlink.get() is None:
            return False
        r = self._call(_OP_ACTIVE, bytes((2 if value is None else (1 if value else 0),)))
        return bool(r[0])

    def config(self, *names, **values):
        if names:
            if len(names) != 1 or names[0] not in self._config:
                raise ValueError("unknown config param")
            return self._config[names[0]]
        for k in values:
            v = values[k]
            if k not in self._config:
                raise ValueError("unknown config param")
            if k == "mtu":
                if not 23 <= v <= 517:
                    raise ValueError("mtu out of range")
                self._call(_OP_MTU, struct.pack("<H", v))
            self._config[k] = v

    def irq(self, handler):
        self._irq = handler

    def gap_scan(self, duration_ms, interval_us=1280000, window_us=11250, active=False):
        d = -1 if duration_ms is None else duration_ms
        self._call(_OP_SCAN, struct.pack("<iB", d, 1 if active else 0))

    def gap_connect(self, addr_type, addr=None, scan_duration_ms=_DEFAULT_CONNECT_SCAN_MS,
                    min_conn_interval_us=None, max_conn_interval_us=None):
        if addr_type is None:  # gap_connect(None): cancel the pending connect
            self._call(_OP_CONNECT, struct.pack("<B6si", 0xFF, bytes(6), 0))
            return
        if addr is None or len(addr) != 6:
            raise ValueError("invalid addr")
        if scan_duration_ms is None:
            scan_duration_ms = _DEFAULT_CONNECT_SCAN_MS
        self._call(_OP_CONNECT, struct.pack("<B6si", addr_type, bytes(addr), scan_duration_ms))

    def gap_disconnect(self, conn_handle):
        return bool(self._call(_OP_DISCONNECT, struct.pack("<H", conn_handle))[0])

    def gattc_discover_services(self, conn_handle, uuid=None):
        self._call(_OP_DISC_SVC, struct.pack("<H", conn_handle), _uuid_arg(uuid))

    def gattc_discover_characteristics(self, conn_handle, start_handle, end_handle, uuid=None):
        self._call(_OP_DISC_CHR, struct.pack("<HHH", conn_handle, start_handle, end_handle), _uuid_arg(uuid))

    def gattc_discover_descriptors(self, conn_handle, start_handle, end_handle):
        self._call(_OP_DISC_DSC, struct.pack("<HHH", conn_handle, start_handle, end_handle))

    def gattc_read(self, conn_handle, value_handle):
        self._call(_OP_READ, struct.pack("<HH", conn_handle, value_handle))

    def gattc_write(self, conn_handle, value_handle, data, mode=0):
        a = self._args
        struct.pack_into("<HHB", a, 0, conn_handle, value_handle, 1 if mode else 0)
        self._call(_OP_WRITE, memoryview(a)[:5], data)

    def gattc_exchange_mtu(self, conn_handle):
        self._call(_OP_MTU_EXCHANGE, struct.pack("<H", conn_handle))

    # ---- IRQs from the world, shaped as the NimBLE binding shapes them ----
    def _on_event(self, d):
        h = self._irq
        if h is None:
            return
        ev = d[0]
        d = d[1:]
        if ev == 5:  # SCAN_RESULT: addr_type, addr, adv_type, rssi, adv_data
            rssi = d[8] - 256 if d[8] > 127 else d[8]
            data = (d[0], d[1:7], d[7], rssi, d[9:])
        elif ev == 6:  # SCAN_DONE
            data = ()
        elif ev == 7 or ev == 8:  # PERIPHERAL_CONNECT / _DISCONNECT: conn, addr_type, addr
            data = (d[0] | d[1] << 8, d[2], d[3:9])
        elif ev == 9:  # SERVICE_RESULT: conn, start, end, uuid
            c, s, e = struct.unpack_from("<HHH", d)
            data = (c, s, e, UUID(d[6:]))
        elif ev == 11:  # CHARACTERISTIC_RESULT: conn, end, value handle, properties, uuid
            c, e, v, p = struct.unpack_from("<HHHB", d)
            data = (c, e, v, p, UUID(d[7:]))
        elif ev == 13:  # DESCRIPTOR_RESULT: conn, handle, uuid
            c, v = struct.unpack_from("<HH", d)
            data = (c, v, UUID(d[4:]))
        elif ev in (10, 12, 14, 21):  # *_DONE: conn, status; MTU_EXCHANGED: conn, mtu
            data = struct.unpack_from("<HH", d)
        elif ev == 16 or ev == 17:  # READ_DONE / WRITE_DONE: conn, handle, status
            data = struct.unpack_from("<HHH", d)
        elif ev in (15, 18, 19):  # READ_RESULT / NOTIFY / INDICATE: conn, handle, data
            data = (d[0] | d[1] << 8, d[2] | d[3] << 8, d[4:])
        else:
            return
        h(ev, data)
