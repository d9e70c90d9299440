# Home Assistant MQTT discovery documents, made one at a time (a generator of (topic, payload)):
# some 40 documents of ~500 bytes each never live on the heap together. Pure: no sockets.
# Every entity reads the one state document (smartbms.mqtt.state) through its value_template;
# the controls publish to <base>/set/<name> (smartbms.mqtt.commands). README lists them all.
import json

from smartbms.charge.alarms import NAMES as ALARMS
from smartbms.charge.texts import STATES

# object, name, state doc key, device_class, state_class, unit, entity_category
SENSORS = (
    ("soc", "SOC", "soc", "battery", "measurement", "%", None),
    ("voltage", "Voltage", "v", "voltage", "measurement", "V", None),
    ("current", "Current", "i", "current", "measurement", "A", None),
    ("power", "Power", "p", "power", "measurement", "W", None),
    ("remaining_ah", "Remaining capacity", "ah", None, "measurement", "Ah", None),
    ("cycles", "Cycles", "cyc", None, "total_increasing", None, None),
    ("cell_min", "Lowest cell", "cmin", "voltage", "measurement", "V", None),
    ("cell_max", "Highest cell", "cmax", "voltage", "measurement", "V", None),
    ("cell_delta", "Cell difference", "cd", "voltage", "measurement", "V", None),
    ("charger_reason", "Charger reason", "why", None, None, None, None),
    ("bms_age", "BMS data age", "age", "duration", "measurement", "s", "diagnostic"),
    ("ble_ok", "BLE polls answered", "ok", None, "measurement", "%", "diagnostic"),
)
# object, name, state doc key, device_class
BINARY = (
    ("relay", "Charger relay", "relay", "power"),
    ("bms_link", "BMS link", "link", "connectivity"),
)
OVERRIDE_MODES = ("auto", "on", "off")
PRESS = "PRESS"


def entity_id(node):
    """The node as Home Assistant's entity ids spell it (a-z, 0-9 and _)."""
    return node.replace("-", "_")


def _device(node, info):
    return {"identifiers": ["smartbms_" + node], "name": node, "model": info.get("model", "smartbms"),
            "manufacturer": "smartbms", "sw_version": info.get("version", ""),
            "configuration_url": info.get("url") or "http://%s.local/" % node}


def _doc(component, obj, name, node, base, info):
    return {"name": name, "unique_id": "smartbms_%s_%s" % (node, obj),
            "default_entity_id": "%s.%s_%s" % (component, entity_id(node), obj),
            "availability_topic": base + "/availability", "device": _device(node, info)}


def _state(d, base, template):
    d["state_topic"] = base + "/state"
    d["value_template"] = template
    return d


def _topic(prefix, component, node, obj):
    return "%s/%s/%s/%s/config" % (prefix, component, node, obj)


def objects(n_cells, n_temps):
    """(component, object) of every entity, for removal without building the documents."""
    for e in SENSORS:
        yield "sensor", e[0]
    yield "sensor", "charger_state"
    for i in range(n_cells):
        yield "sensor", "cell_%d" % (i + 1)
    for i in range(n_temps):
        yield "sensor", "temp_%d" % (i + 1)
    for e in BINARY:
        yield "binary_sensor", e[0]
    for a in ALARMS:
        yield "binary_sensor", "alarm_" + a
    yield "select", "override"
    yield "number", "override_minutes"
    yield "number", "min_soc"
    yield "number", "max_soc"
    yield "button", "timeout_reset"
    yield "button", "clear_alarms"


