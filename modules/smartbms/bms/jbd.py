# JBD / Xiaoxiang / Overkill Solar BMS codec (pure). Frames, big-endian:
#   request  DD A5|5A <reg> <len> <data> <chk hi> <chk lo> 77
#   response DD <reg> <status 00 ok|80 error> <len> <data> <chk hi> <chk lo> 77
# chk = 0x10000 - sum(bytes 2 .. 3+len), i.e. over the byte before len, len and data.

from smartbms.bms import framing
from smartbms.bms import driver
from smartbms.bms.reading import BMSError, sized

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


NAME = "jbd"
SERVICE_UUID = const(0xFF00)
NOTIFY_UUID = const(0xFF01)
WRITE_UUID = const(0xFF02)
_ALT_SERVICE_UUID = const(0xFFF0)  # some JBD rebrands serve the same protocol on FFF0/FFF1/FFF2

_REG_BASIC = const(0x03)
_REG_CELLS = const(0x04)
_REG_MODEL = const(0x05)
_REG_MOSFET = const(0xE1)

_START = const(0xDD)
_END = const(0x77)
_READ = const(0xA5)
_WRITE = const(0x5A)
_STATUS_ERROR = const(0x80)
_MAX_DATA = const(128)
_BASIC_MIN = const(23)  # basic-info data up to and including the NTC count
_KNOWN_REGS = (_REG_BASIC, _REG_CELLS, _REG_MODEL, _REG_MOSFET)

# Protection bits 0..12 (protection status word of the basic info).
PROTECTION_FAULTS = (
    "cell_overvoltage",
    "cell_undervoltage",
    "pack_overvoltage",
    "pack_undervoltage",
    "charge_overtemp",
    "charge_undertemp",
    "discharge_overtemp",
    "discharge_undertemp",
    "charge_overcurrent",
    "discharge_overcurrent",
    "short_circuit",
    "afe_error",
    "mosfet_lock",
)


def checksum(buf, start, end):
    """JBD checksum of buf[start:end]."""
    s = 0
    for i in range(start, end):
        s += buf[i]
    return (0x10000 - s) & 0xFFFF


def request(reg, data=b"", write=False):
    """A read (or write) request for register `reg` with payload `data`."""
    if not 0 <= reg <= 0xFF or len(data) > _MAX_DATA:
        raise BMSError("bad JBD request")
    n = len(data)
    out = bytearray(n + 7)
    out[0] = _START
    out[1] = _WRITE if write else _READ
    out[2] = reg
    out[3] = n
    out[4:4 + n] = data
    c = checksum(out, 2, 4 + n)
    out[4 + n] = c >> 8
    out[5 + n] = c & 0xFF
    out[6 + n] = _END
    return bytes(out)


READ_BASIC = request(_REG_BASIC)
READ_CELLS = request(_REG_CELLS)
READ_MODEL = request(_REG_MODEL)


def mosfet_request(charge_on, discharge_on=True):
    """Register 0xE1 write: the payload is a *disable* mask (bit0 charge, bit1 discharge)."""
    mask = (0 if charge_on else 1) | (0 if discharge_on else 2)
    return request(_REG_MOSFET, bytes((0, mask)), write=True)


class Assembler(framing.Assembler):
    START = _START
    HEAD = 4
    SIZE = _MAX_DATA + 7

    def _frame_len(self, buf):
        if buf[2] != 0 and buf[2] != _STATUS_ERROR:
            return 0
        return buf[3] + 7

    def _check(self, buf, n):
        if buf[n - 1] != _END:
            return False
        return checksum(buf, 2, n - 3) == (buf[n - 3] << 8) | buf[n - 2]

    def _restarts(self, src, i, end):
        return (end - i >= 3 and src[i] == _START and src[i + 1] in _KNOWN_REGS
                and (src[i + 2] == 0 or src[i + 2] == _STATUS_ERROR))


