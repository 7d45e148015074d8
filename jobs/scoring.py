"""The actor-pool stage: check a batch against the contract, score the rows that pass, add lineage.

Rows that fail the contract leave with their reasons, so the writer can count and quarantine every one
of them: no row leaves this stage unaccounted for. Under `on_failure: warn` they are scored too.
With quarantine on, the failing rows' original columns travel as one Arrow IPC payload per batch.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.contracts import Contract, ContractValidator, expectation_key
from jobs.models import InputBinding, ModelBinding, OutputBinding
from jobs.runtimes import open_runtime

REASONS = "_reasons"
EVENT_TIME = "_event_time"
QUARANTINED = "_quarantined_rows"  # on the first row of a batch: its failing rows, as an Arrow IPC stream
SOURCE_FILE = "_source_file"
LINEAGE_FIELDS = [
    pa.field("run_id", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("scored_at", pa.timestamp("us", tz="UTC")),
]
REASON_TYPE = pa.list_(pa.struct([("expectation", pa.string()), ("column", pa.string()), ("value", pa.string())]))


@dataclass(frozen=True)
class ScoringTask:
    """Everything an actor needs, built once on the driver. The model travels as an object-store ref."""

    model_ref: object
    model_runtime: str
    model_suffix: str
    model_version: str
    binding: ModelBinding
    contract: Contract | None
    on_failure: str
    contract_engine: str
    batch_level: tuple[str, ...]
    run_id: str
    id_column: str
    partition_columns: tuple[str, ...]
    event_time_column: str | None
    threads: int
    use_gpu: bool


class ScoreBatches:
    """A Ray Data callable class: one model session and one GX context per actor."""

    def __init__(self, task: ScoringTask) -> None:
        import ray

        self.task = task
        self.validator = (
            ContractValidator(task.contract, task.contract_engine, task.batch_level) if task.contract else None
        )
        self.runtime = open_runtime(
            task.model_runtime,
            ray.get(task.model_ref),
            task.model_suffix,
            [o.name for o in task.binding.outputs],
            task.use_gpu,
            task.threads,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        task = self.task
        rows = batch.num_rows
        failed = np.zeros(rows, dtype=bool)
        reasons: list = [None] * rows
        if self.validator is not None and rows:
            # `path` is added by the reader for the quarantine table; the contract sees the file's columns.
            validation = self.validator.validate(batch.drop_columns(["path"]) if "path" in batch.column_names
                                                 else batch)
            failed = validation.failed
            for i, found in validation.reasons.items():
                reasons[i] = found
        unscorable = _null_inputs(batch, task.binding.input_columns, reasons)
        failed_to_score = unscorable if task.on_failure == "warn" else failed | unscorable
        failed = failed | unscorable
        passed = batch.filter(pa.array(~failed_to_score)) if failed_to_score.any() else batch
        scores = score_table(self.runtime, task.binding, passed) if passed.num_rows else {}

        columns: dict[str, pa.Array] = {
            task.id_column: batch.column(task.id_column),
            **{c: batch.column(c).cast(pa.string()) for c in task.partition_columns},
        }
        valid_positions = np.flatnonzero(~failed_to_score)
        for field in task.binding.output_fields():
            values = scores.get(field.name)
            columns[field.name] = _spread(values, valid_positions, rows, field.type)
        lineage = (task.run_id, task.model_version, dt.datetime.now(dt.timezone.utc))
        for field, value in zip(LINEAGE_FIELDS, lineage):
            columns[field.name] = pa.array([value] * rows, field.type)
        if task.event_time_column:
            columns[EVENT_TIME] = batch.column(task.event_time_column)
        columns[REASONS] = pa.array(reasons, REASON_TYPE)
        if task.on_failure == "quarantine":
            columns[QUARANTINED] = _quarantine_payload(batch, failed, columns[REASONS])
        return pa.table(columns)


class CheckBatches:
    """`score validate`: the contract check alone; one summary row per batch (rows, failures, examples)."""

    def __init__(self, contract: Contract, engine: str, batch_level: tuple[str, ...] = ()) -> None:
        self.validator = ContractValidator(contract, engine, batch_level)

    def __call__(self, batch: pa.Table) -> pa.Table:
        validation = self.validator.validate(batch)
        failures, examples = {}, {}
        for e in validation.per_expectation:
            if e["rows_failed"]:
                key = expectation_key(e["expectation"], e["column"])
                failures[key], examples[key] = e["rows_failed"], e["examples"]
        return pa.table({"rows": [batch.num_rows], "rows_failed": [int(validation.failed.sum())],
                         "failures": [json.dumps(failures)], "examples": [json.dumps(examples)]})


NULL_INPUT = "model_input_not_null"


def _null_inputs(batch: pa.Table, columns: list[str], reasons: list) -> np.ndarray:
    """Rows whose model inputs are null or NaN cannot be scored, contract or not: flag them with a reason."""
    unscorable = np.zeros(batch.num_rows, dtype=bool)
    for column in columns:
        mask = pc.is_null(batch.column(column), nan_is_null=True)
        if not pc.any(mask).as_py():
            continue
        nulls = mask.to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(nulls).tolist():
            reasons[i] = (reasons[i] or []) + [{"expectation": NULL_INPUT, "column": column, "value": "null"}]
        unscorable |= nulls
    return unscorable


def _quarantine_payload(batch: pa.Table, failed: np.ndarray, reasons: pa.Array) -> pa.Array:
    """The failing rows with all their original columns and reasons, serialised on the batch's first row."""
    payload: list[bytes | None] = [None] * batch.num_rows
    if failed.any():
        mask = pa.array(failed)
        rows = batch.filter(mask).append_column(REASONS, reasons.filter(mask))
        if "path" in rows.column_names:
            rows = rows.rename_columns([SOURCE_FILE if c == "path" else c for c in rows.column_names])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, rows.schema) as writer:
            writer.write_table(rows)
        payload[0] = sink.getvalue().to_pybytes()
    return pa.array(payload, pa.binary())


