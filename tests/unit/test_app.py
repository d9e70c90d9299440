# The device application's wiring (smartbms.app): relay safety at boot, the control step,
# persistence, safe mode, crash handling, the watchdog feeder, setup mode and reboots.
import json

import machine
from apputil import CountingWDT, FakeLink, FakeMachine, fresh_root, files
from battery import Battery
from smartbms import app as app_mod
from smartbms import board, clock
from testutil import IS_MICROPYTHON, raises, run_async

from smartbms.pins import RELAY_ACTIVE_LOW, RELAY_GPIO

RELAY = 33  # the default build's relay pin, active low: level 1 = off
assert (RELAY_GPIO, RELAY_ACTIVE_LOW) == (RELAY, True), "these tests assume the default relay build"


def _quiet(*a):
    pass


def _app(link_reading=None, raises=True, **kw):
    m = FakeMachine(raises)
    a = app_mod.App(machine=m, log=_quiet, **kw)
    a.link = FakeLink(link_reading)
    return a, m


def _fresh_reading(soc=55.0):
    return Battery(soc=soc).reading(received=clock.now())


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_boot_drives_relay_off_and_logs_the_boot():
    fresh_root()
    a, _ = _app()
    assert machine.pin(RELAY).value() == 1  # active low: high = charger off
    assert a.relay.on is False
    kinds = [e["kind"] for e in a.events.recent(5)]
    assert "boot" in kinds and kinds[0] == "settings"  # a fresh device says it uses the defaults
    assert a.safe_mode is False and a.setup_mode is False


def test_control_step_charges_on_a_fresh_reading_and_records_history():
    d = fresh_root()
    a, _ = _app(_fresh_reading(55.0))
    on = a.control_step()
    assert on is True and a.controller.state == "charging"
    assert machine.pin(RELAY).value() == 0  # energised
    kinds = [e["kind"] for e in a.events.recent(10)]
    assert "charge" in kinds and "relay" in kinds
    assert a.history._n == 1  # the reading went into this minute's sample
    a.control_step()
    assert a.history._n == 1  # the same reading is not counted twice
    assert "charge.json" in files(d)  # the new charge phase was persisted
    assert a.controller.dirty is False
    assert a.health()["control"] is True


def test_no_reading_keeps_relay_off():
    fresh_root()
    a, _ = _app(None)
    assert a.control_step() is False
    assert machine.pin(RELAY).value() == 1


def test_charge_state_survives_a_restart():
    d = fresh_root()
    a, _ = _app(_fresh_reading(55.0))
    a.control_step()
    saved = json.loads(open(d + "/charge.json").read())
    assert saved.get("phase") == "charging"
    machine._reset_registry()
    b, _ = _app(None)
    assert b.controller.persisted().get("phase") == "charging"


def test_safe_mode_starts_without_bms_and_keeps_relay_off():
    d = fresh_root()
    _write(d + "/bootcount", "5\n")  # five boots in a row never became healthy
    a, _ = _app()
    assert a.safe_mode is True
    a.link = FakeLink(_fresh_reading(55.0))  # even with data, safe mode never charges
    assert a.control_step() is False
    assert machine.pin(RELAY).value() == 1
    assert any("SAFE MODE" in e["msg"] for e in a.events.recent(5) if e["kind"] == "boot")


def _supervised(a, name, coro, forever=True, ticks=3):
    """Run `coro` as the app runs its parts (App._spawn) for a few control ticks."""
    async def main():
        a._spawn(name, coro, forever)
        for _ in range(ticks):
            await clock.sleep_real_ms(5)
            a._supervise()  # what the control loop does at each tick
    run_async(main())


def test_a_crashing_task_turns_the_relay_off_logs_and_resets():
    d = fresh_root()
    a, m = _app(_fresh_reading(55.0))
    a.control_step()
    assert machine.pin(RELAY).value() == 0

    async def boom():
        await clock.sleep_real_ms(1)
        raise ValueError("sensor went mad")

    e = raises(SystemExit, _supervised, a, "bms", boom())
    assert e.args[0] == machine.RESET_EXIT and m.resets == 1
    assert machine.pin(RELAY).value() == 1 and a.relay.on is False
    last = a.events.recent(3)
    assert any(ev["kind"] == "error" and "bms crashed: ValueError: sensor went mad" in ev["msg"] for ev in last)
    assert a.events.pending == 0  # on flash before the reset
    assert any(n.startswith("events") for n in files(d))


