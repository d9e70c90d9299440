# Event log: ring bound, batching, persistence across reloads, segment rotation, torn
# lines, seq monotonic across reboots, wall-clock stamps.
import os
import random

from testutil import IS_MICROPYTHON, raises, skip
from smartbms import eventlog
from smartbms.eventlog import EventLog

WALL = 1767225600  # 2026-01-01


def _tmpdir(tag):
    base = "/tmp/smartbms-unit"
    try:
        os.mkdir(base)
    except OSError:
        pass
    while True:  # a fresh folder even if the random numbers repeat between runs
        d = "%s/%s-%d" % (base, tag, random.getrandbits(30))
        try:
            os.mkdir(d)
            return d
        except OSError:
            pass


def _lines(path):
    try:
        with open(path) as f:
            return f.read().split("\n")[:-1]
    except OSError:
        return []


class _Clock:
    def __init__(self, up=100, wall=None):
        self.up = up
        self.wall = wall

    def now(self):
        return self.up

    def wall_now(self):
        return self.wall


def _log(base, capacity=10, clock=None, flush_s=60):
    c = clock or _Clock()
    return EventLog(base, capacity=capacity, flush_s=flush_s, now=c.now, wall=c.wall_now), c


def test_add_and_recent_fields_and_order():
    log, c = _log(_tmpdir("basic") + "/ev")
    assert log.recent() == [] and log.last_seq == 0
    s1 = log.add("relay", "on: soc 79 < 80")
    c.up = 130
    s2 = log.add("settings", "max_soc 100 -> 95")
    assert s2 == s1 + 1
    r = log.recent()
    assert [e["kind"] for e in r] == ["relay", "settings"]
    assert r[0] == {"seq": s1, "up_s": 100, "t": None, "kind": "relay", "msg": "on: soc 79 < 80"}
    assert r[1]["up_s"] == 130
    assert log.last_seq == s2 and len(log) == 2


def test_ring_is_bounded_and_keeps_the_newest():
    log, _ = _log(_tmpdir("ring") + "/ev", capacity=10)
    for i in range(35):
        log.add("info", "event %d" % i)
    assert len(log) == 10
    r = log.recent(100)
    assert [e["msg"] for e in r] == ["event %d" % i for i in range(25, 35)]
    assert [e["msg"] for e in log.recent(3)] == ["event 32", "event 33", "event 34"]
    assert log.recent(0) == []


def test_since_seq_pages_forward_without_gaps():
    log, _ = _log(_tmpdir("since") + "/ev", capacity=50)
    seqs = [log.add("info", str(i)) for i in range(20)]
    page = log.recent(5, since_seq=seqs[3])
    assert [e["seq"] for e in page] == seqs[4:9]
    page = log.recent(5, since_seq=page[-1]["seq"])
    assert [e["seq"] for e in page] == seqs[9:14]
    assert log.recent(5, since_seq=seqs[-1]) == []
    assert [e["seq"] for e in log.recent(50, since_seq=0)] == seqs


def test_long_messages_and_kinds_are_capped():
    log, _ = _log(_tmpdir("cap") + "/ev")
    log.add("k" * 40, "m" * 1000)
    e = log.recent()[0]
    assert len(e["kind"]) == eventlog.MAX_KIND and len(e["msg"]) == eventlog.MAX_MSG
    log.add("info", 42)
    assert log.recent()[-1]["msg"] == "42"


def test_flush_is_batched_by_time_and_forced_by_important_events():
    base = _tmpdir("batch") + "/ev"
    log, c = _log(base, capacity=50, flush_s=60)
    log.add("relay", "on")
    log.add("relay", "off")
    assert log.pending == 2 and _lines(base + "0.log") == []
    assert log.flush() == 0  # too soon
    c.up += 60
    assert log.flush() == 2 and log.pending == 0
    assert len(_lines(base + "0.log")) == 2
    log.add("relay", "on")
    assert log.pending == 1
    log.add("fault", "cell_overvoltage")  # important: written at once, with what was pending
    assert log.pending == 0 and len(_lines(base + "0.log")) == 4
    assert log.flush(force=True) == 0  # nothing left


