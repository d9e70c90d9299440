# BLE scanning for BMSes: the setup page's list, and finding the one the link should use
# (its address type is only known from an advertisement). aioble is imported on first use.
from smartbms.bms import protocols


def mac_str(addr):
    """'AA:BB:CC:DD:EE:FF' from 6 address bytes."""
    return ":".join("%02X" % b for b in addr)


def normalize_mac(mac):
    """'AA:BB:CC:DD:EE:FF' from that form, lower case, '-' separators or 12 hex digits;
    ValueError for anything else."""
    s = str(mac).strip().replace("-", ":").upper()
    if ":" not in s and len(s) == 12:
        s = ":".join(s[i:i + 2] for i in range(0, 12, 2))
    parts = s.split(":")
    if len(parts) != 6:
        raise ValueError("MAC address must look like AA:BB:CC:DD:EE:FF, not %r" % (mac,))
    for p in parts:
        if len(p) != 2 or any(c not in "0123456789ABCDEF" for c in p):
            raise ValueError("MAC address must look like AA:BB:CC:DD:EE:FF, not %r" % (mac,))
    return s


def describe(result):
    """{name, mac, rssi, family} for an aioble ScanResult; family None when no BMS is recognised."""
    name = result.name() or ""
    services = [u for u in result.services()]
    makers = [m for m, _ in result.manufacturer()]
    return {
        "name": name,
        "mac": mac_str(result.device.addr),
        "rssi": result.rssi,
        "family": protocols.detect(name, services, makers),
    }


def _scanner(duration_ms):
    import aioble

    # Active scanning: names come in the scan response.
    return aioble.scan(duration_ms, interval_us=30000, window_us=30000, active=True)


async def scan(duration_ms=5000, include_unknown=False):
    """Nearby BMSes, strongest first: [{name, mac, rssi, family}]. Devices that are no known
    BMS are left out unless include_unknown (their family is None)."""
    if not 100 <= duration_ms <= 60000:
        raise ValueError("scan duration must be 100..60000 ms")
    seen = {}
    async with _scanner(duration_ms) as scanner:
        async for result in scanner:
            # aioble re-yields one ScanResult per device as its data grows.
            seen[bytes(result.device.addr)] = result
    found = []
    for result in seen.values():
        d = describe(result)
        if d["family"] is not None or include_unknown:
            found.append(d)
    found.sort(key=lambda d: -(d["rssi"] if d["rssi"] is not None else -999))
    return found


def with_connected(found, link):
    """`found` with the pack the link holds connected listed first (marked "connected": True):
    a BLE peripheral stops advertising while connected, so no scan can see it."""
    dev = getattr(link, "_device", None)
    if not getattr(link, "connected", False) or dev is None:
        return found
    mac = mac_str(dev.addr)
    rest = [d for d in found if d["mac"] != mac]
    driver = getattr(link, "driver", None)
    return [{"name": getattr(link, "name", None) or "", "mac": mac, "rssi": None,
             "family": getattr(driver, "name", None), "connected": True}] + rest


async def find(mac=None, name=None, duration_ms=5000):
    """(aioble Device, detected family or None) for the BMS advertising as `mac`
    (normalized) or `name`; (None, None) when it was not seen."""
    if mac is None and not name:
        raise ValueError("need a MAC address or a name")
    found = None
    async with _scanner(duration_ms) as scanner:
        async for result in scanner:
            if mac is not None:
                if mac_str(result.device.addr) != mac:
                    continue
            elif result.name() != name:
                continue
            d = describe(result)
            # With a name the scan response carries it; by MAC, wait for the name too so
            # that detection sees everything (it may come in a second report).
            if d["family"] is not None or d["name"]:
                return result.device, d["family"]
            found = result.device
    return found, None
