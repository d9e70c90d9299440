# The board's own I/O: the status LED and the BOOT button (GPIO0, pulled up, low = pressed).
# BOOT held at power-on or pressed for LONG_PRESS_MS (device time) -> setup mode.
# LED patterns are in real milliseconds (a person reads them), as (on, off, on, off, ...):
import asyncio

from smartbms import clock

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

BUTTON_PIN = const(0)
LONG_PRESS_MS = const(3000)
POLL_MS = const(50)  # real time


def button_held_at_boot(machine=None, samples=5):
    """True when GPIO0 reads low on every one of `samples` reads (debounced)."""
    if machine is None:
        import machine
    pin = machine.Pin(BUTTON_PIN, machine.Pin.IN, machine.Pin.PULL_UP)
    for _ in range(samples):
        if pin.value():
            return False
    return True


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
        """Debounce-free long-press detection (GPIO0 has an RC on dev boards); True when fired."""
        if self._button.value() == 0:
            if self._pressed_at is None:
                self._pressed_at = now_ms
                self._fired = False
            elif not self._fired and now_ms - self._pressed_at >= LONG_PRESS_MS:
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
            self.poll_button(clock.now_ms())
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
