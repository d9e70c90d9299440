"""The heap budget, enforced: the simulator gives the firmware exactly the board's heap
(MICROPY_GC_INITIAL_HEAP_SIZE in boards/SMARTBMS/mpconfigboard.h; the host's own objects are kept apart, see
sim/sim_main.py) on the 32-bit v1.28.0 build with the firmware frozen, and a short form of
the worst-case workload (bench/heap_workload.py) must run within it: a MemoryError only
while answering a request (the documented 503), never in the control loop, the BMS link or
a restart; no control step later than 2 s; the relay always what the charger sees; the
upload streamed whole. `make bench` runs the long form and prints the figures."""
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from heap_workload import AGED, heap_lines, run_workload, summarize  # noqa: E402
from run_sim import board_heap  # noqa: E402
from simfixture import MOSQUITTO, AlertSink, start_broker, start_sim  # noqa: E402

pytestmark = pytest.mark.sim

SPEED = 60
IDLE_S = 600  # device seconds before the load
LOAD_S = 2400  # device seconds of load: 40 link drops
REPORT_S = 30
TICK_LIMIT_MS = 2000
# The budget, issue 9's: idle live heap at most 48 KB, a free block of 16 KB at all times, with
# MQTT and alerts off (the default) and on (issue 14). Measured (README "Memory"): off 43.6 KB
# idle, 24.2 KB block at worst; on 47.7 KB, 19.5 KB (17.6 KB over 24 device-hours). The peak:
# what the firmware holds to today (off 67.4 KB, on 71.8-72.0 KB) with a little room; a change
# that makes it worse fails here.
IDLE_LIVE_LIMIT = 48 * 1024
PEAK_LIVE_LIMIT = 76 * 1024
FREE_BLOCK_FLOOR = 16 * 1024
MQTT_IDLE_LIVE_LIMIT = IDLE_LIVE_LIMIT
MQTT_PEAK_LIVE_LIMIT = PEAK_LIVE_LIMIT
MQTT_FREE_BLOCK_FLOOR = FREE_BLOCK_FLOOR


def _is_32bit():
    try:
        with open(os.path.join(ROOT, "build", "host", "micropython.bits")) as f:
            return f.read().strip() == "32"
    except OSError:
        return False


