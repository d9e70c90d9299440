#!/usr/bin/env python3
"""Check the board definition: every file a MicroPython ESP32 board needs, the flash plan,
and the settings the firmware relies on (size optimisation, rollback, relay start-up).

    check_board.py boards/SMARTBMS
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import partition_table  # noqa: E402

REQUIRED_FILES = ("mpconfigboard.cmake", "mpconfigboard.h", "sdkconfig.board", "partitions.csv",
                  "manifest.py", "board_init.c")

SDKCONFIG_REQUIRED = (
    "CONFIG_COMPILER_OPTIMIZATION_SIZE=y",
    "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y",
    "CONFIG_PARTITION_TABLE_CUSTOM=y",
    "CONFIG_ESPTOOLPY_FLASHSIZE_4MB=y",
    "CONFIG_APP_EXCLUDE_PROJECT_VER_VAR=n",
)


def _read(path):
    with open(path) as f:
        return f.read()


def check(board_dir):
    problems = []
    for name in REQUIRED_FILES:
        if not os.path.isfile(os.path.join(board_dir, name)):
            problems.append("missing %s" % name)
    if problems:
        return problems

    try:
        parts = partition_table.parse_csv(_read(os.path.join(board_dir, "partitions.csv")))
        problems += partition_table.check_plan(parts)
    except partition_table.TableError as e:
        problems.append("partitions.csv: %s" % e)

    sdk = _read(os.path.join(board_dir, "sdkconfig.board")).splitlines()
    for line in SDKCONFIG_REQUIRED:
        if line not in sdk:
            problems.append("sdkconfig.board lacks %s" % line)

    cmake = _read(os.path.join(board_dir, "mpconfigboard.cmake"))
    for needle in ("set(IDF_TARGET esp32)", "CONFIG_APP_PROJECT_VER_FROM_CONFIG=y",
                   "CONFIG_APP_PROJECT_VER=", "partitions.csv", "MICROPY_FROZEN_MANIFEST",
                   "board_init.c", "boards/sdkconfig.ble"):
        if needle not in cmake:
            problems.append("mpconfigboard.cmake lacks %s" % needle)

    header = _read(os.path.join(board_dir, "mpconfigboard.h"))
    m = re.search(r"#define\s+MICROPY_BOARD_STARTUP\s+(\w+)", header)
    if not m:
        problems.append("mpconfigboard.h does not define MICROPY_BOARD_STARTUP")
    else:
        c_src = _read(os.path.join(board_dir, "board_init.c"))
        if not re.search(r"void\s+%s\s*\(void\)\s*\{" % m.group(1), c_src):
            problems.append("board_init.c does not define %s" % m.group(1))
        elif "boardctrl_startup()" not in c_src:
            problems.append("board_init.c must call boardctrl_startup()")
        elif "SMARTBMS_RELAY_OFF_LEVEL" not in c_src:
            problems.append("board_init.c does not drive the relay to its OFF level")
    if not re.search(r"#define\s+SMARTBMS_RELAY_GPIO\s+\(33\)", header):
        problems.append("mpconfigboard.h: relay GPIO must be 33")
    for name in ("MICROPY_HW_BOARD_NAME", "MICROPY_HW_MCU_NAME"):
        if name not in header:
            problems.append("mpconfigboard.h lacks %s" % name)

    manifest = _read(os.path.join(board_dir, "manifest.py"))
    for needle in ('include("$(PORT_DIR)/boards/manifest.py")', 'require("aioble")', "manifest.py"):
        if needle not in manifest:
            problems.append("board manifest.py lacks %s" % needle)
    return problems


def check_manifest(manifest_path):
    """Evaluate the project's frozen manifest the way MicroPython's manifestfile.py does
    (paths relative to the manifest) and report every file it names that does not exist."""
    base = os.path.dirname(os.path.abspath(manifest_path))
    problems, frozen = [], []

    def package(name, files=None, base_path=".", opt=None):
        root = os.path.join(base, base_path)
        if files is None:
            if not os.path.isdir(os.path.join(root, name)):
                problems.append("manifest: package %s not found under %s" % (name, base_path))
            return
        for f in files:
            module(os.path.join(name, f), base_path)

    def module(name, base_path=".", opt=None):
        path = os.path.join(base, base_path, name)
        if not os.path.isfile(path):
            problems.append("manifest: %s not found under %s" % (name, base_path))
        frozen.append(path)

    def unsupported(*args, **kwargs):
        problems.append("manifest: the project manifest should only use package() and module()")

    with open(manifest_path) as f:
        exec(f.read(), {"package": package, "module": module, "include": unsupported,
                        "require": unsupported, "freeze": unsupported})
    return problems


def main(argv):
    board_dir = argv[0] if argv else "boards/SMARTBMS"
    problems = check(board_dir)
    top_manifest = os.path.join(board_dir, "..", "..", "manifest.py")
    if os.path.isfile(top_manifest):
        problems += check_manifest(top_manifest)
    for p in problems:
        print("board: %s" % p, file=sys.stderr)
    if problems:
        return 1
    parts = partition_table.parse_csv(_read(os.path.join(board_dir, "partitions.csv")))
    print("board %s: ok (%s)" % (board_dir, ", ".join("%s 0x%x+0x%x" % (p.name, p.offset, p.size) for p in parts)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
