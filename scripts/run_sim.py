#!/usr/bin/env python3
"""Run the smartbms firmware on the MicroPython unix port against a simulated world.

    make sim                      (or: python3 scripts/run_sim.py [--once])

Two processes, as on the bench: this one is the world (sim/world/: the battery, the charger
behind the relay, the BMS on the air, the BOOT button, the WiFi networks), and it starts the
device, the host interpreter (build/host/micropython: MicroPython v1.28.0, 32-bit, with the
firmware frozen) running `-m sim_main` with SIM_HEAP of heap and nothing else in it.

Environment: SIM_SPEED (device clock speed-up, default 60), SIM_PORT (8080), SIM_DIR
(build/sim, the device's persistent state), SIM_BMS (jbd | jk02_24s | jk02_32s | daly),
SIM_PASSWORD (smartbms, the admin password the simulated owner chose), SIM_PANEL_PORT (the sim
panel's port, SIM_PORT + 1 by default: sim/panel.py), SIM_HEAP (the device's
MicroPython heap, the board's by default), SIM_SOC (55, the battery's SOC at start), SIM_WIFI
(the simulated WiFi networks, "simnet"), SIM_WORLD_PORT (the world's control port, free by
default), SIM_ONCE=1 (same as --once), SIM_MQTT=host:port (MQTT on with that broker, set at
every boot: README "Home Assistant and MQTT"), SIM_ALERT_URL=url (alerts posted there, set
at every boot). SIM_BUTTON_AT_BOOT=1 holds BOOT (GPIO0) at power-on:
the chip then starts its ROM download mode and the firmware does not run.

The supervisor plays the part of the chip's reset circuit: when the firmware resets itself
(exit code 75, machine.RESET_EXIT) or the simulated watchdog kills it (SIGKILL), it starts
it again, as the device reboots. Any other exit ends the simulation with that code. Ctrl-C
or SIGTERM stops the firmware and exits 0. Each time the web server answers it prints
"smartbms sim ready: http://127.0.0.1:PORT" and the world's control address as
"smartbms sim world: 127.0.0.1:PORT" (JSON lines, see sim/world/world.py).
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESET_EXIT = 75  # sim/shims/machine.py RESET_EXIT
READY = "smartbms sim ready: "
MAX_FAST_RESTARTS = 5  # a firmware that dies within seconds this often in a row is broken


def _env(name, default):
    v = os.environ.get(name)
    return v if v else default


WORLD = "smartbms sim world: "
PANEL = "smartbms sim panel: "
# The host's own objects in the device process (the stand-ins for the chip's C modules, the
# world link, the boot code) get this much on top of the firmware's heap; sim_main fills
# what they leave with a ballast, so the firmware has exactly SIM_HEAP (sim/sim_main.py).
HOST_ALLOWANCE = 40 * 1024


def board_heap():
    """The board's GC heap in bytes, from boards/SMARTBMS/mpconfigboard.h."""
    import re

    with open(os.path.join(ROOT, "boards", "SMARTBMS", "mpconfigboard.h")) as f:
        m = re.search(r"#define MICROPY_GC_INITIAL_HEAP_SIZE\s+\((\d+) \* 1024\)", f.read())
    if not m:
        sys.exit("run_sim: no MICROPY_GC_INITIAL_HEAP_SIZE in boards/SMARTBMS/mpconfigboard.h")
    return int(m.group(1)) * 1024


def heap_bytes(text):
    """'96k', '1m' or bytes."""
    t = text.strip().lower()
    mult = 1024 if t.endswith("k") else 1024 * 1024 if t.endswith("m") else 1
    return int(t.rstrip("km")) * mult


def pristine_heap(micropython):
    """The interpreter's own heap use at start (the chip has its own too)."""
    r = subprocess.run([micropython, "-c", "import gc; gc.collect(); print(gc.mem_alloc())"],
                       capture_output=True, text=True, env=dict(os.environ, MICROPYPATH=".frozen"))
    return int(r.stdout.strip()) if r.returncode == 0 else 0


def _check_vendor():
    missing = [p for p in ("build/vendor/microdot", "build/gen/webassets.py")
               if not os.path.exists(os.path.join(ROOT, p))]
    if missing:
        sys.exit("run_sim: %s missing: run `make sim` (it builds them) or `make vendor`" % ", ".join(missing))


