# HTTP routes for OTA. POST /api/ota takes the raw app image as the request body
# (application/octet-stream, Content-Length required, optional X-Image-SHA256) and streams
# it into the inactive slot; POST /api/ota/url {"url", "sha256"} pulls one over HTTP(S)
# (smartbms.ota.pull). The web layer's auth guard runs first. One upload at a time (409);
# none while the running image still waits for its health confirmation (409: the other slot
# holds the image a rollback returns to); a stalled upload times out (408) with nothing
# activated; the loop gets control back after every block.
import asyncio

from smartbms import clock, ota
from smartbms.ota.image import ImageError, digest_bytes
from smartbms.ota.updater import Updater, UpdateError

STALL_S = 30  # device seconds without a byte before an upload is abandoned
MIN_STALL_MS = 2000  # real ms floor, so a fast sim clock does not trip slow networks
REBOOT_REASON = "ota"


def _stall_s():
    return max(clock.real_ms(STALL_S * 1000), MIN_STALL_MS) / 1000


class _Stalled(Exception):
    pass


def _pending_refusal():
    """The 409 answer while the running image is PENDING_VERIFY, else None. ESP-IDF's own
    esp_ota_begin() refuses this state; MicroPython's Partition API does not check it, and
    writing now would overwrite the slot a rollback of this image returns to."""
    try:
        st = ota.status()
    except (OSError, ValueError):  # no OTA layout (serial-flashed): nothing to protect
        return None
    if not st.get("pending_verify"):
        return None
    from smartbms.health import HEALTHY_AFTER_S
    return _err(409, "the running image (%s) is not confirmed yet: it confirms itself after %d s "
                     "healthy, or rolls back on a reset. Retry once GET /api/status shows "
                     "device.ota.pending_verify false (an update now would overwrite the "
                     "image a rollback returns to)" % (st.get("running_version"), HEALTHY_AFTER_S))


def _take_slot():
    """The refusal answer, or None once this request holds the single upload slot."""
    refused = _pending_refusal()
    if refused:
        return refused
    if not ota.acquire():
        return _err(409, "another upload is in progress")
    return None


def _err(code, message, field=None):
    body = {"error": message}
    if field:
        body["field"] = field
    return body, code, {"Connection": "close"}


async def _read_into(stream, buf):
    # MicroPython's asyncio streams can fill a buffer without allocating; others return bytes
    if hasattr(stream, "readinto"):
        return await stream.readinto(buf)
    data = await stream.read(len(buf))
    buf[:len(data)] = data
    return len(data)


async def receive(stream, length, sha256=None, esp32_module=None):
    """Stream `length` bytes from `stream` into the inactive slot, verify, activate.
    Returns the image info dict. Raises ImageError (bad image), _Stalled, UpdateError."""
    upd = Updater(length, sha256, esp32_module)
    # A timeout per read, not a watcher that cancels this task: on MicroPython an external
    # cancel of a task inside someone else's wait_for (the web layer bounds body reads too)
    # is delivered a second time later, killing the answer.
    # A stream that bounds its own reads (the web layer's request stream sets `timed`) needs
    # no second wait_for: on MicroPython each one costs two tasks per read.
    timeout = None if getattr(stream, "timed", False) else _stall_s()
    into = stream.readinto if timeout is None and hasattr(stream, "readinto") else None
    try:
        left = length
        while left > 0:
            room = upd.space()
            if len(room) > left:
                room = room[:left]
            try:
                if into is not None:  # no coroutine of ours per piece
                    n = await into(room)
                elif timeout is None:
                    n = await _read_into(stream, room)
                else:
                    n = await asyncio.wait_for(_read_into(stream, room), timeout)
            except asyncio.TimeoutError:  # ours, or the web layer's idle timeout
                raise _Stalled()
            if not n:
                raise ImageError("upload ended after %d of %d bytes" % (length - left, length))
            left -= n
            if upd.commit(n):
                await asyncio.sleep(0)
        upd.end()
        for _ in upd.verify_steps():
            await asyncio.sleep(0)
        return upd.activate()
    except BaseException:
        upd.abort()
        raise


async def _run(ctx, source, length, sha256):
    try:
        info = await receive(source, length, sha256)
    except ImageError as e:
        return _err(400, str(e))
    except _Stalled:
        return _err(408, "upload stalled: no data for %d s; nothing was activated" % STALL_S)
    except UpdateError as e:
        return _err(500, str(e))
    except OSError as e:
        return _err(500, "flash error: %s" % e)
    _after_success(ctx, info)
    return info


def _after_success(ctx, info):
    try:
        from smartbms import health
        health.reset_counter()
    except OSError:
        pass
    ev = getattr(ctx, "events", None)
    if ev is not None:
        try:
            ev.add("ota", "image %s written to %s; rebooting" % (info.get("version"), info.get("slot")))
        except Exception:
            pass
    info["reboot"] = True
    req = getattr(ctx, "request_reboot", None)
    if req is not None:
        req(REBOOT_REASON)


async def upload(ctx, request):
    """POST /api/ota: the raw image as the request body."""
    if "Content-Length" not in request.headers:
        return _err(411, "Content-Length is required (send the image as the raw body)")
    # only the raw type: no HTML form (and no fetch without a type) can send an image
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/octet-stream":
        return _err(415, "send the image as the raw body with Content-Type: application/octet-stream%s"
                    % (", not " + ctype if ctype else ""))
    length = request.content_length
    if length <= 0:
        return _err(400, "empty body: send micropython.bin")
    refused = _take_slot()
    if refused:
        return refused
    try:
        return await _run(ctx, request.stream, length, request.headers.get("X-Image-SHA256"))
    finally:
        ota.release()


async def pull_url(ctx, request):
    """POST /api/ota/url {"url", "sha256"}: pull the image over HTTP(S)."""
    from smartbms.actions import ApiError
    from smartbms.webreq import json_object  # loaded with the web stack that serves this route

    try:
        body = json_object(request, ("url", "sha256"))
    except ApiError as e:
        return _err(e.status, e.message, e.field)
    from smartbms import netio
    from smartbms.ota import pull

    url = body.get("url")
    if not isinstance(url, str):
        return _err(422, "the image's http:// or https:// URL is required", "url")
    try:
        pull.parse_url(url)
    except ValueError as e:
        return _err(422, str(e), "url")
    sha = body.get("sha256")
    try:
        if not isinstance(sha, str):
            raise ImageError("missing")
        digest_bytes(sha)  # the same rule the image check applies to it later
    except ImageError:
        return _err(422, "sha256 (64 hex digits) is required to pull an image", "sha256")
    refused = _take_slot()
    if refused:
        return refused
    try:
        try:
            writer, stream, length = await pull.open_image(url, int(_stall_s() * 1000))
        except ValueError as e:  # e.g. no https on this build, no Content-Length
            return _err(422, str(e), "url")
        except pull.PullError as e:
            return _err(504 if e.timeout else 502, "cannot fetch the image: %s" % e, "url")
        try:
            return await _run(ctx, stream, length, sha)
        except pull.PullError as e:  # the overall deadline passed mid-body
            return _err(504 if e.timeout else 502, "cannot fetch the image: %s; nothing was activated" % e, "url")
        finally:
            await netio.close(writer)
    finally:
        ota.release()


def install(app, ctx):
    """The two routes on a microdot app (the firmware's web layer loads this module only
    while an upload runs and calls upload()/pull_url() itself)."""
    @app.post("/api/ota")
    async def ota_upload(request):
        return await upload(ctx, request)

    @app.post("/api/ota/url")
    async def ota_url(request):
        return await pull_url(ctx, request)

    return app
