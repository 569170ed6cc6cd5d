"""Scuba parsers on the docs' own sample answers (minimally repaired) + property tests."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import typing as t

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_analytics.scuba import parsers
from tap_analytics.scuba.parsers import ParseError

UTC = dt.timezone.utc


def rfc3339(ms: int) -> str:
    """Independent reference: epoch ms -> the tap's fixed-width RFC 3339."""
    value = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=ms)
    return value.isoformat(timespec="microseconds")


# scuba-external-query-api.md, "Response" -- as printed it misses a comma after
# "start_time_0":1540760000000 and ends with "...": those two are repaired, nothing else.
DOC_POWER_BI = """[
{
"measure 1":473,
"end_time_0":1540846400000,
"start_time_0":1540760000000,
"artist": "All Others"
},
{
"measure 1": 130,
"end_time_0": 1540364400000,
"start_time_0": 1509260400000,
"artist": "Gorillaz"
},
{ "measure 1": 11,
"end_time_0": 154103400000,
"start_time_0": 15124300000,
"artist": "Beethoven"
}
]"""

# interana-external-api-v1-get-query.txt, "Response: single measurement" -- the outer
# braces and the "]," closing `rows` are missing as printed.
DOC_SINGLE = """{
  "rows": [
    {"values": [ [ "3 Doors Down"], 31456] },
    {"values": [ [ "Justin Bieber"], 31336] },
    {"values": [ [ "OneRepublic"], 31772] },
    {"values": [ [ "Taylor Swift"], 30136] },
    {"values": [ [ "The White Stripes"], 27036] }
  ],
  "columns": [
    {"type": "array", "label": ["artist"] },
    {"type": "number", "label": "measure_value"}
  ]
}"""

# "Response: time series" -- outer braces, the closing "]" of `columns`, and curly quotes
# around the first "timestamp"/"properties"/"object_count" repaired.
DOC_SERIES = """{
  "rows": [
    {"values": [ [ "All"], [
      {"timestamp": 1461913200000, "properties": {"object_count": 25243, "event_count": 25243},
       "value": 8414.333333333332},
      {"timestamp": 1461934800000, "properties": {"object_count": 20977, "event_count": 20977},
       "value": 6992.333333333333},
      {"timestamp": 1461956400000, "properties": {"object_count": 27581, "event_count": 27581},
       "value": 9193.666666666666}
     ] ],
     "properties": {"window": 43200000, "resolution": 21600000, "rate": "minute"}
  } ],
  "columns": [
    {"type": "array", "label": ["result"] },
    {"type": "time_series", "label": "measure_value"}
  ]
}"""


def test_doc_power_bi_sample() -> None:
    records = list(parsers.parse_power_bi(DOC_POWER_BI.encode()))
    assert records == [
        {"measure_1": 473, "end_time_0": rfc3339(1540846400000),
         "start_time_0": rfc3339(1540760000000), "artist": "All Others"},
        {"measure_1": 130, "end_time_0": rfc3339(1540364400000),
         "start_time_0": rfc3339(1509260400000), "artist": "Gorillaz"},
        {"measure_1": 11, "end_time_0": rfc3339(154103400000),
         "start_time_0": rfc3339(15124300000), "artist": "Beethoven"},
    ]
    assert records[0]["end_time_0"] == "2018-10-29T20:53:20.000000+00:00"


def test_doc_sample_as_printed_is_one_clear_error() -> None:
    printed = DOC_POWER_BI.replace('1540760000000,\n"artist"', '1540760000000\n"artist"')
    with pytest.raises(ParseError, match="malformed JSON"):
        list(parsers.parse_power_bi(printed))


