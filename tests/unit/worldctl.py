# The unit tests' hold on the simulated world (sim/world/): BMS peers and plain peripherals
# on the air, their behaviour knobs, the button, WiFi. Only on the unix-port run
# (tests/run_unix_tests.py starts the world); elsewhere the test is skipped.
from testutil import skip


def link():
    try:
        import worldlink
    except ImportError:
        worldlink = None
    w = worldlink.get() if worldlink is not None else None
    if w is None:
        skip("needs the simulated world (BLE tests run on the unix port: make test-mpy)")
    return w


def call(op, **kw):
    kw["op"] = op
    return link().control(kw)


def reset():
    """No peer on the air; every link the last test left is dropped."""
    call("clear_peers")


def add_bms(protocol, **kw):
    return call("add_bms", protocol=protocol, **kw)


def add_peer(mac, name, services, **kw):
    return call("add_peer", mac=mac, name=name, services=services, **kw)


def peer(mac):
    return call("peer_info", mac=mac)


def set_peer(mac, **knobs):
    return call("set_peer", mac=mac, **knobs)


def status():
    return call("status")
