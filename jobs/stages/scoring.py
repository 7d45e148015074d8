"""The actor-pool stage: score the rows that passed the check stage and add lineage.

Rows arrive with `_reasons` from `jobs.stages.checking` (null when a row passed). Failing rows are not scored
(under `on_failure: warn` they are, when their model inputs allow it) and leave with their reasons, so the
writer can count and quarantine every one of them: no row leaves this stage unaccounted for. With the
quarantine on, each row's file and position travel on, so the writer can read a failing row back whole.

A batch the model raises on is split in halves and retried, down to single rows (`isolate_failures`): the
rows that really make the model raise are singled out, every other row is scored as in a clean run. An
out-of-memory error only halves the batch (and the actor keeps its smaller batches from then on); one that
persists at a single row is that row's error. Under `scoring.on_error: fail` the run then fails naming the
rows (partition, file, ids); under `quarantine` they leave with the reason `model_error`. A batch that scores
fine costs exactly one model call, as before.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as _field
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import hive
from jobs.columns import (
    DEVICE,
    EVENT_TIME,
    INPUT_HASH,
    LINEAGE_TYPES,
    MODEL_ERROR,
    MODEL_VERSION,
    NULL_INPUT,
    OUT_OF_RANGE,
    OUTPUT_NOT_FINITE,
    REASON_TYPE,
    REASONS,
    REUSED,
    SCORED_AT,
    SOURCE_FILE,
    SOURCE_ROW,
    challenger_column,
)
from jobs.errors import ERROR_LINE
from jobs.faults import inject
from jobs.inputs import Partition, partition_label, read_columns
from jobs.models.artifacts import InputBinding, ModelBinding, OutputBinding
from jobs.models.runtimes import ModelFiles, open_runtime
from jobs.models.text import ATTENTION_MASK, pool, token_matrix
from jobs.stages.reuse import EarlierScores, ReuseTask, input_hash
from jobs.storage import redact_uri

MAX_ROW_ERRORS = 1000  # more failing rows in one batch is a broken model, not bad rows: the run fails
ERROR_CHARS = 300  # of an error message kept in a reason or a failure message
SHOWN_ROWS = 5  # row ids a failure message names


@dataclass(frozen=True)
class ChallengerTask:
    """`model.challenger` as the actors need it: scored on the same batches as the champion."""

    model_runtime: str
    model_suffix: str
    model_version: str
    binding: ModelBinding


@dataclass(frozen=True)
class ScoringTask:
    """Everything an actor needs but the model's files, built once by the plan (`Plan.scoring_task`)."""

    model_runtime: str
    model_suffix: str
    model_version: str
    binding: ModelBinding
    on_failure: str
    null_inputs: str  # reject | pass
    id_column: str
    partition_columns: tuple[str, ...]
    event_time_column: str | None
    threads: int
    use_gpu: bool
    on_error: str = "fail"  # fail | quarantine: what rows the model raises on do (scoring.on_error)
    allow_nonfinite: bool = False  # NaN and infinite float outputs are scores (model.allow_nonfinite), not row errors
    # Each input partition and its files: where a failure message finds the file of a row it names, when the
    # rows do not carry their file (SOURCE_FILE travels only with the quarantine on).
    sources: tuple[tuple[Partition, tuple[str, ...]], ...] = ()
    # Input columns passed on to the writer, which profiles them (monitoring.drift) and does not store them.
    carried: tuple[str, ...] = ()
    challenger: ChallengerTask | None = None
    # scoring.reuse: the model input columns each row's INPUT_HASH covers, and where the earlier scores are
    hashed: tuple[str, ...] = ()
    reuse: ReuseTask | None = None


class ModelRowError(Exception):
    """The model raised on rows of a batch (`scoring.on_error: fail`), or on too many rows to set aside. Its
    message is one line: the driver shows the last `...Error: message` line of the worker's traceback."""


class ModelOutputShape(ModelRowError):
    """The model returned another number of rows than it was given, or another width than the plan bound: its
    signature, not the rows, is wrong, so the batch is never retried in smaller pieces (a reduction would then
    "score" one row at a time)."""


