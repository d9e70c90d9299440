"""MQTT over TLS (mqtt_tls): the client's own code (smartbms.mqtt on CPython, whose ssl
module stands in for the device's mbedTLS: the host MicroPython build has no ssl) against
Debian's mosquitto with a TLS listener and a self-signed certificate, watched by paho over
TLS. Skipped with the reason where mosquitto, openssl or paho-mqtt is missing."""
import asyncio
import json
import shutil
import ssl
import subprocess
import threading
import time

import pytest

from simfixture import MOSQUITTO, free_port

mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (make venv)")
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(MOSQUITTO is None or OPENSSL is None,
                                reason="mosquitto and openssl are needed (apt-get install mosquitto openssl)")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("mosq_tls")
    key, cert = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
    port = free_port()
    conf = d / "mosquitto.conf"
    # user root: as root, mosquitto would drop to its own user, which cannot read a test's private tmp dir
    conf.write_text("user root\nlistener %d 127.0.0.1\ncertfile %s\nkeyfile %s\nallow_anonymous true\npersistence false\n"
                    % (port, cert, key))
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError("mosquitto did not start: " + proc.stdout.read().decode())
    yield port
    proc.terminate()
    proc.wait(10)


class _Watcher:
    def __init__(self, port):
        self.msgs = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.tls_set(cert_reqs=ssl.CERT_NONE)
        self.c.tls_insecure_set(True)
        self.c.on_message = lambda c, u, m: self._on(m)
        self.c.connect("127.0.0.1", port)
        self.c.subscribe("#")
        self.c.loop_start()

    def _on(self, m):
        with self.lock:
            self.msgs.append((m.topic, m.payload))

    def seen(self, topic):
        with self.lock:
            return [p for t, p in self.msgs if t == topic]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


class _Ctx:
    def __init__(self, tmp_path, port, tls):
        from smartbms.charge.controller import Controller
        from smartbms.eventlog import EventLog
        from smartbms.settings import Settings

        self.settings = Settings(str(tmp_path / "settings.json"))
        self.settings.load()
        self.settings.update({"mqtt_enabled": True, "mqtt_host": "127.0.0.1", "mqtt_port": port,
                              "mqtt_tls": tls, "hostname": "tlsbox"})
        self.events = EventLog(str(tmp_path / "events"))
        self.controller = Controller(self.settings)
        self.link = None
        self.wifi = None
        self.safe_mode = False


def _run_client(ctx, until, timeout=20):
    from smartbms.mqtt.client import Mqtt

    async def main():
        m = Mqtt(ctx)
        task = asyncio.ensure_future(m.run())
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end and not until(m):
                await asyncio.sleep(0.1)
            return m.status()
        finally:
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled
                pass

    return asyncio.run(main())


def test_the_client_speaks_mqtt_over_tls(tls_broker, tmp_path):
    w = _Watcher(tls_broker)
    try:
        base = "smartbms/tlsbox"
        st = _run_client(_Ctx(tmp_path, tls_broker, True),
                         lambda m: w.seen(base + "/state") and w.seen(base + "/availability"))
        assert st["state"] == "connected" and st["broker"].endswith("(TLS)"), st
        assert w.seen(base + "/availability")[0] == b"online"
        state = json.loads(w.seen(base + "/state")[-1])
        assert state["relay"] == "OFF" and state["soc"] is None  # no BMS here: nothing invented
        assert any(t.startswith("homeassistant/") and t.endswith("/config") for t, _ in w.msgs)
    finally:
        w.close()


def test_plain_mqtt_to_a_tls_port_fails_with_an_error_and_retries(tls_broker, tmp_path):
    st = _run_client(_Ctx(tmp_path, tls_broker, False), lambda m: m.error is not None, timeout=15)
    assert st["state"] != "connected" and st["error"], st


def test_a_build_without_tls_says_so_and_connects_nowhere():
    from smartbms import netio

    assert netio.tls_context() is not None  # CPython has ssl
    real = netio.tls_context
    try:
        netio.tls_context = lambda: None
        from smartbms.mqtt.conn import Conn

        class S(dict):
            def secret(self, k):
                return ""

        s = S(mqtt_host="127.0.0.1", mqtt_port=1, mqtt_tls=True, hostname="x", mqtt_user="")
        with pytest.raises(OSError, match="no TLS"):
            asyncio.run(Conn().open(s))
    finally:
        netio.tls_context = real
