# The WiFi supervisor (smartbms.wifi) against the network shim, stepped in device time.
import network
from apputil import fresh_root
from smartbms import wifi
from smartbms.settings import Settings, SettingsError
from testutil import raises, run_async


class Log:
    def __init__(self):
        self.items = []

    def add(self, kind, msg):
        self.items.append((kind, msg))


def _mgr(ssid="simnet", password="", setup_mode=False, nets="simnet"):
    d = fresh_root()
    network.set_networks(nets)
    s = Settings(d + "/settings.json", log=lambda *a: None)
    s.load()
    if ssid:
        s.update({"wifi_ssid": ssid})
    if password:
        s.set_secret("wifi_password", password)
    log = Log()
    return wifi.WifiManager(s, events=log, setup_mode=setup_mode, network=network), s, log


def _run(m, start, end, step=1):
    t = start
    while t <= end:
        m.step(t)
        t += step
    return t


def test_connects_with_stored_credentials_and_sets_hostname():
    m, _, log = _mgr()
    run_async(_hostname_once(m))
    assert network.hostname() == "smartbms"
    _run(m, 0, 2)
    st = m.status()
    assert st == {"mode": "sta", "ssid": "simnet", "ip": "127.0.0.1", "rssi": -55, "connected": True,
                  "ap_ssid": None, "mdns_name": "smartbms", "reboot_needed": False}
    assert m.connected and m.connects == 1
    assert not network.WLAN(network.AP_IF).active()
    assert any("connected to simnet" in msg for _, msg in log.items)


async def _hostname_once(m):
    m._set_hostname()


def test_hostname_change_reaches_dhcp_and_says_mdns_needs_a_reboot():
    # the ESP32 port starts mDNS once, at the first IP, and cannot rename it afterwards
    m, s, log = _mgr()
    run_async(_hostname_once(m))
    assert m.status()["mdns_name"] is None  # no IP yet: mDNS not started
    _run(m, 0, 2)
    assert m.status()["mdns_name"] == "smartbms" and m.reboot_needed() is False
    s.update({"hostname": "garage-bms"})
    m.reconnect()
    _run(m, 3, 6)
    assert m.connected and network.hostname() == "garage-bms"  # DHCP takes it at once
    st = m.status()
    assert st["mdns_name"] == "smartbms" and st["reboot_needed"] is True
    assert any("mDNS answers as smartbms.local until a reboot" in msg for _, msg in log.items)
    s.update({"hostname": "smartbms"})  # back to the announced name: nothing pending
    assert m.reboot_needed() is False


def test_no_credentials_brings_up_the_setup_access_point():
    m, _, _ = _mgr(ssid="")
    m.step(0)
    st = m.status()
    mac = network.WLAN(network.AP_IF).config("mac")
    assert st["mode"] == "ap" and st["connected"] is False
    assert st["ap_ssid"] == "smartbms-%02X%02X" % (mac[4], mac[5])
    assert network.WLAN(network.AP_IF).config("essid") == st["ap_ssid"]


def test_failed_connection_backs_off_then_opens_ap_and_recovers():
    m, _, _ = _mgr(ssid="home", password="secret123", nets="simnet")
    sta = network.WLAN(network.STA_IF)
    attempts = []
    real_connect = sta.connect

    def counting(ssid, key=None, bssid=None):
        attempts.append(now[0])
        real_connect(ssid, key)

    sta.connect = counting
    now = [0]
    while now[0] < wifi.AP_AFTER_S - 1:
        m.step(now[0])
        now[0] += 1
    # retries got further apart (5, 10, 20, ... s of backoff)
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(attempts) >= 3 and gaps == sorted(gaps) and gaps[-1] > gaps[0]
    assert not network.WLAN(network.AP_IF).active()  # not yet: under 2 min
    while now[0] <= wifi.AP_AFTER_S + 1:
        m.step(now[0])
        now[0] += 1
    assert network.WLAN(network.AP_IF).active() and m.status()["mode"] == "ap"
    # the router comes back: the station keeps trying, connects, and the AP goes away
    network.set_networks("home:secret123")
    for _ in range(wifi.BACKOFF_MAX_S + 5):
        m.step(now[0])
        now[0] += 1
        if m.connected:
            break
    assert m.connected and not network.WLAN(network.AP_IF).active()


def test_wrong_password_is_a_failed_attempt():
    m, _, _ = _mgr(ssid="home", password="wrongpass1", nets="home:secret123")
    _run(m, 0, 3)
    assert not m.connected and m.failures >= 1


def test_setup_mode_keeps_the_ap_up_while_connected():
    m, _, _ = _mgr(setup_mode=True)
    _run(m, 0, 3)
    assert m.connected and network.WLAN(network.AP_IF).active()
    assert m.status()["ap_ssid"].startswith("smartbms-")


def test_lost_connection_reconnects():
    m, _, log = _mgr()
    _run(m, 0, 2)
    assert m.connected
    network.drop("simnet")
    m.step(3)
    assert not m.connected and any("lost simnet" in msg for _, msg in log.items)
    network.set_networks("simnet")
    _run(m, 4, 4 + wifi.BACKOFF_MIN_S + 2)
    assert m.connected and m.connects == 2


def test_configure_validates_first_then_stores_and_reconnects():
    m, s, _ = _mgr(ssid="", nets="simnet,home:secret123")
    m.step(0)
    e = raises(SettingsError, m.configure, "home", "x" * 64)  # WPA passphrase max 63
    assert e.field == "wifi_password"
    assert s["wifi_ssid"] == "" and s.secret("wifi_password") == ""
    raises(SettingsError, m.configure, "", "secret123")
    m.configure("home", "secret123")
    assert s["wifi_ssid"] == "home" and s.secret("wifi_password") == "secret123"
    _run(m, 1, 3)
    assert m.connected and m.status()["ssid"] == "home"
    assert not network.WLAN(network.AP_IF).active()


def test_scan_lists_networks_strongest_first():
    m, _, _ = _mgr(nets="simnet,home:secret123,cafe")
    nets = run_async(m.scan())
    assert [n["ssid"] for n in nets] == ["simnet", "home", "cafe"]
    assert [n["secure"] for n in nets] == [False, True, False]
    assert nets[0]["rssi"] > nets[1]["rssi"] > nets[2]["rssi"]


def test_scan_drops_names_json_cannot_carry_as_utf8():
    # SSIDs are raw bytes from the air; MicroPython decodes an encoded surrogate without
    # complaint, which would make /api/wifi/scan answer invalid UTF-8
    m, _, _ = _mgr()
    m._sta.active(True)
    m._sta.scan = lambda: [(b"\xed\xa0\x80evil", b"", 1, -40, 3, False), (b"\xff\xfe", b"", 1, -41, 3, False),
                           (b"esc\x1bx", b"", 1, -42, 0, False), (b"Caf\xc3\xa9", b"", 1, -50, 3, False),
                           (b"", b"", 1, -30, 3, True)]
    nets = run_async(m.scan())
    assert [n["ssid"] for n in nets] == ["Caf\u00e9"]
