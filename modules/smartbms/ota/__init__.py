# OTA service: whole-image updates into the other app slot (updater), the HTTP routes
# (http.install), rollback and safe mode (health.BootGuard). The module itself is the
# service the app hands to the web layer as ctx.ota.
import struct

from smartbms.ota import otadata
from smartbms.ota.image import parse_desc, IMAGE_MAGIC, DESC_OFFSET

_busy = False


def busy():
    """True while an upload is being written."""
    return _busy


def acquire():
    """Take the single upload slot; False when another upload runs."""
    global _busy
    if _busy:
        return False
    _busy = True
    return True


def release():
    global _busy
    _busy = False


def slot_version(part):
    """The version in the app descriptor of the image in `part`, or None."""
    buf = bytearray(DESC_OFFSET + 0x50)
    try:
        part.readblocks(0, buf)
    except OSError:
        return None
    if buf[0] != IMAGE_MAGIC:
        return None
    d = parse_desc(buf, DESC_OFFSET)
    return d[1] if d else None


def otadata_state(esp32):
    """(active seq, state) from the otadata partition, or (None, None) when erased/absent."""
    parts = esp32.Partition.find(esp32.Partition.TYPE_DATA, 0, None)
    if not parts:
        return None, None
    entries = []
    buf = bytearray(otadata.ENTRY_SIZE)
    for i in range(2):
        parts[0].readblocks(i, buf)
        entries.append(otadata.decode(buf))
    a = otadata.active(entries)
    if a < 0:
        return None, None
    return entries[a][0], entries[a][1]


def status():
    """{"running", "running_version", "previous_version", "pending_verify", "state"}."""
    import esp32
    run = esp32.Partition(esp32.Partition.RUNNING)
    label = run.info()[4]
    out = {"running": label, "running_version": slot_version(run), "previous_version": None,
           "pending_verify": False, "state": "undefined", "busy": _busy}
    try:
        out["previous_version"] = slot_version(run.get_next_update())
    except OSError:
        pass
    seq, state = otadata_state(esp32)
    if seq is not None:
        slots = [p.info()[4] for p in esp32.Partition.find(esp32.Partition.TYPE_APP)]
        slots.sort()
        if slots and slots[otadata.slot_of(seq, len(slots))] == label:
            out["state"] = otadata.STATE_NAMES.get(state, "undefined")
            out["pending_verify"] = state == otadata.PENDING_VERIFY
    return out
