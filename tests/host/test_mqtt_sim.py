"""MQTT and Home Assistant discovery against a real broker: Debian's mosquitto on a free
loopback port, the sim pointed at it (SIM_MQTT), paho-mqtt watching and commanding as Home
Assistant would. Skipped with the reason when mosquitto or paho-mqtt is missing (.ci/run
installs mosquitto)."""
import json
import re
import threading
import time

import pytest

from simfixture import MOSQUITTO, AlertSink, free_port, start_broker, start_sim

mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (make venv)")
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

NODE = "smartbms"
BASE = "smartbms/smartbms"
PREFIX = "homeassistant"

# Home Assistant's MQTT discovery schema, the parts this device uses
# (https://www.home-assistant.io/integrations/sensor.mqtt/ and the other components' pages)
REQUIRED = {"sensor": ("state_topic",), "binary_sensor": ("state_topic",),
            "select": ("command_topic", "options"), "number": ("command_topic", "min", "max"),
            "button": ("command_topic",)}
DEVICE_CLASSES = {
    "sensor": {"battery", "voltage", "current", "power", "duration", "enum", "temperature", "energy"},
    "binary_sensor": {"power", "connectivity", "problem", "battery_charging"},
}
UNITS = {"battery": {"%"}, "voltage": {"V", "mV"}, "current": {"A", "mA"}, "power": {"W", "kW"},
         "temperature": {"\u00b0C", "\u00b0F"}, "duration": {"s", "min", "h", "d"}}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
ENTITY_CATEGORIES = {"config", "diagnostic"}


class Watcher:
    """A paho client subscribed to everything: the last message per topic and the history."""

    def __init__(self, port):
        self.msgs = []
        self.last = {}
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.subscribe("#")
        self.c.loop_start()

    def _on(self, c, u, m):
        with self.cond:
            self.msgs.append((m.topic, m.payload, m.retain))
            self.last[m.topic] = m.payload
            self.cond.notify_all()

    def wait(self, pred, timeout=30, what="a message"):
        end = time.time() + timeout
        with self.cond:
            while True:
                for t, p, r in self.msgs:
                    if pred(t, p, r):
                        return t, p
                left = end - time.time()
                if left <= 0:
                    raise AssertionError("no %s in %d s; last topics: %s" % (what, timeout, sorted(self.last)[-20:]))
                self.cond.wait(min(left, 0.5))

    def mark(self):
        with self.cond:
            n = len(self.msgs)
            del self.msgs[:n]  # only what comes after this point is waited for

    def publish(self, topic, payload):
        self.c.publish(topic, payload).wait_for_publish(5)

    def state(self, timeout=30):
        self.mark()
        return json.loads(self.wait(lambda t, p, r: t == BASE + "/state", timeout, "state")[1])

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    port, proc = start_broker(tmp_path_factory.mktemp("mosq"))
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def rig(broker, tmp_path_factory):
    w = Watcher(broker)
    sim = start_sim(tmp_path_factory.mktemp("mqttsim"), speed=60,
                    extra_env={"SIM_MQTT": "127.0.0.1:%d" % broker})
    yield sim, w
    sim.stop()
    w.close()


def _configs(w):
    out = {}
    for topic, payload in list(w.last.items()):
        if topic.startswith(PREFIX + "/") and topic.endswith("/config") and payload:
            out[topic] = json.loads(payload)
    return out


def _template_reads(template, state):
    """What a value_template reads from the state doc, as Home Assistant would render it
    (the three template shapes discovery.py makes)."""
    m = re.fullmatch(r"\{\{ value_json\.(\w+)(?:\[(\d+)\])? \}\}", template)
    if m:
        v = state[m.group(1)]
        return v[int(m.group(2))] if m.group(2) else v
    m = re.fullmatch(r"\{\{ 'ON' if '(\w+)' in value_json\.al else 'OFF' \}\}", template)
    assert m, template
    return "ON" if m.group(1) in state["al"] else "OFF"


