"""The per-record shortcuts of issue 6 give exactly the SDK's results.

- `fast_increment_state` / the `_increment_stream_state` and `_process_record` overrides
  of `FastRecordsMixin`: every message (RECORD and STATE) equals the stock SDK stream's.
- The inline C-level checks of leaf objects and lists of leaf objects in
  `compile_conformer`: equal to the SDK's conforming.
- The Alation compiled timestamp normaliser: equal to `normalize_at_paths`, errors too.
"""

from __future__ import annotations

import copy
import typing as t

import pytest
from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.io_base import SingerWriter
from test_fastpath import comparable, make_tap, run_binary, sdk_conform

from tap_analytics.alation.timestamps import (
    TsPaths,
    compile_page_normalizer,
    normalize_ts,
    timestamp_paths,
)
from tap_analytics.alation.schemas import EXECUTION_EVENTS
from tap_analytics.common.fastpath import (
    FastRecordsMixin,
    FastSingerWriter,
    compile_conformer,
)
from tap_analytics.common.timeutil import normalize

INC_SCHEMA = th.PropertiesList(
    th.Property("id", th.IntegerType, required=True),
    th.Property("ts", th.DateTimeType),
    th.Property("v", th.StringType),
).to_dict()

#: unsorted values, repeats, a drop below the maximum, a null in between
ID_VALUES = [5, 3, 9, 9, 1, None, 12, 7, 2, 11]
TS_VALUES = ["2024-01-03T00:00:00.000000+00:00", "2024-01-01T00:00:00.000000+00:00",
             "2024-01-05T00:00:00.000000+00:00", None, "2024-01-02T00:00:00.000000+00:00",
             "2024-01-05T00:00:00.000001+00:00", "2024-01-04T00:00:00.000000+00:00"]


def _no_signpost(messages: list[dict]) -> list[dict]:
    """The messages with the signpost (the sync's start time, for date-time keys) blanked."""
    out = comparable(messages)
    for msg in out:
        for entry in (msg.get("value") or {}).get("bookmarks", {}).values():
            if "replication_key_signpost" in entry:
                assert entry["replication_key_signpost"].endswith("+00:00")
                entry["replication_key_signpost"] = "<start>"
    return out


def _incremental(key: str, values: list, check_sorted: bool, fast: bool) -> type:
    bases: tuple = (FastRecordsMixin, Stream) if fast else (Stream,)

    def get_records(self: t.Any, context: t.Any) -> t.Iterable[dict]:
        for i, value in enumerate(values):
            row = {"id": i, "ts": None, "v": "x"}
            row[key] = value
            yield row

    return type("Unsorted", bases, {
        "name": "unsorted", "primary_keys": ("id",), "replication_key": key,
        "is_sorted": False, "check_sorted": check_sorted, "schema": INC_SCHEMA,
        "STATE_MSG_FREQUENCY": 3, "get_records": get_records,
    })


@pytest.mark.parametrize("check_sorted", [True, False])
@pytest.mark.parametrize(("key", "values"), [("id", ID_VALUES), ("ts", TS_VALUES)])
def test_unsorted_bookmarks_equal_the_sdk(key: str, values: list, check_sorted: bool) -> None:
    fast = run_binary(make_tap(_incremental(key, values, check_sorted, True),
                               FastSingerWriter))
    stock = run_binary(make_tap(_incremental(key, values, check_sorted, False),
                                SingerWriter))
    states = [m for m in fast if m["type"] == "STATE"]
    assert len(states) >= 3  # progress STATEs along the way and the final one
    assert _no_signpost(fast) == _no_signpost(stock)
    final = states[-1]["value"]["bookmarks"]["unsorted"]
    non_null = [v for v in values if v is not None]
    # the final bookmark: the max when sort checks are on, else the last non-null value
    assert final["replication_key_value"] == (max(non_null) if check_sorted
                                              else non_null[-1])


