"""The write stage: workers write Parquet files into the table folder; nothing is visible until the driver
commits them to the Delta log in one transaction (`jobs.tables.delta.commit`).

Ray Data hands each write task about `output.target_file_mb` of scored rows (`min_bytes_per_write`); the
task gathers them per input partition and writes one file per input partition (more when one partition
fills a file), instead of a file per scored batch. Each file's add action carries min/max/null-count
statistics of its data columns, so readers skip files (`customer_id = 42` opens one file, not all).

Each write task returns small descriptions (file path, size, partition values, row counts, contract
reasons, event-time watermark); the driver merges them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import hive
from jobs.column_types import conform, stored
from jobs.columns import (
    CHALLENGER,
    DEVICE,
    EVENT_TIME,
    MODEL_VERSION,
    NULL_INPUT,
    QUARANTINED_AT,
    REASONS,
    RUN_ID,
    SOURCE_FILE,
    SOURCE_ROW,
)
from jobs.contracts.suite import expectation_key
from jobs.hive import PartitionValue
from jobs.inputs import partition_label, read_columns
from jobs.monitoring.agreement import Agreement, batch_agreement, merge_agreement
from jobs.monitoring.profiles import ColumnProfile, Profiling, merge_profiles
from jobs.spec.schema import TARGET_FILE_MB
from jobs.storage import filesystem
from jobs.tables.delta import TableTarget, run_marker

NOT_NULL = "expect_column_values_to_not_be_null"  # the contract's own rule for the nulls NULL_INPUT also refuses


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
    rows_failed_by_partition: Counter = field(default_factory=Counter)  # input partition label -> failing rows
    reasons_by_partition: dict[str, Counter] = field(default_factory=dict)  # label -> "expectation(column)" -> rows
    examples: dict[str, list[str]] = field(default_factory=dict)  # same key -> up to 3 observed values
    watermarks: dict[str, str] = field(default_factory=dict)  # partition label -> max event time (ISO)
    devices: Counter = field(default_factory=Counter)  # where the actors ran the model -> rows
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds its workers spent on it, summed
    # input partition label -> column -> profile of the scored rows' model inputs and outputs (monitoring.drift)
    profiles: dict[str, dict[str, ColumnProfile]] = field(default_factory=dict)
    challenger_files: list[dict] = field(default_factory=list)  # model.challenger's scores, for its own table
    # segment -> output column -> sums of the challenger's agreement with the champion (jobs.monitoring.agreement)
    agreement: dict[str, dict[str, Agreement]] = field(default_factory=dict)

    def merge(self, other: WrittenFiles) -> None:
        self.files += other.files
        self.quarantine_files += other.quarantine_files
        self.challenger_files += other.challenger_files
        merge_agreement(self.agreement, other.agreement)
        self.rows_seen += other.rows_seen
        self.rows_scored += other.rows_scored
        self.rows_failed += other.rows_failed
        self.rows_quarantined += other.rows_quarantined
        self.reasons.update(other.reasons)
        self.rows_failed_by_partition.update(other.rows_failed_by_partition)
        for label, counts in other.reasons_by_partition.items():
            self.reasons_by_partition.setdefault(label, Counter()).update(counts)
        self.devices.update(other.devices)
        self.add_seconds(other.seconds)
        for key, values in other.examples.items():
            self.add_examples(key, values)
        for label, mark in other.watermarks.items():
            self._watermark(label, mark)
        for label, profiles in other.profiles.items():
            merge_profiles(self.profiles.setdefault(label, {}), profiles)

    def add_seconds(self, seconds: dict[str, float]) -> None:
        for stage, spent in seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + spent

    def count_failed(self, failed: pa.Table, partitioning: tuple[str, ...] = (), label: str | None = None) -> None:
        """Count each row's reasons, in all and per input partition (`label`, else read from the rows' `partitioning`
        columns), for the contract report. A null the contract's not-null expectation failed also carries the model's
        own null rule (`NULL_INPUT`, which keeps the row from the model under on_failure: warn): counted once."""
        self.rows_failed += failed.num_rows
        if not failed.num_rows:
            return
        if label is not None or not partitioning:
            groups = [(label, failed)]
        else:
            groups = [(partition_label(tuple(values.items())), rows) for values, rows in _groups(failed, partitioning)]
        for where, rows in groups:
            by_key: Counter = Counter()  # counted per partition only where the partition is known
            if where is not None:
                by_key = self.reasons_by_partition.setdefault(where, Counter())
                self.rows_failed_by_partition[where] += rows.num_rows
            for row_reasons in rows.column(REASONS).to_pylist():
                refused = {r["column"] for r in row_reasons if r["expectation"] == NOT_NULL}
                for reason in row_reasons:
                    if reason["expectation"] == NULL_INPUT and reason["column"] in refused:
                        continue
                    key = expectation_key(reason["expectation"], reason["column"])
                    self.reasons[key] += 1
                    by_key[key] += 1
                    self.add_examples(key, [reason["value"]])

    def count_devices(self, block: pa.Table) -> None:
        """Rows by the device their actor scored on (`DEVICE`: one small dictionary per scored batch)."""
        for chunk in block.column(DEVICE).chunks:
            counts = np.bincount(chunk.indices.to_numpy(zero_copy_only=False), minlength=len(chunk.dictionary))
            for device, rows in zip(chunk.dictionary.to_pylist(), counts.tolist()):
                if rows:
                    self.devices[device] += rows

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


class TableWriter:
    """Splits the scored rows: output rows to the output table, failing rows to the quarantine table, in
    files of about `target_file_bytes` (Arrow size in memory; compressed Parquet is smaller). Free of Ray:
    the Ray Data write tasks (`jobs.engines.pipeline.DeltaFilesSink`) and the inline engine both call `write`."""

    def __init__(
        self,
        output: TableTarget,
        quarantine: TableTarget | None,
        on_failure: str,
        run_id: str,
        file_schema: pa.Schema | None = None,
        target_file_mb: float = TARGET_FILE_MB,
        profiles: RowProfiles | None = None,
        challenger: tuple[TableTarget, str] | None = None,
        segments: tuple[str, ...] = (),
    ) -> None:
        self.output = output
        self.quarantine = quarantine
        self.on_failure = on_failure
        self.run_id = run_id
        self.file_schema = file_schema or pa.schema([])  # how a failing row is read back, whole, for the quarantine
        self.target_file_bytes = max(1, int(target_file_mb * 2**20))
        self.profiles = profiles  # None: monitoring is off, or the rows come profiled (the inline engine)
        self.challenger = challenger  # model.challenger's table and model version
        self.segments = segments

    def write(self, blocks: Iterable[pa.Table], task: int, in_order: bool = False) -> WrittenFiles:
        """Write `blocks` (task `task`'s share of the scored rows) and describe what was written. `in_order`:
        the blocks come partition after partition (the inline engine's single writer sees the whole run), so a
        partition's last file is written when the next partition begins, not held until the end."""
        written = WrittenFiles()
        scored_rows = _PartitionRows(self.output.input_partitioning, self.target_file_bytes, in_order)
        challenged = _PartitionRows(self.output.input_partitioning, self.target_file_bytes, in_order)
        failing: list[pa.Table] = []
        for block in blocks:
            if block.num_rows == 0:
                continue
            written.rows_seen += block.num_rows
            written.count_devices(block)
            if block.column(REASONS).null_count == block.num_rows:  # every row passed: no copies
                failed, scored = block.slice(0, 0), block
            else:
                failed_mask = pc.is_valid(block.column(REASONS))
                failed = block.filter(failed_mask)
                scored = block if self.on_failure == "warn" else block.filter(pc.invert(failed_mask))
            written.count_failed(failed, self.output.input_partitioning)
            if self.challenger is not None:
                scored = self._compare(written, scored, challenged, task)
            if self.profiles is not None:
                scored = self.profiles.profile(scored, written.profiles)
            for values, rows in scored_rows.add(scored):
                self._write_scored(written, values, rows, task)
            if self.quarantine is not None and failed.num_rows:
                failing.append(failed)
                if sum(t.nbytes for t in failing) >= self.target_file_bytes:
                    self._quarantine(written, failing, task)
        for values, rows in scored_rows.drain():
            self._write_scored(written, values, rows, task)
        for values, rows in challenged.drain():
            self._write_challenger(written, values, rows, task)
        self._quarantine(written, failing, task)
        return written

    def _compare(self, written: WrittenFiles, scored: pa.Table, challenged: _PartitionRows, task: int) -> pa.Table:
        """Add up the challenger's agreement with the champion, gather its scores (the champion's rows with the
        challenger's values and version) for its table; return the rows without the challenger's columns."""
        pairs = {c[len(CHALLENGER) :]: c for c in scored.column_names if c.startswith(CHALLENGER)}
        merge_agreement(written.agreement, batch_agreement(scored, pairs, list(self.segments)))
        target, version = self.challenger
        version_type = target.schema.field(MODEL_VERSION).type
        replaced = {column: scored.column(other) for column, other in pairs.items()}
        replaced[MODEL_VERSION] = pa.repeat(pa.scalar(version, version_type), scored.num_rows)
        rows = scored.drop_columns(list(pairs.values()))
        for column, values in replaced.items():
            rows = rows.set_column(rows.schema.get_field_index(column), column, values)
        for values, part in challenged.add(rows):
            self._write_challenger(written, values, part, task)
        return scored.drop_columns(list(pairs.values()))

    def _write_challenger(
        self, written: WrittenFiles, partition: dict[str, PartitionValue], rows: pa.Table, task: int
    ) -> None:
        target = self.challenger[0]
        run_id = pa.scalar(self.run_id, target.schema.field(RUN_ID).type)
        rows = rows.append_column(RUN_ID, pa.repeat(run_id, rows.num_rows))
        written.challenger_files.append(write_file(target, partition, rows, self.run_id, task))

    def _write_scored(
        self, written: WrittenFiles, partition: dict[str, PartitionValue], rows: pa.Table, task: int
    ) -> None:
        """One file of scored rows, stamped with the run's id here: the scoring stage may run before the run has
        one (the inline engine scores while the MLflow run opens)."""
        run_id = pa.scalar(self.run_id, self.output.schema.field(RUN_ID).type)
        rows = rows.append_column(RUN_ID, pa.repeat(run_id, rows.num_rows))
        file = write_file(self.output, partition, rows, self.run_id, task)
        written.files.append(file)
        written.rows_scored += file["rows"]
        written.note_event_time(partition_label(tuple(file["partition_values"].items())), rows)

    def _quarantine(self, written: WrittenFiles, failing: list[pa.Table], task: int) -> None:
        """Write the failing rows gathered so far (read back whole from their input files) and forget them."""
        if failing:
            rows = self._read_back(pa.concat_tables(failing, promote_options="permissive"))
            quarantine(written, self.quarantine, rows, self.run_id, task)
            failing.clear()

    def _read_back(self, failed: pa.Table) -> pa.Table:
        """The failing rows with every column the job read, from their files (few rows, so reading them
        back is cheaper than carrying every column of every row through the scoring stage)."""
        files = failed.column(SOURCE_FILE).cast(pa.string())
        parts = []
        for path in pc.unique(files).to_pylist():
            rows = failed.filter(pc.equal(files, path))
            part = read_columns(path, self.file_schema.names).take(rows.column(SOURCE_ROW))
            part, _ = conform(part, self.file_schema, path)  # a value that does not fit: null, its reason kept
            for column in self.quarantine.input_partitioning:
                part = part.append_column(column, rows.column(column))
            part = part.append_column(SOURCE_FILE, pa.repeat(pa.scalar(path, pa.string()), part.num_rows))
            parts.append(part.append_column(REASONS, rows.column(REASONS)))
        return pa.concat_tables(parts)


def write_file(
    target: TableTarget, partition: dict[str, PartitionValue], group: pa.Table, run_id: str, task: int
) -> dict:
    """Write one Parquet file of `target` holding the rows of one input `partition` and describe it for the
    commit. Output partition columns live in the path; the other input partition columns get min/max
    statistics equal to their value, by which a later run finds the rows of that input partition
    (`jobs.tables.delta.commit`); every other primitive column gets its min/max/null count for readers."""
    fs, root = filesystem(target.uri)
    data_schema = pa.schema([f for f in target.schema if f.name not in target.partition_by])
    data = stored(group.select(data_schema.names), data_schema)
    values = {c: partition[c] for c in target.partition_by}
    folder = hive.folder(values.items())  # as delta-rs and pyarrow name partition folders
    rel = f"{folder}/" if folder else ""
    rel += f"part-{task:05d}{run_marker(run_id)}{uuid.uuid4().hex[:12]}.parquet"
    path = f"{root}/{rel}"
    if folder:
        fs.create_dir(f"{root}/{folder}", recursive=True)
    with fs.open_output_stream(path) as out:
        pq.write_table(data, out, compression="zstd")
    size = fs.get_file_info(path).size
    within = {c: v for c, v in partition.items() if c not in target.partition_by}
    return {
        "path": rel,
        "size": size,
        "partition_values": values,
        "modification_time": int(time.time() * 1000),
        "stats": json.dumps(file_stats(data, within)),
        "rows": data.num_rows,
    }


def file_stats(data: pa.Table, fixed: dict[str, PartitionValue]) -> dict[str, Any]:
    """Delta add-action statistics of one file: numRecords, and nullCount, min and max of every column but
    nested ones (`fixed` columns: their one value).

    Readers trust these bounds to skip files, and delta-rs's pyarrow dataset (`score query`, DuckDB, the
    README's recipes) reads a column missing from minValues as "no row can match": a filter on it returned
    no rows at all. So every column with values gets bounds, never narrower than the data (timestamps
    widened to whole milliseconds, long strings cut to a prefix and a max above anything with that prefix,
    NaN ignored as Arrow compares it, infinities clamped to the largest float); a file with a column of a
    type that has no bound in Delta's JSON (decimal, binary, ...) gets none, bar its `fixed` columns."""
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    unbounded = False
    for field_ in data.schema:
        if pa.types.is_nested(field_.type):
            continue
        column = data.column(field_.name)
        nulls[field_.name] = column.null_count
        if column.null_count == len(column):
            continue  # no values: readers infer "all null" from nullCount
        bounds = _bounds(column, field_.type)
        if bounds is None:
            unbounded = True
        else:
            low[field_.name], high[field_.name] = bounds
    if unbounded:
        low, high = {}, {}
    known = {column: value for column, value in fixed.items() if value is not None}  # a null one: its nullCount
    low.update(known)
    high.update(known)
    stats: dict[str, Any] = {"numRecords": data.num_rows, "nullCount": nulls}
    if low:
        stats.update(minValues=low, maxValues=high)
    return stats


MAX_STRING_STAT = 256  # characters of a string bound (longer values: a prefix, and a max above it)
_LARGEST = sys.float_info.max


def _bounds(column: pa.ChunkedArray, kind: pa.DataType) -> tuple[Any, Any] | None:
    """(min, max) of one column with values, as the Delta log's JSON spells them; None for other types."""
    if not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_date(kind)
        or pa.types.is_timestamp(kind)
    ):
        return None
    bounds = pc.min_max(column)
    low, high = bounds["min"], bounds["max"]
    if pa.types.is_floating(kind):
        low, high = low.as_py(), high.as_py()
        if math.isnan(low):  # only NaN: no comparison matches it
            return -_LARGEST, _LARGEST
        return max(low, -_LARGEST), min(high, _LARGEST)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        low, high = low.as_py(), high.as_py()
        if len(high) > MAX_STRING_STAT:
            high = high[:MAX_STRING_STAT] + "\U0010ffff"
        return low[:MAX_STRING_STAT], high
    if pa.types.is_date(kind):
        return low.as_py().isoformat(), high.as_py().isoformat()
    if pa.types.is_timestamp(kind):
        millis = pa.timestamp("ms", kind.tz)
        low = pc.floor_temporal(low, unit="millisecond").cast(millis).as_py()
        high = pc.ceil_temporal(high, unit="millisecond").cast(millis).as_py()
        return _timestamp_text(low, kind.tz), _timestamp_text(high, kind.tz)
    return low.as_py(), high.as_py()  # integers, booleans


def _timestamp_text(moment: dt.datetime, tz: str | None) -> str:
    """ISO with milliseconds, in UTC with `Z` for a zoned column, as written for a `timestamp_ntz` one."""
    if tz is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + ("Z" if tz is not None else "")


def quarantine(written: WrittenFiles, target: TableTarget, rows: pa.Table, run_id: str, task: int) -> None:
    """Write failing rows (original columns and `_reasons`) to the quarantine table and count them."""
    now = dt.datetime.now(dt.UTC)
    for name, value in ((RUN_ID, run_id), (QUARANTINED_AT, now)):
        rows = rows.append_column(name, pa.repeat(pa.scalar(value, target.schema.field(name).type), rows.num_rows))
    for values, group in _groups(rows, target.input_partitioning):
        file = write_file(target, values, group, run_id, task)
        written.quarantine_files.append(file)
        written.rows_quarantined += file["rows"]


class _PartitionRows:
    """Scored rows of one write task gathered per input partition, until they fill a file."""

    def __init__(self, partitioning: tuple[str, ...], target_bytes: int, in_order: bool = False) -> None:
        self.partitioning = partitioning
        self.target_bytes = target_bytes
        self.in_order = in_order
        self.pending: dict[tuple[tuple[str, PartitionValue], ...], list[pa.Table]] = {}

    def add(self, table: pa.Table) -> Iterator[tuple[dict[str, PartitionValue], pa.Table]]:
        """Take a block's rows; yield the partitions whose gathered rows reached the target size (in order:
        also the partitions before this block's, which are complete)."""
        if table.num_rows == 0:
            return
        for values, group in _groups(table, self.partitioning):
            key = tuple(values.items())
            if self.in_order:
                for done in [k for k in self.pending if k != key]:
                    yield from self._files(dict(done), self.pending.pop(done))
            parts = self.pending.setdefault(key, [])
            parts.append(group)
            if sum(part.nbytes for part in parts) >= self.target_bytes:
                yield from self._files(values, self.pending.pop(key))

    def drain(self) -> Iterator[tuple[dict[str, PartitionValue], pa.Table]]:
        """Every partition's remaining rows (the end of the task)."""
        pending, self.pending = self.pending, {}
        for key, parts in pending.items():
            yield from self._files(dict(key), parts)

    def _files(
        self, values: dict[str, PartitionValue], parts: list[pa.Table]
    ) -> Iterator[tuple[dict[str, PartitionValue], pa.Table]]:
        """The rows cut into files of about the target size (a block may be larger than one file)."""
        rows = pa.concat_tables(parts, promote_options="permissive")
        count = max(1, round(rows.nbytes / self.target_bytes))
        step = -(-rows.num_rows // count)
        for offset in range(0, rows.num_rows, step):
            yield values, rows.slice(offset, step)


@dataclass(frozen=True)
class RowProfiles:
    """Profiles the rows the writer writes (monitoring.drift): their model inputs and outputs per input partition,
    then lets go of the input columns the scoring stage carried for it. The write tasks apply it on Ray; the
    inline engine applies it in its scoring thread, before the rows queue for the writer, which waits for the
    MLflow run: carried there, the inputs held 200 MB more at 800,000 rows and cost the run 0.5 s of system
    time (measured)."""

    profiling: Profiling
    partitioning: tuple[str, ...]
    every_row: bool  # on_failure: warn writes the failing rows too; else only the passing ones are written
    dropped: tuple[str, ...]  # carried input columns that no later step reads

    def profile(self, block: pa.Table, into: dict[str, dict[str, ColumnProfile]]) -> pa.Table:
        """Add the profiles of `block`'s rows to write into `into` (partition label -> column -> profile)."""
        rows = block
        if not self.every_row and block.column(REASONS).null_count < block.num_rows:
            wanted = list(dict.fromkeys([*self.profiling.roles, *self.partitioning]))
            rows = block.select(wanted).filter(pc.is_null(block.column(REASONS)))
        for values, group in _groups(rows, self.partitioning):
            label = partition_label(tuple(values.items()))
            merge_profiles(into.setdefault(label, {}), self.profiling.profile(group, label))
        return block.drop_columns([c for c in self.dropped if c in block.column_names])


def _groups(table: pa.Table, partition_by: tuple[str, ...]):
    """(partition values, rows) of each input partition in `table` (a block usually holds one: no copy)."""
    if not partition_by:
        yield {}, table
        return
    keys = table.select(list(partition_by)).group_by(list(partition_by)).aggregate([]).to_pylist()
    if len(keys) == 1:
        yield _values(keys[0]), table
        return
    for key in keys:
        mask = None
        for col, value in key.items():
            cond = pc.is_null(table.column(col)) if value is None else pc.equal(table.column(col), value)
            mask = cond if mask is None else pc.and_(mask, cond)
        yield _values(key), table.filter(mask)


def _values(key: dict[str, Any]) -> dict[str, PartitionValue]:
    """Partition values as text, the null partition's as None."""
    return {column: hive.value_of(value) for column, value in key.items()}
