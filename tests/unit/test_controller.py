# The charge controller, one rule at a time (runs on CPython and the MicroPython unix port).
from ctrlutil import DEFAULTS, R, make, run, settings, to_rest
from smartbms.charge.controller import CHARGE_FAULTS, STATES, Controller
from testutil import raises


def test_relay_off_until_first_fresh_reading():
    c = make()
    assert c.update(None, 0) is False
    assert c.state == "startup" and c.relay is False
    # a reading that is already stale does not count
    assert c.update(R(soc=50, received=0), 100) is False
    assert c.state == "startup"
    assert c.update(R(soc=50, received=100), 101) is True
    assert c.state == "charging"
    assert c.reason == "first charge to the max level"


def test_charges_to_max_then_balances_until_tail_current():
    c = make()
    assert c.update(R(soc=90, current=20), 0) is True
    assert c.update(R(soc=100, current=12), 100) is True
    assert c.state == "balancing"
    assert "SOC 100 % >= 100 %" in c.reason
    # 0.05 C of 100 Ah = 5 A; above it balancing goes on
    assert c.update(R(soc=100, current=5.5), 200) is True
    assert c.update(R(soc=100, current=4.9), 300) is False
    assert c.state == "resting"
    assert c.reason == "tail current 4.9 A <= 5.0 A"
    assert c.next == "charges again at SOC <= 80 %"
    assert c.full_charges == 1


def test_balancing_ends_after_eoc_max_min():
    c = make(eoc_max_min=30)
    c.update(R(soc=100, current=8), 0)
    assert c.state == "balancing"
    assert run(c, R(soc=100, current=8), 5, 30 * 60) is True
    assert c.state == "balancing"
    assert run(c, R(soc=100, current=8), 30 * 60, 30 * 60 + 10) is False
    assert c.state == "resting" and c.reason == "balanced for 30 min"


def test_no_balancing_when_eoc_max_min_is_zero():
    c = make(eoc_max_min=0)
    c.update(R(soc=99, current=8), 0)
    assert c.update(R(soc=100, current=8), 100) is False
    assert c.state == "resting"


def test_max_soc_below_100_stops_at_max_without_balancing():
    c = make(max_soc=90, min_soc=70)
    assert c.update(R(soc=85), 0) is True
    assert c.update(R(soc=90, current=20), 100) is False
    assert c.state == "resting" and c.reason == "SOC 90 % >= 90 %"
    assert c.next == "charges again at SOC <= 70 %"


def test_cell_at_limit_stops_at_once_and_ends_the_charge_when_confirmed():
    c = make()
    c.update(R(soc=70), 0)
    assert c.relay is True
    # within min_switch_s of switching on: a safety stop does not wait
    assert c.update(R(soc=95, cell=3.61), 5) is False
    assert c.state == "fault" and c.reason == "cell 3.61 V >= 3.60 V"
    assert c.next == "ends the charge if 3 readings in a row confirm it"
    assert c.update(R(soc=95, cell=3.62), 10) is False and c.state == "fault"
    # the third reading in a row confirms it: the charge is over
    assert c.update(R(soc=95, cell=3.61), 15) is False
    assert c.state == "resting" and c.reason == "cell 3.61 V >= 3.60 V"
    # stopped below the target: waits for a real drop, not for the next reading
    assert c.update(R(soc=95, cell=3.40), 200) is False
    assert c.next == "charges again at SOC <= 80 %"


def test_one_high_reading_is_a_fault_that_clears():
    c = make(min_switch_s=60)
    c.update(R(soc=50), 0)
    assert c.update(R(soc=50, cell=3.70), 100) is False
    assert c.state == "fault"
    # the next reading is normal: a glitch, the charge goes on (after the anti-chatter delay)
    assert c.update(R(soc=50), 105) is False
    assert c.state == "charging" and "anti-chatter" in c.next
    assert c.update(R(soc=50), 160) is True
    assert c.full_charges == 0 and c.next.startswith("charges to 100 %")


def test_cell_limit_from_settings():
    c = make(cell_max_v=3.45)
    c.update(R(soc=70, cell=3.44), 0)
    assert c.relay is True
    assert c.update(R(soc=70, cell=3.46), 10) is False
    assert c.reason == "cell 3.46 V >= 3.45 V"