def test_missing_replication_key_fails_as_in_the_sdk() -> None:
    class Missing(FastRecordsMixin, Stream):
        name = "missing"
        primary_keys = ("id",)
        replication_key = "ts"
        is_sorted = False
        schema = INC_SCHEMA

        def get_records(self, context: t.Any) -> t.Iterable[dict]:
            yield {"id": 1, "ts": "2024-01-01T00:00:00.000000+00:00"}
            yield {"id": 2}

    with pytest.raises(KeyError):
        run_binary(make_tap(Missing, FastSingerWriter))


class _Parent(Stream):
    name = "parent"
    primary_keys = ("id",)
    replication_key = None
    schema = th.PropertiesList(th.Property("id", th.IntegerType)).to_dict()

    def get_records(self, context: t.Any) -> t.Iterable[dict]:
        yield from ({"id": i} for i in range(3))

    def get_child_context(self, record: dict, context: t.Any) -> dict:
        return {"parent_id": record["id"]}


class _Child(Stream):
    name = "child"
    primary_keys = ("parent_id", "n")
    replication_key = None
    schema = th.PropertiesList(th.Property("parent_id", th.IntegerType),
                               th.Property("n", th.IntegerType)).to_dict()

    def get_records(self, context: t.Any) -> t.Iterable[dict]:
        yield from ({"n": n} for n in range(2))  # parent_id comes from the context


def _family(fast: bool) -> tuple[type, type]:
    mixin: tuple = (FastRecordsMixin,) if fast else ()
    parent = type("P", (*mixin, _Parent), {})
    child = type("C", (*mixin, _Child), {"parent_stream_type": parent})
    return parent, child


def test_child_streams_and_partition_context_still_run() -> None:
    def tap_of(fast: bool) -> t.Any:
        parent, child = _family(fast)

        class FamilyTap(Tap):
            name = "tap-family-test"
            config_jsonschema = th.PropertiesList().to_dict()
            message_writer_class = FastSingerWriter if fast else SingerWriter

            def discover_streams(self) -> list[Stream]:
                return [parent(self), child(self)]

        return FamilyTap(config={}, parse_env_config=False, validate_config=False)

    fast = run_binary(tap_of(True))
    stock = run_binary(tap_of(False))
    children = [m["record"] for m in fast if m["type"] == "RECORD" and m["stream"] == "child"]
    # the partition context's key is added to every child record, 2 per parent
    assert sorted((r["parent_id"], r["n"]) for r in children) == [
        (p, n) for p in range(3) for n in range(2)]
    assert comparable(fast) == comparable(stock)


# -- conforming: leaf objects and lists of leaf objects, checked inline ----------------
LEAF_SCHEMA = th.PropertiesList(
    th.Property("id", th.IntegerType),
    th.Property("ok", th.BooleanType),
    th.Property("leaf", th.ObjectType(th.Property("a", th.StringType),
                                      th.Property("b", th.IntegerType))),
    th.Property("rows", th.ArrayType(th.ObjectType(th.Property("k", th.StringType),
                                                   th.Property("n", th.NumberType)))),
).to_dict()


@pytest.mark.parametrize("record", [
    {"id": 1, "ok": True, "leaf": {"a": "x", "b": 2}, "rows": [{"k": "a", "n": 1.5}]},
    {"id": 2, "leaf": {"a": "x", "extra": 1}, "rows": []},                 # unknown key
    {"id": 3, "rows": [{"k": "a"}, {"k": "b", "zz": True}]},               # in a list item
    {"id": 4, "rows": [{"k": "a"}, "not an object", None]},                # non-object items
    {"id": 5, "leaf": "not an object", "ok": 0},                           # wrong types
    {"id": 6, "leaf": {"a": {"deep": 1}, "b": [1, 2]}, "rows": [{"k": ["x"]}]},
    {"id": 7, "rows": [{"k": "a", "n": float("nan")}]},
])
def test_inline_leaf_checks_equal_the_sdk(record: dict) -> None:
    conform = compile_conformer(LEAF_SCHEMA)
    unmapped: list[str] = []
    assert conform(copy.deepcopy(record), unmapped) == sdk_conform(
        copy.deepcopy(record), LEAF_SCHEMA) or record["id"] == 7
    if record["id"] == 7:  # NaN != NaN: the SDK makes it None
        assert sdk_conform(copy.deepcopy(record), LEAF_SCHEMA)["rows"][0]["n"] is None
        assert conform(copy.deepcopy(record), [])["rows"][0]["n"] is None


