from bms_testdata import shared_families
from smartbms.bms import protocols
from smartbms.bms.reading import BMSError
from testutil import raises

FFE0 = "0000ffe0-0000-1000-8000-00805f9b34fb"
FFF0 = "0000fff0-0000-1000-8000-00805f9b34fb"
FFD0 = "0000ffd0-0000-1000-8000-00805f9b34fb"
FEE7 = "0000fee7-0000-1000-8000-00805f9b34fb"

# (name, service UUIDs, manufacturer ids, verdict): the advertisements seen in the wild
# (aiobmsble's test_data/*.json, the notes and the captures), raw names with their padding.
ADVERTS = (
    # Seplos v3
    ("SP05B2312190075       ", (FFF0,), (), "seplos"),
    ("SP51B2407270006       ", ("00001800-0000-1000-8000-00805f9b34fb", "00001801-0000-1000-8000-00805f9b34fb",
                                FFF0, "02f00000-0000-0000-8000-00000000fe00"), (), "seplos"),
    ("SP66B2404270002       ", (FFF0,), (), "seplos"),
    ("SP47B-A2410230006", (FFF0,), (), "seplos"),
    ("SP95B-B2503190001", (FFF0,), (), "seplos"),
    ("SP112B2409100524      ", (FFF0,), (), "seplos"),
    ("CSY012405290042", (FFF0,), (), "seplos"),
    ("XZHXLD012404120010    ", (FFF0,), (), "seplos"),
    ("SP57B-A", (), (), "seplos"),  # name only (scan response without services)
    # ANT, 2021 protocol (7E A1)
    ("ANT-BLE24C-001", (FFE0,), (0x2313,), "ant"),
    ("ANT@BLE24CBUB-1231\r", (FFE0,), (0x1388,), "ant"),
    ("ANT-BLE16ZMUB", (FFE0,), (), "ant"),
    ("ANT-BLE20PHUB", (FFE0,), (0x279B,), "ant"),
    # ANT units of the older protocol also advertise FEE7: not read by this firmware
    ("ANT-BLE16S", (FFE0, FEE7), (0x0657,), None),
    ("ANT-BLE22AACB-0489", (FFE0, FEE7), (0x279B,), None),
    ("ANT-BLEUB5837-5837", (FFE0, FEE7), (0xDD8E,), None),
    # Redodo / LiTime / Power Queen / Starry Sea (manufacturer id 0x585A)
    ("R-24100BNN160-A00643", (FFE0,), (22618,), "redodo"),
    ("P-24050BNNA70-A01152", (FFE0,), (22618,), "redodo"),
    ("PQ-24100B-A00292", (FFE0,), (22618,), "redodo"),
    ("L-12100BNNA70-A09683", (FFE0,), (22618,), "redodo"),
    ("RO-24100B-A00162", (FFE0,), (22618,), "redodo"),
    ("LT-51230BGC-A00229", (FFE0,), (22618,), "redodo"),
    ("LT-12100BG-A07700", (FFE0,), (22618,), "redodo"),
    ("L-51030GBNGC2-A00263", (FFE0,), (22618,), "redodo"),
    ("LT-24100B-A00473", (FFE0,), (22618,), "redodo"),
    ("S-12100BNNA70-A00101", (FFE0,), (22618,), "redodo"),
    ("SS-12100BGH-A00102", (FFE0,), (22618,), "redodo"),
    ("T-12100BNNH19-A00130", (FFE0,), (22618,), "redodo"),
    ("R-12100BNNA70-A02402", (), (22618,), "redodo"),
    # Renogy BT (write service FFD0, notify service FFF0)
    ("BT-TH-66F2A1B4", (FFD0, FFF0), (0x9860,), "renogy"),
    ("BT-TH-2B3C4D5E", (), (0x64C4,), "renogy"),
    (None, (FFD0, FFF0), (), "renogy"),
    # Renogy Pro: other current scale and reply address, not read by this firmware
    ("RNGRBP1228000830", (), (57676,), None),
    ("RNGC122BAT28000194", (), (57676,), None),
    # the families that were there before, sharing FFE0 / FFF0
    ("JK-B2A24S15P", (FFE0,), (0x0B65,), "jk02_32s"),
    ("JK_B2A8S20P", (FFE0,), (), "jk02_32s"),
    (None, (FFE0,), (0x4B4A,), "jk02_32s"),
    ("DL-40D63C3210", (FFF0,), (), "daly"),
    (None, (FFF0,), (), "daly"),
    ("SP04S034-L4S-200A", (FFF0,), (), "jbd"),  # a JBD rebrand on FFF0, by its name
    ("DP04S007L4S100A", (), (), "jbd"),
    ("JBD-SP04S034", ("ff00",), (), "jbd"),
    # look-alikes that are no BMS
    ("HMSoft", (FFE0,), (), None),
    ("P-1234", (FFE0,), (), None),  # a Redodo-like name without its manufacturer id
    ("SPEAKER", (), (), None),
)


def test_names():
    assert protocols.NAMES == ("jbd", "jk02_24s", "jk02_32s", "daly", "seplos", "ant", "redodo", "renogy")


def test_every_known_advertisement_gets_its_family():
    for name, services, mfr, want in ADVERTS:
        got = protocols.detect(name, services, mfr)
        assert got == want, (name, services, mfr, got, want)


def test_every_name_listed_in_the_frames_file():
    # newfamilies.json names the adverts seen per family; with the family's service and
    # manufacturer id each gets its family (ANT-BLE22AACB-0489 listed there is a legacy unit,
    # told apart above by its FEE7 service).
    seen = {"seplos": ("SP05B2312190075", "SP51B2407270006", "SP47B-A2410230006", "CSY012405290042",
                       "XZHXLD012404120010"),
            "ant": ("ANT-BLE24C-001", "ANT@BLE24CBUB-1231", "ANT-BLE16ZMUB", "ANT-BLE20PHUB"),
            "redodo": ("R-12100BNNA70-A02402", "LT-24100B-A00473"),
            "renogy": ("BT-TH-12345678",)}
    fams = shared_families()
    for family in seen:
        service = fams[family]["service"]
        mfr = tuple(fams[family]["manufacturer_ids"][:1])
        for name in seen[family]:
            assert protocols.detect(name, (service,), mfr) == family, (family, name)


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


def test_only_the_configured_family_is_imported():
    import sys

    import smartbms.bms as pkg

    for mod in ("seplos", "ant", "redodo", "renogy"):
        sys.modules.pop("smartbms.bms." + mod, None)
        if hasattr(pkg, mod):
            delattr(pkg, mod)  # else `from smartbms.bms import x` would not import again
    protocols.get("ant")
    assert "smartbms.bms.ant" in sys.modules
    for mod in ("seplos", "redodo", "renogy"):
        assert "smartbms.bms." + mod not in sys.modules, mod


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
