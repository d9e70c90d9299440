# Alerts: the events an owner must hear about (an alarm, a fault, a charge timeout, lost BMS
# data, a completed full charge, an OTA result), picked from the event log as they are written
# (EventLog.listener), go to <base>/events over MQTT and, with alert_url set, to an ntfy-style
# HTTP POST (body = the message; Title, Tags and Priority headers; a Bearer token if set).
# At most one POST per kind per RATE_MS (what happens meanwhile is counted in the next one);
# every wait is bounded and the POST runs in its own task: control never waits on it.
# Loaded only while MQTT or alert_url is on (App._integrations).
import asyncio

from smartbms import clock, netio

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

RATE_MS = const(1800000)  # once per 30 min per kind
TIMEOUT_MS = const(10000)
# kind -> (Tags, Priority) as ntfy reads them
KINDS = {"alarm": ("warning", "4"), "fault": ("rotating_light", "5"), "timeout": ("hourglass", "4"),
         "no_data": ("satellite", "4"), "full": ("battery", "3"), "ota": ("package", "3"), "test": ("test_tube", "3")}


class AlertError(Exception):
    pass


def kind_of(kind, msg, last_state):
    """The alert kind of an event-log entry, or None. last_state: the charger state before this
    entry (a "resting" after charging/balancing is a completed full charge)."""
    if kind == "fault":
        if msg.startswith("alarm "):
            return None if msg.endswith(" ended") else "alarm"
        return None if msg.startswith("alarms cleared") else "fault"
    if kind == "charge":
        if msg.startswith("timeout:"):
            return "timeout"
        if msg.startswith("no_data:") and last_state not in (None, "startup", "no_data"):
            return "no_data"
        if msg.startswith("resting:") and last_state in ("charging", "balancing"):
            return "full"
        return None
    if kind == "ota":
        return "ota"
    return None


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


class Alerts:
    """The event-log listener: picks alerts, hands them to MQTT and the POST task."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._state = ctx.controller.state if ctx.controller is not None else None
        self._pending = {}  # kind -> [message, events folded in]: at most one per kind
        self._sent = {}  # kind -> real ms of the last POST
        self._task = None

    def listener(self, kind, msg):
        try:
            self._take(kind, msg)
        except Exception:  # noqa: BLE001 - an alert must never fail the event log's add()
            pass

    def _take(self, kind, msg):
        last = self._state
        if kind == "charge" and ":" in msg:
            self._state = msg.split(":", 1)[0]
        k = kind_of(kind, msg, last)
        if k is None:
            return
        mq = getattr(self.ctx, "mqtt", None)
        if mq is not None:
            mq.event(k, msg)
        if not self.ctx.settings["alert_url"]:
            return
        p = self._pending.get(k)
        if p is None:
            self._pending[k] = [msg, 0]
        else:  # the latest message, and how many came before it
            p[0] = msg
            p[1] += 1
        if self._task is None:
            self._task = asyncio.create_task(self._drain())

    async def _drain(self):
        try:
            while self._pending:
                for k in list(self._pending):
                    t = self._sent.get(k)
                    if t is not None and clock.real_ms_since(t) < RATE_MS:
                        continue
                    msg, more = self._pending.pop(k)
                    self._sent[k] = clock.ticks_real_ms()
                    if more:
                        msg += " (and %d more)" % more
                    try:
                        await self.send(k, msg)
                    except AlertError:
                        pass  # logged by send(); the next alert of this kind tries again
                await clock.sleep_real_ms(1000)
        finally:
            self._task = None

    async def send(self, kind, msg, log=True):
        s = self.ctx.settings
        title = "%s: %s" % (s["hostname"], kind.replace("_", " "))
        try:
            return await post(s["alert_url"], s.secret("alert_token"), title, msg, kind)
        except AlertError as e:
            if log:  # not kind "fault"/"error": a dead endpoint must not raise alerts of its own
                self.ctx.events.add("alert", "alert %s not sent: %s" % (kind, e))
            raise
