import bms_frames as bf
import bms_frames_more as bm
from bms_testdata import check_assembly, check_shared, close, feed_all, unhex
from smartbms.bms import protocols, renogy
from smartbms.bms.reading import BMSError, Reading, untrusted
from testutil import raises


def test_shared_frames_decode_through_assembler():
    check_shared("renogy", renogy.decode)


def test_requests_and_driver():
    assert renogy.READ_CELLS == unhex("300313880022455c")
    assert renogy.READ_VALUES == unhex("300313b20007a48a")
    assert renogy.READ_ALARMS == unhex("300313ec0008855c")
    d = protocols.get("renogy")
    assert d.poll_requests() == (renogy.READ_VALUES, renogy.READ_CELLS, renogy.READ_ALARMS)
    # write FFD1 lives in service FFD0, notify FFF1 in service FFF0
    assert d.service_uuids == (0xFFD0,) and d.write_uuid == 0xFFD1
    assert d.notify_service_uuid == 0xFFF0 and d.notify_uuid == 0xFFF1
    assert d.charge_fet_request(True) is None


def test_values_block_sign_and_derived_soc():
    for current in (-0.86, 0.0, 25.37):
        r = Reading()
        frame = bm.renogy_values(current=current, voltage=13.3, remaining_ah=75.123, nominal_ah=100.0, cycles=9)
        assert renogy.decode(frame, r) is True
        assert close(r.current, current) and close(r.voltage, 13.3) and r.cycles == 9
        assert close(r.remaining_ah, 75.123) and close(r.nominal_ah, 100.0) and close(r.soc, 75.1)
        assert r.cells == [] and r.faults == [] and r.charge_fet is None
    r = Reading()
    renogy.decode(bm.renogy_values(remaining_ah=10.0, nominal_ah=0.0), r)
    assert r.soc is None
    renogy.decode(bm.renogy_values(remaining_ah=101.0, nominal_ah=100.0), r)
    assert r.soc == 100.0


def test_cells_block():
    r = Reading()
    assert renogy.decode(bm.renogy_cells(cells=[3.3, 3.4, 3.2, 3.3], temperatures=(-10.5, 22.0)), r)
    assert [round(c, 1) for c in r.cells] == [3.3, 3.4, 3.2, 3.3]
    assert r.temperatures == [-10.5, 22.0] and r.voltage is None
    regs = [0] * 34
    regs[0] = 17
    raises(BMSError, renogy.decode, bm.renogy_response(regs), Reading())


def test_alarm_block_fets_and_names():
    r = Reading()
    assert renogy.decode(bm.renogy_alarms(charge_fet=True, discharge_fet=False), r)
    assert r.charge_fet is True and r.discharge_fet is False and r.faults == []
    renogy.decode(bm.renogy_alarms(alarms=(0x0004, 0, 0, 0, 0x8001, 0x0002)), r)
    assert r.faults == ["renogy_alarm_5100_2", "renogy_alarm_5104_0", "renogy_alarm_5104_15",
                        "renogy_alarm_5105_1"]
    assert untrusted("renogy_alarm_5104_0")


def test_status1_protections_are_named():
    # 5100 block, registers 5100-5105 clear; 5106 = 0x0104: cell over-voltage (bit8), the
    # charge MOSFET off, the discharge MOSFET on (bit2)
    r = Reading()
    assert renogy.decode(unhex("30031000000000000000000000000001040000d69c"), r)
    assert r.faults == ["cell_overvoltage"] and r.charge_fet is False and r.discharge_fet is True
    assert r.charge_blocked()
    # 0x421C: both charge over-current levels (bits 4, 9), charge over-temperature (bit14),
    # bit3 (powered by the module) is a state, not a fault
    renogy.decode(unhex("300310000000000000000000000000421c0000431f"), r)
    assert r.faults == ["charge_overcurrent", "charge_overtemp"] and r.charge_fet is False
    # short circuit (bit0) before the unnamed alarm bits of 5104
    renogy.decode(unhex("30031000000000000000008001000000010000dfc1"), r)
    assert r.faults == ["short_circuit", "renogy_alarm_5104_0", "renogy_alarm_5104_15"]
    # the sim's encoding of each name decodes to it
    for name, bit in bm.RENOGY_STATUS1_BITS.items():
        renogy.decode(bm.renogy_alarms(charge_fet=False, protection=1 << bit), r)
        assert r.faults == [name] and r.charge_fet is False, name


def test_other_blocks_and_errors():
    text = bm.renogy_response([0x5254, 0x2D31, 0x3030, 0x2020])
    assert renogy.decode(text, Reading()) is False
    assert renogy.info(text) == {"type": "response", "bytes": 8, "text": "RT-100"}
    err = bytearray(b"\x30\x83\x02\x00\x00")
    c = renogy.crc16(err, 0, 3)
    err[3], err[4] = c & 0xFF, c >> 8
    a = renogy.Assembler()
    assert feed_all(a, [bytes(err)]) == [bytes(err)]
    raises(BMSError, renogy.decode, bytes(err), Reading())


def test_decode_rejects_bad_frames():
    good = bm.renogy_cells()
    bad = bytearray(good)
    bad[20] ^= 4
    for b in (b"", good[:4], good[:-1], bytes(bad), good + b"\x00", b"\x31" + good[1:]):
        raises(BMSError, renogy.decode, b, Reading())


def test_one_poll_gives_a_complete_reading():
    d = renogy.Driver()
    values = {"cells": [3.3, 3.3, 3.4, 3.3], "temperatures": [21.0], "current": -0.86, "voltage": 13.3,
              "remaining_ah": 52.0, "nominal_ah": 100.0, "cycles": 3, "charge_fet": True}
    r = Reading()
    a = d.new_assembler()
    n = 0
    for req in d.poll_requests():
        for frame in bf.respond("renogy", req, values):
            for f in feed_all(a, bf.fragments(frame, 20)):
                assert d.decode(f, r)
                n += 1
    assert n == 3
    assert close(r.current, -0.86) and close(r.soc, 52.0) and len(r.cells) == 4 and r.temperatures == [21.0]
    for key in r.to_dict():
        assert getattr(r, key) is not None, key
    assert bf.respond("renogy", renogy.read_request(5122, 8), values) == []


def test_failed_decode_changes_nothing():
    r = Reading()
    renogy.decode(bm.renogy_values(current=1.0), r)
    before = r.to_dict()
    bad = bytearray(bm.renogy_values(current=-9.0))
    bad[-2] ^= 1
    raises(BMSError, renogy.decode, bytes(bad), r)
    assert r.to_dict() == before


def test_assembler_fragments_garbage_stall_restart():
    check_assembly(renogy.Assembler, bm.renogy_cells(), bm.renogy_values(current=3.0))
    check_assembly(renogy.Assembler, bm.renogy_alarms(), bm.renogy_cells(cells=[3.2] * 16))
