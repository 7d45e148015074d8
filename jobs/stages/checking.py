"""The check stage: each input partition is read in pieces (runs of row groups, `engine.piece_bytes` each) and
judged against the contract; its rows then go on, in batches, with the reasons they fail. One Ray task per
piece, beside the scoring actors: as many pieces are read and checked at once as the cluster has CPUs for, and
a worker holds one piece, never a whole partition.

A contract's verdict is a property of the partition, never of how the engine cut it. `mostly`, uniqueness and
batch-level expectations are decided by a first pass over only the columns they read (skipped when the
contract has none): each piece's counts and key values (`tally_piece`), merged per partition into a `Verdict`
that every piece's check then applies. Key values are hash-bucketed (`bucket_of`), so that no task holds a
partition's worth of them. A contract with expectations only Great Expectations
evaluates checks each partition whole (`jobs.contracts.suite.splittable`). Table-level expectations (column
set, row count) were judged from the files' footers at plan time and arrive here as per-file reasons. Each
file's columns are cast to the run's one type per column as they are read (`jobs.column_types`): a value that
does not fit fails its row. `score validate` runs this same stage, so it fails exactly the rows `score run`
fails, null model inputs included.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from jobs.column_types import Reasons, add_reason, cast_values, conform, widens
from jobs.columns import (
    EVENT_TIME_IN_FUTURE,
    NULL_INPUT,
    OUT_OF_RANGE,
    PIECE_INDEX,
    REASON_TYPE,
    REASONS,
    SOURCE_FILE,
    SOURCE_ROW,
)
from jobs.contracts.expectations import repeated_values
from jobs.contracts.suite import Contract, ContractValidator, Tally, Verdict, splittable
from jobs.errors import RuntimeFailure
from jobs.inputs import Partition, partition_label, read_batches, read_columns
from jobs.storage import redact_uri


@dataclass(frozen=True)
class Piece:
    """What one check task reads: consecutive row groups of one partition's files (a whole partition when its
    contract cannot be split, or `engine.piece_bytes` is 0)."""

    partition: int  # its index in CheckTask.partitions
    parts: tuple[tuple[str, tuple[int, ...], int], ...]  # (file, row groups, the file's row index of the first)
    rows: int
    bytes: int  # uncompressed, all the files' columns: what reading it costs at most


@dataclass(frozen=True)
class CheckTask:
    """Everything the check stage needs, built once on the driver by the plan."""

    partitions: tuple[tuple[Partition, tuple[str, ...]], ...]  # each input partition and its clean files (URIs)
    file_schema: pa.Schema  # the columns read from the files, in the run's types (partition columns: from paths)
    contract: Contract | None
    engine: str
    batch_level: tuple[str, ...]
    file_failures: dict[str, Reasons]  # path -> reasons every row of that file fails with (table-level)
    reject_nulls: tuple[str, ...]  # model input columns whose nulls (and NaNs) make a row unscorable
    input_types: tuple[tuple[str, str], ...]  # (column, numeric model input dtype): values it cannot hold fail
    batch_size: int
    with_paths: bool  # keep each row's file and position in it (SOURCE_FILE, SOURCE_ROW), for the quarantine
    row_groups: dict[str, tuple[tuple[int, int], ...]]  # file -> (rows, uncompressed bytes) of each row group
    piece_bytes: int  # engine.piece_bytes: a piece's row groups add up to at most this (one group may exceed it)
    event_time_column: str | None = None
    latest_event_time: dt.datetime | None = None  # later event times fail their row: the plan's clock + tolerance

    @cached_property
    def pieces(self) -> tuple[Piece, ...]:
        """The partitions cut into pieces, in order: runs of row groups, across small files, of at most
        `piece_bytes` (a bigger row group is a piece of its own); one piece per partition when not splittable."""
        cut = self.piece_bytes if splittable(self.contract, self.engine) else 0
        pieces: list[Piece] = []
        for index, (_, files) in enumerate(self.partitions):
            parts: list[tuple[str, tuple[int, ...], int]] = []
            rows = size = 0
            for path in files:
                first = 0
                for group, (n, nbytes) in enumerate(self.row_groups[path]):
                    if cut and parts and size + nbytes > cut:
                        pieces.append(Piece(index, tuple(parts), rows, size))
                        parts, rows, size = [], 0, 0
                    if parts and parts[-1][0] == path:
                        parts[-1] = (path, (*parts[-1][1], group), parts[-1][2])
                    else:
                        parts.append((path, (group,), first))
                    first, rows, size = first + n, rows + n, size + nbytes
            if parts:
                pieces.append(Piece(index, tuple(parts), rows, size))
        return tuple(pieces)

    @property
    def needs_verdicts(self) -> bool:
        """Whether a first pass must settle partition-wide verdicts: some partition is cut into several pieces,
        and the contract has `mostly`, uniqueness or batch-level expectations."""
        if self.contract is None:
            return False
        per_partition = [piece.partition for piece in self.pieces]
        return len(per_partition) > len(set(per_partition)) and bool(validator(self).partition_wide)


def check_pieces(batch: pa.Table, task: CheckTask, verdicts: dict[int, Verdict] | None = None) -> Iterator[pa.Table]:
    """Ray Data UDF over a dataset of piece indexes: yields each piece's rows with `_reasons`, in batches of at
    most `task.batch_size` rows. `verdicts` (partition -> `Verdict`, from `settle` on Ray when
    `task.needs_verdicts`, from `partition_verdicts` inline) lets a piece stream with partition-wide expectations.

    A piece is read batch by batch, unless the contract must see it whole: a partition of one piece (which needs
    no first pass) with partition-wide expectations, or a contract with Great Expectations' own (never split)."""
    pieces = task.pieces
    undivided = (
        verdicts is None
        and task.contract is not None
        and (not splittable(task.contract, task.engine) or bool(validator(task).partition_wide))
    )
    for index in batch.column(PIECE_INDEX).to_pylist():
        piece = pieces[index]
        verdict = verdicts[piece.partition] if verdicts is not None else None
        columns = task.file_schema.names
        for chunk in [_whole(task, piece, columns)] if undivided else _chunks(task, piece, columns, task.batch_size):
            table, reasons = chunk.table, chunk.reasons
            for path, (start, end, _) in chunk.spans.items():
                for i in range(start, end) if path in task.file_failures else ():
                    add_reason(reasons, i, *task.file_failures[path])
            if task.contract is not None and table.num_rows:
                for i, found in validator(task).validate(table, verdict).reasons.items():
                    add_reason(reasons, i, *found)
            _null_inputs(table, task.reject_nulls, reasons)
            _out_of_range(table, task.input_types, reasons)
            if task.event_time_column and task.latest_event_time:
                _future_event_times(table, task.event_time_column, task.latest_event_time, reasons)
            if task.with_paths:
                table = _with_sources(table, chunk.spans)
            table = table.append_column(REASONS, pa.array(reasons, REASON_TYPE))
            for offset in range(0, table.num_rows, task.batch_size):
                yield table.slice(offset, task.batch_size)


