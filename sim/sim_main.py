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
#   SIM_STATUS_S  print a one-line summary of the device's view this often (device s, default 600)
#   SIM_HEAP_REPORT_S  print "sim heap: t=<device s> alloc=<bytes> free=<bytes>" this often
#               (device seconds, after a gc.collect()); used by bench/bench_heap.py
#
# Order: the chip's strapping check (GPIO0 held low at reset: ROM download mode, the
# firmware never runs) -> bootloader (sim_boot over flash.bin) -> mount the vfs partition ->
# first-boot provisioning (provision.txt from run_sim) -> the firmware's own smartbms.app.
import gc
import os
import sys

import asyncio

from smartbms import clock, paths

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
        log("booted %s (%s)" % (label, state))
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
    log("provisioned: admin password, WiFi simnet, BMS %s" % BMS)


def heap_line():
    gc.collect()
    return "sim heap: t=%d alloc=%d free=%d" % (clock.now(), gc.mem_alloc(), gc.mem_free())


async def report(app):
    """What the device sees, now and then: its controller and the BMS's last reading."""
    report_s = int(env("SIM_HEAP_REPORT_S", "0"))
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
        if report_s and now >= next_report:
            next_report += report_s
            print(heap_line())


def rom_download_mode():
    """GPIO0 low at reset: the ESP32's ROM waits for a serial download; nothing else runs."""
    print("rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))")
    print("waiting for download")
    import time

    while True:
        time.sleep(3600)


async def run():
    from smartbms import app as app_mod

    app = app_mod.App(port=PORT, host="127.0.0.1")
    app.start()
    asyncio.create_task(report(app))
    print("sim: firmware running (%s)" % heap_line())
    while True:
        await asyncio.sleep_ms(60000)


def main():
    import worldlink

    link = worldlink.get()
    if link is not None and link.inputs.get(0) == 0:
        rom_download_mode()
    clock.set_speed(SPEED)
    paths.ROOT = mount_storage()
    log("state in %s, clock x%d, web port %d" % (paths.ROOT, SPEED, PORT))
    provision()
    try:
        asyncio.run(run())
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(0)


main()
