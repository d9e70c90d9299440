# Builds valid BMS frames and responses of every family from values, for the tests and the
# simulated BMS peers. Runs on CPython and on the MicroPython unix port (host-only: never
# frozen). Units are the Reading's: V, A (+ = charging), %, Ah, degC.
import struct

JK_NO_SENSOR = -2000  # raw JK temperature meaning "no sensor"
JK_FRAME_LEN = 300


def fragments(frame, size=20):
    """Split a frame into notifications of `size` bytes (20 = default ATT MTU 23)."""
    return [bytes(frame[i:i + size]) for i in range(0, len(frame), size)]


def _clamp(x, lo, hi):
    x = int(round(x))
    return lo if x < lo else hi if x > hi else x


def _u16(x):
    return _clamp(x, 0, 0xFFFF)


def _s16(x):
    return _clamp(x, -0x8000, 0x7FFF)


# ---- JBD ---------------------------------------------------------------------------
def _jbd_sum(buf, start, end):
    s = 0
    for i in range(start, end):
        s += buf[i]
    return (0x10000 - s) & 0xFFFF


def jbd_frame(reg, data, status=0):
    """A JBD response frame for register `reg` carrying `data`."""
    n = len(data)
    out = bytearray(n + 7)
    out[0] = 0xDD
    out[1] = reg
    out[2] = status
    out[3] = n
    out[4:4 + n] = data
    c = _jbd_sum(out, 2, 4 + n)
    out[4 + n] = c >> 8
    out[5 + n] = c & 0xFF
    out[6 + n] = 0x77
    return bytes(out)


def jbd_basic_data(voltage=13.2, current=0.0, remaining_ah=50.0, nominal_ah=100.0, cycles=0,
                   soc=50, charge_fet=True, discharge_fet=True, temperatures=(25.0,),
                   cell_count=4, protection=0, balance=0, production=0x2C7C, version=0x10,
                   extra=b""):
    ntc = len(temperatures)
    data = bytearray(23 + 2 * ntc)
    # Out-of-range values are clamped to what the fields can carry.
    struct.pack_into(">HhHHHHHHH", data, 0, _u16(voltage * 100), _s16(current * 100),
                     _u16(remaining_ah * 100), _u16(nominal_ah * 100), _u16(cycles),
                     production, balance & 0xFFFF, balance >> 16, protection)
    data[18] = version
    data[19] = _clamp(soc, 0, 255)
    data[20] = (1 if charge_fet else 0) | (2 if discharge_fet else 0)
    data[21] = cell_count
    data[22] = ntc
    for i in range(ntc):
        struct.pack_into(">H", data, 23 + 2 * i, _u16(temperatures[i] * 10 + 2731))
    return bytes(data) + bytes(extra)


def jbd_basic(status=0, **values):
    """Basic-info (0x03) response; `extra` appends the trailing bytes of longer firmware."""
    return jbd_frame(0x03, jbd_basic_data(**values), status)


def jbd_cells(cells):
    data = bytearray(2 * len(cells))
    for i in range(len(cells)):
        struct.pack_into(">H", data, 2 * i, _u16(cells[i] * 1000))
    return jbd_frame(0x04, data)


def jbd_model(text="SP04S034-L4S-200A"):
    return jbd_frame(0x05, text.encode())


def jbd_ack(reg=0xE1):
    return jbd_frame(reg, b"")


# ---- JK02 --------------------------------------------------------------------------
def _sum8(buf, end):
    s = 0
    for i in range(end):
        s += buf[i]
    return s & 0xFF


def jk02_frame(frame_type, body=b"", counter=0):
    """A 300-byte JK02 frame of `frame_type` with `body` from offset 6 and its sum8."""
    out = bytearray(JK_FRAME_LEN)
    out[0:4] = b"\x55\xaa\xeb\x90"
    out[4] = frame_type
    out[5] = counter & 0xFF
    out[6:6 + len(body)] = body
    out[299] = _sum8(out, 299)
    return bytes(out)


