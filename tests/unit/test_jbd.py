import bms_frames as bf
from bms_testdata import assert_expected, close, feed_all, shared_frames, unhex
from smartbms.bms import jbd
from smartbms.bms.reading import BMSError, Reading
from testutil import raises


def decode_new(frame):
    r = Reading()
    assert jbd.decode(frame, r) is True
    return r


def test_shared_frames_decode_through_assembler():
    for f in shared_frames("jbd"):
        a = jbd.Assembler()
        frames = feed_all(a, [unhex(h) for h in f["fragments"]])
        assert len(frames) == 1, f["name"]
        r = Reading()
        assert jbd.decode(frames[0], r) is True
        assert_expected(r, f["expect"])
        if "faults" in f:
            assert (len(r.faults) > 0) == f["faults"], f["name"]
        assert a.dropped_bytes == 0 and a.bad_checksum == 0


def test_requests():
    assert jbd.READ_BASIC == unhex("dda50300fffd77")
    assert jbd.READ_CELLS == unhex("dda50400fffc77")
    assert jbd.READ_MODEL == unhex("dda50500fffb77")
    assert jbd.mosfet_request(False) == unhex("dd5ae1020001ff1c77")
    assert jbd.mosfet_request(True) == unhex("dd5ae1020000ff1d77")
    assert jbd.mosfet_request(False, False) == unhex("dd5ae1020003ff1a77")
    assert jbd.Driver().charge_fet_request(False) == unhex("dd5ae1020001ff1c77")


def test_basic_values_negative_current_and_faults_clear():
    frame = bf.jbd_basic(voltage=26.47, current=-12.34, remaining_ah=80.5, nominal_ah=100,
                         cycles=321, soc=81, charge_fet=False, discharge_fet=True,
                         temperatures=(-5.5, 40.1), cell_count=8)
    r = Reading()
    r.faults = ["stale"]
    assert jbd.decode(frame, r)
    assert close(r.voltage, 26.47) and close(r.current, -12.34)
    assert close(r.remaining_ah, 80.5) and close(r.nominal_ah, 100.0)
    assert r.cycles == 321 and r.soc == 81
    assert r.charge_fet is False and r.discharge_fet is True
    assert len(r.temperatures) == 2
    assert close(r.temperatures[0], -5.5) and close(r.temperatures[1], 40.1)
    assert r.faults == []


def test_largest_currents_both_signs():
    r = decode_new(bf.jbd_basic(current=-327.68))
    assert close(r.current, -327.68)
    r = decode_new(bf.jbd_basic(current=327.67))
    assert close(r.current, 327.67)


def test_no_ntc():
    r = decode_new(bf.jbd_basic(temperatures=()))
    assert r.temperatures == []


def test_extended_length_ignores_trailing_bytes():
    frame = bf.jbd_basic(temperatures=(21.0, 22.0), extra=b"\x01\x02\x03\x04\x05\x06\x07\x08\x09")
    assert frame[3] == 23 + 4 + 9
    r = decode_new(frame)
    assert len(r.temperatures) == 2 and close(r.temperatures[1], 22.0)


def test_ntc_count_longer_than_frame_is_an_error():
    data = bytearray(bf.jbd_basic_data(temperatures=(20.0,)))
    data[22] = 5  # claims five sensors, carries one
    raises(BMSError, jbd.decode, bf.jbd_frame(0x03, bytes(data)), Reading())


def test_short_basic_is_an_error():
    raises(BMSError, jbd.decode, bf.jbd_frame(0x03, b"\x00" * 22), Reading())


def test_error_status_raises():
    frame = bf.jbd_frame(0x03, b"", status=0x80)
    a = jbd.Assembler()
    frames = feed_all(a, [frame])
    assert len(frames) == 1
    e = raises(BMSError, jbd.decode, frames[0], Reading())
    assert "error" in str(e)


