# The simulated LFP battery + BMS + charger + load (sim/battery.py), on both runtimes.
from battery import FAULTS, Battery, ocv
from testutil import approx, raises


def charge(b, seconds, step=5, relay=True):
    t = 0
    while t < seconds:
        b.step(step, relay)
        t += step


def test_ocv_curve_is_flat_in_the_middle_and_steep_at_the_knees():
    prev = 0.0
    for i in range(0, 1011):
        v = ocv(i / 10)
        assert v >= prev
        prev = v
    assert ocv(80) - ocv(20) < 0.1  # the LFP plateau
    assert ocv(5) - ocv(0) > 0.5  # bottom knee
    assert ocv(100) - ocv(97.5) > 0.1  # top knee
    assert approx(ocv(50), 3.30, 0.02)
    assert ocv(-5) == ocv(0) and ocv(200) == ocv(101)


def test_constant_current_then_taper_reaches_the_tail_current():
    b = Battery(capacity_ah=100, soc=50, charger_a=20, load_a=0)
    b.step(5, True)
    assert approx(b.current, 20.0)
    r = b.reading(0)
    assert approx(r.current, 20.0) and r.nominal_ah == 100
    saw_full_above_tail = False
    t = 0
    while t < 6 * 3600:
        b.step(5, True)
        r = b.reading(t)
        if r.soc >= 100 and r.current > 5.0:
            saw_full_above_tail = True
        if r.current < 5.0:
            break
        t += 5
    assert 1.5 * 3600 < t < 4 * 3600
    assert saw_full_above_tail  # SOC says 100 % while the charger still tapers: balancing time
    assert r.current < 5.0  # 0.05 C reached
    assert r.soc == 100
    # the tail comes before any cell reaches the usual 3.60 V stop (1 % cell spread)
    assert max(r.cells) < 3.60 and not r.faults


def test_load_discharges_and_relay_off_does_not_charge():
    b = Battery(capacity_ah=100, soc=80, charger_a=20, load_a=10)
    charge(b, 3600, relay=False)
    assert approx(b.current, -10.0)
    assert approx(b.soc(), 80 - 10 / 0.975, 0.05)
    # with the relay on the charger feeds the load and the battery gets the rest
    b.step(5, True)
    assert approx(b.current, 10.0)


def test_reading_has_reading_attributes_and_is_reused():
    b = Battery(cells=8, soc=40, temperature_c=12)
    r = b.reading(7)
    assert len(r.cells) == 8 and r.temperatures == [12.0, 12.0]
    assert r.received == 7 and r.charge_fet and r.discharge_fet and r.faults == []
    assert approx(r.voltage, sum(r.cells))
    assert approx(r.soc, 40.0, 0.01)
    assert b.reading(9) is r
    d = r.to_dict()
    assert sorted(d) == sorted(["voltage", "current", "soc", "remaining_ah", "nominal_ah", "cycles",
                                "cells", "temperatures", "charge_fet", "discharge_fet", "faults"])


def test_bms_protects_charge_temperature():
    b = Battery(soc=50, temperature_c=-3)
    r = b.reading(0)
    assert "charge_undertemp" in r.faults and r.charge_fet is False
    b.step(5, True)
    assert b.current <= 0  # no charge into a frozen cell
    b.temperature_c = 60
    assert "charge_overtemp" in b.reading(0).faults
    b.temperature_c = 20
    assert b.reading(0).faults == [] and b.reading(0).charge_fet


def test_forced_faults():
    for name in FAULTS:
        b = Battery(soc=50)
        b.fault = name
        r = b.reading(0)
        assert r.charge_fet is False
        if name == "charge_fet_off":
            assert r.faults == []
        else:
            assert r.faults == [name]
        b.step(5, True)
        assert b.current <= 0
    b.fault = None
    assert b.reading(0).faults == [] and b.reading(0).charge_fet


def test_overcharge_trips_the_bms_over_voltage_protection():
    b = Battery(soc=90, charger_a=20, load_a=0, imbalance_pct=4, balance_a=0)
    tripped = False
    t = 0
    while t < 8 * 3600 and not tripped:
        b.step(5, True)
        r = b.reading(t)
        tripped = "cell_overvoltage" in r.faults
        t += 5
    assert tripped and r.charge_fet is False
    assert max(r.cells) >= 3.60


def test_balancing_reduces_the_cell_spread():
    b = Battery(soc=95, charger_a=20, load_a=0, imbalance_pct=1.0, balance_a=1.0)
    before = b.spread_pct()
    charge(b, 3600)
    assert b.spread_pct() < before - 0.3
    nb = Battery(soc=95, charger_a=20, load_a=0, imbalance_pct=1.0, balance_a=0)
    charge(nb, 3600)
    assert approx(nb.spread_pct(), before, 0.01)


def test_daily_load_schedule():
    b = Battery(soc=80, load_schedule=[[0, 1], [7, 10], [9, 2]])
    b.step(5, False)
    assert b.load_a == 1.0
    b.t = 8 * 3600
    b.step(5, False)
    assert b.load_a == 10.0
    b.t = 86400 + 23 * 3600
    b.step(5, False)
    assert b.load_a == 2.0


def test_bad_parameters_raise():
    for kw in ({"capacity_ah": 0}, {"cells": 0}, {"soc": 101}, {"charger_a": -1},
               {"imbalance_pct": 50}, {"load_schedule": []}, {"load_schedule": [[5, 1], [3, 1]]},
               {"load_schedule": [[25, 1]]}, {"load_schedule": [[1, -1]]}, {"load_schedule": [[1]]}):
        raises(ValueError, Battery, **kw)


def test_closed_loop_with_the_controller():
    # what the live simulator does, in fast time: battery -> reading -> controller -> relay
    from ctrlutil import make

    b = Battery(capacity_ah=100, soc=60, charger_a=20, load_a=2)
    c = make()
    starts = []
    rests = []
    state = None
    t = 0
    while t < 3 * 86400:
        relay = c.update(b.reading(t), t)
        if c.state != state:
            state = c.state
            if state == "charging":
                starts.append(b.soc())
            elif state == "resting":
                rests.append(b.soc())
        b.step(30, relay)
        t += 30
    # 2 A takes the 20 % from 100 to 80 in 10 h: six charges in three days
    assert starts[0] == 60.0 and len(starts) == 6
    for soc in starts[1:]:
        assert 79.0 < soc <= 80.0
    assert len(rests) in (5, 6) and min(rests) == 100.0
    assert c.timeouts == 0 and c.faults == 0 and c.full_charges == len(rests)
