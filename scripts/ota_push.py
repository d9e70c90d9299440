#!/usr/bin/env python3
"""Push a smartbms app image (micropython.bin) to a device over WiFi.

    ota_push.py --host HOST[:PORT] [--password PW] IMAGE
    make ota HOST=smartbms.local IMAGE=dist/smartbms-0.2.0-ota.bin PASSWORD=...

The image is checked locally with the firmware's own validator first, sent with a
progress bar, and then the tool waits for the device to come back and reports the
version it runs (or the rollback when the old version returns). The password may also
come from $SMARTBMS_PASSWORD.

Exit codes: 0 updated; 2 bad image or usage; 3 wrong password; 4 the device refused the
image; 5 the device rolled back to the old version; 6 device unreachable or no answer in time.
"""
import argparse
import base64
import hashlib
import http.client
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "modules"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from smartbms.ota.image import ImageChecker, ImageError  # noqa: E402

EXIT_OK, EXIT_IMAGE, EXIT_AUTH, EXIT_REFUSED, EXIT_ROLLBACK, EXIT_UNREACHABLE = 0, 2, 3, 4, 5, 6
CHUNK = 16 * 1024


class Failure(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


def slot_size():
    import partition_table as pt
    with open(os.path.join(ROOT, "boards", "SMARTBMS", "partitions.csv")) as f:
        parts = pt.parse_csv(f.read())
    return [p for p in parts if p.subtype == "ota_0"][0].size


def check_image(data):
    c = ImageChecker(slot_size())
    try:
        c.check_length(len(data))
        mv = memoryview(data)
        for i in range(0, len(mv), 4096):
            c.feed(mv[i:i + 4096])
        return c.finish()
    except ImageError as e:
        raise Failure(EXIT_IMAGE, "image refused locally: %s" % e)


def split_host(host):
    if host.startswith("http://"):
        host = host[7:]
    host = host.rstrip("/")
    if ":" in host:
        h, p = host.rsplit(":", 1)
        return h, int(p)
    return host, 80


class Device:
    def __init__(self, host, password, timeout=10):
        self.host, self.port = split_host(host)
        self.auth = "Basic " + base64.b64encode(("admin:%s" % password).encode()).decode()
        self.timeout = timeout

    def _conn(self, timeout=None):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)

    def get(self, path):
        c = self._conn()
        try:
            c.request("GET", path, headers={"Authorization": self.auth})
            r = c.getresponse()
            body = r.read()
            return r.status, _json(body)
        finally:
            c.close()

    def ota_status(self):
        """(ota dict or None, uptime or None) from /api/status; raises OSError when down."""
        status, body = self.get("/api/status")
        if status == 401:
            raise Failure(EXIT_AUTH, "wrong password (HTTP 401)")
        if status != 200 or not isinstance(body, dict):
            raise OSError("status answered HTTP %d" % status)
        dev = body.get("device") if isinstance(body.get("device"), dict) else body
        ota = dev.get("ota") if isinstance(dev.get("ota"), dict) else body.get("ota")
        up = dev.get("uptime_s", body.get("uptime_s"))
        return ota, up

    def push(self, data, sha, progress):
        c = self._conn(timeout=60)
        try:
            c.putrequest("POST", "/api/ota")
            c.putheader("Authorization", self.auth)
            c.putheader("Content-Type", "application/octet-stream")
            c.putheader("Content-Length", str(len(data)))
            c.putheader("X-Image-SHA256", sha)
            c.endheaders()
            sent = 0
            try:
                while sent < len(data):
                    c.send(data[sent:sent + CHUNK])
                    sent += min(CHUNK, len(data) - sent)
                    progress(sent)
            except OSError:
                pass  # the device may answer (refuse) and close before the body is complete
            try:
                r = c.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise Failure(EXIT_UNREACHABLE, "no answer to the upload after %d bytes: %s" % (sent, e))
            return r.status, _json(r.read())
        finally:
            c.close()


def _json(body):
    try:
        return json.loads(body.decode() or "null")
    except ValueError:
        return body


def rate(nbytes, seconds):
    """The transfer rate in words: KB/s or MB/s, or "…" before half a second has passed (the
    first writes only fill the socket buffer and would read as gigabytes a second)."""
    if seconds < 0.5:
        return "…"
    kbs = nbytes / 1024 / seconds
    return "%.1f MB/s" % (kbs / 1024) if kbs >= 1024 else "%.0f KB/s" % kbs