def test_each_protection_bit_names_its_fault():
    names = ("cell_overvoltage", "cell_undervoltage", "pack_overvoltage", "pack_undervoltage",
             "charge_overtemp", "charge_undertemp", "discharge_overtemp", "discharge_undertemp",
             "charge_overcurrent", "discharge_overcurrent", "short_circuit", "afe_error",
             "mosfet_lock")
    for bit in range(13):
        r = decode_new(bf.jbd_basic(protection=1 << bit))
        assert r.faults == [names[bit]], (bit, r.faults)
    r = decode_new(bf.jbd_basic(protection=(1 << 0) | (1 << 10)))
    assert r.faults == ["cell_overvoltage", "short_circuit"]
    r = decode_new(bf.jbd_basic(protection=1 << 15))
    assert r.faults == ["jbd_protection_bit_15"]


def test_32_cells_and_cells_frame_sets_only_cells():
    cells = [3.0 + i / 100 for i in range(32)]
    r = decode_new(bf.jbd_basic(voltage=99.5, soc=42))
    assert jbd.decode(bf.jbd_cells(cells), r) is True
    assert len(r.cells) == 32
    for i in range(32):
        assert close(r.cells[i], cells[i])
    assert close(r.voltage, 99.5) and r.soc == 42
    r2 = Reading()
    jbd.decode(bf.jbd_cells([3.3]), r2)
    assert r2.voltage is None and r2.soc is None and r2.faults == []


def test_reused_reading_lists_shrink():
    r = Reading()
    jbd.decode(bf.jbd_cells([3.3] * 8), r)
    jbd.decode(bf.jbd_cells([3.2] * 4), r)
    assert r.cells == [3.2] * 4
    jbd.decode(bf.jbd_basic(temperatures=(1.0, 2.0, 3.0)), r)
    jbd.decode(bf.jbd_basic(temperatures=()), r)
    assert r.temperatures == []


def test_model_and_ack_are_not_measurements():
    r = Reading()
    assert jbd.decode(bf.jbd_model("SP04S034"), r) is False
    assert jbd.decode_model(bf.jbd_model("SP04S034\x00\xff")) == "SP04S034"
    assert jbd.info(bf.jbd_model("DP04")) == {"model": "DP04"}
    ack = unhex("dde1000000 0077".replace(" ", ""))
    assert jbd.decode(ack, r) is False
    assert jbd.info(ack)["register"] == 0xE1
    assert jbd.info(bf.jbd_cells([3.3])) is None
    assert r.voltage is None


def test_decode_rejects_bad_frames():
    good = bf.jbd_basic()
    for bad in (b"", b"\xdd", good[:-1], good[:-2] + b"\x00\x77", good[:-1] + b"\x78",
                b"\x00" + good[1:], good + b"\x00"):
        raises(BMSError, jbd.decode, bad, Reading())
    odd = bf.jbd_frame(0x04, b"\x0d\x00\x0d")
    raises(BMSError, jbd.decode, odd, Reading())


def test_split_at_every_offset():
    frame = bf.jbd_basic(temperatures=(20.0, 21.0, 22.0), extra=b"\x00" * 9)
    for k in range(1, len(frame)):
        a = jbd.Assembler()
        frames = feed_all(a, [frame[:k], frame[k:]])
        assert frames == [frame], k
    a = jbd.Assembler()
    assert feed_all(a, [frame[i:i + 1] for i in range(len(frame))]) == [frame]
    assert a.frames == 1 and a.dropped_bytes == 0


def test_two_frames_in_one_notification_and_back_to_back():
    f1 = bf.jbd_basic()
    f2 = bf.jbd_cells([3.1, 3.2])
    a = jbd.Assembler()
    assert feed_all(a, [f1 + f2]) == [f1, f2]
    assert feed_all(a, bf.fragments(f2 + f1, 20)) == [f2, f1]


