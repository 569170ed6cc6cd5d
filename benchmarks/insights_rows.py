"""Section 4: the Insights row path against a plain extractor; memory; SFTP MB/s.

    .venv/bin/python -m benchmarks --sections 4           # ~3-4 min on 2 busy cores
    .venv/bin/python -m benchmarks.insights_rows --quick  # this section alone, smaller

(a) rows/s on one report of the issue's shape (7 columns, two of them times, 470k rows in
    2 csv.gz files, one window): the tap (`tap-analytics`, RECORD lines to a pipe; with
    pyarrow installed, the Arrow row path) vs `benchmarks/plain_insights.py` (requests +
    paramiko + gzip + csv + orjson), and the tap with the csv module's row path (what a
    tap installed without pyarrow runs), all against the sandbox's HTTP + paramiko SFTP
    servers on loopback. "After the report was ready": from the file list to the last
    row (the tap's window log line; the plain extractor prints the same span), medians
    of `repeats` runs, alternated.
(b) peak RSS of the tap at 1x and 10x that report: VmHWM of the tap process itself
    (sampled from /proc every 10 ms by `common.run_child`; the tap is exec'd, so nothing
    of this big process is counted).
(c) SFTP download MB/s of one 128 MiB file from OpenSSH's sshd (`sandbox/sshd.py`, root
    only; skipped otherwise): the tap's `SftpSession.open_stream` (paramiko, pipelined
    reads) vs OpenSSH's `sftp` client (`get` to /dev/null), connection set-up included.
(d) hours per TB: 1e12 bytes of report CSV (uncompressed) / CSV bytes per row = rows;
    for one tap on this machine (rows / (a)'s rows/s), per core (rows x the tap's CPU
    seconds per row, start-up included: the work is CPU-bound), and for 8 cores (8 taps
    on disjoint ranges or reports; Insights' 2-query limit is not the bottleneck,
    queries finish before their files are read), capped by the SFTP MB/s of (c) for the
    compressed bytes.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from benchmarks.common import PYTHON, TAP, catalog_selecting, median, run_child

FIELDS = ["TimeStamp", "FlowId", "SessionId", "TransactionId", "IsTriggerAction",
          "EndTime", "ExitReason"]
ROWS = 470_000
#: 1x for the memory runs (10x = 1M rows: the sandbox writes them in about a minute)
RSS_ROWS = 100_000
#: `tap-analytics` with the csv module's row path (insights/rows.py), as a tap installed
#: without pyarrow runs: the Arrow row path switched off before the CLI starts.
_CSV_PATH_LAUNCHER = ("import sys; sys.argv[0] = 'tap-analytics'; "
                      "from tap_analytics.insights import rows; rows.arrow_rows_enabled = False; "
                      "from tap_analytics.tap import main; sys.exit(main())")
_WINDOW_RATE = re.compile(r"window 1/1 .* done: (\d+) rows in ([\d.]+) s")
_PLAIN_RATE = re.compile(r"plain: (\d+) rows in ([\d.]+) s after the report was ready")


def _config(sb: t.Any) -> dict:
    import datetime as dt

    from tap_analytics.sandbox import DATA_START

    config = sb.config()
    config.pop("alation", None)
    config.pop("scuba", None)
    block = config["insights"]
    block["reports"] = [{"name": "calls", "data": {"ApplicationExitEvent": {"fields": FIELDS}}}]
    block["window_hours"] = 24
    config["start_date"] = DATA_START.isoformat()
    config["end_date"] = (DATA_START + dt.timedelta(days=1)).isoformat()
    return config


def _run(cmd: list[str], *, timeout: float = 900) -> dict:
    """Run `cmd` (common.run_child: RECORD lines counted, VmHWM sampled), the whole stderr
    kept (the rate is read from the window log line)."""
    r = run_child(Path(cmd[0]).name, cmd, timeout=timeout, stderr_chars=1 << 24)
    return {"wall": r.wall, "cpu": r.cpu, "rc": r.returncode, "records": r.records,
            "peak_rss_mb": r.maxrss_kb / 1024, "stderr": r.stderr_tail}


def _ready_rate(stderr: str, pattern: re.Pattern) -> float:
    found = pattern.search(stderr)
    if not found:
        return float("nan")
    return int(found.group(1)) / max(float(found.group(2)), 1e-6)


def rows_per_s(sb: t.Any, tmp: Path, n: int, repeats: int,
               log: t.Callable[[str], None]) -> dict:
    config = _config(sb)
    (tmp / "config.json").write_text(json.dumps(config))
    (tmp / "catalog.json").write_text(json.dumps(catalog_selecting(config, "insights_calls")))
    sb.insights.rows_override = n
    sb.insights.rows_per_file = -(-n // 2)  # two files
    args = ["--config", str(tmp / "config.json"), "--catalog", str(tmp / "catalog.json")]
    tap = [TAP, *args]
    # the same tap with the csv module's row path (as installed without pyarrow)
    tap_csv = [PYTHON, "-c", _CSV_PATH_LAUNCHER, *args]
    plain = [PYTHON, "-m", "benchmarks.plain_insights", str(tmp / "config.json"),
             "insights_calls"]
    t0 = time.perf_counter()
    warm = _run(plain)  # the sandbox writes the report files once (reused by every run)
    log(f"    report files written and read once in {time.perf_counter() - t0:.1f} s "
        f"({warm['records']:,d} rows)")
    runs: dict[str, list[dict]] = {"tap": [], "plain": [], "tap_csv": []}
    for i in range(repeats):
        for label, cmd, pattern in (("tap", tap, _WINDOW_RATE),
                                    ("plain", plain, _PLAIN_RATE),
                                    ("tap_csv", tap_csv, _WINDOW_RATE)):
            r = _run(cmd)
            r["ready_rows_per_s"] = _ready_rate(r["stderr"], pattern)
            runs[label].append(r)
            log(f"    {label:7s} run {i + 1}/{repeats}: {r['records']:,d} rows, wall "
                f"{r['wall']:5.1f} s, CPU {r['cpu']:4.1f} s, "
                f"{r['ready_rows_per_s']:,.0f} rows/s after the report "
                f"was ready, peak RSS {r['peak_rss_mb']:.0f} MB (exit {r['rc']})")
            if r["rc"] != 0 or r["records"] != n:
                log("      !! " + r["stderr"][-600:].replace("\n", "\n      "))
    out: dict[str, t.Any] = {"rows": n}
    for label, rs in runs.items():
        out[label] = {
            "ok": all(r["rc"] == 0 and r["records"] == n for r in rs),
            "ready_rows_per_s": median(r["ready_rows_per_s"] for r in rs),
            "wall_rows_per_s": n / median(r["wall"] for r in rs),
            "cpu_s": median(r["cpu"] for r in rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
        }
    out["ratio_ready"] = out["tap"]["ready_rows_per_s"] / out["plain"]["ready_rows_per_s"]
    out["ratio_csv_ready"] = (out["tap_csv"]["ready_rows_per_s"]
                              / out["plain"]["ready_rows_per_s"])
    out["ratio_wall"] = out["tap"]["wall_rows_per_s"] / out["plain"]["wall_rows_per_s"]
    out["ratio_cpu"] = out["plain"]["cpu_s"] / out["tap"]["cpu_s"]
    # bytes per row of the report, compressed and as CSV text
    files = [p for p in sb.insights._written.values()][-1]  # the files of this report
    gz = sum(os.path.getsize(p) for p in files)
    csv_bytes = 0
    for p in files:
        with gzip.open(p, "rb") as fh:
            while block := fh.read(1 << 20):
                csv_bytes += len(block)
    out["gz_bytes_per_row"] = gz / n
    out["csv_bytes_per_row"] = csv_bytes / n
    return out


def peak_rss(sb: t.Any, tmp: Path, sizes: tuple[int, int],
             log: t.Callable[[str], None]) -> dict:
    config = _config(sb)
    tap = [TAP, "--config", str(tmp / "config.json"), "--catalog", str(tmp / "catalog.json")]
    (tmp / "config.json").write_text(json.dumps(config))
    out: dict[str, t.Any] = {}
    for n in sizes:
        sb.insights.rows_override = n
        sb.insights.rows_per_file = 235_000  # the file size
        r = _run(tap)
        rate = _ready_rate(r["stderr"], _WINDOW_RATE)
        log(f"    {n:>9,d} rows: peak RSS {r['peak_rss_mb']:.1f} MB, {r['records']:,d} rows, "
            f"{rate:,.0f} rows/s after ready, wall {r['wall']:.1f} s (exit {r['rc']}; "
            "includes the sandbox writing the files)")
        out[str(n)] = {"peak_rss_mb": r["peak_rss_mb"], "ok": r["rc"] == 0 and
                       r["records"] == n, "ready_rows_per_s": rate}
    small, big = (out[str(n)]["peak_rss_mb"] for n in sizes)
    out["ratio"] = big / small
    return out


def sftp_speed(log: t.Callable[[str], None], size_mb: int = 128) -> dict | None:
    from tap_analytics.insights.sftp import SftpSession
    from tap_analytics.sandbox.sshd import OpenSshSftp, unavailable_reason

    reason = unavailable_reason()
    if reason:
        log(f"    skipped: {reason}")
        return None
    with OpenSshSftp() as server, tempfile.TemporaryDirectory() as tmp:
        name = "bench-128m.bin"
        path = Path(server.home) / name
        with open(path, "wb") as fh:
            for _ in range(size_mb):
                fh.write(os.urandom(1 << 20))
        os.chmod(path, 0o644)
        key = Path(tmp) / "key"
        key.write_text(server.client_key_text)
        key.chmod(0o600)
        results: dict[str, list[float]] = {"tap": [], "openssh": []}
        try:
            for _ in range(3):
                began = time.perf_counter()
                session = SftpSession(server.sftp_config(), timeout=60)
                stream = session.open_stream(name)
                got = 0
                while block := stream.read(1 << 20):
                    got += len(block)
                stream.close()
                session.close()
                assert got == size_mb << 20
                results["tap"].append(size_mb / (time.perf_counter() - began))
                began = time.perf_counter()
                subprocess.run(
                    ["sftp", "-q", "-b", "-", "-i", str(key), "-P", str(server.port),
                     "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                     "-o", "BatchMode=yes", f"{server.user}@127.0.0.1"],
                    input=f"get {name} /dev/null\n".encode(), check=True, timeout=300,
                    capture_output=True)
                results["openssh"].append(size_mb / (time.perf_counter() - began))
        finally:
            path.unlink(missing_ok=True)
    out = {k: median(v) for k, v in results.items()}
    log(f"    {size_mb} MiB file: tap (paramiko) {out['tap']:.0f} MB/s, OpenSSH sftp "
        f"{out['openssh']:.0f} MB/s (medians of 3; runs: tap "
        f"{', '.join(f'{x:.0f}' for x in results['tap'])}; openssh "
        f"{', '.join(f'{x:.0f}' for x in results['openssh'])})")
    out["ratio"] = out["tap"] / out["openssh"]
    return out


def run(*, n: int = ROWS, repeats: int = 3, rss_sizes: tuple[int, int] | None = None,
        log: t.Callable[[str], None] = print) -> dict:
    from tap_analytics.sandbox import Sandbox

    rss_sizes = rss_sizes or (RSS_ROWS, 10 * RSS_ROWS)
    results: dict[str, t.Any] = {}
    with Sandbox(seed=7, services=["insights"]) as sb, \
            tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        log(f"  (a) {n:,d} rows x {len(FIELDS)} columns, 2 files: tap vs plain extractor")
        results["rows"] = r = rows_per_s(sb, tmp, n, repeats, log)
        log(f"    medians: tap {r['tap']['ready_rows_per_s']:,.0f} rows/s, plain "
            f"{r['plain']['ready_rows_per_s']:,.0f} rows/s after ready "
            f"(tap/plain {r['ratio_ready']:.2f}x); whole run {r['ratio_wall']:.2f}x; "
            f"CPU s tap {r['tap']['cpu_s']:.1f}, plain {r['plain']['cpu_s']:.1f} (whole "
            f"runs, start-up included); the csv module's row path (no pyarrow) "
            f"{r['tap_csv']['ready_rows_per_s']:,.0f} rows/s ({r['ratio_csv_ready']:.2f}x), "
            f"CPU s {r['tap_csv']['cpu_s']:.1f}")
        log(f"  (b) peak RSS at {rss_sizes[0]:,d} and {rss_sizes[1]:,d} rows")
        results["rss"] = m = peak_rss(sb, tmp, rss_sizes, log)
        log(f"    ratio {m['ratio']:.2f}x")
    log("  (c) SFTP MB/s from OpenSSH's sshd: the tap's client vs OpenSSH's sftp")
    results["sftp"] = s = sftp_speed(log)
    rows_per_tb = 1e12 / r["csv_bytes_per_row"]
    rate = r["tap"]["ready_rows_per_s"]  # one tap process on this machine's cores
    machine_h = rows_per_tb / rate / 3600
    # CPU-bound: the whole run's CPU seconds per row (start-up included) is what one core
    # spends; 8 cores run 8 taps on disjoint ranges (or reports), capped by the SFTP side
    cpu_per_row = r["tap"]["cpu_s"] / n
    per_core_h = rows_per_tb * cpu_per_row / 3600
    gz_mb_s_8 = 8 * r["gz_bytes_per_row"] / cpu_per_row / 1e6
    cap = s["tap"] if s else float("inf")
    eight_h = per_core_h / 8 if gz_mb_s_8 <= cap else rows_per_tb * r["gz_bytes_per_row"] / (
        cap * 1e6) / 3600
    cores = len(os.sched_getaffinity(0))
    results["hours_per_tb"] = {"one_core": per_core_h, "eight_cores": eight_h,
                               "this_machine": machine_h, "cores_here": cores,
                               "csv_bytes_per_row": r["csv_bytes_per_row"],
                               "gz_bytes_per_row": r["gz_bytes_per_row"],
                               "gz_mb_s_needed_8": gz_mb_s_8}
    log(f"  (d) {r['csv_bytes_per_row']:.0f} CSV bytes/row ({r['gz_bytes_per_row']:.1f} "
        f"gzipped): 1 TB of report CSV = {rows_per_tb / 1e9:.1f} G rows; one tap on this "
        f"machine ({cores} cores) {machine_h:.1f} h; CPU {cpu_per_row * 1e6:.1f} us/row = "
        f"{per_core_h:.1f} core-hours, {eight_h:.1f} h on 8 cores (needs {gz_mb_s_8:.0f} "
        "MB/s of SFTP)")
    return results


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    out = run(n=100_000 if quick else ROWS, repeats=1 if quick else 3)
    print(json.dumps(out, indent=2, default=str))
