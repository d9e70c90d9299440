# scripts/device.py (make deploy/undeploy/run/console) and scripts/deploy_plan.py: the mpremote commands it builds, what
# it refuses and why, and the whole round trip against a MicroPython without hardware: the
# unix port (build/host/micropython, the firmware frozen in) on a pseudo-terminal. Its REPL
# speaks mpremote's raw-REPL protocol; only a soft reset (Ctrl-D) would end the process, and
# device.py never asks for one ("resume").
import os
import pty
import select
import subprocess
import sys
import threading
import time
import tty

import pytest

import deploy_plan
import device

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MICROPYTHON = os.environ.get("MICROPYTHON") or os.path.join(ROOT, "build", "host", "micropython")
MPREMOTE = os.path.join(os.path.dirname(sys.executable), "mpremote")
ESP32_MPY = 6 | (3 | 10 << 2) << 8  # sys.implementation._mpy of MicroPython v1.28.0 on the ESP32


class Pty:
    """A serial-port stand-in: PORT is a pty's slave; `program` (if any) runs on a second pty
    whose master is bridged to this one, so the port can be opened and closed like a device."""

    def __init__(self, program=None, cwd=None, env=None):
        self.dm, ds = pty.openpty()
        tty.setraw(ds)
        self.port = os.ttyname(ds)
        os.close(ds)  # nobody holds the port until a client opens it
        self.proc = None
        self._stop = False
        if program:
            pm, ps = pty.openpty()
            tty.setraw(ps)  # no \n -> \r\n translation: mpremote expects MicroPython's bytes
            self.proc = subprocess.Popen(program, stdin=ps, stdout=ps, stderr=ps, cwd=cwd, env=env)
            os.close(ps)
            self.pm = pm
            self._thread = threading.Thread(target=self._pump, daemon=True)
            self._thread.start()
            time.sleep(0.3)

    def _pump(self):
        while not self._stop:
            r, _, _ = select.select([self.dm, self.pm], [], [], 0.1)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # the port's slave is closed between clients
                    time.sleep(0.02)
                    continue
                try:
                    os.write(self.pm if fd == self.dm else self.dm, data)
                except OSError:
                    pass

    def close(self):
        self._stop = True
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._thread.join()
            os.close(self.pm)
        os.close(self.dm)


def _unix_port(tmp_path, frozen=True):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no host MicroPython at %s (make host-micropython)" % MICROPYTHON)
    env = dict(os.environ, MICROPYPATH=".frozen" if frozen else os.path.join(ROOT, "sim"))
    return Pty([MICROPYTHON, "-X", "heapsize=2m"], cwd=str(tmp_path), env=env)


@pytest.fixture
def unix_device(tmp_path):
    p = _unix_port(tmp_path)
    yield p
    p.close()


@pytest.fixture
def bare_port():
    p = Pty()
    yield p
    p.close()


def refusal(capsys, *argv):
    code = device.main(list(argv))
    return code, capsys.readouterr().err


# ---- refusals ----

def test_no_port_is_refused_with_the_usage(capsys, monkeypatch):
    monkeypatch.delenv("PORT", raising=False)
    for cmd in ("deploy", "undeploy", "console"):
        code, err = refusal(capsys, cmd)
        assert code == 3 and err.startswith("device: no PORT: make %s PORT=/dev/ttyUSB0" % cmd)
    code, err = refusal(capsys, "run", "--port", "/dev/ttyUSB0")
    assert code == 2 and "no SCRIPT: make run PORT=/dev/ttyUSB0 SCRIPT=" in err


def test_a_port_that_does_not_exist_or_is_not_serial_is_refused(capsys, tmp_path):
    code, err = refusal(capsys, "undeploy", "--port", "/dev/ttyUSB97")
    assert code == 3 and "/dev/ttyUSB97 does not exist: is the ESP32 plugged in?" in err
    code, err = refusal(capsys, "console", "--port", "/dev/null")
    assert code == 3 and "/dev/null is not a serial port" in err
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    code, err = refusal(capsys, "run", str(script), "--port", "/dev/ttyUSB97")
    assert code == 3 and "does not exist" in err


