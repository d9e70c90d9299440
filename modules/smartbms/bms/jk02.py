# JK BMS codec, JK02 protocol (pure). Frames: 55 AA EB 90 <type> <counter> ... sum8 at
# byte 299 (300 bytes; some modules send 320, the CRC stays at 299). Little-endian.
# Types: 0x01 settings, 0x02 cell info (streamed ~2/s once started), 0x03 device info.
# Two cell-info layouts: 24S (older firmware) and 32S (firmware >= 11), where the cell
# block sits 16 bytes later and the fields after it 32 bytes later.

from smartbms.bms import framing
from smartbms.bms.reading import BMSError, sized

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


SERVICE_UUID = const(0xFFE0)
CHAR_UUID = const(0xFFE1)

CMD_SETTINGS = const(0x96)  # also starts the cell-info stream
CMD_DEVICE_INFO = const(0x97)
CMD_CHARGE = const(0x1D)
CMD_DISCHARGE = const(0x1E)

TYPE_SETTINGS = const(0x01)
TYPE_CELL_INFO = const(0x02)
TYPE_DEVICE_INFO = const(0x03)

FRAME_LEN = const(300)
_CRC_AT = const(299)
NO_SENSOR = const(-2000)
_PRE = b"\x55\xaa\xeb\x90"
_AT = b"AT\r\n"

# Bits of the (big-endian) error word. Older JK tables named only some of them; later ones
# (the 32-bit word of newer firmware, read little-endian, is the same bytes) name them all.
# Bit 0x1000 is "cell over-voltage" in the old tables and "fully charged" in the new ones:
# either way charging must stop, so it stays cell_overvoltage. Both short-circuit bits are
# short_circuit (listed once), and a broken link to the analog front end is afe_error: a pack
# that cannot measure its cells must not be charged.
ERROR_FAULTS = (
    (0x0001, "charge_overtemp"),
    (0x0002, "charge_undertemp"),
    (0x0004, "afe_error"),
    (0x0008, "cell_undervoltage"),
    (0x0010, "pack_undervoltage"),
    (0x0020, "discharge_overcurrent"),
    (0x0040 | 0x8000, "short_circuit"),
    (0x0080, "discharge_overtemp"),
    (0x0100, "wire_resistance"),
    (0x0200, "mosfet_overtemp"),
    (0x0400, "cell_count_mismatch"),
    (0x0800, "current_sensor_error"),
    (0x1000, "cell_overvoltage"),
    (0x2000, "pack_overvoltage"),
    (0x4000, "charge_overcurrent"),
)


def sum8(buf, end):
    s = 0
    for i in range(end):
        s += buf[i]
    return s & 0xFF


def command(cmd, value=0, length=0):
    """A 20-byte JK02 command: AA 55 90 EB cmd len value(u32 LE) zeros sum8."""
    if not 0 <= cmd <= 0xFF or not 0 <= length <= 0xFF or not 0 <= value <= 0xFFFFFFFF:
        raise BMSError("bad JK command")
    out = bytearray(20)
    out[0:4] = b"\xaa\x55\x90\xeb"
    out[4] = cmd
    out[5] = length
    for k in range(4):
        out[6 + k] = (value >> (8 * k)) & 0xFF
    out[19] = sum8(out, 19)
    return bytes(out)


DEVICE_INFO = command(CMD_DEVICE_INFO)
SETTINGS = command(CMD_SETTINGS)


def charge_request(on):
    return command(CMD_CHARGE, 1 if on else 0, 4)


def discharge_request(on):
    return command(CMD_DISCHARGE, 1 if on else 0, 4)


def _is_at(src, i, end):
    return end - i >= 4 and src[i] == 0x41 and src[i + 1] == 0x54 and src[i + 2] == 0x0D \
        and src[i + 3] == 0x0A


def _is_preamble(src, i, end):
    return end - i >= 4 and src[i] == 0x55 and src[i + 1] == 0xAA and src[i + 2] == 0xEB \
        and src[i + 3] == 0x90


class Assembler(framing.Assembler):
    START = 0x55
    HEAD = 4
    SIZE = FRAME_LEN

    def _frame_len(self, buf):
        return FRAME_LEN if _is_preamble(buf, 0, 4) else 0

    def _check(self, buf, n):
        return sum8(buf, _CRC_AT) == buf[_CRC_AT]

    def _restarts(self, src, i, end):
        return _is_preamble(src, i, end)

    def _skip(self, src, i, end):
        # The BLE module injects "AT\r\n" between (and rarely inside) frames.
        while _is_at(src, i, end):
            i += 4
        return i


def _validate(frame):
    if len(frame) < FRAME_LEN or not _is_preamble(frame, 0, 4):
        raise BMSError("not a JK02 frame (%d bytes)" % len(frame))
    if sum8(frame, _CRC_AT) != frame[_CRC_AT]:
        raise BMSError("JK02 checksum mismatch")
    return frame[4]


