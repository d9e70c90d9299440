"""The web UI says when the device runs modules from its filesystem (`make deploy`) instead of the
image: the Firmware tab's line and the status banner, in headless chromium against the API mock."""
import pytest

from browser_util import MockServer, launch, login, require_browser, wait_js

pytestmark = pytest.mark.browser


@pytest.fixture
def page():
    require_browser()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = launch(p)
        pg = b.new_page()
        pg.set_default_timeout(10000)
        yield pg
        b.close()


def _serve(overrides):
    srv = MockServer()
    plain = srv.dev.status

    def status():
        d = plain()
        if overrides is not None:
            d["device"]["overrides"] = overrides
        return d

    srv.dev.status = status
    return srv


def test_firmware_tab_and_banner_name_the_overrides(page):
    srv = _serve({"modules": ["smartbms.web", "smartbms.charge.relay"],
                  "failed": ["smartbms.auth: ValueError: incompatible .mpy file"], "skipped": None})
    try:
        login(page, srv.url, srv.password)
        wait_js(page, "document.getElementById('banner').textContent.indexOf('from the filesystem') >= 0")
        assert "Running 2 module(s) from the filesystem, not the image" in page.text_content("#banner")
        page.click("a[href='#fw']")
        line = page.text_content("#fovr")
        assert line.startswith("smartbms.web, smartbms.charge.relay (an OTA does not replace them")
        assert "failed, the image's copy runs: smartbms.auth: ValueError" in line
    finally:
        srv.stop()


def test_firmware_tab_says_the_image_runs_as_built(page):
    srv = _serve({"modules": [], "failed": [], "skipped": None})
    try:
        login(page, srv.url, srv.password)
        page.click("a[href='#fw']")
        wait_js(page, "document.getElementById('fovr').textContent !== '–'")
        assert page.text_content("#fovr") == "none: the image runs as built"
        assert "filesystem" not in (page.text_content("#banner") or "")
    finally:
        srv.stop()
