# The admin password, login sessions and the brake on password guessing.
#
# - The password is stored only as salted PBKDF2-HMAC-SHA256 ("pbkdf2$<iterations>$<salt
#   hex>$<hash hex>", settings key admin_hash). The iteration count is chosen to cost
#   ~50-100 ms on the ESP32 (see ITERATIONS); it is stored with the hash so it can change.
# - Hashing yields to the event loop every few hundred rounds, so a login never stalls the
#   control loop; hashes are compared in constant time.
# - Each failed attempt is answered only after a delay that doubles per failure of that
#   client (bounded) and grows with the failures of all clients (bounded); one client may
#   have only one password check in flight, further ones are refused (AuthThrottled).
# - Sessions are random 128-bit tokens from os.urandom, kept in RAM only (a reboot logs
#   everyone out), bounded in number, expiring after idle time and after an absolute age.
# - This module loads with the web stack and is dropped with it (smartbms.webgate); what
#   must outlive that (sessions, the brake's memory) is one small dict the app keeps, the
#   `state` an Auth is made over.
import binascii
import hashlib
import os

from smartbms import clock

try:
    import asyncio
except ImportError:  # pragma: no cover
    asyncio = None

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# Cost: 1.4-1.7 us per round on an idle x86-64 unix port (bench/bench_status_load.py prints
# it). On the ESP32 (240 MHz) one round is 4 SHA-256 blocks (~8 us each in mbedTLS), ~8
# small heap allocations and ~10 calls in the VM: ~60-130 us, i.e. 40-75x the unix port.
# 800 rounds: ~50-100 ms per check there (to be confirmed on hardware).
# Changing this only affects new hashes: each stored hash carries its own count.
ITERATIONS = const(800)
SALT_BYTES = const(16)
MIN_PASSWORD = const(8)
MAX_PASSWORD = const(64)
HASH_KEY = "admin_hash"
USER = "admin"
COOKIE = "sbms_session"

MAX_SESSIONS = const(8)
SESSION_IDLE_S = const(12 * 3600)
SESSION_MAX_S = const(7 * 86400)

MAX_CLIENTS = const(16)  # failure records kept (oldest dropped)
FORGET_S = const(15 * 60)  # failures older than this are forgotten
CLIENT_BASE_MS = const(250)  # first failure of a client: 0.25 s, then doubling
GLOBAL_STEP_MS = const(100)  # each recent failure from anyone adds 0.1 s
MAX_DELAY_MS = const(8000)
_YIELD_EVERY = const(100)
BUSY_WAIT_MS = const(1000)


class AuthError(ValueError):
    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


class AuthThrottled(Exception):
    """This client already has a password check running: answer 429."""

    def __init__(self, retry_after_s):
        super().__init__("too many attempts")
        self.retry_after_s = retry_after_s


def _hmac_pads(password):
    if len(password) > 64:
        password = hashlib.sha256(password).digest()
    key = password + bytes(64 - len(password))
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def _round(ipad, opad, msg):
    h = hashlib.sha256(ipad)
    h.update(msg)
    o = hashlib.sha256(opad)
    o.update(h.digest())
    return o.digest()


def _pbkdf2_steps(password, salt, iterations):
    # generator: yields None every _YIELD_EVERY rounds, finally the 32-byte key
    ipad, opad = _hmac_pads(password)
    u = _round(ipad, opad, salt + b"\x00\x00\x00\x01")
    acc = int.from_bytes(u, "big")
    for i in range(1, iterations):
        u = _round(ipad, opad, u)
        acc ^= int.from_bytes(u, "big")
        if i % _YIELD_EVERY == 0:
            yield None
    yield acc.to_bytes(32, "big")


def pbkdf2_sha256(password, salt, iterations):
    """PBKDF2-HMAC-SHA256 with a 32-byte result (RFC 8018), blocking."""
    for out in _pbkdf2_steps(password, salt, iterations):
        pass
    return out


async def pbkdf2_sha256_async(password, salt, iterations):
    """The same, giving the event loop a turn every few hundred rounds."""
    for out in _pbkdf2_steps(password, salt, iterations):
        if out is None:
            await clock.sleep_real_ms(0)
    return out


