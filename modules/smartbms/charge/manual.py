# What the owner (or a home automation) asks for by hand: a manual override (relay on or
# off for N minutes), the "allow charging" input (tariffs, solar: off pauses charging, for N
# minutes or until allowed again) and the daily charge window from the settings. None of it
# is persisted: a reboot returns to automatic control with charging allowed.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from smartbms.charge.texts import fmt

OVERRIDE_MAX_MIN = const(1440)
OV_AUTO = const(0)
OV_ON = const(1)
OV_OFF = const(2)


def _minutes(minutes, what):
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
        raise ValueError("%s minutes must be a number" % what)
    if not 1 <= minutes <= OVERRIDE_MAX_MIN:
        raise ValueError("%s minutes must be 1..%d" % (what, OVERRIDE_MAX_MIN))


class Manual:
    def __init__(self):
        self.mode = OV_AUTO
        self.until = 0
        self.reason = ""
        self.next = ""
        self.allow = True
        self.allow_until = None

    def set_override(self, mode, minutes, now, held):
        """mode "on" | "off" for `minutes`, or "auto". `held`: a timeout hold refuses "on".
        Raises ValueError and changes nothing on bad input."""
        if mode == "auto":
            self.mode = OV_AUTO
            return
        if mode not in ("on", "off"):
            raise ValueError("override mode must be on, off or auto")
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
            raise ValueError("override minutes must be a number")
        if mode == "on" and held:
            raise ValueError("charging is held after a timeout: reset the timeout to charge again")
        _minutes(minutes, "override")
        self.mode = OV_ON if mode == "on" else OV_OFF
        self.until = now + int(minutes * 60)
        self.reason = "manual %s for %s min" % (mode, fmt(minutes))
        self.next = "automatic control resumes in %s min" % fmt(minutes)

    def override_info(self, now):
        """{"mode": "on" | "off" | "auto", "remaining_min": minutes left, rounded up, or None}."""
        if self.mode == OV_AUTO or now >= self.until:
            return {"mode": "auto", "remaining_min": None}
        return {"mode": "on" if self.mode == OV_ON else "off",
                "remaining_min": (self.until - now + 59) // 60}

    def set_allow(self, allow, minutes, now):
        if not isinstance(allow, bool):
            raise ValueError("allow must be true or false")
        if minutes is not None:
            _minutes(minutes, "allow")
        self.allow = allow
        self.allow_until = None if minutes is None else now + int(minutes * 60)

    def expire(self, now):
        """Every update: an override or a timed allow_charge ends by itself."""
        if self.mode != OV_AUTO and now >= self.until:
            self.mode = OV_AUTO
        if self.allow_until is not None and now >= self.allow_until:
            self.allow = not self.allow
            self.allow_until = None

    def in_window(self, s, wall):
        a = s["window_start_min"]
        b = s["window_end_min"]
        if a == b or wall is None:  # no window, or no clock to place it: charging allowed
            return True
        tod = (wall // 60 + s["tz_offset_min"]) % 1440
        return a <= tod < b if a < b else (tod >= a or tod < b)

    def allow_info(self, s, now, wall):
        a, b = s["window_start_min"], s["window_end_min"]
        left = self.allow_until
        return {"allowed": self.allow,
                "remaining_min": None if left is None else max(0, (left - now + 59) // 60),
                "window": None if a == b else "%02d:%02d-%02d:%02d" % (a // 60, a % 60, b // 60, b % 60),
                "in_window": self.in_window(s, wall)}