def build_feeds(binding: ModelBinding, table: pa.Table) -> dict[str, np.ndarray]:
    """Columns -> model inputs, cast to the declared element type, stacked in the declared order."""
    return {b.name: _feed(b, table) for b in binding.inputs}


def _feed(binding: InputBinding, table: pa.Table) -> np.ndarray:
    dtype = object if binding.dtype == "string" else np.dtype(binding.dtype)
    arrays = [table.column(c).to_numpy(zero_copy_only=False).astype(dtype, copy=False) for c in binding.columns]
    if binding.rank == 1:
        return arrays[0]
    return np.stack(arrays, axis=1)


def score_table(runtime, binding: ModelBinding, table: pa.Table) -> dict[str, pa.Array]:
    """Score one table; returns one Arrow array per output column. Shared by the actors and by tests."""
    results = runtime.run(build_feeds(binding, table))
    out: dict[str, pa.Array] = {}
    for ob in binding.outputs:
        out.update(_output_columns(ob, np.asarray(results[ob.name]), table.num_rows))
    return out


def _output_columns(binding: OutputBinding, values: np.ndarray, rows: int) -> dict[str, pa.Array]:
    if values.shape[0] != rows:
        raise ValueError(f"model output {binding.name!r} has {values.shape[0]} rows for {rows} input rows")
    if binding.per_index:
        values = values.reshape(rows, -1)
        return {c: pa.array(values[:, i]) for i, c in enumerate(binding.columns) if c is not None}
    if binding.as_list:
        values = values.reshape(rows, -1)
        flat = pa.array(values.ravel())
        return {binding.columns[0]: pa.FixedSizeListArray.from_arrays(flat, values.shape[1]).cast(pa.list_(flat.type))}
    return {binding.columns[0]: pa.array(values.reshape(rows))}


def _spread(values: pa.Array | None, positions: np.ndarray, rows: int, type_: pa.DataType) -> pa.Array:
    """Place the scores of the passing rows back at their positions; failed rows get nulls."""
    if values is None:
        return pa.nulls(rows, type_)
    values = values.cast(type_)
    if len(positions) == rows:
        return values
    index = np.full(rows, -1, dtype=np.int64)
    index[positions] = np.arange(len(positions))
    return pc.take(values, pa.array(index, mask=index < 0))