def _confirmed_stop(c, soc, t):
    for k in range(3):
        c.update(R(soc=soc, cell=3.62), t + 5 * k)
    assert c.relay is False and c.state != "fault"


def test_cell_stop_at_low_soc_rearms_five_points_lower():
    c = make(min_soc=60)
    c.update(R(soc=60), 0)
    _confirmed_stop(c, 62, 10)
    assert c.next == "charges again at SOC <= 57 %"
    assert c.update(R(soc=58, cell=3.3), 500) is False
    assert c.update(R(soc=57, cell=3.3), 600) is True
    assert c.state == "charging"


def test_cell_stop_never_lowers_the_start_below_min_soc_minus_5():
    # one over-voltage at 50 % used to move the next start to 45 % with min_soc 80
    c = make(min_soc=80)
    c.update(R(soc=40), 0)
    _confirmed_stop(c, 50, 10)
    # 50 % is below the floor of 75 %: the next charge starts (after the anti-chatter delay)
    assert c.state == "charging" and c.reason == "SOC 50 % <= 75 %"
    assert c.update(R(soc=50, cell=3.3), 500) is True and c.state == "charging"


def test_bms_overvoltage_flag_stops_and_ends_charge():
    for name in ("cell_overvoltage", "pack_overvoltage"):
        c = make()
        c.update(R(soc=99), 0)
        assert c.update(R(soc=100, faults=[name]), 5) is False
        assert c.state == "fault" and c.reason == "BMS protection: " + name
        c.update(R(soc=100, faults=[name]), 10)
        c.update(R(soc=100, faults=[name]), 15)
        # confirmed by three readings: when the BMS clears it, the charge is over
        assert c.update(R(soc=100, current=0), 100) is False
        assert c.state == "resting"
        assert c.reason == "BMS protection: over-voltage"


def test_resting_until_min_soc_then_charges_again():
    c = make()
    now = to_rest(c)
    assert c.update(R(soc=81, current=-5), now + 1000) is False
    assert c.state == "resting"
    assert c.update(R(soc=80, current=-5), now + 2000) is True
    assert c.state == "charging" and c.reason == "SOC 80 % <= 80 %"


def test_charge_session_timeout_and_rearm():
    c = make(charge_timeout_h=1, timeout_rest_min=60)
    r = R(soc=50)
    assert run(c, r, 0, 3600) is True
    assert c.state == "charging"
    assert run(c, r, 3600, 3610) is False
    assert c.state == "timeout" and c.timeouts == 1
    assert "without reaching the end" in c.reason
    assert c.next == "charges again at SOC <= 80 % after 60 min of rest, or on a manual reset"
    # SOC low enough but the rest is not over
    assert c.update(R(soc=40), 3610 + 1800) is False
    assert c.state == "timeout"
    # rest over but SOC too high
    assert c.update(R(soc=85), 3610 + 3700) is False
    assert c.update(R(soc=79), 3610 + 3800) is True
    assert c.state == "charging"


def test_timeout_counts_only_relay_on_time():
    c = make(charge_timeout_h=1)
    run(c, R(soc=50), 0, 1800)
    # 2 h with the charge paused by the cold do not count
    run(c, R(soc=50, temps=(-3,)), 1800, 1800 + 7200)
    assert c.state == "fault"
    assert run(c, R(soc=50, temps=(20,)), 9000, 9000 + 1700) is True
    assert c.state == "charging"
    run(c, R(soc=50), 10700, 10700 + 200)
    assert c.state == "timeout"


def test_manual_timeout_reset():
    c = make(charge_timeout_h=0.5)
    run(c, R(soc=50), 0, 1900)
    assert c.state == "timeout"
    assert c.reset_timeout(2000) is True
    assert c.state == "charging" and c.reason == "timeout reset by hand"
    # a reset outside a timeout changes nothing
    assert c.reset_timeout(2010) is True and c.state == "charging"


