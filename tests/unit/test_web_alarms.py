# The alarms in /api/status, POST /api/alarms/clear and POST /api/charge/allow (issue 12), on
# the web layer's test server (both runtimes).
from ctrlutil import R
from smartbms import clock
from test_web import FakeCtx, request, serve


class AlarmCtx(FakeCtx):
    """FakeCtx with the app's alarm and allow_charge calls."""

    def clear_alarms(self):
        names = [a["name"] for a in self.controller.alarms_info(clock.now())]
        self.controller.clear_alarms(clock.now())
        return names

    def set_allow(self, allow, minutes=None):
        self.controller.set_allow(allow, minutes, clock.now())


def _stuck(ctx):
    """Drives the controller into a relay_stuck alarm: charge current with the relay off."""
    c = ctx.controller
    t = clock.now()
    c.update(R(soc=100, current=20.0), t)
    c.update(R(soc=100, current=2.0), t + 100)
    for k in range(80):
        c.update(R(soc=100, current=3.0), t + 200 + 5 * k)
    assert c.state == "fault", c.reason


def test_status_lists_the_alarms_and_clear_ends_them():
    ctx = AlarmCtx()

    async def t(port, ctx, app):
        d = (await request(port, "GET", "/api/status")).json()
        assert d["alarms"] == []
        assert d["charger"]["allow"] == {"allowed": True, "remaining_min": None, "window": None,
                                         "in_window": True}
        _stuck(ctx)
        d = (await request(port, "GET", "/api/status")).json()
        a = d["alarms"]
        assert len(a) == 1 and a[0]["name"] == "relay_stuck" and a[0]["latched"] is True
        assert a[0]["stops_charging"] is True and a[0]["message"].startswith("relay stuck: 3.0 A")
        assert d["charger"]["state"] == "fault"
        r = await request(port, "POST", "/api/alarms/clear", json_body={"all": True})
        assert r.status == 422 and r.json()["field"] == "all"
        assert ctx.controller.alarms_info(0) != []  # a rejected request changes nothing
        r = await request(port, "POST", "/api/alarms/clear", json_body={})
        assert r.status == 200
        doc = r.json()
        assert doc["ok"] is True and doc["cleared"] == ["relay_stuck"] and doc["alarms"] == []
        assert ctx.controller.bms_charge_off is False
        r = await request(port, "POST", "/api/alarms/clear", json_body={}, auth=False)
        assert r.status == 401

    serve(t, ctx)


def test_allow_charge_over_the_api():
    ctx = AlarmCtx()
    ctx.controller.update(R(soc=50), clock.now())
    assert ctx.controller.relay is True

    async def t(port, ctx, app):
        for body, field in (({"allow": "no"}, "allow"), ({}, "allow"), ({"allow": False, "minutes": 0}, "minutes"),
                            ({"allow": False, "minutes": True}, "minutes"), ({"allow": False, "x": 1}, "x")):
            r = await request(port, "POST", "/api/charge/allow", json_body=body)
            assert r.status == 422 and r.json()["field"] == field, (body, r.status)
        assert ctx.controller.relay is True
        r = await request(port, "POST", "/api/charge/allow", json_body={"allow": False, "minutes": 30})
        assert r.status == 200
        c = r.json()["charger"]
        assert c["state"] == "paused" and c["relay"] is False and c["allow"]["remaining_min"] == 30
        r = await request(port, "POST", "/api/charge/allow", json_body={"allow": True})
        assert r.json()["charger"]["allow"]["allowed"] is True

    serve(t, ctx)
