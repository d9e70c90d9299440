# Shared data for the BMS codec tests: the real frames in ../shared/bms-frames/frames.json
# (relative to the project root) and small helpers to feed notifications. Runs on both
# runtimes.
import json

FRAMES_REL = "../shared/bms-frames/frames.json"


def _root():
    try:
        here = __file__
    except NameError:
        return "."
    parts = here.replace("\\", "/").split("/")
    # .../tests/unit/bms_testdata.py -> the project root
    if len(parts) >= 3:
        root = "/".join(parts[:-3])
        return root or "."
    return "."


def shared_frames(protocol=None):
    path = _root() + "/" + FRAMES_REL
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError:
        raise AssertionError("shared BMS frames not found at %s (needed by the codec tests)" % path)
    frames = data["frames"]
    assert frames, "no frames in " + path
    if protocol is None:
        return frames
    out = [f for f in frames if f["protocol"].startswith(protocol)]
    assert out, "no %s frames in %s" % (protocol, path)
    return out


def unhex(h):
    return bytes.fromhex(h)


def feed_all(assembler, notifications, now_ms=None):
    """Feed notifications in order; returns the list of frames (as bytes) completed."""
    out = []
    for n in notifications:
        assembler.feed(n, lambda fr: out.append(bytes(fr)), now_ms)
    return out


def close(a, b, tol=1e-6):
    return a is not None and b is not None and abs(a - b) <= tol


def assert_expected(reading, expect):
    """Every expected value matches the reading (floats to 1e-6, lists item by item)."""
    for key in expect:
        want = expect[key]
        got = getattr(reading, key)
        if isinstance(want, list):
            assert len(got) == len(want), "%s: %r != %r" % (key, got, want)
            for i in range(len(want)):
                assert close(got[i], want[i]), "%s[%d]: %r != %r" % (key, i, got[i], want[i])
        elif isinstance(want, bool):
            assert got is want, "%s: %r != %r" % (key, got, want)
        else:
            assert close(got, want), "%s: %r != %r" % (key, got, want)
