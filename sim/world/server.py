"""The world link: the device process's hardware shims talk to the world over two TCP
connections on 127.0.0.1, in small binary frames (cheap to parse in the device's heap):

  frame    = u16 length (little-endian) + payload
  commands (device -> world, on the "cmd" connection, each answered by one reply frame):
           payload = u8 op + arguments; reply = u8 status (0 ok, 1..4 an errno code of
           world.radio, 0xFE a control error with its text, 0xFF a malformed command) + data
  events   (world -> device, on the "evt" connection, never answered):
           payload = u8 kind + data: 1 a BLE IRQ (u8 event + the radio's packing),
           2 an input pin driven (u8 pin, u8 level, 0xFF = released),
           3 WiFi (u8 1 + networks spec | u8 2 + ssid that vanished)
A connection's first frame says its role: op 0 with u8 1 (cmd) or 2 (evt). A connection
whose first byte is "{" is a control session instead: JSON lines, one answer per line.
The newest device cmd connection is the device; when it closes, the device lost power.
"""
import asyncio
import json
import struct

from world.world import ControlError

OP_HELLO = 0x00
OP_BLE_ACTIVE = 0x01
OP_BLE_MTU = 0x02
OP_GAP_SCAN = 0x03
OP_GAP_CONNECT = 0x04
OP_GAP_DISCONNECT = 0x05
OP_DISC_SVC = 0x06
OP_DISC_CHR = 0x07
OP_DISC_DSC = 0x08
OP_READ = 0x09
OP_WRITE = 0x0A
OP_MTU_EXCHANGE = 0x0B
OP_PIN_WRITE = 0x10
OP_CONTROL = 0x20
EV_BLE, EV_PIN, EV_WIFI = 1, 2, 3
ST_OK, ST_CONTROL_ERROR, ST_MALFORMED = 0, 0xFE, 0xFF


def frame(payload):
    return struct.pack("<H", len(payload)) + payload


class DeviceSession:
    def __init__(self, world, cmd_writer):
        self.world = world
        self.cmd_writer = cmd_writer
        self.evt_writer = None
        self._early = []  # events before the evt connection arrived

    def _send(self, payload):
        if self.evt_writer is None:
            self._early.append(payload)
            del self._early[:-256]
            return
        self.evt_writer.write(frame(payload))

    def set_evt(self, writer):
        self.evt_writer = writer
        for p in self._early:
            writer.write(frame(p))
        self._early.clear()

    def send_irq(self, event, payload=b""):
        self._send(bytes((EV_BLE, event)) + payload)

    def send_pin(self, pin, level):
        self._send(bytes((EV_PIN, pin, 0xFF if level is None else (1 if level else 0))))

    def send_wifi(self, sub, text):
        self._send(bytes((EV_WIFI, sub)) + text.encode())

    def command(self, p):
        """One command payload -> reply payload."""
        op = p[0]
        a = p[1:]
        r = self.world.radio
        try:
            if op == OP_BLE_ACTIVE:
                return bytes((ST_OK, r.set_active(a[0]) if a[0] < 2 else r.active))
            if op == OP_BLE_MTU:
                r.set_mtu(struct.unpack("<H", a)[0])
            elif op == OP_GAP_SCAN:
                duration, active = struct.unpack("<iB", a)
                r.gap_scan(None if duration < 0 else duration, bool(active))
            elif op == OP_GAP_CONNECT:
                addr_type, addr, scan_ms = struct.unpack("<B6si", a)
                r.gap_connect(addr_type, None if addr_type == 0xFF else addr, scan_ms)
            elif op == OP_GAP_DISCONNECT:
                return bytes((ST_OK, 1 if r.gap_disconnect(struct.unpack("<H", a)[0]) else 0))
            elif op == OP_DISC_SVC:
                r.discover_services(struct.unpack_from("<H", a)[0], bytes(a[2:]) or None)
            elif op == OP_DISC_CHR:
                conn, start, end = struct.unpack_from("<HHH", a)
                r.discover_characteristics(conn, start, end, bytes(a[6:]) or None)
            elif op == OP_DISC_DSC:
                r.discover_descriptors(*struct.unpack("<HHH", a))
            elif op == OP_READ:
                r.gattc_read(*struct.unpack("<HH", a))
            elif op == OP_WRITE:
                conn, handle, mode = struct.unpack_from("<HHB", a)
                r.gattc_write(conn, handle, bytes(a[5:]), mode)
            elif op == OP_MTU_EXCHANGE:
                r.exchange_mtu(struct.unpack("<H", a)[0])
            elif op == OP_PIN_WRITE:
                pin, level = struct.unpack("<BB", a)
                self.world.pin_written(pin, None if level == 0xFF else level)
            elif op == OP_CONTROL:
                answer = self.world.control(json.loads(bytes(a).decode()))
                return bytes((ST_OK,)) + json.dumps(answer).encode()
            else:
                return bytes((ST_MALFORMED,))
        except OSError as e:
            return bytes((e.args[0] if e.args and isinstance(e.args[0], int) else 2,))
        except ControlError as e:
            return bytes((ST_CONTROL_ERROR,)) + str(e).encode()
        except (struct.error, IndexError, ValueError) as e:
            return bytes((ST_MALFORMED,)) + str(e).encode()
        return bytes((ST_OK,))


class WorldServer:
    def __init__(self, world, host="127.0.0.1", port=0):
        self.world = world
        self.host = host
        self.port = port
        self._server = None
        self._device = None  # the newest device session

    async def start(self):
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.world.start()
        return self.port

    async def _client(self, reader, writer):
        try:
            first = await reader.readexactly(1)
            if first == b"{":
                await self._control(first, reader, writer)
                return
            rest = await reader.readexactly(1)
            n = struct.unpack("<H", first + rest)[0]
            hello = await reader.readexactly(n)
            if len(hello) != 2 or hello[0] != OP_HELLO or hello[1] not in (1, 2):
                return
            if hello[1] == 1:
                await self._device_cmd(reader, writer)
            else:
                await self._device_evt(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _device_cmd(self, reader, writer):
        old = self._device
        if old is not None:
            self.world.detach(old)
            old.cmd_writer.close()
        session = self._device = DeviceSession(self.world, writer)
        self.world.attach(session)
        # the hello answer: the clock speed and the levels the world drives on inputs now
        # (the BOOT button held at power-on decides whether the firmware starts at all)
        inputs = b"".join(bytes((pin, level)) for pin, level in self.world.inputs.items())
        writer.write(frame(bytes((ST_OK,)) + struct.pack("<H", self.world.speed) + inputs))
        try:
            while True:
                n = struct.unpack("<H", await reader.readexactly(2))[0]
                payload = await reader.readexactly(n)
                writer.write(frame(session.command(payload) if payload else bytes((ST_MALFORMED,))))
        finally:
            self.world.detach(session)
            if self._device is session:
                self._device = None

    async def _device_evt(self, reader, writer):
        session = self._device
        if session is None:
            return
        session.set_evt(writer)
        await reader.read()  # held open until the device goes away
        if session.evt_writer is writer:
            session.evt_writer = None

    async def _control(self, first, reader, writer):
        line = first + await reader.readline()
        while line:
            try:
                answer = {"ok": True, "result": self.world.control(json.loads(line))}
            except (ControlError, ValueError, AttributeError) as e:
                answer = {"ok": False, "error": str(e)}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