def tally_piece(task: CheckTask, piece: Piece, buckets: int) -> tuple[Tally, dict[int, list[pa.Array]]]:
    """A piece's share of its partition's verdicts, from only the columns the partition-wide expectations read:
    its counts, and each uniqueness expectation's values cut into `buckets` by hash (a value lands in the same
    bucket in every piece, so each bucket's repeats are found without the others)."""
    check = validator(task)
    table = _whole(task, piece, [c for c in task.file_schema.names if c in check.tally_columns]).table
    keys: dict[int, list[pa.Array]] = {}
    for k, values in check.keys_of(table).items():
        values = values.combine_chunks()
        if buckets == 1:
            keys[k] = [values]
            continue
        bucket = bucket_of(values, buckets)
        keys[k] = [values.filter(pa.array(bucket == b)) for b in range(buckets)]
    return check.tally(table), keys


def bucket_of(values: pa.Array, buckets: int) -> np.ndarray:
    """Each value's hash bucket, the same for equal values in every piece: integers and booleans are hashed
    with their nulls filled, since numpy would hold them as floats or objects in a piece that has a null."""
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        values = pc.fill_null(values, pa.scalar(False if pa.types.is_boolean(kind) else 0, kind))
    return pd.util.hash_array(values.to_numpy(zero_copy_only=False)) % np.uint64(buckets)


def repeated_keys(*buckets: pa.Array) -> tuple[pa.Array, int]:
    """One hash bucket of a uniqueness expectation's values, from every piece of a partition: the values held
    more than once, and by how many rows."""
    return repeated_values(pa.chunked_array(buckets))


