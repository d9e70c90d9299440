# Protocol registry: a driver per BMS family and detection from advertising data.
# Codec modules are imported on first use so a device only loads the one it talks to.
from smartbms.bms.reading import BMSError

NAMES = ("jbd", "jk02_24s", "jk02_32s", "daly", "seplos", "ant", "redodo", "renogy")

JBD_SERVICE = 0xFF00
JK_SERVICE = 0xFFE0  # also ANT and Redodo
DALY_SERVICE = 0xFFF0  # also Seplos, the JBD rebrands and Renogy's notify service
RENOGY_SERVICE = 0xFFD0
ANT_LEGACY_SERVICE = 0xFEE7  # advertised by ANT units of the older AA 55 protocol
JK_MANUFACTURER_IDS = (0x0B65, 0x4B4A)
REDODO_MANUFACTURER_ID = 0x585A

_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"


def get(name):
    """The driver for protocol `name` (one of NAMES); BMSError for an unknown name."""
    if name == "jbd":
        from smartbms.bms import jbd

        return jbd.Driver()
    if name == "jk02_24s" or name == "jk02_32s":
        from smartbms.bms import jk02

        return jk02.Driver(32 if name == "jk02_32s" else 24)
    if name == "daly":
        from smartbms.bms import daly

        return daly.Driver()
    if name == "seplos":
        from smartbms.bms import seplos

        return seplos.Driver()
    if name == "ant":
        from smartbms.bms import ant

        return ant.Driver()
    if name == "redodo":
        from smartbms.bms import redodo

        return redodo.Driver()
    if name == "renogy":
        from smartbms.bms import renogy

        return renogy.Driver()
    raise BMSError("unknown BMS protocol %r (known: %s)" % (name, ", ".join(NAMES)))


def uuid16(u):
    """A 16-bit service UUID from an int, '0xff00'/'ff00', the 128-bit Bluetooth base form,
    or an object printing as 'UUID(0xff00)' / "UUID('...')"; None when it is not one."""
    if isinstance(u, int):
        return u if 0 <= u <= 0xFFFF else None
    s = str(u).lower().strip()
    if s.startswith("uuid("):
        s = s[5:].rstrip(")").strip("'\"")
    if s.endswith(_BASE_SUFFIX) and len(s) == 36 and s.startswith("0000"):
        s = s[4:8]
    if s.startswith("0x"):
        s = s[2:]
    if not 1 <= len(s) <= 4:
        return None
    try:
        return int(s, 16)
    except ValueError:
        return None


def _jbd_name(name):
    low = name.lower()
    if low.startswith("jbd-") or "xiaoxiang" in low:
        return True
    # SP04S034..., DP04S007...: "SP"/"DP" followed by the cell count.
    return len(name) > 2 and name[:2] in ("SP", "DP") and "0" <= name[2] <= "9"


def _digits_then(name, i, letter):
    """name[i:] is one or more digits followed by `letter`."""
    j = i
    while j < len(name) and "0" <= name[j] <= "9":
        j += 1
    return j > i and j < len(name) and name[j] == letter


def _seplos_name(name):
    # SP05B..., SP47B-A..., SP112B... (a JBD's SP04S034... has an S after the digits)
    if name.startswith("SP") and _digits_then(name, 2, "B"):
        return True
    return name.startswith(("XZHX", "CSY"))


def _ant_name(name):
    # ANT-BLE24C..., ANT@BLE24CBUB..., ANT-BLE16ZMUB
    return len(name) > 6 and name.startswith("ANT") and name[4:7] == "BLE"


def detect(name=None, service_uuids=(), manufacturer_ids=()):
    """The protocol name for an advertisement, or None when it is no known BMS.
    JK packs are reported as "jk02_32s" (current firmware); older ones need jk02_24s.
    Several families share a service (FFE0: JK, ANT, Redodo; FFF0: Daly, Seplos, JBD
    rebrands, Renogy), so names and manufacturer ids decide first and a bare service last."""
    name = (name or "").strip()
    services = []
    for u in service_uuids or ():
        v = uuid16(u)
        if v is not None:
            services.append(v)
    mfr = manufacturer_ids or ()
    if JK_SERVICE in services and (
        any(m in JK_MANUFACTURER_IDS for m in mfr) or name.upper().startswith(("JK-", "JK_"))
    ):
        return "jk02_32s"
    if _ant_name(name):
        # The older protocol's units also advertise FEE7: not read by this firmware.
        return None if ANT_LEGACY_SERVICE in services else "ant"
    if REDODO_MANUFACTURER_ID in mfr and (JK_SERVICE in services or not services):
        return "redodo"
    if _seplos_name(name):
        return "seplos"
    if name.startswith("BT-TH-") or RENOGY_SERVICE in services:
        return "renogy"
    if name.startswith("DL-"):
        return "daly"
    if _jbd_name(name):
        return "jbd"
    if JBD_SERVICE in services:
        return "jbd"
    if DALY_SERVICE in services:
        return "daly"
    return None
