# The last 24 h of SOC, voltage and current in RAM, one averaged sample per interval.
#
# Three fixed arrays (SOC in half percent in bytes: BMSes report whole percent, mostly; volts
# in 0.01 V and amps in 0.1 A in 16 bits) indexed by absolute interval ("minute" below)
# modulo the length; adding a reading never allocates. The device keeps DEVICE_SLOTS samples
# of DEVICE_INTERVAL_S (24 h at 3 min: 2.4 KB of its 96 KB heap; a minute's resolution would
# cost 7.2 KB for a chart no wider than a phone).
# Minutes without data are stored as a "missing" marker and come out as JSON null, so the
# time axis stays implicit (sample i is i minutes after the first). The JSON answer is
# produced in chunks by a generator: 1440 boxed floats would not fit the ESP32 heap.
from array import array

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

SLOTS = const(1440)
INTERVAL_S = const(60)
DEVICE_SLOTS = const(480)
DEVICE_INTERVAL_S = const(180)
_MISSING_U = const(0xFFFF)
_MISSING_B = const(0xFF)
_MISSING_S = const(-32768)
_CHUNK = const(48)  # samples per yielded JSON piece


def _clamp(x, lo, hi):
    return lo if x < lo else hi if x > hi else x


def _fixed1(v):
    # tenths as "12.3" / "-0.5" without creating a float
    if v < 0:
        v = -v
        return "-%d.%d" % (v // 10, v % 10)
    return "%d.%d" % (v // 10, v % 10)


def _half(v):
    # half units as "61.5" / "61.0"
    return "%d.%d" % (v >> 1, 5 * (v & 1))


def _fixed2(v):
    return "%d.%02d" % (v // 100, v % 100)


class History:
    def __init__(self, slots=SLOTS, interval_s=INTERVAL_S):
        if slots < 2:
            raise ValueError("history needs at least 2 slots")
        self.slots = slots
        self.interval_s = interval_s
        self._soc = array("B", bytes(slots))  # 0.5 %
        self._volt = array("H", bytes(2 * slots))  # 0.01 V
        self._amp = array("h", bytes(2 * slots))  # 0.1 A
        for i in range(slots):
            self._mark_missing(i)
        self._first = None  # first minute ever stored
        self._minute = None  # minute the accumulator belongs to
        self._n = 0
        self._sum_soc = 0
        self._sum_v = 0
        self._sum_a = 0

    def clear(self):
        self.__init__(self.slots, self.interval_s)

    def add(self, now, soc, voltage, current):
        """Fold one reading (device seconds, %, V, A) into the sample of its minute.
        Non-numbers are ignored; a clock going backwards is ignored too."""
        for x in (soc, voltage, current):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
                return False
        minute = int(now) // self.interval_s
        if self._minute is None:
            self._first = self._minute = minute
        elif minute < self._minute:
            return False
        elif minute > self._minute:
            self._commit()
            self._fill_gap(self._minute + 1, minute)
            self._minute = minute
        self._n += 1
        self._sum_soc += _clamp(int(round(soc * 2)), 0, 200)
        self._sum_v += _clamp(int(round(voltage * 100)), 0, 0xFFFE)
        self._sum_a += _clamp(int(round(current * 10)), -32767, 32767)
        return True

    def _commit(self):
        i = self._minute % self.slots
        n = self._n
        if n:
            self._soc[i] = (self._sum_soc + n // 2) // n
            self._volt[i] = (self._sum_v + n // 2) // n
            self._amp[i] = _rounded_div(self._sum_a, n)
        else:
            self._mark_missing(i)
        self._n = self._sum_soc = self._sum_v = self._sum_a = 0

    def _mark_missing(self, i):
        self._soc[i] = _MISSING_B
        self._volt[i] = _MISSING_U
        self._amp[i] = _MISSING_S

    def _fill_gap(self, start, end):
        # minutes [start, end) had no data; at most one full turn needs marking
        if end - start > self.slots:
            start = end - self.slots
        for m in range(start, end):
            self._mark_missing(m % self.slots)

    def _range(self):
        """(first minute, last minute) that series() covers, or None when empty."""
        if self._minute is None:
            return None
        last = self._minute if self._n else self._minute - 1
        if last < self._first:
            return None
        first = max(self._first, last - self.slots + 1)
        return first, last

    def __len__(self):
        r = self._range()
        return 0 if r is None else r[1] - r[0] + 1

    def _value(self, col, m):
        # the minute being accumulated is reported as its running average
        if m == self._minute:
            n = self._n
            if col == 0:
                return (self._sum_soc + n // 2) // n
            if col == 1:
                return (self._sum_v + n // 2) // n
            return _rounded_div(self._sum_a, n)
        i = m % self.slots
        if col == 0:
            v = self._soc[i]
            return None if v == _MISSING_B else v
        if col == 1:
            v = self._volt[i]
            return None if v == _MISSING_U else v
        v = self._amp[i]
        return None if v == _MISSING_S else v

    def samples(self):
        """[(start second, soc, V, A) or with None for a minute without data], oldest first.
        Allocates a list: for tests and small callers, not for the web answer."""
        r = self._range()
        out = []
        if r is None:
            return out
        for m in range(r[0], r[1] + 1):
            s, v, a = self._value(0, m), self._value(1, m), self._value(2, m)
            out.append((m * self.interval_s, None if s is None else s / 2,
                        None if v is None else v / 100, None if a is None else a / 10))
        return out

    def series(self):
        """The JSON document for GET /api/history, yielded in small str pieces:
        {"interval_s": 60, "start_s": device second of the first sample, "count": n,
         "soc": [...], "voltage": [...], "current": [...]} with null for minutes without data."""
        r = self._range()
        if r is None:
            yield '{"interval_s": %d, "start_s": null, "count": 0, "soc": [], "voltage": [], "current": []}' % self.interval_s
            return
        first, last = r
        iv = self.interval_s
        yield '{"interval_s": %d, "start_s": %d, "count": %d' % (iv, first * iv, last - first + 1)
        for col, name, fmt in ((0, "soc", _half), (1, "voltage", _fixed2), (2, "current", _fixed1)):
            parts = []
            m = first
            sep = ', "%s": [' % name
            while m <= last:
                v = self._value(col, m)
                parts.append("null" if v is None else fmt(v))
                m += 1
                if len(parts) == _CHUNK or m > last:
                    yield sep + ", ".join(parts)
                    sep = ", "
                    parts = []
            yield "]"
        yield "}"


def _rounded_div(total, n):
    # round half away from zero for signed sums
    if total < 0:
        return -((-total + n // 2) // n)
    return (total + n // 2) // n
