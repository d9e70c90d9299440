# Modules deployed over USB (`make deploy`, scripts/device.py) in place of their frozen copies.
#
# MicroPython gives a package one folder (__path__ is a single string), so a folder /smartbms on
# the filesystem would hide the WHOLE frozen package, and every module missing from it would
# fail to import. Instead each override is one flat file in ROOT/override/ (smartbms.ota.http
# -> smartbms__ota__http.mpy), listed in override/modules.txt in dependency order. install()
# runs once at boot, before the app imports anything else: it imports each file under its flat
# name (nested imports of other modules still find the frozen package) and registers it in
# sys.modules under its real name, so every later import gets the override. A file that does
# not load (bad .mpy, exception at import) is reported and its frozen copy runs. The boot that
# enters safe mode loads none. Only the names are kept: no file is read when there are none.
import sys

DIR = "override"
LIST = "modules.txt"
# = smartbms.health.LIMIT (not imported: this runs before any other smartbms module loads)
SAFE_MODE_BOOTS = 5

loaded = ()  # dotted names now running from the filesystem, in load order
failed = ()  # "name: reason" for listed modules whose frozen copy runs instead
skipped = None  # why none were loaded although some are listed (safe mode)


def file_name(name):
    """The flat module name an override is stored and imported under."""
    return name.replace(".", "__")


def _boots(root):
    try:
        with open(root + "bootcount") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def _load(name, folder):
    """Import one override; None when it is in place, else why not."""
    if name in sys.modules:
        return "imported before the overrides load"
    flat = file_name(name)
    parent, _, attr = name.rpartition(".")
    try:
        if parent:
            __import__(parent)  # the frozen package (its __init__) comes first
        sys.path.insert(0, folder)
        try:
            mod = __import__(flat)
        finally:
            sys.path.pop(0)
    except Exception as e:  # noqa: BLE001 - a broken override must not stop the boot
        sys.modules.pop(flat, None)
        return "%s: %s" % (type(e).__name__, e)
    del sys.modules[flat]
    mod.__name__ = name
    sys.modules[name] = mod
    if parent:
        setattr(sys.modules[parent], attr, mod)
    return None


def install(root="/"):
    """Load the overrides under root (the device's "/"; the sim's mount point)."""
    global loaded, failed, skipped
    folder = root + DIR
    try:
        with open(folder + "/" + LIST) as f:
            names = f.read().split()
    except OSError:
        return loaded  # the usual case: nothing deployed
    if _boots(root) >= SAFE_MODE_BOOTS:
        skipped = "safe mode: the frozen modules run"
        return loaded
    ok = []
    bad = []
    for name in names:
        why = _load(name, folder)
        if why is None:
            ok.append(name)
        else:
            bad.append("%s: %s" % (name, why))
    loaded = tuple(ok)
    failed = tuple(bad)
    return loaded


def status():
    """For /api/status: what runs from the filesystem instead of the image."""
    return {"modules": list(loaded), "failed": list(failed), "skipped": skipped}


def _short(name):
    return name[9:] if name.startswith("smartbms.") else name


def summary():
    """One short line for the boot event (the event log keeps 120 characters; /api/status has
    everything), or None when nothing is deployed."""
    if loaded:
        return "running %d module%s from the filesystem, not the image: %s%s" % (
            len(loaded), "" if len(loaded) == 1 else "s", ", ".join(_short(n) for n in loaded),
            "; %d failed" % len(failed) if failed else "")
    if failed:
        return "override failed, the image's copy runs: " + "; ".join(_short(n) for n in failed)
    if skipped:
        return "overrides not loaded: " + skipped
    return None
