"""Schema drift: files whose columns differ from the rest of the input (missing, or of another type).

They are found from the footers at plan time and never enter the Ray pipeline (which would fail to merge
their schema). Their rows fail the contract whole, each with the drift as its reason, and are quarantined
with every value that still casts to the expected type; the others are kept in the reason's `value`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.columns import QUARANTINED_AT, REASON_TYPE, REASONS, RUN_ID, SOURCE_FILE
from jobs.inputs import InputFile
from jobs.stages.sink import WrittenFiles, quarantine
from jobs.storage import filesystem
from jobs.tables.delta import TableTarget

DRIFT_TASK = 99_999  # file-name marker of rows quarantined by the driver rather than a write task


def fail_drifted(
    files: list[InputFile],
    drifted: dict[str, list[dict[str, str]]],
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
        rows = _read(f).append_column(REASONS, pa.repeat(pa.scalar(reasons, REASON_TYPE), f.num_rows))
        written.count_failed(rows)
        if target is not None:
            quarantine(written, target, _conform(rows, f, target.schema), run_id, DRIFT_TASK)
    return written


def _read(f: InputFile) -> pa.Table:
    fs, path = filesystem(f.path)
    with fs.open_input_file(path) as handle:
        return pq.read_table(handle)


def _cast(values: pa.ChunkedArray, type_: pa.DataType) -> pa.Array:
    """Cast a column, value by value where the whole column does not cast."""
    try:
        return pc.cast(values, type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    cast = []
    for value in values:
        try:
            cast.append(value.cast(type_).as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cast.append(None)
    return pa.array(cast, type_)


def _conform(rows: pa.Table, f: InputFile, schema: pa.Schema) -> pa.Table:
    """The quarantine table's columns: cast where possible, null where the value cannot be cast."""
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
            columns[field.name] = _cast(rows.column(field.name), field.type)
        else:
            columns[field.name] = pa.nulls(rows.num_rows, field.type)
    return pa.table(columns)
