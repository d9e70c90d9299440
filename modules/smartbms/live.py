# Live updates for the web UI: GET /api/live, a server-sent event stream that pushes the
# status document every PERIOD_MS (real time) and new event-log lines as they come. Polling
# /api/status stays the fallback (the UI switches to it when a stream is refused or drops).
#
# Memory is bounded: at most MAX_STREAMS streams at once (the next is answered 503 at once,
# before anything is built), each costs one status document at a time, the same a poll
# costs, minus the request parsing; nothing is queued per stream (a slow reader blocks only
# its own writes, which time out after WRITE_TIMEOUT_MS and end the stream). A stream ends
# after MAX_STREAM_MS and the browser's EventSource reconnects by itself after RETRY_MS: a
# phone that vanished without closing its socket does not hold a stream for long.
# A stream does not keep one of the server's request slots (httpd.MAX_ACTIVE): it counts
# against MAX_STREAMS instead, so two open dashboards leave every slot to requests.
from microdot import Response

from smartbms import clock
from smartbms.jsonpieces import chunks

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

PATH = "/api/live"
MAX_STREAMS = const(2)
PERIOD_MS = const(2000)
MAX_STREAM_MS = const(300000)
WRITE_TIMEOUT_MS = const(10000)
RETRY_MS = const(3000)
EVENTS_PER_PUSH = const(20)

_HEAD = ("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
         "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\nretry: %d\n\n" % RETRY_MS).encode()


class Live:
    def __init__(self, app, ctx, status_doc):
        self.app = app
        self.ctx = ctx
        self.status_doc = status_doc
        self.streams = 0
        self.refused = 0
        self.period_ms = PERIOD_MS  # per instance: tests shorten them
        self.max_stream_ms = MAX_STREAM_MS

    async def _send(self, w, kind, doc):
        # one timeout for the whole push, not a task per write
        await self.app.deadlines.wait(self._write(w, kind, doc), WRITE_TIMEOUT_MS)

    @staticmethod
    async def _write(w, kind, doc):
        # the document in chunks of one reused buffer (smartbms.jsonpieces; JSON has no
        # newline, so they make one data line): no 2 KB string and its bytes copy every
        # period per stream (asyncio's Stream copies what a full socket did not take)
        await w.awrite(kind)
        for chunk in chunks(doc):
            await w.awrite(chunk)
        await w.awrite(b"\n\n")

    async def handle(self, req):
        if self.streams >= MAX_STREAMS:
            self.refused += 1
            return Response({"error": "too many live streams: poll /api/status"}, 503, {"Retry-After": "30"})
        w = req.sock[1]
        self.streams += 1
        self.app.active -= 1  # see the module comment: the stream gives its request slot back
        try:
            await self._run(req, w)
        except Exception:  # noqa: BLE001 - the reader left, or stopped reading: the stream ends
            pass
        finally:
            self.app.active += 1
            self.streams -= 1
        return Response.already_handled

    async def _run(self, req, w):
        events = self.ctx.events
        since = req.args.get("since")
        seq = int(since) if since and since.isdigit() else events.last_seq
        await self.app.deadlines.wait(w.awrite(_HEAD), WRITE_TIMEOUT_MS)
        t0 = clock.ticks_real_ms()
        while clock.real_ms_since(t0) < self.max_stream_ms:
            if events.last_seq != seq:
                new = events.recent(EVENTS_PER_PUSH, seq)
                if new:
                    seq = new[-1]["seq"]
                    await self._send(w, b"event: events\ndata: ", {"events": new, "last_seq": events.last_seq})
                    new = None
                else:
                    seq = events.last_seq
            await self._send(w, b"event: status\ndata: ", self.status_doc(self.ctx))
            await clock.sleep_real_ms(self.period_ms)


def install(app, ctx, status_doc):
    """GET /api/live on `app` (authenticated by the web layer's guard); returns the Live."""
    live = Live(app, ctx, status_doc)
    app.route(PATH)(live.handle)
    return live
