# Writes an app image into the inactive slot while it streams in: each 1 KB piece is
# validated (smartbms.ota.image) before it is written, the slot is read back and re-hashed
# after the last piece, and only then does set_boot() make it the boot slot. Any failure
# leaves otadata (the boot choice) and the running slot untouched. Never holds the image
# in RAM: one 1 KB buffer, allocated once at boot by the ota package (shared: one upload at
# a time) plus the validator's small state. A 4 KB flash sector is erased when its first
# piece arrives and the pieces are then programmed into it (NOR flash programs without an
# erase); a whole-sector buffer cost 3 KB more of the heap for the device's whole life.
# The image's first word is programmed last: until the whole image is in the slot it has
# no header magic, so a power cut mid-upload never leaves a slot that looks like it holds
# a version.
import hashlib

from smartbms import ota
from smartbms.ota.image import ImageChecker, ImageError

PIECE = 512  # bytes written at a time: the one buffer an upload holds (a small block, found low in a busy heap)
SECTOR = 4096  # the partition's block: the unit of an erase
HEAD = 4  # bytes of the image held back until the end


class UpdateError(Exception):
    """A failure that is not the image's fault (flash I/O, set_boot refusal)."""


class Updater:
    def __init__(self, length=None, expected_sha256=None, esp32_module=None):
        if esp32_module is None:
            import esp32 as esp32_module
        self.running = esp32_module.Partition(esp32_module.Partition.RUNNING)
        self.target = self.running.get_next_update()
        info = self.target.info()
        self.label = info[4]
        self.slot_size = info[3]
        # the appended SHA-256 covers the image; a second whole-body hash only to check
        # an X-Image-SHA256 the client sent
        self.checker = ImageChecker(self.slot_size, expected_sha256, body_digest=False)
        if length is not None:
            self.checker.check_length(length)
        self.length = length
        self._block = bytearray(PIECE)  # made per upload, a small block: nothing for the idle heap
        self._mv = memoryview(self._block)
        self._fill = 0
        self._pos = 0  # slot offset of the piece in the buffer
        self._wrote = False
        self._first = None

    def space(self):
        """A memoryview of the free part of the piece buffer (to read into)."""
        return self._mv[self._fill:]

    def commit(self, n):
        """n bytes were placed at space()[:n]; validate them and write full pieces.
        Returns True when a piece was written (a good moment to yield)."""
        self.checker.feed(self._mv[self._fill:self._fill + n])
        self._fill += n
        if self._fill == PIECE:
            self._flush()
            return True
        return False

    def write(self, data):
        """Feed bytes of any length (copies through the block buffer)."""
        mv = memoryview(data)
        pos = 0
        while pos < len(mv):
            room = self.space()
            k = min(len(room), len(mv) - pos)
            room[:k] = mv[pos:pos + k]
            pos += k
            self.commit(k)

    def _flush(self):
        for i in range(self._fill, PIECE):
            self._block[i] = 0xFF  # erased flash: programming it changes nothing
        sector, offset = divmod(self._pos, SECTOR)
        try:
            if self._pos == 0:
                ota.slot_changed()  # the other slot's version is read again when next asked
                self._first = bytes(self._mv[:HEAD])
                for i in range(HEAD):
                    self._block[i] = 0xFF
            if offset == 0:
                self.target.ioctl(6, sector)  # erase the sector this piece starts
                self._wrote = True
            self.target.writeblocks(sector, self._block, offset)  # program only
        except OSError as e:
            raise UpdateError("flash write failed at offset 0x%x: %s" % (self._pos, e))
        self._pos += PIECE
        self._fill = 0

    def finish(self):
        """Validate the end, verify the written slot, activate it. Returns the image info."""
        self.end()
        self.verify()
        return self.activate()

    def end(self):
        """The body is complete: check the image end and write the last partial block."""
        self.info = self.checker.finish()
        if self._fill:
            self._flush()
        ota.slot_changed()
        try:
            self.target.writeblocks(0, self._first, 0)  # program only: no erase
        except OSError as e:
            raise UpdateError("flash write failed at block 0: %s" % e)
        self._first = None

    def activate(self):
        info = self.info
        try:
            self.target.set_boot()
        except OSError as e:
            raise UpdateError("the bootloader check refused the written image (%s)" % e)
        info["slot"] = self.label
        return info

    def verify(self):
        """Read the slot back and compare its SHA-256 with the one computed while streaming."""
        for _ in self.verify_steps():
            pass

    def verify_steps(self):
        """verify() one block per step, so an async caller can yield between blocks.
        Re-hashes the slot up to the appended hash and compares with the digest computed
        while streaming; the appended hash itself must read back unchanged too."""
        c = self.checker
        h = hashlib.sha256()
        left = c.image_len - 32 if c.image_digest is not None else c.image_len
        pos = 0
        while left > 0:
            try:
                self.target.readblocks(pos // SECTOR, self._block, pos % SECTOR)
            except OSError as e:
                raise UpdateError("flash read-back failed at offset 0x%x: %s" % (pos, e))
            k = min(left, PIECE)
            h.update(self._mv[:k])
            left -= k
            pos += PIECE
            yield pos
        tail_ok = True
        if c.image_digest is not None:
            tail = bytearray(32)
            try:
                self.target.readblocks(0, tail, c.image_len - 32)
            except OSError as e:
                raise UpdateError("flash read-back failed: %s" % e)
            tail_ok = tail == c._hash_buf
        want = c.image_digest if c.image_digest is not None else c.digest
        if not tail_ok or h.digest() != want:
            raise UpdateError("read-back verification failed: the slot does not hold what was sent")

    def abort(self):
        """Forget a partial image. The boot slot was never changed; erase the first block so
        the slot no longer shows a version it cannot boot."""
        if self._wrote:
            try:
                self.target.ioctl(6, 0)
            except OSError:
                pass
        self._fill = 0
        self._first = None


__all__ = ("Updater", "UpdateError", "ImageError")
