"""The firmware's heap on the 32-bit v1.28.0 host build with its code frozen (make bench).

Runs the simulator with the firmware given exactly the board's heap (the host's own objects
are kept apart: sim/sim_main.py), lets it idle, then runs the worst-case workload of
bench/heap_workload.py, and prints:
  - the idle live heap (after a collection),
  - the peak live heap during the workload,
  - the smallest largest-free-block seen during it (after a collection),
  - the smallest fixed heap that survives the workload, found by bisection;
  - per BMS family, the idle live heap and largest free block once its readings flow.
"Survives": no restart, a MemoryError only while answering a request (503), no control step
later than 2 s, the relay always what the charger sees, the web server answering again
after the load. BENCH_HEAP_SPEED (60), BENCH_HEAP_LOAD_S (device s of load, 1800).
"""
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "host"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, HERE)
from heap_workload import AGED, heap_lines, run_workload, summarize  # noqa: E402
from run_sim import board_heap  # noqa: E402
from simfixture import start_sim  # noqa: E402

SPEED = int(os.environ.get("BENCH_HEAP_SPEED", "60"))
LOAD_S = int(os.environ.get("BENCH_HEAP_LOAD_S", "1800"))
IDLE_S = 600
REPORT_S = 30


def _survived(out, result, recovered, relay_ok, figures):
    if "restarting the device" in out or "crashed" in out or not recovered or not relay_ok:
        return False
    for tb in out.split("Traceback (most recent call last):")[1:]:
        if "dispatch_request" not in tb or "MemoryError" not in tb:
            return False
    return (bool(figures["samples"]) and figures["tick_max_ms"] <= 2000 and result["relay_mismatches"] == 0
            and not result["failures"])


def run(heap_kb):
    """(survived, figures, result) of the workload with a firmware heap of heap_kb."""
    with tempfile.TemporaryDirectory() as d:
        try:
            sim = start_sim(d, speed=SPEED, timeout=60, extra_env=dict(AGED, **{
                "SIM_HEAP": "%dk" % heap_kb, "SIM_HEAP_REPORT_S": str(REPORT_S), "SIM_HEAP_CENSUS": "1"}))
        except (RuntimeError, TimeoutError) as e:
            return False, {"error": str(e).splitlines()[0]}, {}
        try:
            deadline = time.monotonic() + IDLE_S / SPEED + 30
            while not any(x[0] >= IDLE_S for x in heap_lines(sim.output())) and time.monotonic() < deadline:
                time.sleep(0.2)
            idle_until = max([x[0] for x in heap_lines(sim.output())] or [0])
            census = [line for line in sim.output().splitlines() if line.startswith("sim census: ")]
            result = run_workload(sim, LOAD_S, SPEED)
            recovered = relay_ok = False
            for _ in range(30):
                try:
                    st, _, body = sim.get("/api/status", timeout=5)
                except OSError:
                    st = None
                if st == 200:
                    recovered = True
                    relay_ok = bool(body["charger"]["relay"]) == bool(sim.world("status")["charger_on"])
                    break
                time.sleep(0.5)
            out = sim.output()
        finally:
            sim.stop()
    figures = summarize(heap_lines(out), idle_until)
    figures["census"] = census[-1][len("sim census: "):] if census else None
    return _survived(out, result, recovered, relay_ok, figures), figures, result


FAMILIES = ("jbd", "jk02_24s", "jk02_32s", "daly", "seplos", "ant", "redodo", "renogy")


def idle_per_family(heap_kb, device_s=900):
    """{family: (idle live heap, largest free block, readings ok)} at the board's heap."""
    out = {}
    for family in FAMILIES:
        with tempfile.TemporaryDirectory() as d:
            sim = start_sim(d, speed=SPEED, bms=family, timeout=60,
                            extra_env=dict(AGED, SIM_HEAP="%dk" % heap_kb, SIM_HEAP_REPORT_S=str(REPORT_S)))
            try:
                deadline = time.monotonic() + device_s / SPEED + 30
                while not any(x[0] >= device_s for x in heap_lines(sim.output())) and time.monotonic() < deadline:
                    time.sleep(0.3)
                st = sim.get("/api/status")[2]
                lines = heap_lines(sim.output())
            finally:
                sim.stop()
        last = lines[-1] if lines else (0, None, None, None)
        out[family] = (last[1], last[3], st["bms"]["stats"]["ok"])
    return out


def main():
    board_kb = board_heap() // 1024
    bits = open(os.path.join(ROOT, "build", "host", "micropython.bits")).read().strip()
    print("heap bench: MicroPython v1.28.0 unix port, %s-bit, firmware frozen; board heap %d KB; "
          "workload %d device-s at x%d" % (bits, board_kb, LOAD_S, SPEED))
    ok, figures, result = run(board_kb)
    print("  at the board's %d KB: %s" % (board_kb, "survives" if ok else "DOES NOT SURVIVE"))
    print("  idle live heap:                 %s bytes" % figures.get("idle_live"))
    print("  peak live heap under load:      %s bytes" % figures.get("peak_live"))
    print("  smallest largest-free-block:    %s bytes" % figures.get("min_max_free"))
    print("  longest control-step gap:       %s ms" % figures.get("tick_max_ms"))
    print("  requests: %s; upload: %s; link drops: %s" % (result.get("codes"), result.get("ota"),
                                                          result.get("link_drops")))
    if figures.get("census"):
        print("  the firmware's heap at idle by type, bytes/objects (raw: dict tables, str data, buffers):")
        print("    " + ", ".join(figures["census"].split(", ")[:12]))
    print("  per BMS family, idle after 15 device-min (live heap / largest free block / good polls):")
    for family, (live, free, polls) in idle_per_family(board_kb).items():
        print("    %-9s %6s B / %6s B / %s" % (family, live, free, polls))
    lo, hi = 48, (board_kb if ok else 192)
    while hi - lo > 8:
        mid = (lo + hi) // 2 // 8 * 8
        survived, f, _ = run(mid)
        print("    %3d KB: %s" % (mid, "survives" if survived else "fails (%s)" % (f.get("error") or f)))
        if survived:
            hi = mid
        else:
            lo = mid
    print("  smallest fixed heap that survives the workload: %d KB (to 8 KB)" % hi)
    return 0


if __name__ == "__main__":
    sys.exit(main())
