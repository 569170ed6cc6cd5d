"""Running a child process and measuring it: wall time, CPU time, peak RSS, records."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TAP = str(Path(sys.executable).parent / "tap-analytics")
RECORD_MARK = b'{"type":"RECORD"'


@dataclass
class Run:
    label: str
    wall: float
    cpu: float
    maxrss_kb: int
    records: int
    returncode: int
    stderr_tail: str = ""
    extra: dict = field(default_factory=dict)


def run_child(label: str, cmd: list[str], *, timeout: float = 600,
              env: dict[str, str] | None = None,
              on_start: t.Callable[[int], None] | None = None,
              stderr_chars: int = 2000) -> Run:
    """Run `cmd`, drain its stdout (counting RECORD lines), wait4() it for rusage."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                env={**os.environ, **(env or {})}, cwd=ROOT)
        if on_start:
            on_start(proc.pid)
        counts = {"records": 0, "bytes": 0}

        def drain() -> None:
            tail = b""  # the last, incomplete line of the previous chunk
            assert proc.stdout is not None
            while True:
                chunk = proc.stdout.read1(1 << 20)  # type: ignore[attr-defined]
                if not chunk:
                    break
                counts["bytes"] += len(chunk)
                data = tail + chunk
                cut = data.rfind(b"\n") + 1
                counts["records"] += data.count(RECORD_MARK, 0, cut)
                tail = data[cut:]
            counts["records"] += tail.count(RECORD_MARK)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        hwm_kb = 0
        while True:
            hwm_kb = max(hwm_kb, vm_hwm_kb(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join(timeout=30)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    # ru_maxrss of a child starts at the parent's RSS when it was forked (Linux keeps the
    # high-water mark across fork+exec), so the peak is the child's own VmHWM, sampled
    # every 10 ms until it exits (a high-water mark: only the last 10 ms can escape).
    return Run(label, wall, usage.ru_utime + usage.ru_stime, hwm_kb or usage.ru_maxrss,
               counts["records"], proc.returncode, stderr[-stderr_chars:],
               extra={"ru_maxrss_kb": usage.ru_maxrss})


def catalog_selecting(config: dict, stream: str) -> dict:
    """The tap's discovered catalog for `config`, with only `stream` selected."""
    from tap_analytics.tap import TapAnalytics

    catalog = TapAnalytics(config=config, parse_env_config=False).catalog_dict
    for entry in catalog["streams"]:
        for md in entry["metadata"]:
            if md["breadcrumb"] == []:
                md["metadata"]["selected"] = entry["tap_stream_id"] == stream
    return catalog


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set size of a live process (VmHWM, kB), 0 if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def median(values: t.Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "singer-sdk": version("singer-sdk"),
        "msgspec": version("msgspec"),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def write_json(path: Path, obj: t.Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