def _budget(tmp_path, idle_limit, peak_limit, block_floor, **env):
    if not _is_32bit():
        pytest.skip("the host interpreter is not the 32-bit build: heap figures would not be the chip's")
    sim = start_sim(tmp_path, speed=SPEED, extra_env=dict(AGED, SIM_HEAP_REPORT_S=str(REPORT_S), **env), timeout=60)
    try:
        deadline = time.monotonic() + IDLE_S / SPEED + 30
        while not any(x[0] >= IDLE_S for x in heap_lines(sim.output())):
            assert time.monotonic() < deadline, sim.output()[-3000:]
            time.sleep(0.2)
        idle_until = max(x[0] for x in heap_lines(sim.output()))
        result = run_workload(sim, LOAD_S, SPEED)
        # the load is gone: the web server answers again at once (a device left alone must
        # not stay deaf after a storm)
        deadline = time.monotonic() + 30
        recovered = answer = None
        while time.monotonic() < deadline and recovered != 200:
            try:
                recovered, _, answer = sim.get("/api/status", timeout=5)
            except OSError:
                pass
            if recovered != 200:
                time.sleep(0.5)  # as a client told Retry-After does
        status = sim.get("/api/status", timeout=5)[2] if recovered == 200 else None
        world = sim.world("status")
        out = sim.output()
    finally:
        sim.stop()
    figures = summarize(heap_lines(out), idle_until)
    print("heap budget:", figures, result)
    assert "firmware heap %d KB" % (board_heap() // 1024) in out
    assert "restarting the device" not in out and "crashed" not in out, out[-4000:]
    for tb in out.split("Traceback (most recent call last):")[1:]:
        lines = [ln for ln in tb.splitlines() if ln.strip()]
        last = [ln for ln in lines if not ln.startswith(" ")][0]
        assert last.startswith("MemoryError") and "dispatch_request" in tb, tb[:1500]
    assert figures["samples"] >= 10, figures
    assert figures["tick_max_ms"] <= TICK_LIMIT_MS, figures
    assert result["relay_mismatches"] == 0, result
    assert recovered == 200, (recovered, answer, result)
    assert result["ota"] and result["ota"][0] == 400 and "SHA-256" in (result["ota"][1] or ""), result
    assert bool(status["charger"]["relay"]) == bool(world["charger_on"]), (status["charger"], world)
    assert result["link_drops"] >= 3, result
    assert not result["failures"], result["failures"][:5]
    answered = sum(n for st, n in result["codes"].items() if st in (200, 304))
    assert answered > 100 and set(result["codes"]) <= {200, 304, 503}, result["codes"]
    # a head line is read a small piece at a time (a 4 KB read buffer per line made most
    # answers under this load 503s): under 2 % of the answers may be "retry shortly"
    assert result["codes"].get(503, 0) * 50 <= answered, result["codes"]
    assert result["settings_saves"] >= 3 and result["scan"] == 200, result
    assert figures["idle_live"] <= idle_limit, figures
    assert figures["peak_live"] <= peak_limit, figures
    assert figures["min_max_free"] >= block_floor, figures
    return status


def test_firmware_lives_within_the_board_heap_under_the_worst_case_workload(tmp_path):
    _budget(tmp_path, IDLE_LIVE_LIMIT, PEAK_LIVE_LIMIT, FREE_BLOCK_FLOOR)


def test_with_mqtt_and_alerts_on_the_firmware_still_lives_within_the_board_heap(tmp_path):
    """Issue 9's budget holds with MQTT and alerts on: the link drops of the workload are
    alerts, posted to a local ntfy stand-in and published on the events topic."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
    port, broker = start_broker(tmp_path)
    sink = AlertSink()
    try:
        status = _budget(tmp_path, MQTT_IDLE_LIVE_LIMIT, MQTT_PEAK_LIVE_LIMIT, MQTT_FREE_BLOCK_FLOOR,
                         SIM_MQTT="127.0.0.1:%d" % port,
                         SIM_ALERT_URL="http://127.0.0.1:%d/smartbms" % sink.port)
    finally:
        broker.terminate()
        broker.wait(10)
        sink.server.shutdown()
    assert status["mqtt"]["state"] == "connected", status["mqtt"]
    assert sink.posts, "no alert was posted: alerts were not on"


def test_every_documented_request_answers_at_once_on_an_idle_aged_device(tmp_path):
    """At the board's heap, with a full event log (a device months old), every request the
    README documents answers at the first try when the device is otherwise idle, the web
    stack unloaded as it is when nobody looks (smartbms.webgate): a page of 200 events, a
    12 KB settings body, a BMS scan, a capture, an upload to its end."""
    if not _is_32bit():
        pytest.skip("the host interpreter is not the 32-bit build: heap figures would not be the chip's")
    import hashlib

    sys.path.insert(0, os.path.join(ROOT, "sim"))
    import esp_image

    sim = start_sim(tmp_path, speed=SPEED, extra_env=dict(AGED, SIM_HEAP_REPORT_S="10"), timeout=60)
    try:
        # the boot's health probes loaded the web stack; a quiet minute later it is dropped
        deadline = time.monotonic() + 30
        while not [x for x in heap_lines(sim.output()) if x[0] >= 200]:
            assert time.monotonic() < deadline, sim.output()[-3000:]
            time.sleep(0.2)
        assert heap_lines(sim.output())[-1][1] <= IDLE_LIVE_LIMIT, heap_lines(sim.output())
        mac = sim.world("status")["peers"][0]["mac"]
        seen = []

        def once(method, path, want=200, **kw):
            st, _, body = sim.request(method, path, timeout=60, **kw)
            seen.append((method, path, st))
            assert st == want, (method, path, st, body if not isinstance(body, bytes) else body[:200])
            return body

        for path in ("/", "/api/auth", "/api/status", "/api/settings", "/api/settings/schema", "/api/history",
                     "/api/bms/capture", "/api/wifi/scan", "/api/bms/scan"):
            once("GET", path)
        events = once("GET", "/api/events?limit=200")["events"]
        assert len(events) == 200, len(events)
        padded = b'{"min_soc": 70' + b" " * (12 * 1024) + b"}"
        assert once("PUT", "/api/settings", body=padded, headers={"Content-Type": "application/json"})["ok"]
        once("POST", "/api/relay", json={"mode": "off", "minutes": 5})  # a capture needs the charger off
        once("POST", "/api/bms/capture", json={"mac": mac, "seconds": 5})
        once("GET", "/api/bms/capture")
        once("DELETE", "/api/bms/capture")
        once("POST", "/api/relay", json={"mode": "auto"})
        once("POST", "/api/charge/allow", json={"allow": True})
        once("POST", "/api/alarms/clear", json={})
        img = esp_image.app_image("0.9.9", 300 * 1024)
        wrong = hashlib.sha256(img + b"x").hexdigest()  # streamed to its end, then refused
        body = once("POST", "/api/ota", want=400, body=img,
                    headers={"Content-Type": "application/octet-stream", "X-Image-SHA256": wrong})
        assert "SHA-256" in body["error"], body
        once("GET", "/api/status")
        out = sim.output()
    finally:
        sim.stop()
    assert "MemoryError" not in out, out[-3000:]
