# A simulated BMS peripheral for `make sim` (host only, never frozen): it advertises and
# answers in its real protocol through the fake aioble radio (aioble.sim), with the values of
# a sim/battery.py Battery, framed by sim/bms_frames.py.
#   JBD (default): service FF00, notify FF01, write FF02; answers each request; the module
#       speaks only the default ATT MTU, so every frame arrives as 20-byte notifications.
#   JK02 (jk02_24s/jk02_32s): service FFE0, one FFE1 (write + notify), manufacturer data
#       0x0B65; after the 0x96 request it streams a 300-byte cell-info frame every
#       STREAM_MS of real time on its own, split by the negotiated MTU.
#   Daly: service FFF0, notify FFF1, write FFF2, name DL-<MAC>; 129-byte answers.
# Notifications are spaced FRAGMENT_GAP_MS apart (one per connection event), as on the air.
# The radio's delays are device time: at SIM_SPEED x they shrink by that factor (to a burst
# of back-to-back notifications at high speeds, the hardest case for the central), so BLE
# latency relative to the firmware's device-time timeouts stays as on the device.
import asyncio

from smartbms import clock

import aioble
import bms_frames
import bluetooth

FRAGMENT_GAP_MS = 8
STREAM_MS = 500
RESPONSE_DELAY_MS = 15
STREAM_MIN_REAL_MS = 50  # keeps a fast sim from spending its CPU on JK frames

_R = bluetooth.FLAG_READ
_W = bluetooth.FLAG_WRITE
_WNR = bluetooth.FLAG_WRITE_NO_RESPONSE
_N = bluetooth.FLAG_NOTIFY

MACS = {"jbd": "A4:C1:37:10:20:30", "jk02_24s": "C8:47:8C:E1:02:03", "jk02_32s": "C8:47:8C:E1:02:04",
        "daly": "17:71:06:02:03:14"}


def _values(r):
    return {"voltage": r.voltage, "current": r.current, "soc": int(round(r.soc)),
            "remaining_ah": r.remaining_ah, "nominal_ah": r.nominal_ah, "cycles": r.cycles,
            "cells": tuple(r.cells), "temperatures": tuple(r.temperatures),
            "charge_fet": r.charge_fet, "discharge_fet": r.discharge_fet}


class SimBMS:
    def __init__(self, battery, protocol="jbd", mac=None):
        if protocol not in MACS:
            raise ValueError("SIM_BMS must be one of %s, not %r" % (", ".join(sorted(MACS)), protocol))
        self.battery = battery
        self.protocol = protocol
        self.mac = mac or MACS[protocol]
        self.requests = 0
        self.frames_sent = 0
        self._stream = None
        if protocol == "jbd":
            self.notify_uuid, name = 0xFF01, "SP04S034-L4S-200A"
            services = {0xFF00: [(0xFF01, _R | _N), (0xFF02, _W | _WNR)]}
            mfr, mtu_max = None, 23
        elif protocol == "daly":
            self.notify_uuid, name = 0xFFF1, "DL-" + self.mac.replace(":", "")
            services = {0xFFF0: [(0xFFF1, _R | _N), (0xFFF2, _W | _WNR)]}
            mfr, mtu_max = None, 185
        else:
            self.notify_uuid, name = 0xFFE1, "JK-B2A8S20P"
            services = {0xFFE0: [(0xFFE1, _W | _WNR | _N)]}
            mfr, mtu_max = (0x0B65, b"\xc8\x47\x8c\xe1\x02\x03"), 247
        self.peripheral = aioble.sim.Peripheral(
            mac=self.mac, name=name, services=services, manufacturer=mfr, rssi=-62,
            mtu_max=mtu_max, on_write=self._on_write)
        self.peripheral.fragment_gap_ms = clock.real_ms(FRAGMENT_GAP_MS)
        self.peripheral.response_delay_ms = clock.real_ms(RESPONSE_DELAY_MS)
        aioble.sim.add_peripheral(self.peripheral)

    def _send(self, frames):
        for f in frames:
            if self.peripheral.notify(self.notify_uuid, f):
                self.frames_sent += 1

    def _on_write(self, char_uuid, data):
        self.requests += 1
        # the fake radio records every write for tests; a months-long sim must not keep them
        del self.peripheral.writes[:]
        frames = bms_frames.respond(self.protocol, data, _values(self.battery.reading()))
        self._send(frames)
        if self.protocol.startswith("jk02") and len(data) > 4 and data[4] == 0x96 and self._stream is None:
            self._stream = asyncio.create_task(self._stream_cells())

    async def _stream_cells(self):
        # The JK module streams cell info until the central goes away.
        request = bytes(b"\xaa\x55\x90\xeb\x96" + bytes(15))
        try:
            while self.peripheral.connected:
                await asyncio.sleep_ms(max(STREAM_MIN_REAL_MS, clock.real_ms(STREAM_MS)))
                self._send(bms_frames.respond(self.protocol, request, _values(self.battery.reading())))
        finally:
            self._stream = None
