"""A plain Insights extractor: requests + paramiko + gzip + csv + orjson, no SDK.

    python -m benchmarks.plain_insights CONFIG.json STREAM > out

What a hand-written script would do for one report: submit the query for the whole
[start_date, end_date) range, poll the status, read the file list, then for each file:
SFTP open (paramiko's own prefetch), gunzip, csv.reader, one Singer-shaped RECORD line per
row (header names as keys, values as the CSV has them) to a buffered stdout. No schema, no
state, no retries, no timestamp conversion.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import re
import sys
import time

import orjson
import paramiko
import requests


def main() -> None:
    config = json.loads(open(sys.argv[1], encoding="utf-8").read())
    stream = sys.argv[2]
    block = config["insights"]
    report = block["reports"][0]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {block['api_token']}"
    base = block["base_url"].rstrip("/") + "/dwh/Q"
    body = {"timestamp": {"$gte": config["start_date"].replace("+00:00", "Z"),
                          "$lt": config["end_date"].replace("+00:00", "Z")},
            "data": report["data"]}
    guid = session.post(base, json=body, timeout=60).json()["id"]
    while True:
        status = session.get(f"{base}/{guid}/status", timeout=60).json()["status"]
        if status != "Pending":
            break
        time.sleep(0.1)
    paths: list[str] = []
    for _ in range(600):
        text = session.get(f"{base}/{guid}", timeout=60).json()["status"]
        found = re.search(r"Download:\s*(\[.*\])", text)
        if found:
            paths = list(ast.literal_eval(found.group(1)))
            break
        time.sleep(0.1)

    ready = time.perf_counter()
    sftp_cfg = block["sftp"]
    transport = paramiko.Transport((sftp_cfg["host"], int(sftp_cfg.get("port") or 22)))
    transport.connect(username=sftp_cfg["username"], password=sftp_cfg["password"])
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    out = sys.stdout.buffer
    prefix = b'{"type":"RECORD","stream":' + orjson.dumps(stream) + b',"record":'
    rows = 0
    for path in paths:
        with sftp.open(path, "rb") as handle:
            handle.prefetch()
            text = io.TextIOWrapper(gzip.GzipFile(fileobj=handle),
                                    encoding="utf-8-sig", newline="")
            reader = csv.reader(text)
            header = next(reader)
            for row in reader:
                out.write(prefix + orjson.dumps(dict(zip(header, row))) + b"}\n")
                rows += 1
    out.flush()
    took = time.perf_counter() - ready
    transport.close()
    print(f"plain: {rows} rows in {took:.3f} s after the report was ready", file=sys.stderr)


if __name__ == "__main__":
    main()