def test_a_task_that_stops_counts_as_a_crash():
    fresh_root()
    a, m = _app(raises=False)

    async def done():
        return None

    _supervised(a, "web", done())
    assert m.resets == 1 and "web crashed: RuntimeError: task ended" in a.events.recent(3)[-1]["msg"]
    b, m2 = _app(raises=False)
    _supervised(b, "health", done(), forever=False)  # finishing is its job
    assert m2.resets == 0
    # a cancelled part (an MQTT session turned off) is not a crash, and ended ones make room
    c, m3 = _app(raises=False)

    async def nap(ms):
        await clock.sleep_real_ms(ms)

    async def parts():
        for _ in range(5):
            c._spawn("mqtt", nap(1), forever=False)
            await clock.sleep_real_ms(5)
        c._spawn("setup", nap(1000), forever=False)
        c._tasks[-1].cancel()
        await clock.sleep_real_ms(5)
        c._supervise()

    run_async(parts())
    assert m3.resets == 0 and len(c._tasks) <= 2, c._task_info


def test_watchdog_is_fed_only_while_control_ticks():
    fresh_root()
    a, _ = _app(None)

    async def run(loop):
        a._wdt = wdt = CountingWDT(timeout=app_mod.WDT_TIMEOUT_MS)
        t = app_mod.asyncio.create_task(loop())
        for _ in range(4):
            await clock.sleep_ms(app_mod.TICK_MS)
        t.cancel()
        return wdt.fed

    old = clock.speed()
    clock.set_speed(1000)
    try:
        assert run_async(run(a.control_loop)) >= 3  # the control loop feeds it after each step
        step = a.control_step
        a._last_tick = None
        a.control_step = lambda: None  # a loop that goes round without control: never fed
        assert run_async(run(a.control_loop)) == 0
        a.control_step = step
        a.safe_mode = True  # safe mode: no control loop, its own feeder
        assert run_async(run(a.watchdog_loop)) >= 3
    finally:
        clock.set_speed(old)


def test_long_press_on_boot_button_enters_setup_mode_with_access_point():
    fresh_root()
    a, _ = _app()
    btn = machine.pin(0)
    btn.sim_drive(0)  # pressed
    assert a.board.poll_button(1000) is False
    assert a.board.poll_button(3999) is False  # 2.999 s
    assert a.board.poll_button(4000) is True
    assert a.setup_mode is True
    st = a.wifi.status()
    assert st["mode"] == "ap" and st["ap_ssid"].startswith("smartbms-") and len(st["ap_ssid"]) == 13
    btn.sim_drive(None)
    assert a.board.poll_button(5000) is False


def test_short_press_does_nothing():
    fresh_root()
    a, _ = _app()
    btn = machine.pin(0)
    btn.sim_drive(0)
    a.board.poll_button(0)
    a.board.poll_button(2000)
    btn.sim_drive(1)
    a.board.poll_button(2500)
    btn.sim_drive(0)
    a.board.poll_button(3000)
    assert a.board.poll_button(5500) is False  # a new press is timed from its own start
    assert a.setup_mode is False


def test_setup_mode_is_not_read_at_power_on():
    # GPIO0 held at reset starts the ROM download mode: the firmware never sees that press,
    # so nothing may promise it (README, main.py); a press after start is the way in
    assert not hasattr(board, "button_held_at_boot")
    with open(_main_py()) as f:
        src = f.read()
    assert "setup_mode=" not in src and "held_at_boot" not in src


def _main_py():
    root = "/".join(__file__.split("/")[:-3]) or "."  # tests/unit/test_app.py -> the project
    return root + "/modules/main.py"


def test_long_press_is_timed_in_real_time_not_device_time():
    # a person holds the button for 3 real seconds; the sim's fast clock must not shorten it
    fresh_root()
    a, _ = _app()
    machine.pin(0).sim_drive(0)
    clock.set_speed(60)

    async def hold(ms):
        t = asyncio.create_task(a.board.run(a))
        await clock.sleep_real_ms(ms)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass

    import asyncio
    try:
        run_async(hold(600))  # 36 s of device time, 0.6 s of real time
        assert a.setup_mode is False
        run_async(hold(3300))  # the same press, held on: 3 s real from its start
        assert a.setup_mode is True
    finally:
        clock.set_speed(1)
        machine.pin(0).sim_drive(None)


def test_apply_settings_validates_first_and_moves_the_relay():
    fresh_root()
    from smartbms.settings import SettingsError

    a, _ = _app(_fresh_reading(55.0))
    a.control_step()
    e = raises(SettingsError, a.apply_settings, {"max_soc": 90, "relay_pin": 99})
    assert e.field == "relay_pin"
    assert a.settings["max_soc"] == 100 and a.relay.pin == RELAY
    # the relay pin and polarity are the ones the C start-up hook latches: no other
    for bad in ({"relay_pin": 25}, {"relay_active_low": False}, {"relay_pin": 0}):
        e = raises(SettingsError, a.apply_settings, dict(bad, poll_interval_s=10))
        assert e.field in bad and "fixed at build time" in e.message
    assert a.relay.pin == RELAY and machine.pin(RELAY).value() == 0  # still charging, same pin
    # neither can the LED take the BOOT button, a strapping pin that breaks boot, or the relay
    for pin in (0, 12, RELAY):
        e = raises(SettingsError, a.apply_settings, {"led_pin": pin})
        assert e.field == "led_pin"
    changed = a.apply_settings({"relay_pin": RELAY, "poll_interval_s": 10})
    assert changed == ["poll_interval_s"]
    assert a.link.reconfigured == 1


