# MQTT commands on a real App: the HTTP API's functions and validation, a refused payload
# changes nothing; the state document and its change signature; alerts picked from the log.
from apputil import FakeLink, FakeMachine, fresh_root
from smartbms import app as app_mod
from smartbms import clock
from smartbms.alerts import Alerts
from smartbms.mqtt import commands, state
from ctrlutil import R


class Mq:
    ov_minutes = 60


def _app():
    fresh_root()
    a = app_mod.App(machine=FakeMachine(True), log=lambda *x: None)
    r = R(soc=62, current=10.0)
    r.remaining_ah = 62.0
    r.cycles = 3
    r.received = clock.now()
    a.link = FakeLink(r)
    a.control_step()
    return a


def test_override_and_its_minutes():
    a, mq = _app(), Mq()
    assert commands.apply(a, mq, "override_minutes", b"30") is None and mq.ov_minutes == 30
    assert commands.apply(a, mq, "override", b"off") is None
    info = a.controller.override_info(clock.now())
    assert info["mode"] == "off" and info["remaining_min"] == 30
    assert commands.apply(a, mq, "override_minutes", b"90.0") is None  # re-applied while it runs
    assert a.controller.override_info(clock.now())["remaining_min"] == 90
    assert commands.apply(a, mq, "override", b"auto") is None
    assert a.controller.override_info(clock.now())["mode"] == "auto"


def test_refused_payloads_change_nothing():
    a, mq = _app(), Mq()
    before = dict(a.settings.public())
    for name, payload, field in (("override", b"sideways", "mode"), ("override", b"\xff\xfe", None),
                                 ("override_minutes", b"0", "minutes"), ("override_minutes", b"x", None),
                                 ("min_soc", b"150", "min_soc"), ("max_soc", b"true", "max_soc"),
                                 ("min_soc", b"99", None), ("settings", b"[1]", None),
                                 ("settings", b'{"min_soc": 60, "bogus": 1}', "bogus"),
                                 ("timeout_reset", b"now", None), ("nothing", b"", None)):
        err = commands.apply(a, mq, name, payload)
        assert err is not None and err[0], (name, payload)
        if field is not None:
            assert err[1] == field, (name, err)
    assert a.settings.public() == before and mq.ov_minutes == 60
    assert a.controller.override_info(clock.now())["mode"] == "auto"


def test_settings_and_buttons():
    a, mq = _app(), Mq()
    assert commands.apply(a, mq, "min_soc", b"70") is None and a.settings["min_soc"] == 70
    assert commands.apply(a, mq, "max_soc", b"95.0") is None and a.settings["max_soc"] == 95
    assert commands.apply(a, mq, "settings", b'{"min_soc": 75}') is None and a.settings["min_soc"] == 75
    assert commands.apply(a, mq, "timeout_reset", b"PRESS")[0].startswith("no charge timeout is active")
    assert a.controller.state == "charging", a.controller.state
    later = a.link.latest.received = clock.now() + 5 * 3600  # a charge past its timeout
    a.controller.update(a.link.latest, later)
    assert a.controller.timeout_active()
    assert commands.apply(a, mq, "timeout_reset", b"PRESS") is None
    assert not a.controller.timeout_active()
    assert commands.apply(a, mq, "clear_alarms", b"") is None
    msgs = [e["msg"] for e in a.events.recent(10)]
    assert "charge timeout reset by the user" in msgs
    assert any(m.startswith("alarms cleared by the user") for m in msgs)


def test_settings_command_clears_a_secret_with_null_as_the_api_does():
    a, mq = _app(), Mq()
    assert commands.apply(a, mq, "settings", b'{"alert_token": "tk_3f9a", "mqtt_password": "broker-pw-9"}') is None
    assert commands.apply(a, mq, "settings", b'{"min_soc": 70}') is None  # absent: kept
    assert a.settings.public()["alert_token_set"] is True and a.settings.secret("mqtt_password") == "broker-pw-9"
    assert commands.apply(a, mq, "settings", b'{"alert_token": null}') is None
    assert a.settings.public()["alert_token_set"] is False and a.settings.secret("alert_token") == ""
    before = dict(a.settings.public())
    err = commands.apply(a, mq, "settings", b'{"mqtt_password": null, "min_soc": null}')
    assert err is not None and err[1] == "min_soc" and "null" in err[0], err
    assert a.settings.public() == before and a.settings.secret("mqtt_password") == "broker-pw-9"
    text = " ".join(e["msg"] for e in a.events.recent(50))
    assert "alert_token cleared" in text and "tk_3f9a" not in text and "broker-pw-9" not in text


def test_state_document_and_signature():
    a = _app()
    d = state.doc(a, 45)
    assert d["soc"] == 62 and d["c"] == [3.3] * 4 and d["t"] == [20.0, 20.0] and d["ovm"] == 45
    assert d["cd"] == 0 and d["v"] == 13.2 and d["p"] == 132.0 and d["link"] == "ON"
    assert d["relay"] in ("ON", "OFF") and d["st"] == a.controller.state and d["al"] == []
    sig = state.signature(a)
    assert state.signature(a) == sig
    a.link.latest.soc = 63
    assert state.signature(a) != sig
    a.link = FakeLink(None)
    d = state.doc(a, 60)
    assert d["soc"] is None and d["c"] == [] and d["link"] == "OFF"


def test_alerts_reach_mqtt_events():
    a = _app()

    class Sink:
        got = []

        def event(self, kind, text):
            self.got.append((kind, text))

    a.mqtt = Sink()
    a.events.listener = Alerts(a).listener
    a.events.add("ota", "image 1.4 written to ota_1; rebooting")
    a.events.add("fault", "alarm relay_stuck ended")
    a.events.add("override", "manual on for 5 min")
    assert Sink.got == [("ota", "image 1.4 written to ota_1; rebooting")]


def test_mqtt_alone_picks_the_alerts_for_its_events_topic():
    """No alert URL: the alert sender is not loaded; the MQTT client listens to the log."""
    from smartbms.mqtt.client import Mqtt

    a = _app()
    mq = Mqtt(a)
    a.events.listener = mq.listener
    a.events.add("charge", "charging: SOC 62 % < 80 %")
    a.events.add("charge", "resting: the current fell to 5 A")  # after charging: a full charge
    a.events.add("fault", "alarm relay_stuck ended")
    a.events.add("override", "manual on for 5 min")
    a.events.add("ota", "image 1.4 written to ota_1; rebooting")
    assert mq._events == [("full", "resting: the current fell to 5 A"),
                          ("ota", "image 1.4 written to ota_1; rebooting")]


def test_a_burst_of_commands_is_taken_a_few_per_tick():
    """Reading the socket never yields: a flood of commands must not hold the loop (and with
    it the other tasks) but wait in the TCP window for the next ticks, in order."""
    import asyncio

    from smartbms.mqtt import codec
    from smartbms.mqtt.client import Mqtt
    from test_mqtt_conn import Sock

    a = _app()
    mq = Mqtt(a)
    data = b"".join(codec.publish("b/set/override_minutes", b"%d" % m) for m in range(11, 21))
    mq._conn.sock = Sock(data)
    seen = []
    for _ in range(3):
        asyncio.run(mq._receive("b"))
        seen.append(mq.ov_minutes)
    assert seen == [14, 18, 20]
