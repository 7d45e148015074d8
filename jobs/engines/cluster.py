"""Ray: joining a cluster (or starting a local one), shipping this driver's code and settings to it, checking
that every node runs that code, and waiting for the nodes the actor pool needs (`jobs.engines.pool` sizes it).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import ray
from ray.autoscaler.sdk import request_resources
from ray.data import DataContext
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from jobs.engines.endpoints import check_ray
from jobs.engines.pool import PoolSize, size_pool
from jobs.errors import UsageError
from jobs.spec.durations import parse_duration
from jobs.spec.schema import EngineSpec, ScoringSpec
from jobs.tracking.code_version import PACKAGE_DIR, package_digest

log = logging.getLogger(__name__)

RAY_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set in a Ray Job's driver, whose runtime env ships the code
# What never travels with a submitted project: data, tables, local state, environments. Ray refuses a
# package over 500 MiB: big models belong in the registry (models:/, artifacts on object storage).
PROJECT_EXCLUDES = [
    ".git",
    ".venv",
    "venv",
    "data",
    "warehouse",
    ".score",
    "**/__pycache__",
    "*.egg-info",
    "*.parquet",
    ".pytest_cache",
    ".whl",
]
NODE_IP_ENV = "SCORE_RAY_NODE_IP"
FORWARDED_ENV = ("AWS_", "MLFLOW_", "SCORE_", "GOOGLE_", "AZURE_")
LOCAL_ENV = ("_FILE", "_PROFILE", "_CREDENTIALS", "_CONFIG_FILE")  # name files or profiles on this machine


def start(engine: EngineSpec) -> None:
    """Join `engine.address`, else start a local Ray (never one that `RAY_ADDRESS` names behind the spec's
    back). On a remote cluster the job carries a runtime environment (`project_runtime_env`).

    Ray's own logs, its workers' output and Ray Data's operator bars are shown only when this package logs at
    INFO (`score -v`); otherwise they stay in Ray's log files (the session's `logs/` folder)."""
    verbose = log.isEnabledFor(logging.INFO)

    if not ray.is_initialized():
        address = engine.address
        if address and address.startswith("ray://"):
            raise UsageError(
                f"engine.ray_address {address}: Ray Client (ray://) is not supported (Ray advises its "
                "Jobs API for data and ML workloads): run the driver on a node of the cluster with "
                "RAY_ADDRESS=HEAD:6379, or use score submit"
            )
        if address:
            check_ray(address)
        joins = address is not None and RAY_JOB_CONFIG not in os.environ  # a Ray Job already has its env
        try:
            _init(engine, address, joins, verbose)
        except ConnectionError as exc:
            raise UsageError(
                f"engine.ray_address {address}: {exc}; a Ray started with token authentication (Ray's default) "
                "takes drivers that export the same RAY_AUTH_MODE=token and RAY_AUTH_TOKEN"
            ) from None
    _configure_data(engine, verbose)


def _init(engine: EngineSpec, address: str | None, joins: bool, verbose: bool) -> None:
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


def _configure_data(engine: EngineSpec, verbose: bool) -> None:
    """Ray Data's progress bars and console output: ours say what a person needs."""
    context = DataContext.get_current()
    context.enable_progress_bars = verbose and engine.progress_bars != "off" and sys.stderr.isatty()
    context.print_on_execution_start = verbose
    if not verbose:  # our own display says what a person needs; Ray Data's advice goes to its log files
        context.issue_detectors_config.detectors = []
        # Its console handler too: a failing task's traceback (150 lines) stays in the session's ray-data.log, and
        # the run's one line names the cause (`jobs.engines.execute`).
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.CRITICAL + 1)


