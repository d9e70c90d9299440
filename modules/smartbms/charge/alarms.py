# Alarms: named conditions the owner must know about. Kept as bits and a few small lists made
# once, so raising and testing them allocates nothing while nothing changes.
#
# Three kinds:
#  - LATCHED (relay_stuck, overcurrent): charging stays off until the owner clears them;
#  - _WARNINGS (soc_stuck, capacity_unknown): shown, charging goes on (the voltage anchors
#    take over from the SOC);
#  - the others clear by themselves when the cause is gone (input problems after several good
#    readings, charger_dead when a retry sees charge current).
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

CHARGER_DEAD = const(0)
RELAY_STUCK = const(1)
OVERCURRENT = const(2)
NO_TEMPERATURE = const(3)
NO_CELLS = const(4)
CELL_COUNT = const(5)
VOLTAGE_MISMATCH = const(6)
BAD_VALUE = const(7)
BMS_ERROR = const(8)
SOC_STUCK = const(9)
NO_CAPACITY = const(10)

NAMES = ("charger_dead", "relay_stuck", "overcurrent", "no_temperature", "no_cells",
         "cell_count_changed", "voltage_mismatch", "bad_value", "bms_error", "soc_stuck",
         "capacity_unknown")
LATCHED = const((1 << RELAY_STUCK) | (1 << OVERCURRENT))
_WARNINGS = const((1 << SOC_STUCK) | (1 << NO_CAPACITY))


class Alarms:
    def __init__(self):
        n = len(NAMES)
        self.mask = 0  # active alarms, one bit per NAMES index
        self.counts = [0] * n  # times each was raised (since boot)
        self.messages = [""] * n
        self.since = [0] * n  # device time each became active

    def active(self, i):
        return self.mask & (1 << i) != 0

    def raise_(self, i, message, now):
        """Activate alarm i; returns True when it was not active before."""
        bit = 1 << i
        if self.mask & bit:
            self.messages[i] = message
            return False
        self.mask |= bit
        self.counts[i] += 1
        self.messages[i] = message
        self.since[i] = now
        return True

    def clear(self, i):
        bit = 1 << i
        if self.mask & bit:
            self.mask &= ~bit
            return True
        return False

    def latched(self):
        """The index of the first active latched alarm, or -1."""
        m = self.mask & LATCHED
        if not m:
            return -1
        for i in (RELAY_STUCK, OVERCURRENT):
            if m & (1 << i):
                return i
        return -1

    def info(self, now):
        """[{name, message, latched, stops_charging, since_s}] of the active alarms."""
        out = []
        for i in range(len(NAMES)):
            if self.mask & (1 << i):
                out.append({"name": NAMES[i], "message": self.messages[i],
                            "latched": bool(LATCHED & (1 << i)),
                            "stops_charging": not _WARNINGS & (1 << i),
                            "since_s": max(0, now - self.since[i])})
        return out

    def count_dict(self):
        out = {}
        for i in range(len(NAMES)):
            if self.counts[i]:
                out[NAMES[i]] = self.counts[i]
        return out


def names_of(mask):
    return [NAMES[i] for i in range(len(NAMES)) if mask & (1 << i)]
