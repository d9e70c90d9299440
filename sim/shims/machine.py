# Host-only stand-in for MicroPython's `machine` on the ESP32 (never frozen). It shadows the
# unix port's built-in `machine`, which has no Pin.
#
# Pin keeps a host-side registry so tests can read outputs (the relay) and drive inputs (the
# BOOT button) in-process:  machine.pin(33).value()  /  machine.pin(0).sim_drive(0)
#   on_change(pin_id, fn): fn(level) whenever an output's level changes.
# With a world (SIM_WORLD, see worldlink.py), every output level also goes to the world
# (the relay module there drives the charger) and the world drives the inputs (the button).
# WDT(timeout=ms): a watchdog thread kills the process (SIGKILL) when feed() stops arriving.
#   The timeout is scaled by the device clock speed (smartbms.clock.speed()), as the
#   firmware feeds it on device time, but never below WDT_MIN_REAL_MS of real time so host
#   hiccups (GC, a slow request) do not trip it. A SIGKILLed child = a watchdog reset.
# reset(): raises SystemExit(RESET_EXIT); sim_main lets it end the process with that code,
#   which the supervisor (scripts/run_sim.py) turns into a restart, as the chip reboots.
# RTC().memory() survives such a restart: it is kept in SIM_DIR/rtc_memory.bin.
import os

try:
    import worldlink
except ImportError:  # pragma: no cover
    worldlink = None

try:
    import _thread
except ImportError:  # pragma: no cover
    _thread = None

try:
    from time import ticks_add, ticks_diff, ticks_ms, sleep_ms
except ImportError:  # CPython (host tests)
    import time as _t

    def ticks_ms():
        return int(_t.monotonic() * 1000)

    def ticks_add(a, b):
        return a + b

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        _t.sleep(ms / 1000)

RESET_EXIT = 75  # process exit code meaning "the device reset itself"
WDT_MIN_REAL_MS = 5000
WDT_KILLS = os.getenv("SIM_WDT") != "0"  # tests in-process set this False

# reset causes (values as on the ESP32 port)
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

IRQ_FALLING = 2
IRQ_RISING = 1

_pins = {}
_listeners = {}


def _sim_dir():
    return os.getenv("SIM_DIR") or "build/sim"


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_FALLING = IRQ_FALLING
    IRQ_RISING = IRQ_RISING

    def __new__(cls, id, *args, **kwargs):
        p = _pins.get(id)
        if p is None:
            p = object.__new__(cls)
            p.id = id
            p.mode = None
            p.pull = None
            p._level = None  # what the firmware drives (outputs)
            p._external = None  # what the outside world drives (inputs)
            p._irq = None
            _pins[id] = p
            _world()
        return p

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            self.mode = mode
        if pull != -1:
            self.pull = pull
        if value is not None:
            self.value(value)

    def _read(self):
        if self.mode == Pin.OUT or self.mode == Pin.OPEN_DRAIN:
            return self._level or 0
        if self._external is not None:
            return self._external
        return 0 if self.pull == Pin.PULL_DOWN else 1 if self.pull == Pin.PULL_UP else 0

    def value(self, v=None):
        if v is None:
            return self._read()
        v = 1 if v else 0
        old = self._level
        self._level = v
        if old != v:
            _to_world(self.id, v)
            for fn in _listeners.get(self.id, ()):
                fn(v)

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3):
        self._irq = (handler, trigger) if handler else None

    # ---- host side ----
    def sim_drive(self, level):
        """The outside world drives this input (e.g. the button pulls GPIO0 low)."""
        old = self._read()
        self._external = None if level is None else (1 if level else 0)
        new = self._read()
        if self._irq and old != new:
            handler, trigger = self._irq
            if trigger & (IRQ_FALLING if new == 0 else IRQ_RISING):
                handler(self)

    def __repr__(self):
        return "Pin(%s)" % self.id


def pin(id):
    """The Pin object for `id` (host side), creating it if the firmware has not yet."""
    return Pin(id)


