"use strict";
// The Settings tab, built from GET /api/settings/schema: sections by purpose, only Charging
// open at first (a phone shows one short column); a group the UI
// does not know, e.g. a newer firmware's, becomes a collapsed section named after it), one
// line of help per field, a Save bar that stays in reach, and errors at the field: the first
// one is opened, scrolled to and focused.
(function () {
  var SB = window.SB, $ = SB.$, txt = SB.txt, el = SB.el, words = SB.words;
  var schema = [], byKey = {};
  var cleared = {}; // secrets the next Save clears (their Clear button); a secret is never shown
  var UNITS = {degC: "°C", C: "× capacity"};
  // [section, title, open?, keys]; keys not listed go by the schema's group
  var SECTIONS = [
    ["charging", "Charging", true, ["max_soc", "min_soc", "tail_current_c", "eoc_max_min", "charge_timeout_h", "timeout_rest_min",
      "full_every_days", "capacity_ah", "charger_a", "window_start_min", "window_end_min"]],
    ["safety", "Safety", false, ["cell_max_v", "temp_min_c", "temp_max_c", "temp_hyst_c", "temp_sensors_required", "max_charge_a",
      "relay_stuck_a", "stale_s"]],
    ["bms", "BMS link", false, []],
    ["network", "Network", false, []],
    ["advanced", "Advanced", false, ["full_cell_v", "recharge_cell_v", "top_balance_min", "min_switch_s", "tz_offset_min"]],
    ["hardware", "Hardware", false, []]
  ];
  var TITLES = {mqtt: "MQTT", alerts: "Alerts", charge: "Charging"};
  var LABELS = {bms_protocol: "Protocol", bms_mac: "MAC address", bms_name: "Name", bms_mode: "Connection",
    poll_interval_s: "Read every", max_soc: "Stop charging at", min_soc: "Charge again below",
    tail_current_c: "Full when the current falls below", eoc_max_min: "Balance at the top for at most",
    cell_max_v: "Stop at cell voltage", charge_timeout_h: "Longest charge", timeout_rest_min: "Rest after a too-long charge",
    temp_min_c: "Lowest charge temperature", temp_max_c: "Highest charge temperature", temp_hyst_c: "Temperature margin to resume",
    stale_s: "BMS data too old after", full_every_days: "Full charge every", min_switch_s: "Least time between relay switches",
    capacity_ah: "Pack capacity", charger_a: "Charger current", full_cell_v: "Full at average cell voltage",
    recharge_cell_v: "Charge again below cell voltage", top_balance_min: "Wait for a high cell at most",
    temp_sensors_required: "Pack has temperature sensors", max_charge_a: "Highest charge current",
    relay_stuck_a: "Stuck-relay alarm above", window_start_min: "Charge window start", window_end_min: "Charge window end",
    tz_offset_min: "Local time offset from UTC", relay_pin: "Relay GPIO", relay_active_low: "Relay active low",
    led_pin: "Status LED GPIO", wifi_ssid: "WiFi network", wifi_password: "WiFi password", hostname: "Hostname",
    mqtt_enabled: "MQTT on", mqtt_host: "Broker", mqtt_port: "Broker port", mqtt_tls: "Encrypt (TLS)",
    mqtt_user: "Broker user", mqtt_password: "Broker password", mqtt_base_topic: "Topic prefix",
    mqtt_discovery_prefix: "Home Assistant discovery prefix", alert_url: "Alert address", alert_token: "Alert token"};
  var HELP = {
    bms_protocol: "auto recognises the pack from its advertisement; set it if that fails.",
    bms_mac: "Empty: the first pack found (or by name). The BMS tab fills it from a scan.",
    bms_name: "The pack's advertised name, used when no MAC address is set.",
    bms_mode: "persistent keeps the connection; release lets the phone app connect between reads.",
    poll_interval_s: "How often the BMS is read.",
    max_soc: "Charging stops here; below 100 % it skips the balancing at the top.",
    min_soc: "After a full charge the battery rests until it falls to this level.",
    tail_current_c: "At 100 %, the charge ends when the current falls below this share of the capacity (0.05 of 100 Ah = 5 A).",
    eoc_max_min: "Time the BMS gets to balance the cells at 100 % before charging stops anyway.",
    charge_timeout_h: "A charge that takes longer stops (a weak charger or a SOC that never rises).",
    timeout_rest_min: "After a too-long charge, wait this long before trying again.",
    full_every_days: "With a stop level below 100 %, charge to 100 % this often to balance and resync the SOC (0: never).",
    capacity_ah: "0: as the BMS reports it.",
    charger_a: "0: as measured; used to estimate how long a charge should take.",
    window_start_min: "Minutes after midnight (local time) when charging may start; equal start and end: any time.",
    window_end_min: "Minutes after midnight when the charge window closes.",
    cell_max_v: "Charging stops at once when any cell reaches this voltage.",
    temp_min_c: "No charging below this (never below 0 °C whatever you set).",
    temp_max_c: "No charging above this.",
    temp_hyst_c: "After a temperature stop, charging resumes this far inside the range.",
    temp_sensors_required: "Off for a BMS without temperature sensors; on, a missing temperature stops charging.",
    max_charge_a: "A higher charge current raises an alarm and stops charging (0: 1 C of the capacity).",
    relay_stuck_a: "Charge current while the relay is off means welded contacts (0: off, e.g. with solar on the same pack).",
    stale_s: "Without a fresh BMS reading for this long the charger is switched off.",
    full_cell_v: "At the tail current, this average cell voltage counts as full even if the SOC disagrees.",
    recharge_cell_v: "A cell below this starts a charge whatever the SOC says.",
    top_balance_min: "A high cell pauses the charge; after this long waiting for it the charge ends.",
    min_switch_s: "Protects the relay and the charger from rapid on/off.",
    tz_offset_min: "For the charge window, e.g. 60 for UTC+1.",
    relay_pin: "Fixed by the firmware build (the boot hook holds this pin off).",
    relay_active_low: "Fixed by the firmware build.",
    led_pin: "-1: no LED.",
    wifi_ssid: "Changing it moves the device to another network (this page then loses it).",
    wifi_password: "Leave empty to keep the stored one.",
    hostname: "The device's name on the network: NAME.local (after a reboot).",
    mqtt_enabled: "Sends the battery and charger to an MQTT broker (Home Assistant finds the device by itself) and takes commands from it.",
    mqtt_host: "The broker's name or IP address, e.g. homeassistant.local.",
    mqtt_port: "1883 for plain MQTT; brokers usually take TLS on 8883.",
    mqtt_tls: "Encrypts the connection (brokers use port 8883 for it); the broker's certificate is not checked.",
    mqtt_user: "The broker's login; empty if it needs none.",
    mqtt_password: "The password of that login.",
    mqtt_base_topic: "Where the device publishes; empty: smartbms/HOSTNAME.",
    mqtt_discovery_prefix: "Keep homeassistant unless you changed Home Assistant's discovery prefix.",
    alert_url: "An ntfy-style address that gets a message on each alarm, fault, full charge or update; empty: no alerts.",
    alert_token: "Sent as a Bearer token with each alert, if the address needs one."};

  function normSchema(s) {
    if (s && !Array.isArray(s)) s = s.fields || s.schema || s;
    var list = [];
    if (Array.isArray(s)) list = s.map(function (f) { return Object.assign({}, f, {key: f.key || f.name}); });
    else for (var k in s) list.push(Object.assign({}, s[k], {key: k}));
    list = list.filter(function (f) { return f.key && f.key !== "admin_hash" && f.writable !== false; });
    byKey = {};
    list.forEach(function (f) { byKey[f.key] = f; });
    return list;
  }
  function sectionOf(f) {
    for (var i = 0; i < SECTIONS.length; i++) if (SECTIONS[i][3].indexOf(f.key) >= 0) return SECTIONS[i][0];
    var g = f.group || "other";
    return g === "charge" ? "charging" : g;
  }
  function choicesOf(f) { return f.choices || null; }
  function isBool(f) { return /bool/.test(f.type || "") || typeof f["default"] === "boolean"; }
  function isNum(f) { return !isBool(f) && (/int|float|num/.test(f.type || "") || (typeof f["default"] === "number" && !choicesOf(f))); }

  function build() {
    var box = SB.clear($("sfields")), groups = {}, order = SECTIONS.map(function (s) { return s[0]; });
    schema.forEach(function (f) {
      var g = sectionOf(f);
      if (order.indexOf(g) < 0) order.push(g);
      (groups[g] = groups[g] || []).push(f);
    });
    order.forEach(function (g) {
      if (!groups[g]) return;
      var sec = SECTIONS.filter(function (s) { return s[0] === g; })[0];
      var det = el("details", {id: "g_" + g, "class": "card sgroup"});
      det.open = !!(sec && sec[2]);
      det.appendChild(el("summary", {}, sec ? sec[1] : TITLES[g] || SB.cap1(words(g))));
      var grid = el("div", {"class": "sgrid"});
      if (g === "mqtt") grid.appendChild(el("p", {id: "mqttstate", "class": "full big"}, "MQTT: –"));
      groups[g].forEach(function (f) { grid.appendChild(field(f)); });
      if (g === "alerts") {
        var row = el("div", {"class": "full row"}), b = el("button", {type: "button", "class": "sec", id: "atest"}, "Send test alert");
        row.appendChild(b); row.appendChild(el("span", {id: "amsg"}));
        b.addEventListener("click", testAlert);
        grid.appendChild(row);
      }
      det.appendChild(grid);
      box.appendChild(det);
    });
    fill();
    mqttState(SB.status());
  }
  function field(f) {
    var wrap = el("div", {id: "f_" + f.key, "class": "field"}), id = "s_" + f.key, inp, ch = choicesOf(f);
    var lab = el("label", {"for": id}, f.label || LABELS[f.key] || SB.cap1(words(f.key)));
    if (f.unit) lab.appendChild(el("span", {"class": "mut"}, " (" + (UNITS[f.unit] || f.unit) + ")"));
    wrap.appendChild(lab);
    if (ch) {
      inp = el("select", {id: id});
      ch.forEach(function (c) { inp.appendChild(el("option", {value: c}, c)); });
    } else if (isBool(f)) {
      inp = el("input", {id: id, type: "checkbox"});
    } else if (isNum(f)) {
      inp = el("input", {id: id, type: "number", inputmode: "decimal", step: /int/.test(f.type || "") ? "1" : "any"});
      if (f.min !== undefined && f.min !== null) inp.min = f.min;
      if (f.max !== undefined && f.max !== null) inp.max = f.max;
    } else {
      inp = el("input", {id: id, type: f.secret ? "password" : "text", autocomplete: "off"});
      if (f.max_len) inp.maxLength = f.max_len;
    }
    inp.name = f.key;
    inp.addEventListener("input", function () { validate(); });
    if (f.secret) {
      var row = el("div", {"class": "srow"}), b = el("button", {type: "button", "class": "sec", id: "c_" + f.key});
      b.addEventListener("click", function () { cleared[f.key] = !cleared[f.key]; inp.value = ""; secretState(f); validate(); });
      row.appendChild(inp); row.appendChild(b); wrap.appendChild(row);
    } else wrap.appendChild(inp);
    var hint = [f.help || HELP[f.key] || ""];
    if (isNum(f) && f.min !== undefined && f.min !== null) hint.push(f.min + " to " + f.max);
    if (f["default"] !== undefined && f["default"] !== "" && !f.secret) hint.push("default " + f["default"]);
    wrap.appendChild(el("div", {"class": "mut"}, hint.filter(String).join(" · ")));
    wrap.appendChild(el("div", {"class": "err", id: "e_" + f.key}));
    return wrap;
  }
  // a secret shows only whether one is stored (GET /api/settings: <key>_set), and Clear if so
  function secretState(f) {
    var set = SB.settings()[f.key + "_set"], c = cleared[f.key], b = $("c_" + f.key);
    $("s_" + f.key).placeholder = c ? "cleared when you save" : set ? "set (leave empty to keep)" : "not set";
    b.hidden = !set; b.textContent = c ? "Undo" : "Clear";
    b.setAttribute("aria-label", b.textContent + " " + (LABELS[f.key] || words(f.key)));
  }
  function fill() {
    var settings = SB.settings();
    cleared = {};
    schema.forEach(function (f) {
      var inp = $("s_" + f.key), v = settings[f.key];
      if (!inp) return;
      if (inp.type === "checkbox") inp.checked = !!v;
      else inp.value = f.secret || v === undefined || v === null ? "" : v;
      if (f.secret) secretState(f);
    });
    validate(); txt("smsg", ""); txt("sgerr", "");
  }
  function read(f) {
    var inp = $("s_" + f.key);
    if (inp.type === "checkbox") return inp.checked;
    if (inp.type === "number") return inp.value.trim() === "" ? NaN : Number(inp.value);
    var ch = choicesOf(f);
    if (ch && typeof ch[0] === "number") return Number(inp.value);
    return inp.value;
  }
  function fieldError(f, v) {
    var ch = choicesOf(f);
    if (ch && ch.map(String).indexOf(String(v)) < 0) return "choose one of " + ch.join(", ");
    if (isNum(f)) {
      if (typeof v !== "number" || isNaN(v)) return "a number is required";
      if (/int/.test(f.type || "") && v % 1) return "a whole number is required";
      if (f.min !== undefined && f.min !== null && v < f.min) return "must be at least " + f.min;
      if (f.max !== undefined && f.max !== null && v > f.max) return "must be at most " + f.max;
    }
    if (typeof v === "string") {
      if (f.max_len && v.length > f.max_len) return "at most " + f.max_len + " characters";
      var minl = f.secret && v === "" ? 0 : f.min_len;
      if (minl && v.length < minl) return "at least " + minl + " character" + (minl > 1 ? "s" : "");
      if (f.pattern && v && !new RegExp("^(?:" + f.pattern + ")$").test(v)) return "invalid format";
    }
    if (f.key === "bms_mac" && v && !/^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$/.test(v)) return "format AA:BB:CC:DD:EE:FF";
    if (f.key === "hostname" && !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(v)) return "a-z, 0-9 and - (not at either end)";
    return "";
  }
  // The server's cross-field rules, mirrored so the owner sees them before saving.
  var RULES = [
    [["min_soc", "max_soc"], function (s) { return s.min_soc <= s.max_soc - 5; }, "min_soc", "must be at least 5 below the stop level"],
    [["temp_min_c", "temp_hyst_c", "temp_max_c"], function (s) { return s.temp_min_c + 2 * s.temp_hyst_c < s.temp_max_c; }, "temp_max_c", "must exceed the lowest temperature + 2 × the margin"],
    [["stale_s", "poll_interval_s"], function (s) { return s.stale_s >= 2 * s.poll_interval_s; }, "stale_s", "must be at least twice the read interval"],
    [["led_pin", "relay_pin"], function (s) { return s.led_pin !== s.relay_pin; }, "led_pin", "must differ from the relay pin"]
  ];
  function validate() {
    var vals = {}, errs = {}, first = null;
    schema.forEach(function (f) { vals[f.key] = read(f); var e = fieldError(f, vals[f.key]); if (e) errs[f.key] = e; });
    RULES.forEach(function (r) {
      var have = r[0].every(function (k) { return vals[k] !== undefined && !errs[k]; });
      if (have && !r[1](vals) && !errs[r[2]]) errs[r[2]] = r[3];
    });
    schema.forEach(function (f) {
      txt("e_" + f.key, errs[f.key] || "");
      $("f_" + f.key).classList.toggle("bad", !!errs[f.key]);
      if (errs[f.key] && !first) first = f.key;
    });
    return first ? {first: first, n: Object.keys(errs).length} : vals;
  }
  // open the field's section, bring it to the middle of the screen and put the cursor in it
  function goTo(key) {
    var inp = $("s_" + key);
    inp.closest("details").open = true;
    inp.scrollIntoView({block: "center"});
    inp.focus({preventScroll: true});
  }
  function changed(vals) {
    var out = {}, n = 0, settings = SB.settings();
    schema.forEach(function (f) {
      var v = vals[f.key];
      // a secret: a typed value replaces it, Clear sends null (an empty field keeps it)
      if (f.secret ? v !== "" || cleared[f.key] : v !== settings[f.key]) { out[f.key] = v === "" && f.secret ? null : v; n++; }
    });
    return n ? out : null;
  }
  function load() {
    return Promise.all([SB.api("GET", "/api/settings/schema"), SB.api("GET", "/api/settings")]).then(function (r) {
      schema = normSchema(r[0]); SB.setSettings(r[1].settings || r[1]);
      build();
    }, function (e) { txt("sgerr", "Could not load settings: " + e.message); });
  }
  SB.ensureSettings = function () { return schema.length ? Promise.resolve() : load(); };
  SB.fillSettings = function () { if (schema.length) fill(); };
  SB.loaders.settings = SB.ensureSettings;
  $("sreset").addEventListener("click", fill);
  $("sform").addEventListener("submit", function (e) {
    e.preventDefault();
    txt("sgerr", ""); txt("smsg", "");
    var vals = validate();
    if (vals.first) {
      txt("sgerr", (vals.n > 1 ? vals.n + " fields need a fix: " : "Fix: ") + (LABELS[vals.first] || words(vals.first)));
      goTo(vals.first);
      return;
    }
    var diff = changed(vals);
    if (!diff) { txt("smsg", "Nothing changed."); return; }
    SB.api("PUT", "/api/settings", diff).then(function () {
      return SB.api("GET", "/api/settings").then(function (s) { SB.setSettings(s.settings || s); });
    }).then(function () { fill(); txt("smsg", "Saved."); SB.pollStatus(); }, function (err) {
      if (err.field && $("e_" + err.field)) {
        txt("e_" + err.field, err.message);
        $("f_" + err.field).classList.add("bad");
        goTo(err.field);
      }
      txt("sgerr", "Not saved: " + (err.field ? (LABELS[err.field] || words(err.field)) + ": " : "") + err.message);
    });
  });

  // MQTT and alerts (groups a newer firmware adds): the connection state, a test alert
  function mqttState(s) {
    var box = $("mqttstate"), m = s && s.mqtt;
    if (!box) return;
    if (!m) { box.textContent = "MQTT: no state reported"; return; }
    box.textContent = "MQTT: " + (!m.enabled ? "off" : words(m.state || "?") + (m.broker ? " · " + m.broker : "")) + (m.error ? " · " + m.error : "");
    box.className = "full big " + (m.enabled && m.state === "connected" ? "ok" : m.error ? "err" : "");
  }
  SB.hooks.push(mqttState);
  function testAlert() {
    txt("amsg", "Sending…");
    SB.api("POST", "/api/alerts/test", {}).then(function (r) {
      txt("amsg", r.sent ? "Sent: check the receiving end." : "Not sent" + (r.error ? ": " + r.error : "."));
    }, function (e) { txt("amsg", "Not sent: " + e.message); });
  }
})();
