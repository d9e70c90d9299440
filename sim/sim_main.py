# The device process of `make sim`: the firmware's boot on the unix port, started by
# scripts/run_sim.py as `micropython -m sim_main` (frozen into the host interpreter, like the
# firmware, so its code costs no heap). It holds only the device: the battery, charger,
# BMS, radio, button and WiFi are the world's (sim/world/, in the supervisor's process),
# reached through the hardware shims over SIM_WORLD.
#
#   SIM_DIR     the device's persistent state (flash.bin, its littlefs "vfs" partition or,
#               without flash.bin, the plain directory SIM_DIR/fs; RTC memory; reset cause)
#   SIM_SPEED   device clock speed-up (smartbms.clock.set_speed)
#   SIM_PORT    the web server's port (127.0.0.1)
#   SIM_BMS     the BMS's protocol, for the provisioning of a fresh SIM_DIR
#   SIM_WORLD   host:port of the world
#   SIM_MQTT    host:port of an MQTT broker: MQTT on with it at every boot (README)
#   SIM_STATUS_S  print a one-line summary of the device's view this often (device s, default 600)
#   SIM_HEAP_REPORT_S  print "sim heap: t=<device s> alloc=<bytes> free=<bytes> maxfree=<bytes>
#               peak=<bytes> minmaxfree=<bytes> tickmax=<ms>" this often (device seconds):
#               alloc/free/maxfree now after a gc.collect(); peak (live heap), minmaxfree (the
#               largest free block) and tickmax (the longest real gap between two control
#               steps, in ms) over every sample since the last line. The sampler collects
#               and reads the heap every SIM_HEAP_SAMPLE_MS real ms (250). Used by
#               bench/bench_heap.py and tests/host/test_heap_budget.py.
#
# Order: the chip's strapping check (GPIO0 held low at reset: ROM download mode, the
# firmware never runs) -> bootloader (sim_boot over flash.bin) -> mount the vfs partition ->
# first-boot provisioning (provision.txt from run_sim) -> the firmware's own smartbms.app.
import gc
import os
import sys

# firmware modules, imported once the host's own objects are in place (_fit_heap)
asyncio = clock = paths = None
_ballast = None
_overhead = 0  # heap bytes that are not the firmware's: the host's own objects and the ballast

VFS_MOUNT = "/_smartbms_vfs"


def env(name, default):
    v = os.getenv(name)
    return v if v else default


SIM_DIR = env("SIM_DIR", "build/sim")
SPEED = int(env("SIM_SPEED", "60"))
PORT = int(env("SIM_PORT", "8080"))
BMS = env("SIM_BMS", "jbd")


def log(msg):
    print("sim:", msg)


# the otadata state of the slot that booted, as the owner would say it
BOOT_STATES = {"undefined": "as flashed, no update installed yet", "valid": "confirmed after an update",
               "pending_verify": "updated, on trial until it runs healthy"}


def mount_storage():
    """Mount the app's file system as the device does; returns where paths.ROOT points."""
    flash = SIM_DIR + "/flash.bin"
    try:
        os.stat(flash)
    except OSError:
        flash = None
    if flash is not None:
        import esp32
        import sim_boot
        import vfs

        label, state = sim_boot.boot(flash, log=log)
        log("booted %s (%s)" % (label, BOOT_STATES.get(state, state)))
        part = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0]
        try:
            fs = vfs.VfsLfs2(part)
        except OSError:
            log("formatting the vfs partition (littlefs)")
            vfs.VfsLfs2.mkfs(part)
            fs = vfs.VfsLfs2(part)
        vfs.mount(fs, VFS_MOUNT)
        return VFS_MOUNT + "/"
    root = SIM_DIR + "/fs"
    try:
        os.mkdir(root)
    except OSError:
        pass
    return root + "/"


def provision():
    """First boot of a fresh SIM_DIR: the owner's password, WiFi and BMS, as after setup."""
    path = SIM_DIR + "/provision.txt"
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except OSError:
        return
    values = {}
    for line in lines:
        k, _, v = line.partition("=")
        if k:
            values[k] = v
    from smartbms.auth import Auth
    from smartbms.settings import Settings

    s = Settings()
    s.load()
    s.update({"wifi_ssid": values.get("wifi_ssid", "simnet"), "bms_protocol": values.get("bms_protocol", BMS),
              "bms_mac": values.get("bms_mac", "")})
    if values.get("password"):  # none: the owner sets it on the first-time setup page
        Auth(s).set_password(values["password"])
    os.remove(path)
    with open(SIM_DIR + "/provisioned", "w") as f:
        f.write("1\n")
    log("provisioned: %s, WiFi %s, BMS %s" % (
        "admin password" if values.get("password") else "no admin password (the first-time setup page asks for one)",
        values.get("wifi_ssid", "simnet"), BMS))


