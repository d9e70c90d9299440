"""Browser tests: the web UI in headless chromium (Debian's) driven by Playwright.

Two backends: a small in-process mock of the API (browser_util.MockServer: exercises every page, error
paths and layout fast) and the real simulator via tests/host/simfixture.py (live data, persistence
across a restart, the relay). Missing chromium/playwright or simfixture skips with a reason."""
import json
import os
import time

import pytest

from browser_util import browser  # noqa: F401 (shared fixtures)
from browser_util import image_head, MockServer, have_sim, login, page_errors, series_pixels, wait_js, WebStack, ROOT, power_cycle, stop_device

pytestmark = pytest.mark.browser
PHONE = {"width": 375, "height": 740}
SIM_MISSING = ("SIM BROWSER TESTS SKIPPED: tests/host/simfixture.py, modules/smartbms/app.py or "
               "modules/smartbms/web.py is not in the tree yet")


@pytest.fixture
def mock():
    srv = MockServer()
    yield srv
    srv.stop()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(10000)
    yield pg
    ctx.close()


def soc_text(page):
    return page.text_content("#soc")


# --- against the mock API ----------------------------------------------------

def test_unauthenticated_page_goes_to_login_and_wrong_password_is_refused(page, mock):
    errors = page_errors(page)
    page.goto(mock.url + "/")
    page.wait_for_url("**/login")
    page.wait_for_selector("#login", state="visible")
    assert page.is_visible("#login") and not page.is_visible("#setup")
    page.fill("#pw", "not-the-password")
    page.click("#login button")
    wait_js(page, "document.getElementById('lerr').textContent.length > 0")
    assert page.text_content("#lerr") == "Wrong password"
    assert page.url.endswith("/login")
    assert errors == []


def test_dashboard_shows_live_values_cells_and_chart(page, mock):
    errors = page_errors(page)
    login(page, mock.url, mock.password)
    first = soc_text(page)
    assert 0 <= float(first) <= 100
    wait_js(page, "(v) => document.getElementById('soc').textContent !== v", arg=first, timeout=8)
    st = mock.dev.status()
    assert page.text_content("#relay") == "ON"
    assert page.text_content("#csum") == "Charging"  # the mock sends no summary: the state in words
    assert page.text_content("#flow").startswith("Charging ")
    assert page.text_content("#link") == "connected"
    assert page.text_content("#lerrs") == "19 of 20 polls ok, errors: 1, last error: timeout"
    assert page.locator("#cells .cell").count() == len(st["bms"]["cells"])
    assert "spread" in page.text_content("#cellsum") and " V" in page.text_content("#cellsum")
    assert page.text_content("#power").endswith(" W in")
    assert "21.5" in page.text_content("#temps")
    assert page.text_content("#ver") == "1.2.3"
    assert page.text_content("#heap").startswith("79 KB free (of a 96 KB heap")  # a figure with its context
    wait_js(page, "document.getElementById('chartnote').textContent.indexOf('one point every 1 min') >= 0")
    for var in ("--soc", "--volt", "--amp"):
        assert series_pixels(page, var) > 800, var
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    page.screenshot(path=os.path.join(ROOT, "build", "dashboard-mock.png"), full_page=True)
    # with no history the lanes are drawn empty: the check above does measure the series
    mock.dev.history = lambda: {"interval_s": 60, "start_s": None, "count": 0, "soc": [], "voltage": [], "current": []}
    page.reload()
    wait_js(page, "document.getElementById('chartnote').textContent.indexOf('Collecting') === 0")
    assert series_pixels(page, "--soc") < 300
    assert errors == []


def test_manual_override_and_back_to_auto(page, mock):
    login(page, mock.url, mock.password)
    page.select_option("#omode", "off")
    page.fill("#omin", "30")
    page.click("#ovr button")
    wait_js(page, "document.getElementById('relay').textContent === 'OFF'")
    assert mock.dev.override == {"mode": "off", "remaining_min": 30}
    assert page.text_content("#cst") == "Manual override (override)"
    assert page.text_content("#covr") == "charger off for 30 min more"
    page.fill("#omin", "0")
    page.click("#ovr button")
    assert page.text_content("#oerr") == "Minutes must be 1..1440"
    assert mock.dev.override["remaining_min"] == 30
    assert not page.is_visible("#treset")  # only during a timeout hold
    page.click("#oauto")
    wait_js(page, "document.getElementById('relay').textContent === 'ON'")
    assert mock.dev.override == {"mode": "auto", "remaining_min": None}
    assert page.text_content("#covr") == "auto"


