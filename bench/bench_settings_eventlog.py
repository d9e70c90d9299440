"""Memory and speed of settings and the event log on the MicroPython unix port (64-bit, so
object sizes are upper bounds for the ESP32). Prints figures; fails only if a run fails."""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.environ.get("MICROPYTHON", os.path.join(ROOT, "build", "host", "micropython"))

SCRIPT = r"""
import gc, time, os
D = %(dir)r

def used():
    gc.collect()
    return gc.mem_alloc()

def ms(t0):
    return time.ticks_diff(time.ticks_us(), t0) / 1000

base = used()
from smartbms import settings as S
after_import = used()
s = S.Settings(D + "/settings.json", log=lambda k, m: None)
s.load()
after_obj = used()
t0 = time.ticks_us()
for i in range(20):
    s.update({"max_soc": 90 + (i %% 2)})
upd = ms(t0) / 20
t0 = time.ticks_us()
for i in range(20):
    s.load()
ld = ms(t0) / 20
t0 = time.ticks_us()
for i in range(1000):
    s["max_soc"]
get_us = ms(t0)  # per 1000 reads, in ms = us per read
gc.collect()
a = gc.mem_alloc()
for i in range(100):
    s["cell_max_v"]
get_alloc = gc.mem_alloc() - a
print("settings: import %%d B, instance %%d B, update+save %%.2f ms, load %%.2f ms, s[key] %%.2f us (%%d B allocated per 100 reads)" %% (
    after_import - base, after_obj - after_import, upd, ld, get_us, get_alloc))

from smartbms.eventlog import EventLog
b0 = used()
log = EventLog(D + "/ev", capacity=200, flush_s=10 ** 9, wall=lambda: 1767225600)
b1 = used()
for i in range(200):
    log.add("relay", "on: soc %%d%%%% below min_soc 80%%%%, charger started #%%d" %% (79, i))
full = used()
msg = log.recent(1)[0]["msg"]
gc.collect()
a = gc.mem_alloc()
t0 = time.ticks_us()
for i in range(100):
    log.add("relay", msg)
add_us = ms(t0) * 10
add_alloc = (gc.mem_alloc() - a) / 100
for i in range(19):
    log.add("relay", msg)
t0 = time.ticks_us()
n = log.flush(force=True)
fl = ms(t0)
t0 = time.ticks_us()
r = log.recent(50)
rc = ms(t0)
del log, r
gc.collect()
c0 = used()
t0 = time.ticks_us()
log = EventLog(D + "/ev", capacity=200)
lo = ms(t0)
c1 = used()
sizes = [os.stat(D + "/ev%%d.log" %% i)[6] for i in (0, 1)]
print("eventlog: empty %%d B, 200 events %%d B RAM (%%d B each, %%d-char messages), add %%.1f us / %%.0f B allocated, flush %%d lines %%.2f ms, recent(50) %%.2f ms, load 200 %%.1f ms (%%d B after load), files %%s B" %% (
    b1 - b0, full - b0, (full - b1) // 200, len(msg), add_us, add_alloc, n, fl, rc, lo, c1 - c0, sizes))
"""


def main():
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, MICROPYPATH=os.environ.get("MICROPYPATH", os.path.join(ROOT, "modules")))
        for heap in ("4m", "120k"):
            r = subprocess.run([MICROPYTHON, "-X", "heapsize=" + heap, "-c", SCRIPT % {"dir": d}],
                               capture_output=True, text=True, env=env, timeout=120)
            print("heap %s:" % heap)
            sys.stdout.write(r.stdout)
            if r.returncode:
                sys.stdout.write(r.stderr)
                sys.exit(1)
            for name in os.listdir(d):
                os.remove(os.path.join(d, name))


if __name__ == "__main__":
    main()