def check_config(topic, doc):
    component, node, obj = topic.split("/")[1:4]
    assert node == NODE
    for k in REQUIRED[component]:
        assert k in doc, (topic, k)
    assert doc["unique_id"] == "smartbms_%s_%s" % (node, obj)
    assert doc["default_entity_id"] == "%s.%s_%s" % (component, node, obj)
    assert doc["availability_topic"] == BASE + "/availability"
    dev = doc["device"]
    for k in ("identifiers", "name", "model", "manufacturer", "sw_version", "configuration_url"):
        assert dev.get(k), (topic, k)
    assert dev["configuration_url"].startswith("http")
    if "device_class" in doc:
        assert doc["device_class"] in DEVICE_CLASSES[component], topic
        if component == "sensor" and doc["device_class"] in UNITS:
            assert doc.get("unit_of_measurement") in UNITS[doc["device_class"]], topic
        if doc["device_class"] == "enum":
            assert doc["options"] and "state_class" not in doc and "unit_of_measurement" not in doc
    if "state_class" in doc:
        assert doc["state_class"] in STATE_CLASSES
    if "entity_category" in doc:
        assert doc["entity_category"] in ENTITY_CATEGORIES
    if component == "number":
        assert doc["min"] < doc["max"] and doc["step"] > 0
    if component == "select":
        assert doc["options"] == ["auto", "on", "off"]
    if "command_topic" in doc:
        assert doc["command_topic"] == "%s/set/%s" % (BASE, obj)
    if "state_topic" in doc:
        assert doc["state_topic"] == BASE + "/state"
    return component, obj


def test_discovery_documents_follow_home_assistants_schema(rig):
    sim, w = rig
    w.wait(lambda t, p, r: t == BASE + "/availability" and p == b"online", what="online")
    w.wait(lambda t, p, r: t == PREFIX + "/button/smartbms/clear_alarms/config", what="the last config")
    state = w.state()
    cfg = _configs(w)
    seen = {}
    for topic, doc in cfg.items():
        component, obj = check_config(topic, doc)
        seen.setdefault(component, set()).add(obj)
        if "value_template" in doc:
            _template_reads(doc["value_template"], state)  # every template finds its value
    n_cells = len(state["c"])
    assert n_cells == 4 and len(state["t"]) >= 1
    sensors = {"soc", "voltage", "current", "power", "remaining_ah", "cycles", "cell_min", "cell_max",
               "cell_delta", "charger_state", "charger_reason", "bms_age", "ble_ok"}
    sensors |= {"cell_%d" % (i + 1) for i in range(n_cells)} | {"temp_%d" % (i + 1) for i in range(len(state["t"]))}
    assert seen["sensor"] == sensors
    assert {"relay", "bms_link", "alarm_relay_stuck", "alarm_charger_dead"} <= seen["binary_sensor"]
    assert seen["select"] == {"override"}
    assert seen["number"] == {"override_minutes", "min_soc", "max_soc"}
    assert seen["button"] == {"timeout_reset", "clear_alarms"}
    # the values are live: what the web API shows
    st = sim.get("/api/status")[2]
    assert st["mqtt"]["state"] == "connected" and st["mqtt"]["error"] is None
    assert abs(state["soc"] - st["bms"]["soc"]) <= 1
    assert state["relay"] == ("ON" if st["charger"]["relay"] else "OFF")
    assert state["link"] == "ON" and state["st"] == st["charger"]["state"]
    temps = [doc for t, doc in cfg.items() if "/temp_" in t]
    assert temps[0]["unit_of_measurement"] == "\u00b0C"


def test_state_follows_the_battery(rig):
    sim, w = rig
    first = w.state()
    # SOC rises while charging at 60x: a new state within a few real seconds of a 1 % step
    later = None
    end = time.time() + 40
    while time.time() < end:
        later = w.state()
        if later["soc"] != first["soc"] or later["ah"] != first["ah"]:
            break
    assert later is not None and (later["soc"], later["ah"]) != (first["soc"], first["ah"])


def _status(sim):
    return sim.get("/api/status")[2]


def _events(sim):
    return [e["msg"] for e in sim.get("/api/events?limit=50")[2]["events"]]


def test_every_control_changes_the_device(rig):
    sim, w = rig
    w.state()  # connected and subscribed: commands are QoS 0, one sent before is lost
    w.publish(BASE + "/set/override_minutes", "30")
    w.publish(BASE + "/set/override", "off")
    st = w.state()
    for _ in range(20):
        if st["ov"] == "off":
            break
        st = w.state()
    assert st["ov"] == "off" and st["ovm"] == 30 and st["relay"] == "OFF"
    ch = _status(sim)["charger"]
    assert ch["override"]["mode"] == "off" and 0 < ch["override"]["remaining_min"] <= 30 and not ch["relay"]
    w.publish(BASE + "/set/override", "auto")
    _wait(lambda: _status(sim)["charger"]["override"]["mode"] == "auto")
    w.publish(BASE + "/set/min_soc", "70")
    w.publish(BASE + "/set/max_soc", "95.0")  # Home Assistant may send a whole number so
    _wait(lambda: sim.get("/api/settings")[2]["max_soc"] == 95)
    assert sim.get("/api/settings")[2]["min_soc"] == 70
    assert w.state()["min_soc"] == 70
    w.mark()
    w.publish(BASE + "/set/timeout_reset", "PRESS")  # no timeout holds charging: refused, as over HTTP
    _, err = w.wait(lambda t, p, r: t == BASE + "/error", 15, "an error")
    assert json.loads(err)["error"] == "no charge timeout is active: nothing to reset"
    w.publish(BASE + "/set/clear_alarms", "PRESS")
    _wait(lambda: any(m.startswith("alarms cleared by the user") for m in _events(sim)))
    w.publish(BASE + "/set/settings", json.dumps({"min_soc": 75}))
    _wait(lambda: sim.get("/api/settings")[2]["min_soc"] == 75)


