# Event log: timestamped events persisted as JSON lines in two segment files used in turn. A
# segment takes `capacity` lines; when it is full the other one is truncated and written
# next, so the flash always holds the last `capacity` events (at most 2 x capacity lines) and
# a flush only ever appends a few lines to one file.
#
# The heap holds only what is not on flash yet, as JSON lines in one fixed buffer: a ring of
# event objects in RAM grew to 23 KB when full (a quarter of the board's heap, peppered
# across it), so reads stream from the files instead. Flushes are batched (every `flush_s`,
# at MAX_PENDING events, or at once for important kinds) to keep flash wear low; the app
# calls flush() from its loop.
import json
import time

from smartbms import clock

MAX_KIND = 16
MAX_MSG = 120
MAX_PENDING = 8
PENDING_BYTES = 512  # half a dozen typical lines; a longer burst flushes early
# Kinds written to flash straight away: they often come right before a reset.
IMPORTANT = ("fault", "boot", "reboot", "ota", "error", "safety")

_EPOCH_2024 = 1704067200
# ports whose time.time() counts from 2000 instead of 1970
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


def wall_time():
    """Unix epoch seconds, or None while the clock is not set (before 2024)."""
    t = int(time.time()) + _EPOCH_OFFSET
    return t if t >= _EPOCH_2024 else None


def _parse_line(line):
    """[seq, up_s, t, kind, msg] from one stored line, or None for a damaged one."""
    try:
        e = json.loads(line)
    except ValueError:
        return None
    if type(e) is not list or len(e) != 5 or type(e[0]) is not int:
        return None
    return e


def _lines_of(name, chunk=256):
    """The lines of a file, read a chunk at a time (a file's own line reading goes a byte
    at a time); a last line without its newline is yielded too. Nothing for no file.
    Each line is cut from its chunk (a line across two chunks is joined alone): the blocks
    this asks for are a chunk and a line, never a chunk plus what was left of the last."""
    try:
        f = open(name, "rb")  # bytes: damaged UTF-8 must not stop a read
    except OSError:
        return
    try:
        rest = b""
        while True:
            data = f.read(chunk)
            if not data:
                break
            start = 0
            while True:
                end = data.find(b"\n", start) + 1
                if not end:
                    break
                if rest:
                    yield rest + data[start:end]
                    rest = b""
                else:
                    yield data[start:end]
                start = end
            if start < len(data):
                rest = rest + data[start:] if rest else data[start:]
        if rest:
            yield rest
    finally:
        f.close()


