# What the charge controller keeps across a reboot: save() builds a small JSON-able dict,
# restore() takes it back field by field (stored data may be old or damaged: each field only
# if it is sane, never raising), credit_downtime() lets the holds count the time the device
# was off at the first update after a restore (smartbms.charge.timing says how).
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from smartbms.charge import alarms as A
from smartbms.charge.timing import downtime_s
from smartbms.charge.wear import CAP_S, SwitchBudget

SAVE_EVERY_S = const(300)  # session progress and holds are persisted at this granularity
FULL_SAVE_S = const(3600)  # and the count towards a due full charge at this one
_DAY_S = const(86400)
_MAX_FULL_S = const(3650 * 86400)
_MAX_WALL = 4102444800  # 2100-01-01: beyond it a stored time is damage (and int(inf) raises)
PHASES = ("charging", "balancing", "resting", "timeout")


def _int(v, lo, hi):
    """v when it is an int within lo..hi, else None."""
    if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi:
        return v
    return None


def save(c):
    """A small JSON-able dict of what must survive a reboot. The app stores it when
    `dirty` is set, then clears `dirty`."""
    d = {"v": 1, "phase": c._phase or c._restored, "full_run": c._full_run,
         "session_s": c._session_s, "balance_s": c._balance_s, "full_s": c._full_s}
    if d["phase"] is None:
        del d["phase"]
    for key, v in (("full_at", c._full_at), ("hv_soc", c._hv_soc), ("w", c._wall),
                   ("soc0", c._start_soc), ("fit", c._fit_s), ("hold_s", c._hold_s),
                   ("slow", c._slow), ("cells", c._inputs.cells_n),
                   ("al", c.alarms.mask & A.LATCHED), ("temp", c._temp.side if c._temp.block else 0)):
        if v:
            d[key] = v if type(v) is not float else round(v, 1)
    if c._sup.dead_n:
        d["dead"] = [c._sup.dead_n, c._sup.dead_left]
    if c._wear.credit < CAP_S:
        d["wear"] = c._wear.credit
    return d

def restore(c, p):
    # Stored data may be old or damaged: take each field only if it is sane, never raise.
    if not isinstance(p, dict):
        return
    phase = p.get("phase")
    if phase in PHASES:
        c._restored = phase
    c._full_run = p.get("full_run") is True
    for name in ("session_s", "balance_s", "hold_s"):
        v = _int(p.get(name), 0, 10 * _DAY_S - 1)
        if v is not None:
            setattr(c, "_" + name, v)
    c._saved_session_s = c._session_s
    v = _int(p.get("full_s"), 0, _MAX_FULL_S - 1)  # absent in older files: counted from this boot
    if v is not None:
        c._full_s = v
        c._credit_full = True
    for key, attr, lo, hi in (("fit", "_fit_s", 1, 10 * _DAY_S), ("soc0", "_start_soc", 0, 100)):
        v = p.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi:
            setattr(c, attr, int(v))
    for key, attr in (("full_at", "_full_at"), ("w", "_saved_wall")):
        v = p.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < _MAX_WALL:
            setattr(c, attr, int(v))
    v = p.get("hv_soc")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100:
        c._hv_soc = v
    c._slow = p.get("slow") is True
    v = _int(p.get("cells"), 1, 64)
    if v:
        c._inputs.cells_n = v
    v = _int(p.get("temp"), -1, 1)
    if v:  # the temperature hysteresis survives a reboot
        c._temp.restore(v)
    v = _int(p.get("al"), 1, A.LATCHED)
    if v:
        for i in (A.RELAY_STUCK, A.OVERCURRENT):
            if v & (1 << i):
                c.alarms.raise_(i, A.NAMES[i] + " (raised before the restart)", 0)
        c.bms_charge_off = c.alarms.active(A.RELAY_STUCK)
    v = p.get("dead")
    if isinstance(v, list) and len(v) == 2 and _int(v[0], 1, 100) and _int(v[1], 0, 10 * _DAY_S) is not None:
        c._sup.dead_n, c._sup.dead_left = v[0], v[1]
        c.alarms.raise_(A.CHARGER_DEAD, "charger dead (found before the restart)", 0)
    v = _int(p.get("wear"), 0, CAP_S)
    if v is not None:
        c._wear = SwitchBudget(v)

def credit_downtime(c, wall):
    """First update after a restore: holds count the time the device was off."""
    d = downtime_s(c._saved_wall, wall)
    if c._credit_full:
        # without a known downtime, up to FULL_SAVE_S may have passed since the save:
        # count it, so a reboot loop brings a due full charge early rather than never
        c._full_s += FULL_SAVE_S if d is None else d
        c._saved_full_s = c._full_s
    gap = SAVE_EVERY_S if d is None else d
    if c._restored == "timeout":
        c._hold_s += gap
        c._saved_hold_s = c._hold_s
    sup = c._sup
    if sup.dead_left:
        sup.dead_left = sup.dead_left - gap if sup.dead_left > gap else 0
