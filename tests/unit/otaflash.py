# Test helper (both runtimes): a fresh simulated 4 MB flash file with the partition table
# and an app image in ota_0, wired into the esp32 shim.
import os
import sys

if sys.implementation.name != "micropython" and "sim/shims" not in "".join(sys.path):
    # pytest: the shims live outside the package path (the unix-port runner has them)
    sys.path.insert(0, __file__.rsplit("/tests/", 1)[0] + "/sim/shims")
import esp32  # noqa: E402
import esp_image  # noqa: E402

DIR = "build/test-ota"
SLOT = 0x1D0000
OTA0 = 0x10000
OTA1 = 0x1E0000


def _mkdir(p):
    parts = p.split("/")
    for i in range(1, len(parts) + 1):
        try:
            os.mkdir("/".join(parts[:i]))
        except OSError:
            pass


def fresh(name, version="0.1.0", app_size=16 * 1024):
    # one file per runtime, rewritten by every test (`name` only documents the caller)
    _mkdir(DIR)
    path = DIR + "/flash-" + sys.implementation.name + ".bin"
    blank = b"\xff" * 65536
    with open(path, "wb") as f:
        for _ in range(0x400000 // 65536):
            f.write(blank)
        f.seek(0x8000)
        f.write(esp_image._table_binary())
        f.seek(OTA0)
        f.write(esp_image.app_image(version, app_size))
    esp32.configure(path, "ota_0")
    return path


def write_slot(path, addr, data):
    with open(path, "r+b") as f:
        f.seek(addr)
        f.write(data)
