import bms_frames as bf
from bms_testdata import assert_expected, close, feed_all, shared_frames, unhex
from smartbms.bms import daly, protocols
from smartbms.bms.reading import BMSError, Reading
from testutil import raises


def test_shared_frames_decode_through_assembler():
    for f in shared_frames("daly"):
        a = daly.Assembler()
        frames = feed_all(a, [unhex(h) for h in f["fragments"]])
        assert len(frames) == 1, f["name"]
        r = Reading()
        assert daly.decode(frames[0], r) is True
        assert_expected(r, f["expect"])
        if "faults" in f:
            assert (len(r.faults) > 0) == f["faults"], f["name"]


def test_requests_and_crc():
    assert daly.READ_STATUS == unhex("d2030000003ed7b9")
    assert daly.READ_STATUS_LONG[:6] == unhex("d20300000050")
    assert daly.crc16(b"123456789", 0, 9) == 0x4B37  # the CRC-16/MODBUS check value
    d = protocols.get("daly")
    assert d.poll_requests() == (daly.READ_STATUS,)
    assert d.streams is False and d.service_uuids == (0xFFF0,)
    assert d.charge_fet_request(True) is None
    raises(BMSError, daly.read_request, 0, 0)


def test_values_charging_and_discharging():
    for current in (-123.4, 45.6, 0.0):
        frame = bf.daly_status(cells=[3.301, 3.302, 3.303, 3.304], temperatures=(-10, 25, 40),
                               voltage=13.2, current=current, soc=87.5, remaining_ah=70.2,
                               cycles=17, charge_fet=False, discharge_fet=True)
        r = Reading()
        assert daly.decode(frame, r) is True
        assert close(r.current, current), (current, r.current)
        assert close(r.voltage, 13.2) and close(r.soc, 87.5) and close(r.remaining_ah, 70.2)
        assert r.cycles == 17 and r.temperatures == [-10, 25, 40]
        assert [round(c, 3) for c in r.cells] == [3.301, 3.302, 3.303, 3.304]
        assert r.charge_fet is False and r.discharge_fet is True and r.faults == []
        assert r.nominal_ah is None


def test_raw_current_encoding():
    # 30000 is zero; above is charging (positive), below discharging.
    regs = bf.daly_status_registers()
    regs[0x29] = 30123
    r = Reading()
    daly.decode(bf.daly_response(regs), r)
    assert close(r.current, 12.3)
    regs[0x29] = 29877
    daly.decode(bf.daly_response(regs), r)
    assert close(r.current, -12.3)


def test_80_registers_and_32_cells():
    cells = [3.0 + i / 1000 for i in range(32)]
    frame = bf.daly_status(count=80, cells=cells, temperatures=(20,) * 8)
    assert len(frame) == 165
    a = daly.Assembler()
    out = feed_all(a, bf.fragments(frame, 20))
    assert out == [frame]
    r = Reading()
    assert daly.decode(out[0], r)
    assert len(r.cells) == 32 and close(r.cells[31], 3.031) and len(r.temperatures) == 8


def test_no_temperature_sensors():
    r = Reading()
    daly.decode(bf.daly_status(temperatures=()), r)
    assert r.temperatures == []


def test_alarm_bits():
    cases = ((0, 0, "cell_overvoltage"), (0, 1, "cell_overvoltage"), (0, 2, "cell_undervoltage"),
             (0, 4, "pack_overvoltage"), (0, 6, "pack_undervoltage"), (1, 0, "charge_overtemp"),
             (1, 2, "charge_undertemp"), (1, 4, "discharge_overtemp"),
             (1, 6, "discharge_undertemp"), (2, 0, "charge_overcurrent"),
             (2, 2, "discharge_overcurrent"), (4, 0, "mosfet_overtemp"), (5, 0, "afe_error"),
             (6, 2, "short_circuit"),
             (7, 5, "daly_alarm_7_5"))
    for byte, bit, name in cases:
        alarms = 1 << (8 * (7 - byte) + bit)
        r = Reading()
        daly.decode(bf.daly_status(alarms=alarms), r)
        assert r.faults == [name], (byte, bit, r.faults)
    r = Reading()
    daly.decode(bf.daly_status(alarms=(3 << 56)), r)  # both levels: one name
    assert r.faults == ["cell_overvoltage"]


def test_an_overheated_mosfet_stops_charging_as_on_every_family():
    from smartbms.bms.reading import CHARGE_FAULTS

    r = Reading()
    daly.decode(bf.daly_status(alarms=1 << (8 * (7 - 4))), r)
    assert r.faults == ["mosfet_overtemp"] and "mosfet_overtemp" in CHARGE_FAULTS


def test_short_responses_are_not_measurements():
    r = Reading()
    other = bf.daly_response([0x3132, 0x3334, 0x3536])
    assert daly.decode(other, r) is False
    assert daly.info(other)["bytes"] == 6
    assert daly.info(bf.daly_status()) is None


def test_decode_rejects_bad_frames():
    good = bf.daly_status()
    bad = bytearray(good)
    bad[10] ^= 4
    for b in (b"", good[:-1], bytes(bad), b"\xd2\x04" + good[2:], good + b"\x00"):
        raises(BMSError, daly.decode, b, Reading())
    regs = bf.daly_status_registers()
    regs[0x31] = 40
    raises(BMSError, daly.decode, bf.daly_response(regs), Reading())


def test_split_at_every_offset():
    frame = bf.daly_status()
    for k in range(1, len(frame)):
        a = daly.Assembler()
        assert feed_all(a, [frame[:k], frame[k:]]) == [frame], k


def test_garbage_restart_oversize_stall():
    frame = bf.daly_status(soc=10)
    a = daly.Assembler(stall_ms=1000)
    garbage = b"\x00\xd2\x05\x77"
    assert feed_all(a, [garbage + frame[:20]] + bf.fragments(frame[20:], 20)) == [frame]
    assert a.dropped_bytes == len(garbage)
    # new preamble mid-frame
    other = bf.daly_status(soc=20)
    assert feed_all(a, [frame[:40], other]) == [other]
    assert a.dropped_bytes == len(garbage) + 40
    # oversize: a length byte beyond 80 registers
    assert feed_all(a, [b"\xd2\x03\xfe" + b"\x00" * 30, frame]) == [frame]
    assert a.oversize == 1
    # stall
    a.feed(frame[:20], lambda f: None, 10000)
    a.feed(frame[20:], lambda f: None, 12000)
    assert a.stalled == 1
    assert feed_all(a, [frame], 12001) == [frame]


def test_failed_decode_changes_nothing():
    r = Reading()
    daly.decode(bf.daly_status(soc=55.5), r)
    before = r.to_dict()
    regs = bf.daly_status_registers(soc=11.0)
    regs[0x32] = 9  # more sensors than registers
    raises(BMSError, daly.decode, bf.daly_response(regs), r)
    assert r.to_dict() == before
