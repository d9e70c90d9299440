#!/usr/bin/env python3
"""Deterministic charge simulator: the real charge controller (modules/smartbms/charge)
against the battery model (sim/battery.py), in discrete time steps.

    python3 scripts/simulate.py SCENARIO.json

Prints one JSON line per relay or state change and a last {"summary": {...}} line.
A bad scenario prints one line "simulate: error: ..." on stderr and exits 2 (that includes
NaN or Infinity anywhere: every number must be finite).

Scenario (every key optional except duration_h; unknown keys are an error):
  duration_h      simulated hours (0 < h <= 8760)
  step_s          time step in seconds (1..600, default 5)
  wall_clock      true (default): the device knows the time; false: it never does
  battery         capacity_ah, cells, soc, charger_a, load_a, temperature_c,
                  imbalance_pct (cell spread in %, default 1), balance_a (default 1),
                  load_schedule ([[hour_of_day, amps], ...], a daily load pattern)
  settings        any smartbms setting (the charge ones matter), validated by smartbms.settings
  events          [{"at_h": H, <one or more actions>}, ...] in any order; actions:
                  load_a, charger_a, temperature_c (numbers), load_schedule (list or null),
                  ble ("up" | "down": the BMS stops answering), reboot (true: the controller
                  restarts from its persisted state, the device clock restarts at 0),
                  fault (a name from FAULTS or null to clear), override
                  ({"mode": "on"|"off"|"auto", "minutes": N}), reset_timeout (true)
"""
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _sub in ("modules", "sim"):
    _p = os.path.join(ROOT, _sub)
    if _p not in sys.path:
        sys.path.insert(0, _p)

from battery import FAULTS, Battery  # noqa: E402
from smartbms import settings as settings_schema  # noqa: E402
from smartbms.charge.controller import Controller  # noqa: E402

WALL_START = 1767225600  # 2026-01-01T00:00:00Z, so runs are reproducible

BATTERY_KEYS = ("capacity_ah", "cells", "soc", "charger_a", "load_a", "temperature_c",
                "imbalance_pct", "balance_a", "load_schedule")
EVENT_KEYS = ("at_h", "load_a", "charger_a", "temperature_c", "load_schedule", "ble", "reboot",
              "fault", "override", "reset_timeout")
TOP_KEYS = ("duration_h", "step_s", "wall_clock", "battery", "settings", "events")


class ScenarioError(Exception):
    pass


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num(where, v, lo=None, hi=None):
    if not _is_num(v):
        raise ScenarioError("%s must be a number, not %s" % (where, json.dumps(v)))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ScenarioError("%s = %s is out of range %s..%s" % (where, v, lo, hi))
    return v


def _finite(where, v):
    """Rejects NaN and infinities anywhere in the scenario: Python's json reads NaN, Infinity
    and 1e999, and a NaN passes every range check (its comparisons are all false)."""
    if isinstance(v, float) and not math.isfinite(v):
        raise ScenarioError("%s must be a finite number, not %s" % (where, json.dumps(v)))
    if isinstance(v, dict):
        for k, x in v.items():
            _finite("%s.%s" % (where, k) if where else str(k), x)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _finite("%s[%d]" % (where, i), x)


def _keys(where, d, allowed):
    if not isinstance(d, dict):
        raise ScenarioError("%s must be an object" % where)
    for k in d:
        if k not in allowed:
            raise ScenarioError("unknown key %r in %s" % (k, where))


def validate_settings(partial):
    """Defaults + `partial`, checked by smartbms.settings (ranges and cross-field rules);
    raises ScenarioError on any problem."""
    if not isinstance(partial, dict):
        raise ScenarioError("settings must be an object")
    values = settings_schema.defaults()
    try:
        for key, v in partial.items():
            values[key] = settings_schema.check_value(key, v)
        settings_schema.check_rules(values, tuple(partial))
    except settings_schema.SettingsError as e:
        raise ScenarioError("settings.%s: %s" % (e.field, e.message) if e.field else "settings: " + e.message)
    return values


