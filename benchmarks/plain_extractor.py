"""(b) A plain extractor: requests + json.loads + orjson line writing, same paging.

    python -m benchmarks.plain_extractor URL TOKEN PAGE_SIZE STREAM > out

What a hand-written script would do: GET limit/skip pages until a short page, write one
Singer-shaped RECORD line per record to a buffered stdout. No schema, no state.
"""

from __future__ import annotations

import json
import sys

import orjson
import requests


def main() -> None:
    url, token, page_size, stream = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    out = sys.stdout.buffer
    prefix = b'{"type":"RECORD","stream":' + orjson.dumps(stream) + b',"record":'
    session = requests.Session()
    session.headers["TOKEN"] = token
    skip = 0
    while True:
        response = session.get(url, params={"limit": page_size, "skip": skip}, timeout=60)
        response.raise_for_status()
        page = json.loads(response.content)  # the stdlib parser, as the tap uses
        for record in page:
            out.write(prefix + orjson.dumps(record) + b"}\n")
        if len(page) < page_size:
            break
        skip += page_size
    out.flush()


if __name__ == "__main__":
    main()
