"""The sim panel (sim/panel.py, started by scripts/run_sim.py): faults injected there reach the
device as they would on the bench, a reboot and a clock change restart the device, and a
request that is not JSON is refused. Also what the sim prints at start.

Every control is tried against what the device then says over its API (the state, the plain
summary, the alarms, the BMS reading, the event log), and the panel's own page drives the
device in chromium while the device's status page shows the fault arrive."""
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


@pytest.fixture
def fast(tmp_path):
    """A sim at x300 (5 device minutes a real second): the alarms that wait minutes come soon."""
    if not have_sim():
        pytest.skip("the simulator is not available")
    from simfixture import start_sim

    s = start_sim(tmp_path, speed=300)
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


def act(sim, name, **kw):
    code, ans = call(panel_port(sim), "POST", "/action", dict(kw, name=name))
    assert code == 200, ans
    return json.loads(ans)["did"]


def events(sim):
    return [e["msg"] for e in sim.get("/api/events?limit=200")[2]["events"]]


def alarm(st, name):
    return [a for a in st["alarms"] if a["name"] == name]


def hold_off(sim):
    """The relay off by hand, for long: what flows then is not the charger's doing."""
    assert sim.request("POST", "/api/relay", json={"mode": "off", "minutes": 1440})[0] == 200
    return wait_status(sim, lambda s: s["charger"]["state"] == "override" and not s["charger"]["relay"])


def test_a_hot_pack_stops_charging_until_it_cools(fast):
    wait_status(fast, lambda s: s["charger"]["relay"])
    assert act(fast, "hot") == "pack at 60 °C"
    st = wait_status(fast, lambda s: s["charger"]["state"] == "fault")
    assert st["charger"]["summary"].startswith("Stopped for safety: temperature 60.0 °C > ")
    assert st["charger"]["relay"] is False and st["bms"]["temperatures"] == [60.0, 60.0]
    assert st["bms"]["charge_fet"] is False  # the BMS's own over-temperature cut-off as well
    assert st["bms"]["faults"] == ["charge_overtemp"]  # and its protection bit
    assert [m for m in events(fast) if m.startswith("fault: temperature 60.0 °C > ")]
    assert act(fast, "mild") == "pack at 25 °C"
    st = wait_status(fast, lambda s: s["charger"]["state"] == "charging" and s["charger"]["relay"])
    assert st["bms"]["temperatures"] == [25.0, 25.0] and st["charger"]["summary"].startswith("Charging to ")


def test_a_bms_protection_opens_its_charge_mosfet_and_the_device_stops(fast):
    # (every family: tests/host/test_sim_protection.py)
    wait_status(fast, lambda s: s["charger"]["relay"])
    assert act(fast, "protect") == "BMS protection: cell over-voltage"
    st = wait_status(fast, lambda s: s["charger"]["state"] == "fault")
    assert st["charger"]["summary"] == "Stopped for safety: BMS protection: cell_overvoltage"
    assert st["charger"]["relay"] is False and st["bms"]["charge_fet"] is False
    assert st["bms"]["faults"] == ["cell_overvoltage"]
    assert "fault: BMS protection: cell_overvoltage" in events(fast)
    act(fast, "protect_off")
    st = wait_status(fast, lambda s: s["charger"]["state"] == "charging" and s["charger"]["relay"])
    assert st["bms"]["charge_fet"] is True and st["bms"]["faults"] == []


