"""Heap of the running firmware on the MicroPython unix port (make bench).

Runs the whole simulator (scripts/run_sim.py: firmware + simulated BMS + battery, web server
up) at SIM_SPEED x and reads the heap lines sim/sim_main.py prints every REPORT_S device
seconds (after gc.collect()): heap in use after start-up, and its growth over one hour of
simulated operation (goal: none). Then tries smaller heaps to report what fits.

Notes: on the host every module is loaded from .mpy, so its bytecode sits in the heap; on the
ESP32 it is frozen in flash and costs no heap. Objects are also bigger on 64-bit. The
figures are therefore an upper bound of the device's heap use; growth is what matters.
    BENCH_HEAP_SPEED (120), BENCH_HEAP_HOURS (1), BENCH_HEAP_KB (512)
"""
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "host"))
from simfixture import start_sim  # noqa: E402

SPEED = int(os.environ.get("BENCH_HEAP_SPEED", "120"))
HOURS = float(os.environ.get("BENCH_HEAP_HOURS", "1"))
HEAP_KB = int(os.environ.get("BENCH_HEAP_KB", "512"))
REPORT_S = 300
LINE = re.compile(r"sim heap: t=(\d+) alloc=(\d+) free=(\d+)")


def samples(sim):
    return [tuple(int(x) for x in m.groups()) for m in LINE.finditer(sim.output())]


def run(heap_kb, device_s, report_s=REPORT_S):
    """-> (samples, status or None, output tail, crashed)"""
    with tempfile.TemporaryDirectory() as d:
        sim = start_sim(d, speed=SPEED, once=True,
                        extra_env={"SIM_HEAP": "%dk" % heap_kb, "SIM_HEAP_REPORT_S": str(report_s)})
        try:
            deadline = time.monotonic() + device_s / SPEED + 20
            while time.monotonic() < deadline and sim.proc.poll() is None:
                s = samples(sim)
                if s and s[-1][0] >= device_s:
                    break
                time.sleep(0.5)
            crashed = sim.proc.poll() is not None or "MemoryError" in sim.output()
            status = None
            if not crashed:
                code, _, status = sim.get("/api/status")
            return samples(sim), status, sim.output()[-1500:], crashed
        finally:
            sim.stop()


_CODE = """
import gc
gc.collect(); a = gc.mem_alloc()
from smartbms import app
import smartbms.web, smartbms.ota.http, smartbms.bms.jbd, smartbms.bms.jk02, smartbms.bms.daly, webassets
gc.collect(); print(gc.mem_alloc() - a)
"""


def code_bytes():
    """Heap the firmware's own modules take when loaded from .mpy (frozen on the device: 0)."""
    import subprocess

    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))
    import run_sim

    mp = os.environ.get("MICROPYTHON") or os.path.join(run_sim.ROOT, ".venv", "bin", "micropython")
    env = dict(os.environ, MICROPYPATH=run_sim.micropypath(True))
    r = subprocess.run([mp, "-X", "heapsize=2m", "-c", _CODE], env=env, capture_output=True, text=True)
    return int(r.stdout.strip()) if r.returncode == 0 else None


def main():
    device_s = int(HOURS * 3600)
    print("heap bench: %d KB heap, speed x%d, %.1f h of device time (~%.0f s real)"
          % (HEAP_KB, SPEED, HOURS, device_s / SPEED))
    s, status, tail, crashed = run(HEAP_KB, device_s)
    if crashed or len(s) < 3:
        print(tail)
        print("heap bench: the sim failed at %d KB" % HEAP_KB)
        return 1
    base = s[1]  # the first report comes 5 device-min after boot: start-up done, BLE up
    last = s[-1]
    peak = max(x[1] for x in s)
    print("  in use after start-up (t=%ds): %d bytes (free %d)" % (base[0], base[1], base[2]))
    print("  in use after %.1f h (t=%ds):   %d bytes (free %d)" % (last[0] / 3600, last[0], last[1], last[2]))
    print("  growth: %+d bytes over %d s of device time (%+.1f bytes/h); peak after collect %d"
          % (last[1] - base[1], last[0] - base[0], (last[1] - base[1]) * 3600 / max(1, last[0] - base[0]), peak))
    code = code_bytes()
    if code:
        print("  of which firmware code + web assets loaded from .mpy: %d bytes (frozen in flash on the"
              " device: no heap);\n  the rest, %d bytes, is data of the firmware and of the simulated world"
              " (64-bit objects)" % (code, last[1] - code))
    print("  samples (device s: bytes in use): " + ", ".join("%d:%d" % (t, a) for t, a, _ in s))
    if status:
        st = status["bms"].get("stats", {})
        print("  BMS link over the run: polls %s ok %s errors %s; SOC %s %%, state %s"
              % (st.get("polls"), st.get("ok"), st.get("errors"), status["bms"].get("soc"),
                 status["charger"]["state"]))
    print("heap fit (10 device-min each, web + BLE + control running):")
    for kb in (480, 448, 416, 384):
        try:
            s2, st2, tail2, crashed2 = run(kb, 600, report_s=120)
        except (RuntimeError, TimeoutError, OSError) as e:  # did not even start
            s2, tail2, crashed2 = [], str(e), True
        ok = not crashed2 and len(s2) >= 3
        why = "" if ok else (" (MemoryError)" if "MemoryError" in tail2 else " (did not run)")
        print("  %4d KB: %s%s" % (kb, "runs, min free %d bytes" % min(x[2] for x in s2) if ok else "FAILS", why))
        if not ok:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
