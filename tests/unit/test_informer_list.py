"""iter_list: a list response decoded item by item, from its text or from chunks of bytes cut
anywhere (inside a multi-byte character, a number, a string), exactly as json.loads reads it."""
from __future__ import annotations

import json

import pytest
from kubeweft.proxy.informer import iter_list

DOCS = [
    {},
    {"items": []},
    {"kind": "ServiceList", "items": [{"a": 1, "é": "ü€"}, {"b": [1, 2], "c": None}],
     "metadata": {"resourceVersion": "5"}},
    {"metadata": {"r": 1}, "items": None, "n": 12345, "t": True},
    {"items": [{"x": i, "s": "y" * (i % 37)} for i in range(300)], "metadata": {"resourceVersion": "77"},
     "z": 1.5e10},
]


def _chunks(text: str, size: int) -> list[bytes]:
    b = text.encode()
    return [b[i:i + size] for i in range(0, len(b), size)]


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 0])
def test_items_one_by_one_as_json_reads_them(doc, indent, size):
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    got = list(iter_list(text if size == 0 else _chunks(text, size)))
    items = doc.get("items") if isinstance(doc.get("items"), list) else None
    want = [(k, v) for k, v in doc.items() if not (k == "items" and items is not None)]
    assert [v for k, v in got if k == "items" and items is not None] == (items or [])
    assert [(k, v) for k, v in got if not (k == "items" and items is not None)] == want


@pytest.mark.parametrize("bad", ['{"items":[{"a":1}', '{"items":[1,]}', "[1]", '{"a" 1}', '{"items":[{"a":1}]'])
@pytest.mark.parametrize("size", [1, 3, 100])
def test_broken_text_raises(bad, size):
    with pytest.raises(ValueError):
        list(iter_list(_chunks(bad, size)))


def test_chunks_are_consumed_as_items_are_taken():
    """The second item is not read before the first is handed over (streaming, not buffering)."""
    pulled = []

    def source():
        for part in ('{"items":[{"a":1},', '{"b":2}', "]}"):
            pulled.append(part)
            yield part.encode()
    it = iter_list(source())
    assert next(it) == ("items", {"a": 1})
    assert len(pulled) == 1
    assert list(it) == [("items", {"b": 2})]
