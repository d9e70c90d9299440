# Helpers for the charge controller tests (both runtimes): settings dicts and readings.
from smartbms.charge.controller import Controller

# The settings defaults (issue 4); the controller only needs settings[key].
DEFAULTS = {
    "poll_interval_s": 5, "max_soc": 100, "min_soc": 80, "tail_current_c": 0.05,
    "eoc_max_min": 30, "cell_max_v": 3.60, "charge_timeout_h": 3.5, "timeout_rest_min": 60,
    "temp_min_c": 2, "temp_max_c": 45, "temp_hyst_c": 3, "stale_s": 30,
    "full_every_days": 0, "min_switch_s": 60,
    "capacity_ah": 0.0, "charger_a": 0.0, "full_cell_v": 3.40, "recharge_cell_v": 3.20,
    "top_balance_min": 60, "temp_sensors_required": True, "max_charge_a": 0.0,
    "relay_stuck_a": 0.8, "window_start_min": 0, "window_end_min": 0, "tz_offset_min": 0,
}

WALL0 = 1767225600
DAY = 86400


def settings(**kw):
    d = dict(DEFAULTS)
    d.update(kw)
    return d


class R:
    """A Reading with the attributes the controller reads. The current is not reported unless
    given: a pure test does not model what the relay does to it (supervise tests give it)."""

    def __init__(self, soc=50.0, current=None, cell=3.30, cells=4, temps=(20.0, 20.0),
                 charge_fet=True, faults=(), received=None, nominal_ah=100.0):
        self.soc = soc
        self.current = current
        self.cells = [cell] * cells
        self.temperatures = list(temps)
        self.charge_fet = charge_fet
        self.discharge_fet = True
        self.faults = list(faults)
        self.received = received
        self.nominal_ah = nominal_ah
        self.voltage = cell * cells


def make(persisted=None, **kw):
    return Controller(settings(**kw), persisted)


def run(c, reading, start, end, step=5, wall0=None):
    """Calls update every `step` device seconds in [start, end); returns the last relay."""
    t = start
    relay = c.relay
    while t < end:
        if reading.received is not None:
            reading.received = t
        relay = c.update(reading, t, None if wall0 is None else wall0 + t)
        t += step
    return relay


def to_rest(c, now=0, wall=None):
    """Drives a fresh controller through a full charge into resting; returns the time."""
    c.update(R(soc=60), now, wall)
    now += 100
    c.update(R(soc=100, current=20), now, None if wall is None else wall + 100)
    now += 100
    c.update(R(soc=100, current=3), now, None if wall is None else wall + 200)
    assert c.state == "resting", c.state
    return now