def test_settings_form_validates_in_page_and_shows_server_errors(page, mock):
    login(page, mock.url, mock.password)
    page.click("a[href='#settings']")
    page.wait_for_selector("#s_max_soc")
    assert page.input_value("#s_max_soc") == "100"
    assert page.input_value("#s_bms_protocol") == "auto"
    assert page.is_checked("#s_relay_active_low")
    # range rule
    page.fill("#s_max_soc", "120")
    assert page.text_content("#e_max_soc") == "must be at most 100"
    page.click("#sform button[type=submit]")
    assert page.text_content("#sgerr") == "Fix: Stop charging at"
    # cross-field rule, shown next to its field
    page.fill("#s_max_soc", "90")
    page.fill("#s_min_soc", "88")
    assert "5 below" in page.text_content("#e_min_soc")
    page.click("#g_safety summary")  # collapsed at first
    page.fill("#s_stale_s", "8")
    assert page.text_content("#e_stale_s") == "must be at least 10"
    page.fill("#s_stale_s", "30")
    page.fill("#s_min_soc", "70")
    assert page.text_content("#e_min_soc") == ""
    before = dict(mock.dev.settings)
    page.click("#sform button[type=submit]")
    wait_js(page, "document.getElementById('smsg').textContent === 'Saved.'")
    assert mock.dev.settings == dict(before, max_soc=90, min_soc=70)
    # a server-side rejection lands next to the field it names, and nothing is claimed saved
    page.route("**/api/settings", lambda route: route.fulfill(
        status=422, content_type="application/json",
        body=json.dumps({"error": "relay pin is busy", "field": "hostname"}))
        if route.request.method == "PUT" else route.continue_())
    page.click("#g_network summary")  # collapsed at first
    page.fill("#s_hostname", "garage-bms")
    page.click("#sform button[type=submit]")
    wait_js(page, "document.getElementById('e_hostname').textContent === 'relay pin is busy'")
    assert "Not saved" in page.text_content("#sgerr")
    assert mock.dev.settings["hostname"] == "smartbms"


def test_first_time_setup_sets_password_and_logs_in(page):
    srv = MockServer(password=None)
    try:
        page.goto(srv.url + "/login")
        page.wait_for_selector("#setup", state="visible")
        assert not page.is_visible("#login")
        page.fill("#np", "short")
        page.fill("#np2", "short")
        page.click("#setup button")
        assert page.text_content("#serr") == "At least 8 characters"
        page.fill("#np", "long-enough-1")
        page.fill("#np2", "long-enough-2")
        page.click("#setup button")
        assert page.text_content("#serr") == "The passwords differ"
        assert srv.dev.password is None
        page.fill("#np2", "long-enough-1")
        page.click("#setup button")
        page.wait_for_url(srv.url + "/")
        assert srv.dev.password == "long-enough-1"
        wait_js(page, "document.getElementById('soc').textContent !== '–'")
    finally:
        srv.stop()


