# <base>/set/<name> commands, applied through the very functions the HTTP API uses, with its
# validation (smartbms.actions, Settings.update via App.apply_settings): a payload refused
# there is refused here and changes nothing. apply() answers None or (message, field).
import json

from smartbms import clock

PRESS = "PRESS"
NAMES = ("override", "override_minutes", "min_soc", "max_soc", "timeout_reset", "clear_alarms", "settings")


def _text(payload):
    return bytes(payload).decode()  # UnicodeError for bytes that are not UTF-8


def _value(payload):
    """A number payload as JSON ("85"); Home Assistant may send a whole number as "85.0"."""
    from smartbms.actions import ApiError

    try:
        v = json.loads(payload)
    except ValueError:
        raise ApiError(422, "must be a number")
    if type(v) is float and v == int(v):
        v = int(v)
    return v


def _press(payload):
    from smartbms.actions import ApiError

    if payload and _text(payload) != PRESS:
        raise ApiError(422, "send PRESS (or nothing)")


def apply(ctx, mq, name, payload):
    """Run the command `name` with `payload` (bytes). `mq` keeps the minutes an override
    from the select lasts (ov_minutes). None when done, else (message, field or None)."""
    # imported per command, not held: the web stack drops actions with itself (webgate)
    from smartbms.actions import ApiError, relay_args, reset_timeout

    try:
        if name == "override":
            mode = _text(payload)
            mode, minutes = relay_args({"mode": mode} if mode == "auto" else {"mode": mode, "minutes": mq.ov_minutes})
            ctx.set_override(mode, minutes)
        elif name == "override_minutes":
            _, minutes = relay_args({"mode": "on", "minutes": _value(payload)})
            mq.ov_minutes = minutes
            info = ctx.controller.override_info(clock.now())
            if info["mode"] != "auto":  # an override running now lasts the new minutes from now
                ctx.set_override(info["mode"], minutes)
        elif name == "min_soc" or name == "max_soc":
            ctx.apply_settings({name: _value(payload)})
        elif name == "timeout_reset":
            _press(payload)
            reset_timeout(ctx)
        elif name == "clear_alarms":
            _press(payload)
            ctx.clear_alarms()
        elif name == "settings":  # a partial settings document, as PUT /api/settings takes it
            try:
                doc = json.loads(payload)
            except ValueError:
                raise ApiError(400, "malformed JSON")
            if type(doc) is not dict:
                raise ApiError(400, "expected a JSON object")
            ctx.apply_settings(doc)
        else:
            raise ApiError(404, "unknown command (one of %s)" % ", ".join(NAMES))
    except ApiError as e:
        return e.message, e.field
    except ValueError as e:  # SettingsError names its field; UnicodeError (not UTF-8) too
        return getattr(e, "message", None) or str(e) or "malformed payload", getattr(e, "field", None)
    return None
