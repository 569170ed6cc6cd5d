"""Section 1: 100,000 Alation execution events, extracted three ways (interleaved runs).

(a) the tap (`tap-analytics`, subprocess, stdout drained through a pipe)
(b) a plain extractor (requests + json.loads + orjson lines), same paging
(c) a stock singer-sdk RESTStream of the same endpoint (no fast path)
plus (d) the per-record path alone, in-process: the SDK's vs the tap's, on the same records.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
import typing as t
from pathlib import Path

from benchmarks.common import PYTHON, TAP, Run, catalog_selecting, median, run_child
from benchmarks.fastserver import EVENTS_PATH, TOKEN, PageServer, make_events

STREAM = "alation_execution_events"
PAGE_SIZE = 500


def _tap_files(tmp: Path, url: str) -> tuple[Path, Path]:
    config = {
        "start_date": "2024-01-01T00:00:00Z",
        "end_date": "2024-01-08T00:00:00Z",
        "alation": {"base_url": url, "api_token": TOKEN, "page_size": PAGE_SIZE},
    }
    config_path = tmp / "tap-config.json"
    config_path.write_text(json.dumps(config))
    catalog = catalog_selecting(config, STREAM)
    catalog_path = tmp / "catalog.json"
    catalog_path.write_text(json.dumps(catalog))
    return config_path, catalog_path


def _stock_config(tmp: Path, url: str) -> Path:
    path = tmp / "stock-config.json"
    path.write_text(json.dumps({"base_url": url, "api_token": TOKEN, "page_size": PAGE_SIZE,
                                "start_date": "2024-01-01T00:00:00Z"}))
    return path


def per_record_path(records: list[dict], repeat: int = 3) -> dict[str, float]:
    """(d) µs per record of the per-record path alone: SDK (pop + conform + simplejson
    + flush per message) vs the tap's (compiled conform + msgspec into the buffer), and
    the tap's page path (`RecordFastPath.write_many`, pages of PAGE_SIZE records)."""
    import contextlib

    from singer_sdk import Stream, Tap
    from singer_sdk import typing as th
    from singer_sdk.io_base import SingerWriter

    from tap_analytics.alation.schemas import EXECUTION_EVENTS
    from tap_analytics.common.fastpath import (
        FastRecordsMixin,
        FastSingerWriter,
        fast_path_for,
    )

    class Events(Stream):
        name = STREAM
        primary_keys = ("id",)
        schema = EXECUTION_EVENTS

        def get_records(self, context: t.Any) -> t.Iterable[dict]:
            return iter(())

    class FastEvents(FastRecordsMixin, Events):
        records_are_json = True  # as the Alation streams: JSON-born records

    def make(stream_cls: type, writer: type) -> Stream:
        class _Tap(Tap):
            name = "bench"
            config_jsonschema = th.PropertiesList().to_dict()
            message_writer_class = writer

            def discover_streams(self) -> list[Stream]:
                return [stream_cls(self)]

        return _Tap(config={}, parse_env_config=False).streams[STREAM]

    results: dict[str, list[float]] = {"sdk": [], "tap": [], "tap_page": []}
    for _ in range(repeat):
        for label, stream_cls, writer in (("sdk", Events, SingerWriter),
                                          ("tap", FastEvents, FastSingerWriter),
                                          ("tap_page", FastEvents, FastSingerWriter)):
            stream = make(stream_cls, writer)
            batch = copy.deepcopy(records)
            writer = stream._tap.message_writer
            # a real byte sink that discards (like /dev/null), so flush costs are real
            with open("/dev/null", "w", encoding="utf-8") as devnull, \
                    contextlib.redirect_stdout(devnull):
                start = time.process_time()
                if label == "tap_page":  # what sync_pages does with a page of records
                    fast = fast_path_for(stream)
                    for at in range(0, len(batch), PAGE_SIZE):
                        fast.write_many(batch[at:at + PAGE_SIZE],
                                        stream._write_conformed_record)
                else:
                    for record in batch:
                        stream._write_record_message(record)
                if hasattr(writer, "flush"):
                    writer.flush()
                elapsed = time.process_time() - start
            results[label].append(elapsed / len(batch) * 1e6)
    return {k: median(v) for k, v in results.items()}


def run(n: int = 100_000, repeats: int = 3, log: t.Callable[[str], None] = print) -> dict:
    log(f"[1] generating {n:,} execution events (the sandbox's generator) ...")
    events = make_events(n)
    server = PageServer(events).start()
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            config_path, catalog_path = _tap_files(tmp, server.url)
            stock_config = _stock_config(tmp, server.url)
            commands = {
                "tap": [TAP, "--config", str(config_path), "--catalog", str(catalog_path)],
                "plain": [PYTHON, "-m", "benchmarks.plain_extractor",
                          server.url + EVENTS_PATH, TOKEN, str(PAGE_SIZE), STREAM],
                "stock_sdk": [PYTHON, "-m", "benchmarks.stock_tap", "--config",
                              str(stock_config)],
            }
            for i in range(repeats):
                for label, cmd in commands.items():
                    result = run_child(label, cmd, timeout=300)
                    runs.append(result)
                    log(f"    run {i + 1}/{repeats} {label:9s} {result.records:7,d} records "
                        f"in {result.wall:6.2f} s wall, {result.cpu:6.2f} s CPU "
                        f"(exit {result.returncode})")
                    if result.returncode != 0 or result.records != n:
                        log("      !! " + result.stderr_tail[-600:].replace("\n", "\n      "))
        log("[1d] per-record path alone (in-process, CPU µs/record) ...")
        per_record = per_record_path(events[:20_000])
    finally:
        server.stop()

    summary: dict[str, t.Any] = {"n": n, "repeats": repeats, "page_size": PAGE_SIZE,
                                 "runs": [r.__dict__ for r in runs], "variants": {}}
    for label in ("tap", "plain", "stock_sdk"):
        mine = [r for r in runs if r.label == label]
        ok = all(r.returncode == 0 and r.records == n for r in mine)
        wall = median(r.wall for r in mine)
        cpu = median(r.cpu for r in mine)
        summary["variants"][label] = {
            "ok": ok, "wall_median_s": wall, "cpu_median_s": cpu,
            "records_per_s_wall": n / wall, "records_per_s_cpu": n / cpu,
            "walls": [r.wall for r in mine],
        }
    v = summary["variants"]
    summary["ratio_tap_vs_plain"] = (
        v["tap"]["records_per_s_wall"] / v["plain"]["records_per_s_wall"])
    summary["ratio_tap_vs_stock"] = (
        v["tap"]["records_per_s_wall"] / v["stock_sdk"]["records_per_s_wall"])
    summary["ratio_tap_vs_plain_cpu"] = (
        v["tap"]["records_per_s_cpu"] / v["plain"]["records_per_s_cpu"])
    summary["ratio_tap_vs_stock_cpu"] = (
        v["tap"]["records_per_s_cpu"] / v["stock_sdk"]["records_per_s_cpu"])
    summary["per_record_us"] = per_record
    return summary
