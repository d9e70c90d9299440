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
# relay, over-current, SOC), topcharge.py (over-voltage confirmation, top balance, the
# recharge voltage), timing.py (a timeout that fits the pack, holds across reboots, derived
# limits), wear.py (relay switch budget), safety.py (temperature), manual.py (override,
# allow_charge, charge window), persist.py, alarms.py, texts.py (states and reasons).
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

from smartbms.bms.reading import CHARGE_FAULTS  # noqa: F401 (re-exported: the faults that stop charging)
from smartbms.charge import alarms as A
from smartbms.charge import cycle, persist, texts
from smartbms.charge.inputs import InputCheck
from smartbms.charge.manual import OV_AUTO, OV_OFF, OV_ON, OVERRIDE_MAX_MIN, Manual  # noqa: F401
from smartbms.charge.persist import FULL_SAVE_S, SAVE_EVERY_S
from smartbms.charge.safety import TempGuard
from smartbms.charge.supervise import Supervisor
from smartbms.charge.texts import (B_BAD_SOC, B_BMS, B_DEAD, B_FET, B_HIGH, B_INPUT, B_LATCH,
                                   B_OVERRIDE, B_PAUSE, B_RELAX, B_STALE, B_STARTUP, B_TEMP, fmt, max_of)
from smartbms.charge.texts import (BALANCING, CHARGING, FAULT, NO_DATA, OVERRIDE, PAUSED,  # noqa: F401
                                   RESTING, STARTUP, STATES, TIMEOUT)
from smartbms.charge.timing import Limits
from smartbms.charge.topcharge import TopOfCharge
from smartbms.charge.wear import SwitchBudget

