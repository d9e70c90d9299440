"""Budgets that `make test` enforces:

- the web UI, as frozen into the firmware (shrunk, gzip -9), stays within 25 KB: measured by
  bench/bench_webassets.py (imported, so the bench and this test cannot disagree);
- nothing of the simulator reaches the firmware: the sim panel (sim/panel.*), the host's
  shims for the chip's C modules and the sim's own boot are frozen only into the host
  interpreter (sim/unix_variant/manifest.py), never by boards/SMARTBMS/manifest.py, and no
  served web asset comes from sim/ or carries the panel."""
import ast
import gzip
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIM = os.path.join(ROOT, "sim")
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_webassets  # noqa: E402
import build_assets  # noqa: E402

# modules only the simulator has: the sim's boot, the link to its world, the panel
SIM_ONLY = {"sim_main", "sim_boot", "worldlink", "panel"}
# the host's stand-ins for the ESP32's C modules: on the chip they are C, never frozen Python
SHIMS = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(SIM, "shims")) if n.endswith(".py")}


# ---- the web UI's size ------------------------------------------------------------------------

def total_gz(web=None):
    return sum(gz for _, _, gz in (bench_webassets.sizes(web) if web else bench_webassets.sizes()))


def test_the_web_ui_fits_in_25_kb_gzipped():
    assert bench_webassets.BUDGET == 25 * 1024
    sizes = bench_webassets.sizes()
    assert {u for u, _, _ in sizes} >= {"/index.html", "/app.js", "/app.css"}, sizes
    total = total_gz()
    assert total <= bench_webassets.BUDGET, "web UI %d bytes gzipped, over the %d budget: %s" % (
        total, bench_webassets.BUDGET, sizes)


def test_the_size_measured_is_what_is_frozen_and_grows_with_the_ui(tmp_path):
    """The bench measures the bytes build_assets freezes; a UI grown past 25 KB fails."""
    web = str(tmp_path / "web")
    shutil.copytree(os.path.join(ROOT, "web"), web)
    frozen = build_assets.build(web, str(tmp_path / "webassets.py"))
    assert sum(len(e[2]) for e in frozen) == total_gz(web) == total_gz()
    # 18 KB of random hex digits (about 9 KB gzipped) added to the bundle
    with open(os.path.join(web, "js", "zz_big.js"), "w") as f:
        f.write("var SB_BIG = %r;\n" % os.urandom(9 * 1024).hex())
    assert total_gz(web) > bench_webassets.BUDGET


# ---- nothing of the sim in the firmware -------------------------------------------------------

def frozen_by(manifest, skipped=None):
    """The files a MicroPython manifest freezes, followed through include() as manifestfile.py
    does: package() takes every .py under its folder (or the files named), module() one file;
    paths are relative to the manifest that names them. $(PORT_DIR)/$(MPY_DIR) (MicroPython's
    own manifests, outside this repository) go to `skipped`; require() names go there too."""
    out = []
    skipped = [] if skipped is None else skipped
    board_dir = os.path.dirname(os.path.abspath(manifest))

    def run(path):
        base = os.path.dirname(os.path.abspath(path))

        def package(name, files=None, base_path=".", opt=None):
            root = os.path.join(base, base_path, name)
            if files is not None:
                out.extend(os.path.normpath(os.path.join(root, f)) for f in files)
                return
            for d, _, names in os.walk(root):
                out.extend(os.path.normpath(os.path.join(d, n)) for n in names if n.endswith(".py"))

        def module(name, base_path=".", opt=None):
            out.append(os.path.normpath(os.path.join(base, base_path, name)))

        def include(p, **kw):
            if "$(PORT_DIR)" in p or "$(MPY_DIR)" in p:
                skipped.append(p)
                return
            p = p.replace("$(BOARD_DIR)", board_dir)
            run(p if os.path.isabs(p) else os.path.join(base, p))

        def require(name, **kw):
            skipped.append("require:" + name)

        def freeze(path, script=None, opt=None):
            out.append(os.path.normpath(os.path.join(base, path, script or "")))

        with open(path) as f:
            src = f.read()
        exec(compile(src, path, "exec"), {"package": package, "module": module, "include": include,
                                          "require": require, "freeze": freeze, "__file__": path})
    run(manifest)
    return out


