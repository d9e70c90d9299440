from smartbms import clock


def test_now_is_monotonic_and_small():
    a = clock.now()
    b = clock.now()
    assert isinstance(a, int)
    assert b >= a >= 0


def test_speed_scales_device_time():
    clock.set_speed(1000)
    try:
        start = clock.now_ms()
        t = clock._ticks_ms()
        while clock._ticks_diff(clock._ticks_ms(), t) < 20:
            pass
        # 20 real ms at 1000x is at least 20 device seconds
        assert clock.now_ms() - start >= 20000
        assert clock.real_ms(60000) == 60
    finally:
        clock.set_speed(1)
    assert clock.speed() == 1