def mqtt_setting():
    """SIM_MQTT=host:port: MQTT on with that broker; SIM_ALERT_URL=url: alerts posted there
    (every boot, so an existing SIM_DIR too)."""
    spec = env("SIM_MQTT", "")
    url = env("SIM_ALERT_URL", "")
    want = {}
    if spec:
        host, _, port = spec.rpartition(":")
        want = {"mqtt_enabled": True, "mqtt_host": host, "mqtt_port": int(port)}
    if url:
        want["alert_url"] = url
    if not want:
        return
    from smartbms.settings import Settings

    s = Settings()
    s.load()
    if any(s[k] != want[k] for k in want):
        s.update(want)
    if spec:
        log("MQTT broker %s" % spec)
    if url:
        log("alerts to %s" % url)


def heap_line():
    gc.collect()
    return "sim heap: t=%d alloc=%d free=%d" % (clock.now(), gc.mem_alloc() - _overhead, gc.mem_free())


def _fit_heap():
    """Leave the firmware exactly the board's heap. The host's own objects (the stand-ins for
    the chip's C modules, the world link, this boot code, the x86 copy of the frozen native
    code) are made first; a ballast then takes what the process has beyond the board's heap.
    SIM_FIRMWARE_HEAP (the board's heap), SIM_HEAP_BYTES (this process's) and SIM_PRISTINE
    (the interpreter's own objects at start, which the chip has too) come from run_sim."""
    global _ballast, _overhead
    import _host
    import bluetooth  # noqa: F401
    import machine  # noqa: F401
    import network  # noqa: F401

    # The firmware's own packages that the host's code imports too: they count as the
    # firmware's, not the host's (main() drops the OTA package again: the firmware loads it
    # for its use only).
    gc.collect()
    before = _host.heap()[1]
    import smartbms.ota  # noqa: F401

    gc.collect()
    early = _host.heap()[1] - before
    import esp32  # noqa: F401
    import sim_boot  # noqa: F401

    try:
        import smartbms.ota._xor_native  # noqa: F401 (x86 native code is copied into the heap)
    except ImportError:
        pass
    board = int(env("SIM_FIRMWARE_HEAP", "0"))
    if not board:
        return
    pristine = int(env("SIM_PRISTINE", "0"))
    gc.collect()
    total, used, free, _ = _host.heap()
    share = total * board // int(env("SIM_HEAP_BYTES", "1")) - pristine - early
    extra = free - share
    if extra < 0:
        raise SystemExit("sim: the host's own objects take %d bytes more than the allowance" % -extra)
    if extra > 64:
        _ballast = bytearray(extra - 32)  # the object's own block and rounding
    gc.collect()
    _overhead = _host.heap()[1] - pristine - early


_worst = [0]  # SIM_HEAP_WORST=1: [the smallest largest-free-block reported so far]
_census = False  # SIM_HEAP_CENSUS=1: a census line with each heap line (see _host.census)


