# Heap bytes allocated per poll cycle by the BLE link in steady state, per BMS family, on the
# 32-bit v1.28.0 host build against the simulated radio (sim/world: the BMS and the air are in
# another process, so only the device's own allocations are counted: the link, the codec,
# the real aioble and the IRQ tuples and copies its handlers make, as on the chip).
# Method: connect and warm up, then gc.collect(), gc.disable() and read gc.mem_alloc() before
# and after N polls; "codec" feeds the same frames through the assembler and decoder alone.
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "sim"))
N = 40
FAMILIES = ("jbd", "daly", "jk02_32s", "seplos", "ant", "redodo", "renogy")

SCRIPT = r"""
import asyncio, gc, sys
sys.path.insert(0, "tests/unit")
import worldctl
from smartbms.bms import protocols
from smartbms.bms.link import BMSLink

N = %(n)d
VALUES = {"voltage": 13.3, "current": -2.5, "soc": 77, "remaining_ah": 77.0, "nominal_ah": 100.0,
          "cycles": 12, "cells": (3.31, 3.32, 3.33, 3.32), "temperatures": (21.0, 22.0),
          "charge_fet": True, "discharge_fet": True}


async def measure(proto, mode):
    worldctl.reset()
    mac = worldctl.add_bms(proto, values=VALUES, mtu_max=23, stream_ms=50)["mac"]
    link = BMSLink(protocols.get(proto), mac=mac, mode=mode, request_timeout_ms=500, connect_timeout_ms=2000)
    for _ in range(3):
        assert await link.poll_once(), link.stats
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    ok = 0
    for _ in range(N):
        ok += await link.poll_once()
    used = gc.mem_alloc() - a
    gc.enable()
    await link.close()
    return used // N, ok


for proto in %(families)r:
    for mode in ("persistent", "release"):
        per, ok = asyncio.run(measure(proto, mode))
        print("%%-9s %%-10s %%6d B/poll  (%%d/%%d polls ok)" %% (proto, mode, per, ok, N))
"""


def main():
    mp = os.environ.get("MICROPYTHON") or os.path.join(ROOT, "build", "host", "micropython")
    path = os.path.join(ROOT, "build", "bench_poll_alloc_run.py")
    with open(path, "w") as f:
        f.write(SCRIPT % {"n": N, "families": FAMILIES})
    env = dict(os.environ, MICROPYPATH=".frozen:%s" % os.path.join(ROOT, "sim"))
    print("bytes allocated per poll cycle, steady state, %d polls (32-bit host build, real aioble, "
          "simulated radio; 20-byte notifications)" % N)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "run_unix_tests.py"), mp, path],
                       env=env, cwd=ROOT, capture_output=True, text=True)
    print(r.stdout.strip() or r.stderr.strip())
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
