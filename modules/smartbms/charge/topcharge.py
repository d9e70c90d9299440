# The top of a charge and the voltage anchors.
#  - A cell at cell_max_v (or the BMS's own over-voltage flag) stops the relay at once. It
#    ends the charge only when OV_CONFIRM readings in a row confirm it; a one-reading glitch
#    is a fault that clears. Otherwise the charge goes on once the high cell has relaxed
#    RELAX_V below cell_max_v: a bounded top balance (top_balance_min from the first stop
#    of the charge; after it, the next stop or a cell that does not relax ends the charge).
#  - The lowest cell below recharge_cell_v for _LOW_V_S starts a charge whatever the SOC says.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from smartbms.charge.texts import OV_CONFIRM, min_of

OV_FAULTS = ("cell_overvoltage", "pack_overvoltage")
_LOW_V_S = const(300)


class TopOfCharge:
    def __init__(self):
        self.high = False  # charging paused by a high cell, until it relaxes
        self.text = ""
        self._n = 0  # readings in a row with a high cell or a BMS over-voltage flag
        self._top_s = -1  # seconds since the first high-cell stop of this charge
        self._low_v_s = 0

    def reset(self):
        """A new charge."""
        self.high = False
        self._top_s = -1

    def tick(self, dt, charging):
        if charging and self._top_s >= 0:
            self._top_s += dt

    def over(self, r, cell_max):
        for v in r.cells:
            if v >= cell_max:  # a NaN is an input fault (smartbms.charge.inputs)
                return True
        for f in r.faults:
            if f in OV_FAULTS:
                return True
        return False

    def expired(self, s):
        return self._top_s >= s["top_balance_min"] * 60

    def stop(self, top, cell_max, new, s):
        """An over-voltage reading during a charge. Returns True when it ends the charge
        (confirmed, or the top balance is over); sets `changed` when the texts change."""
        if new:
            self._n += 1
        self.changed = False
        if not self.high:
            self.high = True
            self.changed = True
            if top is not None and top >= cell_max:
                self.text = "cell %.2f V >= %.2f V" % (top, cell_max)
            else:
                self.text = "BMS protection: over-voltage"
            if self._top_s < 0:
                self._top_s = 0
        if self._n >= OV_CONFIRM or self.expired(s):
            self.high = False
            return True
        return False

    def clear(self):
        self._n = 0

    def check_low_v(self, cells, s, dt):
        if cells and min_of(cells) < s["recharge_cell_v"]:
            self._low_v_s += dt
        else:
            self._low_v_s = 0

    def low_v(self):
        return self._low_v_s >= _LOW_V_S