def test_temperature_limits_with_hysteresis():
    c = make(temp_min_c=2, temp_max_c=45, temp_hyst_c=3)
    assert c.update(R(soc=50, temps=(20, 20)), 0) is True
    assert c.update(R(soc=50, temps=(20, 1.5)), 100) is False
    assert c.state == "fault" and c.reason == "temperature 1.5 °C < 2 °C"
    assert c.next == "resumes when every temperature is within 5..42 °C"
    assert c.update(R(soc=50, temps=(20, 4)), 200) is False
    assert c.update(R(soc=50, temps=(20, 5)), 300) is True
    assert c.update(R(soc=50, temps=(46, 20)), 400) is False
    assert c.reason == "temperature 46.0 °C > 45 °C"
    assert c.update(R(soc=50, temps=(43, 20)), 500) is False
    assert c.update(R(soc=50, temps=(42, 20)), 600) is True


def test_never_charges_below_freezing_whatever_the_settings():
    c = Controller(settings(temp_min_c=-10, temp_hyst_c=1))
    assert c.update(R(soc=50, temps=(-0.5,)), 0) is False
    assert c.reason == "temperature -0.5 °C < 0 °C"


def test_charge_protections_stop_but_discharge_ones_do_not():
    for name in CHARGE_FAULTS:
        c = make()
        assert c.update(R(soc=50, faults=["discharge_overcurrent"]), 0) is True
        assert c.update(R(soc=50, faults=[name]), 5) is False, name
        assert c.state == "fault" and name in c.reason
        assert c.faults == 1


def test_bms_undertemp_stops_even_without_temperatures():
    c = make()
    assert c.update(R(soc=50, temps=(), faults=["charge_undertemp"]), 0) is False
    assert c.state == "fault" and c.reason == "BMS protection: charge_undertemp"


def test_charge_fet_off_is_a_fault():
    c = make()
    assert c.update(R(soc=50), 0) is True
    assert c.update(R(soc=50, charge_fet=False), 5) is False
    assert c.state == "fault" and c.reason == "BMS charge MOSFET is off"
    assert c.update(R(soc=50, charge_fet=True), 100) is True
    assert c.state == "charging"


def test_stale_data_turns_relay_off_and_fresh_data_resumes():
    c = make(stale_s=30)
    r = R(soc=50, received=0)
    assert c.update(r, 0) is True
    assert c.update(r, 30) is True
    assert c.update(r, 31) is False
    assert c.state == "no_data" and c.reason == "no BMS data for 31 s (limit 30 s)"
    assert c.next == "resumes when fresh BMS data arrives"
    r.received = 200
    assert c.update(r, 200) is True and c.state == "charging"
    assert c.update(None, 210) is False and c.state == "no_data"


def test_anti_chatter_delays_normal_switching_only():
    c = make(min_switch_s=60)
    now = to_rest(c)  # relay went off at `now`
    assert c.update(R(soc=80), now + 10) is False
    assert c.state == "charging"
    assert c.next == "relay switches on after the 60 s anti-chatter delay"
    assert c.update(R(soc=80), now + 59) is False
    assert c.update(R(soc=80), now + 60) is True
    assert c.next.startswith("charges to 100 %")
    # a safety stop right after switching on is immediate
    assert c.update(R(soc=80, temps=(50,)), now + 61) is False


def test_override_on_off_and_expiry():
    c = make(min_switch_s=0)
    now = to_rest(c)
    c.update(R(soc=95), now + 10)
    assert c.set_override("on", 30, now + 20) is True
    assert c.state == "override" and c.reason == "manual on for 30 min"
    assert c.next == "automatic control resumes in 30 min"
    assert c.update(R(soc=96), now + 20 + 29 * 60) is True
    assert c.update(R(soc=97), now + 20 + 30 * 60) is False
    assert c.state == "resting"
    assert c.set_override("off", 10, now + 4000) is False
    c.update(R(soc=50), now + 4100)
    assert c.state == "override" and c.relay is False
    assert c.set_override("auto", 0, now + 4200) is True
    assert c.state == "charging"


def test_override_off_is_immediate_and_on_waits_for_anti_chatter():
    c = make(min_switch_s=60)
    c.update(R(soc=50), 0)
    assert c.set_override("off", 5, 10) is False
    assert c.set_override("on", 5, 20) is False
    assert c.state == "override" and "anti-chatter" in c.next
    assert c.update(R(soc=50), 70) is True


