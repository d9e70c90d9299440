#!/usr/bin/env python3
"""Decode BMS notifications into JSON, using the firmware's own codecs.

    bms_decode.py PROTOCOL HEX [HEX ...]

PROTOCOL is jbd, jk02_24s, jk02_32s, daly, seplos, ant, redodo or renogy. Each HEX argument
is one BLE notification (spaces and colons allowed), fed in order through the protocol's
assembler. Prints one JSON object per complete frame, one per line:
  - measurement frames: the Reading fields (voltage V, current A (+ = charging), soc %,
    remaining_ah, nominal_ah, cycles, cells [V], temperatures [degC], charge_fet,
    discharge_fet, faults); a field the frame does not carry is null (e.g. Daly nominal_ah,
    `cells` of a JBD basic-info frame, everything but FETs and faults of a Seplos EIC
    block); a JBD cell frame prints `cells` only;
  - other frames: a small object of their own: JBD model {"model"}, JBD write ack
    {"register", "ack", "data"}, JK device info {"type": "device_info", "vendor",
    "hardware", "software", "name"}, JK settings {"type": "settings"}, other Daly
    responses {"type": "response", "bytes", "data"}.
A corrupt, truncated or non-hex input prints a one-line reason on stderr and exits 2.
"""
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_MODULES = os.path.join(os.path.dirname(_HERE), "modules")
if _MODULES not in sys.path:
    sys.path.insert(0, _MODULES)

from smartbms.bms import protocols  # noqa: E402
from smartbms.bms.reading import BMSError, Reading  # noqa: E402

# Decimal places per field: the codecs' resolution (JK reports mV, mA, mAh).
_PLACES = {
    "voltage": 3,
    "current": 3,
    "remaining_ah": 3,
    "nominal_ah": 3,
    "soc": 1,
    "cells": 3,
    "temperatures": 1,
}


# ANT counts capacity in micro-Ah: keep all of it.
_PROTOCOL_PLACES = {"ant": {"remaining_ah": 6, "nominal_ah": 6}}


class UsageError(Exception):
    pass


def _round(key, value, places=None):
    places = (places or _PLACES).get(key, _PLACES.get(key))
    if places is None or value is None:
        return value
    if isinstance(value, list):
        return [round(v, places) for v in value]
    if isinstance(value, float):
        v = round(value, places)
        return int(v) if key == "soc" and v == int(v) else v
    return value


def reading_json(reading, fields=None, protocol=None):
    """The Reading as a JSON-ready dict (rounded to the protocol's resolution); fields not in
    `fields` (None = all) are null."""
    d = reading.to_dict()
    places = _PROTOCOL_PLACES.get(protocol)
    out = {}
    for key in d:
        out[key] = _round(key, d[key], places) if fields is None or key in fields else None
    return out


_JBD_BASIC_FIELDS = tuple(k for k in Reading().to_dict() if k != "cells")


class _Unset:
    """Marks a Reading field before decoding: one still holding it was not in the frame."""


_UNSET = _Unset()


def blank_reading():
    r = Reading()
    for key in r.to_dict():
        setattr(r, key, _UNSET)
    return r


def _frame_json(protocol, frame, reading):
    """A JBD cell frame prints `cells` alone; other fields a frame does not carry are null."""
    if protocol == "jbd":
        if frame[1] == 0x04:
            return {"cells": _round("cells", reading.cells)}
        return reading_json(reading, _JBD_BASIC_FIELDS)
    carried = []
    for key in ("voltage", "current", "soc", "remaining_ah", "nominal_ah", "cycles", "cells",
                "temperatures", "charge_fet", "discharge_fet", "faults"):
        if getattr(reading, key) is _UNSET:
            setattr(reading, key, [] if key in ("cells", "temperatures", "faults") else None)
        else:
            carried.append(key)
    return reading_json(reading, carried, protocol)


class FrameDecoder:
    """Notifications in, JSON-ready dicts out: the pipeline shared with bms_probe."""

    def __init__(self, protocol):
        if protocol not in protocols.NAMES:
            raise UsageError("unknown protocol %r (use one of: %s)" % (protocol, ", ".join(protocols.NAMES)))
        self.protocol = protocol
        self.driver = protocols.get(protocol)
        self.assembler = self.driver.new_assembler()
        self._out = []
        self._error = None

    def _sink(self, frame):
        reading = blank_reading() if self.protocol != "jbd" else Reading()
        try:
            if self.driver.decode(frame, reading):
                self._out.append(_frame_json(self.protocol, frame, reading))
            else:
                self._out.append(self.driver.info(frame))
        except BMSError as e:
            if self._error is None:
                self._error = str(e)

    def feed(self, data, now_ms=None):
        """Feed one notification; returns the dicts of the frames it completed. Raises
        BMSError for a complete frame that does not decode."""
        self._out = []
        self._error = None
        self.assembler.feed(data, self._sink, now_ms)
        if self._error is not None:
            raise BMSError(self._error)
        return self._out

    def problems(self):
        """Why the input so far was not clean, or None."""
        a = self.assembler
        if a.bad_checksum:
            return "%d frame(s) with a bad checksum" % a.bad_checksum
        if a.oversize:
            return "%d frame(s) longer than the protocol allows" % a.oversize
        if a.pending() and a.expected():
            return "truncated frame: %d of %d byte(s) at the end" % (a.pending(), a.expected())
        if not a.frames:
            other = a.dropped_bytes + a.pending()
            if other:
                return "no %s frame found (%d byte(s) of other data)" % (self.protocol, other)
            return "no %s frame found" % self.protocol
        if a.pending():
            return "%d byte(s) after the last frame that start no frame" % a.pending()
        return None


def parse_hex(arg, index):
    text = arg.replace(" ", "").replace(":", "").replace("\n", "")
    if text[:2].lower() == "0x":
        text = text[2:]
    if not text:
        raise UsageError("argument %d is empty" % index)
    if len(text) % 2:
        raise UsageError("argument %d has an odd number of hex digits" % index)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError("argument %d is not hex: %r" % (index, arg[:40]))


def main(argv=None, out=None, err=None):
    argv = sys.argv[1:] if argv is None else argv
    out = out or sys.stdout
    err = err or sys.stderr
    if argv and argv[0] in ("-h", "--help"):
        out.write(__doc__)
        return 0
    try:
        if len(argv) < 2:
            raise UsageError("usage: bms_decode.py PROTOCOL HEX [HEX ...] (PROTOCOL: %s)" % "|".join(protocols.NAMES))
        decoder = FrameDecoder(argv[0])
        notifications = [parse_hex(a, i + 2) for i, a in enumerate(argv[1:])]
        for n in notifications:
            for obj in decoder.feed(n):
                out.write(json.dumps(obj) + "\n")
        problem = decoder.problems()
        if problem:
            raise BMSError(problem)
    except (UsageError, BMSError) as e:
        err.write("bms_decode: %s\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
