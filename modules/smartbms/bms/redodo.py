# Redodo / LiTime / Power Queen BMS codec (pure). Frames:
#   request  00 00 04 01 13 55 AA <sum8>               (status)
#   reply    00 00 <len> 01 <cmd|80> 55 AA <status> <data> <sum8>, len + 4 bytes (105)
# sum8 = sum of every byte before it, modulo 256. Status data, little-endian, offsets from
# the frame start: 8 u32 measured pack mV, 12 u32 sum of cells mV, 16 16 x u16 cells mV
# (0 = none), 48 s32 current mA (+ = charging), 52/54/56 s16 battery, MOSFET, third sensor
# degC, 62/64 u16 remaining/full 0.01 Ah, 68 heater, 76 u32 protection, 80 u32 failure,
# 84 balancing, 88 state, 90 u16 SOC %, 92 u32 SOH %, 96 u32 cycles.
from smartbms.bms import framing
from smartbms.bms import driver
from smartbms.bms.reading import BMSError, sized

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


NAME = "redodo"
SERVICE_UUID = const(0xFFE0)
NOTIFY_UUID = const(0xFFE1)
WRITE_UUID = const(0xFFE2)  # FFE3 is the module's AT-command channel
MANUFACTURER_ID = const(0x585A)

CMD_STATUS = const(0x13)
STATUS_LEN = const(105)
_MAX_LEN = const(200)
_CELLS = const(16)

# The bits of the protection (76) and failure (80) words are not documented by any source:
# they are named by position (redodo_protection_bit_N, redodo_failure_bit_N).


def sum8(buf, end):
    s = 0
    for i in range(end):
        s += buf[i]
    return s & 0xFF


def request(cmd):
    """00 00 04 01 <cmd> 55 AA <sum8>."""
    if not 0 <= cmd <= 0x7F:
        raise BMSError("bad Redodo command")
    out = bytearray(b"\x00\x00\x04\x01\x00\x55\xaa\x00")
    out[4] = cmd
    out[7] = sum8(out, 7)
    return bytes(out)


READ_STATUS = request(CMD_STATUS)


def _is_head(src, i, end):
    return (end - i >= 7 and src[i] == 0 and src[i + 1] == 0 and src[i + 3] == 1
            and src[i + 4] & 0x80 and src[i + 5] == 0x55 and src[i + 6] == 0xAA)


class Assembler(framing.Assembler):
    START = 0
    HEAD = 7
    SIZE = _MAX_LEN + 4

    def _frame_len(self, buf):
        if not _is_head(buf, 0, 7):
            return 0
        return buf[2] + 4

    def _check(self, buf, n):
        return sum8(buf, n - 1) == buf[n - 1]

    def _restarts(self, src, i, end):
        return _is_head(src, i, end)


def _validate(frame):
    n = len(frame)
    if n < 9 or not _is_head(frame, 0, n):
        raise BMSError("not a Redodo frame")
    if n != frame[2] + 4:
        raise BMSError("Redodo frame length %d does not match its header (%d)" % (n, frame[2] + 4))
    if sum8(frame, n - 1) != frame[n - 1]:
        raise BMSError("Redodo checksum mismatch")
    if frame[7] != 0:
        raise BMSError("Redodo reported status 0x%02X for command 0x%02X" % (frame[7], frame[4] & 0x7F))
    return frame[4] & 0x7F


_u16 = framing.le_u16
_s16 = framing.le_s16
_u32 = framing.le_u32
_s32 = framing.le_s32


def decode(frame, reading):
    """Store a status reply into `reading`; True if it did. Other valid replies return
    False; a bad frame raises BMSError."""
    cmd = _validate(frame)
    if cmd != CMD_STATUS:
        return False
    if len(frame) < STATUS_LEN:
        raise BMSError("Redodo status too short (%d bytes)" % len(frame))
    count = 0
    for i in range(_CELLS):
        if _u16(frame, 16 + 2 * i):
            count += 1
    cells = sized(reading.cells, count)
    k = 0
    for i in range(_CELLS):
        v = _u16(frame, 16 + 2 * i)
        if v:
            cells[k] = v / 1000
            k += 1
    reading.cells = cells
    # The measured pack voltage (8), not the sum of the cells (12) that some apps show.
    reading.voltage = _u32(frame, 8) / 1000
    reading.current = _s32(frame, 48) / 1000
    temps = sized(reading.temperatures, 1)
    temps[0] = _s16(frame, 52)
    reading.temperatures = temps
    reading.remaining_ah = _u16(frame, 62) / 100
    reading.nominal_ah = _u16(frame, 64) / 100
    reading.soc = _u16(frame, 90)
    reading.cycles = _u32(frame, 96)
    faults = sized(reading.faults, 0)
    reading.faults = faults
    for k in range(4):
        b = frame[76 + k]
        if b:
            for bit in range(8):
                if b & (1 << bit):
                    faults.append("redodo_protection_bit_%d" % (8 * k + bit))
        b = frame[80 + k]
        if b:
            for bit in range(8):
                if b & (1 << bit):
                    faults.append("redodo_failure_bit_%d" % (8 * k + bit))
    return True


def info(frame):
    """A small dict for a valid reply without measurements, else None."""
    cmd = _validate(frame)
    if cmd == CMD_STATUS:
        return None
    return {"type": "reply", "command": cmd, "data": bytes(frame[8:len(frame) - 1]).hex()}


class Driver(driver.Driver):
    name = NAME
    service_uuids = (SERVICE_UUID,)
    notify_uuid = NOTIFY_UUID
    write_uuid = WRITE_UUID
    requests = (READ_STATUS,)
    new_assembler = Assembler
    decode = staticmethod(decode)
    info = staticmethod(info)
    # charge_fet_request: None (the base): no MOSFET command is known for this family
