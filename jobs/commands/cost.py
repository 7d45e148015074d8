"""What a run's work cost: the seconds each stage's workers were busy (`RunSummary.busy_seconds`), times the CPUs and
GPUs one worker of that stage holds, priced per hour (`cost.cpu_hour`, `cost.gpu_hour`).

A check, tally or write task holds one CPU; a scoring actor `scoring.cpus_per_actor` CPUs and
`scoring.gpus_per_actor` GPUs. So the figures add up to the stage timings exactly, and the cost is that of the work
done: the driver, Ray's start-up and actors waiting for rows are not in it (on a cluster billed by the node
hour, those are the difference between this and the bill).
"""

from __future__ import annotations

from typing import Any

from jobs.spec.schema import JobSpec

SCORE = "score"


def run_cost(spec: JobSpec, busy_seconds: dict[str, float], rows: int) -> dict[str, Any]:
    """CPU- and GPU-seconds by stage, and with prices, the cost and the cost per million input rows."""
    cpus = {stage: spec.scoring.cpus_per_actor if stage == SCORE else 1.0 for stage in busy_seconds}
    cpu_seconds = {stage: round(spent * cpus[stage], 3) for stage, spent in busy_seconds.items()}
    gpu_seconds = {SCORE: round(busy_seconds.get(SCORE, 0.0) * spec.scoring.gpus_per_actor, 3)}
    prices = spec.cost
    cost: dict[str, Any] = {
        "cpu_seconds": cpu_seconds,
        "gpu_seconds": gpu_seconds if spec.scoring.gpus_per_actor else {},
        "cpu_hour": prices.cpu_hour,
        "gpu_hour": prices.gpu_hour,
        "currency": prices.currency,
        "total": None,
        "per_million_rows": None,
    }
    if prices.cpu_hour is None and prices.gpu_hour is None:
        return cost
    total = sum(cpu_seconds.values()) * (prices.cpu_hour or 0.0) / 3600
    total += sum(cost["gpu_seconds"].values()) * (prices.gpu_hour or 0.0) / 3600
    cost["total"] = round(total, 6)
    cost["per_million_rows"] = round(total / rows * 1e6, 6) if rows else None
    return cost