def test_many_events_flush_before_they_pile_up():
    base = _tmpdir("pile") + "/ev"
    log, _ = _log(base, capacity=100, flush_s=10 ** 6)
    for i in range(eventlog.MAX_PENDING):
        log.add("info", str(i))
    assert log.pending == 0
    assert len(_lines(base + "0.log")) == eventlog.MAX_PENDING


def test_persistence_across_reload():
    base = _tmpdir("reload") + "/ev"
    log, c = _log(base, capacity=10)
    for i in range(7):
        log.add("info", "e%d" % i)
    log.flush(force=True)
    before = log.recent()
    again, _ = _log(base, capacity=10)
    assert again.recent() == before
    assert again.skipped_lines == 0


def test_unflushed_events_are_lost_but_seq_never_repeats():
    base = _tmpdir("seq") + "/ev"
    log, _ = _log(base, capacity=50)
    for i in range(5):
        log.add("info", str(i))
    log.flush(force=True)
    for i in range(3):
        log.add("info", "unflushed %d" % i)
    handed_out = log.last_seq
    # power cut: the three unflushed events are gone
    after, _ = _log(base, capacity=50)
    assert len(after) == 5
    s = after.add("boot", "reset")
    assert s > handed_out
    assert [e["seq"] for e in after.recent()] == sorted(e["seq"] for e in after.recent())


def test_seq_is_monotonic_over_many_reboots_and_rotations():
    base = _tmpdir("reboots") + "/ev"
    last = 0
    for boot in range(12):
        log, _ = _log(base, capacity=8)
        r = log.recent(100)
        seqs = [e["seq"] for e in r]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        if boot:
            assert len(r) == min(8, 5 * boot)  # the flash keeps the last `capacity` events
            assert seqs[-1] == last
        for i in range(5):
            s = log.add("info", "boot %d event %d" % (boot, i))
            assert s > last
            last = s
        log.flush(force=True)
    # the files stay bounded: each segment holds at most `capacity` lines
    assert len(_lines(base + "0.log")) <= 8 and len(_lines(base + "1.log")) <= 8


def test_segments_rotate_and_bound_flash_use():
    base = _tmpdir("rotate") + "/ev"
    log, _ = _log(base, capacity=4)
    for i in range(30):
        log.add("info", "x%d" % i)
        log.flush(force=True)
        total = len(_lines(base + "0.log")) + len(_lines(base + "1.log"))
        assert total <= 8
    again, _ = _log(base, capacity=4)
    assert [e["msg"] for e in again.recent()] == ["x26", "x27", "x28", "x29"]


def test_torn_last_line_is_skipped_and_the_next_line_survives():
    base = _tmpdir("torn") + "/ev"
    log, _ = _log(base, capacity=20)
    for i in range(3):
        log.add("info", "ok%d" % i)
    log.flush(force=True)
    with open(base + "0.log", "a") as f:
        f.write('[99, 5, null, "info", "half a li')  # power cut mid-line
    again, _ = _log(base, capacity=20)
    assert [e["msg"] for e in again.recent()] == ["ok0", "ok1", "ok2"]
    assert again.skipped_lines == 1
    again.add("boot", "after the cut")
    third, _ = _log(base, capacity=20)
    assert [e["msg"] for e in third.recent()] == ["ok0", "ok1", "ok2", "after the cut"]
    assert third.recent()[-1]["seq"] > 2


