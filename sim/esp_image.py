"""Build ESP32 app images on the host (CPython) for tests and the simulator: the layout
esptool's elf2image writes (header, extended header, segments, checksum, SHA-256), with
an esp_app_desc_t at the start of the first (DROM) segment. Also the broken variants the
validator must refuse and a merged firmware.bin (bootloader + partition table + app).
Generated images are never executed: only their structure matters.
Runs on CPython and on the MicroPython unix port (the unit tests use it on both)."""
import hashlib
import struct
import sys

_f = globals().get("__file__") or "sim/esp_image.py"
HERE = _f.rsplit("/", 1)[0] if "/" in _f else "."
ROOT = HERE.rsplit("/", 1)[0] if "/" in HERE.strip("./") else (HERE + "/..")

DESC_MAGIC = 0xABCD5432
DROM = 0x3F400020  # first DROM segment: right after the 0x20-byte header + segment header
DRAM = 0x3FFB0000
IRAM = 0x40080000
BOOT_DRAM = 0x3FFF0000
BOOT_IRAM = 0x40078000
SLOT_SIZE = 0x1D0000


def app_desc(version, project="micropython", idf="v5.5.1"):
    """A 256-byte esp_app_desc_t."""
    return struct.pack("<IIII32s32s16s16s32s32sHHB3s72s",
                       DESC_MAGIC, 0, 0, 0, version.encode(), project.encode(),
                       b"12:00:00", b"Nov 25 2026", idf.encode(), hashlib.sha256(version.encode()).digest(),
                       0, 0, 16, b"\0" * 3, b"\0" * 72)


def build(segments, entry=IRAM + 0x400, chip_id=0, hash_appended=True, flash_byte=0x20):
    """segments: [(load_addr, bytes)]; each is padded to a multiple of 4 as elf2image does."""
    out = bytearray(struct.pack("<BBBBIBBBBHBHH4sB", 0xE9, len(segments), 2, flash_byte, entry,
                                0xEE, 0, 0, 0, chip_id, 0, 0, 0xFFFF, b"\0" * 4,
                                1 if hash_appended else 0))
    checksum = 0xEF
    for addr, data in segments:
        data = bytes(data) + b"\0" * (-len(data) % 4)
        out += struct.pack("<II", addr, len(data)) + data
        checksum ^= _xor(data)
    out += b"\0" * (15 - len(out) % 16)
    out.append(checksum)
    if hash_appended:
        out += hashlib.sha256(out).digest()
    return bytes(out)


def _xor(data):
    x = int.from_bytes(data, "little") if data else 0
    h = 1
    while h < len(data):
        h <<= 1
    h >>= 1
    while h:
        x = (x ^ (x >> (h * 8))) & ((1 << (h * 8)) - 1)
        h >>= 1
    return x


def _filler(n, seed):
    """Deterministic incompressible bytes (SHA-256 in counter mode)."""
    out = bytearray()
    i = 0
    key = struct.pack("<I", seed)
    while len(out) < n:
        out += hashlib.sha256(key + struct.pack("<I", i)).digest()
        i += 1
    return bytes(out[:n])


def app_image(version="0.2.0", size=64 * 1024, project="micropython", chip_id=0,
              hash_appended=True, seed=1):
    """A valid-looking app image of about `size` bytes carrying `version`."""
    body = max(0, size - 24 - 8 * 3 - 256 - 512 - 1024 - 48)
    drom = app_desc(version, project) + _filler(body, seed)
    return build([(DROM, drom), (DRAM, _filler(512, seed + 1)), (IRAM, _filler(1024, seed + 2))],
                 chip_id=chip_id, hash_appended=hash_appended)


def bootloader_image(seed=7):
    return build([(BOOT_DRAM, _filler(0x400, seed)), (BOOT_IRAM, _filler(0x3000, seed + 1))],
                 entry=BOOT_IRAM + 0x80)


