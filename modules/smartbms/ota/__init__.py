# OTA service: whole-image updates into the other app slot (updater), the HTTP routes
# (http.install), rollback and safe mode (health.BootGuard). The module itself is the
# service the app hands to the web layer as ctx.ota.
from smartbms.ota import otadata

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


def slot_changed():
    """The updater is writing the other slot: its version is read again when next asked."""
    global _other_version
    _other_version = _UNKNOWN


def slot_version(part):
    """The version in the app descriptor of the image in `part`, or None."""
    from smartbms.ota.image import DESC_OFFSET, IMAGE_MAGIC, parse_desc  # only here: 1.5 KB

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
_UNKNOWN = ()
_other_version = _UNKNOWN  # the other slot's version, read again after an upload


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
        slot_changed()
    return _parts


def status():
    """{"running", "running_version", "previous_version", "pending_verify", "state", "busy"}."""
    global _other_version
    run, label, version, other, data, slots = _partitions()
    if _other_version is _UNKNOWN:
        _other_version = slot_version(other) if other is not None else None
    out = {"running": label, "running_version": version, "previous_version": _other_version,
           "pending_verify": False, "state": "undefined", "busy": _busy}
    if data is not None:
        seq, state = otadata_state(data)
        if seq is not None and slots[otadata.slot_of(seq, len(slots))] == label:
            out["state"] = otadata.STATE_NAMES.get(state, "undefined")
            out["pending_verify"] = state == otadata.PENDING_VERIFY
    return out