def test_a_busy_port_is_refused_naming_the_program(capsys, bare_port):
    with open(bare_port.port, "rb") as port:
        holder = subprocess.Popen(["sleep", "30"], stdin=port)
    try:
        time.sleep(0.2)
        code, err = refusal(capsys, "undeploy", "--port", bare_port.port)
        assert code == 3
        assert "%s is busy: open in sleep (pid %d)" % (bare_port.port, holder.pid) in err
    finally:
        holder.kill()
        holder.wait()


def test_a_port_without_a_micropython_repl_is_refused(capsys, bare_port):
    code, err = refusal(capsys, "undeploy", "--port", bare_port.port, "--mpremote", MPREMOTE)
    assert code == 4 and "no MicroPython REPL answered on %s" % bare_port.port in err


def test_a_micropython_without_smartbms_is_refused(capsys, tmp_path):
    p = _unix_port(tmp_path, frozen=False)  # the same interpreter, its frozen modules off the path
    try:
        code, err = refusal(capsys, "undeploy", "--port", p.port, "--root", str(tmp_path) + "/",
                            "--mpremote", MPREMOTE)
    finally:
        p.close()
    assert code == 4 and "runs MicroPython but not the smartbms firmware: flash it first" in err


def test_modules_that_run_before_the_overrides_load_are_refused(capsys, bare_port):
    for rel, why in (("main.py", "frozen entry point"), ("smartbms/overrides.py", "loads the overrides"),
                     ("smartbms/__init__.py", "__init__"), ("smartbms/ota/__init__.py", "__init__")):
        code, err = refusal(capsys, "deploy", "--port", bare_port.port, "--modules",
                            os.path.join(ROOT, "modules", rel))
        assert code == 2 and "cannot deploy: %s (needs a firmware build" % rel in err and why in err
    code, err = refusal(capsys, "deploy", "--port", bare_port.port, "--modules", os.path.join(ROOT, "README.md"))
    assert code == 2 and "is not a file under modules/" in err


def test_nothing_changed_is_refused_without_touching_the_device(capsys, bare_port, monkeypatch):
    monkeypatch.setattr(device, "changed_modules", lambda base: ([], []))
    code, err = refusal(capsys, "deploy", "--port", bare_port.port)
    assert code == 2 and "nothing to deploy: no module under modules/ differs from HEAD" in err


# ---- what it builds ----

def test_the_mpremote_commands():
    mp, port = "/v/mpremote", "/dev/ttyUSB0"
    assert device.console_argv(mp, port) == [mp, "connect", port, "repl"]
    assert device.run_argv(mp, port, "x.py") == [mp, "connect", port, "resume", "run", "x.py"]
    argv = device.deploy_argv(mp, port, "/", ["/t/smartbms__web.mpy", "/t/smartbms__auth.mpy"], "/t/modules.txt")
    assert argv[:5] == [mp, "connect", port, "resume", "exec"]
    assert argv[5].startswith("_R='/'\n") and "os.mkdir(_d)" in argv[5]
    assert argv[6:] == ["+", "fs", "cp", "/t/smartbms__web.mpy", "/t/smartbms__auth.mpy", ":/override/",
                        "+", "fs", "cp", "/t/modules.txt", ":/override/modules.txt", "+", "reset"]
    assert device.deploy_argv(mp, port, "/", [], "/t/l", reset=False)[-1] == ":/override/modules.txt"
    argv = device.undeploy_argv(mp, port, "/")
    assert argv[:5] == [mp, "connect", port, "resume", "exec"] and argv[-2:] == ["+", "reset"]
    assert "os.rmdir(_d)" in argv[5]


def test_the_architecture_comes_from_the_device():
    assert device.device_arch(ESP32_MPY) == "xtensawin"
    assert device.device_arch(6 | (3 | 1 << 2) << 8) == "x86"
    assert device.device_arch(6) is None  # a port without a native emitter


