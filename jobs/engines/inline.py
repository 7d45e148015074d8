"""The inline engine: a run's stages in the driver process, one partition at a time, without Ray.

For runs so small that starting Ray and its workers would take most of their time (`engine.inline_max_rows`,
local engines only). The checks, scores, files and counts are those of `jobs.engines.pipeline.execute`, from
the same stage code and the same tasks; only the scheduling differs. Nothing here imports Ray (Ray with Ray
Data takes about a second to import).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa

from jobs.columns import PIECE_INDEX, REASONS
from jobs.contracts.suite import Verdict, cache_dir
from jobs.models.text import Tokenize
from jobs.monitoring.profiles import ColumnProfile
from jobs.plan.plan import Plan
from jobs.spec.schema import JobSpec
from jobs.stages.checking import CheckTask, check_pieces, partition_verdicts, streams_with_verdicts
from jobs.stages.scoring import ScoreBatches
from jobs.stages.sink import WrittenFiles

T = TypeVar("T")
log = logging.getLogger(__name__)


DEFAULT_INLINE_MAX_ROWS = 200_000  # `engine.inline_max_rows: measured` before `score bench` measured the job
UNBOUNDED = 2**62  # the measured limit where Ray never paid


def runs_inline(spec: JobSpec, rows: int) -> bool:
    """Whether a run of `rows` rows scores in the driver process (`engine.inline_max_rows`): only on a local
    engine and CPUs, where the cluster would be this machine anyway."""
    return spec.engine.address is None and spec.scoring.gpus_per_actor == 0 and rows <= inline_limit(spec)


def inline_limit(spec: JobSpec) -> int:
    """`engine.inline_max_rows`; for `measured`, the crossover `score bench` saved for this job on this machine
    (`save_crossover`), else DEFAULT_INLINE_MAX_ROWS."""
    if spec.engine.inline_max_rows != "measured":
        return spec.engine.inline_max_rows
    try:
        saved = json.loads(_crossovers().read_text()).get(_crossover_key(spec), {})
    except (OSError, ValueError):
        return DEFAULT_INLINE_MAX_ROWS
    if saved.get("cpus") != os.cpu_count():  # measured on another machine (the cache folder travelled)
        return DEFAULT_INLINE_MAX_ROWS
    return saved.get("inline_max_rows", DEFAULT_INLINE_MAX_ROWS)


def inline_reason(spec: JobSpec) -> str:
    """Why a run scores in this process, as the run's log line says it."""
    limit = inline_limit(spec)
    if limit >= UNBOUNDED:
        return "engine.inline_max_rows: measured: `score bench` found Ray no faster for this job on this machine"
    return f"at most engine.inline_max_rows {limit:,} rows"


def save_crossover(spec: JobSpec, rows: int | None, measured: dict) -> None:
    """Remember `rows` (None: Ray never paid) as where Ray starts to pay for the job `spec` on this machine, as
    `score bench` measured it. Keyed by the job's name and input folder: another project's job of the same name
    (`score init` makes the same starter job everywhere) keeps its own."""
    path = _crossovers()
    try:
        saved = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        saved = {}
    saved[_crossover_key(spec)] = {"inline_max_rows": UNBOUNDED if rows is None else rows, "cpus": os.cpu_count()}
    saved[_crossover_key(spec)].update(measured)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=1))
    except OSError as exc:  # a read-only home: runs keep the default
        log.warning("engine crossover not saved to %s: %s", path, exc)


def _crossover_key(spec: JobSpec) -> str:
    return f"{spec.name} {spec.input.path}"


def _crossovers() -> Path:
    return cache_dir() / "engine-crossover.json"


AHEAD_BYTES = 256 * 2**20  # scored rows (ids, scores, lineage: ~100 bytes a row) held while the MLflow run opens


class InlineStages:
    """The inline engine's checking and scoring threads, started before the run has an id (`score run`): the
    rows they score wait, up to AHEAD_BYTES, for the writer, which needs the run id (it names the files and
    stamps every row). So a run checks and scores on one core while MLflow loads on the other (1.8 s of
    a 7 s demo run, measured). `close` stops them when the run fails before it writes."""

    def __init__(self, plan: Plan, on_progress: Callable[[dict[str, int]], None] | None = None) -> None:
        cores = os.cpu_count() or 1
        scorer = ScoreBatches(plan.scoring_task(cores, use_gpu=False), *plan.model_files())
        tokenize = Tokenize(plan.binding.text, cores) if plan.binding.text is not None else None
        self.seconds = dict.fromkeys(("check", "score"), 0.0)
        seconds = self.seconds
        self.row_profiles = plan.row_profiles()
        self.profiles: dict[str, dict[str, ColumnProfile]] = {}  # partition label -> column -> profile
        quarantining = plan.job.spec.on_failure == "quarantine"

        def scored() -> Iterator[pa.Table]:
            rows = failing = 0
            for batch in Prefetched(checked_inline(plan.checks, seconds)):
                started = time.perf_counter()
                out = scorer(tokenize(batch) if tokenize else batch)
                seconds["score"] += time.perf_counter() - started
                if self.row_profiles is not None:
                    started = time.perf_counter()
                    out = self.row_profiles.profile(out, self.profiles)
                    seconds["write"] = seconds.get("write", 0.0) + time.perf_counter() - started  # the writer's work
                rows += batch.num_rows
                failing += batch.num_rows - batch.column(REASONS).null_count if quarantining else 0
                if on_progress:
                    on_progress({"check": rows, "score": rows, "write": rows, "quarantine": failing})
                yield out

        self.outputs = Prefetched(scored(), ahead_bytes=AHEAD_BYTES)

    def close(self) -> None:
        self.outputs.close()


