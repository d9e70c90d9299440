# The charge controller: rules in combination, persistence across reboots, allocation.
import json

from ctrlutil import DAY, WALL0, R, make, run, settings, to_rest
from smartbms.charge.controller import Controller
from testutil import raises, IS_MICROPYTHON, skip


def reboot(c, **kw):
    """What the app does: store persisted() as JSON, restart with it."""
    return Controller(settings(**kw), json.loads(json.dumps(c.persisted())))


def test_ble_loss_during_balancing():
    c = make(eoc_max_min=30, stale_s=30)
    r = R(soc=100, current=8, received=0)
    c.update(r, 0)
    assert c.state == "balancing"
    run(c, r, 5, 600)  # 10 min of balancing
    # the BMS stops answering for an hour: relay off at once, the gap is not balancing time
    assert c.update(r, 600 + 31) is False
    assert c.state == "no_data"
    assert c.update(r, 4000) is False
    r.received = 4000
    assert c.update(r, 4000) is True
    assert c.state == "balancing"
    assert run(c, r, 4005, 4000 + 19 * 60) is True
    assert run(c, r, 4000 + 19 * 60, 4000 + 21 * 60) is False
    assert c.state == "resting" and c.reason == "balanced for 30 min"


def test_reboot_in_timeout_hold_with_wall_clock():
    c = make(charge_timeout_h=1, timeout_rest_min=60)
    run(c, R(soc=50), 0, 3700, wall0=WALL0)
    assert c.state == "timeout"
    c2 = reboot(c, charge_timeout_h=1, timeout_rest_min=60)
    # device clock restarts at 0; the wall clock says 40 min passed: still held
    assert c2.update(R(soc=50), 0, WALL0 + 3700 + 2400) is False
    assert c2.state == "timeout"
    assert c2.reason == "charge timeout (before restart)"
    # 61 min after the timeout by the wall clock: re-armed
    assert c2.update(R(soc=50), 1300, WALL0 + 3700 + 3700) is True
    assert c2.state == "charging"


def test_reboot_in_timeout_hold_without_clock_keeps_the_hold():
    c = make(charge_timeout_h=1, timeout_rest_min=60)
    run(c, R(soc=50), 0, 3700)
    c.update(R(soc=50), 3700 + 2000)
    held = c.persisted()["hold_s"]
    assert 1990 <= held <= 2100, held
    c2 = reboot(c, charge_timeout_h=1, timeout_rest_min=60)
    # the hold goes on where it was saved, plus the save interval (the time since the save
    # is unknown): a reboot loop cannot hold charging for ever
    assert c2.update(R(soc=50), 0) is False and c2.state == "timeout"
    assert c2.update(R(soc=50), 3600 - held - 300 - 5) is False
    assert c2.update(R(soc=50), 3600 - held - 300) is True


def test_cold_snap_mid_charge():
    c = make(min_switch_s=60)
    c.update(R(soc=60), 0)
    assert c.update(R(soc=61, temps=(1.0, 15)), 10) is False
    assert c.state == "fault"
    assert c.update(R(soc=61, temps=(-8, 15)), 3600) is False
    assert c.update(R(soc=61, temps=(4.9, 15)), 7200) is False
    assert c.update(R(soc=61, temps=(5.0, 15)), 7300) is True
    assert c.state == "charging"


def test_fault_while_overridden_on():
    c = make(min_switch_s=0)
    to_rest(c)
    assert c.set_override("on", 60, 300) is True
    assert c.update(R(soc=97, faults=["charge_overcurrent"]), 400) is False
    assert c.state == "fault"
    # the override is still running once the fault clears
    assert c.update(R(soc=97), 500) is True
    assert c.state == "override"
    assert c.update(R(soc=97, charge_fet=False), 600) is False
    assert c.update(R(soc=97, temps=(60,)), 700) is False