def jk02_cell_info(cells=(3.3, 3.3, 3.3, 3.3), voltage=None, current=0.0, soc=50,
                   remaining_ah=50.0, nominal_ah=100.0, cycles=0, temperatures=(25.0, 25.0),
                   errors=0, charge_fet=True, discharge_fet=True, mos_temp=30.0, layout=32,
                   counter=0):
    """A JK02 cell-info (type 0x02) frame in the 24S or 32S layout. A temperature of None
    is sent as the 'no sensor' value."""
    slots = 32 if layout == 32 else 24
    if len(cells) > slots:
        raise ValueError("too many cells for the layout")
    cell_off = 16 if layout == 32 else 0
    off = 2 * cell_off
    buf = bytearray(JK_FRAME_LEN)
    mv = [0] * len(cells)
    for i in range(len(cells)):
        mv[i] = int(round(cells[i] * 1000))
        struct.pack_into("<H", buf, 6 + 2 * i, mv[i])
    struct.pack_into("<I", buf, 54 + cell_off, (1 << len(cells)) - 1)
    if cells:
        struct.pack_into("<HH", buf, 58 + cell_off, sum(mv) // len(mv), max(mv) - min(mv))
    if voltage is None:
        voltage = sum(cells)
    t = []
    for x in (list(temperatures) + [None, None])[:2]:
        t.append(JK_NO_SENSOR if x is None else _s16(x * 10))
    struct.pack_into("<I", buf, 118 + off, int(round(voltage * 1000)))
    struct.pack_into("<i", buf, 126 + off, int(round(current * 1000)))
    struct.pack_into("<hh", buf, 130 + off, t[0], t[1])
    if layout == 32:
        struct.pack_into("<h", buf, 112 + off, int(round(mos_temp * 10)))
        struct.pack_into(">H", buf, 134 + off, errors)
    else:
        struct.pack_into("<h", buf, 134, int(round(mos_temp * 10)))
        struct.pack_into(">H", buf, 136, errors)
    buf[141 + off] = _clamp(soc, 0, 255)
    struct.pack_into("<III", buf, 142 + off, int(round(remaining_ah * 1000)),
                     int(round(nominal_ah * 1000)), cycles)
    buf[166 + off] = 1 if charge_fet else 0
    buf[167 + off] = 1 if discharge_fet else 0
    return jk02_frame(0x02, bytes(buf[6:299]), counter)


def jk02_device_info(vendor="JK_B2A8S20P", hardware="11.XW", software="11.26", name="JK-BMS"):
    """A JK02 device-info (type 0x03) frame."""
    body = bytearray(80)
    for off, size, text in ((0, 16, vendor), (16, 8, hardware), (24, 8, software), (40, 16, name)):
        raw = text.encode()[:size]
        body[off:off + len(raw)] = raw
    return jk02_frame(0x03, bytes(body))


# ---- Daly --------------------------------------------------------------------------
def crc16_modbus(buf, end=None):
    crc = 0xFFFF
    for i in range(len(buf) if end is None else end):
        crc ^= buf[i]
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def daly_response(registers):
    """A D2 03 response carrying the given u16 register values."""
    n = 2 * len(registers)
    out = bytearray(n + 5)
    out[0] = 0xD2
    out[1] = 0x03
    out[2] = n
    for i in range(len(registers)):
        struct.pack_into(">H", out, 3 + 2 * i, registers[i] & 0xFFFF)
    struct.pack_into("<H", out, 3 + n, crc16_modbus(out, 3 + n))
    return bytes(out)


def daly_status_registers(cells=(3.3, 3.3, 3.3, 3.3), temperatures=(25,), voltage=None,
                          current=0.0, soc=50.0, remaining_ah=50.0, cycles=0, charge_fet=True,
                          discharge_fet=True, alarms=0, count=62):
    """The register values of a status read (62 or 80 registers). `alarms` is a 64-bit
    value for registers 0x3A..0x3D (0x3A most significant)."""
    regs = [0] * count
    for i in range(len(cells)):
        regs[i] = _u16(cells[i] * 1000)
    for i in range(len(temperatures)):
        regs[0x20 + i] = _u16(temperatures[i] + 40)
    if voltage is None:
        voltage = sum(cells)
    regs[0x28] = _u16(voltage * 10)
    regs[0x29] = _u16(current * 10 + 30000)
    regs[0x2A] = _u16(soc * 10)
    regs[0x30] = _u16(remaining_ah * 10)
    regs[0x31] = len(cells)
    regs[0x32] = len(temperatures)
    regs[0x33] = cycles
    regs[0x35] = 1 if charge_fet else 0
    regs[0x36] = 1 if discharge_fet else 0
    for k in range(4):
        regs[0x3A + k] = (alarms >> (16 * (3 - k))) & 0xFFFF
    return regs


def daly_status(count=62, **values):
    return daly_response(daly_status_registers(count=count, **values))


# ---- protection bits: the Reading's fault names as each family's frames carry them -------
# A simulated BMS in protection (sim/battery.py: its `faults`) sets these bits, as the real
# one does; the firmware's decoders name them back. Tables written from the protocol sources
# (../shared/notes), not from the decoders, so a unit test of the round trip means something.
# Names a family cannot carry are left out of its frames. Which families carry what:
#   JBD, JK02, Daly, Seplos (EIC event bytes) and Renogy (status 1, register 5106): bits of
#   their own for each protection; ANT: no documented bits (its 64-bit masks are unnamed),
#   the reason goes in the charge (or discharge) MOSFET status byte instead, one code at a
#   time (bms_frames_more.ant_fet_status); Redodo/LiTime: no documented bits at all (its
#   protection and failure words at 76/80 are unnamed) and no MOSFET state: its frames carry
#   no protection, and the device sees only the current stop.
# JBD protection word (basic info bytes 16-17), bit per protection.
JBD_PROTECTION_BITS = {"cell_overvoltage": 0, "cell_undervoltage": 1, "pack_overvoltage": 2,
                       "pack_undervoltage": 3, "charge_overtemp": 4, "charge_undertemp": 5,
                       "discharge_overtemp": 6, "discharge_undertemp": 7, "charge_overcurrent": 8,
                       "discharge_overcurrent": 9, "short_circuit": 10, "afe_error": 11,
                       "mosfet_lock": 12}
# JK02 error word (big-endian u16 in the cell-info frame). 0x1000 is "cell over-voltage" in
# the older tables ("fully charged" in newer ones).
JK02_ERROR_BITS = {"charge_overtemp": 0x0001, "charge_undertemp": 0x0002, "afe_error": 0x0004,
                   "cell_undervoltage": 0x0008, "pack_undervoltage": 0x0010,
                   "discharge_overcurrent": 0x0020, "short_circuit": 0x0040,
                   "discharge_overtemp": 0x0080, "wire_resistance": 0x0100,
                   "mosfet_overtemp": 0x0200, "cell_count_mismatch": 0x0400,
                   "current_sensor_error": 0x0800, "cell_overvoltage": 0x1000,
                   "pack_overvoltage": 0x2000, "charge_overcurrent": 0x4000}
# Daly fault record (registers 0x3A-0x3D, 8 bytes): (byte, bit), byte 0 = high byte of 0x3A.
# Where the record has two levels the second (the protection, not the warning) is sent.
DALY_ALARM_BITS = {"cell_overvoltage": (0, 1), "cell_undervoltage": (0, 3), "pack_overvoltage": (0, 5),
                   "pack_undervoltage": (0, 7), "charge_overtemp": (1, 1), "charge_undertemp": (1, 3),
                   "discharge_overtemp": (1, 5), "discharge_undertemp": (1, 7),
                   "charge_overcurrent": (2, 1), "discharge_overcurrent": (2, 3),
                   "afe_error": (5, 0), "current_sensor_error": (6, 0),
                   "short_circuit": (6, 2)}


def _faults(values):
    return values.get("faults") or ()


def jbd_protection(faults):
    """The JBD protection word for these fault names."""
    w = 0
    for f in faults:
        if f in JBD_PROTECTION_BITS:
            w |= 1 << JBD_PROTECTION_BITS[f]
    return w


def jk02_errors(faults):
    """The JK02 error word for these fault names."""
    w = 0
    for f in faults:
        w |= JK02_ERROR_BITS.get(f, 0)
    return w


def daly_alarms(faults):
    """The 64-bit Daly alarm value (daly_status_registers' `alarms`) for these fault names."""
    w = 0
    for f in faults:
        if f in DALY_ALARM_BITS:
            byte, bit = DALY_ALARM_BITS[f]
            w |= 1 << (8 * (7 - byte) + bit)
    return w


# ---- simulated peers -----------------------------------------------------------------
def _reading_values(values, keys):
    return dict((k, values[k]) for k in keys if k in values and values[k] is not None)


_JBD_KEYS = ("voltage", "current", "remaining_ah", "nominal_ah", "cycles", "soc", "charge_fet",
             "discharge_fet", "temperatures", "protection")
_JK_KEYS = ("cells", "voltage", "current", "soc", "remaining_ah", "nominal_ah", "cycles",
            "temperatures", "errors", "charge_fet", "discharge_fet")
_DALY_KEYS = ("cells", "temperatures", "voltage", "current", "soc", "remaining_ah", "cycles",
              "charge_fet", "discharge_fet", "alarms")


def respond(protocol, request, values):
    """The frames a BMS of `protocol` answers to the written `request`, given battery
    `values` (a dict with Reading field names, plus `protection`/`errors`/`alarms` raw
    fault words; Seplos also `packs`, `events`, `hard`; Redodo `failure`). Where no raw word
    is given, `faults` (the Reading's names) sets the family's bits (see the protection bits
    above). Returns a list of
    frames (empty when the BMS stays silent). Seplos, ANT, Redodo and Renogy answer from
    bms_frames_more (its builders: seplos_*, ant_*, redodo_*, renogy_*)."""
    req = bytes(request)
    cells = values.get("cells") or (3.3, 3.3, 3.3, 3.3)
    if protocol == "jbd":
        if len(req) < 7 or req[0] != 0xDD or req[-1] != 0x77:
            return []
        reg = req[2]
        if req[1] == 0xA5 and reg == 0x03:
            kw = _reading_values(values, _JBD_KEYS)
            kw.setdefault("protection", jbd_protection(_faults(values)))
            kw["cell_count"] = len(cells)
            return [jbd_basic(**kw)]
        if req[1] == 0xA5 and reg == 0x04:
            return [jbd_cells(cells)]
        if req[1] == 0xA5 and reg == 0x05:
            return [jbd_model(values.get("model", "SP04S034-L4S-200A"))]
        if req[1] == 0x5A:
            return [jbd_ack(reg)]
        return []
    if protocol in ("jk02_24s", "jk02_32s"):
        if len(req) != 20 or req[:4] != b"\xaa\x55\x90\xeb":
            return []
        if req[4] == 0x97:
            # The software version tells the layout: 24S packs run firmware before 11.x.
            return [jk02_device_info(software="11.26" if protocol == "jk02_32s" else "10.08")]
        if req[4] == 0x96:
            kw = _reading_values(values, _JK_KEYS)
            kw.setdefault("errors", jk02_errors(_faults(values)))
            kw["layout"] = 32 if protocol == "jk02_32s" else 24
            return [jk02_cell_info(**kw)]
        return []
    if protocol == "daly":
        if len(req) != 8 or req[0] != 0xD2 or req[1] != 0x03:
            return []
        if crc16_modbus(req, 6) != req[6] | (req[7] << 8):
            return []
        count = (req[4] << 8) | req[5]
        if (req[2] << 8 | req[3]) != 0 or count not in (62, 80):
            return []
        kw = _reading_values(values, _DALY_KEYS)
        kw.setdefault("alarms", daly_alarms(_faults(values)))
        return [daly_status(count=count, **kw)]
    if protocol in ("seplos", "ant", "redodo", "renogy"):
        import bms_frames_more  # the families of issue 13 (kept apart: this file's size)

        return bms_frames_more.RESPONDERS[protocol](req, values)
    raise ValueError("unknown protocol %r" % (protocol,))
