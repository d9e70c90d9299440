# The charge controller's supervision, input checks, voltage anchors, wear limit and holds
# (issue 12). Runs on CPython and the MicroPython unix port.
import json

from ctrlutil import DEFAULTS, WALL0, R, make, run, settings
from smartbms import settings as schema
from smartbms.charge import alarms as A
from smartbms.charge.controller import Controller
from smartbms.charge.supervise import backoff_s
from smartbms.charge.timing import downtime_s, fit_timeout_s
from smartbms.charge.wear import SwitchBudget
from testutil import IS_MICROPYTHON, raises, skip


def names(c, now=0, warnings=False):
    """The active alarms. A pure test's SOC does not move with its current, so the soc_stuck
    warning is left out unless asked for."""
    return [a["name"] for a in c.alarms_info(now) if warnings or a["stops_charging"]]


def reboot(c, **kw):
    return Controller(settings(**kw), json.loads(json.dumps(c.persisted())))


def test_ctrlutil_defaults_are_the_settings_defaults():
    d = schema.defaults()
    for k in DEFAULTS:
        assert DEFAULTS[k] == d[k], k


def test_charge_current_with_the_relay_off_is_a_stuck_relay():
    c = make()
    c.set_fet_control(True)  # the app: this BMS link can switch the charge MOSFET
    c.update(R(soc=95, current=20), 0)
    c.update(R(soc=100, current=20), 100)
    c.update(R(soc=100, current=3), 200)
    assert c.state == "resting" and c.relay is False
    # 1 A flows with the relay off: within 10 minutes it is an alarm (after the settle time)
    t = run(c, R(soc=100, current=1.0, received=0), 205, 205 + 9 * 60)
    assert t is False and names(c) == ["relay_stuck"]
    assert c.state == "fault" and c.reason.startswith("relay stuck: 1.0 A charging with the relay off")
    assert c.bms_charge_off is True
    assert c.next == "BMS charge MOSFET switched off as a second cut-off until the alarm is cleared"
    c.set_fet_control(False)
    c.clear_alarms(1000)
    assert c.bms_charge_off is False and names(c) == []
    # still flowing: raised again, and a BMS that cannot switch says what to do
    run(c, R(soc=100, current=1.0, received=0), 1005, 1005 + 9 * 60)
    assert names(c) == ["relay_stuck"]
    assert c.next.startswith("this BMS cannot switch its charge MOSFET")


def test_a_latched_alarm_survives_a_reboot():
    c = make()
    c.update(R(soc=100, current=3), 0)
    run(c, R(soc=100, current=5.0, received=0), 5, 700)
    assert names(c) == ["relay_stuck"] and c.persisted()["al"] == 1 << A.RELAY_STUCK
    c2 = reboot(c)
    assert c2.bms_charge_off is True
    assert c2.update(R(soc=50, current=0), 0) is False and c2.state == "fault"
    assert names(c2) == ["relay_stuck"]


def test_ordinary_readings_raise_no_alarm():
    c = make()
    run(c, R(soc=50, current=20), 0, 3000)
    assert c.state == "charging" and c.relay and names(c) == []


def test_dead_charger_alarm_back_off_and_recovery():
    c = make(min_switch_s=0)
    r = R(soc=50, current=-2.0)
    assert c.update(r, 0) is True
    # 10 min with the relay on and no current (settled after 30 s)
    assert run(c, r, 5, 625) is True
    assert run(c, r, 625, 630) is False  # 600 s after the relay's effect shows (30 s)
    assert names(c) == ["charger_dead"] and c.state == "fault"
    assert c.reason == "charger dead: no charge current after 10 min with the relay on (1 failed try)"
    assert c.next == "tries the charger again in 60 min, or when the alarm is cleared"
    t0 = 625
    assert run(c, r, t0, t0 + 3600) is False
    assert run(c, r, t0 + 3600, t0 + 3610) is True  # the retry
    assert [backoff_s(n) for n in range(1, 8)] == [3600, 7200, 14400, 28800, 57600, 57600, 57600]
    # the charger works on the retry: the alarm ends, charging goes on
    assert run(c, R(soc=50, current=15.0), t0 + 3610, t0 + 3700) is True
    assert names(c) == [] and c.state == "charging"


def test_no_dead_charger_when_the_load_takes_more_than_it_gives():
    c = make()
    c.update(R(soc=50, current=-10.0), 0)  # relay off: the load alone
    c.update(R(soc=50, current=-10.0), 40)
    # relay on: -10 A -> -6 A, the charger works (the load takes more than it gives)
    assert run(c, R(soc=50, current=-6.0), 40, 3000) is True and names(c) == []


