"""The write stage: workers write Parquet files into the table folder; nothing is visible until the driver
commits them to the Delta log in one transaction (`jobs.tables.commit`).

Each write task returns small descriptions (file path, size, partition values, row counts, contract
reasons, event-time watermark); the driver's copy of the sink collects them in `on_write_complete`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.datasource.datasink import WriteResult

from jobs.inputs import partition_label
from jobs.contracts import expectation_key
from jobs.checking import CheckTask, read_columns
from jobs.scoring import EVENT_TIME, REASONS, SOURCE_FILE, SOURCE_ROW
from jobs.storage import filesystem
from jobs.tables import TableTarget


@dataclass
class WrittenFiles:
    """What write tasks wrote and counted: each task returns one, the driver merges them."""

    files: list[dict] = field(default_factory=list)
    quarantine_files: list[dict] = field(default_factory=list)
    rows_seen: int = 0
    rows_scored: int = 0
    rows_failed: int = 0
    rows_quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)  # "expectation(column)" -> rows
    examples: dict[str, list[str]] = field(default_factory=dict)  # same key -> up to 3 observed values
    watermarks: dict[str, str] = field(default_factory=dict)  # partition label -> max event time (ISO)

    def merge(self, other: "WrittenFiles") -> None:
        self.files += other.files
        self.quarantine_files += other.quarantine_files
        self.rows_seen += other.rows_seen
        self.rows_scored += other.rows_scored
        self.rows_failed += other.rows_failed
        self.rows_quarantined += other.rows_quarantined
        self.reasons.update(other.reasons)
        for key, values in other.examples.items():
            self.add_examples(key, values)
        for label, mark in other.watermarks.items():
            self._watermark(label, mark)

    def count_failed(self, failed: pa.Table) -> None:
        self.rows_failed += failed.num_rows
        for row_reasons in failed.column(REASONS).to_pylist():
            for reason in row_reasons:
                key = expectation_key(reason["expectation"], reason["column"])
                self.reasons[key] += 1
                self.add_examples(key, [reason["value"]])

    def note_event_time(self, label: str, group: pa.Table) -> None:
        if EVENT_TIME in group.column_names and group.num_rows:
            mark = pc.max(group.column(EVENT_TIME)).as_py()
            if mark is not None:
                self._watermark(label, mark.isoformat())

    def add_examples(self, key: str, values: list[str]) -> None:
        """Keep up to three distinct observed values per failure key."""
        kept = self.examples.setdefault(key, [])
        kept += [v for v in dict.fromkeys(values) if v not in kept][: 3 - len(kept)]

    def _watermark(self, label: str, mark: str) -> None:
        self.watermarks[label] = max(mark, self.watermarks.get(label, mark))


class DeltaFilesSink(Datasink):
    """Splits each scored block: output rows to the output table, failing rows to the quarantine table."""

    def __init__(self, output: TableTarget, quarantine: TableTarget | None, on_failure: str, run_id: str,
                 source: CheckTask | None = None) -> None:
        self.output = output
        self.quarantine = quarantine
        self.on_failure = on_failure
        self.run_id = run_id
        self.source = source  # where failing rows are read back from, whole, for the quarantine table
        self.written = WrittenFiles()

    def write(self, blocks: Iterable[pa.Table], ctx) -> WrittenFiles:
        written = WrittenFiles()
        for block in blocks:
            if block.num_rows == 0:
                continue
            written.rows_seen += block.num_rows
            failed_mask = pc.is_valid(block.column(REASONS))
            failed = block.filter(failed_mask)
            written.count_failed(failed)
            scored = block if self.on_failure == "warn" else block.filter(pc.invert(failed_mask))
            for values, group in _groups(scored, self.output.input_partitioning):
                file = write_file(self.output, values, group, self.run_id, ctx.task_idx)
                written.files.append(file)
                written.rows_scored += file["rows"]
                written.note_event_time(partition_label(tuple(file["partition_values"].items())), group)
            if self.quarantine is not None and failed.num_rows:
                quarantine(written, self.quarantine, self._read_back(failed), self.run_id, ctx.task_idx)
        return written

    def _read_back(self, failed: pa.Table) -> pa.Table:
        """The failing rows with every column the job read, from their files (few rows, so reading them
        back is cheaper than carrying every column of every row through the scoring stage)."""
        files = failed.column(SOURCE_FILE).cast(pa.string())
        parts = []
        for path in pc.unique(files).to_pylist():
            rows = failed.filter(pc.equal(files, path))
            part = read_columns(path, self.source.file_columns).take(rows.column(SOURCE_ROW))
            for column in self.quarantine.input_partitioning:
                part = part.append_column(column, rows.column(column))
            part = part.append_column(SOURCE_FILE, pa.repeat(pa.scalar(path, pa.string()), part.num_rows))
            parts.append(part.append_column(REASONS, rows.column(REASONS)))
        return pa.concat_tables(parts)

    def on_write_complete(self, write_result: WriteResult) -> None:
        for part in write_result.write_returns:
            self.written.merge(part)

    def get_name(self) -> str:
        return "WriteDeltaFiles"


def write_file(target: TableTarget, partition: dict[str, str], group: pa.Table, run_id: str, task: int) -> dict:
    """Write one Parquet file of `target` holding the rows of one input `partition` and describe it for the
    commit. Output partition columns live in the path; the other input partition columns get min/max
    statistics, by which a later run finds the rows of that input partition (`jobs.tables.commit`)."""
    fs, root = filesystem(target.uri)
    data_schema = pa.schema([f for f in target.schema if f.name not in target.partition_by])
    data = group.select(data_schema.names).cast(data_schema)
    values = {c: partition[c] for c in target.partition_by}
    folder = "/".join(f"{k}={v}" for k, v in values.items())
    rel = f"{folder}/" if folder else ""
    rel += f"part-{task:05d}-{run_id[:12]}-{uuid.uuid4().hex[:12]}.parquet"
    path = f"{root}/{rel}"
    if folder:
        fs.create_dir(f"{root}/{folder}", recursive=True)
    with fs.open_output_stream(path) as out:
        pq.write_table(data, out, compression="zstd")
    size = fs.get_file_info(path).size
    within = {c: v for c, v in partition.items() if c not in target.partition_by}
    stats = {"numRecords": data.num_rows, "minValues": within, "maxValues": within,
             "nullCount": {c: data.column(c).null_count for c in data.column_names
                           if not pa.types.is_nested(data.schema.field(c).type)}}
    return {
        "path": rel,
        "size": size,
        "partition_values": values,
        "modification_time": int(time.time() * 1000),
        "stats": json.dumps(stats),
        "rows": data.num_rows,
    }


def quarantine(written: WrittenFiles, target: TableTarget, rows: pa.Table, run_id: str, task: int) -> None:
    """Write failing rows (original columns and `_reasons`) to the quarantine table and count them."""
    now = dt.datetime.now(dt.timezone.utc)
    for name, value in (("run_id", run_id), ("quarantined_at", now)):
        rows = rows.append_column(name, pa.repeat(pa.scalar(value, target.schema.field(name).type), rows.num_rows))
    for values, group in _groups(rows, target.input_partitioning):
        file = write_file(target, values, group, run_id, task)
        written.quarantine_files.append(file)
        written.rows_quarantined += file["rows"]


def _groups(table: pa.Table, partition_by: tuple[str, ...]):
    if not partition_by:
        yield {}, table
        return
    keys = table.select(list(partition_by)).group_by(list(partition_by)).aggregate([]).to_pylist()
    for key in keys:
        mask = None
        for col, value in key.items():
            cond = pc.equal(table.column(col), value)
            mask = cond if mask is None else pc.and_(mask, cond)
        yield {k: str(v) for k, v in key.items()}, table.filter(mask)
