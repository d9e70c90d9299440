# Seplos v3 (XZH) BMS codec: Modbus RTU over BLE (pure). Frames, registers big-endian:
#   request  <addr> <fn> <reg u16> <count u16> <crc16/modbus LE>   (fn 04 registers, 01 coils)
#   response <addr> <fn> <N> <data N> <crc LE>;  error <addr> <fn|80> <code> <crc LE>
# addr 0x00 = the whole system (EIA/EIB/EIC), 0x01..0x10 = one pack (PIA/PIB). Responses carry
# no register number: the block is told by (system or pack, fn, N), all distinct.
# One poll = EIA (system values) + EIC (alarms, FETs) + PIB of every pack (cells, sensors).
from smartbms.bms import framing
from smartbms.bms.reading import BMSError, sized

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


NAME = "seplos"
SERVICE_UUID = const(0xFFF0)
NOTIFY_UUID = const(0xFFF1)
WRITE_UUID = const(0xFFF2)

MAX_PACKS = const(16)
_READ_REGS = const(0x04)
_READ_COILS = const(0x01)
_EIA_N = const(52)  # 26 registers
_EIB_N = const(44)  # 22 registers (a 26-register EIB read is refused by some systems)
_EIC_N = const(10)  # 80 coils
_PIA_N = const(34)  # 17 registers
_PIB_N = const(52)  # 26 registers
_CELLS = const(16)  # cell registers per pack; 0 = no cell
_K0 = const(2731)  # 0.1 K of 0 degC (aiobmsble's offset)

# EIC bytes 1..9 (XZH tables TB02, TB03, TB04, TB05, TB16, TB06, -, -, TB15), one name per bit;
# None = an alarm level or state that is no fault (the protection level follows it).
_EIC_FAULTS = (
    (None, "cell_overvoltage", None, "cell_undervoltage",
     None, "pack_overvoltage", None, "pack_undervoltage"),
    (None, "charge_overtemp", None, "charge_undertemp",
     None, "discharge_overtemp", None, "discharge_undertemp"),
    (None, "ambient_overtemp", None, "ambient_undertemp",
     None, "mosfet_overtemp", None, None),  # bit6: low-temperature heating (a state)
    (None, "charge_overcurrent", "charge_overcurrent", None,
     "discharge_overcurrent", "discharge_overcurrent", "short_circuit", None),
    ("short_circuit", None, "charge_overcurrent", "discharge_overcurrent",
     None, None, None, None),  # latched protections
    (None, None, None, "soc_low", "cell_imbalance", None, None, None),
)
# Hard faults (byte 9, TB15): a pack that cannot measure or switch must not be charged.
_HARD_FAULTS = ("temp_sensor_error", "afe_error", "mosfet_stuck", "mosfet_stuck",
                "cell_imbalance", "cell_sense_error", "seplos_key_fault", "seplos_aerosol_alarm")

_ERRORS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
           4: "device failure", 6: "device busy"}

crc16 = framing.crc16_modbus


def read_request(addr, fn, reg, count):
    """A read request: fn 0x04 reads `count` registers, 0x01 `count` coils."""
    if not 0 <= addr <= MAX_PACKS or fn not in (_READ_REGS, _READ_COILS) \
            or not 0 <= reg <= 0xFFFF or not 1 <= count <= 0x7D0:
        raise BMSError("bad Seplos request")
    return framing.modbus_read(addr, fn, reg, count)


READ_EIA = read_request(0, _READ_REGS, 0x2000, _EIA_N >> 1)
READ_EIB = read_request(0, _READ_REGS, 0x2100, _EIB_N >> 1)
READ_EIC = read_request(0, _READ_COILS, 0x2200, _EIC_N * 8)


def read_pia(pack):
    return read_request(pack, _READ_REGS, 0x1000, _PIA_N >> 1)


def read_pib(pack):
    return read_request(pack, _READ_REGS, 0x1100, _PIB_N >> 1)