def prepare_dir(sim_dir, password, wifi_ssid, bms_protocol, bms_mac):
    """Create SIM_DIR and, on first run, the simulated flash and the owner's provisioning."""
    os.makedirs(sim_dir, exist_ok=True)
    flash = os.path.join(sim_dir, "flash.bin")
    first = not os.path.exists(os.path.join(sim_dir, "provisioned"))
    if not os.path.exists(flash) and os.path.exists(os.path.join(ROOT, "sim", "flashimg.py")):
        sys.path.insert(0, os.path.join(ROOT, "sim"))
        sys.path.insert(0, os.path.join(ROOT, "sim", "shims"))
        sys.path.insert(0, os.path.join(ROOT, "modules"))
        try:
            import flashimg
            from smartbms.version import VERSION

            flashimg.create(flash, VERSION)
        except Exception as e:  # the OTA engineer's helper is optional for a run
            print("run_sim: no simulated flash (%s); using the plain directory %s/fs" % (e, sim_dir))
    first_pw = os.path.join(sim_dir, "first_password")
    if first:
        # The firmware applies this on its next boot and deletes it (sim/sim_main.py).
        with open(os.path.join(sim_dir, "provision.txt"), "w") as f:
            f.write("wifi_ssid=%s\nbms_protocol=%s\nbms_mac=%s\n" % (wifi_ssid, bms_protocol, bms_mac))
            if password:
                f.write("password=%s\n" % password)
        with open(first_pw, "w") as f:  # what to tell the user on later runs of this state
            f.write(password or "")
    else:
        try:
            with open(first_pw) as f:
                password = f.read()
        except OSError:
            pass
    # a power-on: no reset cause left over from the last run
    try:
        os.remove(os.path.join(sim_dir, "reset_cause"))
    except OSError:
        pass
    return first, password