def sim_in(files, skipped=()):
    """What of the simulator a frozen set holds (empty: none)."""
    bad = []
    for f in files:
        name = os.path.splitext(os.path.basename(f))[0]
        if os.path.commonpath([f, SIM]) == SIM or name in SIM_ONLY | SHIMS:
            bad.append(os.path.relpath(f, ROOT))
    bad += [s for s in skipped if s.startswith("require:") and s[8:] in SIM_ONLY | SHIMS]
    return bad


def test_the_firmware_freezes_nothing_of_the_sim():
    skipped = []
    files = frozen_by(os.path.join(ROOT, "boards", "SMARTBMS", "manifest.py"), skipped)
    rel = {os.path.relpath(f, ROOT) for f in files}
    # it read the project's manifest through the board's include
    assert {"modules/smartbms/app.py", "modules/main.py", "build/gen/webassets.py",
            "build/gen/board_config.py"} <= rel, sorted(rel)
    assert sim_in(files, skipped) == []
    # and the project's own manifest alone, as the firmware build reads it
    assert sim_in(frozen_by(os.path.join(ROOT, "manifest.py"))) == []


def test_the_check_sees_the_sim_where_it_is_frozen(tmp_path):
    """The host interpreter's manifest freezes the shims and the sim's boot (on purpose: only
    there); a board manifest that froze the panel would be caught."""
    host = frozen_by(os.path.join(SIM, "unix_variant", "manifest.py"))
    assert {"sim/shims/machine.py", "sim/shims/worldlink.py", "sim/sim_main.py"} <= set(sim_in(host))
    bad = tmp_path / "manifest.py"
    bad.write_text('include("%s")\nmodule("panel.py", base_path="%s")\n'
                   % (os.path.join(ROOT, "manifest.py"), SIM))
    assert sim_in(frozen_by(str(bad))) == ["sim/panel.py"]


def test_no_firmware_module_imports_the_sim():
    """Frozen code that imported a sim-only module would fail on the chip (it is not there)."""
    found = []
    for f in frozen_by(os.path.join(ROOT, "manifest.py")):
        if not f.startswith(os.path.join(ROOT, "modules")) or not os.path.isfile(f):
            continue
        with open(f) as fh:
            tree = ast.parse(fh.read(), f)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += ["%s: %s" % (os.path.relpath(f, ROOT), n) for n in names if n.split(".")[0] in SIM_ONLY]
    assert found == []


def test_the_served_web_assets_hold_nothing_of_the_sim(tmp_path):
    """The UI frozen into the firmware (scripts/build_assets.py's inputs and output) takes
    nothing from sim/, and the panel's page and script are not among the assets."""
    web = os.path.join(ROOT, "web")
    inputs = [p for _, p in build_assets.asset_files(web)]
    inputs += [os.path.join(web, build_assets.BUNDLE_DIR, n) for n in os.listdir(os.path.join(web, build_assets.BUNDLE_DIR))]
    assert inputs and all(os.path.commonpath([os.path.abspath(p), web]) == web for p in inputs), inputs
    assert not [p for p in inputs if os.path.basename(p).startswith("panel")]
    entries = build_assets.build(web, str(tmp_path / "webassets.py"))
    panel = b""
    for name in ("panel.html", "panel.js"):
        with open(os.path.join(SIM, name), "rb") as f:
            panel += build_assets.shrink(name, f.read())
    markers = [b"smartbms sim panel", b'fetch("/action"']
    assert all(m in panel for m in markers)  # they do mark the panel
    for url, _, data, _ in entries:
        body = gzip.decompress(data)
        assert not [m for m in markers if m in body], url

