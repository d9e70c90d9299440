# The board's own I/O: the status LED and the BOOT button (GPIO0, pulled up, low = pressed).
# BOOT pressed for _LONG_PRESS_MS any time after start -> setup mode. Not at power-on: GPIO0
# is a strapping pin, and held low at reset it starts the chip's ROM download mode, so the
# firmware never runs. The press and the LED patterns are timed in real milliseconds (a
# person presses and reads them; the simulator's fast device clock must not shorten them).
# LED patterns as (on, off, on, off, ...):
import time

from smartbms import clock
from smartbms.pins import BUTTON_GPIO

PATTERNS = {
    "setup": (100, 100),  # fast blink: access point + setup page
    "safe": (50, 100, 50, 100, 50, 900),  # triple flash: safe mode, relay off
    "fault": (200, 200, 200, 1400),  # double flash: charge fault or no BMS data
    "wifi": (1000, 1000),  # slow blink: charging runs, WiFi not connected
    "charging": (1900, 100),  # on with a short gap: relay on
    "idle": (50, 1950),  # heartbeat: all well, relay off
}


try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

BUTTON_PIN = BUTTON_GPIO
_LONG_PRESS_MS = const(3000)  # real time
POLL_MS = const(50)  # real time

try:
    _ticks_diff = time.ticks_diff  # wrap-safe on MicroPython
except AttributeError:  # CPython
    def _ticks_diff(a, b):
        return a - b


def pattern_for(app):
    if app.safe_mode:
        return "safe"
    if app.setup_mode:
        return "setup"
    state = app.controller.state
    if state == "fault" or state == "no_data":
        return "fault"
    if not app.wifi.connected:
        return "wifi"
    return "charging" if app.controller.relay else "idle"


class Board:
    def __init__(self, led_pin, on_long_press=None, machine=None):
        if machine is None:
            import machine
        self._m = machine
        self._button = machine.Pin(BUTTON_PIN, machine.Pin.IN, machine.Pin.PULL_UP)
        self._on_long_press = on_long_press
        self._pressed_at = None  # device ms when the current press began
        self._fired = False
        self.led = None
        self.set_led_pin(led_pin)
        self.pattern = None

    def set_led_pin(self, pin):
        if self.led is not None:
            self.led.value(0)
        self.led = self._m.Pin(pin, self._m.Pin.OUT, value=0) if pin is not None and pin >= 0 else None

    def poll_button(self, now_ms):
        """Debounce-free long-press detection (GPIO0 has an RC on dev boards); True when fired.
        `now_ms` is a real-time tick (clock.ticks_real_ms())."""
        if self._button.value() == 0:
            if self._pressed_at is None:
                self._pressed_at = now_ms
                self._fired = False
            elif not self._fired and _ticks_diff(now_ms, self._pressed_at) >= _LONG_PRESS_MS:
                self._fired = True
                if self._on_long_press is not None:
                    self._on_long_press()
                return True
        else:
            self._pressed_at = None
        return False

    async def run(self, app):
        step = 0
        left = 0
        name = None
        while True:
            self.poll_button(clock.ticks_real_ms())
            want = pattern_for(app)
            if want != name:
                name = want
                self.pattern = want
                step = 0
                left = 0
            if left <= 0:
                seq = PATTERNS[name]
                step %= len(seq)
                if self.led is not None:
                    self.led.value(1 if step % 2 == 0 else 0)
                left = seq[step]
                step += 1
            await clock.sleep_real_ms(POLL_MS)
            left -= POLL_MS