def test_override_on_ends_at_a_cell_over_voltage():
    c = make(min_switch_s=0)
    to_rest(c)
    c.set_override("on", 60, 300)
    assert c.update(R(soc=100, cell=3.63), 400) is False
    assert c.state == "resting"
    assert c.update(R(soc=100, cell=3.40), 500) is False


def test_override_on_obeys_the_charge_timeout():
    # from resting: the override's relay time is a charging session of its own
    c = make(min_switch_s=0, charge_timeout_h=0.5)
    now = to_rest(c)
    assert c.set_override("on", 1440, now) is True
    assert run(c, R(soc=90), now, now + 1800, step=60) is True
    assert c.state == "override"
    assert run(c, R(soc=90), now + 1800, now + 1900, step=60) is False
    assert c.state == "timeout" and c.timeouts == 1
    assert c.reason == "charging for 0.5 h without reaching the end"
    assert c.override_info(now + 1900)["mode"] == "auto"
    # "on" during the timeout hold is refused with the way out; nothing changes
    e = raises(ValueError, c.set_override, "on", 60, now + 2000)
    assert "reset the timeout" in str(e)
    assert c.update(R(soc=90), now + 2000) is False
    assert c.state == "timeout" and c.timeouts == 1
    assert c.override_info(now + 2000)["mode"] == "auto"
    assert c.reset_timeout(now + 2100) is True and c.state == "charging"


def test_override_on_continues_the_running_session():
    c = make(min_switch_s=0, charge_timeout_h=1)
    run(c, R(soc=50), 0, 1800)
    assert c.set_override("on", 120, 1800) is True
    assert run(c, R(soc=50), 1800, 3600) is True
    assert c.state == "override"
    assert run(c, R(soc=50), 3600, 3700) is False
    assert c.state == "timeout"
    # a short override that expires leaves the charge cycle as it was
    c = make(min_switch_s=0, charge_timeout_h=1)
    run(c, R(soc=50), 0, 600)
    c.set_override("on", 10, 600)
    assert run(c, R(soc=50), 600, 1300) is True
    assert c.state == "charging"


def test_override_off_while_stale_reports_no_data():
    c = make()
    r = R(soc=50, received=0)
    c.update(r, 0)
    c.set_override("off", 10, 5)
    assert c.update(r, 100) is False and c.state == "no_data"


def test_power_blip_in_resting_band_keeps_resting():
    c = make()
    to_rest(c)
    assert c.dirty
    c2 = reboot(c)
    assert c2.update(None, 0) is False and c2.state == "startup"
    assert c2.update(R(soc=92, current=-3), 5) is False
    assert c2.state == "resting"
    assert c2.reason == "resting since the last full charge (before restart)"
    assert c2.update(R(soc=80, current=-3), 500) is True
    # without the persisted state the same reading starts a charge to max
    assert make().update(R(soc=92, current=-3), 5) is True


def test_without_persisted_state_first_charge_goes_to_max():
    c = make()
    assert c.update(R(soc=92), 0) is True
    assert c.state == "charging"


def test_session_time_survives_reboot():
    c = make(charge_timeout_h=1)
    run(c, R(soc=50), 0, 3000)
    assert c.persisted()["session_s"] >= 2700  # saved at 5-minute steps
    c2 = reboot(c, charge_timeout_h=1)
    assert c2.update(R(soc=50), 0) is True
    assert c2.reason == "resuming the charge after restart"
    run(c2, R(soc=50), 5, 1000)
    assert c2.state == "timeout"


def _reboot_every_250_s(c, reading, until_state, **settings):
    """Runs c, rebooting it every 250 s (under the 5-minute save interval) until `until_state`
    or 40 boots; returns the last controller and the seconds its relay was on."""
    on_s = 0
    for boot in range(40):
        if boot:
            c = reboot(c, **settings)
        for t in range(0, 250, 5):
            if c.update(reading, t):
                on_s += 5
        if c.state == until_state:
            break
    return c, on_s


