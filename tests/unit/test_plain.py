# The charger's state in plain words (smartbms.charge.plain): derived at every answer from
# the settings as they are now and the clock, so a changed setting or a passing minute shows.
from ctrlutil import R, make, run, to_rest

from smartbms.charge import plain


def test_resting_text_follows_a_min_soc_change_at_once():
    c = make()
    now = to_rest(c)
    d = plain.describe(c, R(soc=79, current=-3.0), now)
    assert d["summary"] == "Full, resting until 80 %"
    assert d["next"] == "charges again at SOC <= 80 %"
    c._s["min_soc"] = 70  # the owner saves min_soc 70 while resting
    c.update(R(soc=79), now + 10)
    d = plain.describe(c, R(soc=79, current=-3.0), now + 10)
    assert d["summary"] == "Full, resting until 70 %" and d["next"] == "charges again at SOC <= 70 %"
    assert c.state == "resting"  # and the controller does wait for 70
    assert d["flow"] == "Discharging 3.0 A"


def test_charge_end_by_tail_current_in_words():
    c = make()
    c.update(R(soc=60), 0)
    c.update(R(soc=100, current=20), 100)
    c.update(R(soc=100, current=4.8), 200)
    assert c.state == "resting"
    d = plain.describe(c, None, 200)
    assert d["ended"] == "Charge ended: the current fell to 5.0 A"
    assert d["flow"] is None


def test_override_counts_down():
    c = make()
    run(c, R(soc=50), 0, 100)
    c.set_override("off", 5, 100)
    d = plain.describe(c, None, 100)
    assert d["summary"] == "Manual: charger off for 5 min more"
    assert d["next"] == "automatic control resumes in 5 min"
    c.update(R(soc=50), 100 + 125)
    d = plain.describe(c, None, 100 + 125)
    assert d["summary"] == "Manual: charger off for 3 min more"
    assert d["next"] == "automatic control resumes in 3 min"


def test_timeout_hold_counts_its_rest_down():
    c = make(charge_timeout_h=0.5, timeout_rest_min=60)
    run(c, R(soc=50), 0, 1900)
    assert c.state == "timeout" and c.timeout_active()
    d = plain.describe(c, None, 1900)
    assert d["summary"] == "Charge took too long: resting"
    left = 3600 - c._hold_s
    assert "after %d min more rest" % ((left + 59) // 60) in d["next"]
    run(c, R(soc=50), 1900, 1900 + 1800)  # half an hour later
    assert "after %d min more rest" % ((left - 1800 + 59) // 60) in plain.describe(c, None, 3700)["next"]


def test_charging_flow_and_target():
    c = make(max_soc=90)
    c.update(R(soc=50, current=12.34), 0)
    d = plain.describe(c, R(soc=50, current=12.34), 0)
    assert d["summary"] == "Charging to 90 %" and d["flow"] == "Charging 12.3 A"
    assert plain.flow(R(current=0.05)) == "Idle"
    assert not c.timeout_active()


def test_fault_names_the_cause():
    c = make()
    c.update(R(soc=50, temps=(-3, 20)), 0)
    d = plain.describe(c, None, 0)
    assert d["summary"].startswith("Stopped for safety: temperature -3.0 °C")
    assert d["next"].startswith("resumes when every temperature")


def test_temperature_block_follows_a_temp_setting_change_at_once():
    c = make()
    c.update(R(soc=50, temps=(-3, 20)), 0)
    assert plain.describe(c, None, 0)["next"] == "resumes when every temperature is within 5..42 °C"
    c._s.update(temp_min_c=4, temp_max_c=40, temp_hyst_c=2)  # the owner saves new temperature limits
    assert plain.describe(c, None, 1)["next"] == "resumes when every temperature is within 6..38 °C"
    c.update(R(soc=50, temps=(-3, 20)), 10)  # still the same block: the controller keeps its text
    assert plain.describe(c, None, 10)["next"] == "resumes when every temperature is within 6..38 °C"
    assert c.state == "fault"


def test_anti_chatter_hold_counts_down():
    c = make(min_switch_s=60)
    now = to_rest(c)  # the relay went off at `now`
    c.update(R(soc=80), now + 10)  # a new charge, held by the delay
    assert c.state == "charging" and c.relay is False
    assert plain.describe(c, None, now + 10)["next"] == "relay switches on in 50 s (at least 60 s between switches)"
    c.update(R(soc=80), now + 40)
    assert plain.describe(c, None, now + 40)["next"] == "relay switches on in 20 s (at least 60 s between switches)"
    c._s["min_switch_s"] = 30  # a shorter delay: due now, the next reading switches
    assert plain.describe(c, None, now + 40)["next"] == \
        "relay switches on at the next reading (at least 30 s between switches)"
    c.update(R(soc=80), now + 45)
    assert c.relay is True and plain.describe(c, None, now + 45)["next"].startswith("charges to 100 %")
    c = make(min_switch_s=0)
    now = to_rest(c)
    c._s["min_switch_s"] = 3600  # a long delay reads in minutes
    c.update(R(soc=80), now + 10)
    assert plain.describe(c, None, now + 10)["next"] == "relay switches on in 60 min (at least 3600 s between switches)"


def test_relay_wear_hold_counts_down():
    c = make(min_switch_s=0)
    t = 0
    for _ in range(3):  # three switch-ons spend the whole wear budget
        assert c.update(R(soc=50), t) is True
        assert c.update(R(soc=50, temps=(50, 20)), t + 5) is False  # too hot: off at once
        t += 10
    assert c.update(R(soc=50), t) is False and c.state == "charging"  # the fourth waits
    wait = c._wear.wait_s()
    assert wait > 20 * 60
    d = plain.describe(c, None, t)
    assert d["next"] == "relay switches on in %d min (relay wear limit: 6 switches an hour)" % ((wait + 59) // 60)
    run(c, R(soc=50), t + 5, t + 5 + 600)  # ten minutes later, still waiting
    assert c.relay is False
    later = plain.describe(c, None, t + 600)["next"]
    assert later == "relay switches on in %d min (relay wear limit: 6 switches an hour)" % ((wait - 600 + 59) // 60)
