# The frozen entry point (modules/main.py), run with a stand-in app and machine: Ctrl-C on the
# serial console stops the firmware into the REPL with the relay off and the watchdog at 30 min;
# any other way out turns the relay off and resets, as before.
import sys

import smartbms
from apputil import fresh_root
from smartbms import overrides

MAIN = (__file__.rsplit("/", 1)[0] if "/" in __file__ else ".") + "/../../modules/main.py"


class Machine:
    class Pin:
        OUT = 1
        made = []

        def __init__(self, n, mode, value=None):
            Machine.Pin.made.append((n, mode, value))

    def __init__(self):
        Machine.Pin.made = []
        self.resets = 0
        self.wdt = []

    def WDT(self, id=0, timeout=5000):
        self.wdt.append(timeout)

    def reset(self):
        self.resets += 1


def _run_main(exc):
    """Run main.py with app.main() raising exc; returns (machine, exception out of main.py or None)."""
    async def fake_main(setup_mode=False):
        raise exc

    class FakeApp:
        main = fake_main

    fresh_root()
    m = Machine()
    saved_machine = sys.modules.get("machine")
    saved_app = smartbms.__dict__.get("app")
    sys.modules["machine"] = m
    smartbms.app = FakeApp
    out = None
    try:
        with open(MAIN) as f:
            src = f.read()
        try:
            exec(src, {"__name__": "__main__"})
        except BaseException as e:  # noqa: BLE001 - what main.py lets out is the result
            out = e
    finally:
        if saved_machine is not None:
            sys.modules["machine"] = saved_machine
        if saved_app is not None:
            smartbms.app = saved_app
        else:
            del smartbms.app
    return m, out


def test_ctrl_c_stops_into_the_repl_relay_off_watchdog_30_min():
    m, out = _run_main(KeyboardInterrupt())
    assert out is None  # main.py ends: the REPL follows
    assert m.resets == 0
    assert Machine.Pin.made == [(33, Machine.Pin.OUT, 1)]  # the default build: active low, OFF = 1
    assert m.wdt == [30 * 60 * 1000]
    assert overrides.loaded == ()  # nothing deployed under this test's root


def test_any_other_end_turns_the_relay_off_and_resets():
    m, out = _run_main(RuntimeError("boom"))
    assert m.resets == 1 and m.wdt == []
    assert Machine.Pin.made == [(33, Machine.Pin.OUT, 1)]
    assert type(out) is RuntimeError  # (the real reset never returns)