def test_unknown_keys_inside_a_closed_list_item_are_reported() -> None:
    schema = copy.deepcopy(LEAF_SCHEMA)
    schema["properties"]["rows"]["items"]["additionalProperties"] = False
    record = {"rows": [{"k": "a", "zz": 1}, {"k": "b"}]}
    unmapped: list[str] = []
    out = compile_conformer(schema)(copy.deepcopy(record), unmapped)
    assert out == sdk_conform(copy.deepcopy(record), schema)
    assert out["rows"][0] == {"k": "a"}  # dropped, as additionalProperties says
    assert unmapped == ["rows.zz"]


# -- the Alation timestamp normaliser ---------------------------------------------------
EVENT_PATHS = timestamp_paths(EXECUTION_EVENTS)

STAMPS = [
    "2024-01-01T13:31:51.665023Z", "2024-01-01 00:42:35.554059+00:00",
    "2024-01-01T00:42:35.554059+00:00", "2024-01-01 00:42:35.554059Z",
    "2024-01-01T00:42:35Z", "2024-01-01T02:42:35.554059+02:00", "2024-01-01",
    "2024-01-01T00:42:35.1234567Z", "\u0662\u0660\u0662\u0664-01-01T00:00:00.000000Z",
]


@pytest.mark.parametrize("stamp", STAMPS)
def test_normalize_ts_equals_the_general_normaliser(stamp: str) -> None:
    assert normalize_ts(stamp) == normalize(stamp)


def _event(stamp: t.Any) -> dict:
    return {"id": 1, "ts_executed": stamp, "datasource": {"id": 1},
            "result": {"ts_created": stamp, "ts_expiration": None,
                       "data_schema": [{"name": "x"}], "query": {"id": 2}}}


def normalize_at_paths(node: t.Any, paths: TsPaths) -> None:
    """The reference: a plain recursive walk (what the compiled normaliser must equal)."""
    if isinstance(node, list):
        for item in node:
            normalize_at_paths(item, paths)
        return
    if not isinstance(node, dict):
        return
    for key, sub in paths.items():
        value = node.get(key)
        if value is None:
            continue
        if sub is True:
            if isinstance(value, str):
                try:
                    node[key] = normalize_ts(value)
                except ValueError as exc:
                    raise ValueError(f"field '{key}': {exc}") from None
        else:
            normalize_at_paths(value, sub)


@pytest.mark.parametrize("stamp", [*STAMPS, None, 17, ""])
def test_compiled_normaliser_equals_normalize_at_paths(stamp: t.Any) -> None:
    compiled, reference = _event(stamp), _event(stamp)
    error = None
    try:
        normalize_at_paths(reference, EVENT_PATHS)
    except ValueError as exc:
        error = str(exc)
    if error is None:
        compile_page_normalizer(EVENT_PATHS)([compiled])
        assert compiled == reference
        if isinstance(stamp, str) and stamp:
            assert compiled["ts_executed"].endswith("+00:00")
    else:
        with pytest.raises(ValueError) as caught:
            compile_page_normalizer(EVENT_PATHS)([compiled])
        assert str(caught.value) == error


def test_compiled_normaliser_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="field 'ts_created'"):
        compile_page_normalizer(EVENT_PATHS)(
            [{"ts_executed": "2024-01-01T00:00:00Z", "result": {"ts_created": "soon"}}])


def test_compiled_normaliser_walks_lists_and_ignores_other_values() -> None:
    paths = {"items": {"at": True}}
    node = {"items": [{"at": "2024-01-01 00:00:00.000000Z"}, "text", 3, {"at": None}]}
    compile_page_normalizer(paths)([node])
    assert node == {"items": [{"at": "2024-01-01T00:00:00.000000+00:00"}, "text", 3,
                              {"at": None}]}
