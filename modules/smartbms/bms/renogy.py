# Renogy BT battery codec (BT-TH-* modules): Modbus RTU, device id 0x30, function 0x03 (pure).
#   request  30 03 <reg u16> <count u16> <crc16/modbus LE>
#   response 30 03 <N> <registers, big-endian> <crc LE>;  error 30 83 <code> <crc LE>
# Blocks (registers in decimal), told apart by N:
#   5000 x34 (N 68): cell count, 16 cells 0.1 V, sensor count, 16 cell temperatures s16 0.1 degC
#   5042 x7  (N 14): current s16 0.01 A (+ = charging), voltage 0.1 V, remaining u32 mAh,
#                    full u32 mAh, cycles
#   5100 x8  (N 16): alarm words 5100-5105, status 1 (5106: charge/discharge MOSFET and
#                    protection bits), status 2 (5107)
# SOC is not sent: it is remaining / full. The Renogy Pro (RNGRBP*/RNGC*) scales the current
# by 0.1 A and answers from another address: not this driver.
from smartbms.bms import framing
from smartbms.bms import driver
from smartbms.bms.reading import BMSError, sized

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


NAME = "renogy"
WRITE_SERVICE_UUID = const(0xFFD0)
WRITE_UUID = const(0xFFD1)
NOTIFY_SERVICE_UUID = const(0xFFF0)  # the notify characteristic is in another service
NOTIFY_UUID = const(0xFFF1)

DEVICE_ID = const(0x30)
_READ = const(0x03)
_CELLS_N = const(68)
_VALUES_N = const(14)
_ALARMS_N = const(16)
_MAX_CELLS = const(16)

# Alarm registers 5100-5105 (cell voltage 5100-5101, cell temperature 5102-5103, other
# 5104-5105: aiobmsble counts any set bit as a problem). No source documents the single
# bits: they are named by register and bit (renogy_alarm_5100_0 ...).
# Status 1 (5106): bit1 charge MOSFET on, bit2 discharge MOSFET on, bit3 powered by the
# module (a state); the other bits are the pack's protections (Renogy's Modbus table v1.7,
# as Grmume/renogy-smart-battery reads it; aiobmsble counts every bit but 1-3 as a problem),
# two levels for each over-current. None = no fault.
_STATUS1_FAULTS = (
    "short_circuit", None, None, None,
    "charge_overcurrent", "discharge_overcurrent", "pack_overvoltage", "cell_undervoltage",
    "cell_overvoltage", "charge_overcurrent", "discharge_overcurrent", "discharge_undertemp",
    "discharge_overtemp", "charge_undertemp", "charge_overtemp", "pack_undervoltage",
)


crc16 = framing.crc16_modbus


def read_request(reg, count):
    if not 0 <= reg <= 0xFFFF or not 1 <= count <= 0x7D:
        raise BMSError("bad Renogy request")
    return framing.modbus_read(DEVICE_ID, _READ, reg, count)


READ_CELLS = read_request(5000, _CELLS_N >> 1)
READ_VALUES = read_request(5042, _VALUES_N >> 1)
READ_ALARMS = read_request(5100, _ALARMS_N >> 1)


class Assembler(framing.Assembler):
    START = DEVICE_ID
    HEAD = 3
    SIZE = 0xFA + 5

    def _frame_len(self, buf):
        if buf[1] == _READ | 0x80:
            return 5
        if buf[1] != _READ or buf[2] & 1:
            return 0
        return buf[2] + 5

    def _check(self, buf, n):
        return crc16(buf, 0, n - 2) == buf[n - 2] | (buf[n - 1] << 8)

    def _restarts(self, src, i, end):
        return end - i >= 3 and src[i] == DEVICE_ID and src[i + 1] == _READ and \
            src[i + 2] in (_CELLS_N, _VALUES_N, _ALARMS_N)


