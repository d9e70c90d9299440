# smartbms: keeps a LiFePO4 battery healthy by switching its charger from live BMS data.
from smartbms.version import VERSION

__version__ = VERSION


def unload(names):
    """Forget modules loaded for a while, so their objects can be collected (a copy still
    referenced elsewhere lives on; the next import loads them again). The web stack, the
    settings rules and the OTA code come and go this way. True when any was loaded."""
    import sys

    gone = False
    for name in names:
        if sys.modules.pop(name, None) is not None:
            gone = True
            pkg, _, attr = name.rpartition(".")
            try:
                delattr(sys.modules[pkg], attr)
            except (KeyError, AttributeError):
                pass
    return gone
