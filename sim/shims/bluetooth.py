# Host-only stand-in for MicroPython's `bluetooth` module: the parts aioble users touch.
# `UUID` compares and hashes like the real one (16-bit, 32-bit and 128-bit forms); the
# FLAG_* constants are the GATT property bits. `BLE` only keeps the configuration a
# program sets (active, mtu, mac); the radio itself is simulated in `aioble.sim`.
# Never frozen: the firmware uses the real module.

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


class BLE:
    """Configuration holder (one controller, as on the device); the simulated radio is in aioble.sim."""

    _active = False
    _config = {"mtu": 23, "mac": (0, b"\x24\x0a\xc4\x00\x00\x01"), "gap_name": "smartbms"}
    _irq = None

    def active(self, value=None):
        if value is not None:
            BLE._active = bool(value)
        return BLE._active

    def config(self, *names, **values):
        if names:
            if len(names) != 1 or names[0] not in BLE._config:
                raise ValueError("unknown config param")
            return BLE._config[names[0]]
        for k in values:
            v = values[k]
            if k == "mtu" and not 23 <= v <= 517:
                raise ValueError("mtu out of range")
            BLE._config[k] = v

    def irq(self, handler):
        BLE._irq = handler
