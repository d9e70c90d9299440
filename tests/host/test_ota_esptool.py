"""esptool (an independent reader of ESP32 images) agrees with smartbms.ota.image on every
image the tests generate: the valid ones parse with a valid checksum and hash and the
descriptor the validator reports; every bad one is one that esptool flags too (or, for a
merged firmware.bin and foreign builds, one whose descriptor esptool shows is not a
smartbms app)."""
import hashlib
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "sim"))
sys.path.insert(0, os.path.join(ROOT, "modules"))
import esp_image  # noqa: E402
from smartbms.ota import image  # noqa: E402

ESPTOOL = os.path.join(ROOT, ".venv", "bin", "esptool")
SLOT = 0x1D0000


def esptool_info(path):
    if not os.path.exists(ESPTOOL):
        pytest.fail("esptool missing from .venv (run make)")
    r = subprocess.run([ESPTOOL, "image-info", str(path)], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    return {
        "rc": r.returncode,
        "out": out,
        "checksum_ok": "Checksum:" in out and "(valid)" in out.split("Checksum:", 1)[1].split("\n", 1)[0],
        "hash_ok": "Validation hash:" in out and "(valid)" in out.split("Validation hash:", 1)[1].split("\n", 1)[0],
        "project": _field(out, "Project name"),
        "version": _field(out, "App version"),
        "chip": _field(out, "Chip ID"),
        "fatal": "fatal error" in out.lower(),
    }


def _field(out, name):
    m = re.search(r"^%s: ?(.*)$" % re.escape(name), out, re.M)
    return m.group(1).strip() if m else None


def ours(data):
    try:
        return image.check(data, SLOT), None
    except image.ImageError as e:
        return None, str(e)


@pytest.mark.parametrize("version,size", [("0.1.0", 20000), ("1.2.3", 300 * 1024), ("10.0.1-rc2", 1536 * 1024)])
def test_valid_images_agree(tmp_path, version, size):
    data = esp_image.app_image(version, size)
    p = tmp_path / "app.bin"
    p.write_bytes(data)
    info, err = ours(data)
    assert err is None
    e = esptool_info(p)
    assert e["rc"] == 0 and e["checksum_ok"] and e["hash_ok"], e["out"]
    assert e["project"] == info["project"] == "micropython"
    assert e["version"] == info["version"] == version
    assert e["chip"].startswith("0 ")
    assert info["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", esp_image.VARIANTS)
def test_bad_images_agree(tmp_path, kind):
    data = esp_image.variant(kind, size=40 * 1024)
    p = tmp_path / (kind + ".bin")
    p.write_bytes(data)
    info, err = ours(data)
    assert info is None, "validator accepted %s" % kind
    e = esptool_info(p)
    if kind in ("bad_magic", "random"):
        assert e["fatal"] and "magic" in e["out"].lower() and "0xE9" in err
    elif kind == "wrong_chip":
        assert e["chip"].startswith("9 ") and "ESP32-S3" in e["chip"] and "ESP32-S3" in err
    elif kind == "bad_checksum":
        assert not e["checksum_ok"] and e["hash_ok"] and "checksum" in err
    elif kind == "bad_digest":
        assert e["checksum_ok"] and not e["hash_ok"] and "SHA-256" in err
    elif kind == "corrupt_body":
        assert not (e["checksum_ok"] and e["hash_ok"])
    elif kind == "truncated":
        assert e["fatal"] or e["rc"] != 0
        assert "truncated" in err
    elif kind == "oversize":
        assert e["rc"] == 0 and e["hash_ok"]  # a fine image, just too big for the slot
        assert "slot" in err and os.path.getsize(p) > SLOT
    elif kind == "merged":
        # esptool reads the bootloader at the front: valid, but no application descriptor
        assert e["checksum_ok"] and e["project"] is None
        assert "micropython.bin" in err
        with open(p, "rb") as f:
            f.seek(0x7000)
            assert f.read(2) == b"\xaa\x50"
    elif kind == "stock":
        assert e["checksum_ok"] and e["hash_ok"] and not e["project"] and not e["version"]
        assert "stock" in err
    elif kind == "foreign":
        assert e["project"] == "hello_world" and "foreign" in err
    elif kind == "no_hash":
        assert e["checksum_ok"] and "Validation hash" not in e["out"] and "SHA-256" in err
    elif kind == "trailing":
        assert e["checksum_ok"] and e["hash_ok"] and "trailing" in err
    else:
        pytest.fail("no esptool expectation for %s" % kind)
