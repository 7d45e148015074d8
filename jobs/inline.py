"""The inline engine: a run's stages in the driver process, one partition at a time, without Ray.

For runs so small that starting Ray and its workers would take most of their time (`engine.inline_max_rows`,
local engines only). The checks, scores, files and counts are those of `jobs.pipeline.execute`, from the
same functions; only the scheduling differs. Nothing here imports Ray (importing Ray Data alone takes
about a second).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pyarrow as pa

from jobs.checking import check_partitions
from jobs.plan import Plan
from jobs.scoring import ScoreBatches, scoring_task
from jobs.sink import TableWriter, WrittenFiles
from jobs.text import Tokenize


def execute_inline(plan: Plan, run_id: str,
                   on_progress: Callable[[dict[str, int]], None] | None = None) -> WrittenFiles:
    """The plan's partitions one after the other; `on_progress` gets the counts (stage -> rows) after each."""
    writer = TableWriter.for_plan(plan, run_id)
    cores = os.cpu_count() or 1
    scorer = ScoreBatches(scoring_task(plan, run_id, plan.model.files(), cores, use_gpu=False))
    tokenize = Tokenize(plan.binding.text, cores) if plan.binding.text is not None else None
    written = WrittenFiles()
    for index in range(len(plan.checks.partitions)):
        batches = check_partitions(pa.table({"partition": [index]}), plan.checks)
        written.merge(writer.write((scorer(tokenize(b) if tokenize else b) for b in batches), task=0))
        if on_progress:
            on_progress({"check": written.rows_seen, "score": written.rows_seen, "write": written.rows_seen,
                         "quarantine": written.rows_quarantined})
    return written
