# Streaming validator for ESP32 app images (pure logic; runs on CPython and MicroPython).
# It checks what ESP-IDF's esp_image_verify checks (header, chip, segments, checksum,
# appended SHA-256) plus the smartbms policy: the first DROM segment must start with an
# app descriptor naming project "micropython" and a smartbms version N.N.N. Data may be
# fed in chunks of any size; memory use is constant (a few small buffers).
import struct
import hashlib

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

IMAGE_MAGIC = const(0xE9)
DESC_MAGIC = 0xABCD5432
HEADER_LEN = const(24)
SEG_HDR_LEN = const(8)
DESC_LEN = const(256)
DESC_OFFSET = const(32)  # header + first segment header
MAX_SEGMENTS = const(16)
PROJECT = "micropython"
PUSH_HINT = "push micropython.bin (the app image), not firmware.bin"

CHIP_NAMES = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2",
              13: "ESP32-C6", 16: "ESP32-H2", 18: "ESP32-P4"}

# Address windows (ESP32): the app's first segment is flash-mapped data (DROM); a
# bootloader loads straight into internal RAM.
_DROM_LO = 0x3F400000
_DROM_HI = 0x3F800000

# states of the parser
_HEADER = const(0)
_SEG_HDR = const(1)
_SEG_DATA = const(2)
_PAD = const(3)
_CHECKSUM = const(4)
_HASH = const(5)
_DONE = const(6)


class ImageError(ValueError):
    pass


def _cstr(buf, start, length):
    end = start
    stop = start + length
    while end < stop and buf[end] != 0:
        end += 1
    try:
        return bytes(buf[start:end]).decode()
    except UnicodeError:
        return None


def parse_desc(buf, offset=0):
    """(project, version) from an esp_app_desc_t at buf[offset:], or None without one."""
    if len(buf) < offset + 0x50:
        return None
    if struct.unpack_from("<I", buf, offset)[0] != DESC_MAGIC:
        return None
    return _cstr(buf, offset + 0x30, 32), _cstr(buf, offset + 0x10, 32)


def is_version(text):
    """N.N.N, optionally followed by -suffix or +suffix (e.g. 1.2.0-rc1)."""
    if not text:
        return False
    core = text
    for sep in "-+":
        i = core.find(sep)
        if i >= 0:
            core = core[:i]
    parts = core.split(".")
    if len(parts) != 3:
        return False
    for p in parts:
        if not p or not p.isdigit():
            return False
    return True


def _xor_fold(data):
    # XOR of all bytes via one big integer folded onto itself: far faster than a Python
    # loop, with short-lived temporaries (used where viper is not available).
    n = len(data)
    if not n:
        return 0
    x = int.from_bytes(data, "little")
    h = 1
    while h < n:
        h <<= 1
    h >>= 1
    while h:
        bits = h * 8
        x = (x ^ (x >> bits)) & ((1 << bits) - 1)
        h >>= 1
    return x


try:
    from smartbms.ota._xor_native import xor_bytes as _xor_viper

    def _xor_bytes(data):
        return _xor_viper(data, len(data))
except (ImportError, SyntaxError, NameError, ValueError):
    _xor_bytes = _xor_fold


