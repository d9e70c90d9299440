"""The foundation: the MicroPython unix-port runner really fails a run, the board
definition and flash plan hold, and the firmware build explains itself without ESP-IDF."""
import os
import subprocess
import sys

import pytest

import check_board
import partition_table

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOARD = os.path.join(ROOT, "boards", "SMARTBMS")
MICROPYTHON = os.environ.get("MICROPYTHON", os.path.join(ROOT, ".venv", "bin", "micropython"))
MPYPATH = os.environ.get("MPYPATH", ".frozen:" + os.path.join(ROOT, "modules"))


def run_mpy_runner(tmp_path, body):
    (tmp_path / "test_sample.py").write_text(body)
    env = dict(os.environ, MICROPYPATH=MPYPATH)
    return subprocess.run([MICROPYTHON, os.path.join(ROOT, "tests", "mpy_runner.py"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=60)


def test_unix_port_runner_fails_the_run_on_a_failing_test(tmp_path):
    r = run_mpy_runner(tmp_path, "def test_ok():\n    pass\n\ndef test_bad():\n    assert 1 == 2\n")
    assert r.returncode == 1, r.stdout
    assert "1 passed, 1 failed" in r.stdout
    assert "FAILED test_sample::test_bad" in r.stdout


def test_unix_port_runner_fails_on_import_error_and_on_no_tests(tmp_path):
    r = run_mpy_runner(tmp_path, "import no_such_module\n")
    assert r.returncode == 1
    r = run_mpy_runner(tmp_path, "X = 1\n")
    assert r.returncode == 1 and "0 passed" in r.stdout


def test_unix_port_runner_passes_and_really_runs_micropython(tmp_path):
    r = run_mpy_runner(tmp_path, "import sys\ndef test_impl():\n    assert sys.implementation.name == 'micropython'\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 0 failed" in r.stdout


def test_board_directory_is_complete_and_consistent():
    assert check_board.check(BOARD) == []


def test_partition_plan():
    with open(os.path.join(BOARD, "partitions.csv")) as f:
        parts = {p.name: p for p in partition_table.parse_csv(f.read())}
    assert parts["otadata"].size == 0x2000
    assert parts["ota_0"].size == parts["ota_1"].size >= 0x1D0000
    assert parts["ota_0"].offset % 0x10000 == 0 and parts["ota_1"].offset % 0x10000 == 0
    assert parts["vfs"].size == 0x40000 and parts["vfs"].type == "data"
    assert "factory" not in {p.subtype for p in parts.values()}
    assert max(p.end for p in parts.values()) <= 0x400000


@pytest.mark.parametrize("mutation, problem", [
    (lambda t: t.replace("ota_1,    app,  ota_1,   0x1E0000, 0x1D0000", "ota_1,    app,  ota_1,   0x1E0000, 0x1C0000"), "differ in size"),
    (lambda t: t.replace("0x3B0000, 0x40000", "0x3B0000, 0x60000"), "past the end"),
    (lambda t: t.replace("ota_0,    app,  ota_0,   0x10000,", "ota_0,    app,  factory, 0x10000,"), "factory"),
    (lambda t: t.replace("otadata,  data, ota,     0xd000,   0x2000,", ""), "otadata"),
    (lambda t: t.replace("0x1E0000, 0x1D0000", "0x1E8000, 0x1D0000"), "not aligned"),
])
def test_partition_checker_catches_bad_plans(mutation, problem):
    with open(os.path.join(BOARD, "partitions.csv")) as f:
        text = mutation(f.read())
    problems = partition_table.check_plan(partition_table.parse_csv(text))
    assert any(problem in p for p in problems), problems


def test_binary_partition_table_format():
    with open(os.path.join(BOARD, "partitions.csv")) as f:
        parts = partition_table.parse_csv(f.read())
    blob = partition_table.to_binary(parts)
    assert len(blob) == 0xC00
    assert blob[:2] == b"\xaa\x50"
    md5_entry = blob[32 * len(parts):32 * len(parts) + 32]
    assert md5_entry[:2] == b"\xeb\xeb"
    import hashlib
    assert md5_entry[16:] == hashlib.md5(blob[:32 * len(parts)]).digest()


def test_firmware_build_reports_skip_without_esp_idf():
    env = {k: v for k, v in os.environ.items() if k != "IDF_PATH"}
    check = subprocess.run([os.path.join(ROOT, "scripts", "build_firmware.sh"), "--check"],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0
    assert "SKIPPED" in check.stdout and "IDF_PATH" in check.stdout
    build = subprocess.run([os.path.join(ROOT, "scripts", "build_firmware.sh")],
                           capture_output=True, text=True, env=env)
    assert build.returncode == 2
    assert "cannot build here" in build.stderr and "Traceback" not in build.stderr


def test_firmware_build():
    if not os.environ.get("IDF_PATH"):
        pytest.skip("firmware build: ESP-IDF not installed here (IDF_PATH unset); built by .github/workflows/firmware.yml")
    r = subprocess.run(["make", "-C", ROOT, "firmware"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]


def test_workflow_is_valid_yaml_with_the_pinned_versions():
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(ROOT, ".github", "workflows", "firmware.yml")) as f:
        wf = yaml.safe_load(f)
    triggers = wf.get("on") or wf.get(True)
    assert "push" in triggers
    jobs = wf["jobs"]
    text = open(os.path.join(ROOT, ".github", "workflows", "firmware.yml")).read()
    assert "make test" in text and "make firmware" in text
    assert "upload-artifact" in text and "release" in text.lower()
    for job in jobs.values():
        assert job["runs-on"] and job["steps"]


def test_frozen_manifest_names_only_existing_files(tmp_path):
    assert check_board.check_manifest(os.path.join(ROOT, "manifest.py")) == []
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "main.py").write_text("")
    bad = tmp_path / "manifest.py"
    bad.write_text('module("main.py", base_path="modules")\nmodule("gone.py", base_path="modules")\n'
                   'package("nopkg", base_path="modules")\nrequire("aioble")\n')
    problems = check_board.check_manifest(str(bad))
    assert len(problems) == 3, problems
    assert any("gone.py" in p for p in problems) and any("nopkg" in p for p in problems)
