# The charge state machine. Pure logic: no hardware imports, no sleeping; time is passed in.
#
# Two layers decide the relay:
#  - the charge cycle ("phase"): charging -> balancing -> resting -> charging ..., with the
#    timeout hold beside it; this is what persists across a reboot;
#  - blocks on top of it, in priority order: startup / no_data (no fresh reading),
#    fault (temperature, BMS protection, charge MOSFET off), override (manual on/off).
# The visible `state` is the block when one applies, otherwise the phase.
#
# Inputs: `reading` has the smartbms.bms.reading.Reading attributes (soc, current, nominal_ah,
# cells, temperatures, charge_fet, faults, received; None = not reported). `reading.received` is the device time it
# arrived; None means "fresh now" (pure tests). `now` is device seconds since boot (restarts at 0
# on reboot); `wall` is epoch seconds when a real clock is known, else None.
#
# Persisted times are wall times. Without a wall clock they fall back conservatively:
# the timeout hold restarts after a reboot (waits the full timeout_rest_min again). A due full
# charge (full_every_days) is counted from the wall time of the last one when both are known,
# otherwise by `full_s`, device seconds since the last full charge (or since the first boot),
# which is persisted too, so frequent reboots do not restart the count.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from smartbms.bms.reading import CHARGE_FAULTS

STARTUP = "startup"
CHARGING = "charging"
BALANCING = "balancing"
RESTING = "resting"
TIMEOUT = "timeout"
FAULT = "fault"
NO_DATA = "no_data"
OVERRIDE = "override"
STATES = (STARTUP, CHARGING, BALANCING, RESTING, TIMEOUT, FAULT, NO_DATA, OVERRIDE)
_PHASES = (CHARGING, BALANCING, RESTING, TIMEOUT)

# CHARGE_FAULTS (re-exported): the BMS fault names that stop charging; the over-voltage ones
# also end the charge.
_OV_FAULTS = ("cell_overvoltage", "pack_overvoltage")

OVERRIDE_MAX_MIN = const(1440)
_ABS_MIN_TEMP_C = 0  # LFP must never be charged below freezing, whatever the settings say
_SAVE_EVERY_S = const(300)  # session progress is persisted at this granularity
_FULL_SAVE_S = const(3600)  # and the count towards a due full charge at this one
_MAX_FULL_S = const(3650 * 86400)
_MAX_WALL = 4102444800  # 2100-01-01: beyond it a stored time is damage (and int(inf) raises)
_DAY_S = const(86400)
_HV_REARM_PTS = const(5)

# block causes (0 = none)
_B_STARTUP = const(1)
_B_STALE = const(2)
_B_TEMP = const(3)
_B_BMS = const(4)
_B_FET = const(5)
_B_OVERRIDE = const(6)
_B_BAD_SOC = const(7)
_B_BAD_CELL = const(8)

_OV_AUTO = const(0)
_OV_ON = const(1)
_OV_OFF = const(2)