def checked_inline(checks: CheckTask, seconds: dict[str, float]) -> Iterator[pa.Table]:
    """The check stage in this process: each piece's rows with `_reasons`, piece after piece, the partition-wide
    verdicts tallied first where the contract streams with them. Adds its busy seconds to `seconds`."""
    verdicts: dict[int, Verdict] | None = {} if streams_with_verdicts(checks) else None
    for index, piece in enumerate(checks.pieces):
        if verdicts is not None and piece.partition not in verdicts:
            started = time.perf_counter()
            verdicts.update(partition_verdicts(checks, piece.partition))
            seconds["tally"] = seconds.get("tally", 0.0) + time.perf_counter() - started
        batches = check_pieces(pa.table({PIECE_INDEX: [index]}), checks, verdicts)
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            seconds["check"] = seconds.get("check", 0.0) + time.perf_counter() - started
            if batch is None:
                break
            yield batch


def execute_inline(
    plan: Plan,
    run_id: str,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    started: InlineStages | None = None,
) -> WrittenFiles:
    """The plan's pieces one after the other, into one writer (files of the target size, as on Ray). Checking,
    scoring and writing run in threads of their own, a couple of batches apart, so that reading and writing
    overlap the model's compute as Ray's stages do. `on_progress` gets the counts (stage -> rows) after each
    batch. `started`: the stages started for this plan before the run had its id."""
    stages = started or InlineStages(plan, on_progress)
    begun = time.perf_counter()
    try:
        written = plan.table_writer(run_id, profiled=True).write(iter(stages.outputs), task=0, in_order=True)
    finally:
        stages.close()
    written.merge(WrittenFiles(profiles=stages.profiles))
    writing = time.perf_counter() - begun - stages.outputs.waited
    written.add_seconds({**stages.seconds, "write": stages.seconds.get("write", 0.0) + writing})
    return written


class Prefetched(Generic[T]):
    """`items` made by a thread of its own, at most `depth` ahead of the consumer, or more while those ahead
    hold fewer than `ahead_bytes` (Arrow tables: `nbytes`). Arrow, Parquet and the model runtimes release the
    GIL, so the threads overlap. An error making them is raised to the consumer; a consumer that stops early
    (or `close`) stops the thread. `waited`: the seconds the consumer spent waiting for items."""

    def __init__(self, items: Iterator[T], depth: int = 2, ahead_bytes: int = 0) -> None:
        self.waited = 0.0
        self._depth, self._ahead_bytes = depth, ahead_bytes
        self._items: deque[tuple[bool, Any, int]] = deque()
        self._bytes = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        threading.Thread(target=self._make, args=(items,), name="inline-stage", daemon=True).start()

    def _make(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put(True, item):
                    return
        except BaseException as exc:  # handed to the consumer's thread, which raises it
            self._put(False, exc)
            return
        self._put(False, None)

    def _put(self, ok: bool, value: Any) -> bool:
        size = getattr(value, "nbytes", 0) if ok else 0
        with self._changed:
            while len(self._items) >= self._depth and not (
                self._ahead_bytes and self._bytes + size <= self._ahead_bytes
            ):
                if self._stop.is_set():
                    return False
                self._changed.wait(0.1)
            self._items.append((ok, value, size))
            self._bytes += size
            self._changed.notify_all()
        return not self._stop.is_set()

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                started = time.perf_counter()
                with self._changed:
                    while not self._items:
                        self._changed.wait()
                    ok, value, size = self._items.popleft()
                    self._bytes -= size
                    self._changed.notify_all()
                self.waited += time.perf_counter() - started
                if ok:
                    yield value
                elif value is None:
                    return
                else:
                    raise value
        finally:
            self.close()

    def close(self) -> None:
        """Stop making items (the thread ends at its next item)."""
        self._stop.set()
        with self._changed:
            self._items.clear()
            self._bytes = 0
            self._changed.notify_all()