class ImageChecker:
    """Feed an image with feed(chunk); finish() returns a dict or raises ImageError.

    slot_size: bytes the target slot holds. expected_sha256: hex or bytes digest the
    whole body must have (X-Image-SHA256), or None. app_policy=False checks only what
    ESP-IDF's own verification checks (used by the simulated set_boot). in_slot=True
    stops at the image end (reading a slot, which is padded with 0xFF) instead of
    refusing trailing bytes. body_digest=False skips hashing the whole body a second time
    when no expected digest is given (the appended SHA-256 still covers the image)."""

    def __init__(self, slot_size, expected_sha256=None, app_policy=True, in_slot=False, body_digest=True):
        self.slot_size = slot_size
        self.app_policy = app_policy
        self.in_slot = in_slot
        self.expected = digest_bytes(expected_sha256) if expected_sha256 is not None else None
        self._img_hash = hashlib.sha256()
        want_body = not in_slot and (body_digest or self.expected is not None)
        self._body_hash = hashlib.sha256() if want_body else None
        self._buf = bytearray(HEADER_LEN)  # header, then segment headers
        self._hash_buf = bytearray(32)
        self._desc = bytearray(DESC_LEN)
        self._desc_len = 0
        self._need = HEADER_LEN
        self._have = 0
        self._state = _HEADER
        self._checksum = 0xEF
        self._segments = 0
        self._seg_index = 0
        self._seg_left = 0
        self._hash_appended = False
        self._offset = 0
        self._pos_done = 0
        self.received = 0  # body bytes fed so far
        self.image_len = 0  # bytes that belong to the image (set when complete)
        self.project = None
        self.version = None
        self.chip = None
        self.digest = None  # SHA-256 of the whole body, when finished (and computed)
        self.image_digest = None  # SHA-256 of the image before its appended hash

    @property
    def complete(self):
        return self._state == _DONE

    def check_length(self, length):
        """Refuse early a declared body length that cannot be a valid image."""
        if length > self.slot_size:
            raise ImageError("image is %d bytes, larger than the %d-byte app slot" % (length, self.slot_size))
        if length < HEADER_LEN + SEG_HDR_LEN + DESC_LEN:
            raise ImageError("image is only %d bytes: too short to be an app image" % length)

    def feed(self, data):
        """Consume a chunk. Returns True once the image end was reached."""
        mv = memoryview(data)
        n = len(mv)
        if self.received + n > self.slot_size and not self.in_slot:
            raise ImageError("image is larger than the %d-byte app slot" % self.slot_size)
        if self._body_hash is not None:
            self._body_hash.update(mv)
        self.received += n
        pos = 0
        while pos < n:
            st = self._state
            if st == _DONE:
                if self.in_slot:
                    return True
                self._trailing(n - pos)
            take = min(self._need - self._have, n - pos) if st != _SEG_DATA else min(self._seg_left, n - pos)
            part = mv[pos:pos + take]
            pos += take
            if st == _SEG_DATA:
                self._img_hash.update(part)
                self._checksum ^= _xor_bytes(part)
                if self._seg_index == 0 and self._desc_len < DESC_LEN:
                    k = min(DESC_LEN - self._desc_len, take)
                    self._desc[self._desc_len:self._desc_len + k] = part[:k]
                    self._desc_len += k
                    if self._desc_len == DESC_LEN:
                        self._check_desc()
                self._seg_left -= take
                if self._seg_left == 0:
                    self._end_segment()
                continue
            if st == _HASH:
                self._hash_buf[self._have:self._have + take] = part
            elif st != _PAD:
                self._buf[self._have:self._have + take] = part
            if st != _HASH:
                self._img_hash.update(part)
            self._have += take
            if self._have == self._need:
                self._have = 0
                self._advance(st)
        return self._state == _DONE

    def _trailing(self, extra):
        raise ImageError("%d bytes of trailing data after the image end (at %d); %s"
                         % (self.received - self.image_len, self.image_len, PUSH_HINT))

    def _advance(self, st):
        b = self._buf
        if st == _HEADER:
            self._header(b)
        elif st == _SEG_HDR:
            addr, length = struct.unpack_from("<II", b, 0)
            self._segment(addr, length)
        elif st == _PAD:
            self._state = _CHECKSUM
            self._need = 1
        elif st == _CHECKSUM:
            if self._buf[0] != self._checksum:
                raise ImageError("checksum mismatch: image says 0x%02x, data gives 0x%02x"
                                 % (self._buf[0], self._checksum))
            if self._hash_appended:
                self._state = _HASH
                self._need = 32
            else:
                self._done()
        elif st == _HASH:
            self.image_digest = self._img_hash.digest()
            if self.image_digest != bytes(self._hash_buf):
                raise ImageError("appended SHA-256 does not match the image (corrupt image)")
            self._done()

    def _done(self):
        self._state = _DONE
        self.image_len = self._pos_done

    def _header(self, b):
        if b[0] != IMAGE_MAGIC:
            raise ImageError("not an ESP32 app image (first byte 0x%02x, expected 0xE9)" % b[0])
        self._segments = b[1]
        if not 1 <= self._segments <= MAX_SEGMENTS:
            raise ImageError("bad segment count %d" % self._segments)
        chip = struct.unpack_from("<H", b, 12)[0]
        self.chip = chip
        if chip != 0:
            raise ImageError("image is for %s (chip id %d), this device is an ESP32"
                             % (CHIP_NAMES.get(chip, "another chip"), chip))
        self._hash_appended = b[23] == 1
        if self.app_policy and not self._hash_appended:
            raise ImageError("image has no appended SHA-256; not an ESP-IDF app image")
        self._offset = HEADER_LEN
        self._state = _SEG_HDR
        self._need = SEG_HDR_LEN

    def _segment(self, addr, length):
        i = self._seg_index
        self._offset += SEG_HDR_LEN
        if length % 4:
            raise ImageError("segment %d length %d is not a multiple of 4" % (i, length))
        if self._offset + length > self.slot_size:
            raise ImageError("segment %d (%d bytes at offset %d) runs past the %d-byte app slot"
                             % (i, length, self._offset, self.slot_size))
        if i == 0 and self.app_policy:
            if not _DROM_LO <= addr < _DROM_HI:
                raise ImageError("this is a bootloader or a merged firmware.bin (first segment "
                                 "loads at 0x%08x, no app descriptor); %s" % (addr, PUSH_HINT))
            if length < DESC_LEN:
                raise ImageError("first segment too short to hold the app descriptor")
        self._offset += length
        self._seg_left = length
        if length:
            self._state = _SEG_DATA
        else:
            self._end_segment()

    def _end_segment(self):
        self._seg_index += 1
        if self._seg_index < self._segments:
            self._state = _SEG_HDR
            self._need = SEG_HDR_LEN
            return
        # the checksum byte sits where the file position becomes 16-aligned
        pad = 15 - self._offset % 16
        self._offset += pad + 1
        if self._offset + (32 if self._hash_appended else 0) > self.slot_size:
            raise ImageError("image does not fit the %d-byte app slot" % self.slot_size)
        if pad:
            self._state = _PAD
            self._need = pad
        else:
            self._state = _CHECKSUM
            self._need = 1
        self._pos_done = self._offset + (32 if self._hash_appended else 0)

    def _check_desc(self):
        if not self.app_policy:
            return
        d = parse_desc(self._desc)
        if d is None:
            raise ImageError("no app descriptor in the first segment; not an ESP-IDF app "
                             "(a merged firmware.bin?); " + PUSH_HINT)
        project, version = d
        self.project, self.version = project, version
        if not project and not version:
            raise ImageError("stock MicroPython or unnamed image (empty project and version in "
                             "its app descriptor); only smartbms builds are accepted")
        if project != PROJECT:
            raise ImageError("foreign image: project %r, expected a smartbms build (project %r)"
                             % (project, PROJECT))
        if not is_version(version):
            raise ImageError("foreign image: version %r is not a smartbms version (N.N.N)" % version)

    def finish(self):
        """Call after the last chunk. Returns {"version", "project", "size", "sha256"}."""
        if self._state != _DONE:
            raise ImageError("image truncated: ended after %d bytes, inside %s"
                             % (self.received, _STATE_NAMES[self._state]))
        if not self.in_slot and self.received != self.image_len:
            self._trailing(self.received - self.image_len)
        if self.app_policy and self.version is None:
            self._check_desc()
        digest = self._body_hash.digest() if self._body_hash is not None else None
        self.digest = digest
        if self.expected is not None and digest != self.expected:
            raise ImageError("SHA-256 of the upload does not match X-Image-SHA256")
        return {"version": self.version, "project": self.project, "size": self.image_len,
                "sha256": _hex(digest) if digest else None,
                "image_sha256": _hex(self._hash_buf) if self._hash_appended else None}


