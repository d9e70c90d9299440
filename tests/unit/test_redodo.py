import bms_frames as bf
import bms_frames_more as bm
from bms_testdata import check_assembly, check_shared, close, feed_all, unhex
from smartbms.bms import protocols, redodo
from smartbms.bms.reading import BMSError, Reading, untrusted
from testutil import raises


def decode_new(frame):
    r = Reading()
    assert redodo.decode(frame, r) is True
    return r


def test_shared_frames_decode_through_assembler():
    check_shared("redodo", redodo.decode)


def test_request_and_driver():
    assert redodo.READ_STATUS == unhex("000004011355aa17")
    d = protocols.get("redodo")
    assert d.poll_requests() == (redodo.READ_STATUS,) and d.start_requests() == ()
    assert d.service_uuids == (0xFFE0,) and d.notify_uuid == 0xFFE1 and d.write_uuid == 0xFFE2
    assert d.charge_fet_request(False) is None
    assert redodo.sum8(unhex("000004011355aa"), 7) == 0x17


def test_values_both_current_signs():
    for current in (-87.654, 0.0, 12.5):
        frame = bm.redodo_status(cells=[3.301, 3.302, 3.303, 3.304], voltage=13.25, current=current,
                                 temperatures=(-7,), remaining_ah=55.5, nominal_ah=100.0, soc=56, cycles=42)
        assert len(frame) == 105 and frame[2] == 0x65
        r = decode_new(frame)
        assert close(r.current, current), (current, r.current)
        assert close(r.voltage, 13.25) and r.soc == 56 and r.cycles == 42
        assert close(r.remaining_ah, 55.5) and close(r.nominal_ah, 100.0)
        assert [round(c * 1000) for c in r.cells] == [3301, 3302, 3303, 3304]
        assert r.temperatures == [-7] and r.faults == []
        assert r.charge_fet is None and r.discharge_fet is None  # not reported by this family


def test_sixteen_cells_and_empty_slots_skipped():
    cells = [3.2 + i / 1000 for i in range(16)]
    r = decode_new(bm.redodo_status(cells=cells))
    assert [round(c * 1000) for c in r.cells] == [3200 + i for i in range(16)]
    data = bytearray(bm.redodo_status(cells=cells)[8:104])
    data[16 - 8:18 - 8] = b"\x00\x00"  # cell 1 missing
    r = decode_new(bm.redodo_frame(0x13, bytes(data)))
    assert len(r.cells) == 15 and close(r.cells[0], 3.201)


def test_protection_and_failure_bits():
    r = decode_new(bm.redodo_status(protection=(1 << 2) | (1 << 31), failure=1 << 9))
    assert r.faults == ["redodo_protection_bit_2", "redodo_failure_bit_9", "redodo_protection_bit_31"]
    for name in r.faults:
        assert untrusted(name), name


def test_status_byte_and_other_commands():
    frame = bm.redodo_frame(0x13, bytes(96), status=1)
    e = raises(BMSError, redodo.decode, frame, Reading())
    assert "status" in str(e)
    other = bm.redodo_frame(0x16, b"\x01\x02\x03")
    assert redodo.decode(other, Reading()) is False
    assert redodo.info(other) == {"type": "reply", "command": 0x16, "data": "010203"}
    raises(BMSError, redodo.decode, bm.redodo_frame(0x13, bytes(40)), Reading())  # short status


def test_decode_rejects_bad_frames():
    good = bm.redodo_status()
    bad = bytearray(good)
    bad[50] ^= 4
    for b in (b"", good[:8], good[:-1], bytes(bad), good + b"\x00", b"\x00\x01" + good[2:]):
        raises(BMSError, redodo.decode, b, Reading())


def test_failed_decode_changes_nothing():
    r = decode_new(bm.redodo_status(soc=55))
    before = r.to_dict()
    bad = bytearray(bm.redodo_status(soc=11))
    bad[-1] ^= 1
    raises(BMSError, redodo.decode, bytes(bad), r)
    assert r.to_dict() == before


def test_sim_answers_the_status_request():
    values = {"cells": [3.35] * 8, "current": -3.2, "soc": 71.6, "temperatures": [19.6, 30.0]}
    out = bf.respond("redodo", redodo.READ_STATUS, values)
    a = redodo.Assembler()
    frames = feed_all(a, bf.fragments(out[0], 20))
    assert len(frames) == 1
    r = decode_new(frames[0])
    assert len(r.cells) == 8 and close(r.current, -3.2) and r.soc == 72 and r.temperatures == [20]
    assert bf.respond("redodo", b"\x00\x00\x04\x01\x13\x55\xaa\x18", values) == []  # bad sum


def test_assembler_fragments_garbage_stall_restart():
    check_assembly(redodo.Assembler, bm.redodo_status(soc=10), bm.redodo_status(soc=20, cells=[3.1] * 16))
