import bms_frames as bf
from bms_testdata import assert_expected, close, feed_all, shared_frames, unhex
from smartbms.bms import jk02, protocols
from smartbms.bms.reading import BMSError, Reading
from testutil import raises


def test_shared_frames_decode_through_assembler():
    for f in shared_frames("jk02"):
        d = protocols.get(f["protocol"])
        a = d.new_assembler()
        frames = feed_all(a, [unhex(h) for h in f["fragments"]])
        assert len(frames) == 1, f["name"]
        r = Reading()
        assert d.decode(frames[0], r) is True
        assert_expected(r, f["expect"])
        if "faults" in f:
            assert (len(r.faults) > 0) == f["faults"], f["name"]
        assert a.dropped_bytes == 0 and a.bad_checksum == 0


def test_commands():
    assert jk02.DEVICE_INFO == unhex("aa5590eb970000000000000000000000000000" + "11")
    assert jk02.SETTINGS == unhex("aa5590eb960000000000000000000000000000" + "10")
    on = jk02.charge_request(True)
    assert len(on) == 20 and on[4] == 0x1D and on[5] == 4 and on[6] == 1
    assert on[19] == sum(on[:19]) & 0xFF
    off = jk02.discharge_request(False)
    assert off[4] == 0x1E and off[6] == 0 and off[19] == sum(off[:19]) & 0xFF
    d = protocols.get("jk02_32s")
    assert d.streams is True and d.service_uuids == (0xFFE0,)
    assert d.start_requests() == (jk02.DEVICE_INFO, jk02.SETTINGS)
    assert d.charge_fet_request(False) == jk02.charge_request(False)
    raises(BMSError, jk02.command, 0x100)


def _both_layouts(**kw):
    for layout in (24, 32):
        frame = bf.jk02_cell_info(layout=layout, **kw)
        r = Reading()
        assert protocols.get("jk02_%ds" % layout).decode(frame, r) is True
        yield layout, r


def test_values_in_both_layouts():
    cells = [3.301, 3.302, 3.299, 3.305, 3.3, 3.31, 3.28, 3.29]
    for layout, r in _both_layouts(cells=cells, voltage=26.387, current=-45.678, soc=77,
                                   remaining_ah=211.5, nominal_ah=280.0, cycles=1234,
                                   temperatures=(-12.3, 45.6), charge_fet=False,
                                   discharge_fet=True):
        assert len(r.cells) == 8, layout
        for i in range(8):
            assert close(r.cells[i], cells[i]), (layout, i)
        assert close(r.voltage, 26.387) and close(r.current, -45.678)
        assert r.soc == 77 and r.cycles == 1234
        assert close(r.remaining_ah, 211.5) and close(r.nominal_ah, 280.0)
        assert close(r.temperatures[0], -12.3) and close(r.temperatures[1], 45.6)
        assert r.charge_fet is False and r.discharge_fet is True
        assert r.faults == []


def test_full_slots_24_and_32_cells():
    r = Reading()
    cells32 = [3.0 + i / 1000 for i in range(32)]
    assert jk02.decode(bf.jk02_cell_info(cells=cells32, layout=32), r, 32)
    assert len(r.cells) == 32 and close(r.cells[31], 3.031)
    cells24 = [3.2 + i / 1000 for i in range(24)]
    assert jk02.decode(bf.jk02_cell_info(cells=cells24, layout=24), r, 24)
    assert len(r.cells) == 24 and close(r.cells[23], 3.223)


def test_wrong_layout_does_not_match():
    # A 32S frame read as 24S puts the voltage elsewhere: the layouts really differ.
    frame = bf.jk02_cell_info(cells=[3.3] * 4, voltage=13.2, layout=32)
    r = Reading()
    jk02.decode(frame, r, 24)
    assert not close(r.voltage, 13.2)


