"""Section 4: an Insights report through the BATCH path vs a plain extractor.

One report of N rows (8 fields, `FILES` csv.gz files, one window, one query) from the
sandbox (HTTP + SFTP on loopback). Variants, each a child process, rows/s = N / wall:

- `plain`: requests + paramiko + gzip + csv + orjson, RECORD-shaped lines to stdout
  (what a hand-written extractor does; `python -m benchmarks.insights_bulk plain CONFIG`);
- `tap_rows`: the tap in RECORD mode (the row path);
- `bulk_jsonl` / `bulk_parquet`: the tap with `batch_config` (this repo's get_batches);
- `sdk_batches`: the tap with `batch_config` but singer-sdk's default `get_batches`
  (record by record), through a launcher that puts the SDK method back.

The sandbox writes a query's files when they are first downloaded; here every query of
the same shape reuses the first one's files, so no variant pays for the server's gzip.
Peak RSS is the child's VmHWM (benchmarks.common.run_child). Rows in batch files are
counted after each run, outside the timing.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import tempfile
import typing as t
from pathlib import Path

from benchmarks.common import PYTHON, TAP, Run, catalog_selecting, median, run_child

FILES = 4
SDK_LAUNCHER = (
    "import sys; from singer_sdk import Stream; "
    "from tap_analytics.insights.streams import InsightsReportStream as S; "
    "S.get_batches = Stream.get_batches; "
    "from tap_analytics.tap import main; sys.argv[0] = 'tap-analytics'; main()"
)


# -- the plain extractor ----------------------------------------------------------------


def plain_main(config_path: str) -> None:
    """Submit, poll, locate, then SFTP + gzip + csv + orjson: a RECORD line per row."""
    import csv
    import io
    import time

    import orjson
    import paramiko
    import requests

    config = json.loads(Path(config_path).read_text())
    block = config["insights"]
    report = block["reports"][0]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {block['api_token']}"
    base = block["base_url"].rstrip("/")
    fields = ["TimeStamp", *[f for spec in report["data"].values() for f in spec["fields"]
                             if f != "TimeStamp"]]
    body = {"timestamp": {"$gte": config["start_date"], "$lt": config["end_date"]},
            "data": {e: {"fields": fields} for e in report["data"]}}
    guid = session.post(f"{base}/dwh/Q", json=body, timeout=60).json()["id"]
    for _ in range(10_000):
        if session.get(f"{base}/dwh/Q/{guid}/status", timeout=60).json()["status"] in (
                "Completed", "Failed"):
            break
        time.sleep(0.05)
    text = session.get(f"{base}/dwh/Q/{guid}", timeout=60).json()["status"]
    import ast

    paths = ast.literal_eval(text.split("Download:", 1)[1].strip())
    ready = time.monotonic()  # the report is ready: from here on, what the tap logs too
    sftp_cfg = block["sftp"]
    transport = paramiko.Transport((sftp_cfg["host"], int(sftp_cfg["port"])))
    transport.connect(username=sftp_cfg["username"], password=sftp_cfg["password"])
    sftp = paramiko.SFTPClient.from_transport(transport)
    out = sys.stdout.buffer
    prefix = b'{"type":"RECORD","stream":"plain","record":'
    rows_out = 0
    for path in paths:
        with sftp.open(path, "rb") as remote:
            remote.prefetch()
            rows = csv.reader(io.TextIOWrapper(gzip.GzipFile(fileobj=remote),
                                               encoding="utf-8", newline=""))
            header = next(rows)
            for row in rows:
                out.write(prefix + orjson.dumps(dict(zip(header, row))) + b"}\n")
                rows_out += 1
    out.flush()
    transport.close()
    took = time.monotonic() - ready
    print(f"plain: window done: {rows_out} rows in {took:.3f} s after the report was ready",
          file=sys.stderr)


# -- the benchmark ----------------------------------------------------------------------


def _reuse_files(service: t.Any) -> None:
    """Queries of one shape share the files of the first (the sandbox writes each once)."""
    original = service._materialize
    made: dict[tuple, list[str]] = {}

    def materialize(query: t.Any, path: str) -> str:
        key = (tuple(query.fields), query.start, query.end, tuple(query.rows))
        if key in made and not query.local:
            query.local.update(dict(zip(query.files, made[key])))
        local = original(query, path)
        made.setdefault(key, [query.local[name] for name in query.files])
        return local

    service._materialize = materialize


_READY_RE = re.compile(r"done: (\d+) rows in (?:\d+ batch file\(s\) in )?([\d.]+) s")


def _after_ready(stderr: str) -> float | None:
    """Seconds from 'report ready' to the window's last row (the tap's/plain's log)."""
    found = _READY_RE.findall(stderr)
    return float(found[-1][1]) if found else None


