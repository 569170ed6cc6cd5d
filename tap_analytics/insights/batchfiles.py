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
import typing as t
import zlib

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BatchConfig

try:  # ISA-L's deflate (the `batch` extra): the same gzip format, ~4x zlib's speed at
    # level 1 and slightly smaller files (~600 vs ~140 MB/s of JSON here)
    from isal import isal_zlib as deflate
except ImportError:  # pragma: no cover - pyarrow without the extra (e.g. singer-sdk[parquet])
    deflate = zlib  # type: ignore[no-redef]

#: gzip level of .jsonl.gz batch files. In the 1M-row benchmark (section 4) level 6 took
#: the BATCH jsonl.gz run from ~5.6 s to ~11.5 s after the report was ready; level 1
#: files are ~40% larger (4.6 vs 3.2 MB per 200k sandbox rows). The SDK's batcher uses 9.
JSONL_GZIP_LEVEL = 1
_CONTROL = r"[\x00-\x1f]"
# Compute functions get Arrow scalars: a Python value costs a failed `import dateutil`
# per call in pyarrow's conversion (see columnar.py).
_JSON_NULL = pa.scalar("null", pa.string())
_QUOTE = pa.scalar('"', pa.string())
_NOTHING = pa.scalar("", pa.string())


def _text(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.string())


def _escaped(values: pa.Array, *, plain: bool = False) -> tuple[pa.Array, bool]:
    """Strings ready to stand between JSON quotes, and False; or, for the rare values
    with control characters, whole JSON tokens (quotes included, `null`) and True.
    `plain`: the caller knows the values need no escaping (the tap's own timestamps)."""
    if not plain:
        if not pc.all(pc.ascii_is_printable(values)).as_py() and pc.any(
                pc.match_substring_regex(values, _CONTROL)).as_py():
            # Control characters need \uXXXX escapes: rare, done value by value.
            return pa.array(["null" if v is None else _json(v)
                             for v in values.to_pylist()], pa.string()), True
        data = values.buffers()[2]  # a look at the bytes first: memchr, not a kernel
        data = data.to_pybytes() if data is not None else b""
        for char in ("\\", '"'):  # the backslash first
            if char.encode() in data:
                values = pc.replace_substring(values, char, "\\" + char)
    return values, False


def _json(value: t.Any) -> str:
    """`value` as JSON text, byte for byte as the RECORD path's msgspec encoder writes it
    (non-ASCII as is; a lone surrogate raises UnicodeEncodeError)."""
    return msgspec.json.encode(value).decode()


def json_lines(batch: pa.RecordBatch, *, constant: t.Collection[str] = (),
               plain: t.Collection[str] = (), head: str = "", tail: str = "\n") -> pa.Buffer:
    """The batch as JSON Lines (one object per row, keys in column order), as bytes.

    `constant`: columns with one value in the whole batch (written once, as text);
    `plain`: string columns whose values need no escaping; `head` / `tail`: text before
    and after each object (`tail` ends the line): the RECORD envelope for RECORD lines.
    Every value is written as msgspec writes it (the RECORD path's bytes).

    One string join per batch: the text between the values (keys, and the quotes of
    string columns without nulls) is a constant piece, each value column one piece.
    The joined lines' data buffer is the file's bytes (no copy per line).
    """
    if batch.num_rows == 0:
        return pa.py_buffer(b"")
    pieces: list[t.Any] = []
    text = head
    for i, field in enumerate(batch.schema):
        text += ("{" if i == 0 else ",") + _json(field.name) + ":"
        column = batch.column(i)
        if field.name in constant:
            text += _json(column[0].as_py())
            continue
        if pa.types.is_integer(field.type):
            pieces += [_text(text), pc.fill_null(pc.cast(column, pa.string()), _JSON_NULL)]
            text = ""
            continue
        values, tokens = _escaped(column, plain=field.name in plain)
        if tokens:
            pieces += [_text(text), values]
            text = ""
        elif values.null_count:
            pieces += [_text(text), pc.fill_null(
                pc.binary_join_element_wise(_QUOTE, values, _QUOTE, _NOTHING), _JSON_NULL)]
            text = ""
        else:  # the common case: the quotes go into the pieces around the value
            pieces += [_text(text + '"'), values]
            text = '"'
    text += "}" + tail
    if not pieces:  # no value columns at all
        return pa.py_buffer(text.encode() * batch.num_rows)
    lines = pc.binary_join_element_wise(*pieces, _text(text), _NOTHING)
    _, offsets, data = lines.buffers()
    offsets = pa.Array.from_buffers(
        pa.int64() if pa.types.is_large_string(lines.type) else pa.int32(),
        len(lines) + 1, [None, offsets], offset=lines.offset)
    return data[offsets[0].as_py():offsets[-1].as_py()]