def _known(addr, fn, n):
    """True for the header of a block this codec reads."""
    if addr > MAX_PACKS:
        return False
    if fn == _READ_REGS:
        if addr == 0:
            return n == _EIA_N or n == _EIB_N
        return n == _PIA_N or n == _PIB_N
    if fn == _READ_COILS:
        return addr == 0 and n == _EIC_N
    return False


def _is_error(fn, code):
    return (fn == 0x84 or fn == 0x81) and 1 <= code <= 0x0B


class Assembler(framing.Assembler):
    START = 0
    START_LAST = MAX_PACKS  # a frame opens with its device address
    HEAD = 3
    SIZE = _EIA_N + 5

    def _frame_len(self, buf):
        if _is_error(buf[1], buf[2]):
            return 5
        if _known(buf[0], buf[1], buf[2]):
            return buf[2] + 5
        return 0

    def _check(self, buf, n):
        return crc16(buf, 0, n - 2) == buf[n - 2] | (buf[n - 1] << 8)

    def _restarts(self, src, i, end):
        # No start marker: only a notification that opens with a known header restarts.
        if end - i < 3 or src[i] > MAX_PACKS:
            return False
        return _known(src[i], src[i + 1], src[i + 2]) or _is_error(src[i + 1], src[i + 2])


def _validate(frame):
    """Check a whole frame; returns (addr, fn, N). Error replies raise BMSError."""
    n = len(frame)
    if n < 5 or frame[0] > MAX_PACKS:
        raise BMSError("not a Seplos frame")
    if crc16(frame, 0, n - 2) != frame[n - 2] | (frame[n - 1] << 8):
        raise BMSError("Seplos CRC mismatch")
    fn = frame[1]
    if fn & 0x80:
        if n != 5:
            raise BMSError("Seplos error reply of %d bytes" % n)
        code = frame[2]
        raise BMSError("Seplos error 0x%02X (%s) for function 0x%02X at address %d" % (
            code, _ERRORS.get(code, "reserved"), fn & 0x7F, frame[0]))
    if n != frame[2] + 5:
        raise BMSError("Seplos frame length %d does not match its header (%d)" % (n, frame[2] + 5))
    if not _known(frame[0], fn, frame[2]):
        raise BMSError("Seplos block of %d bytes (function 0x%02X, address %d) is not known" % (
            frame[2], fn, frame[0]))
    return frame[0], fn, frame[2]


def _u16(frame, i):
    return (frame[3 + i] << 8) | frame[4 + i]


def _s16(frame, i):
    v = _u16(frame, i)
    return v - 0x10000 if v & 0x8000 else v


def _u32(frame, i):
    # EIA puts the low word first; the top word of a real value stays small
    return _u16(frame, i) | (_u16(frame, i + 2) << 16)


def _s32(frame, i):
    hi = _u16(frame, i + 2)
    if hi & 0x8000:
        hi -= 0x10000
    return (hi << 16) | _u16(frame, i)


def pack_count(frame):
    """The number of packs an EIA frame reports (1..MAX_PACKS), None for other frames."""
    addr, fn, size = _validate(frame)
    if addr != 0 or fn != _READ_REGS or size != _EIA_N:
        return None
    n = _u16(frame, 44)
    return 1 if n < 1 else MAX_PACKS if n > MAX_PACKS else n


