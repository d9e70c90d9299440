# Settings: schema validation, cross-field rules, migrations, fallbacks on damaged files,
# secrets, and a power cut after every step of a save (plain files and real littlefs).
import json
import os
import random

from testutil import IS_MICROPYTHON, raises, skip
from smartbms import pins
from smartbms import settings as S
from smartbms import settings_rules as R
from smartbms.settings import Settings, SettingsError


def _tmpdir(tag):
    base = "/tmp/smartbms-unit"
    try:
        os.mkdir(base)
    except OSError:
        pass
    while True:  # a fresh folder even if the random numbers repeat between runs
        d = "%s/%s-%d" % (base, tag, random.getrandbits(30))
        try:
            os.mkdir(d)
            return d
        except OSError:
            pass


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


class _Log:
    def __init__(self):
        self.lines = []

    def __call__(self, kind, message):
        self.lines.append((kind, message))

    def text(self):
        return " | ".join(m for _k, m in self.lines)


def _fresh(tag, changes=None):
    """A Settings with a saved file (so 'nothing saved' can be checked byte for byte)."""
    log = _Log()
    s = Settings(_tmpdir(tag) + "/settings.json", log=log)
    s.load()
    s.update(changes or {"max_soc": 95, "bms_name": "house"})
    return s, log


# key -> values that must be rejected (wrong type, out of range, bad choice or pattern)
BAD = {
    "bms_protocol": ["", "JBD", "jk02", "auto ", 1, None, True],
    "bms_mac": ["AA:BB:CC:DD:EE", "AA:BB:CC:DD:EE:FF:00", "AA-BB-CC-DD-EE-FF", "GG:BB:CC:DD:EE:FF",
                "AABBCCDDEEFF", "AA:BB:CC:DD:EE:F", 12, None],
    "bms_name": ["x" * 33, "a\nb", "tab\there", "\ud800", "a\udfffb", "nul\x00", "c1\x85", "del\x7f", 5, None],
    "bms_mode": ["keep", "", "Persistent", 0, False],
    "poll_interval_s": [1, 301, 0, -5, 5.0, "5", True, None],
    "max_soc": [49, 101, 95.5, "95", True, None],
    "min_soc": [4, 100, 70.0, "70", False],
    "tail_current_c": [0.009, 0.51, 0, 1, "0.05", True, None, float("nan"), float("inf")],
    "eoc_max_min": [-1, 241, 30.0, "30", True],
    "cell_max_v": [3.39, 3.66, 3, 4, "3.6", True, None],
    "charge_timeout_h": [0.4, 24.5, 0, 25, "3.5", True],
    "timeout_rest_min": [-1, 1441, 60.0, "60", True],
    "temp_min_c": [-0.1, 20.1, -1, 21, "2", True],
    "temp_max_c": [24.9, 55.1, 24, 56, "45", True],
    "temp_hyst_c": [0.4, 10.1, 0, 11, "3", True],
    "stale_s": [9, 601, 30.0, "30", True],
    "full_every_days": [-1, 91, 1.5, "7", True],
    "min_switch_s": [-1, 3601, 60.0, "60", True],
    # only the pin and polarity the C start-up hook latches (smartbms.pins, generated at build)
    "relay_pin": [p for p in range(-2, 41) if p != pins.RELAY_GPIO] + [float(pins.RELAY_GPIO), "33", True],
    "relay_active_low": [not pins.RELAY_ACTIVE_LOW, 1, 0, "true", None],
    # the BOOT button, the console, strapping pin 12, flash/PSRAM, input-only, missing
    "led_pin": [0, 1, 3, 12, 6, 11, 16, 17, 20, 34, 39, 40, -2, 2.0, "2", True],
    "wifi_ssid": ["x" * 33, "\u00e9" * 17, "a\x00b", "\udc80", 1, None],
    "wifi_password": ["short", "x" * 7, "x" * 64, "caf\u00e9caf\u00e9", "tab\tpassword", 12345678],
    "hostname": ["", "x" * 33, "Smartbms", "smart_bms", "smart.bms", "-smartbms", "smartbms-", "sm bms",
                 5, None],
    "capacity_ah": [-0.1, 2000.1, "100", True, None, float("nan")],
    "charger_a": [-1, 1000.5, "20", True, None],
    "full_cell_v": [3.34, 3.61, "3.4", True, None],
    "recharge_cell_v": [2.79, 3.31, "3.2", True, None],
    "top_balance_min": [-1, 241, 60.0, "60", True],
    "temp_sensors_required": [1, 0, "true", None],
    "max_charge_a": [-0.5, 1000.1, "50", True],
    "relay_stuck_a": [-0.1, 50.1, "1", True],
    "window_start_min": [-1, 1440, 60.0, "60", True],
    "window_end_min": [-1, 1440, 0.0, "0", False],
    "tz_offset_min": [-721, 841, 60.0, "60", True],
    "mqtt_enabled": [1, 0, "true", None],
    "mqtt_host": ["x" * 65, "a b", "host/x", "a\nb", 5, None],
    "mqtt_port": [0, 65536, 1883.0, "1883", True],
    "mqtt_tls": [1, 0, "true", None],
    "mqtt_user": ["x" * 65, "a\x00b", 5, None],
    "mqtt_password": ["x" * 65, "a\nb", 5],
    "mqtt_base_topic": ["a/+/b", "a/#", "/a", "a/", "a//b", "x" * 65, 5],
    "mqtt_discovery_prefix": ["", "home/#", "x" * 65, None],
    "alert_url": ["ntfy.sh/x", "ftp://x", "x" * 129, 5],
    "alert_token": ["x" * 129, "a\nb", 5],
}

