# What a valid settings document is, beyond the schema's table: each value's check, the
# cross-field rules, the migrations of older documents and the schema the web UI reads.
# Loaded to check and dropped after (smartbms.settings), as no idle device needs it.
import json

from smartbms import pins
from smartbms.settings_schema import (CHOICE, GPIO, INTERNAL, SCHEMA, SECRET, VERSION, SettingsError, _COMPILED,
                                      _entry, defaults)

# Patterns for the web UI's in-page validation (the checks below are the real ones).
_PATTERNS = {
    "mac": "^$|^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$",
    "host": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
    "broker": "^[A-Za-z0-9.:-]*$",
    "topic": "^[^#+]*$",
    "url": "^$|^https?://.+",
}
_HEX = "0123456789abcdefABCDEF"
_HOST_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


def _printable(s):
    for c in s:
        o = ord(c)
        if o < 32 or 0x7F <= o <= 0x9F:  # C0 (NUL included), DEL, C1
            return False
    return True


def _utf8_ok(s):
    # A JSON "\ud800" escape makes a lone surrogate, which has no UTF-8 encoding (MicroPython
    # stores it anyway and later answers invalid UTF-8; it also keeps an escaped pair as two)
    for c in s:
        if 0xD800 <= ord(c) <= 0xDFFF:
            return False
    return True


def _check_text(key, checker, v):
    if not _utf8_ok(v):
        raise SettingsError(key, "must be text that UTF-8 can encode (no lone surrogates; "
                                 "send characters beyond U+FFFF unescaped)")
    if checker == "mac":
        if v == "":
            return v
        ok = len(v) == 17
        if ok:
            for i in range(17):
                c = v[i]
                if (c != ":") if i % 3 == 2 else (c not in _HEX):
                    ok = False
                    break
        if not ok:
            raise SettingsError(key, "must be empty or a MAC address like AA:BB:CC:DD:EE:FF")
        return v.upper()
    if checker == "host":
        for c in v:
            if c not in _HOST_CHARS:
                raise SettingsError(key, "may contain only a-z, 0-9 and -")
        if v[0] == "-" or v[-1] == "-":
            raise SettingsError(key, "must not start or end with -")
        return v
    if checker == "broker":  # a host name, an IPv4 or an IPv6 address (empty: not set yet)
        for c in v:
            if not (c.isalpha() or c.isdigit() or c in ".-:"):
                raise SettingsError(key, "must be a host name or an IP address")
        return v
    if checker == "topic":  # a topic to publish under: no wildcards, no empty levels at the ends
        if "+" in v or "#" in v or v.startswith("/") or v.endswith("/") or "//" in v:
            raise SettingsError(key, "must be a topic without + or #, no / at either end")
    if checker == "url" and v and not (v.startswith("http://") or v.startswith("https://")):
        raise SettingsError(key, "must be empty or start with http:// or https://")
    if checker == "wpa":
        if v and not 8 <= len(v) <= 63:
            raise SettingsError(key, "must be empty (open network) or 8 to 63 characters")
        for c in v:
            if not 32 <= ord(c) <= 126:
                raise SettingsError(key, "must use printable ASCII characters")
        return v
    if checker == "ssid":
        if len(v.encode()) > 32:
            raise SettingsError(key, "must be at most 32 bytes")
    if not _printable(v):
        raise SettingsError(key, "must not contain control characters")
    return v


def check_value(key, v):
    """Validate one value; returns it normalised (floats as float, MACs upper case)."""
    e = _entry(key)
    if e is None:
        raise SettingsError(key, "unknown setting")
    kind, lo, hi, extra = e[1], e[3], e[4], e[5]
    t = type(v)
    if kind == "bool":
        if t is not bool:
            raise SettingsError(key, "must be true or false")
        if key in _COMPILED and v != _COMPILED[key]:
            raise SettingsError(key, _compiled_message())
        return v
    if kind == "int" or kind == GPIO:
        if t is not int:
            raise SettingsError(key, "must be a whole number")
        if kind == GPIO:
            if key in _COMPILED:
                if v != _COMPILED[key]:
                    raise SettingsError(key, _compiled_message())
            elif v not in extra:
                raise SettingsError(key, "must be a GPIO safe for this use (%s)" % ", ".join(
                    str(p) if p >= 0 else "-1 for none" for p in extra))
            return v
    elif kind == "float":
        if t is not int and t is not float:
            raise SettingsError(key, "must be a number")
        v = float(v)
    elif kind == CHOICE:
        if t is not str or v not in extra:
            raise SettingsError(key, "must be one of " + ", ".join(extra))
        return v
    else:  # str
        if t is not str:
            raise SettingsError(key, "must be a string")
        if not lo <= len(v) <= hi:
            raise SettingsError(key, "must be %d to %d characters" % (lo, hi) if lo else
                                "must be at most %d characters" % hi)
        return _check_text(key, extra, v)
    # `not lo <= v <= hi` also rejects NaN
    if not lo <= v <= hi:
        raise SettingsError(key, "must be between %s and %s" % (lo, hi))
    return v


def _compiled_message():
    return "this firmware drives the relay on GPIO%d, active-%s: fixed at build time, so that the " \
        "start-up hook keeps it off from power-on; other wiring needs its own build " \
        "(make firmware RELAY_GPIO=N RELAY_ACTIVE_LOW=0|1)" % (
            pins.RELAY_GPIO, "low" if pins.RELAY_ACTIVE_LOW else "high")


