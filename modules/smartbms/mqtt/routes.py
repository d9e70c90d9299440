# The MQTT and alert parts of the HTTP API: GET /api/status's "mqtt" entry and
# POST /api/alerts/test. Loaded with the web app, so it stays tiny: the client and the
# alert sender are imported only when used.
from smartbms.actions import ApiError


def status(ctx):
    """{"enabled", "state": off|connecting|connected|waiting, "broker": "host:port", "error"}."""
    mq = getattr(ctx, "mqtt", None)
    if mq is not None and not mq.done:
        return mq.status()
    s = ctx.settings
    return {"enabled": bool(s["mqtt_enabled"]), "state": "off",
            "broker": "%s:%d" % (s["mqtt_host"], s["mqtt_port"]) if s["mqtt_host"] else None, "error": None}


def install(app, ctx):
    @app.route("/api/alerts/test", ("POST",), api=True)
    async def alerts_test(req):
        s = ctx.settings
        if not s["alert_url"]:
            raise ApiError(422, "set alert_url first", "alert_url")
        from smartbms import alertpost, alerts

        a = ctx.alerts or alerts.Alerts(ctx)
        try:
            await a.send("test", "Test alert from %s: alerts reach you." % s["hostname"], log=False)
        except alertpost.AlertError as e:
            raise ApiError(502, str(e))
        return {"sent": True}