def _world():
    link = worldlink.get() if worldlink is not None else None
    if link is not None and worldlink.EV_PIN not in link.handlers:
        link.handlers[worldlink.EV_PIN] = _from_world
        for p, level in link.inputs.items():  # what the world held before we listened
            _from_world(bytes((p, 0xFF if level is None else level)))
    return link


def _to_world(pin_id, level):
    link = _world()
    if link is not None and isinstance(pin_id, int) and 0 <= pin_id < 0xFF:
        link.call(0x10, bytes((pin_id, level)))


def _from_world(data):
    """The world drives an input (0xFF: released)."""
    Pin(data[0]).sim_drive(None if data[1] == 0xFF else data[1])


def on_change(pin_id, fn):
    _listeners.setdefault(pin_id, []).append(fn)


def _reset_registry():
    """Forget every pin, listener and the watchdog (tests)."""
    _pins.clear()
    _listeners.clear()
    WDT._active = None


class WDT:
    _active = None

    def __init__(self, id=0, timeout=5000):
        if WDT._active is not None:
            WDT._active.timeout_ms = timeout  # the ESP32 port reconfigures the one watchdog
            WDT._active.feed()
            return
        self.timeout_ms = timeout
        self.fed = 0
        self._deadline = 0
        self.feed()
        WDT._active = self
        if WDT_KILLS and _thread is not None:
            _thread.start_new_thread(self._watch, ())

    def _real_timeout_ms(self):
        try:
            from smartbms import clock

            speed = clock.speed()
        except ImportError:
            speed = 1
        return max(WDT_MIN_REAL_MS, self.timeout_ms // speed)

    def feed(self):
        self.fed += 1
        self._deadline = ticks_add(ticks_ms(), self._real_timeout_ms())

    def _watch(self):
        while WDT._active is self:
            sleep_ms(100)
            if WDT_KILLS and ticks_diff(ticks_ms(), self._deadline) > 0:
                print("machine.WDT: not fed for %d ms: watchdog reset" % self._real_timeout_ms())
                _note_cause(WDT_RESET)
                # Nothing in the unix port ends the whole process from a thread; a shell's
                # parent ($PPID) is this process.
                os.system("kill -KILL $PPID")
                return


def _cause_file():
    return _sim_dir() + "/reset_cause"


def _note_cause(cause):
    try:
        with open(_cause_file(), "w") as f:
            f.write(str(cause))
    except OSError:
        pass


def reset_cause():
    try:
        with open(_cause_file()) as f:
            return int(f.read() or PWRON_RESET)
    except (OSError, ValueError):
        return PWRON_RESET


def reset():
    """Hard reset: the process ends with RESET_EXIT and the supervisor starts it again."""
    _note_cause(HARD_RESET)
    raise SystemExit(RESET_EXIT)


def soft_reset():
    _note_cause(SOFT_RESET)
    raise SystemExit(RESET_EXIT)


def unique_id():
    # the simulated chip's base MAC (the ESP32 returns its 6-byte MAC here)
    return b"\x24\x0a\xc4\x5b\xe1\x7c"


_freq = [160000000]


def freq(hz=None):
    if hz is None:
        return _freq[0]
    _freq[0] = hz


def idle():
    pass


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


class RTC:
    """datetime() is the host's wall clock; memory() persists in SIM_DIR/rtc_memory.bin,
    as the ESP32's RTC slow memory survives a soft/hard reset (not a power cut)."""

    def _path(self):
        return _sim_dir() + "/rtc_memory.bin"

    def memory(self, data=None):
        if data is None:
            try:
                with open(self._path(), "rb") as f:
                    return f.read()
            except OSError:
                return b""
        if len(data) > 2048:
            raise ValueError("RTC memory holds at most 2048 bytes")
        with open(self._path(), "wb") as f:
            f.write(bytes(data))

    def datetime(self, dt=None):
        import time

        if dt is not None:
            return  # the host clock stays as it is
        t = time.localtime()
        return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)

    def init(self, dt=None):
        self.datetime(dt)


def _clear_cause():
    """sim_main calls this once the boot read the cause: the next restart reports its own."""
    try:
        os.remove(_cause_file())
    except OSError:
        pass

