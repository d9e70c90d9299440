import json

from testutil import approx, raises

from smartbms.history import History, INTERVAL_S, SLOTS


def _doc(h):
    return json.loads("".join(h.series()))


def test_empty_history_is_valid_json_with_no_samples():
    h = History()
    d = _doc(h)
    assert d["count"] == 0 and d["soc"] == [] and d["voltage"] == [] and d["current"] == []
    assert d["interval_s"] == INTERVAL_S and d["start_s"] is None
    assert len(h) == 0


def test_readings_within_a_minute_are_averaged():
    h = History()
    h.add(120, 50.0, 13.20, 10.0)
    h.add(150, 52.0, 13.30, -2.0)
    d = _doc(h)
    assert d["count"] == 1 and d["start_s"] == 120
    assert approx(d["soc"][0], 51.0) and approx(d["voltage"][0], 13.25) and approx(d["current"][0], 4.0)
    h.add(185, 60.0, 13.0, -5.26)  # next minute commits the first one
    s = h.samples()
    assert [x[0] for x in s] == [120, 180]
    assert approx(s[0][1], 51.0) and approx(s[1][3], -5.3)


def test_gaps_are_null_and_keep_the_time_axis():
    h = History()
    h.add(0, 10, 12.5, 1)
    h.add(3 * 60 + 1, 20, 12.6, -1.5)
    d = _doc(h)
    assert d["count"] == 4
    assert d["soc"] == [10.0, None, None, 20.0]
    assert d["current"] == [1.0, None, None, -1.5]


def test_ring_keeps_only_the_last_slots_minutes():
    h = History(slots=10)
    for m in range(25):
        h.add(m * 60, m, 12.0 + m / 100, m / 10)
    d = _doc(h)
    assert d["count"] == 10
    assert d["start_s"] == 15 * 60
    assert d["soc"] == [float(m) for m in range(15, 25)]
    assert approx(d["voltage"][-1], 12.24)


def test_full_day_fits_and_a_long_gap_clears_everything():
    h = History()
    for m in range(SLOTS + 100):
        h.add(m * 60 + 5, 50 + (m % 50), 26.5, -3.2)
    d = _doc(h)
    assert d["count"] == SLOTS and len(d["soc"]) == SLOTS and None not in d["soc"]
    h.add((SLOTS + 100 + 5000) * 60, 1, 25.0, 0)  # device off for days: old data is gone
    d = _doc(h)
    assert d["count"] == SLOTS
    assert d["soc"][:-1] == [None] * (SLOTS - 1) and d["soc"][-1] == 1.0


def test_bad_values_and_backwards_time_are_ignored():
    h = History()
    assert h.add(600, 50, 13.0, 1.0)
    before = h.samples()
    assert not h.add(660, None, 13.0, 1.0)
    assert not h.add(660, "50", 13.0, 1.0)
    assert not h.add(660, 50, float("nan"), 1.0)
    assert not h.add(660, True, 13.0, 1.0)
    assert not h.add(500, 50, 13.0, 1.0)
    assert h.samples() == before


def test_values_are_clamped_to_their_storage_range():
    h = History()
    h.add(0, 150, 800.0, -5000)
    h.add(60, -5, -1.0, 5000)
    s = h.samples()
    assert s[0][1] == 100.0 and approx(s[0][2], 655.34) and approx(s[0][3], -3276.7)
    assert s[1][1] == 0.0 and s[1][2] == 0.0


def test_too_small_ring_is_rejected():
    raises(ValueError, History, 1)


def test_device_history_covers_24_hours_in_3_kb():
    from smartbms.history import DEVICE_INTERVAL_S, DEVICE_SLOTS

    assert DEVICE_SLOTS * DEVICE_INTERVAL_S == 24 * 3600
    h = History(DEVICE_SLOTS, DEVICE_INTERVAL_S)
    assert 3 * 2 * DEVICE_SLOTS <= 3 * 1024
    for i in range(3):  # readings of one interval are averaged into one sample
        h.add(1000 * DEVICE_INTERVAL_S + i * 50, 50 + i, 13.2, 1.0)
    h.add(1001 * DEVICE_INTERVAL_S, 60, 13.3, 2.0)
    d = _doc(h)
    assert d["interval_s"] == DEVICE_INTERVAL_S and d["start_s"] == 1000 * DEVICE_INTERVAL_S
    assert d["count"] == 2 and approx(d["soc"][0], 51.0) and approx(d["soc"][1], 60.0)


def test_soc_is_kept_to_half_a_percent_from_0_to_100():
    h = History(slots=8)
    for m, soc in enumerate((61.2, 61.3, 0.0, 100.0, 99.76, 150.0)):
        h.add(m * INTERVAL_S, soc, 13.2, 1.0)
    h.add(6 * INTERVAL_S, 50.0, 13.2, 1.0)  # commits the last one
    text = "".join(h.series())
    assert '"soc": [61.0, 61.5, 0.0, 100.0, 100.0, 100.0, 50.0]' in text, text
    assert [x[1] for x in h.samples()] == [61.0, 61.5, 0.0, 100.0, 100.0, 100.0, 50.0]
