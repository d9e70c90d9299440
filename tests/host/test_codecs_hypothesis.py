# Property tests for the BMS codecs (CPython + hypothesis): decoders raise nothing but
# BMSError on any bytes, assemblers never raise, and frames survive any fragmentation.
import os
import sys

from hypothesis import HealthCheck, given, settings, strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for sub in ("modules", "sim"):
    if os.path.join(ROOT, sub) not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, sub))

import bms_frames as bf  # noqa: E402
import bms_frames_more as bm  # noqa: E402
from smartbms.bms import protocols  # noqa: E402
from smartbms.bms.reading import BMSError, Reading  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DRIVERS = {name: protocols.get(name) for name in protocols.NAMES}
names = st.sampled_from(protocols.NAMES)


def decode_only_bmserror(name, data):
    d = protocols.get(name)  # fresh: a JK device-info frame may switch a driver's layout
    r = Reading()
    try:
        if d.decode(data, r):
            # whatever was stored is of the documented types
            assert isinstance(r.cells, list) and isinstance(r.temperatures, list)
            assert isinstance(r.faults, list)
        else:
            d.info(data)
    except BMSError:
        pass


def valid_frames(name):
    if name == "jbd":
        return [bf.jbd_basic(temperatures=(20.0, 21.0)), bf.jbd_cells([3.3] * 16),
                bf.jbd_basic(extra=b"\x00" * 9), bf.jbd_model()]
    if name.startswith("jk02"):
        layout = 32 if name.endswith("32s") else 24
        return [bf.jk02_cell_info(layout=layout), bf.jk02_device_info()]
    if name == "seplos":
        return [bm.seplos_eia(), bm.seplos_eib(), bm.seplos_eic(), bm.seplos_pia(2), bm.seplos_pib(3),
                bm.seplos_error(0, 4, 2)]
    if name == "ant":
        return [bm.ant_status(), bm.ant_status(cells=[3.3] * 32, temperatures=(1,) * 8), bm.ant_device_info()]
    if name == "redodo":
        return [bm.redodo_status(), bm.redodo_frame(0x16, b"\x01\x02")]
    if name == "renogy":
        return [bm.renogy_cells(), bm.renogy_values(), bm.renogy_alarms(), bm.renogy_response([0x4142] * 8)]
    return [bf.daly_status(), bf.daly_status(count=80)]


@SETTINGS
@given(names, st.binary(max_size=400))
def test_random_bytes_raise_only_bmserror(name, data):
    decode_only_bmserror(name, data)


@SETTINGS
@given(names, st.data())
def test_truncations_raise_bmserror(name, data):
    frame = data.draw(st.sampled_from(valid_frames(name)))
    cut = data.draw(st.integers(0, len(frame) - 1))
    r = Reading()
    try:
        DRIVERS[name].decode(frame[:cut], r)
    except BMSError:
        return
    raise AssertionError("truncated frame decoded")


@SETTINGS
@given(names, st.data())
def test_bit_flips_raise_bmserror_or_decode(name, data):
    frame = bytearray(data.draw(st.sampled_from(valid_frames(name))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] ^= 1 << data.draw(st.integers(0, 7))
    decode_only_bmserror(name, bytes(frame))


# Random payloads wrapped in a correct checksum: the decoders must cope with any content.
@SETTINGS
@given(st.sampled_from((0x03, 0x04, 0x05, 0xE1, 0x00, 0xFF)), st.binary(max_size=128),
       st.sampled_from((0, 0x80)))
def test_jbd_signed_random_payload(reg, payload, status):
    decode_only_bmserror("jbd", bf.jbd_frame(reg, payload, status))


@SETTINGS
@given(st.integers(0, 80), st.integers(0, 255), st.randoms(use_true_random=False))
def test_jbd_basic_any_length_and_sensor_count(size, ntc, rnd):
    # Basic info of every length, claiming any number of sensors.
    data = bytearray(rnd.getrandbits(8) for _ in range(size))
    if size > 22:
        data[22] = ntc
    frame = bf.jbd_frame(0x03, bytes(data))
    r = Reading()
    try:
        assert DRIVERS["jbd"].decode(frame, r)
        assert size >= 23 + 2 * ntc and len(r.temperatures) == ntc
    except BMSError:
        assert size < 23 + 2 * (ntc if size > 22 else 0)


@SETTINGS
@given(st.sampled_from(("jk02_24s", "jk02_32s")), st.integers(0, 255), st.binary(min_size=0, max_size=293))
def test_jk_signed_random_payload(name, kind, body):
    decode_only_bmserror(name, bf.jk02_frame(kind, body))


@SETTINGS
@given(st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=80))
def test_daly_signed_random_registers(regs):
    decode_only_bmserror("daly", bf.daly_response(regs))