def test_charge_current_above_the_limit_latches_until_cleared():
    for limit, cap, cur, ok in ((0, 100, 120.0, False), (0, 100, 90.0, True), (50, 100, 60.0, False)):
        c = make(max_charge_a=limit, min_switch_s=0)
        run(c, R(soc=50, current=cur, nominal_ah=cap), 0, 600)
        assert (names(c) == []) is ok, (limit, cur)
    c = make(min_switch_s=0)
    run(c, R(soc=50, current=150.0), 0, 30)
    assert c.relay is False and c.reason == "charge current 150.0 A > 100 A"
    assert run(c, R(soc=50, current=10.0), 30, 3000) is False  # latched
    c.clear_alarms(3000)
    assert run(c, R(soc=50, current=10.0), 3000, 3100) is True


def test_three_bms_overcurrent_trips_within_an_hour_latch():
    c = make(min_switch_s=0, relay_stuck_a=0)
    t = 0
    for k in range(3):
        run(c, R(soc=50, current=20.0), t, t + 300)
        run(c, R(soc=50, current=0.0, faults=["charge_overcurrent"]), t + 300, t + 360)
        t += 900
    assert names(c) == ["overcurrent"] and c.reason == "3 BMS over-current trips within 60 min"
    assert run(c, R(soc=50, current=20.0), t, t + 600) is False
    # trips spread over more than an hour: no alarm
    c = make(min_switch_s=0, relay_stuck_a=0)
    t = 0
    for k in range(4):
        run(c, R(soc=50, current=20.0), t, t + 1800)
        run(c, R(soc=50, current=0.0, faults=["charge_overcurrent"]), t + 1800, t + 1860)
        t += 2000
    assert names(c) == []


def test_missing_and_implausible_inputs():
    nan = float("nan")
    cases = (
        ({"temps": ()}, "no_temperature", "BMS reports no temperature (setting temp_sensors_required)"),
        ({"cells": 0}, "no_cells", "BMS reports no cell voltages"),
        ({"cells": 3}, "cell_count_changed", "cell count changed from 4 to 3"),
        ({"faults": ["current_sensor_error"]}, "bms_error", "BMS alarm: current_sensor_error"),
        ({"faults": ["cell_count_mismatch"]}, "bms_error", "BMS alarm: cell_count_mismatch"),
        ({"faults": ["jbd_protection_bit_13"]}, "bms_error", "BMS alarm: jbd_protection_bit_13"),
        ({"current": nan}, "bad_value", "BMS current is not a number"),
    )
    for kw, name, reason in cases:
        c = make(min_switch_s=0)
        assert c.update(R(soc=50), 0) is True
        assert c.update(R(soc=50, **kw), 10) is False, name
        assert c.state == "fault" and c.reason == reason and names(c) == [name]
        assert c.update(R(soc=50), 20) is False and c.update(R(soc=50), 25) is False
        assert c.update(R(soc=50), 30) is True and names(c) == [], name
    # the pack voltage 2 V off the cell sum
    c = make()
    r = R(soc=50)
    r.voltage = 15.2
    assert c.update(r, 0) is False and c.reason == "pack voltage 15.20 V but the cells add up to 13.20 V"
    # temperature sensors not expected: none is no problem
    assert make(temp_sensors_required=False).update(R(soc=50, temps=()), 0) is True


def test_a_new_cell_count_is_learned_when_the_owner_clears_the_alarm():
    c = make(min_switch_s=0)
    c.update(R(soc=50), 0)
    c.update(R(soc=50, cells=8), 10)
    assert names(c) == ["cell_count_changed"]
    assert reboot(c).persisted()["cells"] == 4  # the count survives a reboot
    c.clear_alarms(20)
    for t in (30, 35, 40):
        c.update(R(soc=50, cells=8), t)
    assert c.relay is True and names(c) == []


def test_full_by_voltage_whatever_the_soc_says():
    c = make()
    c.update(R(soc=97, current=20, cell=3.35), 0)
    # 4 x 3.45 V >= 4 x 3.40 V and the tail current: full, though the BMS says 99 %
    assert run(c, R(soc=99, current=4.5, cell=3.45), 5, 100) is False
    assert c.state == "resting" and c.reason == "full by voltage: 13.80 V, tail current 4.5 A <= 5.0 A"
    assert c.full_charges == 1
    # not at the voltage, or above the tail: it goes on
    c = make()
    c.update(R(soc=97, current=20, cell=3.35), 0)
    assert run(c, R(soc=99, current=4.5, cell=3.38), 5, 100) is True
    assert run(c, R(soc=99, current=8, cell=3.45), 100, 200) is True


