# The charge state machine. Pure logic: no hardware imports, no sleeping; time is passed in.
#
# Two layers decide the relay:
#  - the charge cycle ("phase"): charging -> balancing -> resting -> charging ..., with the
#    timeout hold beside it; this is what persists across a reboot;
#  - blocks on top of it, in priority order: startup / no_data (no fresh reading), latched
#    alarms (relay stuck, over-current), fault (temperature, BMS protection, charge MOSFET
#    off, a reading that is missing or wrong, an unconfirmed over-voltage), override (manual
#    on/off), paused (allow_charge off, outside the charge window), a dead charger's back-off,
#    the top-balance wait for a high cell to relax.
# The visible `state` is the block when one applies, otherwise the phase.
#
# Helpers, one concern each: inputs.py (plausibility of a reading), supervise.py (charger,
# relay, over-current, SOC), timing.py (a timeout that fits the pack, holds across reboots),
# wear.py (relay switch budget), alarms.py.
#
# Inputs: `reading` has the smartbms.bms.reading.Reading attributes (None = not reported).
# `reading.received` is the device time it arrived; None means "fresh now" (pure tests), and
# then every update counts as a new reading. `now` is device seconds since boot (restarts at
# 0 on reboot); `wall` is epoch seconds when a real clock is known, else None.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from smartbms.bms.reading import CHARGE_FAULTS
from smartbms.charge import alarms as A
from smartbms.charge.inputs import InputCheck
from smartbms.charge.supervise import Supervisor
from smartbms.charge.text import fmt, max_of, min_of
from smartbms.charge.timing import downtime_s, fit_timeout_s
from smartbms.charge.wear import CAP_S, SwitchBudget

STARTUP = "startup"
CHARGING = "charging"
BALANCING = "balancing"
RESTING = "resting"
TIMEOUT = "timeout"
FAULT = "fault"
NO_DATA = "no_data"
OVERRIDE = "override"
PAUSED = "paused"
STATES = (STARTUP, CHARGING, BALANCING, RESTING, TIMEOUT, FAULT, NO_DATA, OVERRIDE, PAUSED)
_PHASES = (CHARGING, BALANCING, RESTING, TIMEOUT)

# CHARGE_FAULTS (re-exported): the BMS fault names that stop charging; the over-voltage ones
# also end the charge once confirmed.
_OV_FAULTS = ("cell_overvoltage", "pack_overvoltage")

OVERRIDE_MAX_MIN = const(1440)
_ABS_MIN_TEMP_C = 0  # LFP must never be charged below freezing, whatever the settings say
_SAVE_EVERY_S = const(300)  # session progress and holds are persisted at this granularity
_FULL_SAVE_S = const(3600)  # and the count towards a due full charge at this one
_MAX_FULL_S = const(3650 * 86400)
_MAX_WALL = 4102444800  # 2100-01-01: beyond it a stored time is damage (and int(inf) raises)
_DAY_S = const(86400)
_HV_REARM_PTS = const(5)
_OV_CONFIRM = const(3)  # readings in a row that confirm an over-voltage
_RELAX_V = 0.10  # top balance: resume when the high cell is this far below cell_max_v
_LOW_V_S = const(300)  # the lowest cell below recharge_cell_v this long starts a charge
_PROGRESS_PTS = const(2)
_NEAR_FULL_SOC = const(95)  # a timed-out charge that gained this much SOC was only slow

# block causes (0 = none)
_B_STARTUP = const(1)
_B_STALE = const(2)
_B_TEMP = const(3)
_B_BMS = const(4)
_B_FET = const(5)
_B_OVERRIDE = const(6)
_B_BAD_SOC = const(7)
_B_LATCH = const(8)
_B_INPUT = const(9)
_B_HIGH = const(10)
_B_RELAX = const(11)
_B_PAUSE = const(12)
_B_DEAD = const(13)

_OV_AUTO = const(0)
_OV_ON = const(1)
_OV_OFF = const(2)


def _int(v, lo, hi):
    """v when it is an int within lo..hi (stored data may be damaged), else None."""
    if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi:
        return v
    return None


