# Which ESP32 GPIOs each role may use, and the relay pin and polarity this firmware was built
# with. Pure data, no hardware. "Safe" means safe on any ESP32 module with 4 MB of flash
# (WROOM-32/32D/32E, WROVER, PICO-D4):
#   0            BOOT button; held low at reset it starts the ROM download mode (no firmware)
#   1, 3         the serial console: they toggle while the chip boots
#   2, 5, 12, 15 strapping pins: a relay module's pull-up or pull-down on them changes how the
#                chip boots (12 high selects 1.8 V flash and the chip does not boot at all)
#   14           outputs a PWM signal during boot (SD/JTAG)
#   6-11         the SPI flash; 16, 17 the PSRAM (WROVER) or the flash (PICO-D4)
#   34-39        input-only; 20, 24, 28-31 do not exist
# The relay must stay off from power-on until the C start-up hook latches it, so it gets only
# pins that are quiet at reset; the LED may blink during boot, so it may use 2, 5, 14 and 15.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

RELAY_GPIOS = (4, 13, 18, 19, 21, 22, 23, 25, 26, 27, 32, 33)
LED_GPIOS = (2, 4, 5, 13, 14, 15, 18, 19, 21, 22, 23, 25, 26, 27, 32, 33)
BUTTON_GPIO = const(0)  # the BOOT button: never an output

# The relay pin and polarity the C start-up hook (boards/SMARTBMS/board_init.c) latches at
# power-on. Both come from one generated module (scripts/gen_board_config.py, run by
# `make vendor`), frozen into the firmware and read by mpconfigboard.cmake for the hook, so
# the two cannot disagree; the settings accept only these values.
DEFAULT_RELAY_GPIO = const(33)
DEFAULT_RELAY_ACTIVE_LOW = True
try:
    from board_config import RELAY_GPIO, RELAY_ACTIVE_LOW
except ImportError:  # host tools run from a source tree without build/gen
    RELAY_GPIO, RELAY_ACTIVE_LOW = DEFAULT_RELAY_GPIO, DEFAULT_RELAY_ACTIVE_LOW


def relay_problem(pin):
    """Why `pin` cannot drive the relay, or None."""
    if type(pin) is not int or pin not in RELAY_GPIOS:
        return "GPIO%s is not safe for the relay (allowed: %s)" % (pin, ", ".join(str(p) for p in RELAY_GPIOS))
    return None
