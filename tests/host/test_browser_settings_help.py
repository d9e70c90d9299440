"""Issue 15 on a phone against the real simulator (its own schema, no mock): every MQTT and
Alerts setting has a proper label and its one line of help, and the device's refusal of a
firmware upload reads in plain words, says nothing was changed, and keeps the device's own
text one tap away. Every refusal the device's code can give has such a sentence."""
import ast
import os
import re
import sys

import pytest

from browser_util import browser, phone  # noqa: F401 (shared fixtures)
from browser_util import ROOT, have_sim, login, page_errors, stop_device, wait_js

pytestmark = pytest.mark.browser

# key: (label, a piece of its help line)
FIELDS = {
    "mqtt_enabled": ("MQTT on", "to an MQTT broker"),
    "mqtt_host": ("Broker", "The broker's name or IP address"),
    "mqtt_port": ("Broker port", "1883 for plain MQTT"),
    "mqtt_tls": ("Encrypt (TLS)", "Encrypts the connection"),
    "mqtt_user": ("Broker user", "empty if it needs none"),
    "mqtt_password": ("Broker password", "The password of that login"),
    "mqtt_base_topic": ("Topic prefix", "empty: smartbms/HOSTNAME"),
    "mqtt_discovery_prefix": ("Home Assistant discovery prefix", "Keep homeassistant unless"),
    "alert_url": ("Alert address", "empty: no alerts"),
    "alert_token": ("Alert token", "Bearer token"),
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    if not have_sim():
        pytest.skip("the simulator is not available")
    from simfixture import start_sim
    s = start_sim(tmp_path_factory.mktemp("help"), speed=60)
    yield s
    stop_device(s)


def text(page, sel):
    return page.text_content(sel) or ""


def esp_image():
    sys.path.insert(0, os.path.join(ROOT, "sim"))
    import esp_image
    return esp_image


def test_every_mqtt_and_alert_field_has_a_label_and_a_help_line(phone, sim):
    errors = page_errors(phone)
    login(phone, sim.url, sim.password)
    fields = sim.get("/api/settings/schema")[2]["fields"]
    assert all(not fields[k].get("help") for k in FIELDS)  # the device's schema brings no help
    phone.click("a[href='#settings']")
    phone.wait_for_selector("#g_mqtt")
    phone.click("#g_mqtt summary")
    phone.click("#g_alerts summary")
    for key, (label, help_piece) in FIELDS.items():
        assert text(phone, "label[for=s_%s]" % key) == label, key
        hint = phone.locator("#f_%s > div.mut" % key)
        assert hint.is_visible(), key
        assert help_piece in hint.text_content(), (key, hint.text_content())
    assert errors == []


def test_device_refusals_read_in_plain_words_with_the_detail_one_tap_away(phone, sim):
    img = esp_image()
    login(phone, sim.url, sim.password)
    version = sim.get("/api/status")[2]["device"]["version"]
    phone.click("a[href='#fw']")
    cases = (("truncated", "The device refused the image: the file is incomplete", "image truncated"),
             ("bad_checksum", "The device refused the image: the file is damaged or incomplete "
                              "(its checksum does not match).", "checksum mismatch"))
    for kind, plain, detail in cases:
        # a header the page accepts: only the device, reading the whole file, finds the fault
        phone.set_input_files("#ffile", files=[{"name": "fw.bin", "mimeType": "application/octet-stream",
                                                "buffer": img.variant(kind, "9.9.9")}])
        wait_js(phone, "document.getElementById('finfo').textContent.indexOf('smartbms 9.9.9') === 0")
        phone.click("#fup button")
        wait_js(phone, "document.getElementById('ferr').textContent.indexOf('The device refused') === 0", timeout=30)
        said = text(phone, "#ferr")
        assert said.startswith(plain), said
        assert said.endswith("Nothing was changed: the device keeps running %s." % version), said
        assert detail not in said and not phone.is_visible("#fprog")
        assert phone.is_visible("#fdet") and not phone.is_visible("#ftech")  # one tap away
        phone.click("#fdet summary")
        assert detail in text(phone, "#ftech")
        phone.click("#fdet summary")
    st = sim.get("/api/status")[2]["device"]
    assert st["version"] == version and not st["ota"]["pending_verify"]
    # a file the page itself refuses has no device text: no Details
    phone.set_input_files("#ffile", files=[{"name": "x.bin", "mimeType": "application/octet-stream",
                                            "buffer": b"hello\n" * 100}])
    wait_js(phone, "document.getElementById('ferr').textContent.indexOf('not a firmware image') > 0")
    assert not phone.is_visible("#fdet")


def _format_text(node):
    """The message a raise would build, with each %-field as "1" and each name as "x"."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.sub(r"%[-0-9.]*[dsrxX]", "1", node.value).replace("%%", "%")
    if isinstance(node, ast.BinOp):
        return _format_text(node.left) + ("" if isinstance(node.op, ast.Mod) else _format_text(node.right))
    if isinstance(node, ast.Name):
        return "x"
    return ""


# the page never causes these: it sends no X-Image-SHA256, a URL's SHA-256 is checked before
# sending, the body is always the raw image with its length (411, 415) and 422 names a field
NEVER_FROM_THE_PAGE = ("missing", "expected SHA-256 must be 32 bytes", "X-Image-SHA256 must be 64 hex digits")


def device_refusals():
    """Every refusal text of an upload in the firmware's source: ImageError and UpdateError
    raises and the OTA routes' error answers (and the web layer's 413 and 503)."""
    out = set()
    base = os.path.join(ROOT, "modules", "smartbms")
    for rel in ("ota/image.py", "ota/updater.py", "ota/http.py", "web.py"):
        with open(os.path.join(base, rel)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            a = node.args
            if name in ("ImageError", "UpdateError") and rel != "web.py":
                msg = _format_text(a[0])
            elif name == "_err" or name == "error" and rel == "web.py":
                code = a[0].value if isinstance(a[0], ast.Constant) else None
                if len(a) < 2 or code in (411, 415, 422) or rel == "web.py" and code not in (413, 503):
                    continue
                msg = _format_text(a[1])
            else:
                continue
            if msg.strip() and msg not in NEVER_FROM_THE_PAGE:
                out.add(msg)
    return sorted(out)


def test_every_refusal_the_device_can_give_has_a_plain_sentence(phone, sim):
    from smartbms.ota import image

    img = esp_image()
    refusals = device_refusals()
    assert len(refusals) >= 25 and any("checksum mismatch" in m for m in refusals), refusals
    for kind in img.VARIANTS:  # and the texts the validator actually builds from broken images
        with pytest.raises(image.ImageError) as e:
            image.check(img.variant(kind), img.SLOT_SIZE)
        refusals.append(str(e.value))
    login(phone, sim.url, sim.password)
    said = phone.evaluate("(ms) => ms.map(m => SB.fwWhy(m))", refusals)
    missing = [m for m, s in zip(refusals, said) if not s]
    assert not missing, "no plain sentence for: %s" % missing
    assert len(set(said)) >= 15  # not one sentence for everything
    by = dict(zip(refusals, said))
    assert by["image truncated: ended after 1 bytes, inside 1"].startswith("the file is incomplete")
    assert by["upload stalled: no data for 1 s; nothing was activated"] == "the upload stalled: no data arrived for a while."
