"""`python -m tap_analytics.scuba schema --config CONFIG --name NAME`: spend ONE query on
purpose and print a schema to pin in the entry's `schema` (or in catalog.json).

Discovery never sends a query (it runs on every invocation and the token allows 1,000 a
day), so a `query_response_id` / `bql` entry without a declared schema has only its known
time-bucket fields plus open `additionalProperties`. This command runs the entry once (the
first window for a templated BQL) and prints the fields it saw with their JSON types.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing as t

from tap_analytics.common.errors import TapAnalyticsError, config_secrets, one_line, redact
from tap_analytics.scuba.parsers import is_time_column


def _type_of(value: t.Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def infer_properties(records: t.Iterable[dict[str, t.Any]]) -> dict[str, dict[str, t.Any]]:
    """JSON Schema properties covering every record: types per field, 'null' where a value
    was missing or null, integer widened to number when both occur, time buckets date-time."""
    seen: dict[str, set[str]] = {}
    count = 0
    for count, record in enumerate(records, start=1):
        for name in seen.keys() - record.keys():
            seen[name].add("null")
        for name, value in record.items():
            kinds = seen.setdefault(name, {"null"} if count > 1 else set())
            kinds.add("null" if value is None else _type_of(value))
    properties: dict[str, dict[str, t.Any]] = {}
    for name, kinds in seen.items():
        if {"integer", "number"} <= kinds:
            kinds.discard("integer")
        ordered = sorted(kinds - {"null"}) or ["string"]
        prop: dict[str, t.Any] = {"type": [*ordered, "null"] if "null" in kinds else ordered}
        if is_time_column(name) and ordered == ["string"]:
            prop["format"] = "date-time"
        properties[name] = prop
    return properties


def _schema_command(args: argparse.Namespace) -> int:
    from tap_analytics.tap import TapAnalytics

    with open(args.config, encoding="utf-8") as fh:
        config = json.load(fh)
    secrets = config_secrets(config)
    try:
        tap = TapAnalytics(config=config, parse_env_config=False, validate_config=True)
        stream = tap.streams.get(f"scuba_{args.name}")
        if stream is None:
            raise TapAnalyticsError(f"scuba query '{args.name}'", "no such entry in scuba.queries")
        entry = stream.entry  # type: ignore[attr-defined]
        window = None
        if entry.windowed:
            plan = stream.planned_windows()  # type: ignore[attr-defined]
            if not plan:
                raise TapAnalyticsError(stream.name, "no complete window to query yet")
            window = plan[0]
        stream._window = window  # type: ignore[attr-defined]
        rows = [stream._finish(r) for r in stream.request_records(None)]  # type: ignore[attr-defined]
    except Exception as exc:
        text = str(exc) if isinstance(exc, TapAnalyticsError) else f"{type(exc).__name__}: {exc}"
        print(f"tap-analytics: error: {redact(one_line(text, 600), secrets)}",
              file=sys.stderr)
        return 1
    properties = infer_properties(rows)
    for name in ("window_start", "window_end"):
        properties.pop(name, None)
    print(json.dumps({"schema": properties}, indent=2))
    print(f"scuba: 1 query sent, {len(rows)} record(s) seen; paste `schema` into the "
          f"entry '{args.name}' of scuba.queries (or the stream's schema in catalog.json)",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tap_analytics.scuba", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    schema = sub.add_parser("schema", help="run ONE query of an entry and print its schema")
    schema.add_argument("--config", required=True, help="the tap's config.json")
    schema.add_argument("--name", required=True, help="the entry's name (stream scuba_<name>)")
    args = parser.parse_args(argv)
    return _schema_command(args)


if __name__ == "__main__":
    sys.exit(main())