def decode(frame, reading, cells_max=32):
    """Store a cell-info frame into `reading` (layout by `cells_max`: 24 or 32); True if it
    did. Settings and device-info frames return False; a bad frame raises BMSError."""
    kind = _validate(frame)
    if kind != TYPE_CELL_INFO:
        return False
    cell_off = 16 if cells_max == 32 else 0
    off = 2 * cell_off
    # Enabled-cells bitmask (u32 LE), tested byte-wise to stay in small ints; a pack that
    # sends none gets the slots with a non-zero voltage.
    m = 54 + cell_off
    has_mask = frame[m] | frame[m + 1] | frame[m + 2] | frame[m + 3]
    count = 0
    for i in range(cells_max):
        if _enabled(frame, m, i, has_mask):
            count += 1
    cells = sized(reading.cells, count)
    k = 0
    for i in range(cells_max):
        if _enabled(frame, m, i, has_mask):
            cells[k] = (frame[6 + 2 * i] | (frame[7 + 2 * i] << 8)) / 1000
            k += 1
    reading.cells = cells
    # little-endian fields read by hand: struct.unpack_from would allocate a tuple per frame
    reading.voltage = _u32(frame, 118 + off) / 1000
    reading.current = _s32(frame, 126 + off) / 1000
    temps = sized(reading.temperatures, 0)
    t = _s16(frame, 130 + off)
    if t != NO_SENSOR:
        temps.append(t / 10)
    t = _s16(frame, 132 + off)
    if t != NO_SENSOR:
        temps.append(t / 10)
    reading.temperatures = temps
    # The error word is big-endian; 32S moved it to where 24S has the MOS temperature.
    e = 134 + off if cells_max == 32 else 136
    errors = (frame[e] << 8) | frame[e + 1]
    reading.soc = frame[141 + off]
    reading.remaining_ah = _u32(frame, 142 + off) / 1000
    reading.nominal_ah = _u32(frame, 146 + off) / 1000
    reading.cycles = _u32(frame, 150 + off)
    reading.charge_fet = frame[166 + off] != 0
    reading.discharge_fet = frame[167 + off] != 0
    faults = sized(reading.faults, 0)
    reading.faults = faults
    for bits, name in ERROR_FAULTS:
        if errors & bits:
            faults.append(name)
    return True


_u32 = framing.le_u32
_s32 = framing.le_s32
_s16 = framing.le_s16


def _enabled(frame, m, i, has_mask):
    if has_mask:
        return frame[m + (i >> 3)] & (1 << (i & 7))
    return frame[6 + 2 * i] | frame[7 + 2 * i]


def _text(frame, start, size):
    return "".join(chr(b) for b in frame[start:start + size] if 32 <= b < 127)


def layout_of(frame):
    """24 or 32 from a device-info frame's software version (JK02_32S from 11.x on),
    None when the frame does not tell."""
    if _validate(frame) != TYPE_DEVICE_INFO:
        return None
    sw = _text(frame, 30, 8)
    major = sw.split(".")[0]
    if not major or not major.isdigit():
        return None
    return 32 if int(major) >= 11 else 24


def info(frame):
    """A small dict for a valid frame without measurements (device info, settings), else None."""
    kind = _validate(frame)
    if kind == TYPE_DEVICE_INFO:
        return {
            "type": "device_info",
            "vendor": _text(frame, 6, 16),
            "hardware": _text(frame, 22, 8),
            "software": _text(frame, 30, 8),
            "name": _text(frame, 46, 16),
        }
    if kind == TYPE_SETTINGS:
        return {"type": "settings"}
    if kind == TYPE_CELL_INFO:
        return None
    return {"type": "unknown", "frame_type": kind}


class Driver:
    service_uuids = (SERVICE_UUID,)
    notify_uuid = CHAR_UUID
    write_uuid = CHAR_UUID
    streams = True

    def __init__(self, cells_max=32, follow_device_info=True):
        if cells_max not in (24, 32):
            raise BMSError("JK02 layout is 24 or 32 cells")
        self.cells_max = cells_max
        self.name = "jk02_32s" if cells_max == 32 else "jk02_24s"
        # Decoding with the wrong layout gives plausible-looking wrong numbers, so the
        # device info (requested first) overrides the configured layout when it tells.
        self.follow_device_info = follow_device_info

    def start_requests(self):
        # Device info first, then 0x96, after which cell info streams unsolicited.
        return (DEVICE_INFO, SETTINGS)

    def poll_requests(self):
        # Cell info streams on its own; re-sending start_requests() restarts a quiet stream.
        return ()

    def new_assembler(self):
        return Assembler()

    def decode(self, frame, reading):
        if self.follow_device_info and len(frame) > 4 and frame[4] == TYPE_DEVICE_INFO:
            layout = layout_of(frame)
            if layout:
                self.cells_max = layout
            return False
        return decode(frame, reading, self.cells_max)

    def info(self, frame):
        return info(frame)

    def charge_fet_request(self, on):
        return charge_request(on)