def test_capacity_setting_for_a_bms_without_capacity():
    # Daly reports no capacity: without the setting, balancing ends only by time (and says so)
    c = make()
    c.update(R(soc=100, current=8, nominal_ah=None), 0)
    assert names(c, warnings=True) == ["capacity_unknown"]
    assert run(c, R(soc=100, current=3, nominal_ah=None), 5, 200) is True
    c = make(capacity_ah=100.0)
    c.update(R(soc=100, current=8, nominal_ah=None), 0)
    assert names(c) == []
    assert run(c, R(soc=100, current=3, nominal_ah=None), 5, 200) is False
    assert c.reason == "tail current 3.0 A <= 5.0 A"


def test_low_cell_starts_a_charge_though_the_soc_says_full():
    c = make()
    c.update(R(soc=100, current=20), 0)
    c.update(R(soc=100, current=2), 100)
    assert c.state == "resting"
    c.update(R(soc=100, current=-2), 195)
    assert run(c, R(soc=100, current=-2, cell=3.19), 200, 490) is False
    assert run(c, R(soc=100, current=-2, cell=3.19), 490, 520) is True
    assert c.reason == "lowest cell below 3.20 V (SOC says 100 %)"
    # a SOC that disagreed with the cells cannot end this charge: the voltage does
    assert run(c, R(soc=100, current=20, cell=3.30), 520, 1000) is True
    assert c.state == "charging"


def test_stuck_soc_is_flagged():
    c = make()
    c.update(R(soc=100, current=20), 0)
    c.update(R(soc=100, current=2), 100)
    # 6 % of 100 Ah out of the pack at -3 A without the SOC moving: 2 h
    run(c, R(soc=100, current=-3.0), 200, 200 + 7000, step=60)
    assert names(c, warnings=True) == []
    run(c, R(soc=100, current=-3.0), 7200, 7500, step=60)
    assert names(c, warnings=True) == ["soc_stuck"] and c.relay is False
    assert c.alarms_info(7500)[0]["message"] == "SOC stuck at 100 % while 6 Ah went through the pack"
    c.update(R(soc=99, current=-3.0), 8000)
    assert names(c, warnings=True) == []


def test_start_threshold_never_below_min_soc_minus_5():
    c = make(min_soc=80)
    c.update(R(soc=30), 0)
    for t in (5, 10, 15):
        c.update(R(soc=30, faults=["cell_overvoltage"]), t)
    assert c.full_charges == 0  # an over-voltage at 30 % is no full charge
    c.update(R(soc=30), 20)
    assert c.state == "charging" and c.reason == "SOC 30 % <= 75 %"


def test_relay_switch_budget_under_flapping_data():
    # the BMS link drops every 90 s: at most 17 switch-ons in any 6 h
    c = make(min_switch_s=0, relay_stuck_a=0)  # a pure test's current does not follow the relay
    r = R(soc=50, current=10.0, received=0)
    ons = []
    relay = False
    t = 0
    while t < 12 * 3600:
        if t % 90 < 50:
            r.received = t
        on = c.update(r, t)
        if on and not relay:
            ons.append(t)
        relay = on
        t += 5
    for t0 in ons:
        assert len([x for x in ons if t0 <= x < t0 + 6 * 3600]) <= 17
    assert len(ons) >= 20  # it still charges when it may
    b = SwitchBudget()
    assert b.ok() and b.wait_s() == 0
    for _ in range(3):
        b.spend()
    assert not b.ok() and b.wait_s() == 1500


def test_fitted_timeout_and_slow_charge_rearm():
    assert fit_timeout_s(100, 100, 50, 20, 30, 36000) == int(100 * 50 * 36 / 20 * 5 / 4) + 1800 + 1800
    assert fit_timeout_s(100, 100, 50, 20, 30, 3600) == 3600  # capped
    assert fit_timeout_s(None, 100, 50, 20, 30, 3600) == 3600  # unknown capacity
    # a 20 A charge from 90 %: 10 Ah, 30 min of work -> timed out after 1.6 h, not 3.5 h
    c = make()
    assert run(c, R(soc=90, current=20.0), 0, 5700) is True
    assert run(c, R(soc=92, current=20.0), 5700, 5900) is False and c.state == "timeout"
    # a slow charge that timed out above min_soc re-arms after the rest without min_soc
    c = make(charge_timeout_h=1, timeout_rest_min=60)
    c.update(R(soc=50, current=2.0), 0)
    run(c, R(soc=85, current=2.0), 5, 3700)
    assert c.state == "timeout" and c.next.startswith("continues the slow charge")
    assert run(c, R(soc=90, current=-1.0), 3700, 7190) is False
    assert run(c, R(soc=90, current=-1.0), 7190, 7300) is True
    assert c.reason == "slow charge continues after the timeout rest"


