import bms_frames as bf
import bms_frames_more as bm
from bms_testdata import check_assembly, check_shared, close, feed_all, unhex
from smartbms.bms import protocols, seplos
from smartbms.bms.reading import BMSError, Reading, untrusted
from testutil import raises


def poll(driver, values, reading=None, mtu=20):
    """One poll cycle as the link runs it: each request, its answer's notifications through
    one assembler, every frame decoded into one Reading."""
    r = reading if reading is not None else Reading()
    a = driver.new_assembler()
    answered = 0
    for req in driver.poll_requests():
        for frame in bf.respond("seplos", req, values):
            for f in feed_all(a, bf.fragments(frame, mtu)):
                assert driver.decode(f, r) is True
                answered += 1
    assert answered == len(driver.poll_requests())
    return r


def test_shared_frames_decode_through_assembler():
    check_shared("seplos", seplos.decode)


def test_requests_match_the_captures():
    assert seplos.READ_EIA == unhex("00042000001a7bd0")
    assert seplos.READ_EIB == unhex("0004210000167a29")
    assert seplos.READ_EIC == unhex("000122000050379f")
    assert seplos.read_pia(1) == unhex("01041000001134c6")
    assert seplos.read_pib(1) == unhex("01041100001a74fd")
    raises(BMSError, seplos.read_request, 17, 4, 0x1000, 1)
    raises(BMSError, seplos.read_request, 0, 3, 0x1000, 1)


def test_driver_interface_and_pack_count():
    d = protocols.get("seplos")
    assert d.name == "seplos" and d.streams is False
    assert d.service_uuids == (0xFFF0,) and d.notify_uuid == 0xFFF1 and d.write_uuid == 0xFFF2
    assert d.start_requests() == (seplos.READ_EIA,)
    assert d.poll_requests() == (seplos.READ_EIA, seplos.READ_EIC, seplos.read_pib(1))
    assert d.poll_requests() is d.poll_requests()  # built once, not per poll
    assert d.charge_fet_request(False) is None
    for packs, want in ((3, 3), (0, 1), (40, 16)):
        frame = bm.seplos_eia(packs=packs if packs < 17 else 16)
        if packs == 40:  # more than a system can have: clamped
            data = bytearray(frame[3:-2])
            data[44:46] = b"\x00\x28"
            frame = bm.seplos_frame(0, 4, data)
        assert d.decode(frame, Reading()) is True
        assert d.packs == want, packs
        reqs = d.poll_requests()
        assert len(reqs) == 2 + want and reqs[-1] == seplos.read_pib(want)
        assert seplos.pack_count(frame) == want
    assert seplos.pack_count(bm.seplos_eic()) is None


def test_one_poll_is_one_complete_reading():
    d = seplos.Driver()
    values = {"cells": [3.30 + i / 1000 for i in range(16)], "temperatures": [18.5, 19.0, -2.5, 20.0],
              "voltage": 52.9, "current": 12.3, "soc": 64.5, "remaining_ah": 180.6, "nominal_ah": 280.0,
              "cycles": 321, "charge_fet": True, "discharge_fet": False}
    r = poll(d, values)
    assert close(r.voltage, 52.9) and close(r.current, 12.3) and close(r.soc, 64.5)
    assert close(r.remaining_ah, 180.6) and close(r.nominal_ah, 280.0) and r.cycles == 321
    assert [round(c * 1000) for c in r.cells] == [3300 + i for i in range(16)]
    assert [round(t * 10) for t in r.temperatures] == [185, 190, -25, 200]
    assert r.charge_fet is True and r.discharge_fet is False and r.faults == []
    for key in r.to_dict():
        assert getattr(r, key) is not None, key


def test_several_packs_append_and_a_new_poll_replaces():
    d = seplos.Driver()
    values = {"packs": 3, "cells": [3.2 + i / 100 for i in range(24)],
              "temperatures": [float(i) for i in range(12)], "current": -40.0}
    r = Reading()
    for req in d.start_requests():
        for frame in bf.respond("seplos", req, values):
            d.decode(frame, r)
    assert d.packs == 3
    poll(d, values, r, mtu=244)
    assert len(r.cells) == 24 and close(r.cells[23], 3.43) and close(r.cells[8], 3.28)
    assert [round(t) for t in r.temperatures] == list(range(12))
    assert close(r.current, -40.0)
    cells, temps = r.cells, r.temperatures
    poll(d, values, r)  # the reused Reading does not grow, its lists are reused
    assert len(r.cells) == 24 and r.cells is cells and r.temperatures is temps
    values["packs"] = 1
    values["cells"] = [3.3] * 8
    # A pack left the system: its PIB read is refused once (an error frame fails that poll);
    # this poll's EIA already said 1 pack, so the next poll asks for one.
    raises(BMSError, poll, d, values, r)
    assert d.packs == 1
    poll(d, values, r)
    assert d.packs == 1 and len(r.cells) == 8 and len(r.temperatures) == 4


