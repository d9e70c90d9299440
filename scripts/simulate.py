#!/usr/bin/env python3
"""Deterministic charge simulator: the real charge controller (modules/smartbms/charge)
against the battery model (sim/battery.py), in discrete time steps.

    python3 scripts/simulate.py SCENARIO.json

Prints one JSON line per relay or state change ({"t_h", "relay", "state", "reason", "soc",
"max_cell_v", "temperature_c"}), one per alarm raised or ended ({"t_h", "alarm", "active",
"message"}), one per action the device refuses ({"t_h", "refused", "error"}) and a last
{"summary": {...}} line.
A bad scenario prints one line "simulate: error: ..." on stderr and exits 2 (that includes
NaN or Infinity anywhere: every number must be finite).

Scenario (every key optional except duration_h; unknown keys are an error):
  duration_h      simulated hours (0 < h <= 8760)
  step_s          time step in seconds (1..600, default 5)
  wall_clock      true (default): the device knows the time; false: it never does
  battery         capacity_ah, cells, soc, charger_a, load_a, temperature_c,
                  imbalance_pct (cell spread in %, default 1), balance_a (default 1),
                  load_schedule ([[hour_of_day, amps], ...], a daily load pattern),
                  charger_cv_cell_v (the charger's constant-voltage limit per cell),
                  bms_charge_limit_a (above it the BMS trips charge_overcurrent for 60 s)
  settings        any smartbms setting (the charge ones matter), validated by smartbms.settings
  events          [{"at_h": H, <one or more actions>}, ...] in any order; actions:
                  load_a, charger_a, temperature_c (numbers), load_schedule (list or null),
                  ble ("up" | "down": the BMS stops answering), reboot (true: the controller
                  restarts from its persisted state, the device clock restarts at 0),
                  fault (a name from FAULTS or null to clear), override
                  ({"mode": "on"|"off"|"auto", "minutes": N}), reset_timeout (true),
                  bms (what the BMS reports wrongly: {"soc_offset": points, "soc_stuck": bool,
                  "soc_max": %, "temperatures": "missing"|"ok", "cells": "missing"|"ok",
                  "voltage_offset_v": V, "alarm": a family alarm name or null}),
                  relay_welded (bool), wall_jump_h (the wall clock jumps by H hours),
                  settings (a partial settings object, validated, applied then),
                  allow_charge (bool), clear_alarms (true: the owner clears the alarms)
Summary: relay_on_h, full_charges, timeouts, faults, min_soc, max_soc, relay_switches,
max_relay_switches_6h (most switches in any 6 h), cell_spread_mv, alarms ({name: times raised}).
"""
import json
import math
import os
import sys
from collections import deque

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _sub in ("modules", "sim"):
    _p = os.path.join(ROOT, _sub)
    if _p not in sys.path:
        sys.path.insert(0, _p)

from battery import FAULTS, Battery  # noqa: E402
from smartbms import settings as settings_schema  # noqa: E402
from smartbms.bms import reading as bms_reading  # noqa: E402
from smartbms.charge import alarms as alarm_names  # noqa: E402
from smartbms.charge.controller import Controller  # noqa: E402

WALL_START = 1767225600  # 2026-01-01T00:00:00Z, so runs are reproducible

BATTERY_KEYS = ("capacity_ah", "cells", "soc", "charger_a", "load_a", "temperature_c",
                "imbalance_pct", "balance_a", "load_schedule", "charger_cv_cell_v",
                "bms_charge_limit_a")
EVENT_KEYS = ("at_h", "load_a", "charger_a", "temperature_c", "load_schedule", "ble", "reboot",
              "fault", "override", "reset_timeout", "bms", "relay_welded", "wall_jump_h",
              "settings", "allow_charge", "clear_alarms")
