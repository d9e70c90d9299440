#!/usr/bin/env python3
"""ESP-IDF partition tables: parse the CSV, check it against the smartbms flash plan,
and write the binary form that the bootloader reads at 0x8000.

    partition_table.py check boards/SMARTBMS/partitions.csv
    partition_table.py binary boards/SMARTBMS/partitions.csv OUT.bin
"""
import hashlib
import struct
import sys

FLASH_SIZE = 0x400000
TABLE_OFFSET = 0x8000
TABLE_MAX = 0xC00
APP_ALIGN = 0x10000
DATA_ALIGN = 0x1000
MIN_SLOT = 0x1D0000
VFS_SIZE = 0x40000
OTADATA_SIZE = 0x2000

TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {
    "app": {"factory": 0x00, "test": 0x20, **{"ota_%d" % i: 0x10 + i for i in range(16)}},
    "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04,
             "efuse": 0x05, "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82,
             "littlefs": 0x83},
}


class TableError(ValueError):
    pass


class Partition:
    def __init__(self, name, ptype, subtype, offset, size, flags=""):
        self.name, self.type, self.subtype = name, ptype, subtype
        self.offset, self.size, self.flags = offset, size, flags

    @property
    def end(self):
        return self.offset + self.size

    def __repr__(self):
        return "%s(%s/%s @0x%x +0x%x)" % (self.name, self.type, self.subtype, self.offset, self.size)


def _int(text, what):
    text = text.strip()
    try:
        if text.upper().endswith("K"):
            return int(text[:-1], 0) * 1024
        if text.upper().endswith("M"):
            return int(text[:-1], 0) * 1024 * 1024
        return int(text, 0)
    except ValueError:
        raise TableError("%s: not a number: %r" % (what, text)) from None


def parse_csv(text):
    """Parse an ESP-IDF partition CSV. Offsets may be omitted, as gen_esp32part allows."""
    parts = []
    next_offset = TABLE_OFFSET + 0x1000
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cols = [c.strip() for c in line.split(",")]
        cols += [""] * (6 - len(cols))
        name, ptype, subtype, offset, size, flags = cols[:6]
        where = "line %d" % lineno
        if ptype not in TYPES:
            raise TableError("%s: unknown type %r" % (where, ptype))
        if subtype not in SUBTYPES[ptype]:
            raise TableError("%s: unknown %s subtype %r" % (where, ptype, subtype))
        if not name or len(name) > 16:
            raise TableError("%s: partition name must be 1-16 characters" % where)
        align = APP_ALIGN if ptype == "app" else DATA_ALIGN
        if offset:
            off = _int(offset, where)
        else:
            off = (next_offset + align - 1) // align * align
        parts.append(Partition(name, ptype, subtype, off, _int(size, where), flags))
        next_offset = off + parts[-1].size
    return parts


def check_plan(parts, flash_size=FLASH_SIZE):
    """Return a list of problems with the smartbms flash plan (empty when all is well)."""
    problems = []
    by_name = {p.name: p for p in parts}
    by_sub = {}
    for p in parts:
        by_sub.setdefault(p.subtype, []).append(p)

    ordered = sorted(parts, key=lambda p: p.offset)
    if ordered and ordered[0].offset < TABLE_OFFSET + 0x1000:
        problems.append("%s overlaps the partition table at 0x8000" % ordered[0].name)
    for a, b in zip(ordered, ordered[1:]):
        if a.end > b.offset:
            problems.append("%s and %s overlap" % (a.name, b.name))
    for p in parts:
        if p.end > flash_size:
            problems.append("%s ends at 0x%x, past the end of the 4 MB flash" % (p.name, p.end))
        align = APP_ALIGN if p.type == "app" else DATA_ALIGN
        if p.offset % align:
            problems.append("%s offset 0x%x is not aligned to 0x%x" % (p.name, p.offset, align))
        if p.type == "app" and p.size % APP_ALIGN:
            problems.append("%s size 0x%x is not a multiple of 64 KB" % (p.name, p.size))

    if "nvs" not in by_sub:
        problems.append("no nvs partition")
    ota = by_sub.get("ota", [])
    if len(ota) != 1 or ota[0].size != OTADATA_SIZE:
        problems.append("need exactly one otadata partition of 0x2000 bytes")
    if "factory" in by_sub:
        problems.append("a factory app slot wastes flash: OTA swaps between ota_0 and ota_1")
    slots = [by_sub.get("ota_0", []), by_sub.get("ota_1", [])]
    if any(len(s) != 1 for s in slots) or any(p.type == "app" for p in parts if p.subtype not in ("ota_0", "ota_1")):
        problems.append("need exactly two app slots, ota_0 and ota_1")
    else:
        a, b = slots[0][0], slots[1][0]
        if a.size != b.size:
            problems.append("ota_0 and ota_1 differ in size")
        if a.size < MIN_SLOT:
            problems.append("app slots are 0x%x, smaller than 0x%x" % (a.size, MIN_SLOT))
    vfs = by_name.get("vfs")
    if vfs is None or vfs.type != "data" or vfs.size != VFS_SIZE:
        problems.append("need a 256 KB (0x40000) data partition labelled vfs")
    return problems


def to_binary(parts):
    """The binary table (as gen_esp32part.py writes it): 32-byte entries, an MD5 entry,
    padded with 0xFF to 0xC00 bytes."""
    out = bytearray()
    for p in parts:
        flags = 1 if "encrypted" in p.flags else 0
        out += struct.pack("<HBBLL16sL", 0x50AA, TYPES[p.type], SUBTYPES[p.type][p.subtype],
                           p.offset, p.size, p.name.encode(), flags)
    out += b"\xEB\xEB" + b"\xFF" * 14 + hashlib.md5(bytes(out)).digest()
    if len(out) > TABLE_MAX:
        raise TableError("partition table too large")
    out += b"\xFF" * (TABLE_MAX - len(out))
    return bytes(out)


def main(argv):
    if len(argv) < 2 or argv[0] not in ("check", "binary"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        with open(argv[1]) as f:
            parts = parse_csv(f.read())
    except (OSError, TableError) as e:
        print("partition table: %s" % e, file=sys.stderr)
        return 2
    if argv[0] == "check":
        problems = check_plan(parts)
        for p in problems:
            print("partition table: %s" % p, file=sys.stderr)
        return 1 if problems else 0
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[2], "wb") as f:
        f.write(to_binary(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