def test_reboot_loop_reaches_the_charge_timeout():
    # Reboots closer than the 5-minute save interval: each restore counts the time since the
    # last save as charged, so the loop times out no later than one uninterrupted charge.
    c, on_s = _reboot_every_250_s(make(charge_timeout_h=1), R(soc=50), "timeout", charge_timeout_h=1)
    assert c.state == "timeout" and c.timeouts == 1
    assert on_s <= 3600, on_s
    c2 = reboot(c, charge_timeout_h=1)
    assert c2.update(R(soc=50), 0) is False and c2.state == "timeout"


def test_reboot_loop_ends_balancing_in_time():
    c, on_s = _reboot_every_250_s(make(eoc_max_min=30), R(soc=100, current=8), "resting", eoc_max_min=30)
    assert c.state == "resting" and c.reason == "balanced for 30 min"
    assert on_s <= 30 * 60, on_s


def test_reboot_during_balancing_resumes_balancing():
    c = make(eoc_max_min=30)
    c.update(R(soc=100, current=8), 0)
    c2 = reboot(c, eoc_max_min=30)
    assert c2.update(R(soc=100, current=8), 0) is True
    assert c2.state == "balancing"


def test_last_full_charge_persists_for_full_every_days():
    kw = {"max_soc": 90, "min_soc": 70, "full_every_days": 7}
    c = make(**kw)
    c.update(R(soc=90), 0, WALL0)
    assert c.state == "resting"
    # day 7 (counted from boot): a full charge
    t = 7 * DAY
    assert c.update(R(soc=85), t, WALL0 + t) is True
    c.update(R(soc=100, current=2), t + 100, WALL0 + t + 100)
    assert c.update(R(soc=100, current=2), t + 200, WALL0 + t + 200) is False
    assert c.full_charges == 1 and c.persisted()["full_at"] == WALL0 + t + 200
    # reboot on day 8: the device clock restarts, the wall clock knows the full charge was a day ago
    c2 = reboot(c, **kw)
    assert c2.update(R(soc=85), 0, WALL0 + 8 * DAY) is False
    assert c2.update(R(soc=85), DAY, WALL0 + 9 * DAY) is False
    # day 14.1: seven days after the last full charge (only 6.1 days of this boot)
    assert c2.update(R(soc=85), int(6.1 * DAY), WALL0 + int(14.1 * DAY)) is True
    assert c2.reason == "full charge due (every 7 days)"


def test_full_every_days_counts_across_daily_reboots():
    # no full charge yet and a reboot every day: the count towards the due full charge is
    # persisted (hourly), so it does not restart at each boot
    kw = {"max_soc": 90, "min_soc": 70, "full_every_days": 3}
    for wall0 in (WALL0, None):
        c = make(**kw)
        stored = None
        due = None
        for day in range(6):
            if day:
                c = Controller(settings(**kw), json.loads(json.dumps(stored)))
            for t in range(0, DAY, 600):
                c.update(R(soc=90 if day == 0 and t == 0 else 85), t,
                         None if wall0 is None else wall0 + day * DAY + t)
                if c.dirty:  # what the app writes to flash
                    stored = c.persisted()
                    c.dirty = False
                if c.state == "charging":
                    due = day * DAY + t
                    break
            if due is not None:
                break
        assert due is not None and 3 * DAY - 7200 <= due <= 3 * DAY + 7200, (wall0, due)
        assert c.reason == "full charge due (every 3 days)"


