# Home Assistant discovery documents and the alert picking: pure functions, no broker.
import json

from smartbms import alertpost, alerts
from smartbms.charge.alarms import NAMES
from smartbms.mqtt import discovery
from testutil import raises

LIMS = {"min_soc": (5, 99), "max_soc": (50, 100)}


def _docs(cells=4, temps=2, node="bms-2", base="home/bms"):
    return [(t, json.loads(p)) for t, p in
            discovery.configs(node, base, "homeassistant", {"version": "1.2", "url": "http://10.0.0.5/"},
                              cells, temps, LIMS)]


def test_one_document_per_entity_with_unique_ids():
    docs = _docs()
    topics = [t for t, d in docs]
    assert len(topics) == len(set(topics)) == 13 + 4 + 2 + 2 + len(NAMES) + 6
    ids = [d["unique_id"] for t, d in docs]
    assert len(set(ids)) == len(ids)
    for t, d in docs:
        component, node, obj = t.split("/")[1:4]
        assert t == "homeassistant/%s/bms-2/%s/config" % (component, obj)
        assert d["unique_id"] == "smartbms_bms-2_" + obj
        # entity ids have no "-": Home Assistant would refuse them
        assert d["default_entity_id"] == "%s.bms_2_%s" % (component, obj)
        assert d["availability_topic"] == "home/bms/availability"
        assert d["device"]["identifiers"] == ["smartbms_bms-2"]
        assert d["device"]["sw_version"] == "1.2" and d["device"]["configuration_url"] == "http://10.0.0.5/"


def test_sensors_carry_home_assistants_classes_and_units():
    by = {t.split("/")[3]: d for t, d in _docs()}
    assert (by["soc"]["device_class"], by["soc"]["unit_of_measurement"]) == ("battery", "%")
    assert (by["voltage"]["device_class"], by["voltage"]["unit_of_measurement"]) == ("voltage", "V")
    assert (by["current"]["device_class"], by["power"]["device_class"]) == ("current", "power")
    assert by["cycles"]["state_class"] == "total_increasing" and "device_class" not in by["cycles"]
    assert by["cell_4"]["value_template"] == "{{ value_json.c[3] }}"
    assert by["temp_2"]["unit_of_measurement"] == "\u00b0C" and by["temp_2"]["device_class"] == "temperature"
    assert by["charger_state"]["device_class"] == "enum" and "charging" in by["charger_state"]["options"]
    assert by["relay"]["device_class"] == "power" and by["bms_link"]["device_class"] == "connectivity"
    assert by["alarm_relay_stuck"]["device_class"] == "problem"
    assert "'relay_stuck' in value_json.al" in by["alarm_relay_stuck"]["value_template"]


def test_controls_publish_to_the_set_topics():
    by = {t.split("/")[3]: d for t, d in _docs()}
    assert by["override"]["options"] == ["auto", "on", "off"]
    assert by["override"]["command_topic"] == "home/bms/set/override"
    assert (by["min_soc"]["min"], by["min_soc"]["max"]) == (5, 99)
    assert (by["max_soc"]["min"], by["max_soc"]["max"]) == (50, 100)
    assert (by["override_minutes"]["min"], by["override_minutes"]["max"]) == (1, 1440)
    assert by["clear_alarms"]["payload_press"] == "PRESS" and "state_topic" not in by["clear_alarms"]


def test_removal_names_every_document_once():
    made = [t for t, d in _docs(16, 4, "n", "b")]
    gone = list(discovery.removals("n", "homeassistant", 16, 4))
    assert [t for t, p in gone] == made and all(p == "" for t, p in gone)


def test_a_smaller_pack_removes_the_entities_it_no_longer_has():
    gone = list(discovery.shrunk("n", "homeassistant", 16, 4, 8, 2))
    made16 = {t for t, d in _docs(16, 4, "n", "b")}
    made8 = {t for t, d in _docs(8, 2, "n", "b")}
    assert {t for t, p in gone} == made16 - made8 and all(p == "" for t, p in gone)
    assert len(gone) == 8 + 2 and list(discovery.shrunk("n", "homeassistant", 8, 2, 16, 4)) == []


def test_documents_are_made_one_at_a_time():
    it = discovery.configs("n", "b", "p", {}, 32, 4, LIMS)
    t, p = next(it)  # a generator: nothing else was built yet
    assert t == "p/sensor/n/soc/config" and len(p) < 700


def test_alerts_pick_the_events_owners_must_hear_about():
    k = alerts.kind_of
    assert k("fault", "alarm relay_stuck: the relay did not open", "charging") == "alarm"
    assert k("fault", "alarm relay_stuck ended", "charging") is None
    assert k("fault", "alarms cleared by the user: none", "resting") is None
    assert k("fault", "BMS charge MOSFET switched off as a second cut-off (relay stuck)", None) == "fault"
    assert k("charge", "timeout: charging took longer than 3.5 h", "charging") == "timeout"
    assert k("charge", "no_data: no BMS data for 40 s", "charging") == "no_data"
    assert k("charge", "no_data: no BMS reading", "startup") is None  # the boot, not a loss
    assert k("charge", "resting: full", "balancing") == "full"
    assert k("charge", "resting: full", "override") is None
    assert k("ota", "image 1.3 written to ota_1; rebooting", None) == "ota"
    assert k("override", "manual on for 30 min", None) is None


def test_alert_urls():
    assert alertpost.split_url("https://ntfy.sh/my-bms") == (True, "ntfy.sh", 443, "/my-bms")
    assert alertpost.split_url("http://10.0.0.2:8080") == (False, "10.0.0.2", 8080, "/")
    assert alertpost.split_url("http://[fd00::1]:81/x") == (False, "fd00::1", 81, "/x")
    raises(alertpost.AlertError, alertpost.split_url, "ftp://x/")
    raises(alertpost.AlertError, alertpost.split_url, "http:///x")