def partition_table():
    """(parsed partitions, binary table) from boards/SMARTBMS/partitions.csv (CPython)."""
    sys.path.insert(0, ROOT + "/scripts")
    import partition_table as pt
    with open(ROOT + "/boards/SMARTBMS/partitions.csv") as f:
        parts = pt.parse_csv(f.read())
    return parts, pt.to_binary(parts)


def _table_binary():
    try:
        return partition_table()[1]
    except SyntaxError:
        # MicroPython cannot import scripts/partition_table.py; a merged image only needs
        # a table that looks like one (entries with the 0x50AA magic).
        t = bytearray()
        for ptype, sub, off, size, name in ((1, 2, 0x9000, 0x4000, b"nvs"), (1, 0, 0xD000, 0x2000, b"otadata"),
                                            (0, 0x10, 0x10000, SLOT_SIZE, b"ota_0"),
                                            (0, 0x11, 0x1E0000, SLOT_SIZE, b"ota_1")):
            t += struct.pack("<HBBLL16sL", 0x50AA, ptype, sub, off, size, name, 0)
        # the host interpreter has no MD5 (built without mbedtls); the check reads no digest
        md5 = hashlib.md5(bytes(t)).digest() if hasattr(hashlib, "md5") else bytes(16)
        t += b"\xEB\xEB" + b"\xFF" * 14 + md5
        return bytes(t) + b"\xFF" * (0xC00 - len(t))


def merged_firmware(app):
    """firmware.bin as the MicroPython build writes it: flashed at 0x1000, so the table
    sits at 0x7000 and the app at 0xF000."""
    out = bytearray(b"\xff" * (0xF000 + len(app)))
    boot = bootloader_image()
    out[0:len(boot)] = boot
    table = _table_binary()
    out[0x7000:0x7000 + len(table)] = table
    out[0xF000:] = app
    return bytes(out)


def variant(kind, version="0.2.0", size=64 * 1024):
    """Broken or foreign images; each must be refused."""
    good = app_image(version, size)
    if kind == "bad_magic":
        return b"\xE8" + good[1:]
    if kind == "wrong_chip":
        return app_image(version, size, chip_id=9)
    if kind == "bad_checksum":
        b = bytearray(good[:-32])
        b[-1] ^= 0x5A
        return bytes(b) + hashlib.sha256(b).digest()
    if kind == "bad_digest":
        b = bytearray(good)
        b[-1] ^= 0x01
        return bytes(b)
    if kind == "corrupt_body":
        b = bytearray(good)
        b[len(b) // 2] ^= 0x10
        return bytes(b)
    if kind == "truncated":
        return good[:len(good) // 2]
    if kind == "oversize":
        return app_image(version, SLOT_SIZE + 0x10000)
    if kind == "merged":
        return merged_firmware(good)
    if kind == "random":
        return _filler(size, 99)
    if kind == "stock":
        return app_image("", size, project="")
    if kind == "foreign":
        return app_image("1.0.0", size, project="hello_world")
    if kind == "no_hash":
        return app_image(version, size, hash_appended=False)
    if kind == "trailing":
        return good + b"\0" * 64
    raise ValueError("unknown variant %r" % kind)


VARIANTS = ("bad_magic", "wrong_chip", "bad_checksum", "bad_digest", "corrupt_body", "truncated",
            "oversize", "merged", "random", "stock", "foreign", "no_hash", "trailing")


if __name__ == "__main__":
    # esp_image.py OUT [VERSION [SIZE]]  (or --variant KIND OUT)
    args = sys.argv[1:]
    if args[:1] == ["--variant"]:
        data = variant(args[1])
        out = args[2]
    else:
        out = args[0]
        data = app_image(args[1] if len(args) > 1 else "0.2.0", int(args[2], 0) if len(args) > 2 else 64 * 1024)
    with open(out, "wb") as f:
        f.write(data)
