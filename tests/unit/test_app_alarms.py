# The app's side of the charge alarms (issue 12): alarms reach the event log when raised and
# when they end, the BMS charge MOSFET is the second cut-off of a stuck relay where the link
# can switch it, and clearing restores it (both runtimes).
import asyncio

from apputil import FakeLink, FakeMachine, fresh_root
from smartbms import app as app_mod
from smartbms import clock
from smartbms.bms.jbd import Driver as JBD
from testutil import run_async
from ctrlutil import R


class FetLink(FakeLink):
    """A link that can send the charge MOSFET command (what BMSLink.set_charge_fet will do)."""

    def __init__(self, reading=None):
        super().__init__(reading)
        self.driver = JBD()
        self.sent = []

    async def set_charge_fet(self, on):
        self.sent.append(on)


def _app(link):
    a = app_mod.App(machine=FakeMachine(True), log=lambda *x: None)
    a.link = link
    return a


def _stuck_relay(a, link):
    """A full charge, then charge current with the relay off for longer than the stuck-relay
    time, ending at the device clock's present."""
    c = a.controller
    t0 = clock.now() - 800
    c.update(R(soc=100, current=20.0), t0)
    c.update(R(soc=100, current=2.0), t0 + 100)  # tail current: resting, relay off
    assert c.state == "resting" and c.relay is False
    r = R(soc=100, current=20.0, received=t0 + 105)
    link.latest = r
    for k in range(130):
        r.received = t0 + 105 + 5 * k
        c.update(r, t0 + 105 + 5 * k)
    r.received = clock.now()


def test_a_stuck_relay_switches_the_bms_mosfet_off_and_clearing_restores_it():
    fresh_root()
    link = FetLink()
    a = _app(link)

    async def main():
        _stuck_relay(a, link)
        a.control_step()
        await asyncio.sleep(0)
        assert link.sent == [False]
        assert a.controller.fet_control is True
        msgs = [e["msg"] for e in a.events.recent(20)]
        assert any(m.startswith("alarm relay_stuck: relay stuck: 20.0 A") for m in msgs), msgs
        assert "BMS charge MOSFET switched off as a second cut-off (relay stuck)" in msgs
        link.latest = R(soc=100, current=0.0, charge_fet=False, received=clock.now())
        cleared = a.clear_alarms()
        await asyncio.sleep(0)
        assert cleared == ["relay_stuck"] and link.sent == [False, True]
        msgs = [e["msg"] for e in a.events.recent(20)]
        assert "alarm relay_stuck ended" in msgs and "alarms cleared by the user: relay_stuck" in msgs

    run_async(main())


def test_a_link_without_the_command_says_to_disconnect_by_hand():
    fresh_root()
    link = FakeLink()
    a = _app(link)
    _stuck_relay(a, link)
    a.control_step()
    assert a.controller.fet_control is False
    msgs = [e["msg"] for e in a.events.recent(20)]
    assert any("disconnect the charger by hand" in m for m in msgs)
    a.control_step()  # the texts follow what the link can do
    assert a.controller.next.startswith("this BMS cannot switch its charge MOSFET")