# key -> partial updates that must be accepted (boundaries, with companions for the rules)
GOOD = {
    "bms_protocol": [{"bms_protocol": p} for p in ("auto", "jbd", "jk02_24s", "jk02_32s", "daly", "seplos",
                                                   "ant", "redodo", "renogy")],
    "bms_mac": [{"bms_mac": ""}, {"bms_mac": "A4:C1:38:0B:1E:FF"}],
    "bms_name": [{"bms_name": ""}, {"bms_name": "x" * 32}, {"bms_name": "xiaoxiang BMS \u00e9"}],
    "bms_mode": [{"bms_mode": "persistent"}, {"bms_mode": "release"}],
    "poll_interval_s": [{"poll_interval_s": 2}, {"poll_interval_s": 300, "stale_s": 600}],
    "max_soc": [{"max_soc": 100}, {"max_soc": 50, "min_soc": 45}],
    "min_soc": [{"min_soc": 5}, {"min_soc": 95, "max_soc": 100}],
    "tail_current_c": [{"tail_current_c": 0.01}, {"tail_current_c": 0.5}],
    "eoc_max_min": [{"eoc_max_min": 0}, {"eoc_max_min": 240}],
    "cell_max_v": [{"cell_max_v": 3.4}, {"cell_max_v": 3.65}],
    "charge_timeout_h": [{"charge_timeout_h": 0.5}, {"charge_timeout_h": 24}],
    "timeout_rest_min": [{"timeout_rest_min": 0}, {"timeout_rest_min": 1440}],
    "temp_min_c": [{"temp_min_c": 0}, {"temp_min_c": 20}],
    "temp_max_c": [{"temp_max_c": 25}, {"temp_max_c": 55}],
    "temp_hyst_c": [{"temp_hyst_c": 0.5}, {"temp_hyst_c": 10}],
    "stale_s": [{"stale_s": 10}, {"stale_s": 600}],
    "full_every_days": [{"full_every_days": 0}, {"full_every_days": 90}],
    "min_switch_s": [{"min_switch_s": 0}, {"min_switch_s": 3600}],
    "relay_pin": [{"relay_pin": pins.RELAY_GPIO}],
    "relay_active_low": [{"relay_active_low": pins.RELAY_ACTIVE_LOW}],
    "led_pin": [{"led_pin": p} for p in (-1, 2, 4, 5, 14, 15, 32) if p != pins.RELAY_GPIO],
    "wifi_ssid": [{"wifi_ssid": ""}, {"wifi_ssid": "x" * 32}, {"wifi_ssid": "Caf\u00e9 \u00e9"}],
    "wifi_password": [{"wifi_password": ""}, {"wifi_password": "x" * 8}, {"wifi_password": "~" * 63}],
    "hostname": [{"hostname": "a"}, {"hostname": "x" * 32}, {"hostname": "bms-2"}, {"hostname": "0"}],
    "capacity_ah": [{"capacity_ah": 0}, {"capacity_ah": 2000}, {"capacity_ah": 100.5}],
    "charger_a": [{"charger_a": 0}, {"charger_a": 1000}],
    "full_cell_v": [{"full_cell_v": 3.35}, {"full_cell_v": 3.6}],
    "recharge_cell_v": [{"recharge_cell_v": 2.8}, {"recharge_cell_v": 3.3}],
    "top_balance_min": [{"top_balance_min": 0}, {"top_balance_min": 240}],
    "temp_sensors_required": [{"temp_sensors_required": False}, {"temp_sensors_required": True}],
    "max_charge_a": [{"max_charge_a": 0}, {"max_charge_a": 1000}],
    "relay_stuck_a": [{"relay_stuck_a": 0}, {"relay_stuck_a": 50}],
    "window_start_min": [{"window_start_min": 0}, {"window_start_min": 1439}],
    "window_end_min": [{"window_end_min": 0}, {"window_end_min": 1439}],
    "tz_offset_min": [{"tz_offset_min": -720}, {"tz_offset_min": 840}],
    "mqtt_enabled": [{"mqtt_enabled": True}, {"mqtt_enabled": False}],
    "mqtt_host": [{"mqtt_host": ""}, {"mqtt_host": "192.168.1.10"}, {"mqtt_host": "broker.local"},
                  {"mqtt_host": "fd00::1"}, {"mqtt_host": "x" * 64}],
    "mqtt_port": [{"mqtt_port": 1}, {"mqtt_port": 65535}],
    "mqtt_tls": [{"mqtt_tls": True}, {"mqtt_tls": False}],
    "mqtt_user": [{"mqtt_user": ""}, {"mqtt_user": "x" * 64}],
    "mqtt_password": [{"mqtt_password": ""}, {"mqtt_password": "p\u00e4ss word"}],
    "mqtt_base_topic": [{"mqtt_base_topic": ""}, {"mqtt_base_topic": "home/garage/bms"}],
    "mqtt_discovery_prefix": [{"mqtt_discovery_prefix": "homeassistant"}, {"mqtt_discovery_prefix": "ha"}],
    "alert_url": [{"alert_url": ""}, {"alert_url": "https://ntfy.sh/my-bms"}, {"alert_url": "http://10.0.0.2/x"}],
    "alert_token": [{"alert_token": ""}, {"alert_token": "tk_abc"}],
}


