# Supervision of what the relay is supposed to do, from the current the BMS measures:
#  - charger_dead: the relay is on for a charge and the current does not rise (dead charger,
#    blown fuse, mains off). Charging stops and is retried after a back-off that doubles from
#    1 h to 16 h (at most 4 tries in any day while it stays dead); charge current clears it.
#  - relay_stuck: charge current while the relay is off (welded contacts). Latched: the
#    controller asks the BMS to open its charge MOSFET until the owner clears the alarm.
#  - overcurrent: charge current above the limit in two charging readings in a row, or 3 BMS
#    over-current trips within an hour. Latched until cleared.
#  - soc_stuck (a warning): the SOC does not move while current flows.
# Integer seconds and cached thresholds: nothing here allocates while nothing changes.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from smartbms.charge import alarms as A
from smartbms.charge.texts import fmt

_DEAD_S = const(600)  # relay-on time without a rise of the current
_DEAD_BACKOFF_S = const(3600)  # first retry; doubles per failed try
_DEAD_BACKOFF_MAX_S = const(57600)
_STUCK_S = const(300)  # charge current with the relay off for this long
_OC_READINGS = const(2)  # readings in a row above the limit
_OC_TRIPS = const(3)  # BMS over-current trips ...
_OC_TRIPS_S = const(3600)  # ... within this time
_SOC_STUCK_PCT = const(6)  # % of the capacity through the pack without a SOC change
_ALIVE_MIN_A = 0.5  # a charger is alive when the current rises by max(this, 1 % of C)
_ALIVE_C = 0.01


def backoff_s(tries):
    """The wait after `tries` failed tries in a row (1 h, 2 h, 4 h, 8 h, then 16 h)."""
    if tries < 1:
        return 0
    if tries > 5:
        return _DEAD_BACKOFF_MAX_S
    w = _DEAD_BACKOFF_S << (tries - 1)
    return w if w < _DEAD_BACKOFF_MAX_S else _DEAD_BACKOFF_MAX_S


