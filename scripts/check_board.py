#!/usr/bin/env python3
"""Check the board definition: every file a MicroPython ESP32 board needs, the flash plan,
the settings the firmware relies on (size optimisation, rollback, relay start-up), and that
the C start-up hook and the frozen Python settings get the same relay pin and polarity.

    check_board.py boards/SMARTBMS [build/gen/board_config.py]
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_board_config  # noqa: E402
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
# lines that do nothing on this build and would only mislead a reader
SDKCONFIG_FORBIDDEN = (
    "CONFIG_ESP_TASK_WDT_PANIC",  # no task is subscribed to the task watchdog (sdkconfig.base)
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
    for name in SDKCONFIG_FORBIDDEN:
        if any(ln.split("=")[0].strip() == name for ln in sdk if not ln.startswith("#")):
            problems.append("sdkconfig.board sets %s, which has no effect on this build" % name)

    cmake = _read(os.path.join(board_dir, "mpconfigboard.cmake"))
    for needle in ("set(IDF_TARGET esp32)", "CONFIG_APP_PROJECT_VER_FROM_CONFIG=y",
                   "CONFIG_APP_PROJECT_VER=", "partitions.csv", "MICROPY_FROZEN_MANIFEST",
                   "board_init.c", "boards/sdkconfig.ble"):
        if needle not in cmake:
            problems.append("mpconfigboard.cmake lacks %s" % needle)
    if "SDKCONFIG_IDF_VERSION_SPECIFIC" in cmake:
        problems.append("mpconfigboard.cmake uses SDKCONFIG_IDF_VERSION_SPECIFIC (gone in MicroPython v1.28.0)")
    for needle in ("build/gen/board_config.py", 'REGEX "^RELAY_GPIO = "', '"^RELAY_GPIO = ([0-9]+)$"',
                   '"RELAY_ACTIVE_LOW = True"', '"RELAY_ACTIVE_LOW = False"',
                   "SMARTBMS_RELAY_GPIO=${SMARTBMS_RELAY_GPIO}",
                   "SMARTBMS_RELAY_ACTIVE_LOW=${SMARTBMS_RELAY_ACTIVE_LOW}"):
        if needle not in cmake:
            problems.append("mpconfigboard.cmake must take the relay from the generated module (lacks %s)" % needle)

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
        elif "SMARTBMS_RELAY_OFF_LEVEL" not in c_src or "SMARTBMS_RELAY_GPIO" not in c_src:
            problems.append("board_init.c does not drive the relay GPIO to its OFF level")
    for name in ("SMARTBMS_RELAY_GPIO", "SMARTBMS_RELAY_ACTIVE_LOW"):
        if re.search(r"#define\s+%s\b" % name, header):
            problems.append("mpconfigboard.h defines %s: it must come from the generated module only" % name)
    for name in ("MICROPY_HW_BOARD_NAME", "MICROPY_HW_MCU_NAME"):
        if name not in header:
            problems.append("mpconfigboard.h lacks %s" % name)

    manifest = _read(os.path.join(board_dir, "manifest.py"))
    for needle in ('include("$(PORT_DIR)/boards/manifest.py")', 'include("$(BOARD_DIR)/../../manifest.py")'):
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
        problems.append("manifest: the project manifest should only use package(), module() and require()")

    def require(name, **kwargs):  # micropython-lib packages: checked by the firmware build
        pass

    with open(manifest_path) as f:
        exec(f.read(), {"package": package, "module": module, "include": unsupported,
                        "require": require, "freeze": unsupported})
    if not any(p.endswith(os.path.join("build", "gen", "board_config.py")) for p in frozen):
        problems.append("manifest: build/gen/board_config.py (the relay the C hook latches) is not frozen")
    return problems


# mpconfigboard.cmake's reading of the generated module, line for line (file(STRINGS) with
# these REGEXes, then the exact True/False lines): what the C hook is compiled with
_CMAKE_GPIO = re.compile(r"^RELAY_GPIO = ([0-9]+)$")
_CMAKE_AL = {"RELAY_ACTIVE_LOW = True": True, "RELAY_ACTIVE_LOW = False": False}


def c_side(text):
    """(gpio, active_low) as mpconfigboard.cmake reads them from board_config.py, or None."""
    lines = text.splitlines()
    gpio = [ln for ln in lines if ln.startswith("RELAY_GPIO = ")]  # file(STRINGS ... REGEX)
    al = [ln for ln in lines if ln.startswith("RELAY_ACTIVE_LOW = ")]
    if len(gpio) != 1 or len(al) != 1:  # a cmake list: the REPLACE/STREQUAL below fail
        return None
    m = _CMAKE_GPIO.match(gpio[0])
    if not m or al[0] not in _CMAKE_AL:
        return None
    return int(m.group(1)), _CMAKE_AL[al[0]]


def python_side(path):
    """(gpio, active_low) as the frozen module gives them to smartbms.pins."""
    ns = {}
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), ns)
    return ns["RELAY_GPIO"], ns["RELAY_ACTIVE_LOW"]


def check_board_config(path):
    """The generated relay module: both sides read the same, safe values."""
    if not os.path.isfile(path):
        return ["%s is missing (make vendor writes it)" % path]
    problems = []
    c = c_side(_read(path))
    try:
        py = python_side(path)
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        return ["%s does not import: %s" % (path, e)]
    if c is None:
        problems.append("%s: mpconfigboard.cmake cannot read RELAY_GPIO/RELAY_ACTIVE_LOW from it" % path)
    elif c != py:
        problems.append("%s: the C hook would get %r but Python %r" % (path, c, py))
    problem = gen_board_config.pins_module().relay_problem(py[0])
    if problem:
        problems.append("%s: %s" % (path, problem))
    if type(py[1]) is not bool:
        problems.append("%s: RELAY_ACTIVE_LOW must be True or False" % path)
    return problems


def main(argv):
    board_dir = argv[0] if argv else "boards/SMARTBMS"
    problems = check(board_dir)
    top_manifest = os.path.join(board_dir, "..", "..", "manifest.py")
    if os.path.isfile(top_manifest):
        problems += check_manifest(top_manifest)
    config = argv[1] if len(argv) > 1 else os.path.join(board_dir, "..", "..", "build", "gen", "board_config.py")
    problems += check_board_config(config)
    for p in problems:
        print("board: %s" % p, file=sys.stderr)
    if problems:
        return 1
    parts = partition_table.parse_csv(_read(os.path.join(board_dir, "partitions.csv")))
    print("board %s: ok (%s)" % (board_dir, ", ".join("%s 0x%x+0x%x" % (p.name, p.offset, p.size) for p in parts)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
