"""The worst-case workload of the heap budget, against a running simulator (CPython side).

    from heap_workload import run_workload
    result = run_workload(sim, device_s=3600)   # sim from tests/host/simfixture.start_sim

While it runs: WEB_CLIENTS clients at once plus WAITING more in the server's queue read
status, history, events (200) and settings; every minute of device time the BMS link is
dropped by the world (the device reconnects); settings are saved; one BMS scan; one OTA
upload streamed whole (a valid image whose expected SHA-256 is wrong, so every block is
written and checked and the device keeps running); halfway, the pack goes out of reach for
two device minutes (its data go stale: an alert where alerts are on). Meanwhile the relay is compared with the
charger the world sees. The sim must have been started with SIM_HEAP_REPORT_S so it prints
"sim heap:" lines (sim/sim_main.py HeapWatch); the result reads them.
"""
import hashlib
import http.client
import os
import re
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "sim"))
import esp_image  # noqa: E402

# The device as it is after months: its event log full (two segments of 200 on flash).
AGED = {"SIM_EVENT_HISTORY": "400"}
WEB_CLIENTS = 4
WAITING = 2
PATHS = ("/api/status", "/api/history", "/api/events?limit=200", "/api/settings", "/")
LINE = re.compile(r"sim heap: t=(\d+) alloc=(\d+) free=(\d+) maxfree=(\d+) peak=(\d+) "
                  r"minmaxfree=(\d+) tickmax=(\d+)")


def heap_lines(output):
    """[(t, alloc, free, maxfree, peak, minmaxfree, tickmax)] from the sim's output."""
    return [tuple(int(x) for x in m.groups()) for m in LINE.finditer(output)]


def request(sim, method, path, out=None, tries=20, deadline=None, **kw):
    """One request, tried again while the device is too busy to take it (503, or a
    connection it resets because its queue is full), as a client does: (status, body).
    No try starts after `deadline` (time.monotonic()), nor lasts past it: a device that no
    longer answers ends the workload instead of holding it for tries x timeout."""
    st = body = None
    timeout = kw.pop("timeout", 60)
    for _ in range(tries):
        left = timeout if deadline is None else min(timeout, deadline - time.monotonic())
        if left <= 0:
            break
        try:
            st, _, body = sim.request(method, path, timeout=left, **kw)
        except (OSError, http.client.HTTPException):
            st = None
            if out is not None:
                out["resets"] = out.get("resets", 0) + 1
        if st not in (None, 503):
            return st, body
        time.sleep(0.3)
    return st, body