def equal(a, b):
    """Constant-time comparison of two byte strings (length is not secret)."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


def _hex(b):
    return binascii.hexlify(b).decode()


def make_hash(password, iterations=ITERATIONS, salt=None):
    pw = check_password_text(password)
    salt = salt or os.urandom(SALT_BYTES)
    return "pbkdf2$%d$%s$%s" % (iterations, _hex(salt), _hex(pbkdf2_sha256(pw, salt, iterations)))


def parse_hash(stored):
    """(iterations, salt, key) or None for anything that is not a valid stored hash."""
    try:
        kind, it, salt, key = stored.split("$")
        it = int(it)
        salt = binascii.unhexlify(salt)
        key = binascii.unhexlify(key)
    except (ValueError, AttributeError, TypeError):
        return None
    if kind != "pbkdf2" or not 1 <= it <= 1000000 or len(key) != 32 or not salt:
        return None
    return it, salt, key


def check_password_text(password):
    """The password as UTF-8 bytes; AuthError("password", ...) when it is not acceptable."""
    if not isinstance(password, str):
        raise AuthError("password", "must be a string")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError("password", "must be %d to %d characters" % (MIN_PASSWORD, MAX_PASSWORD))
    for c in password:
        if ord(c) < 32 or c == "\x7f":
            raise AuthError("password", "must not contain control characters")
    return password.encode()


class Auth:
    def __init__(self, settings, now=None, state=None):
        self._settings = settings
        self._now = now or clock.now
        st = {} if state is None else state
        if "pepper" not in st:  # a new store: fill it once, it lasts the boot
            st["sessions"] = {}  # token -> [created, last used]
            st["clients"] = {}  # address -> [failures, last failure, busy]
            st["pepper"] = os.urandom(16)
            st["g"] = [0, 0]  # failures of all clients lately, the last one's time
            st["ok"] = None  # fast digest of the last password that passed (per boot)
            st["n"] = [0, 0]  # failures, successes (status, tests)
            st["ms"] = [CLIENT_BASE_MS, GLOBAL_STEP_MS, MAX_DELAY_MS]  # the brake (tests shrink it)
        self._st = st
        self._sessions = st["sessions"]
        self._clients = st["clients"]
        self._pepper = st["pepper"]

    @property
    def failures(self):
        return self._st["n"][0]

    @property
    def successes(self):
        return self._st["n"][1]

    @property
    def base_ms(self):
        return self._st["ms"][0]

    @base_ms.setter
    def base_ms(self, v):
        self._st["ms"][0] = v

    @property
    def step_ms(self):
        return self._st["ms"][1]

    @step_ms.setter
    def step_ms(self, v):
        self._st["ms"][1] = v

    @property
    def max_ms(self):
        return self._st["ms"][2]

    @max_ms.setter
    def max_ms(self, v):
        self._st["ms"][2] = v

    # ---- the stored password ----
    def _stored(self):
        try:
            return self._settings.secret(HASH_KEY)
        except (KeyError, AttributeError):
            return self._settings.get(HASH_KEY, "") if hasattr(self._settings, "get") else ""

    def has_password(self):
        return bool(self._stored())

    def set_password(self, password, iterations=ITERATIONS):
        """Validate, hash and store a new password; ends every session. AuthError on bad
        input (nothing changed); an OSError from saving also leaves the old password."""
        self._store(make_hash(password, iterations))

    async def set_password_async(self, password, iterations=ITERATIONS):
        """set_password() without holding the event loop for the whole hash."""
        pw = check_password_text(password)
        salt = os.urandom(SALT_BYTES)
        key = await pbkdf2_sha256_async(pw, salt, iterations)
        self._store("pbkdf2$%d$%s$%s" % (iterations, _hex(salt), _hex(key)))

    def _store(self, stored):
        if hasattr(self._settings, "set_secret"):
            self._settings.set_secret(HASH_KEY, stored)
        else:
            self._settings.update({HASH_KEY: stored})
        self._sessions.clear()
        self._st["ok"] = None
        return True

    # ---- password checks with the failure brake ----
    def _client(self, addr, now):
        rec = self._clients.get(addr)
        if rec is None:
            if len(self._clients) >= MAX_CLIENTS:
                oldest = None
                for k, r in self._clients.items():
                    if not r[2] and (oldest is None or r[1] < self._clients[oldest][1]):
                        oldest = k
                if oldest is None:
                    raise AuthThrottled(1)
                del self._clients[oldest]
            rec = [0, now, False]
            self._clients[addr] = rec
        elif rec[0] and now - rec[1] > FORGET_S:
            rec[0] = 0
        return rec

    def delay_ms(self, addr):
        """The delay the next failure of `addr` would get."""
        now = self._now()
        rec = self._clients.get(addr)
        n = rec[0] if rec and now - rec[1] <= FORGET_S else 0
        g = self._st["g"]
        g = g[0] if now - g[1] <= FORGET_S else 0
        return self._delay(n + 1, g + 1)

    def _delay(self, n, g):
        base, step, top = self._st["ms"]
        c = base << min(n - 1, 8) if n > 0 else 0
        return min(max(c, step * g), top)

    async def check_password(self, password, addr="?"):
        """True when `password` is the admin password. A failure returns False only after
        the growing delay. Raises AuthThrottled while `addr` has another check running."""
        now = self._now()
        rec = self._client(addr, now)
        if rec[2]:
            raise AuthThrottled(max(1, self._delay(rec[0], 0) // 1000))
        rec[2] = True
        try:
            ok = await self._verify(password)
            counts = self._st["n"]
            if ok:
                rec[0] = 0
                counts[1] += 1
                return True
            now = self._now()
            rec[0] += 1
            rec[1] = now
            g = self._st["g"]
            if now - g[1] > FORGET_S:
                g[0] = 0
            g[0] += 1
            g[1] = now
            counts[0] += 1
            await clock.sleep_real_ms(self._delay(rec[0], g[0]))
            return False
        finally:
            rec[2] = False
            if rec[0] == 0 and addr in self._clients:
                del self._clients[addr]

    async def _verify(self, password):
        parsed = parse_hash(self._stored())
        if parsed is None or not isinstance(password, str):
            return False
        pw = password.encode()
        if len(pw) > 4 * MAX_PASSWORD:
            return False
        it, salt, key = parsed
        got = await pbkdf2_sha256_async(pw, salt, it)
        if equal(got, key):
            self._st["ok"] = self._fast(pw)
            return True
        return False

    def _fast(self, pw):
        h = hashlib.sha256(self._pepper)
        h.update(pw)
        return h.digest()

    async def check_basic(self, header, addr="?"):
        """True for an `Authorization: Basic` value carrying admin:<password>. A password
        that already passed this boot is recognised without redoing the slow hash."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, pw = binascii.a2b_base64(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeError):
            return False
        if user != USER:
            # still costs a full check: a wrong user name says nothing the password does not
            await self.check_password(None, addr)
            return False
        if self._known(pw):
            return True
        # a script's parallel first requests: let the check already running finish (briefly)
        # rather than refusing them, then the fast path usually answers
        rec = self._clients.get(addr)
        waited = 0
        while rec is not None and rec[2] and waited < BUSY_WAIT_MS:
            await clock.sleep_real_ms(20)
            waited += 20
        if waited and self._known(pw):
            return True
        return await self.check_password(pw, addr)

    def _known(self, pw):
        ok = self._st["ok"]
        if ok is None or not self.has_password():
            return False
        b = pw.encode()
        return len(b) <= 4 * MAX_PASSWORD and equal(self._fast(b), ok)

    # ---- sessions ----
    def new_session(self):
        now = self._now()
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = None
            for k, s in self._sessions.items():
                if oldest is None or s[1] < self._sessions[oldest][1]:
                    oldest = k
            del self._sessions[oldest]
        token = _hex(os.urandom(16))
        self._sessions[token] = [now, now]
        return token

    def _expire(self, now):
        dead = [k for k, s in self._sessions.items()
                if now - s[1] > SESSION_IDLE_S or now - s[0] > SESSION_MAX_S]
        for k in dead:
            del self._sessions[k]

    def session_valid(self, token):
        """True for a live session token (and marks it used)."""
        if not token or len(token) != 32:
            return False
        s = self._sessions.get(token)
        if s is None:
            return False
        now = self._now()
        if now - s[1] > SESSION_IDLE_S or now - s[0] > SESSION_MAX_S:
            del self._sessions[token]
            return False
        s[1] = now
        return True

    def end_session(self, token):
        if token in self._sessions:
            del self._sessions[token]
            return True
        return False

    def session_count(self):
        return len(self._sessions)

    @staticmethod
    def cookie(token):
        return "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%d" % (COOKIE, token, SESSION_MAX_S)

    @staticmethod
    def clear_cookie():
        return "%s=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0" % COOKIE