def _csv_bytes(service: t.Any) -> int:
    """Decompressed bytes of the report files the sandbox wrote (the report's CSV)."""
    total = 0
    for path in Path(service._dir).glob("*.csv.gz"):
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
    return total


def _batch_rows(root: Path) -> int:
    import pyarrow.parquet as pq

    rows = 0
    for path in root.iterdir():
        if path.name.endswith(".parquet"):
            rows += pq.ParquetFile(path).metadata.num_rows
        elif path.name.endswith((".jsonl.gz", ".json.gz")):  # ours, the SDK's
            with gzip.open(path, "rb") as fh:
                rows += sum(1 for _ in fh)
        path.unlink()
    return rows


def run(n: int = 1_000_000, repeats: int = 3, log: t.Callable[[str], None] = print) -> dict:
    from tap_analytics.sandbox import Sandbox

    results: dict[str, t.Any] = {"rows": n, "files": FILES, "variants": {}}
    with Sandbox(seed=7, services=["insights"]) as sb, \
            tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        service = sb.insights
        service.query_seconds = 0.05
        _reuse_files(service)
        config = sb.config()
        block = config["insights"]
        report = dict(block["reports"][0])  # application_exits: 8 fields, no filters
        report.pop("filters", None)
        block["reports"] = [report]
        block["window_hours"] = 24 * 7
        block["poll_interval_seconds"] = 0.05
        config["start_date"], config["end_date"] = "2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z"
        stream = f"insights_{report['name']}"
        batches = tmp / "batches"
        catalog = tmp / "catalog.json"  # the report stream only
        catalog.write_text(json.dumps(catalog_selecting(config, stream)))
        variants: dict[str, tuple[list[str], dict | None]] = {
            "plain": ([PYTHON, "-m", "benchmarks.insights_bulk", "plain"], None),
            "bulk_jsonl": ([TAP], {"format": "jsonl", "compression": "gzip"}),
            "bulk_parquet": ([TAP], {"format": "parquet", "compression": "none"}),
            "tap_rows": ([TAP], None),
            "sdk_batches": ([PYTHON, "-c", SDK_LAUNCHER], {"format": "jsonl",
                                                             "compression": "gzip"}),
        }
        once = {"tap_rows", "sdk_batches"}  # the slow references: one run each

        def measure(label: str, rows: int, times: int) -> list[Run]:
            cmd, encoding = variants[label]
            cfg = json.loads(json.dumps(config))
            if encoding:
                cfg["batch_config"] = {"encoding": encoding,
                                       "storage": {"root": f"file://{batches}"}}
            path = tmp / f"{label}.json"
            path.write_text(json.dumps(cfg))
            args = [path.as_posix()] if label == "plain" else [
                "--config", path.as_posix(), "--catalog", catalog.as_posix()]
            service.rows_override = rows
            service.rows_per_file = -(-rows // FILES)
            runs = []
            for _ in range(times):
                batches.mkdir(exist_ok=True)
                result = run_child(label, [*cmd, *args], timeout=900)
                got = _batch_rows(batches) if encoding else result.records
                result.extra["rows"] = got
                result.extra["after_ready_s"] = _after_ready(result.stderr_tail)
                runs.append(result)
                ready = result.extra["after_ready_s"]
                log(f"    {label:13s} {rows:>9,d} rows: {got:,d} rows in "
                    f"{result.wall:6.2f} s ({rows / result.wall:9,.0f} rows/s; after the "
                    f"report was ready {ready if ready is not None else float('nan'):.1f} s), "
                    f"peak RSS {result.maxrss_kb / 1024:6.1f} MB (exit {result.returncode})")
                if result.returncode != 0 or got != rows:
                    log("      !! " + result.stderr_tail[-600:].replace("\n", "\n      "))
            return runs

        measure("plain", n, 1)  # warm-up: the sandbox writes the report files once
        results["csv_bytes_per_row"] = _csv_bytes(service) / n
        # the repeated variants alternate, round by round (a shared machine's speed drifts
        # over minutes: blocks of one variant would carry that drift into the ratios)
        done: dict[str, list[Run]] = {label: [] for label in variants}
        for _ in range(repeats):
            for label in variants:
                if label not in once:
                    done[label] += measure(label, n, 1)
        for label in once:
            done[label] = measure(label, n, 1)
        for label in variants:
            runs = done[label]
            wall = median(r.wall for r in runs)
            ready = [r.extra["after_ready_s"] for r in runs if r.extra["after_ready_s"]]
            results["variants"][label] = {
                "after_ready_median_s": median(ready) if ready else None,
                "after_ready_best_s": min(ready) if ready else None,
                "rows_per_s_after_ready": n / median(ready) if ready else None,
                "ok": all(r.returncode == 0 and r.extra["rows"] == n for r in runs),
                "wall_median_s": wall, "rows_per_s": n / wall,
                "cpu_median_s": median(r.cpu for r in runs),
                "peak_rss_mb": max(r.maxrss_kb for r in runs) / 1024,
            }
        # a tenth of the rows: peak RSS 1x/10x, and the CPU of the rows alone (the
        # difference of the two runs' CPU: start-up is not paid per row)
        results["small"] = {}
        for label in ("plain", "bulk_jsonl", "bulk_parquet"):
            small = measure(label, n // 10, 1)[0]
            results["small"][label] = {"rows": n // 10, "peak_rss_mb": small.maxrss_kb / 1024,
                                       "cpu_s": small.cpu, "ok": small.returncode == 0
                                       and small.extra["rows"] == n // 10}
    v = results["variants"]
    results["ratio_bulk_jsonl_vs_plain"] = v["bulk_jsonl"]["rows_per_s"] / v["plain"]["rows_per_s"]
    results["ratio_bulk_parquet_vs_plain"] = (v["bulk_parquet"]["rows_per_s"]
                                              / v["plain"]["rows_per_s"])
    for label in ("bulk_jsonl", "bulk_parquet", "tap_rows"):
        mine, plain = v[label]["rows_per_s_after_ready"], v["plain"]["rows_per_s_after_ready"]
        results[f"ratio_{label}_vs_plain_after_ready"] = mine / plain if mine and plain else None
        # against the plain extractor's fastest run: its runs spread most (paramiko's
        # prefetch stalls now and then, see sftp.py), the median could flatter the tap
        best, mine_s = v["plain"]["after_ready_best_s"], v[label]["after_ready_median_s"]
        results[f"ratio_{label}_vs_plain_best_after_ready"] = (
            best / mine_s if best and mine_s else None)
    results["ratio_bulk_jsonl_vs_sdk"] = (v["bulk_jsonl"]["rows_per_s"]
                                          / v["sdk_batches"]["rows_per_s"])
    results["rss_ratio_10x"] = {label: v[label]["peak_rss_mb"] / small["peak_rss_mb"]
                                for label, small in results["small"].items()
                                if label != "plain"}
    results["stream"] = stream
    # 1 TB of report CSV at the rates after the report was ready, on this machine's cores
    # (the bulk path uses them all; the plain extractor one)
    results["hours_per_tb"] = {
        label: 1e12 / (v[label]["rows_per_s_after_ready"] * results["csv_bytes_per_row"]) / 3600
        for label in ("plain", "bulk_jsonl", "bulk_parquet")
        if v[label]["rows_per_s_after_ready"]}
    # CPU-bound: the CPU seconds per row (the n-row run's CPU less the n/10-row run's, over
    # the rows between: start-up is paid once per run, not per row) is what a core spends;
    # 8 cores take a TB in an eighth of that (a tap uses up to 4 encoder threads: several
    # taps on disjoint date ranges, or several reports, fill them)
    rows_per_tb = 1e12 / results["csv_bytes_per_row"]
    results["cpu_us_per_row"] = {
        label: (v[label]["cpu_median_s"] - small["cpu_s"]) / (n - small["rows"]) * 1e6
        for label, small in results["small"].items()}
    results["core_hours_per_tb"] = {label: rows_per_tb * us / 1e6 / 3600
                                    for label, us in results["cpu_us_per_row"].items()}
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "plain":
        plain_main(sys.argv[2])
    else:
        out = run(n=int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000, repeats=1)
        print(json.dumps(out, indent=2, default=str))