_NEAR_FULL_SOC = const(95)  # above it a charger in constant voltage may give next to nothing


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
        self._block = B_STARTUP
        self._held = 0  # 1: anti-chatter delay, 2: relay wear limit
        self._last_switch = None
        self._temp = TempGuard()
        self._bms_fault = ""
        self._man = Manual()
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
        self._top = TopOfCharge()
        self._v_start = False  # this charge started on a low cell while the SOC said otherwise
        self._soc_low_full = False  # full by voltage while the SOC said "recharge": not believed
        self._restored = None
        self._saved_wall = None
        self._credit_full = False
        self._lim = Limits()
        self._cap = None
        if persisted:
            persist.restore(self, persisted)

    # ---- persistence (smartbms.charge.persist) ----

    def persisted(self):
        """A small JSON-able dict of what must survive a reboot. The app stores it when
        `dirty` is set, then clears `dirty`."""
        return persist.save(self)

    # ---- manual controls ----

    def set_override(self, mode, minutes, now):
        """mode "on" | "off" for `minutes` (1..1440), or "auto" to end an override.
        "on" still obeys every safety stop. Raises ValueError and changes nothing on bad input."""
        self._man.set_override(mode, minutes, now, self._phase == TIMEOUT or self._restored == TIMEOUT)
        self._block = -1  # force the texts to be rebuilt
        return self.update(self._reading, now, self._wall)

    def override_info(self, now):
        """{"mode": "on" | "off" | "auto", "remaining_min": minutes left, rounded up, or None}."""
        return self._man.override_info(now)

    def set_allow(self, allow, minutes, now):
        """The "allow charging" input (tariffs, solar): False pauses charging, for `minutes`
        (1..1440) or until allowed again. Not persisted: a reboot allows charging."""
        self._man.set_allow(allow, minutes, now)
        self._block = -1
        return self.update(self._reading, now, self._wall)

    def allow_info(self, now):
        """{"allowed", "remaining_min", "window": "HH:MM-HH:MM" or None, "in_window"}."""
        return self._man.allow_info(self._s, now, self._wall)

    def timeout_active(self):
        """True while a charge timeout holds charging (what reset_timeout() ends)."""
        return self._phase == TIMEOUT or self._restored == TIMEOUT

    def reset_timeout(self, now):
        """Manual reset of a timeout hold: a new charge starts (safety stops still apply)."""
        if self.timeout_active():
            self._restored = None
            cycle.start_charge(self, now, "timeout reset by hand", self._reading)
        return self.update(self._reading, now, self._wall)

    def set_fet_control(self, able):
        """The app tells whether the BMS's charge MOSFET can be switched over the link (True),
        cannot (False) or is not known yet (None); the texts of a stuck relay say so."""
        if able != self.fet_control:
            self.fet_control = able
            self._block = -1

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
        ov_on = self._man.mode == OV_ON
        if self.relay and (ov_on or charging):
            self._session_s += dt
            if phase == BALANCING and not ov_on:
                self._balance_s += dt
            if self._session_s - self._saved_session_s >= SAVE_EVERY_S:
                self._saved_session_s = self._session_s
                self.dirty = True
        self._top.tick(dt, charging)
        self._full_s += dt
        if (self._full_s - self._saved_full_s >= FULL_SAVE_S and s["full_every_days"]
                and s["max_soc"] < 100):
            self._saved_full_s = self._full_s
            self.dirty = True
        if phase == TIMEOUT:
            self._hold_s += dt
            if self._hold_s - self._saved_hold_s >= SAVE_EVERY_S:
                self._saved_hold_s = self._hold_s
                self.dirty = True
        sup = self._sup
        if sup.dead_left:
            sup.tick(dt)
            if sup.dead_left // SAVE_EVERY_S != (sup.dead_left + dt) // SAVE_EVERY_S:
                self.dirty = True
        self._wear.tick(dt)
        self._now = now
        self._wall = wall
        self._reading = reading
        if first:
            persist.credit_downtime(self, wall)
        man = self._man
        man.expire(now)

        # a reading without SOC (a JBD cells frame before the first info frame) is not data yet
        if reading is None or reading.soc is None or (
                reading.received is not None and now - reading.received > s["stale_s"]):
            if not self._had_data:
                return self._apply(B_STARTUP, False, True, now)
            return self._apply(B_STALE, False, True, now)
        if reading.soc != reading.soc:  # NaN: nothing to decide on (its comparisons are all false)
            return self._apply(B_BAD_SOC, False, True, now)
        rx = reading.received
        new = rx is None or rx != self._last_rx
        self._last_rx = rx
        self._had_data = True
        if self._phase is None:
            cycle.begin(self, reading, now)
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
        tc = self._top
        cell_max = s["cell_max_v"]
        over = tc.over(reading, cell_max)
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
                cycle.rest_session(self)
                self._start_soc = int(reading.soc)
                self._fit_s = 0
        if self.alarms.active(A.RELAY_STUCK) and not self.bms_charge_off:
            self.bms_charge_off = True
            self.dirty = True
        tc.check_low_v(cells, s, dt)
        if over:
            if charging and tc.stop(top, cell_max, new, s):
                if reading.soc < self._target():
                    self._hv_soc = reading.soc
                cycle.end_charge(self, now, wall, tc.text, reading, True)
            elif charging and tc.changed:
                self._block = -1
            if self._man.mode == OV_ON:
                self._man.mode = OV_AUTO
        else:
            tc.clear()
            if tc.high and charging:
                if top is not None and not top > self._lim.relax_v(s):
                    tc.high = False  # relaxed: the top balance charges again
                    self._block = -1
                elif tc.expired(s):
                    cycle.end_charge(self, now, wall, "top balance: the high cell did not relax within %s min" % fmt(
                        s["top_balance_min"]), reading)
        phase = self._phase
        charging = phase == CHARGING or phase == BALANCING
        if not charging:
            tc.high = False

        # the charge timeout ends a manual "on" too (and refuses one during the timeout hold)
        stop = False
        if self._man.mode == OV_ON and (phase == TIMEOUT or self._session_s > self._lim.timeout_s(s, self._fit_s)):
            self._man.mode = OV_AUTO
            if phase != TIMEOUT:
                cycle.time_out(self, now, reading)
            stop = True

        block = self._safety(reading, s, bad_in)
        if block:
            return self._apply(block, False, True, now)
        if over and tc.high:
            return self._apply(B_HIGH, False, True, now)
        if self._man.mode != OV_AUTO:
            return self._apply(B_OVERRIDE, self._man.mode == OV_ON and not over, self._man.mode == OV_OFF, now)
        immediate = cycle.advance(self, reading, now, wall, s, settled, below_top, cap)
        phase = self._phase
        if phase == CHARGING or phase == BALANCING:
            if tc.high:
                return self._apply(B_RELAX, False, True, now)
            why = 0 if self._man.allow else 1
            if not why and not man.in_window(s, wall):
                why = 2
            if why:
                if why != self._pause_why:
                    self._pause_why = why
                    self._block = -1
                return self._apply(B_PAUSE, False, True, now)
            if dead or sup.dead_waiting():
                return self._apply(B_DEAD, False, True, now)
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
        """Returns the block cause (0 = may charge)."""
        if self.alarms.mask & A.LATCHED:
            i = self.alarms.latched()
            if self._bms_fault != A.NAMES[i]:
                self._bms_fault = A.NAMES[i]
                self._block = -1
            return B_LATCH
        changed = self._temp.check(r.temperatures, s)
        if changed:
            self.dirty = True  # the hysteresis survives a reboot
            self._block = -1
        if self._temp.block:
            return B_TEMP
        for f in r.faults:
            if f in CHARGE_FAULTS:
                if self._bms_fault != f:
                    self._bms_fault = f
                    self._block = -1  # another protection: rebuild the reason
                return B_BMS
        if r.charge_fet is False:
            return B_FET
        if bad_in >= 0:
            return B_INPUT
        return 0

    def _soc_bad(self):
        """The SOC cannot end this charge: it is stuck, or it disagreed with the cells when
        the charge started. The voltage anchor (or the timeout) ends it instead."""
        return self._v_start or self.alarms.mask & (1 << A.SOC_STUCK) != 0

    def _set_phase(self, phase, why, nxt, now):
        self._phase = phase
        self._phase_reason = why
        self._phase_next = nxt
        self.dirty = True
        self._block = -1  # texts are rebuilt by _apply

    # `next` texts, built only when the phase changes
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
        return texts.block_texts(self, block, now)
