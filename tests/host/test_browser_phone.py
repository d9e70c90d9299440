"""Issue 15 on a phone (390×844, touch) in headless chromium, mostly against the real simulator:
a status in plain words that follows a settings change and counts down, a fault injected from
the sim panel arriving live, the chart's time axis and tap values, settings errors at the
field, an upload refused by content with "nothing was changed", the WiFi state live with a
warning, a live event log on the device clock, a BMS scan that lists the connected pack.
Also screenshots of every tab, phone and desktop, light and dark, in build/screenshots/."""
import http.client
import json
import os
import re
import time

import pytest

from browser_util import PHONE, browser, phone, sim  # noqa: F401 (shared fixtures)
from browser_util import (ROOT, MockServer, image_head, login, page_errors,
                          wait_js)

pytestmark = pytest.mark.browser
DESKTOP = dict(viewport={"width": 1280, "height": 900})
SHOTS = os.path.join(ROOT, "build", "screenshots")
TABS = ("dash", "settings", "wifi", "bms", "fw", "log")


def text(page, sel):
    return page.text_content(sel) or ""


def panel(sim, name, **kw):
    line = sim.wait_output("smartbms sim panel: ")
    port = int(line.split("http://127.0.0.1:", 1)[1].split()[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/action", body=json.dumps(dict(kw, name=name)), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200, r.read()
        return json.loads(r.read())
    finally:
        conn.close()


def in_view(page, sel):
    return page.evaluate("""(s) => { const r = document.querySelector(s).getBoundingClientRect();
        return r.top >= 0 && r.bottom <= window.innerHeight && r.height > 0; }""", sel)


def test_status_in_plain_words_live_fault_from_the_panel_and_the_chart(phone, sim):
    errors = page_errors(phone)
    login(phone, sim.url, sim.password)
    wait_js(phone, "document.getElementById('llive').textContent === 'live'", timeout=15)  # pushed, not polled
    wait_js(phone, "document.getElementById('csum').textContent.indexOf('Charging to ') === 0", timeout=20)
    assert re.match(r"^(Charging|Discharging) \d+\.\d A|^Idle", text(phone, "#flow")), text(phone, "#flow")
    assert text(phone, "#cnext").startswith("Next: charges to 100 %")
    assert not phone.is_visible("#creason")  # the technical detail is one tap away
    phone.click("#cdet summary")
    assert phone.is_visible("#creason") and text(phone, "#creason")
    # a fault injected from the sim panel arrives without a reload, in words, over the live
    # stream: no /api/status poll (the fallback) goes out meanwhile and the page stays "live"
    polls = []
    phone.on("request", lambda r: polls.append(r.url) if "/api/status" in r.url else None)
    panel(sim, "cold")
    wait_js(phone, "document.getElementById('csum').textContent.indexOf('Stopped for safety: temperature -5') === 0",
            timeout=20)
    assert polls == [] and text(phone, "#llive") == "live", polls
    assert text(phone, "#relay") == "OFF" and text(phone, "#cnext").startswith("Next: resumes when every temperature")
    panel(sim, "mild")
    # the chart: tap it and read the values at that time of day
    wait_js(phone, "SB.chartPoints() >= 2", timeout=30)
    ticks = phone.evaluate("SB.chartTicks()")  # a time-of-day axis, not "-9.2 h ... now"
    assert len(ticks) >= 2 and all(re.match(r"^\d\d:\d\d$", x) for x in ticks), ticks
    box = phone.locator("#chart").bounding_box()
    phone.tap("#chart", position={"x": box["width"] - 30, "y": 150})
    wait_js(phone, "/^\\d\\d:\\d\\d: SOC \\d+\\.\\d %/.test(document.getElementById('chartval').textContent)")
    assert "charger " in text(phone, "#chartval")
    assert errors == []


def test_override_counts_down_next_follows_a_setting_and_back_to_auto_logs_plainly(phone, sim):
    login(phone, sim.url, sim.password)
    phone.select_option("#omode", "off")
    phone.fill("#omin", "5")
    phone.click("#ovr button")
    wait_js(phone, "document.getElementById('csum').textContent === 'Manual: charger off for 5 min more'")
    assert text(phone, "#cnext") == "Next: automatic control resumes in 5 min"
    # x60: a device minute a second
    wait_js(phone, "/for [1-3] min more/.test(document.getElementById('csum').textContent)", timeout=10)
    assert re.search(r"resumes in [1-3] min", text(phone, "#cnext"))
    phone.click("#oauto")
    wait_js(phone, "document.getElementById('csum').textContent.indexOf('Manual') < 0")
    code, _, ev = sim.get("/api/events?limit=20")
    msgs = [e["msg"] for e in ev["events"]]
    assert "override ended: automatic control" in msgs and not [m for m in msgs if "None" in m]
    # "next" is derived from the settings at every answer: a change shows at once
    wait_js(phone, "document.getElementById('cnext').textContent.indexOf('balances for up to 30 min') > 0", timeout=20)
    assert sim.request("PUT", "/api/settings", json={"eoc_max_min": 45})[0] == 200
    wait_js(phone, "document.getElementById('cnext').textContent.indexOf('balances for up to 45 min') > 0")
    # a timeout reset with no timeout: refused in words, nothing logged
    code, _, body = sim.request("POST", "/api/timeout/reset", json={})
    assert code == 409 and "no charge timeout is active" in body["error"]
    assert not phone.is_visible("#treset")
    assert not [e for e in sim.get("/api/events?limit=50")[2]["events"] if "timeout reset" in e["msg"]]


def test_settings_sections_sticky_save_and_errors_at_the_field(phone, sim):
    login(phone, sim.url, sim.password)
    phone.click("a[href='#settings']")
    phone.wait_for_selector("#s_max_soc")
    open_ = phone.evaluate("[...document.querySelectorAll('#sfields details')].map(d => [d.id, d.open])")
    assert open_[:6] == [["g_charging", True], ["g_safety", False], ["g_bms", False], ["g_network", False],
                         ["g_advanced", False], ["g_hardware", False]]
    assert not phone.is_visible("#s_relay_pin")  # hardware: collapsed
    assert "0.05 of 100 Ah = 5 A" in text(phone, "#f_tail_current_c")  # one line of help per field
    assert in_view(phone, ".savebar button[type=submit]")  # Save in reach without scrolling
    phone.fill("#s_min_soc", "98")  # breaks "at least 5 below the stop level"
    phone.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert in_view(phone, ".savebar button[type=submit]")
    phone.click(".savebar button[type=submit]")
    wait_js(phone, "document.activeElement && document.activeElement.id === 's_min_soc'")
    assert in_view(phone, "#s_min_soc") and "5 below" in text(phone, "#e_min_soc")
    assert text(phone, "#sgerr") == "Fix: Charge again below"
    # an error in a collapsed section opens it
    phone.fill("#s_min_soc", "70")
    phone.click("#g_network summary")
    phone.fill("#s_hostname", "-bad-")
    phone.click("#g_network summary")  # fold it again
    phone.click(".savebar button[type=submit]")
    wait_js(phone, "document.activeElement && document.activeElement.id === 's_hostname'")
    assert phone.evaluate("document.getElementById('g_network').open") and in_view(phone, "#s_hostname")
    phone.fill("#s_hostname", "garage")
    phone.click(".savebar button[type=submit]")
    wait_js(phone, "document.getElementById('smsg').textContent === 'Saved.'")
    assert sim.get("/api/settings")[2]["min_soc"] == 70


def test_new_setting_groups_mqtt_state_and_a_test_alert(phone):
    """Groups a newer firmware adds (mqtt, alerts) render as collapsed sections named after
    them; the MQTT section shows status.mqtt; the alerts one has a working test button."""
    srv = MockServer()
    try:
        from smartbms import settings as settings_mod
        schema = settings_mod.schema_public()
        schema["fields"]["mqtt_host"] = {"type": "str", "default": "", "group": "mqtt", "max_len": 64,
                                         "help": "The broker's name or address."}
        schema["fields"]["alert_url"] = {"type": "str", "default": "", "group": "alerts", "max_len": 128}
        status = srv.dev.status

        def with_mqtt():
            s = status()
            s["mqtt"] = {"enabled": True, "state": "connected", "broker": "mqtt.lan:1883", "error": None}
            return s
        srv.dev.status = with_mqtt
        phone.route("**/api/settings/schema", lambda r: r.fulfill(status=200, content_type="application/json",
                                                                   body=json.dumps(schema)))
        phone.route("**/api/alerts/test", lambda r: r.fulfill(status=200, content_type="application/json",
                                                               body=json.dumps({"sent": True})))
        login(phone, srv.url, srv.password)
        phone.click("a[href='#settings']")
        phone.wait_for_selector("#g_mqtt")
        assert text(phone, "#g_mqtt summary") == "MQTT" and text(phone, "#g_alerts summary") == "Alerts"
        assert not phone.evaluate("document.getElementById('g_mqtt').open")
        phone.click("#g_mqtt summary")
        wait_js(phone, "document.getElementById('mqttstate').textContent === 'MQTT: connected · mqtt.lan:1883'")
        assert "The broker's name or address." in text(phone, "#f_mqtt_host")
        phone.click("#g_alerts summary")
        phone.click("#atest")
        wait_js(phone, "document.getElementById('amsg').textContent.indexOf('Sent') === 0")
        phone.unroute("**/api/alerts/test")
        phone.route("**/api/alerts/test", lambda r: r.fulfill(status=502, content_type="application/json",
                                                               body=json.dumps({"error": "alert_url unreachable"})))
        phone.click("#atest")
        wait_js(phone, "document.getElementById('amsg').textContent === 'Not sent: alert_url unreachable'")
        # no /api/live on this server: the page polls and says so
        assert text(phone, "#llive") == "refreshes every 10 s"
    finally:
        srv.stop()


def test_upload_of_a_wrong_file_is_refused_and_nothing_changes(phone, sim):
    login(phone, sim.url, sim.password)
    version = sim.get("/api/status")[2]["device"]["version"]
    phone.click("a[href='#fw']")
    with open("/etc/hostname", "rb") as f:
        hostname = f.read() or b"myhost\n"
    # /etc/hostname renamed to .bin: refused by its content, in the browser, nothing sent
    phone.set_input_files("#ffile", files=[{"name": "firmware.bin", "mimeType": "application/octet-stream",
                                            "buffer": hostname * (400 // len(hostname) + 1)}])
    wait_js(phone, "document.getElementById('ferr').textContent.length > 0")
    assert "not a firmware image: it is a text file" in text(phone, "#ferr")
    assert text(phone, "#ferr").endswith("Nothing was changed: the device keeps running %s." % version)
    # another chip's image, caught at the header
    phone.set_input_files("#ffile", files=[{"name": "s3.bin", "mimeType": "application/octet-stream",
                                            "buffer": image_head("1.0.0", chip=9)}])
    wait_js(phone, "document.getElementById('ferr').textContent.indexOf('another chip (ESP32-S3)') > 0")
    # a good header over a broken body goes to the device, which refuses it: said, bar gone
    phone.set_input_files("#ffile", files=[{"name": "fw.bin", "mimeType": "application/octet-stream",
                                            "buffer": image_head("9.9.9")}])
    wait_js(phone, "document.getElementById('finfo').textContent.indexOf('smartbms 9.9.9') === 0")
    watch_bar(phone)
    phone.click("#fup button")
    wait_js(phone, "document.getElementById('ferr').textContent.indexOf('The device refused the image: ') === 0",
            timeout=30)
    assert "Nothing was changed: the device keeps running %s." % version in text(phone, "#ferr")
    assert not phone.is_visible("#fprog")
    # the bar moved while sending, never past 90 %: the device had not said yes
    bar = bar_until_answer(phone)
    assert bar[-1][0] == "answer" and bar[-1][1].startswith("The device refused the image: "), bar
    values = [v for k, v in bar if k == "bar"]
    assert values and max(values) <= 90 and values[-1] > 0, bar
    st = sim.get("/api/status")[2]["device"]
    assert st["version"] == version and not st["ota"]["pending_verify"]


def watch_bar(page):
    """Record, in order, every value the upload bar takes and the device's answer (the first
    text in #fmsg or #ferr) as they happen (a MutationObserver: no sample is missed)."""
    page.evaluate("""() => { const log = window.barLog = [];
        new MutationObserver((rs) => rs.forEach((r) => {
            if (r.target.id === 'fprog') log.push(['bar', Number(r.target.getAttribute('value'))]);
            else if (r.target.textContent) log.push(['answer', r.target.textContent]);
        })).observe(document.getElementById('fprog'), {attributes: true, attributeFilter: ['value']});
        for (const id of ['fmsg', 'ferr']) new MutationObserver((rs) => rs.forEach((r) => {
            if (r.target.textContent) log.push(['answer', r.target.textContent]); }))
            .observe(document.getElementById(id), {childList: true}); }""")


def bar_until_answer(page):
    log = page.evaluate("window.barLog")
    end = next((i for i, (k, _) in enumerate(log) if k == "answer"), len(log) - 1)
    return log[:end + 1]


def test_the_upload_bar_waits_at_90_percent_for_the_device(phone):
    """Sending is 90 % of the bar; the rest is the device's verdict: a device that takes its
    time to check the image leaves the bar at 90 % until it answers."""
    srv = MockServer()
    srv.dev.ota_delay = 2.0  # the device checks the image for 2 s before it answers
    try:
        login(phone, srv.url, srv.password)
        phone.click("a[href='#fw']")
        phone.set_input_files("#ffile", files=[{"name": "fw.bin", "mimeType": "application/octet-stream",
                                                "buffer": image_head("9.9.9")}])
        wait_js(phone, "document.getElementById('finfo').textContent.indexOf('smartbms 9.9.9') === 0")
        watch_bar(phone)
        phone.click("#fup button")
        wait_js(phone, "document.getElementById('fstep').textContent === 'Sent; the device is checking the image…'")
        # all sent, no answer yet: 90 %, and it stays there
        for _ in range(5):
            assert phone.evaluate("document.getElementById('fprog').value") == 90
            assert text(phone, "#fmsg") == "" and text(phone, "#ferr") == ""
            phone.wait_for_timeout(200)
        wait_js(phone, "document.getElementById('fmsg').textContent.indexOf('Installed 9.9.9 in ota_1') === 0")
        bar = bar_until_answer(phone)
        values = [v for k, v in bar if k == "bar"]
        # every value before the answer <= 90; 100 only with it (the same handler sets both)
        assert bar[-1][0] == "answer" and values[-1] == 100 and max(values[:-1]) == 90, bar
        assert phone.evaluate("document.getElementById('fprog').value") == 100
        assert len(srv.dev.uploads) == 1
    finally:
        srv.stop()


def test_wifi_state_is_live_and_switching_warns(phone, sim):
    login(phone, sim.url, sim.password)
    phone.click("a[href='#wifi']")
    wait_js(phone, "document.getElementById('wcur').textContent.indexOf('Connected to simnet') === 0")
    assert "drops this page" in text(phone, "#wifi")
    phone.fill("#wssid", "nowhere")
    phone.fill("#wpw", "password123")
    said = []
    phone.once("dialog", lambda d: (said.append(d.message), d.dismiss()))
    phone.click("#wform button")
    phone.wait_for_timeout(300)
    assert said and "loses the device" in said[0]
    assert sim.get("/api/settings")[2]["wifi_ssid"] == "simnet"  # dismissed: nothing sent
    phone.once("dialog", lambda d: d.accept())
    phone.click("#wform button")
    # the page reaches the sim over loopback whatever its WiFi does, so the state follows live:
    # within a status push or two (it took 1.5 s here), not the 12 s the tab once lagged
    wait_js(phone, "document.getElementById('wcur').textContent.indexOf('Connected to simnet') !== 0", timeout=5)
    assert re.match(r"^(Not connected, trying nowhere|Access point)", text(phone, "#wcur")), text(phone, "#wcur")


def test_event_log_is_live_readable_and_on_the_device_clock(phone, sim):
    login(phone, sim.url, sim.password)
    phone.click("a[href='#log']")
    phone.wait_for_selector("#events li .em")
    wait_js(phone, "document.getElementById('llive').textContent === 'live'", timeout=15)
    n = phone.locator("#events li").count()
    assert sim.request("PUT", "/api/settings", json={"min_soc": 70})[0] == 200
    sim.request("POST", "/api/relay", json={"mode": "off", "minutes": 10})
    wait_js(phone, "(n) => document.querySelectorAll('#events li').length > n", arg=n, timeout=10)  # no refresh
    first = phone.locator("#events li").first
    assert "manual off for 10 min" in first.text_content()
    # the time sits above the message, never beside it in a squeezed column
    rects = phone.evaluate("""() => { const li = document.querySelector('#events li');
        const h = li.querySelector('.eh').getBoundingClientRect(), m = li.querySelector('.em').getBoundingClientRect();
        return [h.bottom, m.top, m.left, li.getBoundingClientRect().left]; }""")
    assert rects[1] >= rects[0] - 1 and abs(rects[2] - rects[3]) < 2
    # times on the device clock, as rendered: the boot event reads the dashboard's uptime ago and
    # the time of day that long before now (not the wall clock: at x60 the boot was seconds ago
    # in real time, minutes on the device)
    boot = [e for e in sim.get("/api/events?limit=200")[2]["events"] if e["msg"] == "smartbms started"][-1]
    shown, up, tz = phone.evaluate("""(seq) => { const i = SB.events().findIndex(e => e.seq === seq);
        const li = document.querySelectorAll('#events li')[SB.events().length - 1 - i];
        return [li.querySelector('time').textContent, document.getElementById('up').textContent,
                new Date().getTimezoneOffset()]; }""", boot["seq"])
    now, uptime = time.time(), sim.get("/api/status")[2]["device"]["uptime_s"]
    m = re.match(r"^(\d\d:\d\d) · (\d+) min ago$", shown)
    assert m and re.match(r"^\d+ min$", up), (shown, up)
    ago = int(m.group(2))
    assert abs(ago - int(up.split()[0])) <= 1, (shown, up)  # the dashboard's uptime
    assert abs(ago * 60 - (uptime - boot["up_s"])) <= 180, (shown, uptime)  # the device's, by the API
    day = [time.strftime("%H:%M", time.gmtime(now - (uptime - boot["up_s"]) + d - tz * 60)) for d in range(-180, 181, 60)]
    assert m.group(1) in day, (shown, day)
    assert "settings" in text(phone, "#events")
    assert "\u00a0→\u00a0" in text(phone, "#events") or "->" not in text(phone, "#events")


def test_bms_scan_lists_the_connected_pack(phone, sim):
    login(phone, sim.url, sim.password)
    wait_js(phone, "document.getElementById('link').textContent === 'connected'", timeout=20)
    phone.click("a[href='#bms']")
    phone.click("#bscan")
    wait_js(phone, "document.getElementById('bmsg').textContent.indexOf('found') > 0 || "
                   "document.getElementById('berr').textContent", timeout=30)
    assert text(phone, "#berr") == ""
    assert "the connected pack does not advertise" in text(phone, "#bmsg")
    assert "connected now" in text(phone, "#blist")


def test_screenshots_of_every_tab_phone_and_desktop_light_and_dark(browser, sim):
    os.makedirs(SHOTS, exist_ok=True)
    sim.world("battery", temperature_c=-5)  # something worth showing: a fault and its texts
    for form, opts in (("phone", PHONE), ("desktop", DESKTOP)):
        for scheme in ("light", "dark"):
            ctx = browser.new_context(color_scheme=scheme, **opts)
            page = ctx.new_page()
            page.set_default_timeout(15000)
            errors = page_errors(page)
            page.on("response", lambda r: print("HTTP", r.status, r.url) if r.status >= 400 else None)
            try:
                login(page, sim.url, sim.password)
                wait_js(page, "SB.chartPoints() >= 2", timeout=30)
                # the scheme is the one rendered: a dark page on dark, a light one on light
                bg = page.evaluate("[document.body, document.querySelector('.card')].map(e => getComputedStyle(e).backgroundColor)")
                for c in bg:
                    r, g, b = (int(x) for x in re.findall(r"\d+", c)[:3])
                    luma = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
                    assert (luma < 0.2) if scheme == "dark" else (luma > 0.85), (form, scheme, bg)
                for tab in TABS:
                    page.evaluate("(t) => { location.hash = t; }", tab)
                    if tab == "settings":
                        wait_js(page, "document.getElementById('s_max_soc') || document.getElementById('sgerr').textContent")
                        assert page.locator("#s_max_soc").count() == 1, text(page, "#sgerr")
                    page.evaluate("window.scrollTo(0, 0)")
                    page.wait_for_timeout(400)
                    over = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                    assert over <= 0, "%s %s: tab %s scrolls sideways by %d px" % (form, scheme, tab, over)
                    page.screenshot(path=os.path.join(SHOTS, "%s-%s-%s.png" % (tab, form, scheme)), full_page=True)
                assert errors == []
            finally:
                ctx.close()
    assert len([f for f in os.listdir(SHOTS) if f.endswith(".png")]) >= 24
