#!/usr/bin/env python3
"""Run the unit tests on the host interpreter (build/host/micropython) with a simulated
world beside them, as the device has its radio, button and WiFi beside it.

    python3 tests/run_unix_tests.py MICROPYTHON [mpy_runner args: files or dirs, -k TEXT]

The world (sim/world/) runs in this CPython process on a free loopback port; the unit tests
reach it through the shims' world link (SIM_WORLD) and steer it with worldctl.py. Exits with
the runner's code.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "sim"))

from world.host import WorldHost  # noqa: E402


def main(argv):
    if not argv:
        sys.exit(__doc__)
    micropython, args = argv[0], argv[1:] or ["tests/unit"]
    host = WorldHost(speed=1).start()
    env = dict(os.environ, SIM_WORLD=host.address())
    cmd = [micropython, "-X", "heapsize=8m", os.path.join(ROOT, "tests", "mpy_runner.py")] + args
    return subprocess.call(cmd, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