def test_every_key_has_validation_cases():
    keys = [e[0] for e in S.SCHEMA]
    for k in keys:
        if k == "admin_hash":
            continue
        assert k in BAD and k in GOOD, k
    assert sorted(BAD) == sorted(GOOD)
    assert len(keys) == 46


def test_defaults_match_the_spec():
    d = S.defaults()
    assert d["bms_protocol"] == "auto" and d["bms_mac"] == "" and d["bms_mode"] == "persistent"
    assert d["poll_interval_s"] == 5 and d["max_soc"] == 100 and d["min_soc"] == 80
    assert d["tail_current_c"] == 0.05 and d["cell_max_v"] == 3.6 and d["charge_timeout_h"] == 3.5
    assert d["eoc_max_min"] == 30 and d["timeout_rest_min"] == 60 and d["stale_s"] == 30
    assert d["temp_min_c"] == 2 and d["temp_max_c"] == 45 and d["temp_hyst_c"] == 3
    assert d["full_every_days"] == 0 and d["min_switch_s"] == 60
    assert d["relay_pin"] == 33 and d["relay_active_low"] is True and d["led_pin"] == 2
    assert d["hostname"] == "smartbms" and d["wifi_ssid"] == "" and d["wifi_password"] == ""
    assert d["admin_hash"] == ""
    S.check_rules(d)  # the defaults obey every rule
    for k in d:
        assert S.check_value(k, d[k]) == d[k]


def test_missing_file_gives_defaults_and_logs_why():
    log = _Log()
    s = Settings(_tmpdir("missing") + "/settings.json", log=log)
    assert s.load() == "defaults"
    assert s["max_soc"] == 100 and s.get("hostname") == "smartbms"
    assert "no settings file" in log.text()
    assert s.load_log == [m for _k, m in log.lines]  # kept for an event log created later
    assert all(k == "settings" for k, _m in log.lines)


def test_update_saves_and_reloads():
    s, log = _fresh("reload")
    changed = s.update({"min_soc": 70, "tail_current_c": 0.1, "bms_mac": "a4:c1:38:0b:1e:ff"})
    assert sorted(changed) == ["bms_mac", "min_soc", "tail_current_c"]
    assert s["bms_mac"] == "A4:C1:38:0B:1E:FF"  # normalised
    assert "min_soc 80 -> 70" in log.text()
    t = Settings(s.path, log=_Log())
    assert t.load() == "main"
    assert t.public() == s.public()
    assert t["min_soc"] == 70 and t["max_soc"] == 95 and t["bms_name"] == "house"
    doc = json.loads(_read(s.path))
    assert doc["version"] == S.VERSION


def test_unchanged_update_does_not_write():
    s, _ = _fresh("nowrite")
    before = _read(s.path)
    assert _read(s.path + ".bak") is None  # a first save has nothing to back up
    assert s.update({"max_soc": 95}) == []
    assert _read(s.path) == before and _read(s.path + ".bak") is None


def _assert_rejected(s, partial, field):
    before_file = _read(s.path)
    before_mem = s.public()
    before_secret = s.secret("wifi_password")
    e = raises(SettingsError, s.update, partial)
    assert e.field == field, (partial, e.field, e.message)
    assert e.message
    if field is not None:
        assert str(e).startswith(field + ":")
    assert _read(s.path) == before_file, partial
    assert s.public() == before_mem, partial
    assert s.secret("wifi_password") == before_secret
    return e


def test_every_bad_value_is_rejected_with_its_field_and_nothing_saved():
    s, _ = _fresh("bad")
    n = 0
    for key in BAD:
        for v in BAD[key]:
            _assert_rejected(s, {key: v}, key)
            # a bad value next to a good one still changes nothing
            _assert_rejected(s, {"eoc_max_min": 45, key: v}, key)
            n += 1
    assert n > 150


def test_every_good_value_is_accepted_and_persisted():
    for key in GOOD:
        for partial in GOOD[key]:
            s, _ = _fresh("good")
            s.update(partial)
            t = Settings(s.path, log=_Log())
            t.load()
            for k in partial:
                if k in S._SECRETS:
                    assert t.secret(k) == partial[k]
                else:
                    assert t[k] == partial[k], (k, t[k], partial[k])


