# The one state document on <base>/state that every Home Assistant entity reads
# (smartbms.mqtt.discovery): flat and short-keyed, from the data GET /api/status shows.
import json

from smartbms import clock
from smartbms.charge.alarms import NAMES as ALARMS
from smartbms.charge.texts import STATES


def _r(x, n):
    return None if x is None else round(x, n)


def doc(ctx, ov_minutes):
    c = ctx.controller
    link = ctx.link
    r = link.latest if link is not None and not getattr(ctx, "link_paused", False) else None
    now = clock.now()
    d = {"soc": None, "v": None, "i": None, "p": None, "ah": None, "cyc": None, "c": [], "t": [],
         "cmin": None, "cmax": None, "cd": None}
    if r is not None:
        d["soc"] = r.soc
        d["v"] = _r(r.voltage, 2)
        d["i"] = _r(r.current, 2)
        if r.voltage is not None and r.current is not None:
            d["p"] = round(r.voltage * r.current, 1)
        d["ah"] = _r(r.remaining_ah, 2)
        d["cyc"] = r.cycles
        cells = r.cells or []
        d["c"] = [_r(v, 3) for v in cells]
        d["t"] = [_r(v, 1) for v in (r.temperatures or [])]
        if cells:
            lo = min(cells)
            hi = max(cells)
            d["cmin"] = round(lo, 3)
            d["cmax"] = round(hi, 3)
            d["cd"] = round(hi - lo, 3)
    d["relay"] = "ON" if c.relay and not ctx.safe_mode else "OFF"
    d["st"] = c.state
    d["why"] = c.reason
    d["link"] = "ON" if link is not None and link.connected else "OFF"
    d["age"] = link.age_s() if r is not None else None
    st = link.stats if link is not None else None
    d["ok"] = round(100 * st["ok"] / st["polls"]) if st and st.get("polls") else None
    mask = c.alarms.mask
    d["al"] = [ALARMS[i] for i in range(len(ALARMS)) if mask & (1 << i)]
    d["ov"] = c.override_info(now)["mode"]
    d["ovm"] = ov_minutes
    s = ctx.settings
    d["min_soc"] = s["min_soc"]
    d["max_soc"] = s["max_soc"]
    return d


def payload(ctx, ov_minutes):
    return json.dumps(doc(ctx, ov_minutes))


def signature(ctx):
    """A small int that changes when the relay, the charger state, the SOC (1 % steps), the
    alarms or the override change: checked every second without allocating."""
    c = ctx.controller
    link = ctx.link
    r = link.latest if link is not None else None
    soc = r.soc if r is not None and r.soc is not None else -1
    man = getattr(c, "_man", None)
    ov = man.mode if man is not None and clock.now() < man.until else 0
    st = STATES.index(c.state) if c.state in STATES else 15
    return (1 if c.relay else 0) | st << 1 | (int(soc) + 1) << 5 | (ov & 3) << 12 | c.alarms.mask << 14
