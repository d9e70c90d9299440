# Time limits that fit the pack, and how holds carry across a reboot.
#
# The charge timeout: capacity x (target - SOC) / the charger's current (the `charger_a`
# setting, or the current measured once the charge settled), x 5/4, plus 30 min and the
# balancing time; never more than `charge_timeout_h`.
#
# Holds (a timeout's rest, a dead charger's back-off, the count towards a due full charge)
# run on device time while the device runs, so a wall clock that jumps moves none of them.
# Across a reboot they add the time the device was off: the wall-clock difference when both
# ends are known and sane, otherwise a conservative fixed credit (what may have passed since
# the last save). Either way a reboot loop cannot hold charging for ever.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_MARGIN_S = const(1800)
_MAX_DOWNTIME_S = const(30 * 86400)  # a longer gap is a clock problem, not a downtime


def fit_timeout_s(cap_ah, target, soc, amps, eoc_max_min, cap_s):
    """The session limit in seconds for charging from `soc` to `target` %."""
    if not cap_ah or not amps or amps <= 0 or soc >= target:
        return cap_s
    need_s = cap_ah * (target - soc) * 36 / amps  # 1 % of C = 36 A*s per Ah
    t = int(need_s * 5 / 4) + _MARGIN_S + eoc_max_min * 60
    return t if t < cap_s else cap_s


def downtime_s(saved_wall, wall):
    """Seconds the device was off by the wall clock, or None when unknown or not sane."""
    if saved_wall is None or wall is None:
        return None
    d = wall - saved_wall
    if 0 <= d <= _MAX_DOWNTIME_S:
        return d
    return None


class Limits:
    """Limits derived from the settings and the pack, cached per input value: update() then
    allocates no floats for them."""

    RELAX_V = 0.10  # top balance: resume when the high cell is this far below cell_max_v

    def __init__(self):
        self._h = None
        self._cap_s = 0
        self._c = None
        self._ah = None
        self._tail = 0.0
        self._fv = None
        self._fn = 0
        self._full_v = 0.0
        self._rv = None
        self._relax_v = 0.0

    def cap_s(self, s):
        """charge_timeout_h in seconds: the longest session whatever the fit says."""
        h = s["charge_timeout_h"]
        if h != self._h:
            self._h = h
            self._cap_s = int(h * 3600)
        return self._cap_s

    def timeout_s(self, s, fit_s):
        cap = self.cap_s(s)
        return fit_s if 0 < fit_s < cap else cap

    def tail_a(self, s, cap_ah):
        """The tail current that ends a charge (0 when the capacity is unknown)."""
        c = s["tail_current_c"]
        if c != self._c or cap_ah != self._ah:
            self._c = c
            self._ah = cap_ah
            self._tail = c * (cap_ah or 0)
        return self._tail

    def full_v(self, s, n):
        """The pack voltage of "full" (full_cell_v for each of the n cells)."""
        v = s["full_cell_v"]
        if v != self._fv or n != self._fn:
            self._fv = v
            self._fn = n
            self._full_v = v * n
        return self._full_v

    def relax_v(self, s):
        v = s["cell_max_v"]
        if v != self._rv:
            self._rv = v
            self._relax_v = v - self.RELAX_V
        return self._relax_v
