# The packets of an MQTT connection's start: CONNECT (with a will), CONNACK, SUBSCRIBE and
# SUBACK. Pure functions; loaded by smartbms.mqtt.conn only while it connects (the rest of
# the protocol is smartbms.mqtt.codec, resident while MQTT is on).
import struct

from smartbms.mqtt.codec import CONNECT, SUBSCRIBE, ProtocolError, _field, encode_length

CONNACK_TEXT = ("accepted", "unacceptable protocol version", "client id rejected",
                "server unavailable", "bad user name or password", "not authorized")


def _packet(first, body):
    return bytes((first,)) + encode_length(len(body)) + body


def connect(client_id, keepalive=60, user=None, password=None, will_topic=None, will_message=b"",
            will_retain=False, clean=True):
    flags = 0x02 if clean else 0
    payload = _field(client_id)
    if will_topic is not None:
        flags |= 0x04 | (0x20 if will_retain else 0)  # will at QoS 0
        payload += _field(will_topic) + _field(will_message)
    if user:
        flags |= 0x80
        payload += _field(user)
        if password:
            flags |= 0x40
            payload += _field(password)
    body = _field("MQTT") + struct.pack("!BBH", 4, flags, keepalive) + payload
    return _packet(CONNECT, body)


def subscribe(packet_id, topic, qos=0):
    return _packet(SUBSCRIBE | 0x02, struct.pack("!H", packet_id) + _field(topic) + bytes((qos,)))


def connack(body):
    """(session present, return code) of a CONNACK's 2-byte body."""
    if len(body) != 2:
        raise ProtocolError("CONNACK of %d bytes" % len(body))
    return bool(body[0] & 1), body[1]


def suback(body):
    """(packet id, [granted QoS or 0x80 for a refusal]) of a SUBACK body."""
    if len(body) < 3:
        raise ProtocolError("short SUBACK")
    return struct.unpack("!H", body[:2])[0], list(body[2:])