def _validate(frame):
    n = len(frame)
    if n < 5 or frame[0] != DEVICE_ID or frame[1] & 0x7F != _READ:
        raise BMSError("not a Renogy frame")
    if crc16(frame, 0, n - 2) != frame[n - 2] | (frame[n - 1] << 8):
        raise BMSError("Renogy CRC mismatch")
    if frame[1] & 0x80:
        raise BMSError("Renogy error 0x%02X for a register read" % frame[2])
    if n != frame[2] + 5:
        raise BMSError("Renogy frame length %d does not match its header (%d)" % (n, frame[2] + 5))
    return frame[2]


def _reg(frame, r):
    return (frame[3 + 2 * r] << 8) | frame[4 + 2 * r]


def _sreg(frame, r):
    v = _reg(frame, r)
    return v - 0x10000 if v & 0x8000 else v


def decode(frame, reading):
    """Store one block (cells, values or alarms) into `reading`; True if it did. Other
    valid responses (serial, model text) return False; a bad frame raises BMSError."""
    size = _validate(frame)
    if size == _CELLS_N:
        ncell = _reg(frame, 0)
        ntemp = _reg(frame, 17)
        if ncell > _MAX_CELLS or ntemp > _MAX_CELLS:
            raise BMSError("Renogy block claims %d cells / %d sensors" % (ncell, ntemp))
        cells = sized(reading.cells, ncell)
        for i in range(ncell):
            cells[i] = _reg(frame, 1 + i) / 10
        reading.cells = cells
        temps = sized(reading.temperatures, ntemp)
        for i in range(ntemp):
            temps[i] = _sreg(frame, 18 + i) / 10
        reading.temperatures = temps
    elif size == _VALUES_N:
        remaining = (_reg(frame, 2) << 16) | _reg(frame, 3)
        full = (_reg(frame, 4) << 16) | _reg(frame, 5)
        reading.current = _sreg(frame, 0) / 100
        reading.voltage = _reg(frame, 1) / 10
        reading.remaining_ah = remaining / 1000
        reading.nominal_ah = full / 1000
        reading.cycles = _reg(frame, 6)
        # not sent: derived (0.1 %, at most 100), unknown without a full capacity
        soc = None
        if full:
            soc = round(remaining * 100 / full, 1)
            if soc > 100:
                soc = 100.0
        reading.soc = soc
    elif size == _ALARMS_N:
        _decode_alarms(frame, reading)
    else:
        return False
    return True


def _decode_alarms(frame, reading):
    status = frame[3 + 2 * 6 + 1]  # low byte of 5106
    reading.charge_fet = bool(status & 2)
    reading.discharge_fet = bool(status & 4)
    faults = sized(reading.faults, 0)
    reading.faults = faults
    v = _reg(frame, 6)
    for bit in range(16):
        name = _STATUS1_FAULTS[bit]
        if name is not None and v & (1 << bit) and name not in faults:
            faults.append(name)
    for k in range(6):
        v = _reg(frame, k)
        if v:
            for bit in range(16):
                if v & (1 << bit):
                    faults.append("renogy_alarm_%d_%d" % (5100 + k, bit))


def info(frame):
    """A small dict for a valid response without measurements, else None."""
    size = _validate(frame)
    if size in (_CELLS_N, _VALUES_N, _ALARMS_N):
        return None
    text = "".join(chr(b) for b in frame[3:3 + size] if 32 <= b < 127).strip()
    return {"type": "response", "bytes": size, "text": text}


class Driver(driver.Driver):
    name = NAME
    # The link finds the write characteristic in service_uuids and the notify one in
    # notify_service_uuid: a Renogy module splits them over two services.
    service_uuids = (WRITE_SERVICE_UUID,)
    notify_service_uuid = NOTIFY_SERVICE_UUID
    notify_uuid = NOTIFY_UUID
    write_uuid = WRITE_UUID
    requests = (READ_VALUES, READ_CELLS, READ_ALARMS)
    new_assembler = Assembler
    decode = staticmethod(decode)
    info = staticmethod(info)
    # charge_fet_request: None (the base): no MOSFET command is known for this family
