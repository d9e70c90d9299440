"""The firmware's capture mode for unknown packs, from a laptop (`bms_probe.py --capture`):
connect to any BLE device, list its services and characteristics, subscribe to every
notify/indicate characteristic, write an optional request periodically, and record the raw
notifications with timestamps in a bounded text file, in the same format as the device's
download (modules/smartbms/bms/capture_format.py describes it). The BLE part takes a
connected client with bleak's interface (services, start_notify, write_gatt_char), so it
runs against a stand-in too.
"""
import asyncio
import binascii
import time

from smartbms.bms import capture_format as fmt
from smartbms.version import VERSION

# bleak's property names -> the GATT property bits the device's capture prints
_BITS = {"broadcast": 0x01, "read": 0x02, "write-without-response": 0x04, "write": 0x08, "notify": 0x10,
         "indicate": 0x20, "authenticated-signed-writes": 0x40}
_NOTIFY, _INDICATE, _WRITE, _WNR = 0x10, 0x20, 0x08, 0x04
_SYSTEM_SERVICES = ("1800", "1801")  # GAP/GATT: a writable device name is no request target
_FLUSH_S = 0.2


def prop_bits(props):
    bits = 0
    for p in props or ():
        bits |= _BITS.get(str(p), 0)
    return bits


def uuid_text(u):
    return fmt.uuid_text(str(u))


def _handle(x):
    return getattr(x, "handle", 0) or 0


def header_lines(mac, name=None, rssi=None, adv_services=(), manufacturer=None):
    """The file's first lines, from what the scan saw."""
    svc = " ".join(uuid_text(u) for u in adv_services or ())
    mfr = " ".join("0x%04x %s" % (k, binascii.hexlify(bytes(v)).decode()) for k, v in (manufacturer or {}).items())
    return ["# smartbms BLE capture\n", "# version: %s (bms_probe.py on a laptop)\n" % VERSION,
            "# mac: %s  name: %s  rssi: %s\n" % (mac, name or "(none)", rssi),
            "# advertised: services %s  manufacturer %s\n" % (svc or "-", mfr or "-")]


class _Recorder:
    """Notifications (from bleak's callbacks) as records, kept until the next flush."""

    def __init__(self, t0, clock):
        self.t0 = t0
        self.clock = clock
        self.pending = []
        self.count = 0
        self.names = {}  # handle -> (uuid text, kind)

    def ms(self):
        return int((self.clock() - self.t0) * 1000)

    def callback(self, sender, data):
        h = sender if isinstance(sender, int) else _handle(sender)
        uuid, kind = self.names.get(h, ("?", "notify"))
        self.count += 1
        self.pending.append(fmt.record_line(self.ms(), h, uuid, kind, bytes(data)))


async def capture(client, path, mac, name=None, rssi=None, adv_services=(), manufacturer=None, request=None,
                  every_s=fmt.DEFAULT_EVERY_S, seconds=fmt.DEFAULT_SECONDS, write_uuid=None, cap=fmt.CAP_BYTES,
                  clock=time.monotonic):
    """Capture from a connected bleak-like client into `path`; returns a summary dict."""
    f = fmt.BoundedFile(path, cap)
    f.begin("".join(header_lines(mac, name, rssi, adv_services, manufacturer)))
    rec = _Recorder(clock(), clock)
    subs = []
    target = None
    more = ["# mtu: %s\n" % getattr(client, "mtu_size", "?")]
    for service in sorted(client.services, key=_handle):
        su = uuid_text(service.uuid)
        chars = sorted(getattr(service, "characteristics", ()), key=_handle)
        last = max([_handle(service)] + [_handle(c) for c in chars]
                   + [_handle(d) for c in chars for d in getattr(c, "descriptors", ())])
        lines = ["# service %s handles 0x%04x-0x%04x\n" % (su, _handle(service), last)]
        for ch in chars:
            p = prop_bits(ch.properties)
            cu = uuid_text(ch.uuid)
            note = ""
            if p & (_NOTIFY | _INDICATE):
                subs.append(ch)
                rec.names[_handle(ch)] = (cu, "notify" if p & _NOTIFY else "indicate")
            if p & (_WRITE | _WNR) and target is None and su not in _SYSTEM_SERVICES and write_uuid in (None, cu):
                target = ch
                note = " request-target" if request is not None else " first-writable"
            lines.append("#   char %s handle 0x%04x props %s%s\n" % (cu, _handle(ch), fmt.props_text(p), note))
        f.append(lines)
    f.append(more)
    subscribed = 0
    rec.t0 = clock()
    for ch in subs:
        h = _handle(ch)
        try:
            await client.start_notify(ch, rec.callback)
            subscribed += 1
            f.append(("# subscribed 0x%04x %s (%s)\n" % (h, rec.names[h][0], rec.names[h][1]),))
        except Exception as e:  # noqa: BLE001 - listed as failed, the others still run
            f.append(("# subscribe 0x%04x failed: %s %s\n" % (h, type(e).__name__, e),))
    if request is None:
        f.append(("# request: none\n",))
    elif target is None:
        f.append(("# request: none sent (no writable characteristic%s)\n" % (" " + write_uuid if write_uuid else ""),))
    else:
        f.append(("# request: %s every %s s to %s (handle 0x%04x)\n" % (
            binascii.hexlify(request).decode(), every_s, uuid_text(target.uuid), _handle(target)),))
    f.append(("# columns: ms handle uuid kind hex\n",))
    req = request if target is not None else None
    requests = 0
    next_req = 0.0
    end = "%s s passed" % seconds
    while not f.full:
        now = clock() - rec.t0
        if now >= seconds:
            break
        if getattr(client, "is_connected", True) is False:
            end = "the device disconnected"
            break
        _flush(f, rec)
        if req is not None and now >= next_req:
            next_req = now + every_s
            response = not prop_bits(target.properties) & _WNR
            try:
                await client.write_gatt_char(target, req, response=response)
                line = fmt.record_line(int(now * 1000), _handle(target), uuid_text(target.uuid), "write", req)
            except Exception as e:  # noqa: BLE001 - recorded; the capture goes on
                line = fmt.record_line(int(now * 1000), _handle(target), uuid_text(target.uuid), "error",
                                       "write failed: %s %s" % (type(e).__name__, e))
            f.append((line,))
            requests += 1
        await asyncio.sleep(_FLUSH_S)
    _flush(f, rec)
    if f.full:
        end = "file full (%d bytes)" % cap
    for ch in subs:
        try:
            await client.stop_notify(ch)
        except Exception:  # noqa: BLE001 - the link may be gone
            pass
    ms = rec.ms()
    f.finish("# end: %s; %d notifications, 0 lost, %d requests, %d ms\n" % (end, rec.count, requests, ms))
    return {"file": path, "bytes": f.size, "notifications": rec.count, "requests": requests,
            "subscribed": subscribed, "end": end}


def _flush(f, rec):
    if rec.pending:
        lines, rec.pending = rec.pending, []
        f.append(lines)
