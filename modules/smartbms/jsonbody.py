# A JSON request body with the whitespace between its tokens dropped as it is read. A valid
# settings body holds at most a few KB of content, but a pretty-printed or padded one may be
# 16 KB: kept whole, it and its decoded copy needed two blocks of that size, which an idle
# 96 KB heap does not have (the client got 503). Whitespace inside strings is kept.
_SPACE = b" \t\r\n"


class Compactor:
    def __init__(self, limit):
        self.out = bytearray()
        self.limit = limit  # bytes of content beyond which no valid body can go
        self._in_string = False
        self._escape = False

    def feed(self, data):
        """Add the next bytes of the body; ValueError once the content passes the limit."""
        out = self.out
        in_string = self._in_string
        escape = self._escape
        for b in data:
            if in_string:
                if escape:
                    escape = False
                elif b == 92:  # backslash
                    escape = True
                elif b == 34:  # closing quote
                    in_string = False
            elif b in _SPACE:
                continue
            elif b == 34:
                in_string = True
            out.append(b)
        self._in_string = in_string
        self._escape = escape
        if len(out) > self.limit:
            raise ValueError("JSON body has more than %d bytes of content" % self.limit)
