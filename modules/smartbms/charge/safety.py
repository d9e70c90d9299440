# The temperature rule: charge only between temp_min_c and temp_max_c (never below 0 degC,
# whatever the settings say); after a stop, resume only inside the band narrowed by
# temp_hyst_c on both sides. A NaN temperature is an input fault (smartbms.charge.inputs).
ABS_MIN_TEMP_C = 0  # LFP must never be charged below freezing


def fmt(x):
    if x == int(x):
        return "%d" % x
    return "%.1f" % x


class TempGuard:
    def __init__(self):
        self.block = False
        self.side = 0  # the cause named in `text`: -1 too cold, 1 too hot
        self.text = ""

    def restore(self, side):
        """The stop from before a reboot: the hysteresis band still has to be reached."""
        self.block = True
        self.side = side
        self.text = "temperature was %s the charge range before the restart" % (
            "below" if side < 0 else "above")

    def check(self, temps, s):
        """Updates `block`; returns True when it changed (the text is rebuilt only when the
        cause changes: cold, hot)."""
        tmin = s["temp_min_c"]
        if tmin < ABS_MIN_TEMP_C:
            tmin = ABS_MIN_TEMP_C
        tmax = s["temp_max_c"]
        bad = None  # the first temperature outside the limits
        for t in temps:
            if t < tmin or t > tmax:
                bad = t
                break
        if bad is not None:
            side = -1 if bad < tmin else 1
            if self.block and side == self.side:
                return False
            self.block = True
            self.side = side
            self.text = "temperature %.1f °C %s %s °C" % (
                bad, "<" if side < 0 else ">", fmt(tmin if side < 0 else tmax))
            return True
        if not self.block:
            return False
        h = s["temp_hyst_c"]
        lo = tmin + h
        hi = tmax - h
        for t in temps:
            if not lo <= t <= hi:
                return False
        self.block = False
        return True