class HeapWatch:
    """Samples the live heap and its largest free block (after a collection) and how late the
    control loop steps, in real time; host-only, a few hundred bytes of heap."""

    def __init__(self, app):
        import time

        self._ticks = time.ticks_ms
        self._diff = time.ticks_diff
        self.peak = 0
        self.min_max_free = 1 << 30
        self.tick_max = 0
        self._last_step = None
        self._step = app.control_step
        self._app = app
        app.control_step = self.control_step  # the loop looks the method up on the instance

    def control_step(self):
        now = self._ticks()
        if self._last_step is not None:
            gap = self._diff(now, self._last_step)
            if gap > self.tick_max:
                self.tick_max = gap
        self._last_step = now
        return self._step()

    def sample(self):
        import _host

        gc.collect()
        total, used, free, max_free = _host.heap()
        used -= _overhead
        if used > self.peak:
            self.peak = used
        if max_free < self.min_max_free:
            self.min_max_free = max_free
        if max_free < _worst[0]:  # SIM_HEAP_WORST=1: what the heap holds at its most fragmented
            _worst[0] = max_free
            print("sim worst: t=%d alloc=%d maxfree=%d" % (clock.now(), used, max_free))
            _host.census(True)
            import micropython

            micropython.mem_info(1)
            if env("SIM_HEAP_OBJECTS", ""):
                _host.objects(int(env("SIM_HEAP_OBJECTS", "0"), 0))
        return used, free, max_free

    def line(self):
        used, free, max_free = self.sample()
        out = "sim heap: t=%d alloc=%d free=%d maxfree=%d peak=%d minmaxfree=%d tickmax=%d" % (
            clock.now(), used, free, max_free, self.peak, self.min_max_free, self.tick_max)
        self.peak = used
        self.min_max_free = max_free
        self.tick_max = 0
        if _census:
            import _host

            _host.census(True)  # prints; allocates nothing on the heap it counts
        if env("SIM_HEAP_MAP", "0") == "1":  # the block map, to see what fragments the heap
            import micropython

            micropython.mem_info(1)
        if env("SIM_HEAP_MODULES", "0") == "1":  # what is imported now (allocates: debugging only)
            print("sim modules:", " ".join(sorted(sys.modules)))
        if env("SIM_HEAP_TOTAL", "0") == "1":  # bytes allocated since start (host build: MEM_STATS)
            import micropython

            print("sim alloc: total=%d" % micropython.mem_total())
        if env("SIM_HEAP_REACH", "0") == "1":  # what each part of the app holds (see _host.reach)
            self.reach()
        if env("SIM_HEAP_CODE", "0") == "1":  # what each module's code holds (see code_cost)
            code_cost(self._app)
        if env("SIM_HEAP_OBJECTS", ""):  # every object from that offset up (see _host.objects)
            import _host

            _host.objects(int(env("SIM_HEAP_OBJECTS", "0"), 0))
        return out

    def reach(self):
        """SIM_HEAP_REACH=1: what each part of the app, each task and each module holds
        (_host.reach: objects reached from it, not through the app's big parts, classes or
        modules), then a partition (each object counted once, for the first that reaches it)
        and what none of them reaches (the host's own objects among it). Allocates: debugging
        only. SIM_HEAP_REACH_IN=link,history: the same for the attributes of those parts."""
        import _host

        app = self._app
        stop = (app.events, app.settings, app.controller, app.link, app.wifi, sys.modules, asyncio.Task)
        for k, v in list(app.__dict__.items()) + [("module " + k, v) for k, v in sys.modules.items()]:
            n = _host.reach(v, tuple(x for x in stop if x is not v) + (app,))[0]
            if n >= 256:
                print("sim reach: %s %d" % (k, n))
        for name in env("SIM_HEAP_REACH_IN", "").split(","):
            if not name:
                continue
            obj = app
            for a in name.split("."):
                obj = getattr(obj, a, None)
            if obj is None:  # not there now (web.app: the web stack is not loaded)
                print("sim reach: %s: none now" % name)
                continue
            items = obj.items() if type(obj) is dict else enumerate(obj) if type(obj) is list else \
                obj.__dict__.items()
            show = env("SIM_HEAP_REACH_SHOW", "")  # name.key: and list each object it reaches
            for k, v in items:
                n = _host.reach(v, stop + (app, obj), show == "%s.%s" % (name, k))[0]
                if n >= 128:
                    print("sim reach: %s.%s %d %s" % (name, k, n, getattr(v, "coro", "")))
        roots = [("app." + k, v) for k, v in app.__dict__.items() if k != "_tasks"]
        roots += [("task %s" % t.coro, t) for t in app._tasks]
        roots += [("module " + k, v) for k, v in sys.modules.items()]
        _host.reach(0, (app,), False, True)  # a fresh map with only the app itself marked
        total = 0
        for k, v in roots:
            n = _host.reach(v, (asyncio.Task,), False, False)[0]
            total += n
            if n:
                print("sim part: %s %d" % (k, n))
        print("sim part: total %d, unreached %d" % (total, _host.unreached(256)))

    async def run(self, every_ms):
        while True:
            await asyncio.sleep_ms(every_ms)
            self.sample()


def code_cost(app):
    """SIM_HEAP_CODE=1: what each loaded module holds of the heap by itself: its globals, its
    functions and the classes it defines with their methods (not other modules' classes, not
    instances: _host.reach stops at classes and modules but the one measured). Allocates:
    debugging only."""
    import _host

    stop = (app, asyncio.Task)
    rows = []
    for name, mod in list(sys.modules.items()):
        n = _host.reach(mod, stop)[0]
        for k, v in list(mod.__dict__.items()):
            if type(v) is type and getattr(v, "__module__", None) == name:
                n += _host.reach(v, stop)[0]
        rows.append((n, name))
    rows.sort()
    total = 0
    for n, name in rows:
        total += n
        print("sim code: %s %d" % (name, n))
    print("sim code: total %d" % total)


