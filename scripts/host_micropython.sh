#!/usr/bin/env bash
# Build the host interpreter: MicroPython's unix port at the firmware's own pinned version,
# 32-bit (as the ESP32's objects and heap are), with the firmware frozen from the same
# manifest the board freezes (plus the host hardware shims, see sim/unix_variant/).
#
#   scripts/host_micropython.sh OUT     build (or rebuild when frozen sources changed) OUT
#
# Source: build/micropython-src, MicroPython MICROPYTHON_VERSION with lib/micropython-lib at
# MICROPYTHON_LIB_COMMIT. It comes from ../shared/micropython (SHA-256 checked) on machines
# without GitHub, otherwise from a git clone of the tag. A 32-bit build needs gcc-multilib;
# where it is impossible (macOS, no multilib) SMARTBMS_HOST_64BIT=1 builds 64-bit and the
# memory checks then report themselves skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:?usage: $0 OUT}"
pin() { sed -n "s/^$1 := //p" "$ROOT/versions.mk" | head -n1; }
MPY_VERSION="$(pin MICROPYTHON_VERSION)"
MPY_COMMIT="$(pin MICROPYTHON_COMMIT)"
LIB_COMMIT="$(pin MICROPYTHON_LIB_COMMIT)"
TARBALL_SHA="$(pin MICROPYTHON_HOST_TARBALL_SHA256)"
SRC="$ROOT/build/micropython-src"
SHARED="${SMARTBMS_SHARED:-$ROOT/../shared}/micropython/micropython-${MPY_VERSION#v}-host.tar.xz"

fetch() {
    [ -f "$SRC/.fetched-$MPY_COMMIT-$LIB_COMMIT" ] && return
    rm -rf "$SRC" "$SRC.tmp" && mkdir -p "$SRC.tmp"
    if [ -f "$SHARED" ]; then
        echo "host micropython: source from $SHARED"
        have="$(sha256sum "$SHARED" | cut -d' ' -f1)"
        if [ "$have" != "$TARBALL_SHA" ]; then
            echo "host micropython: $SHARED has SHA-256 $have, expected $TARBALL_SHA" >&2; exit 2
        fi
        tar -xJf "$SHARED" -C "$SRC.tmp" --strip-components=1
    else
        echo "host micropython: cloning $MPY_VERSION from GitHub"
        git clone -q --depth 1 --branch "$MPY_VERSION" https://github.com/micropython/micropython.git "$SRC.tmp"
        [ "$(git -C "$SRC.tmp" rev-parse HEAD)" = "$MPY_COMMIT" ] \
            || { echo "host micropython: tag $MPY_VERSION is not commit $MPY_COMMIT" >&2; exit 2; }
        git -C "$SRC.tmp" submodule update -q --init --depth 1 lib/micropython-lib
        [ "$(git -C "$SRC.tmp/lib/micropython-lib" rev-parse HEAD)" = "$LIB_COMMIT" ] \
            || { echo "host micropython: micropython-lib is not at $LIB_COMMIT" >&2; exit 2; }
    fi
    [ -f "$SRC.tmp/lib/micropython-lib/micropython/bluetooth/aioble/manifest.py" ] \
        || { echo "host micropython: the source has no micropython-lib/aioble" >&2; exit 2; }
    touch "$SRC.tmp/.fetched-$MPY_COMMIT-$LIB_COMMIT"
    mv "$SRC.tmp" "$SRC"
}

# one build at a time in this tree (parallel `make` runs share build/)
mkdir -p "$ROOT/build"
exec 9>"$ROOT/build/.host-micropython.lock"
flock 9
fetch
BITS=32
FLAGS=(MICROPY_FORCE_32BIT=1 MPY_CROSS_FLAGS=-march=x86)  # native code (ota/_xor_native) for the host CPU
if [ "${SMARTBMS_HOST_64BIT:-0}" = 1 ]; then
    BITS=64; FLAGS=(MPY_CROSS_FLAGS=-march=x64)
elif ! echo 'int main(void){return 0;}' | gcc -m32 -x c - -o /dev/null 2>/dev/null; then
    echo "host micropython: no 32-bit C toolchain (Debian: apt-get install gcc-multilib)." >&2
    echo "  Install it, or build 64-bit with SMARTBMS_HOST_64BIT=1 (memory checks are then skipped)." >&2
    exit 2
fi
JOBS="$(nproc 2>/dev/null || echo 2)"
make -s -C "$SRC/mpy-cross" -j"$JOBS" >/dev/null
# the frozen manifest reads build/gen and build/vendor through these paths
make -s -C "$SRC/ports/unix" -j"$JOBS" VARIANT_DIR="$ROOT/sim/unix_variant" BUILD="$ROOT/build/host-unix-$BITS" \
    "${FLAGS[@]}" MICROPY_PY_SSL=0 MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 \
    MPY_LIB_DIR="$SRC/lib/micropython-lib" >"$ROOT/build/host-unix-$BITS.log" 2>&1 \
    || { tail -30 "$ROOT/build/host-unix-$BITS.log" >&2; exit 2; }
mkdir -p "$(dirname "$OUT")"
cp "$ROOT/build/host-unix-$BITS/micropython" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "$BITS" > "$OUT.bits"
"$OUT" -c "import sys; print('host micropython: %s %d-bit, frozen firmware, at %s' % (sys.implementation.version[:3], 32 if sys.maxsize == 2**31 - 1 else 64, '$OUT'))"
