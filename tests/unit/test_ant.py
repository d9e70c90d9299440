import bms_frames as bf
import bms_frames_more as bm
from bms_testdata import check_assembly, check_shared, close, feed_all, unhex
from smartbms.bms import ant, protocols
from smartbms.bms.reading import BMSError, Reading, untrusted
from testutil import raises


def decode_new(frame):
    r = Reading()
    assert ant.decode(frame, r) is True
    return r


def test_shared_frames_decode_through_assembler():
    check_shared("ant", ant.decode)


def test_requests_and_commands():
    assert ant.READ_STATUS == unhex("7ea1010000be1855aa55")
    assert ant.READ_DEVICE_INFO == unhex("7ea1026c022058c4aa55")
    # syssi's captured switch frames
    assert ant.charge_request(True) == unhex("7ea1510600006924aa55")
    assert ant.charge_request(False) == unhex("7ea151040000c8e4aa55")
    d = protocols.get("ant")
    assert d.poll_requests() == (ant.READ_STATUS,) and d.start_requests() == ()
    assert d.service_uuids == (0xFFE0,) and d.notify_uuid == d.write_uuid == 0xFFE1
    assert d.charge_fet_request(True) == ant.charge_request(True)
    assert ant.crc16(b"123456789", 0, 9) == 0x4B37  # CRC-16/MODBUS check value
    raises(BMSError, ant.command, 0x100)


def test_values_and_current_sign():
    # The wire counts discharge positive; the Reading counts charging positive.
    for current in (-150.5, 0.0, 42.3):
        frame = bm.ant_status(cells=[3.301, 3.302, 3.303], temperatures=(-5, 31), current=current,
                              voltage=9.91, soc=77, nominal_ah=280.0, remaining_ah=201.5)
        r = decode_new(frame)
        assert close(r.current, current), (current, r.current)
        assert close(r.voltage, 9.91) and r.soc == 77
        assert close(r.nominal_ah, 280.0) and close(r.remaining_ah, 201.5)
        assert [round(c * 1000) for c in r.cells] == [3301, 3302, 3303]
        assert r.temperatures == [-5, 31] and r.cycles is None
        assert r.charge_fet is True and r.discharge_fet is True and r.faults == []
    raw = bm.ant_status(current=12.0)  # charging 12 A is -120 (0.1 A) on the wire
    k = 38 + 2 * 4 + 2 * 2
    assert raw[k + 2] | (raw[k + 3] << 8) == 0x10000 - 120
    r = decode_new(bm.ant_status(nominal_ah=1500.0, remaining_ah=1234.5))  # > 2**30 uAh
    assert close(r.nominal_ah, 1500.0) and close(r.remaining_ah, 1234.5)


def test_mosfet_status_codes():
    cases = (
        (0, 1, False, True, []),
        (2, 1, False, True, ["cell_overvoltage"]),
        (3, 1, False, True, ["charge_overcurrent"]),
        (4, 1, False, True, []),  # battery full: off, no fault
        (6, 1, False, True, ["charge_overtemp"]),
        (0x11, 1, False, True, ["charge_undertemp"]),
        (0x0F, 1, False, True, []),  # switched off by hand
        (1, 2, True, False, ["cell_undervoltage"]),
        (1, 0x0C, True, False, ["short_circuit"]),
        (1, 0x11, True, False, ["discharge_undertemp"]),
        (7, 7, False, False, ["mosfet_overtemp"]),
        (0x14, 0x13, False, False, ["afe_error"]),
        (0x30, 0x30, False, False, []),  # unknown codes: off, no name
    )
    for charge, discharge, cf, df, faults in cases:
        r = decode_new(bm.ant_status(charge_status=charge, discharge_status=discharge))
        assert r.charge_fet is cf and r.discharge_fet is df, (charge, discharge)
        assert r.faults == faults, (charge, discharge, r.faults)


def test_protection_mask_bits_are_named_by_position():
    r = decode_new(bm.ant_status(protection=(1 << 1) | (1 << 63), warning=0xFFFF))
    assert r.faults == ["ant_protection_bit_1", "ant_protection_bit_63"]
    assert untrusted("ant_protection_bit_1")  # an alarm nobody can name does not let it charge


def test_device_info_frame_is_longer_than_its_len_byte():
    frame = bm.ant_device_info()
    assert len(frame) == 48 and frame[5] == 0x20
    a = ant.Assembler()
    out = feed_all(a, bf.fragments(frame, 20))
    assert out == [frame]
    assert ant.decode(out[0], Reading()) is False
    assert ant.info(out[0]) == {"type": "device_info", "hardware": "16ZMB", "software": "16ZMUB00-211026A"}
    assert ant.info(bm.ant_status()) is None


def test_sim_answers_requests():
    d = ant.Driver()
    values = {"cells": [3.4] * 8, "temperatures": [20.4, 21.6], "current": 5.0, "soc": 61.4,
              "charge_fet": False}
    a = d.new_assembler()
    r = Reading()
    for frame in bf.respond("ant", ant.READ_STATUS, values):
        for f in feed_all(a, bf.fragments(frame, 20)):
            assert d.decode(f, r)
    assert len(r.cells) == 8 and r.temperatures == [20, 22] and close(r.current, 5.0) and r.soc == 61
    assert r.charge_fet is False and r.discharge_fet is True
    assert bf.respond("ant", ant.charge_request(True), values) == []
    assert bf.respond("ant", b"\x7e\xa1\x01\x00\x00\xbe\x00\x00\xaa\x55", values) == []  # bad CRC


def test_decode_rejects_bad_frames():
    good = bm.ant_status()
    bad = bytearray(good)
    bad[40] ^= 4
    no_tail = bytearray(good)
    no_tail[-1] = 0x56
    for b in (b"", good[:9], good[:-1], bytes(bad), bytes(no_tail), good + b"\x00",
              b"\x7e\xa2" + good[2:]):
        raises(BMSError, ant.decode, b, Reading())
    body = bytearray(bm.ant_status()[6:-4])
    body[3] = 40  # 40 cells
    raises(BMSError, ant.decode, bm.ant_frame(0x11, bytes(body)), Reading())
    raises(BMSError, ant.decode, bm.ant_frame(0x11, bytes(20)), Reading())  # too short for its counts


def test_failed_decode_changes_nothing():
    r = decode_new(bm.ant_status(soc=55))
    before = r.to_dict()
    bad = bytearray(bm.ant_status(soc=11))
    bad[-4] ^= 1
    raises(BMSError, ant.decode, bytes(bad), r)
    assert r.to_dict() == before


def test_assembler_fragments_garbage_stall_restart():
    check_assembly(ant.Assembler, bm.ant_status(soc=10), bm.ant_status(cells=[3.2] * 24, soc=20))
    check_assembly(ant.Assembler, bm.ant_device_info(), bm.ant_status())


def test_a_trailing_55_inside_the_data_does_not_end_a_frame():
    # ASCII 'U' (0x55) ends a 20-byte notification inside the software version
    frame = bm.ant_device_info(software="ABCDEFGHIJKLMNU")
    a = ant.Assembler()
    parts = [frame[:37], frame[37:]]
    assert parts[0][-1] == 0x55
    assert feed_all(a, parts) == [frame]
