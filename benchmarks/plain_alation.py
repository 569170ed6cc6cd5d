"""A plain, sequential Alation extractor that sends the tap's requests (section 4).

    python -m benchmarks.plain_alation CONFIG.json > out

requests + json.loads + orjson RECORD lines, one request at a time: the five list
endpoints with the tap's filters (`<key>__gte=start_date`, `<key>__lt=end_date`),
`order_by` where the tap sends one, `limit`/`skip` paging ending on a short page; then,
per `result_query_ids` entry, the latest result and its CSV. No schema, no state, no
timestamp normalisation.
"""

from __future__ import annotations

import csv
import io
import json
import sys

import orjson
import requests

from tap_analytics.common.timeutil import normalize

# stream, path, replication key (None: none on a first sync), order_by
LISTS = (
    ("alation_queries", "/query/", "ts_last_saved", "id"),
    ("alation_execution_sessions", "/query/execution_session/", "ts_start", None),
    ("alation_execution_batches", "/query/execution_batch/", None, None),
    ("alation_execution_events", "/query/execution_event/", "ts_executed", None),
    ("alation_scheduled_runs", "/query/scheduled_run/", "ts_sent_to_broker",
     "ts_sent_to_broker"),
)


def main() -> None:
    config = json.loads(open(sys.argv[1], encoding="utf-8").read())
    block = config["alation"]
    base = block["base_url"].rstrip("/") + "/integration/v1"
    page_size = int(block.get("page_size") or 500)
    start, end = normalize(config["start_date"]), normalize(config["end_date"])
    out = sys.stdout.buffer
    session = requests.Session()
    session.headers["TOKEN"] = block["api_token"]

    def record(stream: str, rec: dict) -> None:
        out.write(b'{"type":"RECORD","stream":' + orjson.dumps(stream) + b',"record":'
                  + orjson.dumps(rec) + b"}\n")

    for stream, path, key, order_by in LISTS:
        params: dict = {}
        if key:
            params[f"{key}__gte"], params[f"{key}__lt"] = start, end
        if order_by:
            params["order_by"] = order_by
        skip = 0
        while True:
            response = session.get(base + path, params={**params, "limit": page_size,
                                                        "skip": skip}, timeout=60)
            response.raise_for_status()
            page = json.loads(response.content)
            for rec in page:
                record(stream, rec)
            if len(page) < page_size:
                break
            skip += page_size
    for query_id in dict.fromkeys(block.get("result_query_ids") or []):
        latest = session.get(f"{base}/query/{query_id}/result/latest/", timeout=60)
        if latest.status_code == 404:
            continue
        latest.raise_for_status()
        result_id = json.loads(latest.content)["id"]
        body = session.get(f"{base}/result/{result_id}/csv/", timeout=60)
        body.raise_for_status()
        rows = csv.DictReader(io.StringIO(body.content.decode("utf-8")))
        for number, row in enumerate(rows, start=1):
            record("alation_query_results",
                   {"result_id": result_id, "query_id": query_id, "row_number": number,
                    "row": row})
    out.flush()


if __name__ == "__main__":
    main()
