#!/usr/bin/env bash
# Write the merged release image to a board over USB serial.
#   scripts/flash.sh PORT [ERASE]     (make flash PORT=/dev/ttyUSB0 [ERASE=1])
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${1:-}"
ERASE="${2:-}"
ESPTOOL="$ROOT/.venv/bin/esptool"
command -v "$ESPTOOL" >/dev/null 2>&1 || ESPTOOL=esptool
if [ -z "$PORT" ]; then
    echo "usage: make flash PORT=/dev/ttyUSB0 [ERASE=1]" >&2; exit 2
fi
shopt -s nullglob
images=("$ROOT"/dist/smartbms-*-esp32-4MB.bin)
if [ "${#images[@]}" -ne 1 ]; then
    echo "make flash: expected one dist/smartbms-*-esp32-4MB.bin (found ${#images[@]}); run 'make firmware' or download a release." >&2
    exit 2
fi
if [ "$ERASE" = "1" ]; then
    "$ESPTOOL" --chip esp32 --port "$PORT" erase-flash
fi
# The merged image starts with the bootloader, so it goes at 0x1000.
"$ESPTOOL" --chip esp32 --port "$PORT" --baud 460800 write-flash -z 0x1000 "${images[0]}"