def test_no_temperature_sensor_is_omitted():
    for layout, r in _both_layouts(temperatures=(None, 21.5)):
        assert len(r.temperatures) == 1 and close(r.temperatures[0], 21.5)
    for layout, r in _both_layouts(temperatures=(None, None)):
        assert r.temperatures == []


def test_positive_current_and_large_values():
    for layout, r in _both_layouts(current=150.25, voltage=58.4, remaining_ah=600.0,
                                   nominal_ah=600.0):
        assert close(r.current, 150.25) and close(r.voltage, 58.4)


def test_error_bits():
    expect = {0x0001: "charge_overtemp", 0x0002: "charge_undertemp", 0x0004: "afe_error",
              0x0008: "cell_undervoltage", 0x0010: "pack_undervoltage", 0x0020: "discharge_overcurrent",
              0x0040: "short_circuit", 0x0080: "discharge_overtemp", 0x0100: "wire_resistance",
              0x0200: "mosfet_overtemp", 0x0400: "cell_count_mismatch", 0x0800: "current_sensor_error",
              0x1000: "cell_overvoltage", 0x2000: "pack_overvoltage", 0x4000: "charge_overcurrent",
              0x8000: "short_circuit"}
    blocks = (0x0001, 0x0002, 0x0004, 0x0040, 0x0200, 0x1000, 0x2000, 0x4000, 0x8000)
    for bit in expect:
        for layout, r in _both_layouts(errors=bit):
            assert r.faults == [expect[bit]], (layout, bit, r.faults)
            assert r.charge_blocked() is (bit in blocks), (layout, bit)
    for layout, r in _both_layouts(errors=0x8040):  # both short circuits: named once
        assert r.faults == ["short_circuit"]
    for layout, r in _both_layouts(errors=0xFFFF):
        assert len(r.faults) == 15 and len(set(r.faults)) == 15
    for layout, r in _both_layouts(errors=0x1001):
        assert r.faults == ["charge_overtemp", "cell_overvoltage"]
        assert r.charge_blocked()


def test_mask_absent_uses_nonzero_cells():
    frame = bytearray(bf.jk02_cell_info(cells=[3.3, 3.4, 3.5], layout=32))
    frame[70:74] = b"\x00\x00\x00\x00"
    frame[299] = sum(frame[:299]) & 0xFF
    r = Reading()
    jk02.decode(bytes(frame), r, 32)
    assert len(r.cells) == 3 and close(r.cells[2], 3.5)


def test_device_info_and_settings_are_not_measurements():
    r = Reading()
    frame = bf.jk02_device_info(vendor="JK_B2A24S15P", hardware="11.XW", software="11.26")
    assert jk02.decode(frame, r) is False
    i = jk02.info(frame)
    assert i["type"] == "device_info" and i["vendor"] == "JK_B2A24S15P"
    assert i["hardware"] == "11.XW" and i["software"] == "11.26"
    assert jk02.info(bf.jk02_frame(0x01)) == {"type": "settings"}
    assert jk02.decode(bf.jk02_frame(0x01), r) is False
    assert jk02.info(bf.jk02_cell_info()) is None
    assert r.voltage is None


def test_decode_rejects_bad_frames():
    good = bf.jk02_cell_info()
    bad_crc = bytearray(good)
    bad_crc[200] ^= 0xFF
    for bad in (b"", good[:299], b"\x00" + good[1:], bytes(bad_crc)):
        raises(BMSError, jk02.decode, bad, Reading())


def test_320_byte_frame_decodes():
    frame = bf.jk02_cell_info(voltage=12.8) + b"\x00" * 20
    r = Reading()
    assert jk02.decode(frame, r) and close(r.voltage, 12.8)


def test_split_at_every_offset():
    frame = bf.jk02_cell_info(cells=[3.3] * 16, counter=7)
    a = jk02.Assembler()
    for k in range(1, len(frame)):
        assert feed_all(a, [frame[:k], frame[k:]]) == [frame], k
    assert a.frames == len(frame) - 1 and a.dropped_bytes == 0
    a = jk02.Assembler()
    assert feed_all(a, bf.fragments(frame, 128)) == [frame]
    assert feed_all(a, bf.fragments(frame, 1)) == [frame]
    assert a.frames == 2 and a.dropped_bytes == 0


