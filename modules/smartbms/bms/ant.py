# ANT BMS codec, 2021 protocol (pure). Frames, little-endian:
#   7E A1 <func> <addr u16> <len> <data len> <crc16/modbus LE over A1..data> AA 55
# Replies carry func | 0x10. Status (0x11): 6 permissions, 7 battery state, 8 sensors N,
# 9 cells C, 10/18/26 protection/warning/other bit masks (8 bytes each), 34 C cells mV,
# N temperatures degC, MOSFET and balancer degC; from k = 38 + 2C + 2N: voltage 0.01 V,
# current 0.1 A (+ = discharging on the wire), SOC %, SOH %, two MOSFET status bytes,
# capacities in 1e-6 Ah at k+12/k+16. The device-info reply (0x12) is 6 bytes longer than
# its len byte says (syssi): its CRC sits after len data bytes, AA 55 closes 6 bytes later.
from smartbms.bms import framing
from smartbms.bms import driver
from smartbms.bms.reading import BMSError, sized

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


NAME = "ant"
SERVICE_UUID = const(0xFFE0)
CHAR_UUID = const(0xFFE1)  # notify and write-without-response

FUNC_STATUS = const(0x01)
FUNC_DEVICE_INFO = const(0x02)
FUNC_WRITE = const(0x51)
REPLY_STATUS = const(0x11)
REPLY_DEVICE_INFO = const(0x12)

_START = const(0x7E)
_MAX_DATA = const(190)
_INFO_EXTRA = const(6)
_MAX_CELLS = const(32)
_MAX_TEMPS = const(8)
NO_SENSOR = const(-40)  # 0xFFD8: a sensor that is not connected (batmon-ha)

# MOSFET status codes (syssi's tables), 0 off and 1 on. Which byte is which is disputed:
# batmon-ha reads k+8 as discharge and k+9 as charge, syssi/aiobmsble the other way round.
# The captured full packs show `01 02`: "overcharge protection" only makes sense for the
# charge MOSFET, so k+9 is read as the charge MOSFET here. None = no fault (full, waiting,
# switched off by hand, reserved).
_CHARGE_STATUS = (
    None, None, "cell_overvoltage", "charge_overcurrent", None, "pack_overvoltage",
    "charge_overtemp", "mosfet_overtemp", "current_sensor_error", "cell_sense_error",
    "mosfet_overtemp", None, "mosfet_open", "mosfet_stuck", None, None,
    "cell_overvoltage", "charge_undertemp", "cell_imbalance", None, "afe_error",
)
_DISCHARGE_STATUS = (
    None, None, "cell_undervoltage", "discharge_overcurrent", "discharge_overcurrent",
    "pack_undervoltage", "discharge_overtemp", "mosfet_overtemp", "current_sensor_error",
    "cell_sense_error", "mosfet_overtemp", None, "short_circuit", "mosfet_stuck",
    "mosfet_open", None, "cell_undervoltage", "discharge_undertemp", "cell_imbalance",
    "afe_error",
)

crc16 = framing.crc16_modbus


def command(func, addr=0, value=0, data=b""):
    """7E A1 func addr(LE) len|value data crc AA 55: with `data`, the len byte is its
    length; without, `value` goes in that byte (the status request sends 0xBE there)."""
    n = len(data)
    if not 0 <= func <= 0xFF or not 0 <= addr <= 0xFFFF or not 0 <= value <= 0xFF or n > _MAX_DATA:
        raise BMSError("bad ANT command")
    out = bytearray(n + 10)
    out[0] = _START
    out[1] = 0xA1
    out[2] = func
    out[3] = addr & 0xFF
    out[4] = addr >> 8
    out[5] = n if n else value
    out[6:6 + n] = data
    c = crc16(out, 1, 6 + n)
    out[6 + n] = c & 0xFF
    out[7 + n] = c >> 8
    out[8 + n] = 0xAA
    out[9 + n] = 0x55
    return bytes(out)


READ_STATUS = command(FUNC_STATUS, 0, 0xBE)
READ_DEVICE_INFO = command(FUNC_DEVICE_INFO, 0x026C, 0x20)


def charge_request(on):
    """Register writes 0x0006 (charge MOSFET on) / 0x0004 (off), as syssi's switches.
    Some firmware wants the password (func 0x23) first."""
    return command(FUNC_WRITE, 0x0006 if on else 0x0004, 0)


def _frame_len(func, size):
    return size + 10 + (_INFO_EXTRA if func == REPLY_DEVICE_INFO else 0)


