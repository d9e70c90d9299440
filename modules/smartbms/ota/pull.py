# The client side of POST /api/ota/url: a strict URL check, one GET over HTTP(S), a bounded
# response head, and a body stream for smartbms.ota.http.receive() that enforces both a
# stall timeout and an overall deadline. A hostile or broken server can hold the single OTA
# lock for at most DEADLINE_MS and cannot make the device allocate more than MAX_HEAD bytes
# for the head. The caller closes the connection (close(), from smartbms.netio) on every path.
import asyncio

from smartbms import clock
from smartbms.netio import close, connect

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

MAX_URL = const(512)
MAX_HEAD = const(4096)  # status line + headers
MAX_HEADER_LINES = const(32)
# real ms (a network is not sped up with the simulated clock); plain ints so tests can shrink them
HEAD_DEADLINE_MS = 15000  # connect, request, status line and headers
DEADLINE_MS = 300000  # the whole pull, head included (a 1.8 MB slot at >= 6 KB/s)
_CHUNK = const(512)
_HOST_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.-"


class PullError(Exception):
    """The server or the network failed the pull (502); `timeout` when a deadline passed."""

    def __init__(self, message, timeout=False):
        super().__init__(message)
        self.timeout = timeout


def _plain(s):
    # printable ASCII without spaces: nothing that could end a request line or a header
    for c in s:
        if not 0x21 <= ord(c) <= 0x7E:
            return False
    return True


def parse_url(url):
    """(scheme, host, port, path) of an http:// or https:// URL; ValueError otherwise.
    Control characters, spaces and non-ASCII are refused anywhere (they would be written
    into the request), the host must be a DNS name or an IPv4 address, the port 1-65535."""
    if len(url) > MAX_URL:
        raise ValueError("url is longer than %d characters" % MAX_URL)
    if not _plain(url):
        raise ValueError("url must be plain ASCII without spaces or control characters "
                         "(percent-encode anything else)")
    if url.startswith("http://"):
        scheme, rest, port = "http", url[7:], 80
    elif url.startswith("https://"):
        scheme, rest, port = "https", url[8:], 443
    else:
        raise ValueError("url must start with http:// or https://")
    i = rest.find("#")
    if i >= 0:
        rest = rest[:i]  # a fragment is never sent
    i = rest.find("/")
    j = rest.find("?")
    if j >= 0 and (i < 0 or j < i):
        i = j
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    if path[0] == "?":
        path = "/" + path
    if "@" in hostport:
        raise ValueError("credentials in the url are not supported")
    j = hostport.rfind(":")
    if j >= 0:
        digits = hostport[j + 1:]
        if not digits or len(digits) > 5 or not all("0" <= c <= "9" for c in digits):
            raise ValueError("bad port in url")
        port = int(digits)
        if not 1 <= port <= 65535:
            raise ValueError("bad port in url (1-65535)")
        hostport = hostport[:j]
    host = hostport.lower()
    if not host:
        raise ValueError("url has no host")
    if len(host) > 253 or not all(c in _HOST_CHARS for c in host):
        raise ValueError("url host must be a DNS name or an IPv4 address")
    for label in host.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            raise ValueError("url host must be a DNS name or an IPv4 address")
    return scheme, host, port, path


