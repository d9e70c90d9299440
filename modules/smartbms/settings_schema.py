# The settings' schema: every setting's kind, default, range and group, and the error a
# refused value raises. Resident (the store and the controller read it); the checks that
# need more than the schema are in smartbms.settings_rules, loaded only to check.
from smartbms import pins
from smartbms.bms import protocols  # its NAMES are bms_protocol's choices (families load on use)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x

VERSION = 1

SECRET = const(1)  # never returned by a read API
INTERNAL = const(2)  # written only through set_secret() (the auth module), never through update()

# const(): the compiler puts these in the entries, so an entry made only of literals is one
# constant tuple in flash instead of 48 bytes of heap (the build tools store such tuples)
CHOICE = const("choice")
GPIO = const("gpio")

# key, kind, default, lo, hi, extra, flags, group, unit
#   int/float: lo..hi is the range; str: lo..hi is the length and extra the checker name;
#   choice: extra lists the values; gpio: extra is the pins the role may use (smartbms.pins),
#   with -1 (no pin) when it is in the tuple. The relay's pin and polarity are fixed at build
#   time (the C start-up hook latches them): the settings show them and refuse other values.
SCHEMA = (
    ("bms_protocol", CHOICE, "auto", None, None, ("auto",) + protocols.NAMES, 0, "bms", ""),
    ("bms_mac", "str", "", 0, 17, "mac", 0, "bms", ""),
    ("bms_name", "str", "", 0, 32, "text", 0, "bms", ""),
    ("bms_mode", CHOICE, "persistent", None, None, ("persistent", "release"), 0, "bms", ""),
    ("poll_interval_s", "int", 5, 2, 300, None, 0, "bms", "s"),
    ("max_soc", "int", 100, 50, 100, None, 0, "charge", "%"),
    ("min_soc", "int", 80, 5, 99, None, 0, "charge", "%"),
    ("tail_current_c", "float", 0.05, 0.01, 0.5, None, 0, "charge", "C"),
    ("eoc_max_min", "int", 30, 0, 240, None, 0, "charge", "min"),
    ("cell_max_v", "float", 3.60, 3.40, 3.65, None, 0, "charge", "V"),
    ("charge_timeout_h", "float", 3.5, 0.5, 24, None, 0, "charge", "h"),
    ("timeout_rest_min", "int", 60, 0, 1440, None, 0, "charge", "min"),
    ("temp_min_c", "float", 2.0, 0, 20, None, 0, "charge", "degC"),
    ("temp_max_c", "float", 45.0, 25, 55, None, 0, "charge", "degC"),
    ("temp_hyst_c", "float", 3.0, 0.5, 10, None, 0, "charge", "degC"),
    ("stale_s", "int", 30, 10, 600, None, 0, "charge", "s"),
    ("full_every_days", "int", 0, 0, 90, None, 0, "charge", "d"),
    ("min_switch_s", "int", 60, 0, 3600, None, 0, "charge", "s"),
    # pack and charger (0 = as the BMS reports / learned from the charge current)
    ("capacity_ah", "float", 0.0, 0, 2000, None, 0, "charge", "Ah"),
    ("charger_a", "float", 0.0, 0, 1000, None, 0, "charge", "A"),
    # voltage anchors: full at this average cell voltage with the tail current, whatever
    # the SOC says; a charge starts when the lowest cell stays below recharge_cell_v
    ("full_cell_v", "float", 3.40, 3.35, 3.60, None, 0, "charge", "V"),
    ("recharge_cell_v", "float", 3.20, 2.80, 3.30, None, 0, "charge", "V"),
    ("top_balance_min", "int", 60, 0, 240, None, 0, "charge", "min"),
    ("temp_sensors_required", "bool", True, None, None, None, 0, "charge", ""),
    # supervision: 0 = 1 C of the capacity / the relay_stuck check off (another charger)
    ("max_charge_a", "float", 0.0, 0, 1000, None, 0, "charge", "A"),
    ("relay_stuck_a", "float", 0.8, 0, 50, None, 0, "charge", "A"),
    # charge window in minutes of the day (start = end: always), local = UTC + tz_offset_min
    ("window_start_min", "int", 0, 0, 1439, None, 0, "charge", "min"),
    ("window_end_min", "int", 0, 0, 1439, None, 0, "charge", "min"),
    ("tz_offset_min", "int", 0, -720, 840, None, 0, "charge", "min"),
    ("relay_pin", GPIO, pins.RELAY_GPIO, None, None, (pins.RELAY_GPIO,), 0, "hardware", ""),
    ("relay_active_low", "bool", pins.RELAY_ACTIVE_LOW, None, None, None, 0, "hardware", ""),
    ("led_pin", GPIO, 2, None, None, (-1,) + pins.LED_GPIOS, 0, "hardware", ""),
    ("wifi_ssid", "str", "", 0, 32, "ssid", 0, "network", ""),
    ("wifi_password", "str", "", 0, 63, "wpa", SECRET, "network", ""),
    ("hostname", "str", "smartbms", 1, 32, "host", 0, "network", ""),
    ("admin_hash", "str", "", 0, 128, "hash", SECRET | INTERNAL, "admin", ""),
    # MQTT and Home Assistant discovery (smartbms.mqtt; nothing of it loads while off)
    ("mqtt_enabled", "bool", False, None, None, None, 0, "mqtt", ""),
    ("mqtt_host", "str", "", 0, 64, "broker", 0, "mqtt", ""),
    ("mqtt_port", "int", 1883, 1, 65535, None, 0, "mqtt", ""),
    ("mqtt_tls", "bool", False, None, None, None, 0, "mqtt", ""),  # TLS to the broker (usually port 8883)
    ("mqtt_user", "str", "", 0, 64, "text", 0, "mqtt", ""),
    ("mqtt_password", "str", "", 0, 64, "text", SECRET, "mqtt", ""),
    ("mqtt_base_topic", "str", "", 0, 64, "topic", 0, "mqtt", ""),  # empty: smartbms/<hostname>
    ("mqtt_discovery_prefix", "str", "homeassistant", 1, 64, "topic", 0, "mqtt", ""),
    # alerts: an ntfy-style POST per event kind (smartbms.alerts), empty URL = off
    ("alert_url", "str", "", 0, 128, "url", 0, "alerts", ""),
    ("alert_token", "str", "", 0, 128, "text", SECRET, "alerts", ""),
)

_SECRETS = tuple(e[0] for e in SCHEMA if e[6] & SECRET)


def _entry(key):
    """The schema entry of `key`, or None (a scan of 40 entries: no index dict on the heap)."""
    for e in SCHEMA:
        if e[0] == key:
            return e
    return None


# GPIOs an output may use at all (the LED's list: the widest; smartbms.pins says why)
OUTPUT_GPIOS = pins.LED_GPIOS
# what the firmware was built with (the C hook latches it at power-on): nothing else is accepted
_COMPILED = {"relay_pin": pins.RELAY_GPIO, "relay_active_low": pins.RELAY_ACTIVE_LOW}


class SettingsError(ValueError):
    """A rejected value: `field` names the setting (None for the whole document)."""

    def __init__(self, field, message):
        super().__init__("%s: %s" % (field, message) if field else message)
        self.field = field
        self.message = message


def defaults():
    d = {}
    for e in SCHEMA:
        d[e[0]] = e[2]
    return d
