# Heap bytes allocated per poll cycle by the BLE link in steady state, per BMS family, on
# the MicroPython unix port against the fake aioble (sim/shims/aioble).
# Method: connect and warm up, then gc.collect(), gc.disable() and read gc.mem_alloc()
# before and after N polls. The fake radio's own work (write records, scheduling the
# answer, one bytes object per notification, as aioble's IRQ handler makes) lands in the
# same heap; "radio only" repeats the same writes and notifications with nobody
# decoding, and "codec" feeds the same notifications through an assembler and decoder
# alone, so "link" = total - radio - codec is the link's own share.
# (64-bit unix port: objects are larger than on the ESP32, so these are upper bounds.)
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 40

SCRIPT = r"""
import asyncio, gc, sys
sys.path.insert(0, "tests/unit")
import aioble, bluetooth, bms_frames
from aioble import sim
from smartbms.bms import protocols
from smartbms.bms.link import BMSLink

N = %(n)d
VALUES = {"voltage": 13.3, "current": -2.5, "soc": 77, "remaining_ah": 77.0, "nominal_ah": 100.0,
          "cycles": 12, "cells": (3.31, 3.32, 3.33, 3.32), "temperatures": (21.0, 22.0),
          "charge_fet": True, "discharge_fet": True}
R, W, WNR, NT = bluetooth.FLAG_READ, bluetooth.FLAG_WRITE, bluetooth.FLAG_WRITE_NO_RESPONSE, bluetooth.FLAG_NOTIFY
SETUPS = {
    "jbd": (0xFF00, 0xFF01, [(0xFF01, R | NT), (0xFF02, W | WNR)], "SP04S034", None),
    "daly": (0xFFF0, 0xFFF1, [(0xFFF1, R | NT), (0xFFF2, W | WNR)], "DL-17710600AA04", None),
    "jk02_32s": (0xFFE0, 0xFFE1, [(0xFFE1, W | WNR | NT)], "JK-B2A8S20P", (0x0B65, b"\x01")),
    "jk02_24s": (0xFFE0, 0xFFE1, [(0xFFE1, W | WNR | NT)], "JK-B2A8S20P", (0x0B65, b"\x01")),
}
STREAM = bytes(b"\xaa\x55\x90\xeb\x96" + bytes(15))


async def measure(proto, mode, mtu):
    sim.reset()
    svc, nuuid, chars, name, mfr = SETUPS[proto]
    cache = {}
    holder = []

    def answer(data):
        key = bytes(data)
        if key not in cache:
            cache[key] = bms_frames.respond(proto, key, VALUES)
        return cache[key]

    def on_write(uuid, data):
        for f in answer(data):
            holder[0].notify(nuuid, f)

    p = sim.add_peripheral(sim.Peripheral("17:71:06:00:AA:04", name, {svc: chars}, mfr, mtu_max=mtu, on_write=on_write))
    holder.append(p)
    streaming = proto.startswith("jk")
    if streaming:
        frame = answer(STREAM)[0]

        async def stream():
            while True:
                await asyncio.sleep_ms(30)  # slower than the link's 10 ms wait tick, as JK's 500 ms are
                if p.connected and p.subscribed(nuuid):
                    p.notify(nuuid, frame)

        streamer = asyncio.create_task(stream())
    link = BMSLink(protocols.get(proto), mac=p.mac, mode=mode, request_timeout_ms=500, scan_ms=100)
    for _ in range(5):
        assert await link.poll_once(), link.stats
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    for _ in range(N):
        assert await link.poll_once(), link.stats
    a1 = gc.mem_alloc()
    gc.enable()
    total = (a1 - a0) // N
    radio = 0
    if mode == "persistent" and link.connected:
        reqs = protocols.get(proto).poll_requests()
        wchar = link._wchar
        gc.collect()
        gc.disable()
        s0 = p.fragments_sent
        b0 = gc.mem_alloc()
        for _ in range(N):
            sent = p.fragments_sent
            if streaming:
                while p.fragments_sent == sent:
                    await asyncio.sleep_ms(10)
            for req in reqs:
                sent = p.fragments_sent
                await wchar.write(req, False)
                while p.fragments_sent == sent:
                    await asyncio.sleep_ms(10)
        b1 = gc.mem_alloc()
        gc.enable()
        radio = (b1 - b0) // N
    await link.close()
    if streaming:
        streamer.cancel()
    # The codec's share: the same notifications through a fresh assembler and decoder.
    drv = protocols.get(proto)
    frags = []
    for req in (drv.poll_requests() or (STREAM,)):
        for f in answer(req):
            frags += bms_frames.fragments(f, p.mtu - 3 if p.mtu else 20)
    asm = drv.new_assembler()
    from smartbms.bms.reading import Reading
    rd = Reading()

    def sink(fr):
        drv.decode(fr, rd)

    for fr in frags:
        asm.feed(fr, sink)
    gc.collect()
    gc.disable()
    c0 = gc.mem_alloc()
    for _ in range(N):
        for fr in frags:
            asm.feed(fr, sink)
    c1 = gc.mem_alloc()
    gc.enable()
    codec = (c1 - c0) // N
    link_total = total - radio if radio else total
    print("%%-9s %%-10s mtu %%3d  total %%5d B/poll = radio %%5d + codec %%4d + link %%5d  (frames %%d, dropped %%d)" %% (
        proto, mode, mtu, total, radio, codec, link_total - codec, link.stats["frames"], link.stats["dropped_bytes"]))


async def main():
    for proto in ("jbd", "daly", "jk02_32s", "jk02_24s"):
        await measure(proto, "persistent", 23)
        await measure(proto, "persistent", 247)
    await measure("jbd", "release", 23)

asyncio.run(main())
"""


def main():
    mpy = os.environ.get("MICROPYTHON") or os.path.join(ROOT, ".venv/bin/micropython")
    path = os.environ.get("MICROPYPATH") or ":".join(
        [".frozen"] + [os.path.join(ROOT, p) for p in ("modules", "build/gen", "sim/shims", "sim", "build/vendor")])
    env = dict(os.environ, MICROPYPATH=path)
    print("bytes allocated per poll cycle, steady state, %d polls (MicroPython unix port, fake aioble)" % N)
    r = subprocess.run([mpy, "-X", "heapsize=8m", "-c", SCRIPT % {"n": N}], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    sys.stdout.write(r.stdout)
    if r.returncode:
        sys.stderr.write(r.stderr)
        sys.exit(r.returncode)


if __name__ == "__main__":
    main()
