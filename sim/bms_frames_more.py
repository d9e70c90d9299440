# Frame builders and simulated answers for the families of issue 13: Seplos v3, ANT (7E A1),
# Redodo/LiTime and Renogy BT. Same conventions as bms_frames (which dispatches respond()
# here): values in the Reading's units (V, A + = charging, %, Ah, degC), out-of-range values
# clamped to what a field carries, pure functions. Host-only, both runtimes.
import struct

from bms_frames import _clamp, _s16, _u16, crc16_modbus


def _crc_le(out, end):
    struct.pack_into("<H", out, end, crc16_modbus(out, end))


def _u32(x):
    return _clamp(x, 0, 0xFFFFFFFF)


def _s32(x):
    return _clamp(x, -0x80000000, 0x7FFFFFFF)


# ---- Seplos v3 (Modbus RTU) --------------------------------------------------------------
SEPLOS_K0 = 2731  # 0.1 K of 0 degC


def seplos_frame(addr, fn, data):
    """<addr> <fn> <N> <data> <crc LE>."""
    n = len(data)
    out = bytearray(n + 5)
    out[0] = addr
    out[1] = fn
    out[2] = n
    out[3:3 + n] = data
    _crc_le(out, 3 + n)
    return bytes(out)


def seplos_error(addr, fn, code):
    out = bytearray(5)
    out[0] = addr
    out[1] = fn | 0x80
    out[2] = code
    _crc_le(out, 3)
    return bytes(out)


def _lo_first(x):
    """A u32 as Seplos EIA sends it: low word first, each word big-endian."""
    return struct.pack(">HH", x & 0xFFFF, (x >> 16) & 0xFFFF)


def seplos_eia(voltage=53.2, current=0.0, remaining_ah=100.0, nominal_ah=200.0, cycles=0, soc=50.0,
               soh=100.0, packs=1):
    """EMS info A (system values, 26 registers) from address 0."""
    data = bytearray(52)
    cur = _s32(current * 10) & 0xFFFFFFFF
    for off, raw in ((0, _u32(voltage * 100)), (4, cur), (8, _u32(remaining_ah * 100)),
                     (12, _u32(nominal_ah * 100)), (20, _u32(nominal_ah * 100)),
                     (24, (1 << packs) - 1)):
        data[off:off + 4] = _lo_first(raw)
    struct.pack_into(">HHHH", data, 44, packs, _u16(cycles), _u16(soc * 10), _u16(soh * 10))
    return seplos_frame(0, 0x04, data)


def seplos_eib(cells=(3.3, 3.3, 3.3, 3.3), temperatures=(25.0,), power_temp=30.0):
    """EMS info B (aggregates, 22 registers): max/min cell mV, max/min/average cell
    temperature in signed 0.1 degC, power-board temperatures."""
    data = bytearray(44)
    mv = [_u16(c * 1000) for c in cells] or [0]
    t = [_s16(x * 10) for x in temperatures] or [0]
    struct.pack_into(">HH", data, 0, max(mv), min(mv))
    struct.pack_into(">hhh", data, 16, max(t), min(t), int(round(sum(t) / len(t))))
    p = _s16(power_temp * 10)
    struct.pack_into(">hhh", data, 34, p, p, p)
    return seplos_frame(0, 0x04, data)


def seplos_eic(charge_fet=True, discharge_fet=True, state=0x10, events=(0, 0, 0, 0, 0, 0), hard=0):
    """EMS info C (80 coils = 10 bytes): state, six event bytes (voltage, cell temperature,
    ambient/power temperature, current, current latch, capacity), FETs, balancing, hard faults."""
    data = bytearray(10)
    data[0] = state
    for i in range(len(events)):
        data[1 + i] = events[i]
    data[7] = (1 if discharge_fet else 0) | (2 if charge_fet else 0)
    data[9] = hard
    return seplos_frame(0, 0x01, data)


def seplos_pia(pack=1, voltage=53.2, current=0.0, remaining_ah=100.0, nominal_ah=200.0, soc=50.0,
               cycles=0):
    data = bytearray(34)
    struct.pack_into(">HhHHHHHH", data, 0, _u16(voltage * 100), _s16(current * 100),
                     _u16(remaining_ah * 100), _u16(nominal_ah * 100), 0, _u16(soc * 10), 1000,
                     _u16(cycles))
    return seplos_frame(pack, 0x04, data)


