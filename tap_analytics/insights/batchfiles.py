"""Batch files written from Arrow record batches: JSON Lines (gzip or plain) and Parquet.

A `BatchFile` goes to the root/prefix of the SDK's `batch_config` through the SDK's own
storage helper (`StorageTarget.open`: fsspec, so `file://` and `s3://` roots work as for
the SDK's batchers). It is written batch by batch (bounded memory) and only `commit()`
makes it visible: fsspec writes inside a transaction, and a file that failed half-way is
discarded, never handed to a target.

JSON Lines are built with Arrow compute kernels (string joins), not a dict per row; the
values are those of the RECORD messages (strings, `null`, the integer `row_number`).
"""

from __future__ import annotations

import contextlib
import json
import typing as t
import zlib

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BatchConfig

#: gzip level of .jsonl.gz batch files. In the 1M-row benchmark (section 4) level 6 took
#: the BATCH jsonl.gz run from ~5.6 s to ~11.5 s after the report was ready; level 1
#: files are ~40% larger (4.6 vs 3.2 MB per 200k sandbox rows). The SDK's batcher uses 9.
JSONL_GZIP_LEVEL = 1
_CONTROL = r"[\x00-\x1f]"


def _json_strings(values: pa.Array, *, plain: bool = False) -> pa.Array:
    """Each string as a JSON string literal; null as `null`. `plain`: the caller knows
    the values need no escaping (e.g. the tap's own RFC 3339 timestamps)."""
    if not plain:
        if not pc.all(pc.ascii_is_printable(values)).as_py() and pc.any(
                pc.match_substring_regex(values, _CONTROL)).as_py():
            # Control characters need \uXXXX escapes: rare, done value by value.
            return pa.array(["null" if v is None else json.dumps(v, ensure_ascii=False)
                             for v in values.to_pylist()], pa.string())
        for char in ("\\", '"'):  # the backslash first
            if pc.any(pc.match_substring(values, char)).as_py():
                values = pc.replace_substring(values, char, "\\" + char)
    return pc.fill_null(pc.binary_join_element_wise('"', values, '"', ""), "null")


def json_lines(batch: pa.RecordBatch, *, constant: t.Collection[str] = (),
               plain: t.Collection[str] = ()) -> pa.Buffer:
    """The batch as JSON Lines (one object per row, keys in column order), as bytes.

    `constant`: columns with one value in the whole batch (written once, as text);
    `plain`: string columns whose values need no escaping.
    """
    pieces: list[t.Any] = []
    text = ""
    for i, field in enumerate(batch.schema):
        text += ("{" if i == 0 else ",") + json.dumps(field.name) + ":"
        column = batch.column(i)
        if field.name in constant and len(column):
            text += json.dumps(column[0].as_py())
            continue
        pieces.append(text)
        text = ""
        if pa.types.is_integer(field.type):
            pieces.append(pc.fill_null(pc.cast(column, pa.string()), "null"))
        else:
            pieces.append(_json_strings(column, plain=field.name in plain))
    pieces.append(text + "}\n")
    lines = pc.binary_join_element_wise(*pieces, "")
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()),
                                                     lines), "")
    return joined[0].as_buffer()


class BatchFile:
    """One batch file in the storage target; `write()` batches, then `commit()` -> URL."""

    def __init__(self, batch_config: BatchConfig, filename: str, schema: pa.Schema, *,
                 constant: t.Collection[str] = (), plain: t.Collection[str] = ()) -> None:
        self.storage = batch_config.storage
        self.format = batch_config.encoding.format
        self.gzip = batch_config.encoding.compression == "gzip"
        self.filename = filename
        self.constant = constant
        self.plain = plain
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(self.storage.open(filename, "wb"))
        self._zip = zlib.compressobj(JSONL_GZIP_LEVEL, zlib.DEFLATED, 31) if (
            self.format == "jsonl" and self.gzip) else None
        self._parquet = pq.ParquetWriter(
            self._file, schema, compression="gzip" if self.gzip else "snappy"
        ) if self.format == "parquet" else None
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._parquet is not None:
            self._parquet.write_batch(batch)
        else:
            data = json_lines(batch, constant=self.constant, plain=self.plain)
            self._file.write(self._zip.compress(data) if self._zip is not None else data)
        self.rows += batch.num_rows

    def commit(self) -> str:
        """Finish the file and make it visible; its URL for the BATCH manifest."""
        if self._parquet is not None:
            self._parquet.close()
        elif self._zip is not None:
            self._file.write(self._zip.flush())
        self._stack.close()  # closes the file and ends the storage's transaction (commit)
        return self.storage.get_url(self.filename)

    def discard(self) -> None:
        """Drop a half-written file (never committed, so never visible)."""
        with contextlib.suppress(Exception):
            if self._parquet is not None:
                self._parquet.close()
        with contextlib.suppress(Exception):
            self._file.discard()
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("discarded"), None)


def extension(batch_config: BatchConfig) -> str:
    gz = batch_config.encoding.compression == "gzip"
    if batch_config.encoding.format == "parquet":
        return ".parquet"
    return ".jsonl.gz" if gz else ".jsonl"