class _Deadline:
    """A real-time limit that started at construction."""

    def __init__(self, limit_ms):
        self.t0 = clock.ticks_real_ms()
        self.limit_ms = limit_ms

    def left_ms(self):
        return self.limit_ms - clock.real_ms_since(self.t0)

    def error(self, what):
        return PullError("%s within %d s" % (what, self.limit_ms // 1000), True)


class Body:
    """The response after its head: what receive() reads the image from. Every read is
    bounded by the stall timeout and by the pull's overall deadline; a network failure or a
    timeout is a PullError (the answer is 502/504, not the flash error or 408 of an upload)."""

    timed = True  # receive() adds no wait_for of its own

    def __init__(self, reader, stall_ms, deadline):
        self._r = reader
        self._stall_ms = stall_ms
        self._deadline = deadline
        self._pending = b""  # body bytes that came with the head

    async def _wait(self, coro):
        d = self._deadline
        left = d.left_ms()
        if left <= 0:
            coro.close()
            raise d.error("the pull did not finish")
        try:
            return await asyncio.wait_for(coro, min(left, self._stall_ms) / 1000)
        except asyncio.TimeoutError:
            if d.left_ms() <= 0:
                raise d.error("the pull did not finish")
            raise PullError("the server sent nothing for %d s" % (self._stall_ms // 1000), True)
        except OSError as e:  # a network failure, not the flash's
            raise PullError("the connection failed (%s)" % e)

    async def readinto(self, buf):
        p = self._pending
        if p:
            n = min(len(p), len(buf))
            buf[:n] = p[:n]
            self._pending = p[n:]
            return n
        r = self._r
        if hasattr(r, "readinto"):  # MicroPython: no allocation per read
            return await self._wait(r.readinto(buf))
        data = await self._wait(r.read(len(buf)))
        buf[:len(data)] = data
        return len(data)


async def read_head(reader, deadline):
    """(status, content_length, leftover body bytes) from the response head. Reads in small
    chunks (never an unbounded readline); PullError on anything malformed or too big."""
    buf = b""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(buf) > MAX_HEAD:
            raise PullError("the server's response head is larger than %d bytes" % MAX_HEAD)
        left = deadline.left_ms()
        if left <= 0:
            raise deadline.error("no complete response head")
        try:
            chunk = await asyncio.wait_for(reader.read(_CHUNK), left / 1000)
        except asyncio.TimeoutError:
            raise deadline.error("no complete response head")
        if not chunk:
            raise PullError("the server closed the connection before its response head ended")
        buf += chunk
    if end > MAX_HEAD:
        raise PullError("the server's response head is larger than %d bytes" % MAX_HEAD)
    lines = buf[:end].split(b"\r\n")
    if len(lines) - 1 > MAX_HEADER_LINES:
        raise PullError("the server sent more than %d header lines" % MAX_HEADER_LINES)
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise PullError("not an HTTP response")
    status = int(parts[1])
    length = None
    for h in lines[1:]:
        i = h.find(b":")
        if i <= 0:
            raise PullError("malformed header line from the server")
        name = h[:i].strip().lower()
        value = h[i + 1:].strip()
        if name == b"content-length":
            if not value.isdigit() or len(value) > 9 or (length is not None and int(value) != length):
                raise PullError("bad Content-Length from the server")
            length = int(value)
        elif name == b"transfer-encoding" and value.lower() != b"identity":
            raise PullError("the server sent a %s body; it must send Content-Length" % value.decode())
    return status, length, buf[end + 4:]


async def open_image(url, stall_ms):
    """Connect, send the GET, read the head. Returns (writer, Body, length); the writer is
    the caller's to close. Raises ValueError (a URL or build problem: 422) or PullError."""
    scheme, host, port, path = parse_url(url)
    ssl = None
    if scheme == "https":
        from smartbms.netio import tls_context

        ssl = tls_context()  # no certificate check: the image hash is the trust anchor
        if ssl is None:
            raise ValueError("https is not available on this build; use http:// with sha256")
    whole = _Deadline(DEADLINE_MS)
    deadline = _Deadline(min(HEAD_DEADLINE_MS, DEADLINE_MS))
    try:
        reader, writer = await connect(host, port, deadline.limit_ms, ssl)
    except asyncio.TimeoutError:
        raise deadline.error("cannot connect to %s:%d" % (host, port))
    except OSError as e:
        raise PullError("cannot connect to %s:%d (%s)" % (host, port, e))
    ok = False
    try:
        writer.write(("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: smartbms-ota\r\n"
                      "Connection: close\r\n\r\n" % (path, host)).encode())
        await asyncio.wait_for(writer.drain(), max(deadline.left_ms(), 1) / 1000)
        status, length, rest = await read_head(reader, deadline)
        if status != 200:
            raise PullError("the server answered HTTP %d" % status)
        if length is None:
            raise ValueError("the server sent no Content-Length")
        body = Body(reader, stall_ms, whole)
        body._pending = rest
        ok = True
        return writer, body, length
    except asyncio.TimeoutError:
        raise deadline.error("the server did not take the request")
    except OSError as e:
        raise PullError("the connection failed (%s)" % e)
    finally:
        if not ok:
            await close(writer)
