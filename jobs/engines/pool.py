"""The scoring actors' pool sized to a cluster: how many actors, and what each takes, node by node.

On a 2-CPU machine two 1-CPU actors leave no CPU for the read tasks and the job hangs with 0 rows done, so
actors are sized to leave room for reading and writing. Pure arithmetic over `ray.nodes()`-shaped dicts:
`score plan` and `score bench` size a pool for this machine without starting Ray.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from jobs.errors import UsageError
from jobs.spec.schema import ScoringSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSize:
    """What each scoring actor takes and how many run; `resources` are the custom Ray resources per actor."""

    min_actors: int
    max_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    resources: dict[str, float] = field(default_factory=dict, hash=False)
    threads: int = 1  # the model runtime's threads in each actor

    def params(self) -> dict[str, Any]:
        """The pool as the run's MLflow parameters record it."""
        return {
            "engine": "ray",
            "actors_min": self.min_actors,
            "actors_max": self.max_actors,
            "cpus_per_actor": self.cpus_per_actor,
            "gpus_per_actor": self.gpus_per_actor,
            "threads_per_actor": self.threads,
            "resources_per_actor": self.resources,
        }


def size_pool(scoring: ScoringSpec, nodes: list[dict]) -> PoolSize:
    """Fit the requested pool into the alive nodes of `ray.nodes()`: an actor runs on one node, so each node
    is counted by what it alone offers (CPUs, GPUs, the custom `scoring.resources`), and the actors together
    leave at least one CPU of the cluster (half of a 1-CPU cluster) to the read, check and write tasks."""
    offers = [(node.get("NodeManagerAddress", "?"), _offer(node)) for node in nodes if node.get("Alive")]
    total_cpus = sum(offer.get("CPU", 0.0) for _, offer in offers)
    budget = max(total_cpus - 1, total_cpus / 2)
    hosts = [
        (address, offer, fit)
        for address, offer in offers
        if offer.get("CPU", 0.0) > 0 and (fit := _fit_without_cpus(scoring, offer)) >= 1
    ]
    if not hosts:
        raise UsageError(_refusal(scoring, offers))
    if scoring.gpus_per_actor > 0:
        # GPUs are the scarce part: shrink the CPU share so that every GPU that can hold an actor gets one.
        wanted = min(scoring.actors.max, sum(fit for _, _, fit in hosts))
        share = min(
            scoring.cpus_per_actor, budget / wanted, min(offer["CPU"] / min(fit, wanted) for _, offer, fit in hosts)
        )
    else:
        share = min(scoring.cpus_per_actor, budget, max(offer["CPU"] for _, offer, _ in hosts))
    share = max(math.floor(share * 10_000) / 10_000, 0.0001)  # Ray counts resources in steps of 0.0001
    per_node = {address: 0 for address, _ in offers}
    for address, offer, fit in hosts:
        per_node[address] += int(min(fit, _whole(offer["CPU"] / share)))  # fit is infinite without GPU or resource asks
    max_actors = min(scoring.actors.max, sum(per_node.values()), _whole(budget / share))
    size = PoolSize(
        min(scoring.actors.min, max_actors),
        max_actors,
        share,
        scoring.gpus_per_actor,
        dict(scoring.resources),
        _threads(scoring, share, max_actors, hosts),
    )
    log.info(
        "actor pool: %d-%d actors of %g CPU / %g GPU%s, %d threads each; room per node, in actors: %s; %g of "
        "the cluster's %g CPUs stay free for reading and writing",
        size.min_actors,
        size.max_actors,
        share,
        size.gpus_per_actor,
        "".join(f" / {v:g} {k}" for k, v in size.resources.items()),
        size.threads,
        ", ".join(f"{address} {count}" for address, count in per_node.items()),
        total_cpus - max_actors * share,
        total_cpus,
    )
    return size


