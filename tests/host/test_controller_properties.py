# Property tests for the charge controller (CPython only: hypothesis). Whatever the readings,
# timing, settings and manual actions, the relay is never on while a safety rule forbids it,
# never switches on sooner than min_switch_s after a change, and the state is always coherent.
import json

from ctrlutil import R, settings
from hypothesis import given, settings as hsettings, strategies as st
from smartbms.charge.alarms import LATCHED
from smartbms.charge.controller import CHARGE_FAULTS, STATES, Controller

NAN = float("nan")
FAULT_NAMES = list(CHARGE_FAULTS) + ["discharge_overcurrent", "cell_undervoltage"]

# Mostly benign readings with the odd problem, so that long charging runs happen and get
# interrupted; the values sit on and around each limit.
reading = st.fixed_dictionaries({
    "soc": st.one_of(st.sampled_from([50, 79, 80, 81, 89, 90, 95, 99, 100]), st.floats(0, 100),
                     st.just(None), st.just(NAN)),
    "current": st.sampled_from([20.0, 10.0, 5.1, 5.0, 4.0, 0.0, -5.0, None]),
    "cell": st.sampled_from([3.30, 3.30, 3.30, 3.45, 3.59, 3.60, 3.65, NAN]),
    "temps": st.sampled_from([[20.0], [20.0, 21.0], [20.0], [], [1.9], [2.0], [4.9], [5.0], [42.0],
                              [45.0], [45.1], [-0.5], [20.0, 60.0], [20.0, NAN]]),
    "charge_fet": st.sampled_from([True, True, True, True, False, None]),
    "faults": st.one_of(st.just([]), st.just([]), st.just([]),
                        st.lists(st.sampled_from(FAULT_NAMES), min_size=1, max_size=2)),
    "age": st.sampled_from([0, 0, 0, 0, 5, 29, 30, 31, 100]),
    "none": st.sampled_from([False] * 9 + [True]),
})
action = st.one_of(
    st.tuples(st.just("read"), reading, st.sampled_from([1, 5, 30, 59, 61, 300, 599, 601, 3600, 4000])),
    st.tuples(st.just("override"), st.sampled_from(["on", "off", "auto"]), st.integers(1, 120)),
    st.tuples(st.just("reset"), st.none(), st.none()),
    st.tuples(st.just("reboot"), st.none(), st.none()),
)
config = st.fixed_dictionaries({
    "max_soc": st.sampled_from([80, 90, 100]),
    "min_switch_s": st.sampled_from([0, 60, 600]),
    "eoc_max_min": st.sampled_from([0, 30]),
    "charge_timeout_h": st.sampled_from([0.5, 3.5]),
    "full_every_days": st.sampled_from([0, 1]),
})


def allowed(r, s, now):
    if r is None or r.soc is None or (r.received is not None and now - r.received > s["stale_s"]):
        return False
    if r.soc != r.soc:  # NaN
        return False
    if any(f in CHARGE_FAULTS for f in r.faults) or r.charge_fet is False:
        return False
    if not all(v < s["cell_max_v"] for v in r.cells):  # written so that NaN fails
        return False
    return all(max(s["temp_min_c"], 0) <= t <= s["temp_max_c"] for t in r.temperatures)


@hsettings(max_examples=300, deadline=None)
@given(config, st.lists(action, min_size=1, max_size=60), st.booleans())
def test_safety_and_anti_chatter_hold_for_any_sequence(cfg, actions, wall_known):
    s = settings(min_soc=cfg["max_soc"] - 20, **cfg)
    c = Controller(s)
    now = 0
    last_change = None
    last_reading = None
    ov_on_s = 0  # relay-on time in one unbroken stretch of the override state
    for kind, a, b in actions:
        was = c.relay
        was_state = c.state
        if kind == "read":
            now += b
            r = None if a["none"] else R(soc=a["soc"], current=a["current"], cell=a["cell"], temps=a["temps"],
                                         charge_fet=a["charge_fet"], faults=a["faults"], received=now - a["age"])
            last_reading = r
            relay = c.update(r, now, 1767225600 + now if wall_known else None)
        elif kind == "override":
            now += 1
            relay = c.set_override(a, b, now)
        elif kind == "reset":
            now += 1
            relay = c.reset_timeout(now)
        else:
            p = json.loads(json.dumps(c.persisted()))
            c = Controller(s, p)
            now = 0
            last_change = None
            last_reading = None
            was = False
            relay = c.update(None, now)
        assert relay is c.relay
        assert c.state in STATES and c.reason and c.next
        if relay:
            assert allowed(last_reading, s, now), (c.state, c.reason)
            # on only while charging, or held on briefly by the anti-chatter delay after a
            # normal (not safety) end of charge
            assert c.state in ("charging", "balancing", "override") or (
                c.state == "resting" and "anti-chatter" in c.next), (c.state, c.next)
        if relay != was:
            if relay and last_change is not None:
                assert now - last_change >= s["min_switch_s"]
            last_change = now
        if c.state in ("timeout", "no_data", "startup", "fault"):
            assert relay is False
        # a manual "on" obeys the charge timeout (overshoot: at most one reading interval)
        if relay and c.state == "override":
            if kind == "read" and was and was_state == "override":
                ov_on_s += b
            assert ov_on_s <= s["charge_timeout_h"] * 3600 + 4000, ov_on_s
        else:
            ov_on_s = 0


# Issue 12: whatever the readings (currents that say a stuck relay, a dead charger or too much
# current, glitches, drops), the relay is never on with a latched alarm or during a dead
# charger's back-off, and it switches on at most 17 times in any 6 hours (35 switches).
reading12 = st.fixed_dictionaries({
    "soc": st.sampled_from([20, 50, 79, 81, 95, 100]),
    "current": st.sampled_from([-5.0, -1.0, 0.0, 0.9, 3.0, 20.0, 150.0, None]),
    "cell": st.sampled_from([3.30, 3.30, 3.19, 3.45, 3.61]),
    "faults": st.sampled_from([[], [], [], ["charge_overcurrent"], ["current_sensor_error"], ["cell_overvoltage"]]),
    "fresh": st.sampled_from([True, True, True, False]),
})


@hsettings(max_examples=200, deadline=None)
@given(st.sampled_from([0, 60]), st.lists(st.tuples(reading12, st.sampled_from([5, 30, 61, 300, 900, 3600])),
                                          min_size=1, max_size=120))
def test_alarms_hold_the_relay_off_and_the_wear_budget_holds(min_switch_s, steps):
    s = settings(min_switch_s=min_switch_s)
    c = Controller(s)
    now = 0
    ons = []
    relay = False
    for a, dt in steps:
        now += dt
        r = R(soc=a["soc"], current=a["current"], cell=a["cell"], faults=a["faults"],
              received=now if a["fresh"] else now - 100)
        on = c.update(r, now)
        if on:
            assert not c.alarms.mask & LATCHED, c.reason  # relay_stuck, overcurrent
            assert not c._sup.dead_waiting() or c.state == "override"
        if on and not relay:
            ons.append(now)
        relay = on
    for t0 in ons:
        assert len([t for t in ons if t0 <= t < t0 + 6 * 3600]) <= 17, ons
