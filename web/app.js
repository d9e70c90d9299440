"use strict";
// The web UI's core: API calls, tabs, the dashboard, live updates (GET /api/live, server-sent
// events; polling /api/status when a stream is refused or drops), WiFi, BMS and the event log.
// js/chart.js, js/settings.js and js/fw.js, served as one file after this one, add to SB.
(function () {
  var SB = window.SB = {hooks: []};
  var $ = SB.$ = function (id) { return document.getElementById(id); };
  var status = null, settings = {}, lastHistory = null, evs = [], lastSeq = 0;

  // --- helpers -----------------------------------------------------------
  function api(method, url, body, tries) {
    var opt = {method: method, credentials: "same-origin", headers: {}};
    if (body !== undefined) {
      opt.headers["Content-Type"] = "application/json";
      opt.body = JSON.stringify(body);
    }
    return fetch(url, opt).then(function (r) {
      if (r.status === 401) { location.href = "/login"; throw new Error("Not logged in"); }
      // the device answers 503 + Retry-After when it is short of memory for a moment: a read
      // is tried again (twice), as the device asks
      if (r.status === 503 && method === "GET" && (tries || 0) < 2) {
        return new Promise(function (ok) { setTimeout(ok, 1000 * (parseInt(r.headers.get("Retry-After"), 10) || 1)); })
          .then(function () { return api(method, url, body, (tries || 0) + 1); });
      }
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
  function cap1(s) { return s ? s.charAt(0).toUpperCase() + s.slice(1) : ""; }
  function pill(id, text, cls) { var e = $(id); e.textContent = text; e.className = "pill " + cls; }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  // The device clock: device second `up` as a time of day. Anchored at the last status (the
  // browser's clock minus the device's uptime), so the sim's fast clock reads the same here,
  // on the chart and in the log as in "2.5 h ago".
  SB.anchor = Date.now() / 1000;
  SB.uptime = 0;
  function hhmm(epoch) {
    var d = new Date(epoch * 1000);
    return ("0" + d.getHours()).slice(-2) + ":" + ("0" + d.getMinutes()).slice(-2);
  }
  SB.api = api; SB.txt = txt; SB.num = num; SB.dur = dur; SB.words = words; SB.el = el; SB.clear = clear;
  SB.hhmm = hhmm; SB.cap1 = cap1;
  SB.settings = function () { return settings; };
  SB.setSettings = function (s) { settings = s; };
  SB.status = function () { return status; };

  // --- tabs --------------------------------------------------------------
  var loaders = SB.loaders = {};
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
    if (id === "dash") redrawChart();
  }
  window.addEventListener("hashchange", showTab);
  SB.visible = function (id) { return !$(id).classList.contains("hide"); };

  // --- dashboard ---------------------------------------------------------
  var STATES = {startup: "Starting", charging: "Charging", balancing: "Balancing", resting: "Resting",
    timeout: "Charge timeout", fault: "Stopped (fault)", no_data: "No BMS data", override: "Manual override", paused: "Paused"};
  function flowText(b) {
    var a = b.current;
    if (typeof a !== "number") return null;
    return Math.abs(a) < 0.2 ? "Idle" : (a > 0 ? "Charging " : "Discharging ") + Math.abs(a).toFixed(1) + " A";
  }
  function renderStatus(s) {
    status = s;
    var b = s.bms || {}, c = s.charger || {}, d = s.device || {};
    if (typeof d.uptime_s === "number") { SB.uptime = d.uptime_s; SB.anchor = Date.now() / 1000 - d.uptime_s; }
    var has = typeof b.soc === "number";
    txt("soc", has ? Math.round(b.soc) : "–");
    $("socbar").style.width = (has ? Math.max(0, Math.min(100, b.soc)) : 0) + "%";
    var flow = c.flow || flowText(b);
    txt("flow", flow ? flow + (typeof b.voltage === "number" && Math.abs(b.current) >= 0.2 ? " · " + Math.abs(b.voltage * b.current).toFixed(0) + " W" : "") : "No reading yet");
    txt("volt", num(b.voltage, 2) + " V");
    txt("amp", typeof b.current === "number" ? num(b.current, 2) + " A (+ into the battery, − out)" : "–");
    txt("power", typeof b.voltage === "number" && typeof b.current === "number" ? Math.abs(b.voltage * b.current).toFixed(0) + " W " + (b.current >= 0 ? "in" : "out") : "–");
    txt("cap", typeof b.remaining_ah === "number" ? num(b.remaining_ah, 1) + " of " + num(b.nominal_ah, 0) + " Ah" : "–");
    txt("cycles", b.cycles === undefined || b.cycles === null ? "–" : b.cycles);
    pill("relay", c.relay ? "ON" : "OFF", c.relay ? "on" : "off");
    txt("csum", c.summary || STATES[c.state] || words(c.state));
    txt("cnext", c.next ? "Next: " + c.next : "");
    txt("cended", c.ended || "");
    txt("cst", STATES[c.state] ? STATES[c.state] + " (" + c.state + ")" : words(c.state));
    txt("creason", c.reason || "–");
    txt("csince", typeof c.since_s === "number" ? dur(c.since_s) + " ago (" + hhmm(SB.anchor + SB.uptime - c.since_s) + ")" : "–");
    var o = c.override;
    txt("covr", o && o.mode && o.mode !== "auto" ? "charger " + o.mode + (typeof o.remaining_min === "number" ? " for " + Math.ceil(o.remaining_min) + " min more" : "") : "auto");
    $("treset").classList.toggle("hide", c.state !== "timeout");
    var al = s.alarms || [];
    txt("calarms", al.length ? "Alarm: " + al.map(function (a) { return a.message + (a.latched ? " (clear it once fixed)" : ""); }).join("; ") : "");
    $("aclear").classList.toggle("hide", !al.length);
    renderCells(b.cells || []);
    txt("temps", (b.temperatures || []).length ? b.temperatures.map(function (t) { return num(t, 1) + " °C"; }).join(", ") : "–");
    txt("fets", b.charge_fet === undefined || b.charge_fet === null ? "–" : "charge " + (b.charge_fet ? "on" : "off") + ", discharge " + (b.discharge_fet ? "on" : "off"));
    var f = b.faults || [];
    txt("faults", f.length ? f.map(words).join(", ") : "none");
    $("faults").style.color = f.length ? "var(--bad)" : "";
    txt("link", b.connected ? "connected" : "disconnected");
    txt("age", typeof b.age_s === "number" ? dur(b.age_s) + " old" : "no data");
    var st = b.stats || {}, errs = [];
    if (st.polls) errs.push(st.ok + " of " + st.polls + " polls ok");
    for (var k in st) if (/^(errors|timeouts|reconnects|bad_frames|failures|last_error)$/.test(k) && st[k]) errs.push(words(k) + ": " + st[k]);
    txt("lerrs", errs.length ? errs.join(", ") : "none");
    pill("conn", b.connected ? "BMS ok" : "BMS offline", b.connected ? "on" : "bad");
    txt("ver", d.version || "–");
    txt("up", dur(d.uptime_s));
    txt("heap", typeof d.free_heap === "number" ? Math.round(d.free_heap / 1024) + " KB free (of a 96 KB heap; it rises and falls with each web request)" : "–");
    txt("wstat", wifiText(d.wifi));
    var ban = [];
    if (d.safe_mode) ban.push("SAFE MODE: charging disabled after repeated crashes");
    if (d.setup_mode) ban.push("Setup mode");
    if (d.overrides && d.overrides.modules && d.overrides.modules.length) ban.push("Running " + d.overrides.modules.length + " module(s) from the filesystem, not the image (see Firmware)");
    if (f.length) ban.push("BMS fault: " + f.map(words).join(", "));
    if (al.length) ban.push("Alarm: " + al.map(function (a) { return words(a.name); }).join(", "));
    $("banner").textContent = ban.join(" · ");
    $("banner").classList.toggle("hide", !ban.length);
    renderWifi(d.wifi);
    if (SB.visible("log")) renderEvents();
    SB.hooks.forEach(function (h) { h(s); });
  }
  SB.renderStatus = renderStatus;
  function wifiText(w) {
    if (!w || w.error) return "–";
    if (w.mode === "ap") return "access point " + (w.ap_ssid || "") + " (no router connection)";
    return (w.connected ? "connected to " : "not connected, trying ") + (w.ssid || "?") +
      (w.connected && w.ip ? " (" + w.ip + ")" : "") + (w.connected && typeof w.rssi === "number" ? " · signal " + w.rssi + " dBm" : "");
  }
  function renderCells(cells) {
    var box = clear($("cells"));
    if (!cells.length) { txt("cellsum", ""); return; }
    var lo = Math.min.apply(null, cells), hi = Math.max.apply(null, cells);
    var base = Math.min(3.0, lo - 0.05), top = Math.max(3.65, hi);
    txt("cellsum", "lowest " + lo.toFixed(3) + " V · highest " + hi.toFixed(3) + " V · spread " + Math.round((hi - lo) * 1000) + " mV");
    cells.forEach(function (v, i) {
      var c = el("div", {"class": "cell" + (hi - lo > 0.005 ? (v === hi ? " hi" : v === lo ? " lo" : "") : ""), title: "cell " + (i + 1) + ": " + v.toFixed(3) + " V"});
      c.appendChild(el("span", {}, v.toFixed(cells.length > 16 ? 2 : 3)));
      var bar = el("i");
      bar.style.height = Math.max(2, (v - base) / (top - base) * 100) + "%";
      c.appendChild(bar);
      c.appendChild(el("span", {}, "#" + (i + 1)));
      box.appendChild(c);
    });
  }
  function redrawChart() { if (lastHistory && SB.drawChart && SB.visible("dash")) SB.drawChart(lastHistory, evs); }
  SB.redrawChart = redrawChart;

  // One request at a time: a slow device must not pile up connections.
  var statusBusy = false;
  function pollStatus() {
    if (statusBusy) return Promise.resolve();
    statusBusy = true;
    return api("GET", "/api/status").then(renderStatus, function () {
      pill("conn", "device offline", "bad");
    }).then(function () { statusBusy = false; });
  }
  SB.pollStatus = pollStatus;
  function pollHistory() {
    return api("GET", "/api/history").then(function (h) { lastHistory = h; redrawChart(); }, function () {});
  }
  window.addEventListener("resize", redrawChart);

  function act(url, body) {
    txt("oerr", "");
    return api("POST", url, body).then(pollStatus, function (e) { txt("oerr", e.message); });
  }
  $("ovr").addEventListener("submit", function (e) {
    e.preventDefault();
    var m = parseInt($("omin").value, 10);
    if (!(m >= 1 && m <= 1440)) { txt("oerr", "Minutes must be 1..1440"); return; }
    act("/api/relay", {mode: $("omode").value, minutes: m});
  });
  $("oauto").addEventListener("click", function () { act("/api/relay", {mode: "auto"}); });
  $("aclear").addEventListener("click", function () { act("/api/alarms/clear", {}); });
  $("treset").addEventListener("click", function () { act("/api/timeout/reset", {}); });
  $("logout").addEventListener("click", function () {
    api("POST", "/api/logout", {}).then(null, function () {}).then(function () { location.href = "/login"; });
  });

  // --- wifi --------------------------------------------------------------
  function renderWifi(w) {
    txt("wcur", w ? cap1(wifiText(w)) : "");
    var host = settings.hostname || "smartbms";
    txt("wname", host);
  }
  loaders.wifi = function () { renderWifi(status && status.device && status.device.wifi); };
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
    if (!confirm("Switch the device to " + ssid + "? This page loses the device: reach it again at http://" + (settings.hostname || "smartbms") + ".local/ on " + ssid + ", or through its access point if it cannot join.")) return;
    api("POST", "/api/wifi", {ssid: ssid, password: pw}).then(function () {
      txt("wmsg", "Saved; the device is switching to " + ssid + ". The state above follows it live while this page still reaches it.");
    }, function (err) { txt("werr", err.message); });
  });

  // --- bms ---------------------------------------------------------------
  function bmsCurrent() {
    var s = settings;
    txt("bcur", s.bms_mac !== undefined ? "Configured: " + (s.bms_mac || "any") + " · protocol " + (s.bms_protocol || "auto") + (s.bms_name ? " · " + s.bms_name : "") : "");
  }
  loaders.bms = function () {
    SB.ensureSettings().then(bmsCurrent);
    pollCapture();
  };
  function bmsScan(all) {
    var b = $(all ? "bscanall" : "bscan"), list = clear($("blist"));
    b.disabled = true; txt("berr", ""); txt("bmsg", "Scanning…");
    api("GET", "/api/bms/scan" + (all ? "?all=1" : "")).then(function (r) {
      var devs = Array.isArray(r) ? r : (r.devices || r.results || []);
      var conn = devs.filter(function (d) { return d.connected; }).length;
      txt("bmsg", devs.length + " found" + (conn ? " (the connected pack does not advertise: listed from the link)" : ""));
      devs.forEach(function (d) {
        var li = el("li"), use = el("button", {type: "button"}, "Use");
        var proto = d.family || d.protocol || "auto";
        li.appendChild(el("span", {}, (d.name || "(no name)") + " · " + (d.mac || d.addr) + " · " + words(proto) + (d.connected ? " · connected now" : "") + (typeof d.rssi === "number" ? " · " + d.rssi + " dBm" : "")));
        use.addEventListener("click", function () {
          var body = {bms_mac: (d.mac || d.addr).toUpperCase(), bms_protocol: proto};
          if (d.name !== undefined) body.bms_name = String(d.name || "").slice(0, 32);
          api("PUT", "/api/settings", body).then(function () { return api("GET", "/api/settings"); }).then(function (s) {
            settings = s.settings || s; bmsCurrent(); SB.fillSettings();
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

  // --- event log ---------------------------------------------------------
  // Times on the device clock (see SB.anchor): events of this boot by their device second,
  // those of an earlier boot by that boot's own anchor (its "started" event's wall time).
  function isStart(e) { return e.kind === "boot" && /started/.test(e.msg || ""); }
  function evTime(list) {
    var last = -1, anchor = null;
    list.forEach(function (e, i) { if (isStart(e)) last = i; });
    list.forEach(function (e, i) {
      if (isStart(e)) anchor = typeof e.t === "number" ? e.t - e.up_s : null;
      var now = last >= 0 ? i >= last : e.up_s <= SB.uptime;
      e.at = now ? SB.anchor + e.up_s : anchor !== null ? anchor + e.up_s : e.t || null;
      e.ago = now ? SB.uptime - e.up_s : null;
    });
  }
  SB.events = function () { return evs; };
  function addEvents(list) {
    var have = {};
    evs.forEach(function (e) { have[e.seq] = 1; });
    list.forEach(function (e) { if (!have[e.seq]) evs.push(e); });
    evs.sort(function (a, b) { return a.seq - b.seq; });
    if (evs.length > 200) evs = evs.slice(evs.length - 200);
    if (evs.length) lastSeq = Math.max(lastSeq, evs[evs.length - 1].seq);
    renderEvents();
  }
  function renderEvents() {
    evTime(evs);  // "ago" moves with every status
    var ol = clear($("events"));
    if (!evs.length) ol.appendChild(el("li", {"class": "mut"}, "No events yet"));
    for (var i = evs.length - 1; i >= 0; i--) {
      var ev = evs[i], li = el("li", {"class": "k-" + ev.kind}), head = el("div", {"class": "eh"});
      head.appendChild(el("time", {}, (ev.at ? hhmm(ev.at) : "–") + (ev.ago !== null ? " · " + dur(ev.ago) + " ago" : " · before a restart")));
      head.appendChild(el("b", {}, words(ev.kind)));
      li.appendChild(head);
      // "80 -> 70" stays on one line
      li.appendChild(el("div", {"class": "em"}, String(ev.msg || ev.message || "").replace(/ -> /g, "\u00a0→\u00a0")));
      ol.appendChild(li);
    }
  }
  function loadEvents() {
    return api("GET", "/api/events?limit=100").then(function (r) { addEvents(r.events || []); redrawChart(); }, function () {});
  }
  loaders.log = function () { renderEvents(); };
  $("lrefresh").addEventListener("click", loadEvents);

  // --- live updates, polling as the fallback -------------------------------
  var es = null, live = false, liveRetry = 0;
  function setLive(on) {
    live = on;
    pill("llive", on ? "live" : "refreshes every 10 s", on ? "on" : "off");
  }
  function startLive() {
    if (es || !window.EventSource || document.hidden || Date.now() < liveRetry) return;
    es = new EventSource("/api/live?since=" + lastSeq);
    es.addEventListener("status", function (e) { setLive(true); renderStatus(JSON.parse(e.data)); });
    es.addEventListener("events", function (e) { addEvents(JSON.parse(e.data).events || []); redrawChart(); });
    es.onerror = function () {
      setLive(false);
      // refused (too many streams) or gone: poll, and try a stream again in a minute
      if (es && es.readyState === 2) { es.close(); es = null; liveRetry = Date.now() + 60000; }
    };
  }
  function stopLive() { if (es) { es.close(); es = null; } setLive(false); }
  SB.stopLive = stopLive;
  var tick = 0;
  setInterval(function () {
    if (document.hidden) return;
    tick++;
    startLive();
    if (!live) pollStatus();
    if (tick % (SB.chartPoints && SB.chartPoints() < 10 ? 5 : 30) === 0) pollHistory();  // a young chart fills sooner
    if (!live && tick % 5 === 0 && SB.visible("log")) loadEvents();
  }, 2000);
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) stopLive(); else pollStatus().then(pollHistory).then(startLive);
  });
  // Requests one after another at start: the device serves few connections on a small heap.
  window.addEventListener("load", function () {
    setLive(false);
    pollStatus().then(loadEvents).then(pollHistory).then(showTab).then(startLive);
  });
})();