def test_at_injection_is_filtered():
    f1 = bf.jk02_cell_info(soc=11)
    f2 = bf.jk02_cell_info(soc=22)
    parts = [b"AT\r\n"] + bf.fragments(f1, 128)
    parts.insert(2, b"AT\r\n")  # between fragments of one frame
    parts += [b"AT\r\nAT\r\n"] + bf.fragments(f2, 20)
    a = jk02.Assembler()
    assert feed_all(a, parts) == [f1, f2]
    assert a.dropped_bytes == 0


def test_garbage_before_a_frame():
    frame = bf.jk02_cell_info()
    garbage = b"\x55\xaa\x00\x55\x01\x02\x03"
    a = jk02.Assembler()
    assert feed_all(a, [garbage + frame[:50], frame[50:]]) == [frame]
    assert a.dropped_bytes == len(garbage)


def test_new_preamble_mid_frame_restarts():
    old = bf.jk02_cell_info(soc=1)
    new = bf.jk02_cell_info(soc=2)
    a = jk02.Assembler()
    out = feed_all(a, bf.fragments(old, 128)[:2] + bf.fragments(new, 128))
    assert out == [new]
    assert a.dropped_bytes == 256


def test_trailing_bytes_of_320_byte_frames_are_dropped():
    f1 = bf.jk02_cell_info(soc=5) + b"\x01" * 20
    f2 = bf.jk02_cell_info(soc=6)
    a = jk02.Assembler()
    assert feed_all(a, bf.fragments(f1, 128) + bf.fragments(f2, 128)) == [f1[:300], f2]


def test_bad_checksum_counted():
    frame = bytearray(bf.jk02_cell_info())
    frame[100] ^= 1
    a = jk02.Assembler()
    good = bf.jk02_cell_info(soc=9)
    assert feed_all(a, [bytes(frame), good]) == [good]
    assert a.bad_checksum == 1


def test_stall():
    frame = bf.jk02_cell_info()
    a = jk02.Assembler(stall_ms=2000)
    a.feed(frame[:128], lambda f: None, 0)
    a.feed(frame[128:256], lambda f: None, 2500)
    assert a.stalled == 1
    assert feed_all(a, [frame], 2600) == [frame]


def test_layout_follows_device_info():
    assert jk02.layout_of(bf.jk02_device_info(software="10.08")) == 24
    assert jk02.layout_of(bf.jk02_device_info(software="11.26")) == 32
    assert jk02.layout_of(bf.jk02_device_info(software="V?")) is None
    assert jk02.layout_of(bf.jk02_cell_info()) is None
    # detect() says jk02_32s; an old pack's device info switches the driver to 24S
    d = protocols.get("jk02_32s")
    r = Reading()
    assert d.decode(bf.jk02_device_info(software="10.08"), r) is False
    assert d.cells_max == 24
    assert d.decode(bf.jk02_cell_info(cells=[3.3] * 4, voltage=13.2, layout=24), r)
    assert close(r.voltage, 13.2) and len(r.cells) == 4
    d.decode(bf.jk02_device_info(software="11.26"), r)
    assert d.cells_max == 32
    fixed = jk02.Driver(24, follow_device_info=False)
    fixed.decode(bf.jk02_device_info(software="11.26"), r)
    assert fixed.cells_max == 24


def test_failed_decode_changes_nothing():
    r = Reading()
    jk02.decode(bf.jk02_cell_info(soc=42, cells=[3.3] * 4), r)
    before = r.to_dict()
    bad = bytearray(bf.jk02_cell_info(soc=7))
    bad[299] ^= 1
    raises(BMSError, jk02.decode, bytes(bad), r)
    assert r.to_dict() == before
