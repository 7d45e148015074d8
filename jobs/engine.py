"""Ray: joining a cluster (or starting a local one) and sizing the actor pool from what it has.

On a 2-CPU machine two 1-CPU actors leave no CPU for the read tasks and the job hangs with 0 rows done,
so actors are sized to leave room for reading and writing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from jobs.endpoints import check_ray
from jobs.errors import UsageError
from jobs.spec import EngineSpec, JobSpec, ScoringSpec

log = logging.getLogger(__name__)

RAY_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set in a Ray Job's driver, whose runtime env ships the code
# What never travels with a submitted project: data, tables, local state, environments. Ray refuses a
# package over 500 MiB: big models belong in the registry (models:/, artifacts on object storage).
PROJECT_EXCLUDES = [".git", ".venv", "venv", "data", "warehouse", ".score", "**/__pycache__", "*.egg-info",
                    "*.parquet", ".pytest_cache", ".whl"]
NODE_IP_ENV = "SCORE_RAY_NODE_IP"
FORWARDED_ENV = ("AWS_", "MLFLOW_", "SCORE_", "GOOGLE_", "AZURE_")
LOCAL_ENV = ("_FILE", "_PROFILE", "_CREDENTIALS", "_CONFIG_FILE")  # name files or profiles on this machine


@dataclass(frozen=True)
class PoolSize:
    """What each scoring actor takes and how many run; `resources` are the custom Ray resources per actor."""

    min_actors: int
    max_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    resources: dict[str, float] = field(default_factory=dict, hash=False)
    threads: int = 1  # the model runtime's threads in each actor


def start(engine: EngineSpec) -> None:
    """Join `engine.address`, else start a local Ray (never one that `RAY_ADDRESS` names behind the spec's
    back). On a remote cluster the job carries a runtime environment (`project_runtime_env`).

    Ray's own logs, its workers' output and Ray Data's operator bars are shown only when this package logs at
    INFO (`score -v`); otherwise they stay in Ray's log files (the session's `logs/` folder)."""
    import ray
    from ray.data import DataContext

    verbose = log.isEnabledFor(logging.INFO)

    if not ray.is_initialized():
        address = engine.address
        if address and address.startswith("ray://"):
            raise UsageError(f"engine.ray_address {address}: Ray Client (ray://) is not supported (Ray advises its "
                             "Jobs API for data and ML workloads): run the driver on a node of the cluster with "
                             "RAY_ADDRESS=HEAD:6379, or use score submit")
        if address:
            check_ray(address)
        joins = address is not None and RAY_JOB_CONFIG not in os.environ  # a Ray Job already has its env
        ray.init(
            address=address or "local",
            # A local Ray listens on the machine's network address unless told otherwise; SCORE_RAY_NODE_IP
            # (a loopback address such as 127.0.0.9 on Linux) keeps it on this machine. Tests set it.
            _node_ip_address=None if address else (os.environ.get(NODE_IP_ENV) or None),
            runtime_env=project_runtime_env(engine.ship_code, forward_env=engine.forward_env) if joins else None,
            include_dashboard=False,
            logging_level=logging.INFO if verbose else logging.ERROR,
            log_to_driver=verbose,
            configure_logging=True,
        )
    context = DataContext.get_current()
    context.enable_progress_bars = verbose and engine.progress_bars != "off" and sys.stderr.isatty()
    context.print_on_execution_start = verbose
    if not verbose:  # our own display says what a person needs; Ray Data's advice goes to its log files
        context.issue_detectors_config.detectors = []
        logging.getLogger("ray.data").setLevel(logging.ERROR)


def start_soon(engine: EngineSpec) -> Future:
    """`start` on a thread of its own, so that the driver's MLflow logging overlaps Ray's start-up; the
    future's `result()` waits for it and raises what `start` raised. The thread then lives as long as the
    process: Ray binds the processes it starts to the thread that started them (Linux's parent-death signal
    is per thread), and they died with a thread that returned (found by hand)."""
    started: Future = Future()

    def run() -> None:
        try:
            start(engine)
        except BaseException as exc:  # handed to the waiting driver thread, which raises it
            started.set_exception(exc)
            return
        started.set_result(None)
        threading.Event().wait()

    threading.Thread(target=run, name="ray-start", daemon=True).start()
    return started


def runs_inline(spec: JobSpec, rows: int) -> bool:
    """Whether a run of `rows` rows scores in the driver process (`engine.inline_max_rows`): only on a local
    engine and CPUs, where the cluster would be this machine anyway."""
    return (spec.engine.address is None and spec.scoring.gpus_per_actor == 0
            and rows <= spec.engine.inline_max_rows)


def forwarded_env() -> dict[str, str]:
    """The driver's storage and tracking settings (`AWS_*`, `MLFLOW_*`, `SCORE_*`, ...), which the workers
    need to reach the same storage. Paths to files and profile names are left out: they name things on the
    driver's machine. The values go to the cluster, never to logs or records."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV) and not k.endswith(LOCAL_ENV)}


