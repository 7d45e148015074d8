"""The Ray Data pipeline of one run: check each input partition (tasks) -> tokenise text (actors, text models
only) -> score (actor pool) -> write files. Small local runs take `jobs.engines.inline` instead.

Streaming end to end; the driver only sees the small file descriptions the writers return.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pyarrow as pa
import ray
import ray.data
from ray.data import ActorPoolStrategy, Datasink
from ray.data.datasource.datasink import WriteResult

from jobs.columns import PIECE_INDEX, REASONS
from jobs.contracts.suite import Tally, Verdict
from jobs.engines.pool import PoolSize
from jobs.engines.progress import Watchdog, count
from jobs.faults import inject
from jobs.models.text import TextInput, Tokenize
from jobs.plan.plan import Plan, ValidationPlan
from jobs.stages.checking import CheckTask, Piece, check_pieces, repeated_keys, settle, tally_piece, validator
from jobs.stages.scoring import ScoreBatches, ScoringTask
from jobs.stages.sink import TableWriter, WrittenFiles

CHECK_WORKER_BASE = 160 * 2**20  # a check worker's own memory (Arrow, pandas, the contract), measured: ~130 MiB


def checked(checks: CheckTask, progress: str | None = None) -> ray.data.Dataset:
    """Every selected row, piece by piece, with the reasons it fails (`_reasons`, null if none).

    The partition-wide verdicts come first (`verdicts`), when the contract needs them. A check task holds one
    piece, so it reserves that much memory (see `_reservation`). The reservation also keeps the check stage its
    own tasks: Ray Data would otherwise fuse it into the scoring actors, serialising check and scoring
    (measured: the job took 1.6x as long on 2 CPUs). `progress` names the execution's row counter
    (jobs.engines.progress)."""
    found = verdicts(checks, progress)
    pieces = ray.data.from_items(
        [{PIECE_INDEX: i} for i in range(len(checks.pieces))], override_num_blocks=max(1, len(checks.pieces))
    )
    return pieces.map_batches(
        _check_task,  # type: ignore[arg-type]  # Ray's type of a function omits its fn_kwargs
        fn_kwargs={"task": checks, "verdicts": found, "progress": progress},
        batch_size=1,
        batch_format="pyarrow",
        memory=_reservation(checks),
    )


def verdicts(checks: CheckTask, progress: str | None = None) -> dict[int, Verdict] | None:
    """The partition-wide verdicts (`jobs.stages.checking.settle`), from a first pass of Ray tasks: one tally task
    per piece, then one task per hash bucket of each uniqueness expectation's keys. A partition of n pieces has
    ceil(sqrt(n)) buckets: a bucket holds the keys of about sqrt(n) pieces (a key column is a small share of a
    piece), so the keys of a partition bigger than a worker's memory are never gathered in one place, and the
    pass makes n * sqrt(n) objects, not n^2. Only the repeated values come to the driver. None when the
    contract needs no first pass."""
    if not checks.needs_verdicts:
        return None
    task, keys = ray.put(checks), validator(checks).keys
    per_partition = Counter(piece.partition for piece in checks.pieces)
    bucketed = {partition: math.ceil(math.sqrt(n)) for partition, n in per_partition.items()}
    memory, returned = _reservation(checks), []
    for piece in checks.pieces:
        buckets = bucketed[piece.partition]
        refs = _tally.options(num_returns=1 + len(keys) * buckets, memory=memory).remote(task, piece, buckets, progress)
        returned.append([refs] if isinstance(refs, ray.ObjectRef) else refs)
    repeated: dict[tuple[int, int], list] = {}
    for partition, buckets in bucketed.items():
        mine = [refs for piece, refs in zip(checks.pieces, returned) if piece.partition == partition]
        for i, k in enumerate(keys):
            repeated[(partition, k)] = [
                _repeated.remote(*(refs[1 + i * buckets + b] for refs in mine)) for b in range(buckets)
            ]
    tallies = ray.get([refs[0] for refs in returned])
    return settle(checks, tallies, {key: ray.get(refs) for key, refs in repeated.items()})


@ray.remote
def _tally(task: CheckTask, piece: Piece, buckets: int, progress: str | None) -> tuple | Tally:
    """`tally_piece` as a Ray task: the tally, then each uniqueness expectation's buckets, as separate objects."""
    started = time.perf_counter()
    tally, keys = tally_piece(task, piece, buckets)
    if progress:
        count(progress, "tally", piece.rows, time.perf_counter() - started)
    returned = (tally, *(values for k in sorted(keys) for values in keys[k]))
    return returned if len(returned) > 1 else tally  # one return value is not a tuple of one


_repeated = ray.remote(repeated_keys)


