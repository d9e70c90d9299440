# CPython only (tests, host tools): asyncio's stream reader read as the chip's non-blocking
# socket is, for smartbms.mqtt.conn. Frozen with the package but never imported on the chip.
import asyncio


class Staged:
    """CPython (tests, host tools): asyncio's stream reader read as the chip's non-blocking
    socket is. fill() fetches what has arrived (waiting a moment at most); readinto() hands it
    out: None when nothing is there, 0 at the end of the connection."""

    def __init__(self, reader):
        self.reader = reader
        self.data = bytearray()
        self.eof = False

    async def fill(self):
        if len(self.data) >= 4096:  # bounded as the chip's socket buffer is
            return
        try:
            d = await asyncio.wait_for(self.reader.read(4096), 0.005)
        except asyncio.TimeoutError:
            return
        if not d:
            self.eof = True
        self.data += d

    def readinto(self, mv):
        if not self.data:
            return 0 if self.eof else None
        k = min(len(mv), len(self.data))
        mv[:k] = self.data[:k]
        del self.data[:k]
        return k
