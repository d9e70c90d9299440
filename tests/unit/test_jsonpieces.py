# JSON answers in pieces: the same document as json.dumps, no piece larger than one entry.
import json

from smartbms.jsonpieces import pieces


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
    first = next(it) + next(it)
    assert taken == [0, 1]  # one item per piece, no more
    rest = "".join(it)
    assert taken == [0, 1, 2] and json.loads(first + rest)["events"] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_nested_dicts_and_lists_go_an_entry_at_a_time_two_levels_down():
    doc = {"device": {"wifi": {"ssid": "x" * 40, "ip": "1.2.3.4"}, "ota": {"state": "valid"}, "e": {}},
           "bms": {"cells": [3.3] * 16, "temps": []}, "n": 1, "l": [[1, 2], {"a": {}}]}
    parts = list(pieces(doc))
    assert json.loads("".join(parts)) == doc
    assert max(len(p) for p in parts) < 120, max(parts, key=len)
