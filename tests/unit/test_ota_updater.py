# The OTA writer, the HTTP routes (through microdot's test client) and the boot guard, on
# both runtimes, over the simulated flash file.
import hashlib

import otaflash  # first: puts the esp32 shim on the path under pytest
import esp32
import esp_image
import sim_boot
from smartbms import ota
from smartbms.ota import health, http, otadata
from smartbms.ota.image import ImageError
from smartbms.ota.updater import Updater, UpdateError
from testutil import raises, run_async

quiet = lambda *a: None  # noqa: E731


def _status():
    ota._parts = None  # a device reads its layout once per boot; these tests boot many times
    return ota.status()
IMG = esp_image.app_image("0.2.0", 40 * 1024 + 123)


def _boot_label():
    return esp32.Partition(esp32.Partition.BOOT).info()[4]


def _slot_block0(label):
    buf = bytearray(64)
    esp32.Partition(label).readblocks(0, buf)
    return bytes(buf)


def test_stream_in_odd_chunks_then_activate():
    path = otaflash.fresh("upd_ok")
    sim_boot.boot(path, quiet)
    u = Updater(len(IMG))
    for i in range(0, len(IMG), 1000):
        u.write(IMG[i:i + 1000])
    info = u.finish()
    assert info["slot"] == "ota_1" and info["version"] == "0.2.0"
    assert info["sha256"] is None  # no X-Image-SHA256: the appended hash is the check
    assert info["image_sha256"] == "".join("%02x" % b for b in IMG[-32:])
    assert _boot_label() == "ota_1"
    back = bytearray(len(IMG))
    esp32.Partition("ota_1").readblocks(0, back)
    assert back == IMG
    assert sim_boot.boot(path, quiet) == ("ota_1", "pending_verify")


def test_expected_digest_checked_while_streaming():
    otaflash.fresh("upd_sha")
    sha = "".join("%02x" % b for b in hashlib.sha256(IMG).digest())
    u = Updater(len(IMG), sha)
    u.write(IMG)
    assert u.finish()["sha256"] == sha
    otaflash.fresh("upd_sha2")
    u = Updater(len(IMG), "11" * 32)
    u.write(IMG)
    assert "X-Image-SHA256" in str(raises(ImageError, u.finish))
    u.abort()
    assert _boot_label() == "ota_0"


def test_bad_image_leaves_boot_slot_and_running_slot_alone():
    path = otaflash.fresh("upd_bad")
    sim_boot.boot(path, quiet)
    before_run = _slot_block0("ota_0")
    bad = esp_image.variant("bad_checksum", size=len(IMG))
    u = Updater(len(bad))
    e = raises(ImageError, lambda: (u.write(bad), u.finish()))
    assert "checksum" in str(e)
    u.abort()
    assert _boot_label() == "ota_0"
    assert _slot_block0("ota_0") == before_run
    assert _slot_block0("ota_1") == b"\xff" * 64  # the partial image no longer shows a version
    assert _status()["previous_version"] is None


def test_first_block_is_written_last():
    otaflash.fresh("upd_order")
    u = Updater(len(IMG))
    u.write(IMG[:len(IMG) - 5000])
    # most of the image is in the slot, but without its header magic it shows no version
    assert _slot_block0("ota_1")[:4] == b"\xff" * 4
    assert _slot_block0("ota_1")[4:64] == IMG[4:64]
    assert _status()["previous_version"] is None
    u.write(IMG[len(IMG) - 5000:])
    u.finish()
    assert _status()["previous_version"] == "0.2.0"


def test_foreign_image_refused_before_anything_is_written():
    otaflash.fresh("upd_foreign")
    u = Updater()
    raises(ImageError, u.write, esp_image.variant("foreign", size=len(IMG)))
    assert _slot_block0("ota_1") == b"\xff" * 64
    assert _boot_label() == "ota_0"


def test_oversize_length_refused_up_front():
    otaflash.fresh("upd_big")
    assert "larger than" in str(raises(ImageError, Updater, 0x1D0000 + 1))


def test_read_back_mismatch_is_caught():
    otaflash.fresh("upd_readback")
    u = Updater(len(IMG))
    real = u.target.writeblocks

    def flaky(block, buf, offset=None):
        if block == 3:
            buf = bytearray(buf)
            buf[10] ^= 0x40  # a bit the flash did not keep
        real(block, buf)
    u.target.writeblocks = flaky
    u.write(IMG)
    assert "read-back" in str(raises(UpdateError, u.finish))
    assert _boot_label() == "ota_0"