@dataclass(frozen=True)
class RowFailure:
    """Why the model failed on some rows: the error's type name and its message, on one line."""

    error: str
    message: str
    oom: bool = False
    expectation: str = MODEL_ERROR  # the reason's name: the model raised, or returned a non-finite value

    @classmethod
    def of(cls, exc: BaseException) -> RowFailure:
        """TorchScript wraps the model's own error (`builtins.ValueError: ...`, the last such line of a message
        that also quotes the model's source) in a generic one: that line names the real error."""
        text = str(exc)
        lines = ERROR_LINE.findall(text)
        if lines:
            error, message = lines[-1]
            error = error.rsplit(".", 1)[-1]
        else:
            error, message = type(exc).__name__, text
        message = " ".join(message.split())[:ERROR_CHARS] or "(no message)"
        oom = (
            isinstance(exc, MemoryError)
            or _is_torch_oom(exc)
            or error.endswith("OutOfMemoryError")
            or any(m in message.lower() for m in ("out of memory", "failed to allocate memory"))
        )
        return cls(error, message, oom)

    def reason(self) -> dict[str, str]:
        return {"expectation": self.expectation, "column": self.error, "value": self.message}


def _is_torch_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # never imported for this: an ONNX actor does without torch
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(exc, oom)


def _release_device_memory() -> None:
    """After an out-of-memory error: hand the failed batch's cached CUDA blocks back before the retry."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Isolated:
    """A batch scored around its failures: `scores` over every row (null where it failed), the failing rows
    (position -> why), whether isolation finished (False: over `limit` failing rows, it stopped), and the
    smallest batch size that ran out of memory (None: none did)."""

    scores: dict[str, pa.Array] = _field(default_factory=dict)
    failures: dict[int, RowFailure] = _field(default_factory=dict)
    complete: bool = True
    oom_at: int | None = None


def isolate_failures(
    score: Callable[[pa.Table], dict[str, pa.Array]],
    table: pa.Table,
    first: RowFailure | None = None,
    oom_at: int | None = None,
    limit: int = MAX_ROW_ERRORS,
) -> Isolated:
    """Score `table` by halves, recursively, around the rows `score` raises on.

    `first`: how scoring the whole table already failed (it is not tried again). A span that fails is split
    in two halves, each tried in turn, down to single rows: a row that still fails is a failing row, every
    other row is scored. Spans of `oom_at` rows or more (the smallest that ran out of memory, here or in an
    earlier batch) are split without being tried. Costs about 2 k log2(n / k) calls for k failing rows of n.
    """
    result = Isolated(oom_at=oom_at)
    pieces: list[tuple[int, dict[str, pa.Array]]] = []
    spans = [(0, table.num_rows, first)]
    while spans:
        start, stop, failure = spans.pop()
        size = stop - start
        if failure is None and result.oom_at is not None and size >= result.oom_at and size > 1:
            failure = RowFailure("OutOfMemoryError", f"a batch of {result.oom_at} rows ran out of memory", oom=True)
        elif failure is None:
            try:
                pieces.append((start, score(table.slice(start, size))))
                continue
            except ModelRowError:
                raise
            except Exception as exc:  # noqa: BLE001 - any model error is a row error or an OOM to split
                failure = RowFailure.of(exc)
            if failure.oom:
                _release_device_memory()
                if size > 1:
                    result.oom_at = min(size, result.oom_at or size)
        if size == 1:
            result.failures[start] = failure
            if len(result.failures) > limit:
                result.complete = False
                break
            continue
        middle = start + size // 2
        spans += [(middle, stop, None), (start, middle, None)]  # the first half is tried first
    result.scores = _assemble(pieces, table.num_rows)
    return result


def _assemble(pieces: list[tuple[int, dict[str, pa.Array]]], rows: int) -> dict[str, pa.Array]:
    """The scored spans' outputs as one array per output over all `rows`, null where no span scored."""
    if not pieces:
        return {}
    pieces.sort(key=lambda piece: piece[0])
    index = np.full(rows, -1, dtype=np.int64)
    done = 0
    for start, outputs in pieces:
        length = len(next(iter(outputs.values()))) if outputs else 0
        index[start : start + length] = np.arange(done, done + length)
        done += length
    joined = {name: pa.concat_arrays([outputs[name] for _, outputs in pieces]) for name in pieces[0][1]}
    if done == rows:
        return joined
    take = pa.array(index, mask=index < 0)
    return {name: pc.take(values, take) for name, values in joined.items()}


