# The notification ring of the BMS link: it takes the place of aioble's one-slot
# notification deque, so that back-to-back fragments delivered by the IRQ before the poller
# runs are all kept, in order (see smartbms.bms.link).
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


SLOTS = const(48)  # a 300-byte JK frame is 15 notifications at the default MTU


class NotifyRing:
    """Takes the place of aioble's one-slot notification deque: the notify IRQ appends
    each fragment here, the poller pops them in order. Single producer (the IRQ), single
    consumer (the poller): each side writes only its own index. While not listening,
    fragments are dropped at once (a streaming JK between polls)."""

    def __init__(self, slots=SLOTS):
        self._slots = [None] * slots
        self._n = slots
        self._head = 0  # IRQ side; indexes run modulo 2*slots so full != empty
        self._tail = 0
        self.listening = False
        self.overflow_bytes = 0

    def __len__(self):
        return (self._head - self._tail) % (2 * self._n)

    def append(self, data):
        if not self.listening:
            return
        if len(self) >= self._n:
            self.overflow_bytes += len(data)
            return
        h = self._head
        self._slots[h % self._n] = data
        self._head = (h + 1) % (2 * self._n)

    def popleft(self):
        if not len(self):
            raise IndexError("empty")
        t = self._tail
        i = t % self._n
        data = self._slots[i]
        self._slots[i] = None
        self._tail = (t + 1) % (2 * self._n)
        return data

    def clear(self):
        while len(self):
            self.popleft()