def project_runtime_env(ship_code: bool = True, project: Path | None = None, forward_env: bool = True) -> dict:
    """The Ray runtime environment of a job on a remote cluster: the driver's storage settings (unless the
    nodes have their own: `forward_env`); with `ship_code`, the `jobs` package this driver runs (Ray puts
    it first on the workers' PYTHONPATH, ahead of whatever version the nodes have installed); with
    `project`, that folder as the working directory (`conf/`, `data_contracts/`, `models/` builders: what
    a submitted job's driver reads)."""
    env: dict = {"env_vars": forwarded_env() if forward_env else {}, "excludes": PROJECT_EXCLUDES}
    if ship_code:
        env["py_modules"] = [str(Path(__file__).resolve().parent)]
    if project is not None:
        env["working_dir"] = str(project)
    return env


def package_digest() -> str:
    """sha256 over the `jobs` package's source files: the same wherever the same code is installed."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def workers_code(engine: EngineSpec) -> str:
    """The digest of the `jobs` code every alive node's workers import (asked once the pool is sized, so
    that GPU nodes an autoscaler added are asked too); refuses nodes whose code differs from the driver's.
    A run must not record one version and execute another."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    driver = package_digest()
    if engine.address is None:  # a local Ray runs this machine's files
        return driver
    remote = ray.remote(num_cpus=0)(package_digest)  # pickled by name: each worker imports its own package
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    asked = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
             .remote() for n in nodes]
    differ = []
    for node, ref in zip(nodes, asked):
        try:
            if ray.get(ref) != driver:
                differ.append(node["NodeManagerAddress"])
        except ray.exceptions.RayError:  # a node without the package, or with a release that predates the check
            differ.append(f"{node['NodeManagerAddress']} (cannot import it)")
    if differ:
        how = ("the runtime environment did not take effect there" if engine.ship_code
               else "install this version on every node, or set engine.ship_code: true to ship it with the job")
        raise UsageError(f"Ray node(s) {', '.join(differ)} run other code than this driver (jobs package "
                         f"sha256 {driver[:12]} here): {how}")
    return driver


def size_pool(scoring: ScoringSpec, nodes: list[dict]) -> PoolSize:
    """Fit the requested pool into the alive nodes of `ray.nodes()`: an actor runs on one node, so each node
    is counted by what it alone offers (CPUs, GPUs, the custom `scoring.resources`), and the actors together
    leave at least one CPU of the cluster (half of a 1-CPU cluster) to the read, check and write tasks."""
    offers = [(node.get("NodeManagerAddress", "?"), _offer(node)) for node in nodes if node.get("Alive")]
    total_cpus = sum(offer.get("CPU", 0.0) for _, offer in offers)
    budget = max(total_cpus - 1, total_cpus / 2)
    hosts = [(address, offer, fit) for address, offer in offers
             if offer.get("CPU", 0.0) > 0 and (fit := _fit_without_cpus(scoring, offer)) >= 1]
    if not hosts:
        raise UsageError(_refusal(scoring, offers))
    if scoring.gpus_per_actor > 0:
        # GPUs are the scarce part: shrink the CPU share so that every GPU that can hold an actor gets one.
        wanted = min(scoring.actors.max, sum(fit for _, _, fit in hosts))
        share = min(scoring.cpus_per_actor, budget / wanted,
                    min(offer["CPU"] / min(fit, wanted) for _, offer, fit in hosts))
    else:
        share = min(scoring.cpus_per_actor, budget, max(offer["CPU"] for _, offer, _ in hosts))
    share = max(math.floor(share * 10_000) / 10_000, 0.0001)  # Ray counts resources in steps of 0.0001
    per_node = {address: 0 for address, _ in offers}
    for address, offer, fit in hosts:
        per_node[address] += min(fit, _whole(offer["CPU"] / share))
    max_actors = min(scoring.actors.max, sum(per_node.values()), _whole(budget / share))
    size = PoolSize(min(scoring.actors.min, max_actors), max_actors, share, scoring.gpus_per_actor,
                    dict(scoring.resources), _threads(scoring, share, max_actors, hosts))
    log.info("actor pool: %d-%d actors of %g CPU / %g GPU%s, %d threads each; room per node, in actors: %s; %g of "
             "the cluster's %g CPUs stay free for reading and writing", size.min_actors, size.max_actors, share,
             size.gpus_per_actor, "".join(f" / {v:g} {k}" for k, v in size.resources.items()), size.threads,
             ", ".join(f"{address} {count}" for address, count in per_node.items()),
             total_cpus - max_actors * share, total_cpus)
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