def test_wifi_bms_log_and_firmware_pages(page, mock):
    login(page, mock.url, mock.password)
    page.click("a[href='#wifi']")
    page.click("#wscan")
    page.wait_for_selector("#wlist li")
    assert page.locator("#wlist li").count() == 2
    assert page.locator("#wlist li").first.text_content().startswith("simnet")  # strongest first
    page.locator("#wlist li", has_text="simnet").locator("button").click()
    assert page.input_value("#wssid") == "simnet"
    page.fill("#wpw", "short")
    page.click("#wform button")
    assert "8..63" in page.text_content("#werr") and mock.dev.wifi is None
    page.fill("#wpw", "password123")
    warned = []
    page.once("dialog", lambda d: (warned.append(d.message), d.accept()))
    page.click("#wform button")
    wait_js(page, "document.getElementById('wmsg').textContent.length > 0")
    assert "loses the device" in warned[0]  # switching networks drops this page: said before
    assert mock.dev.wifi == {"ssid": "simnet", "password": "password123"}

    page.click("a[href='#bms']")
    page.click("#bscan")
    page.wait_for_selector("#blist li button")
    page.click("#blist li button")
    wait_js(page, "document.getElementById('bmsg').textContent.indexOf('Using') === 0")
    assert mock.dev.settings["bms_mac"] == "A4:C1:38:00:11:22"
    assert mock.dev.settings["bms_protocol"] == "jbd"

    page.click("a[href='#log']")
    page.wait_for_selector("#events li")
    texts = page.locator("#events li").all_text_contents()
    assert [t.split()[-1] for t in texts] == ["3", "2", "1"]  # newest first

    page.click("a[href='#fw']")
    assert page.text_content("#fprev") == "1.2.2" and page.text_content("#fslot") == "ota_0"
    page.set_input_files("#ffile", files=[{"name": "fw.bin", "mimeType": "application/octet-stream",
                                           "buffer": b"\x00" * 70000}])
    page.click("#fup button")
    wait_js(page, "document.getElementById('ferr').textContent.length > 0")
    # refused in the browser, by content: nothing sent, and it says nothing changed
    assert "not a firmware image" in page.text_content("#ferr")
    assert "Nothing was changed: the device keeps running 1.2.3." in page.text_content("#ferr")
    assert mock.dev.uploads == []
    image = image_head("9.9.9")
    page.set_input_files("#ffile", files=[{"name": "fw.bin", "mimeType": "application/octet-stream",
                                           "buffer": image}])
    page.click("#fup button")
    wait_js(page, "document.getElementById('fmsg').textContent.length > 0")
    assert "9.9.9" in page.text_content("#fmsg")
    assert page.eval_on_selector("#fprog", "e => e.value") == 100
    assert mock.dev.uploads[-1] == ("application/octet-stream", image)
    page.fill("#uurl", "http://192.0.2.1/fw.bin")
    page.fill("#usha", "abc")
    page.click("#furl button")
    assert page.text_content("#uerr") == "SHA-256 must be 64 hex digits"
    assert page.text_content("#umsg") == ""
    page.fill("#usha", "AB" * 32)
    page.click("#furl button")
    wait_js(page, "document.getElementById('umsg').textContent.indexOf('Installed') === 0")
    assert ("/api/ota/url", {"url": "http://192.0.2.1/fw.bin", "sha256": "ab" * 32}) in mock.dev.posts
    # reboot asks first: dismissing sends nothing, accepting sends the request
    page.once("dialog", lambda d: d.dismiss())
    page.click("#reboot")
    page.wait_for_timeout(300)
    assert not [p for p in mock.dev.posts if p[0] == "/api/reboot"]
    page.once("dialog", lambda d: d.accept())
    page.click("#reboot")
    wait_js(page, "document.getElementById('rmsg').textContent === 'Rebooting…'")
    assert [p for p in mock.dev.posts if p[0] == "/api/reboot"] == [("/api/reboot", {})]


def test_phone_viewport_has_no_horizontal_scroll(browser, mock):
    ctx = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = ctx.new_page()
    try:
        login(page, mock.url, mock.password)
        for tab in ("dash", "settings", "wifi", "bms", "fw", "log"):
            page.evaluate("(t) => { location.hash = t; }", tab)
            page.wait_for_timeout(200)
            over = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert over <= 0, "tab %s scrolls sideways by %d px" % (tab, over)
        page.evaluate("location.hash = 'dash'")
        page.wait_for_timeout(300)
        page.screenshot(path=os.path.join(ROOT, "build", "dashboard-phone.png"), full_page=True)
    finally:
        ctx.close()


# --- against the real simulator ----------------------------------------------

@pytest.fixture(params=["webstack", pytest.param("sim", marks=pytest.mark.sim)])
def sim(request, tmp_path):
    """The real web layer: `webstack` (smartbms.web + the real assets on the unix port, synthetic
    battery) always; `sim` (the whole firmware in the simulator) when it is in the tree."""
    if request.param == "webstack":
        s = WebStack(tmp_path / "state")
    else:
        if not have_sim():
            pytest.skip(SIM_MISSING)
        from simfixture import start_sim
        s = start_sim(tmp_path)
    yield s
    stop_device(s)


def _status(sim):
    code, _, body = sim.request("GET", "/api/status")
    assert code == 200, body
    return body if isinstance(body, dict) else json.loads(body)