def _fmt(x):
    # "80" for whole numbers, "80.5" otherwise: reasons read like a person wrote them
    if x == int(x):
        return "%d" % x
    return "%.1f" % x


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
        self._now = None
        self._wall = None
        self._reading = None
        self._had_data = False
        self._block = _B_STARTUP
        self._held = False
        self._last_switch = None
        self._temp_block = False
        self._temp_side = 0  # the cause named in _temp_text: -1 too cold, 1 too hot, 2 NaN
        self._ov_mode = _OV_AUTO
        self._ov_until = 0
        self._ov_reason = ""
        self._ov_next = ""
        # the charge cycle
        self._phase = None
        self._phase_reason = ""
        self._phase_next = ""
        self._full_run = False  # this charge goes to 100 % (max_soc = 100 or a due full charge)
        self._session_s = 0  # relay-on seconds in charging + balancing
        self._balance_s = 0
        self._saved_session_s = 0
        self._full_at = None  # wall time of the last full charge
        self._full_s = 0  # device seconds since the last full charge (or since counting began)
        self._saved_full_s = 0
        self._rest_at = None
        self._timeout_at = None
        self._timeout_dev = None
        self._hv_soc = None  # SOC when a cell-voltage stop ended a charge below its target
        self._restored = None
        self._temp_text = ""
        self._cache_h = None
        self._cache_timeout_s = 0
        self._cache_c = None
        self._cache_ah = None
        self._cache_tail = 0.0
        self._bms_fault = ""
        if persisted:
            self._restore(persisted)

    # ---- persistence ----

    def persisted(self):
        """A small JSON-able dict of what must survive a reboot. The app stores it when
        `dirty` is set, then clears `dirty`."""
        d = {"v": 1, "phase": self._phase or self._restored, "full_run": self._full_run,
             "session_s": self._session_s, "balance_s": self._balance_s, "full_s": self._full_s}
        if self._full_at is not None:
            d["full_at"] = self._full_at
        if self._rest_at is not None:
            d["rest_at"] = self._rest_at
        if self._timeout_at is not None:
            d["timeout_at"] = self._timeout_at
        if self._hv_soc is not None:
            d["hv_soc"] = self._hv_soc
        if d["phase"] is None:
            del d["phase"]
        return d

    def _restore(self, p):
        # Stored data may be old or damaged: take each field only if it is sane, never raise.
        if not isinstance(p, dict):
            return
        phase = p.get("phase")
        if phase in _PHASES:
            self._restored = phase
        self._full_run = p.get("full_run") is True
        for name in ("session_s", "balance_s"):
            v = p.get(name)
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10 * _DAY_S:
                setattr(self, "_" + name, v)
        self._saved_session_s = self._session_s
        v = p.get("full_s")  # absent in older files: the count starts at this boot
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _MAX_FULL_S:
            # up to _FULL_SAVE_S may have passed since the save: count it, so a reboot loop
            # brings a due full charge early rather than never
            self._full_s = v + _FULL_SAVE_S
            self._saved_full_s = self._full_s
        for name in ("full_at", "rest_at", "timeout_at"):
            v = p.get(name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < _MAX_WALL:
                setattr(self, "_" + name, int(v))
        v = p.get("hv_soc")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100:
            self._hv_soc = v

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
            self._ov_reason = "manual %s for %s min" % (mode, _fmt(minutes))
            self._ov_next = "automatic control resumes in %s min" % _fmt(minutes)
            self._block = 0  # force the texts to be rebuilt
        else:
            raise ValueError("override mode must be on, off or auto")
        return self.update(self._reading, now, self._wall)

    def override_info(self, now):
        """{"mode": "on" | "off" | "auto", "remaining_min": minutes left, rounded up, or None}."""
        if self._ov_mode == _OV_AUTO or now >= self._ov_until:
            return {"mode": "auto", "remaining_min": None}
        return {"mode": "on" if self._ov_mode == _OV_ON else "off",
                "remaining_min": (self._ov_until - now + 59) // 60}

    def reset_timeout(self, now):
        """Manual reset of a timeout hold: a new charge starts (safety stops still apply)."""
        if self._phase == TIMEOUT or self._restored == TIMEOUT:
            self._restored = None
            self._start_charge(now, "timeout reset by hand")
        return self.update(self._reading, now, self._wall)

    # ---- the state machine ----

    def update(self, reading, now, wall=None):
        s = self._s
        dt = 0 if self._now is None else now - self._now
        if dt < 0:
            dt = 0
        # time the relay was on counts towards the session and the balancing time; a manual
        # "on" is charging too, so it counts towards the session (and its timeout)
        ov_on = self._ov_mode == _OV_ON
        if self.relay and (ov_on or self._phase == CHARGING or self._phase == BALANCING):
            self._session_s += dt
            if self._phase == BALANCING and not ov_on:
                self._balance_s += dt
            if self._session_s - self._saved_session_s >= _SAVE_EVERY_S:
                self._saved_session_s = self._session_s
                self.dirty = True
        self._full_s += dt
        if (self._full_s - self._saved_full_s >= _FULL_SAVE_S and s["full_every_days"]
                and s["max_soc"] < 100):
            self._saved_full_s = self._full_s
            self.dirty = True
        self._now = now
        self._wall = wall
        self._reading = reading
        if self._timeout_dev is None:
            self._timeout_dev = now
        if self._ov_mode != _OV_AUTO and now >= self._ov_until:
            self._ov_mode = _OV_AUTO

        # a reading without SOC (a JBD cells frame before the first info frame) is not data yet
        if reading is None or reading.soc is None or (
                reading.received is not None and now - reading.received > s["stale_s"]):
            if not self._had_data:
                return self._apply(_B_STARTUP, False, True, now)
            return self._apply(_B_STALE, False, True, now)
        if reading.soc != reading.soc:  # NaN: nothing to decide on (its comparisons are all false)
            return self._apply(_B_BAD_SOC, False, True, now)
        self._had_data = True
        if self._phase is None:
            self._begin(reading, now, wall)

        # a cell at the limit (or the BMS's own over-voltage flag) ends the charge at once
        cell_max = s["cell_max_v"]
        hv = False
        bad_cell = False
        for v in reading.cells:
            if not v < cell_max:  # at the limit, or NaN
                if v != v:
                    bad_cell = True
                else:
                    hv = True
                    break
        ov_fault = False
        for f in reading.faults:
            if f in _OV_FAULTS:
                ov_fault = True
                break
        if hv or ov_fault:
            if self._phase == CHARGING or self._phase == BALANCING:
                if hv:
                    why = "cell %.2f V >= %.2f V" % (_max(reading.cells), cell_max)
                else:
                    why = "BMS protection: over-voltage"
                if reading.soc < self._target():
                    self._hv_soc = reading.soc
                self._end_charge(now, wall, why)
            if self._ov_mode == _OV_ON:
                self._ov_mode = _OV_AUTO

        # the charge timeout ends a manual "on" too (and refuses one during the timeout hold)
        stop = False
        if self._ov_mode == _OV_ON and (self._phase == TIMEOUT or self._session_s > self._timeout_s(s)):
            self._ov_mode = _OV_AUTO
            if self._phase != TIMEOUT:
                self._time_out(now, wall)
            self._block = -1
            stop = True

        block = self._safety(reading, s, bad_cell)
        if block:
            return self._apply(block, False, True, now)
        if self._ov_mode != _OV_AUTO:
            return self._apply(_B_OVERRIDE, self._ov_mode == _OV_ON and not hv, self._ov_mode == _OV_OFF, now)
        immediate = self._advance(reading, now, wall, s)
        on = (self._phase == CHARGING or self._phase == BALANCING) and not hv
        return self._apply(0, on, immediate or hv or stop, now)

    def _target(self):
        return 100 if self._full_run else self._s["max_soc"]

    def _safety(self, r, s, bad_cell):
        """Returns the block cause (0 = may charge) and keeps the temperature hysteresis.
        The range checks are written so that a NaN fails them."""
        tmin = s["temp_min_c"]
        if tmin < _ABS_MIN_TEMP_C:
            tmin = _ABS_MIN_TEMP_C
        tmax = s["temp_max_c"]
        temps = r.temperatures
        bad = None  # the first temperature outside the limits
        for t in temps:
            if not tmin <= t <= tmax:
                bad = t
                break
        if bad is not None:
            side = -1 if bad < tmin else (1 if bad > tmax else 2)
            # the text names the cause; rebuilt only when the cause changes (cold, hot, NaN)
            if not self._temp_block or side != self._temp_side:
                self._temp_block = True
                self._temp_side = side
                if side == 2:
                    self._temp_text = "temperature reading is not a number"
                else:
                    self._temp_text = "temperature %.1f °C %s %s °C" % (
                        bad, "<" if side < 0 else ">", _fmt(tmin if side < 0 else tmax))
                self._block = 0
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
        if self._temp_block:
            return _B_TEMP
        for f in r.faults:
            if f in CHARGE_FAULTS:
                if self._bms_fault != f:
                    self._bms_fault = f
                    self._block = 0  # another protection: rebuild the reason
                return _B_BMS
        if r.charge_fet is False:
            return _B_FET
        if bad_cell:
            return _B_BAD_CELL
        return 0

    def _begin(self, r, now, wall):
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
            self._start_charge(now, "first charge to the max level")

    def _full_due(self, now, wall):
        s = self._s
        days = s["full_every_days"]
        if not days or s["max_soc"] >= 100:
            return False
        if wall is not None and self._full_at is not None:
            return wall - self._full_at >= days * _DAY_S
        return self._full_s >= days * _DAY_S

    def _start_charge(self, now, why):
        self._full_run = self._s["max_soc"] >= 100 or self._full_due(now, self._wall)
        self._session_s = 0
        self._balance_s = 0
        self._saved_session_s = 0
        self._hv_soc = None
        self._set_phase(CHARGING, why, self._charge_next(), now)

    def _end_charge(self, now, wall, why):
        # Any end of a full run counts as the full charge, an over-voltage stop too: the pack
        # is then as full as it safely gets, and a due full charge must not start again at once.
        if self._full_run:
            self.full_charges += 1
            self._full_at = wall
            self._full_s = 0
            self._saved_full_s = 0
        self._rest_at = wall
        self._rest_session()
        self._set_phase(RESTING, why, self._rest_next(), now)

    def _rest_session(self):
        # resting has no charging session: a manual "on" from here starts counting at 0
        self._session_s = 0
        self._balance_s = 0
        self._saved_session_s = 0

    def _advance(self, r, now, wall, s):
        """Moves the charge cycle on; returns True when the change is a safety stop."""
        phase = self._phase
        soc = r.soc
        if phase == CHARGING:
            target = self._target()
            if soc >= target:
                why = "SOC %s %% >= %d %%" % (_fmt(soc), target)
                if target >= 100 and s["eoc_max_min"] > 0:
                    self._balance_s = 0
                    self._set_phase(BALANCING, why + ": balancing", self._balance_next(), now)
                else:
                    self._end_charge(now, wall, why)
                    return False
        elif phase == BALANCING:
            tail = self._tail_a(s, r.nominal_ah)
            if tail > 0 and r.current is not None and r.current <= tail:
                self._end_charge(now, wall, "tail current %.1f A <= %.1f A" % (r.current, tail))
                return False
            if self._balance_s >= s["eoc_max_min"] * 60:
                self._end_charge(now, wall, "balanced for %s min" % _fmt(s["eoc_max_min"]))
                return False
        elif phase == RESTING:
            lim = self._rest_limit()
            if soc <= lim:
                self._start_charge(now, "SOC %s %% <= %s %%" % (_fmt(soc), _fmt(lim)))
            elif soc < 100 and self._full_due(now, wall):
                self._start_charge(now, "full charge due (every %s days)" % _fmt(s["full_every_days"]))
            return False
        elif phase == TIMEOUT:
            if wall is not None and self._timeout_at is not None:
                held = wall - self._timeout_at
            else:
                held = now - self._timeout_dev
            if soc <= s["min_soc"] and held >= s["timeout_rest_min"] * 60:
                self._timeout_at = None
                self._start_charge(now, "SOC %s %% <= %s %% after the timeout rest" % (_fmt(soc), _fmt(s["min_soc"])))
            return False
        if self._session_s > self._timeout_s(s):
            self._time_out(now, wall)
            return True
        return False

    def _time_out(self, now, wall):
        self.timeouts += 1
        self._timeout_at = wall
        self._timeout_dev = now
        self._set_phase(TIMEOUT, "charging for %s h without reaching the end" % _fmt(self._session_s / 3600),
                        self._timeout_next(), now)

    # Derived limits are cached per input value: update() then allocates no floats for them.
    def _timeout_s(self, s):
        h = s["charge_timeout_h"]
        if h != self._cache_h:
            self._cache_h = h
            self._cache_timeout_s = int(h * 3600)
        return self._cache_timeout_s

    def _tail_a(self, s, nominal_ah):
        c = s["tail_current_c"]
        if c != self._cache_c or nominal_ah != self._cache_ah:
            self._cache_c = c
            self._cache_ah = nominal_ah
            self._cache_tail = c * (nominal_ah or 0)
        return self._cache_tail

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
                return "charges to 100 %%, then balances for up to %s min" % _fmt(s["eoc_max_min"])
            return "charges to 100 %"
        return "charges until SOC >= %s %%" % _fmt(s["max_soc"])

    def _balance_next(self):
        return "stops at the tail current or after %s min of balancing" % _fmt(self._s["eoc_max_min"])

    def _rest_next(self):
        return "charges again at SOC <= %s %%" % _fmt(self._rest_limit())

    def _rest_limit(self):
        # An over-voltage stop below the target (a high cell, a BMS flag) counts as full: the
        # next charge waits for SOC to drop _HV_REARM_PTS below where it stopped, so it cannot
        # chatter against the same cell, and never waits below min_soc - _HV_REARM_PTS.
        lim = self._s["min_soc"]
        if self._hv_soc is not None and self._hv_soc - _HV_REARM_PTS < lim:
            return self._hv_soc - _HV_REARM_PTS
        return lim

    def _timeout_next(self):
        s = self._s
        return "charges again at SOC <= %s %% after %s min of rest, or on a manual reset" % (
            _fmt(s["min_soc"]), _fmt(s["timeout_rest_min"]))

    def _apply(self, block, want, immediate, now):
        """Sets the relay (anti-chatter unless `immediate`) and rebuilds texts on a change."""
        held = False
        if want != self.relay:
            if (not immediate and self._last_switch is not None
                    and now - self._last_switch < self._s["min_switch_s"]):
                held = True
            else:
                self.relay = want
                self._last_switch = now
        if block == self._block and held == self._held:
            return self.relay
        self._block = block
        self._held = held
        r = self._reading
        if block == _B_STARTUP:
            state, why, nxt = STARTUP, "waiting for the first BMS reading", \
                "charging decisions start with the first fresh BMS reading"
        elif block == _B_STALE:
            state, nxt = NO_DATA, "resumes when fresh BMS data arrives"
            if r is None:
                why = "no BMS reading"
            elif r.soc is None:
                why = "BMS reading without SOC"
            else:
                why = "no BMS data for %d s (limit %s s)" % (now - r.received, _fmt(self._s["stale_s"]))
        elif block == _B_TEMP:
            s = self._s
            tmin = s["temp_min_c"] if s["temp_min_c"] > _ABS_MIN_TEMP_C else _ABS_MIN_TEMP_C
            state, why = FAULT, self._temp_text
            nxt = "resumes when every temperature is within %s..%s °C" % (
                _fmt(tmin + s["temp_hyst_c"]), _fmt(s["temp_max_c"] - s["temp_hyst_c"]))
        elif block == _B_BMS:
            state, why, nxt = FAULT, "BMS protection: " + self._bms_fault, "resumes when the BMS clears it"
        elif block == _B_FET:
            state, why, nxt = FAULT, "BMS charge MOSFET is off", "resumes when the BMS turns it back on"
        elif block == _B_BAD_SOC:
            state, why, nxt = NO_DATA, "BMS SOC is not a number", "resumes when the BMS reports a valid SOC"
        elif block == _B_BAD_CELL:
            state, why, nxt = FAULT, "BMS cell voltage is not a number", \
                "resumes when the BMS reports valid cell voltages"
        elif block == _B_OVERRIDE:
            state, why, nxt = OVERRIDE, self._ov_reason, self._ov_next
        else:
            state, why, nxt = self._phase, self._phase_reason, self._phase_next
        if held:
            nxt = "relay switches %s after the %s s anti-chatter delay" % (
                "on" if want else "off", _fmt(self._s["min_switch_s"]))
        if state != self.state:
            self.since = now
            if state == FAULT:
                self.faults += 1
        self.state = state
        self.reason = why
        self.next = nxt
        return self.relay


def _max(values):
    m = values[0]
    for v in values:
        if v > m or m != m:  # skips NaN
            m = v
    return m