def port_open(port):
    s = socket.socket()
    s.settimeout(0.3)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Supervisor:
    def __init__(self, once):
        self.once = once
        self.speed = _env("SIM_SPEED", "60")
        self.port = int(_env("SIM_PORT", "8080"))
        self.sim_dir = os.path.abspath(_env("SIM_DIR", os.path.join(ROOT, "build", "sim")))
        self.bms = _env("SIM_BMS", "jbd")
        # SIM_NO_PASSWORD=1: a device fresh from the factory, whose owner has not set one yet
        self.password = None if os.environ.get("SIM_NO_PASSWORD") == "1" else _env("SIM_PASSWORD", "smartbms")
        self.heap = heap_bytes(os.environ["SIM_HEAP"]) if os.environ.get("SIM_HEAP") else board_heap()
        self.micropython = _env("MICROPYTHON", os.path.join(ROOT, "build", "host", "micropython"))
        self.world = None
        self.panel = None
        self.bms_mac = None
        self.cycle_reason = None  # the sim panel killed the device on purpose
        self.child = None
        self.stopping = False
        self.restarts = 0

    def child_env(self):
        env = dict(os.environ)
        env.update(SIM_SPEED=self.speed, SIM_PORT=str(self.port), SIM_DIR=self.sim_dir, SIM_BMS=self.bms,
                   SIM_WORLD=self.world.address(), SIM_FIRMWARE_HEAP=str(self.heap),
                   SIM_HEAP_BYTES=str(self.heap + HOST_ALLOWANCE), SIM_PRISTINE=str(self.pristine))
        env["MICROPYPATH"] = ".frozen"  # the device runs only what its image holds
        env.pop("SIM_PASSWORD", None)  # the device only knows the provisioned hash
        return env

    def start_child(self):
        cmd = [self.micropython, "-X", "heapsize=%d" % (self.heap + HOST_ALLOWANCE), "-m", "sim_main"]
        self.child = subprocess.Popen(cmd, env=self.child_env(), cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, bufsize=0)
        threading.Thread(target=self._pump, args=(self.child,), daemon=True).start()
        threading.Thread(target=self._announce, args=(self.child,), daemon=True).start()

    def _pump(self, child):
        for line in iter(child.stdout.readline, b""):
            sys.stdout.write(line.decode("utf-8", "replace"))
            sys.stdout.flush()

    def _announce(self, child):
        while child.poll() is None and not self.stopping:
            if port_open(self.port):
                print(READY + "http://127.0.0.1:%d" % self.port, flush=True)
                return
            time.sleep(0.1)

    def stop(self, *_):
        """Signal-safe: ask the firmware to stop (SIGTERM), SIGKILL it if it lingers. The
        main loop's wait() then returns; never wait here (a handler would deadlock with it)."""
        self.stopping = True
        c = self.child
        if c is not None and c.returncode is None:
            try:
                c.terminate()
            except OSError:
                pass
            t = threading.Timer(3, self._kill_child, (c,))
            t.daemon = True
            t.start()

    def _kill_child(self, c):
        try:
            c.kill()
        except OSError:
            pass

    # ---- the sim panel's hands (sim/panel.py) ----
    def power_cycle(self, why):
        """Cut the device's power: the supervisor starts it again, as the chip would boot."""
        self.cycle_reason = why
        c = self.child
        if c is not None and c.poll() is None:
            c.kill()

    def set_speed(self, speed):
        """The world runs at `speed` at once; the device takes SIM_SPEED at boot: restart it."""
        self.world.control({"op": "speed", "speed": int(speed)})
        self.speed = str(int(speed))
        self.power_cycle("clock speed changed to x%d" % int(speed))

    def start_panel(self):
        sys.path.insert(0, os.path.join(ROOT, "sim"))
        from panel import Panel

        port = int(_env("SIM_PANEL_PORT", str(self.port + 1)))
        try:
            self.panel = Panel(self, port).start()
        except OSError:  # taken: any free port
            self.panel = Panel(self, 0).start()
        return self.panel.port

    def start_world(self):
        for sub in ("sim", "modules"):
            p = os.path.join(ROOT, sub)
            if p not in sys.path:
                sys.path.insert(0, p)
        from battery import Battery
        from world.bms_peer import MACS
        from world.host import WorldHost

        if self.bms not in MACS:
            sys.exit("run_sim: SIM_BMS must be one of %s, not %r" % (", ".join(sorted(MACS)), self.bms))
        battery = Battery(capacity_ah=100.0, cells=4, soc=float(_env("SIM_SOC", "55")), charger_a=20.0, load_a=3.0)
        self.world = WorldHost(port=int(_env("SIM_WORLD_PORT", "0")), speed=int(self.speed), battery=battery,
                               bms=self.bms, networks=_env("SIM_WIFI", "simnet")).start()
        # a pack nobody supports yet, for the capture mode (BMS tab)
        self.world.control({"op": "add_unknown_peer", "mac": "11:22:33:44:55:66", "name": "Mystery BMS"})
        if os.environ.get("SIM_BUTTON_AT_BOOT") == "1":
            self.world.control({"op": "button", "level": 0})
        return MACS[self.bms]

    def run(self):
        _check_vendor()
        if not os.path.exists(self.micropython):
            sys.exit("run_sim: %s not found: run `make sim`" % self.micropython)
        bms_mac = self.bms_mac = self.start_world()
        self.pristine = pristine_heap(self.micropython)
        first, password = prepare_dir(self.sim_dir, self.password, "simnet", self.bms, bms_mac)
        print("smartbms sim: BMS %s, speed x%s, firmware heap %d KB, state in %s"
              % (self.bms, self.speed, self.heap // 1024, self.sim_dir))
        print(WORLD + self.world.address(), flush=True)
        print(PANEL + "http://127.0.0.1:%d  (inject faults, reboot, change the clock speed)" % self.start_panel(),
              flush=True)
        if password:
            print("smartbms sim: open http://127.0.0.1:%d  user admin  password %s%s  (Ctrl-C stops)"
                  % (self.port, password, "" if first else " (set on this state's first run, unless changed "
                     "since; rm -rf %s for a fresh device)" % self.sim_dir), flush=True)
        else:
            print("smartbms sim: open http://127.0.0.1:%d  and set the admin password  (Ctrl-C stops)"
                  % self.port, flush=True)
        # Ctrl-C reaches the firmware too (same process group); either way stop it and exit 0.
        signal.signal(signal.SIGTERM, lambda *a: self.stop())
        signal.signal(signal.SIGINT, lambda *a: self.stop())
        fast = 0
        try:
            while True:
                t0 = time.monotonic()
                on_purpose = False
                self.start_child()
                rc = self.child.wait()
                if self.stopping:
                    print("smartbms sim: stopped", flush=True)
                    return 0
                if rc == RESET_EXIT:
                    why = "the firmware reset itself"
                elif rc == -signal.SIGKILL:
                    on_purpose = self.cycle_reason is not None
                    why = self.cycle_reason or "watchdog reset"
                    self.cycle_reason = None
                else:
                    print("smartbms sim: firmware exited with code %s: stopping" % rc, flush=True)
                    return rc if rc and rc > 0 else 1
                if self.once:
                    print("smartbms sim: %s (--once: not restarting)" % why, flush=True)
                    return rc if rc > 0 else 1
                fast = fast + 1 if time.monotonic() - t0 < 3 and not on_purpose else 0
                if fast >= MAX_FAST_RESTARTS:
                    print("smartbms sim: the firmware keeps resetting at once: giving up", flush=True)
                    return 1
                self.restarts += 1
                print("smartbms sim: %s: restarting the device (#%d)" % (why, self.restarts), flush=True)
                time.sleep(0.3)
        finally:
            c = self.child
            if c is not None and c.poll() is None:
                c.terminate()
                try:
                    c.wait(3)
                except subprocess.TimeoutExpired:
                    c.kill()
                    c.wait()


def main(argv):
    once = "--once" in argv or os.environ.get("SIM_ONCE") == "1"
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    return Supervisor(once).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
