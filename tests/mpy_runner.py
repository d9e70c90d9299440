# Runs the shared unit tests (tests/unit/test_*.py) on the MicroPython unix port.
# pytest does not run on MicroPython, so this is the smallest runner that keeps the same
# contract: every top-level `test_*` function is a test, a raised exception fails it,
# testutil.SkipTest skips it. Exits 1 if any test failed or none ran.
#
#   micropython tests/mpy_runner.py [DIR_OR_FILE ...] [-k SUBSTRING]
import os
import sys
import time


def _files(arg):
    try:
        names = sorted(os.listdir(arg))
    except OSError:
        return [arg]
    return [arg.rstrip("/") + "/" + n for n in names if n.startswith("test_") and n.endswith(".py")]


def _split(path):
    i = path.rfind("/")
    return (path[:i] if i >= 0 else "."), path[i + 1:]


def main(argv):
    pattern = None
    args = []
    i = 0
    while i < len(argv):
        if argv[i] == "-k":
            pattern = argv[i + 1]
            i += 2
            continue
        args.append(argv[i])
        i += 1
    if not args:
        args = ["tests/unit"]
    passed = failed = skipped = 0
    failures = []
    t0 = time.ticks_ms()
    for arg in args:
        for path in _files(arg):
            folder, name = _split(path)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            modname = name[:-3]
            try:
                mod = __import__(modname)
            except Exception as e:
                failed += 1
                failures.append(modname)
                print("ERROR", modname, "(import)")
                sys.print_exception(e)
                continue
            for attr in sorted(dir(mod)):
                if not attr.startswith("test_"):
                    continue
                fn = getattr(mod, attr)
                if not callable(fn):
                    continue
                label = modname + "::" + attr
                if pattern and pattern not in label:
                    continue
                try:
                    fn()
                    passed += 1
                except Exception as e:
                    if type(e).__name__ == "SkipTest":
                        skipped += 1
                        print("SKIP", label, e)
                        continue
                    failed += 1
                    failures.append(label)
                    print("FAIL", label)
                    sys.print_exception(e)
    dt = time.ticks_diff(time.ticks_ms(), t0) / 1000
    for label in failures:
        print("FAILED", label)
    print("micropython: %d passed, %d failed, %d skipped in %.2fs" % (passed, failed, skipped, dt))
    if failed or not passed:
        sys.exit(1)


main(sys.argv[1:])
