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
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa

from jobs.columns import PIECE_INDEX, REASONS
from jobs.contracts.suite import Verdict, cache_dir
from jobs.models.text import Tokenize
from jobs.plan.plan import Plan
from jobs.spec.schema import JobSpec
from jobs.stages.checking import check_pieces, partition_verdicts, streams_with_verdicts
from jobs.stages.scoring import ScoreBatches
from jobs.stages.sink import WrittenFiles

T = TypeVar("T")
log = logging.getLogger(__name__)


DEFAULT_INLINE_MAX_ROWS = 200_000  # `engine.inline_max_rows: measured` before `score bench` measured the job


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
        saved = json.loads(_crossovers().read_text()).get(spec.name, {})
    except (OSError, ValueError):
        return DEFAULT_INLINE_MAX_ROWS
    if saved.get("cpus") != os.cpu_count():  # measured on another machine (the cache folder travelled)
        return DEFAULT_INLINE_MAX_ROWS
    return saved.get("inline_max_rows", DEFAULT_INLINE_MAX_ROWS)


def save_crossover(job: str, rows: int, measured: dict) -> None:
    """Remember `rows` as where Ray starts to pay for `job` on this machine (what `score bench` measured)."""
    path = _crossovers()
    try:
        saved = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        saved = {}
    saved[job] = {"inline_max_rows": rows, "cpus": os.cpu_count(), **measured}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=1))
    except OSError as exc:  # a read-only home: runs keep the default
        log.warning("engine crossover not saved to %s: %s", path, exc)


def _crossovers() -> Path:
    return cache_dir() / "engine-crossover.json"


def execute_inline(
    plan: Plan, run_id: str, on_progress: Callable[[dict[str, int]], None] | None = None
) -> WrittenFiles:
    """The plan's pieces one after the other, into one writer (files of the target size, as on Ray). Checking,
    scoring and writing run in threads of their own, a couple of batches apart, so that reading and writing
    overlap the model's compute as Ray's stages do. `on_progress` gets the counts (stage -> rows) after each
    batch."""
    writer = plan.table_writer(run_id)
    cores = os.cpu_count() or 1
    scorer = ScoreBatches(plan.scoring_task(run_id, cores, use_gpu=False), plan.model.files())
    tokenize = Tokenize(plan.binding.text, cores) if plan.binding.text is not None else None
    seconds = dict.fromkeys(("check", "score"), 0.0)
    quarantining = plan.job.spec.on_failure == "quarantine"

    def checked() -> Iterator[pa.Table]:
        verdicts: dict[int, Verdict] | None = {} if streams_with_verdicts(plan.checks) else None
        for index, piece in enumerate(plan.checks.pieces):
            if verdicts is not None and piece.partition not in verdicts:
                started = time.perf_counter()
                verdicts.update(partition_verdicts(plan.checks, piece.partition))
                seconds["tally"] = seconds.get("tally", 0.0) + time.perf_counter() - started
            batches = check_pieces(pa.table({PIECE_INDEX: [index]}), plan.checks, verdicts)
            while True:
                started = time.perf_counter()
                batch = next(batches, None)
                seconds["check"] += time.perf_counter() - started
                if batch is None:
                    break
                yield batch

    def scored() -> Iterator[pa.Table]:
        rows = failing = 0
        for batch in Prefetched(checked()):
            started = time.perf_counter()
            out = scorer(tokenize(batch) if tokenize else batch)
            seconds["score"] += time.perf_counter() - started
            rows += batch.num_rows
            failing += batch.num_rows - batch.column(REASONS).null_count if quarantining else 0
            if on_progress:
                on_progress({"check": rows, "score": rows, "write": rows, "quarantine": failing})
            yield out

    started, outputs = time.perf_counter(), Prefetched(scored())
    written = writer.write(iter(outputs), task=0, in_order=True)
    written.add_seconds({**seconds, "write": time.perf_counter() - started - outputs.waited})
    return written


class Prefetched(Generic[T]):
    """`items` made by a thread of its own, at most `depth` ahead of the consumer (Arrow, Parquet and the model
    runtimes release the GIL, so the threads overlap). An error making them is raised to the consumer; a
    consumer that stops early stops the thread. `waited`: the seconds the consumer spent waiting for items."""

    def __init__(self, items: Iterator[T], depth: int = 2) -> None:
        self.waited = 0.0
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
        self._stop = threading.Event()
        threading.Thread(target=self._make, args=(items,), name="inline-stage", daemon=True).start()

    def _make(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put((True, item)):
                    return
        except BaseException as exc:  # handed to the consumer's thread, which raises it
            self._put((False, exc))
            return
        self._put((False, None))

    def _put(self, entry: tuple[bool, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                started = time.perf_counter()
                ok, value = self._queue.get()
                self.waited += time.perf_counter() - started
                if ok:
                    yield value
                elif value is None:
                    return
                else:
                    raise value
        finally:
            self._stop.set()