def _reservation(checks: CheckTask) -> int:
    """The memory a check (or tally) task reserves: its largest piece read, the batches cut from it and the
    worker's own, within half of what the smallest node offers (less and Ray Data warns on every run)."""
    largest = max((piece.bytes for piece in checks.pieces), default=0)
    wanted = 2 * largest + CHECK_WORKER_BASE
    smallest = min((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
    return max(1, min(wanted, int(smallest // 2)) if smallest else wanted)


def _check_task(
    batch: pa.Table, task: CheckTask, verdicts: dict[int, Verdict] | None, progress: str | None
) -> Iterator[pa.Table]:
    """A check task: `check_pieces`, counting its rows for the stall watchdog, behind the fault tests' hook
    (jobs.faults)."""
    inject("check_partition")
    resumed = time.perf_counter()
    for rows in check_pieces(batch, task, verdicts):
        if progress:
            count(progress, "check", rows.num_rows, time.perf_counter() - resumed)
        yield rows
        resumed = time.perf_counter()


def tokenized(stream: ray.data.Dataset, text: TextInput, reserved_cpus: float) -> ray.data.Dataset:
    """`stream` with the token columns added, by an actor pool of its own. Its actors take one CPU each from
    what the scoring actors (`reserved_cpus`) and one CPU for reading and writing leave; with nothing left
    (a 2-CPU machine) a single actor takes no CPU slot, so it cannot starve the read tasks (which would hang
    the job) and shares the cores with them instead."""
    total = sum(n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive"))
    spare = math.floor(total - reserved_cpus - 1 + 1e-9)
    actors, cpus = (spare, 1) if spare >= 1 else (1, 0)
    return stream.map_batches(
        Tokenize,
        fn_constructor_args=(text, max(cpus, 1)),
        batch_size=None,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=1, max_size=actors),
        num_cpus=cpus,
    )


class _CountedScoreBatches(ScoreBatches):
    """The scoring actors: the model arrives as an object-store ref (each node holds one shared copy), and
    each actor counts the rows that passed through it (scored, or set aside as failing)."""

    def __init__(self, task: ScoringTask, models: ray.ObjectRef, progress: str) -> None:
        super().__init__(task, *ray.get(models))
        self.progress = progress

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        scored = super().__call__(batch)
        count(self.progress, "score", batch.num_rows, time.perf_counter() - started)
        return scored


def check(plan: ValidationPlan) -> list[pa.Table]:
    """The check stage alone (`score validate`): each batch's `_reasons` column."""
    if not plan.checks.partitions:
        return []
    return [
        batch
        for batch in checked(plan.checks)
        .select_columns([REASONS, *plan.selection.partitioning])  # the report counts failures per partition
        .iter_batches(batch_format="pyarrow", batch_size=None)
    ]


def execute(
    plan: Plan, run_id: str, pool: PoolSize, on_progress: Callable[[dict[str, int]], None] | None = None
) -> WrittenFiles:
    """The run's rows through Ray Data: check tasks -> (tokenise actors) -> scoring actors -> write tasks."""
    spec = plan.job.spec
    task = plan.scoring_task(pool.threads, pool.gpus_per_actor > 0)
    progress = f"{run_id}-{uuid.uuid4().hex[:8]}"  # one counter per execution: a run committing in groups has several
    sink = DeltaFilesSink(plan.table_writer(run_id), progress)
    if not plan.checks.partitions:
        return sink.written
    with Watchdog(
        progress, spec.engine.stall_timeout_s, plan.selection.num_rows, str(spec.engine.stall_timeout), on_progress
    ) as watchdog:  # first: the check stage's first pass already counts into it
        rows = checked(plan.checks, progress)
        if plan.binding.text is not None:  # tokenised in a CPU stage of its own: the scoring actors only score
            rows = tokenized(rows, plan.binding.text, pool.max_actors * pool.cpus_per_actor)
        scored = rows.map_batches(
            _CountedScoreBatches,
            fn_constructor_args=(task, ray.put(plan.model_files()), progress),
            batch_size=spec.scoring.batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
            num_cpus=pool.cpus_per_actor,
            num_gpus=pool.gpus_per_actor,
            resources=pool.resources or None,
        )
        scored.write_datasink(sink)
    sink.written.add_seconds(watchdog.busy)
    return sink.written


class DeltaFilesSink(Datasink):
    """Ray Data's side of a `TableWriter`: each write task writes its blocks and returns what it wrote; the
    driver's copy merges those descriptions into `written`, for the one commit."""

    def __init__(self, writer: TableWriter, progress: str) -> None:
        self.writer, self.progress = writer, progress
        self.written = WrittenFiles()

    @property
    def min_bytes_per_write(self) -> int:
        """Ray Data bundles scored blocks up to this size before a write task: files of the target size."""
        return self.writer.target_file_bytes

    def write(self, blocks, ctx) -> WrittenFiles:
        started = time.perf_counter()
        written = self.writer.write(blocks, ctx.task_idx)
        count(self.progress, "write", written.rows_seen, time.perf_counter() - started)
        if written.rows_quarantined:
            count(self.progress, "quarantine", written.rows_quarantined)
        inject("write_files")  # the fault tests' hook: a task that dies here wrote files nobody will commit
        return written

    def on_write_complete(self, write_result: WriteResult) -> None:
        for part in write_result.write_returns:
            self.written.merge(part)

    def get_name(self) -> str:
        return "WriteDeltaFiles"
