"""The actor-pool stage: score the rows that passed the check stage and add lineage.

Rows arrive with `_reasons` from `jobs.checking` (null when a row passed). Failing rows are not scored
(under `on_failure: warn` they are, when their model inputs allow it) and leave with their reasons, so the
writer can count and quarantine every one of them: no row leaves this stage unaccounted for. With the
quarantine on, each row's file and position travel on, so the writer can read a failing row back whole.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.faults import inject
from jobs.models import InputBinding, ModelBinding, OutputBinding
from jobs.runtimes import ModelFiles, open_runtime
from jobs.text import ATTENTION_MASK, pool, token_matrix

if TYPE_CHECKING:
    from jobs.plan import Plan

REASONS = "_reasons"
EVENT_TIME = "_event_time"
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"  # the row's position in its file: how the writer reads a failing row back whole
DEVICE = "_device"  # where the row's actor ran its model ("cpu", "cuda:0 (NVIDIA H200)"): the writer counts rows by it
LINEAGE_FIELDS = [
    pa.field("run_id", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("scored_at", pa.timestamp("us", tz="UTC")),
]
REASON_TYPE = pa.list_(pa.struct([("expectation", pa.string()), ("column", pa.string()), ("value", pa.string())]))


@dataclass(frozen=True)
class ScoringTask:
    """Everything an actor needs, built once on the driver. The model travels as an object-store ref."""

    model: object  # a runtimes.ModelFiles (the model file and its ONNX external data), or an ObjectRef of one
    model_runtime: str
    model_suffix: str
    model_version: str
    binding: ModelBinding
    on_failure: str
    null_inputs: str  # reject | pass
    run_id: str
    id_column: str
    partition_columns: tuple[str, ...]
    event_time_column: str | None
    threads: int
    use_gpu: bool


def scoring_task(plan: Plan, run_id: str, model: object, threads: int, use_gpu: bool) -> ScoringTask:
    """The scoring stage's task for a plan: `model` is its files, or an object-store ref of them."""
    spec = plan.job.spec
    return ScoringTask(
        model=model,
        model_runtime=plan.model.runtime,
        model_suffix=Path(plan.model.path).suffix,
        model_version=plan.model.version,
        binding=plan.binding,
        on_failure=spec.on_failure,
        null_inputs=spec.model.null_inputs,
        run_id=run_id,
        id_column=spec.input.id_column,
        partition_columns=tuple(spec.input.partitioning),
        event_time_column=spec.input.event_time_column,
        threads=threads,
        use_gpu=use_gpu,
    )


class ScoreBatches:
    """A Ray Data callable class: one model session per actor."""

    def __init__(self, task: ScoringTask) -> None:
        self.task = task
        model = task.model
        if not isinstance(model, ModelFiles):  # an object-store ref: each node holds one shared copy
            import ray

            model = ray.get(model)
        self.runtime = open_runtime(
            task.model_runtime,
            model,
            task.model_suffix,
            [o.name for o in task.binding.outputs],
            task.use_gpu,
            task.threads,
            spinning=False,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        inject("score_batch")
        task = self.task
        rows = batch.num_rows
        skipped = pc.is_valid(batch.column(REASONS)).to_numpy(zero_copy_only=False)
        if task.on_failure == "warn":  # failing rows are scored too, unless their inputs cannot be
            skipped = _missing(batch, task.binding.input_columns) if task.null_inputs == "reject" else skipped & False
        passed = batch.filter(pa.array(~skipped)) if skipped.any() else batch
        scores = score_table(self.runtime, task.binding, passed) if passed.num_rows else {}

        kept = [task.id_column, *task.partition_columns]
        if task.on_failure == "quarantine":
            kept += [SOURCE_FILE, SOURCE_ROW]
        columns: dict[str, pa.Array] = {c: batch.column(c) for c in kept}
        valid_positions = np.flatnonzero(~skipped)
        for field in task.binding.output_fields():
            columns[field.name] = _spread(scores.get(field.name), valid_positions, rows, field.type)
        lineage = (task.run_id, task.model_version, dt.datetime.now(dt.timezone.utc))
        for field, value in zip(LINEAGE_FIELDS, lineage):
            columns[field.name] = pa.repeat(pa.scalar(value, field.type), rows)
        if task.event_time_column:
            columns[EVENT_TIME] = batch.column(task.event_time_column)
        columns[REASONS] = batch.column(REASONS)
        columns[DEVICE] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int8)), [self.runtime.device])
        return pa.table(columns)


def _missing(batch: pa.Table, columns: list[str]) -> np.ndarray:
    """Rows with a null or NaN model input."""
    missing = np.zeros(batch.num_rows, dtype=bool)
    for column in columns:
        missing |= pc.is_null(batch.column(column), nan_is_null=True).to_numpy(zero_copy_only=False)
    return missing


def build_feeds(binding: ModelBinding, table: pa.Table) -> dict[str, np.ndarray]:
    """Columns -> model inputs, cast to the declared element type, stacked in the declared order."""
    return {b.name: _feed(b, table) for b in binding.inputs}


def _feed(binding: InputBinding, table: pa.Table) -> np.ndarray:
    """Nulls reach a model only under `model.null_inputs: pass`: as NaN in float inputs (Arrow's own
    conversion), as the empty string in string inputs. Token columns are viewed as [N, T] without copying."""
    if binding.tokens:
        return token_matrix(table, binding.columns[0]).astype(binding.dtype, copy=False)
    if binding.dtype == "string":
        arrays = [pc.fill_null(table.column(c), "").to_numpy(zero_copy_only=False).astype(object, copy=False)
                  for c in binding.columns]
    else:
        arrays = [table.column(c).to_numpy(zero_copy_only=False).astype(binding.dtype, copy=False)
                  for c in binding.columns]
    if binding.rank == 1:
        return arrays[0]
    return np.stack(arrays, axis=1)


def score_table(runtime, binding: ModelBinding, table: pa.Table) -> dict[str, pa.Array]:
    """Score one table; returns one Arrow array per output column. Shared by the actors and by tests."""
    results = runtime.run(build_feeds(binding, table))
    out: dict[str, pa.Array] = {}
    for ob in binding.outputs:
        values = np.asarray(results[ob.name])
        if ob.pooling:
            values = pool(values, token_matrix(table, ATTENTION_MASK), ob.pooling)
        out.update(_output_columns(ob, values, table.num_rows))
    return out


def _output_columns(binding: OutputBinding, values: np.ndarray, rows: int) -> dict[str, pa.Array]:
    if values.shape[0] != rows:
        raise ValueError(f"model output {binding.name!r} has {values.shape[0]} rows for {rows} input rows")
    if binding.per_index:
        values = values.reshape(rows, -1)
        return {c: pa.array(values[:, i]) for i, c in enumerate(binding.columns) if c is not None}
    if binding.as_list:
        values = values.reshape(rows, -1)
        if binding.width is not None and values.shape[1] != binding.width:
            raise ValueError(f"model output {binding.name!r} has {values.shape[1]} values per row; the plan found "
                             f"{binding.width}")
        values = values.astype(np.float32, copy=False) if values.dtype == np.float16 else values
        return {binding.columns[0]: pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])}
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
