# A LiFePO4 battery with its BMS, a charger behind the relay and a load: the simulated world
# the firmware charges. Runs on CPython (scripts/simulate.py) and on the MicroPython unix port
# (the live simulator steps it in device time). Deterministic: no randomness.
#
# Model:
# - each cell has its own "true" state of charge (0..101 %); cells start spread by
#   `imbalance_pct` and the BMS bleeds the high cells (`balance_a`) while charging at the
#   top knee, so the spread shrinks over full charges;
# - cell voltage = LFP open-circuit curve (flat middle, steep knees) + current x resistance;
# - the charger gives `charger_a` up to ~95 % and tapers above, as a CV charger does, so the
#   tail current is reached; it also feeds the load while it runs;
# - the reported SOC is coulomb-counted on a usable scale (100 % at a true 97.5 %, where a
#   real BMS recalibrates to full), so SOC reaches 100 % while the charger still tapers;
# - the BMS protects on its own: cell over-voltage (3.65 V, released at 3.45 V), charge
#   temperature outside 0..55 degC, cell under-voltage; a protection opens the matching MOSFET;
# - `fault` forces one of the design's fault names (and opens the charge MOSFET, as a BMS
#   does); "charge_fet_off" only opens the charge MOSFET.
# - `charger_cv_cell_v`: the charger's own constant-voltage limit per cell (it tapers to 0
#   there); `bms_charge_limit_a`: above it the BMS trips charge_overcurrent and opens its
#   charge MOSFET for 60 s; `relay_welded`: the charger runs whatever the relay says;
#   `fet_cmd_off`: the charge MOSFET commanded off over the BMS protocol.
# - what the BMS reports can be wrong (BMSLie): a SOC offset, a stuck SOC, a SOC that never
#   reaches 100, no temperatures, no cells, a pack voltage off the cell sum, a family alarm.

# (true SOC %, open-circuit cell volts)
_OCV = ((0.0, 2.50), (2.0, 2.90), (5.0, 3.10), (10.0, 3.20), (20.0, 3.25), (30.0, 3.27),
        (40.0, 3.29), (50.0, 3.30), (60.0, 3.31), (70.0, 3.32), (80.0, 3.33), (90.0, 3.34),
        (95.0, 3.36), (97.5, 3.40), (99.0, 3.45), (100.0, 3.52), (100.5, 3.65), (101.0, 3.80))
_USABLE = 97.5  # true SOC at which the BMS reports 100 %
_TAPER_FROM = 95.0
_TAPER_TO = 100.5
_BALANCE_FROM_V = 3.40
_OVP_V = 3.65
_OVP_RELEASE_V = 3.45
_UVP_V = 2.60
_CHG_TEMP_MIN = 0.0
_CHG_TEMP_MAX = 55.0
_R_CELL_100AH = 0.002  # ohm per cell at 100 Ah; scales inversely with capacity

_OC_TRIP_S = 60.0

FAULTS = ("cell_overvoltage", "pack_overvoltage", "charge_overtemp", "charge_undertemp",
          "charge_overcurrent", "short_circuit", "charge_fet_off")


def _ocv_scan(soc):
    if soc <= 0.0:
        return _OCV[0][1]
    prev = _OCV[0]
    for p in _OCV:
        if soc <= p[0]:
            return prev[1] + (p[1] - prev[1]) * (soc - prev[0]) / (p[0] - prev[0])
        prev = p
    return _OCV[-1][1]


# Every breakpoint is a multiple of 0.5 %: a uniform table interpolates the same line
# segments in O(1), which keeps long simulations fast.
_STEP = 0.5
_TABLE = [_ocv_scan(i * _STEP) for i in range(int(_OCV[-1][0] / _STEP) + 2)]
_TOP = _OCV[-1][0]


def ocv(soc):
    """Open-circuit cell voltage for a true SOC in %."""
    if soc <= 0.0:
        return _TABLE[0]
    if soc >= _TOP:
        return _TABLE[-2]
    x = soc / _STEP
    i = int(x)
    lo = _TABLE[i]
    return lo + (_TABLE[i + 1] - lo) * (x - i)


class SimReading:
    """The attributes of smartbms.bms.reading.Reading, updated in place by Battery.reading()."""

    def __init__(self, cells, sensors):
        self.voltage = 0.0
        self.current = 0.0
        self.soc = 0.0
        self.remaining_ah = 0.0
        self.nominal_ah = 0.0
        self.cycles = 0
        self.cells = [0.0] * cells
        self.temperatures = [0.0] * sensors
        self.charge_fet = True
        self.discharge_fet = True
        self.faults = []
        self.received = None

    def to_dict(self):
        return {"voltage": self.voltage, "current": self.current, "soc": self.soc,
                "remaining_ah": self.remaining_ah, "nominal_ah": self.nominal_ah,
                "cycles": self.cycles, "cells": list(self.cells),
                "temperatures": list(self.temperatures), "charge_fet": self.charge_fet,
                "discharge_fet": self.discharge_fet, "faults": list(self.faults)}


