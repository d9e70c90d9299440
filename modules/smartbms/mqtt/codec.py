# MQTT 3.1.1 packets as bytes, and back: pure functions, no sockets (tests/unit/test_mqtt_codec.py).
# Only what a QoS 0 client needs: PUBLISH at QoS 0, PINGREQ and DISCONNECT out; PUBLISH and
# PINGRESP in. A connection's start (CONNECT with a will, CONNACK, SUBSCRIBE, SUBACK) is in
# smartbms.mqtt.hello, loaded only while connecting.
import struct

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
SUBSCRIBE = 0x80
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
MAX_REMAINING = 268435455  # the largest remaining length 4 varint bytes can hold


class ProtocolError(ValueError):
    pass


def _b(s):
    return s.encode() if type(s) is str else bytes(s)


def _field(s):
    b = _b(s)
    if len(b) > 65535:
        raise ProtocolError("field longer than 65535 bytes")
    return struct.pack("!H", len(b)) + b


def encode_length(n):
    """The remaining-length varint: 7 bits a byte, low first, top bit = more follow."""
    if not 0 <= n <= MAX_REMAINING:
        raise ProtocolError("remaining length out of range")
    out = bytearray()
    while True:
        d = n & 0x7F
        n >>= 7
        out.append(d | 0x80 if n else d)
        if not n:
            return bytes(out)


def decode_length(buf, start=1):
    """(length, index after it) of the varint at buf[start:], or None while bytes are missing;
    ProtocolError for a varint longer than 4 bytes."""
    n = 0
    shift = 0
    i = start
    while True:
        if i >= len(buf):
            return None
        d = buf[i]
        n |= (d & 0x7F) << shift
        i += 1
        if not d & 0x80:
            return n, i
        shift += 7
        if shift >= 28:
            raise ProtocolError("malformed remaining length")


def publish_header(topic, payload_len, retain=False):
    """The bytes before the payload of a QoS 0 PUBLISH (send the payload after it: no copy)."""
    t = _field(topic)
    return bytes((PUBLISH | (1 if retain else 0),)) + encode_length(len(t) + payload_len) + t


def publish(topic, payload, retain=False):
    p = _b(payload)
    return publish_header(topic, len(p), retain) + p


def header(buf):
    """(type, flags, remaining length, header size) of the packet at the start of buf, or None
    while its fixed header is incomplete."""
    if not buf:
        return None
    r = decode_length(buf, 1)
    if r is None:
        return None
    return buf[0] & 0xF0, buf[0] & 0x0F, r[0], r[1]


def publish_in(flags, body):
    """(topic str, payload bytes) of an incoming PUBLISH's body; QoS 1/2 ids are skipped."""
    if len(body) < 2:
        raise ProtocolError("short PUBLISH")
    n = struct.unpack("!H", body[:2])[0]
    i = 2 + n
    if i > len(body):
        raise ProtocolError("PUBLISH topic beyond the packet")
    topic = bytes(body[2:i]).decode()
    if (flags >> 1) & 3:
        i += 2  # the packet id of QoS 1/2 (we subscribe at QoS 0; a broker may still send it)
    return topic, bytes(body[i:])
