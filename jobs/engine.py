"""Ray: joining a cluster (or starting a local one) and sizing the actor pool from what it has.

On a 2-CPU machine two 1-CPU actors leave no CPU for the read tasks and the job hangs with 0 rows done,
so actors are sized to leave room for reading and writing.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass

from jobs.errors import UsageError
from jobs.spec import EngineSpec, ScoringSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSize:
    min_actors: int
    max_actors: int
    cpus_per_actor: float
    gpus_per_actor: float

    @property
    def threads(self) -> int:
        return max(1, math.floor(self.cpus_per_actor))


def start(engine: EngineSpec) -> dict[str, float]:
    """Connect to `engine.ray_address` / `RAY_ADDRESS`, else start local Ray; returns cluster resources."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        address = engine.ray_address or os.environ.get("RAY_ADDRESS") or None
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
            configure_logging=True,
        )
    context = DataContext.get_current()
    show = engine.progress_bars == "on" or (engine.progress_bars == "auto" and sys.stderr.isatty())
    context.enable_progress_bars = show
    context.print_on_execution_start = show
    return ray.cluster_resources()


def size_pool(scoring: ScoringSpec, resources: dict[str, float]) -> PoolSize:
    """Fit the requested pool into the cluster, keeping at least one CPU for reads and writes."""
    cpus = float(resources.get("CPU", 1))
    gpus = float(resources.get("GPU", 0))
    if scoring.gpus_per_actor > 0:
        if gpus < scoring.gpus_per_actor:
            raise UsageError(
                f"scoring.gpus_per_actor is {scoring.gpus_per_actor} but the Ray cluster has {gpus:g} GPUs: "
                "set it to 0 to score on CPUs"
            )
        fit = math.floor(gpus / scoring.gpus_per_actor)
        cpu_share = min(scoring.cpus_per_actor, max(cpus - 1, 0.5) / max(1, min(fit, scoring.actors.max)))
    else:
        spare = max(cpus - 1, cpus / 2)
        cpu_share = min(scoring.cpus_per_actor, spare)
        fit = max(1, math.floor(spare / cpu_share))
    max_actors = min(scoring.actors.max, fit)
    size = PoolSize(min(scoring.actors.min, max_actors), max_actors, cpu_share, scoring.gpus_per_actor)
    if max_actors < scoring.actors.max or cpu_share < scoring.cpus_per_actor:
        log.info("actor pool sized to %s for %g CPUs / %g GPUs", size, cpus, gpus)
    return size
