# Plausibility of a BMS reading: a reading that is incomplete or contradicts itself stops
# charging (with an alarm), and charging resumes only after _GOOD_READINGS good ones in a row.
# Checks, in order: a value that is not a number, no cells, a cell count that changed, no
# temperature while sensors are expected, a pack voltage far from the sum of its cells, and a
# family alarm that says the BMS cannot be trusted (smartbms.bms.reading.untrusted).
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from smartbms.bms.reading import untrusted
from smartbms.charge import alarms as A

_GOOD_READINGS = const(3)
# pack voltage vs the cell sum: a BMS measures both, wiring and timing explain a little
_SUM_TOL_V = 0.25
_SUM_TOL_PER_CELL_V = 0.05


class InputCheck:
    def __init__(self):
        self.bad = -1  # the alarm index that blocks charging, -1 = none
        self.text = ""
        self.changed = False  # the blocking problem (or its text) changed in the last check
        self.cells_n = 0  # the pack's cell count, learned from the first good reading
        self._good = 0
        self._detail = None
        self._memo = []  # [voltage, cells...] of the last cell-sum check (float refs)
        self._memo_ok = True
        self._memo_sum = 0.0

    def forget_cells(self):
        """The owner cleared the alarms: the next good reading sets the cell count again."""
        self.cells_n = 0

    def check(self, r, s, new, alarms, now):
        """Checks reading `r` (`new`: not seen before); returns the blocking alarm or -1."""
        self.changed = False
        i, detail = self._problem(r, s)
        if i >= 0:
            self._good = 0
            if i != self.bad or detail is not self._detail:
                # texts are built only when the problem changes
                if self.bad >= 0 and self.bad != i:
                    alarms.clear(self.bad)
                self.bad = i
                self._detail = detail
                self.text = self._text(i, r, detail)
                self.changed = True
                alarms.raise_(i, self.text, now)
            return i
        if self.bad >= 0:
            if new:
                self._good += 1
            if self._good >= _GOOD_READINGS:
                alarms.clear(self.bad)
                self.bad = -1
                self.changed = True
        if self.cells_n == 0:
            self.cells_n = len(r.cells)
        return self.bad

    def _problem(self, r, s):
        """(alarm index, detail or None) of the first problem, else (-1, None)."""
        cells = r.cells
        for v in cells:
            if v != v:
                return A.BAD_VALUE, "cell"
        for t in r.temperatures:
            if t != t:
                return A.BAD_VALUE, "temperature"
        c = r.current
        if c is not None and c != c:
            return A.BAD_VALUE, "current"
        v = r.voltage
        if v is not None and v != v:
            return A.BAD_VALUE, "voltage"
        n = len(cells)
        if n == 0:
            return A.NO_CELLS, None
        if self.cells_n and n != self.cells_n:
            return A.CELL_COUNT, None
        if not r.temperatures and s["temp_sensors_required"]:
            return A.NO_TEMPERATURE, None
        if v is not None and not self._sum_ok(v, cells):
            return A.VOLTAGE_MISMATCH, None
        for f in r.faults:
            if untrusted(f):
                return A.BMS_ERROR, f
        return -1, None

    def _sum_ok(self, v, cells):
        # Memoised on the inputs: summing floats allocates, so it runs only when the voltage
        # or a cell changed (a new frame), not on every control tick.
        memo = self._memo
        n = len(cells)
        if len(memo) == n + 1 and memo[0] == v:
            same = True
            for k in range(n):
                if memo[k + 1] != cells[k]:
                    same = False
                    break
            if same:
                return self._memo_ok
        total = 0.0
        for c in cells:
            total += c
        tol = _SUM_TOL_V + _SUM_TOL_PER_CELL_V * n
        ok = -tol <= v - total <= tol
        if len(memo) != n + 1:
            memo = self._memo = [0.0] * (n + 1)
        memo[0] = v
        for k in range(n):
            memo[k + 1] = cells[k]
        self._memo_ok = ok
        self._memo_sum = total
        return ok

    def _text(self, i, r, detail):
        if i == A.BAD_VALUE:
            if detail == "cell":
                return "BMS cell voltage is not a number"
            if detail == "temperature":
                return "temperature reading is not a number"
            return "BMS %s is not a number" % detail
        if i == A.NO_CELLS:
            return "BMS reports no cell voltages"
        if i == A.CELL_COUNT:
            return "cell count changed from %d to %d" % (self.cells_n, len(r.cells))
        if i == A.NO_TEMPERATURE:
            return "BMS reports no temperature (setting temp_sensors_required)"
        if i == A.VOLTAGE_MISMATCH:
            return "pack voltage %.2f V but the cells add up to %.2f V" % (r.voltage, self._memo_sum)
        return "BMS alarm: " + detail

    def next_text(self):
        return "resumes after %d good BMS readings in a row" % _GOOD_READINGS