class _Stream:
    """An async body: chunks, then optionally hangs forever (a stalled client)."""

    def __init__(self, data, chunk=1500, hang_after=None):
        self.data, self.chunk, self.pos, self.hang_after = data, chunk, 0, hang_after

    async def read(self, n):
        import asyncio
        if self.hang_after is not None and self.pos >= self.hang_after:
            await asyncio.sleep(3600)
        k = min(n, self.chunk)
        out = self.data[self.pos:self.pos + k]
        self.pos += len(out)
        return out


def test_receive_streams_and_activates():
    path = otaflash.fresh("rx_ok")
    sim_boot.boot(path, quiet)
    info = run_async(http.receive(_Stream(IMG), len(IMG)))
    assert info["slot"] == "ota_1" and _boot_label() == "ota_1"


def test_receive_stall_times_out_with_nothing_activated():
    otaflash.fresh("rx_stall")
    old = http.MIN_STALL_MS, http.STALL_S
    http.MIN_STALL_MS, http.STALL_S = 100, 0
    try:
        raises(http._Stalled, run_async, http.receive(_Stream(IMG, hang_after=9000), len(IMG)))
    finally:
        http.MIN_STALL_MS, http.STALL_S = old
    assert _boot_label() == "ota_0"
    assert _slot_block0("ota_1") == b"\xff" * 64


def test_receive_short_body():
    otaflash.fresh("rx_short")
    e = raises(ImageError, run_async, http.receive(_Stream(IMG[:5000]), len(IMG)))
    assert "ended after 5000" in str(e)
    assert _boot_label() == "ota_0"


class _Ctx:
    def __init__(self):
        self.reboots = []
        self.checks = {"settings": True, "control": True, "web": True, "ble": True}

    def request_reboot(self, reason):
        self.reboots.append(reason)

    def health(self):
        return self.checks


def _client():
    from microdot import Microdot, Request
    try:
        from microdot.test_client import TestClient
    except ImportError:  # unix port: microdot is frozen without its test client
        from microdot_test_client import TestClient
    Request.max_content_length = 0x1D0000  # the web layer lifts the limit for /api/ota
    app = Microdot()
    ctx = _Ctx()
    http.install(app, ctx)
    return TestClient(app), ctx


def _post(client, body, headers):
    return run_async(client.post("/api/ota", headers=dict(headers), body=body))


OCTET = {"Content-Type": "application/octet-stream"}


def test_http_upload_ok_then_reboot():
    path = otaflash.fresh("http_ok")
    sim_boot.boot(path, quiet)
    client, ctx = _client()
    sha = "".join("%02x" % b for b in hashlib.sha256(IMG).digest())
    h = dict(OCTET)
    h["X-Image-SHA256"] = sha
    r = _post(client, IMG, h)
    assert r.status_code == 200, r.text
    assert r.json["slot"] == "ota_1" and r.json["version"] == "0.2.0" and r.json["sha256"] == sha
    assert ctx.reboots == ["ota"]
    assert _boot_label() == "ota_1"