def test_doc_power_bi_sample_as_csv_and_default() -> None:
    items = json.loads(DOC_POWER_BI)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(items[0]))
    for item in items:
        writer.writerow([item[k] for k in items[0]])
    expected = list(parsers.parse_power_bi(DOC_POWER_BI))
    assert list(parsers.parse_csv(out.getvalue().encode())) == expected
    table = {"columns": [{"label": k, "type": "x"} for k in items[0]],
             "rows": [{"values": [i[k] for k in items[0]]} for i in items]}
    assert list(parsers.parse_default(json.dumps(table))) == expected
    assert list(parsers.parse_default(json.dumps({"data": items}))) == expected
    assert list(parsers.parse_default(DOC_POWER_BI)) == expected
    rows_as_lists = {"columns": list(items[0]), "rows": [[i[k] for k in items[0]] for i in items]}
    assert list(parsers.parse_default(json.dumps(rows_as_lists))) == expected


def test_doc_single_measurement_sample() -> None:
    records = list(parsers.flatten_v1(DOC_SINGLE))
    assert records == [
        {"artist": "3 Doors Down", "measure_value": 31456},
        {"artist": "Justin Bieber", "measure_value": 31336},
        {"artist": "OneRepublic", "measure_value": 31772},
        {"artist": "Taylor Swift", "measure_value": 30136},
        {"artist": "The White Stripes", "measure_value": 27036},
    ]


def test_doc_time_series_sample() -> None:
    records = list(parsers.flatten_v1(DOC_SERIES.encode()))
    props = {"window": 43200000, "resolution": 21600000, "rate": "minute"}
    assert records == [
        {"result": "All", **props, "timestamp": rfc3339(1461913200000),
         "value": 8414.333333333332, "event_count": 25243, "object_count": 25243},
        {"result": "All", **props, "timestamp": rfc3339(1461934800000),
         "value": 6992.333333333333, "event_count": 20977, "object_count": 20977},
        {"result": "All", **props, "timestamp": rfc3339(1461956400000),
         "value": 9193.666666666666, "event_count": 27581, "object_count": 27581},
    ]


def test_two_measures_and_two_group_columns() -> None:
    answer = {
        "columns": [{"type": "array", "label": ["artist", "Country Code"]},
                    {"type": "number", "label": "measure_value"},
                    {"type": "number", "label": "measure_value"}],
        "rows": [{"values": [["Gorillaz", "DE"], 3, 4.5]}],
    }
    assert list(parsers.flatten_v1(json.dumps(answer))) == [
        {"artist": "Gorillaz", "country_code": "DE", "measure_value": 3, "measure_value_2": 4.5}
    ]


@pytest.mark.parametrize("body, message", [
    ("", "empty answer"),
    ("{\"rows\": []}", "'columns' and 'rows'"),
    ("{\"columns\": [{\"type\": \"pie\"}], \"rows\": []}", "unknown type"),
    ("{\"columns\": [{\"type\": \"number\", \"label\": \"m\"}], \"rows\": [{\"values\": []}]}",
     "0 values for 1 columns"),
    ("[1, 2]", "'columns' and 'rows'"),
])
def test_v1_bad_answers(body: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        list(parsers.flatten_v1(body))


@pytest.mark.parametrize("body, message", [
    ('{"chart": {"x": 1}}', "unknown DEFAULT answer shape"),
    ('"text"', "unknown DEFAULT answer shape"),
    ("[1, 2]", "not an object"),
    ('{"columns": ["a"], "rows": [[1, 2]]}', "2 values for 1 columns"),
])
def test_default_unknown_shapes(body: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        list(parsers.parse_default(body))


def test_csv_changed_width_and_types() -> None:
    good = "artist,measure 1,start_time_0,flag\r\nA,3,1000,x\r\nB,,2000,0.5\r\n"
    assert list(parsers.parse_csv(good)) == [
        {"artist": "A", "measure_1": 3, "start_time_0": rfc3339(1000), "flag": "x"},
        {"artist": "B", "measure_1": None, "start_time_0": rfc3339(2000), "flag": 0.5},
    ]
    with pytest.raises(ParseError, match="line 4 has 2 fields, the header has 4"):
        list(parsers.parse_csv(good + "C,1\r\n"))
    assert list(parsers.parse_csv(b"")) == []


def test_post_dispatch_rejects_unknown_format() -> None:
    with pytest.raises(ParseError, match="unknown result_format"):
        parsers.parse_post("[]", "XML")


# -- properties ----------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9]{0,6}( [a-z0-9]{1,4})?", fullmatch=True).filter(
    lambda n: not parsers.is_time_column(n.replace(" ", "_")))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.dictionaries(names, scalars, min_size=1, max_size=5), max_size=6))
