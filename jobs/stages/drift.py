"""Files that fail whole: a file lacking a column the run reads, or holding one in a type no cast reaches the
run's type from (`jobs.column_types`). Any other type is cast value by value by the check stage instead.

They are found from the footers at plan time and never enter the Ray pipeline (which would fail to merge
their schema). Their rows fail the contract whole, each with the drift as its reason, and are quarantined
with every value that casts to the run's type (null where one does not).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.column_types import cast_values, conform
from jobs.columns import QUARANTINED_AT, REASON_TYPE, REASONS, RUN_ID, SOURCE_FILE
from jobs.inputs import InputFile
from jobs.stages.sink import WrittenFiles, quarantine
from jobs.storage import filesystem
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
        drifted_columns = [c for c in raw.column_names if c in {r["column"] for r in reasons}]
        rows, unfit = conform(raw.drop_columns(drifted_columns), file_schema, f.path)
        for column in drifted_columns:  # the values that cast, for the record: the reason already fails the row
            rows = rows.append_column(column, cast_values(raw.column(column), file_schema.field(column).type)[0])
        rows = rows.append_column(REASONS, pa.array([reasons + (more or []) for more in unfit], REASON_TYPE))
        written.count_failed(rows)
        if target is not None:
            quarantine(written, target, _columns(rows, f, target.schema), run_id, DRIFT_TASK)
    return written


def _read(f: InputFile, file_schema: pa.Schema) -> pa.Table:
    """The file's columns the run reads (those it has)."""
    fs, path = filesystem(f.path)
    held = f.schema.names if f.schema is not None else []  # read from its footer at plan time
    columns = [c for c in file_schema.names if c in held]
    with fs.open_input_file(path) as handle:
        return pq.read_table(handle, columns=columns).replace_schema_metadata(None)


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
