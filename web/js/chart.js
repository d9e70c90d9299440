"use strict";
// The 24 h chart: SOC, voltage and current lanes on a time-of-day axis (the device clock,
// SB.anchor), gridlines, shading while the charger was on and marks for relay switches and
// faults (from the event log), values on tap or hover. Canvas only, no library.
(function () {
  var SB = window.SB, $ = SB.$, data = null, cursor = null;
  var LANES = [["soc", "SOC %", "--soc", 0, 100], ["voltage", "Voltage V", "--volt"], ["current", "Current A", "--amp"]];
  var STEPS = [900, 1800, 3600, 7200, 10800, 21600];

  // [{t (device s), soc, voltage, current}] from GET /api/history's columns
  function points(h) {
    var out = [], iv = h.interval_s || 60, t0 = h.start_s || 0, n = (h.soc || []).length;
    for (var i = 0; i < n; i++) out.push({t: t0 + i * iv, soc: h.soc[i], voltage: (h.voltage || [])[i], current: (h.current || [])[i]});
    return out;
  }
  // charger-on spans and marks from this boot's events (device seconds); only the loaded
  // events (the newest 100-200) are known: an "off" first means on since the oldest of them
  function marks(evs, t1) {
    var spans = [], relay = [], faults = [], on = null, first = null;
    evs.forEach(function (e) {
      if (e.ago === null || e.ago === undefined) return;
      var t = e.up_s;
      if (first === null) first = t;
      if (e.kind === "relay") {
        var isOn = /^on/.test(e.msg);
        if (!isOn && !relay.length) on = first;
        relay.push({t: t, on: isOn, msg: e.msg});
        if (isOn && on === null) on = t;
        if (!isOn && on !== null) { spans.push([on, t]); on = null; }
      } else if ((e.kind === "fault" && !/ended|cleared/.test(e.msg)) || (e.kind === "charge" && /^fault:/.test(e.msg))) {
        faults.push({t: t, msg: e.msg});
      }
    });
    var st = SB.status();
    if (on !== null || (st && st.charger && st.charger.relay && !relay.length)) spans.push([on !== null ? on : first !== null ? first : t1 - 1e9, t1]);
    return {spans: spans, relay: relay, faults: faults};
  }
  function color(css, n) { return css.getPropertyValue(n).trim() || "#888"; }

  function draw(h, evs) {
    var cv = $("chart"), dpr = window.devicePixelRatio || 1, w = cv.clientWidth, H = 300;
    if (!w) return;
    var pts = points(h), t1 = Math.max(SB.uptime, pts.length ? pts[pts.length - 1].t : 0), t0 = t1 - 86400;
    if (pts.length && pts[0].t > t0) t0 = Math.max(t0, pts[0].t - 600);
    if (t1 - t0 < 3600) t0 = t1 - 3600;
    var m = marks(evs || [], t1);
    cv.width = w * dpr; cv.height = H * dpr; cv.style.height = H + "px";
    var g = cv.getContext("2d"), css = getComputedStyle(document.documentElement);
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, H);
    g.font = "12px system-ui,sans-serif";
    var left = 40, right = w - 6, top = 14, bottom = H - 20, laneH = (bottom - top) / 3;
    var X = function (t) { return left + (t - t0) / (t1 - t0) * (right - left); };
    // what is drawn, in device seconds (SB.chartMarks, for the tests)
    var drawn = {t0: t0, t1: t1, left: left, right: right, top: top, bottom: bottom, spans: [], relay: [], faults: []};
    data = {pts: pts, X: X, t0: t0, t1: t1, left: left, right: right, m: m, drawn: drawn};
    // charger on: shaded behind every lane
    g.fillStyle = color(css, "--ok"); g.globalAlpha = 0.13;
    m.spans.forEach(function (s) {
      var a = Math.max(s[0], t0), b = Math.min(s[1], t1);
      if (b > a) { g.fillRect(X(a), top, X(b) - X(a), bottom - top); drawn.spans.push([a, b]); }
    });
    g.globalAlpha = 1;
    // time of day: gridlines on whole steps of the device clock
    var step = STEPS.filter(function (s) { return (t1 - t0) / s <= (right - left) / 56; })[0] || 21600;
    var first = Math.ceil((SB.anchor + t0) / step) * step;
    g.strokeStyle = color(css, "--line"); g.fillStyle = color(css, "--mut"); g.lineWidth = 1;
    g.textAlign = "center"; g.textBaseline = "bottom";
    data.ticks = [];
    for (var e = first; e - SB.anchor <= t1; e += step) {
      var x = Math.round(X(e - SB.anchor)) + 0.5;
      g.beginPath(); g.moveTo(x, top); g.lineTo(x, bottom); g.stroke();
      if (x > left + 16 && x < right - 16) { g.fillText(SB.hhmm(e), x, H); data.ticks.push(SB.hhmm(e)); }
    }
    LANES.forEach(function (ln, li) {
      var key = ln[0], y0 = top + li * laneH + 2, y1 = y0 + laneH - 8;
      var vals = pts.map(function (p) { return p[key]; }).filter(function (v) { return typeof v === "number"; });
      var lo = ln[3], hi = ln[4];
      if (lo === undefined) {
        lo = vals.length ? Math.min.apply(null, vals) : 0; hi = vals.length ? Math.max.apply(null, vals) : 1;
        if (key === "current") { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
        var pad = (hi - lo) * 0.1 || 0.5; lo -= pad; hi += pad;
      }
      var Y = function (v) { return y1 - (v - lo) / (hi - lo) * (y1 - y0); };
      ln.Y = Y; ln.y0 = y0; ln.y1 = y1;
      g.strokeStyle = color(css, "--line"); g.strokeRect(left, y0, right - left, y1 - y0);
      g.setLineDash([3, 4]); g.beginPath();
      var mid = key === "current" && lo < 0 && hi > 0 ? Y(0) : (y0 + y1) / 2;
      g.moveTo(left, mid); g.lineTo(right, mid); g.stroke(); g.setLineDash([]);
      g.fillStyle = color(css, "--mut"); g.textAlign = "right";
      g.textBaseline = "top"; g.fillText(fmt(hi), left - 3, y0);
      g.textBaseline = "bottom"; g.fillText(fmt(lo), left - 3, y1);
      g.strokeStyle = color(css, ln[2]); g.lineWidth = 2; g.beginPath();
      var on = false;
      pts.forEach(function (p) {
        var v = p[key];
        if (typeof v !== "number") { on = false; return; }
        if (on) g.lineTo(X(p.t), Y(v)); else g.moveTo(X(p.t), Y(v));
        on = true;
      });
      g.stroke(); g.lineWidth = 1;
      g.textAlign = "left"; g.textBaseline = "top";
      g.fillStyle = color(css, "--card"); g.fillRect(left + 3, y0 + 2, g.measureText(ln[1]).width + 6, 15);
      g.fillStyle = color(css, ln[2]); g.fillText(ln[1], left + 6, y0 + 3);
    });
    // relay switches: ticks along the top; faults: red triangles
    m.relay.forEach(function (r) {
      if (r.t < t0) return;
      var x = X(r.t);
      g.fillStyle = color(css, r.on ? "--ok" : "--mut"); g.fillRect(x - 1, top - 10, 3, 9);
      drawn.relay.push([r.t, r.on]);
    });
    g.fillStyle = color(css, "--bad");
    m.faults.forEach(function (f) {
      if (f.t < t0) return;
      var x = X(f.t);
      g.beginPath(); g.moveTo(x - 6, top - 12); g.lineTo(x + 6, top - 12); g.lineTo(x, top - 2); g.fill();
      drawn.faults.push(f.t);
    });
    if (cursor !== null) overlay(g, css, cursor);
    var n = pts.filter(function (p) { return typeof p.soc === "number"; }).length;
    SB.txt("chartnote", n < 2 ? "Collecting data: the chart fills in as minutes pass." :
      "From " + SB.hhmm(SB.anchor + pts[0].t) + ", one point every " + Math.round((h.interval_s || 60) / 60) + " min.");
  }
  function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1); }

  // the nearest sample to device second t, with what happened near it
  function at(t) {
    var best = null;
    data.pts.forEach(function (p) { if (typeof p.soc === "number" && (!best || Math.abs(p.t - t) < Math.abs(best.t - t))) best = p; });
    return best;
  }
  function overlay(g, css, t) {
    var p = at(t);
    if (!p) return;
    var x = data.X(p.t);
    g.strokeStyle = color(css, "--fg"); g.beginPath(); g.moveTo(x + 0.5, 14); g.lineTo(x + 0.5, 280); g.stroke();
    LANES.forEach(function (ln) {
      var v = p[ln[0]];
      if (typeof v !== "number") return;
      g.fillStyle = color(css, ln[2]); g.beginPath(); g.arc(x, ln.Y(v), 4, 0, 7); g.fill();
    });
    var on = data.m.spans.some(function (s) { return s[0] <= p.t && p.t <= s[1]; });
    var a = p.current, flow = typeof a !== "number" ? "" : Math.abs(a) < 0.2 ? ", idle" : (a > 0 ? ", charging " : ", discharging ") + Math.abs(a).toFixed(1) + " A";
    var near = data.m.faults.concat(data.m.relay).filter(function (f) { return Math.abs(f.t - p.t) <= 600; }).map(function (f) { return f.msg; });
    SB.txt("chartval", SB.hhmm(SB.anchor + p.t) + ": SOC " + p.soc.toFixed(1) + " %, " + SB.num(p.voltage, 2) + " V" + flow +
      ", charger " + (on ? "on" : "off") + (near.length ? " · " + near.join(" · ") : ""));
  }
  function pick(ev) {
    if (!data) return;
    var r = $("chart").getBoundingClientRect(), x = ev.clientX - r.left;
    if (x < data.left || x > data.right) return;
    cursor = data.t0 + (x - data.left) / (data.right - data.left) * (data.t1 - data.t0);
    SB.redrawChart();
  }
  $("chart").addEventListener("pointerdown", pick);
  $("chart").addEventListener("pointermove", function (ev) { if (ev.pointerType === "mouse" || ev.buttons) pick(ev); });
  SB.drawChart = draw;
  // the time-of-day labels and the samples with data on the chart now (tests)
  SB.chartTicks = function () { return data ? data.ticks : []; };
  SB.chartMarks = function () { return data ? data.drawn : null; };
  SB.chartPoints = function () { return data ? data.pts.filter(function (p) { return typeof p.soc === "number"; }).length : 0; };
})();