def test_power_bi_keeps_every_value(items: list[dict[str, t.Any]]) -> None:
    records = list(parsers.parse_power_bi(json.dumps(items)))
    assert len(records) == len(items)
    for item, record in zip(items, records):
        assert len(record) == len(item)
        assert sorted(map(repr, record.values())) == sorted(map(repr, item.values()))
        for key, value in item.items():
            normalised = key.replace(" ", "_")
            if normalised in record:
                assert record[normalised] == value or value != value


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z][A-Za-z ,\"']{0,10}", fullmatch=True),
                          st.integers(-10**9, 10**9),
                          st.integers(0, 4102444800000)), max_size=8))
def test_csv_round_trip(rows: list[tuple[str, int, int]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Artist Name", "measure 1", "start_time_0"])
    writer.writerows(rows)
    records = list(parsers.parse_csv(out.getvalue()))
    assert records == [
        {"artist_name": a, "measure_1": m, "start_time_0": rfc3339(s)} for a, m, s in rows
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=6),
    st.lists(st.lists(st.integers(0, 10**6), min_size=0, max_size=4), min_size=1, max_size=1),
)
def test_time_series_one_record_per_group_and_point(
    groups: list[tuple[str, str]], counts: list[list[int]],
) -> None:
    points = [{"timestamp": 1_700_000_000_000 + i * 3_600_000, "value": c,
               "properties": {"event_count": c, "object_count": c // 2}}
              for i, c in enumerate(counts[0])]
    answer = {
        "columns": [{"type": "array", "label": ["a", "b"]},
                    {"type": "time_series", "label": "measure_value"}],
        "rows": [{"values": [list(g), points], "properties": {"rate": "hour"}} for g in groups],
    }
    records = list(parsers.flatten_v1(json.dumps(answer)))
    assert len(records) == len(groups) * len(points)
    for n, record in enumerate(records):
        group, point = groups[n // len(points)], points[n % len(points)]
        assert (record["a"], record["b"]) == group
        assert record["timestamp"] == rfc3339(point["timestamp"])
        assert record["value"] == point["value"]
        assert record["object_count"] == point["properties"]["object_count"]
        assert record["rate"] == "hour"


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)),
       st.sampled_from(["JSON_POWER_BI", "CSV", "DEFAULT", "v1"]))
def test_any_input_gives_records_or_a_parse_error(data: bytes | str, kind: str) -> None:
    parse = parsers.flatten_v1 if kind == "v1" else (lambda d: parsers.parse_post(d, kind))
    try:
        records = list(parse(data))
    except ParseError:
        return
    assert all(isinstance(r, dict) for r in records)


@settings(max_examples=60, deadline=None)
@given(st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                  st.dictionaries(st.text(max_size=5), c,
                                                                  max_size=3)),
                    max_leaves=12),
       st.sampled_from(["JSON_POWER_BI", "DEFAULT", "v1"]))
def test_any_json_gives_records_or_a_parse_error(payload: t.Any, kind: str) -> None:
    text = json.dumps(payload)
    parse = parsers.flatten_v1 if kind == "v1" else (lambda d: parsers.parse_post(d, kind))
    try:
        records = list(parse(text))
    except ParseError:
        return
    assert all(isinstance(r, dict) for r in records)


@pytest.mark.parametrize("kind", ["JSON_POWER_BI", "DEFAULT", "v1"])
def test_json_nested_past_the_recursion_limit_is_a_parse_error(kind: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    parse = parsers.flatten_v1 if kind == "v1" else (lambda d: parsers.parse_post(d, kind))
    with pytest.raises(ParseError, match="nested too deeply"):
        list(parse(deep))