def _crc_ok(buf, n):
    at = 6 + buf[5]
    if at + 4 > n or buf[n - 2] != 0xAA or buf[n - 1] != 0x55:
        return False
    return crc16(buf, 1, at) == buf[at] | (buf[at + 1] << 8)


class Assembler(framing.Assembler):
    START = _START
    HEAD = 6
    SIZE = _MAX_DATA + 10 + _INFO_EXTRA

    def _frame_len(self, buf):
        if buf[1] != 0xA1 or not buf[2] & 0x10:
            return 0
        return _frame_len(buf[2], buf[5])

    def _check(self, buf, n):
        return _crc_ok(buf, n)

    def _restarts(self, src, i, end):
        return end - i >= 3 and src[i] == _START and src[i + 1] == 0xA1 and src[i + 2] & 0x10


def _validate(frame):
    n = len(frame)
    if n < 10 or frame[0] != _START or frame[1] != 0xA1:
        raise BMSError("not an ANT frame")
    want = _frame_len(frame[2], frame[5])
    if n != want:
        raise BMSError("ANT frame length %d does not match its header (%d)" % (n, want))
    if frame[n - 2] != 0xAA or frame[n - 1] != 0x55:
        raise BMSError("ANT frame does not end with AA 55")
    if not _crc_ok(frame, n):
        raise BMSError("ANT CRC mismatch")
    return frame[2]


_u16 = framing.le_u16
_s16 = framing.le_s16
_u32 = framing.le_u32


def decode(frame, reading):
    """Store a status frame into `reading`; True if it did. Other valid frames (device info,
    write acks) return False; a bad frame raises BMSError."""
    func = _validate(frame)
    if func != REPLY_STATUS:
        return False
    ntemp = frame[8]
    ncell = frame[9]
    if ncell > _MAX_CELLS or ntemp > _MAX_TEMPS:
        raise BMSError("ANT status claims %d cells / %d sensors" % (ncell, ntemp))
    k = 38 + 2 * ncell + 2 * ntemp
    if k + 20 > len(frame) - 4:
        raise BMSError("ANT status too short for %d cells and %d sensors" % (ncell, ntemp))
    cells = sized(reading.cells, ncell)
    for i in range(ncell):
        cells[i] = _u16(frame, 34 + 2 * i) / 1000
    reading.cells = cells
    temps = sized(reading.temperatures, ntemp)
    t0 = 34 + 2 * ncell
    for i in range(ntemp):
        temps[i] = _s16(frame, t0 + 2 * i)
    reading.temperatures = temps
    reading.voltage = _u16(frame, k) / 100
    reading.current = -_s16(frame, k + 2) / 10  # the wire counts discharge positive
    reading.soc = _u16(frame, k + 4)
    reading.nominal_ah = _u32(frame, k + 12) / 1000000
    reading.remaining_ah = _u32(frame, k + 16) / 1000000
    discharge = frame[k + 8]
    charge = frame[k + 9]
    reading.charge_fet = charge == 1
    reading.discharge_fet = discharge == 1
    faults = sized(reading.faults, 0)
    reading.faults = faults
    if charge < len(_CHARGE_STATUS):
        _add(faults, _CHARGE_STATUS[charge])
    if discharge < len(_DISCHARGE_STATUS):
        _add(faults, _DISCHARGE_STATUS[discharge])
    # The protection mask's bits are not documented: named by position, never charge-stopping.
    for byte in range(8):
        b = frame[10 + byte]
        if b:
            for bit in range(8):
                if b & (1 << bit):
                    faults.append("ant_protection_bit_%d" % (8 * byte + bit))
    return True


def _add(faults, name):
    if name is not None and name not in faults:
        faults.append(name)


def _text(frame, start, size):
    return "".join(chr(b) for b in frame[start:start + size] if 32 <= b < 127)


def info(frame):
    """A small dict for a valid frame without measurements, else None."""
    func = _validate(frame)
    if func == REPLY_STATUS:
        return None
    if func == REPLY_DEVICE_INFO and frame[5] >= 32:
        return {"type": "device_info", "hardware": _text(frame, 6, 16), "software": _text(frame, 22, 16)}
    return {"type": "reply", "func": func, "data": bytes(frame[6:6 + frame[5]]).hex()}


class Driver(driver.Driver):
    name = NAME
    service_uuids = (SERVICE_UUID,)
    notify_uuid = CHAR_UUID
    write_uuid = CHAR_UUID
    requests = (READ_STATUS,)
    new_assembler = Assembler
    decode = staticmethod(decode)
    info = staticmethod(info)
    charge_fet_request = staticmethod(charge_request)
