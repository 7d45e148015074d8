"""The check stage: each input partition is read whole and judged against the contract as one Great
Expectations batch; its rows then go on, in batches, with the reasons they fail. One Ray task per partition,
beside the scoring actors: on 2 CPUs the check of the next partition overlaps the scoring of this one.

A contract's verdict is a property of the data, never of how the engine cut it: `mostly`, uniqueness and
aggregate expectations see the whole partition, whatever `scoring.batch_size` is and however a backfill
groups partitions. Table-level expectations (column set, row count) were judged from the files' footers
at plan time and arrive here as per-file reasons. Each file's columns are cast to the run's one type per
column as they are read (`jobs.column_types`): a value that does not fit fails its row. `score validate` runs
this same stage, so it fails exactly the rows `score run` fails, null model inputs included.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.column_types import Reasons, add_reason, cast_values, conform, widens
from jobs.columns import (
    EVENT_TIME_IN_FUTURE,
    NULL_INPUT,
    OUT_OF_RANGE,
    PARTITION_INDEX,
    REASON_TYPE,
    REASONS,
    SOURCE_FILE,
    SOURCE_ROW,
)
from jobs.contracts.suite import Contract, ContractValidator
from jobs.errors import RuntimeFailure
from jobs.inputs import Partition, partition_label, read_columns
from jobs.storage import redact_uri


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
    partition_bytes: int  # the largest partition's files, uncompressed: what one check task holds at most
    event_time_column: str | None = None
    latest_event_time: dt.datetime | None = None  # later event times fail their row: the plan's clock + tolerance


_validators: dict[tuple, ContractValidator] = {}  # one per process: GX contexts must not be shared by threads


def check_partitions(batch: pa.Table, task: CheckTask) -> Iterator[pa.Table]:
    """Ray Data UDF over a dataset of partition indexes: yields each partition's rows with `_reasons`."""
    for index in batch.column(PARTITION_INDEX).to_pylist():
        partition, files = task.partitions[index]
        table, spans, reasons = _read(task, partition, files)
        for path, (start, end) in spans.items():
            for i in range(start, end) if path in task.file_failures else ():
                add_reason(reasons, i, *task.file_failures[path])
        if task.contract is not None and table.num_rows:
            for i, found in _validator(task).validate(table).reasons.items():
                add_reason(reasons, i, *found)
        _null_inputs(table, task.reject_nulls, reasons)
        _out_of_range(table, task.input_types, reasons)
        if task.event_time_column and task.latest_event_time:
            _future_event_times(table, task.event_time_column, task.latest_event_time, reasons)
        if task.with_paths:
            table = _with_sources(table, spans)
        table = table.append_column(REASONS, pa.array(reasons, REASON_TYPE))
        for offset in range(0, table.num_rows, task.batch_size):
            yield table.slice(offset, task.batch_size)


def _validator(task: CheckTask) -> ContractValidator:
    key = (task.contract.sha256, task.engine, task.batch_level)
    if key not in _validators:
        _validators[key] = ContractValidator(task.contract, task.engine, list(task.batch_level), rows_only=True)
    return _validators[key]


def _read(
    task: CheckTask, partition: Partition, files: tuple[str, ...]
) -> tuple[pa.Table, dict[str, tuple], list[Reasons | None]]:
    """The partition's rows (file columns in the run's types, then partition columns), each file's row span,
    and the reasons of the rows holding a value that does not fit the run's type."""
    tables, spans, start, reasons = [], {}, 0, []
    for path in files:
        try:
            table = read_columns(path, task.file_schema.names)
        except (OSError, pa.ArrowException) as exc:  # a corrupt page: its footer read fine at plan time
            raise RuntimeFailure(
                f"input file {redact_uri(path)} (partition {partition_label(partition)}) cannot be read: "
                f"{_printable(exc)}; nothing was committed"
            ) from None
        table, unfit = conform(table, task.file_schema, path)
        reasons += unfit
        for column, value in partition:
            table = table.append_column(column, pa.repeat(pa.scalar(value, pa.string()), table.num_rows))
        tables.append(table)
        spans[path] = (start, start + table.num_rows)
        start += table.num_rows
    return pa.concat_tables(tables).combine_chunks(), spans, reasons


def _with_sources(table: pa.Table, spans: dict[str, tuple[int, int]]) -> pa.Table:
    """Each row's file (dictionary-encoded: a few bytes a row) and position in it, so that the writer can
    read a failing row back whole for the quarantine table without every column travelling with every row."""
    files = list(spans)
    counts = [end - start for start, end in spans.values()]
    indices = pa.array(np.repeat(np.arange(len(files), dtype=np.int32), counts))
    positions = np.concatenate([np.arange(n, dtype=np.int64) for n in counts]) if counts else np.array([], np.int64)
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
