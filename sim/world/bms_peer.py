"""A simulated BMS on the air: a world Peer that advertises and answers in its family's
real protocol (frames from sim/bms_frames.py), with the values of a sim/battery.py Battery
or a fixed dict (tests).
  JBD: service FF00, notify FF01, write FF02, 20-byte notifications (ATT MTU 23 only);
       "jbd_fff0" is the rebrand serving the same frames on FFF0/FFF1/FFF2.
  JK02 (jk02_24s/jk02_32s): service FFE0, FFE1 (write + notify), manufacturer data
       0x0B65; after the 0x96 request it streams a 300-byte cell-info frame every stream_ms.
  Daly: service FFF0, notify FFF1, write FFF2, name DL-<MAC>; 129-byte answers.
  Seplos v3: service FFF0, notify FFF1, write FFF2, name SP05B...; Modbus answers.
  ANT: service FFE0, FFE1 (notify + write) and FFE2 (write), manufacturer id 0x2313.
  Redodo/LiTime: service FFE0, notify FFE1, write FFE2, an AT channel FFE3, id 0x585A.
  Renogy: write FFD1 in service FFD0, notify FFF1 in service FFF0, name BT-TH-...
(layouts as logged by aiobmsble and the ESPHome components; ../shared/notes/bms-new-families.md)
"""
import asyncio

import bms_frames
from world.radio import FLAG_NOTIFY, FLAG_READ, FLAG_WRITE, FLAG_WRITE_NO_RESPONSE, Peer

_R, _W, _WNR, _N = FLAG_READ, FLAG_WRITE, FLAG_WRITE_NO_RESPONSE, FLAG_NOTIFY

MACS = {"jbd": "A4:C1:37:10:20:30", "jk02_24s": "C8:47:8C:E1:02:03", "jk02_32s": "C8:47:8C:E1:02:04",
        "daly": "17:71:06:02:03:14", "seplos": "60:6E:41:10:20:31", "ant": "AA:BB:CC:10:20:32",
        "redodo": "C8:47:80:10:20:33", "renogy": "80:6F:B0:10:20:34"}
PROTOCOLS = tuple(sorted(MACS))
_JK_CELL_REQUEST = b"\xaa\x55\x90\xeb\x96" + bytes(15)


def battery_values(r):
    """bms_frames values from a Battery reading (or anything with its attributes). `faults`
    are the protections the simulated BMS is in (its own limits or one the panel forced):
    bms_frames sets each family's bits for them (Redodo's frames have none, ANT's carry
    them as MOSFET status codes)."""
    return {"voltage": r.voltage, "current": r.current, "soc": int(round(r.soc)),
            "remaining_ah": r.remaining_ah, "nominal_ah": r.nominal_ah, "cycles": r.cycles,
            "cells": tuple(r.cells), "temperatures": tuple(r.temperatures),
            "charge_fet": r.charge_fet, "discharge_fet": r.discharge_fet,
            "faults": tuple(getattr(r, "faults", ()))}


def _layout(protocol, mac, variant):
    """(notify uuid, name, services, manufacturer, mtu_max) of a family."""
    if protocol == "jbd":
        if variant == "fff0":
            return 0xFFF1, "SP04S034-L4S", [(0xFFF0, [(0xFFF1, _R | _N), (0xFFF2, _W | _WNR)])], None, 23
        return 0xFF01, "SP04S034-L4S-200A", [(0xFF00, [(0xFF01, _R | _N), (0xFF02, _W | _WNR)])], None, 23
    if protocol == "daly":
        name = "DL-" + mac.replace(":", "")
        return 0xFFF1, name, [(0xFFF0, [(0xFFF1, _R | _N), (0xFFF2, _W | _WNR)])], None, 185
    if protocol.startswith("jk02"):
        chars = [(0xFFE1, _W | _WNR | _N)]
        if variant == "two_chars":  # a notify-only FFE1 first, then write (with response) + notify
            chars = [(0xFFE1, _R | _N), (0xFFE1, _W | _N)]
        elif variant == "split":  # as logged from a JK-B1A20S15P: write 0x0C, notify 0x12
            chars = [(0xFFE1, _W | _WNR), (0xFFE1, _R | _N)]
        mfr = (0x0B65, bytes.fromhex(mac.replace(":", "")))
        return 0xFFE1, "JK-B2A8S20P", [(0xFFE0, chars)], mfr, 247
    if protocol == "seplos":
        return 0xFFF1, "SP05B2312190075", [(0xFFF0, [(0xFFF1, _R | _N), (0xFFF2, _W | _WNR)])], None, 23
    if protocol == "ant":
        chars = [(0xFFE1, _N | _W | _WNR), (0xFFE2, _W | _WNR)]
        return 0xFFE1, "ANT-BLE16ZMUB", [(0xFFE0, chars)], (0x2313, bytes(6)), 185
    if protocol == "redodo":
        chars = [(0xFFE1, _N), (0xFFE2, _W | _WNR), (0xFFE3, _W | _WNR)]
        return 0xFFE1, "R-12100BNNA70-A02402", [(0xFFE0, chars)], (0x585A, bytes(6)), 185
    if protocol == "renogy":
        services = [(0xFFD0, [(0xFFD1, _W | _WNR)]), (0xFFF0, [(0xFFF1, _R | _N)])]
        return 0xFFF1, "BT-TH-6F102034", services, None, 23
    raise ValueError("unknown BMS protocol %r (known: %s)" % (protocol, ", ".join(PROTOCOLS)))