def configs(node, base, prefix, info, n_cells, n_temps, soc_ranges):
    """(topic, payload) of each discovery document; `info` = {version, url, model},
    soc_ranges = {"min_soc": (lo, hi), "max_soc": (lo, hi)} from the settings' schema."""
    for obj, name, key, dc, sc, unit, cat in SENSORS:
        d = _state(_doc("sensor", obj, name, node, base, info), base, "{{ value_json.%s }}" % key)
        if dc:
            d["device_class"] = dc
        if sc:
            d["state_class"] = sc
        if unit:
            d["unit_of_measurement"] = unit
        if cat:
            d["entity_category"] = cat
        if obj == "cell_delta":
            d["suggested_display_precision"] = 3
        yield _topic(prefix, "sensor", node, obj), json.dumps(d)
    d = _state(_doc("sensor", "charger_state", "Charger state", node, base, info), base, "{{ value_json.st }}")
    d["device_class"] = "enum"
    d["options"] = list(STATES)
    yield _topic(prefix, "sensor", node, "charger_state"), json.dumps(d)
    for i in range(n_cells):
        obj = "cell_%d" % (i + 1)
        d = _state(_doc("sensor", obj, "Cell %d" % (i + 1), node, base, info), base, "{{ value_json.c[%d] }}" % i)
        d["device_class"] = "voltage"
        d["state_class"] = "measurement"
        d["unit_of_measurement"] = "V"
        d["suggested_display_precision"] = 3
        yield _topic(prefix, "sensor", node, obj), json.dumps(d)
    for i in range(n_temps):
        obj = "temp_%d" % (i + 1)
        d = _state(_doc("sensor", obj, "Temperature %d" % (i + 1), node, base, info), base,
                   "{{ value_json.t[%d] }}" % i)
        d["device_class"] = "temperature"
        d["state_class"] = "measurement"
        d["unit_of_measurement"] = "\u00b0C"
        yield _topic(prefix, "sensor", node, obj), json.dumps(d)
    for obj, name, key, dc in BINARY:
        d = _state(_doc("binary_sensor", obj, name, node, base, info), base, "{{ value_json.%s }}" % key)
        d["device_class"] = dc
        yield _topic(prefix, "binary_sensor", node, obj), json.dumps(d)
    for a in ALARMS:
        obj = "alarm_" + a
        d = _state(_doc("binary_sensor", obj, "Alarm " + a.replace("_", " "), node, base, info), base,
                   "{{ 'ON' if '%s' in value_json.al else 'OFF' }}" % a)
        d["device_class"] = "problem"
        yield _topic(prefix, "binary_sensor", node, obj), json.dumps(d)
    d = _state(_doc("select", "override", "Charger override", node, base, info), base, "{{ value_json.ov }}")
    d["command_topic"] = base + "/set/override"
    d["options"] = list(OVERRIDE_MODES)
    yield _topic(prefix, "select", node, "override"), json.dumps(d)
    for obj, name, key, lo, hi, unit in (
            ("override_minutes", "Override minutes", "ovm", 1, 1440, "min"),
            ("min_soc", "Charge below SOC", "min_soc", soc_ranges["min_soc"][0], soc_ranges["min_soc"][1], "%"),
            ("max_soc", "Charge up to SOC", "max_soc", soc_ranges["max_soc"][0], soc_ranges["max_soc"][1], "%")):
        d = _state(_doc("number", obj, name, node, base, info), base, "{{ value_json.%s }}" % key)
        d["command_topic"] = base + "/set/" + obj
        d["min"] = lo
        d["max"] = hi
        d["step"] = 1
        d["mode"] = "box"
        d["unit_of_measurement"] = unit
        if obj == "override_minutes":
            d["entity_category"] = "config"
        yield _topic(prefix, "number", node, obj), json.dumps(d)
    for obj, name in (("timeout_reset", "Reset charge timeout"), ("clear_alarms", "Clear alarms")):
        d = _doc("button", obj, name, node, base, info)
        d["command_topic"] = base + "/set/" + obj
        d["payload_press"] = PRESS
        yield _topic(prefix, "button", node, obj), json.dumps(d)


def shrunk(node, prefix, old_cells, old_temps, n_cells, n_temps):
    """(topic, "") for the cell and temperature entities a pack of the old shape had and one of
    the new shape has not (another pack, a changed cell count): removed, not left stale."""
    for i in range(n_cells, old_cells):
        yield _topic(prefix, "sensor", node, "cell_%d" % (i + 1)), ""
    for i in range(n_temps, old_temps):
        yield _topic(prefix, "sensor", node, "temp_%d" % (i + 1)), ""


def removals(node, prefix, n_cells, n_temps):
    """(topic, "") for every document configs() made: an empty retained config removes it."""
    for component, obj in objects(n_cells, n_temps):
        yield _topic(prefix, component, node, obj), ""