_STATE_NAMES = ("the header", "a segment header", "segment data", "the checksum padding",
                "the checksum", "the appended SHA-256", "nothing")


def _hex(b):
    return "".join("%02x" % x for x in b)


def digest_bytes(d):
    """32 bytes from a SHA-256 given as bytes or 64 hex digits; ImageError otherwise."""
    if isinstance(d, (bytes, bytearray)):
        if len(d) != 32:
            raise ImageError("expected SHA-256 must be 32 bytes")
        return bytes(d)
    d = d.strip().lower()
    if len(d) != 64:
        raise ImageError("X-Image-SHA256 must be 64 hex digits")
    try:
        out = bytes(int(d[i:i + 2], 16) for i in range(0, 64, 2))
    except ValueError:
        raise ImageError("X-Image-SHA256 must be 64 hex digits")
    for ch in d:
        if ch not in "0123456789abcdef":
            raise ImageError("X-Image-SHA256 must be 64 hex digits")
    return out


def check(data, slot_size, expected_sha256=None, chunk=4096):
    """Validate a whole image held in memory (host tools and tests)."""
    c = ImageChecker(slot_size, expected_sha256)
    mv = memoryview(data)
    for i in range(0, len(mv), chunk):
        c.feed(mv[i:i + chunk])
    return c.finish()