def test_a_dead_charger_raises_its_alarm_and_a_working_one_ends_it(fast):
    hold_off(fast)  # the check is made when the relay switches on
    assert act(fast, "charger_dead") == "charger gives no current"
    assert fast.request("POST", "/api/relay", json={"mode": "auto"})[0] == 200
    st = wait_status(fast, lambda s: alarm(s, "charger_dead"), timeout=40)  # 10 device-min of nothing
    a = alarm(st, "charger_dead")[0]
    assert a["message"].startswith("charger dead: no charge current after 10 min with the relay on")
    assert a["stops_charging"] and not a["latched"]
    st = wait_status(fast, lambda s: s["charger"]["state"] == "fault" and not s["charger"]["relay"])
    assert st["charger"]["summary"].startswith("Charger gives no current")
    assert [m for m in events(fast) if m.startswith("alarm charger_dead: charger dead")]
    # a charger that works again: the next try (1 device-hour on) sees current, the alarm ends
    act(fast, "charger_ok")
    st = wait_status(fast, lambda s: not s["alarms"] and s["charger"]["relay"], timeout=40)
    assert st["bms"]["current"] > 10


def test_a_welded_relay_is_caught_and_the_bms_mosfet_cut_off_until_cleared(fast):
    hold_off(fast)
    st = wait_status(fast, lambda s: s["bms"]["current"] < 0)  # the load, nothing charges
    assert act(fast, "welded").startswith("relay contacts welded")
    st = wait_status(fast, lambda s: alarm(s, "relay_stuck"), timeout=40)
    a = alarm(st, "relay_stuck")[0]
    assert a["message"].startswith("relay stuck: ") and "charging with the relay off for 5 min" in a["message"]
    assert a["latched"] and a["stops_charging"]
    # the second cut-off: the device told the BMS to open its charge MOSFET, and it did
    st = wait_status(fast, lambda s: s["bms"]["charge_fet"] is False and s["bms"]["current"] < 0)
    assert st["charger"]["relay"] is False and st["charger"]["summary"].startswith("Stopped for safety: relay stuck")
    peers = json.loads(call(panel_port(fast), "GET", "/state")[1])["world"]["peers"]
    assert [p for p in peers if p["charge_fet_off"]], peers
    # repaired: the alarm is latched until the owner clears it
    act(fast, "unwelded")
    time.sleep(2)
    assert alarm(fast.get("/api/status")[2], "relay_stuck")
    assert fast.request("POST", "/api/alarms/clear", json={})[0] == 200
    wait_status(fast, lambda s: not alarm(s, "relay_stuck") and s["bms"]["charge_fet"] is True)
    assert [m for m in events(fast) if m.startswith("alarms cleared by the user: relay_stuck")]


def test_the_load_shows_as_the_current_out_of_the_pack(fast):
    hold_off(fast)
    assert act(fast, "load_high") == "load 15 A"
    st = wait_status(fast, lambda s: s["bms"]["current"] == -15.0)
    assert st["charger"]["flow"] == "Discharging 15.0 A"
    assert act(fast, "load_low") == "load 3 A"
    st = wait_status(fast, lambda s: s["bms"]["current"] == -3.0)
    assert st["charger"]["flow"] == "Discharging 3.0 A"


def test_a_power_cycle_restarts_the_device(sim):
    port = panel_port(sim)
    st = wait_status(sim, lambda s: s["device"]["uptime_s"] >= 120)
    boots = events(sim).count("smartbms started")
    n = sim.ready_count()
    assert act(sim, "reboot") == "the device restarts (power cycle)"
    sim.wait_ready(40, after=n)
    st = wait_status(sim, lambda s: events(sim).count("smartbms started") == boots + 1)
    assert st["device"]["uptime_s"] < 60  # a new boot: its uptime starts again
    assert json.loads(call(port, "GET", "/state")[1])["restarts"] == 1


def uptime_rate(sim, seconds):
    """Device seconds per real second, measured over the API."""
    wait_status(sim, lambda s: s["device"]["uptime_s"] > 0)
    t0, u0 = time.monotonic(), sim.get("/api/status")[2]["device"]["uptime_s"]
    time.sleep(seconds)
    t1, u1 = time.monotonic(), sim.get("/api/status")[2]["device"]["uptime_s"]
    return (u1 - u0) / (t1 - t0)


