# The owner's actions that both the HTTP API (smartbms.web) and MQTT (smartbms.mqtt.commands)
# offer, with their validation, and the error both answer with. Free of the web stack, so
# MQTT keeps none of it in the heap while the web server is unloaded (smartbms.webgate).


class ApiError(Exception):
    """A refused request: the HTTP status, a message and the field it concerns."""

    def __init__(self, status, message, field=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers


def only(doc, allowed):
    for k in doc:
        if k not in allowed:
            raise ApiError(422, "unknown key", k)


def number(x):
    """A JSON number (not a bool)."""
    return not isinstance(x, bool) and isinstance(x, (int, float))


def reset_timeout(ctx):
    """Ends a charge-timeout hold, or ApiError 409 (nothing logged) when none is active."""
    if ctx.reset_timeout() is False:
        raise ApiError(409, "no charge timeout is active: nothing to reset")


def relay_args(doc):
    """(mode, minutes) of a manual override {"mode": auto|on|off, "minutes": 1..1440}, or
    ApiError 422."""
    only(doc, ("mode", "minutes"))
    mode = doc.get("mode")
    if mode not in ("auto", "on", "off") or not isinstance(mode, str):
        raise ApiError(422, "must be auto, on or off", "mode")
    minutes = doc.get("minutes")
    if mode != "auto":
        if not number(minutes):
            raise ApiError(422, "a number of minutes is required", "minutes")
        if not 1 <= minutes <= 1440:
            raise ApiError(422, "must be 1 to 1440", "minutes")
    elif minutes is not None and not number(minutes):
        raise ApiError(422, "must be a number", "minutes")
    return mode, minutes