@SETTINGS
@given(names, st.lists(st.binary(max_size=64), max_size=20), st.lists(st.integers(0, 10 ** 6), max_size=20))
def test_assembler_never_raises(name, chunks, times):
    a = DRIVERS[name].new_assembler()
    seen = []
    for i, c in enumerate(chunks):
        now = times[i] if i < len(times) else None
        a.feed(c, lambda f: seen.append(bytes(f)), now)
    assert a.frames == len(seen)
    for f in seen:
        decode_only_bmserror(name, f)  # emitted frames passed their checksum
    assert 0 <= a.pending() <= a.SIZE


@SETTINGS
@given(names, st.data())
def test_any_fragmentation_yields_the_frames(name, data):
    frames = data.draw(st.lists(st.sampled_from(valid_frames(name)), min_size=1, max_size=3))
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12, unique=True)))
    parts, last = [], 0
    for c in cuts + [len(stream)]:
        parts.append(stream[last:c])
        last = c
    a = DRIVERS[name].new_assembler()
    out = []
    for p in parts:
        a.feed(p, lambda f: out.append(bytes(f)))
    assert out == frames
    assert a.dropped_bytes == 0 and a.bad_checksum == 0


@SETTINGS
@given(names, st.binary(max_size=40), st.data())
def test_frame_after_garbage_notification_is_recovered(name, garbage, data):
    # A frame that starts its own notification is found whatever came before it.
    frame = data.draw(st.sampled_from(valid_frames(name)))
    a = DRIVERS[name].new_assembler()
    out = []
    a.feed(garbage, lambda f: out.append(bytes(f)))
    before = len(out)
    for p in bf.fragments(frame, 20):
        a.feed(p, lambda f: out.append(bytes(f)))
    assert out[before:] == [frame]


@SETTINGS
@given(st.integers(0, 65535), st.integers(-32768, 32767), st.integers(0, 65535), st.integers(0, 65535),
       st.integers(0, 65535), st.integers(0, 100), st.booleans(), st.booleans(),
       st.lists(st.integers(1731, 4731), max_size=6), st.integers(0, 0x1FFF))
def test_jbd_roundtrip(v, i, rem, nom, cyc, soc, cf, df, temps, prot):
    frame = bf.jbd_basic(voltage=v / 100, current=i / 100, remaining_ah=rem / 100,
                         nominal_ah=nom / 100, cycles=cyc, soc=soc, charge_fet=cf,
                         discharge_fet=df, temperatures=[(t - 2731) / 10 for t in temps],
                         protection=prot)
    r = Reading()
    assert DRIVERS["jbd"].decode(frame, r)
    assert abs(r.voltage - v / 100) < 1e-9 and abs(r.current - i / 100) < 1e-9
    assert abs(r.remaining_ah - rem / 100) < 1e-9 and r.cycles == cyc and r.soc == soc
    assert r.charge_fet is cf and r.discharge_fet is df
    assert [round(t * 10) + 2731 for t in r.temperatures] == temps
    assert len(r.faults) == bin(prot).count("1")


@SETTINGS
@given(st.sampled_from((24, 32)), st.lists(st.integers(1, 5000), min_size=1, max_size=24),
       st.integers(-2 ** 31, 2 ** 31 - 1), st.integers(0, 100),
       st.lists(st.one_of(st.none(), st.integers(-400, 1200)), min_size=2, max_size=2))
def test_jk_roundtrip(layout, cells_mv, current_ma, soc, temps):
    frame = bf.jk02_cell_info(cells=[c / 1000 for c in cells_mv], current=current_ma / 1000,
                              soc=soc, layout=layout,
                              temperatures=[None if t is None else t / 10 for t in temps])
    r = Reading()
    assert DRIVERS["jk02_%ds" % layout].decode(frame, r)
    assert [round(c * 1000) for c in r.cells] == cells_mv
    assert round(r.current * 1000) == current_ma and r.soc == soc
    assert [round(t * 10) for t in r.temperatures] == [t for t in temps if t is not None]


@SETTINGS
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=32), st.integers(0, 65535),
       st.lists(st.integers(0, 200), max_size=8))
def test_daly_roundtrip(cells_mv, raw_current, temps_raw):
    regs = bf.daly_status_registers(cells=[c / 1000 for c in cells_mv],
                                    temperatures=[t - 40 for t in temps_raw])
    regs[0x29] = raw_current
    r = Reading()
    assert DRIVERS["daly"].decode(bf.daly_response(regs), r)
    assert [round(c * 1000) for c in r.cells] == cells_mv
    assert round(r.current * 10) == raw_current - 30000
    assert r.temperatures == [t - 40 for t in temps_raw]