def _threads(scoring: ScoringSpec, share: float, actors: int, hosts: list) -> int:
    """`scoring.threads_per_actor`, else: a CPU actor's model computes on all the cores its node has per actor,
    not only on the CPUs Ray reserves for it. The reservation leaves CPUs to the read, check and write tasks
    so that they are scheduled at all; their work is mostly I/O and Arrow, and a model confined to its share
    left half of a 2-core machine idle (measured: an MLP job at 0.28x the bare loop, which computes on both)."""
    if scoring.threads_per_actor:
        return scoring.threads_per_actor
    own = max(1, math.floor(share))
    if scoring.gpus_per_actor > 0:
        return own
    cores = min(offer["CPU"] for _, offer, _ in hosts)
    return max(own, math.floor(cores / max(1, math.ceil(actors / len(hosts)))))


def _offer(node: dict) -> dict[str, float]:
    """CPU, GPU and custom resources of a node; memory and Ray's own `node:`/`accelerator_type:` markers
    are left out."""
    return {
        name: float(amount)
        for name, amount in node.get("Resources", {}).items()
        if name not in ("memory", "object_store_memory") and ":" not in name
    }


def _fit_without_cpus(scoring: ScoringSpec, offer: dict[str, float]) -> float:
    """How many actors a node's GPUs and custom resources hold (infinite when the actor asks neither)."""
    asks = dict(scoring.resources)
    if scoring.gpus_per_actor > 0:
        asks["GPU"] = scoring.gpus_per_actor
    return min((_whole(offer.get(name, 0.0) / amount) for name, amount in asks.items()), default=math.inf)


def _whole(ratio: float) -> int:
    """floor() that does not lose an actor to float rounding (15 / (15 / 8) is 7.999...)."""
    return math.floor(ratio + 1e-9)


def _refusal(scoring: ScoringSpec, offers: list[tuple[str, dict[str, float]]]) -> str:
    """Why no node can hold one actor, naming the spec keys to change and what each node offers."""
    if not offers:
        return "the Ray cluster has no alive nodes"
    reasons = []
    for name, amount in scoring.resources.items():
        if not any(offer.get(name, 0.0) >= amount for _, offer in offers):
            short = (
                "no node of the cluster offers " + name
                if not any(name in offer for _, offer in offers)
                else f"no node of the cluster offers {amount:g} {name}"
            )
            reasons.append(f"scoring.resources asks {name}={amount:g} per actor but {short}")
    gpus = scoring.gpus_per_actor
    if gpus > 0 and not any(offer.get("GPU", 0.0) >= gpus for _, offer in offers):
        most = max(offer.get("GPU", 0.0) for _, offer in offers)
        has = f"no node has {gpus:g} GPUs (the most is {most:g})" if most else "the Ray cluster has no GPUs"
        reasons.append(f"scoring.gpus_per_actor is {gpus:g} but {has}: set it to 0 to score on CPUs")
    if not reasons:  # each ask is met somewhere, but never all of them on one node that also has CPUs
        asked = ([f"GPU={gpus:g}"] if gpus > 0 else []) + [f"{k}={v:g}" for k, v in scoring.resources.items()]
        keys = (["scoring.gpus_per_actor"] if gpus > 0 else []) + (["scoring.resources"] if scoring.resources else [])
        if asked:
            reasons.append(
                f"no node of the cluster with CPUs offers all that an actor asks ({', '.join(asked)}): "
                f"change {' or '.join(keys)}"
            )
        else:
            reasons.append("no node of the Ray cluster has CPUs for the scoring actors")
    return "; ".join(reasons) + "; nodes: " + ", ".join(_describe(address, offer) for address, offer in offers)


def _describe(address: str, offer: dict[str, float]) -> str:
    """`127.0.0.3 CPU 1 worker_node 2`: CPU first, then GPU, then custom resources by name."""
    order = sorted(offer, key=lambda name: (name != "CPU", name != "GPU", name))
    return " ".join([address, *(f"{name} {offer[name]:g}" for name in order if name == "CPU" or offer[name])])
