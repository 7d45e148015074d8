"""The inline engine: a run's stages in the driver process, one partition at a time, without Ray.

For runs so small that starting Ray and its workers would take most of their time (`engine.inline_max_rows`,
local engines only). The checks, scores, files and counts are those of `jobs.engines.pipeline.execute`, from
the same stage code and the same tasks; only the scheduling differs. Nothing here imports Ray (Ray with Ray
Data takes about a second to import).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

from jobs.columns import PIECE_INDEX, REASONS
from jobs.models.text import Tokenize
from jobs.plan.plan import Plan
from jobs.spec.schema import JobSpec
from jobs.stages.checking import check_pieces, verdicts_here
from jobs.stages.scoring import ScoreBatches
from jobs.stages.sink import WrittenFiles


def runs_inline(spec: JobSpec, rows: int) -> bool:
    """Whether a run of `rows` rows scores in the driver process (`engine.inline_max_rows`): only on a local
    engine and CPUs, where the cluster would be this machine anyway."""
    return spec.engine.address is None and spec.scoring.gpus_per_actor == 0 and rows <= spec.engine.inline_max_rows


def execute_inline(
    plan: Plan, run_id: str, on_progress: Callable[[dict[str, int]], None] | None = None
) -> WrittenFiles:
    """The plan's pieces one after the other, into one writer (files of the target size, as on Ray);
    `on_progress` gets the counts (stage -> rows) after each batch."""
    writer = plan.table_writer(run_id)
    cores = os.cpu_count() or 1
    scorer = ScoreBatches(plan.scoring_task(run_id, cores, use_gpu=False), plan.model.files())
    tokenize = Tokenize(plan.binding.text, cores) if plan.binding.text is not None else None
    seconds = dict.fromkeys(("tally", "check", "score"), 0.0)
    quarantining = plan.job.spec.on_failure == "quarantine"

    def scored() -> Iterator[pa.Table]:
        started = time.perf_counter()
        verdicts = verdicts_here(plan.checks)
        seconds["tally"] += time.perf_counter() - started
        rows = failing = 0
        for index in range(len(plan.checks.pieces)):
            checked = check_pieces(pa.table({PIECE_INDEX: [index]}), plan.checks, verdicts)
            while True:
                started = time.perf_counter()
                batch = next(checked, None)
                seconds["check"] += time.perf_counter() - started
                if batch is None:
                    break
                started = time.perf_counter()
                out = scorer(tokenize(batch) if tokenize else batch)
                seconds["score"] += time.perf_counter() - started
                rows += batch.num_rows
                failing += batch.num_rows - batch.column(REASONS).null_count if quarantining else 0
                if on_progress:
                    on_progress({"check": rows, "score": rows, "write": rows, "quarantine": failing})
                yield out

    started = time.perf_counter()
    written = writer.write(scored(), task=0)
    written.add_seconds({**seconds, "write": time.perf_counter() - started - sum(seconds.values())})
    return written