def _load_schedule(where, v):
    if not isinstance(v, list) or not v:
        raise ScenarioError("%s must be a non-empty list of [hour, amps]" % where)
    for e in v:
        if not isinstance(e, list) or len(e) != 2 or not _is_num(e[0]) or not _is_num(e[1]):
            raise ScenarioError("%s entries must be [hour, amps]" % where)
    try:
        Battery(load_schedule=v)
    except ValueError as e:
        raise ScenarioError("%s: %s" % (where, e))
    return v


def parse(scenario):
    """Validates a scenario dict; returns (duration_s, step_s, wall_clock, battery kwargs,
    settings, events sorted by time)."""
    _keys("scenario", scenario, TOP_KEYS)
    _finite("", scenario)
    if "duration_h" not in scenario:
        raise ScenarioError("scenario needs duration_h")
    duration_h = _num("duration_h", scenario["duration_h"], 0, 8760)
    if duration_h <= 0:
        raise ScenarioError("duration_h must be > 0")
    step_s = _num("step_s", scenario.get("step_s", 5), 1, 600)
    wall_clock = scenario.get("wall_clock", True)
    if not isinstance(wall_clock, bool):
        raise ScenarioError("wall_clock must be true or false")
    bat = scenario.get("battery", {})
    _keys("battery", bat, BATTERY_KEYS)
    ranges = {"capacity_ah": (1, 2000), "cells": (1, 32), "soc": (0, 100), "charger_a": (0, 1000),
              "load_a": (0, 1000), "temperature_c": (-40, 90), "imbalance_pct": (0, 20),
              "balance_a": (0, 10)}
    kwargs = {}
    for k, v in bat.items():
        if k == "load_schedule":
            kwargs[k] = _load_schedule("battery.load_schedule", v)
            continue
        if k == "cells" and not (isinstance(v, int) and not isinstance(v, bool)):
            raise ScenarioError("battery.cells must be an integer")
        kwargs[k] = _num("battery." + k, v, *ranges[k])
    settings = validate_settings(scenario.get("settings", {}))
    events = scenario.get("events", [])
    if not isinstance(events, list):
        raise ScenarioError("events must be a list")
    for i, ev in enumerate(events):
        where = "events[%d]" % i
        _keys(where, ev, EVENT_KEYS)
        if "at_h" not in ev:
            raise ScenarioError("%s needs at_h" % where)
        _num(where + ".at_h", ev["at_h"], 0, duration_h)
        if len(ev) < 2:
            raise ScenarioError("%s has no action" % where)
        for k in ("load_a", "charger_a"):
            if k in ev:
                _num(where + "." + k, ev[k], 0, 1000)
        if "temperature_c" in ev:
            _num(where + ".temperature_c", ev["temperature_c"], -40, 90)
        if "load_schedule" in ev and ev["load_schedule"] is not None:
            _load_schedule(where + ".load_schedule", ev["load_schedule"])
        if "ble" in ev and ev["ble"] not in ("up", "down"):
            raise ScenarioError("%s.ble must be \"up\" or \"down\"" % where)
        if "reboot" in ev and ev["reboot"] is not True:
            raise ScenarioError("%s.reboot must be true" % where)
        if "reset_timeout" in ev and ev["reset_timeout"] is not True:
            raise ScenarioError("%s.reset_timeout must be true" % where)
        if "fault" in ev and ev["fault"] is not None and ev["fault"] not in FAULTS:
            raise ScenarioError("%s.fault %s is unknown (known: %s)" % (where, json.dumps(ev["fault"]), ", ".join(FAULTS)))
        if "override" in ev:
            ov = ev["override"]
            _keys(where + ".override", ov, ("mode", "minutes"))
            if ov.get("mode") not in ("on", "off", "auto"):
                raise ScenarioError("%s.override.mode must be on, off or auto" % where)
            if ov["mode"] != "auto":
                _num(where + ".override.minutes", ov.get("minutes"), 1, 1440)
    events = sorted(events, key=lambda e: e["at_h"])
    return duration_h * 3600.0, step_s, wall_clock, kwargs, settings, events


