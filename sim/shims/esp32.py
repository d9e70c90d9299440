# Host-only stand-in for MicroPython's esp32 module: Partition over the simulated 4 MB
# flash file (SIM_DIR/flash.bin), laid out by the binary partition table stored in it at
# 0x8000, with otadata handled as ESP-IDF does (see smartbms.ota.otadata). sim_boot picks
# the running slot at process start and calls set_running(). Never frozen.
import os
import struct
import sys


def _otadata():
    # the firmware's otadata codec for one call, then forgotten unless the firmware holds it
    # itself: the chip's esp32 module is C and keeps nothing of the firmware on the heap
    names = [n for n in ("smartbms.ota", "smartbms.ota.otadata") if n not in sys.modules]
    from smartbms import unload
    from smartbms.ota import otadata

    unload(names)
    return otadata


FLASH_SIZE = 0x400000
TABLE_OFFSET = 0x8000
BLOCK = 4096
_ERASED = b"\xff" * BLOCK
# set_boot's image check runs in C on the device, off the Python heap: one buffer made at
# import keeps the shim from asking a fragmented heap for 4 KB at that moment
_verify_buf = bytearray(BLOCK)

_flash_path = None
_running = None  # label of the slot sim_boot booted


class _Flash:
    def __init__(self, path):
        self.path = path
        try:
            self.f = open(path, "r+b", buffering=0)  # CPython: no stale read buffer
        except TypeError:
            self.f = open(path, "r+b")

    def read(self, addr, buf):
        self.f.seek(addr)
        n = self.f.readinto(buf)
        if n != len(buf):
            raise OSError(5)  # EIO: past the end of the flash file

    def write(self, addr, data):
        if addr < 0 or addr + len(data) > FLASH_SIZE:
            raise OSError(22)
        # unbuffered: a killed process (a power cut) keeps every completed write; no
        # fsync, which only matters if the host itself crashes
        self.f.seek(addr)
        self.f.write(data)

    def program(self, addr, data):
        # NOR flash: programming only clears bits, as a write without erase does. Done a
        # piece at a time in a scratch buffer outside the heap: the chip's flash driver
        # takes nothing from the firmware's heap (a copy here made uploads fail for memory)
        s = _scratch()
        data = memoryview(data)
        pos = 0
        while pos < len(data):
            k = min(len(s), len(data) - pos)
            part = s[:k]
            self.read(addr + pos, part)
            for i in range(k):
                part[i] &= data[pos + i]
            self.write(addr + pos, part)
            pos += k

    def erase(self, addr, size):
        while size > 0:
            k = min(size, BLOCK)
            self.write(addr, _ERASED if k == BLOCK else _ERASED[:k])
            addr += k
            size -= k


_flash = None
_scratch_buf = None


def _scratch():
    global _scratch_buf
    if _scratch_buf is None:
        try:
            import _host

            _scratch_buf = _host.static_buffer(256)
        except ImportError:  # CPython: the tests' flash file
            _scratch_buf = memoryview(bytearray(256))
    return _scratch_buf


_table = None  # the partition table, read once per flash file (ESP-IDF caches it too)


def configure(path, running=None):
    """Use the flash file at `path`; `running` = label of the booted slot."""
    global _flash_path, _flash, _running, _table
    if _flash is not None:
        _flash.f.close()
    _table = None
    _flash_path = path
    _flash = _Flash(path)
    if running is not None:
        _running = running


def set_running(label):
    global _running
    _running = label


def _dev():
    global _flash
    if _flash is None:
        d = os.getenv("SIM_DIR") or "build/sim"
        configure(d + "/flash.bin")
    return _flash


