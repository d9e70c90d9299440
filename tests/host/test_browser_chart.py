"""The 24 h chart (web/js/chart.js) on a phone (390x844, touch): the charger-on shading, the
relay marks and the fault marks are drawn where the device's event log says they happened,
and a tap (or a mouse hover) shows the values of the sample there.

- against the simulator: the charger is switched off (override) and on again, a cold pack
  stops it (a fault), and it resumes; what the chart drew (SB.chartMarks) must match the
  device's own events, read over the API, and the canvas pixels must show it;
- against the in-process mock: a 24 h window of a device up for 25 h, with only part of its
  events loaded (the oldest loaded relay event an "off": the charger was on before it)."""
import json
import re
import time

import pytest

from browser_util import PHONE, browser  # noqa: F401 (shared fixtures)
from browser_util import MockServer, have_sim, login, stop_device, wait_js

pytestmark = pytest.mark.browser

# What the canvas shows at device seconds: the shaded share of the column at t, the colour of the
# relay tick at t (just below a fault triangle's apex) and of the fault triangle at t, each
# matched against the CSS colours the chart uses. One evaluate: no redraw in between.
PROBE = """([spans, gaps, relay, faults]) => {
  const m = SB.chartMarks(), c = document.getElementById('chart'), k = c.width / c.clientWidth;
  const g = c.getContext('2d'), css = getComputedStyle(document.documentElement);
  const rgb = (name) => { const p = document.createElement('canvas').getContext('2d');
    p.fillStyle = css.getPropertyValue(name).trim(); p.fillRect(0, 0, 1, 1); return p.getImageData(0, 0, 1, 1).data; };
  const ok = rgb('--ok'), mut = rgb('--mut'), bad = rgb('--bad');
  const X = (t) => m.left + (t - m.t0) / (m.t1 - m.t0) * (m.right - m.left);
  const px = (x, y) => g.getImageData(Math.floor(x * k), Math.floor(y * k), 1, 1).data;
  const like = (p, c) => Math.abs(p[0] - c[0]) < 40 && Math.abs(p[1] - c[1]) < 40 && Math.abs(p[2] - c[2]) < 40;
  // a column's shaded share, the best of three a few pixels apart: a time-of-day gridline
  // (where it falls depends on the wall clock) may run down any one of them
  const column = (x) => { let n = 0, all = 0;
    for (let y = m.top + 0.25; y < m.bottom; y += 1 / k) { const p = px(x, y); all++;
      if (p[3] > 15 && p[3] < 70 && like(p, ok)) n++; }
    return n / all; };
  const shaded = (t) => Math.max(column(X(t) - 3), column(X(t)), column(X(t) + 3));
  const name = (p) => p[3] < 200 ? 'none' : like(p, ok) ? 'ok' : like(p, bad) ? 'bad' : like(p, mut) ? 'mut' : 'other';
  return {marks: m, spans: spans.map(shaded), gaps: gaps.map(shaded),
          relay: relay.map((t) => name(px(X(t) + 0.5, m.top - 1.25))),
          faults: faults.map((t) => name(px(X(t), m.top - 10)))};
}"""


def x_of(marks, t):
    return marks["left"] + (t - marks["t0"]) / (marks["t1"] - marks["t0"]) * (marks["right"] - marks["left"])


def spans_from(events, t1):
    """Charger-on spans from the device's relay events (this boot, in order)."""
    out, on = [], None
    for e in events:
        if e["kind"] != "relay":
            continue
        if e["msg"].startswith("on") and on is None:
            on = e["up_s"]
        elif e["msg"].startswith("off") and on is not None:
            out.append([on, e["up_s"]])
            on = None
    if on is not None:
        out.append([on, t1])
    return out


def flow(a):
    return ", idle" if abs(a) < 0.2 else ", %s %.1f A" % ("charging" if a > 0 else "discharging", abs(a))


def tap_value(page, marks, t, mouse=False):
    """Tap (or hover with the mouse) the chart at device second t; the value line it shows."""
    box = page.locator("#chart").bounding_box()
    before = page.text_content("#chartval")
    if mouse:
        page.mouse.move(box["x"] + x_of(marks, t), box["y"] + 150)
    else:
        page.tap("#chart", position={"x": x_of(marks, t), "y": 150})
    wait_js(page, "(b) => document.getElementById('chartval').textContent !== b", arg=before, timeout=5)
    return page.text_content("#chartval")


def is_mark(e):
    """A relay switch or the start of a fault (an alarm that ends or is cleared is none)."""
    return e["kind"] == "relay" or e["kind"] == "charge" and e["msg"].startswith("fault:") or \
        e["kind"] == "fault" and not re.search("ended|cleared", e["msg"])