class Supervisor:
    def __init__(self):
        self.dead_n = 0  # failed tries in a row
        self.dead_left = 0  # seconds until the next try
        self.revived = False  # a dead charger gives current again (the controller resets)
        self._no_rise_s = 0
        self._seen_alive = False  # the current rose since the relay last went on
        self._base = None  # the current of the last settled reading with the relay off
        self._alive_at = 0.0
        self._stuck_s = 0
        self._oc_n = 0
        self._trips = [0] * _OC_TRIPS  # device times of the last BMS over-current trips
        self._trip_i = 0
        self._ntrips = 0
        self._oc_prev = False
        self._soc_ref = None
        self._moved_as = 0  # ampere-seconds through the pack since the SOC last changed
        self._cache_key = None
        self._cache_limit = 0.0
        self._cache_cap = None
        self._cache_stuck_as = 0
        self._cache_alive = 0.0

    # ---- called by the controller ----

    def tick(self, dt):
        """Every update: the back-off runs on device time (a wall clock jump cannot move it)."""
        if self.dead_left > 0:
            self.dead_left = self.dead_left - dt if self.dead_left > dt else 0

    def dead_waiting(self):
        return self.dead_left > 0

    def switched_on(self, cap_ah):
        """The relay went on: the current must now rise above what it was with it off."""
        self._no_rise_s = 0
        self._seen_alive = False
        thr = self._alive_thr(cap_ah)
        base = self._base
        self._alive_at = thr if base is None or base + thr > thr else base + thr

    def reset(self):
        """The owner cleared the alarms: retry a dead charger now, forget past trips."""
        self.dead_n = 0
        self.dead_left = 0
        self._no_rise_s = 0
        self._stuck_s = 0
        self._oc_n = 0
        self._ntrips = 0

    def check(self, r, s, al, now, dt, new, relay, settled, charging, below_top, cap_ah):
        """One fresh reading `r` (`new`: not seen before). `relay`: the controller's relay;
        `settled`: the reading was taken long enough after the last switch to show its effect;
        `charging`: the relay is on to charge; `below_top`: no cell near full (a charger in
        its constant-voltage phase may give little current). Returns True when a charger was
        just found dead (the controller stops at once)."""
        cur = r.current
        if cur is None:
            return False
        if not relay:
            self._no_rise_s = 0
            if settled and new:
                self._base = cur
        self._check_stuck(s, al, now, dt, cur, relay, settled)
        self._check_overcurrent(r, s, al, now, new, cur, cap_ah, relay)
        self._check_soc(r, al, now, dt, cur, cap_ah)
        if not (relay and charging and settled and below_top) or r.charge_fet is False:
            self._no_rise_s = 0
            return False
        if not cur < self._alive_at:
            self._no_rise_s = 0
            self._seen_alive = True
            if self.dead_n or al.active(A.CHARGER_DEAD):
                self.dead_n = 0
                self.dead_left = 0
                al.clear(A.CHARGER_DEAD)
                self.revived = True
            return False
        if self._seen_alive:
            return False  # it charged since switching on: a taper (constant voltage), not a dead charger
        self._no_rise_s += dt
        if self._no_rise_s < _DEAD_S:
            return False
        self._no_rise_s = 0
        self.dead_n += 1
        self.dead_left = backoff_s(self.dead_n)
        al.raise_(A.CHARGER_DEAD, "charger dead: no charge current after %d min with the relay on (%d failed %s)" % (
            _DEAD_S // 60, self.dead_n, "try" if self.dead_n == 1 else "tries in a row"), now)
        return True

    def dead_next(self):
        return "tries the charger again in %s min, or when the alarm is cleared" % fmt((self.dead_left + 59) // 60)

    # ---- the checks ----

    def _alive_thr(self, cap_ah):
        if cap_ah != self._cache_cap:
            self._limits(cap_ah)
        return self._cache_alive

    def _limits(self, cap_ah):
        self._cache_cap = cap_ah
        c = cap_ah or 0
        self._cache_alive = _ALIVE_MIN_A if _ALIVE_C * c < _ALIVE_MIN_A else _ALIVE_C * c
        self._cache_stuck_as = int(c * 36 * _SOC_STUCK_PCT)  # 1 % of C = 36 A*s per Ah

    def _check_stuck(self, s, al, now, dt, cur, relay, settled):
        thr = s["relay_stuck_a"]
        if relay or not settled or not thr > 0 or cur < thr:
            self._stuck_s = 0
            return
        self._stuck_s += dt
        if self._stuck_s >= _STUCK_S and not al.active(A.RELAY_STUCK):
            al.raise_(A.RELAY_STUCK, "relay stuck: %.1f A charging with the relay off for %d min" % (
                cur, self._stuck_s // 60), now)

    def _check_overcurrent(self, r, s, al, now, new, cur, cap_ah, relay):
        if not new or al.active(A.OVERCURRENT):
            return
        lim_set = s["max_charge_a"]
        key = cap_ah if lim_set == 0 else -lim_set
        if key != self._cache_key:
            self._cache_key = key
            self._cache_limit = lim_set if lim_set > 0 else float(cap_ah or 0)  # 0: 1 C
        lim = self._cache_limit
        if lim > 0 and cur > lim:
            self._oc_n += 1
            if self._oc_n >= _OC_READINGS:
                al.raise_(A.OVERCURRENT, "charge current %.1f A > %s A" % (cur, fmt(lim)), now)
                return
        elif relay:
            # only a reading with the charger running clears the count: a high cell may stop
            # each try before a second reading, with the relay off in between
            self._oc_n = 0
        tripped = "charge_overcurrent" in r.faults
        if tripped and not self._oc_prev:
            trips = self._trips
            trips[self._trip_i] = now
            self._trip_i = (self._trip_i + 1) % _OC_TRIPS
            if self._ntrips < _OC_TRIPS:
                self._ntrips += 1
            # the oldest of the last _OC_TRIPS trips is the slot written next
            if self._ntrips == _OC_TRIPS and now - trips[self._trip_i] <= _OC_TRIPS_S:
                al.raise_(A.OVERCURRENT, "%d BMS over-current trips within %d min" % (
                    _OC_TRIPS, _OC_TRIPS_S // 60), now)
        self._oc_prev = tripped

    def _check_soc(self, r, al, now, dt, cur, cap_ah):
        soc = r.soc
        if self._soc_ref is None or soc != self._soc_ref:
            self._soc_ref = soc
            self._moved_as = 0
            al.clear(A.SOC_STUCK)
            return
        if cap_ah != self._cache_cap:
            self._limits(cap_ah)
        if not self._cache_stuck_as:
            return
        a = int(cur)
        # a full pack may take charge and an empty one give some at a steady SOC
        if (a > 0 and soc >= 99) or (a < 0 and soc <= 1):
            return
        if a < 0:
            a = -a
        self._moved_as += a * dt
        if self._moved_as >= self._cache_stuck_as and not al.active(A.SOC_STUCK):
            al.raise_(A.SOC_STUCK, "SOC stuck at %s %% while %d Ah went through the pack" % (
                fmt(soc), self._moved_as // 3600), now)
