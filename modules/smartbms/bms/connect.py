# Connecting to a BMS with aioble as MicroPython v1.28.0's NimBLE binding behaves:
# - aioble's Device.connect() passes no scan_duration_ms unless asked, and the binding's
#   default ends the controller's attempt after 2 s: the attempt here lasts the whole wait;
# - a connect the controller gives up on arrives as PERIPHERAL_DISCONNECT with handle
#   0xFFFF, which aioble ignores: an IRQ hook wakes the pending wait at once;
# - aioble leaves a failed attempt running in the controller: it is cancelled.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_IRQ_PERIPHERAL_DISCONNECT = const(8)
_CONN_NONE = const(0xFFFF)

_pending = None  # the Device whose connect is pending (the controller allows one at a time)
_failed = False
_hooked = False


class ConnectFailed(Exception):
    """The controller gave up on the connect."""


def _irq(event, data):
    # Wake the pending connect's wait through the flag the event loop polls (a task.cancel()
    # from an IRQ would be seen only when the loop's poll times out, on the chip as here);
    # aioble then finds no connection handle and raises, which connect() turns into the error.
    global _failed
    dev = _pending
    if event == _IRQ_PERIPHERAL_DISCONNECT and data[0] == _CONN_NONE and dev is not None:
        _failed = True
        c = dev._connection
        if c is not None and c._event is not None:
            c._event.set()


async def connect(device, timeout_ms):
    """aioble's connect to `device` within timeout_ms: the connection, or an exception
    (asyncio.TimeoutError, ConnectFailed, OSError) with the controller's attempt cancelled."""
    import aioble

    global _pending, _failed, _hooked
    if not _hooked:
        aioble.core.register_irq_handler(_irq, None)
        _hooked = True
    _failed = False
    _pending = device
    try:
        try:
            return await device.connect(timeout_ms=timeout_ms, scan_duration_ms=timeout_ms)
        except AssertionError:
            if not _failed:
                raise
            raise ConnectFailed("connect failed: the BMS did not answer")
        finally:
            _pending = None
    except Exception:
        try:
            aioble.core.ble.gap_connect(None)
        except Exception:  # noqa: BLE001 - nothing pending: EALREADY
            pass
        raise


def radio_up():
    """Whether the BLE stack is up, bringing it up if needed."""
    try:
        import aioble

        aioble.core.ensure_active()
        return bool(aioble.core.ble.active())
    except Exception:  # noqa: BLE001 - a radio that does not start is the answer
        return False