@SETTINGS
@given(st.sampled_from(("seplos", "renogy")), st.integers(0, 0x20), st.sampled_from((0x01, 0x03, 0x04)),
       st.lists(st.integers(0, 0xFFFF), max_size=40))
def test_modbus_signed_random_registers(name, addr, fn, regs):
    data = b"".join(r.to_bytes(2, "big") for r in regs)
    decode_only_bmserror(name, bm.seplos_frame(addr, fn, data))


@SETTINGS
@given(st.integers(0, 255), st.binary(max_size=190))
def test_ant_signed_random_payload(func, data):
    decode_only_bmserror("ant", bm.ant_frame(func, data))


@SETTINGS
@given(st.integers(0, 127), st.binary(max_size=190), st.integers(0, 1))
def test_redodo_signed_random_payload(cmd, data, status):
    decode_only_bmserror("redodo", bm.redodo_frame(cmd, data, status))


@SETTINGS
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=16), st.integers(-2 ** 31, 2 ** 31 - 1),
       st.integers(0, 100), st.integers(0, 65535), st.integers(0, 65535), st.integers(-128, 127))
def test_redodo_roundtrip(cells_mv, current_ma, soc, rem, full, temp):
    frame = bm.redodo_status(cells=[c / 1000 for c in cells_mv], current=current_ma / 1000, soc=soc,
                             remaining_ah=rem / 100, nominal_ah=full / 100, temperatures=(temp,))
    r = Reading()
    assert DRIVERS["redodo"].decode(frame, r)
    assert [round(c * 1000) for c in r.cells] == cells_mv and round(r.current * 1000) == current_ma
    assert r.soc == soc and round(r.remaining_ah * 100) == rem and round(r.nominal_ah * 100) == full
    assert r.temperatures == [temp]


@SETTINGS
@given(st.lists(st.integers(1, 65535), min_size=0, max_size=32), st.lists(st.integers(-40, 120), max_size=8),
       st.integers(-32768, 32767), st.integers(0, 4294967295), st.integers(0, 4294967295))
def test_ant_roundtrip(cells_mv, temps, raw_current, nominal_uah, remaining_uah):
    frame = bm.ant_status(cells=[c / 1000 for c in cells_mv], temperatures=temps, current=-raw_current / 10,
                          nominal_ah=nominal_uah / 1e6, remaining_ah=remaining_uah / 1e6)
    r = Reading()
    assert DRIVERS["ant"].decode(frame, r)
    assert [round(c * 1000) for c in r.cells] == cells_mv and r.temperatures == temps
    assert round(r.current * 10) == -raw_current
    assert round(r.nominal_ah * 1e6) == nominal_uah and round(r.remaining_ah * 1e6) == remaining_uah


@SETTINGS
@given(st.integers(-2 ** 31, 2 ** 31 - 1), st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1),
       st.integers(1, 16), st.lists(st.integers(1, 65535), min_size=1, max_size=16))
def test_seplos_roundtrip(raw_current, remaining, voltage, packs, cells_mv):
    r = Reading()
    assert DRIVERS["seplos"].decode(bm.seplos_eia(current=raw_current / 10, remaining_ah=remaining / 100,
                                                  voltage=voltage / 100, packs=packs), r)
    assert round(r.current * 10) == raw_current and round(r.remaining_ah * 100) == remaining
    assert round(r.voltage * 100) == voltage
    assert DRIVERS["seplos"].decode(bm.seplos_pib(1, cells=[c / 1000 for c in cells_mv]), r)
    assert [round(c * 1000) for c in r.cells] == cells_mv


@SETTINGS
@given(st.integers(-32768, 32767), st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1),
       st.lists(st.integers(-400, 1200), max_size=16))
def test_renogy_roundtrip(raw_current, rem_mah, full_mah, temps):
    r = Reading()
    assert DRIVERS["renogy"].decode(bm.renogy_values(current=raw_current / 100, remaining_ah=rem_mah / 1000,
                                                     nominal_ah=full_mah / 1000), r)
    assert round(r.current * 100) == raw_current and round(r.remaining_ah * 1000) == rem_mah
    assert r.soc is None if not full_mah else 0 <= r.soc <= 100
    assert DRIVERS["renogy"].decode(bm.renogy_cells(temperatures=[t / 10 for t in temps]), r)
    assert [round(t * 10) for t in r.temperatures] == temps