def test_every_clock_speed_is_taken_by_the_device(sim):
    port = panel_port(sim)
    code, ans = call(port, "POST", "/action", {"name": "speed", "speed": 7})
    assert code == 422 and "speed must be one of 1, 10, 60, 300, 900" in json.loads(ans)["error"]
    speeds = json.loads(call(port, "GET", "/state")[1])["speeds"]
    assert speeds == [1, 10, 60, 300, 900]
    for speed in (1, 900, 300, 10, 60):
        n = sim.ready_count()
        assert act(sim, "speed", speed=speed) == "clock x%d: the device restarts to take it" % speed
        sim.wait_ready(40, after=n)
        assert json.loads(call(port, "GET", "/state")[1])["speed"] == speed
        rate = uptime_rate(sim, 3 if speed == 1 else 2)
        # the uptime counts whole seconds: at x1 over 3 s that is 2..4
        lo, hi = (0.6, 1.4) if speed == 1 else (0.7 * speed, 1.3 * speed)
        assert lo <= rate <= hi, (speed, rate)


def test_the_panel_page_drives_the_device_and_the_fault_shows_live(tmp_path):
    """In chromium: the panel's own page (sim/panel.html + panel.js) beside the device's
    status page; a click there, the fault here, pushed over the live stream."""
    from browser_util import launch, login, page_errors, require_browser, wait_js

    require_browser()
    if not have_sim():
        pytest.skip("the simulator is not available")
    from playwright.sync_api import sync_playwright
    from simfixture import start_sim

    sim = start_sim(tmp_path, speed=300)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            dash, pan = ctx.new_page(), ctx.new_page()
            dash_errors, pan_errors = page_errors(dash), page_errors(pan)
            login(dash, sim.url, sim.password)
            wait_js(dash, "document.getElementById('llive').textContent === 'live'", timeout=15)
            wait_js(dash, "document.getElementById('csum').textContent.indexOf('Charging to ') === 0", timeout=20)
            pan.goto("http://127.0.0.1:%d/" % panel_port(sim))
            wait_js(pan, "/^Clock x300 · SOC \\d+\\.\\d % · .* · charger on · BMS link connected · device running$/"
                         ".test(document.getElementById('state').textContent)", timeout=10)
            assert pan.locator("#speeds button").all_text_contents() == ["×1", "×10", "×60", "×300", "×900"]
            polls = []
            dash.on("request", lambda r: polls.append(r.url) if "/api/status" in r.url else None)
            pan.click("text=Hot pack (60 °C)")
            wait_js(pan, "document.getElementById('did').textContent === 'Done: pack at 60 °C'")
            wait_js(pan, "document.getElementById('state').textContent.indexOf('60 °C · charger off') > 0", timeout=10)
            wait_js(dash, "document.getElementById('csum').textContent.indexOf('Stopped for safety: temperature 60.0') === 0",
                    timeout=10)
            assert dash.text_content("#relay") == "OFF"
            pan.click("text=Back to 25 °C")
            wait_js(dash, "document.getElementById('relay').textContent === 'ON'", timeout=20)
            pan.click("text=Dead charger")
            wait_js(pan, "document.getElementById('did').textContent === 'Done: charger gives no current'")
            # a dead charger shows when the relay next switches on: lose the link (the relay goes
            # off for want of data) and bring it back
            pan.click("text=Lose the link")
            wait_js(dash, "document.getElementById('link').textContent !== 'connected'", timeout=40)
            wait_js(pan, "document.getElementById('state').textContent.indexOf('BMS link down') > 0", timeout=10)
            pan.click("text=Link back")
            wait_js(dash, "document.getElementById('link').textContent === 'connected'", timeout=60)
            wait_js(dash, "document.getElementById('calarms').textContent.indexOf('Alarm: charger dead: ') === 0", timeout=40)
            assert dash.text_content("#llive") == "live" and polls == []  # pushed, never polled
            assert dash_errors == [] and pan_errors == []
            browser.close()
    finally:
        sim.stop()
