# Rollback and safe mode. A freshly activated image boots PENDING_VERIFY; it is confirmed
# (mark_app_valid_cancel_rollback) only once the device has been healthy for 60 s of
# device time, so a crash or watchdog reset before that makes the bootloader roll back.
# A boot counter in a small file counts boots that never became healthy; after `limit`
# of them in a row the next boot runs in safe mode (WiFi, web and OTA only, relay off)
# and the counter starts over, so a plain reboot tries normal mode again.
# An OTA writes the app slot, never the filesystem: modules deployed there (`make deploy`,
# smartbms.overrides) still replace the new image's copies, and this check then judges the
# image together with them. state() says so; `make undeploy` before an OTA checks the image alone.
import os

from smartbms import clock, paths

LIMIT = 5
_OTA = ("smartbms.ota.otadata", "smartbms.ota")
HEALTHY_AFTER_S = 60


def _read_count(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        n = int(text)
        return n if n >= 0 else 0
    except (OSError, ValueError):
        return 0


def _write_count(path, n):
    # write-then-rename: a power cut leaves the old or the new count, never a torn file
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % n)
    os.rename(tmp, path)


def reset_counter(path=None):
    """Called after a successful OTA upload: the new image starts with a clean slate."""
    _write_count(path or paths.path("bootcount"), 0)


class BootGuard:
    def __init__(self, path=None, limit=LIMIT, healthy_after_s=HEALTHY_AFTER_S, mark_valid=None):
        self.path = path or paths.path("bootcount")
        self.limit = limit
        self.healthy_after_s = healthy_after_s
        self._mark_valid = mark_valid or _mark_app_valid
        self.boots = 0
        self.safe_mode = False
        self.is_healthy = False
        self.confirmed = False
        self.failing = None  # names of the checks that failed last time

    def begin(self):
        """Count this boot; True when this boot must run in safe mode."""
        unhealthy = _read_count(self.path)
        self.safe_mode = unhealthy >= self.limit
        self.boots = 0 if self.safe_mode else unhealthy + 1
        _write_count(self.path, self.boots)
        return self.safe_mode

    def healthy(self):
        """The device has been healthy long enough: clear the counter, confirm the image."""
        if self.is_healthy:
            return
        self.is_healthy = True
        if not self.safe_mode:
            _write_count(self.path, 0)
            self.boots = 0
            self.confirmed = self._mark_valid()

    def state(self):
        return {"boots": self.boots, "safe_mode": self.safe_mode, "healthy": self.is_healthy,
                "failing": self.failing, "overrides": _overrides_note()}

    def check(self, ctx):
        """True when every required health check passes now."""
        try:
            checks = ctx.health()
        except Exception as e:  # a broken check counts as unhealthy, never as a crash
            self.failing = ["health(): %r" % e]
            return False
        need = ("web",) if self.safe_mode else ("settings", "control", "web", "ble")
        failing = [k for k in need if not checks.get(k)]
        self.failing = failing or None
        return not failing

    def step(self, ctx, now, since):
        """One health poll at device time `now`; returns the new `since` (None = unhealthy)."""
        if not self.check(ctx):
            return None
        if since is None:
            since = now
        if now - since >= self.healthy_after_s:
            self.healthy()
        return since

    async def watch(self, ctx, poll_s=1):
        since = None
        probe = getattr(ctx, "probe_web", None)
        while not self.is_healthy:
            if probe is not None:
                await probe()
            since = self.step(ctx, clock.now(), since)
            await clock.sleep(poll_s)


def _overrides_note():
    """None, or why this check does not speak for the image alone."""
    from smartbms import overrides

    n = len(overrides.loaded)
    if not n:
        return None
    return ("%d module%s from the filesystem replace the image's copies (an OTA does not replace "
            "them; make undeploy): checked together with them" % (n, "" if n == 1 else "s"))


def _mark_app_valid():
    """Confirm the running image, only if it is the one waiting for confirmation: after an
    upload the active otadata entry names the new image, and confirming from the old one
    would make the new image VALID before it ever ran (no rollback for it)."""
    import sys

    loaded = "smartbms.ota" in sys.modules
    try:
        import esp32
        from smartbms import ota
    except ImportError:
        return False
    try:
        if not ota.status()["pending_verify"]:
            return False
        esp32.Partition.mark_app_valid_cancel_rollback()
        return True
    except OSError:
        return False  # no otadata partition (serial-flashed without OTA layout)
    finally:
        if not loaded and not ota.busy():  # loaded for this check only (the web stack drops its own)
            from smartbms import unload

            unload(_OTA)
