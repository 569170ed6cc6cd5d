"""Insights parsers: the doc's own bodies, then hypothesis properties."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_analytics.insights.parsers import (
    ParseError,
    error_detail,
    iter_csv_gz,
    parse_download_paths,
    parse_status,
)

# -- the doc's samples ------------------------------------------------------------------


def test_download_path_doc_sample() -> None:
    body = {
        "status": "Process finished. Download: [u'reports/guid1/guid2_QueryExport_"
        "1579194142011__000000000000.csv.gz']",
        "guid": "6ae69605c6e5ca352e664b0f96c8f84e",
    }
    assert parse_download_paths(body) == [
        "reports/guid1/guid2_QueryExport_1579194142011__000000000000.csv.gz"
    ]


def test_download_path_not_finished_doc_sample() -> None:
    body = {"status": "Process has not finish yet, please verify the status of your request",
            "guid": "6ae69605c6e5ca352e664b0f96c8f84e"}
    assert parse_download_paths(body) is None


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        ("[u'a.csv.gz', u'b.csv.gz']", ["a.csv.gz", "b.csv.gz"]),
        ('["a.csv.gz", "b.csv.gz"]', ["a.csv.gz", "b.csv.gz"]),
        ("['reports/x y.csv.gz']", ["reports/x y.csv.gz"]),
        ("[]", []),
    ],
)
def test_download_path_quoting_and_several_files(listing: str, expected: list[str]) -> None:
    assert parse_download_paths({"status": f"Process finished. Download: {listing}"}) == expected


@pytest.mark.parametrize(
    "status",
    ["Process finished. Download: [os.system('x')]",
     "Process finished. Download: [u'a.csv.gz'",
     "Something else entirely",
     ],
)
def test_download_path_rejects_what_is_not_a_list_of_names(status: str) -> None:
    with pytest.raises(ParseError):
        parse_download_paths({"status": status})


def test_status_doc_samples() -> None:
    done = parse_status({"status": "Completed", "guid": "a3a77e4c44818481c54bdfcf4d0f03bf"})
    assert (done.status, done.guid, done.terminal) == (
        "Completed", "a3a77e4c44818481c54bdfcf4d0f03bf", True)
    failed = parse_status(json.dumps({
        "status": "Failed", "guid": "cb141a8039e146ad954ca70e5c0d08d6",
        "messages": ["Query range to wide",
                     "All data fields have empty values, advise adding core fields"]}))
    assert failed.status == "Failed"
    assert failed.messages[1].startswith("All data fields")
    assert not parse_status({"status": "Pending"}).terminal
    assert parse_status({"status": "cancelled"}).status == "Canceled"


def test_status_without_status_is_an_error() -> None:
    with pytest.raises(ParseError):
        parse_status({"guid": "x"})
    with pytest.raises(ParseError):
        parse_status("<html>bad gateway</html>")


def test_error_detail_doc_bodies() -> None:
    date_body = json.dumps({"code": 400, "message": {"Date_Filters": {
        "message": "Invalid date filters [2019-10-19 01:45:36.123Z]. They must be in ISO8601 "
                   "format. Example: 'YYYY-MM-DDTHH:MM:SSZ'", "code": "422-6"}}})
    line = error_detail(date_body)
    assert line.startswith("Date_Filters: Invalid date filters [2019-10-19 01:45:36.123Z]")
    assert line.endswith("(422-6)")
    ops = json.dumps({"code": 400, "message": {"Operators": "Invalid operators [gte, lte], "
                      "try to use any of these ($gte, $lte, $gt, $lt, $ne, $eq)."}})
    assert error_detail(ops).startswith("Operators: Invalid operators [gte, lte]")
    assert error_detail(json.dumps({"code": 400, "message": "Flow Id is not a valid field."})
                        ) == "Flow Id is not a valid field."
    not_found = json.dumps([{"message": "could not get QueryRequest object: QueryRequest "
                             "matching query does not exist.", "code": 500}])
    assert "does not exist" in error_detail(not_found)
    assert "\n" not in error_detail("<html>\n<b>oops</b>\n</html>")


def _gz(rows: list[list[str]]) -> bytes:
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    return gzip.compress(text.getvalue().encode())


def test_csv_gz_rows_and_quoting() -> None:
    rows = [["TimeStamp", "ExitReason"], ["2024-01-01T00:00:00Z", 'said "bye", then\nleft'],
            ["2024-01-01T00:10:00Z", ""]]
    assert list(iter_csv_gz(io.BytesIO(_gz(rows)))) == rows
    bom = gzip.compress("\ufeffA,B\r\n1,2\r\n".encode())
    assert list(iter_csv_gz(io.BytesIO(bom))) == [["A", "B"], ["1", "2"]]


def test_csv_gz_truncated_raises() -> None:
    data = _gz([["a"], *[[str(i) * 20] for i in range(2000)]])
    with pytest.raises(EOFError):
        list(iter_csv_gz(io.BytesIO(data[: len(data) // 2])))
    with pytest.raises((OSError, EOFError)):
        list(iter_csv_gz(io.BytesIO(b"not gzip at all")))


# -- properties -------------------------------------------------------------------------

_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                 min_size=1, max_size=30).filter(lambda s: s.strip() == s and s)


@given(st.lists(_names, max_size=5), st.sampled_from(["u'{}'", "'{}'", '"{}"']))
@settings(max_examples=150, deadline=None)
def test_download_paths_roundtrip(names: list[str], quoting: str) -> None:
    listing = "[" + ", ".join(
        repr(n) if quoting != '"{}"' else json.dumps(n, ensure_ascii=False) for n in names) + "]"
    if quoting == "u'{}'":
        listing = "[" + ", ".join("u" + repr(n) for n in names) + "]"
    assert parse_download_paths({"status": f"Process finished. Download: {listing}"}) == names


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_download_paths_never_crash(text: str) -> None:
    try:
        result = parse_download_paths({"status": text})
    except ParseError:
        return
    assert result is None or all(isinstance(p, str) for p in result)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=12))
@settings(max_examples=200, deadline=None)
def test_error_detail_is_one_short_line(body: object) -> None:
    line = error_detail(json.dumps(body))
    assert "\n" not in line
    assert len(line) <= 400


_cell = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
                max_size=15)


@given(st.lists(st.lists(_cell, min_size=3, max_size=3), min_size=1, max_size=30))
@settings(max_examples=100, deadline=None)
def test_csv_gz_roundtrip(rows: list[list[str]]) -> None:
    header = ["A", "B", "C"]
    data = _gz([header, *rows])
    parsed = list(iter_csv_gz(io.BytesIO(data)))
    assert parsed[0] == header
    # csv writes an all-empty single-cell row as "" (kept), and never drops a row
    assert parsed[1:] == rows


def _reference_csv_gz(data: bytes) -> list[list[str]]:
    """What a TextIOWrapper over the GzipFile gives (the straightforward reading)."""
    text = io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(data)), encoding="utf-8-sig",
                            errors="replace", newline="")
    return list(csv.reader(text))


_any_cell = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(st.lists(st.lists(_any_cell, min_size=2, max_size=2), min_size=1, max_size=12),
       st.sampled_from(["\r\n", "\n", "\r"]), st.integers(min_value=1, max_value=9),
       st.booleans())
@settings(max_examples=150, deadline=None)
def test_csv_gz_blocks_split_lines_as_a_text_wrapper_does(
        rows: list[list[str]], terminator: str, block: int, bom: bool) -> None:
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator=terminator).writerows([["A", "B"], *rows])
    raw = ("\ufeff" if bom else "") + text.getvalue()
    # a broken UTF-8 sequence too: replaced, as the wrapper does
    data = gzip.compress(raw.encode() + b"\xe2\x80")
    assert list(iter_csv_gz(io.BytesIO(data), block=block)) == _reference_csv_gz(data)


@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)),
       st.sampled_from(["%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S+00:00",
                        "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S+02:00"]),
       st.integers(0, 6))
@settings(max_examples=300, deadline=None)
def test_report_time_values_match_normalize(moment: dt.datetime, fmt: str, digits: int) -> None:
    from tap_analytics.common.timeutil import normalize
    from tap_analytics.insights.download import to_datetime

    text = moment.strftime(fmt)
    if ".%f" in fmt:  # vary the number of fraction digits (0..6)
        head, _, tail = text.partition(".")
        frac = tail[:6][:digits]
        text = head + ("." + frac if frac else "") + tail[6:]
    assert to_datetime(text) == normalize(text)