class ScoreBatches:
    """A Ray Data callable class: one model session per actor, opened from `model` (its file and its ONNX
    external data)."""

    def __init__(self, task: ScoringTask, model: ModelFiles, challenger: ModelFiles | None = None) -> None:
        inject("open_model")
        self.task = task
        self.runtime = open_runtime(
            task.model_runtime,
            model,
            task.model_suffix,
            [o.name for o in task.binding.outputs],
            task.use_gpu,
            task.threads,
            spinning=False,
        )
        self.challenger = None
        if task.challenger is not None and challenger is not None:
            self.challenger = open_runtime(
                task.challenger.model_runtime,
                challenger,
                task.challenger.model_suffix,
                [o.name for o in task.challenger.binding.outputs],
                task.use_gpu,
                task.threads,
                spinning=False,
            )
        self.oom_at: int | None = None  # the smallest batch that ran out of memory: larger ones are split first
        self.earlier = EarlierScores(task.reuse) if task.reuse is not None else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        inject("score_batch")
        task = self.task
        rows = batch.num_rows
        skipped = pc.is_valid(batch.column(REASONS)).to_numpy(zero_copy_only=False)
        if task.on_failure == "warn":  # failing rows are scored too, unless their inputs cannot be
            skipped = _unscorable(batch)
        hashes = input_hash(batch, task.hashed) if task.hashed else None
        reused, earlier = np.array([], dtype=np.int64), None
        if self.earlier is not None and hashes is not None:
            reused, earlier = self.earlier.match(batch, hashes, task.partition_columns)
            scorable = ~skipped[reused]
            reused, earlier = reused[scorable], earlier.filter(pa.array(scorable))
            skipped = skipped.copy()
            skipped[reused] = True  # not for the model: their earlier scores stand
        passed = batch.filter(pa.array(~skipped)) if skipped.any() else batch
        scores, failures = {}, None
        if passed.num_rows:
            failed = None
            fits = self.oom_at is None or passed.num_rows < self.oom_at  # else it ran out of memory before
            if fits:  # today's one call
                try:
                    scores = score_table(self.runtime, task.binding, passed)
                except ModelRowError:
                    raise
                except Exception as exc:  # noqa: BLE001 - split around the failing rows, once `exc` is released
                    failed = RowFailure.of(exc)
            if failed is not None or not fits:
                scores, failures = self._isolate(passed, failed)
            if not task.allow_nonfinite:
                failures = self._check_finite(passed, scores, failures or {})

        kept = [task.id_column, *task.partition_columns]
        if task.on_failure == "quarantine":
            kept += [SOURCE_FILE, SOURCE_ROW]
        kept += [c for c in task.carried if c not in kept]
        columns: dict[str, pa.Array] = {c: batch.column(c) for c in kept}
        valid_positions = np.flatnonzero(~skipped)
        for field in task.binding.output_fields():
            columns[field.name] = _spread(scores.get(field.name), valid_positions, rows, field.type)
        columns[MODEL_VERSION] = pa.repeat(pa.scalar(task.model_version, LINEAGE_TYPES[MODEL_VERSION]), rows)
        columns[SCORED_AT] = pa.repeat(pa.scalar(dt.datetime.now(dt.UTC), LINEAGE_TYPES[SCORED_AT]), rows)
        if hashes is not None:
            columns[INPUT_HASH] = hashes
        if len(reused):
            for name in (*[f.name for f in task.binding.output_fields()], SCORED_AT):
                columns[name] = _placed(columns[name], reused, earlier.column(name))
        # RUN_ID: the writer stamps it (this stage may run before the run has an id)
        if task.event_time_column:
            columns[EVENT_TIME] = batch.column(task.event_time_column)
        columns[REASONS] = batch.column(REASONS)
        if failures:
            reasons = batch.column(REASONS).to_pylist()
            for position, failure in failures.items():
                reasons[valid_positions[position]] = [failure.reason()]
            columns[REASONS] = pa.array(reasons, REASON_TYPE)
        devices = np.zeros(rows, np.int8)
        devices[reused] = 1
        columns[DEVICE] = pa.DictionaryArray.from_arrays(pa.array(devices), [self.runtime.device, REUSED])
        if self.challenger is not None:
            columns.update(self._challenge(passed, valid_positions, rows, failures or {}))
        return pa.table(columns)

    def _challenge(
        self, passed: pa.Table, positions: np.ndarray, rows: int, failures: dict[int, RowFailure]
    ) -> dict[str, pa.Array]:
        """The challenger's outputs for the rows the champion scored (`challenger_column`s, null elsewhere). A
        batch the challenger raises on leaves its values null: the champion's run goes on, and the agreement
        figures count only the rows both scored."""
        binding = self.task.challenger.binding
        if failures:  # rows the champion could not score are not compared
            keep = np.setdiff1d(np.arange(passed.num_rows), np.fromiter(failures, dtype=np.int64))
            passed, positions = passed.take(pa.array(keep)), positions[keep]
        scores: dict[str, pa.Array] = {}
        if passed.num_rows:
            try:
                scores = score_table(self.challenger, binding, passed)
            except Exception:  # noqa: BLE001 - the challenger never fails the champion's run
                scores = {}
        return {
            challenger_column(f.name): _spread(scores.get(f.name), positions, rows, f.type)
            for f in binding.output_fields()
        }

    def _check_finite(
        self, passed: pa.Table, scores: dict[str, pa.Array], failures: dict[int, RowFailure]
    ) -> dict[int, RowFailure]:
        """`failures` plus the rows with a NaN or infinite float output: failing the run, or set aside."""
        found = {position: failure for position, failure in _nonfinite(scores).items() if position not in failures}
        if not found:
            return failures
        if self.task.on_error == "fail":
            raise ModelRowError(self._failure_message(passed, Isolated(failures=found)))
        return {**failures, **found}

    def _isolate(self, passed: pa.Table, first: RowFailure | None) -> tuple[dict[str, pa.Array], dict]:
        """Score `passed` around the rows the model raises on; fail the run when the job says so."""
        isolated = isolate_failures(partial(score_table, self.runtime, self.task.binding), passed, first, self.oom_at)
        self.oom_at = isolated.oom_at
        if isolated.failures and (self.task.on_error == "fail" or not isolated.complete):
            raise ModelRowError(self._failure_message(passed, isolated))
        return isolated.scores, isolated.failures

    def _failure_message(self, passed: pa.Table, isolated: Isolated) -> str:
        """One line: how many rows failed, where they are (partition, file, ids) and the first error."""
        task = self.task
        positions = sorted(isolated.failures)
        count = len(positions)
        shown = passed.select(
            [c for c in (task.id_column, *task.partition_columns, SOURCE_FILE) if c in passed.column_names]
        ).take(pa.array(positions[:SHOWN_ROWS]))
        labels = [
            partition_label(tuple((c, hive.value_of(shown.column(c)[i].as_py())) for c in task.partition_columns))
            for i in range(shown.num_rows)
        ]
        files = _files_of(shown, labels, task)
        groups: dict[tuple[str, str], list[str]] = {}
        for label, file, row_id in zip(labels, files, shown.column(task.id_column).to_pylist()):
            groups.setdefault((label, file), []).append(str(row_id))
        where = "; ".join(
            f"partition {label}, file {file}: {task.id_column} {', '.join(ids)}"
            for (label, file), ids in groups.items()
        )
        if count > SHOWN_ROWS:
            where += f" and {count - SHOWN_ROWS} more"
        error = isolated.failures[positions[0]]
        first = f"{error.error}: {error.message}"
        if error.expectation == OUTPUT_NOT_FINITE:
            return (
                f"the model returned NaN or infinite values for {count} of {passed.num_rows} rows of a batch "
                f"({where}); first: output column {error.error} = {error.message}; nothing was committed "
                "(model.allow_nonfinite: true keeps such scores; scoring.on_error: quarantine, with "
                "contract.on_failure: quarantine, sets such rows aside instead)"
            )
        if not isolated.complete:
            return (
                f"the model raised on more than {MAX_ROW_ERRORS} of {passed.num_rows} rows of one batch, which "
                f"is a broken model rather than bad rows ({where}); first error {first}; nothing was committed"
            )
        return (
            f"the model raised on {count} of {passed.num_rows} rows of a batch ({where}); first error {first}; "
            "nothing was committed (scoring.on_error: quarantine, with contract.on_failure: quarantine, sets "
            "such rows aside instead)"
        )