class EventLog:
    def __init__(self, path=None, capacity=200, flush_s=120, now=None, wall=None):
        if path is None:
            from smartbms import paths

            path = paths.path("events")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.segments = (path + "0.log", path + "1.log")
        self.capacity = capacity
        self.flush_s = flush_s
        self._now = now or clock.now
        self._wall = wall or wall_time
        self._buf = bytearray(PENDING_BYTES)  # pending events, one JSON line each
        self._used = 0
        self._pending = 0
        self._urgent = False
        self._lines = [0, 0]  # lines each segment holds
        self._next_seq = 1
        self._active = 0  # segment being appended to
        self._torn = False  # the active segment ends in a partial line
        self._wall_base = None  # wall time minus uptime, once this boot knows the time
        self.write_errors = 0
        self.skipped_lines = 0
        self.dropped = 0  # pending events given up because the flash refused them too long
        self.listener = None  # fn(kind, msg) told of each event (smartbms.alerts); must not raise
        self._load()
        self._boot_seq = self._next_seq
        self._last_flush = self._now()

    # ---- loading ----
    def _scan(self, name):
        """Count one segment -> (lines, last seq, ends with a newline)."""
        lines = last = 0
        newline = True
        for line in _lines_of(name):
            lines += 1
            newline = line[-1:] == b"\n"
            e = _parse_line(line)
            if e is None:
                self.skipped_lines += 1
            elif e[0] > last:
                last = e[0]
        return lines, last, newline

    def _load(self):
        a = self._scan(self.segments[0])
        b = self._scan(self.segments[1])
        active = 1 if b[1] > a[1] or (b[0] and not a[0]) else 0
        top = max(a[1], b[1])
        # events added but not yet flushed before a reset may have used up to
        # MAX_PENDING numbers past the last one on flash: skip them so seq never repeats
        self._next_seq = top + 1 + MAX_PENDING if top else 1
        self._lines = [a[0], b[0]]
        self._active = active
        self._torn = not (b if active else a)[2]

    # ---- adding ----
    def add(self, kind, message):
        """Record an event; returns its seq."""
        kind = kind if type(kind) is str else str(kind)
        if len(kind) > MAX_KIND:
            kind = kind[:MAX_KIND]
        msg = message if type(message) is str else str(message)
        if len(msg) > MAX_MSG:
            msg = msg[:MAX_MSG]
        up = self._now()
        self._note_wall(up)
        seq = self._next_seq
        self._next_seq = seq + 1
        line = json.dumps((seq, up, self._wall(), kind, msg)).encode()
        n = len(line) + 1
        if self._used + n > PENDING_BYTES:
            self.flush(force=True)
            while self._used + n > PENDING_BYTES:  # the flash keeps refusing: oldest go
                self._drop_first()
        self._buf[self._used:self._used + n - 1] = line
        self._buf[self._used + n - 1] = 10
        self._used += n
        self._pending += 1
        if kind in IMPORTANT:
            self._urgent = True
            self.flush()
        elif self._pending >= MAX_PENDING:
            self.flush(force=True)
        if self.listener is not None:  # alerts and MQTT events (smartbms.alerts), when on
            self.listener(kind, msg)
        return seq

    def _note_wall(self, up):
        # the clock just got set: this boot's earlier events are dated from their uptime
        if self._wall_base is None:
            t = self._wall()
            if t is not None:
                self._wall_base = t - up

    def _drop_first(self):
        end = self._buf.find(b"\n", 0, self._used) + 1
        self._buf[:self._used - end] = self._buf[end:self._used]
        self._used -= end
        self._pending -= 1
        self.dropped += 1

    # ---- reading ----
    @property
    def last_seq(self):
        return self._next_seq - 1 if len(self) else 0

    def __len__(self):
        return min(self._lines[0] + self._lines[1] + self._pending, self.capacity)

    def recent(self, n=50, since_seq=None):
        """Events as dicts {seq, up_s, t, kind, msg}, oldest first: the newest `n`, or with
        `since_seq` the first `n` after that seq (a client pages forward without gaps)."""
        return list(self.iter_recent(n, since_seq))

    def iter_recent(self, n=50, since_seq=None):
        """recent() one event at a time, read from flash as they are asked for."""
        total = self._lines[0] + self._lines[1] + self._pending
        skip = total - min(total, self.capacity)  # the log keeps the newest `capacity`
        if since_seq is None:
            skip = max(skip, total - n)
        last = since_seq or 0
        for line in self._all_lines():
            if skip:  # counted, not parsed: a page of the newest events reads fast
                skip -= 1
                continue
            if n <= 0:
                return
            e = _parse_line(line)
            if e is None or e[0] <= last:  # also what a flush during a slow read moved
                continue
            last = e[0]
            n -= 1
            t = e[2]
            if t is None and self._wall_base is not None and e[0] >= self._boot_seq:
                t = self._wall_base + e[1]
            yield {"seq": e[0], "up_s": e[1], "t": t, "kind": e[3], "msg": e[4]}

    def _all_lines(self):
        for name in (self.segments[self._active ^ 1], self.segments[self._active]):
            for line in _lines_of(name):
                yield line
        start = 0
        while True:
            end = self._buf.find(b"\n", start, self._used)
            if end < 0:
                return
            yield self._buf[start:end]
            start = end + 1

    # ---- persisting ----
    @property
    def pending(self):
        return self._pending

    def flush(self, force=False):
        """Write pending events if forced, urgent or `flush_s` passed; returns how many."""
        n = self._pending
        if not n:
            return 0
        now = self._now()
        if not (force or self._urgent or now - self._last_flush >= self.flush_s):
            return 0
        self._last_flush = now
        self._note_wall(now)
        cap = self.capacity
        buf = memoryview(self._buf)
        start = 0
        f = None
        try:
            f = open(self.segments[self._active], "ab")
            if self._torn:
                f.write(b"\n")  # end the partial line so the next one parses
                self._torn = False
            while start < self._used:
                if self._lines[self._active] >= cap:
                    f.close()
                    f = None
                    self._active ^= 1
                    self._lines[self._active] = 0
                    f = open(self.segments[self._active], "wb")
                end = self._buf.find(b"\n", start, self._used) + 1
                f.write(buf[start:end])
                start = end
                self._lines[self._active] += 1
                self._pending -= 1
            f.close()
            f = None
        except OSError:
            self.write_errors += 1
            self._torn = True  # a line may have been cut; a stray "\n" is harmless
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        # what was written leaves the buffer
        self._buf[:self._used - start] = buf[start:self._used]
        self._used -= start
        if self._pending:
            return n - self._pending
        self._urgent = False
        return n
