#!/usr/bin/env bash
# Build the smartbms ESP32 firmware and write the release files to dist/.
#
#   scripts/build_firmware.sh            build with the ESP-IDF in this shell (IDF_PATH, export.sh)
#   scripts/build_firmware.sh --docker   build inside the espressif/idf image of the pinned version
#   scripts/build_firmware.sh --check    say whether a build is possible here, and why not
#
# Inputs: IDF_PATH (ESP-IDF, exported environment), MPY_DIR (a MicroPython tree at the pinned
# tag; cloned into build/micropython when unset and the network allows), and
# build/gen/board_config.py (the relay GPIO and polarity: `make firmware RELAY_GPIO=..
# RELAY_ACTIVE_LOW=..` writes it; mpconfigboard.cmake reads it for the C start-up hook).
# Outputs in dist/: smartbms-VERSION-esp32-4MB.bin (merged image, flash at 0x1000),
# smartbms-VERSION-ota.bin (the app image to push over OTA), SHA256SUMS.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
pin() { sed -n "s/^$1 := //p" "$ROOT/versions.mk" | head -n1; }
MPY_VERSION="$(pin MICROPYTHON_VERSION)"
IDF_VERSION="$(pin IDF_VERSION)"
IDF_IMAGE="espressif/idf:$IDF_VERSION"
VERSION="$(sed -n 's/^VERSION = "\(.*\)"/\1/p' "$ROOT/modules/smartbms/version.py")"
BOARD_DIR="$ROOT/boards/SMARTBMS"
DIST="$ROOT/dist"
MODE="${1:-build}"

idf_problem() {
    if [ -z "${IDF_PATH:-}" ]; then
        echo "ESP-IDF is not installed here (IDF_PATH is not set)"; return
    fi
    if ! command -v idf.py >/dev/null 2>&1; then
        echo "idf.py is not on PATH (run '. \$IDF_PATH/export.sh' first)"; return
    fi
    local have
    have="$(idf.py --version 2>/dev/null | grep -o 'v[0-9][0-9.]*' | head -n1 || true)"
    if [ "$have" != "$IDF_VERSION" ]; then
        echo "ESP-IDF $have found, but this firmware is pinned to $IDF_VERSION"; return
    fi
}

case "$MODE" in
--check)
    problem="$(idf_problem)"
    if [ -n "$problem" ]; then
        echo "firmware build: SKIPPED - $problem."
        echo "  Needs ESP-IDF $IDF_VERSION and MicroPython $MPY_VERSION: 'make firmware' with IDF_PATH exported,"
        echo "  'make firmware-docker' with Docker, or the GitHub workflow (.github/workflows/firmware.yml)."
    else
        echo "firmware build: possible here (ESP-IDF $IDF_VERSION); run 'make firmware'."
    fi
    exit 0
    ;;
--docker)
    if ! docker info >/dev/null 2>&1; then
        echo "make firmware-docker: no Docker engine is reachable ('docker info' failed)." >&2
        echo "  Install Docker, or use 'make firmware' with ESP-IDF $IDF_VERSION installed." >&2
        exit 2
    fi
    MPY_DIR="${MPY_DIR:-$ROOT/build/micropython}"
    if [ ! -d "$MPY_DIR/ports/esp32" ]; then
        mkdir -p "$(dirname "$MPY_DIR")"
        git clone --depth 1 --branch "$MPY_VERSION" https://github.com/micropython/micropython.git "$MPY_DIR"
    fi
    exec docker run --rm -u "$(id -u):$(id -g)" -e HOME=/tmp \
        -v "$ROOT:/project" -v "$(cd "$MPY_DIR" && pwd):/micropython" -w /project \
        "$IDF_IMAGE" bash -c "git config --global --add safe.directory '*' && MPY_DIR=/micropython scripts/build_firmware.sh"
    ;;
build) ;;
*)
    echo "usage: $0 [--check|--docker]" >&2; exit 2 ;;
esac

problem="$(idf_problem)"
if [ -n "$problem" ]; then
    echo "make firmware: cannot build here: $problem." >&2
    echo "  Install ESP-IDF $IDF_VERSION (https://docs.espressif.com/projects/esp-idf/en/$IDF_VERSION/esp32/get-started/)," >&2
    echo "  run '. \$IDF_PATH/export.sh', then 'make firmware' again; or 'make firmware-docker'." >&2
    exit 2
