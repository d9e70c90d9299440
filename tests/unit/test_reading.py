from smartbms.bms import reading
from smartbms.bms.reading import BMSError, Reading
from testutil import IS_MICROPYTHON, skip


def test_new_reading_is_empty():
    r = Reading()
    d = r.to_dict()
    assert sorted(d.keys()) == sorted(reading.FIELDS)
    assert len(d) == 11
    assert d["voltage"] is None and d["soc"] is None and d["charge_fet"] is None
    assert d["cells"] == [] and d["temperatures"] == [] and d["faults"] == []
    assert r.received is None


def test_to_dict_copies_lists():
    r = Reading()
    r.cells = [3.3, 3.4]
    d = r.to_dict()
    d["cells"].append(9.9)
    assert r.cells == [3.3, 3.4]


def test_clear_forgets_everything():
    r = Reading()
    r.voltage = 13.2
    r.cells = [3.3]
    r.faults = ["short_circuit"]
    r.received = 12
    r.clear()
    assert r.voltage is None and r.cells == [] and r.faults == [] and r.received is None


def test_slots_reject_unknown_attributes():
    if IS_MICROPYTHON:
        skip("MicroPython does not enforce __slots__")
    r = Reading()
    try:
        r.volts = 1
    except AttributeError:
        return
    raise AssertionError("Reading accepted an unknown attribute")


def test_bmserror_is_valueerror():
    assert issubclass(BMSError, ValueError)


def test_charge_blocked_only_by_charge_faults():
    r = Reading()
    assert not r.charge_blocked()
    r.faults = ["cell_undervoltage", "discharge_overcurrent"]
    assert not r.charge_blocked()
    for name in reading.CHARGE_FAULTS:
        r.faults = [name]
        assert r.charge_blocked(), name


def test_sized_reuses_and_resizes():
    lst = [1, 2, 3]
    out = reading.sized(lst, 2)
    assert out is lst and lst == [1, 2]
    reading.sized(lst, 4)
    assert lst == [1, 2, 0, 0]
    assert reading.sized((1, 2), 1) == [0]
