"""Section 4: a full Alation sync against a server that takes 100 ms per request.

The sandbox runs as its own process (`python -m tap_analytics.sandbox --services alation
--latency 0.1 --scale S`), so its request handling does not share the extractors' GIL.
Three extractors run against it, interleaved, each as a subprocess with stdout to a file:

- **tap, 1 in flight**: `tap-analytics`, `alation.max_concurrent_requests = 1`;
- **tap, 4 in flight**: the same with 4 (the default);
- **plain**: `plain_alation.py`, a sequential requests loop that sends the tap's requests
  (the same filters, order_by, limit/skip and short-page stop; the query results' latest
  + CSV) and writes one RECORD line per record.

Wall time includes interpreter start-up. The two tap runs' outputs are compared record
for record (every stream, in order); the plain extractor's records are compared by key.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from benchmarks.common import PYTHON, ROOT, TAP, median

LATENCY_S = 0.1
SCALE = 12.0
PAGE_SIZE = 250
VARIANTS = ("tap_1", "tap_4", "plain")


def _start_sandbox(tmp: Path, scale: float, latency: float) -> tuple[subprocess.Popen, dict]:
    config_path = tmp / "sandbox-config.json"
    proc = subprocess.Popen(
        [PYTHON, "-m", "tap_analytics.sandbox", "--services", "alation", "--scale",
         str(scale), "--latency", str(latency), "--config-out", str(config_path),
         "--run-seconds", "900"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not config_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the sandbox did not start")
        time.sleep(0.1)
    return proc, json.loads(config_path.read_text())


def _run(cmd: list[str], out: Path, timeout: float = 600) -> tuple[float, int, str]:
    with open(out, "wb") as stdout, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=stdout, stderr=err, cwd=ROOT, timeout=timeout,
                              check=False, env=os.environ.copy())
        wall = time.perf_counter() - start
        err.seek(0)
        tail = err.read().decode("utf-8", "replace")[-2000:]
    return wall, proc.returncode, tail


def _records(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = collections.defaultdict(list)
    with open(path, "rb") as fh:
        for line in fh:
            if line.startswith(b'{"type":"RECORD"'):
                msg = json.loads(line)
                out[msg["stream"]].append(msg["record"])
    return dict(out)


def _key(stream: str, record: dict) -> t.Any:
    if stream == "alation_query_results":
        return (record["result_id"], record["row_number"])
    return record["task_id"] if stream == "alation_scheduled_runs" else record["id"]


def _requests_of(stderr_path: Path) -> int:
    """HTTP requests of a tap run (retries included): one SDK `http_request_duration`
    metric line each."""
    total = 0
    for line in stderr_path.read_text(errors="replace").splitlines():
        if '"metric":"http_request_duration"' in line.replace(" ", ""):
            total += 1
    return total


def run(*, repeats: int = 3, scale: float = SCALE, latency: float = LATENCY_S,
        log: t.Callable[[str], None] = print) -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sandbox, config = _start_sandbox(tmp, scale, latency)
        try:
            config["alation"]["page_size"] = PAGE_SIZE
            configs = {}
            for variant, in_flight in (("tap_1", 1), ("tap_4", 4)):
                cfg = json.loads(json.dumps(config))
                cfg["alation"]["max_concurrent_requests"] = in_flight
                path = tmp / f"{variant}.json"
                path.write_text(json.dumps(cfg))
                configs[variant] = path
            commands = {
                "tap_1": [TAP, "--config", str(configs["tap_1"])],
                "tap_4": [TAP, "--config", str(configs["tap_4"])],
                "plain": [PYTHON, "-m", "benchmarks.plain_alation", str(configs["tap_1"])],
            }
            walls: dict[str, list[float]] = {v: [] for v in VARIANTS}
            ok = True
            for rep in range(repeats):
                for variant in VARIANTS:
                    wall, rc, tail = _run(commands[variant], tmp / f"{variant}-{rep}.out")
                    (tmp / f"{variant}-{rep}.err").write_text(tail)
                    walls[variant].append(wall)
                    ok = ok and rc == 0
                    log(f"    run {rep + 1} {variant:6s} {wall:6.2f} s  exit {rc}")
                    if rc != 0:
                        log("      " + tail.strip().splitlines()[-1] if tail.strip() else "")
            outs = {v: _records(tmp / f"{v}-0.out") for v in VARIANTS}
            same_tap = outs["tap_1"] == outs["tap_4"]
            same_keys = {
                stream: sorted(map(str, (_key(stream, r) for r in outs["tap_1"].get(stream, []))))
                == sorted(map(str, (_key(stream, r) for r in outs["plain"].get(stream, []))))
                for stream in sorted(set(outs["tap_1"]) | set(outs["plain"]))
            }
            # the tap's own request counts (the SDK's metric lines, from a fresh run's stderr)
            counts = {}
            for variant in ("tap_1", "tap_4"):
                err = tmp / f"{variant}-count.err"
                with open(err, "wb") as fh:
                    subprocess.run(commands[variant], stdout=subprocess.DEVNULL, stderr=fh,
                                   cwd=ROOT, timeout=600, check=False)
                counts[variant] = _requests_of(err)
        finally:
            sandbox.terminate()
            try:
                sandbox.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sandbox.kill()
                sandbox.wait(timeout=30)
    medians = {v: median(w) for v, w in walls.items()}
    return {
        "latency_s": latency, "scale": scale, "page_size": PAGE_SIZE, "repeats": repeats,
        "walls": walls, "medians": medians,
        "ratio_4_vs_1": medians["tap_4"] / medians["tap_1"],
        "ratio_4_vs_plain": medians["tap_4"] / medians["plain"],
        "ratio_1_vs_plain": medians["tap_1"] / medians["plain"],
        "records": {s: len(r) for s, r in outs["tap_1"].items()},
        "identical_tap_1_vs_4": same_tap,
        "same_keys_plain_vs_tap": same_keys,
        "requests": counts,
        "ok": ok,
    }


if __name__ == "__main__":
    result = run()
    json.dump(result, sys.stdout, indent=2, default=str)
    print()
