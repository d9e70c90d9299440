# ESP-IDF's otadata partition (pure logic, no hardware): two 4 KB sectors, each starting
# with an esp_ota_select_entry_t. The bootloader boots the slot named by the valid entry
# with the highest sequence number; writes go to the other sector, so a power cut during a
# write leaves the previous choice intact. Used by the sim's flash shim and bootloader and
# by the device-side status report, so both read otadata the same way.
import struct
import binascii

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

SECTOR = const(4096)
ENTRY_SIZE = const(32)
_FMT = "<I20sII"
_ERASED_SEQ = 0xFFFFFFFF

# esp_ota_img_states_t
NEW = const(0)
PENDING_VERIFY = const(1)
VALID = const(2)
INVALID = const(3)
ABORTED = const(4)
UNDEFINED = 0xFFFFFFFF

STATE_NAMES = {NEW: "new", PENDING_VERIFY: "pending_verify", VALID: "valid",
               INVALID: "invalid", ABORTED: "aborted", UNDEFINED: "undefined"}


def crc(seq):
    # esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4), as ESP-IDF's otatool computes it.
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


def encode(seq, state):
    """One entry as the bootloader reads it (32 bytes; the label stays erased)."""
    return struct.pack(_FMT, seq, b"\xff" * 20, state, crc(seq))


def decode(buf):
    """(seq, state, crc_ok) of the entry at the start of buf."""
    seq, _label, state, c = struct.unpack_from(_FMT, buf, 0)
    return seq, state, (seq != _ERASED_SEQ and c == crc(seq))


def usable(entry):
    # bootloader_common_ota_select_valid with rollback enabled
    seq, state, ok = entry
    return ok and state != INVALID and state != ABORTED


def active(entries):
    """Index of the entry that selects the boot slot, or -1 when none is valid."""
    best = -1
    for i in range(len(entries)):
        if usable(entries[i]) and (best < 0 or entries[i][0] > entries[best][0]):
            best = i
    return best


def slot_of(seq, slots=2):
    return (seq - 1) % slots


def next_seq(entries, slot, slots=2):
    """Sequence number that makes `slot` the boot slot (esp_ota_set_boot_partition)."""
    top = 0
    for seq, _state, ok in entries:
        if ok and seq > top:
            top = seq
    i = 0
    while slots * i + slot + 1 <= top:
        i += 1
    return slots * i + slot + 1


def write_sector_for(entries):
    """The sector a new choice goes to: the one not holding the active entry."""
    a = active(entries)
    return 0 if a < 0 else (a + 1) % 2
