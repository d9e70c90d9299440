# Whitespace between JSON tokens goes as a body is read; strings keep theirs.
import json

from smartbms.jsonbody import Compactor
from testutil import raises


def _compact(text, pieces=7, limit=4096):
    c = Compactor(limit)
    data = text.encode()
    for i in range(0, len(data), pieces):
        c.feed(data[i:i + pieces])
    return bytes(c.out)


def test_whitespace_between_tokens_goes_and_strings_keep_theirs():
    doc = {"bms_name": "my  pack \"one\" \\ two", "min_soc": 70, "x": [1, 2, {"y": "a\tb"}]}
    text = ('{\n    "bms_name" :  "my  pack \\"one\\" \\\\ two",\r\n\t"min_soc": 70,\n'
            '    "x": [ 1,\n 2 , { "y" : "a\\tb" } ]\n}\n' + " " * 12000)
    for pieces in (1, 5, 256):
        out = _compact(text, pieces)
        assert json.loads(out) == doc
        assert len(out) < 100
    assert _compact('{"a": "x\\\\"  ,  "b" : "\\" "}') == b'{"a":"x\\\\","b":"\\" "}'


def test_content_beyond_the_limit_is_refused():
    raises(ValueError, _compact, json.dumps({"k": "v" * 300}), 16, 200)
    assert _compact(" " * 5000 + '{"k": 1}', 64, 20) == b'{"k":1}'
