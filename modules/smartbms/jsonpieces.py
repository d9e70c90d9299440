# A JSON document in small pieces, for answers written to a socket: a status or an event
# page as one string needs one free block as large as the whole answer, which a heap in
# pieces under load may not have (the device then answered 503 long after the load ended).
# Each piece is one entry of the document or of a dict or list inside it (two levels), or
# one item of an iterator, so no piece is much larger than one value.
import gc
import json


def _dumps(value):
    # the status line is already sent: a piece that does not fit gets one more try after a
    # collection rather than cutting the answer short
    try:
        return json.dumps(value)
    except MemoryError:
        gc.collect()
        return json.dumps(value)


def _value(head, value, depth):
    if type(value) is dict and depth:
        sep = head + "{"
        for k, v in value.items():
            for piece in _value(sep + _dumps(k) + ": ", v, depth - 1):
                yield piece
            sep = ", "
        yield "}" if sep == ", " else sep + "}"
    elif (type(value) is list and depth) or hasattr(value, "__next__"):
        # an iterator's items (event records) go whole: each is small, and many
        # pieces of a few bytes would cost a socket write each
        inner = depth - 1 if type(value) is list else 0
        sep = head + "["
        for item in value:
            for piece in _value(sep, item, inner):
                yield piece
            sep = ", "
        yield "]" if sep == ", " else sep + "]"
    else:
        yield head + _dumps(value)


def pieces(doc, depth=2):
    """Yield the JSON text of `doc` in pieces: dicts and lists down to `depth` levels are
    written an entry at a time, and an iterator (a generator) at any level is consumed as
    it is written."""
    return _value("", doc, depth + 1)
