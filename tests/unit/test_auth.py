import binascii
import time

from testutil import IS_MICROPYTHON, raises, run_async

from smartbms import auth as authmod
from smartbms.auth import Auth, AuthError, AuthThrottled, equal, make_hash, parse_hash, pbkdf2_sha256


class FakeSettings:
    """Stores secrets the way smartbms.settings.Settings does (secret/set_secret)."""

    def __init__(self):
        self.values = {"admin_hash": ""}
        self.writes = 0
        self.fail = False

    def secret(self, key):
        return self.values[key]

    def set_secret(self, key, value):
        if self.fail:
            raise OSError(28, "no space")
        self.writes += 1
        self.values[key] = value


class Clock:
    def __init__(self):
        self.t = 1000

    def __call__(self):
        return self.t


def _ms():
    if IS_MICROPYTHON:
        return time.ticks_ms()
    return int(time.monotonic() * 1000)


def _fast_auth(settings=None, clock=None):
    a = Auth(settings or FakeSettings(), now=clock or Clock())
    a.base_ms, a.step_ms, a.max_ms = 20, 5, 200
    return a


def _basic(user, pw):
    return "Basic " + binascii.b2a_base64(("%s:%s" % (user, pw)).encode()).decode().strip()


def test_pbkdf2_matches_published_vectors():
    # PBKDF2-HMAC-SHA256 test vectors (P="password", S="salt", dkLen=32)
    h = lambda c: binascii.hexlify(pbkdf2_sha256(b"password", b"salt", c)).decode()
    assert h(1) == "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
    assert h(2) == "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"
    assert h(4096) == "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"


def test_pbkdf2_matches_cpython_hashlib_for_long_keys():
    if IS_MICROPYTHON:
        return  # the published vectors above cover the unix port
    import hashlib

    for pw in (b"x" * 64, b"y" * 65, "pässwörd-ünïcode".encode()):
        assert pbkdf2_sha256(pw, b"NaCl-salt", 50) == hashlib.pbkdf2_hmac("sha256", pw, b"NaCl-salt", 50)


def test_constant_time_equal():
    assert equal(b"abc", b"abc")
    assert not equal(b"abc", b"abd")
    assert not equal(b"abc", b"ab")
    assert equal(b"", b"")


def test_hash_format_is_salted_and_parseable():
    a = make_hash("correct horse", iterations=10)
    b = make_hash("correct horse", iterations=10)
    assert a != b  # random salt
    assert len(a) <= 128  # fits the admin_hash setting
    it, salt, key = parse_hash(a)
    assert it == 10 and len(salt) == authmod.SALT_BYTES and len(key) == 32
    assert "correct" not in a
    for bad in ("", "plain", "pbkdf2$x$00$00", "md5$10$00$" + "00" * 32, "pbkdf2$10$zz$" + "00" * 32,
                "pbkdf2$10$00$" + "00" * 31, None, 5):
        assert parse_hash(bad) is None


def test_password_rules_change_nothing_on_bad_input():
    s = FakeSettings()
    a = Auth(s, now=Clock())
    for bad in ("short", "x" * 65, 12345678, None, "tab\tinside1", ["12345678"]):
        e = raises(AuthError, a.set_password, bad)
        assert e.field == "password"
    assert s.writes == 0 and not a.has_password()


def test_set_and_check_password():
    s = FakeSettings()
    a = _fast_auth(s)
    assert not a.has_password()
    assert not run_async(a.check_password("anything-at-all", "1.2.3.4"))  # no password: nothing passes
    a.set_password("s3cret-pass", iterations=20)
    assert a.has_password() and s.values["admin_hash"].startswith("pbkdf2$20$")
    assert run_async(a.check_password("s3cret-pass", "1.2.3.4"))
    assert not run_async(a.check_password("s3cret-pasS", "1.2.3.4"))
    assert not run_async(a.check_password(None, "1.2.3.4"))
    assert not run_async(a.check_password("x" * 5000, "1.2.3.4"))


def test_corrupt_stored_hash_denies_everyone():
    s = FakeSettings()
    s.values["admin_hash"] = "pbkdf2$garbage"
    a = _fast_auth(s)
    assert a.has_password()  # still "set": a corrupt hash must not reopen first-time setup
    assert not run_async(a.check_password("garbage", "c"))


def test_save_failure_keeps_the_old_password():
    s = FakeSettings()
    a = _fast_auth(s)
    a.set_password("first-password", iterations=5)
    s.fail = True
    raises(OSError, a.set_password, "second-password", 5)
    assert run_async(a.check_password("first-password", "c"))


def test_failure_delay_grows_per_client_and_is_bounded():
    a = _fast_auth()
    a.set_password("right-password", iterations=5)
    times = []
    for _ in range(6):
        t0 = _ms()
        assert not run_async(a.check_password("wrong-password", "10.0.0.9"))
        times.append(_ms() - t0)
    # 20, 40, 80, 160, 200 (cap), 200 ms
    assert times[0] >= 18 and times[1] >= 38 and times[2] >= 78 and times[3] >= 150
    assert times[1] > times[0] and times[2] > times[1] and times[3] > times[2]
    assert times[5] < 400  # bounded
    assert a.delay_ms("10.0.0.9") == 200
    # another client starts low but feels the global failures
    assert a.delay_ms("10.0.0.77") == max(20, 5 * 7)
    # a success clears the client's record
    assert run_async(a.check_password("right-password", "10.0.0.9"))
    assert a.delay_ms("10.0.0.9") == max(20, 5 * 7)


