#!/usr/bin/env python3
"""Codec figures on the MicroPython unix port: frames assembled+decoded per second per
family, and heap bytes allocated per assemble+decode (gc disabled, gc.mem_alloc() delta).

Run by `make bench` (which sets MICROPYTHON and MICROPYPATH); standalone it falls back to
.venv/bin/micropython and the project's search path.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MPY_CODE = r"""
import gc, time
import bms_frames as bf
import bms_frames_more as bm
from smartbms.bms import protocols
from smartbms.bms.reading import Reading

CASES = (
    ("jbd basic (3 NTC)", "jbd", bf.jbd_basic(temperatures=(20.0, 21.0, 22.0)), 20),
    ("jbd cells (16)", "jbd", bf.jbd_cells([3.3] * 16), 20),
    ("jk02_32s cell info (16)", "jk02_32s", bf.jk02_cell_info(cells=[3.3] * 16, layout=32), 20),
    ("jk02_24s cell info (16)", "jk02_24s", bf.jk02_cell_info(cells=[3.3] * 16, layout=24), 20),
    ("daly status (16 cells)", "daly", bf.daly_status(cells=[3.3] * 16, temperatures=(20, 21)), 20),
    ("seplos EIA (system)", "seplos", bm.seplos_eia(), 20),
    ("seplos EIC (alarms)", "seplos", bm.seplos_eic(), 20),
    ("seplos PIB (16 cells)", "seplos", bm.seplos_pib(1, cells=[3.3] * 16), 20),
    ("ant status (16 cells)", "ant", bm.ant_status(cells=[3.3] * 16), 20),
    ("redodo status (4 cells)", "redodo", bm.redodo_status(), 20),
    ("renogy cells (4)", "renogy", bm.renogy_cells(), 20),
    ("renogy values", "renogy", bm.renogy_values(), 20),
    ("renogy alarms", "renogy", bm.renogy_alarms(), 20),
)

def bench(name, proto, frame, mtu):
    d = protocols.get(proto)
    a = d.new_assembler()
    r = Reading()
    parts = bf.fragments(frame, mtu)
    decode = d.decode
    def sink(f):
        decode(f, r)
    feed = a.feed
    for _ in range(20):
        for p in parts:
            feed(p, sink)
    n = 300
    t0 = time.ticks_us()
    for _ in range(n):
        for p in parts:
            feed(p, sink)
    dt = time.ticks_diff(time.ticks_us(), t0)
    assert a.frames == n + 20, a.frames
    # allocation: gc off, heap delta over k rounds
    k = 50
    gc.collect()
    gc.disable()
    m0 = gc.mem_alloc()
    for _ in range(k):
        for p in parts:
            feed(p, sink)
    m1 = gc.mem_alloc()
    gc.enable()
    # the decode alone
    fr = memoryview(bytearray(frame))
    gc.collect()
    gc.disable()
    d0 = gc.mem_alloc()
    for _ in range(k):
        decode(fr, r)
    d1 = gc.mem_alloc()
    gc.enable()
    print("%-26s %5d B %3d notif %9.0f frames/s %7d B/frame %7d B/decode" % (
        name, len(frame), len(parts), n * 1e6 / dt, (m1 - m0) // k, (d1 - d0) // k))

print("%-26s %7s %9s %16s %9s %9s" % ("frame", "size", "", "assemble+decode", "alloc", "decode only"))
for c in CASES:
    bench(*c)
gc.collect()
a = protocols.get("jk02_32s").new_assembler()
print("assembler buffers (preallocated once per link): " + ", ".join(
    "%s %d B" % (p, protocols.get(p).new_assembler().SIZE)
    for p in ("jbd", "jk02_32s", "daly", "seplos", "ant", "redodo", "renogy")))
"""


def main():
    mpy = os.environ.get("MICROPYTHON") or os.path.join(ROOT, ".venv", "bin", "micropython")
    env = dict(os.environ)
    if "MICROPYPATH" not in env:
        env["MICROPYPATH"] = ":".join([".frozen", os.path.join(ROOT, "modules"), os.path.join(ROOT, "sim")])
    print("BMS codecs on the MicroPython unix port (%s); notifications of 20 bytes (ATT MTU 23)" % os.path.basename(mpy))
    r = subprocess.run([mpy, "-X", "heapsize=4m", "-c", MPY_CODE], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    sys.stdout.write(r.stdout)
    if r.returncode:
        sys.stderr.write(r.stderr)
        return r.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