def expect_value(page, marks, sample, spans, events, mouse=False):
    """The value line at `sample` ({t, soc, voltage, current}): its numbers, the charger state
    the device's events give at that time, and the marks within 10 min of it."""
    got = tap_value(page, marks, sample["t"], mouse=mouse)
    on = any(a <= sample["t"] <= b for a, b in spans)
    want = "SOC %.1f %%, %.2f V%s, charger %s" % (sample["soc"], sample["voltage"], flow(sample["current"]),
                                                 "on" if on else "off")
    assert re.match(r"^\d\d:\d\d: ", got) and got[7:].startswith(want), (got, want)
    near = [e["msg"] for e in events if is_mark(e) and abs(e["up_s"] - sample["t"]) <= 600]
    for msg in near:
        assert msg in got, (msg, got)
    return got


# ---- against the simulator --------------------------------------------------------------------

def panel(sim, name):
    import http.client
    line = sim.wait_output("smartbms sim panel: ")
    conn = http.client.HTTPConnection("127.0.0.1", int(line.split("http://127.0.0.1:", 1)[1].split()[0]), timeout=10)
    try:
        conn.request("POST", "/action", body=json.dumps({"name": name}), headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def this_boot(sim):
    evs = sim.get("/api/events?limit=200")[2]["events"]
    start = max(i for i, e in enumerate(evs) if e["kind"] == "boot" and "started" in e["msg"])
    return evs[start:]


def wait_event(sim, pred, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        hit = [e for e in this_boot(sim) if pred(e)]
        if hit:
            return hit[-1]
        assert time.monotonic() < deadline, "no such event: %s" % json.dumps(this_boot(sim))[-1500:]
        time.sleep(0.3)


def wait_uptime(sim, t, timeout=30):
    deadline = time.monotonic() + timeout
    while sim.get("/api/status")[2]["device"]["uptime_s"] < t:
        assert time.monotonic() < deadline, "the device clock never reached %s" % t
        time.sleep(0.2)


def samples(h):
    return [{"t": h["start_s"] + i * h["interval_s"], "soc": s, "voltage": h["voltage"][i], "current": h["current"][i]}
            for i, s in enumerate(h["soc"]) if s is not None]


def test_the_chart_shades_charging_and_marks_relay_switches_and_a_fault_from_the_sim(browser, tmp_path):
    if not have_sim():
        pytest.skip("the simulator is not available")
    from simfixture import start_sim
    sim = start_sim(tmp_path, speed=300)  # 5 device minutes a second: a sample every 0.6 s
    ctx = browser.new_context(**PHONE)
    page = ctx.new_page()
    page.set_default_timeout(15000)
    try:
        login(page, sim.url, sim.password)
        wait_js(page, "document.getElementById('llive').textContent === 'live'", timeout=15)
        on1 = wait_event(sim, lambda e: e["kind"] == "relay" and e["msg"].startswith("on"))
        wait_uptime(sim, on1["up_s"] + 1200)
        # the charger off for 30 min by hand, then on again by itself
        assert sim.request("POST", "/api/relay", json={"mode": "off", "minutes": 30})[0] == 200
        off1 = wait_event(sim, lambda e: e["kind"] == "relay" and e["msg"].startswith("off: manual off"))
        on2 = wait_event(sim, lambda e: e["kind"] == "relay" and e["msg"].startswith("on") and e["up_s"] > off1["up_s"])
        wait_uptime(sim, on2["up_s"] + 1500)
        # a cold pack: a fault stops it; warm again, it resumes
        panel(sim, "cold")
        fault = wait_event(sim, lambda e: e["kind"] == "charge" and e["msg"].startswith("fault: temperature -5"))
        wait_uptime(sim, fault["up_s"] + 1200)
        panel(sim, "mild")
        on3 = wait_event(sim, lambda e: e["kind"] == "relay" and e["msg"].startswith("on") and e["up_s"] > fault["up_s"])
        wait_uptime(sim, on3["up_s"] + 900)
        # the page has every event and a fresh history (the app reloads it when it is shown again)
        last = this_boot(sim)[-1]["seq"]
        wait_js(page, "(s) => SB.events().some(e => e.seq >= s)", arg=last, timeout=10)
        n = len(samples(sim.get("/api/history")[2]))
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        wait_js(page, "(n) => SB.chartPoints() >= n", arg=n, timeout=10)
        # hold the page still (no more status, events or history) to tap at known times
        page.route("**/api/**", lambda r: r.abort())
        page.evaluate("SB.stopLive()")
        page.wait_for_timeout(2500)
        marks = page.evaluate("SB.chartMarks()")
        t1 = marks["t1"]
        events = [e for e in this_boot(sim) if e["up_s"] <= t1]
        relay = [e for e in events if e["kind"] == "relay"]
        faults = [e for e in events if is_mark(e) and e["kind"] != "relay"]
        spans = spans_from(events, t1)
        assert len(spans) >= 3 and len(relay) >= 5 and len(faults) >= 1, events
        # drawn as the device logged them (clipped to the window)
        assert marks["spans"] == [[max(a, marks["t0"]), b] for a, b in spans]
        assert marks["relay"] == [[e["up_s"], e["msg"].startswith("on")] for e in relay]
        assert marks["faults"] == [e["up_s"] for e in faults]
        # the pixels: each span and gap wider than 6 px, each relay tick 5 px clear of the others
        # (at x300 a stale reading can switch the relay off and on within a pixel)
        wide = [s for s in spans if x_of(marks, s[1]) - x_of(marks, s[0]) > 6]
        gaps = [[spans[i][1], spans[i + 1][0]] for i in range(len(spans) - 1)] + [[marks["t0"], spans[0][0]]]
        gaps = [g for g in gaps if x_of(marks, g[1]) - x_of(marks, g[0]) > 6]
        ticks = [e for e in relay if all(o is e or abs(x_of(marks, o["up_s"]) - x_of(marks, e["up_s"])) > 5 for o in relay)]
        assert len(wide) >= 3 and len(gaps) >= 2 and len(ticks) >= 4, (spans, relay)
        seen = page.evaluate(PROBE, [[(a + b) / 2 for a, b in wide], [(a + b) / 2 for a, b in gaps],
                                     [e["up_s"] for e in ticks], [e["up_s"] for e in faults]])
        assert all(s > 0.5 for s in seen["spans"]), seen["spans"]  # shaded...
        assert all(s == 0 for s in seen["gaps"]), seen["gaps"]  # ...and only there
        assert seen["relay"] == ["ok" if e["msg"].startswith("on") else "mut" for e in ticks], (seen["relay"], ticks)
        assert seen["faults"] == ["bad"] * len(faults), seen["faults"]
        # tap: the values of the sample there, the charger state and the marks near it
        pts = [p for p in samples(sim.get("/api/history")[2]) if p["t"] <= t1][:page.evaluate("SB.chartPoints()")]

        def inside(a, b):
            return [p for p in pts if a + 200 <= p["t"] <= b - 200]
        charging = inside(on2["up_s"], fault["up_s"])
        resting = inside(off1["up_s"], on2["up_s"])
        assert charging and resting, pts
        got = expect_value(page, marks, charging[len(charging) // 2], spans, events)
        assert ", charging " in got and ", charger on" in got
        got = expect_value(page, marks, resting[len(resting) // 2], spans, events)
        assert ", discharging " in got and ", charger off" in got
        at_fault = min(pts, key=lambda p: abs(p["t"] - fault["up_s"]))
        assert fault["msg"] in expect_value(page, marks, at_fault, spans, events)
    finally:
        ctx.close()
        stop_device(sim)


# ---- a 24 h window (the in-process mock device) ----------------------------------------------

UP = 90000  # the mock device has been up for 25 h


def test_a_24_h_chart_on_the_device_clock_shades_from_the_oldest_loaded_event(browser):
    srv = MockServer()
    dev = srv.dev
    # only the newest events are loaded: the oldest of them is at 1000 s, the first relay event
    # an "off" at 10000 s (the charger was on before it, since at least 1000 s)
    dev.events = [
        {"seq": 501, "up_s": 1000, "t": None, "kind": "charge", "msg": "charging: first charge to the max level"},
        {"seq": 502, "up_s": 10000, "t": None, "kind": "relay", "msg": "off: charge ended: the current fell to 5.0 A"},
        {"seq": 503, "up_s": 50000, "t": None, "kind": "relay", "msg": "on: SOC 70.0 % <= 70 %"},
        {"seq": 504, "up_s": 60000, "t": None, "kind": "charge", "msg": "fault: temperature 60.0 °C > 45 °C"},
        {"seq": 505, "up_s": 60000, "t": None, "kind": "relay", "msg": "off: temperature 60.0 °C > 45 °C"},
        {"seq": 506, "up_s": 62000, "t": None, "kind": "fault", "msg": "alarm charger_dead: charger dead"},
        {"seq": 507, "up_s": 64000, "t": None, "kind": "fault", "msg": "alarm charger_dead ended"},
        {"seq": 508, "up_s": 70000, "t": None, "kind": "relay", "msg": "on: SOC 60.0 % <= 70 %"},
    ]
    on_spans = [[0, 10000], [50000, 60000], [70000, 10 ** 9]]
    start, n = UP - 1439 * 60, 1440  # 24 h of one-minute samples, as the sim's history holds

    def history():
        soc, volt, amp, s = [], [], [], 60.0
        for i in range(n):
            t = start + i * 60
            a = 17.0 if any(x <= t < y for x, y in on_spans) else -3.0
            s = min(100.0, max(5.0, s + a / 100 / 60 * 100))
            soc.append(round(s, 1))
            volt.append(round(13.0 + s / 100, 2))
            amp.append(a)
        return {"interval_s": 60, "start_s": start, "count": n, "soc": soc, "voltage": volt, "current": amp}
    dev.history = history
    dev.t0 = time.time() - UP
    ctx = browser.new_context(timezone_id="UTC", **PHONE)
    page = ctx.new_page()
    page.set_default_timeout(15000)
    try:
        login(page, srv.url, srv.password)
        wait_js(page, "SB.chartPoints() === 1440 && SB.chartMarks() && SB.chartMarks().relay.length === 4", timeout=15)
        page.route("**/api/**", lambda r: r.abort())  # hold it still
        page.wait_for_timeout(300)
        marks = page.evaluate("SB.chartMarks()")
        t0, t1 = marks["t0"], marks["t1"]
        assert t1 - t0 == 86400 and UP <= t1 < UP + 60  # the last 24 h, to now
        # whole 6 h steps of the time of day (UTC here), not "-24 h ... now"
        ticks = page.evaluate("SB.chartTicks()")
        assert len(ticks) >= 3 and set(ticks) <= {"00:00", "06:00", "12:00", "18:00"}, ticks
        note = page.text_content("#chartnote")
        first = [time.strftime("%H:%M", time.gmtime(time.time() - UP + start + d)) for d in (-60, 0, 60)]
        assert note[5:10] in first and note.endswith("one point every 1 min."), note
        # the first span starts at the oldest loaded event (clipped to the window), not at 10000 s
        assert marks["spans"] == [[t0, 10000], [50000, 60000], [70000, t1]]
        assert marks["relay"] == [[10000, False], [50000, True], [60000, False], [70000, True]]
        assert marks["faults"] == [60000, 62000]  # "… ended" is no fault
        seen = page.evaluate(PROBE, [[(t0 + 10000) / 2, 55000, 80000], [30000, 65000], [10000, 50000, 70000],
                                     [60000, 62000]])
        assert all(s > 0.5 for s in seen["spans"]) and seen["gaps"] == [0, 0], seen
        assert seen["relay"] == ["mut", "ok", "ok"] and seen["faults"] == ["bad", "bad"], seen
        # the SOC line fills the 24 h, edge to edge
        lane = page.evaluate("""(m) => { const c = document.getElementById('chart'), k = c.width / c.clientWidth;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, css = getComputedStyle(document.documentElement);
            const p = document.createElement('canvas').getContext('2d'); p.fillStyle = css.getPropertyValue('--soc').trim();
            p.fillRect(0, 0, 1, 1); const s = p.getImageData(0, 0, 1, 1).data;
            const cols = (x0, x1) => { let n = 0; for (let x = Math.ceil(x0 * k); x < x1 * k; x++)
              for (let y = Math.ceil(m.top * k); y < m.bottom * k; y++) { const i = (y * c.width + x) * 4;
                if (d[i + 3] > 200 && Math.abs(d[i] - s[0]) < 40 && Math.abs(d[i + 1] - s[1]) < 40 && Math.abs(d[i + 2] - s[2]) < 40) n++; }
              return n; };
            return [cols(m.left + 1, m.left + 6), cols(m.right - 6, m.right - 1), cols(0, m.left - 3)]; }""", marks)
        assert lane[0] > 0 and lane[1] > 0 and lane[2] == 0, lane
        h = history()
        pts = samples(h)
        events = dev.events

        def at(t):
            return min(pts, key=lambda p: abs(p["t"] - t))
        # a tap in the first (clipped) span, in a gap, at the fault; a mouse hover elsewhere
        got = expect_value(page, marks, at(6000), on_spans, events)
        assert got.endswith(", charger on")  # no mark within 10 min
        got = expect_value(page, marks, at(30000), on_spans, events)
        assert ", discharging 3.0 A, charger off" in got
        got = expect_value(page, marks, at(60300), on_spans, events)
        assert "fault: temperature 60.0 °C > 45 °C" in got and "alarm charger_dead" not in got  # 1700 s away
        got = expect_value(page, marks, at(80000), on_spans, events, mouse=True)
        assert ", charging 17.0 A, charger on" in got
    finally:
        ctx.close()
        srv.stop()
