#!/usr/bin/env python3
"""Run the smartbms firmware on the MicroPython unix port against a simulated battery.

    make sim                      (or: python3 scripts/run_sim.py [--once])

Environment: SIM_SPEED (device clock speed-up, default 60), SIM_PORT (8080), SIM_DIR
(build/sim, the device's persistent state), SIM_BMS (jbd | jk02_32s | daly), SIM_PASSWORD
(smartbms, the admin password the simulated owner chose), SIM_HEAP (MicroPython heap, 512k),
SIM_SOURCE=1 (run the .py sources instead of precompiled .mpy; needs a bigger SIM_HEAP), SIM_WIFI (the simulated WiFi networks, "simnet"), SIM_ONCE=1 (same as --once).

The supervisor plays the part of the chip's reset circuit: when the firmware resets itself
(exit code 75, machine.RESET_EXIT) or the simulated watchdog kills it (SIGKILL), it starts
it again, as the device reboots. Any other exit ends the simulation with that code. Ctrl-C
or SIGTERM stops the firmware and exits 0. Each time the web server answers it prints
"smartbms sim ready: http://127.0.0.1:PORT".
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


SOURCES = ("modules", "build/gen", "sim/shims", "sim", "build/vendor")
MPY_DIR = os.path.join(ROOT, "build", "sim-mpy")


def micropypath(compiled=True):
    if compiled:
        return ":".join([".frozen"] + [os.path.join(MPY_DIR, str(i)) for i in range(len(SOURCES))])
    return ":".join([".frozen"] + [os.path.join(ROOT, p) for p in SOURCES])


def _march():
    # native-code modules (@micropython.native) need the host's architecture
    import platform

    m = {"x86_64": "x64", "amd64": "x64", "i686": "x86", "aarch64": "arm64"}.get(platform.machine().lower())
    return ["-march=" + m] if m else []


def compile_tree(mpy_cross):
    """Precompile everything the sim imports to .mpy (build/sim-mpy), as the firmware freezes
    its modules: compiling sources at import time would cost the small heap ~200 KB.
    Only files newer than their .mpy are compiled again; stale .mpy files are removed."""
    for i, top in enumerate(SOURCES):
        src_top = os.path.join(ROOT, top)
        out_top = os.path.join(MPY_DIR, str(i))
        wanted = set()
        for root, dirs, files in os.walk(src_top):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "scenarios")]
            for name in files:
                if not name.endswith(".py") or (top == "sim" and name == "sim_main.py"):
                    continue
                src = os.path.join(root, name)
                rel = os.path.relpath(src, src_top)
                out = os.path.join(out_top, rel[:-3] + ".mpy")
                wanted.add(out)
                if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
                    continue
                os.makedirs(os.path.dirname(out), exist_ok=True)
                # write aside, then rename: sims started in parallel never load a half-written file
                tmp = "%s.%d.tmp" % (out, os.getpid())
                r = subprocess.run([mpy_cross] + _march() + ["-s", os.path.join(top, rel), "-o", tmp, src],
                                   capture_output=True, text=True)
                if r.returncode:
                    sys.exit("run_sim: %s does not compile:\n%s" % (src, r.stderr or r.stdout))
                os.replace(tmp, out)
        for root, dirs, files in os.walk(out_top):
            for name in files:
                p = os.path.join(root, name)
                if p not in wanted and not name.endswith(".tmp"):
                    try:
                        os.remove(p)
                    except OSError:
                        pass  # another sim removed it first


def _check_vendor():
    missing = [p for p in ("build/vendor/microdot", "build/gen/webassets.py")
               if not os.path.exists(os.path.join(ROOT, p))]
    if missing:
        sys.exit("run_sim: %s missing: run `make sim` (it builds them) or `make vendor`" % ", ".join(missing))


def prepare_dir(sim_dir, password, wifi_ssid):
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
            f.write("wifi_ssid=%s\n" % wifi_ssid)
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
        self.heap = _env("SIM_HEAP", "512k")
        self.micropython = _env("MICROPYTHON", os.path.join(ROOT, ".venv", "bin", "micropython"))
        self.mpy_cross = _env("MPY_CROSS", os.path.join(ROOT, ".venv", "bin", "mpy-cross"))
        self.compiled = os.environ.get("SIM_SOURCE") != "1"
        self.child = None
        self.stopping = False
        self.restarts = 0

    def child_env(self):
        env = dict(os.environ)
        env.update(SIM_SPEED=self.speed, SIM_PORT=str(self.port), SIM_DIR=self.sim_dir, SIM_BMS=self.bms)
        env["MICROPYPATH"] = micropypath(self.compiled)
        env.pop("SIM_PASSWORD", None)  # the device only knows the provisioned hash
        return env

    def start_child(self):
        cmd = [self.micropython, "-X", "heapsize=" + self.heap, os.path.join(ROOT, "sim", "sim_main.py")]
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

    def run(self):
        _check_vendor()
        if not os.path.exists(self.micropython):
            sys.exit("run_sim: %s not found: run `make sim`" % self.micropython)
        if self.compiled:
            compile_tree(self.mpy_cross)
        first, password = prepare_dir(self.sim_dir, self.password, "simnet")
        print("smartbms sim: BMS %s, speed x%s, state in %s" % (self.bms, self.speed, self.sim_dir))
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
                self.start_child()
                rc = self.child.wait()
                if self.stopping:
                    print("smartbms sim: stopped", flush=True)
                    return 0
                if rc == RESET_EXIT:
                    why = "the firmware reset itself"
                elif rc == -signal.SIGKILL:
                    why = "watchdog reset"
                else:
                    print("smartbms sim: firmware exited with code %s: stopping" % rc, flush=True)
                    return rc if rc and rc > 0 else 1
                if self.once:
                    print("smartbms sim: %s (--once: not restarting)" % why, flush=True)
                    return rc if rc > 0 else 1
                fast = fast + 1 if time.monotonic() - t0 < 3 else 0
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