class BMSLie:
    """How the BMS's report differs from the truth (all off by default)."""

    def __init__(self):
        self.soc_offset = 0.0
        self.soc_stuck = None  # the SOC it keeps reporting, or None
        self.soc_max = 100.0
        self.temps_missing = False
        self.cells_missing = False
        self.voltage_offset_v = 0.0
        self.alarm = None


class Battery:
    def __init__(self, capacity_ah=100.0, cells=4, soc=50.0, charger_a=20.0, load_a=2.0,
                 temperature_c=20.0, imbalance_pct=1.0, balance_a=1.0, load_schedule=None,
                 charger_cv_cell_v=None, bms_charge_limit_a=None):
        if not capacity_ah > 0:
            raise ValueError("capacity_ah must be > 0")
        if not 1 <= cells <= 32:
            raise ValueError("cells must be 1..32")
        if not 0 <= soc <= 100:
            raise ValueError("soc must be 0..100")
        if charger_a < 0 or load_a < 0 or balance_a < 0:
            raise ValueError("currents must be >= 0")
        if not 0 <= imbalance_pct <= 20:
            raise ValueError("imbalance_pct must be 0..20")
        self.capacity_ah = float(capacity_ah)
        self.n = cells
        self.charger_a = float(charger_a)
        self.load_a = float(load_a)
        self.temperature_c = float(temperature_c)
        self.balance_a = float(balance_a)
        self.load_schedule = None
        if load_schedule is not None:
            self.set_load_schedule(load_schedule)
        self.fault = None
        self.charger_cv_cell_v = charger_cv_cell_v
        self.bms_charge_limit_a = bms_charge_limit_a
        self.relay_welded = False
        self.fet_cmd_off = False
        self.lie = BMSLie()
        self._oc_until = -1.0
        self.t = 0.0  # seconds simulated
        self.current = 0.0  # battery current, + = charging
        self.charge_fet = True
        self.discharge_fet = True
        self._ovp = False
        self._uvp = False
        self.discharged_ah = 0.0
        self._r = _R_CELL_100AH * 100.0 / self.capacity_ah
        # cells spread evenly around the pack SOC, the highest last
        base = soc * _USABLE / 100.0
        self.cell_soc = [0.0] * cells
        for i in range(cells):
            off = 0.0 if cells == 1 else imbalance_pct * (i / (cells - 1) - 0.5)
            v = base + off
            self.cell_soc[i] = 0.0 if v < 0.0 else (100.5 if v > 100.5 else v)
        self._reading = SimReading(cells, 2)
        self._cells_list = self._reading.cells
        self._temps_list = self._reading.temperatures

    def set_load_schedule(self, schedule):
        """A daily load pattern: [[hour_of_day, amps], ...] with ascending hours in 0..24;
        each load applies from its hour until the next (the last one wraps past midnight).
        The battery's own time `t` starts at midnight; the schedule replaces `load_a`."""
        last = -1
        for entry in schedule:
            if len(entry) != 2:
                raise ValueError("load_schedule entries are [hour, amps]")
            h, a = entry
            if not 0 <= h < 24 or h <= last:
                raise ValueError("load_schedule hours must ascend within 0..24")
            if a < 0:
                raise ValueError("load_schedule amps must be >= 0")
            last = h
        if not schedule:
            raise ValueError("load_schedule must not be empty")
        self.load_schedule = tuple((float(h) * 3600.0, float(a)) for h, a in schedule)

    def _scheduled_load(self):
        sched = self.load_schedule
        tod = self.t % 86400.0
        a = sched[-1][1]
        for start, amps in sched:
            if tod >= start:
                a = amps
            else:
                break
        return a

    def soc(self):
        """The SOC the BMS reports, in %."""
        total = 0.0
        for s in self.cell_soc:
            total += s
        s = total / self.n * 100.0 / _USABLE
        return 0.0 if s < 0.0 else (100.0 if s > 100.0 else s)

    def step(self, dt, relay):
        """Advance `dt` seconds with the charger relay on or off."""
        if self.load_schedule is not None:
            self.load_a = self._scheduled_load()
        self._protect()
        n = self.n
        cs = self.cell_soc
        mean = 0.0
        top = cs[0]
        for s in cs:
            mean += s
            if s > top:
                top = s
        mean /= n
        load = self.load_a if self.discharge_fet else 0.0
        if (relay or self.relay_welded) and self.charger_a > 0.0 and self.charge_fet:
            if mean < _TAPER_FROM:
                taper = self.charger_a
            elif mean < _TAPER_TO:
                taper = self.charger_a * (_TAPER_TO - mean) / (_TAPER_TO - _TAPER_FROM)
            else:
                taper = 0.0
            cv = self.charger_cv_cell_v
            if cv is not None:
                # constant voltage: the pack's mean cell may not pass cv under charge
                lim = (cv - ocv(mean)) / self._r
                if lim < taper:
                    taper = lim if lim > 0.0 else 0.0
            # the charger feeds the load first, up to its rating; the battery gets the rest
            spare = self.charger_a - load
            cur = taper if taper < spare else spare
        else:
            cur = -load
        self.current = cur
        lim = self.bms_charge_limit_a
        if lim is not None and cur > lim:
            self._oc_until = self.t + dt + _OC_TRIP_S  # the BMS trips and opens its charge MOSFET
        pct = cur * dt / 36.0 / self.capacity_ah  # % of one cell's capacity
        if cur < 0.0:
            self.discharged_ah -= cur * dt / 3600.0
        # balancing: bleed cells above the lowest while charging at the top knee
        bleed = 0.0
        if cur > 0.0 and self.balance_a > 0.0 and ocv(top) >= _BALANCE_FROM_V:
            bleed = self.balance_a * dt / 36.0 / self.capacity_ah
            low = cs[0]
            for s in cs:
                if s < low:
                    low = s
        for i in range(n):
            v = cs[i] + pct
            if bleed and cs[i] > low + 0.01:
                v -= bleed
                if v < low:
                    v = low
            cs[i] = 0.0 if v < 0.0 else (101.0 if v > 101.0 else v)
        self.t += dt

    def cell_voltage(self, i):
        return ocv(self.cell_soc[i]) + self.current * self._r

    def _protect(self):
        # the BMS's own protections, with release hysteresis (the curve is monotonic, so the
        # extreme cells decide)
        cs = self.cell_soc
        hi = lo = cs[0]
        for s in cs:
            if s > hi:
                hi = s
            elif s < lo:
                lo = s
        vmax = ocv(hi)
        vmin = ocv(lo)
        if vmax >= _OVP_V:
            self._ovp = True
        elif vmax <= _OVP_RELEASE_V:
            self._ovp = False
        if vmin <= _UVP_V:
            self._uvp = True
        elif vmin >= _UVP_V + 0.3:
            self._uvp = False
        t = self.temperature_c
        self.charge_fet = not (self._ovp or self.fault is not None or t < _CHG_TEMP_MIN or t > _CHG_TEMP_MAX
                               or self.fet_cmd_off or self.t < self._oc_until)
        self.discharge_fet = not (self._uvp or self.fault == "short_circuit")

    def reading(self, received=None):
        """The BMS's answer now: a SimReading updated in place (the same object every call)."""
        self._protect()
        r = self._reading
        lie = self.lie
        cur = self.current
        total = 0.0
        cells = self._cells_list
        for i in range(self.n):
            v = self.cell_voltage(i)
            cells[i] = v
            total += v
        r.cells = [] if lie.cells_missing else cells
        r.temperatures = [] if lie.temps_missing else self._temps_list
        r.voltage = total + lie.voltage_offset_v
        r.current = cur
        soc = self.soc() + lie.soc_offset
        if lie.soc_stuck is not None:
            soc = lie.soc_stuck
        soc = lie.soc_max if soc > lie.soc_max else soc
        r.soc = 0.0 if soc < 0.0 else (100.0 if soc > 100.0 else soc)
        r.nominal_ah = self.capacity_ah
        r.remaining_ah = self.capacity_ah * r.soc / 100.0
        r.cycles = int(self.discharged_ah / self.capacity_ah)
        temps = self._temps_list
        for i in range(len(temps)):
            temps[i] = self.temperature_c
        r.charge_fet = self.charge_fet
        r.discharge_fet = self.discharge_fet
        f = r.faults
        del f[:]
        if self._ovp:
            f.append("cell_overvoltage")
        if self._uvp:
            f.append("cell_undervoltage")
        t = self.temperature_c
        if t < _CHG_TEMP_MIN:
            f.append("charge_undertemp")
        elif t > _CHG_TEMP_MAX:
            f.append("charge_overtemp")
        if self.fault is not None and self.fault != "charge_fet_off" and self.fault not in f:
            f.append(self.fault)
        if self.t < self._oc_until and "charge_overcurrent" not in f:
            f.append("charge_overcurrent")
        if lie.alarm is not None:
            f.append(lie.alarm)
        r.received = received
        return r

    def spread_mv(self):
        """Cell voltage spread at open circuit, in mV (what balancing reduces)."""
        lo = 9.0
        hi = 0.0
        for s in self.cell_soc:
            v = ocv(s)
            lo = v if v < lo else lo
            hi = v if v > hi else hi
        return (hi - lo) * 1000.0

    def spread_pct(self):
        lo = 200.0
        hi = -1.0
        for s in self.cell_soc:
            lo = s if s < lo else lo
            hi = s if s > hi else hi
        return hi - lo