def decode(frame, reading):
    """Store one block into `reading`; True if it did (every known block carries
    measurements). EIA: voltage, current, soc, capacities, cycles; EIB: temperatures (the
    average); EIC: FETs and faults; PIA: one pack's values; PIB: cells and the four cell
    sensors, appended to the ones before it for pack 2 and up. Bad frames and error
    replies raise BMSError."""
    addr, fn, size = _validate(frame)
    if fn == _READ_COILS:
        _decode_eic(frame, reading)
    elif addr == 0 and size == _EIA_N:
        reading.voltage = _u32(frame, 0) / 100
        reading.current = _s32(frame, 4) / 10
        reading.remaining_ah = _u32(frame, 8) / 100
        reading.nominal_ah = _u32(frame, 12) / 100
        reading.cycles = _u16(frame, 46)
        reading.soc = _u16(frame, 48) / 10
    elif addr == 0:  # EIB: cell temperatures in 0.1 degC
        temps = sized(reading.temperatures, 1)
        temps[0] = _s16(frame, 20) / 10
        reading.temperatures = temps
    elif size == _PIA_N:
        reading.voltage = _u16(frame, 0) / 100
        reading.current = _s16(frame, 2) / 100
        reading.remaining_ah = _u16(frame, 4) / 100
        reading.nominal_ah = _u16(frame, 6) / 100
        reading.soc = _u16(frame, 10) / 10
        reading.cycles = _u16(frame, 14)
    else:
        _decode_pib(addr, frame, reading)
    return True


def _decode_pib(addr, frame, reading):
    count = 0
    for i in range(_CELLS):
        if _u16(frame, 2 * i):
            count += 1
    cells = reading.cells
    base = len(cells) if addr > 1 and type(cells) is list else 0
    cells = sized(cells, base + count)
    k = base
    for i in range(_CELLS):
        v = _u16(frame, 2 * i)
        if v:
            cells[k] = v / 1000
            k += 1
    reading.cells = cells
    temps = reading.temperatures
    base = len(temps) if addr > 1 and type(temps) is list else 0
    temps = sized(temps, base + 4)
    for i in range(4):
        temps[base + i] = (_u16(frame, 32 + 2 * i) - _K0) / 10
    reading.temperatures = temps


def _decode_eic(frame, reading):
    fets = frame[3 + 7]
    reading.discharge_fet = bool(fets & 1)
    reading.charge_fet = bool(fets & 2)
    faults = sized(reading.faults, 0)
    reading.faults = faults
    for k in range(6):
        b = frame[4 + k]
        if not b:
            continue
        names = _EIC_FAULTS[k]
        for bit in range(8):
            if b & (1 << bit):
                _add(faults, names[bit])
    b = frame[3 + 9]
    for bit in range(8):
        if b & (1 << bit):
            _add(faults, _HARD_FAULTS[bit])


def _add(faults, name):
    if name is not None and name not in faults:
        faults.append(name)


def info(frame):
    """Every valid Seplos frame carries measurements: None (bad frames raise BMSError)."""
    _validate(frame)
    return None


class Driver:
    name = NAME
    service_uuids = (SERVICE_UUID,)
    notify_uuid = NOTIFY_UUID
    write_uuid = WRITE_UUID
    streams = False

    def __init__(self):
        self.packs = 1
        self._reqs = None

    def start_requests(self):
        # The system block first: its pack count sizes the first poll.
        return (READ_EIA,)

    def poll_requests(self):
        """EIA, EIC, then each pack's PIB: one answer each, in this order (pack 1 first:
        its cells replace the list, later packs append)."""
        reqs = self._reqs
        if reqs is None or len(reqs) != 2 + self.packs:
            reqs = [READ_EIA, READ_EIC]
            for p in range(1, self.packs + 1):
                reqs.append(read_pib(p))
            reqs = tuple(reqs)
            self._reqs = reqs
        return reqs

    def new_assembler(self):
        return Assembler()

    def decode(self, frame, reading):
        ok = decode(frame, reading)
        if frame[0] == 0 and frame[1] == _READ_REGS and frame[2] == _EIA_N:
            n = _u16(frame, 44)
            self.packs = 1 if n < 1 else MAX_PACKS if n > MAX_PACKS else n
        return ok

    def info(self, frame):
        return info(frame)

    def charge_fet_request(self, on):
        # The XZH document lists FET control registers (0x1511/0x1515), but no source has
        # exercised them over BLE: not supported.
        return None
