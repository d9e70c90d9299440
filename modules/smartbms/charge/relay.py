# The charger relay. The board's C start-up hook already holds the pin at its OFF level;
# this driver takes over without a glitch (the level is latched before the pin becomes an
# output) and logs every change of state with the reason for it.
from smartbms import clock


def _machine_pin(number, level):
    from machine import Pin  # imported here so the module loads on the host

    # MicroPython's ESP32 Pin() sets `value` before switching the pin to output
    return Pin(number, Pin.OUT, value=level)


class Relay:
    def __init__(self, pin=33, active_low=True, log=None, pin_factory=None):
        """`pin_factory(number, level)` returns an object with `value([v])`, already driving
        `level`; the default uses machine.Pin. `log` is an EventLog or a callable
        (kind, message)."""
        self.pin = pin
        self.active_low = bool(active_low)
        self._log = log
        self._on = False
        self.reason = "start"
        self.since = clock.now()
        self.changes = 0
        self._pin = (pin_factory or _machine_pin)(pin, self._level(False))
        self._pin.value(self._level(False))

    def _level(self, on):
        return 0 if on == self.active_low else 1

    @property
    def on(self):
        return self._on

    def level(self):
        """The level the pin actually has (for diagnostics)."""
        return self._pin.value()

    def set(self, on, reason=""):
        """Drive the relay; returns True when its state changed (and was logged)."""
        on = bool(on)
        # re-drive the pin on every call: cheap, and it repairs a level disturbed by EMI
        self._pin.value(self._level(on))
        if on == self._on:
            return False
        self._on = on
        self.reason = reason
        self.since = clock.now()
        self.changes += 1
        msg = ("on: " if on else "off: ") + (reason or "no reason given")
        lg = self._log
        if lg is not None:
            if hasattr(lg, "add"):
                lg.add("relay", msg)
            else:
                lg("relay", msg)
        return True

    def off(self, reason):
        """Safety stop."""
        return self.set(False, reason)