def _files_of(rows: pa.Table, labels: list[str], task: ScoringTask) -> list[str]:
    """The input file of each of a few `rows` (in the partitions `labels`): carried along with the quarantine
    on, else looked up by id among the files of the row's partition (only when a failure message names them)."""
    if SOURCE_FILE in rows.column_names:
        return [redact_uri(f) for f in rows.column(SOURCE_FILE).cast(pa.string()).to_pylist()]
    by_label = {partition_label(partition): files for partition, files in task.sources}
    ids: dict[str, pa.ChunkedArray] = {}
    found = []
    for i, label in enumerate(labels):
        row_id = rows.column(task.id_column)[i]
        candidates = by_label.get(label, ())
        file = f"(one of the {len(candidates)} files of the partition)"
        for path in candidates:
            try:
                if path not in ids:
                    ids[path] = read_columns(path, (task.id_column,)).column(0)
                if pc.any(pc.equal(ids[path], row_id)).as_py():
                    file = redact_uri(path)
                    break
            except Exception:  # noqa: BLE001 - the message still names the partition and the ids
                break
        found.append(file)
    return found


def _nonfinite(scores: dict[str, pa.Array]) -> dict[int, RowFailure]:
    """Rows (position -> why) whose float outputs hold a NaN or an infinite value; null (unscored) rows are not."""
    found: dict[int, RowFailure] = {}
    for column, values in scores.items():
        if pa.types.is_fixed_size_list(values.type):  # a vector per row: every value of the row's slot counts
            width = values.type.list_size
            flat = values.values.slice(values.offset * width, len(values) * width)
        else:
            width, flat = 1, values
        if not pa.types.is_floating(flat.type):
            continue
        numbers = flat.to_numpy(zero_copy_only=False).reshape(len(values), width)
        bad = ~np.isfinite(numbers) & values.is_valid().to_numpy(zero_copy_only=False)[:, None]
        for position in np.flatnonzero(bad.any(axis=1)).tolist():
            value = numbers[position][~np.isfinite(numbers[position])][0]
            found.setdefault(position, RowFailure(column, str(value), expectation=OUTPUT_NOT_FINITE))
    return found