def test_garbage_lines_and_missing_files_never_crash():
    base = _tmpdir("garbage") + "/ev"
    with open(base + "1.log", "w") as f:
        f.write('\x00\xff\n{"seq": 1}\n[1, 2]\n["a", 1, 2, "k", "m"]\n[7, 10, null, "relay", "on"]\n\n')
    with open(base + "0.log", "wb") as f:
        f.write(b'\xff\xfe\x00[3, 1, null, "x", "bad utf-8 \xc3"]\n[4, 1, null, "ok", "\xc3\xa9"]\n')
    log, _ = _log(base, capacity=10)
    assert [e["seq"] for e in log.recent()] == [4, 7]
    assert log.recent()[0]["msg"] == "\u00e9"
    assert log.skipped_lines == 6
    s = log.add("info", "next")
    assert s > 7


def test_wall_time_is_none_until_the_clock_is_set_then_backfilled():
    base = _tmpdir("wall") + "/ev"
    c = _Clock(up=10)
    log, _ = _log(base, capacity=20, clock=c)
    log.add("boot", "started")
    c.up = 40
    log.add("info", "before ntp")
    c.up = 100
    c.wall = WALL
    log.add("info", "after ntp")
    r = log.recent()
    assert r[2]["t"] == WALL
    assert r[1]["t"] == WALL - 60 and r[0]["t"] == WALL - 90  # dated from their uptime
    log.flush(force=True)
    again, _ = _log(base, capacity=20)
    assert again.recent()[-1]["t"] == WALL


def test_wall_time_needs_a_set_clock():
    t = eventlog.wall_time()
    assert t is None or t >= 1704067200


def test_write_errors_keep_events_pending():
    base = _tmpdir("err") + "/nodir/ev"  # the folder does not exist: every write fails
    log, _ = _log(base, capacity=10)
    log.add("fault", "x")
    assert log.write_errors >= 1 and log.pending == 1
    assert [e["msg"] for e in log.recent()] == ["x"]


def test_a_full_log_holds_only_its_pending_buffer_on_the_heap():
    # 200 events as objects in RAM took 23 KB of the board's 96 KB; the log reads its files
    if not IS_MICROPYTHON:
        skip("heap accounting is a MicroPython measurement")
    import gc

    base = _tmpdir("heap") + "/ev"
    gc.collect()
    before = gc.mem_alloc()
    log, _ = _log(base, capacity=200)
    for i in range(450):
        log.add("bms", "BMS link lost: no notification for 30 s (reconnecting) %d" % i)
    log.flush(force=True)
    gc.collect()
    used = gc.mem_alloc() - before
    assert used < eventlog.PENDING_BYTES + 1024, used
    assert len(log) == 200 and log.recent(1)[0]["msg"].endswith(" 449")


def test_a_flash_that_keeps_refusing_drops_the_oldest_pending_events_only():
    base = _tmpdir("refuse") + "/nodir/ev"
    log, _ = _log(base, capacity=500, flush_s=10 ** 6)
    for i in range(100):
        log.add("info", "event number %d with some words to fill the buffer" % i)
    assert log.dropped > 0 and log.write_errors > 0
    kept = [e["msg"] for e in log.recent(500)]
    assert len(kept) == log.pending == 100 - log.dropped
    assert kept[-1].startswith("event number 99 ") and kept == sorted(kept, key=lambda m: int(m.split()[2]))


def test_a_flush_during_a_slow_read_neither_repeats_nor_reorders():
    base = _tmpdir("readflush") + "/ev"
    log, _ = _log(base, capacity=6, flush_s=10 ** 6)
    for i in range(8):
        log.add("info", "a%d" % i)
    log.flush(force=True)
    for i in range(3):
        log.add("info", "b%d" % i)  # pending
    it = log.iter_recent(100)
    got = [next(it)["msg"], next(it)["msg"]]
    log.flush(force=True)  # the pending events move to the files (and a segment rotates)
    got += [e["msg"] for e in it]
    assert got == sorted(set(got), key=got.index)  # no repeats
    seqs = [e["seq"] for e in log.recent(100)]
    assert seqs == sorted(seqs) and len(seqs) == 6


def test_bad_capacity_is_rejected():
    raises(ValueError, EventLog, "/tmp/smartbms-unit/none", 0)


