"""Secrets on the settings page, on a phone against the real simulator: a stored alert token
shows as set (never its value) with a Clear button beside it; an empty field keeps it; Clear,
then Save, clears it (PUT null) and the API reports it unset; the value appears nowhere: not in
the page, its inputs, its state, the answers it got, nor the event log."""
import json

import pytest

from browser_util import browser, phone, sim  # noqa: F401 (shared fixtures)
from browser_util import login, page_errors, wait_js

pytestmark = pytest.mark.browser
TOKEN = "tk_9f3e7c1a-not-to-be-seen"


def settings(sim):
    status, _, body = sim.get("/api/settings")
    assert status == 200
    return body


def state(page, key):
    """What the page shows of a secret: (input value, placeholder, Clear shown?, its text)."""
    return page.evaluate("""(k) => { const i = document.getElementById('s_' + k), b = document.getElementById('c_' + k);
        return [i.value, i.placeholder, !b.hidden && b.offsetParent !== null, b.textContent]; }""", key)


def save(page):
    page.click(".savebar button[type=submit]")
    wait_js(page, "document.getElementById('smsg').textContent === 'Saved.'")


def test_a_stored_token_shows_as_set_clear_empties_it_and_nothing_reveals_it(phone, sim):
    errors = page_errors(phone)
    answers = []
    phone.on("response", lambda r: answers.append(r) if "/api/settings" in r.url else None)
    status, _, body = sim.request("PUT", "/api/settings", json={"alert_token": TOKEN})
    assert status == 200 and body["changed"] == ["alert_token"] and settings(sim)["alert_token_set"] is True

    login(phone, sim.url, sim.password)
    phone.click("a[href='#settings']")
    phone.wait_for_selector("#g_alerts")
    phone.click("#g_alerts summary")
    phone.click("#g_mqtt summary")
    value, placeholder, shown, label = state(phone, "alert_token")
    assert value == "" and placeholder.startswith("set") and shown and label == "Clear"
    assert phone.get_attribute("#c_alert_token", "aria-label") == "Clear Alert token"
    assert phone.get_attribute("#s_alert_token", "type") == "password"
    value, placeholder, shown, _ = state(phone, "mqtt_password")  # not set: nothing to clear
    assert value == "" and placeholder == "not set" and not shown
    # the button sits beside the field, and the section still fits the phone's width
    f, b = phone.locator("#s_alert_token").bounding_box(), phone.locator("#c_alert_token").bounding_box()
    assert b["x"] >= f["x"] + f["width"] and abs((b["y"] + b["height"] / 2) - (f["y"] + f["height"] / 2)) < 4
    assert phone.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0

    # an empty field keeps the token through a save of something else
    phone.fill("#s_max_soc", "95")
    save(phone)
    got = settings(sim)
    assert got["max_soc"] == 95 and got["alert_token_set"] is True
    assert state(phone, "alert_token")[1].startswith("set")

    # Clear is undone by Undo (and by Undo changes); only Save clears
    phone.click("#c_alert_token")
    value, placeholder, shown, label = state(phone, "alert_token")
    assert value == "" and placeholder == "cleared when you save" and shown and label == "Undo"
    phone.click("#c_alert_token")
    value, placeholder, shown, label = state(phone, "alert_token")
    assert value == "" and placeholder.startswith("set") and shown and label == "Clear"
    phone.click("#c_alert_token")
    phone.click("#sreset")
    assert state(phone, "alert_token")[3] == "Clear" and settings(sim)["alert_token_set"] is True
    phone.click("#c_alert_token")
    assert settings(sim)["alert_token_set"] is True  # nothing sent yet
    save(phone)
    assert settings(sim)["alert_token_set"] is False
    value, placeholder, shown, _ = state(phone, "alert_token")
    assert value == "" and placeholder == "not set" and not shown
    puts = [r for r in answers if r.request.method == "PUT"]
    assert [json.loads(r.request.post_data) for r in puts] == [{"max_soc": 95}, {"alert_token": None}]

    # a new token typed in is stored (and shown as set, not as itself)
    phone.fill("#s_alert_token", TOKEN + "-2")
    save(phone)
    assert settings(sim)["alert_token_set"] is True
    value, placeholder, shown, _ = state(phone, "alert_token")
    assert value == "" and placeholder.startswith("set") and shown

    # nothing revealed the value: the page, its inputs, its state, what the device answered
    seen = phone.content() + json.dumps(phone.evaluate(
        "[[...document.querySelectorAll('input')].map(i => i.value), SB.settings()]"))
    for r in answers:
        if r.request.method == "GET":
            seen += r.text()
    _, _, events = sim.get("/api/events?limit=200")
    seen += json.dumps(events) + json.dumps(settings(sim))
    assert TOKEN not in seen
    msgs = [e["msg"] for e in events["events"] if e["kind"] == "settings"]
    assert any("alert_token cleared" in m for m in msgs) and any("alert_token changed" in m for m in msgs), msgs
    assert errors == []
