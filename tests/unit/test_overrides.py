# smartbms.overrides: modules on the filesystem (`make deploy`) replace their frozen copies.
# The overrides here are .py sources (both runtimes import them); `make deploy` writes .mpy,
# which tests/host/test_device_cli.py loads on the unix port.
import os
import sys

from smartbms import overrides

_n = [0]


def _root():
    _n[0] += 1
    d = "/tmp/smartbms_ovr_%s_%d" % ("".join("%02x" % b for b in os.urandom(4)), _n[0])
    os.mkdir(d)
    os.mkdir(d + "/" + overrides.DIR)
    return d + "/"


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _deploy(root, modules, order=None):
    """modules: {dotted name: source}; order: the names modules.txt lists (default: all)."""
    folder = root + overrides.DIR + "/"
    for name, src in modules.items():
        _write(folder + overrides.file_name(name) + ".py", src)
    _write(folder + overrides.LIST, "\n".join(order if order is not None else list(modules)) + "\n")


def _forget(*names):
    """Undo what install() did, so the next test (and the rest of the run) sees the frozen package."""
    for name in names:
        sys.modules.pop(name, None)
        parent, _, attr = name.rpartition(".")
        p = sys.modules.get(parent)
        if p is not None and attr in p.__dict__:
            delattr(p, attr)
    overrides.loaded = ()
    overrides.failed = ()
    overrides.skipped = None


def test_nothing_deployed_loads_nothing():
    root = _root()
    assert overrides.install(root) == ()
    assert overrides.status() == {"modules": [], "failed": [], "skipped": None}
    assert overrides.summary() is None
    assert overrides.install("/tmp/smartbms_no_such_root/") == ()


def test_an_override_replaces_the_module_for_every_later_import():
    root = _root()
    a, b = "smartbms.ovtest_a", "smartbms.charge.ovtest_b"
    # b imports a at its top level: modules.txt lists a first (deploy writes dependency order)
    _deploy(root, {a: "V = 'from the filesystem'\n",
                   b: "from smartbms import ovtest_a\nSEEN = ovtest_a.V\n"}, order=[a, b])
    try:
        assert overrides.install(root) == (a, b)
        from smartbms import ovtest_a
        from smartbms.charge import ovtest_b

        assert ovtest_a.V == "from the filesystem"
        assert ovtest_b.SEEN == "from the filesystem"
        assert sys.modules[b] is ovtest_b and ovtest_b.__name__ == b
        assert ovtest_b.__file__.startswith(root + overrides.DIR + "/")
        # the flat names it was imported under are gone
        assert overrides.file_name(a) not in sys.modules and overrides.file_name(b) not in sys.modules
        assert overrides.status()["modules"] == [a, b]
        assert overrides.summary() == "running 2 modules from the filesystem, not the image: ovtest_a, charge.ovtest_b"
    finally:
        _forget(a, "smartbms.charge.ovtest_b")


def test_a_broken_override_is_reported_and_the_rest_load():
    root = _root()
    good, bad, missing = "smartbms.ovtest_good", "smartbms.ovtest_bad", "smartbms.ovtest_missing"
    _deploy(root, {bad: "def oops(:\n", good: "OK = 1\n"}, order=[bad, missing, good])
    try:
        assert overrides.install(root) == (good,)
        assert bad not in sys.modules and overrides.file_name(bad) not in sys.modules
        failed = overrides.status()["failed"]
        assert len(failed) == 2
        assert failed[0].startswith(bad + ": SyntaxError")
        assert failed[1].startswith(missing + ": ")  # ImportError (CPython: ModuleNotFoundError)
        assert "ImportError" in failed[1] or "ModuleNotFoundError" in failed[1]
        assert overrides.summary() == "running 1 module from the filesystem, not the image: ovtest_good; 2 failed"
    finally:
        _forget(good, bad, missing)


def test_a_module_already_imported_is_not_overridden():
    # smartbms.version is imported by the package's __init__, before install() can run
    root = _root()
    from smartbms import version

    _deploy(root, {"smartbms.version": "VERSION = 'other'\n"})
    try:
        assert overrides.install(root) == ()
        assert sys.modules["smartbms.version"] is version and version.VERSION != "other"
        assert overrides.failed == ("smartbms.version: imported before the overrides load",)
        assert overrides.summary() == "override failed, the image's copy runs: version: imported before the overrides load"
    finally:
        _forget()


def test_the_boot_that_enters_safe_mode_loads_no_override():
    root = _root()
    name = "smartbms.ovtest_safe"
    _deploy(root, {name: "X = 1\n"})
    _write(root + "bootcount", "%d\n" % overrides.SAFE_MODE_BOOTS)
    try:
        assert overrides.install(root) == ()
        assert name not in sys.modules
        assert overrides.status()["skipped"].startswith("safe mode")
        assert "not loaded" in overrides.summary()
    finally:
        _forget(name)


def test_safe_mode_threshold_is_the_boot_guards():
    from smartbms import health

    assert overrides.SAFE_MODE_BOOTS == health.LIMIT


def test_flat_file_names():
    assert overrides.file_name("smartbms.ota.http") == "smartbms__ota__http"
    assert overrides.file_name("webassets") == "webassets"


def test_the_health_state_says_the_check_ran_with_overrides():
    from smartbms.health import BootGuard

    guard = BootGuard(path=_root() + "bootcount")
    assert guard.state()["overrides"] is None
    overrides.loaded = ("smartbms.web",)
    try:
        note = guard.state()["overrides"]
        assert note.startswith("1 module from the filesystem") and "an OTA does not replace them" in note
    finally:
        _forget()


def test_the_boot_event_and_the_status_name_the_overrides():
    from apputil import FakeMachine, fresh_root
    from smartbms import app as app_mod
    from smartbms import web
    from test_web import FakeCtx

    assert web.status_doc(FakeCtx())["device"]["overrides"] == {"modules": [], "failed": [], "skipped": None}
    overrides.loaded = ("smartbms.web", "smartbms.charge.relay")
    try:
        fresh_root()
        a = app_mod.App(machine=FakeMachine(), log=lambda *x: None)
        boot = [e["msg"] for e in a.events.recent(10) if e["kind"] == "boot"]
        assert boot[-1] == "running 2 modules from the filesystem, not the image: web, charge.relay"
        dev = web.status_doc(FakeCtx())["device"]
        assert dev["overrides"]["modules"] == ["smartbms.web", "smartbms.charge.relay"]
    finally:
        _forget()
