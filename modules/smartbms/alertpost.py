# An alert as an ntfy-style HTTP POST (body = the message; Title, Tags and Priority headers;
# a Bearer token if set), every wait bounded. Loaded by smartbms.alerts only while it sends.
import asyncio

from smartbms import netio

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

TIMEOUT_MS = const(10000)
# kind -> (Tags, Priority) as ntfy reads them
KINDS = {"alarm": ("warning", "4"), "fault": ("rotating_light", "5"), "timeout": ("hourglass", "4"),
         "no_data": ("satellite", "4"), "full": ("battery", "3"), "ota": ("package", "3"), "test": ("test_tube", "3")}


class AlertError(Exception):
    pass


def split_url(url):
    """(tls, host, port, path) of an http:// or https:// URL; AlertError otherwise."""
    if url.startswith("http://"):
        tls, rest, port = False, url[7:], 80
    elif url.startswith("https://"):
        tls, rest, port = True, url[8:], 443
    else:
        raise AlertError("alert_url must start with http:// or https://")
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    if hostport.startswith("["):  # [v6]:port
        j = hostport.find("]")
        host, tail = hostport[1:j], hostport[j + 1:]
        if tail.startswith(":"):
            port = int(tail[1:])
    elif ":" in hostport:
        host, p = hostport.rsplit(":", 1)
        port = int(p)
    else:
        host = hostport
    if not host:
        raise AlertError("alert_url has no host")
    return tls, host, port, path


def _ascii(s):
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in s)


async def post(url, token, title, message, kind):
    """POST one alert; returns the HTTP status (2xx) or raises AlertError (refused/unreachable)."""
    try:
        tls, host, port, path = split_url(url)
    except ValueError:
        raise AlertError("alert_url has a bad port")
    ctx_ssl = None
    if tls:
        ctx_ssl = netio.tls_context()  # no CA store on the device: encrypted, not authenticated
        if ctx_ssl is None:
            raise AlertError("this build has no TLS: use an http:// URL")
    tags, prio = KINDS.get(kind, ("bell", "3"))
    body = message.encode()
    head = "POST %s HTTP/1.0\r\nHost: %s\r\nTitle: %s\r\nTags: %s\r\nPriority: %s\r\n" % (
        path, host, _ascii(title), tags, prio)
    if token:
        head += "Authorization: Bearer %s\r\n" % token
    head += "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n" % len(body)
    writer = None
    try:
        reader, writer = await netio.connect(host, port, TIMEOUT_MS, ctx_ssl)
        writer.write(head.encode())
        writer.write(body)
        await asyncio.wait_for(writer.drain(), TIMEOUT_MS / 1000)
        line = await asyncio.wait_for(reader.readline(), TIMEOUT_MS / 1000)
    except AlertError:
        raise
    except Exception as e:  # noqa: BLE001 - timeout, refused, DNS: all "unreachable"
        raise AlertError("%s unreachable: %s" % (host, str(e) or type(e).__name__))
    finally:
        if writer is not None:
            await netio.close(writer)
    parts = line.split()
    status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    if not 200 <= status < 300:
        raise AlertError("%s answered %s" % (host, status or "nothing"))
    return status