def test_current_sign_and_32_bit_fields():
    for current in (-123.4, 0.0, 87.6):
        r = Reading()
        assert seplos.decode(bm.seplos_eia(current=current, remaining_ah=700.0, nominal_ah=900.0), r)
        assert close(r.current, current) and close(r.remaining_ah, 700.0) and close(r.nominal_ah, 900.0)
    r = Reading()
    seplos.decode(bm.seplos_pia(current=-3.21, voltage=51.2, soc=12.3), r)
    assert close(r.current, -3.21) and close(r.voltage, 51.2) and close(r.soc, 12.3)


def test_eic_events_name_their_faults():
    cases = (
        ((0x02, 0, 0, 0, 0, 0), 0, ["cell_overvoltage"]),
        ((0x08, 0, 0, 0, 0, 0), 0, ["cell_undervoltage"]),
        ((0x20 | 0x80, 0, 0, 0, 0, 0), 0, ["pack_overvoltage", "pack_undervoltage"]),
        ((0, 0x02 | 0x08, 0, 0, 0, 0), 0, ["charge_overtemp", "charge_undertemp"]),
        ((0, 0x20, 0, 0, 0, 0), 0, ["discharge_overtemp"]),
        ((0, 0, 0x20, 0, 0, 0), 0, ["mosfet_overtemp"]),
        ((0, 0, 0, 0x02 | 0x04, 0, 0), 0, ["charge_overcurrent"]),
        ((0, 0, 0, 0x40, 0x01, 0), 0, ["short_circuit"]),
        ((0, 0, 0, 0, 0x04, 0), 0, ["charge_overcurrent"]),
        ((0, 0, 0, 0, 0, 0x10), 0, ["cell_imbalance"]),
        ((0, 0, 0, 0, 0, 0), 0x01, ["temp_sensor_error"]),
        ((0, 0, 0, 0, 0, 0), 0x02, ["afe_error"]),
        ((0, 0, 0, 0, 0, 0), 0x04 | 0x08, ["mosfet_stuck"]),
        ((0, 0, 0, 0, 0, 0), 0x20, ["cell_sense_error"]),
        ((0, 0, 0, 0, 0, 0), 0x80, ["seplos_aerosol_alarm"]),
        # alarm levels (before the protection trips) and low-temperature heating: no fault
        ((0x01 | 0x04 | 0x10 | 0x40, 0x01 | 0x04, 0x40 | 0x01, 0x01 | 0x08, 0, 0x04), 0, []),
    )
    for events, hard, want in cases:
        r = Reading()
        assert seplos.decode(bm.seplos_eic(events=events, hard=hard), r)
        assert r.faults == want, (events, hard, r.faults)
    r = Reading()
    seplos.decode(bm.seplos_eic(events=(0x02, 0x02, 0, 0, 0, 0)), r)
    assert r.charge_blocked()
    # hard faults: the pack cannot measure or switch (or its aerosol went off): not trusted
    for name in ("temp_sensor_error", "mosfet_stuck", "cell_sense_error", "seplos_aerosol_alarm"):
        assert untrusted(name), name
    seplos.decode(bm.seplos_eic(charge_fet=False, discharge_fet=True), r)
    assert r.charge_fet is False and r.discharge_fet is True and r.faults == []


def test_error_reply_assembles_and_raises():
    frame = bm.seplos_error(0, 0x04, 0x02)
    assert frame == unhex("0084029301")  # as the SG16S200A answered a 26-register EIB read
    a = seplos.Assembler()
    out = feed_all(a, [frame])
    assert out == [frame]
    e = raises(BMSError, seplos.decode, out[0], Reading())
    assert "illegal data address" in str(e)


def test_decode_rejects_bad_frames():
    good = bm.seplos_eia()
    bad = bytearray(good)
    bad[10] ^= 4
    for b in (b"", good[:4], good[:-1], bytes(bad), good + b"\x00",
              bm.seplos_frame(0, 0x04, b"\x00" * 30),  # a block this codec does not read
              bm.seplos_frame(0x11, 0x04, b"\x00" * 52),  # no such device
              bm.seplos_frame(1, 0x01, b"\x00" * 10)):  # coils come from the system only
        raises(BMSError, seplos.decode, b, Reading())


def test_failed_decode_changes_nothing():
    r = Reading()
    seplos.decode(bm.seplos_eia(soc=55.5), r)
    seplos.decode(bm.seplos_pib(cells=[3.3] * 4), r)
    before = r.to_dict()
    bad = bytearray(bm.seplos_eia(soc=11.0))
    bad[-1] ^= 1
    raises(BMSError, seplos.decode, bytes(bad), r)
    raises(BMSError, seplos.decode, bm.seplos_error(1, 0x04, 0x04), r)
    assert r.to_dict() == before


def test_assembler_fragments_garbage_stall_restart():
    eia = bm.seplos_eia(soc=42.0)
    pib = bm.seplos_pib(2, cells=[3.1] * 16)
    check_assembly(seplos.Assembler, eia, pib)
    check_assembly(seplos.Assembler, bm.seplos_eic(), bm.seplos_error(0, 0x01, 0x02))


def test_mtu_sized_notification_with_several_frames():
    frames = [bm.seplos_eia(), bm.seplos_eic(), bm.seplos_pib(1)]
    a = seplos.Assembler()
    assert feed_all(a, [b"".join(frames)]) == frames
    assert a.dropped_bytes == 0 and a.bad_checksum == 0
