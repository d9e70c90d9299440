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

MARGIN_S = const(1800)
MAX_DOWNTIME_S = const(30 * 86400)  # a longer gap is a clock problem, not a downtime


def fit_timeout_s(cap_ah, target, soc, amps, eoc_max_min, cap_s):
    """The session limit in seconds for charging from `soc` to `target` %."""
    if not cap_ah or not amps or amps <= 0 or soc >= target:
        return cap_s
    need_s = cap_ah * (target - soc) * 36 / amps  # 1 % of C = 36 A*s per Ah
    t = int(need_s * 5 / 4) + MARGIN_S + eoc_max_min * 60
    return t if t < cap_s else cap_s


def downtime_s(saved_wall, wall):
    """Seconds the device was off by the wall clock, or None when unknown or not sane."""
    if saved_wall is None or wall is None:
        return None
    d = wall - saved_wall
    if 0 <= d <= MAX_DOWNTIME_S:
        return d
    return None
