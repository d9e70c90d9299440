#!/usr/bin/env python3
"""Compile every .py under the given folders with the firmware's mpy-cross, the way the
frozen build will, and fail on the first error.

    compile_modules.py --mpy-cross PATH --out build/mpy modules [more dirs]
"""
import argparse
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpy-cross", default="mpy-cross")
    ap.add_argument("--out", default="build/mpy")
    ap.add_argument("dirs", nargs="+")
    args = ap.parse_args()
    count = failed = 0
    total = 0
    for top in args.dirs:
        base = os.path.dirname(os.path.normpath(top))
        for root, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                src = os.path.join(root, name)
                rel = os.path.relpath(src, base)
                out = os.path.join(args.out, rel[:-3] + ".mpy")
                os.makedirs(os.path.dirname(out), exist_ok=True)
                # -s sets the name tracebacks show; xtensawin is the ESP32's architecture.
                r = subprocess.run([args.mpy_cross, "-march=xtensawin", "-s", rel, "-o", out, src],
                                   capture_output=True, text=True)
                count += 1
                if r.returncode:
                    failed += 1
                    sys.stderr.write(r.stderr or r.stdout)
                else:
                    total += os.path.getsize(out)
    if failed:
        print("mpy-cross: %d of %d modules failed to compile" % (failed, count), file=sys.stderr)
        return 1
    if not count:
        print("mpy-cross: no modules found", file=sys.stderr)
        return 1
    print("mpy-cross: compiled %d modules, %d bytes of bytecode" % (count, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