fi
case "$ROOT" in *" "*) echo "make firmware: the project path must not contain spaces ($ROOT)" >&2; exit 2 ;; esac
for need in build/vendor/microdot build/gen/board_config.py; do
    if [ ! -e "$ROOT/$need" ]; then
        echo "make firmware: $need is missing; run 'make vendor' (make firmware does it)." >&2
        exit 2
    fi
done

MPY_DIR="${MPY_DIR:-$ROOT/build/micropython}"
if [ ! -d "$MPY_DIR/ports/esp32" ]; then
    echo "== cloning MicroPython $MPY_VERSION into $MPY_DIR"
    mkdir -p "$(dirname "$MPY_DIR")"
    git clone --depth 1 --branch "$MPY_VERSION" https://github.com/micropython/micropython.git "$MPY_DIR"
fi
have_tag="$(git -C "$MPY_DIR" describe --tags --exact-match 2>/dev/null || echo unknown)"
if [ "$have_tag" != "$MPY_VERSION" ]; then
    echo "make firmware: $MPY_DIR is at '$have_tag', not the pinned $MPY_VERSION." >&2
    exit 2
fi

RELAY="$(sed -n 's/^RELAY_GPIO = //p; s/^RELAY_ACTIVE_LOW = //p' "$ROOT/build/gen/board_config.py" | paste -sd/)"
echo "== building smartbms $VERSION: MicroPython $MPY_VERSION, ESP-IDF $IDF_VERSION, relay GPIO/active-low $RELAY"
make -C "$MPY_DIR/mpy-cross"
# ESP-IDF keeps an existing build directory's sdkconfig over the defaults files, so a reused
# directory would silently ignore edits to sdkconfig.board, the version or the relay: one
# directory per content of everything the configuration is made from.
CONFIG_HASH="$(cat "$BOARD_DIR"/* "$ROOT/build/gen/board_config.py" "$ROOT/modules/smartbms/version.py" \
    | sha256sum | cut -c1-12)"
BUILD="build-SMARTBMS-$VERSION-$CONFIG_HASH"
make -C "$MPY_DIR/ports/esp32" BOARD_DIR="$BOARD_DIR" BUILD="$BUILD" submodules
# makeimg.py fails this step when the app does not fit its OTA slot.
make -C "$MPY_DIR/ports/esp32" BOARD_DIR="$BOARD_DIR" BUILD="$BUILD"

OUT="$MPY_DIR/ports/esp32/$BUILD"
mkdir -p "$DIST"
rm -f "$DIST"/smartbms-*.bin "$DIST/SHA256SUMS"
cp "$OUT/firmware.bin" "$DIST/smartbms-$VERSION-esp32-4MB.bin"
cp "$OUT/micropython.bin" "$DIST/smartbms-$VERSION-ota.bin"

# Belt and braces: the app must fit its slot and carry our version in its descriptor.
python3 - "$ROOT/scripts" "$DIST/smartbms-$VERSION-ota.bin" "$BOARD_DIR/partitions.csv" "$VERSION" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import partition_table
img, csv, version = sys.argv[2], sys.argv[3], sys.argv[4]
size = len(open(img, "rb").read())
slot = [p for p in partition_table.parse_csv(open(csv).read()) if p.subtype == "ota_0"][0].size
print("app image: %d bytes of a 0x%x slot (%.0f%% used, %d KB free)" % (size, slot, 100.0 * size / slot, (slot - size) // 1024))
if size > slot:
    sys.exit("app image does not fit its OTA slot")
data = open(img, "rb").read(0x100 + 24 + 8)
desc = data[24 + 8:]
if desc[:4] != bytes.fromhex("3254cdab"):
    sys.exit("no app descriptor in the image")
got = desc[16:48].split(b"\0")[0].decode()
if got != version:
    sys.exit("app descriptor version is %r, expected %r" % (got, version))
print("app descriptor version: %s" % got)
PY
(cd "$DIST" && sha256sum smartbms-*.bin > SHA256SUMS)
echo "== dist/:"; ls -l "$DIST"; cat "$DIST/SHA256SUMS"
