# The unix-port entry of `make sim` (started by scripts/run_sim.py; host only, never frozen).
#
#   SIM_DIR     the device's persistent state (flash.bin, its littlefs "vfs" partition or,
#               without flash.bin, the plain directory SIM_DIR/fs; RTC memory; reset cause)
#   SIM_SPEED   device clock speed-up (smartbms.clock.set_speed)
#   SIM_PORT    the web server's port (127.0.0.1)
#   SIM_BMS     jbd | jk02_24s | jk02_32s | daly: the simulated BMS's protocol
#   SIM_SOC     the battery's SOC on a fresh SIM_DIR (default 55 %)
#   SIM_BUTTON_AT_BOOT=1  hold the BOOT button (GPIO0) at power-on: setup mode
#   SIM_STATUS_S  print a one-line battery/charger summary this often (device s, default 600)
#   SIM_HEAP_REPORT_S  print "sim heap: t=<device s> alloc=<bytes> free=<bytes>" this often
#               (device seconds, after a gc.collect()); used by bench/bench_heap.py
#
# Order: bootloader (sim_boot over flash.bin) -> mount the vfs partition -> first-boot
# provisioning (provision.txt from run_sim) -> the simulated world (battery, charger wired to
# the relay pin, BMS peripheral) -> the firmware's own smartbms.app.
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

    import sim_bms

    s = Settings()
    s.load()
    s.update({"wifi_ssid": values.get("wifi_ssid", "simnet"), "bms_protocol": BMS,
              "bms_mac": sim_bms.MACS.get(BMS, "")})
    if values.get("password"):  # none: the owner sets it on the first-time setup page
        Auth(s).set_password(values["password"])
    os.remove(path)
    with open(SIM_DIR + "/provisioned", "w") as f:
        f.write("1\n")
    log("provisioned: admin password, WiFi simnet, BMS %s" % BMS)


def heap_line():
    gc.collect()
    return "sim heap: t=%d alloc=%d free=%d" % (clock.now(), gc.mem_alloc(), gc.mem_free())


async def world(app, battery, bms):
    """Step the battery in device time; the charger follows the relay contact."""
    import machine

    report_s = int(env("SIM_HEAP_REPORT_S", "0"))
    next_report = clock.now() + report_s
    status_s = int(env("SIM_STATUS_S", "600"))
    next_status = clock.now() + 30
    last = clock.now_ms()
    while True:
        await clock.sleep_ms(1000)
        t = clock.now_ms()
        pin = machine.pin(app.settings["relay_pin"]).value()
        charger_on = (pin == 0) if app.settings["relay_active_low"] else (pin == 1)
        battery.step((t - last) / 1000, charger_on)
        last = t
        if status_s and clock.now() >= next_status:
            next_status += status_s
            c = app.controller
            print("sim: t=%dh%02dm SOC %.1f %% %.2f V %+.1f A, charger %s, state %s: %s" % (
                clock.now() // 3600, clock.now() // 60 % 60, battery.soc(), battery.reading().voltage,
                battery.current, "on" if charger_on else "off", c.state, c.reason))
        if report_s and clock.now() >= next_report:
            next_report += report_s
            print(heap_line())


async def run():
    from smartbms import app as app_mod
    from smartbms import board

    import machine
    from battery import Battery
    from sim_bms import SimBMS

    battery = Battery(capacity_ah=100.0, cells=4, soc=float(env("SIM_SOC", "55")), charger_a=20.0, load_a=3.0)
    bms = SimBMS(battery, BMS)
    log("simulated %s BMS %s, battery %.0f %% SOC" % (BMS, bms.mac, battery.soc()))
    if env("SIM_BUTTON_AT_BOOT", "0") == "1":
        machine.pin(board.BUTTON_PIN).sim_drive(0)  # BOOT held while powering up
        log("BOOT button held at power-on")
    app = app_mod.App(setup_mode=board.button_held_at_boot(), port=PORT, host="127.0.0.1")
    machine.pin(board.BUTTON_PIN).sim_drive(None)  # released once the firmware has seen it
    app.start()
    asyncio.create_task(world(app, battery, bms))
    print("sim: firmware running (%s)" % heap_line())
    while True:
        await asyncio.sleep_ms(60000)


def main():
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
