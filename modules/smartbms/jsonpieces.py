# A JSON document in small pieces, for answers written to a socket: a status or an event
# page as one string needs one free block as large as the whole answer, which a heap in
# pieces under load may not have (the device then answered 503 long after the load ended).
# Dicts and lists down to two levels are written an entry at a time, an iterator's items
# (event records) one by one, so no piece is much larger than one value; chunks() gathers
# the pieces into one reused buffer, so that a socket write (a few coroutines and a system
# call each) carries hundreds of bytes, not a few. Steady state (a dashboard's status every
# few seconds) then allocates little more than the values' own text.
import gc
import json
import sys

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

CHUNK = const(256)  # bytes per write
_MPY = sys.implementation.name == "micropython"  # its bytearray takes a str as it is


def _dumps(value):
    # the status line is already sent: a piece that does not fit gets one more try after a
    # collection rather than cutting the answer short
    try:
        return json.dumps(value)
    except MemoryError:
        gc.collect()
        return json.dumps(value)


def _plain(s):
    # a str that JSON writes as it is between quotes (iterating a str allocates nothing)
    for c in s:
        if c < " " or c == '"' or c == "\\":
            return False
    return True


def _scalar(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _dumps(value)


def _nested(value, depth):
    return (depth and type(value) in (dict, list)) or hasattr(value, "__next__")


def _value(value, depth):
    # pieces are the constant punctuation, the keys and plain strings themselves and each
    # other value's text: no concatenation, and a generator only per dict or list
    if type(value) is dict and depth:
        yield "{"
        first = True
        for k, v in value.items():
            if first:
                first = False
            else:
                yield ", "
            if type(k) is str and _plain(k):  # the key's own text, no copy
                yield '"'
                yield k
                yield '": '
            else:
                yield _dumps(k)
                yield ": "
            if _nested(v, depth - 1):
                yield from _value(v, depth - 1)
            elif type(v) is str and _plain(v):
                yield '"'
                yield v
                yield '"'
            else:
                yield _scalar(v)
        yield "}"
    elif _nested(value, depth):
        # an iterator's items go whole, each one piece; a list's items one level deeper
        inner = depth - 1 if type(value) is list else 0
        yield "["
        first = True
        for item in value:
            if first:
                first = False
            else:
                yield ", "
            if inner and _nested(item, inner):
                yield from _value(item, inner)
            else:
                yield _scalar(item)
        yield "]"
    else:
        yield _scalar(value)


def pieces(doc, depth=2):
    """Yield the JSON text of `doc` in pieces (str): dicts and lists down to `depth` levels are
    written an entry at a time, and an iterator (a generator) at any level is consumed as
    it is written."""
    return _value(doc, depth + 1)


def chunks(doc, depth=2, size=CHUNK):
    """The pieces of `doc` gathered into writes of about `size` bytes: yields one bytearray,
    refilled after each yield (write it before asking for the next)."""
    buf = bytearray(size)
    buf[:] = b""  # empty, its room kept
    for p in _value(doc, depth + 1):
        if len(buf) + len(p) > size and buf:
            yield buf
            buf[:] = b""
        buf.extend(p if _MPY else p.encode())
    if buf:
        yield buf
