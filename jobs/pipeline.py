"""The Ray Data pipeline of one run: read -> check and score on an actor pool -> write files.

Streaming end to end; the driver only sees the small file descriptions the writers return.
"""

from __future__ import annotations

from pathlib import Path

import ray
from ray.data import ActorPoolStrategy
from ray.data.datasource import Partitioning

from jobs.engine import PoolSize
from jobs.plan import Plan
from jobs.scoring import ScoreBatches, ScoringTask
from jobs.sink import DeltaFilesSink, WrittenFiles


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
        run_id=run_id,
        id_column=spec.input.id_column,
        partition_columns=tuple(spec.input.partitioning),
        event_time_column=spec.input.event_time_column,
        threads=pool.threads,
        use_gpu=pool.gpus_per_actor > 0,
    )
    dataset = ray.data.read_parquet(
        [f.path for f in plan.selection.files],
        partitioning=Partitioning("hive", base_dir=plan.selection.base) if spec.input.partitioning else None,
    ).select_columns(plan.read_columns)
    scored = dataset.map_batches(
        ScoreBatches,
        fn_constructor_args=(task,),
        batch_size=spec.scoring.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
        num_cpus=pool.cpus_per_actor,
        num_gpus=pool.gpus_per_actor,
    )
    sink = DeltaFilesSink(plan.output, plan.quarantine, task.on_failure, run_id)
    scored.write_datasink(sink)
    return sink.written