def _validate(frame):
    """Check one whole response frame; returns its data length (the register is frame[1])."""
    n = len(frame)
    if n < 7 or frame[0] != _START:
        raise BMSError("not a JBD frame")
    size = frame[3]
    if n != size + 7:
        raise BMSError("JBD frame length %d does not match its header (%d)" % (n, size + 7))
    if frame[n - 1] != _END:
        raise BMSError("JBD frame does not end with 0x77")
    if checksum(frame, 2, n - 3) != (frame[n - 3] << 8) | frame[n - 2]:
        raise BMSError("JBD checksum mismatch")
    if frame[2] == _STATUS_ERROR:
        raise BMSError("JBD reported an error for register 0x%02X" % frame[1])
    if frame[2] != 0:
        raise BMSError("JBD status byte 0x%02X" % frame[2])
    return size


def decode(frame, reading):
    """Store a basic-info (0x03) or cells (0x04) frame into `reading`; True if it did.
    Other valid frames (model, write acks) return False; a bad frame raises BMSError."""
    size = _validate(frame)
    reg = frame[1]
    if reg == _REG_BASIC:
        _decode_basic(frame, size, reading)
        return True
    if reg == _REG_CELLS:
        if size & 1:
            raise BMSError("JBD cell frame has an odd length")
        cells = sized(reading.cells, size >> 1)
        for i in range(size >> 1):
            cells[i] = ((frame[4 + 2 * i] << 8) | frame[5 + 2 * i]) / 1000
        reading.cells = cells
        return True
    return False


def _u16(frame, i):
    return (frame[i] << 8) | frame[i + 1]


def _decode_basic(frame, size, reading):
    if size < _BASIC_MIN:
        raise BMSError("JBD basic info too short (%d bytes)" % size)
    ntc = frame[4 + 22]
    if size < _BASIC_MIN + 2 * ntc:
        raise BMSError("JBD basic info too short for %d temperature sensors" % ntc)
    # big-endian fields read by hand: struct.unpack_from would allocate a tuple per frame
    cur = _u16(frame, 6)
    if cur & 0x8000:
        cur -= 0x10000
    reading.voltage = _u16(frame, 4) / 100
    reading.current = cur / 100
    reading.remaining_ah = _u16(frame, 8) / 100
    reading.nominal_ah = _u16(frame, 10) / 100
    reading.cycles = _u16(frame, 12)
    protection = _u16(frame, 4 + 16)
    reading.soc = frame[4 + 19]
    fet = frame[4 + 20]
    reading.charge_fet = bool(fet & 1)
    reading.discharge_fet = bool(fet & 2)
    temps = sized(reading.temperatures, ntc)
    for i in range(ntc):
        temps[i] = (((frame[4 + 23 + 2 * i] << 8) | frame[4 + 24 + 2 * i]) - 2731) / 10
    reading.temperatures = temps
    faults = sized(reading.faults, 0)
    reading.faults = faults
    for bit in range(len(PROTECTION_FAULTS)):
        if protection & (1 << bit):
            faults.append(PROTECTION_FAULTS[bit])
    for bit in range(len(PROTECTION_FAULTS), 16):
        if protection & (1 << bit):
            faults.append("jbd_protection_bit_%d" % bit)


def decode_model(frame):
    """The model string of a register 0x05 response (printable ASCII only)."""
    size = _validate(frame)
    reg = frame[1]
    if reg != _REG_MODEL:
        raise BMSError("not a JBD model frame")
    return "".join(chr(b) for b in frame[4:4 + size] if 32 <= b < 127)


def info(frame):
    """A small dict for a valid frame that carries no measurements, else None."""
    size = _validate(frame)
    reg = frame[1]
    if reg == _REG_MODEL:
        return {"model": decode_model(frame)}
    if reg in (_REG_BASIC, _REG_CELLS):
        return None
    return {"register": reg, "ack": True, "data": bytes(frame[4:4 + size]).hex()}


class Driver(driver.Driver):
    name = NAME
    service_uuids = (SERVICE_UUID, _ALT_SERVICE_UUID)  # tried in this order
    notify_uuid = NOTIFY_UUID
    write_uuid = WRITE_UUID
    requests = (READ_BASIC, READ_CELLS)
    new_assembler = Assembler
    decode = staticmethod(decode)
    info = staticmethod(info)

    def charge_fet_request(self, on):
        """Bytes that switch the charge MOSFET (discharge stays on)."""
        return mosfet_request(on, True)
