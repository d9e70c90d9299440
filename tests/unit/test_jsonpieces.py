# JSON answers in pieces: the same document as json.dumps, no piece larger than one entry.
import json

from smartbms.jsonpieces import chunks, pieces


def test_pieces_join_to_the_same_document():
    doc = {"a": 1, "s": "caf\u00e9 \"q\"", "n": None, "d": {"x": [1, 2]}, "l": [1, {"k": "v"}, []], "e": []}
    text = "".join(pieces(doc))
    assert json.loads(text) == doc
    assert "".join(pieces({})) == "{}" and json.loads("".join(pieces({"k": []}))) == {"k": []}


def test_a_list_goes_out_one_item_per_piece():
    items = [{"msg": "m" * 50, "seq": i} for i in range(30)]
    parts = list(pieces({"last_seq": 30, "events": items}))
    assert max(len(p) for p in parts) < 100  # not the whole 2 KB list at once
    assert json.loads("".join(parts))["events"] == items


def test_a_generator_is_consumed_only_as_the_pieces_are_taken():
    taken = []

    def gen():
        for i in range(3):
            taken.append(i)
            yield {"i": i}

    it = pieces({"events": gen()})
    got = []
    while not taken:
        got.append(next(it))
    assert got[-1] == '{"i": 0}' and taken == [0]  # one item per piece, no more
    got.append(next(it))
    assert taken == [0, 1] and got[-1] == ", "  # at most the item about to be written is taken
    rest = "".join(it)
    assert taken == [0, 1, 2] and json.loads("".join(got) + rest)["events"] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_nested_dicts_and_lists_go_an_entry_at_a_time_two_levels_down():
    doc = {"device": {"wifi": {"ssid": "x" * 40, "ip": "1.2.3.4"}, "ota": {"state": "valid"}, "e": {}},
           "bms": {"cells": [3.3] * 16, "temps": []}, "n": 1, "l": [[1, 2], {"a": {}}]}
    parts = list(pieces(doc))
    assert json.loads("".join(parts)) == doc
    assert max(len(p) for p in parts) < 120, max(parts, key=len)


def test_chunks_gather_the_pieces_into_writes_of_one_reused_buffer():
    items = [{"msg": "m" * 50, "seq": i} for i in range(30)]
    doc = {"last_seq": 30, "events": items, "big": "x" * 700}
    seen = []
    buffers = set()
    for c in chunks(doc, size=256):
        seen.append(bytes(c))  # written before the next is asked for, as a socket write is
        buffers.add(id(c))
    assert json.loads(b"".join(seen).decode()) == doc
    assert len(buffers) == 1  # one buffer, refilled
    assert len(seen) < 20  # about 2.7 KB in writes of ~256 B, not a write per piece
    # only a single piece larger than the chunk makes one larger
    assert [len(c) for c in seen if len(c) > 256] == [len(json.dumps("x" * 700)) + len(', "big": ')] or \
        max(len(c) for c in seen) <= 256 + 710, [len(c) for c in seen]
    assert b"".join(bytes(c) for c in chunks({})) == b"{}"
