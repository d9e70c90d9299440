# The charge-control scenarios of issue 12 (sim/scenarios/*.json) against the battery model:
# what an owner who leaves the battery alone for months must be able to rely on.
import json
import os
import subprocess
import sys

import pytest
from test_simulate import SCENARIOS, SCRIPT, at, load, sim, sim_all


def example(name, **changes):
    s = load(name)
    s.update(changes)
    return sim_all(s)


def states(rows):
    return [r for r in rows if "state" in r]


def alarm_rows(rows, name, active=True):
    return [r for r in rows if r.get("alarm") == name and r["active"] is active]


def test_missing_or_wrong_inputs_stop_charging_with_an_alarm():
    rows, summary = example("bad_inputs.json")
    st = states(rows)
    for t, reason in ((1.5, "BMS reports no temperature (setting temp_sensors_required)"),
                      (3.5, "BMS reports no cell voltages"),
                      (5.5, "pack voltage 15.25 V but the cells add up to 13.25 V"),
                      (7.5, "BMS alarm: current_sensor_error"),
                      (9.2, "BMS alarm: jbd_protection_bit_14")):
        r = at(st, t)
        assert r["state"] == "fault" and not r["relay"] and r["reason"].startswith(reason[:30]), (t, r)
    assert summary["alarms"] == {"no_temperature": 1, "no_cells": 1, "voltage_mismatch": 1, "bms_error": 2}
    # each problem stops at its first reading, and charging resumes only after good ones
    for t in (1.0, 3.0, 5.0, 7.0, 9.0):
        assert not at(st, t + 0.003)["relay"]
    for t in (2.0, 4.0, 6.0, 8.0, 9.5):
        back = [r for r in st if r["t_h"] >= t and r["relay"]][0]
        assert t <= back["t_h"] <= t + 0.05


def test_dead_charger_alarm_within_20_min_and_at_most_4_tries_a_day():
    rows, summary = example("dead_charger_backoff.json")
    st = states(rows)
    first = alarm_rows(rows, "charger_dead")[0]
    assert first["t_h"] <= 20 / 60
    tries = [r["t_h"] for r in st if r["relay"] and r["t_h"] < 150]
    assert tries[0] == 0.0
    after = [t for t in tries if t > first["t_h"]]
    assert len(after) >= 8  # it keeps trying over the week
    for t0 in after:
        assert len([t for t in after if t0 <= t < t0 + 24]) <= 4, after
    # shown as a fault, not as "charging", while it waits
    assert at(st, 100)["state"] == "fault" and at(st, 100)["reason"].startswith("charger dead")
    # repaired at 150 h: the next try charges and the pack gets full
    assert alarm_rows(rows, "charger_dead", False)[0]["t_h"] >= 150
    assert summary["full_charges"] == 1 and summary["max_soc"] == 100.0


def test_welded_relay_alarm_within_10_min_and_the_bms_mosfet_cuts_off():
    rows, summary = example("welded_relay.json")
    st = states(rows)
    stuck = alarm_rows(rows, "relay_stuck")
    assert len(stuck) == 1 and 2.0 < stuck[0]["t_h"] <= 2.0 + 10 / 60
    r = at(st, 5)
    assert r["state"] == "fault" and not r["relay"] and r["reason"].startswith("relay stuck")
    # the BMS charge MOSFET stops the current: the SOC falls although the relay is welded
    assert at(st, 2.5)["soc"] == 100.0 and summary["min_soc"] < 95
    # cleared by the owner (after the repair): the alarm ends, automatic control resumes
    assert alarm_rows(rows, "relay_stuck", False)[0]["t_h"] == 9.0
    assert at(st, 9.1)["state"] == "resting"


def test_charge_current_above_the_limit_latches_off_until_cleared():
    rows, summary = example("overcurrent_2c_charger.json")
    st = states(rows)
    oc = alarm_rows(rows, "overcurrent")
    assert len(oc) == 1 and oc[0]["t_h"] <= 0.05 and "> 100 A" in oc[0]["message"]
    assert all(not r["relay"] for r in st if oc[0]["t_h"] < r["t_h"] < 8)
    assert at(st, 7.9)["state"] == "fault"
    # cleared at 8 h with a sane charger: it charges and gets full
    assert at(st, 8.1)["relay"] and summary["full_charges"] >= 1
    assert summary["max_relay_switches_6h"] <= 36


def test_repeated_bms_overcurrent_trips_latch_off():
    rows, summary = example("bms_overcurrent_trips.json")
    oc = alarm_rows(rows, "overcurrent")
    assert len(oc) == 1 and oc[0]["message"] == "3 BMS over-current trips within 60 min"
    # it used to switch 289 times in 8 h
    switches = [r for r in states(rows) if r["t_h"] < 6]
    assert len(switches) <= 8 and summary["max_relay_switches_6h"] <= 36


def test_a_bms_that_never_reports_100_gets_full_charges_by_voltage():
    rows, summary = example("bms_never_100.json")
    st = states(rows)
    ends = [r for r in st if r["state"] == "resting"]
    assert ends and all(r["reason"].startswith("full by voltage") for r in ends)
    assert summary["timeouts"] == 0 and summary["full_charges"] == len(ends) >= 8


