from smartbms.bms import protocols
from smartbms.bms.reading import BMSError
from testutil import raises


def test_names():
    assert protocols.NAMES == ("jbd", "jk02_24s", "jk02_32s", "daly")


def test_get_jbd_driver_interface():
    d = protocols.get("jbd")
    assert d.name == "jbd"
    assert d.service_uuids == (0xFF00, 0xFFF0)  # FF00 first; FFF0 for the rebrands that use it
    assert d.streams is False
    assert d.start_requests() == ()
    reqs = d.poll_requests()
    assert reqs == (bytes.fromhex("dda50300fffd77"), bytes.fromhex("dda50400fffc77"))
    a = d.new_assembler()
    assert a.frames == 0 and a.dropped_bytes == 0 and a.bad_checksum == 0
    assert a.oversize == 0 and a.stalled == 0


def test_get_unknown_raises_bmserror():
    e = raises(BMSError, protocols.get, "foo")
    assert "foo" in str(e)


def test_detect_jbd_by_name_and_service():
    assert protocols.detect("JBD-SP04S034") == "jbd"
    assert protocols.detect("SP04S034-L4S") == "jbd"
    assert protocols.detect("DP04S007L4S100A") == "jbd"
    assert protocols.detect("xiaoxiang BMS") == "jbd"
    assert protocols.detect(None, service_uuids=(0xFF00,)) == "jbd"
    assert protocols.detect(None, service_uuids=("0000ff00-0000-1000-8000-00805f9b34fb",)) == "jbd"
    assert protocols.detect(None, service_uuids=("UUID(0xff00)",)) == "jbd"


def test_detect_jk_needs_manufacturer_or_name():
    assert protocols.detect(None, (0xFFE0,), (0x0B65,)) == "jk02_32s"
    assert protocols.detect("anything", ("ffe0",), (0x4B4A,)) == "jk02_32s"
    assert protocols.detect("JK-B2A24S15P", (0xFFE0,)) == "jk02_32s"
    assert protocols.detect(None, (0xFFE0,), (0x1234,)) is None
    assert protocols.detect(None, (), (0x0B65,)) is None


def test_detect_daly():
    assert protocols.detect("DL-40D63C3210", ()) == "daly"
    assert protocols.detect(None, (0xFFF0,)) == "daly"


def test_detect_unknown():
    assert protocols.detect() is None
    assert protocols.detect("Phone", (0x180F,), (0x004C,)) is None
    assert protocols.detect("SPEAKER") is None
    assert protocols.detect(None, ("not-a-uuid", None, 123456789)) is None


def test_uuid16_forms():
    assert protocols.uuid16(0xFF00) == 0xFF00
    assert protocols.uuid16("0xFFE0") == 0xFFE0
    assert protocols.uuid16("0000fff0-0000-1000-8000-00805f9b34fb") == 0xFFF0
    assert protocols.uuid16("6e400001-b5a3-f393-e0a9-e50e24dcca9e") is None
    assert protocols.uuid16(-1) is None


def test_every_driver_has_the_interface():
    for name in protocols.NAMES:
        d = protocols.get(name)
        assert d.name == name
        assert isinstance(d.service_uuids, tuple) and d.service_uuids
        assert d.streams in (True, False)
        for req in d.start_requests() + d.poll_requests():
            assert isinstance(req, bytes) and len(req) <= 20
        a = d.new_assembler()
        assert a.feed(b"", lambda f: None) == 0
        for attr in ("frames", "dropped_bytes", "bad_checksum", "oversize", "stalled"):
            assert getattr(a, attr) == 0
        # non-streaming drivers must poll something
        assert d.streams or d.poll_requests()