def test_int_is_accepted_where_float_is_expected_but_bool_never():
    s, _ = _fresh("float")
    s.update({"charge_timeout_h": 4, "temp_hyst_c": 2})
    assert type(s["charge_timeout_h"]) is float and s["charge_timeout_h"] == 4.0
    assert type(s["temp_hyst_c"]) is float
    _assert_rejected(s, {"charge_timeout_h": True}, "charge_timeout_h")
    _assert_rejected(s, {"poll_interval_s": 5.0}, "poll_interval_s")


def test_cross_field_rules():
    s, _ = _fresh("rules", {"max_soc": 95})
    # min_soc < max_soc by at least 5 points
    _assert_rejected(s, {"min_soc": 91}, "min_soc")
    _assert_rejected(s, {"max_soc": 84}, "max_soc")
    _assert_rejected(s, {"min_soc": 95}, "min_soc")
    _assert_rejected(s, {"max_soc": 60, "min_soc": 56}, "min_soc")
    s.update({"min_soc": 90})  # exactly 5 apart is fine
    s.update({"min_soc": 80})
    # temp_min_c + 2 * temp_hyst_c < temp_max_c
    _assert_rejected(s, {"temp_min_c": 20, "temp_hyst_c": 10, "temp_max_c": 40}, "temp_min_c")
    _assert_rejected(s, {"temp_max_c": 25, "temp_min_c": 19}, "temp_min_c")  # rule order
    s.update({"temp_min_c": 19})
    _assert_rejected(s, {"temp_max_c": 25}, "temp_max_c")
    s.update({"temp_min_c": 2})
    s.update({"temp_min_c": 5})
    _assert_rejected(s, {"temp_hyst_c": 10, "temp_max_c": 25}, "temp_hyst_c")
    _assert_rejected(s, {"temp_min_c": 19, "temp_hyst_c": 3, "temp_max_c": 25}, "temp_min_c")  # 25 == 25
    s.update({"temp_min_c": 18.9, "temp_hyst_c": 3, "temp_max_c": 25})
    s.update({"temp_min_c": 2, "temp_max_c": 45})
    # stale_s >= 2 * poll_interval_s
    _assert_rejected(s, {"poll_interval_s": 16}, "poll_interval_s")
    _assert_rejected(s, {"stale_s": 9 + 0}, "stale_s")  # range first
    _assert_rejected(s, {"stale_s": 11, "poll_interval_s": 6}, "stale_s")
    s.update({"poll_interval_s": 15})  # 30 == 2 * 15 is fine
    # the relay and the LED cannot share a GPIO
    _assert_rejected(s, {"led_pin": pins.RELAY_GPIO}, "led_pin")
    _assert_rejected(s, {"relay_pin": 2}, "relay_pin")


def test_every_text_setting_refuses_what_utf8_cannot_encode():
    # a lone surrogate would be stored, then answered as invalid UTF-8 by every JSON route
    s, _ = _fresh("utf8")
    before = _read(s.path)
    for e in S.SCHEMA:
        if e[1] != "str" or e[6] & S.INTERNAL:
            continue
        for bad in ("\ud800", "abc\udfff", "x\x00y", "x\x1by"):
            err = raises(SettingsError, s.update, {e[0]: bad})
            assert err.field == e[0], (e[0], repr(bad))
    assert _read(s.path) == before
    # what is accepted encodes: every saved document is valid UTF-8
    s.update({"bms_name": "Akku \u00e9\u4e2d", "wifi_ssid": "caf\u00e9"})
    _read(s.path).decode("utf-8")


def test_stored_unsafe_pins_fall_back_without_losing_the_document():
    d = _tmpdir("pins")
    path = d + "/settings.json"
    _write(path, json.dumps({"version": S.VERSION, "max_soc": 90, "relay_pin": 0, "led_pin": 12,
                             "relay_active_low": not pins.RELAY_ACTIVE_LOW}))
    log = _Log()
    s = Settings(path, log=log)
    assert s.load() == "main"
    assert s["max_soc"] == 90  # the rest of the document is kept
    assert s["relay_pin"] == pins.RELAY_GPIO and s["relay_active_low"] is pins.RELAY_ACTIVE_LOW
    assert s["led_pin"] == 2
    assert "relay_pin 0 ignored" in log.text() and "led_pin 12 ignored" in log.text()


def test_pin_lists_follow_the_chip():
    flash_psram = (6, 7, 8, 9, 10, 11, 16, 17)
    for p in pins.RELAY_GPIOS:
        assert p not in flash_psram and p < 34 and p not in (0, 1, 2, 3, 5, 12, 14, 15), p
    for p in pins.LED_GPIOS:
        assert p not in flash_psram and p < 34 and p not in (0, 1, 3, 12), p
    assert pins.RELAY_GPIO in pins.RELAY_GPIOS and pins.BUTTON_GPIO not in pins.LED_GPIOS
    assert pins.relay_problem(pins.RELAY_GPIO) is None and "not safe" in pins.relay_problem(0)


def test_rule_messages_name_the_rule():
    s, _ = _fresh("msg")
    e = _assert_rejected(s, {"min_soc": 93}, "min_soc")
    assert "max_soc" in e.message
    assert str(e).startswith("min_soc:")