BMS_KEYS = ("soc_offset", "soc_stuck", "soc_max", "temperatures", "cells", "voltage_offset_v", "alarm")
# family alarms a BMS may raise (the codecs' names): the untrusted ones and the design's faults
FAMILY_ALARMS = bms_reading.UNTRUSTED_FAULTS + bms_reading.CHARGE_FAULTS + (
    "cell_undervoltage", "pack_undervoltage", "discharge_overtemp", "discharge_undertemp",
    "discharge_overcurrent", "jbd_protection_bit_13", "jbd_protection_bit_14",
    "jbd_protection_bit_15", "cell_imbalance", "soc_low")
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
              "balance_a": (0, 10), "charger_cv_cell_v": (2.5, 4.0), "bms_charge_limit_a": (0, 2000)}
    kwargs = {}
    for k, v in bat.items():
        if k == "load_schedule":
            kwargs[k] = _load_schedule("battery.load_schedule", v)
            continue
        if k == "cells" and not (isinstance(v, int) and not isinstance(v, bool)):
            raise ScenarioError("battery.cells must be an integer")
        kwargs[k] = _num("battery." + k, v, *ranges[k])
    base = scenario.get("settings", {})
    settings = validate_settings(base)
    merged = dict(base) if isinstance(base, dict) else {}
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
        _check_new_actions(where, ev)
    events = sorted(events, key=lambda e: e["at_h"])
    for ev in events:  # each settings change is checked against what holds by then
        if "settings" in ev:
            if not isinstance(ev["settings"], dict) or not ev["settings"]:
                raise ScenarioError("events at %s h: settings must be a non-empty object" % ev["at_h"])
            merged.update(ev["settings"])
            try:
                validate_settings(merged)
            except ScenarioError as e:
                raise ScenarioError("events at %s h: %s" % (ev["at_h"], e))
    return duration_h * 3600.0, step_s, wall_clock, kwargs, settings, events


def _check_new_actions(where, ev):
    for k in ("relay_welded", "allow_charge"):
        if k in ev and not isinstance(ev[k], bool):
            raise ScenarioError("%s.%s must be true or false" % (where, k))
    if "clear_alarms" in ev and ev["clear_alarms"] is not True:
        raise ScenarioError("%s.clear_alarms must be true" % where)
    if "wall_jump_h" in ev:
        _num(where + ".wall_jump_h", ev["wall_jump_h"], -8760, 8760)
    if "bms" in ev:
        b = ev["bms"]
        w = where + ".bms"
        _keys(w, b, BMS_KEYS)
        if not b:
            raise ScenarioError("%s has no key" % w)
        if "soc_offset" in b:
            _num(w + ".soc_offset", b["soc_offset"], -100, 100)
        if "soc_max" in b:
            _num(w + ".soc_max", b["soc_max"], 0, 100)
        if "voltage_offset_v" in b:
            _num(w + ".voltage_offset_v", b["voltage_offset_v"], -100, 100)
        if "soc_stuck" in b and not isinstance(b["soc_stuck"], bool):
            raise ScenarioError("%s.soc_stuck must be true or false" % w)
        for k in ("temperatures", "cells"):
            if k in b and b[k] not in ("missing", "ok"):
                raise ScenarioError("%s.%s must be \"missing\" or \"ok\"" % (w, k))
        if "alarm" in b and b["alarm"] is not None and b["alarm"] not in FAMILY_ALARMS:
            raise ScenarioError("%s.alarm %s is unknown (known: %s)" % (w, json.dumps(b["alarm"]), ", ".join(FAMILY_ALARMS)))


def _apply_bms(bat, b):
    lie = bat.lie
    if "soc_offset" in b:
        lie.soc_offset = float(b["soc_offset"])
    if "soc_stuck" in b:
        lie.soc_stuck = bat.reading().soc if b["soc_stuck"] else None
    if "soc_max" in b:
        lie.soc_max = float(b["soc_max"])
    if "temperatures" in b:
        lie.temps_missing = b["temperatures"] == "missing"
    if "cells" in b:
        lie.cells_missing = b["cells"] == "missing"
    if "voltage_offset_v" in b:
        lie.voltage_offset_v = float(b["voltage_offset_v"])
    if "alarm" in b:
        lie.alarm = b["alarm"]