def test_load_order_puts_what_a_module_imports_first():
    graph = deploy_plan.import_graph()
    assert "smartbms.auth" in graph["smartbms.web"]  # web imports auth at import time
    items = deploy_plan.plan(["smartbms/web.py", "smartbms/settings.py", "smartbms/auth.py", "smartbms/clock.py"])
    names = [n for n, _ in items]
    assert sorted(names) == ["smartbms.auth", "smartbms.clock", "smartbms.settings", "smartbms.web"]
    assert names.index("smartbms.auth") < names.index("smartbms.web")
    for i, n in enumerate(names):  # nothing a module needs (through any module) comes after it
        needed = set()
        todo = [n]
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d not in needed:
                    needed.add(d)
                    todo.append(d)
        assert not needed & set(names[i + 1:]), (n, needed & set(names[i + 1:]))


def test_changed_modules_come_from_git():
    present, gone = deploy_plan.changed_modules("HEAD")
    for rel in present:
        assert rel.endswith(".py") and os.path.isfile(os.path.join(ROOT, "modules", rel))
    for rel in gone:
        assert not os.path.exists(os.path.join(ROOT, "modules", rel))
    with pytest.raises(deploy_plan.Refused) as e:
        deploy_plan.changed_modules("no-such-ref-anywhere")
    assert e.value.code == 2


# ---- the round trip on the unix port ----

def _exec(port, code):
    r = subprocess.run([MPREMOTE, "connect", port, "resume", "exec", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_deploy_run_undeploy_on_the_unix_port(capfd, unix_device, tmp_path):
    root = str(tmp_path) + "/"
    mods = [os.path.join(ROOT, "modules", "smartbms", m) for m in ("web.py", "charge/relay.py", "ota/_xor_native.py")]
    code = device.main(["deploy", "--port", unix_device.port, "--root", root, "--no-reset", "--mpremote", MPREMOTE,
                        "--modules"] + mods)
    out = capfd.readouterr()
    assert code == 0, out.err
    assert "deploying 3 modules" in out.out and "smartbms.web" in out.out
    folder = tmp_path / "override"
    listed = (folder / "modules.txt").read_text().split()
    assert sorted(listed) == ["smartbms.charge.relay", "smartbms.ota._xor_native", "smartbms.web"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "modules.txt", "smartbms__charge__relay.mpy", "smartbms__ota___xor_native.mpy", "smartbms__web.mpy"]
    assert (folder / "smartbms__web.mpy").read_bytes()[:2] == b"M\x06"

    # what main.py does at boot: the .mpy files (native code for the device's own arch) load
    # and every later import gets them
    got = _exec(unix_device.port, "from smartbms import overrides\n"
                "overrides.install(%r)\n"
                "import sys\n"
                "from smartbms.ota import _xor_native\n"
                "print(overrides.status()['modules'], overrides.status()['failed'])\n"
                "print(sys.modules['smartbms.web'].__file__, _xor_native.__file__)\n" % root)
    assert "%r []" % listed in got  # all loaded, in the order modules.txt gives
    assert "%soverride/smartbms__web.mpy %soverride/smartbms__ota___xor_native.mpy" % (root, root) in got

    # run: a local script, not stored on the device
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('hello from', sys.implementation.name, 6 * 7)\n")
    code = device.main(["run", str(script), "--port", unix_device.port, "--root", root, "--mpremote", MPREMOTE])
    out = capfd.readouterr()
    assert code == 0, out.err
    assert "hello from micropython 42" in out.out
    assert "the firmware is stopped, relay off" in out.err

    # a second deploy replaces the folder as a whole
    code = device.main(["deploy", "--port", unix_device.port, "--root", root, "--no-reset", "--mpremote", MPREMOTE,
                        "--modules", mods[1]])
    out = capfd.readouterr()
    assert code == 0, out.err
    assert "replacing what the device had deployed: %s" % ", ".join(listed) in out.out
    assert sorted(p.name for p in folder.iterdir()) == ["modules.txt", "smartbms__charge__relay.mpy"]

    code = device.main(["undeploy", "--port", unix_device.port, "--root", root, "--no-reset", "--mpremote", MPREMOTE])
    out = capfd.readouterr()
    assert code == 0, out.err
    assert "removed: smartbms__charge__relay.mpy" in out.out
    assert not folder.exists()
