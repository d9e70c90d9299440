# The charger's state in an owner's words, derived at every answer from the controller, the
# current settings, the latest reading and the clock: a changed setting or a passing minute
# shows at once (the controller's own `reason`/`next` are built when a block changes, for a
# loop that allocates nothing, and stay as the technical detail). Called by the web layer
# only, never from the control loop. Pure logic.
from smartbms.charge import cycle, texts
from smartbms.charge.manual import OV_ON
from smartbms.charge.texts import (B_DEAD, B_OVERRIDE, B_RELAX, BALANCING, CHARGING, FAULT,
                                   NO_DATA, OVERRIDE, PAUSED, RESTING, STARTUP, TIMEOUT, fmt)

IDLE_A = 0.2  # below this a current is noise: "idle"


def _mins(seconds):
    """Whole minutes left, rounded up, never below 1 while something is still pending."""
    m = (int(seconds) + 59) // 60
    return m if m > 1 else 1


def _in(minutes):
    if minutes >= 120:
        return "%s h" % fmt(round(minutes / 60, 1))
    return "%d min" % minutes


def flow(r):
    """"Charging 12.3 A", "Discharging 3.0 A", "Idle" or None (no current known)."""
    if r is None or r.current is None or r.current != r.current:
        return None
    a = r.current
    if a >= IDLE_A:
        return "Charging %.1f A" % a
    if a <= -IDLE_A:
        return "Discharging %.1f A" % -a
    return "Idle"


def ended(why):
    """A charge's end reason from the cycle, in words."""
    if why.startswith("tail current"):
        # "tail current 4.8 A <= 5.0 A": the limit is the owner's number
        return "Charge ended: the current fell to %s" % why.rsplit("<= ", 1)[-1]
    if why.startswith("full by voltage"):
        return "Charge ended: full by voltage (%s)" % why.split(": ", 1)[-1].split(",", 1)[0]
    if why.startswith("balanced for"):
        return "Charge ended: " + why
    if why.startswith("SOC "):
        return "Charge ended: reached " + why.split(">= ", 1)[-1]
    if why.startswith("cell ") or "over-voltage" in why:
        return "Charge ended: a cell reached its limit (%s)" % why
    if why.startswith("resting since"):
        return "Full charge done before the restart"
    return "Charge ended: " + why


def _held(c, s, now):
    """A relay switch the controller holds back, counted down from now (its own text is
    built once, when the hold begins)."""
    if c._held == 2:  # only a switch-on waits for the wear budget
        return "relay switches on in %s (relay wear limit: 6 switches an hour)" % _in(_mins(c._wear.wait_s()))
    left = s["min_switch_s"] - (now - c._last_switch)
    if left <= 0:
        when = "at the next reading"
    else:
        when = "in %d s" % left if left < 120 else "in " + _in(_mins(left))
    return "relay switches %s %s (at least %s s between switches)" % (
        "off" if c.relay else "on", when, fmt(s["min_switch_s"]))


def _next(c, s, now, block):
    """What happens next, with the numbers of the settings as they are now."""
    state = c.state
    if c._held:
        return _held(c, s, now)
    if block == B_OVERRIDE:
        info = c.override_info(now)
        left = info["remaining_min"]
        if left is None:
            return "automatic control resumes now"
        return "automatic control resumes in %s" % _in(left)
    if block == B_DEAD:
        return "tries the charger again in %s, or when the alarm is cleared" % _in(_mins(c._sup.dead_left))
    if block == B_RELAX:
        left = s["top_balance_min"] * 60 - max(0, c._top._top_s)
        return "charges again when the high cell is below %.2f V (waits up to %s more)" % (
            c._lim.relax_v(s), _in(_mins(max(0, left))))
    if block:  # the block's own words, built again: a temperature band follows its settings
        return texts.block_texts(c, block, now)[2]
    if state == RESTING:
        return texts.rest_next(cycle.rest_limit(c))
    if state == CHARGING:
        return texts.charge_next(s, c._full_run)
    if state == BALANCING:
        left = s["eoc_max_min"] * 60 - c._balance_s
        return "stops at the tail current, or in %s at the latest" % _in(_mins(max(0, left)))
    if state == TIMEOUT:
        left = s["timeout_rest_min"] * 60 - c._hold_s
        rest = "after %s more rest" % _in(_mins(left)) if left > 0 else "now the rest is over"
        if c._slow:
            return "continues the slow charge %s, or on a manual reset" % rest
        return "charges again at SOC <= %s %% %s, or on a manual reset" % (fmt(s["min_soc"]), rest)
    return c.next


def _summary(c, s, r, now, block):
    state = c.state
    if state == STARTUP:
        return "Waiting for the battery's first reading"
    if state == NO_DATA:
        return "No data from the battery: charger off"
    if state == OVERRIDE:
        info = c.override_info(now)
        left = info["remaining_min"]
        what = "on" if c._man.mode == OV_ON else "off"
        return "Manual: charger %s%s" % (what, "" if left is None else " for %s more" % _in(left))
    if state == PAUSED:
        return "Paused: " + ("charging is not allowed now" if c._pause_why == 1 else
                             "outside the charge window")
    if state == FAULT:
        if block == B_DEAD:
            return "Charger gives no current: charger off"
        return "Stopped for safety: " + c.reason
    if state == CHARGING:
        return "Charging to %d %%" % c._target()
    if state == BALANCING:
        if block == B_RELAX:
            return "Full: waiting for a high cell to settle"
        return "Full, balancing the cells"
    if state == RESTING:
        # the last charge's target: 100 % (or a due full charge) is "full"
        return "%s, resting until %s %%" % ("Full" if c._full_run else "Charged", fmt(cycle.rest_limit(c)))
    if state == TIMEOUT:
        return "Charge took too long: resting"
    return state


def describe(c, r, now):
    """{"summary", "next", "flow", "ended"} for GET /api/status (see the module comment)."""
    s = c._s
    block = c._block if c._block > 0 else 0
    out = {"summary": _summary(c, s, r, now, block), "next": _next(c, s, now, block), "flow": flow(r),
           "ended": None}
    if c._phase == RESTING and c._phase_reason:
        out["ended"] = ended(c._phase_reason)
    return out
