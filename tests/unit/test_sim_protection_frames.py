"""The simulated BMS's protections (sim/bms_frames.py, bms_frames_more.py: the `faults` of its
values) reach the firmware's decoders as the family's own bits: one poll of each driver,
answered by the sim's respond(), gives back the names the sim was asked for."""
import bms_frames as bf
from battery import Battery
from bms_testdata import feed_all
from smartbms.bms import protocols
from smartbms.bms.reading import Reading

BASE = {"cells": (3.3, 3.3, 3.3, 3.3), "temperatures": (25.0, 25.0), "current": 0.0, "soc": 60,
        "remaining_ah": 60.0, "nominal_ah": 100.0, "cycles": 2, "charge_fet": True, "discharge_fet": True}
# the protections sim/battery.py raises (its own limits, or forced from the sim panel)
BATTERY_FAULTS = ("cell_overvoltage", "pack_overvoltage", "charge_overtemp", "charge_undertemp",
                  "charge_overcurrent", "short_circuit", "cell_undervoltage")
WITH_BITS = ("jbd", "jk02_24s", "jk02_32s", "daly", "seplos", "renogy")


def poll(name, values):
    """The Reading a driver of `name` decodes from one connection's and one poll's answers."""
    d = protocols.get(name)
    a = d.new_assembler()
    r = Reading()
    for req in tuple(d.start_requests()) + tuple(d.poll_requests()):
        for frame in bf.respond(name, req, values):
            for f in feed_all(a, bf.fragments(frame, 20)):
                d.decode(f, r)
    return r


def values(faults, charge_fet=False, discharge_fet=True):
    v = dict(BASE)
    v.update(faults=tuple(faults), charge_fet=charge_fet, discharge_fet=discharge_fet)
    return v


def test_no_protection_no_fault():
    for name in protocols.NAMES:
        r = poll(name, dict(BASE, faults=()))
        assert r.faults == [], (name, r.faults)


def test_each_protection_comes_back_by_name():
    for name in WITH_BITS:
        for fault in BATTERY_FAULTS:
            r = poll(name, values([fault], discharge_fet=fault not in ("short_circuit", "cell_undervoltage")))
            assert r.faults == [fault], (name, fault, r.faults)
            assert r.charge_blocked() == (fault != "cell_undervoltage"), (name, fault)


def test_several_protections_at_once():
    for name in WITH_BITS:
        r = poll(name, values(["charge_overtemp", "cell_overvoltage"]))
        assert sorted(r.faults) == ["cell_overvoltage", "charge_overtemp"], (name, r.faults)
        assert r.charge_fet is False


def test_ant_says_it_with_its_mosfet_status_codes():
    # one reason per MOSFET: the charge side's first, the discharge side's own
    for fault in BATTERY_FAULTS:
        discharge = fault in ("short_circuit", "cell_undervoltage")
        r = poll("ant", values([fault], discharge_fet=not discharge))
        assert r.faults == [fault], (fault, r.faults)
    r = poll("ant", values(["charge_overtemp", "cell_overvoltage"]))
    assert r.faults == ["cell_overvoltage"] and r.charge_fet is False and r.discharge_fet is True
    r = poll("ant", values(["short_circuit"], charge_fet=False, discharge_fet=False))
    assert r.faults == ["short_circuit"] and r.charge_fet is False and r.discharge_fet is False


def test_redodo_frames_carry_no_protection():
    r = poll("redodo", values(["cell_overvoltage", "charge_overtemp"]))
    assert r.faults == []


def test_a_raw_fault_word_wins_over_the_names():
    r = poll("jbd", dict(values(["cell_overvoltage"]), protection=1 << 14))
    assert r.faults == ["jbd_protection_bit_14"]
    r = poll("jk02_32s", dict(values(["cell_overvoltage"]), errors=0x0800))
    assert r.faults == ["current_sensor_error"]
    r = poll("seplos", dict(values(["cell_overvoltage"]), events=(0, 0, 0, 0, 0, 0), hard=0x80))
    assert r.faults == ["seplos_aerosol_alarm"]


def test_a_battery_beyond_its_bms_limits_reports_the_protection():
    for temp, fault in ((-5.0, "charge_undertemp"), (60.0, "charge_overtemp")):
        b = Battery(temperature_c=temp)
        b.step(1.0, True)
        br = b.reading()
        v = dict(BASE, temperatures=tuple(br.temperatures), cells=tuple(br.cells), faults=tuple(br.faults),
                 charge_fet=br.charge_fet, discharge_fet=br.discharge_fet)
        assert list(br.faults) == [fault]
        for name in WITH_BITS + ("ant",):
            r = poll(name, v)
            assert r.faults == [fault] and r.charge_fet is False, (name, temp, r.faults)
    b = Battery(soc=100.0, imbalance_pct=0.0)
    b.cell_soc[1] = 100.6  # one cell past 3.65 V
    br = b.reading()
    assert "cell_overvoltage" in br.faults and br.charge_fet is False
    v = dict(BASE, cells=tuple(br.cells), faults=tuple(br.faults), charge_fet=False)
    for name in WITH_BITS + ("ant",):
        assert poll(name, v).faults == ["cell_overvoltage"], name
