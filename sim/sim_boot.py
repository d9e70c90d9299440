# The simulator's bootloader: run by sim_main at process start, before the app. Picks the
# boot slot from otadata the way ESP-IDF's bootloader does with rollback enabled, and
# tells the esp32 shim which slot is running.
#   - the valid entry with the highest sequence number selects the slot;
#   - NEW becomes PENDING_VERIFY on its first boot;
#   - PENDING_VERIFY at boot means the app was booted once and never confirmed: it becomes
#     ABORTED and the previous valid slot boots (rollback);
#   - a slot whose image fails verification is skipped.
import gc

import esp32


def boot(flash_path, log=print):
    """Select and record the running slot. Returns (label, state name)."""
    esp32.configure(flash_path)
    otadata = esp32._otadata()  # the firmware's codec, not kept loaded (ESP-IDF's is C)
    slots = esp32._app_slots()
    try:
        part = esp32._otadata_part()
    except OSError:
        part = None
    while part is not None:
        entries = esp32._read_entries(part)
        a = otadata.active(entries)
        if a < 0:
            break
        seq, state, _ = entries[a]
        label = slots[otadata.slot_of(seq, len(slots))][4]
        if state == otadata.PENDING_VERIFY:
            log("sim_boot: %s was not confirmed after its first boot: rolling back" % label)
            esp32.write_otadata(a, seq, otadata.ABORTED)
            continue
        if not _image_ok(label):
            log("sim_boot: %s holds no valid image: marking it invalid" % label)
            esp32.write_otadata(a, seq, otadata.INVALID)
            continue
        if state == otadata.NEW:
            esp32.write_otadata(a, seq, otadata.PENDING_VERIFY)
            state = otadata.PENDING_VERIFY
        esp32.set_running(label)
        gc.collect()  # the image checks leave garbage; the app starts on a clean heap
        return label, otadata.STATE_NAMES.get(state, "undefined")
    # no usable otadata: the first slot that holds a valid image boots
    for e in slots:
        if _image_ok(e[4]):
            esp32.set_running(e[4])
            gc.collect()
            return e[4], "undefined"
    raise SystemExit("sim_boot: no bootable app image in %s" % flash_path)


def _image_ok(label):
    try:
        esp32._verify(esp32.Partition(label))
        return True
    except OSError:
        return False