def settle(
    task: CheckTask, tallies: list[Tally], repeated: dict[tuple[int, int], list[tuple[pa.Array, int]]]
) -> dict[int, Verdict]:
    """Each partition's `Verdict` from its pieces' tallies (in `task.pieces` order) and, per (partition,
    uniqueness expectation), every bucket's `repeated_keys`."""
    check, merged = validator(task), dict[int, Tally]()
    for piece, tally in zip(task.pieces, tallies):
        merged.setdefault(piece.partition, Tally()).merge(tally)
    verdicts = {}
    for partition, tally in merged.items():
        found = {}
        for k in check.keys:
            found_buckets = repeated[(partition, k)]
            found[k] = (
                pa.concat_arrays([values for values, _ in found_buckets]),
                sum(rows for _, rows in found_buckets),
            )
        verdicts[partition] = check.verdict(tally, found)
    return verdicts


def streams_with_verdicts(task: CheckTask) -> bool:
    """Whether the inline engine settles each partition's verdicts before checking it (`partition_verdicts`), so
    that its rows stream batch by batch: the contract has partition-wide expectations that merge, and partitions
    are cut into pieces at all (`engine.piece_bytes` 0 keeps every partition whole, with no first pass)."""
    return (
        task.contract is not None
        and task.piece_bytes > 0
        and splittable(task.contract, task.engine)
        and bool(validator(task).partition_wide)
    )


def partition_verdicts(task: CheckTask, partition: int) -> dict[int, Verdict]:
    """One partition's `Verdict`, its pieces tallied in this process with one bucket of keys (the inline engine,
    just before it checks the partition). Reading the few columns those expectations need once more costs less
    than holding the partition whole: checking it whole kept the model waiting for every partition's last row."""
    tally, gathered = Tally(), dict[int, list[pa.Array]]()
    for piece in task.pieces:
        if piece.partition == partition:
            found, keys = tally_piece(task, piece, 1)
            tally.merge(found)
            for k, (values,) in keys.items():
                gathered.setdefault(k, []).append(values)
    return {partition: validator(task).verdict(tally, {k: repeated_keys(*v) for k, v in gathered.items()})}


_validators: dict[tuple, ContractValidator] = {}  # one per process: GX contexts must not be shared by threads


def validator(task: CheckTask) -> ContractValidator:
    """This process's validator of the task's contract (built once: GX's may take seconds)."""
    key = (task.contract.sha256, task.engine, task.batch_level)
    if key not in _validators:
        _validators[key] = ContractValidator(task.contract, task.engine, list(task.batch_level), rows_only=True)
    return _validators[key]


@dataclass
class _Chunk:
    """Rows of a piece as read: file columns in the run's types, then partition columns; each file's rows in it
    (start, end, and the file's row index of the first); the reasons of rows whose value does not fit its type."""

    table: pa.Table
    spans: dict[str, tuple[int, int, int]]
    reasons: list[Reasons | None]


def _chunks(task: CheckTask, piece: Piece, columns: list[str], rows: int | None = None) -> Iterator[_Chunk]:
    """The piece's rows, `rows` at a time, or each file's share whole (`rows` None)."""
    partition = task.partitions[piece.partition][0]
    schema = pa.schema([task.file_schema.field(c) for c in columns])
    for path, groups, first in piece.parts:
        try:
            if rows is None:
                whole = len(groups) == len(task.row_groups[path])
                tables: Iterable[pa.Table] = [read_columns(path, columns, None if whole else groups)]
            else:
                tables = read_batches(path, columns, groups, rows)
            for table in tables:
                table, unfit = conform(table, schema, path)
                for column, value in partition:
                    table = table.append_column(column, pa.repeat(pa.scalar(value, pa.string()), table.num_rows))
                yield _Chunk(table, {path: (0, table.num_rows, first)}, unfit)
                first += table.num_rows
        except (OSError, pa.ArrowException) as exc:  # a corrupt page: its footer read fine at plan time
            raise RuntimeFailure(
                f"input file {redact_uri(path)} (partition {partition_label(partition)}) cannot be read: "
                f"{_printable(exc)}; nothing was committed"
            ) from None


