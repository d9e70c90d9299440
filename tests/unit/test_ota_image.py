# The streaming app-image validator (smartbms.ota.image) on both runtimes. Images come
# from sim/esp_image.py; tests/host/test_ota_esptool.py checks that esptool reads them
# the same way.
import hashlib

import esp_image
from smartbms.ota import image
from smartbms.ota.image import ImageChecker, ImageError
from testutil import raises

SLOT = 0x1D0000
GOOD = esp_image.app_image("1.2.3", 24 * 1024)


def _feed(data, chunk, **kw):
    c = ImageChecker(kw.pop("slot", SLOT), **kw)
    mv = memoryview(data)
    for i in range(0, len(mv), chunk):
        c.feed(mv[i:i + chunk])
    return c.finish()


def _refused(data, chunk=4096, **kw):
    return str(raises(ImageError, _feed, data, chunk, **kw))


def _hex(b):
    return "".join("%02x" % x for x in b)


def test_valid_image_any_chunking():
    want = _hex(hashlib.sha256(GOOD).digest())
    for chunk in (1, 3, 31, 500, 4096, len(GOOD)):
        if chunk == 1 and len(GOOD) > 30000:
            continue
        info = _feed(GOOD, chunk)
        assert info["version"] == "1.2.3"
        assert info["project"] == "micropython"
        assert info["size"] == len(GOOD)
        assert info["sha256"] == want


def test_feed_reports_completion_only_at_the_end():
    c = ImageChecker(SLOT)
    assert c.feed(GOOD[:-1]) is False
    assert c.feed(GOOD[-1:]) is True
    assert c.complete


def test_expected_sha256():
    good = _hex(hashlib.sha256(GOOD).digest())
    assert _feed(GOOD, 4096, expected_sha256=good)["sha256"] == good
    assert _feed(GOOD, 4096, expected_sha256=good.upper())["sha256"] == good
    wrong = "0" * 64
    assert "does not match X-Image-SHA256" in _refused(GOOD, expected_sha256=wrong)
    assert "64 hex digits" in str(raises(ImageError, ImageChecker, SLOT, "abc"))
    assert "64 hex digits" in str(raises(ImageError, ImageChecker, SLOT, "zz" * 32))


def test_bad_magic_and_random_bytes():
    assert "not an ESP32 app image" in _refused(esp_image.variant("bad_magic", size=8192))
    assert "not an ESP32 app image" in _refused(esp_image.variant("random", size=8192))


def test_wrong_chip():
    assert "ESP32-S3" in _refused(esp_image.variant("wrong_chip", size=8192))


def test_bad_checksum():
    assert "checksum mismatch" in _refused(esp_image.variant("bad_checksum", size=8192))


def test_bad_digest_and_corrupt_body():
    assert "appended SHA-256 does not match" in _refused(esp_image.variant("bad_digest", size=8192))
    # a flipped data bit changes the XOR checksum too; either check must catch it
    msg = _refused(esp_image.variant("corrupt_body", size=8192))
    assert "checksum" in msg or "SHA-256" in msg


def test_truncated_at_every_region():
    img = esp_image.app_image("1.0.0", 8192)
    for cut in (0, 10, 24, 30, 300, 4000, len(img) - 40, len(img) - 32, len(img) - 1):
        c = ImageChecker(SLOT)
        if cut:
            c.feed(img[:cut])
        assert "truncated" in str(raises(ImageError, c.finish))


def test_oversize_refused_before_reading_it_all():
    c = ImageChecker(64 * 1024)
    assert "larger than" in str(raises(ImageError, c.check_length, 64 * 1024 + 1))
    assert "too short" in str(raises(ImageError, c.check_length, 100))
    big = esp_image.app_image("1.0.0", 80 * 1024)
    msg = _refused(big, slot=64 * 1024)
    assert "slot" in msg


def test_segment_past_slot_refused_from_its_header():
    img = esp_image.app_image("1.0.0", 80 * 1024)
    c = ImageChecker(64 * 1024)
    # the first segment header already says it cannot fit: refused after 32 bytes
    assert "past the" in str(raises(ImageError, c.feed, img[:32]))


def test_merged_firmware_refused_with_hint():
    msg = _refused(esp_image.merged_firmware(esp_image.app_image("1.0.0", 8192)))
    assert "micropython.bin" in msg and "firmware.bin" in msg


def test_stock_and_foreign_refused():
    assert "stock MicroPython" in _refused(esp_image.variant("stock", size=8192))
    msg = _refused(esp_image.variant("foreign", size=8192))
    assert "foreign" in msg and "hello_world" in msg
    msg = _refused(esp_image.app_image("v1.28.0", 8192))
    assert "foreign" in msg and "v1.28.0" in msg


def test_no_hash_and_trailing_data_refused():
    assert "no appended SHA-256" in _refused(esp_image.variant("no_hash", size=8192))
    assert "trailing" in _refused(esp_image.variant("trailing", size=8192))


def test_bad_segment_length():
    seg = esp_image.app_desc("1.0.0") + b"\0" * 64
    img = bytearray(esp_image.build([(esp_image.DROM, seg)]))
    img[28] = (img[28] + 2) & 0xFF  # length no longer a multiple of 4
    assert "multiple of 4" in _refused(bytes(img))


def test_refusal_is_early_for_bad_headers():
    # nothing past the first 4 KB block is needed to refuse these
    for kind in ("bad_magic", "wrong_chip", "stock", "foreign", "merged"):
        c = ImageChecker(SLOT)
        raises(ImageError, c.feed, esp_image.variant(kind, size=8192)[:4096])


def test_slot_mode_stops_at_image_end_and_ignores_erased_tail():
    c = ImageChecker(64 * 1024, in_slot=True)
    slot = GOOD + b"\xff" * (64 * 1024 - len(GOOD))
    done = False
    for i in range(0, len(slot), 4096):
        if c.feed(slot[i:i + 4096]):
            done = True
            break
    assert done
    assert c.finish()["version"] == "1.2.3"


def test_idf_mode_accepts_a_bootloader_image():
    # ESP-IDF's own check passes a bootloader (the firmware.bin trap); the policy refuses it
    boot = esp_image.bootloader_image()
    c = ImageChecker(SLOT, app_policy=False, in_slot=True)
    assert c.feed(boot + b"\xff" * 64)
    c.finish()
    raises(ImageError, _feed, boot, 4096)


def test_version_rules():
    for v in ("0.1.0", "10.20.30", "1.2.3-rc1", "1.2.3+g1234"):
        assert image.is_version(v), v
    for v in ("", "1.2", "v1.2.3", "1.2.x", "1..3", "1.2.3.4", "-1.2.3"):
        assert not image.is_version(v), v


def test_parse_desc():
    d = esp_image.app_desc("2.0.1", "micropython")
    assert image.parse_desc(d) == ("micropython", "2.0.1")
    assert image.parse_desc(b"\0" * 256) is None
    assert image.parse_desc(b"\x32\x54\xcd\xab") is None


def test_xor_fold_matches_a_plain_loop():
    data = esp_image._filler(777, 5)
    ref = 0
    for b in data:
        ref ^= b
    assert image._xor_bytes(data) == ref
    assert image._xor_bytes(b"") == 0
    assert image._xor_bytes(b"\x5a") == 0x5A


def test_check_helper_whole_image():
    assert image.check(GOOD, SLOT)["version"] == "1.2.3"
    raises(ImageError, image.check, GOOD[:100], SLOT)