def _unscorable(batch: pa.Table) -> np.ndarray:
    """Rows whose reasons say the model cannot be given them: a null or NaN input (`model.null_inputs: reject`),
    or a value the input's type cannot hold."""
    reasons = batch.column(REASONS)
    flat = pc.list_flatten(reasons)
    hit = pc.is_in(pc.struct_field(flat, "expectation"), pa.array([NULL_INPUT, OUT_OF_RANGE])).to_numpy(
        zero_copy_only=False
    )
    rows = np.zeros(batch.num_rows, dtype=bool)
    rows[pc.list_parent_indices(reasons).to_numpy(zero_copy_only=False)[hit]] = True
    return rows


def build_feeds(binding: ModelBinding, table: pa.Table) -> dict[str, np.ndarray]:
    """Columns -> model inputs, cast to the declared element type, stacked in the declared order."""
    return {b.name: _feed(b, table) for b in binding.inputs}


def _feed(binding: InputBinding, table: pa.Table) -> np.ndarray:
    """Nulls reach a model only under `model.null_inputs: pass`: as NaN in float inputs (Arrow's own
    conversion), as the empty string in string inputs. Token columns are viewed as [N, T] without copying."""
    if binding.tokens:
        return token_matrix(table, binding.columns[0]).astype(binding.dtype, copy=False)
    if binding.dtype == "string":
        arrays = [_strings(table.column(c)) for c in binding.columns]
    else:
        arrays = [
            table.column(c).to_numpy(zero_copy_only=False).astype(binding.dtype, copy=False) for c in binding.columns
        ]
    if binding.rank == 1:
        return arrays[0]
    return np.stack(arrays, axis=1)


