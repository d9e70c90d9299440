# The incremental frame assembler shared by the codecs: BLE notifications go in, in arrival
# order; complete, checksum-verified frames come out. One preallocated buffer per link.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    from time import ticks_diff as _ticks_diff
except ImportError:

    def _ticks_diff(a, b):
        return a - b


_STALL_MS = const(3000)  # a partial frame older than this is abandoned


def crc16_modbus(buf, start, end):
    """CRC-16/MODBUS of buf[start:end] (reflected poly 0xA001, init 0xFFFF), sent low byte
    first by the families that use it (Daly, Seplos v3, ANT, Renogy)."""
    crc = 0xFFFF
    for i in range(start, end):
        crc ^= buf[i]
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
    return crc


# Little-endian fields (JK02, ANT, Redodo). A 32-bit value keeps its top byte apart, so any
# value that fits a small int (30 bits on the ESP32) is read without a big int.
def le_u16(frame, i):
    return frame[i] | (frame[i + 1] << 8)


def le_s16(frame, i):
    v = frame[i] | (frame[i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def le_u32(frame, i):
    return (frame[i] | (frame[i + 1] << 8) | (frame[i + 2] << 16)) + frame[i + 3] * 16777216


def le_s32(frame, i):
    hi = frame[i + 3]
    if hi & 0x80:
        hi -= 256  # (hi - 256) << 24 stays a small negative int
    return (hi << 24) | (frame[i + 2] << 16) | (frame[i + 1] << 8) | frame[i]


def modbus_read(unit, fn, reg, count):
    """A Modbus RTU read request: unit, function, register and count (big-endian), CRC low
    byte first (Daly's D2 protocol, Seplos v3, Renogy). The family checks its own bounds."""
    out = bytearray(8)
    out[0] = unit
    out[1] = fn
    out[2] = reg >> 8
    out[3] = reg & 0xFF
    out[4] = count >> 8
    out[5] = count & 0xFF
    c = crc16_modbus(out, 0, 6)
    out[6] = c & 0xFF
    out[7] = c >> 8
    return bytes(out)


class Assembler:
    """Base class. A family sets START (first byte of every frame; START..START_LAST when
    frames may open with any byte of a range, e.g. a Modbus device address), HEAD (bytes
    needed to know the frame length), SIZE (its largest frame) and implements `_frame_len`,
    `_check` and `_restarts`.

    feed(data, sink, now_ms=None) -> number of frames passed to sink(frame); `frame` is a
    memoryview into the buffer, valid only during the call. Bad input never raises: it is
    dropped and counted (`dropped_bytes`, `bad_checksum`, `oversize`, `stalled`).
    """

    START = 0
    START_LAST = -1  # -1: only START opens a frame
    HEAD = 1
    SIZE = 1

    def __init__(self, stall_ms=_STALL_MS):
        self._buf = bytearray(self.SIZE)
        self._mv = memoryview(self._buf)
        self.stall_ms = stall_ms
        self._last_ms = None
        self.frames = 0
        self.dropped_bytes = 0
        self.bad_checksum = 0
        self.oversize = 0
        self.stalled = 0
        self.reset()

    def reset(self):
        """Forget any partial frame (e.g. after a reconnect); counters are kept."""
        self._n = 0
        self._need = 0

    def pending(self):
        """Bytes of the partial frame held."""
        return self._n

    def expected(self):
        """The length of the partial frame held once its header was read, else 0."""
        return self._need

    def _drop_partial(self):
        self.dropped_bytes += self._n
        self._n = 0
        self._need = 0

    # ---- family hooks -------------------------------------------------------------
    def _frame_len(self, buf):
        """Total frame length from the HEAD bytes; 0 = not a frame header, -1 = too big."""
        raise NotImplementedError

    def _check(self, buf, n):
        """True when the n-byte frame's checksum (and trailer) are right."""
        raise NotImplementedError

    def _restarts(self, src, i, end):
        """True when a notification starting at src[i] opens a new frame (restart on it)."""
        return False

    def _skip(self, src, i, end):
        """Index of the first byte of src worth assembling (JK drops injected AT\\r\\n)."""
        return i

    # ---- the loop ------------------------------------------------------------------
    def feed(self, data, sink, now_ms=None):
        if now_ms is not None:
            last = self._last_ms
            self._last_ms = now_ms
            if self._n and last is not None and _ticks_diff(now_ms, last) > self.stall_ms:
                self.stalled += 1
                self._drop_partial()
        # bytes/bytearray are indexed directly; anything else must offer the buffer protocol.
        src = data
        if type(data) is not bytes and type(data) is not bytearray:
            try:
                src = memoryview(data)
            except TypeError:
                return 0
        end = len(src)
        i = self._skip(src, 0, end)
        if self._n and i < end and self._restarts(src, i, end):
            self._drop_partial()
        return self._consume(src, i, end, sink)

    def _resync(self):
        """The held bytes are not a good frame: drop them up to the next start byte."""
        n = self._n
        buf = self._buf
        lo = self.START
        hi = self.START_LAST if self.START_LAST >= 0 else lo
        j = 1
        while j < n and not lo <= buf[j] <= hi:
            j += 1
        self.dropped_bytes += j
        if j < n:
            self._mv[0:n - j] = self._mv[j:n]
        self._n = n - j
        self._need = 0

    def _consume(self, src, i, end, sink):
        frames = 0
        buf = self._buf
        lo = self.START
        hi = self.START_LAST if self.START_LAST >= 0 else lo
        while True:
            n = self._n
            if n == 0:
                j = i
                while j < end and not lo <= src[j] <= hi:
                    j += 1
                self.dropped_bytes += j - i
                i = j
                if i >= end:
                    break
            want = self._need or self.HEAD
            if n < want:
                if i >= end:
                    break
                k = want - n
                if k > end - i:
                    k = end - i
                if i == 0 and k == end:
                    self._mv[n:n + k] = src  # the usual case: a whole notification
                else:
                    self._mv[n:n + k] = memoryview(src)[i:i + k]
                i += k
                n += k
                self._n = n
                if n < want:
                    break
            if not self._need:
                need = self._frame_len(buf)
                if need > self.SIZE or need < 0:
                    self.oversize += 1
                    self._resync()
                elif need < self.HEAD:
                    self._resync()
                else:
                    self._need = need
                continue
            need = self._need
            if self._check(buf, need):
                self.frames += 1
                frames += 1
                try:
                    sink(self._mv[:need])
                finally:
                    # Bytes held beyond the frame (only after a resync) start the next one.
                    rest = n - need
                    if rest:
                        self._mv[0:rest] = self._mv[need:n]
                    self._n = rest
                    self._need = 0
            else:
                self.bad_checksum += 1
                self._resync()
        return frames

    def stats(self):
        return {
            "frames": self.frames,
            "dropped_bytes": self.dropped_bytes,
            "bad_checksum": self.bad_checksum,
            "oversize": self.oversize,
            "stalled": self.stalled,
        }
