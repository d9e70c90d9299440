# The routes of the device's upkeep: joining a WiFi network, WiFi and BMS scans (one of each
# at a time, bounded), and the capture mode for unknown packs (smartbms.bms.capture, imported
# on first use). Installed by smartbms.web.create_app with its `api` decorator.
import sys

import asyncio
from microdot import Response

from smartbms.actions import ApiError, only as _only
from smartbms.webreq import body_object

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

SCAN_TIMEOUT_MS = const(20000)


def install(app, ctx, api):
    scans = {"wifi": False, "bms": False}

    @api("/api/wifi", ("POST",))
    def wifi_set(req):
        doc = body_object(req)
        _only(doc, ("ssid", "password"))
        ssid = doc.get("ssid")
        pw = doc.get("password", "")
        if not isinstance(ssid, str) or not ssid:
            raise ApiError(422, "a network name is required", "ssid")
        if len(ssid.encode()) > 32:
            raise ApiError(422, "at most 32 bytes", "ssid")
        if not isinstance(pw, str):
            raise ApiError(422, "must be a string", "password")
        if pw and not 8 <= len(pw) <= 63:
            raise ApiError(422, "must be empty (open network) or 8 to 63 characters", "password")
        try:
            ctx.wifi.configure(ssid, pw)
        except ValueError as e:  # SettingsError names the setting; answer with this route's keys
            field = getattr(e, "field", None)
            raise ApiError(422, getattr(e, "message", None) or str(e),
                           {"wifi_ssid": "ssid", "wifi_password": "password"}.get(field, field))
        return {"ok": True}

    async def _scan(kind, coro_fn):
        if scans[kind]:
            raise ApiError(409, "a scan is already running")
        scans[kind] = True
        try:
            return await asyncio.wait_for(coro_fn(), SCAN_TIMEOUT_MS / 1000)
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - timeout or radio error
            raise ApiError(503, "scan failed: %s" % (e or type(e).__name__))
        finally:
            scans[kind] = False

    @api("/api/wifi/scan")
    async def wifi_scan(req):
        return {"networks": await _scan("wifi", ctx.wifi.scan)}

    @api("/api/bms/scan")
    async def bms_scan(req):
        cap = sys.modules.get("smartbms.bms.capture")
        if cap is not None and cap.current() is not None and cap.current().running:
            raise ApiError(409, "a capture is running: the radio is busy")
        if req.args.get("all") == "1":  # every device, those of no known family too (for a capture)
            from smartbms.bms.scan import scan

            return {"devices": await _scan("bms", lambda: scan(5000, True))}
        return {"devices": await _scan("bms", ctx.scan_bms)}

    # capture mode for unknown packs (smartbms.bms.capture, imported on first use)
    @api("/api/bms/capture")
    def capture_state(req):
        from smartbms.bms import capture

        return capture.status()

    @api("/api/bms/capture", ("POST",))
    def capture_start(req):
        from smartbms.bms import capture

        try:
            return capture.start(ctx, body_object(req))
        except capture.CaptureRefused as e:
            raise ApiError(409, str(e))

    @api("/api/bms/capture", ("DELETE",))
    def capture_stop(req):
        from smartbms.bms import capture

        return capture.stop_or_erase()

    @api("/api/bms/capture/file")
    def capture_file(req):
        from smartbms.bms import capture

        size = capture.file_size()
        if size is None:
            raise ApiError(404, "no capture file: start a capture first")
        return Response(capture.FileReader(capture.paths.path(capture.FILE), size), 200, {
            "Content-Type": "text/plain; charset=utf-8", "Content-Length": str(size),
            "Content-Disposition": 'attachment; filename="smartbms-capture.txt"'})
