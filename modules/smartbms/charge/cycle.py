# The charge cycle: charging -> balancing -> resting -> charging ..., with the timeout hold
# beside it. These functions move the Controller's phase on (they are its methods, kept in a
# module of their own): what starts a charge (SOC at the rest limit, a low cell, a due full
# charge, the end of a timeout's rest), what ends it (the target SOC, the tail current, full
# by voltage, a confirmed high cell, the session limit) and how a reboot resumes it.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from smartbms.charge import texts
from smartbms.charge.persist import SAVE_EVERY_S
from smartbms.charge.texts import BALANCING, CHARGING, RESTING, TIMEOUT, fmt
from smartbms.charge.timing import fit_timeout_s

_DAY_S = const(86400)
_HV_REARM_PTS = const(5)  # a charge ended below its target by a high cell re-arms this much lower
_PROGRESS_PTS = const(2)  # a timed-out charge that gained this much SOC was only slow


def begin(c, r, now):
    """First fresh reading after boot: pick up the persisted cycle, or start charging."""
    p = c._restored
    c._restored = None
    if p == RESTING:
        rest_session(c)
        c._set_phase(RESTING, "resting since the last full charge (before restart)", texts.rest_next(rest_limit(c)), now)
    elif p == TIMEOUT:
        c._set_phase(TIMEOUT, "charge timeout (before restart)", texts.timeout_next(c._s, c._slow), now)
    elif p == CHARGING or p == BALANCING:
        # Progress is saved every SAVE_EVERY_S, so up to that much relay time may be
        # missing: count it, or reboots closer than that would never reach the timeout.
        c._session_s += SAVE_EVERY_S
        if p == BALANCING:
            c._balance_s += SAVE_EVERY_S
        c._saved_session_s = c._session_s
        c._set_phase(p, "resuming the charge after restart",
                        texts.charge_next(c._s, c._full_run) if p == CHARGING else texts.balance_next(c._s), now)
    else:
        c._full_run = False
        start_charge(c, now, "first charge to the max level", r)


def full_due(c):
    s = c._s
    days = s["full_every_days"]
    if not days or s["max_soc"] >= 100:
        return False
    # device time (with reboot credits): a wall clock that jumps cannot delay it
    return c._full_s >= days * _DAY_S


def start_charge(c, now, why, r):
    c._full_run = c._s["max_soc"] >= 100 or full_due(c)
    rest_session(c)
    c._hv_soc = None
    c._start_soc = None if r is None or r.soc is None else int(r.soc)
    c._fit_s = 0
    c._slow = False
    c._top.reset()
    c._v_start = False
    c._soc_low_full = False
    c._set_phase(CHARGING, why, texts.charge_next(c._s, c._full_run), now)


def end_charge(c, now, wall, why, r, over_voltage=False):
    # Any end of a full run counts as the full charge, an over-voltage stop too: the pack
    # is then as full as it safely gets, and a due full charge must not start again at once.
    # (an over-voltage far below min_soc is a fault of the BMS, not a full pack)
    if c._full_run and not (over_voltage and r is not None and r.soc < c._s["min_soc"]):
        c.full_charges += 1
        c._full_at = wall
        c._full_s = 0
        c._saved_full_s = 0
    rest_session(c)
    c._top.high = False
    c._set_phase(RESTING, why, texts.rest_next(rest_limit(c)), now)


def rest_session(c):
    # resting has no charging session: a manual "on" from here starts counting at 0
    c._session_s = 0
    c._balance_s = 0
    c._saved_session_s = 0
    c._hold_s = 0
    c._saved_hold_s = 0