def read_table(flash=None):
    """[(type, subtype, addr, size, label, encrypted)] from the binary table at 0x8000."""
    global _table
    if flash is None and _table is not None:
        return _table
    own = flash is None
    flash = flash or _dev()
    buf = bytearray(32)
    out = []
    for off in range(0, 0xC00, 32):
        flash.read(TABLE_OFFSET + off, buf)
        magic, ptype, sub, addr, size, label, flags = struct.unpack_from("<HBBII16sI", buf, 0)
        if magic != 0x50AA:
            break
        name = bytes(label).split(b"\0")[0].decode()
        out.append((ptype, sub, addr, size, name, bool(flags & 1)))
    if not out:
        raise OSError(2)  # no partition table: not a flash image made by sim/flashimg.py
    if own:
        _table = out
    return out


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=BLOCK):
        table = read_table()
        if id == Partition.RUNNING:
            label = _running or "ota_0"
        elif id == Partition.BOOT:
            label = _boot_label(table)
        else:
            label = id
        for e in table:
            if e[4] == label:
                self._info = e
                break
        else:
            raise ValueError("partition not found")
        self.block_size = block_size

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=BLOCK):
        return [Partition(e[4], block_size) for e in read_table()
                if e[0] == type and (subtype == 0xFF or e[1] == subtype)
                and (label is None or e[4] == label)]

    def info(self):
        return self._info

    def __repr__(self):
        t, s, a, n, l, e = self._info
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=%d>" % (t, s, a, n, l, e)

    def _addr(self, block, offset, length):
        addr = block * self.block_size + offset
        if block < 0 or offset < 0 or addr + length > self._info[3]:
            raise OSError(22)  # EINVAL, like esp_partition_* outside the partition
        return self._info[2] + addr

    def readblocks(self, block, buf, offset=0):
        _dev().read(self._addr(block, offset, len(buf)), buf)

    def writeblocks(self, block, buf, offset=None):
        # Without offset MicroPython erases the blocks first; with one it only programs.
        if offset is None:
            addr = self._addr(block, 0, len(buf))
            size = (len(buf) + BLOCK - 1) // BLOCK * BLOCK
            if size != len(buf):
                _dev().erase(addr + size - BLOCK, BLOCK)  # the partly written last block
            _dev().write(addr, buf)  # erase + program of whole blocks = the new bytes
        else:
            _dev().program(self._addr(block, offset, len(buf)), buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self._info[3] // self.block_size
        if op == 5:
            return self.block_size
        if op == 6:
            _dev().erase(self._addr(arg, 0, self.block_size), self.block_size)
            return 0
        return 0 if op in (1, 2, 3) else -22  # init, deinit, sync

    def get_next_update(self):
        slots = _app_slots()
        me = self._info[4]
        names = [e[4] for e in slots]
        if me not in names:
            raise OSError(-261)  # ESP_ERR_NOT_FOUND
        return Partition(names[(names.index(me) + 1) % len(names)])

    def set_boot(self):
        otadata = _otadata()
        t, sub, addr, size, label, _ = self._info
        if t != 0 or not 0x10 <= sub < 0x20:
            raise OSError(-258)  # ESP_ERR_INVALID_ARG
        _verify(self)
        part = _otadata_part()
        entries = _read_entries(part)
        slot = sub - 0x10
        seq = otadata.next_seq(entries, slot, len(_app_slots()))
        sector = otadata.write_sector_for(entries)
        _write_entry(part, sector, seq, otadata.NEW)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        otadata = _otadata()
        part = _otadata_part(missing=-261)
        entries = _read_entries(part)
        a = otadata.active(entries)
        if a < 0:
            return  # nothing to confirm (erased otadata: the first slot boots as valid)
        seq, state, _ = entries[a]
        if state != otadata.VALID:
            # ESP-IDF rewrites the active entry in place
            _write_entry(part, a, seq, otadata.VALID)


def _verify(part):
    from smartbms.ota.image import ImageChecker, ImageError
    c = ImageChecker(part._info[3], app_policy=False, in_slot=True)
    buf = _verify_buf
    n = part._info[3] // BLOCK
    try:
        for b in range(n):
            part.readblocks(b, buf)
            if c.feed(buf):
                break
        c.finish()
    except ImageError as e:
        raise OSError(-5379)  # ESP_ERR_OTA_VALIDATE_FAILED (0x1503)


def _app_slots():
    return sorted([e for e in read_table() if e[0] == 0 and 0x10 <= e[1] < 0x20], key=lambda e: e[1])


def _otadata_part(missing=-261):
    for e in read_table():
        if e[0] == 1 and e[1] == 0:
            return e
    raise OSError(missing)


def _read_entries(part):
    otadata = _otadata()
    out = []
    buf = bytearray(otadata.ENTRY_SIZE)
    for i in range(2):
        _dev().read(part[2] + i * otadata.SECTOR, buf)
        out.append(otadata.decode(buf))
    return out


def _write_entry(part, sector, seq, state):
    otadata = _otadata()
    addr = part[2] + sector * otadata.SECTOR
    _dev().erase(addr, otadata.SECTOR)
    _dev().write(addr, otadata.encode(seq, state))


def _boot_label(table=None):
    """The slot the bootloader would pick now (ignoring rollback bookkeeping)."""
    otadata = _otadata()
    slots = _app_slots()
    try:
        part = _otadata_part()
    except OSError:
        return slots[0][4]
    entries = _read_entries(part)
    a = otadata.active(entries)
    if a < 0:
        return slots[0][4]
    return slots[otadata.slot_of(entries[a][0], len(slots))][4]


def otadata_entries():
    """Both otadata entries as (seq, state, crc_ok) (sim and tests only)."""
    return _read_entries(_otadata_part())


def write_otadata(sector, seq, state):
    _write_entry(_otadata_part(), sector, seq, state)