def test_old_persisted_data_without_full_count_loads():
    old = {"v": 1, "phase": "resting", "full_run": False, "session_s": 0, "balance_s": 0,
           "rest_at": WALL0}
    c = make(old, max_soc=90, min_soc=70, full_every_days=3)
    assert c.update(R(soc=85), 0, WALL0 + DAY) is False and c.state == "resting"
    # counted from this boot
    assert c.update(R(soc=85), 3 * DAY - 60, WALL0 + 4 * DAY - 60) is False
    assert c.update(R(soc=85), 3 * DAY, WALL0 + 4 * DAY) is True
    for bad in ("x", -1, 10 ** 12, True, float("nan"), 3.5):
        c = make({"phase": "resting", "full_s": bad}, max_soc=90, min_soc=70, full_every_days=3)
        assert c.update(R(soc=85), 0) is False and c.state == "resting", bad
        assert c.update(R(soc=85), 3 * DAY - 60) is False, bad


def test_bad_persisted_data_is_ignored():
    for bad in ("junk", 5, {"phase": "bogus"}, {"phase": 3, "hv_soc": 500}, [], {"session_s": 1e9},
                {"full_at": float("inf"), "timeout_at": float("nan"), "rest_at": 1e30}):
        c = make(bad)
        assert c.update(R(soc=90), 0) is True, bad
        assert c.state == "charging" and c.reason == "first charge to the max level"
    c = make({"phase": "resting", "session_s": -5, "timeout_at": "x", "full_at": True, "balance_s": "x"})
    assert c.update(R(soc=90), 0) is False and c.state == "resting"
    p = c.persisted()
    assert p["session_s"] == 0 and p["balance_s"] == 0
    assert "timeout_at" not in p and "full_at" not in p


def test_persisted_is_small_json_and_dirty_tracks_changes():
    c = make()
    c.update(R(soc=50), 0, WALL0)
    assert c.dirty
    c.dirty = False
    run(c, R(soc=50), 5, 200, wall0=WALL0)
    assert not c.dirty  # steady charging does not ask for a flash write every reading
    c.update(R(soc=100, current=10), 300, WALL0 + 300)
    assert c.dirty
    text = json.dumps(c.persisted())
    assert len(text) < 200
    assert json.loads(text)["phase"] == "balancing"


def _bytes_allocated_by_updates(c, r, n=200):
    """Heap bytes that n updates with a fresh reading allocate, after a warm-up (MicroPython)."""
    import gc

    for t in range(0, 50, 5):
        r.received = t
        c.update(r, t, None)
    gc.collect()
    before = gc.mem_alloc()
    t = 50
    for _ in range(n):
        r.received = t
        c.update(r, t, None)
        t += 5
    return gc.mem_alloc() - before


def test_update_does_not_allocate_in_steady_state():
    if not IS_MICROPYTHON:
        skip("heap accounting is a MicroPython measurement")
    c = make()
    used = _bytes_allocated_by_updates(c, R(soc=50, received=0))
    assert c.state == "charging"
    # steady charging allocates nothing: no floats, lists, dicts or strings per call
    assert used < 256, used


def test_real_reading_with_fields_not_reported_yet():
    from smartbms.bms.reading import Reading

    c = make()
    r = Reading()
    r.received = 0
    r.cells = [3.3, 3.3, 3.3, 3.3]  # a cells frame came first: no SOC yet
    r.temperatures = [20.0]
    assert c.update(r, 1) is False
    assert c.state == "startup"
    r.soc = 60
    assert c.update(r, 2) is True and c.state == "charging"
    r.soc = None
    assert c.update(r, 3) is False
    assert c.state == "no_data" and c.reason == "BMS reading without SOC"
    # balancing with the current not reported: only the time limit ends it
    r.soc = 100
    r.received = 100
    assert c.update(r, 100) is True and c.state == "balancing"
    r.received = 200
    assert c.update(r, 200) is True and c.state == "balancing"


def test_update_does_not_allocate_in_a_steady_fault():
    if not IS_MICROPYTHON:
        skip("heap accounting is a MicroPython measurement")
    c = make()
    used = _bytes_allocated_by_updates(c, R(soc=50, received=0, temps=(-5.0, 60.0)))
    assert c.state == "fault"
    assert used < 256, used