def seplos_pib(pack=1, cells=(3.3, 3.3, 3.3, 3.3), temperatures=(25.0, 25.0, 25.0, 25.0),
               ambient=25.0, power=30.0):
    """Pack info B: up to 16 cells (mV, 0 = no cell) and four cell sensors in 0.1 K."""
    if len(cells) > 16:
        raise ValueError("a Seplos pack has at most 16 cells")
    data = bytearray(52)
    for i in range(len(cells)):
        struct.pack_into(">H", data, 2 * i, _u16(cells[i] * 1000))
    t = (list(temperatures) + [25.0] * 4)[:4]
    for i in range(4):
        struct.pack_into(">H", data, 32 + 2 * i, _u16(t[i] * 10 + SEPLOS_K0))
    for i in range(4):
        struct.pack_into(">H", data, 40 + 2 * i, SEPLOS_K0)  # unused
    struct.pack_into(">HH", data, 48, _u16(ambient * 10 + SEPLOS_K0), _u16(power * 10 + SEPLOS_K0))
    return seplos_frame(pack, 0x04, data)


def _split(seq, parts):
    """seq cut into `parts` runs, as even as they go (the first ones longer)."""
    seq = list(seq)
    out = []
    start = 0
    for i in range(parts):
        n = (len(seq) - start + (parts - i) - 1) // (parts - i)
        out.append(seq[start:start + n])
        start += n
    return out


# EIC event bytes 1..6 (XZH tables TB02..TB06; events[0] is EIC byte 1): (event, bit) of the
# protection level of each condition (the alarm level before it is no fault).
SEPLOS_EVENT_BITS = {"cell_overvoltage": (0, 1), "cell_undervoltage": (0, 3), "pack_overvoltage": (0, 5),
                     "pack_undervoltage": (0, 7), "charge_overtemp": (1, 1), "charge_undertemp": (1, 3),
                     "discharge_overtemp": (1, 5), "discharge_undertemp": (1, 7),
                     "mosfet_overtemp": (2, 5), "charge_overcurrent": (3, 1),
                     "discharge_overcurrent": (3, 4), "short_circuit": (3, 6)}
# EIC byte 9 (TB15, hard faults)
SEPLOS_HARD_BITS = {"temp_sensor_error": 0, "afe_error": 1}


def seplos_events(faults):
    """(events, hard) of EMS info C for these fault names."""
    ev = [0] * 6
    hard = 0
    for f in faults:
        if f in SEPLOS_EVENT_BITS:
            k, bit = SEPLOS_EVENT_BITS[f]
            ev[k] |= 1 << bit
        elif f in SEPLOS_HARD_BITS:
            hard |= 1 << SEPLOS_HARD_BITS[f]
    return tuple(ev), hard


def seplos_respond(req, values):
    if len(req) != 8 or crc16_modbus(req, 6) != req[6] | (req[7] << 8):
        return []
    addr, fn = req[0], req[1]
    reg = (req[2] << 8) | req[3]
    count = (req[4] << 8) | req[5]
    packs = values.get("packs") or 1
    cells = values.get("cells") or (3.3, 3.3, 3.3, 3.3)
    temps = list(values.get("temperatures") or (25.0,))
    v = dict((k, values[k]) for k in ("voltage", "current", "remaining_ah", "nominal_ah", "cycles", "soc")
             if values.get(k) is not None)
    if "voltage" not in v:
        v["voltage"] = sum(cells)
    if addr == 0 and fn == 0x04 and reg == 0x2000 and count == 26:
        return [seplos_eia(packs=packs, **v)]
    if addr == 0 and fn == 0x04 and reg == 0x2100 and count == 22:
        return [seplos_eib(cells, temps)]
    if addr == 0 and fn == 0x01 and reg == 0x2200 and count == 80:
        events, hard = seplos_events(values.get("faults") or ())
        if values.get("events") is not None or values.get("hard") is not None:
            events, hard = values.get("events") or (0,) * 6, values.get("hard") or 0
        return [seplos_eic(values.get("charge_fet") is not False, values.get("discharge_fet") is not False,
                           events=events, hard=hard)]
    if 1 <= addr <= packs and fn == 0x04:
        pack_cells = _split(cells, packs)[addr - 1]
        if reg == 0x1100 and count == 26:
            t = temps[4 * (addr - 1):4 * addr] or temps[:4]
            return [seplos_pib(addr, pack_cells, t + [t[-1]] * (4 - len(t)))]
        if reg == 0x1000 and count == 17:
            v["voltage"] = sum(pack_cells)
            return [seplos_pia(addr, **v)]
    return [seplos_error(addr, fn, 0x02)]