def test_unknown_readonly_internal_and_malformed_updates_are_rejected():
    s, _ = _fresh("unknown")
    _assert_rejected(s, {"nope": 1}, "nope")
    _assert_rejected(s, {"max_soc": 90, "maxsoc": 90}, "maxsoc")
    _assert_rejected(s, {"version": 2}, "version")
    _assert_rejected(s, {"admin_hash": "x"}, "admin_hash")  # auth module only
    _assert_rejected(s, {"wifi_password_set": False}, "wifi_password_set")
    e = raises(SettingsError, s.update, [("max_soc", 90)])
    assert e.field is None
    raises(SettingsError, s.update, None)


def test_secrets_never_come_out_of_read_apis():
    log = _Log()
    s = Settings(_tmpdir("secret") + "/settings.json", log=log)
    s.load()
    assert s.public()["wifi_password_set"] is False and s.public()["admin_hash_set"] is False
    s.update({"wifi_ssid": "home", "wifi_password": "hunter2hunter2"})
    s.set_secret("admin_hash", "pbkdf2$abc$def")
    pub = s.public()
    assert "wifi_password" not in pub and "admin_hash" not in pub
    assert pub["wifi_password_set"] is True and pub["admin_hash_set"] is True
    assert "hunter2" not in repr(pub) and "pbkdf2" not in repr(pub)
    raises(KeyError, lambda: s["wifi_password"])
    raises(KeyError, lambda: s["admin_hash"])
    assert s.get("wifi_password") is None and s.get("admin_hash", "-") == "-"
    assert "wifi_password" not in s and "max_soc" in s
    assert "hunter2" not in repr(s)
    schema = S.schema_public()
    assert "admin_hash" not in schema["fields"]
    assert schema["fields"]["wifi_password"]["secret"] is True
    assert "default" not in schema["fields"]["wifi_password"]
    assert "hunter2" not in log.text() and "pbkdf2" not in log.text()
    assert "wifi_password changed" in log.text()
    # the app/auth modules read them explicitly, and they persist
    t = Settings(s.path, log=_Log())
    t.load()
    assert t.secret("wifi_password") == "hunter2hunter2" and t.secret("admin_hash") == "pbkdf2$abc$def"
    raises(KeyError, t.secret, "max_soc")
    e = raises(SettingsError, t.set_secret, "max_soc", 90)
    assert e.field == "max_soc"
    before = _read(t.path)
    e = raises(SettingsError, t.set_secret, "wifi_password", "short")
    assert e.field == "wifi_password" and _read(t.path) == before
    e = raises(SettingsError, t.set_secret, "admin_hash", "x" * 129)
    assert e.field == "admin_hash"


# a secret's null clears it (GET never shows a secret, so a client cannot send it back)
SECRET_VALUES = (("wifi_password", "hunter2hunter2"), ("mqtt_password", "broker-pw-9"), ("alert_token", "tk_3f9a"))


def test_null_clears_each_secret_logging_its_name_never_the_value():
    assert sorted(k for k, _v in SECRET_VALUES) == sorted(k for k in S._SECRETS if k != "admin_hash")
    for key, value in SECRET_VALUES:
        s, log = _fresh("clear")
        assert s.update({key: value}) == [key] and s.public()[key + "_set"] is True
        assert s.update({"max_soc": 90}) == ["max_soc"]  # absent: kept
        assert s.secret(key) == value and s.public()[key + "_set"] is True
        assert sorted(s.update({key: None, "min_soc": 70})) == sorted([key, "min_soc"])
        assert s.secret(key) == "" and s.public()[key + "_set"] is False
        assert s.update({key: None}) == []  # already clear: nothing saved, nothing logged
        t = Settings(s.path, log=_Log())
        t.load()
        assert t.secret(key) == "" and t.public()[key + "_set"] is False and t["min_soc"] == 70
        assert key + " cleared" in log.text()
        assert value not in log.text() and value not in repr(s.public()), log.text()
        assert len([m for _k, m in log.lines if key in m]) == 2  # set, then cleared


def test_empty_string_stores_an_empty_secret_as_documented():
    # unchanged behaviour: "" is a valid value ("empty or 8-63 chars", an open network)
    for key, value in SECRET_VALUES:
        s, log = _fresh("empty")
        s.update({key: value})
        assert s.update({key: ""}) == [key]
        assert s.secret(key) == "" and key + " cleared" in log.text() and value not in log.text()


def test_null_for_any_other_setting_is_refused_and_changes_nothing():
    s, log = _fresh("nullbad")
    s.update({"alert_token": "tk_keep", "wifi_password": "hunter2hunter2"})
    n = 0
    for e in S.SCHEMA:
        key = e[0]
        if e[6] & S.SECRET:
            continue
        err = _assert_rejected(s, {key: None}, key)
        assert "null" in err.message and "secret" in err.message, err.message
        _assert_rejected(s, {"alert_token": None, key: None}, key)  # nor does the secret next to it
        n += 1
    assert n == len(S.SCHEMA) - 4
    _assert_rejected(s, {"admin_hash": None}, "admin_hash")  # the auth module's only
    # a bad value next to a clear: nothing cleared
    _assert_rejected(s, {"alert_token": None, "max_soc": 101}, "max_soc")
    _assert_rejected(s, {"alert_token": None, "min_soc": 99, "max_soc": 100}, "min_soc")
    assert s.secret("alert_token") == "tk_keep" and s.public()["alert_token_set"] is True
    assert "cleared" not in log.text()


