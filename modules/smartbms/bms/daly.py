# Daly H/K/M/S-series BMS codec, "D2" Modbus-like protocol (pure). Big-endian registers:
#   request  D2 03 <addr u16> <count u16> <crc16/modbus LE>
#   response D2 03 <nbytes> <registers> <crc16/modbus LE>
# Status registers: 0x00-0x1F cells mV, 0x20-0x27 temperatures raw-40 degC, 0x28 voltage
# 0.1 V, 0x29 current (raw-30000)*0.1 A (+ = charging), 0x2A SOC 0.1 %, 0x30 remaining
# 0.1 Ah, 0x31 cell count, 0x32 sensor count, 0x33 cycles, 0x35/0x36 charge/discharge MOSFET,
# 0x3A-0x3D alarm bytes.
from smartbms.bms import framing
from smartbms.bms import driver
from smartbms.bms.reading import BMSError, sized

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


NAME = "daly"
SERVICE_UUID = const(0xFFF0)
NOTIFY_UUID = const(0xFFF1)
WRITE_UUID = const(0xFFF2)

_START = const(0xD2)
_READ = const(0x03)
STATUS_REGS = const(62)
STATUS_REGS_LONG = const(80)
_MAX_BYTES = const(2 * STATUS_REGS_LONG)
_MAX_CELLS = const(32)
_MAX_TEMPS = const(8)

# Alarm bytes (registers 0x3A-0x3D, in order) follow Daly's fault record; both alarm
# levels of a condition map to one name, the names every family shares where they have one
# (smartbms.bms.reading: an overheated MOSFET stops charging on a Daly too). None = reserved.
_ALARMS = (
    ("cell_overvoltage", "cell_overvoltage", "cell_undervoltage", "cell_undervoltage",
     "pack_overvoltage", "pack_overvoltage", "pack_undervoltage", "pack_undervoltage"),
    ("charge_overtemp", "charge_overtemp", "charge_undertemp", "charge_undertemp",
     "discharge_overtemp", "discharge_overtemp", "discharge_undertemp", "discharge_undertemp"),
    ("charge_overcurrent", "charge_overcurrent", "discharge_overcurrent",
     "discharge_overcurrent", "soc_high", "soc_high", "soc_low", "soc_low"),
    ("cell_imbalance", "cell_imbalance", "temp_imbalance", "temp_imbalance",
     None, None, None, None),
    ("mosfet_overtemp", "mosfet_overtemp", "mos_sensor_error", "mos_sensor_error",
     "mosfet_stuck", "mosfet_stuck", "mosfet_open", "mosfet_open"),
    ("afe_error", "cell_sense_error", "temp_sensor_error", "eeprom_error", "rtc_error",
     "precharge_failed", "comm_error", "internal_comm_error"),
    ("current_sensor_error", "voltage_sense_error", "short_circuit", "charge_lockout",
     None, None, None, None),
    (None, None, None, None, None, None, None, None),
)


crc16 = framing.crc16_modbus


def read_request(addr, count):
    """A register read request."""
    if not 0 <= addr <= 0xFFFF or not 1 <= count <= 0x7F:
        raise BMSError("bad Daly read request")
    return framing.modbus_read(_START, _READ, addr, count)


READ_STATUS = read_request(0, STATUS_REGS)
READ_STATUS_LONG = read_request(0, STATUS_REGS_LONG)


class Assembler(framing.Assembler):
    START = _START
    HEAD = 3
    SIZE = _MAX_BYTES + 5

    def _frame_len(self, buf):
        if buf[1] != _READ or buf[2] & 1:
            return 0
        return buf[2] + 5

    def _check(self, buf, n):
        return crc16(buf, 0, n - 2) == buf[n - 2] | (buf[n - 1] << 8)

    def _restarts(self, src, i, end):
        return end - i >= 3 and src[i] == _START and src[i + 1] == _READ and not src[i + 2] & 1


def _validate(frame):
    n = len(frame)
    if n < 5 or frame[0] != _START or frame[1] != _READ:
        raise BMSError("not a Daly frame")
    if n != frame[2] + 5:
        raise BMSError("Daly frame length %d does not match its header (%d)" % (n, frame[2] + 5))
    if crc16(frame, 0, n - 2) != frame[n - 2] | (frame[n - 1] << 8):
        raise BMSError("Daly CRC mismatch")
    return frame[2]


def _reg(frame, r):
    return (frame[3 + 2 * r] << 8) | frame[4 + 2 * r]


def decode(frame, reading):
    """Store a status response (62 or 80 registers) into `reading`; True if it did. Other
    valid responses return False; a bad frame raises BMSError."""
    nbytes = _validate(frame)
    if nbytes < 2 * STATUS_REGS:
        return False
    ncells = _reg(frame, 0x31)
    ntemps = _reg(frame, 0x32)
    if ncells > _MAX_CELLS or ntemps > _MAX_TEMPS:
        raise BMSError("Daly status claims %d cells / %d sensors" % (ncells, ntemps))
    cells = sized(reading.cells, ncells)
    for i in range(ncells):
        cells[i] = _reg(frame, i) / 1000
    reading.cells = cells
    temps = sized(reading.temperatures, ntemps)
    for i in range(ntemps):
        temps[i] = _reg(frame, 0x20 + i) - 40
    reading.temperatures = temps
    reading.voltage = _reg(frame, 0x28) / 10
    reading.current = (_reg(frame, 0x29) - 30000) / 10
    reading.soc = _reg(frame, 0x2A) / 10
    reading.remaining_ah = _reg(frame, 0x30) / 10
    reading.cycles = _reg(frame, 0x33)
    reading.charge_fet = _reg(frame, 0x35) != 0
    reading.discharge_fet = _reg(frame, 0x36) != 0
    faults = sized(reading.faults, 0)
    reading.faults = faults
    base = 3 + 2 * 0x3A
    for k in range(8):
        b = frame[base + k]
        if not b:
            continue
        names = _ALARMS[k]
        for bit in range(8):
            if b & (1 << bit):
                name = names[bit] or "daly_alarm_%d_%d" % (k, bit)
                if name not in faults:
                    faults.append(name)
    return True


def info(frame):
    """A small dict for a valid response without measurements, else None."""
    nbytes = _validate(frame)
    if nbytes >= 2 * STATUS_REGS:
        return None
    return {"type": "response", "bytes": nbytes, "data": bytes(frame[3:3 + nbytes]).hex()}


class Driver(driver.Driver):
    name = NAME
    service_uuids = (SERVICE_UUID,)
    notify_uuid = NOTIFY_UUID
    write_uuid = WRITE_UUID
    requests = (READ_STATUS,)
    new_assembler = Assembler
    decode = staticmethod(decode)
    info = staticmethod(info)
    # charge_fet_request: None (the base): the D2 protocol's MOSFET write register is not confirmed
