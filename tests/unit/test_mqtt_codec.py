# The MQTT 3.1.1 packets, byte for byte against the specification's layouts, and back.
from smartbms.mqtt import codec, hello
from testutil import raises


def test_remaining_length_varint_round_trips_at_every_boundary():
    for n, enc in ((0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
                   (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"), (2097152, b"\x80\x80\x80\x01"),
                   (268435455, b"\xff\xff\xff\x7f")):
        assert codec.encode_length(n) == enc
        assert codec.decode_length(b"\x30" + enc) == (n, 1 + len(enc))
    raises(codec.ProtocolError, codec.encode_length, 268435456)
    raises(codec.ProtocolError, codec.decode_length, b"\x30\xff\xff\xff\xff\x01")
    assert codec.decode_length(b"\x30\x80") is None  # more bytes to come


def test_connect_with_will_user_and_password():
    p = hello.connect("dev1", 60, "u", "pw", "b/availability", b"offline", True)
    # fixed header, protocol name, level 4, flags: user, password, will retain, will, clean
    assert p[0] == 0x10
    n, i = codec.decode_length(p)
    assert n == len(p) - i
    body = p[i:]
    assert body[:6] == b"\x00\x04MQTT" and body[6] == 4
    assert body[7] == 0x80 | 0x40 | 0x20 | 0x04 | 0x02
    assert body[8:10] == b"\x00\x3c"
    assert body[10:] == b"\x00\x04dev1\x00\x0eb/availability\x00\x07offline\x00\x01u\x00\x02pw"


def test_connect_without_will_or_login():
    p = hello.connect("x", 30)
    assert p == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x1e\x00\x01x"


def test_publish_qos0_with_and_without_retain():
    assert codec.publish("a/b", b"hi") == b"\x30\x07\x00\x03a/bhi"
    assert codec.publish("a/b", "", True) == b"\x31\x05\x00\x03a/b"
    big = b"x" * 300
    p = codec.publish("t", big)
    assert p[:3] == b"\x30\xaf\x02" and p.endswith(big)  # 303 = 0xaf 0x02
    assert codec.publish_header("t", 300) + big == p


def test_subscribe_ping_disconnect():
    assert hello.subscribe(1, "b/set/+") == b"\x82\x0c\x00\x01\x00\x07b/set/+\x00"
    assert codec.PINGREQ_PACKET == b"\xc0\x00" and codec.DISCONNECT_PACKET == b"\xe0\x00"


def test_decoding_what_a_broker_sends():
    assert codec.header(b"\x20\x02\x00\x00") == (codec.CONNACK, 0, 2, 2)
    assert hello.connack(b"\x00\x05") == (False, 5)
    assert hello.CONNACK_TEXT[5] == "not authorized"
    assert codec.header(b"\x90\x03\x00\x01\x00") == (codec.SUBACK, 0, 3, 2)
    assert hello.suback(b"\x00\x01\x80") == (1, [0x80])
    assert codec.header(b"\xd0\x00") == (codec.PINGRESP, 0, 0, 2)
    assert codec.header(b"") is None and codec.header(b"\x30") is None
    pkt = codec.publish("b/set/override", b"on", True)
    t, flags, n, hl = codec.header(pkt)
    assert (t, flags, n) == (codec.PUBLISH, 1, len(pkt) - hl)
    assert codec.publish_in(flags, pkt[hl:]) == ("b/set/override", b"on")
    # QoS 1 carries a packet id after the topic
    assert codec.publish_in(0x02, b"\x00\x01t\x00\x07xy") == ("t", b"xy")
    raises(codec.ProtocolError, codec.publish_in, 0, b"\x00\x09ab")
    raises(codec.ProtocolError, hello.connack, b"\x00")
