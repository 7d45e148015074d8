"""The Ray Data pipeline of one run: check each input partition (tasks) -> score (actor pool) -> write files.

Streaming end to end; the driver only sees the small file descriptions the writers return.
"""

from __future__ import annotations

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


def execute(plan: Plan, run_id: str, pool: PoolSize) -> WrittenFiles:
    spec = plan.job.spec
    on_failure = spec.contract.on_failure if spec.contract else "fail"
    task = ScoringTask(
        model_ref=ray.put(plan.model.files()),
        model_runtime=plan.model.runtime,
        model_suffix=Path(plan.model.path).suffix,
        model_version=plan.model.version,
        binding=plan.binding,
        on_failure=on_failure,
        null_inputs=spec.model.null_inputs,
        run_id=run_id,
        id_column=spec.input.id_column,
        partition_columns=tuple(spec.input.partitioning),
        event_time_column=spec.input.event_time_column,
        threads=pool.threads,
        use_gpu=pool.gpus_per_actor > 0,
    )
    sink = DeltaFilesSink(plan.output, plan.quarantine, on_failure, run_id, plan.checks)
    if not plan.checks.partitions:
        return sink.written
    scored = checked(plan.checks).map_batches(
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
