"""OTA end to end against the running simulator (tests/host/simfixture.py): the device's
own code on the unix port, its flash in SIM_DIR/flash.bin (sim/shims/esp32.py), the
bootloader's slot choice at each (re)start (sim/sim_boot.py). Images are generated here."""
import base64
import hashlib
import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "sim"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import esp_image  # noqa: E402

if not all(os.path.exists(os.path.join(ROOT, p)) for p in ("sim/sim_main.py", "scripts/run_sim.py",
                                                            "tests/host/simfixture.py")):
    pytest.skip("the simulator (sim/sim_main.py, scripts/run_sim.py) is not in this tree",
                allow_module_level=True)
from simfixture import start_sim  # noqa: E402

PASSWORD = "smartbms"
OCTET = {"Content-Type": "application/octet-stream"}


def ota(sim):
    st, _, body = sim.get("/api/status")
    assert st == 200, body
    return body["device"]["ota"]


def push(sim, data, headers=None, timeout=60, **kw):
    h = dict(OCTET)
    h.update(headers or {})
    return sim.request("POST", "/api/ota", body=data, headers=h, timeout=timeout, **kw)


def wait_reboot(sim, before, timeout=60):
    sim.wait_ready(timeout=timeout, after=before)
    # and the web server of the new boot answers (not the old one finishing its reply)
    def up():
        try:
            return sim.get("/api/status", timeout=5)[0] == 200
        except OSError:
            return False
    wait_for(up, timeout=timeout)


def wait_for(fn, timeout=30, step=0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in %ss" % timeout)
        time.sleep(step)


def firmware_pid(sim):
    """The MicroPython process under the run_sim supervisor."""
    with open("/proc/%d/task/%d/children" % (sim.proc.pid, sim.proc.pid)) as f:
        kids = [int(x) for x in f.read().split()]
    assert kids, "no firmware process under the supervisor"
    return kids[0]


def raw_upload(sim, total, first, headers=None):
    """Open an upload of `total` declared bytes and send only `first` of them."""
    s = socket.create_connection(("127.0.0.1", sim.port), timeout=30)
    token = base64.b64encode(("admin:%s" % PASSWORD).encode()).decode()
    head = "POST /api/ota HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n" \
           "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n" % (token, len(total))
    for k, v in (headers or {}).items():
        head += "%s: %s\r\n" % (k, v)
    s.sendall(head.encode() + b"\r\n" + total[:first])
    return s


def read_response(s, timeout=30):
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    return status, data


@pytest.fixture
def sim(tmp_path):
    s = start_sim(tmp_path, speed=60, password=PASSWORD)
    yield s
    try:
        s.stop()
    except Exception:
        pass
    s.kill()


def test_push_reboots_into_pending_then_valid(sim):
    before = ota(sim)
    assert before["running"] == "ota_0" and before["running_version"]
    img = esp_image.app_image("0.9.1", 400 * 1024)
    sha = hashlib.sha256(img).hexdigest()
    n = sim.ready_count()
    st, _, body = push(sim, img, {"X-Image-SHA256": sha})
    assert st == 200, (body, sim.output()[-3000:])
    assert body["slot"] == "ota_1" and body["version"] == "0.9.1" and body["sha256"] == sha
    sim.wait_output("booted ota_1 (updated, on trial until it runs healthy)", timeout=60)
    wait_reboot(sim, n)
    after = ota(sim)
    assert after["running"] == "ota_1" and after["running_version"] == "0.9.1"
    assert after["previous_version"] == before["running_version"]
    # 60 s of device time healthy (1 s at x60): the image confirms itself
    wait_for(lambda: ota(sim)["state"] == "valid", timeout=60)
    assert ota(sim)["pending_verify"] is False


def test_crash_before_healthy_rolls_back(tmp_path):
    sim = start_sim(tmp_path, speed=2, password=PASSWORD)  # 60 device s = 30 real s to crash in
    try:
        old = ota(sim)["running_version"]
        n = sim.ready_count()
        st, _, body = push(sim, esp_image.app_image("0.9.2", 200 * 1024))
        assert st == 200, body
        wait_reboot(sim, n)
        assert ota(sim)["running"] == "ota_1" and ota(sim)["pending_verify"] is True
        n = sim.ready_count()
        os.kill(firmware_pid(sim), 9)  # a crash / watchdog reset before it was confirmed
        wait_reboot(sim, n)
        st = ota(sim)
        assert st["running"] == "ota_0" and st["running_version"] == old
        assert st["previous_version"] == "0.9.2" and st["pending_verify"] is False
        assert "rolling back" in sim.output()
    finally:
        sim.kill()


def test_power_cut_during_upload_keeps_old_slot_and_settings(tmp_path):
    sim = start_sim(tmp_path, speed=60, password=PASSWORD)
    try:
        st, _, body = sim.request("PUT", "/api/settings", json={"max_soc": 93})
        assert st == 200, body
        old = ota(sim)["running_version"]
        img = esp_image.app_image("0.9.3", 900 * 1024)
        for frac in (0.0, 0.05, 0.3, 0.61, 0.97, 1.0):
            cut = int(len(img) * frac)
            s = raw_upload(sim, img, cut)
            time.sleep(0.3)  # the device is writing blocks
            sim.kill()  # power cut: supervisor and firmware at once
            s.close()
            sim.start()
            sim.wait_ready(timeout=60)
            st = ota(sim)
            if frac < 1.0:
                assert st["running"] == "ota_0" and st["running_version"] == old, (frac, st)
                # the half-written slot has no header yet (block 0 is written last)
                assert st["previous_version"] is None, (frac, st)
            else:
                # the whole body arrived: the cut fell before or after set_boot
                assert st["running_version"] in (old, "0.9.3"), st
            assert sim.get("/api/settings")[2]["max_soc"] == 93
    finally:
        sim.kill()


def test_wrong_password_writes_nothing(sim):
    img = esp_image.app_image("0.9.4", 64 * 1024)
    st, _, body = push(sim, img, {"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()})
    assert st == 401
    st = ota(sim)
    assert st["running"] == "ota_0" and st["previous_version"] is None


def test_second_concurrent_push_is_refused_and_the_first_completes(sim):
    # the upload holds the web server's one request slot (smartbms.httpd.MAX_ACTIVE): a second
    # push (and any other request meanwhile) is told to come back, and changes nothing
    img = esp_image.app_image("0.9.5", 600 * 1024)
    s = raw_upload(sim, img, 100 * 1024)
    time.sleep(0.3)
    st, headers, body = push(sim, img)
    assert st == 503 and body["error"] == "busy: a firmware upload is running", body
    assert headers.get("retry-after") == "1", headers
    s.sendall(img[100 * 1024:])
    status, data = read_response(s)
    assert status == 200, data
    assert b'"ota_1"' in data


def test_stalled_upload_times_out_with_nothing_activated(sim):
    img = esp_image.app_image("0.9.6", 300 * 1024)
    s = raw_upload(sim, img, 50 * 1024)
    t0 = time.monotonic()
    status, data = read_response(s, timeout=30)
    assert status == 408, data
    assert time.monotonic() - t0 < 20
    st = ota(sim)
    assert st["running"] == "ota_0" and st["previous_version"] is None and not st["busy"]
    # and the next upload works
    st2, _, body = push(sim, esp_image.app_image("0.9.6", 64 * 1024))
    assert st2 == 200, (body, sim.output()[-3000:])


def test_foreign_merged_and_corrupt_images_refused(sim):
    for kind, words in (("foreign", "hello_world"), ("stock", "stock"), ("merged", "micropython.bin"),
                        ("wrong_chip", "ESP32-S3"), ("bad_digest", "SHA-256"), ("truncated", "truncated")):
        st, _, body = push(sim, esp_image.variant(kind, size=128 * 1024))
        assert st == 400 and words in body["error"], (kind, st, body, sim.output()[-3000:])
    st, _, body = push(sim, esp_image.variant("oversize"))
    assert st in (400, 413), body
    st = ota(sim)
    assert st["running"] == "ota_0" and st["previous_version"] is None


def test_ota_push_tool_end_to_end(sim, tmp_path):
    p = tmp_path / "micropython.bin"
    p.write_bytes(esp_image.app_image("0.9.7", 300 * 1024))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "ota_push.py"), "--host",
                        "127.0.0.1:%d" % sim.port, "--password", PASSWORD, "--wait", "60", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "device is back running 0.9.7 from ota_1" in r.stderr
    assert "100%" in r.stderr
    bad = tmp_path / "firmware.bin"
    bad.write_bytes(esp_image.variant("merged", size=64 * 1024))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "ota_push.py"), "--host",
                        "127.0.0.1:%d" % sim.port, "--password", PASSWORD, str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "micropython.bin" in r.stderr
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "ota_push.py"), "--host",
                        "127.0.0.1:%d" % sim.port, "--password", "wrong", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr


def test_pull_from_url(sim):
    import http.server
    import threading

    img = esp_image.app_image("0.9.8", 256 * 1024)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/fw/micropython.bin":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(img)))
            self.end_headers()
            self.wfile.write(img)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = "http://127.0.0.1:%d" % srv.server_address[1]
    try:
        sha = hashlib.sha256(img).hexdigest()
        st, _, body = sim.request("POST", "/api/ota/url", json={"url": base + "/nope", "sha256": sha})
        assert st == 502 and "404" in body["error"], body
        st, _, body = sim.request("POST", "/api/ota/url", json={"url": base + "/fw/micropython.bin",
                                                                 "sha256": "0" * 64})
        assert st == 400 and "X-Image-SHA256" in body["error"], body
        assert ota(sim)["running"] == "ota_0"
        n = sim.ready_count()
        st, _, body = sim.request("POST", "/api/ota/url", json={"url": base + "/fw/micropython.bin",
                                                                 "sha256": sha}, timeout=60)
        assert st == 200 and body["version"] == "0.9.8" and body["slot"] == "ota_1", body
        wait_reboot(sim, n)
        assert ota(sim)["running_version"] == "0.9.8"
    finally:
        srv.shutdown()


def test_boot_loop_ends_in_safe_mode_with_ota_working(tmp_path):
    # health needs 60 device s = 12 real s at x5; each boot dies after ~4 s (the supervisor
    # treats deaths within 3 s as a broken build, so stay above that)
    sim = start_sim(tmp_path, speed=5, password=PASSWORD)
    try:
        for _ in range(5):
            assert sim.get("/api/status")[2]["device"]["safe_mode"] is False
            time.sleep(4)
            n = sim.ready_count()
            os.kill(firmware_pid(sim), 9)
            wait_reboot(sim, n)
        dev = sim.get("/api/status")[2]["device"]
        assert dev["safe_mode"] is True, dev
        # in safe mode the web server and OTA still work: push a fix
        n = sim.ready_count()
        st, _, body = push(sim, esp_image.app_image("0.9.9", 128 * 1024))
        assert st == 200, body
        wait_reboot(sim, n)
        dev = sim.get("/api/status")[2]["device"]
        assert dev["safe_mode"] is False and dev["ota"]["running_version"] == "0.9.9", dev
    finally:
        sim.kill()