def run(scenario, out=None):
    """Runs a scenario dict; writes the JSON lines to `out` (a callable taking a str) and
    returns the summary dict."""
    duration_s, step_s, wall_clock, bkw, settings, events = parse(scenario)
    emit = out or (lambda line: None)
    bat = Battery(**bkw)
    ctrl = Controller(settings)
    ctrl.set_fet_control(True)  # the simulated BMS takes charge MOSFET commands (as JBD and JK do)
    partial = dict(scenario.get("settings", {}))
    stored = None  # what the app would have written to flash
    totals = {"full_charges": 0, "timeouts": 0, "faults": 0}
    ble_up = True
    boot_t = 0.0
    wall_off = 0.0  # wall clock jumps so far
    poll = settings["poll_interval_s"]
    next_poll = 0.0
    reading = None
    t = 0.0
    ev_i = 0
    n_ev = len(events)
    relay_on_s = 0.0
    switches = 0
    recent = deque()  # switch times within the last 6 h
    max_6h = 0
    alarm_counts = {}
    last_mask = 0
    soc_lo = soc_hi = bat.soc()
    last_relay = None
    last_state = None

    def th(t):
        return round(t / 3600.0, 2)

    def line(t):
        r = bat
        vmax = 0.0
        for i in range(r.n):
            v = r.cell_voltage(i)
            if v > vmax:
                vmax = v
        emit(json.dumps({"t_h": th(t), "relay": ctrl.relay, "state": ctrl.state,
                         "reason": ctrl.reason, "soc": round(bat.soc(), 1),
                         "max_cell_v": round(vmax, 3), "temperature_c": bat.temperature_c},
                        ensure_ascii=False))

    def refused(t, what, e):
        emit(json.dumps({"t_h": th(t), "refused": what, "error": str(e)}, ensure_ascii=False))

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
            if "bms" in ev:
                _apply_bms(bat, ev["bms"])
            if "relay_welded" in ev:
                bat.relay_welded = ev["relay_welded"]
            if "wall_jump_h" in ev:
                wall_off += ev["wall_jump_h"] * 3600.0
            if "settings" in ev:
                partial.update(ev["settings"])
                new = validate_settings(partial)
                settings.clear()
                settings.update(new)  # the controller reads this very dict
            if "reboot" in ev:
                for k in totals:
                    totals[k] += getattr(ctrl, k)
                ctrl = Controller(settings, stored)
                ctrl.set_fet_control(True)
                boot_t = t
                reading = None
                next_poll = t + poll  # the BMS link needs a moment after boot
            now = int(t - boot_t)
            if "override" in ev:
                ov = ev["override"]
                try:
                    ctrl.set_override(ov["mode"], ov.get("minutes", 0), now)
                except ValueError as e:  # what the device answers with 422
                    refused(t, "override " + ov["mode"], e)
            if "reset_timeout" in ev:
                ctrl.reset_timeout(now)
            if "allow_charge" in ev:
                ctrl.set_allow(ev["allow_charge"], None, now)
            if "clear_alarms" in ev:
                ctrl.clear_alarms(now)
        now = int(t - boot_t)
        wall = int(WALL_START + t + wall_off) if wall_clock else None
        if ble_up and t >= next_poll:
            reading = bat.reading(now)
            next_poll = t + poll
        relay = ctrl.update(reading, now, wall)
        bat.fet_cmd_off = ctrl.bms_charge_off  # what the app sends over the BMS link
        if ctrl.dirty:
            stored = json.loads(json.dumps(ctrl.persisted()))
            ctrl.dirty = False
        mask = ctrl.alarms.mask
        if mask != last_mask:
            for i, name in enumerate(alarm_names.NAMES):
                bit = 1 << i
                if (mask ^ last_mask) & bit:
                    on = bool(mask & bit)
                    if on:
                        alarm_counts[name] = alarm_counts.get(name, 0) + 1
                    emit(json.dumps({"t_h": th(t), "alarm": name, "active": on,
                                     "message": ctrl.alarms.messages[i] if on else ""}, ensure_ascii=False))
            last_mask = mask
        if relay != last_relay or ctrl.state != last_state:
            if last_relay is not None and relay != last_relay:
                switches += 1
                recent.append(t)
                while recent[0] <= t - 6 * 3600.0:
                    recent.popleft()
                if len(recent) > max_6h:
                    max_6h = len(recent)
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
               "relay_switches": switches, "max_relay_switches_6h": max_6h,
               "cell_spread_mv": round(bat.spread_mv(), 1), "alarms": alarm_counts}
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