# ---- ANT (7E A1) -------------------------------------------------------------------------
def ant_frame(func, data, addr=0):
    """7E A1 func addr(LE) len data crc(LE over A1..data) AA 55."""
    n = len(data)
    out = bytearray(n + 10)
    out[0] = 0x7E
    out[1] = 0xA1
    out[2] = func
    struct.pack_into("<HB", out, 3, addr, n)
    out[6:6 + n] = data
    struct.pack_into("<H", out, 6 + n, crc16_modbus(out[1:6 + n]))
    out[8 + n] = 0xAA
    out[9 + n] = 0x55
    return bytes(out)


def ant_status(cells=(3.3, 3.3, 3.3, 3.3), temperatures=(25, 25), voltage=None, current=0.0, soc=50,
               nominal_ah=100.0, remaining_ah=50.0, charge_status=1, discharge_status=1, protection=0,
               warning=0, mos_temp=30, balancer_temp=30, state=1):
    """A status reply (func 0x11). Current goes on the wire the ANT way (+ = discharging);
    `protection`/`warning` are the 64-bit masks at bytes 10/18 (bit 0 = byte 10 bit 0)."""
    c = len(cells)
    n = len(temperatures)
    k = 38 + 2 * c + 2 * n
    body = bytearray(k + 74 - 6)  # frame bytes 6 .. k+73 (the CRC follows)
    off = -6  # frame offset -> body index
    body[6 + off] = 0x05
    body[7 + off] = state
    body[8 + off] = n
    body[9 + off] = c
    struct.pack_into("<QQ", body, 10 + off, protection & (2 ** 64 - 1), warning & (2 ** 64 - 1))
    for i in range(c):
        struct.pack_into("<H", body, 34 + 2 * i + off, _u16(cells[i] * 1000))
    for i in range(n):
        struct.pack_into("<h", body, 34 + 2 * c + 2 * i + off, _s16(temperatures[i]))
    struct.pack_into("<hh", body, 34 + 2 * c + 2 * n + off, _s16(mos_temp), _s16(balancer_temp))
    if voltage is None:
        voltage = sum(cells)
    struct.pack_into("<HhHH", body, k + off, _u16(voltage * 100), _s16(-current * 10), _u16(soc), 100)
    body[k + 8 + off] = discharge_status
    body[k + 9 + off] = charge_status
    struct.pack_into("<II", body, k + 12 + off, _u32(nominal_ah * 1e6), _u32(remaining_ah * 1e6))
    mv = [_u16(x * 1000) for x in cells] or [0]
    struct.pack_into("<HHHHHH", body, k + 36 + off, max(mv), 1, min(mv), 1, max(mv) - min(mv),
                     sum(mv) // len(mv))
    struct.pack_into("<H", body, k + 56 + off, 0xFAF2)  # LFP
    return ant_frame(0x11, body)


def ant_device_info(hardware="16ZMB", software="16ZMUB00-211026A"):
    """A device-info reply (func 0x12): len says 32, the CRC follows the 32 bytes and six more
    bytes come before AA 55, as the real units send it."""
    data = bytearray(32)
    for off, text in ((0, hardware), (16, software)):
        raw = text.encode()[:16]
        data[off:off + len(raw)] = raw
    out = bytearray(ant_frame(0x12, data, 0x026C)[:40])
    out += b"\xff\x0b\x00\x00\x41\xf2\xaa\x55"
    return bytes(out)


# ANT MOSFET status codes (the reason a MOSFET is off; 0 off, 1 on): its 64-bit protection
# masks name no bits in any source, so a protection shows only here. One code per byte: the
# first fault of these lists that the pack has.
ANT_CHARGE_CODES = (("cell_overvoltage", 2), ("pack_overvoltage", 5),
                     ("charge_overcurrent", 3), ("charge_overtemp", 6), ("charge_undertemp", 0x11),
                     ("mosfet_overtemp", 7), ("afe_error", 0x14))
ANT_DISCHARGE_CODES = (("short_circuit", 0x0C), ("cell_undervoltage", 2), ("pack_undervoltage", 5),
                       ("discharge_overcurrent", 3), ("discharge_overtemp", 6),
                       ("discharge_undertemp", 0x11))


def ant_fet_status(charge_fet, discharge_fet, faults):
    """(charge status, discharge status) bytes: 1 on, 0 off, or the protection's code."""
    out = []
    for on, codes in ((charge_fet, ANT_CHARGE_CODES), (discharge_fet, ANT_DISCHARGE_CODES)):
        code = 0 if on is False else 1
        for name, c in codes:
            if name in faults and c is not None:
                code = c
                break
        out.append(code)
    return out[0], out[1]


def ant_respond(req, values):
    if len(req) < 10 or req[0] != 0x7E or req[1] != 0xA1 or req[-2:] != b"\xaa\x55":
        return []
    if crc16_modbus(req[1:len(req) - 4]) != req[-4] | (req[-3] << 8):
        return []
    if req[2] == 0x01:
        kw = dict((k, values[k]) for k in ("cells", "temperatures", "voltage", "current", "soc",
                                             "nominal_ah", "remaining_ah", "protection")
                  if values.get(k) is not None)
        kw["soc"] = _clamp(kw.get("soc", 50), 0, 100)
        kw["temperatures"] = [int(round(t)) for t in kw.get("temperatures", (25,))]
        kw["charge_status"], kw["discharge_status"] = ant_fet_status(
            values.get("charge_fet"), values.get("discharge_fet"), values.get("faults") or ())
        return [ant_status(**kw)]
    if req[2] == 0x02:
        return [ant_device_info()]
    return []


# ---- Redodo / LiTime ---------------------------------------------------------------------
def _sum8(buf):
    return sum(buf) & 0xFF


def redodo_frame(cmd, data, status=0):
    """00 00 <len> 01 <cmd|80> 55 AA <status> <data> <sum8>; len = total - 4."""
    out = bytearray(9 + len(data))
    out[2] = len(out) - 4
    out[3] = 0x01
    out[4] = cmd | 0x80
    out[5] = 0x55
    out[6] = 0xAA
    out[7] = status
    out[8:8 + len(data)] = data
    out[-1] = _sum8(out[:-1])
    return bytes(out)


def redodo_status(cells=(3.3, 3.3, 3.3, 3.3), voltage=None, current=0.0, temperatures=(25,), mos_temp=30,
                  remaining_ah=50.0, nominal_ah=100.0, soc=50, cycles=0, protection=0, failure=0):
    """The 105-byte status reply (command 0x13)."""
    if len(cells) > 16:
        raise ValueError("a Redodo pack has at most 16 cells")
    buf = bytearray(105)
    mv = [_u16(c * 1000) for c in cells]
    if voltage is None:
        voltage = sum(mv) / 1000
    struct.pack_into("<II", buf, 8, _u32(voltage * 1000), sum(mv))
    for i in range(len(mv)):
        struct.pack_into("<H", buf, 16 + 2 * i, mv[i])
    t = (list(temperatures) + [25])[0]
    struct.pack_into("<ihhh", buf, 48, _s32(current * 1000), _s16(t), _s16(mos_temp), 0)
    struct.pack_into("<HH", buf, 62, _u16(remaining_ah * 100), _u16(nominal_ah * 100))
    struct.pack_into("<II", buf, 76, protection & 0xFFFFFFFF, failure & 0xFFFFFFFF)
    struct.pack_into("<HHII", buf, 88, 0, _clamp(soc, 0, 100), 100, _u32(cycles))
    return redodo_frame(0x13, bytes(buf[8:104]))


def redodo_respond(req, values):
    if len(req) != 8 or req[:4] != b"\x00\x00\x04\x01" or req[5:7] != b"\x55\xaa" or _sum8(req[:7]) != req[7]:
        return []
    if req[4] != 0x13:
        return []
    # `faults` are not sent: no source names the bits of the protection and failure words, so
    # a simulated Redodo in protection shows nothing but its current (as a real one would to
    # a reader that cannot name them)
    kw = dict((k, values[k]) for k in ("cells", "voltage", "current", "temperatures", "remaining_ah",
                                         "nominal_ah", "soc", "cycles", "protection", "failure")
              if values.get(k) is not None)
    if "temperatures" in kw:
        kw["temperatures"] = [int(round(t)) for t in kw["temperatures"]]
    return [redodo_status(**kw)]


# ---- Renogy BT (Modbus, device 0x30) -----------------------------------------------------
def renogy_response(registers, device=0x30):
    """30 03 <N> <registers big-endian> <crc LE>."""
    n = 2 * len(registers)
    out = bytearray(n + 5)
    out[0] = device
    out[1] = 0x03
    out[2] = n
    for i in range(len(registers)):
        struct.pack_into(">H", out, 3 + 2 * i, registers[i] & 0xFFFF)
    _crc_le(out, 3 + n)
    return bytes(out)


def renogy_cells(cells=(3.3, 3.3, 3.3, 3.3), temperatures=(25.0,)):
    """Block 5000 x34: cell count, 16 cells in 0.1 V, sensor count, 16 sensors s16 0.1 degC."""
    regs = [0] * 34
    regs[0] = len(cells)
    for i in range(len(cells)):
        regs[1 + i] = _u16(cells[i] * 10)
    regs[17] = len(temperatures)
    for i in range(len(temperatures)):
        regs[18 + i] = _s16(temperatures[i] * 10) & 0xFFFF
    return renogy_response(regs)


def renogy_values(current=0.0, voltage=13.2, remaining_ah=50.0, nominal_ah=100.0, cycles=0):
    """Block 5042 x7: current 0.01 A, voltage 0.1 V, remaining and full u32 mAh, cycles."""
    rem = _u32(remaining_ah * 1000)
    full = _u32(nominal_ah * 1000)
    return renogy_response([_s16(current * 100) & 0xFFFF, _u16(voltage * 10), rem >> 16, rem & 0xFFFF,
                            full >> 16, full & 0xFFFF, _u16(cycles)])


# Status 1 (register 5106) protection bits (Renogy's Modbus table v1.7; bit1/bit2 are the
# MOSFETs, bit3 "using the module's power"). Two over-current levels each: level 1 is sent.
RENOGY_STATUS1_BITS = {"short_circuit": 0, "pack_overvoltage": 6, "cell_undervoltage": 7,
                       "cell_overvoltage": 8, "charge_overcurrent": 9, "discharge_overcurrent": 10,
                       "discharge_undertemp": 11, "discharge_overtemp": 12, "charge_undertemp": 13,
                       "charge_overtemp": 14, "pack_undervoltage": 15}


def renogy_status1(faults):
    """The protection bits of status 1 for these fault names (the MOSFET bits not included)."""
    w = 0
    for f in faults:
        if f in RENOGY_STATUS1_BITS:
            w |= 1 << RENOGY_STATUS1_BITS[f]
    return w


def renogy_alarms(charge_fet=True, discharge_fet=True, alarms=(0, 0, 0, 0, 0, 0), status2=0, protection=0):
    """Block 5100 x8: six alarm registers, status 1 (FET bits | `protection`), status 2."""
    regs = list(alarms) + [0] * (6 - len(alarms))
    regs.append((2 if charge_fet else 0) | (4 if discharge_fet else 0) | protection)
    regs.append(status2)
    return renogy_response(regs)


def renogy_respond(req, values):
    if len(req) != 8 or req[0] != 0x30 or req[1] != 0x03 or crc16_modbus(req, 6) != req[6] | (req[7] << 8):
        return []
    reg = (req[2] << 8) | req[3]
    count = (req[4] << 8) | req[5]
    cells = values.get("cells") or (3.3, 3.3, 3.3, 3.3)
    if reg == 5000 and count == 34:
        return [renogy_cells(cells, values.get("temperatures") or (25.0,))]
    if reg == 5042 and count == 7:
        kw = dict((k, values[k]) for k in ("current", "voltage", "remaining_ah", "nominal_ah", "cycles")
                  if values.get(k) is not None)
        kw.setdefault("voltage", sum(cells))
        return [renogy_values(**kw)]
    if reg == 5100 and count == 8:
        # The alarm fields 5100-5105 (2 bits per cell or sensor, warning levels) stay clear:
        # a protection shows in status 1.
        return [renogy_alarms(values.get("charge_fet") is not False, values.get("discharge_fet") is not False,
                              values.get("alarms") or (0,) * 6,
                              protection=renogy_status1(values.get("faults") or ()))]
    return []


RESPONDERS = {"seplos": seplos_respond, "ant": ant_respond, "redodo": redodo_respond,
              "renogy": renogy_respond}
