# Reading a request for the API's routes (smartbms.web, smartbms.web_upkeep, the OTA
# routes): its JSON body, an integer query argument, the client's address. Each refusal is
# an ApiError (smartbms.actions) that the server answers as JSON.
import json

from smartbms.actions import ApiError, only as _only


def client_host(req):
    # the client's IP only (not the port): failures are counted per host
    a = req.client_addr
    if isinstance(a, (tuple, list)) and a:
        return str(a[0])
    if isinstance(a, (bytes, bytearray)) and len(a) >= 8:  # a raw sockaddr_in (unix port)
        return "%d.%d.%d.%d" % (a[4], a[5], a[6], a[7])
    return str(a)


def mime(req):
    ct = req.headers.get("Content-Type") or ""
    return ct.split(";")[0].strip().lower()


def body_object(req, allow_empty=False):
    """The request body as a JSON object; ApiError 400/415 otherwise."""
    raw = req.body
    if not raw:
        if allow_empty:
            return {}
        raise ApiError(400, "a JSON object body is required")
    if mime(req) != "application/json":
        raise ApiError(415, "the body must be application/json")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeError):
        raise ApiError(400, "malformed JSON")
    if type(doc) is not dict:
        raise ApiError(400, "expected a JSON object")
    return doc


def json_object(req, allowed):
    """The body as a JSON object with only `allowed` keys; ApiError (400/415/422) otherwise.
    For routes installed outside create_app (OTA)."""
    doc = body_object(req)
    _only(doc, allowed)
    return doc


def int_arg(req, name, default, lo, hi):
    v = req.args.get(name)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        raise ApiError(400, "must be an integer", name)
    if not lo <= n <= hi:
        raise ApiError(422, "must be %d to %d" % (lo, hi), name)
    return n
