"""Files that fail whole: a file lacking a column the run reads, or holding one in a type no cast reaches the
run's type from (`jobs.column_types`). Any other type is cast value by value by the check stage instead.

They are found from the footers at plan time and never enter the Ray pipeline (which would fail to merge
their schema). Their rows fail the contract whole, each with the drift as its reason, and are quarantined
with their values in the run's types (a drifted column: when all its values cast, else null).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from jobs.column_types import conform
from jobs.columns import QUARANTINED_AT, REASON_TYPE, REASONS, RUN_ID, SOURCE_FILE
from jobs.inputs import InputFile, partition_label, read_columns
from jobs.stages.sink import WrittenFiles, quarantine
from jobs.tables.delta import TableTarget

DRIFT_TASK = 99_999  # file-name marker of rows quarantined by the driver rather than a write task


def fail_drifted(
    files: list[InputFile],
    drifted: dict[str, list[dict[str, str]]],
    file_schema: pa.Schema,
    target: TableTarget | None,
    run_id: str,
) -> WrittenFiles:
    """Count (and, with a quarantine target, write) every row of every drifted file."""
    written = WrittenFiles()
    for f in files:
        reasons = drifted.get(f.path)
        if not reasons:
            continue
        written.rows_seen += f.num_rows
        raw = _read(f, file_schema)
        named = {r["column"] for r in reasons}
        drifted_columns = [c for c in raw.column_names if c in named]
        rows, unfit = conform(raw.drop_columns(drifted_columns), file_schema, f.path)
        for column in drifted_columns:  # for the record: the reason already fails the row
            rows = rows.append_column(column, _as_run_type(raw.column(column), file_schema.field(column).type))
        rows = rows.append_column(REASONS, pa.array([reasons + (more or []) for more in unfit], REASON_TYPE))
        written.count_failed(rows, label=partition_label(f.partition))
        if target is not None:
            quarantine(written, target, _columns(rows, f, target.schema), run_id, DRIFT_TASK)
    return written


def _read(f: InputFile, file_schema: pa.Schema) -> pa.Table:
    """The file's columns the run reads (those it has), and as many rows as the file has even when it has none
    of those columns."""
    held = f.schema.names if f.schema is not None else []  # read from its footer at plan time
    columns = [c for c in file_schema.names if c in held]
    if not columns:
        return pa.table({"_": pa.nulls(f.num_rows)}).drop_columns(["_"])
    return read_columns(f.path, columns)


def _as_run_type(values: pa.ChunkedArray, kind: pa.DataType) -> pa.ChunkedArray:
    """A drifted column in the run's type when all its values cast at once (text digits as numbers), else nulls:
    its type is in the row's reasons, its values in the file."""
    try:
        return pc.cast(values, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.chunked_array([pa.nulls(len(values), kind)])


def _columns(rows: pa.Table, f: InputFile, schema: pa.Schema) -> pa.Table:
    """The quarantine table's columns (but the run's and the time, which `quarantine` adds); null where the
    file has no value."""
    partition = dict(f.partition)
    columns = {}
    for field in schema:
        if field.name in (RUN_ID, QUARANTINED_AT):
            continue
        if field.name in partition:
            columns[field.name] = pa.repeat(pa.scalar(partition[field.name], pa.string()), rows.num_rows)
        elif field.name == SOURCE_FILE:
            columns[field.name] = pa.repeat(pa.scalar(f.path, pa.string()), rows.num_rows)
        elif field.name in rows.column_names:
            columns[field.name] = rows.column(field.name)
        else:
            columns[field.name] = pa.nulls(rows.num_rows, field.type)
    return pa.table(columns)