def test_bad_override_raises_and_changes_nothing():
    c = make()
    c.update(R(soc=50), 0)
    for mode, minutes in (("maybe", 10), ("on", 0), ("on", 2000), ("off", "5"), ("on", True)):
        raises(ValueError, c.set_override, mode, minutes, 5)
        assert c.state == "charging" and c.relay is True


def test_full_every_days_charges_to_100_when_due():
    w = 1767225600
    c = make(max_soc=90, min_soc=70, full_every_days=7)
    assert c.update(R(soc=60), 0, w) is True
    assert c.next == "charges until SOC >= 90 %"
    assert c.update(R(soc=90, current=20), 100, w + 100) is False
    assert c.state == "resting"
    # 7 days later (counted from boot: no full charge known yet) a full charge is due
    t = 7 * 86400
    assert c.update(R(soc=85), t, w + t) is True
    assert c.reason == "full charge due (every 7 days)"
    assert c.update(R(soc=95, current=20), t + 100, w + t + 100) is True
    assert c.update(R(soc=100, current=10), t + 200, w + t + 200) is True
    assert c.state == "balancing"
    assert c.update(R(soc=100, current=2), t + 300, w + t + 300) is False
    assert c.full_charges == 1
    # the next cycle goes to max_soc again
    assert c.update(R(soc=70), t + 5 * 86400, w + t + 5 * 86400) is True
    assert c.update(R(soc=90, current=20), t + 5 * 86400 + 100, w + t + 5 * 86400 + 100) is False


def test_full_every_days_is_off_at_zero():
    c = make(max_soc=90, min_soc=70, full_every_days=0)
    c.update(R(soc=80), 0, 1767225600)
    c.update(R(soc=90), 100, 1767225700)
    assert c.update(R(soc=85), 400 * 86400, 1767225600 + 400 * 86400) is False


def test_states_and_attributes():
    c = make()
    assert set(STATES) == {"startup", "charging", "balancing", "resting", "timeout", "fault",
                           "no_data", "override", "paused"}
    c.update(R(soc=50), 0)
    c.update(R(soc=50), 50)
    assert c.since == 0
    c.update(R(soc=50, charge_fet=False), 70)
    assert c.since == 70 and c.state == "fault"
    assert sorted(DEFAULTS) == sorted(settings())


def test_no_nominal_capacity_ends_balancing_by_time():
    c = make(eoc_max_min=10)
    c.update(R(soc=100, current=1, nominal_ah=0), 0)
    assert c.state == "balancing"
    assert run(c, R(soc=100, current=1, nominal_ah=0), 5, 600) is True
    assert run(c, R(soc=100, current=1, nominal_ah=0), 600, 610) is False
    assert c.reason == "balanced for 10 min"


def test_fault_reason_follows_the_current_protection():
    c = make()
    c.update(R(soc=50, faults=["charge_overtemp"]), 0)
    assert c.reason == "BMS protection: charge_overtemp"
    c.update(R(soc=50, faults=["short_circuit"]), 10)
    assert c.reason == "BMS protection: short_circuit" and c.since == 0
    c.update(R(soc=50, faults=["short_circuit"], temps=(-2,)), 20)
    assert c.reason == "temperature -2.0 °C < 2 °C"
    assert c.faults == 1  # one stretch in the fault state


def test_override_info_for_the_status_page():
    c = make(min_switch_s=0)
    c.update(R(soc=50), 0)
    assert c.override_info(0) == {"mode": "auto", "remaining_min": None}
    c.set_override("off", 30, 10)
    assert c.override_info(10) == {"mode": "off", "remaining_min": 30}
    assert c.override_info(10 + 29 * 60 + 1) == {"mode": "off", "remaining_min": 1}
    assert c.override_info(10 + 30 * 60) == {"mode": "auto", "remaining_min": None}
    c.set_override("on", 5, 20)
    assert c.override_info(20)["mode"] == "on"
    # a cell at the limit ends an "on" override
    c.update(R(soc=50, cell=3.65), 30)
    assert c.override_info(30) == {"mode": "auto", "remaining_min": None}


