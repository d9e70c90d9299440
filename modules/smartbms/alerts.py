# Alerts: the events an owner must hear about (an alarm, a fault, a charge timeout, lost BMS
# data, a completed full charge, an OTA result), picked from the event log as they are written
# (EventLog.listener), go to <base>/events over MQTT and, with alert_url set, to an ntfy-style
# HTTP POST (body = the message; Title, Tags and Priority headers; a Bearer token if set).
# At most one POST per kind per _RATE_MS (what happens meanwhile is counted in the next one);
# every wait is bounded and the POST runs in its own task: control never waits on it.
# Loaded only while alert_url is set (App._integrations; with MQTT alone its client picks the
# events itself, smartbms.alertkinds); the POST (smartbms.alertpost) only while one is sent.
import asyncio

from smartbms import clock, unload
from smartbms.alertkinds import kind_of, pick  # noqa: F401 (kind_of: this module's API too)

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_RATE_MS = const(1800000)  # once per 30 min per kind
_POST = ("smartbms.alertpost",)


class Alerts:
    """The event-log listener: picks alerts, hands them to MQTT and the POST task."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._state = ctx.controller.state if ctx.controller is not None else None
        self._pending = None  # kind -> [message, events folded in]: at most one per kind
        self._sent = None  # kind -> real ms of the last POST (both made once alert_url is set)
        self._task = None

    def listener(self, kind, msg):
        try:
            self._take(kind, msg)
        except Exception:  # noqa: BLE001 - an alert must never fail the event log's add()
            pass

    def _take(self, kind, msg):
        self._state, k = pick(kind, msg, self._state)
        if k is None:
            return
        mq = getattr(self.ctx, "mqtt", None)
        if mq is not None:
            mq.event(k, msg)
        if not self.ctx.settings["alert_url"]:
            return
        if self._pending is None:
            self._pending, self._sent = {}, {}
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
                    if t is not None and clock.real_ms_since(t) < _RATE_MS:
                        continue
                    msg, more = self._pending.pop(k)
                    self._sent[k] = clock.ticks_real_ms()
                    if more:
                        msg += " (and %d more)" % more
                    try:
                        await self.send(k, msg)
                    except Exception:  # noqa: BLE001 - logged by send(); the next alert of this kind tries again
                        pass
                await clock.sleep_real_ms(1000)
        finally:
            self._task = None
            unload(_POST)

    async def send(self, kind, msg, log=True):
        """POST one alert now: its HTTP status, or alertpost.AlertError (logged)."""
        from smartbms import alertpost

        s = self.ctx.settings
        title = "%s: %s" % (s["hostname"], kind.replace("_", " "))
        try:
            return await alertpost.post(s["alert_url"], s.secret("alert_token"), title, msg, kind)
        except alertpost.AlertError as e:
            if log:  # not kind "fault"/"error": a dead endpoint must not raise alerts of its own
                self.ctx.events.add("alert", "alert %s not sent: %s" % (kind, e))
            raise
