"""A BLE device no smartbms driver knows, for the capture mode (smartbms.bms.capture): a
made-up "Mystery BMS" with service FFB0 (no family claims it; a bare FFF0 would pass
for a Daly with `bms_protocol: auto`) holding a notify characteristic FFB1, a write
characteristic FFB2 and a second notify characteristic FFB3 (handles 3, 6 and 8), plus a
battery service 180F whose level notifies too. Every write to FFB2 is answered with two
notifications on FFB1 (a 30-byte frame, so it arrives in two fragments at the default
MTU) and one on FFB3; `answers` counts them. It answers nothing while `silent`.

    world.control({"op": "add_unknown_peer", "mac": "11:22:33:44:55:66", "name": "Mystery BMS"})
"""
from world.radio import FLAG_NOTIFY, FLAG_READ, FLAG_WRITE, FLAG_WRITE_NO_RESPONSE, Peer

MAC = "11:22:33:44:55:66"
NAME = "Mystery BMS"
MANUFACTURER = (0x1234, bytes.fromhex("c0ffee"))
SERVICES = [(0xFFB0, [(0xFFB1, FLAG_READ | FLAG_NOTIFY), (0xFFB2, FLAG_WRITE | FLAG_WRITE_NO_RESPONSE),
                      (0xFFB3, FLAG_NOTIFY)]),
            (0x180F, [(0x2A19, FLAG_READ | FLAG_NOTIFY)])]


def answer_frames(request):
    """What the device sends for a request: (uuid, payload) in order. A frame of its own
    made-up protocol: A5, length, the request's first byte, a counter, 24 data bytes, sum."""
    first = request[0] if request else 0
    body = bytes([0xA5, 28, first, len(request) & 0xFF]) + bytes(range(24))
    frame = body + bytes([sum(body) & 0xFF, 0x5A])
    return [(0xFFB1, frame), (0xFFB3, bytes([0xEE, first]))]


class UnknownPeer(Peer):
    def __init__(self, mac=MAC, name=NAME, rssi=-58):
        super().__init__(mac, name, SERVICES, MANUFACTURER, rssi, mtu_max=185)
        self.on_write = self._answer
        self.answers = 0

    def _answer(self, char, data):
        if char.uuid != bytes((0xB2, 0xFF)):
            return
        self.answers += 1
        for uuid, payload in answer_frames(bytes(data)):
            self.notify(uuid, payload)