def run(scenario, out=None):
    """Runs a scenario dict; writes the JSON lines to `out` (a callable taking a str) and
    returns the summary dict."""
    duration_s, step_s, wall_clock, bkw, settings, events = parse(scenario)
    emit = out or (lambda line: None)
    bat = Battery(**bkw)
    ctrl = Controller(settings)
    stored = None  # what the app would have written to flash
    totals = {"full_charges": 0, "timeouts": 0, "faults": 0}
    ble_up = True
    boot_t = 0.0
    poll = settings["poll_interval_s"]
    next_poll = 0.0
    reading = None
    t = 0.0
    ev_i = 0
    n_ev = len(events)
    relay_on_s = 0.0
    switches = 0
    soc_lo = soc_hi = bat.soc()
    last_relay = None
    last_state = None

    def line(t):
        r = bat
        vmax = 0.0
        for i in range(r.n):
            v = r.cell_voltage(i)
            if v > vmax:
                vmax = v
        emit(json.dumps({"t_h": round(t / 3600.0, 2), "relay": ctrl.relay, "state": ctrl.state,
                         "reason": ctrl.reason, "soc": round(bat.soc(), 1),
                         "max_cell_v": round(vmax, 3), "temperature_c": bat.temperature_c},
                        ensure_ascii=False))

    while t < duration_s:
        while ev_i < n_ev and events[ev_i]["at_h"] * 3600.0 <= t:
            ev = events[ev_i]
            ev_i += 1
            if "load_schedule" in ev:
                bat.load_schedule = None
                if ev["load_schedule"] is not None:
                    bat.set_load_schedule(ev["load_schedule"])
            if "load_a" in ev:
                bat.load_schedule = None
                bat.load_a = float(ev["load_a"])
            if "charger_a" in ev:
                bat.charger_a = float(ev["charger_a"])
            if "temperature_c" in ev:
                bat.temperature_c = float(ev["temperature_c"])
            if "fault" in ev:
                bat.fault = ev["fault"]
            if "ble" in ev:
                ble_up = ev["ble"] == "up"
            if "reboot" in ev:
                for k in totals:
                    totals[k] += getattr(ctrl, k)
                ctrl = Controller(settings, stored)
                boot_t = t
                reading = None
                next_poll = t + poll  # the BMS link needs a moment after boot
            now = int(t - boot_t)
            wall = int(WALL_START + t) if wall_clock else None
            if "override" in ev:
                ov = ev["override"]
                ctrl.set_override(ov["mode"], ov.get("minutes", 0), now)
            if "reset_timeout" in ev:
                ctrl.reset_timeout(now)
        now = int(t - boot_t)
        if ble_up and t >= next_poll:
            reading = bat.reading(now)
            next_poll = t + poll
        relay = ctrl.update(reading, now, int(WALL_START + t) if wall_clock else None)
        if ctrl.dirty:
            stored = json.loads(json.dumps(ctrl.persisted()))
            ctrl.dirty = False
        if relay != last_relay or ctrl.state != last_state:
            if last_relay is not None and relay != last_relay:
                switches += 1
            last_relay = relay
            last_state = ctrl.state
            line(t)
        bat.step(step_s, relay)
        if relay:
            relay_on_s += step_s
        t += step_s
        s = bat.soc()
        if s < soc_lo:
            soc_lo = s
        elif s > soc_hi:
            soc_hi = s
    for k in totals:
        totals[k] += getattr(ctrl, k)
    summary = {"relay_on_h": round(relay_on_s / 3600.0, 2), "full_charges": totals["full_charges"],
               "timeouts": totals["timeouts"], "faults": totals["faults"],
               "min_soc": round(soc_lo, 1), "max_soc": round(soc_hi, 1),
               "relay_switches": switches, "cell_spread_mv": round(bat.spread_mv(), 1)}
    emit(json.dumps({"summary": summary}))
    return summary


def main(argv):
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if len(argv) != 1 else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    path = argv[0]
    try:
        try:
            with open(path, encoding="utf-8") as f:
                scenario = json.load(f)
        except OSError as e:
            raise ScenarioError("cannot read %s: %s" % (path, e.strerror or e))
        except ValueError as e:
            raise ScenarioError("%s is not valid JSON: %s" % (path, e))
        out = sys.stdout
        run(scenario, lambda s: out.write(s + "\n"))
    except ScenarioError as e:
        print("simulate: error: %s" % e, file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): not an error of ours
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