def test_a_stuck_soc_is_flagged_and_the_cells_start_the_recharge():
    rows, summary = example("soc_stuck_at_100.json")
    st = states(rows)
    assert summary["alarms"].get("soc_stuck") == 1
    starts = [r for r in st if r["reason"].startswith("lowest cell below 3.20 V")]
    assert starts and starts[0]["soc"] >= 9  # it used to fall to 3.00 V a cell, never recharged
    # the SOC (stuck at 100 %) does not end such a charge: the voltage anchor does
    assert any(r["reason"].startswith("full by voltage") for r in st if r["t_h"] > starts[0]["t_h"])
    assert summary["min_soc"] >= 9


def test_an_over_voltage_glitch_does_not_end_the_charge_or_lower_the_next_start():
    rows, summary = example("overvoltage_glitch.json")
    st = states(rows)
    assert at(st, 0.25)["state"] in ("fault", "charging")
    assert at(st, 0.3)["relay"] and at(st, 0.3)["state"] == "charging"
    assert summary["full_charges"] == 1 and summary["max_soc"] == 100.0
    # the same flag confirmed over three readings ends it, but the next start stays >= 75 %
    rows, _ = sim({"duration_h": 2, "battery": {"soc": 45, "charger_a": 20, "load_a": 1},
                   "events": [{"at_h": 0.25, "bms": {"alarm": "cell_overvoltage"}},
                              {"at_h": 0.26, "bms": {"alarm": None}}]})
    for r in rows:
        assert "<= 4" not in r["reason"] and "<= 3" not in r["reason"], r


def test_an_imbalanced_pack_gets_a_bounded_top_balance():
    rows, summary = example("imbalanced_top_balance.json")
    st = states(rows)
    waits = [r for r in st if r["reason"].startswith("top balance: cell")]
    resumes = [r for r in st if r["relay"] and r["state"] == "charging" and r["soc"] > 95]
    assert waits and resumes  # it charges again once the high cell relaxed
    # each charge ends within the top balance time after its first high-cell stop
    first_stops = [r["t_h"] for r in st if r["state"] == "fault" and r["reason"].startswith("cell ")]
    for end in (r for r in st if r["state"] == "resting"):
        before = [t for t in first_stops if t <= end["t_h"]]
        if before:
            start = min(t for t in before if t > end["t_h"] - 3)
            assert end["t_h"] - start <= 60 / 60 + 0.05, (start, end)
    assert summary["max_relay_switches_6h"] <= 36


def _balancing_on_h(rows):
    total = 0.0
    prev = None
    for r in states(rows):
        if prev is not None and prev["state"] == "balancing" and prev["relay"]:
            total += r["t_h"] - prev["t_h"]
        prev = r
    return total


def test_balancing_survives_a_ble_drop_a_mosfet_blip_and_a_reboot():
    s = load("balancing_interrupted.json")
    full, _ = sim_all(dict(s, events=[]))
    base = _balancing_on_h(full)
    assert base > 0.2
    for events in (s["events"][0:2], s["events"][2:4], s["events"][4:], s["events"]):
        rows, summary = sim_all(dict(s, events=events))
        assert _balancing_on_h(rows) >= 0.8 * base, events
        assert summary["full_charges"] == 1


def test_a_slow_charger_gets_full_charges():
    # 280 Ah on 15 A: 18 timeouts and no full charge in 10 days with the fixed 3.5 h
    rows, summary = example("slow_charger_280ah.json")
    assert summary["timeouts"] == 0 and summary["full_charges"] >= 4
    # with the default charge_timeout_h a timed-out slow charge continues after its rest
    rows, summary = example("slow_charger_280ah.json", settings={})
    st = states(rows)
    assert summary["full_charges"] >= 3
    assert any(r["reason"] == "slow charge continues after the timeout rest" for r in st)


def test_a_0_2c_charge_from_3_percent_reaches_full():
    rows, summary = sim({"duration_h": 12, "battery": {"soc": 3, "charger_a": 20, "load_a": 0.5}})
    assert summary["full_charges"] == 1 and summary["max_soc"] == 100.0


def test_the_fitted_timeout_stops_a_charge_that_cannot_end_sooner_than_the_cap():
    # a charger whose own voltage limit (3.36 V a cell) never lets the pack get full: 20 A
    # from 70 % is 1.5 h of work, so the fitted limit (x 5/4 + 30 min + balancing) ends it
    # long before the 8 h of charge_timeout_h; its taper is no dead charger
    rows, summary = sim_all({"duration_h": 6, "battery": {"soc": 70, "charger_a": 60, "load_a": 0,
                                                          "charger_cv_cell_v": 3.36},
                             "settings": {"charge_timeout_h": 8}})
    first = [r for r in rows if r.get("state") == "timeout"][0]
    assert first["t_h"] < 3.0 and first["reason"] == "charging for 2.8 h without reaching the end"
    assert summary["alarms"] == {}