def test_override_and_timeout_reset_reach_the_controller():
    fresh_root()
    a, _ = _app(_fresh_reading(55.0))
    a.control_step()
    a.set_override("off", 30)
    assert a.controller.state == "override" and machine.pin(RELAY).value() == 1
    assert a.reset_timeout() is False  # no timeout hold: nothing to reset, nothing logged
    assert not [e for e in a.events.recent(50) if "timeout" in e["msg"]]
    assert any(e["kind"] == "override" for e in a.events.recent(10))
    a.set_override("auto", None)  # "Back to auto"
    msgs = [e["msg"] for e in a.events.recent(5)]
    assert "override ended: automatic control" in msgs and not [m for m in msgs if "None" in m]


def test_request_reboot_answers_first_then_resets():
    fresh_root()
    a, m = _app(raises=False)
    a.link = FakeLink(_fresh_reading(55.0))
    a.control_step()
    assert machine.pin(RELAY).value() == 0

    async def go():
        a.request_reboot("settings")
        a.request_reboot("again")  # one reboot only
        await clock.sleep_real_ms(50)
        assert m.resets == 0  # not yet: the HTTP answer leaves first
        await clock.sleep_real_ms(app_mod.REBOOT_DELAY_MS + 500)

    run_async(go())
    assert m.resets == 1
    assert machine.pin(RELAY).value() == 1  # relay off before the reset
    assert [ev["msg"] for ev in a.events.recent(10) if ev["kind"] == "reboot"] == ["reboot requested: settings"]


def test_ctx_basics():
    fresh_root()
    a, _ = _app()
    assert a.uptime_s() >= 0
    heap = a.free_heap()
    assert heap > 0 if IS_MICROPYTHON else heap is None
    assert a.web_alive() is False
    a.mark_web_alive()
    h = a.health()
    assert h["settings"] is True and h["control"] is False and h["ble"] is True
    a.link.radio = False  # a BLE stack that does not come up keeps a new image unconfirmed
    assert a.health()["ble"] is False
    assert run_async(a.scan_bms())[0]["mac"] == "AA:BB:CC:DD:EE:01"


def test_settings_changes_and_load_problems_reach_the_event_log():
    d = fresh_root()
    _write(d + "/settings.json", "{not json")
    a, _ = _app()
    msgs = [e["msg"] for e in a.events.recent(20) if e["kind"] == "settings"]
    assert msgs and "defaults" in " ".join(msgs)  # why the stored file was not used
    a.apply_settings({"min_soc": 70})
    assert a.events.recent(1)[0] == a.events.recent(20)[-1]
    last = a.events.recent(1)[0]
    assert last["kind"] == "settings" and "min_soc 80 -> 70" in last["msg"]


def test_a_new_wifi_password_reconnects():
    fresh_root()
    a, _ = _app()
    a.apply_settings({"wifi_ssid": "home"})
    a.wifi._kick = False
    a.apply_settings({"wifi_password": "a-new-secret"})
    assert a.wifi._kick is True


def test_setup_mode_ends_when_a_password_is_set_or_after_its_window():
    fresh_root()
    a, _ = _app()
    a.enter_setup_mode()
    assert a.setup_mode is True and a.wifi.setup_mode is True
    a.end_setup_mode("admin password set")
    assert a.setup_mode is False and a.wifi.setup_mode is False
    assert a.events.recent(1)[0]["msg"] == "setup mode ended: admin password set"
    # nobody sets a password: the window closes by itself after SETUP_MODE_S of device time
    a.enter_setup_mode()
    old = clock.speed()
    clock.set_speed(app_mod.SETUP_MODE_S * 10)  # 15 device minutes in ~100 ms

    async def go():
        await a.setup_window()

    try:
        run_async(go())
    finally:
        clock.set_speed(old)
    assert a.setup_mode is False and "min passed" in a.events.recent(1)[0]["msg"]


def test_web_health_needs_an_answered_request_and_the_probe_makes_one():
    import socket

    fresh_root()
    s = socket.socket()
    s.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
    port = s.getsockname()[1] if not IS_MICROPYTHON else None
    s.close()
    if port is None:  # the unix port's getsockname gives a raw sockaddr: pick a fixed port
        port = 18600 + (clock.now_ms() % 300)
    a, _ = _app(port=port, host="127.0.0.1")

    async def go():
        await a.probe_web()  # no server yet: nothing to mark
        assert a.web_alive() is False
        import asyncio

        t = asyncio.create_task(a.web_task())
        await clock.sleep_real_ms(300)
        assert a.web_alive() is False  # listening is not answering
        await a.probe_web()
        assert a.web_alive() is True and a.health()["web"] is True
        t.cancel()
        try:
            await t
        except BaseException:  # noqa: B036 - cancelled on purpose
            pass

    run_async(go())
