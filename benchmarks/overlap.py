"""Section 4: a whole sandbox sync (Alation, Scuba, Insights) with latency on every
request and Insights queries that take seconds on the server: wall time of the whole
sync with and without the Insights queries submitted at sync start, and of each source
alone, in one run (variants interleaved, medians).

Each run is its own `tap-analytics` process (the same launcher for every variant: only
`TapAnalytics.submit_queries_at_start` differs) against one sandbox per run.
"""

from __future__ import annotations

import json
import tempfile
import typing as t
from pathlib import Path

from benchmarks.common import PYTHON, median, run_child

LATENCY_S = 0.1  # per request, every service (a real server's ~100 ms)
QUERY_S = 2.0  # an Insights query is Pending this long on the server
WINDOW_HOURS = 48  # 4 windows per report over the sandbox's 7 days
SCUBA_QUERIES = 3

_LAUNCH = ("import sys; from tap_analytics.tap import TapAnalytics, main; "
           "TapAnalytics.submit_queries_at_start = {early}; "
           "sys.argv = ['tap-analytics', '--config', {path!r}]; main()")

VARIANTS = {
    # label: (sources in the config, early submit)
    "whole, early submit": (("alation", "scuba", "insights"), True),
    "whole, no early submit": (("alation", "scuba", "insights"), False),
    "alation alone": (("alation",), True),
    "scuba alone": (("scuba",), True),
    "insights alone": (("insights",), True),
}


def _config(sb: t.Any, sources: tuple[str, ...]) -> dict:
    config = sb.config()
    for name in ("alation", "scuba", "insights"):
        if name not in sources:
            config.pop(name, None)
    if "scuba" in config:
        config["scuba"]["queries"] = config["scuba"]["queries"][:SCUBA_QUERIES]
    if "insights" in config:
        config["insights"]["window_hours"] = WINDOW_HOURS
    return config


def _one(label: str, sources: tuple[str, ...], early: bool) -> dict:
    from tap_analytics.sandbox import Sandbox
    from tap_analytics.sandbox.core import Faults

    with Sandbox(seed=7, services=sources) as sb, tempfile.TemporaryDirectory() as tmp:
        for service in sb.services.values():
            service.faults = Faults(latency_seconds=LATENCY_S)
        if "insights" in sources:
            sb.insights.query_seconds = QUERY_S
        path = str(Path(tmp) / "config.json")
        Path(path).write_text(json.dumps(_config(sb, sources)))
        run = run_child(label, [PYTHON, "-c", _LAUNCH.format(early=early, path=path)],
                        timeout=300)
        insights = sb.services.get("insights")
        return {
            "wall_s": run.wall,
            "records": run.records,
            "returncode": run.returncode,
            "max_pending": getattr(insights, "max_pending", None),
            "rejected_429": getattr(insights, "rejected_429", None),
            "stderr_tail": run.stderr_tail[-300:] if run.returncode else "",
        }


def run(*, repeats: int = 2, log: t.Callable[[str], None] = print) -> dict:
    runs: dict[str, list[dict]] = {label: [] for label in VARIANTS}
    for _ in range(repeats):
        for label, (sources, early) in VARIANTS.items():
            result = _one(label, sources, early)
            runs[label].append(result)
            log(f"    {label:24s} {result['wall_s']:6.1f} s  {result['records']:5d} records  "
                f"exit {result['returncode']}")
    walls = {label: median(r["wall_s"] for r in rs) for label, rs in runs.items()}
    alone = [walls["alation alone"], walls["scuba alone"], walls["insights alone"]]
    return {
        "latency_s": LATENCY_S,
        "query_s": QUERY_S,
        "window_hours": WINDOW_HOURS,
        "repeats": repeats,
        "runs": runs,
        "wall_median_s": walls,
        "sum_alone_s": sum(alone),
        "longest_alone_s": max(alone),
        "ratio_early_vs_longest": walls["whole, early submit"] / max(alone),
        "ratio_early_vs_no_early": walls["whole, early submit"]
        / walls["whole, no early submit"],
        "same_records": len({r["records"] for label in ("whole, early submit",
                                                         "whole, no early submit")
                             for r in runs[label]}) == 1,
        "ok": all(r["returncode"] == 0 for rs in runs.values() for r in rs),
        "max_pending": max((r["max_pending"] or 0) for rs in runs.values() for r in rs),
        "rejected_429": sum((r["rejected_429"] or 0) for rs in runs.values() for r in rs),
    }


if __name__ == "__main__":
    print(json.dumps(run(repeats=1), indent=2, default=str))