def start_soon(engine: EngineSpec, scoring: ScoringSpec) -> Future[tuple[PoolSize, str]]:
    """`start`, `wait_for_pool` and `workers_code` on a thread of its own, so that the driver's MLflow logging
    overlaps Ray's start-up; the future's `result()` is the pool and the workers' code digest, or raises what
    they raised. The thread then lives as long as the process: Ray binds the processes it starts to the thread
    that started them (Linux's parent-death signal is per thread), and they died with a thread that returned
    (found by hand)."""
    started: Future[tuple[PoolSize, str]] = Future()

    def run() -> None:
        try:
            start(engine)
            ready = wait_for_pool(scoring), workers_code(engine)
        except BaseException as exc:  # handed to the waiting driver thread, which raises it
            started.set_exception(exc)
        else:
            started.set_result(ready)
        threading.Event().wait()  # even after a failure: a Ray that started stays up until the driver is done

    threading.Thread(target=run, name="ray-start", daemon=True).start()
    return started


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
        env["py_modules"] = [str(PACKAGE_DIR)]
    if project is not None:
        env["working_dir"] = str(project)
    return env


def workers_code(engine: EngineSpec) -> str:
    """The digest of the `jobs` code every alive node's workers import (asked once the pool is sized, so
    that GPU nodes an autoscaler added are asked too); refuses nodes whose code differs from the driver's.
    A run must not record one version and execute another."""
    driver = package_digest()
    if engine.address is None:  # a local Ray runs this machine's files
        return driver
    remote = ray.remote(num_cpus=0)(package_digest)  # pickled by name: each worker imports its own package
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    asked = [
        remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        for n in nodes
    ]
    differ = []
    for node, ref in zip(nodes, asked):
        try:
            if ray.get(ref) != driver:
                differ.append(node["NodeManagerAddress"])
        except ray.exceptions.RayError:  # a node without the package, or with a release that predates the check
            differ.append(f"{node['NodeManagerAddress']} (cannot import it)")
    if differ:
        how = (
            "the runtime environment did not take effect there"
            if engine.ship_code
            else "install this version on every node, or set engine.ship_code: true to ship it with the job"
        )
        raise UsageError(
            f"Ray node(s) {', '.join(differ)} run other code than this driver (jobs package "
            f"sha256 {driver[:12]} here): {how}"
        )
    return driver


def wait_for_pool(scoring: ScoringSpec, poll_s: float = 5.0) -> PoolSize:
    """`size_pool` over the cluster's nodes now. An autoscaling cluster keeps its GPU nodes at zero while idle,
    so a GPU job that no node can hold yet asks the autoscaler for the GPUs of `scoring.actors.min` actors and
    polls for up to `scoring.gpu_wait` until they fit (with `0s`, the default, it refuses at once)."""
    wait_s = parse_duration(scoring.gpu_wait).total_seconds()
    try:
        return size_pool(scoring, ray.nodes())
    except UsageError:
        if scoring.gpus_per_actor <= 0 or wait_s <= 0:
            raise
    deadline = time.monotonic() + wait_s
    _request_resources([{"GPU": scoring.gpus_per_actor, **scoring.resources}] * scoring.actors.min)
    log.info(
        "no node can hold a scoring actor yet: asked the autoscaler for GPU nodes, waiting up to %s (scoring.gpu_wait)",
        scoring.gpu_wait,
    )
    try:
        while True:
            time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
            try:
                pool = size_pool(scoring, ray.nodes())
            except UsageError as exc:
                if time.monotonic() >= deadline:
                    raise UsageError(
                        f"waited {scoring.gpu_wait} (scoring.gpu_wait) for GPU nodes, none came: {exc}"
                    ) from None
                continue
            if pool.max_actors >= scoring.actors.min or time.monotonic() >= deadline:
                return pool
    finally:
        _request_resources([])  # the request persists until overridden: let the cluster scale down again


def _request_resources(bundles: list[dict[str, float]]) -> None:
    """Ask the autoscaler to fit `bundles` (an empty list withdraws the request). Without an autoscaler
    the request is only written to the cluster's key-value store and nothing reads it."""
    try:
        request_resources(bundles=bundles)
    except Exception as exc:  # no autoscaler API on this cluster: keep polling the nodes anyway
        log.warning("could not ask the Ray autoscaler for %s: %s", bundles, exc)
