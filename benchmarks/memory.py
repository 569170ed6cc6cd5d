"""Section 2: an Insights report of 100k and of 1M rows through the tap: rows/s, peak RSS.

The sandbox's Insights service (HTTP + SFTP on loopback) serves one report of exactly N
rows (`rows_override`, one window for the whole range, 100k rows per csv.gz file). The
tap runs as a subprocess, its stdout drained through a pipe; peak RSS is the child's own
ru_maxrss from wait4() (VmHWM of the tap process, not of the benchmark).
"""

from __future__ import annotations

import json
import tempfile
import typing as t
from pathlib import Path

from benchmarks.common import TAP, Run, catalog_selecting, median, run_child

ROWS_PER_FILE = 100_000


def _config(sb: t.Any) -> dict:
    config = sb.config()
    block = config["insights"]
    report = dict(block["reports"][0])  # application_exits: 8 fields, no filters
    report.pop("filters", None)
    block["reports"] = [report]
    block["window_hours"] = 24 * 7  # the sandbox range in one window: one query
    return config


def run(sizes: t.Sequence[tuple[int, int]] = ((100_000, 3), (1_000_000, 1)),
        log: t.Callable[[str], None] = print) -> dict:
    from tap_analytics.sandbox import Sandbox

    results: dict[str, t.Any] = {"sizes": {}}
    with Sandbox(seed=7, services=["insights"]) as sb, \
            tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        config = _config(sb)
        stream = "insights_" + config["insights"]["reports"][0]["name"]
        (tmp / "config.json").write_text(json.dumps(config))
        (tmp / "catalog.json").write_text(json.dumps(catalog_selecting(config, stream)))
        cmd = [TAP, "--config", str(tmp / "config.json"), "--catalog", str(tmp / "catalog.json")]
        sb.insights.rows_per_file = ROWS_PER_FILE
        for n, repeats in sizes:
            sb.insights.rows_override = n
            runs: list[Run] = []
            for i in range(repeats):
                result = run_child(f"insights-{n}", cmd, timeout=900)
                runs.append(result)
                log(f"    {n:>9,d} rows, run {i + 1}/{repeats}: {result.records:,d} records in "
                    f"{result.wall:6.1f} s, peak RSS {result.maxrss_kb / 1024:6.1f} MB "
                    f"(exit {result.returncode})")
                if result.returncode != 0 or result.records != n:
                    log("      !! " + result.stderr_tail[-600:].replace("\n", "\n      "))
            wall = median(r.wall for r in runs)
            results["sizes"][str(n)] = {
                "ok": all(r.returncode == 0 and r.records == n for r in runs),
                "records": [r.records for r in runs],
                "wall_median_s": wall,
                "rows_per_s": n / wall,
                "cpu_median_s": median(r.cpu for r in runs),
                "peak_rss_mb": max(r.maxrss_kb for r in runs) / 1024,
                "peak_rss_mb_runs": [r.maxrss_kb / 1024 for r in runs],
            }
    return results