class Progress:
    def __init__(self, total, out=sys.stderr):
        self.total, self.out, self.t0 = total, out, time.monotonic()
        self.tty = out.isatty()
        self.last = -1

    def __call__(self, sent):
        dt = max(time.monotonic() - self.t0, 1e-6)
        pct = 100 * sent // self.total
        if not self.tty and pct // 10 == self.last // 10 and sent < self.total:
            return
        self.last = pct
        bar = "#" * (pct * 30 // 100)
        line = "[%-30s] %3d%%  %d/%d KB  %s" % (bar, pct, sent // 1024, self.total // 1024, rate(sent, dt))
        self.out.write(("\r" + line) if self.tty else (line + "\n"))
        if self.tty and sent >= self.total:
            self.out.write("\n")
        self.out.flush()


def wait_back(dev, old_uptime, new_version, old_version, timeout, log, confirm=True, new_slot=None):
    """Wait for the reboot, then (confirm=True) for the new image to confirm itself or
    for the rollback. The slot tells a rollback apart when both images carry the same
    version. Returns an exit code."""
    deadline = time.monotonic() + timeout
    went_down = rebooted = False
    said_pending = False
    while time.monotonic() < deadline:
        try:
            ota, up = dev.ota_status()
        except (OSError, http.client.HTTPException):
            went_down = True
            time.sleep(0.3)
            continue
        rebooted = rebooted or went_down or (up is not None and old_uptime is not None and up < old_uptime)
        if not rebooted:
            time.sleep(0.3)
            continue
        if not ota:
            log("device is back (its status does not report OTA details)")
            return EXIT_OK
        running = ota.get("running_version")
        if new_slot is not None and ota.get("running") not in (None, new_slot):
            log("ROLLBACK: the device came back running %s from %s, not the new image in %s"
                % (running, ota.get("running"), new_slot))
            return EXIT_ROLLBACK
        if running != new_version:
            if running == old_version:
                log("ROLLBACK: the device came back running the old version %s from %s"
                    % (running, ota.get("running")))
            else:
                log("device is back running %r, expected %s" % (running, new_version))
            return EXIT_ROLLBACK
        if not ota.get("pending_verify") or not confirm:
            log("device is back running %s from %s%s" % (running, ota.get("running"),
                " (pending verification)" if ota.get("pending_verify") else
                ", confirmed" if said_pending else ""))
            return EXIT_OK
        if not said_pending:
            log("device runs %s from %s, pending verification (confirmed after 60 s healthy)..."
                % (running, ota.get("running")))
            said_pending = True
        time.sleep(0.5)
    log("no confirmation within %d s (see the device's event log)" % timeout)
    return EXIT_UNREACHABLE


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True, help="HOST[:PORT] of the device")
    ap.add_argument("--password", default=os.environ.get("SMARTBMS_PASSWORD"),
                    help="admin password (default $SMARTBMS_PASSWORD)")
    ap.add_argument("--wait", type=float, default=120, help="seconds to wait for the reboot (0: do not wait)")
    ap.add_argument("--no-confirm", action="store_true",
                    help="return once the new version answers, without waiting for its 60 s health check")
    ap.add_argument("image")
    args = ap.parse_args(argv)

    def log(msg):
        print("ota_push: " + msg, file=sys.stderr)

    if not args.password:
        log("a password is required (--password or $SMARTBMS_PASSWORD)")
        return EXIT_IMAGE
    try:
        with open(args.image, "rb") as f:
            data = f.read()
    except OSError as e:
        log("cannot read %s: %s" % (args.image, e))
        return EXIT_IMAGE
    try:
        info = check_image(data)
        sha = hashlib.sha256(data).hexdigest()
        log("%s: smartbms %s, %d bytes, sha256 %s" % (args.image, info["version"], len(data), sha[:16]))
        dev = Device(args.host, args.password)
        try:
            ota, uptime = dev.ota_status()
        except (OSError, http.client.HTTPException) as e:
            raise Failure(EXIT_UNREACHABLE, "cannot reach %s: %s" % (args.host, e))
        old = ota.get("running_version") if ota else None
        if ota:
            log("device runs %s from %s" % (old, ota.get("running")))
        status, body = dev.push(data, sha, Progress(len(data)))
        if status == 401:
            raise Failure(EXIT_AUTH, "wrong password (HTTP 401)")
        if status != 200:
            msg = body.get("error") if isinstance(body, dict) else body
            raise Failure(EXIT_REFUSED, "device refused the image (HTTP %d): %s" % (status, msg))
        log("written to %s; the device reboots into it" % body.get("slot"))
        if not args.wait:
            return EXIT_OK
        return wait_back(dev, uptime, info["version"], old, args.wait, log, confirm=not args.no_confirm,
                         new_slot=body.get("slot"))
    except Failure as e:
        log(str(e))
        return e.code


if __name__ == "__main__":
    sys.exit(main())
