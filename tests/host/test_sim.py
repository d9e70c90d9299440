# The simulator's process lifecycle (scripts/run_sim.py + sim/sim_main.py on the MicroPython
# unix port): it starts and serves, the speed-up reaches the device clock, the relay switches
# the simulated charger, a firmware reset or a watchdog kill restarts it with its state kept,
# and Ctrl-C stops it cleanly.
import os
import signal
import time

import pytest
from simfixture import start_sim

pytestmark = pytest.mark.sim


def _until(fn, timeout=20, every=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError("condition not met in %ss (last: %r)" % (timeout, last))


def _status(sim):
    code, _, body = sim.get("/api/status")
    assert code == 200, body
    return body


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def test_sim_serves_a_live_charging_battery(tmp_path):
    with start_sim(tmp_path, speed=60, password="pw-for-test1") as sim:
        out = sim.output()
        assert "http://127.0.0.1:%d" % sim.port in out
        assert "user admin" in out and "password pw-for-test1" in out
        assert sim.get("/api/status", auth=False)[0] == 401
        # the charger is on and the battery takes its current (seen one BMS poll later)
        st = _until(lambda: (lambda s: s if s["bms"].get("connected") and s["charger"]["relay"]
                             and s["bms"]["current"] > 5 else None)(_status(sim)))
        assert 50 <= st["bms"]["soc"] <= 62
        assert st["device"]["wifi"]["connected"] is True
        assert st["charger"]["state"] == "charging"


def test_speed_applies_to_the_device_clock(tmp_path):
    with start_sim(tmp_path, speed=120) as sim:
        u0 = _status(sim)["device"]["uptime_s"]
        t0 = time.monotonic()
        time.sleep(2.0)
        u1 = _status(sim)["device"]["uptime_s"]
        real = time.monotonic() - t0
        assert 0.6 * 120 * real <= u1 - u0 <= 1.5 * 120 * real + 5


def test_relay_switches_the_simulated_charger(tmp_path):
    with start_sim(tmp_path, speed=60) as sim:
        _until(lambda: _status(sim)["bms"].get("current", 0) > 5)
        code, _, body = sim.request("POST", "/api/relay", json={"mode": "off", "minutes": 60})
        assert code == 200, body
        st = _until(lambda: (lambda s: s if s["bms"]["current"] < 0 else None)(_status(sim)))
        assert st["charger"]["relay"] is False and st["charger"]["state"] == "override"
        sim.request("POST", "/api/relay", json={"mode": "auto"})
        _until(lambda: _status(sim)["bms"]["current"] > 5)


def test_reboot_restarts_the_device_and_state_persists(tmp_path):
    with start_sim(tmp_path, speed=60) as sim:
        _until(lambda: _status(sim)["charger"]["relay"])
        n = sim.ready_count()
        code, _, body = sim.request("POST", "/api/reboot", json={})
        assert code == 200, body
        sim.wait_output("the firmware reset itself: restarting the device")
        sim.wait_ready(30, after=n)
        assert _status(sim)["device"]["uptime_s"] < 600  # a new boot
        code, _, ev = sim.get("/api/events?limit=200")
        msgs = [e["msg"] for e in ev["events"]]
        assert any("reboot requested" in m for m in msgs)  # logged before the reset, kept
        assert sum(1 for e in ev["events"] if e["kind"] == "boot") >= 2
        # the password and WiFi were provisioned once and survive the restart
        assert os.path.exists(os.path.join(sim.dir, "provisioned"))
        assert not os.path.exists(os.path.join(sim.dir, "provision.txt"))
        assert _status(sim)["device"]["wifi"]["connected"] is True


def test_killed_firmware_is_restarted_as_after_a_watchdog_reset(tmp_path):
    with start_sim(tmp_path, speed=60) as sim:
        kids = _children(sim.proc.pid)
        assert len(kids) == 1
        n = sim.ready_count()
        os.kill(kids[0], signal.SIGKILL)
        sim.wait_output("watchdog reset: restarting the device")
        sim.wait_ready(30, after=n)
        assert _children(sim.proc.pid) != kids


def test_a_stopped_sim_keeps_its_state_for_the_next_start(tmp_path):
    sim = start_sim(tmp_path, speed=60, password="first-pass")
    try:
        _until(lambda: _status(sim)["charger"]["relay"])
    finally:
        assert sim.stop() == 0
    sim = start_sim(tmp_path, speed=60, password="ignored-now")  # provisioning happens once
    try:
        assert sim.get("/api/status")[0] == 401
        # the banner names the password this state was provisioned with, not SIM_PASSWORD
        assert "password first-pass (set on this state's first run" in sim.output()
        sim.password = "first-pass"
        assert sim.get("/api/status")[0] == 200
        code, _, ev = sim.get("/api/events?limit=200")
        assert sum(1 for e in ev["events"] if e["kind"] == "boot") >= 2
    finally:
        sim.stop()


def test_ctrl_c_stops_cleanly(tmp_path):
    sim = start_sim(tmp_path, speed=60)
    kids = _children(sim.proc.pid)
    os.killpg(sim.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert sim.proc.wait(10) == 0
    for k in kids:
        assert not os.path.exists("/proc/%d" % k) or open("/proc/%d/stat" % k).read().split()[2] == "Z"
    assert "stopped" in sim.output()


@pytest.mark.parametrize("bms", ["jk02_32s", "daly"])
def test_other_bms_protocols_feed_the_firmware(tmp_path, bms):
    with start_sim(tmp_path, speed=60, bms=bms) as sim:
        st = _until(lambda: (lambda s: s if s["bms"].get("connected") and s["bms"]["stats"]["ok"] >= 3
                             and s["bms"]["current"] > 5 else None)(_status(sim)))
        assert st["bms"]["stats"]["bad_frames"] == 0
        assert len(st["bms"]["cells"]) == 4 and 3.2 < st["bms"]["cells"][0] < 3.5


# ---- the machine shim's process-level behaviour (run on the unix port) ----
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mpy(tmp_path, code, timeout=20):
    import subprocess

    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = dict(os.environ, SIM_DIR=str(tmp_path),
               MICROPYPATH=":".join([".frozen", ROOT + "/modules", ROOT + "/sim/shims", ROOT + "/sim"]))
    mp = os.environ.get("MICROPYTHON") or os.path.join(ROOT, ".venv", "bin", "micropython")
    return subprocess.run([mp, str(script)], env=env, capture_output=True, text=True, timeout=timeout)


def test_unfed_watchdog_kills_the_process(tmp_path):
    r = _mpy(tmp_path, "import machine, time\n"
                       "w = machine.WDT(timeout=100)\n"
                       "for i in range(30):\n"
                       "    w.feed(); time.sleep_ms(50)\n"
                       "print('fed ok')\n"
                       "time.sleep(10)\n"
                       "print('not reached')\n")
    assert r.returncode == -signal.SIGKILL, r
    assert "fed ok" in r.stdout and "not reached" not in r.stdout
    assert "watchdog reset" in r.stdout
    assert (tmp_path / "reset_cause").read_text() == "3"  # WDT_RESET for the next boot


def test_reset_exit_code_and_rtc_memory_survive(tmp_path):
    r = _mpy(tmp_path, "import machine\n"
                       "machine.RTC().memory(b'boot-state')\n"
                       "machine.reset()\n")
    assert r.returncode == 75, r
    r = _mpy(tmp_path, "import machine\n"
                       "print(machine.RTC().memory(), machine.reset_cause() == machine.HARD_RESET)\n")
    assert r.stdout.strip() == "b'boot-state' True", r


def test_boot_button_held_at_power_on_is_the_rom_download_mode(tmp_path):
    # GPIO0 low at reset: the ESP32's ROM waits for a serial download and the firmware never
    # runs. Released, the next power-on boots normally; setup mode is a 3 s press after start.
    import subprocess

    from simfixture import Sim, free_port

    env = dict(os.environ, SIM_SPEED="60", SIM_DIR=str(tmp_path / "sim"), SIM_PORT=str(free_port()),
               SIM_BUTTON_AT_BOOT="1", SIM_PASSWORD="smartbms", PYTHONUNBUFFERED="1")
    sim = Sim(str(tmp_path / "sim"), int(env["SIM_PORT"]), "smartbms", env, once=False).start()
    try:
        sim.wait_output("waiting for download", timeout=30)
        time.sleep(1.0)
        assert sim.ready_count() == 0 and "firmware running" not in sim.output()
        with pytest.raises(OSError):
            sim.get("/api/status", timeout=2)
    finally:
        sim.kill()
    with start_sim(tmp_path, speed=60) as sim:  # BOOT released: a normal start
        code, _, body = sim.get("/api/auth", auth=False)
        assert code == 200 and body["setup_mode"] is False
        sim.world("button", level=0)  # held 3 s (real time) after start: setup mode
        _until(lambda: sim.get("/api/auth", auth=False)[2]["setup_mode"], timeout=15)
        sim.world("button", level=None)
        wifi = _status(sim)["device"]["wifi"]
        assert wifi["ap_ssid"] and wifi["ap_ssid"].startswith("smartbms-")
        # charging runs the same whatever WiFi does
        _until(lambda: _status(sim)["charger"]["relay"])
