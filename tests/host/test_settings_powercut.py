"""Settings under random update histories with a power cut anywhere (hypothesis), random
damage to the stored files, and the littlefs power-cut test run on the real unix port."""
import json
import math
import os
import subprocess

from hypothesis import HealthCheck, event, given, settings as hsettings, strategies as st

from smartbms import settings as S
from smartbms.settings import Settings, SettingsError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MICROPYTHON = os.environ.get("MICROPYTHON", os.path.join(ROOT, ".venv", "bin", "micropython"))
MPYPATH = os.environ.get("MPYPATH", ".frozen:" + os.path.join(ROOT, "modules"))


class PowerCut(Exception):
    pass


class CutFiles(S._Files):
    """Real files; the power goes at operation `cut_at` (a write then leaves a prefix)."""

    def __init__(self, cut_at, keep):
        self.cut_at = cut_at
        self.keep = keep  # fraction of a cut write that reached the file
        self.ops = 0

    def _tick(self):
        self.ops += 1
        if self.ops >= self.cut_at:
            raise PowerCut()

    def write(self, path, data):
        if self.ops + 1 == self.cut_at:
            with open(path, "w") as f:
                f.write(data[:int(len(data) * self.keep)])
        self._tick()
        S._Files.write(self, path, data)

    def rename(self, src, dst):
        self._tick()
        S._Files.rename(self, src, dst)

    def remove(self, path):
        self._tick()
        return S._Files.remove(self, path)


class NoFiles(S._Files):
    """A shadow that validates and normalises exactly like the real thing, storing nothing."""

    def read(self, path):
        return None

    def write(self, path, data):
        pass

    def rename(self, src, dst):
        pass

    def remove(self, path):
        return False


def _value_strategy(entry):
    """Mostly valid values (so saves happen), sometimes invalid ones."""
    key, kind, default, lo, hi, extra = entry[:6]
    wrong = st.sampled_from([None, "x", [], {}, True])
    if kind == "int":
        good, bad = st.integers(lo, hi), st.one_of(st.integers(lo - 3, lo - 1), st.integers(hi + 1, hi + 3), wrong)
    elif kind == "float":
        ints = st.integers(int(math.ceil(lo)), int(hi)) if math.ceil(lo) <= hi else st.nothing()
        good = st.one_of(st.floats(lo, hi), ints)
        bad = st.one_of(st.floats(hi + 0.01, hi + 1), st.floats(lo - 1, lo - 0.01), wrong)
    elif kind == "bool":
        good, bad = st.booleans(), st.integers(0, 1)
    elif kind == "choice":
        good, bad = st.sampled_from(extra), st.sampled_from(["bogus", ""])
    elif kind == "gpio":
        good, bad = st.sampled_from(S.OUTPUT_GPIOS), st.integers(-2, 41)
    elif extra == "mac":
        good, bad = st.sampled_from(["", "A4:C1:38:0B:1E:FF", "a4:c1:38:0b:1e:00"]), st.just("A4:C1:38:0B:1E")
    elif extra == "host":
        good, bad = st.text("abz09", min_size=1, max_size=32), st.text("abz09-_A", max_size=34)
    elif extra == "wpa":
        good, bad = st.text("abcXYZ !~", min_size=8, max_size=63), st.text(max_size=70)
    else:
        good, bad = st.text("abc \u00e9", max_size=16), st.text(max_size=70)
    return st.one_of(good, good, good, bad)


KEYS = [e for e in S.SCHEMA if not e[6] & S.INTERNAL]
partials = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).flatmap(
    lambda entries: st.fixed_dictionaries({e[0]: _value_strategy(e) for e in entries}))


def _state(s):
    return s.public(), s.secret("wifi_password")


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(partials, min_size=1, max_size=6), cut_at=st.integers(1, 12),
       keep=st.sampled_from([0.0, 0.5, 0.99, 1.0]))
def test_random_histories_with_a_power_cut_anywhere(tmp_path_factory, history, cut_at, keep):
    path = str(tmp_path_factory.mktemp("hist") / "settings.json")
    s = Settings(path, log=lambda k, m: None, fs=CutFiles(cut_at, keep))
    shadow = Settings(path, log=lambda k, m: None, fs=NoFiles())
    s.load()
    shadow.load()
    committed = _state(s)
    attempted = committed
    cut = False
    for partial in history:
        try:
            shadow.update(partial)
        except SettingsError:
            before = _state(s)
            try:
                s.update(partial)
            except SettingsError:
                pass
            except PowerCut:
                raise AssertionError("a rejected update touched the files")
            else:
                raise AssertionError("the shadow rejected what the real one accepted")
            assert _state(s) == before
            continue
        attempted = _state(shadow)
        try:
            s.update(partial)
        except PowerCut:
            cut = True
            break
        committed = attempted
        assert _state(s) == committed
    after = Settings(path, log=lambda k, m: None)
    after.load()
    got = _state(after)
    event("cut during a save" if cut else "no cut")
    if cut:
        assert got in (committed, attempted)
    else:
        assert got == committed
    S.check_rules(after._values)  # whatever loads obeys every rule


@hsettings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=400), where=st.sampled_from(["main", "new", "bak"]))
def test_any_damage_to_one_file_loads_a_valid_version(tmp_path_factory, data, where):
    path = str(tmp_path_factory.mktemp("dmg") / "settings.json")
    s = Settings(path, log=lambda k, m: None)
    s.load()
    s.update({"max_soc": 95})
    s.update({"max_soc": 90, "hostname": "shed"})
    newest = s.public()
    previous = dict(newest, max_soc=95, hostname="smartbms")
    target = {"main": path, "new": path + ".new", "bak": path + ".bak"}[where]
    with open(target, "wb") as f:
        f.write(data)
    t = Settings(path, log=lambda k, m: None)
    src = t.load()  # never raises
    S.check_rules(t._values)
    if where != "main":
        assert src == "main" and t.public() == newest
    elif src != "main":  # the damaged bytes were not a valid document by chance
        assert src == "backup" and t.public() == previous
    assert not os.path.exists(path + ".new")


@hsettings(max_examples=80, deadline=None)
@given(doc=st.dictionaries(st.sampled_from([e[0] for e in S.SCHEMA] + ["version", "junk"]),
                           st.one_of(st.none(), st.booleans(), st.integers(-5, 5000),
                                     st.floats(allow_nan=True), st.text(max_size=40)), max_size=8))
def test_any_json_document_loads_without_raising(tmp_path_factory, doc):
    path = str(tmp_path_factory.mktemp("doc") / "settings.json")
    with open(path, "w") as f:
        f.write(json.dumps(doc))
    s = Settings(path, log=lambda k, m: None)
    assert s.load() in ("main", "defaults")
    S.check_rules(s._values)
    for k, v in s._values.items():
        assert S.check_value(k, v) == v


def test_littlefs_power_cut_test_passes_on_the_unix_port():
    env = dict(os.environ, MICROPYPATH=MPYPATH)
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=4m", os.path.join(ROOT, "tests", "mpy_runner.py"),
                        os.path.join(ROOT, "tests", "unit", "test_settings.py"), "-k", "littlefs"],
                       capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 0 failed, 0 skipped" in r.stdout