def test_garbage_before_a_frame_is_dropped_and_counted():
    frame = bf.jbd_cells([3.3, 3.4])
    a = jbd.Assembler()
    garbage = b"\x01\x02\x77\xdd\x55\xdd\x03\x00"
    frames = feed_all(a, [garbage + frame[:10], frame[10:]])
    assert frames == [frame]
    assert a.dropped_bytes == len(garbage)


def test_new_preamble_mid_frame_restarts():
    old = bf.jbd_basic()
    new = bf.jbd_cells([3.25] * 4)
    a = jbd.Assembler()
    frames = feed_all(a, [old[:20], new])
    assert frames == [new]
    assert a.dropped_bytes == 20


def test_bad_checksum_counted_then_recovers():
    frame = bytearray(bf.jbd_cells([3.3, 3.3]))
    frame[5] ^= 0x01
    good = bf.jbd_cells([3.3, 3.4])
    a = jbd.Assembler()
    assert feed_all(a, [bytes(frame), good]) == [good]
    assert a.bad_checksum == 1


def test_oversize_counted_then_recovers():
    a = jbd.Assembler()
    big = bytes((0xDD, 0x04, 0x00, 0xF0)) + b"\x11" * 40
    good = bf.jbd_cells([3.3])
    assert feed_all(a, [big, good]) == [good]
    assert a.oversize == 1 and a.frames == 1


def test_stalled_partial_frame_is_abandoned():
    frame = bf.jbd_basic()
    a = jbd.Assembler(stall_ms=1000)
    assert a.feed(frame[:20], lambda f: None, 5000) == 0
    # the rest arrives too late: the partial is dropped and the tail is garbage
    assert a.feed(frame[20:], lambda f: None, 6500) == 0
    assert a.stalled == 1
    out = feed_all(a, [frame[:20], frame[20:]], 6600)
    assert out == [frame]
    assert a.pending() == 0


def test_not_stalled_within_time():
    frame = bf.jbd_basic()
    a = jbd.Assembler(stall_ms=1000)
    a.feed(frame[:20], lambda f: None, 100)
    assert a.feed(frame[20:], lambda f: None, 900) == 1
    assert a.stalled == 0


def test_reset_forgets_partial():
    frame = bf.jbd_basic()
    a = jbd.Assembler()
    a.feed(frame[:10], lambda f: None)
    a.reset()
    assert a.pending() == 0
    assert feed_all(a, [frame]) == [frame]


def test_feed_never_raises_on_odd_input():
    a = jbd.Assembler()
    for junk in (b"", b"\xdd", b"\xdd\x03", b"\xdd\x03\x00", b"\xdd\x03\x00\x00", b"\x77" * 50,
                 b"\xdd" * 300, bytearray(b"\xdd\x04\x80\x00\x00"), None, 12):
        a.feed(junk, lambda f: None)
    assert a.frames >= 0


def test_failed_decode_changes_nothing():
    r = decode_new(bf.jbd_basic(voltage=13.3, temperatures=(20.0,)))
    jbd.decode(bf.jbd_cells([3.3] * 4), r)
    before = r.to_dict()
    data = bytearray(bf.jbd_basic_data(voltage=14.0, temperatures=(20.0,)))
    data[22] = 9
    raises(BMSError, jbd.decode, bf.jbd_frame(0x03, bytes(data)), r)
    raises(BMSError, jbd.decode, bf.jbd_frame(0x03, b"", status=0x80), r)
    assert r.to_dict() == before


def test_tuple_fields_are_replaced_not_mutated():
    r = Reading()
    r.cells = (1.0,)
    r.temperatures = (1.0,)
    r.faults = ("x",)
    assert jbd.decode(bf.jbd_basic(temperatures=(5.0,), protection=1), r)
    assert jbd.decode(bf.jbd_cells([3.3]), r)
    assert r.cells == [3.3] and r.temperatures == [5.0] and r.faults == ["cell_overvoltage"]
