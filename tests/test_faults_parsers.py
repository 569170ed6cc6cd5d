"""Bad input at the parser level, property-based (hypothesis), filling what the family
parser tests leave open: Insights status bodies, any text as an Alation result CSV, any
bytes as an Insights csv.gz, and JSON nested deeper than Python's recursion limit (every
JSON parser must answer with its own ParseError, which the streams turn into one line
naming the stream; a RecursionError would surface as an 'unexpected error')."""

from __future__ import annotations

import csv
import gzip
import io
import json
import typing as t
import zlib

import pytest
import requests
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tap_analytics.alation.parsers import CSVFormatError, parse_result_csv
from tap_analytics.common.http import body_detail
from tap_analytics.insights import parsers as insights
from tap_analytics.scuba import parsers as scuba

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

STATUSES = {"pending": "Pending", "completed": "Completed", "failed": "Failed",
            "canceled": "Canceled", "cancelled": "Canceled"}


def case_variants(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flags: "".join(c.upper() if f else c for c, f in zip(word, flags)))


@given(
    word=st.sampled_from(sorted(STATUSES)).flatmap(
        lambda w: st.tuples(st.just(w), case_variants(w))),
    pad=st.sampled_from(["", " ", "  \t"]),
    guid=st.none() | st.text(min_size=1, max_size=24),
    messages=st.none() | st.text(max_size=30) | st.lists(json_values, max_size=3),
    as_bytes=st.booleans(),
)
def test_insights_status_bodies(word: tuple[str, str], pad: str, guid: t.Any, messages: t.Any,
                                as_bytes: bool) -> None:
    canonical, written = STATUSES[word[0]], word[1]
    body: dict[str, t.Any] = {"status": pad + written + pad}
    if guid is not None:
        body["guid"] = guid
    if messages is not None:
        body["messages"] = messages
    raw: t.Any = json.dumps(body)
    parsed = insights.parse_status(raw.encode() if as_bytes else raw)
    assert parsed.status == canonical
    assert parsed.guid == guid
    assert all(isinstance(m, str) for m in parsed.messages)
    if isinstance(messages, str) and messages:
        assert parsed.messages == [messages]
    if isinstance(messages, list):
        assert len(parsed.messages) == len(messages)


@given(body=json_values)
@example(body={"status": ""})
@example(body={"status": None})
@example(body=["Completed"])
def test_any_json_status_body_is_a_status_or_a_parse_error(body: t.Any) -> None:
    for raw in (body, json.dumps(body), json.dumps(body).encode()):
        try:
            parsed = insights.parse_status(raw)
        except insights.ParseError:
            continue
        assert isinstance(parsed.status, str) and parsed.status


@given(data=st.binary(max_size=300))
@example(data=b"\xff\xfe{")
def test_any_bytes_status_body_is_a_status_or_a_parse_error(data: bytes) -> None:
    try:
        insights.parse_status(data)
    except insights.ParseError:
        pass


@given(text=st.text(max_size=300))
@example(text='a,b\n"1,2\n')
@example(text="\ufeffa,b\n1,2\n")
@example(text="a,b\n1,2,3\n")
def test_any_text_as_an_alation_result_is_rows_or_a_csv_format_error(text: str) -> None:
    try:
        rows = list(parse_result_csv(text))
    except CSVFormatError:
        return
    header = next(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")), None)
    if header is not None:
        assert all(len(row) == len(header) for row in rows)
        assert all(isinstance(v, str) for row in rows for v in row.values())


GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, csv.Error)


@given(data=st.binary(max_size=300))
@example(data=gzip.compress(b"a,b\n1,2\n")[:-6])  # truncated
@example(data=b"\x1f\x8b\x08\x00" + b"\x00" * 20)
def test_any_bytes_as_a_csv_gz_is_rows_or_a_documented_error(data: bytes) -> None:
    try:
        rows = list(insights.iter_csv_gz(io.BytesIO(data)))
    except GZIP_ERRORS:
        return
    assert all(isinstance(row, list) for row in rows)


@given(data=st.binary(max_size=200))
def test_any_payload_gzipped_reads_or_is_a_csv_error(data: bytes) -> None:
    try:
        rows = list(insights.iter_csv_gz(io.BytesIO(gzip.compress(data))))
    except csv.Error:
        return
    assert all(isinstance(row, list) for row in rows)


@given(body=json_values | st.text(max_size=100))
@settings(max_examples=200)
def test_an_error_body_is_always_a_short_line(body: t.Any) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    response = requests.Response()
    response._content = raw.encode()  # noqa: SLF001 - building a response by hand
    response.status_code = 500
    response.encoding = "utf-8"
    detail = body_detail(response)
    assert isinstance(detail, str)
    assert "\n" not in detail and len(detail) <= 300


# -- JSON deeper than the recursion limit ------------------------------------------------

DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000

JSON_PARSERS: dict[str, tuple[t.Callable[[bytes], t.Any], type[Exception]]] = {
    "scuba JSON_POWER_BI": (lambda d: list(scuba.parse_post(d, "JSON_POWER_BI")),
                            scuba.ParseError),
    "scuba DEFAULT": (lambda d: list(scuba.parse_post(d, "DEFAULT")), scuba.ParseError),
    "scuba v1": (lambda d: list(scuba.flatten_v1(d)), scuba.ParseError),
    "insights status": (insights.parse_status, insights.ParseError),
    "insights download paths": (insights.parse_download_paths, insights.ParseError),
}


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
@pytest.mark.parametrize("name", sorted(JSON_PARSERS))
def test_json_nested_too_deep_is_a_parse_error(name: str, body: bytes) -> None:
    parse, error = JSON_PARSERS[name]
    with pytest.raises(error):
        parse(body)


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
@pytest.mark.parametrize("describe", ["common body_detail", "insights error_detail"])
def test_error_details_of_json_nested_too_deep_are_a_short_line(describe: str,
                                                                 body: bytes) -> None:
    function = _body_detail_of if describe == "common body_detail" else insights.error_detail
    detail = function(body)
    assert isinstance(detail, str) and len(detail) <= 300


def _body_detail_of(body: bytes) -> str:
    response = requests.Response()
    response._content = body  # noqa: SLF001
    response.status_code = 500
    response.encoding = "utf-8"
    return body_detail(response)
