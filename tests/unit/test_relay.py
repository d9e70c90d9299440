# Relay driver: polarity both ways, OFF from the very first pin write, logging of changes.
from smartbms.charge.relay import Relay


class FakePin:
    """Records every level written, including the one the pin was created with."""

    created = []

    def __init__(self, number, level):
        self.number = number
        self.levels = [level]
        FakePin.created.append(self)

    def value(self, v=None):
        if v is None:
            return self.levels[-1]
        self.levels.append(v)


class Log:
    def __init__(self):
        self.events = []

    def add(self, kind, message):
        self.events.append((kind, message))


def test_active_low_starts_off_and_drives_low_for_on():
    r = Relay(pin=33, active_low=True, pin_factory=FakePin)
    pin = FakePin.created[-1]
    assert pin.number == 33
    assert pin.levels[0] == 1  # created already at the OFF level: never a glitch to ON
    assert set(pin.levels) == {1}
    assert r.on is False and r.level() == 1
    assert r.set(True, "soc 79 < 80") is True
    assert pin.value() == 0 and r.on is True
    r.off("bms fault")
    assert pin.value() == 1 and r.on is False


def test_active_high_starts_off_and_drives_high_for_on():
    r = Relay(pin=25, active_low=False, pin_factory=FakePin)
    pin = FakePin.created[-1]
    assert pin.number == 25 and pin.levels[0] == 0 and set(pin.levels) == {0}
    r.set(True, "x")
    assert pin.value() == 1
    r.set(False, "y")
    assert pin.value() == 0


def test_changes_are_logged_with_reasons_and_repeats_are_not():
    log = Log()
    r = Relay(log=log, pin_factory=FakePin)
    assert log.events == []  # starting off is not a change
    assert r.set(False, "startup") is False
    r.set(True, "soc 79% below min_soc 80%")
    assert r.set(True, "still charging") is False
    assert r.set(True, "still charging") is False
    r.off("cell_overvoltage")
    assert r.off("cell_overvoltage again") is False
    assert log.events == [("relay", "on: soc 79% below min_soc 80%"), ("relay", "off: cell_overvoltage")]
    assert r.changes == 2 and r.reason == "cell_overvoltage"


def test_repeats_still_redrive_the_pin():
    r = Relay(pin_factory=FakePin)
    pin = FakePin.created[-1]
    r.set(True, "on")
    pin.levels.append(1)  # disturbed externally
    r.set(True, "on")
    assert pin.value() == 0


def test_callable_log_and_since():
    got = []
    r = Relay(log=lambda kind, msg: got.append((kind, msg)), pin_factory=FakePin)
    r.set(1, "")
    assert got == [("relay", "on: no reason given")]
    assert r.on is True  # truthy values count as on
    assert isinstance(r.since, int)


def test_default_factory_needs_machine_pin():
    # on the host, machine.Pin comes from sim/shims when present; otherwise constructing
    # the real driver fails loudly instead of silently doing nothing
    try:
        import machine

        has_pin = hasattr(machine, "Pin")
    except ImportError:
        has_pin = False
    if has_pin:
        r = Relay(pin=26, active_low=True)
        assert r.on is False and machine.Pin(26).value() == 1
        r.set(True, "test")
        assert machine.Pin(26).value() == 0
        r.off("test")
    else:
        try:
            Relay(pin=33)
        except (ImportError, AttributeError):
            return
        raise AssertionError("Relay() without machine.Pin should fail")