def test_settings_log_into_the_event_log():
    from smartbms.settings import Settings

    d = _tmpdir("settings")
    log, _ = _log(d + "/ev", capacity=20)
    s = Settings(d + "/settings.json", log=log)
    s.load()
    s.update({"max_soc": 90})
    kinds = [e["kind"] for e in log.recent()]
    assert kinds == ["settings", "settings"]
    assert "max_soc 100 -> 90" in log.recent()[-1]["msg"]


# ---- power cuts on a real littlefs (MicroPython unix port) ----

class _RamBlocks:
    """Records the device image before every program/erase and after a half-done program."""

    def __init__(self, blocks=24, size=256):
        self.size = size
        self.data = bytearray(blocks * size)
        self.snapshots = None

    def readblocks(self, n, buf, off=0):
        a = n * self.size + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        a = n * self.size + (off or 0)
        if self.snapshots is not None:
            self.snapshots.append(bytes(self.data))
            h = len(buf) // 2
            self.data[a:a + h] = buf[:h]
            self.snapshots.append(bytes(self.data))
        self.data[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.size
        if op == 5:
            return self.size
        if op == 6:
            if self.snapshots is not None:
                self.snapshots.append(bytes(self.data))
            a = arg * self.size
            self.data[a:a + self.size] = b"\xff" * self.size
        return 0


def test_power_cut_at_every_flash_write_on_littlefs():
    from testutil import IS_MICROPYTHON, skip

    if not IS_MICROPYTHON:
        skip("littlefs block devices need the MicroPython unix port")
    import vfs

    point = "/lfs_eventlog_test"
    bd = _RamBlocks()
    vfs.VfsLfs2.mkfs(bd)
    vfs.mount(vfs.VfsLfs2(bd), point)
    cap = 4
    try:
        log, _ = _log(point + "/ev", capacity=cap)
        bd.snapshots = []
        for i in range(14):
            log.add("info", "e%d" % (log.last_seq + 1))
            log.flush(force=True)
        assert log.write_errors == 0
        bd.snapshots.append(bytes(bd.data))
    finally:
        vfs.umount(point)
    snaps = bd.snapshots
    bd.snapshots = None
    assert len(snaps) > 28
    for i in range(len(snaps)):
        img = _RamBlocks()
        img.data[:] = snaps[i]
        vfs.mount(vfs.VfsLfs2(img), point)
        try:
            again, _ = _log(point + "/ev", capacity=cap)
            r = again.recent(100)
            seqs = [e["seq"] for e in r]
            if seqs:
                # the newest `cap` events that reached the flash, intact and in order
                assert seqs == list(range(seqs[-1] - len(seqs) + 1, seqs[-1] + 1)), (i, seqs)
                assert len(seqs) == min(cap, seqs[-1]), (i, seqs)
                assert all(e["msg"] == "e%d" % e["seq"] for e in r)
            s = again.add("boot", "after cut %d" % i)
            assert s > (seqs[-1] if seqs else 0)
        finally:
            vfs.umount(point)
    assert seqs[-1] == 14


def test_default_path_comes_from_paths():
    from smartbms import paths

    old = paths.ROOT
    paths.ROOT = _tmpdir("root") + "/"
    try:
        log = EventLog(capacity=5)
        assert log.segments == (paths.ROOT + "events0.log", paths.ROOT + "events1.log")
        log.add("boot", "hello")
        assert len(_lines(paths.ROOT + "events0.log")) == 1
    finally:
        paths.ROOT = old


def test_lines_are_read_across_chunk_boundaries():
    path = _tmpdir("chunks") + "/f"
    with open(path, "wb") as f:
        f.write(b"one\ntwenty-two chars..\n\nlast without newline")
    for chunk in (1, 3, 7, 512):
        assert list(eventlog._lines_of(path, chunk)) == [
            b"one\n", b"twenty-two chars..\n", b"\n", b"last without newline"], chunk
    assert list(eventlog._lines_of(path + ".missing")) == []