def test_schema_public_lists_ranges_choices_and_rules():
    sch = S.schema_public()
    f = sch["fields"]
    assert sch["version"] == S.VERSION
    assert f["poll_interval_s"]["min"] == 2 and f["poll_interval_s"]["max"] == 300
    assert f["poll_interval_s"]["type"] == "int" and f["cell_max_v"]["type"] == "float"
    assert f["bms_protocol"]["choices"] == ["auto", "jbd", "jk02_24s", "jk02_32s", "daly", "seplos", "ant",
                                            "redodo", "renogy"]
    assert f["relay_pin"]["choices"] == [pins.RELAY_GPIO]
    assert f["relay_active_low"]["default"] is pins.RELAY_ACTIVE_LOW and "choices" not in f["relay_active_low"]
    assert f["relay_pin"]["fixed"] is True and f["relay_active_low"]["fixed"] is True
    assert -1 in f["led_pin"]["choices"] and 34 not in f["led_pin"]["choices"]
    assert 0 not in f["led_pin"]["choices"] and 12 not in f["led_pin"]["choices"]
    assert f["hostname"]["max_len"] == 32 and "pattern" in f["bms_mac"]
    assert f["relay_active_low"]["type"] == "bool" and f["relay_active_low"]["default"] is True
    assert len(sch["rules"]) == len(R.RULES)
    assert ["min_soc", "max_soc"] in [r["fields"] for r in sch["rules"]]
    json.dumps(sch)  # serialisable as is


# ---- damaged files ----

def test_corrupt_main_falls_back_to_backup_and_repairs():
    s, _ = _fresh("corrupt")
    s.update({"max_soc": 90})  # .bak now holds max_soc 95, main 90
    _write(s.path, '{"max_soc": 90, "min_so')
    log = _Log()
    t = Settings(s.path, log=log)
    assert t.load() == "backup"
    assert t["max_soc"] == 95 and t["bms_name"] == "house"
    assert "main copy invalid" in log.text() and "backup" in log.text()
    # main was rewritten from the backup, and the backup kept
    assert json.loads(_read(s.path))["max_soc"] == 95
    assert json.loads(_read(s.path + ".bak"))["max_soc"] == 95
    assert Settings(s.path, log=_Log()).load() == "main"


def test_invalid_values_in_main_count_as_corrupt():
    for bad in ('{"version": 1, "max_soc": 150}', '{"version": 1, "min_soc": 98}', '[1, 2]',
                '{"version": "1"}', '{"version": -1}', '', '\x00\xff garbage', '{"version": 1, "hostname": 5}'):
        s, _ = _fresh("invalid")
        s.update({"max_soc": 90})
        _write(s.path, bad)
        log = _Log()
        t = Settings(s.path, log=log)
        assert t.load() == "backup", bad
        assert t["max_soc"] == 95
        assert "invalid" in log.text()


def test_torn_main_without_backup_gives_defaults_with_a_reason():
    d = _tmpdir("torn")
    _write(d + "/settings.json", '{"version": 1, "max_soc": 9')
    log = _Log()
    s = Settings(d + "/settings.json", log=log)
    assert s.load() == "defaults"
    assert s.public() == Settings(d + "/x.json").public()
    assert "main copy invalid" in log.text() and "defaults" in log.text()
    # the next update does not turn the torn file into the backup
    s.update({"max_soc": 90})
    assert _read(d + "/settings.json.bak") is None
    assert Settings(d + "/settings.json", log=_Log()).load() == "main"


def test_stale_new_file_is_ignored_and_removed():
    s, _ = _fresh("stale")
    _write(s.path + ".new", '{"version": 1, "max_soc": 60, "min_soc": 50}')
    t = Settings(s.path, log=_Log())
    assert t.load() == "main" and t["max_soc"] == 95
    assert _read(s.path + ".new") is None


def test_file_from_a_newer_firmware_keeps_known_keys():
    d = _tmpdir("newer")
    _write(d + "/settings.json", json.dumps({"version": 7, "max_soc": 90, "future_knob": 3}))
    before = _read(d + "/settings.json")
    log = _Log()
    s = Settings(d + "/settings.json", log=log)
    assert s.load() == "main" and s["max_soc"] == 90
    assert "future_knob" in log.text()
    assert _read(d + "/settings.json") == before  # not rewritten just for loading it


# ---- migrations ----

V0 = {"protocol": "JK", "mac": "a4-c1-38-0b-1e-ff", "name": "shed", "soc_high": 95, "soc_low": 75,
      "cell_v_max": 3.55, "timeout_min": 240, "poll_ms": 10000, "relay_gpio": 25, "relay_high_on": True,
      "ssid": "home", "wifi_pass": "correcthorse", "debug": True}