CATEGORICAL_SAMPLE = 1_000  # rows whose distinct values tell a categorical string column from a free-text one


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    """A string column as the object array ONNX Runtime takes, nulls as "". A categorical column (few distinct
    values in its first CATEGORICAL_SAMPLE rows, or dictionary-encoded already) goes through its dictionary: one
    Python string per distinct value instead of one per row, half the time of Arrow's own conversion on the demo's
    six categorical inputs (10 against 21 ms a 65,536-row batch); a free-text column, where the dictionary would
    be as long as the column, keeps Arrow's conversion (3x faster there)."""
    column = pc.fill_null(column, "")
    if not pa.types.is_dictionary(column.type):
        sample = column.slice(0, CATEGORICAL_SAMPLE)
        if pc.count_distinct(sample).as_py() * 10 > len(sample):
            return column.to_numpy(zero_copy_only=False).astype(object, copy=False)
        column = pc.dictionary_encode(column)
    encoded = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object, copy=False)
    return values[encoded.indices.to_numpy(zero_copy_only=False)]


def score_table(runtime, binding: ModelBinding, table: pa.Table) -> dict[str, pa.Array]:
    """Score one table; returns one Arrow array per output column. Shared by the actors and by tests.

    A model whose inputs fix the batch size (`binding.batch`) is called on slices of exactly that many rows,
    the last one padded with copies of its last row, whose outputs are dropped: no row fails for how rows
    were batched."""
    size = binding.batch
    if size is None or table.num_rows == size:
        return _score_call(runtime, binding, table)
    parts = []
    for start in range(0, table.num_rows, size):
        part = table.slice(start, size)
        rows = part.num_rows
        if rows < size:
            part = part.take(pa.array(np.minimum(np.arange(size), rows - 1)))
        parts.append({name: values.slice(0, rows) for name, values in _score_call(runtime, binding, part).items()})
    return {name: pa.concat_arrays([p[name] for p in parts]) for name in parts[0]} if parts else {}


def _score_call(runtime, binding: ModelBinding, table: pa.Table) -> dict[str, pa.Array]:
    results = runtime.run(build_feeds(binding, table))
    out: dict[str, pa.Array] = {}
    for ob in binding.outputs:
        values = np.asarray(results[ob.name])
        if ob.pooling:
            values = pool(values, token_matrix(table, ATTENTION_MASK), ob.pooling)
        out.update(_output_columns(ob, values, table.num_rows))
    return out


def _output_columns(binding: OutputBinding, values: np.ndarray, rows: int) -> dict[str, pa.Array]:
    if values.ndim == 0 or values.shape[0] != rows:
        got = "a scalar" if values.ndim == 0 else f"{values.shape[0]} row(s)"
        raise ModelOutputShape(
            f"model output {binding.name!r} returned {got} for a batch of {rows} input rows; a model must return "
            "one row per input row (a reduction over the batch?); nothing was committed"
        )
    if binding.per_index:
        values = values.reshape(rows, -1)
        if values.shape[1] != len(binding.columns):
            raise ModelOutputShape(
                f"model output {binding.name!r} has {values.shape[1]} values per row; model.outputs maps "
                f"{len(binding.columns)}; nothing was committed"
            )
        return {c: pa.array(values[:, i]) for i, c in enumerate(binding.columns) if c is not None}
    if binding.as_list:
        values = values.reshape(rows, -1)
        if binding.width is not None and values.shape[1] != binding.width:
            raise ModelOutputShape(
                f"model output {binding.name!r} has {values.shape[1]} values per row; the plan found {binding.width}"
            )
        values = values.astype(np.float32, copy=False) if values.dtype == np.float16 else values
        return {binding.columns[0]: pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])}
    if values.size != rows:
        raise ModelOutputShape(
            f"model output {binding.name!r} has {values.size // rows} values per row; model.outputs maps it to one "
            "column (a list of columns, or a list column, takes several); nothing was committed"
        )
    return {binding.columns[0]: pa.array(values.reshape(rows))}


def _placed(values: pa.Array, positions: np.ndarray, replacement: pa.ChunkedArray) -> pa.Array:
    """`values` with `replacement` (one value per position) at `positions`."""
    index = np.arange(len(values))
    index[positions] = len(values) + np.arange(len(positions))
    joined = pa.concat_arrays([values, replacement.cast(values.type).combine_chunks()])
    return pc.take(joined, pa.array(index))


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