class _Clients:
    def __init__(self, sim, n):
        self.sim = sim
        self.n = n
        self.stop = threading.Event()
        self.codes = {}
        self.failures = []
        self.lock = threading.Lock()

    def _one(self, i):
        k = i
        while not self.stop.is_set():
            path = PATHS[k % len(PATHS)]
            k += 1
            try:
                st, _, _ = self.sim.get(path, timeout=20)
            except (OSError, http.client.HTTPException) as e:
                # a full queue resets new connections: load shed, not an error of the device
                st = "reset" if isinstance(e, ConnectionResetError) else None
                if st is None:
                    with self.lock:
                        self.failures.append("%s: %s" % (path, e))
                time.sleep(0.1)
            with self.lock:
                self.codes[st] = self.codes.get(st, 0) + 1

    def start(self):
        self.threads = [threading.Thread(target=self._one, args=(i,), daemon=True) for i in range(self.n)]
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def run_workload(sim, device_s, speed):
    """Run the workload for `device_s` device seconds; returns a dict of what was seen."""
    clients = _Clients(sim, WEB_CLIENTS + WAITING)
    out = {"relay_mismatches": 0, "relay_checks": 0, "settings_saves": 0, "link_drops": 0,
           "ota": None, "scan": None, "pack_lost": False, "failures": []}
    t_end = time.monotonic() + device_s / speed
    hard_end = t_end + 60  # a request running at t_end may finish; nothing waits longer
    next_drop = time.monotonic() + 60 / speed
    next_save = time.monotonic() + 1.0
    ota_at = time.monotonic() + min(5.0, device_s / speed / 3)
    scan_at = time.monotonic() + min(3.0, device_s / speed / 4)
    # once, the pack out of reach for 2 device minutes: the BMS data go stale (an alert)
    lost_at = time.monotonic() + device_s / speed / 2
    back_at = None
    clients.start()
    try:
        min_soc = 80
        while time.monotonic() < t_end:
            now = time.monotonic()
            if now >= next_drop:
                next_drop += 60 / speed
                try:
                    sim.world("drop_link", mac=sim.world("status")["peers"][0]["mac"])
                    out["link_drops"] += 1
                except (RuntimeError, IndexError, OSError):
                    pass
            if now >= next_save:
                next_save = now + 2.0
                min_soc = 79 if min_soc == 80 else 80
                st, _ = request(sim, "PUT", "/api/settings", out, deadline=hard_end, json={"min_soc": min_soc})
                if st == 200:
                    out["settings_saves"] += 1
            if scan_at and now >= scan_at:
                scan_at = None
                out["scan"] = request(sim, "GET", "/api/bms/scan", out, deadline=hard_end)[0]
            if ota_at and now >= ota_at:
                ota_at = None
                out["ota"] = _upload(sim, out, hard_end)
            if lost_at and now >= lost_at:
                lost_at, back_at = None, now + 120 / speed
                out["pack_lost"] = _in_range(sim, False)
            if back_at and now >= back_at:
                back_at = None
                _in_range(sim, True)
            _check_relay(sim, out, hard_end)
            time.sleep(0.25)
    finally:
        clients.join()
        if back_at:
            _in_range(sim, True)
    out["codes"] = clients.codes
    out["failures"] += clients.failures
    return out


def _in_range(sim, yes):
    try:
        sim.world("set_peer", mac=sim.world("status")["peers"][0]["mac"], in_range=yes)
        return True
    except (RuntimeError, IndexError, OSError):
        return False


def _upload(sim, out, deadline):
    """Stream a whole image whose expected SHA-256 is wrong: (status, error)."""
    img = esp_image.app_image("0.9.9", 300 * 1024)
    wrong = hashlib.sha256(img + b"x").hexdigest()
    st, body = request(sim, "POST", "/api/ota", out, deadline=deadline, body=img, timeout=120,
                       headers={"Content-Type": "application/octet-stream", "X-Image-SHA256": wrong})
    return st, body.get("error") if isinstance(body, dict) else None


def _check_relay(sim, out, deadline):
    """The relay the firmware reports must be the charger the world sees (sampled twice,
    a poll apart, so a switch in between is not a mismatch)."""
    st, body = request(sim, "GET", "/api/status", out, deadline=deadline)
    if st != 200:
        return
    if not isinstance(body, dict):  # a 200 whose JSON was cut short
        out["failures"].append("/api/status: not JSON: %r" % (body[-80:] if body else body,))
        return
    world = sim.world("status")
    out["relay_checks"] += 1
    if bool(body["charger"]["relay"]) != bool(world["charger_on"]):
        time.sleep(0.3)
        st, body = request(sim, "GET", "/api/status", out, deadline=deadline)
        if st == 200 and bool(body["charger"]["relay"]) != bool(sim.world("status")["charger_on"]):
            out["relay_mismatches"] += 1


def summarize(lines, idle_until):
    """Figures from the heap lines: idle live heap (the last line before the load), the
    peak live heap and the smallest largest-free-block during it, the longest control gap."""
    idle = [x for x in lines if x[0] <= idle_until]
    load = [x for x in lines if x[0] > idle_until]
    return {
        "idle_live": idle[-1][1] if idle else None,
        "peak_live": max(x[4] for x in load) if load else None,
        "min_max_free": min(x[5] for x in load) if load else None,
        "tick_max_ms": max(x[6] for x in load) if load else None,
        "samples": len(load),
    }