def test_failures_are_forgotten_after_a_quiet_period():
    clock = Clock()
    a = _fast_auth(clock=clock)
    a.set_password("right-password", iterations=5)
    for _ in range(3):
        run_async(a.check_password("nope-nope", "c1"))
    assert a.delay_ms("c1") == 160
    clock.t += authmod.FORGET_S + 1
    assert a.delay_ms("c1") == 20


def test_one_check_in_flight_per_client():
    import asyncio

    a = _fast_auth()
    a.set_password("right-password", iterations=5)
    out = []

    async def attempt(addr):
        try:
            out.append((addr, await a.check_password("wrong-one!", addr)))
        except AuthThrottled as e:
            out.append((addr, "throttled", e.retry_after_s))

    async def main():
        await asyncio.gather(attempt("a"), attempt("a"), attempt("b"))

    run_async(main())
    assert ("a", False) in out and ("b", False) in out
    assert [x for x in out if x[1] == "throttled"] == [("a", "throttled", 1)]


def test_client_records_are_bounded():
    a = _fast_auth()
    a.base_ms = a.step_ms = 0
    a.set_password("right-password", iterations=2)
    for i in range(authmod.MAX_CLIENTS * 3):
        run_async(a.check_password("nope-nope", "10.0.%d" % i))
    assert len(a._clients) == authmod.MAX_CLIENTS


def test_hashing_yields_to_the_event_loop():
    import asyncio

    a = _fast_auth()
    a.set_password("right-password", iterations=1000)
    ticks = []

    async def ticker():
        for _ in range(50):
            ticks.append(1)
            await asyncio.sleep(0)

    async def main():
        t = asyncio.create_task(ticker())
        ok = await a.check_password("right-password", "c")
        n = len(ticks)
        await t
        return ok, n

    ok, n = run_async(main())
    assert ok and n >= 5  # the ticker ran while the hash was being computed


def test_basic_auth():
    a = _fast_auth()
    a.set_password("basic-pass-1", iterations=5)
    ok = lambda h: run_async(a.check_basic(h, "c"))
    assert ok(_basic("admin", "basic-pass-1"))
    assert ok(_basic("admin", "basic-pass-1"))  # second time via the per-boot fast path
    assert not ok(_basic("admin", "basic-pass-2"))
    assert not ok(_basic("root", "basic-pass-1"))
    assert not ok("Basic !!!notbase64")
    assert not ok("Bearer abc")
    assert not ok(None)
    assert not ok(_basic("admin", "pass:with:colons"))
    a.set_password("pass:with:colons", iterations=5)
    assert ok(_basic("admin", "pass:with:colons"))
    assert not ok(_basic("admin", "basic-pass-1"))  # the fast path forgot the old password


def test_sessions_expire_are_bounded_and_end_on_password_change():
    clock = Clock()
    a = _fast_auth(clock=clock)
    a.set_password("session-pass", iterations=5)
    t = a.new_session()
    assert len(t) == 32 and a.session_valid(t)
    assert not a.session_valid("0" * 32) and not a.session_valid("") and not a.session_valid(None)
    clock.t += authmod.SESSION_IDLE_S - 10
    assert a.session_valid(t)  # use keeps it alive
    clock.t += authmod.SESSION_IDLE_S - 10
    assert a.session_valid(t)
    clock.t += authmod.SESSION_IDLE_S + 1
    assert not a.session_valid(t)  # idle too long
    tokens = []
    for _ in range(authmod.MAX_SESSIONS + 3):
        clock.t += 1  # the least recently used session is the one dropped
        tokens.append(a.new_session())
    assert a.session_count() == authmod.MAX_SESSIONS
    assert not a.session_valid(tokens[0]) and a.session_valid(tokens[-1])
    assert a.end_session(tokens[-1]) and not a.session_valid(tokens[-1])
    assert not a.end_session(tokens[-1])
    a.set_password("another-pass", iterations=5)
    assert a.session_count() == 0 and not a.session_valid(tokens[-2])


def test_session_absolute_lifetime():
    clock = Clock()
    a = _fast_auth(clock=clock)
    t = a.new_session()
    for _ in range(authmod.SESSION_MAX_S // 3600 + 1):
        clock.t += 3600
        a.session_valid(t)
    assert not a.session_valid(t)


def test_cookie_flags():
    c = Auth.cookie("ab" * 16)
    assert c.startswith(authmod.COOKIE + "=" + "ab" * 16)
    assert "HttpOnly" in c and "SameSite=Strict" in c and "Path=/" in c
    assert "Max-Age=0" in Auth.clear_cookie()


def test_tokens_are_random():
    a = _fast_auth()
    toks = set(a.new_session() for _ in range(8))
    assert len(toks) == 8


def test_parallel_first_basic_requests_all_pass():
    import asyncio

    a = _fast_auth()
    a.set_password("script-password", iterations=300)
    a._st["ok"] = None  # a fresh boot: nothing verified yet
    h = _basic("admin", "script-password")

    async def main():
        return await asyncio.gather(*[a.check_basic(h, "10.1.1.1") for _ in range(5)])

    assert run_async(main()) == [True] * 5
