"""The write stage: workers write Parquet files into the table folder; nothing is visible until the driver
commits them to the Delta log in one transaction (`jobs.tables.commit`).

Each write task returns small descriptions (file path, size, partition values, row counts, contract
reasons, event-time watermark); the driver's copy of the sink collects them in `on_write_complete`.
"""

from __future__ import annotations

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
from jobs.scoring import EVENT_TIME, REASONS
from jobs.storage import filesystem


@dataclass
class WrittenFiles:
    """What write tasks wrote and counted: each task returns one, the driver merges them."""

    files: list[dict] = field(default_factory=list)
    rows_seen: int = 0
    rows_scored: int = 0
    rows_failed: int = 0
    reasons: Counter = field(default_factory=Counter)  # "expectation(column)" -> rows
    examples: dict[str, list[str]] = field(default_factory=dict)  # same key -> up to 3 observed values
    watermarks: dict[str, str] = field(default_factory=dict)  # partition label -> max event time (ISO)

    def merge(self, other: "WrittenFiles") -> None:
        self.files += other.files
        self.rows_seen += other.rows_seen
        self.rows_scored += other.rows_scored
        self.rows_failed += other.rows_failed
        self.reasons.update(other.reasons)
        for key, values in other.examples.items():
            self._example(key, values)
        for label, mark in other.watermarks.items():
            self._watermark(label, mark)

    def count_failed(self, failed: pa.Table) -> None:
        self.rows_failed += failed.num_rows
        for row_reasons in failed.column(REASONS).to_pylist():
            for reason in row_reasons:
                key = f"{reason['expectation']}({reason['column']})" if reason["column"] else reason["expectation"]
                self.reasons[key] += 1
                self._example(key, [reason["value"]])

    def note_event_time(self, label: str, group: pa.Table) -> None:
        if EVENT_TIME in group.column_names and group.num_rows:
            mark = pc.max(group.column(EVENT_TIME)).as_py()
            if mark is not None:
                self._watermark(label, mark.isoformat())

    def _example(self, key: str, values: list[str]) -> None:
        kept = self.examples.setdefault(key, [])
        kept += [v for v in dict.fromkeys(values) if v not in kept][: 3 - len(kept)]

    def _watermark(self, label: str, mark: str) -> None:
        self.watermarks[label] = max(mark, self.watermarks.get(label, mark))


class DeltaFilesSink(Datasink):
    def __init__(self, table_uri: str, schema: pa.Schema, partition_by: list[str], run_id: str) -> None:
        self.table_uri = table_uri.rstrip("/")
        self.schema = schema
        self.partition_by = partition_by
        self.run_id = run_id
        self.written = WrittenFiles()

    def write(self, blocks: Iterable[pa.Table], ctx) -> WrittenFiles:
        fs, root = filesystem(self.table_uri)
        written = WrittenFiles()
        for block in blocks:
            if block.num_rows == 0:
                continue
            written.rows_seen += block.num_rows
            failed_mask = pc.is_valid(block.column(REASONS))
            written.count_failed(block.filter(failed_mask))
            passed = block.filter(pc.invert(failed_mask))
            written.rows_scored += passed.num_rows
            for values, group in _groups(passed, self.partition_by):
                written.files.append(self._write_file(fs, root, values, group, ctx.task_idx))
                written.note_event_time(partition_label(tuple(values.items())), group)
        return written

    def _write_file(self, fs, root: str, values: dict[str, str], group: pa.Table, task: int) -> dict:
        data_schema = pa.schema([f for f in self.schema if f.name not in self.partition_by])
        data = group.select(data_schema.names).cast(data_schema)
        folder = "/".join(f"{k}={v}" for k, v in values.items())
        rel = f"{folder}/" if folder else ""
        rel += f"part-{task:05d}-{self.run_id[:12]}-{uuid.uuid4().hex[:12]}.parquet"
        path = f"{root}/{rel}"
        if folder:
            fs.create_dir(f"{root}/{folder}", recursive=True)
        with fs.open_output_stream(path) as out:
            pq.write_table(data, out, compression="zstd")
        size = fs.get_file_info(path).size
        stats = {"numRecords": data.num_rows, "nullCount": {c: data.column(c).null_count for c in data.column_names
                                                            if not pa.types.is_nested(data.schema.field(c).type)}}
        return {
            "path": rel,
            "size": size,
            "partition_values": values,
            "modification_time": int(time.time() * 1000),
            "stats": json.dumps(stats),
            "rows": data.num_rows,
        }

    def on_write_complete(self, write_result: WriteResult) -> None:
        for part in write_result.write_returns:
            self.written.merge(part)

    def get_name(self) -> str:
        return "WriteDeltaFiles"


def _groups(table: pa.Table, partition_by: list[str]):
    if not partition_by:
        yield {}, table
        return
    keys = table.select(partition_by).group_by(partition_by).aggregate([]).to_pylist()
    for key in keys:
        mask = None
        for col, value in key.items():
            cond = pc.equal(table.column(col), value)
            mask = cond if mask is None else pc.and_(mask, cond)
        yield {k: str(v) for k, v in key.items()}, table.filter(mask)