class Controller:
    def __init__(self, settings, persisted=None):
        self._s = settings
        self.relay = False
        self.state = STARTUP
        self.reason = "waiting for the first BMS reading"
        self.next = "charging decisions start with the first fresh BMS reading"
        self.since = 0
        self.dirty = False
        # counters since boot (not persisted)
        self.full_charges = 0
        self.timeouts = 0
        self.faults = 0
        self.alarms = A.Alarms()
        # True while the BMS's own charge MOSFET should be off (the second cut-off of a stuck
        # relay); the app sends the command where the BMS protocol has one and sets
        # `fet_control` (True: it can, False: it cannot, None: not known yet)
        self.bms_charge_off = False
        self.fet_control = None
        self._inputs = InputCheck()
        self._sup = Supervisor()
        self._wear = SwitchBudget()
        self._now = None
        self._wall = None
        self._reading = None
        self._last_rx = -1
        self._had_data = False
        self._block = _B_STARTUP
        self._held = 0  # 1: anti-chatter delay, 2: relay wear limit
        self._last_switch = None
        self._temp_block = False
        self._temp_side = 0  # the cause named in _temp_text: -1 too cold, 1 too hot
        self._temp_text = ""
        self._bms_fault = ""
        self._ov_mode = _OV_AUTO
        self._ov_until = 0
        self._ov_reason = ""
        self._ov_next = ""
        self._allow = True
        self._allow_until = None
        self._pause_why = 0  # 1: allow_charge off, 2: outside the charge window
        # the charge cycle
        self._phase = None
        self._phase_reason = ""
        self._phase_next = ""
        self._full_run = False  # this charge goes to 100 % (max_soc = 100 or a due full charge)
        self._session_s = 0  # relay-on seconds in charging + balancing
        self._balance_s = 0
        self._saved_session_s = 0
        self._start_soc = None
        self._fit_s = 0  # the fitted session limit, 0 = not known (charge_timeout_h applies)
        self._full_at = None  # wall time of the last full charge (for information)
        self._full_s = 0  # device seconds since the last full charge (or since counting began)
        self._saved_full_s = 0
        self._hold_s = 0  # seconds in the timeout hold
        self._saved_hold_s = 0
        self._slow = False  # the timed-out charge made progress: it re-arms without min_soc
        self._hv_soc = None  # SOC when a cell-voltage stop ended a charge below its target
        self._ov_n = 0  # readings in a row with a high cell or a BMS over-voltage flag
        self._high = False  # charging paused by a high cell, until it relaxes
        self._high_text = ""
        self._topbal_s = -1  # seconds since the first high-cell stop of this charge
        self._low_v_s = 0
        self._v_start = False  # this charge started on a low cell while the SOC said otherwise
        self._restored = None
        self._saved_wall = None
        self._credit_full = False
        self._cache_h = None
        self._cache_timeout_s = 0
        self._cache_c = None
        self._cache_ah = None
        self._cache_tail = 0.0
        self._cache_fv = None
        self._cache_fn = 0
        self._cache_full_v = 0.0
        self._cache_rv = None
        self._cache_relax_v = 0.0
        self._cap = None
        if persisted:
            self._restore(persisted)

    # ---- persistence ----

    def persisted(self):
        """A small JSON-able dict of what must survive a reboot. The app stores it when
        `dirty` is set, then clears `dirty`."""
        d = {"v": 1, "phase": self._phase or self._restored, "full_run": self._full_run,
             "session_s": self._session_s, "balance_s": self._balance_s, "full_s": self._full_s}
        if d["phase"] is None:
            del d["phase"]
        for key, v in (("full_at", self._full_at), ("hv_soc", self._hv_soc), ("w", self._wall),
                       ("soc0", self._start_soc), ("fit", self._fit_s), ("hold_s", self._hold_s),
                       ("slow", self._slow), ("cells", self._inputs.cells_n),
                       ("al", self.alarms.mask & A.LATCHED), ("temp", self._temp_side if self._temp_block else 0)):
            if v:
                d[key] = v if type(v) is not float else round(v, 1)
        if self._sup.dead_n:
            d["dead"] = [self._sup.dead_n, self._sup.dead_left]
        if self._wear.credit < CAP_S:
            d["wear"] = self._wear.credit
        return d

    def _restore(self, p):
        # Stored data may be old or damaged: take each field only if it is sane, never raise.
        if not isinstance(p, dict):
            return
        phase = p.get("phase")
        if phase in _PHASES:
            self._restored = phase
        self._full_run = p.get("full_run") is True
        for name in ("session_s", "balance_s", "hold_s"):
            v = _int(p.get(name), 0, 10 * _DAY_S - 1)
            if v is not None:
                setattr(self, "_" + name, v)
        self._saved_session_s = self._session_s
        v = _int(p.get("full_s"), 0, _MAX_FULL_S - 1)  # absent in older files: counted from this boot
        if v is not None:
            self._full_s = v
            self._credit_full = True
        for key, attr, lo, hi in (("fit", "_fit_s", 1, 10 * _DAY_S), ("soc0", "_start_soc", 0, 100)):
            v = p.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi:
                setattr(self, attr, int(v))
        for key, attr in (("full_at", "_full_at"), ("w", "_saved_wall")):
            v = p.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < _MAX_WALL:
                setattr(self, attr, int(v))
        v = p.get("hv_soc")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100:
            self._hv_soc = v
        self._slow = p.get("slow") is True
        v = _int(p.get("cells"), 1, 64)
        if v:
            self._inputs.cells_n = v
        v = _int(p.get("temp"), -1, 1)
        if v:  # the temperature hysteresis survives a reboot
            self._temp_block = True
            self._temp_side = v
            self._temp_text = "temperature was %s the charge range before the restart" % (
                "below" if v < 0 else "above")
        v = _int(p.get("al"), 1, A.LATCHED)
        if v:
            for i in (A.RELAY_STUCK, A.OVERCURRENT):
                if v & (1 << i):
                    self.alarms.raise_(i, A.NAMES[i] + " (raised before the restart)", 0)
            self.bms_charge_off = self.alarms.active(A.RELAY_STUCK)
        v = p.get("dead")
        if isinstance(v, list) and len(v) == 2 and _int(v[0], 1, 100) and _int(v[1], 0, 10 * _DAY_S) is not None:
            self._sup.dead_n, self._sup.dead_left = v[0], v[1]
            self.alarms.raise_(A.CHARGER_DEAD, "charger dead (found before the restart)", 0)
        v = _int(p.get("wear"), 0, CAP_S)
        if v is not None:
            self._wear = SwitchBudget(v)

    def _credit_downtime(self, wall):
        """First update after a restore: holds count the time the device was off."""
        d = downtime_s(self._saved_wall, wall)
        if self._credit_full:
            # without a known downtime, up to _FULL_SAVE_S may have passed since the save:
            # count it, so a reboot loop brings a due full charge early rather than never
            self._full_s += _FULL_SAVE_S if d is None else d
            self._saved_full_s = self._full_s
        gap = _SAVE_EVERY_S if d is None else d
        if self._restored == TIMEOUT:
            self._hold_s += gap
            self._saved_hold_s = self._hold_s
        sup = self._sup
        if sup.dead_left:
            sup.dead_left = sup.dead_left - gap if sup.dead_left > gap else 0

    # ---- manual controls ----

    def set_override(self, mode, minutes, now):
        """mode "on" | "off" for `minutes` (1..1440), or "auto" to end an override.
        "on" still obeys every safety stop. Raises ValueError and changes nothing on bad input."""
        if mode == "auto":
            self._ov_mode = _OV_AUTO
        elif mode in ("on", "off"):
            if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
                raise ValueError("override minutes must be a number")
            if mode == "on" and (self._phase == TIMEOUT or self._restored == TIMEOUT):
                raise ValueError("charging is held after a timeout: reset the timeout to charge again")
            if not 1 <= minutes <= OVERRIDE_MAX_MIN:
                raise ValueError("override minutes must be 1..%d" % OVERRIDE_MAX_MIN)
            self._ov_mode = _OV_ON if mode == "on" else _OV_OFF
            self._ov_until = now + int(minutes * 60)
            self._ov_reason = "manual %s for %s min" % (mode, fmt(minutes))
            self._ov_next = "automatic control resumes in %s min" % fmt(minutes)
            self._block = -1  # force the texts to be rebuilt
        else:
            raise ValueError("override mode must be on, off or auto")
        return self.update(self._reading, now, self._wall)

    def override_info(self, now):
        """{"mode": "on" | "off" | "auto", "remaining_min": minutes left, rounded up, or None}."""
        if self._ov_mode == _OV_AUTO or now >= self._ov_until:
            return {"mode": "auto", "remaining_min": None}
        return {"mode": "on" if self._ov_mode == _OV_ON else "off",
                "remaining_min": (self._ov_until - now + 59) // 60}

    def set_allow(self, allow, minutes, now):
        """The "allow charging" input (tariffs, solar): False pauses charging, for `minutes`
        (1..1440) or until allowed again. Not persisted: a reboot allows charging."""
        if not isinstance(allow, bool):
            raise ValueError("allow must be true or false")
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float))
                                    or not 1 <= minutes <= OVERRIDE_MAX_MIN):
            raise ValueError("allow minutes must be 1..%d" % OVERRIDE_MAX_MIN)
        self._allow = allow
        self._allow_until = None if minutes is None else now + int(minutes * 60)
        self._block = -1
        return self.update(self._reading, now, self._wall)

    def allow_info(self, now):
        s = self._s
        a, b = s["window_start_min"], s["window_end_min"]
        return {"allowed": self._allow,
                "remaining_min": None if self._allow_until is None else max(0, (self._allow_until - now + 59) // 60),
                "window": None if a == b else "%02d:%02d-%02d:%02d" % (a // 60, a % 60, b // 60, b % 60),
                "in_window": self._in_window(self._wall)}

    def reset_timeout(self, now):
        """Manual reset of a timeout hold: a new charge starts (safety stops still apply)."""
        if self._phase == TIMEOUT or self._restored == TIMEOUT:
            self._restored = None
            self._start_charge(now, "timeout reset by hand", self._reading)
        return self.update(self._reading, now, self._wall)

    def alarms_info(self, now):
        return self.alarms.info(now)

    def clear_alarms(self, now):
        """The owner cleared the alarms: latched ones end (the BMS charge MOSFET is restored),
        a dead charger is tried again now, the cell count is learned again. A cause that is
        still there raises its alarm again."""
        self.alarms.mask = 0
        self._inputs.bad = -1
        self._inputs.forget_cells()
        self._sup.reset()
        self.bms_charge_off = False
        self.dirty = True
        self._block = -1
        return self.update(self._reading, now, self._wall)

    # ---- the state machine ----

    def update(self, reading, now, wall=None):
        s = self._s
        first = self._now is None
        dt = 0 if first else now - self._now
        if dt < 0:
            dt = 0
        phase = self._phase
        charging = phase == CHARGING or phase == BALANCING
        # time the relay was on counts towards the session and the balancing time; a manual
        # "on" is charging too, so it counts towards the session (and its timeout)
        ov_on = self._ov_mode == _OV_ON
        if self.relay and (ov_on or charging):
            self._session_s += dt
            if phase == BALANCING and not ov_on:
                self._balance_s += dt
            if self._session_s - self._saved_session_s >= _SAVE_EVERY_S:
                self._saved_session_s = self._session_s
                self.dirty = True
        if charging and self._topbal_s >= 0:
            self._topbal_s += dt
        self._full_s += dt
        if (self._full_s - self._saved_full_s >= _FULL_SAVE_S and s["full_every_days"]
                and s["max_soc"] < 100):
            self._saved_full_s = self._full_s
            self.dirty = True
        if phase == TIMEOUT:
            self._hold_s += dt
            if self._hold_s - self._saved_hold_s >= _SAVE_EVERY_S:
                self._saved_hold_s = self._hold_s
                self.dirty = True
        sup = self._sup
        if sup.dead_left:
            sup.tick(dt)
            if sup.dead_left // _SAVE_EVERY_S != (sup.dead_left + dt) // _SAVE_EVERY_S:
                self.dirty = True
        self._wear.tick(dt)
        self._now = now
        self._wall = wall
        self._reading = reading
        if first:
            self._credit_downtime(wall)
        if self._ov_mode != _OV_AUTO and now >= self._ov_until:
            self._ov_mode = _OV_AUTO
        if self._allow_until is not None and now >= self._allow_until:
            self._allow = not self._allow
            self._allow_until = None

        # a reading without SOC (a JBD cells frame before the first info frame) is not data yet
        if reading is None or reading.soc is None or (
                reading.received is not None and now - reading.received > s["stale_s"]):
            if not self._had_data:
                return self._apply(_B_STARTUP, False, True, now)
            return self._apply(_B_STALE, False, True, now)
        if reading.soc != reading.soc:  # NaN: nothing to decide on (its comparisons are all false)
            return self._apply(_B_BAD_SOC, False, True, now)
        rx = reading.received
        new = rx is None or rx != self._last_rx
        self._last_rx = rx
        self._had_data = True
        if self._phase is None:
            self._begin(reading, now)
        cap = s["capacity_ah"] or reading.nominal_ah
        self._cap = cap
        bad_in = self._inputs.check(reading, s, new, self.alarms, now)
        if self._inputs.changed:
            self._block = -1
        if not cap:
            self.alarms.raise_(A.NO_CAPACITY, "pack capacity unknown: set capacity_ah for the tail-current end", now)
        elif self.alarms.mask & (1 << A.NO_CAPACITY):
            self.alarms.clear(A.NO_CAPACITY)
        cells = reading.cells
        settled = self._settled(reading, now, s)

        # a high cell (or the BMS's own over-voltage flag) stops the charge at once
        cell_max = s["cell_max_v"]
        over = False
        for v in cells:
            if v >= cell_max:  # a NaN is an input fault, handled there
                over = True
                break
        if not over:
            for f in reading.faults:
                if f in _OV_FAULTS:
                    over = True
                    break
        top = max_of(cells) if cells else None
        # near full a charger in its constant-voltage phase may give next to nothing: the
        # dead-charger check looks only below that
        below_top = (top is None or top < s["full_cell_v"]) and reading.soc < _NEAR_FULL_SOC
        phase = self._phase
        charging = phase == CHARGING or phase == BALANCING
        dead = sup.check(reading, s, self.alarms, now, dt, new, self.relay, settled,
                         self.relay and (ov_on or charging), below_top, cap)
        if sup.revived:  # the tries of a dead charger were no charge: the session starts now
            sup.revived = False
            if charging:
                self._rest_session()
                self._start_soc = int(reading.soc)
                self._fit_s = 0
        if self.alarms.active(A.RELAY_STUCK) and not self.bms_charge_off:
            self.bms_charge_off = True
            self.dirty = True
        self._check_low_v(cells, s, dt)
        if over:
            if new:
                self._ov_n += 1
            if charging:
                self._top_stop(reading, now, wall, s, top, cell_max)
            if self._ov_mode == _OV_ON:
                self._ov_mode = _OV_AUTO
        else:
            self._ov_n = 0
            if self._high and charging:
                if top is not None and not top > self._relax_v(s):
                    self._high = False  # relaxed: the top balance charges again
                    self._block = -1
                elif self._topbal_s >= s["top_balance_min"] * 60:
                    self._end_charge(now, wall, "top balance: the high cell did not relax within %s min" % fmt(
                        s["top_balance_min"]), reading)
        phase = self._phase
        charging = phase == CHARGING or phase == BALANCING
        if not charging:
            self._high = False

        # the charge timeout ends a manual "on" too (and refuses one during the timeout hold)
        stop = False
        if self._ov_mode == _OV_ON and (phase == TIMEOUT or self._session_s > self._timeout_s(s)):
            self._ov_mode = _OV_AUTO
            if phase != TIMEOUT:
                self._time_out(now, reading)
            stop = True

        block = self._safety(reading, s, bad_in)
        if block:
            return self._apply(block, False, True, now)
        if over and self._high:
            return self._apply(_B_HIGH, False, True, now)
        if self._ov_mode != _OV_AUTO:
            return self._apply(_B_OVERRIDE, self._ov_mode == _OV_ON and not over, self._ov_mode == _OV_OFF, now)
        immediate = self._advance(reading, now, wall, s, settled, below_top, cap)
        phase = self._phase
        if phase == CHARGING or phase == BALANCING:
            if self._high:
                return self._apply(_B_RELAX, False, True, now)
            why = 0 if self._allow else 1
            if not why and not self._in_window(wall):
                why = 2
            if why:
                if why != self._pause_why:
                    self._pause_why = why
                    self._block = -1
                return self._apply(_B_PAUSE, False, True, now)
            if dead or sup.dead_waiting():
                return self._apply(_B_DEAD, False, True, now)
            return self._apply(0, not over, immediate or stop or over, now)
        return self._apply(0, False, immediate or stop or over, now)

    def _target(self):
        return 100 if self._full_run else self._s["max_soc"]

    def _settled(self, r, now, s):
        """The reading shows the relay's present state: taken long enough after the last
        switch for the charger to ramp and the BMS to measure it."""
        if self._last_switch is None:
            return True
        t = now if r.received is None else r.received
        return t - self._last_switch >= 2 * s["poll_interval_s"] + 20

    def _safety(self, r, s, bad_in):
        """Returns the block cause (0 = may charge) and keeps the temperature hysteresis.
        The range checks are written so that a NaN fails them."""
        if self.alarms.mask & A.LATCHED:
            i = self.alarms.latched()
            if self._bms_fault != A.NAMES[i]:
                self._bms_fault = A.NAMES[i]
                self._block = -1
            return _B_LATCH
        tmin = s["temp_min_c"]
        if tmin < _ABS_MIN_TEMP_C:
            tmin = _ABS_MIN_TEMP_C
        tmax = s["temp_max_c"]
        temps = r.temperatures
        bad = None  # the first temperature outside the limits (a NaN is an input fault)
        for t in temps:
            if t < tmin or t > tmax:
                bad = t
                break
        if bad is not None:
            side = -1 if bad < tmin else 1
            # the text names the cause; rebuilt only when the cause changes (cold, hot)
            if not self._temp_block or side != self._temp_side:
                self._temp_block = True
                self._temp_side = side
                self.dirty = True  # the hysteresis survives a reboot
                self._temp_text = "temperature %.1f °C %s %s °C" % (
                    bad, "<" if side < 0 else ">", fmt(tmin if side < 0 else tmax))
                self._block = -1
        elif self._temp_block:
            h = s["temp_hyst_c"]
            lo = tmin + h
            hi = tmax - h
            ok = True
            for t in temps:
                if not lo <= t <= hi:
                    ok = False
                    break
            if ok:
                self._temp_block = False
                self.dirty = True
        if self._temp_block:
            return _B_TEMP
        for f in r.faults:
            if f in CHARGE_FAULTS:
                if self._bms_fault != f:
                    self._bms_fault = f
                    self._block = -1  # another protection: rebuild the reason
                return _B_BMS
        if r.charge_fet is False:
            return _B_FET
        if bad_in >= 0:
            return _B_INPUT
        return 0

    def _top_stop(self, r, now, wall, s, top, cell_max):
        """A high cell or a BMS over-voltage flag during a charge: the relay is off at once;
        confirmed over _OV_CONFIRM readings (or at the end of the top balance) it ends the
        charge, otherwise the charge goes on once the high cell relaxed (bounded top balance)."""
        if not self._high:
            self._high = True
            if top is not None and top >= cell_max:
                self._high_text = "cell %.2f V >= %.2f V" % (top, cell_max)
            else:
                self._high_text = "BMS protection: over-voltage"
            self._block = -1
            if self._topbal_s < 0:
                self._topbal_s = 0
        if self._ov_n >= _OV_CONFIRM or self._topbal_s >= s["top_balance_min"] * 60:
            self._high = False
            if r.soc < self._target():
                self._hv_soc = r.soc
            self._end_charge(now, wall, self._high_text, r)

    def _soc_bad(self):
        """The SOC cannot end this charge: it is stuck, or it disagreed with the cells when
        the charge started. The voltage anchor (or the timeout) ends it instead."""
        return self._v_start or self.alarms.mask & (1 << A.SOC_STUCK) != 0

    def _check_low_v(self, cells, s, dt):
        if cells and min_of(cells) < s["recharge_cell_v"]:
            self._low_v_s += dt
        else:
            self._low_v_s = 0

    def _low_v(self):
        return self._low_v_s >= _LOW_V_S

    def _begin(self, r, now):
        """First fresh reading after boot: pick up the persisted cycle, or start charging."""
        p = self._restored
        self._restored = None
        if p == RESTING:
            self._rest_session()
            self._set_phase(RESTING, "resting since the last full charge (before restart)", self._rest_next(), now)
        elif p == TIMEOUT:
            self._set_phase(TIMEOUT, "charge timeout (before restart)", self._timeout_next(), now)
        elif p == CHARGING or p == BALANCING:
            # Progress is saved every _SAVE_EVERY_S, so up to that much relay time may be
            # missing: count it, or reboots closer than that would never reach the timeout.
            self._session_s += _SAVE_EVERY_S
            if p == BALANCING:
                self._balance_s += _SAVE_EVERY_S
            self._saved_session_s = self._session_s
            self._set_phase(p, "resuming the charge after restart",
                            self._charge_next() if p == CHARGING else self._balance_next(), now)
        else:
            self._full_run = False
            self._start_charge(now, "first charge to the max level", r)

    def _full_due(self):
        s = self._s
        days = s["full_every_days"]
        if not days or s["max_soc"] >= 100:
            return False
        # device time (with reboot credits): a wall clock that jumps cannot delay it
        return self._full_s >= days * _DAY_S

    def _start_charge(self, now, why, r):
        self._full_run = self._s["max_soc"] >= 100 or self._full_due()
        self._rest_session()
        self._hv_soc = None
        self._start_soc = None if r is None or r.soc is None else int(r.soc)
        self._fit_s = 0
        self._slow = False
        self._topbal_s = -1
        self._high = False
        self._v_start = False
        self._set_phase(CHARGING, why, self._charge_next(), now)

    def _end_charge(self, now, wall, why, r):
        # Any end of a full run counts as the full charge, an over-voltage stop too: the pack
        # is then as full as it safely gets, and a due full charge must not start again at once.
        # (an over-voltage far below min_soc is a fault of the BMS, not a full pack)
        if self._full_run and (r is None or not r.soc < self._s["min_soc"]):
            self.full_charges += 1
            self._full_at = wall
            self._full_s = 0
            self._saved_full_s = 0
        self._rest_session()
        self._high = False
        self._set_phase(RESTING, why, self._rest_next(), now)

    def _rest_session(self):
        # resting has no charging session: a manual "on" from here starts counting at 0
        self._session_s = 0
        self._balance_s = 0
        self._saved_session_s = 0
        self._hold_s = 0
        self._saved_hold_s = 0

    def _advance(self, r, now, wall, s, settled, below_top, cap):
        """Moves the charge cycle on; returns True when the change is a safety stop."""
        phase = self._phase
        soc = r.soc
        cur = r.current
        on_settled = self.relay and settled and cur is not None
        if phase == CHARGING:
            tail = self._tail_a(s, cap)
            if on_settled and tail > 0 and cur <= tail and r.voltage is not None and r.cells \
                    and r.voltage >= self._full_v(s, len(r.cells)):
                # a voltage anchor: full whatever the SOC says (a BMS that stops at 99 %)
                self._end_charge(now, wall, "full by voltage: %.2f V, tail current %.1f A <= %.1f A" % (
                    r.voltage, cur, tail), r)
                return False
            if on_settled and not self._fit_s and below_top and cur > 0:
                # the first settled charging reading: what is left, at this current
                amps = s["charger_a"] or cur
                self._fit_s = self._session_s + fit_timeout_s(cap, self._target(), soc, amps,
                                                              s["eoc_max_min"], self._cap_s(s))
                self.dirty = True
            target = self._target()
            if soc >= target and not self._soc_bad():
                why = "SOC %s %% >= %d %%" % (fmt(soc), target)
                if target >= 100 and s["eoc_max_min"] > 0:
                    self._balance_s = 0
                    self._set_phase(BALANCING, why + ": balancing", self._balance_next(), now)
                else:
                    self._end_charge(now, wall, why, r)
                    return False
        elif phase == BALANCING:
            # only a reading taken while the charger runs shows the tail: after a BLE drop, a
            # MOSFET blip or a reboot the relay is off and the current is the load's
            tail = self._tail_a(s, cap)
            if on_settled and tail > 0 and cur <= tail:
                self._end_charge(now, wall, "tail current %.1f A <= %.1f A" % (cur, tail), r)
                return False
            if self._balance_s >= s["eoc_max_min"] * 60:
                self._end_charge(now, wall, "balanced for %s min" % fmt(s["eoc_max_min"]), r)
                return False
        elif phase == RESTING:
            lim = self._rest_limit()
            if soc <= lim:
                self._start_charge(now, "SOC %s %% <= %s %%" % (fmt(soc), fmt(lim)), r)
            elif self._low_v():
                self._start_charge(now, "lowest cell below %.2f V (SOC says %s %%)" % (
                    s["recharge_cell_v"], fmt(soc)), r)
                self._v_start = True
            elif soc < 100 and self._full_due():
                self._start_charge(now, "full charge due (every %s days)" % fmt(s["full_every_days"]), r)
            return False
        elif phase == TIMEOUT:
            if self._hold_s >= s["timeout_rest_min"] * 60:
                if soc <= s["min_soc"]:
                    self._start_charge(now, "SOC %s %% <= %s %% after the timeout rest" % (fmt(soc), fmt(s["min_soc"])), r)
                elif self._slow:
                    self._start_charge(now, "slow charge continues after the timeout rest", r)
                elif self._low_v():
                    self._start_charge(now, "lowest cell below %.2f V after the timeout rest" % s["recharge_cell_v"], r)
            return False
        if self._session_s > self._timeout_s(s):
            self._time_out(now, r)
            return True
        return False

    def _time_out(self, now, r):
        self.timeouts += 1
        soc = r.soc if r is not None else None
        s0 = self._start_soc
        # a slow charge re-arms after its rest without waiting for min_soc; with a SOC that
        # cannot tell (stuck, or it disagreed with the cells) the charge counts as slow too
        self._slow = self._soc_bad() or (soc is not None and s0 is not None and soc > self._s["min_soc"]
                                         and soc - s0 >= _PROGRESS_PTS)
        hours = self._session_s / 3600
        self._hold_s = 0
        self._saved_hold_s = 0
        self._set_phase(TIMEOUT, "charging for %s h without reaching the end" % fmt(hours),
                        self._timeout_next(), now)

    # Derived limits are cached per input value: update() then allocates no floats for them.
    def _cap_s(self, s):
        h = s["charge_timeout_h"]
        if h != self._cache_h:
            self._cache_h = h
            self._cache_timeout_s = int(h * 3600)
        return self._cache_timeout_s

    def _timeout_s(self, s):
        cap = self._cap_s(s)
        f = self._fit_s
        return f if 0 < f < cap else cap

    def _tail_a(self, s, cap_ah):
        c = s["tail_current_c"]
        if c != self._cache_c or cap_ah != self._cache_ah:
            self._cache_c = c
            self._cache_ah = cap_ah
            self._cache_tail = c * (cap_ah or 0)
        return self._cache_tail

    def _full_v(self, s, n):
        v = s["full_cell_v"]
        if v != self._cache_fv or n != self._cache_fn:
            self._cache_fv = v
            self._cache_fn = n
            self._cache_full_v = v * n
        return self._cache_full_v

    def _relax_v(self, s):
        v = s["cell_max_v"]
        if v != self._cache_rv:
            self._cache_rv = v
            self._cache_relax_v = v - _RELAX_V
        return self._cache_relax_v

    def _in_window(self, wall):
        s = self._s
        a = s["window_start_min"]
        b = s["window_end_min"]
        if a == b or wall is None:  # no window, or no clock to place it: charging allowed
            return True
        tod = (wall // 60 + s["tz_offset_min"]) % 1440
        return a <= tod < b if a < b else (tod >= a or tod < b)

    def _set_phase(self, phase, why, nxt, now):
        self._phase = phase
        self._phase_reason = why
        self._phase_next = nxt
        self.dirty = True
        self._block = -1  # texts are rebuilt by _apply

    # `next` texts, built only when the phase changes
    def _charge_next(self):
        s = self._s
        if self._full_run:
            if s["eoc_max_min"] > 0:
                return "charges to 100 %%, then balances for up to %s min" % fmt(s["eoc_max_min"])
            return "charges to 100 %"
        return "charges until SOC >= %s %%" % fmt(s["max_soc"])

    def _balance_next(self):
        return "stops at the tail current or after %s min of balancing" % fmt(self._s["eoc_max_min"])

    def _rest_next(self):
        return "charges again at SOC <= %s %%" % fmt(self._rest_limit())

    def _rest_limit(self):
        # An over-voltage stop below the target (a high cell, a BMS flag) counts as full: the
        # next charge waits for SOC to drop _HV_REARM_PTS below where it stopped, so it cannot
        # chatter against the same cell, but never waits below min_soc - _HV_REARM_PTS.
        lim = self._s["min_soc"]
        hv = self._hv_soc
        if hv is not None and hv - _HV_REARM_PTS < lim:
            lo = lim - _HV_REARM_PTS
            return hv - _HV_REARM_PTS if hv - _HV_REARM_PTS > lo else lo
        return lim

    def _timeout_next(self):
        s = self._s
        return "charges again at SOC <= %s %% after %s min of rest, or on a manual reset" % (
            fmt(s["min_soc"]), fmt(s["timeout_rest_min"])) if not self._slow else \
            "continues the slow charge after %s min of rest, or on a manual reset" % fmt(s["timeout_rest_min"])

    def _apply(self, block, want, immediate, now):
        """Sets the relay (anti-chatter and the wear budget unless `immediate`, which only
        ever stops) and rebuilds texts on a change."""
        held = 0
        if want != self.relay:
            s = self._s
            if (not immediate and self._last_switch is not None
                    and now - self._last_switch < s["min_switch_s"]):
                held = 1
            elif want and not self._wear.ok():
                held = 2
            else:
                self.relay = want
                self._last_switch = now
                if want:
                    self._wear.spend()
                    self._sup.switched_on(self._cap)
                    self.dirty = True
        if block == self._block and held == self._held:
            return self.relay
        self._block = block
        self._held = held
        state, why, nxt = self._texts(block, now)
        if held == 1:
            nxt = "relay switches %s after the %s s anti-chatter delay" % (
                "on" if want else "off", fmt(self._s["min_switch_s"]))
        elif held == 2:
            nxt = "relay switches on in %s min (relay wear limit: 6 switches an hour)" % fmt(
                (self._wear.wait_s() + 59) // 60)
        if state != self.state:
            self.since = now
            if state == FAULT:
                self.faults += 1
        self.state = state
        self.reason = why
        self.next = nxt
        return self.relay

    def _texts(self, block, now):
        s = self._s
        r = self._reading
        if block == _B_STARTUP:
            return STARTUP, "waiting for the first BMS reading", \
                "charging decisions start with the first fresh BMS reading"
        if block == _B_STALE:
            if r is None:
                why = "no BMS reading"
            elif r.soc is None:
                why = "BMS reading without SOC"
            else:
                why = "no BMS data for %d s (limit %s s)" % (now - r.received, fmt(s["stale_s"]))
            return NO_DATA, why, "resumes when fresh BMS data arrives"
        if block == _B_LATCH:
            i = self.alarms.latched()
            nxt = "charging stays off until the alarm is cleared (fix the cause first)"
            if i == A.RELAY_STUCK:
                if self.fet_control is False:
                    nxt = "this BMS cannot switch its charge MOSFET: disconnect the charger by hand, " \
                        "then clear the alarm"
                else:
                    nxt = "BMS charge MOSFET switched off as a second cut-off until the alarm is cleared"
            return FAULT, self.alarms.messages[i], nxt
        if block == _B_TEMP:
            tmin = s["temp_min_c"] if s["temp_min_c"] > _ABS_MIN_TEMP_C else _ABS_MIN_TEMP_C
            return FAULT, self._temp_text, "resumes when every temperature is within %s..%s °C" % (
                fmt(tmin + s["temp_hyst_c"]), fmt(s["temp_max_c"] - s["temp_hyst_c"]))
        if block == _B_BMS:
            return FAULT, "BMS protection: " + self._bms_fault, "resumes when the BMS clears it"
        if block == _B_FET:
            return FAULT, "BMS charge MOSFET is off", "resumes when the BMS turns it back on"
        if block == _B_BAD_SOC:
            return NO_DATA, "BMS SOC is not a number", "resumes when the BMS reports a valid SOC"
        if block == _B_INPUT:
            return FAULT, self._inputs.text, self._inputs.next_text()
        if block == _B_HIGH:
            return FAULT, self._high_text, "ends the charge if %d readings in a row confirm it" % _OV_CONFIRM
        if block == _B_RELAX:
            return BALANCING, "top balance: " + self._high_text, \
                "charges again when the high cell is below %.2f V (for up to %s min)" % (
                    self._relax_v(s), fmt(s["top_balance_min"]))
        if block == _B_PAUSE:
            if self._pause_why == 1:
                return PAUSED, "charging not allowed (allow_charge)", "charges when allowed again"
            return PAUSED, "outside the charge window %s" % self.allow_info(now)["window"], \
                "charges when the window opens"
        if block == _B_DEAD:
            return FAULT, self.alarms.messages[A.CHARGER_DEAD], self._sup.dead_next()
        if block == _B_OVERRIDE:
            return OVERRIDE, self._ov_reason, self._ov_next
        return self._phase, self._phase_reason, self._phase_next