def test_charge_window_and_allow_charge():
    rows, summary = example("tariff_window_and_allow.json")
    st = states(rows)
    # window 22:00-06:00 local with tz +60 min: 21:00-05:00 UTC; the run starts at 00:00 UTC
    prev = None
    for r in st:
        if prev is not None and prev["relay"] and 3 < prev["t_h"] < 48:
            for t in (prev["t_h"], r["t_h"] - 0.01):
                assert t % 24 >= 21 or t % 24 < 5, (prev, r)
        prev = r
    assert any(r["state"] == "paused" and r["reason"].startswith("outside the charge window 22:00-06:00") for r in st)
    paused = [r for r in st if r["reason"] == "charging not allowed (allow_charge)"]
    assert paused and 50 <= paused[0]["t_h"] < 60
    assert all(not r["relay"] for r in st if 50 <= r["t_h"] < 60)


def test_a_flaky_link_cannot_wear_the_relay():
    rows, summary = example("flaky_ble_link.json")
    assert summary["max_relay_switches_6h"] <= 36  # it used to be 61 an hour
    assert summary["relay_on_h"] > 0


def test_a_wall_clock_jump_back_does_not_extend_the_hold():
    rows, summary = example("wall_clock_jump.json")
    st = states(rows)
    starts = [r["t_h"] for r in st if r["relay"]]
    assert starts[:2] == [0.0, 3.0]  # 1 h charge + 2 h rest; it used to wait 30 days


def test_reboots_without_a_clock_cannot_hold_a_timeout_for_ever():
    rows, summary = example("reboot_loop_no_clock.json")
    st = states(rows)
    assert summary["full_charges"] >= 3 and summary["min_soc"] >= 60
    holds = [r["t_h"] for r in st if r["state"] == "timeout" and r["reason"].startswith("charging for")
             and r["t_h"] < 96 - 3]
    for t in holds:
        again = [r["t_h"] for r in st if r["t_h"] > t and r["relay"]]
        assert again and again[0] - t <= 2 + 0.2, (t, again[:1])


def test_the_temperature_hysteresis_survives_a_reboot():
    rows, summary = example("reboot_keeps_temp_hysteresis.json")
    st = states(rows)
    r = at(st, 2.5)  # 43.5 degC after the reboot: above 45 - 3, still waiting
    assert r["state"] == "fault" and not r["relay"]
    assert r["reason"] == "temperature was above the charge range before the restart"
    assert at(st, 3.1)["relay"]


def test_an_override_during_a_hold_is_refused_not_a_traceback():
    p = subprocess.run([sys.executable, SCRIPT, os.path.join(SCENARIOS, "override_during_hold.json")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "Traceback" not in p.stderr
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    refused = [r for r in rows if "refused" in r]
    assert refused == [{"t_h": 1.5, "refused": "override on",
                        "error": "charging is held after a timeout: reset the timeout to charge again"}]
    assert at([r for r in rows if "state" in r], 2.0)["reason"] == "timeout reset by hand"


@pytest.mark.parametrize("text, words", [
    ('{"duration_h": 1, "events": [{"at_h": 0.5, "bms": {"soc": 1}}]}', "unknown key 'soc' in events[0].bms"),
    ('{"duration_h": 1, "events": [{"at_h": 0.5, "bms": {"alarm": "gremlins"}}]}', 'alarm "gremlins" is unknown'),
    ('{"duration_h": 1, "events": [{"at_h": 0.5, "bms": {"cells": "few"}}]}', 'cells must be "missing" or "ok"'),
    ('{"duration_h": 1, "events": [{"at_h": 0.5, "relay_welded": 1}]}', "relay_welded must be true or false"),
    ('{"duration_h": 1, "events": [{"at_h": 0.5, "settings": {"min_soc": 99}}]}', "min_soc must be at least 5 points"),
    ('{"duration_h": 1, "events": [{"at_h": 0.5, "wall_jump_h": "x"}]}', "wall_jump_h must be a number"),
    ('{"duration_h": 1, "battery": {"charger_cv_cell_v": 9}}', "charger_cv_cell_v = 9 is out of range"),
])
def test_bad_new_scenario_keys_exit_2(tmp_path, text, words):
    path = tmp_path / "s.json"
    path.write_text(text)
    p = subprocess.run([sys.executable, SCRIPT, str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    assert words in p.stderr, p.stderr


def test_a_soc_that_reads_low_after_a_full_charge_by_voltage_is_not_believed():
    # the BMS's SOC drops 25 points below the truth: it asks for a charge the full pack does
    # not need; the voltage anchor ends it at once and the low SOC does not restart it
    rows, summary = sim({"duration_h": 48, "battery": {"soc": 95, "charger_a": 20, "load_a": 1},
                         "events": [{"at_h": 1, "bms": {"soc_offset": -25}}]})
    full = [r for r in rows if r["reason"].startswith("full by voltage")]
    assert len(full) == 1 and full[0]["t_h"] < 1.2
    assert summary["relay_switches"] <= 4 and summary["full_charges"] == 2