def test_migration_table_covers_every_version():
    assert len(R.MIGRATIONS) == S.VERSION
    out = R.MIGRATIONS[0](dict(V0))
    assert out["bms_protocol"] == "jk02_24s" and out["bms_mac"] == "a4:c1:38:0b:1e:ff"
    assert out["charge_timeout_h"] == 4 and out["poll_interval_s"] == 10
    assert out["relay_active_low"] is False and "debug" not in out


def test_v0_file_is_migrated_persisted_and_backed_up():
    d = _tmpdir("v0")
    path = d + "/settings.json"
    _write(path, json.dumps(V0))
    log = _Log()
    s = Settings(path, log=log)
    assert s.load() == "main"
    assert "migrated" in log.text()
    assert s["bms_protocol"] == "jk02_24s" and s["bms_mac"] == "A4:C1:38:0B:1E:FF"
    assert s["bms_name"] == "shed" and s["max_soc"] == 95 and s["min_soc"] == 75
    assert s["cell_max_v"] == 3.55 and s["charge_timeout_h"] == 4.0 and s["poll_interval_s"] == 10
    # v0's relay wiring is not this build's: the compiled pin and polarity win, and the log says so
    assert s["relay_pin"] == pins.RELAY_GPIO and s["relay_active_low"] is pins.RELAY_ACTIVE_LOW
    assert "relay_pin 25 ignored" in log.text() and "relay_active_low False ignored" in log.text()
    assert s["wifi_ssid"] == "home" and s.secret("wifi_password") == "correcthorse"
    assert s["hostname"] == "smartbms"  # not in v0: default
    doc = json.loads(_read(path))
    assert doc["version"] == S.VERSION and "soc_high" not in doc
    assert json.loads(_read(path + ".bak")) == V0  # the old layout is kept as the backup
    t = Settings(path, log=_Log())
    assert t.load() == "main" and t.public() == s.public()


def test_v0_with_values_out_of_range_is_rejected():
    d = _tmpdir("v0bad")
    bad = dict(V0)
    bad["soc_low"] = 93  # too close to soc_high 95
    _write(d + "/settings.json", json.dumps(bad))
    log = _Log()
    s = Settings(d + "/settings.json", log=log)
    assert s.load() == "defaults"
    assert "min_soc" in log.text()


# ---- power cuts during a save ----

class PowerCut(Exception):
    pass