def _whole(task: CheckTask, piece: Piece, columns: list[str]) -> _Chunk:
    """The piece's rows as one chunk: its files' shares, one after the other."""
    spans, start, reasons, tables = {}, 0, [], []
    for chunk in _chunks(task, piece, columns):
        ((path, (_, end, first)),) = chunk.spans.items()
        spans[path] = (start, start + end, first)
        start += end
        reasons += chunk.reasons
        tables.append(chunk.table)
    return _Chunk(pa.concat_tables(tables).combine_chunks(), spans, reasons)


def _with_sources(table: pa.Table, spans: dict[str, tuple[int, int, int]]) -> pa.Table:
    """Each row's file (dictionary-encoded: a few bytes a row) and position in it, so that the writer can
    read a failing row back whole for the quarantine table without every column travelling with every row."""
    files = list(spans)
    counts = [end - start for start, end, _ in spans.values()]
    indices = pa.array(np.repeat(np.arange(len(files), dtype=np.int32), counts))
    ranges = [np.arange(first, first + end - start, dtype=np.int64) for start, end, first in spans.values()]
    positions = np.concatenate(ranges) if ranges else np.array([], np.int64)
    table = table.append_column(SOURCE_FILE, pa.DictionaryArray.from_arrays(indices, pa.array(files, pa.string())))
    return table.append_column(SOURCE_ROW, pa.array(positions))


def _printable(exc: BaseException) -> str:
    """An error's text on one line, without the control bytes a corrupt file's error may quote."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(exc)).split())


def _future_event_times(table: pa.Table, column: str, latest: dt.datetime, reasons: list) -> None:
    """Rows whose event time is later than `latest` (an aware UTC time; a naive column is read as UTC)."""
    values = table.column(column)
    kind = values.type
    bound = pa.scalar(latest.date()) if pa.types.is_date(kind) else pc.cast(pa.scalar(latest), kind, safe=False)
    mask = pc.fill_null(pc.greater(values, bound), False)
    if not pc.any(mask).as_py():
        return
    for i in np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist():
        late = values[i].as_py()
        add_reason(reasons, i, {"expectation": EVENT_TIME_IN_FUTURE, "column": column, "value": late.isoformat()})


def _out_of_range(table: pa.Table, inputs: tuple[tuple[str, str], ...], reasons: list) -> None:
    """Rows holding a model input value its declared type cannot hold: cast unchecked it would wrap around (200
    as an int8 is -56, 2^64 - 1 as an int64 is -1) or overflow (70000 as a float16 is inf). Integers that a float
    input holds only approximately are the plan's precision warning, not a row error."""
    for column, dtype in inputs:
        values = table.column(column)
        target = pa.from_numpy_dtype(np.dtype(dtype))
        if widens(values.type, target) or not _may_overflow(values, target):
            continue
        if pa.types.is_integer(target):
            _, bad = cast_values(values, target)
        else:  # a float: too large a magnitude (a finite value; infinities stay what they are)
            numbers = pc.cast(values, pa.float64(), safe=False)
            too_large = pc.greater(pc.abs(numbers), float(np.finfo(target.to_pandas_dtype()).max))
            bad = pc.fill_null(pc.and_(pc.is_finite(numbers), too_large), False).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(bad).tolist():
            unfit = f"{values[i].as_py()} does not fit {dtype}"
            add_reason(reasons, i, {"expectation": OUT_OF_RANGE, "column": column, "value": unfit})


def _may_overflow(values: pa.ChunkedArray, target: pa.DataType) -> bool:
    """Whether some value of `values` may lie outside what the numeric `target` holds (one min/max pass)."""
    kind = values.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        return False
    dtype = target.to_pandas_dtype()
    if values.null_count == len(values):
        return False
    if pa.types.is_integer(kind) and pa.types.is_floating(target) and float(np.finfo(dtype).max) >= 2.0**kind.bit_width:
        return False
    bounds = pc.min_max(values)
    low, high = float(bounds["min"].as_py()), float(bounds["max"].as_py())
    info = np.iinfo(dtype) if pa.types.is_integer(target) else np.finfo(dtype)
    return bool(low < float(info.min) or high > float(info.max))


def _null_inputs(table: pa.Table, columns: tuple[str, ...], reasons: list) -> None:
    """Rows whose model inputs are null or NaN cannot be scored, contract or not: give them a reason."""
    for column in columns:
        mask = pc.is_null(table.column(column), nan_is_null=True)
        if not pc.any(mask).as_py():
            continue
        for i in np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist():
            add_reason(reasons, i, {"expectation": NULL_INPUT, "column": column, "value": "null"})
