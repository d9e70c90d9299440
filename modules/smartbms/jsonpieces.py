# A JSON document in small pieces, for answers written to a socket: a status or an event
# page as one string needs one free block as large as the whole answer, which a heap in
# pieces under load may not have (the device then answered 503 long after the load ended).
# Each piece is one top-level entry, and one item of a list or iterator value.
import json


def pieces(doc):
    """Yield the JSON text of the dict `doc` in pieces; list and generator values are
    written one item at a time (a generator is consumed as it is written)."""
    sep = "{"
    for key, value in doc.items():
        head = sep + json.dumps(key) + ": "
        sep = ", "
        if type(value) is list or hasattr(value, "__next__"):
            yield head + "["
            comma = ""
            for item in value:
                yield comma + json.dumps(item)
                comma = ", "
            yield "]"
        else:
            yield head + json.dumps(value)
    yield "{}" if sep == "{" else "}"