# Cross-field rules: (fields, test(values) -> bool, message)
RULES = (
    (("min_soc", "max_soc"), lambda s: s["max_soc"] - s["min_soc"] >= 5,
     "min_soc must be at least 5 points below max_soc"),
    (("temp_min_c", "temp_hyst_c", "temp_max_c"),
     lambda s: s["temp_min_c"] + 2 * s["temp_hyst_c"] < s["temp_max_c"],
     "temp_min_c + 2 * temp_hyst_c must be below temp_max_c"),
    (("stale_s", "poll_interval_s"), lambda s: s["stale_s"] >= 2 * s["poll_interval_s"],
     "stale_s must be at least twice poll_interval_s"),
    (("led_pin", "relay_pin"), lambda s: s["led_pin"] != s["relay_pin"],
     "led_pin and relay_pin must be different GPIOs"),
)


def check_rules(values, changed=()):
    """Raise SettingsError for the first broken rule, blaming a field the caller changed."""
    for fields, test, message in RULES:
        if not test(values):
            blame = fields[0]
            for f in fields:
                if f in changed:
                    blame = f
                    break
            raise SettingsError(blame, message)


# ---- migrations: MIGRATIONS[n] turns a version-n document into version n+1 -------------

# v0: the prototype's layout (no "version" key), with its own names and units.
_V0_RENAMES = (
    ("protocol", "bms_protocol"), ("mac", "bms_mac"), ("name", "bms_name"),
    ("soc_high", "max_soc"), ("soc_low", "min_soc"), ("cell_v_max", "cell_max_v"),
    ("relay_gpio", "relay_pin"), ("ssid", "wifi_ssid"), ("wifi_pass", "wifi_password"),
)


def _v0_to_v1(doc):
    out = {}
    for old, new in _V0_RENAMES:
        if old in doc:
            out[new] = doc[old]
    p = out.get("bms_protocol")
    if type(p) is str:
        p = p.lower()
        out["bms_protocol"] = "jk02_24s" if p == "jk" else p
    m = out.get("bms_mac")
    if type(m) is str:
        out["bms_mac"] = m.replace("-", ":")
    # v0 stored the poll period in ms, the charge timeout in minutes and the relay
    # polarity inverted ("relay_high_on": true meant active-high)
    if type(doc.get("poll_ms")) is int:
        out["poll_interval_s"] = max(2, min(300, (doc["poll_ms"] + 500) // 1000))
    t = doc.get("timeout_min")
    if type(t) in (int, float) and type(t) is not bool:
        out["charge_timeout_h"] = t / 60
    if type(doc.get("relay_high_on")) is bool:
        out["relay_active_low"] = not doc["relay_high_on"]
    # everything else in v0 ("debug", "ble_scan_s") has no meaning any more
    return out


MIGRATIONS = (_v0_to_v1,)


def _parse(text):
    """Document text -> (values, notes); raises ValueError if it is not a valid document.
    notes[0] starts with "migrated" when the document needs rewriting."""
    doc = json.loads(text)
    if type(doc) is not dict:
        raise ValueError("not a JSON object")
    ver = doc.pop("version", 0)
    if type(ver) is not int or ver < 0:
        raise ValueError("bad version")
    notes = []
    if ver < VERSION:
        notes.append("migrated from version %d" % ver)
        while ver < VERSION:
            doc = MIGRATIONS[ver](doc)
            ver += 1
    values = defaults()
    dropped = []
    for k in doc:
        entry = _entry(k)
        if entry is not None:
            try:
                values[k] = check_value(k, doc[k])
            except SettingsError as e:
                if entry[7] != "hardware":
                    raise
                # a stored pin this firmware cannot use (an older schema, or a build with
                # another relay): keep the rest of the document, use the safe value
                notes.append("%s %r ignored (%s)" % (k, doc[k], e.message))
        else:
            dropped.append(k)
    check_rules(values)
    if dropped:
        # a file from a newer firmware (after a rollback): keep what we understand
        notes.append("ignored unknown keys: " + ", ".join(sorted(dropped)))
    return values, notes


def schema_public():
    """Ranges, choices and patterns for the web UI (internal secrets omitted)."""
    fields = {}
    for key, kind, default, lo, hi, extra, flags, group, unit in SCHEMA:
        if flags & INTERNAL:
            continue
        f = {"group": group}
        if unit:
            f["unit"] = unit
        if flags & SECRET:
            f["secret"] = True
        else:
            f["default"] = default
        if kind == CHOICE:
            f["type"] = "str"
            f["choices"] = list(extra)
        elif kind == GPIO:
            f["type"] = "int"
            f["choices"] = list(extra)
        elif kind == "str":
            f["type"] = "str"
            f["min_len"] = lo
            f["max_len"] = hi
            if extra in _PATTERNS:
                f["pattern"] = _PATTERNS[extra]
            if extra == "wpa":
                f["min_len_if_set"] = 8
        else:
            f["type"] = kind
            if lo is not None:
                f["min"] = lo
                f["max"] = hi
        if key in _COMPILED:
            f["fixed"] = True  # the build's value, the only one accepted (see _COMPILED)
        fields[key] = f
    rules = [{"fields": list(r[0]), "message": r[2]} for r in RULES]
    return {"version": VERSION, "fields": fields, "rules": rules}
