"""The relay the C start-up hook latches and the relay the Python settings accept come from one
generated module (scripts/gen_board_config.py -> build/gen/board_config.py): both sides read
it the same way, unsafe pins never get in, and the build never reuses a stale configuration."""
import os
import shutil
import subprocess
import sys

import pytest

import check_board
import gen_board_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOARD = os.path.join(ROOT, "boards", "SMARTBMS")
GEN = os.path.join(ROOT, "scripts", "gen_board_config.py")


def _gen(out, *args):
    return subprocess.run([sys.executable, GEN, str(out)] + list(args), capture_output=True, text=True)


@pytest.mark.parametrize("gpio", [0, 1, 2, 3, 5, 6, 11, 12, 14, 15, 16, 17, 20, 34, 39, 40, -1, "x"])
def test_generator_refuses_pins_unsafe_for_the_relay(tmp_path, gpio):
    r = _gen(tmp_path / "b.py", "--relay-gpio", str(gpio))
    assert r.returncode == 2 and "not safe for the relay" in r.stderr
    assert not (tmp_path / "b.py").exists()


def test_generator_refuses_a_bad_polarity(tmp_path):
    r = _gen(tmp_path / "b.py", "--relay-active-low", "yes")
    assert r.returncode == 2 and "RELAY_ACTIVE_LOW" in r.stderr


def test_both_sides_read_every_allowed_configuration_alike(tmp_path):
    pins = gen_board_config.pins_module()
    for gpio in pins.RELAY_GPIOS:
        for al in ("0", "1"):
            out = tmp_path / ("b%d%s.py" % (gpio, al))
            assert _gen(out, "--relay-gpio", str(gpio), "--relay-active-low", al).returncode == 0
            text = out.read_text()
            want = (gpio, al == "1")
            assert check_board.c_side(text) == want
            assert check_board.python_side(str(out)) == want
            assert gen_board_config.parse(text) == want
            assert check_board.check_board_config(str(out)) == []


def test_generator_rewrites_only_on_change(tmp_path):
    out = tmp_path / "b.py"
    assert _gen(out).returncode == 0
    os.utime(out, (1, 1))
    assert _gen(out).returncode == 0 and os.stat(out).st_mtime == 1  # unchanged: not touched
    assert _gen(out, "--relay-active-low", "0").returncode == 0 and os.stat(out).st_mtime > 1


@pytest.mark.parametrize("text, problem", [
    ("RELAY_GPIO = 0x21\nRELAY_ACTIVE_LOW = True\n", "cannot read"),  # Python reads 33, cmake nothing
    ("RELAY_GPIO = 33\nRELAY_ACTIVE_LOW = 1\n", "cannot read"),
    ("RELAY_GPIO = 33\nRELAY_ACTIVE_LOW = True\nRELAY_GPIO = 25\n", "cannot read"),
    ("RELAY_GPIO = 33\nRELAY_ACTIVE_LOW = True\nif True: RELAY_GPIO = 25\n", "C hook would get"),
    ("RELAY_GPIO = 0\nRELAY_ACTIVE_LOW = True\n", "not safe for the relay"),
])
def test_check_board_catches_a_module_the_two_sides_would_read_differently(tmp_path, text, problem):
    p = tmp_path / "board_config.py"
    p.write_text(text)
    problems = check_board.check_board_config(str(p))
    assert any(problem in x for x in problems), problems


def _board_copy(tmp_path):
    dst = tmp_path / "SMARTBMS"
    shutil.copytree(BOARD, dst)
    return dst


@pytest.mark.parametrize("name, old, new, problem", [
    ("mpconfigboard.h", "#define SMARTBMS_RELAY_OFF_LEVEL", "#define SMARTBMS_RELAY_GPIO (33)\n#define SMARTBMS_RELAY_OFF_LEVEL",
     "must come from the generated module"),
    ("mpconfigboard.cmake", "SMARTBMS_RELAY_GPIO=${SMARTBMS_RELAY_GPIO}", "SMARTBMS_RELAY_GPIO=33",
     "take the relay from the generated module"),
    ("mpconfigboard.cmake", "    boards/sdkconfig.ble", "    ${SDKCONFIG_IDF_VERSION_SPECIFIC}\n    boards/sdkconfig.ble",
     "SDKCONFIG_IDF_VERSION_SPECIFIC"),
    ("sdkconfig.board", "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y", "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y\nCONFIG_ESP_TASK_WDT_PANIC=y",
     "no effect"),
])
def test_check_board_catches_stale_or_hard_coded_board_files(tmp_path, name, old, new, problem):
    board = _board_copy(tmp_path)
    f = board / name
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new, 1))
    problems = check_board.check(str(board))
    assert any(problem in x for x in problems), problems


def test_the_real_board_and_generated_module_agree():
    assert check_board.check(BOARD) == []
    assert check_board.check_board_config(os.path.join(ROOT, "build", "gen", "board_config.py")) == []


def test_the_frozen_firmware_accepts_exactly_the_generated_relay():
    """On the unix port (the firmware frozen from the same manifest as the board), the
    settings take the relay from the frozen module, and it is the file the C side reads."""
    mpy = os.environ.get("MICROPYTHON")
    if not mpy:
        pytest.skip("needs the host interpreter (make test-py sets MICROPYTHON)")
    want = gen_board_config.parse(open(os.path.join(ROOT, "build", "gen", "board_config.py")).read())
    code = ("import board_config\nfrom smartbms import pins, settings\n"
            "print(board_config.RELAY_GPIO, board_config.RELAY_ACTIVE_LOW, pins.RELAY_GPIO, pins.RELAY_ACTIVE_LOW,"
            " settings.defaults()['relay_pin'])\n")
    env = dict(os.environ, MICROPYPATH=".frozen")
    r = subprocess.run([mpy, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(want[0]), str(want[1]), str(want[0]), str(want[1]), str(want[0])]


def test_workflow_never_restores_an_esp_idf_build_directory():
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(ROOT, ".github", "workflows", "firmware.yml")) as f:
        wf = yaml.safe_load(f)
    for job in wf["jobs"].values():
        for step in job["steps"]:
            if "actions/cache" not in str(step.get("uses", "")):
                continue
            paths = [p.strip() for p in step["with"]["path"].splitlines() if p.strip()]
            assert "!build/micropython/ports/esp32/build-*" in paths, paths
            assert not any("build-SMARTBMS" in p and not p.startswith("!") for p in paths)
    script = open(os.path.join(ROOT, "scripts", "build_firmware.sh")).read()
    assert "CONFIG_HASH" in script and 'BUILD="build-SMARTBMS-$VERSION-$CONFIG_HASH"' in script
