# Event log: a bounded ring of timestamped events in RAM, persisted as JSON lines in two
# segment files used in turn. A segment takes `capacity` lines; when it is full the other
# one is truncated and written next, so the flash always holds the last `capacity` events
# (at most 2 x capacity lines) and a flush only ever appends a few lines to one file.
# Flushes are batched (every `flush_s`, at MAX_PENDING events, or at once for important
# kinds) to keep flash wear low; the app calls flush() from its loop.
import json
import time

from smartbms import clock

MAX_KIND = 16
MAX_MSG = 120
MAX_PENDING = 20
# Kinds written to flash straight away: they often come right before a reset.
IMPORTANT = ("fault", "boot", "reboot", "ota", "error", "safety")

_EPOCH_2024 = 1704067200
# ports whose time.time() counts from 2000 instead of 1970
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


def wall_time():
    """Unix epoch seconds, or None while the clock is not set (before 2024)."""
    t = int(time.time()) + _EPOCH_OFFSET
    return t if t >= _EPOCH_2024 else None


# In RAM, wall times are kept as seconds since 2024: a small int on the ESP32 (until 2058)
# where the epoch value would be a 32-byte long int in every event.
def _parse_line(line):
    try:
        e = json.loads(line)
    except ValueError:
        return None
    if type(e) is not list or len(e) != 5 or type(e[0]) is not int:
        return None
    t = e[2]
    return (e[0], e[1], None if type(t) is not int else t - _EPOCH_2024, e[3], e[4])


def _absolute(t):
    return None if t is None else t + _EPOCH_2024


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
        self._ring = [None] * capacity
        self._head = 0  # slot of the next event
        self._count = 0
        self._pending = 0  # newest events not on flash yet
        self._urgent = False
        self._next_seq = 1
        self._active = 0  # segment being appended to
        self._active_lines = 0
        self._torn = False  # the active segment ends in a partial line
        self._wall_known = False
        self.write_errors = 0
        self.skipped_lines = 0
        self._load()
        self._boot_seq = self._next_seq
        self._last_flush = self._now()

    # ---- loading ----
    def _scan(self, name, push):
        """Read one segment -> (lines, last_seq, ends_with_newline); with `push`, each
        event goes straight into the ring so a load never holds more than the ring."""
        lines = 0
        last = 0
        newline = True
        try:
            f = open(name, "rb")  # bytes: damaged UTF-8 must not stop the load
        except OSError:
            return 0, 0, True
        try:
            for line in f:
                lines += 1
                newline = line.endswith(b"\n")
                e = _parse_line(line)
                if e is None:
                    if push:
                        self.skipped_lines += 1
                    continue
                if e[0] > last:
                    last = e[0]
                if push:
                    self._push(e)
        finally:
            f.close()
        return lines, last, newline

    def _load(self):
        a = self._scan(self.segments[0], False)
        b = self._scan(self.segments[1], False)
        active = 1 if b[1] > a[1] or (b[0] and not a[0]) else 0
        self._scan(self.segments[active ^ 1], True)
        newer = self._scan(self.segments[active], True)
        top = max(a[1], b[1])
        # events added but not yet flushed before a reset may have used up to
        # MAX_PENDING numbers past the last one on flash: skip them so seq never repeats
        self._next_seq = top + 1 + MAX_PENDING if top else 1
        self._active = active
        self._active_lines = newer[0]
        self._torn = not newer[2]
        self._pending = 0

    def _push(self, e):
        self._ring[self._head] = e
        self._head = (self._head + 1) % self.capacity
        if self._count < self.capacity:
            self._count += 1

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
        t = self._wall()
        if t is not None and not self._wall_known:
            self._backfill(t, up)
        seq = self._next_seq
        self._next_seq = seq + 1
        self._push((seq, up, None if t is None else t - _EPOCH_2024, kind, msg))
        if self._pending < self.capacity:
            self._pending += 1
        if kind in IMPORTANT:
            self._urgent = True
            self.flush()
        elif self._pending >= MAX_PENDING:
            self.flush(force=True)
        return seq

    def _backfill(self, wall, up):
        # the clock just got set: date this boot's earlier events from their uptime
        self._wall_known = True
        cap = self.capacity
        for i in range(self._count):
            j = (self._head - 1 - i) % cap
            e = self._ring[j]
            if e[0] < self._boot_seq:
                break
            if e[2] is None:
                self._ring[j] = (e[0], e[1], wall - (up - e[1]) - _EPOCH_2024, e[3], e[4])

    # ---- reading ----
    @property
    def last_seq(self):
        return self._next_seq - 1 if self._count else 0

    def __len__(self):
        return self._count

    def recent(self, n=50, since_seq=None):
        """Events as dicts {seq, up_s, t, kind, msg}, oldest first: the newest `n`, or with
        `since_seq` the first `n` after that seq (a client pages forward without gaps)."""
        out = []
        if n <= 0:
            return out
        cap = self.capacity
        start = self._head - self._count
        skip = 0 if since_seq is not None else max(0, self._count - n)
        for i in range(skip, self._count):
            e = self._ring[(start + i) % cap]
            if since_seq is not None and e[0] <= since_seq:
                continue
            out.append({"seq": e[0], "up_s": e[1], "t": _absolute(e[2]), "kind": e[3], "msg": e[4]})
            if len(out) >= n:
                break
        return out

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
        t = self._wall()
        if t is not None and not self._wall_known:
            self._backfill(t, now)
        cap = self.capacity
        first = self._head - n
        f = None
        try:
            f = open(self.segments[self._active], "a")
            if self._torn:
                f.write("\n")  # end the partial line so the next one parses
                self._torn = False
            for i in range(n):
                if self._active_lines >= cap:
                    f.close()
                    f = None
                    self._active ^= 1
                    self._active_lines = 0
                    f = open(self.segments[self._active], "w")
                e = self._ring[(first + i) % cap]
                f.write(json.dumps((e[0], e[1], _absolute(e[2]), e[3], e[4])))
                f.write("\n")
                self._active_lines += 1
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
            return n - self._pending
        self._urgent = False
        return n