class BMSPeer(Peer):
    """values: a dict (fixed) or a callable returning one (e.g. from a Battery)."""

    def __init__(self, protocol, values, mac=None, variant=None, mtu_max=None, stream_ms=500, name=None):
        mac = mac or MACS.get(protocol) or MACS["jbd"]
        notify_uuid, default_name, services, mfr, default_mtu = _layout(protocol, mac, variant)
        super().__init__(mac, name or default_name, services, mfr, rssi=-62,
                         mtu_max=mtu_max or default_mtu)
        self.on_write = self._answer
        self.protocol = protocol
        self.notify_uuid = notify_uuid
        self._values = values
        self.stream_ms = stream_ms
        # how it answers: None (its protocol), or scripted for tests:
        #   "error": a JBD error frame (status 0x80); "corrupt": a JBD frame with one bit
        #   flipped; "half": the first 6 bytes of a frame, then nothing;
        #   [{"at": i, "byte": b, "fragments": [hex, ...]}, ...]: the first rule whose request
        #   byte i is b (at None: any request) replays its notifications as captured
        self.answer = None
        self.charge_fet_off = False  # switched off by the central (the MOSFET command)
        self.on_fet = None  # fn(off): the world opens the battery's charge path
        self.requests = 0
        self.frames_sent = 0
        self.streamed = 0
        self._stream = None

    def values(self):
        v = self._values
        return v() if callable(v) else v

    def set_values(self, values):
        self._values = values

    def send_frames(self, frames):
        for f in frames:
            if self.notify(self.notify_uuid, f):
                self.frames_sent += 1

    def _answer(self, _char, data):
        self.requests += 1
        self._mosfet_command(data)
        if self.answer is not None:
            self._scripted(data)
            return
        self.send_frames(bms_frames.respond(self.protocol, data, self.values()))
        if self.protocol.startswith("jk02") and len(data) > 4 and data[4] == 0x96:
            if self._stream is None or self._stream.done():
                self._stream = asyncio.ensure_future(self._stream_cells())

    def _mosfet_command(self, data):
        """JBD register 0xE1 (a disable mask, bit0 = charge) and JK command 0x1D (value 0 =
        charge off) switch this BMS's charge MOSFET: the charger is cut off at the pack."""
        off = None
        if self.protocol == "jbd" and len(data) >= 7 and data[1] == 0x5A and data[2] == 0xE1:
            off = bool(data[5] & 1)
        elif self.protocol.startswith("jk02") and len(data) >= 7 and data[4] == 0x1D:
            off = data[6] == 0
        if off is not None:
            self.charge_fet_off = off
            if self.on_fet is not None:
                self.on_fet(off)

    def _scripted(self, data):
        a = self.answer
        reg = data[2] if len(data) > 2 else 0
        if a == "error":
            self.send_frames([bms_frames.jbd_frame(reg, b"", status=0x80)])
        elif a == "corrupt":
            f = bytearray(bms_frames.jbd_frame(reg, bytes(8)))
            f[5] ^= 0x01
            self.send_frames([bytes(f)])
        elif a == "half":
            self.send_frames([bms_frames.jbd_frame(reg, bytes(8))[:6]])
        else:
            for rule in a:
                at = rule.get("at")
                if at is None or (at < len(data) and data[at] == rule["byte"]):
                    self.send_frames([bytes.fromhex(h) for h in rule["fragments"]])
                    return

    async def _stream_cells(self):
        # The JK module streams cell info until the central goes away.
        conn = self.conn_handle
        while self.conn_handle == conn and conn is not None:
            # device time, but never faster than 50 ms of real time (keeps a fast sim's CPU)
            await asyncio.sleep(max(0.05, self.stream_ms * self.radio.time_scale / 1000))
            if self.conn_handle != conn or self.silent:
                continue
            frames = bms_frames.respond(self.protocol, _JK_CELL_REQUEST, self.values())
            n = self.frames_sent
            self.send_frames(frames)
            self.streamed += self.frames_sent - n