def test_over_voltage_stop_of_a_due_full_charge_counts_as_full():
    # max_soc < 100: the due full charge is cut short by a high cell (or the BMS's flag).
    # The pack is as full as it safely gets: counted as the full charge, so resting does
    # not restart it (it used to, every min_switch_s, for ever).
    w = 1767225600
    t = 7 * 86400
    for stop in (R(soc=96, cell=3.61), R(soc=96, faults=["cell_overvoltage"])):
        c = make(max_soc=90, min_soc=70, full_every_days=7)
        c.update(R(soc=90), 0, w)
        assert c.state == "resting"
        assert c.update(R(soc=85), t, w + t) is True
        assert c.reason == "full charge due (every 7 days)"
        for k in range(3):  # confirmed over three readings
            assert c.update(stop, t + 90 + 5 * k, w + t + 90 + 5 * k) is False
        assert c.full_charges == 1 and c.persisted()["full_at"] == w + t + 100
        switches = 0
        relay = False
        for i in range(1, 200):
            now = t + 100 + 60 * i
            r = c.update(R(soc=95, cell=3.40), now, w + now)
            switches += r != relay
            relay = r
        assert switches == 0 and c.state == "resting"
        assert c.next == "charges again at SOC <= 70 %"
        # the next charge goes to max_soc again
        now = t + 86400
        assert c.update(R(soc=70), now, w + now) is True
        assert c.next == "charges until SOC >= 90 %"


def test_temperature_reason_follows_the_cause():
    c = make()
    c.update(R(soc=50, temps=(-5,)), 0)
    assert c.reason == "temperature -5.0 °C < 2 °C"
    c.update(R(soc=50, temps=(60,)), 10)
    assert c.state == "fault" and c.reason == "temperature 60.0 °C > 45 °C"
    assert c.since == 0 and c.faults == 1  # the same stretch in fault
    # the same cause at another value, or inside the hysteresis band: the text stays
    reason = c.reason
    c.update(R(soc=50, temps=(61,)), 20)
    c.update(R(soc=50, temps=(43,)), 30)
    assert c.reason is reason and c.relay is False
    c.update(R(soc=50, temps=(20, 1)), 40)
    assert c.reason == "temperature 1.0 °C < 2 °C"
    assert c.update(R(soc=50, temps=(20,)), 200) is True


def test_nan_readings_are_unsafe():
    # comparisons with NaN are all false: each check is written so that NaN fails it
    nan = float("nan")
    c = make(min_switch_s=0)
    assert c.update(R(soc=50), 0) is True
    assert c.update(R(soc=50, temps=(20, nan)), 10) is False
    assert c.state == "fault" and c.reason == "temperature reading is not a number"
    assert c.alarms_info(10)[0]["name"] == "bad_value"
    # charging resumes only after three good readings in a row
    assert c.update(R(soc=50), 20) is False
    assert c.update(R(soc=50), 25) is False
    assert c.update(R(soc=50), 30) is True and c.alarms_info(30) == []
    assert c.update(R(soc=50, cell=nan), 35) is False
    assert c.state == "fault" and c.reason == "BMS cell voltage is not a number"
    assert c.next == "resumes after 3 good BMS readings in a row"
    for t in (40, 45, 50):
        c.update(R(soc=50), t)
    assert c.relay is True and c.state == "charging"
    assert c.update(R(soc=nan), 55) is False
    assert c.state == "no_data" and c.reason == "BMS SOC is not a number"
    # the fourth switch-on within a minute: the relay wear budget makes it wait
    assert c.update(R(soc=50), 60) is False and c.state == "charging"
    assert "relay wear limit" in c.next
    c.set_override("on", 10, 70)
    assert c.update(R(soc=nan), 80) is False and c.state == "no_data"
    # a first reading with a NaN SOC starts nothing
    c = make()
    assert c.update(R(soc=nan), 0) is False and c.state == "no_data"
    assert c.update(R(soc=60), 10) is True and c.reason == "first charge to the max level"
    # a NaN cell beside a high one: the high one still ends the charge, by its value
    c = make(min_switch_s=0)
    c.update(R(soc=60), 0)
    r = R(soc=90)
    r.cells = [nan, 3.62, 3.30, 3.30]
    assert c.update(r, 10) is False and c.state == "fault"
    c.update(r, 15)
    c.update(r, 20)
    for t in (25, 30, 35):  # the NaN needs three good readings to clear
        assert c.update(R(soc=90), t) is False
    assert c.state == "resting" and c.reason == "cell 3.62 V >= 3.60 V"
