"""The Ray Data pipeline of one run: check each input partition (tasks) -> score (actor pool) -> write files.

Streaming end to end; the driver only sees the small file descriptions the writers return.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import ray
import ray.data
from ray.data import ActorPoolStrategy

from jobs.checking import CheckTask, check_partitions
from jobs.engine import PoolSize
from jobs.plan import Plan, ValidationPlan
from jobs.scoring import REASONS, ScoreBatches, ScoringTask
from jobs.sink import DeltaFilesSink, WrittenFiles
from jobs.text import Tokenize, tokenized


CHECK_WORKER_BASE = 160 * 2**20  # a check worker's own memory (Arrow, pandas, the contract), measured: ~130 MiB


def checked(checks: CheckTask) -> ray.data.Dataset:
    """Every selected row, partition by partition, with the reasons it fails (`_reasons`, null if none).

    A check task holds one whole partition, so it reserves that much memory (the footers' uncompressed
    size plus the worker's own, within half of what the smallest node offers; less and Ray Data warns on
    every run). The reservation also keeps the check stage its own tasks: Ray Data would otherwise fuse it
    into the scoring actors, serialising check and scoring (measured: the job took 1.6x as long on 2 CPUs)."""
    partitions = ray.data.from_items([{"partition": i} for i in range(len(checks.partitions))],
                                     override_num_blocks=max(1, len(checks.partitions)))
    wanted = 2 * checks.partition_bytes + CHECK_WORKER_BASE  # the partition read, and the batches cut from it
    smallest = min((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
    memory = max(1, min(wanted, int(smallest // 2)) if smallest else wanted)
    return partitions.map_batches(check_partitions, fn_kwargs={"task": checks}, batch_size=1,
                                  batch_format="pyarrow", memory=memory)


def check(plan: ValidationPlan) -> list[pa.Table]:
    """The check stage alone (`score validate`): each batch's `_reasons` column."""
    if not plan.checks.partitions:
        return []
    return [batch for batch in checked(plan.checks).select_columns([REASONS]).iter_batches(batch_format="pyarrow",
                                                                                             batch_size=None)]


def scoring_task(plan: Plan, run_id: str, model: object, threads: int, use_gpu: bool) -> ScoringTask:
    spec = plan.job.spec
    return ScoringTask(
        model=model,
        model_runtime=plan.model.runtime,
        model_suffix=Path(plan.model.path).suffix,
        model_version=plan.model.version,
        binding=plan.binding,
        on_failure=spec.contract.on_failure if spec.contract else "fail",
        null_inputs=spec.model.null_inputs,
        run_id=run_id,
        id_column=spec.input.id_column,
        partition_columns=tuple(spec.input.partitioning),
        event_time_column=spec.input.event_time_column,
        threads=threads,
        use_gpu=use_gpu,
    )


def execute(plan: Plan, run_id: str, pool: PoolSize) -> WrittenFiles:
    """The run's rows through Ray Data: check tasks -> (tokenise actors) -> scoring actors -> write tasks."""
    spec = plan.job.spec
    on_failure = spec.contract.on_failure if spec.contract else "fail"
    task = scoring_task(plan, run_id, ray.put(plan.model.files()), pool.threads, pool.gpus_per_actor > 0)
    sink = DeltaFilesSink(plan.output, plan.quarantine, on_failure, run_id, plan.checks, spec.output.target_file_mb)
    if not plan.checks.partitions:
        return sink.written
    rows = checked(plan.checks)
    if plan.binding.text is not None:  # tokenised in a CPU stage of its own: the scoring actors only score
        rows = tokenized(rows, plan.binding.text, pool.max_actors * pool.cpus_per_actor)
    scored = rows.map_batches(
        ScoreBatches,
        fn_constructor_args=(task,),
        batch_size=spec.scoring.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
        num_cpus=pool.cpus_per_actor,
        num_gpus=pool.gpus_per_actor,
        resources=pool.resources or None,
    )
    scored.write_datasink(sink)
    return sink.written


@dataclass(frozen=True)
class InlineTask:
    """What a Ray Data write task tells a Datasink about itself; here there is one task."""

    task_idx: int = 0


def execute_inline(plan: Plan, run_id: str) -> WrittenFiles:
    """The same stages in this process, one partition at a time, without Ray: for runs so small that
    starting Ray and its workers would take most of their time (`engine.inline_max_rows`). The checks,
    scores, files and counts are those of `execute`; only the scheduling differs."""
    spec = plan.job.spec
    on_failure = spec.contract.on_failure if spec.contract else "fail"
    sink = DeltaFilesSink(plan.output, plan.quarantine, on_failure, run_id, plan.checks, spec.output.target_file_mb)
    scorer = ScoreBatches(scoring_task(plan, run_id, plan.model.files(), os.cpu_count() or 1, use_gpu=False))
    tokenize = Tokenize(plan.binding.text, os.cpu_count() or 1) if plan.binding.text is not None else None
    for index in range(len(plan.checks.partitions)):
        batches = check_partitions(pa.table({"partition": [index]}), plan.checks)
        scored = (scorer(tokenize(batch) if tokenize else batch) for batch in batches)
        sink.written.merge(sink.write(scored, InlineTask()))
    return sink.written
