# The status document of GET /api/status (and of the live stream): the BMS reading, the
# charger in numbers and in plain words, the active alarms and the device, built from the
# app context at every answer (nothing cached past a change).
from smartbms import clock
from smartbms.version import VERSION


def override_doc(ctl, now):
    if hasattr(ctl, "override_info"):
        return ctl.override_info(now)
    mode = {1: "on", 2: "off"}.get(getattr(ctl, "_ov_mode", 0), "auto")
    until = getattr(ctl, "_ov_until", 0)
    if mode == "auto" or until <= now:
        return {"mode": "auto", "remaining_min": None}
    return {"mode": mode, "remaining_min": (until - now + 59) // 60}


def charger_doc(ctx):
    c = ctx.controller
    now = clock.now()
    doc = {
        "relay": bool(c.relay) and not ctx.safe_mode,
        "state": c.state,
        "reason": c.reason,
        "since_s": max(0, now - c.since) if c.since is not None else None,
        "next": c.next,
        "override": override_doc(c, now),
        "allow": c.allow_info(now) if hasattr(c, "allow_info") else None,
    }
    if hasattr(c, "_block"):
        # summary, next (live: today's settings, counting down), flow, ended: in plain words
        from smartbms.charge import plain

        doc.update(plain.describe(c, ctx.link.latest if ctx.link is not None else None, now))
    return doc


def alarms_doc(ctx):
    """The controller's active alarms: [{name, message, latched, stops_charging, since_s}]."""
    c = ctx.controller
    return c.alarms_info(clock.now()) if hasattr(c, "alarms_info") else []


def _safe(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a broken part must not break the status page
        return {"error": str(e)}


def bms_doc(ctx):
    link = ctx.link
    r = link.latest if link is not None else None
    if r is not None:
        out = r.to_dict()
    else:  # the same keys before the first reading, all null: clients need not special-case it
        from smartbms.bms.reading import FIELDS

        out = {}
        for k in FIELDS:
            out[k] = None
    out["age_s"] = link.age_s() if r is not None else None
    out["connected"] = bool(link is not None and link.connected)
    out["stats"] = dict(link.stats) if link is not None and link.stats else {}
    return out


def _overrides():
    from smartbms import overrides

    return overrides.status()


def status_doc(ctx):
    return {
        "bms": bms_doc(ctx),
        "charger": charger_doc(ctx),
        "alarms": alarms_doc(ctx),
        "device": {
            "version": VERSION,
            "uptime_s": ctx.uptime_s(),
            "free_heap": ctx.free_heap(),
            "wifi": _safe(ctx.wifi.status) if ctx.wifi is not None else None,
            "ota": _safe(ctx.ota.status) if ctx.ota is not None else None,
            "setup_mode": bool(ctx.setup_mode),
            "safe_mode": bool(ctx.safe_mode),
            # modules running from the filesystem (`make deploy`) instead of the image
            "overrides": _safe(_overrides),
        },
        "mqtt": _safe(lambda: _mqtt_status(ctx)),
    }


def _mqtt_status(ctx):
    from smartbms.mqtt.routes import status

    return status(ctx)