def test_holds_run_on_device_time_and_wall_clock_jumps_do_not_move_them():
    c = make(charge_timeout_h=1, timeout_rest_min=60)
    run(c, R(soc=50), 0, 3700, wall0=WALL0)
    assert c.state == "timeout"
    # the wall clock jumps back 30 days and forward a year: the hold ends on device time
    assert c.update(R(soc=50), 4000, WALL0 - 30 * 86400) is False
    assert c.update(R(soc=50), 5000, WALL0 + 365 * 86400) is False
    assert c.update(R(soc=50), 3605 + 3600, WALL0 - 30 * 86400) is True
    assert downtime_s(None, WALL0) is None and downtime_s(WALL0, WALL0 - 5) is None
    assert downtime_s(WALL0, WALL0 + 600) == 600 and downtime_s(WALL0, WALL0 + 40 * 86400) is None


def test_temperature_hysteresis_survives_a_reboot():
    c = make()
    c.update(R(soc=50, temps=(46,)), 0)
    assert c.state == "fault"
    c2 = reboot(c)
    assert c2.update(R(soc=50, temps=(43.5,)), 0) is False and c2.state == "fault"
    assert c2.reason == "temperature was above the charge range before the restart"
    assert c2.update(R(soc=50, temps=(42.0,)), 10) is True


def test_charge_window_and_allow_charge():
    # window 22:00-06:00 local time, UTC+1: WALL0 is 00:00 UTC = 01:00 local (inside)
    c = make(window_start_min=22 * 60, window_end_min=6 * 60, tz_offset_min=60)
    assert c.update(R(soc=50), 0, WALL0) is True
    assert c.update(R(soc=50), 100, WALL0 + 5 * 3600) is False  # 06:00 local
    assert c.state == "paused" and c.reason == "outside the charge window 22:00-06:00"
    assert c.allow_info(100) == {"allowed": True, "remaining_min": None, "window": "22:00-06:00",
                                 "in_window": False}
    assert c.update(R(soc=50), 200, WALL0 + 21 * 3600) is True  # 22:00 local
    # without a clock the window cannot be placed: charging is allowed
    assert make(window_start_min=60, window_end_min=120).update(R(soc=50), 0, None) is True
    c = make(min_switch_s=0)
    c.update(R(soc=50), 0)
    assert c.set_allow(False, 30, 10) is False
    assert c.state == "paused" and c.reason == "charging not allowed (allow_charge)"
    assert c.allow_info(10)["remaining_min"] == 30
    assert c.update(R(soc=50), 10 + 1800) is True  # it expired
    for bad in (("yes", None), (False, 0), (False, 2000), (False, True)):
        raises(ValueError, c.set_allow, bad[0], bad[1], 2000)
    assert c.relay is True


def test_persisted_stays_small():
    c = make()
    c.update(R(soc=50, current=20.0), 0, WALL0)
    run(c, R(soc=60, current=20.0), 5, 400, wall0=WALL0)
    text = json.dumps(c.persisted())
    assert len(text) < 250, text


def _alloc(c, r, n=200):
    import gc

    for t in range(0, 100, 5):
        r.received = t
        c.update(r, t, None)
    gc.collect()
    before = gc.mem_alloc()
    t = 100
    for _ in range(n):
        r.received = t
        c.update(r, t, None)
        t += 5
    return gc.mem_alloc() - before


def test_update_with_supervision_does_not_allocate_in_steady_state():
    if not IS_MICROPYTHON:
        skip("heap accounting is a MicroPython measurement")
    for r, state in ((R(soc=50, current=8.0, received=0), "charging"),
                     (R(soc=100, current=-2.0, received=0), "resting")):
        c = make()
        if state == "resting":
            c.update(R(soc=100, current=20.0), 0)
            c.update(R(soc=100, current=2.0), 50)
        used = _alloc(c, r)
        assert c.state == state and c.alarms.mask == 0, (c.state, c.reason)
        assert used < 256, (state, used)