def test_http_refusals():
    otaflash.fresh("http_bad")
    client, ctx = _client()
    r = _post(client, b"", {})
    assert r.status_code == 411 and "Content-Length" in r.json["error"]
    r = _post(client, IMG, {"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 415
    r = _post(client, esp_image.variant("merged", size=len(IMG)), OCTET)
    assert r.status_code == 400 and "micropython.bin" in r.json["error"]
    r = _post(client, esp_image.variant("stock", size=len(IMG)), OCTET)
    assert r.status_code == 400 and "stock" in r.json["error"]
    h = dict(OCTET)
    h["X-Image-SHA256"] = "ab" * 32
    r = _post(client, IMG, h)
    assert r.status_code == 400 and "X-Image-SHA256" in r.json["error"]
    assert ctx.reboots == [] and _boot_label() == "ota_0"
    assert not ota.busy()


def test_http_second_upload_gets_409():
    otaflash.fresh("http_busy")
    client, ctx = _client()
    assert ota.acquire()
    try:
        r = _post(client, IMG, OCTET)
        assert r.status_code == 409
    finally:
        ota.release()
    assert _boot_label() == "ota_0"


def test_http_url_validation():
    otaflash.fresh("http_url")
    client, ctx = _client()
    r = run_async(client.post("/api/ota/url", body={"url": "ftp://x/y", "sha256": "0" * 64}))
    assert r.status_code == 422 and r.json["field"] == "url"
    r = run_async(client.post("/api/ota/url", body={"url": "http://x/y"}))
    assert r.status_code == 422 and r.json["field"] == "sha256"
    r = run_async(client.post("/api/ota/url", body={"url": "http://x/y", "sha256": "g" * 64}))
    assert r.status_code == 422 and r.json["field"] == "sha256"
    r = run_async(client.post("/api/ota/url", body={"url": "http://x/y", "sha256": "0" * 64, "force": True}))
    assert r.status_code == 422 and r.json["field"] == "force"
    r = run_async(client.post("/api/ota/url", body="{not json", headers={"Content-Type": "application/json"}))
    assert r.status_code == 400
    r = run_async(client.post("/api/ota/url", body="url=http://x/y",
                              headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert r.status_code == 415
    assert ota.acquire()  # none of these took the upload lock
    ota.release()
    assert http.parse_url("http://10.0.0.2:8000/fw/app.bin") == ("http", "10.0.0.2", 8000, "/fw/app.bin")
    assert http.parse_url("https://example.com") == ("https", "example.com", 443, "/")
    raises(ValueError, http.parse_url, "http://user:pw@host/x")
    raises(ValueError, http.parse_url, "http://:80/x")


def _guard(name, **kw):
    otaflash._mkdir(otaflash.DIR)
    p = otaflash.DIR + "/" + name
    try:
        import os
        os.remove(p)
    except OSError:
        pass
    marks = []
    g = health.BootGuard(p, mark_valid=lambda: marks.append(1) or True, **kw)
    return g, p, marks


def test_boot_guard_enters_safe_mode_after_five_unhealthy_boots():
    _, p, _ = _guard("bootcount_a")
    results = []
    for _ in range(7):
        g = health.BootGuard(p, mark_valid=lambda: True)
        results.append(g.begin())
    assert results == [False] * 5 + [True, False]


def test_boot_guard_healthy_after_60s_clears_counter_and_confirms():
    g, p, marks = _guard("bootcount_b")
    g.begin()
    g.begin()
    assert g.boots == 2
    ctx = _Ctx()
    since = g.step(ctx, 100, None)
    since = g.step(ctx, 130, since)
    ctx.checks["ble"] = False  # a dip restarts the 60 s window
    since = g.step(ctx, 150, since)
    assert since is None and g.failing == ["ble"]
    ctx.checks["ble"] = True
    since = g.step(ctx, 151, since)
    g.step(ctx, 200, since)
    assert not g.is_healthy and marks == []
    g.step(ctx, 211, since)
    assert g.is_healthy and marks == [1]
    assert health._read_count(p) == 0
    assert health.BootGuard(p).begin() is False


def test_boot_guard_in_safe_mode_needs_only_web_and_keeps_counting():
    g, p, marks = _guard("bootcount_c", limit=1)
    assert g.begin() is False
    g2 = health.BootGuard(p, limit=1, mark_valid=lambda: marks.append(1))
    assert g2.begin() is True
    ctx = _Ctx()
    ctx.checks = {"web": True}
    g2.step(ctx, 0, g2.step(ctx, 0, None))
    g2.step(ctx, 61, 0)
    assert g2.is_healthy and marks == []  # safe mode never confirms an image


def test_boot_guard_survives_a_corrupt_counter_and_broken_health():
    g, p, _ = _guard("bootcount_d")
    with open(p, "w") as f:
        f.write("garbage")
    assert g.begin() is False and g.boots == 1

    class Bad:
        def health(self):
            raise RuntimeError("boom")
    assert g.step(Bad(), 0, None) is None and "boom" in g.failing[0]


def test_mark_valid_through_the_shim():
    path = otaflash.fresh("guard_shim")
    sim_boot.boot(path, quiet)
    u = Updater(len(IMG))
    u.write(IMG)
    u.finish()
    sim_boot.boot(path, quiet)
    assert _status()["pending_verify"]  # (also drops the cached layout of older tests)
    assert health._mark_app_valid() is True
    assert esp32.otadata_entries()[0][1] == otadata.VALID


def test_health_of_the_old_image_does_not_confirm_a_new_upload():
    path = otaflash.fresh("guard_race")
    sim_boot.boot(path, quiet)
    u = Updater(len(IMG))
    u.write(IMG)
    u.finish()  # ota_1 is NEW; ota_0 (running) turns healthy only now
    ota._parts = None
    assert health._mark_app_valid() is False
    assert esp32.otadata_entries()[0][1] == otadata.NEW
    assert sim_boot.boot(path, quiet) == ("ota_1", "pending_verify")
