# The words of the charge controller: the state names, and the state, reason and next step
# of each block (built only when the block changes, so a steady state allocates nothing);
# numbers in reasons, extremes of a cell list.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from smartbms.charge import alarms as A

STARTUP = "startup"
CHARGING = "charging"
BALANCING = "balancing"
RESTING = "resting"
TIMEOUT = "timeout"
FAULT = "fault"
NO_DATA = "no_data"
OVERRIDE = "override"
PAUSED = "paused"
STATES = (STARTUP, CHARGING, BALANCING, RESTING, TIMEOUT, FAULT, NO_DATA, OVERRIDE, PAUSED)

# block causes (0 = none); the controller decides, these name them
B_STARTUP = const(1)
B_STALE = const(2)
B_TEMP = const(3)
B_BMS = const(4)
B_FET = const(5)
B_OVERRIDE = const(6)
B_BAD_SOC = const(7)
B_LATCH = const(8)
B_INPUT = const(9)
B_HIGH = const(10)
B_RELAX = const(11)
B_PAUSE = const(12)
B_DEAD = const(13)

from smartbms.charge.safety import ABS_MIN_TEMP_C, fmt  # noqa: F401 ("80" or "80.5": reasons read like a person wrote them)


def max_of(values):
    """The largest value, skipping NaN (returns one of the list's own objects: no allocation)."""
    m = values[0]
    for v in values:
        if v > m or m != m:
            m = v
    return m


def min_of(values):
    m = values[0]
    for v in values:
        if v < m or m != m:
            m = v
    return m


OV_CONFIRM = const(3)  # readings in a row that confirm an over-voltage


def block_texts(c, block, now):
    s = c._s
    r = c._reading
    if block == B_STARTUP:
        return STARTUP, "waiting for the first BMS reading", \
            "charging decisions start with the first fresh BMS reading"
    if block == B_STALE:
        if r is None:
            why = "no BMS reading"
        elif r.soc is None:
            why = "BMS reading without SOC"
        else:
            why = "no BMS data for %d s (limit %s s)" % (now - r.received, fmt(s["stale_s"]))
        return NO_DATA, why, "resumes when fresh BMS data arrives"
    if block == B_LATCH:
        i = c.alarms.latched()
        nxt = "charging stays off until the alarm is cleared (fix the cause first)"
        if i == A.RELAY_STUCK:
            if c.fet_control:
                nxt = "BMS charge MOSFET switched off as a second cut-off until the alarm is cleared"
            elif c.fet_control is False:
                nxt = "this BMS cannot switch its charge MOSFET: disconnect the charger by hand, " \
                    "then clear the alarm"
            else:
                nxt = "asking the BMS to switch its charge MOSFET off; clear the alarm once the relay is fixed"
        return FAULT, c.alarms.messages[i], nxt
    if block == B_TEMP:
        tmin = s["temp_min_c"] if s["temp_min_c"] > ABS_MIN_TEMP_C else ABS_MIN_TEMP_C
        return FAULT, c._temp.text, "resumes when every temperature is within %s..%s °C" % (
            fmt(tmin + s["temp_hyst_c"]), fmt(s["temp_max_c"] - s["temp_hyst_c"]))
    if block == B_BMS:
        return FAULT, "BMS protection: " + c._bms_fault, "resumes when the BMS clears it"
    if block == B_FET:
        return FAULT, "BMS charge MOSFET is off", "resumes when the BMS turns it back on"
    if block == B_BAD_SOC:
        return NO_DATA, "BMS SOC is not a number", "resumes when the BMS reports a valid SOC"
    if block == B_INPUT:
        return FAULT, c._inputs.text, c._inputs.next_text()
    if block == B_HIGH:
        return FAULT, c._top.text, "ends the charge if %d readings in a row confirm it" % OV_CONFIRM
    if block == B_RELAX:
        return BALANCING, "top balance: " + c._top.text, \
            "charges again when the high cell is below %.2f V (for up to %s min)" % (
                c._lim.relax_v(s), fmt(s["top_balance_min"]))
    if block == B_PAUSE:
        if c._pause_why == 1:
            return PAUSED, "charging not allowed (allow_charge)", "charges when allowed again"
        return PAUSED, "outside the charge window %s" % c.allow_info(now)["window"], \
            "charges when the window opens"
    if block == B_DEAD:
        return FAULT, c.alarms.messages[A.CHARGER_DEAD], c._sup.dead_next()
    if block == B_OVERRIDE:
        return OVERRIDE, c._man.reason, c._man.next
    return c._phase, c._phase_reason, c._phase_next


# `next` texts of the charge cycle, built only when the phase changes
def charge_next(s, full_run):
    if full_run:
        if s["eoc_max_min"] > 0:
            return "charges to 100 %%, then balances for up to %s min" % fmt(s["eoc_max_min"])
        return "charges to 100 %"
    return "charges until SOC >= %s %%" % fmt(s["max_soc"])


def balance_next(s):
    return "stops at the tail current or after %s min of balancing" % fmt(s["eoc_max_min"])


def rest_next(limit):
    return "charges again at SOC <= %s %%" % fmt(limit)


def timeout_next(s, slow):
    if slow:
        return "continues the slow charge after %s min of rest, or on a manual reset" % fmt(s["timeout_rest_min"])
    return "charges again at SOC <= %s %% after %s min of rest, or on a manual reset" % (
        fmt(s["min_soc"]), fmt(s["timeout_rest_min"]))
