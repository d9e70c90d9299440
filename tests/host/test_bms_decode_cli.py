# The decoder CLI, run as a subprocess under the host CPython.
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "bms_decode.py")
FRAMES = os.path.join(ROOT, "..", "shared", "bms-frames", "frames.json")
NEW_FRAMES = os.path.join(ROOT, "..", "shared", "bms-frames", "newfamilies.json")
sys.path.insert(0, os.path.join(ROOT, "sim"))
import bms_frames as bf  # noqa: E402
import bms_frames_more as bm  # noqa: E402


def shared():
    frames = []
    for path in (FRAMES, NEW_FRAMES):
        if not os.path.exists(path):
            pytest.fail("shared BMS frames missing: %s" % path)
        with open(path) as f:
            frames += json.load(f)["frames"]
    return frames


def run(*args):
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True,
                          timeout=30, cwd="/")


def lines(out):
    return [json.loads(x) for x in out.splitlines() if x.strip()]


READING_FIELDS = {"voltage", "current", "soc", "remaining_ah", "nominal_ah", "cycles", "cells",
                  "temperatures", "charge_fet", "discharge_fet", "faults"}


@pytest.mark.parametrize("frame", shared(), ids=lambda f: f["name"])
def test_every_shared_frame_prints_its_stated_values(frame):
    r = run(frame["protocol"], *frame["fragments"])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    objs = lines(r.stdout)
    assert len(objs) == 1
    obj = objs[0]
    assert set(obj) <= READING_FIELDS
    for key, want in frame["expect"].items():
        assert obj[key] == pytest.approx(want, abs=1e-9), key
    if "faults" in frame:
        assert bool(obj["faults"]) == frame["faults"]
    if frame["protocol"] == "jbd" and "cells" in frame["expect"]:
        assert set(obj) == {"cells"}


def test_jbd_basic_has_null_cells_and_jk_daly_print_all_fields():
    r = run("jbd", bf.jbd_basic().hex())
    obj = lines(r.stdout)[0]
    assert set(obj) == READING_FIELDS and obj["cells"] is None  # cells come in their own frame
    r = run("jk02_24s", *[x.hex() for x in bf.fragments(bf.jk02_cell_info(layout=24), 128)])
    assert set(lines(r.stdout)[0]) == READING_FIELDS
    r = run("daly", bf.daly_status().hex())
    obj = lines(r.stdout)[0]
    assert set(obj) == READING_FIELDS and obj["nominal_ah"] is None


def test_several_frames_one_line_each_and_rounding():
    f1 = bf.jbd_basic(voltage=13.37, current=-1.23, temperatures=(21.3,), protection=1 << 10)
    f2 = bf.jbd_cells([3.3334, 3.2])
    r = run("jbd", (f1 + f2).hex(), "AT")  # "AT" is not hex
    assert r.returncode == 2
    r = run("jbd", *[x.hex() for x in bf.fragments(f1 + f2, 20)])
    assert r.returncode == 0, r.stderr
    a, b = lines(r.stdout)
    assert a["voltage"] == 13.37 and a["current"] == -1.23 and a["temperatures"] == [21.3]
    assert a["faults"] == ["short_circuit"]
    assert b == {"cells": [3.333, 3.2]}


def test_non_measurement_frames():
    r = run("jbd", bf.jbd_model("SP04S034").hex())
    assert lines(r.stdout) == [{"model": "SP04S034"}]
    r = run("jk02_32s", bf.jk02_device_info(vendor="JK_B2A8S20P").hex())
    obj = lines(r.stdout)[0]
    assert obj["type"] == "device_info" and obj["vendor"] == "JK_B2A8S20P"


def test_hex_with_separators():
    h = bf.jbd_cells([3.3]).hex()
    spaced = " ".join(h[i:i + 2] for i in range(0, len(h), 2))
    r = run("jbd", spaced)
    assert r.returncode == 0 and lines(r.stdout) == [{"cells": [3.3]}]


def _assert_fails(r, word):
    assert r.returncode == 2
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in r.stderr
    assert word in err, err
    return err