class _CutFiles(S._Files):
    """Real file operations that stop (like a power cut) at operation `cut_at`; a write
    cut this way leaves the first half of its data behind."""

    def __init__(self, cut_at):
        self.cut_at = cut_at
        self.ops = 0

    def _tick(self):
        self.ops += 1
        if self.ops >= self.cut_at:  # once the power is gone, nothing more happens
            raise PowerCut()

    def write(self, path, data):
        if self.ops + 1 == self.cut_at:
            with open(path, "w") as f:
                f.write(data[:len(data) // 2])
        self._tick()
        S._Files.write(self, path, data)

    def rename(self, src, dst):
        self._tick()
        S._Files.rename(self, src, dst)

    def remove(self, path):
        self._tick()
        return S._Files.remove(self, path)


def _powercut_round(tag, setup, change):
    """For every step k of one save, cut the power there; a fresh load must give the old or
    the new settings, and after the last step the new ones. Returns the number of steps."""
    k = 1
    while True:
        d = _tmpdir(tag)
        path = d + "/settings.json"
        prep = Settings(path, log=_Log())
        prep.load()
        setup(prep)
        old = Settings(path, log=_Log())
        old.load()
        old_pub = old.public()
        new = Settings(path, log=_Log())
        new.load()
        new._fs = _CutFiles(k)  # cut only the save's own operations
        cut = False
        try:
            new.update(change)
        except PowerCut:
            cut = True
        after = Settings(path, log=_Log())
        after.load()
        got = after.public()
        expected = dict(old_pub)
        for key in change:
            expected[key] = change[key]
        assert got == old_pub or got == expected, (tag, k, got)
        if not cut:
            assert got == expected
            # and loading again (after the repair) is stable
            again = Settings(path, log=_Log())
            again.load()
            assert again.public() == expected
            return k
        k += 1


def test_power_cut_after_every_step_of_a_first_save():
    steps = _powercut_round("cut1", lambda s: None, {"max_soc": 90})
    assert steps >= 2  # a cut at the write and at the commit


def test_power_cut_after_every_step_of_a_later_save():
    steps = _powercut_round("cut2", lambda s: s.update({"max_soc": 95}), {"max_soc": 90, "min_soc": 60})
    assert steps >= 3


def test_power_cut_during_a_save_after_a_fallback_load():
    def setup(s):
        s.update({"max_soc": 95})
        s.update({"max_soc": 94})
        _write(s.path, "{broken")

    _powercut_round("cut3", setup, {"min_soc": 60})


def test_power_cut_after_each_listed_save_step():
    # the same through save_steps(): stop after step i, never run the rest
    d = _tmpdir("steps")
    path = d + "/settings.json"
    s = Settings(path, log=_Log())
    s.load()
    s.update({"max_soc": 95})
    old = s.public()
    values = dict(s._values)
    values["max_soc"] = 90
    names = [n for n, _a in s.save_steps(values)]
    assert names == ["write_new", "backup_main", "commit"]
    for stop in range(len(names) + 1):
        t = Settings(path, log=_Log())
        t.load()
        assert t.public() == old
        for _n, action in t.save_steps(values)[:stop]:
            action()
        u = Settings(path, log=_Log())
        u.load()
        if stop == len(names):
            assert u["max_soc"] == 90
        else:
            assert u.public() == old or u["max_soc"] == 90
        # restore the old state for the next round
        u.update({"max_soc": 95})


def test_failed_save_changes_nothing_in_memory():
    class Full(S._Files):
        def write(self, path, data):
            raise OSError(28)

    s, _ = _fresh("full")
    before = _read(s.path)
    t = Settings(s.path, log=_Log(), fs=Full())
    t.load()
    raises(OSError, t.update, {"max_soc": 90})
    assert t["max_soc"] == 95 and _read(s.path) == before


# ---- the same on a real littlefs (MicroPython unix port) ----

class _RamBlocks:
    """A RAM block device that records a snapshot before every program/erase, plus one
    with each program only half done, to replay a power cut at any point."""

    def __init__(self, blocks=48, size=512):
        self.size = size
        self.data = bytearray(blocks * size)
        self.snapshots = None

    def readblocks(self, n, buf, off=0):
        a = n * self.size + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        a = n * self.size + (off or 0)
        if self.snapshots is not None:
            self.snapshots.append(bytes(self.data))
            half = bytearray(self.data)
            h = len(buf) // 2
            half[a:a + h] = buf[:h]
            self.snapshots.append(bytes(half))
        self.data[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.size
        if op == 5:
            return self.size
        if op == 6:  # erase
            if self.snapshots is not None:
                self.snapshots.append(bytes(self.data))
            a = arg * self.size
            self.data[a:a + self.size] = b"\xff" * self.size
            return 0
        return 0


def _mount(bd, point):
    import vfs

    fs = vfs.VfsLfs2(bd)
    vfs.mount(fs, point)


def _umount(point):
    import vfs

    vfs.umount(point)


def test_power_cut_at_every_flash_write_on_littlefs():
    if not IS_MICROPYTHON:
        skip("littlefs block devices need the MicroPython unix port")
    import vfs

    bd = _RamBlocks()
    vfs.VfsLfs2.mkfs(bd)
    point = "/lfs_settings_test"
    _mount(bd, point)
    try:
        s = Settings(point + "/settings.json", log=_Log())
        s.load()
        s.update({"max_soc": 95, "bms_name": "lfs"})
        old = s.public()
        bd.snapshots = []
        s.update({"max_soc": 90, "min_soc": 60})
        bd.snapshots.append(bytes(bd.data))
        new = s.public()
    finally:
        _umount(point)
    snaps = bd.snapshots
    bd.snapshots = None
    assert len(snaps) > 5
    seen_old = seen_new = 0
    for i in range(len(snaps)):
        img = _RamBlocks()
        img.data[:] = snaps[i]
        _mount(img, point)
        try:
            t = Settings(point + "/settings.json", log=_Log())
            t.load()
            got = t.public()
        finally:
            _umount(point)
        assert got == old or got == new, (i, got)
        if got == old:
            seen_old += 1
        else:
            seen_new += 1
    assert seen_old and seen_new  # the cut points cover both sides of the commit
    assert got == new


def test_default_path_comes_from_paths():
    from smartbms import paths

    old = paths.ROOT
    paths.ROOT = _tmpdir("root") + "/"
    try:
        s = Settings(log=_Log())
        assert s.path == paths.ROOT + "settings.json"
        s.load()
        s.update({"hostname": "garage"})
        assert json.loads(_read(paths.ROOT + "settings.json"))["hostname"] == "garage"
    finally:
        paths.ROOT = old


def test_event_log_object_as_logger():
    class Events:
        def __init__(self):
            self.got = []

        def add(self, kind, message):
            self.got.append((kind, message))

    ev = Events()
    s = Settings(_tmpdir("evlog") + "/settings.json", log=ev)
    s.load()
    s.update({"bms_mode": "release"})
    assert ev.got[-1] == ("settings", "bms_mode persistent -> release")


def test_the_checks_are_loaded_only_to_check():
    # an idle device keeps none of settings_rules on its heap: each use loads and drops it
    import sys

    sys.modules.pop("smartbms.settings_rules", None)
    s = Settings(_tmpdir("rules") + "/settings.json")
    s.load()
    assert "smartbms.settings_rules" not in sys.modules
    assert s.update({"min_soc": 60}) == ["min_soc"]
    assert "smartbms.settings_rules" not in sys.modules
    raises(SettingsError, s.update, {"min_soc": 99})
    assert "smartbms.settings_rules" not in sys.modules and s["min_soc"] == 60
    assert S.check_value("bms_mac", "aa:bb:cc:dd:ee:ff") == "AA:BB:CC:DD:EE:FF"
    assert "smartbms.settings_rules" not in sys.modules
