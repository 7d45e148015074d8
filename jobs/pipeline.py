"""The Ray Data pipeline of one run: read -> check and score on an actor pool -> write files.

Streaming end to end; the driver only sees the small file descriptions the writers return.
"""

from __future__ import annotations

from pathlib import Path

import ray
import ray.data
from ray.data import ActorPoolStrategy
from ray.data.datasource import Partitioning

from jobs.engine import PoolSize
from jobs.plan import Plan, ValidationPlan
from jobs.scoring import CheckBatches, ScoreBatches, ScoringTask
from jobs.sink import DeltaFilesSink, WrittenFiles


def read(files: list[str], base: str, partitioning: list[str], columns: list[str],
         with_paths: bool = False) -> ray.data.Dataset:
    """Exactly these files, hive partition columns from their paths, only the columns needed
    (plus each row's file as `path` when `with_paths`, for the quarantine table)."""
    return ray.data.read_parquet(
        files, partitioning=Partitioning("hive", base_dir=base) if partitioning else None, include_paths=with_paths
    ).select_columns(columns + (["path"] if with_paths else []))


def check(plan: ValidationPlan, pool: PoolSize) -> list[dict]:
    """The contract check alone, on the same actor pool shape; returns one summary per batch."""
    spec = plan.job.spec
    if not plan.clean_files:
        return []
    dataset = read(plan.clean_files, plan.selection.base, spec.input.partitioning, plan.read_columns)
    return dataset.map_batches(
        CheckBatches,
        fn_constructor_args=(plan.contract, spec.contract.engine, tuple(spec.contract.batch_level)),
        batch_size=spec.scoring.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
        num_cpus=pool.cpus_per_actor,
    ).take_all()


def execute(plan: Plan, run_id: str, pool: PoolSize) -> WrittenFiles:
    spec = plan.job.spec
    task = ScoringTask(
        model_ref=ray.put(plan.model.read_bytes()),
        model_runtime=plan.model.runtime,
        model_suffix=Path(plan.model.path).suffix,
        model_version=plan.model.version,
        binding=plan.binding,
        contract=plan.contract,
        on_failure=spec.contract.on_failure if spec.contract else "fail",
        contract_engine=spec.contract.engine if spec.contract else "auto",
        batch_level=tuple(spec.contract.batch_level) if spec.contract else (),
        run_id=run_id,
        id_column=spec.input.id_column,
        partition_columns=tuple(spec.input.partitioning),
        event_time_column=spec.input.event_time_column,
        threads=pool.threads,
        use_gpu=pool.gpus_per_actor > 0,
    )
    sink = DeltaFilesSink(plan.output, plan.quarantine, task.on_failure, run_id)
    if not plan.clean_files:
        return sink.written
    dataset = read(plan.clean_files, plan.selection.base, spec.input.partitioning, plan.read_columns,
                   with_paths=plan.quarantine is not None)
    scored = dataset.map_batches(
        ScoreBatches,
        fn_constructor_args=(task,),
        batch_size=spec.scoring.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
        num_cpus=pool.cpus_per_actor,
        num_gpus=pool.gpus_per_actor,
    )
    scored.write_datasink(sink)
    return sink.written