@pytest.mark.parametrize("protocol,frame", [
    ("jbd", bf.jbd_basic()),
    ("jk02_32s", bf.jk02_cell_info()),
    ("daly", bf.daly_status()),
    ("seplos", bm.seplos_eia()),
    ("seplos", bm.seplos_pib()),
    ("ant", bm.ant_status()),
    ("redodo", bm.redodo_status()),
    ("renogy", bm.renogy_cells()),
    ("renogy", bm.renogy_values()),
])
def test_corrupt_and_truncated_exit_2(protocol, frame):
    bad = bytearray(frame)
    bad[len(bad) // 2] ^= 0x10
    _assert_fails(run(protocol, bytes(bad).hex()), "checksum")
    _assert_fails(run(protocol, frame[:-3].hex()), "truncated")
    _assert_fails(run(protocol, "00" * 10), "no ")


def test_usage_errors_exit_2():
    _assert_fails(run("jbd", "xyz1"), "hex")
    _assert_fails(run("jbd", "abc"), "odd")
    _assert_fails(run("nope", "00"), "unknown protocol")
    _assert_fails(run("jbd"), "usage")
    _assert_fails(run(), "usage")


def test_bms_error_status_exit_2():
    _assert_fails(run("jbd", bf.jbd_frame(0x03, b"", status=0x80).hex()), "error")
    short = bf.jbd_frame(0x03, b"\x00" * 10)
    _assert_fails(run("jbd", short.hex()), "too short")


def test_help():
    r = run("--help")
    assert r.returncode == 0 and "PROTOCOL" in r.stdout
    # what it says of a JBD basic frame is what it prints (test above: "cells": null)
    text = " ".join(r.stdout.split())
    assert "a field the frame does not carry is null (e.g. Daly nominal_ah, `cells` of a JBD basic-info frame" in text
    assert "omits" not in text


def test_new_families_print_null_for_what_a_block_does_not_carry():
    r = run("seplos", *[x.hex() for x in bf.fragments(bm.seplos_eia(voltage=52.1, current=-3.5), 20)])
    obj = lines(r.stdout)[0]
    assert obj["voltage"] == 52.1 and obj["current"] == -3.5
    assert obj["cells"] is None and obj["faults"] is None and obj["charge_fet"] is None
    r = run("seplos", bm.seplos_eic(charge_fet=False, events=(0x02, 0, 0, 0, 0, 0)).hex())
    obj = lines(r.stdout)[0]
    assert obj["charge_fet"] is False and obj["faults"] == ["cell_overvoltage"] and obj["voltage"] is None
    r = run("renogy", bm.renogy_values(current=-0.86, remaining_ah=50.0, nominal_ah=100.0).hex())
    obj = lines(r.stdout)[0]
    assert obj["current"] == -0.86 and obj["soc"] == 50 and obj["cells"] is None
    r = run("redodo", bm.redodo_status().hex())
    obj = lines(r.stdout)[0]
    assert obj["charge_fet"] is None and obj["faults"] == []  # no FET state in this family


def test_a_whole_seplos_poll_in_one_go():
    frames = [bm.seplos_eia(), bm.seplos_eic(), bm.seplos_pib(1, cells=[3.3] * 16)]
    r = run("seplos", *[x.hex() for x in bf.fragments(b"".join(frames), 20)])
    assert r.returncode == 0, r.stderr
    objs = lines(r.stdout)
    assert len(objs) == 3 and len(objs[2]["cells"]) == 16


def test_error_replies_exit_2():
    _assert_fails(run("seplos", "0084029301"), "illegal data address")
    e = bytearray(b"\x30\x83\x02\x00\x00")
    c = bf.crc16_modbus(e, 3)
    e[3], e[4] = c & 0xFF, c >> 8
    _assert_fails(run("renogy", bytes(e).hex()), "error")
    _assert_fails(run("redodo", bm.redodo_frame(0x13, bytes(96), status=2).hex()), "status")
    _assert_fails(run("ant", bm.ant_frame(0x11, bytes(30)).hex()), "too short")
