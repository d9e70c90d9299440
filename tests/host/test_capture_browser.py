"""The BMS tab's capture section in headless chromium against the simulator: scan all devices,
pick the sim's unknown peer for a capture, see the refusal while the relay charges, run the
capture once the relay is overridden off, and download the file."""
import pytest

from browser_util import browser  # noqa: F401 (shared fixtures)
from browser_util import have_sim, login, page_errors, wait_js

pytestmark = pytest.mark.browser
UNKNOWN = "11:22:33:44:55:66"


def test_capture_section_runs_a_capture_and_downloads_the_file(browser, tmp_path):
    if not have_sim():
        pytest.skip("the simulator is not available")
    from simfixture import start_sim

    sim = start_sim(tmp_path, speed=60, bms="jbd")
    ctx = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    page.set_default_timeout(20000)
    errors = page_errors(page)
    try:
        sim.world("add_unknown_peer", mac=UNKNOWN, name="Mystery BMS")
        login(page, sim.url, sim.password)
        wait_js(page, "document.getElementById('relay').textContent === 'ON'", timeout=30)
        page.click("a[href='#bms']")
        wait_js(page, "document.getElementById('cstate').textContent === 'No capture yet.'")
        page.click("#bscanall")
        row = page.locator("#blist li", has_text="Mystery BMS")
        row.wait_for()
        assert row.locator("button").count() == 1  # no family: Capture only, no Use
        row.locator("button", has_text="Capture").click()
        assert page.input_value("#cmac") == UNKNOWN
        page.fill("#creq", "a5 01 02")
        page.fill("#cevery", "1")
        page.fill("#csecs", "5")
        page.click("#cstart")
        wait_js(page, "document.getElementById('cerr').textContent.indexOf('relay is on') >= 0")
        # what the refusal says to do: the relay override off (Status page), then again
        sim.request("POST", "/api/relay", json={"mode": "off", "minutes": 60})
        page.click("#cstart")
        wait_js(page, "document.getElementById('cstate').textContent.indexOf('Recording 11:22:33:44:55:66') === 0",
                timeout=20)
        assert "charging is off" in page.text_content("#cstate")
        assert page.is_disabled("#cstart") and not page.is_disabled("#cstop")
        wait_js(page, "document.getElementById('cstate').textContent.indexOf('Done: 5 s passed') === 0", timeout=30)
        assert page.is_visible("#cfile") and not page.is_disabled("#cstart")
        with page.expect_download() as dl:
            page.click("#cfile")
        path = dl.value.path()
        with open(path) as f:
            text = f.read()
        assert text.startswith("# smartbms BLE capture\n") and "name: Mystery BMS" in text
        assert " ffb1 notify a51ca5" in text and text.splitlines()[-1].startswith("# end: 5 s passed; ")
        assert errors == []
    finally:
        ctx.close()
        sim.stop()
