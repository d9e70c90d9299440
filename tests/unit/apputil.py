# Helpers for the app/wifi/board tests: a fresh state directory, the host shims reset, and a
# machine stand-in whose WDT counts feeds and whose reset() raises (as the sim's does).
import os

import machine
import network
from smartbms import paths

_n = [0]


def _hex(b):
    return "".join("%02x" % x for x in b)


def fresh_root():
    """A new empty directory as paths.ROOT; the shims forget every pin and network."""
    _n[0] += 1
    d = "/tmp/smartbms_apptest_%s_%d" % (_hex(os.urandom(4)), _n[0])
    os.mkdir(d)
    paths.ROOT = d + "/"
    machine._reset_registry()
    machine.WDT_KILLS = False
    network.reset()
    network.CONNECT_DELAY_MS = 0
    return d


def files(d):
    return sorted(os.listdir(d))


class CountingWDT:
    instances = []

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.fed = 0
        CountingWDT.instances.append(self)

    def feed(self):
        self.fed += 1


class FakeMachine:
    """machine with the shim's Pin and a counting WDT; reset() raises SystemExit(75)."""
    Pin = machine.Pin
    WDT = CountingWDT
    RESET_EXIT = machine.RESET_EXIT

    def __init__(self, raises=True):
        self.resets = 0
        self.raises = raises  # False: only count (a SystemExit out of a CPython asyncio task
        #                       leaves the interpreter in a bad state)

    def reset(self):
        self.resets += 1
        if self.raises:
            raise SystemExit(machine.RESET_EXIT)


class FakeLink:
    """What the app reads from smartbms.bms.link.BMSLink."""

    def __init__(self, reading=None):
        self.latest = reading
        self.connected = reading is not None
        self.stats = {}
        self.reconfigured = 0
        self.radio = True

    def age_s(self):
        return 0

    def radio_up(self):
        return self.radio

    def reconfigure(self):
        self.reconfigured += 1

    async def scan(self):
        return [{"name": "SP04S034", "mac": "AA:BB:CC:DD:EE:01"}]

    async def run(self):
        pass