def _wait(pred, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in %d s" % timeout)


@pytest.mark.parametrize("name,payload,field", [
    ("override", "sideways", "mode"),
    ("min_soc", "150", "min_soc"),
    ("max_soc", "\"ninety\"", "max_soc"),
    ("min_soc", "99", None),  # above max_soc: the settings' cross-field rule refuses it
    ("override_minutes", "0", "minutes"),
    ("settings", json.dumps({"min_soc": 60, "relay_pin": 99}), "relay_pin"),
    ("timeout_reset", "yes", None),
    ("self_destruct", "1", None),
    ("min_soc", "7" * 300, None),  # larger than the 256-byte limit: dropped unread
])
def test_a_bad_payload_changes_nothing_and_is_answered(rig, name, payload, field):
    sim, w = rig
    before = sim.get("/api/settings")[2]
    ov = _status(sim)["charger"]["override"]["mode"]
    w.mark()
    w.publish(BASE + "/set/" + name, payload)
    _, err = w.wait(lambda t, p, r: t == BASE + "/error", 15, "an error")
    err = json.loads(err)
    assert err["error"]
    if field is not None:
        assert err.get("field") == field
    assert err["command"] in (name, "?")
    _wait(lambda: any(m.startswith("command %s refused" % err["command"]) for m in _events(sim)))
    assert sim.get("/api/settings")[2] == before
    assert _status(sim)["charger"]["override"]["mode"] == ov
    assert _status(sim)["mqtt"]["state"] == "connected"  # the session lives on


@pytest.fixture(scope="module")
def sink():
    s = AlertSink()
    yield s
    s.server.shutdown()


def test_the_alert_test_button(rig, sink):
    sim, w = rig
    st, _, body = sim.request("POST", "/api/alerts/test", json={})
    assert st == 422 and body["field"] == "alert_url"
    url = "http://127.0.0.1:%d/smartbms-alerts" % sink.port
    st, _, body = sim.request("PUT", "/api/settings", json={"alert_url": url, "alert_token": "tk1"})
    assert st == 200, body
    st, _, body = sim.request("POST", "/api/alerts/test", json={})
    assert (st, body) == (200, {"sent": True})
    path, headers, text = sink.posts[-1]
    assert path == "/smartbms-alerts" and "Test alert" in text
    assert headers["Title"] == "smartbms: test" and headers["Authorization"] == "Bearer tk1"
    assert headers["Priority"] and headers["Tags"]
    sink.status = 403
    st, _, body = sim.request("POST", "/api/alerts/test", json={})
    assert st == 502 and "403" in body["error"]
    sink.status = 200
    dead = free_port()
    sim.request("PUT", "/api/settings", json={"alert_url": "http://127.0.0.1:%d/x" % dead})
    st, _, body = sim.request("POST", "/api/alerts/test", json={})
    assert st == 502 and "unreachable" in body["error"]
    sim.request("PUT", "/api/settings", json={"alert_url": url})


def test_events_reach_the_events_topic_and_the_alert_url(rig, sink):
    sim, w = rig
    w.mark()
    n = len(sink.posts)
    # a lost BMS (the world stops answering) -> no_data -> an alert event
    mac = sim.world("status")["peers"][0]["mac"]
    sim.world("set_peer", mac=mac, in_range=False)
    try:
        _, p = w.wait(lambda t, p, r: t == BASE + "/events" and json.loads(p)["kind"] == "no_data", 60,
                      "a no_data event")
        assert json.loads(p)["message"].startswith("no_data:")
        _wait(lambda: any(h["Title"] == "smartbms: no data" for _, h, _ in sink.posts[n:]))
    finally:
        sim.world("set_peer", mac=mac, in_range=True)


def test_sensors_a_pack_no_longer_reports_leave_home_assistant(rig):
    sim, w = rig
    gone = [PREFIX + "/sensor/%s/temp_%d/config" % (NODE, i) for i in (1, 2)]
    end = time.time() + 30
    while not all(w.last.get(t) for t in gone):  # the simulated pack has two sensors
        assert time.time() < end, sorted(w.last)[-20:]
        time.sleep(0.2)
    w.mark()
    sim.world("bms_lie", temps_missing=True)
    try:
        for topic in gone:  # an empty retained config removes the entity
            w.wait(lambda t, p, r: t == topic and p == b"", 60, "%s removed" % topic)
        assert w.last.get(PREFIX + "/sensor/%s/cell_1/config" % NODE)  # the rest stays
    finally:
        sim.world("bms_lie", temps_missing=False)
    w.wait(lambda t, p, r: t == gone[0] and p != b"", 60, "temp_1 published again")


def test_killing_the_device_leaves_offline_by_the_will(rig):
    sim, w = rig
    w.mark()
    sim.kill()
    w.wait(lambda t, p, r: t == BASE + "/availability" and p == b"offline", 120, "the will")


def test_entities_of_a_pack_changed_while_the_device_was_off_are_removed(rig):
    """After the will test: while the device is off, the broker still holds the configs of an
    earlier, larger pack (20 cells, 4 sensors); the device boots with its own pack and removes
    the entities that pack lacks, once it knows the pack's shape."""
    sim, w = rig
    assert sim.proc.poll() is not None  # the device is off (killed by the will test)
    stale = [PREFIX + "/sensor/%s/cell_%d/config" % (NODE, i) for i in range(1, 21)] + \
        [PREFIX + "/sensor/%s/temp_%d/config" % (NODE, i) for i in range(1, 5)]
    for t in stale:
        w.c.publish(t, json.dumps({"name": "left by an earlier pack"}), retain=True).wait_for_publish(5)
    w.mark()
    sim.start()
    sim.wait_ready(40)
    end = time.time() + 30
    st = _status(sim)
    while not st["bms"].get("cells"):
        assert time.time() < end, st["bms"]
        time.sleep(0.3)
        st = _status(sim)
    cells, temps = len(st["bms"]["cells"]), len(st["bms"]["temperatures"])
    assert 0 < cells < 20 and 0 < temps < 4, (cells, temps)
    for i in range(cells + 1, 21):
        t = PREFIX + "/sensor/%s/cell_%d/config" % (NODE, i)
        w.wait(lambda tt, p, r: tt == t and p == b"", 60, "%s removed" % t)
    for i in range(temps + 1, 5):
        t = PREFIX + "/sensor/%s/temp_%d/config" % (NODE, i)
        w.wait(lambda tt, p, r: tt == t and p == b"", 60, "%s removed" % t)
    for i in range(1, cells + 1):  # the pack's own cells are there, with real configs
        t = PREFIX + "/sensor/%s/cell_%d/config" % (NODE, i)
        w.wait(lambda tt, p, r: tt == t and p and b"earlier pack" not in p, 60, "%s published" % t)
    # a fresh client sees exactly the pack's own cell entities
    w2 = Watcher(int(sim._env["SIM_MQTT"].rsplit(":", 1)[1]))
    time.sleep(1.5)
    kept = sorted(t for t in w2.last if re.search(r"/cell_\d+/", t))
    w2.close()
    assert len(kept) == cells, kept


def test_turning_mqtt_off_removes_discovery(rig):
    sim, w = rig
    if sim.proc.poll() is not None:
        sim.start()
        sim.wait_ready(40)
    w.wait(lambda t, p, r: t == BASE + "/availability" and p == b"online", 30, "online again")
    w.wait(lambda t, p, r: t == PREFIX + "/button/smartbms/clear_alarms/config" and p, 30, "discovery")
    w.mark()
    st, _, body = sim.request("PUT", "/api/settings", json={"mqtt_enabled": False})
    assert st == 200, body
    w.wait(lambda t, p, r: t == BASE + "/availability" and p == b"offline", 30, "offline")
    time.sleep(1)
    cfg = [t for t, p in w.last.items() if t.startswith(PREFIX + "/")]
    assert cfg and all(w.last[t] == b"" for t in cfg)
    # a fresh client sees no retained discovery at all
    w2 = Watcher(int(sim._env["SIM_MQTT"].rsplit(":", 1)[1]))
    time.sleep(1.5)
    assert not [t for t in w2.last if t.startswith(PREFIX + "/")]
    w2.close()
    _wait(lambda: _status(sim)["mqtt"]["state"] == "off")
    assert _status(sim)["mqtt"]["enabled"] is False
