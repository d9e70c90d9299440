# OTA service: whole-image updates into the other app slot (updater), the HTTP routes
# (http.install), rollback and safe mode (health.BootGuard). The module itself is the
# service the app hands to the web layer as ctx.ota.
import struct

from smartbms.ota import otadata
from smartbms.ota.image import parse_desc, IMAGE_MAGIC, DESC_OFFSET

_busy = False
# The upload's 1 KB piece buffer (smartbms.ota.updater), made here because this package is
# imported at boot, while the heap is still in one piece: an upload then never needs a
# contiguous block of the heap, however fragmented it is by then.
BLOCK_BUFFER = bytearray(1024)


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


def otadata_state(part):
    """(active seq, state) from the otadata partition, or (None, None) when erased."""
    entries = []
    buf = bytearray(otadata.ENTRY_SIZE)
    for i in range(2):
        part.readblocks(i, buf)
        entries.append(otadata.decode(buf))
    a = otadata.active(entries)
    if a < 0:
        return None, None
    return entries[a][0], entries[a][1]


_parts = None  # (running, its label, its version, the other slot, otadata or None, slot labels)


def _partitions():
    # the running slot and the layout do not change until the next boot: look them up once
    global _parts
    if _parts is None:
        import esp32
        run = esp32.Partition(esp32.Partition.RUNNING)
        try:
            other = run.get_next_update()
        except OSError:
            other = None
        data = esp32.Partition.find(esp32.Partition.TYPE_DATA, 0, None)
        slots = sorted(p.info()[4] for p in esp32.Partition.find(esp32.Partition.TYPE_APP))
        _parts = (run, run.info()[4], slot_version(run), other, data[0] if data else None, slots)
    return _parts


def status():
    """{"running", "running_version", "previous_version", "pending_verify", "state", "busy"}."""
    run, label, version, other, data, slots = _partitions()
    out = {"running": label, "running_version": version,
           "previous_version": slot_version(other) if other is not None else None,
           "pending_verify": False, "state": "undefined", "busy": _busy}
    if data is not None:
        seq, state = otadata_state(data)
        if seq is not None and slots[otadata.slot_of(seq, len(slots))] == label:
            out["state"] = otadata.STATE_NAMES.get(state, "undefined")
            out["pending_verify"] = state == otadata.PENDING_VERIFY
    return out