def test_sim_login_live_values_chart_and_override(browser, sim):
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(15000)
    errors = page_errors(page)
    try:
        page.goto(sim.url + "/")
        page.wait_for_url("**/login")
        page.wait_for_selector("#login", state="visible")
        page.fill("#pw", sim.password + "-wrong")
        page.click("#login button")
        wait_js(page, "document.getElementById('lerr').textContent.length > 0")
        assert page.url.endswith("/login")
        login(page, sim.url, sim.password)
        # live: some measured value changes between polls (the sim runs faster than real time)
        read = "['soc','volt','amp'].map(id => document.getElementById(id).textContent).join('|')"
        first = page.evaluate(read)
        wait_js(page, "(v) => %s !== v" % read, arg=first, timeout=30)
        assert page.text_content("#link") == "connected"
        assert page.locator("#cells .cell").count() == len(_status(sim)["bms"]["cells"])
        # the chart: wait for history to carry samples (one a simulated minute)
        # the UI fetches history once a minute; at x60 a sample lands every real second, so reload
        # until the page's own fetch returns a few
        def samples():
            return page.evaluate("SB.chartPoints()")

        for _ in range(10):
            if samples() >= 10:
                break
            time.sleep(3)
            page.reload()
            wait_js(page, "document.getElementById('ver').textContent !== '–'")
            page.wait_for_timeout(500)
        assert samples() >= 10, page.text_content("#chartnote")
        # an empty chart shows < 100 such pixels (its legend); a few minutes of line add more
        assert series_pixels(page, "--soc") > 150 and series_pixels(page, "--volt") > 150
        os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
        page.screenshot(path=os.path.join(ROOT, "build", "dashboard.png"), full_page=True)
        # manual override off, then back to auto (the sim starts with a charging battery)
        wait_js(page, "document.getElementById('relay').textContent === 'ON'", timeout=20)
        page.select_option("#omode", "off")
        page.fill("#omin", "20")
        page.click("#ovr button")
        wait_js(page, "document.getElementById('relay').textContent === 'OFF'")
        st = _status(sim)["charger"]
        assert st["relay"] is False and st["override"]["mode"] == "off"
        page.click("#oauto")
        wait_js(page, "document.getElementById('covr').textContent === 'auto'")
        assert _status(sim)["charger"]["override"]["mode"] == "auto"
        assert errors == []
    finally:
        ctx.close()


@pytest.mark.sim
def test_sim_firmware_upload_shows_the_servers_verdict(browser, tmp_path):
    if not have_sim():
        pytest.skip(SIM_MISSING)
    from simfixture import start_sim
    sim = start_sim(tmp_path)  # the sim has the simulated flash behind POST /api/ota
    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(15000)
    try:
        login(page, sim.url, sim.password)
        page.click("a[href='#fw']")
        before = _status(sim)["device"]["ota"]
        assert page.text_content("#frun") == before["running_version"]
        page.set_input_files("#ffile", files=[{"name": "junk.bin", "mimeType": "application/octet-stream",
                                               "buffer": b"\x90" + os.urandom(70000)}])
        page.click("#fup button")
        wait_js(page, "document.getElementById('ferr').textContent.length > 0", timeout=20)
        assert "it does not start like an ESP32 app image" in page.text_content("#ferr"), sim.output()[-3000:]
        assert "Nothing was changed" in page.text_content("#ferr")
        assert page.text_content("#fmsg") == ""
        assert _status(sim)["device"]["ota"]["running"] == before["running"]
    finally:
        ctx.close()
        stop_device(sim)


def test_sim_setting_survives_restart(browser, sim):
    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = ctx.new_page()
    page.set_default_timeout(15000)
    try:
        login(page, sim.url, sim.password)
        for tab in ("dash", "settings", "wifi", "bms", "fw", "log"):
            page.evaluate("(t) => { location.hash = t; }", tab)
            page.wait_for_timeout(300)
            over = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert over <= 0, "tab %s scrolls sideways by %d px" % (tab, over)
        page.evaluate("location.hash = 'settings'")
        page.wait_for_selector("#s_max_soc")
        new = "95" if page.input_value("#s_max_soc") != "95" else "90"
        page.fill("#s_max_soc", new)
        page.click("#sform button[type=submit]")
        wait_js(page, "document.getElementById('smsg').textContent === 'Saved.'")
        power_cycle(sim)
        login(page, sim.url, sim.password)
        page.evaluate("location.hash = 'settings'")
        page.reload()
        page.wait_for_selector("#s_max_soc")
        wait_js(page, "(v) => document.getElementById('s_max_soc').value === v", arg=new)
    finally:
        ctx.close()


@pytest.mark.parametrize("backend", ["webstack", pytest.param("sim", marks=pytest.mark.sim)])
def test_sim_first_time_setup(browser, tmp_path, backend):
    if backend == "webstack":
        s = WebStack(tmp_path / "state", password=None)
    else:
        if not have_sim():
            pytest.skip(SIM_MISSING)
        from simfixture import start_sim
        s = start_sim(tmp_path, password=None)
    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(15000)
    try:
        code, _, auth = s.request("GET", "/api/auth", auth=False)
        auth = auth if isinstance(auth, dict) else json.loads(auth)
        assert auth.get("setup_required"), auth
        page.goto(s.url + "/")
        page.wait_for_url("**/login")
        page.wait_for_selector("#setup", state="visible")
        page.fill("#np", "first-password")
        page.fill("#np2", "first-password")
        page.click("#setup button")
        page.wait_for_url(s.url + "/")
        wait_js(page, "document.getElementById('soc').textContent !== '–'")
    finally:
        ctx.close()
        stop_device(s)
