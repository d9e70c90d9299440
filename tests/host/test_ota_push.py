# scripts/ota_push.py's verdict after the reboot, against a scripted device status.
import ota_push


class ScriptedDevice:
    """ota_status() answers from a script: an exception (device down) or (ota, uptime_s)."""

    def __init__(self, *answers):
        self.answers = list(answers)

    def ota_status(self):
        a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(a, Exception):
            raise a
        return a


def _ota(slot, version, pending=False):
    return {"running": slot, "running_version": version, "previous_version": "x", "pending_verify": pending}


def _wait(dev, new_version="0.2.0", old_version="0.1.0", new_slot="ota_1"):
    said = []
    code = ota_push.wait_back(dev, 500, new_version, old_version, 5, said.append, new_slot=new_slot)
    return code, said


def test_back_in_the_new_slot_and_confirmed_is_success():
    dev = ScriptedDevice(OSError("down"), (_ota("ota_1", "0.2.0", True), 3), (_ota("ota_1", "0.2.0"), 63))
    code, said = _wait(dev)
    assert code == ota_push.EXIT_OK and "confirmed" in said[-1]


def test_old_slot_with_the_same_version_is_a_rollback():
    # reinstalling the running version: only the slot tells the rollback apart
    dev = ScriptedDevice(OSError("down"), (_ota("ota_0", "0.1.0"), 2))
    code, said = _wait(dev, new_version="0.1.0")
    assert code == ota_push.EXIT_ROLLBACK and "ROLLBACK" in said[-1]


def test_old_version_is_a_rollback():
    dev = ScriptedDevice(OSError("down"), (_ota("ota_0", "0.1.0"), 2))
    code, _ = _wait(dev, new_slot=None)
    assert code == ota_push.EXIT_ROLLBACK


def test_no_reboot_within_the_wait_is_unreachable():
    dev = ScriptedDevice((_ota("ota_0", "0.1.0"), 600))  # uptime keeps growing: never rebooted
    said = []
    code = ota_push.wait_back(dev, 500, "0.2.0", "0.1.0", 1, said.append, new_slot="ota_1")
    assert code == ota_push.EXIT_UNREACHABLE


def test_rates_read_as_rates():
    # the first writes only fill the socket buffer: no "1402044 KB/s"
    assert ota_push.rate(1400000, 0.001) == "…"
    assert ota_push.rate(512 * 1024, 1.0) == "512 KB/s"
    assert ota_push.rate(3 * 1024 * 1024, 2.0) == "1.5 MB/s"
    import io

    out = io.StringIO()
    p = ota_push.Progress(1000 * 1024, out)
    p(1000 * 1024)
    assert "KB/s" not in out.getvalue() and "…" in out.getvalue()


def test_make_ota_does_not_echo_the_password(tmp_path):
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fake = tmp_path / "py"
    fake.write_text("#!/bin/sh\necho \"argv: $*\"\necho \"env: $SMARTBMS_PASSWORD\"\n")
    fake.chmod(0o755)
    r = subprocess.run(["make", "-s", "ota", "HOST=h:1", "IMAGE=x.bin", "PASSWORD=s3cr'et pw", "PY=%s" % fake],
                       cwd=root, capture_output=True, text=True)
    lines = r.stdout.splitlines()
    assert r.returncode == 0, r.stderr
    assert [l for l in lines if l.startswith("env: ")] == ["env: s3cr'et pw"]  # it does reach ota_push
    assert not [l for l in lines if "s3cr" in l and not l.startswith("env: ")], lines
    assert "s3cr" not in r.stderr
