# The BMS's GATT layout: find its service, list its characteristics and choose the one the
# link listens on (notify) and the one it writes requests to. Pure choice logic apart
# (pick), so it runs anywhere.
#
# Discovery results come from NimBLE in bursts and aioble hands them out from the end of its
# queue: characteristics are put in handle order (the peer's own) before choosing, so a tie
# never depends on delivery order. The driver names its characteristics (notify_uuid,
# write_uuid): they win over others with the right properties (ANT's FFE1 over FFE2,
# Redodo's FFE2 over its AT channel FFE3). A driver with notify_service_uuid (Renogy)
# listens in another service than it writes to.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_FLAG_WRITE_NO_RESPONSE = const(0x0004)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)


class GattLayoutError(Exception):
    """The BMS is reachable but lacks the service or characteristics its family needs."""


def _handle(ch):
    return ch._value_handle


def pick(chars, notify_uuid=None, write_uuid=None, notify_chars=None):
    """(notify, write) among `chars` (each with properties, uuid and _value_handle); the
    notify one among `notify_chars` when given; notify_uuid and write_uuid compare equal
    to a characteristic's uuid (bluetooth.UUID on the device). GattLayoutError when one
    is missing."""
    notify = None
    best = -1
    for ch in notify_chars if notify_chars is not None else chars:
        if ch.properties & _FLAG_NOTIFY:
            score = 1 if notify_uuid is not None and ch.uuid == notify_uuid else 0
            if score > best:
                best = score
                notify = ch
    # the driver's write uuid first, then one that is not the notify characteristic (JBD
    # FF02 over FF01), then write-without-response (the BMSes answer by notification)
    write = None
    best = -1
    for ch in chars:
        p = ch.properties
        if not p & (_FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE):
            continue
        score = ((4 if write_uuid is not None and ch.uuid == write_uuid else 0)
                 + (2 if ch is not notify else 0) + (1 if p & _FLAG_WRITE_NO_RESPONSE else 0))
        if score > best:
            best = score
            write = ch
    if notify is None or write is None:
        raise GattLayoutError("BMS service lacks a %s characteristic" % ("notify" if notify is None else "write"))
    return notify, write


async def _characteristics(service):
    chars = []
    async for ch in service.characteristics():
        chars.append(ch)
    chars.sort(key=_handle)
    return chars


async def open_characteristics(conn, driver, timeout_ms):
    """(notify, write) of the driver's family on an aioble connection; the discovery is
    bounded by timeout_ms (aioble's has no timeout of its own)."""
    import bluetooth

    with conn.timeout(timeout_ms):
        service = None
        for u in driver.service_uuids:
            service = await conn.service(bluetooth.UUID(u))
            if service is not None:
                break
        if service is None:
            raise GattLayoutError("BMS has no service %s" % ", ".join("%04X" % u for u in driver.service_uuids))
        chars = await _characteristics(service)
        notify_chars = None
        ns = getattr(driver, "notify_service_uuid", None)
        if ns is not None:
            other = await conn.service(bluetooth.UUID(ns))
            if other is None:
                raise GattLayoutError("BMS has no service %04X" % ns)
            notify_chars = await _characteristics(other)
    nu = getattr(driver, "notify_uuid", None)
    wu = getattr(driver, "write_uuid", None)
    return pick(chars, None if nu is None else bluetooth.UUID(nu), None if wu is None else bluetooth.UUID(wu),
                notify_chars)
