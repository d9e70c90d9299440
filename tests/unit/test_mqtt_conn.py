# The MQTT connection's receive side: packets taken from what has arrived, without waiting
# (the session's one task polls each tick), through a socket that hands out bytes in any
# pieces, as lwIP does; a packet larger than the buffer is skipped, the rest kept in step.
import asyncio

from smartbms.mqtt import codec
from smartbms.mqtt.conn import RX_BUF, Closed, Conn


class Sock:
    """A non-blocking socket: readinto gives at most `piece` bytes of what is queued, None
    when nothing is (EAGAIN), 0 once the peer closed and everything was read."""

    def __init__(self, data=b"", piece=1000):
        self.data = bytearray(data)
        self.piece = piece
        self.closed = False

    def readinto(self, mv):
        if not self.data:
            return 0 if self.closed else None
        k = min(len(mv), self.piece, len(self.data))
        mv[:k] = self.data[:k]
        self.data = self.data[k:]
        return k


def _conn(sock):
    c = Conn()
    c.sock = sock
    return c


def _packets(c):
    out = []
    while True:
        p = c.poll()
        if p is None:
            return out
        t, flags, body = p
        out.append((t, None if body is None else codec.publish_in(flags, body) if t == codec.PUBLISH
                     else bytes(body)))


def test_packets_in_any_pieces_come_out_whole_and_in_order():
    data = (codec.publish("smartbms/x/set/min_soc", b"40") + b"\xd0\x00"
            + codec.publish("smartbms/x/set/override", b"on", retain=True))
    for piece in (1, 2, 3, 7, 1000):
        sock = Sock(piece=piece)
        c = _conn(sock)
        got = []
        for i in range(0, len(data), 5):  # arriving between polls, 5 bytes at a time
            sock.data += data[i:i + 5]
            got += _packets(c)
        assert got == [(codec.PUBLISH, ("smartbms/x/set/min_soc", b"40")), (codec.PINGRESP, b""),
                       (codec.PUBLISH, ("smartbms/x/set/override", b"on"))], piece


def test_nothing_arrived_is_none_and_waits_for_nothing():
    c = _conn(Sock())
    assert c.poll() is None
    c.sock.data += b"\x30"  # half a fixed header
    assert c.poll() is None
    c.sock.data += b"\x05\x00\x01t"  # still two bytes short
    assert c.poll() is None
    c.sock.data += b"ab"
    assert _packets(c) == [(codec.PUBLISH, ("t", b"ab"))]


def test_a_packet_larger_than_the_buffer_is_skipped_and_the_next_one_read():
    big = codec.publish("smartbms/x/set/min_soc", b"9" * (RX_BUF * 3))
    small = codec.publish("smartbms/x/set/max_soc", b"90")
    for piece in (7, 100, 10000):
        c = _conn(Sock(big + small, piece=piece))
        assert _packets(c) == [(codec.PUBLISH, None), (codec.PUBLISH, ("smartbms/x/set/max_soc", b"90"))]
        assert c._skip == 0 and c._have == 0


def test_the_broker_closing_raises_closed_after_what_it_sent():
    sock = Sock(b"\xd0\x00")
    sock.closed = True
    c = _conn(sock)
    assert c.poll()[0] == codec.PINGRESP
    try:
        c.poll()
    except Closed:
        pass
    else:
        raise AssertionError("a closed connection must raise Closed")


def test_a_malformed_length_is_a_protocol_error():
    c = _conn(Sock(b"\x30\xff\xff\xff\xff\x01"))
    try:
        c.poll()
    except codec.ProtocolError:
        pass
    else:
        raise AssertionError("a 5-byte remaining length must be refused")


class WSock:
    """A non-blocking socket whose send buffer takes a few bytes at a time and is now and
    then full (None, as MicroPython's write says EAGAIN)."""

    def __init__(self):
        self.out = bytearray()
        self.calls = 0

    def write(self, mv):
        self.calls += 1
        if self.calls % 3 == 0:
            return None
        k = min(len(mv), 7)
        self.out += bytes(mv[:k])
        return k


def test_writes_go_out_whole_through_a_socket_that_takes_a_little_at_a_time():
    c = Conn()
    c.sock = WSock()
    payload = b'{"soc": 61, "relay": "ON"}' * 4
    asyncio.run(c.publish("smartbms/x/state", payload, retain=True))
    asyncio.run(c.send(codec.PINGREQ_PACKET))
    assert bytes(c.sock.out) == codec.publish("smartbms/x/state", payload, True) + codec.PINGREQ_PACKET


def test_writing_without_a_connection_raises_closed():
    try:
        asyncio.run(Conn().send(codec.PINGREQ_PACKET))
    except Closed:
        pass
    else:
        raise AssertionError("no connection: Closed")
