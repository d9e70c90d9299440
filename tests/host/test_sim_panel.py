"""The sim panel (sim/panel.py, started by scripts/run_sim.py): faults injected there reach the
device as they would on the bench, a reboot and a clock change restart the device, and a
request that is not JSON is refused. Also what the sim prints at start."""
import http.client
import json
import time

import pytest

from browser_util import have_sim

pytestmark = pytest.mark.sim


@pytest.fixture
def sim(tmp_path):
    if not have_sim():
        pytest.skip("the simulator is not available")
    from simfixture import start_sim

    s = start_sim(tmp_path, speed=60)
    yield s
    s.stop()


def panel_port(sim):
    line = sim.wait_output("smartbms sim panel: ")
    return int(line.split("http://127.0.0.1:", 1)[1].split()[0])


def call(port, method, path, body=None, ctype="application/json"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": ctype} if data else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_status(sim, pred, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        code, _, st = sim.get("/api/status")
        if code == 200 and pred(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError("status never matched: %s" % json.dumps(st)[:2000])
        time.sleep(0.5)


def test_the_panel_injects_faults_reboots_and_refuses_non_json(sim):
    port = panel_port(sim)
    code, page = call(port, "GET", "/")
    assert code == 200 and b"Cold pack" in page and b"panel.js" in page
    code, state = call(port, "GET", "/state")
    state = json.loads(state)
    assert state["speed"] == 60 and "cold" in state["actions"] and state["world"]["battery"]["soc"] > 0
    code, ans = call(port, "POST", "/action", {"name": "cold"}, ctype="text/plain")
    assert code == 415
    code, ans = call(port, "POST", "/action", {"name": "nonsense"})
    assert code == 422
    code, ans = call(port, "POST", "/action", {"name": "cold"})
    assert code == 200 and json.loads(ans)["did"] == "pack at -5 °C"
    st = wait_status(sim, lambda s: s["charger"]["state"] == "fault")
    assert st["charger"]["summary"].startswith("Stopped for safety: temperature -5")
    assert st["charger"]["relay"] is False
    call(port, "POST", "/action", {"name": "mild"})
    call(port, "POST", "/action", {"name": "link_lost"})
    st = wait_status(sim, lambda s: not s["bms"]["connected"], timeout=40)
    call(port, "POST", "/action", {"name": "link_back"})
    wait_status(sim, lambda s: s["bms"]["connected"], timeout=60)
    n = sim.ready_count()
    code, ans = call(port, "POST", "/action", {"name": "reboot"})
    assert code == 200
    sim.wait_ready(40, after=n)
    assert "power cycle from the sim panel: restarting the device" in sim.output()
    code, ans = call(port, "POST", "/action", {"name": "speed", "speed": 10})
    assert code == 200
    sim.wait_ready(40, after=n + 1)
    assert json.loads(call(port, "GET", "/state")[1])["speed"] == 10
    assert "clock x10" in sim.output()


def test_the_sim_says_what_it_provisioned_and_booted(tmp_path):
    if not have_sim():
        pytest.skip("the simulator is not available")
    from simfixture import start_sim

    s = start_sim(tmp_path, password=None)
    try:
        out = s.wait_output("provisioned: ")
        assert "no admin password (the first-time setup page asks for one)" in out
        assert "(undefined)" not in s.output()
        assert "booted ota_0 (as flashed, no update installed yet)" in s.output()
        assert "smartbms sim panel: http://127.0.0.1:" in s.output()
    finally:
        s.stop()
