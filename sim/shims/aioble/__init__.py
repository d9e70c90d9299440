# Host-only fake of micropython-lib's aioble (central role), never frozen.
#
# The client API is the real library's, with its semantics where they matter:
#   aioble.scan(duration_ms, interval_us=None, window_us=None, active=False)  async context
#       manager yielding ScanResult (device, adv_data, resp_data, rssi, name(), services(),
#       manufacturer(filter=None)); the scan ends after duration_ms (real time).
#   aioble.Device(addr_type, addr) .connect(timeout_ms) -> DeviceConnection; a connect that
#       times out raises asyncio.TimeoutError, leaves device._connection set (a second
#       connect() on the same Device returns that dead connection, as the real one does) and
#       leaves the low-level attempt pending: the next connect raises OSError(22) until
#       aioble.core.ble.gap_connect(None) cancels it or 2 s pass.
#   DeviceConnection: service(uuid), services(), exchange_mtu(mtu, timeout_ms), timeout(ms)
#       (context manager -> asyncio.TimeoutError / DeviceDisconnectedError), disconnect(),
#       disconnected(timeout_ms), is_connected(), mtu. Discovery has no timeout of its own
#       and never finishes if the link drops meanwhile (bound it with connection.timeout()).
#   ClientCharacteristic: uuid, properties, write(data, response=False, timeout_ms),
#       subscribe(notify=True), notified(timeout_ms), descriptor(s). Notifications reach
#       `ClientCharacteristic._on_notify` at "IRQ" time and go into `_notify_queue`, a deque
#       of length 1: fragments delivered back to back leave only the last one for notified().
#   aioble.DeviceDisconnectedError, aioble.GattError, aioble.ADDR_PUBLIC/ADDR_RANDOM,
#   aioble.config(), aioble.stop(), aioble.core.ble.
#
# The simulated world (aioble.sim):
#   p = aioble.sim.add_peripheral(aioble.sim.Peripheral(
#           mac="AA:BB:CC:DD:EE:01", name="JBD-SP04S034",
#           services={0xFF00: [(0xFF01, FLAG_READ | FLAG_NOTIFY),
#                              (0xFF02, FLAG_WRITE | FLAG_WRITE_NO_RESPONSE)]},
#           manufacturer=None,              # or (company_id, bytes)
#           rssi=-60, addr_type=0, mtu_max=247,
#           on_write=lambda char_uuid, data: p.notify(0xFF01, answer(data))))
#   p.notify(char_uuid, payload) splits payload into MTU-3 byte notifications (20 bytes
#       until the central exchanges a larger MTU) and delivers them all back to back, as
#       a burst of IRQs with no chance for the client's task to run in between. Returns
#       False (and counts notifications_lost) when nobody is connected/subscribed.
#   Knobs: p.silent (answers nothing, notifies nothing), p.response_delay_ms (write ->
#       on_write), p.connect_delay_ms, p.refuse_connections, p.fragment_gap_ms (space the
#       fragments out instead of one burst), p.mtu_exchange_fails, p.drop_after_fragments
#       (drop the link after that many more fragments: a disconnect mid-frame),
#       p.drop_link() (disconnect now), p.advertise_when_connected (BMSes stop advertising
#       while a central holds them).
#   Records: p.writes [(UUID, bytes)], p.connects, p.disconnects, p.fragments_sent,
#       p.notifications_lost, p.connected, p.mtu, p.subscribed(char_uuid) -> value handles.
#   aioble.sim.remove_peripheral(mac), aioble.sim.peripherals(), aioble.sim.reset(),
#   await aioble.sim.shutdown() (drop every link and let the fake's tasks end: call it
#   before a test's event loop finishes).
# All delays are real milliseconds; the fake never looks at smartbms.clock.
from .core import GattError, config, log_error, log_info, log_warn, stop
from .device import Device, DeviceConnection, DeviceDisconnectedError, DeviceTimeout
from .central import scan, ScanResult
from .client import ClientCharacteristic, ClientService
from . import sim

ADDR_PUBLIC = 0
ADDR_RANDOM = 1