async def report(app, watch, report_s):
    """What the device sees, now and then: its controller and the BMS's last reading."""
    next_report = clock.now() + report_s
    status_s = int(env("SIM_STATUS_S", "600"))
    next_status = clock.now() + 30
    while True:
        await clock.sleep_ms(1000)
        now = clock.now()
        if status_s and now >= next_status:
            next_status += status_s
            c = app.controller
            r = app.link.latest
            soc = "SOC %.1f %%" % r.soc if r is not None and r.soc is not None else "no reading"
            print("sim: t=%dh%02dm %s, relay %s, state %s: %s" % (
                now // 3600, now // 60 % 60, soc, "on" if c.relay else "off", c.state, c.reason))
        if watch is not None and now >= next_report:
            next_report += report_s
            print(watch.line())


def rom_download_mode():
    """GPIO0 low at reset: the ESP32's ROM waits for a serial download; nothing else runs."""
    print("rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))")
    print("waiting for download")
    import time

    while True:
        time.sleep(3600)


def seed_events():
    """SIM_EVENT_HISTORY=N: a device that has run for months, with N events (up to two full
    segments) on its flash before this boot, so heap figures include a full event log."""
    n = int(env("SIM_EVENT_HISTORY", "0"))
    base = paths.path("events")
    if n <= 0 or any(_exists(base + "%d.log" % i) for i in (0, 1)):
        return
    cap = 200  # the app's EventLog capacity
    seq = 0
    for seg in (0, 1):
        with open(base + "%d.log" % seg, "w") as f:
            for _ in range(min(cap, n - seq)):
                seq += 1
                f.write('[%d, %d, null, "bms", "BMS link lost after 30 s without data, reconnecting (%d)"]\n'
                        % (seq, seq * 60, seq))
    log("seeded %d events" % seq)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


async def run():
    gc.collect()  # as main.py: the boot's garbage gone, the firmware's modules settle low
    from smartbms import app as app_mod

    global _overhead
    app = app_mod.App(port=PORT, host="127.0.0.1")
    app.start()
    # the sim's own reporting (its tasks and the heap watch) is not the firmware's: counted
    # as host overhead, measured as it is made
    gc.collect()
    before = gc.mem_alloc()
    report_s = int(env("SIM_HEAP_REPORT_S", "0"))
    watch = HeapWatch(app) if report_s else None
    if watch is not None:
        asyncio.create_task(watch.run(int(env("SIM_HEAP_SAMPLE_MS", "250"))))
    asyncio.create_task(report(app, watch, report_s))
    gc.collect()
    _overhead += gc.mem_alloc() - before
    print("sim: firmware running (%s)" % heap_line())
    while True:
        await asyncio.sleep_ms(60000)


def main():
    global asyncio, clock, paths, _census
    import worldlink

    link = worldlink.get()
    if link is not None and link.inputs.get(0) == 0:
        rom_download_mode()
    _fit_heap()
    from smartbms import unload

    # the OTA package came in with the host's copy of its native code: the firmware loads it
    # only for its use (a status answer, an upload), so it does not stay (its native part
    # does: the host's, counted as such)
    unload(("smartbms.ota.otadata", "smartbms.ota"))
    if env("SIM_HEAP_WORST", "0") == "1":
        _worst[0] = 1 << 30
    if env("SIM_HEAP_CENSUS", "0") == "1":  # what is in the heap now is not the firmware's
        import _host

        gc.collect()
        _host.census(False)
        _census = True
    import asyncio
    from smartbms import clock, paths

    clock.set_speed(SPEED)
    paths.ROOT = mount_storage()
    from smartbms import overrides

    overrides.install(paths.ROOT)  # as main.py does on the chip: <littlefs>/override/ (make deploy)
    log("state in %s, clock x%d, web port %d" % (paths.ROOT, SPEED, PORT))
    provision()
    mqtt_setting()
    # the boot's garbage collected first, so that anything of the seeding a stale pointer on
    # the C stack keeps alive sits low in the heap, not in the middle of the firmware's free
    # space (a "seeded" message kept at the top once cut the largest free block by 7 KB)
    gc.collect()
    seed_events()
    gc.collect()
    try:
        asyncio.run(run())
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(0)


main()
