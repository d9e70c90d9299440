"""Speed of the charge simulator and of the controller's update().

Prints: simulated days per wall-clock second for the 30-day daily-load scenario (target:
30 days in under 10 s), the controller's update() cost on CPython, and its cost and heap use
per call on the MicroPython unix port (when $MICROPYTHON is set, as `make bench` does).
"""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "sim"))
sys.path.insert(0, os.path.join(ROOT, "modules"))

import simulate  # noqa: E402

SCENARIO = os.path.join(ROOT, "sim", "scenarios", "daily_30d.json")

# Runs on both runtimes: update() in steady charging with a fresh reading each call.
UPDATE_BENCH = r"""
import gc, time
from smartbms.charge.controller import Controller
S = {"max_soc": 100, "min_soc": 80, "tail_current_c": 0.05, "eoc_max_min": 30, "cell_max_v": 3.6,
     "charge_timeout_h": 24, "timeout_rest_min": 60, "temp_min_c": 2.0, "temp_max_c": 45.0,
     "temp_hyst_c": 3.0, "stale_s": 30, "full_every_days": 0, "min_switch_s": 60}
class R:
    pass
r = R(); r.soc = 50.0; r.current = 20.0; r.cells = [3.30, 3.31, 3.32, 3.30]
r.temperatures = [20.0, 21.0]; r.charge_fet = True; r.faults = []; r.nominal_ah = 100.0
r.received = 0
c = Controller(S)
N = 20000
for t in range(10):
    r.received = t
    c.update(r, t)
try:
    clock = time.ticks_us; diff = time.ticks_diff
except AttributeError:
    clock = lambda: int(time.perf_counter() * 1e6); diff = lambda a, b: a - b
alloc = getattr(gc, "mem_alloc", None)
gc.collect()
a0 = alloc() if alloc else 0
t0 = clock()
for t in range(10, 10 + N):
    r.received = t
    c.update(r, t)
us = diff(clock(), t0) / N
a1 = alloc() if alloc else 0
print("%.2f %.2f %s" % (us, (a1 - a0) / N, c.state))
"""


def main():
    with open(SCENARIO) as f:
        scenario = json.load(f)
    days = scenario["duration_h"] / 24.0
    t0 = time.perf_counter()
    summary = simulate.run(scenario)
    dt = time.perf_counter() - t0
    print("simulate %s: %.0f simulated days in %.2f s wall = %.1f simulated days/s (step %s s, %d relay switches)"
          % (os.path.basename(SCENARIO), days, dt, days / dt, scenario["step_s"], summary["relay_switches"]))

    out = subprocess.run([sys.executable, "-c", UPDATE_BENCH], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "modules")))
    us, _, state = out.stdout.split()
    print("controller.update() on CPython: %s us/call (%s)" % (us, state))
    mp = os.environ.get("MICROPYTHON")
    if mp:
        out = subprocess.run([mp, "-c", UPDATE_BENCH], capture_output=True, text=True,
                             env=dict(os.environ, MICROPYPATH=os.path.join(ROOT, "modules")))
        if out.returncode == 0:
            us, per, state = out.stdout.split()
            print("controller.update() on the MicroPython unix port: %s us/call, %s heap bytes/call (%s)"
                  % (us, per, state))
        else:
            print("controller.update() on MicroPython: failed: %s" % out.stderr.strip().splitlines()[-1:])
    if dt > 10:
        print("WARNING: 30 simulated days took more than 10 s")


if __name__ == "__main__":
    main()