def encode(batch: pa.RecordBatch, batch_config: BatchConfig, *,
           constant: t.Collection[str] = (), plain: t.Collection[str] = ()) -> t.Any:
    """What `BatchFile.put` writes for `batch`: for JSON Lines the bytes (with gzip: one
    gzip member, so batches compress on any thread, in parallel, and the members
    concatenated are one gzip file), for Parquet the batch itself. Thread-safe."""
    if batch_config.encoding.format == "parquet":
        return batch
    data = json_lines(batch, constant=constant, plain=plain)
    if batch_config.encoding.compression != "gzip":
        return data
    member = deflate.compressobj(JSONL_GZIP_LEVEL, deflate.DEFLATED, 31)
    return member.compress(data) + member.flush()


#: Arrow bytes per Parquet row group: batches (~2,000 rows each) are gathered up to this
#: size and written as one group, so a wide report gets fewer rows per group and memory
#: stays bounded whatever its column count (~5,800 rows of the benchmark's 8-field
#: report, the fixed columns included). One group per batch made 500 groups per 1M rows
#: (larger files on repetitive columns, more CPU to write). Peak RSS of the 1M-row
#: BATCH benchmark grows with the group (the writer's buffers): 2 MiB 184-188 MB, 4 MiB
#: 199-202 MB, 65,536 rows (~19 MB) ~230 MB, for files 35, 33 and 30 MB.
PARQUET_ROW_GROUP_BYTES = 2 << 20
#: Bytes of a column's dictionary page before the writer falls back to plain encoding
#: (Arrow's default is 1 MiB). Report columns of ids and times rarely repeat: their
#: dictionaries filled to the limit, were held per column and then dropped. At 64 KiB
#: the 1M-row benchmark's files were ~15% smaller and written in ~25% less CPU.
PARQUET_DICTIONARY_PAGE_BYTES = 64 << 10


class BatchFile:
    """One batch file in the storage target; `put()` what `encode()` made of each batch,
    in order, then `commit()` -> URL."""

    def __init__(self, batch_config: BatchConfig, filename: str, schema: pa.Schema) -> None:
        self.storage = batch_config.storage
        self.format = batch_config.encoding.format
        self.gzip = batch_config.encoding.compression == "gzip"
        self.filename = filename
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(self.storage.open(filename, "wb"))
        self._parquet = pq.ParquetWriter(
            self._file, schema, compression="gzip" if self.gzip else "snappy",
            dictionary_pagesize_limit=PARQUET_DICTIONARY_PAGE_BYTES,
        ) if self.format == "parquet" else None
        self._group: list[pa.RecordBatch] = []  # Parquet: batches of the next row group
        self._group_rows = 0
        self._group_bytes = 0
        self.rows = 0

    def put(self, encoded: t.Any, rows: int) -> None:
        """Write what `encode()` made of the file's next batch (in file order)."""
        if self._parquet is not None:
            self._group.append(encoded)
            self._group_rows += rows
            self._group_bytes += encoded.nbytes
            if self._group_bytes >= PARQUET_ROW_GROUP_BYTES:
                self._write_group()
        else:
            self._file.write(encoded)
        self.rows += rows

    def _write_group(self) -> None:
        if self._group and self._parquet is not None:
            self._parquet.write_table(pa.Table.from_batches(self._group),
                                      row_group_size=max(self._group_rows, 1))
        self._group, self._group_rows, self._group_bytes = [], 0, 0

    def commit(self) -> str:
        """Finish the file and make it visible; its URL for the BATCH manifest."""
        if self._parquet is not None:
            self._write_group()
            self._parquet.close()
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