def advance(c, r, now, wall, s, settled, below_top, cap):
    """Moves the charge cycle on; returns True when the change is a safety stop."""
    phase = c._phase
    soc = r.soc
    cur = r.current
    on_settled = c.relay and settled and cur is not None
    if phase == CHARGING:
        tail = c._lim.tail_a(s, cap)
        if on_settled and tail > 0 and cur <= tail and r.voltage is not None and r.cells \
                and r.voltage >= c._lim.full_v(s, len(r.cells)):
            # a voltage anchor: full whatever the SOC says (a BMS that stops at 99 %)
            end_charge(c, now, wall, "full by voltage: %.2f V, tail current %.1f A <= %.1f A" % (
                r.voltage, cur, tail), r)
            # a SOC that still says "recharge" after a full charge is not believed until the
            # BMS corrects it (rises above the limit); the low-cell rule starts the next charge
            c._soc_low_full = soc <= rest_limit(c)
            return False
        if on_settled and not c._fit_s and below_top and cur > 0:
            # the first settled charging reading: what is left, at this current
            amps = s["charger_a"] or cur
            c._fit_s = c._session_s + fit_timeout_s(cap, c._target(), soc, amps,
                                                          s["eoc_max_min"], c._lim.cap_s(s))
            c.dirty = True
        target = c._target()
        if soc >= target and not c._soc_bad():
            why = "SOC %s %% >= %d %%" % (fmt(soc), target)
            if target >= 100 and s["eoc_max_min"] > 0:
                c._balance_s = 0
                c._set_phase(BALANCING, why + ": balancing", texts.balance_next(c._s), now)
            else:
                end_charge(c, now, wall, why, r)
                return False
    elif phase == BALANCING:
        # only a reading taken while the charger runs shows the tail: after a BLE drop, a
        # MOSFET blip or a reboot the relay is off and the current is the load's
        tail = c._lim.tail_a(s, cap)
        if on_settled and tail > 0 and cur <= tail:
            end_charge(c, now, wall, "tail current %.1f A <= %.1f A" % (cur, tail), r)
            return False
        if c._balance_s >= s["eoc_max_min"] * 60:
            end_charge(c, now, wall, "balanced for %s min" % fmt(s["eoc_max_min"]), r)
            return False
    elif phase == RESTING:
        lim = rest_limit(c)
        if c._soc_low_full and soc > lim:
            c._soc_low_full = False
        if soc <= lim and not c._soc_low_full:
            start_charge(c, now, "SOC %s %% <= %s %%" % (fmt(soc), fmt(lim)), r)
        elif c._top.low_v():
            start_charge(c, now, "lowest cell below %.2f V (SOC says %s %%)" % (
                s["recharge_cell_v"], fmt(soc)), r)
            c._v_start = True
        elif soc < 100 and full_due(c):
            start_charge(c, now, "full charge due (every %s days)" % fmt(s["full_every_days"]), r)
        return False
    elif phase == TIMEOUT:
        if c._hold_s >= s["timeout_rest_min"] * 60:
            if soc <= s["min_soc"]:
                start_charge(c, now, "SOC %s %% <= %s %% after the timeout rest" % (fmt(soc), fmt(s["min_soc"])), r)
            elif c._slow:
                start_charge(c, now, "slow charge continues after the timeout rest", r)
            elif c._top.low_v():
                start_charge(c, now, "lowest cell below %.2f V after the timeout rest" % s["recharge_cell_v"], r)
        return False
    if c._session_s > c._lim.timeout_s(s, c._fit_s):
        time_out(c, now, r)
        return True
    return False


def time_out(c, now, r):
    c.timeouts += 1
    soc = r.soc if r is not None else None
    s0 = c._start_soc
    # a slow charge re-arms after its rest without waiting for min_soc; with a SOC that
    # cannot tell (stuck, or it disagreed with the cells) the charge counts as slow too
    c._slow = c._soc_bad() or (soc is not None and s0 is not None and soc > c._s["min_soc"]
                                     and soc - s0 >= _PROGRESS_PTS)
    hours = c._session_s / 3600
    c._hold_s = 0
    c._saved_hold_s = 0
    c._set_phase(TIMEOUT, "charging for %s h without reaching the end" % fmt(hours),
                    texts.timeout_next(c._s, c._slow), now)

# Derived limits are cached per input value: update() then allocates no floats for them.

def rest_limit(c):
    # An over-voltage stop below the target (a high cell, a BMS flag) counts as full: the
    # next charge waits for SOC to drop _HV_REARM_PTS below where it stopped, so it cannot
    # chatter against the same cell, but never waits below min_soc - _HV_REARM_PTS.
    lim = c._s["min_soc"]
    hv = c._hv_soc
    if hv is not None and hv - _HV_REARM_PTS < lim:
        lo = lim - _HV_REARM_PTS
        return hv - _HV_REARM_PTS if hv - _HV_REARM_PTS > lo else lo
    return lim