def wait_for_pool(scoring: ScoringSpec, poll_s: float = 5.0) -> PoolSize:
    """`size_pool` over the cluster's nodes now. An autoscaling cluster keeps its GPU nodes at zero while idle,
    so a GPU job that no node can hold yet asks the autoscaler for the GPUs of `scoring.actors.min` actors and
    polls for up to `scoring.gpu_wait` until they fit (with `0s`, the default, it refuses at once)."""
    import time

    import ray

    from jobs.freshness import parse_duration

    wait_s = parse_duration(scoring.gpu_wait).total_seconds()
    try:
        return size_pool(scoring, ray.nodes())
    except UsageError:
        if scoring.gpus_per_actor <= 0 or wait_s <= 0:
            raise
    deadline = time.monotonic() + wait_s
    _request_resources([{"GPU": scoring.gpus_per_actor, **scoring.resources}] * scoring.actors.min)
    log.info("no node can hold a scoring actor yet: asked the autoscaler for GPU nodes, waiting up to %s "
             "(scoring.gpu_wait)", scoring.gpu_wait)
    try:
        while True:
            time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
            try:
                pool = size_pool(scoring, ray.nodes())
            except UsageError as exc:
                if time.monotonic() >= deadline:
                    raise UsageError(f"waited {scoring.gpu_wait} (scoring.gpu_wait) for GPU nodes, none came: "
                                     f"{exc}") from None
                continue
            if pool.max_actors >= scoring.actors.min or time.monotonic() >= deadline:
                return pool
    finally:
        _request_resources([])  # the request persists until overridden: let the cluster scale down again


def _request_resources(bundles: list[dict[str, float]]) -> None:
    """Ask the autoscaler to fit `bundles` (an empty list withdraws the request). Without an autoscaler
    the request is only written to the cluster's key-value store and nothing reads it."""
    from ray.autoscaler.sdk import request_resources

    try:
        request_resources(bundles=bundles)
    except Exception as exc:  # no autoscaler API on this cluster: keep polling the nodes anyway
        log.warning("could not ask the Ray autoscaler for %s: %s", bundles, exc)


def _offer(node: dict) -> dict[str, float]:
    """CPU, GPU and custom resources of a node; memory and Ray's own `node:`/`accelerator_type:` markers
    are left out."""
    return {name: float(amount) for name, amount in node.get("Resources", {}).items()
            if name not in ("memory", "object_store_memory") and ":" not in name}


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
            short = ("no node of the cluster offers " + name if not any(name in offer for _, offer in offers)
                     else f"no node of the cluster offers {amount:g} {name}")
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
            reasons.append(f"no node of the cluster with CPUs offers all that an actor asks ({', '.join(asked)}): "
                           f"change {' or '.join(keys)}")
        else:
            reasons.append("no node of the Ray cluster has CPUs for the scoring actors")
    return "; ".join(reasons) + "; nodes: " + ", ".join(_describe(address, offer) for address, offer in offers)


def _describe(address: str, offer: dict[str, float]) -> str:
    """`127.0.0.3 CPU 1 worker_node 2`: CPU first, then GPU, then custom resources by name."""
    order = sorted(offer, key=lambda name: (name != "CPU", name != "GPU", name))
    return " ".join([address, *(f"{name} {offer[name]:g}" for name in order if name == "CPU" or offer[name])])
