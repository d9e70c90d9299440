# Shared data for the BMS codec tests: the real frames in ../shared/bms-frames/frames.json
# and newfamilies.json (relative to the project root) and small helpers to feed
# notifications. Runs on both runtimes.
import json

FRAMES_REL = "../shared/bms-frames/frames.json"
NEW_FRAMES_REL = "../shared/bms-frames/newfamilies.json"


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


def _load(rel):
    path = _root() + "/" + rel
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError:
        raise AssertionError("shared BMS frames not found at %s (needed by the codec tests)" % path)
    assert data["frames"], "no frames in " + path
    return data


def shared_frames(protocol=None):
    """The real frames of both files (every one, or those of `protocol`)."""
    frames = _load(FRAMES_REL)["frames"] + _load(NEW_FRAMES_REL)["frames"]
    if protocol is None:
        return frames
    out = [f for f in frames if f["protocol"].startswith(protocol)]
    assert out, "no %s frames in the shared frame files" % protocol
    return out


def shared_families():
    """newfamilies.json's per-family facts (service, names, manufacturer ids)."""
    return _load(NEW_FRAMES_REL)["families"]


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


def check_shared(protocol, decode):
    """Every real frame of `protocol`, fed as the notifications it arrived in, gives one
    frame that decodes (decode(frame, reading) -> True) to the stated values."""
    from smartbms.bms import protocols
    from smartbms.bms.reading import Reading

    for f in shared_frames(protocol):
        a = protocols.get(protocol).new_assembler()
        frames = feed_all(a, [unhex(h) for h in f["fragments"]])
        assert len(frames) == 1, f["name"]
        assert a.dropped_bytes == 0 and a.bad_checksum == 0, f["name"]
        r = Reading()
        assert decode(frames[0], r) is True, f["name"]
        assert_expected(r, f["expect"])
        if "faults" in f:
            assert (len(r.faults) > 0) == f["faults"], (f["name"], r.faults)


def fragments(frame, size):
    return [bytes(frame[i:i + size]) for i in range(0, len(frame), size)]


def check_assembly(make, frame, other):
    """The assembler from make() rebuilds `frame` (and `other`, a second valid frame) from
    any split, from 20-byte and larger-MTU notifications, after garbage, after a stalled
    partial frame and when a new frame starts before the last one ended."""
    for k in range(1, len(frame)):
        assert feed_all(make(), [frame[:k], frame[k:]]) == [frame], k
    for mtu in (20, 64, 182, 244, 512):
        a = make()
        assert feed_all(a, fragments(frame + other, mtu)) == [frame, other], mtu
        assert a.dropped_bytes == 0
    a = make()
    assert feed_all(a, fragments(frame, 20) + fragments(other, 20)) == [frame, other]
    # garbage in its own notification, then a frame
    a = make()
    junk = b"\xff\xfe\x99\x42\x13\x37\xee"
    assert feed_all(a, [junk] + fragments(frame, 20)) == [frame]
    assert a.dropped_bytes == len(junk)
    # a frame cut short, then a new one that starts its own notification
    a = make()
    assert feed_all(a, [frame[:len(frame) // 2]] + fragments(other, 20)) == [other]
    # a partial frame left longer than the stall limit is dropped
    a = make()
    a.stall_ms = 1000
    a.feed(frame[:5], lambda f: None, 10000)
    a.feed(frame[5:], lambda f: None, 12000)
    assert a.stalled == 1 and a.frames == 0
    assert feed_all(a, [frame], 12001) == [frame]
    # one flipped bit: counted, not emitted, and the next frame still comes through
    bad = bytearray(frame)
    bad[len(bad) // 2] ^= 0x01
    a = make()
    assert feed_all(a, [bytes(bad)] + fragments(other, 20)) == [other]
    assert a.bad_checksum == 1
