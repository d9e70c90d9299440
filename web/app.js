"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var status = null, settings = {}, schema = [], schemaByKey = {}, lastHistory = null;
  var UNITS = {degC: "°C"};
  var LABELS = {bms_protocol: "Protocol", bms_mac: "MAC address (empty: first found)", bms_name: "Name",
    bms_mode: "Connection", poll_interval_s: "Poll interval", max_soc: "Stop charging at SOC",
    min_soc: "Restart charging below SOC", tail_current_c: "Full when current below", eoc_max_min: "Max end-of-charge time",
    cell_max_v: "Stop at cell voltage", charge_timeout_h: "Charge timeout", timeout_rest_min: "Rest after a timeout",
    temp_min_c: "Min charge temperature", temp_max_c: "Max charge temperature", temp_hyst_c: "Temperature hysteresis",
    stale_s: "Data stale after", full_every_days: "Full charge every (0: never)", min_switch_s: "Min time between switches",
    capacity_ah: "Pack capacity (0: from the BMS)", charger_a: "Charger current (0: measured)",
    full_cell_v: "Full at average cell voltage", recharge_cell_v: "Recharge below cell voltage",
    top_balance_min: "Top balance time", temp_sensors_required: "Pack has temperature sensors",
    max_charge_a: "Max charge current (0: 1 C)", relay_stuck_a: "Stuck-relay current (0: off)",
    window_start_min: "Charge window start (min of day)", window_end_min: "Charge window end (= start: always)",
    tz_offset_min: "Local time offset from UTC",
    relay_pin: "Relay GPIO", relay_active_low: "Relay active low", led_pin: "Status LED GPIO (-1: none)",
    wifi_ssid: "WiFi network", wifi_password: "WiFi password", hostname: "Hostname"};
  var GROUP_TITLES = {bms: "BMS", charge: "Charging", hardware: "Hardware", network: "Network"};

  // --- helpers -----------------------------------------------------------
  function api(method, url, body) {
    var opt = {method: method, credentials: "same-origin", headers: {}};
    if (body !== undefined) {
      opt.headers["Content-Type"] = "application/json";
      opt.body = JSON.stringify(body);
    }
    return fetch(url, opt).then(function (r) {
      if (r.status === 401) { location.href = "/login"; throw new Error("Not logged in"); }
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) {
          var e = new Error(j.error || ("HTTP " + r.status));
          e.field = j.field; e.status = r.status;
          throw e;
        }
        return j;
      });
    });
  }
  function txt(id, v) { $(id).textContent = v; }
  function num(v, d) { return typeof v === "number" && isFinite(v) ? v.toFixed(d) : "–"; }
  function dur(s) {
    if (typeof s !== "number") return "–";
    s = Math.max(0, Math.round(s));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return Math.round(s / 86400) + " d";
  }
  function words(v) { return v === null || v === undefined || v === "" ? "–" : String(v).replace(/_/g, " "); }
  function describe(v) {
    if (v === null || v === undefined || v === "") return "–";
    if (typeof v !== "object") return words(v);
    var out = [];
    for (var k in v) if (v[k] !== null && v[k] !== undefined) out.push(words(k) + ": " + (typeof v[k] === "number" && /_s$/.test(k) ? dur(v[k]) : words(v[k])));
    return out.join(", ") || "–";
  }
  function pill(id, text, cls) { var e = $(id); e.textContent = text; e.className = "pill " + cls; }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }

  // --- tabs --------------------------------------------------------------
  var loaders = {};
  function showTab() {
    var id = (location.hash || "#dash").slice(1);
    if (!$(id) || $(id).tagName !== "SECTION") id = "dash";
    var secs = document.querySelectorAll("main>section");
    for (var i = 0; i < secs.length; i++) secs[i].classList.toggle("hide", secs[i].id !== id);
    var tabs = document.querySelectorAll("#tabs a");
    for (i = 0; i < tabs.length; i++) {
      var on = tabs[i].getAttribute("href") === "#" + id;
      tabs[i].classList.toggle("on", on);
      if (on && tabs[i].scrollIntoView) tabs[i].scrollIntoView({block: "nearest", inline: "nearest"});
    }
    if (loaders[id]) loaders[id]();
    if (id === "dash" && lastHistory) drawChart(lastHistory);
  }
  window.addEventListener("hashchange", showTab);

  // --- dashboard ---------------------------------------------------------
  function renderStatus(s) {
    status = s;
    var b = s.bms || {}, c = s.charger || {}, d = s.device || {};
    var has = typeof b.soc === "number";
    txt("soc", has ? Math.round(b.soc) : "–");
    $("socbar").style.width = (has ? Math.max(0, Math.min(100, b.soc)) : 0) + "%";
    txt("volt", num(b.voltage, 2) + " V");
    txt("amp", num(b.current, 2) + " A");
    txt("power", typeof b.voltage === "number" && typeof b.current === "number" ? (b.voltage * b.current).toFixed(0) + " W" : "–");
    txt("cap", typeof b.remaining_ah === "number" ? num(b.remaining_ah, 1) + " / " + num(b.nominal_ah, 0) + " Ah" : "–");
    txt("cycles", b.cycles === undefined || b.cycles === null ? "–" : b.cycles);
    pill("relay", c.relay ? "ON" : "OFF", c.relay ? "on" : "off");
    txt("cstate", words(c.state));
    txt("creason", words(c.reason));
    txt("csince", typeof c.since_s === "number" ? dur(c.since_s) + " ago" : "–");
    txt("cnext", describe(c.next));
    var o = c.override;
    txt("covr", o && o.mode && o.mode !== "auto" ? o.mode + (typeof o.remaining_min === "number" ? " for " + Math.ceil(o.remaining_min) + " min more" : "") : "auto");
    var al = s.alarms || [];
    txt("calarms", al.length ? al.map(function (a) { return a.message + (a.latched ? " (clear it once fixed)" : ""); }).join("; ") : "none");
    $("calarms").style.color = al.length ? "var(--bad)" : "";
    $("aclear").classList.toggle("hide", !al.length);
    renderCells(b.cells || []);
    txt("temps", (b.temperatures || []).length ? b.temperatures.map(function (t) { return num(t, 1) + " °C"; }).join(", ") : "–");
    txt("fets", b.charge_fet === undefined ? "–" : "charge " + (b.charge_fet ? "on" : "off") + ", discharge " + (b.discharge_fet ? "on" : "off"));
    var f = b.faults || [];
    txt("faults", f.length ? f.map(words).join(", ") : "none");
    $("faults").style.color = f.length ? "var(--bad)" : "";
    txt("link", b.connected ? "connected" : "disconnected");
    txt("age", typeof b.age_s === "number" ? dur(b.age_s) : "no data");
    var st = b.stats || {}, errs = [];
    if (st.polls) errs.push(st.ok + "/" + st.polls + " polls ok");
    for (var k in st) if (/^(errors|timeouts|reconnects|bad_frames|failures|last_error)$/.test(k) && st[k]) errs.push(words(k) + ": " + st[k]);
    txt("lerrs", errs.length ? errs.join(", ") : "none");
    pill("conn", b.connected ? "BMS ok" : "BMS offline", b.connected ? "on" : "bad");
    txt("ver", d.version || "–");
    txt("up", dur(d.uptime_s));
    txt("heap", typeof d.free_heap === "number" ? Math.round(d.free_heap / 1024) + " KB" : "–");
    txt("wstat", wifiText(d.wifi));
    var ban = [];
    if (d.safe_mode) ban.push("SAFE MODE: charging disabled after repeated crashes");
    if (d.setup_mode) ban.push("Setup mode");
    if (d.overrides && d.overrides.modules && d.overrides.modules.length) ban.push("Running " + d.overrides.modules.length + " module(s) from the filesystem, not the image (see Firmware)");
    if (f.length) ban.push("BMS fault: " + f.map(words).join(", "));
    if (al.length) ban.push("Alarm: " + al.map(function (a) { return words(a.name); }).join(", "));
    $("banner").textContent = ban.join(" · ");
    $("banner").classList.toggle("hide", !ban.length);
    renderFirmware(d.ota || {});
  }
  function wifiText(w) {
    if (!w) return "–";
    if (w.mode === "ap") return "access point " + (w.ap_ssid || "");
    return (w.connected ? "connected to " : "not connected to ") + (w.ssid || "?") +
      (w.ip ? " (" + w.ip + ")" : "") + (typeof w.rssi === "number" ? " " + w.rssi + " dBm" : "");
  }
  function renderCells(cells) {
    var box = clear($("cells"));
    if (!cells.length) { txt("cellsum", ""); return; }
    var lo = Math.min.apply(null, cells), hi = Math.max.apply(null, cells);
    var base = Math.min(3.0, lo - 0.05), top = Math.max(3.65, hi);
    txt("cellsum", "min " + lo.toFixed(3) + " · max " + hi.toFixed(3) + " · Δ " + Math.round((hi - lo) * 1000) + " mV");
    cells.forEach(function (v, i) {
      var c = el("div", {"class": "cell" + (hi - lo > 0.005 ? (v === hi ? " hi" : v === lo ? " lo" : "") : ""), title: "cell " + (i + 1) + ": " + v.toFixed(3) + " V"});
      c.appendChild(el("span", {}, v.toFixed(cells.length > 16 ? 2 : 3)));
      var bar = el("i");
      bar.style.height = Math.max(2, (v - base) / (top - base) * 100) + "%";
      c.appendChild(bar);
      c.appendChild(el("span", {}, i + 1));
      box.appendChild(c);
    });
  }

  // History: accepts {points|samples|history: [...]}, column form {t:[], soc:[], ...} or a bare array;
  // each sample [t, soc, v, a] or {t, soc, voltage, current}.
  function normHistory(h) {
    var list = Array.isArray(h) ? h : (h.points || h.samples || h.history || h.series || null), out = [];
    var pick = function (o, names) { for (var i = 0; i < names.length; i++) if (o[names[i]] !== undefined) return o[names[i]]; };
    if (list && !Array.isArray(list)) h = list, list = null;
    if (!list && h && typeof h === "object") {
      var t = pick(h, ["t", "time", "times"]) || [], soc = pick(h, ["soc"]) || [], v = pick(h, ["voltage", "v"]) || [], a = pick(h, ["current", "a"]) || [];
      for (var i = 0; i < soc.length; i++) out.push({t: t[i], soc: soc[i], v: v[i], a: a[i]});
    } else if (list) {
      list.forEach(function (p) {
        if (Array.isArray(p)) out.push({t: p[0], soc: p[1], v: p[2], a: p[3]});
        else if (p) out.push({t: pick(p, ["t", "time", "ts", "up_s"]), soc: p.soc, v: pick(p, ["voltage", "v"]), a: pick(p, ["current", "a"])});
      });
    }
    var step = (h && (h.interval_s || h.step_s)) || 60, n = out.length;
    out.forEach(function (p, i) { if (typeof p.t !== "number") p.t = (i - n + 1) * step; });
    return out;
  }
  function drawChart(points) {
    var cv = $("chart"), dpr = window.devicePixelRatio || 1, w = cv.clientWidth, h = 300;
    if (!w) return;
    cv.width = w * dpr; cv.height = h * dpr; cv.style.height = h + "px";
    var g = cv.getContext("2d"), css = getComputedStyle(document.documentElement);
    var color = function (n) { return css.getPropertyValue(n).trim() || "#888"; };
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = "12px system-ui,sans-serif";
    if (points.length < 2) { txt("chartnote", "Collecting data: the chart fills in as minutes pass."); }
    else txt("chartnote", points.length + " samples");
    var t1 = points.length ? points[points.length - 1].t : 0, t0 = Math.min(points.length ? points[0].t : 0, t1 - 600);
    var left = 46, right = w - 8, lanes = [["soc", "SOC %", "--soc", 0, 100], ["v", "Voltage V", "--volt"], ["a", "Current A", "--amp"]];
    var laneH = (h - 22) / 3;
    lanes.forEach(function (ln, li) {
      var key = ln[0], y0 = li * laneH + 4, y1 = y0 + laneH - 10, vals = points.map(function (p) { return p[key]; }).filter(function (x) { return typeof x === "number"; });
      var lo = ln[3], hi = ln[4];
      if (lo === undefined) {
        lo = Math.min.apply(null, vals.length ? vals : [0]); hi = Math.max.apply(null, vals.length ? vals : [1]);
        if (key === "a") { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
        var pad = (hi - lo) * 0.1 || 0.5; lo -= pad; hi += pad;
      }
      var Y = function (v) { return y1 - (v - lo) / (hi - lo) * (y1 - y0); };
      var X = function (t) { return left + (t - t0) / (t1 - t0 || 1) * (right - left); };
      g.strokeStyle = color("--line"); g.lineWidth = 1; g.strokeRect(left, y0, right - left, y1 - y0);
      if (key === "a" && lo < 0 && hi > 0) { g.beginPath(); g.moveTo(left, Y(0)); g.lineTo(right, Y(0)); g.stroke(); }
      g.fillStyle = color("--mut");
      g.textAlign = "right"; g.textBaseline = "top"; g.fillText(fmtAxis(hi), left - 4, y0);
      g.textBaseline = "bottom"; g.fillText(fmtAxis(lo), left - 4, y1);
      g.strokeStyle = color(ln[2]); g.lineWidth = 2; g.beginPath();
      var started = false;
      points.forEach(function (p) {
        if (typeof p[key] !== "number") { started = false; return; }
        if (started) g.lineTo(X(p.t), Y(p[key])); else g.moveTo(X(p.t), Y(p[key]));
        started = true;
      });
      g.stroke();
      // label last, on a patch of card colour so the line never hides it
      g.textAlign = "left"; g.textBaseline = "top";
      g.fillStyle = color("--card"); g.fillRect(left + 3, y0 + 2, g.measureText(ln[1]).width + 6, 15);
      g.fillStyle = color(ln[2]); g.fillText(ln[1], left + 6, y0 + 3);
    });
    g.fillStyle = color("--mut"); g.textBaseline = "bottom";
    g.textAlign = "left"; g.fillText("-" + dur(t1 - t0), left, h);
    g.textAlign = "right"; g.fillText("now", right, h);
  }
  function fmtAxis(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1); }

  // One request at a time: a slow device must not pile up connections.
  var statusBusy = false;
  function pollStatus() {
    if (statusBusy) return Promise.resolve();
    statusBusy = true;
    return api("GET", "/api/status").then(renderStatus, function () {
      pill("conn", "device offline", "bad");
    }).then(function () { statusBusy = false; });
  }
  function pollHistory() {
    return api("GET", "/api/history").then(function (h) {
      lastHistory = normHistory(h);
      if (!$("dash").classList.contains("hide")) drawChart(lastHistory);
    }, function () {});
  }
  window.addEventListener("resize", function () { if (lastHistory) drawChart(lastHistory); });

  function relay(body) {
    txt("oerr", "");
    return api("POST", "/api/relay", body).then(pollStatus, function (e) { txt("oerr", e.message); });
  }
  $("ovr").addEventListener("submit", function (e) {
    e.preventDefault();
    var m = parseInt($("omin").value, 10);
    if (!(m >= 1 && m <= 1440)) { txt("oerr", "Minutes must be 1..1440"); return; }
    relay({mode: $("omode").value, minutes: m});
  });
  $("oauto").addEventListener("click", function () { relay({mode: "auto"}); });
  $("aclear").addEventListener("click", function () {
    txt("oerr", "");
    api("POST", "/api/alarms/clear", {}).then(pollStatus, function (e) { txt("oerr", e.message); });
  });
  $("treset").addEventListener("click", function () {
    txt("oerr", "");
    api("POST", "/api/timeout/reset", {}).then(pollStatus, function (e) { txt("oerr", e.message); });
  });
  $("logout").addEventListener("click", function () {
    api("POST", "/api/logout", {}).then(null, function () {}).then(function () { location.href = "/login"; });
  });

  // --- settings ----------------------------------------------------------
  // Schema: a list of {key|name, type, default, min, max, choices, secret, ...} or a dict keyed by name.
  function normSchema(s) {
    if (s && !Array.isArray(s)) s = s.schema || s.keys || s.fields || s;
    var list = [];
    if (Array.isArray(s)) list = s.map(function (f) { return Object.assign({}, f, {key: f.key || f.name}); });
    else for (var k in s) list.push(Object.assign({}, s[k], {key: k}));
    list = list.filter(function (f) { return f.key && f.key !== "admin_hash" && f.writable !== false; });
    schemaByKey = {};
    list.forEach(function (f) { schemaByKey[f.key] = f; });
    return list;
  }
  var GROUPS = [["bms", /^bms_|^poll_/], ["charge", /soc|tail|eoc|cell_|timeout|temp_|stale|full_|switch/], ["hardware", /pin|relay_|led/], ["network", /wifi|host/]];
  function groupOf(k) { var f = schemaByKey[k]; if (f && f.group) return f.group; for (var i = 0; i < GROUPS.length; i++) if (GROUPS[i][1].test(k)) return GROUPS[i][0]; return "other"; }
  function choicesOf(f) { return f.choices || f.enum || f.options || null; }
  function isNum(f) { return /int|float|num/.test(f.type || "") || (typeof f["default"] === "number" && !choicesOf(f)); }
  function isBool(f) { return /bool/.test(f.type || "") || typeof f["default"] === "boolean"; }

  function buildSettings() {
    var box = clear($("sfields")), groups = {};
    var order = GROUPS.map(function (g) { return g[0]; });
    schema.forEach(function (f) {
      var g = groupOf(f.key);
      if (order.indexOf(g) < 0) order.push(g);
      (groups[g] = groups[g] || []).push(f);
    });
    order.concat(["other"]).forEach(function (g) {
      if (!groups[g]) return;
      box.appendChild(el("h3", {}, GROUP_TITLES[g] || words(g)));
      groups[g].forEach(function (f) {
        var wrap = el("div", {id: "f_" + f.key}), id = "s_" + f.key, inp, ch = choicesOf(f);
        var lab = el("label", {"for": id}, f.label || LABELS[f.key] || words(f.key));
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
          if (f.maxlen || f.max_len) inp.maxLength = f.max_len || f.maxlen;
        }
        inp.name = f.key;
        inp.addEventListener("input", function () { validate(); });
        wrap.appendChild(inp);
        var hint = [];
        if (f.min !== undefined && f.min !== null && isNum(f)) hint.push(f.min + " … " + f.max);
        if (f.help || f.description) hint.push(f.help || f.description);
        if (f["default"] !== undefined && f["default"] !== "" && !f.secret) hint.push("default " + f["default"]);
        wrap.appendChild(el("div", {"class": "mut"}, hint.join(" · ")));
        wrap.appendChild(el("div", {"class": "err", id: "e_" + f.key}));
        box.appendChild(wrap);
      });
    });
    fillSettings();
  }
  function fillSettings() {
    schema.forEach(function (f) {
      var inp = $("s_" + f.key), v = settings[f.key];
      if (!inp) return;
      if (inp.type === "checkbox") inp.checked = !!v;
      else inp.value = f.secret || v === undefined || v === null ? "" : v;
      if (f.secret) inp.placeholder = settings[f.key + "_set"] ? "set (leave empty to keep)" : "not set";
    });
    validate(); txt("smsg", "");
  }
  function readField(f) {
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
    if (isNum(f) && !isBool(f)) {
      if (typeof v !== "number" || isNaN(v)) return "a number is required";
      if (/int/.test(f.type || "") && v % 1) return "a whole number is required";
      if (f.min !== undefined && f.min !== null && v < f.min) return "must be at least " + f.min;
      if (f.max !== undefined && f.max !== null && v > f.max) return "must be at most " + f.max;
    }
    if (typeof v === "string") {
      var maxl = f.max_len || f.maxlen || f.max_length;
      if (maxl && v.length > maxl) return "at most " + maxl + " characters";
      var minl = f.secret ? (v === "" ? 0 : f.min_len_if_set || f.min_len) : f.min_len;
      if (minl && v.length < minl) return "at least " + minl + " character" + (minl > 1 ? "s" : "");
      if (f.pattern && !new RegExp("^(?:" + f.pattern + ")$").test(v)) return "invalid format";
    }
    if (f.key === "bms_mac" && v && !/^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$/.test(v)) return "format AA:BB:CC:DD:EE:FF";
    if (f.key === "hostname" && !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(v)) return "a-z, 0-9 and - (not at either end)";
    if (f.key === "wifi_password" && v && (v.length < 8 || v.length > 63)) return "8..63 characters";
    if (f.key === "relay_pin" && ((v >= 6 && v <= 11) || v >= 34)) return "not an output-capable GPIO";
    return "";
  }
  // The server's cross-field rules, mirrored so the user sees them before saving.
  var RULES = [
    [["min_soc", "max_soc"], function (s) { return s.min_soc <= s.max_soc - 5; }, "min_soc", "must be at least 5 below max SOC"],
    [["temp_min_c", "temp_hyst_c", "temp_max_c"], function (s) { return s.temp_min_c + 2 * s.temp_hyst_c < s.temp_max_c; }, "temp_max_c", "must exceed temp min + 2 × hysteresis"],
    [["stale_s", "poll_interval_s"], function (s) { return s.stale_s >= 2 * s.poll_interval_s; }, "stale_s", "must be at least 2 × poll interval"],
    [["led_pin", "relay_pin"], function (s) { return s.led_pin !== s.relay_pin; }, "led_pin", "must differ from the relay pin"]
  ];
  function validate() {
    var vals = {}, errs = {}, ok = true;
    schema.forEach(function (f) { vals[f.key] = readField(f); var e = fieldError(f, vals[f.key]); if (e) errs[f.key] = e; });
    RULES.forEach(function (r) {
      var have = r[0].every(function (k) { return vals[k] !== undefined && !errs[k]; });
      if (have && !r[1](vals) && !errs[r[2]]) errs[r[2]] = r[3];
    });
    schema.forEach(function (f) {
      txt("e_" + f.key, errs[f.key] || "");
      $("f_" + f.key).classList.toggle("bad", !!errs[f.key]);
      if (errs[f.key]) ok = false;
    });
    return ok ? vals : null;
  }
  function changed(vals) {
    var out = {}, n = 0;
    schema.forEach(function (f) {
      var v = vals[f.key];
      if (f.secret ? v !== "" : v !== settings[f.key]) { out[f.key] = v; n++; }
    });
    return n ? out : null;
  }
  function loadSettings() {
    return Promise.all([api("GET", "/api/settings/schema"), api("GET", "/api/settings")]).then(function (r) {
      schema = normSchema(r[0]); settings = r[1].settings || r[1];
      buildSettings();
    }, function (e) { txt("sgerr", "Could not load settings: " + e.message); });
  }
  loaders.settings = function () { if (!schema.length) loadSettings(); };
  $("sreset").addEventListener("click", fillSettings);
  $("sform").addEventListener("submit", function (e) {
    e.preventDefault();
    txt("sgerr", ""); txt("smsg", "");
    var vals = validate();
    if (!vals) { txt("sgerr", "Fix the marked fields first."); return; }
    var diff = changed(vals);
    if (!diff) { txt("smsg", "Nothing changed."); return; }
    api("PUT", "/api/settings", diff).then(function (r) {
      settings = (r && (r.settings || (r.ok === undefined && r))) || settings;
      for (var k in diff) if (!(k in settings) || settings[k] === undefined) settings[k] = diff[k];
      return api("GET", "/api/settings").then(function (s) { settings = s.settings || s; });
    }).then(function () { fillSettings(); txt("smsg", "Saved."); }, function (err) {
      if (err.field && $("e_" + err.field)) {
        txt("e_" + err.field, err.message);
        $("f_" + err.field).classList.add("bad");
        $("s_" + err.field).focus();
      }
      txt("sgerr", "Not saved: " + (err.field ? words(err.field) + ": " : "") + err.message);
    });
  });

  // --- wifi --------------------------------------------------------------
  loaders.wifi = function () { txt("wcur", status ? wifiText(status.device && status.device.wifi) : ""); };
  $("wscan").addEventListener("click", function () {
    var b = $("wscan"), list = clear($("wlist"));
    b.disabled = true; txt("werr", "");
    api("GET", "/api/wifi/scan").then(function (r) {
      var nets = Array.isArray(r) ? r : (r.networks || r.results || []);
      if (!nets.length) list.appendChild(el("li", {}, "No networks found"));
      nets.sort(function (a, b) { return (b.rssi || -999) - (a.rssi || -999); }).forEach(function (n) {
        var li = el("li"), pick = el("button", {"class": "sec", type: "button"}, "Use");
        li.appendChild(el("span", {}, n.ssid + (n.secure === false ? " (open)" : "") + (typeof n.rssi === "number" ? " · " + n.rssi + " dBm" : "")));
        pick.addEventListener("click", function () { $("wssid").value = n.ssid; $("wpw").focus(); });
        li.appendChild(pick); list.appendChild(li);
      });
    }, function (e) { txt("werr", e.message); }).then(function () { b.disabled = false; });
  });
  $("wform").addEventListener("submit", function (e) {
    e.preventDefault();
    var ssid = $("wssid").value, pw = $("wpw").value;
    txt("werr", ""); txt("wmsg", "");
    if (!ssid || ssid.length > 32) { txt("werr", "SSID: 1..32 characters"); return; }
    if (pw && (pw.length < 8 || pw.length > 63)) { txt("werr", "Password: empty (open network) or 8..63 characters"); return; }
    api("POST", "/api/wifi", {ssid: ssid, password: pw}).then(function () {
      txt("wmsg", "Saved; the device is connecting to " + ssid + ".");
    }, function (err) { txt("werr", err.message); });
  });

  // --- bms ---------------------------------------------------------------
  function bmsCurrent() {
    var s = settings;
    txt("bcur", s.bms_mac !== undefined ? "Configured: " + (s.bms_mac || "any") + " · protocol " + (s.bms_protocol || "auto") + (s.bms_name ? " · " + s.bms_name : "") : "");
  }
  loaders.bms = function () {
    if (!schema.length) loadSettings().then(bmsCurrent); else bmsCurrent();
    pollCapture();
  };
  function bmsScan(all) {
    var b = $(all ? "bscanall" : "bscan"), list = clear($("blist"));
    b.disabled = true; txt("berr", ""); txt("bmsg", "Scanning…");
    api("GET", "/api/bms/scan" + (all ? "?all=1" : "")).then(function (r) {
      var devs = Array.isArray(r) ? r : (r.devices || r.results || []);
      txt("bmsg", devs.length + " found");
      devs.forEach(function (d) {
        var li = el("li"), use = el("button", {type: "button"}, "Use");
        var proto = d.family || d.protocol || "auto";
        li.appendChild(el("span", {}, (d.name || "(no name)") + " · " + (d.mac || d.addr) + " · " + words(proto) + (typeof d.rssi === "number" ? " · " + d.rssi + " dBm" : "")));
        use.addEventListener("click", function () {
          var body = {bms_mac: (d.mac || d.addr).toUpperCase(), bms_protocol: proto};
          if (d.name !== undefined) body.bms_name = String(d.name || "").slice(0, 32);
          api("PUT", "/api/settings", body).then(function () { return api("GET", "/api/settings"); }).then(function (s) {
            settings = s.settings || s; bmsCurrent(); if (schema.length) fillSettings();
            txt("bmsg", "Using " + body.bms_mac);
          }, function (err) { txt("berr", err.message); });
        });
        var cap = el("button", {type: "button", "class": "sec"}, "Capture");
        cap.addEventListener("click", function () { $("cmac").value = (d.mac || d.addr).toUpperCase(); $("creq").focus(); });
        if (d.family || d.protocol) li.appendChild(use);
        li.appendChild(cap); list.appendChild(li);
      });
    }, function (e) { txt("berr", e.message); txt("bmsg", ""); }).then(function () { b.disabled = false; });
  }
  $("bscan").addEventListener("click", function () { bmsScan(false); });
  $("bscanall").addEventListener("click", function () { bmsScan(true); });

  // capture mode for unknown packs: /api/bms/capture
  var capTimer = null;
  function captureText(c) {
    if (!c || c.state === "idle") return c && c.file_bytes ? "A capture file from before is on the device (" + c.file_bytes + " bytes)." : "No capture yet.";
    var t = {starting: "Starting: pausing the BMS link, finding " + c.mac + "…", running: "Recording " + c.mac + (c.name ? " (" + c.name + ")" : "") + ": " + c.elapsed_s + " of " + c.seconds + " s; the BMS link is paused and charging is off.",
      done: "Done: " + (c.end || ""), failed: "Failed: " + (c.error || "")}[c.state] || c.state;
    if (c.state !== "starting") t += " · " + c.notifications + " notifications, " + c.requests + " requests sent, " + c.subscribed + " characteristics listened to" + (c.lost ? ", " + c.lost + " lost" : "") + " · file " + (c.file_bytes || 0) + " of " + c.cap_bytes + " bytes" + (c.full ? " (full)" : "");
    return t;
  }
  function pollCapture() {
    return api("GET", "/api/bms/capture").then(function (c) {
      var busy = c.state === "starting" || c.state === "running";
      txt("cstate", captureText(c));
      $("cfile").classList.toggle("hide", !c.file_bytes);
      $("cstart").disabled = busy; $("cstop").disabled = !busy; $("cerase").disabled = busy || !c.file_bytes;
      clearTimeout(capTimer);
      if (busy && !$("bms").classList.contains("hide")) capTimer = setTimeout(pollCapture, 2000);
    }, function (e) { txt("cerr", e.message); });
  }
  $("cform").addEventListener("submit", function (e) {
    e.preventDefault();
    txt("cerr", "");
    var mac = $("cmac").value.trim();
    if (!/^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$/.test(mac)) { txt("cerr", "MAC address: format AA:BB:CC:DD:EE:FF"); return; }
    var body = {mac: mac, every_s: Number($("cevery").value) || 5, seconds: Number($("csecs").value) || 60};
    if ($("creq").value.trim()) body.request_hex = $("creq").value.trim();
    api("POST", "/api/bms/capture", body).then(pollCapture, function (err) {
      txt("cerr", (err.field ? err.field.replace(/_/g, " ") + ": " : "") + err.message);
    });
  });
  $("cstop").addEventListener("click", function () { api("DELETE", "/api/bms/capture").then(pollCapture, function (e) { txt("cerr", e.message); }); });
  $("cerase").addEventListener("click", function () {
    if (!confirm("Erase the capture file on the device?")) return;
    api("DELETE", "/api/bms/capture").then(pollCapture, function (e) { txt("cerr", e.message); });
  });

  // --- firmware ----------------------------------------------------------
  function renderFirmware(o) {
    txt("frun", o.running_version || (status && status.device && status.device.version) || "–");
    txt("fprev", o.previous_version || "–");
    txt("fslot", o.running || "–");
    txt("fpend", o.pending_verify ? "yes (not yet confirmed healthy)" : "no");
    txt("fovr", overridesText(status && status.device && status.device.overrides));
  }
  // modules `make deploy` put on the device's filesystem, running instead of the image's copies
  function overridesText(v) {
    if (!v || v.error) return "–";
    var m = v.modules || [], f = v.failed || [], out = [];
    if (m.length) out.push(m.join(", ") + " (an OTA does not replace them; make undeploy removes them)");
    if (f.length) out.push("failed, the image's copy runs: " + f.join("; "));
    if (v.skipped) out.push("not loaded: " + v.skipped);
    return out.length ? out.join(" · ") : "none: the image runs as built";
  }
  $("fup").addEventListener("submit", function (e) {
    e.preventDefault();
    var file = $("ffile").files[0], prog = $("fprog"), btn = $("fup").querySelector("button");
    txt("ferr", ""); txt("fmsg", "");
    if (!file) { txt("ferr", "Choose a .bin file"); return; }
    if (!/\.bin$/i.test(file.name)) { txt("ferr", "Not a .bin firmware image"); return; }
    var x = new XMLHttpRequest();
    x.open("POST", "/api/ota");
    x.setRequestHeader("Content-Type", "application/octet-stream");
    prog.value = 0; prog.classList.remove("hide"); btn.disabled = true;
    x.upload.onprogress = function (ev) { if (ev.lengthComputable) prog.value = ev.loaded * 100 / ev.total; };
    x.onload = function () {
      var j = {};
      try { j = JSON.parse(x.responseText); } catch (err) { j = {}; }
      btn.disabled = false;
      if (x.status === 401) { location.href = "/login"; return; }
      if (x.status >= 200 && x.status < 300) { prog.value = 100; txt("fmsg", "Installed " + (j.version || "the image") + (j.slot ? " in " + j.slot : "") + (j.reboot === false ? "." : "; the device restarts now.")); }
      else txt("ferr", j.error || ("Upload failed: HTTP " + x.status));
    };
    x.onerror = function () { btn.disabled = false; txt("ferr", "Connection lost during upload"); };
    x.send(file);
  });
  $("furl").addEventListener("submit", function (e) {
    e.preventDefault();
    var url = $("uurl").value.trim(), sha = $("usha").value.trim().toLowerCase();
    txt("uerr", ""); txt("umsg", "");
    if (!/^https?:\/\/\S+$/.test(url)) { txt("uerr", "Enter an http:// URL"); return; }
    if (!/^[0-9a-f]{64}$/.test(sha)) { txt("uerr", "SHA-256 must be 64 hex digits"); return; }
    txt("umsg", "Downloading…");
    api("POST", "/api/ota/url", {url: url, sha256: sha}).then(function (j) {
      txt("umsg", "Installed " + (j.version || "the image") + (j.slot ? " in " + j.slot : "") + "; the device restarts now.");
    }, function (err) { txt("umsg", ""); txt("uerr", err.message); });
  });
  $("reboot").addEventListener("click", function () {
    if (!confirm("Reboot the device? The relay switches off while it restarts.")) return;
    api("POST", "/api/reboot", {}).then(function () { txt("rmsg", "Rebooting…"); }, function (e) { txt("rmsg", e.message); });
  });

  // --- event log ---------------------------------------------------------
  function loadEvents() {
    return api("GET", "/api/events").then(function (r) {
      var evs = (Array.isArray(r) ? r : (r.events || [])).slice();
      evs.sort(function (a, b) { return (b.seq || 0) - (a.seq || 0); });
      var ol = clear($("events"));
      if (!evs.length) ol.appendChild(el("li", {"class": "mut"}, "No events yet"));
      evs.forEach(function (ev) {
        var li = el("li"), when = ev.t ? new Date(ev.t * 1000).toLocaleString() : "up " + dur(ev.up_s);
        li.appendChild(el("span", {"class": "mut"}, when + " "));
        li.appendChild(el("b", {}, ev.kind || ""));
        li.appendChild(document.createTextNode(" " + (ev.msg || ev.message || "")));
        ol.appendChild(li);
      });
    }, function () {});
  }
  loaders.log = loadEvents;
  $("lrefresh").addEventListener("click", loadEvents);

  // --- polling: only while the page is visible ----------------------------
  var tick = 0;
  setInterval(function () {
    if (document.hidden) return;
    tick++;
    pollStatus();
    if (tick % 30 === 0) pollHistory();
    if (tick % 5 === 0 && !$("log").classList.contains("hide")) loadEvents();
  }, 2000);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) pollStatus().then(pollHistory); });
  // Requests one after another at start: the device serves few connections on a small heap.
  pollStatus().then(pollHistory).then(showTab);
})();
