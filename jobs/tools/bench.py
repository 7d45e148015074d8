"""`score bench`: how fast a job scores, side by side with the bare loop, and which settings to use.

Performance is a ratio, never an absolute time (DESIGN.md). On one sample, in one run, each variant runs
`repeat` times, interleaved (warm-up and cache effects fall on all of them), and medians are compared:

- model alone: the model called on in-memory batches whose feeds were built beforehand: the ceiling;
- bare loop: `jobs.tools.bare_loop` as a process of its own, timed from start to exit as the job is: pyarrow
  reads the sample's Parquet, the same model scores it with its runtime's default threads (ONNX Runtime: one
  per physical core; torch: its default) and pyarrow writes the id and the outputs as Parquet: the same work as
  the job minus contract, commit and lineage, and the yardstick every ratio is taken against (`make
  bench-peers` takes its ratios against the same program);
- job: `score run` in a subprocess against a temporary warehouse and MLflow store (never the user's),
  timed from process start to exit: what a scheduler pays, imports and Ray start-up included. Its summary
  says where the time went (driver phases, and each stage's busy seconds);
- job without contract: the same with a suite of no expectations (the contract's policy still takes the rows
  the model cannot), when the job has a contract: the expectations' own cost;
- the job on the other engine (inline or Ray, local CPU jobs only): where the crossover between the two lies
  on this machine, from each engine's fixed cost and rate (`engine.inline_max_rows` is recommended from it).

The job's peak memory is the PSS (RSS where the kernel offers no PSS) summed over its process and all
descendants (Ray's GCS, raylet and workers), sampled every 0.2 s: PSS splits shared pages (Ray's object
store, shared libraries) among the processes that map them, so a sum does not count them once per worker.
GPU utilisation (of the whole device, from `nvidia-smi`) is sampled the same way when `nvidia-smi` exists.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.engines.inline import runs_inline, save_crossover
from jobs.engines.pool import size_pool
from jobs.errors import ContractFailure, RuntimeFailure, UsageError
from jobs.models.artifacts import ModelArtifact, ModelBinding, bind_model
from jobs.models.precision import cache_folder, compare, with_precision
from jobs.models.runtimes import Runtime, open_runtime
from jobs.models.text import Tokenize
from jobs.plan.samples import write_sample
from jobs.spec.load import load_spec
from jobs.spec.schema import ActorsSpec, JobSpec, TrackingSpec
from jobs.stages.scoring import build_feeds
from jobs.tables.profile_table import profiles_table
from jobs.tools.bare_loop import Task
from jobs.tracking.connect import connect
from jobs.tracking.registry import resolve_model

DEFAULT_ROWS = 500_000
TRIAL_BATCH_SIZES = (1024, 8192, 65536)
TRIAL_SECONDS = 0.5  # per (threads, batch size) trial on the model alone: enough for a stable rate, still cheap
SAMPLE_INTERVAL_S = 0.2
NEAR_BEST = 0.9  # settings this close to the fastest count as equally fast: the bigger batch is recommended
JOB = "job"  # the name of the full job's variant; `bench_job(variants=...)` may add others
WITHOUT_CONTRACT = "job_without_contract"
WITHOUT_MONITORING = "job_without_monitoring"
BASELINE = "baseline"  # the warehouse of the untimed run whose profiles every timed run measures drift against
ON_ENGINE = "job_{engine}"  # the job on the engine it would not choose at this size


def bench_job(
    job: str | Path,
    rows: int = DEFAULT_ROWS,
    repeat: int = 3,
    partitions: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    variants: dict[str, list[str]] | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict:
    """Measure one job on a sample of `rows` rows of its selected partitions (or generated rows of its
    schema when its input folder holds no Parquet yet) and recommend scoring settings.

    `variants` maps a name to extra `--set` overrides of the full job (default: `{"job": []}`), each run
    interleaved with the others. Returns the report `score bench --json` prints."""
    if rows <= 0 or repeat <= 0:
        raise UsageError(f"bench: --rows ({rows}) and --repeat ({repeat}) must be positive")
    loaded = load_spec(job, overrides)
    spec = loaded.spec
    model = with_precision(
        resolve_model(spec.model, spec.tracking),
        spec.scoring.precision,
        loaded.root,
        where=f"{loaded.file}: scoring.precision",
    )
    use_gpu = spec.scoring.gpus_per_actor > 0
    loop_threads = default_threads(model.runtime)  # before any runtime here changes torch's thread count
    with tempfile.TemporaryDirectory(prefix="score-bench-") as tmp:
        work = Path(tmp)
        sample = write_sample(spec, partitions or spec.input.partitions, rows, work / "input", model)
        log(
            f"bench: {sample['rows']:,} rows from {len(sample['partitions'])} partition(s) "
            f"({sample['source']}) in {work / 'input'}"
        )
        table = pa.concat_tables([pq.read_table(f) for f in sample["files"]], promote_options="permissive")
        binding = bind_model(model, spec.model, table.schema, f"the bench sample of {spec.input.path}")
        if binding.text is not None:  # the model alone sees token ids, as the scoring actors do
            table = Tokenize(binding.text)(table)
        tracking = TrackingSpec(
            uri=f"sqlite:///{work / 'mlflow.db'}",
            experiment=spec.tracking.experiment,
            artifact_location=(work / "mlartifacts").as_uri(),
        )
        _init_tracking(tracking)
        job_overrides = [
            *overrides,
            f"input.path={work / 'input'}",
            "input.partitions=all",
            f"model.uri={model.path}",
            f"model.runtime={model.runtime}",
            f"tracking.uri={tracking.uri}",
            f"tracking.artifact_location={tracking.artifact_location}",
            "engine.ray_address=local",
            "engine.progress_bars=off",
        ]
        if sample["source"] == "generated":
            job_overrides.append("contract=null")  # generated rows follow the model's signature, not the contract
        if variants is None:
            empty = None if sample["source"] == "generated" else work / "no_expectations.json"
            variants = default_variants(spec, sample["rows"], empty)
        if spec.monitoring.drift:  # every timed run then pays for the whole of drift: profiles, comparison, report
            run_job_process(
                loaded.file, [*job_overrides, f"warehouse.uri={work / 'warehouse' / BASELINE}"], loaded.root
            )
            job_overrides.append("monitoring.baseline=version 0")

        alone_runtime = _open(model, use_gpu, loop_threads)
        feeds = [
            build_feeds(binding, table.slice(o, spec.scoring.batch_size))
            for o in range(0, table.num_rows, spec.scoring.batch_size)
        ]
        task_file = work / "bare_loop.json"
        Task.of(model, binding, sample["files"], spec.input.id_column, spec.scoring.batch_size, use_gpu).save(task_file)
        timings: dict[str, list[float]] = {name: [] for name in ["model_alone", "bare_loop", *variants]}
        gpu: dict[str, list[dict]] = {name: [] for name in timings}
        jobs: dict[str, list[dict]] = {name: [] for name in variants}
        for r in range(repeat):
            with Sampler(None) as sampler:
                timings["model_alone"].append(_time_batches(alone_runtime, feeds))
            gpu["model_alone"].append(sampler.result())
            loop_rows, seconds, sampled = bare_loop(task_file, work / "bare" / str(r))
            timings["bare_loop"].append(seconds)
            gpu["bare_loop"].append(sampled)
            for name, extra in variants.items():
                warehouse = work / "warehouse" / f"{name}-{r}"
                if spec.monitoring.drift:
                    profiles = profiles_table(spec.output.table)
                    shutil.copytree(work / "warehouse" / BASELINE / profiles, warehouse / profiles)
                done = run_job_process(
                    loaded.file, [*job_overrides, f"warehouse.uri={warehouse}", *extra], cwd=loaded.root
                )
                timings[name].append(done["wall_s"])
                jobs[name].append(done)
            log(f"bench: repeat {r + 1}/{repeat}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in timings.items()))
        if loop_rows != sample["rows"]:
            raise RuntimeFailure(f"bench: the bare loop read {loop_rows} rows of a {sample['rows']}-row sample")
        trials = try_settings(model, binding, table, spec.scoring.batch_size, use_gpu)
        scorable = build_feeds(binding, _scorable(table, binding).slice(0, spec.scoring.batch_size))
        precision = precision_comparison(model, binding, scorable, cache_folder(loaded.root), use_gpu)

    report = {
        "job": spec.name,
        "job_file": str(loaded.file),
        "rows": sample["rows"],
        "repeat": repeat,
        "sample": {k: v for k, v in sample.items() if k != "files"},
        "model": {
            "uri": spec.model.uri,
            "version": model.version,
            "runtime": model.runtime,
            "device": alone_runtime.device,
        },
        "machine": {"cpus": os.cpu_count(), "gpus": len(_gpu_query() or [])},
        "memory_metric": Sampler.memory_metric(),
        "variants": {},
    }
    loop_rate = sample["rows"] / statistics.median(timings["bare_loop"])
    for name, runs in timings.items():
        median = statistics.median(runs)
        entry: dict[str, Any] = {
            "rows": sample["rows"],
            "median_s": round(median, 3),
            "runs_s": [round(t, 3) for t in runs],
            "rows_per_s": round(sample["rows"] / median, 1),
            "ratio_to_bare_loop": round(sample["rows"] / median / loop_rate, 4),
        }
        if name in jobs:
            processes = jobs[name]
            summaries = [d["summary"] for d in processes]
            entry.update(
                {
                    "wall_s": entry["median_s"],
                    "job_duration_s": round(statistics.median(s["duration_s"] for s in summaries), 3),
                    "rows_scored": summaries[-1]["rows_scored"],
                    "rows_quarantined": summaries[-1]["rows_quarantined"],
                    "peak_memory_bytes": max(d["sampled"]["peak_memory_bytes"] for d in processes),
                    "overrides": variants[name],
                    "engine": summaries[-1]["engine"],
                    "seconds": _medians([s["seconds"] for s in summaries]),
                    "busy_seconds": _medians([s["busy_seconds"] for s in summaries]),
                }
            )
            entry["gpu"] = _gpu_summary([d["sampled"] for d in processes])
        else:
            entry["threads"] = "default" if not loop_threads else loop_threads
            entry["gpu"] = _gpu_summary(gpu[name])
            if name == "bare_loop":
                entry["peak_memory_bytes"] = max(g["peak_memory_bytes"] for g in gpu[name])
        report["variants"][name] = entry
    if WITHOUT_CONTRACT in report["variants"]:
        with_it, without = report["variants"][JOB]["median_s"], report["variants"][WITHOUT_CONTRACT]["median_s"]
        report["contract_cost"] = round(with_it / without - 1, 4)
    if WITHOUT_MONITORING in report["variants"]:
        with_it, without = report["variants"][JOB]["median_s"], report["variants"][WITHOUT_MONITORING]["median_s"]
        report["monitoring_cost"] = round(with_it / without - 1, 4)
    report["trials"] = trials
    machine = report["machine"]
    if report["variants"][JOB].get("engine") == "inline":
        report["recommendation"] = recommend_inline(trials, sample["rows"])
    else:
        report["recommendation"] = recommend(trials, spec, machine["cpus"], machine["gpus"])
    report["engine_crossover"] = crossover(report["variants"])
    if report["engine_crossover"] is not None:  # `engine.inline_max_rows: measured` runs use it from now on
        cross = report["engine_crossover"]
        save_crossover(spec, cross["inline_max_rows"], {"fixed_s": cross["fixed_s"], "rows_per_s": cross["rows_per_s"]})
    report["precision"] = precision
    return report


# -- the variants ---------------------------------------------------------------------------------------------


@functools.cache
def default_threads(runtime: str) -> int:
    """The bare loop's threads: ONNX Runtime's default (0: one per physical core); torch's default thread count,
    read once, before any runtime in this process sets it."""
    if runtime == "onnx":
        return 0
    import torch  # optional (not a dependency): only torch models need it

    return torch.get_num_threads()


def _open(model: ModelArtifact, use_gpu: bool, threads: int) -> Runtime:
    return open_runtime(
        model.runtime, model.files(), Path(model.path).suffix, [t.name for t in model.outputs], use_gpu, threads
    )


def bare_loop(task_file: Path, out: Path) -> tuple[int, float, dict]:
    """`python -m jobs.tools.bare_loop` on the sample, timed from process start to exit as the job is: the
    rows it read, its wall seconds, and its sampled GPU use."""
    done = timed_process([sys.executable, "-m", "jobs.tools.bare_loop", str(task_file), str(out)])
    if done.code != 0:
        raise RuntimeFailure(f"bench: the bare loop failed (exit {done.code}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])["rows"], done.wall_s, done.sampled


def default_variants(spec: JobSpec, rows: int, no_expectations: Path | None) -> dict[str, list[str]]:
    """The job; without its contract's expectations, when it has a contract (`no_expectations`: a suite of
    none, None when the sample runs without the contract anyway); and on the engine it would not choose for
    `rows` rows, when both can run it (a local CPU job).

    Without expectations rather than without the contract: the contract's policy still applies to the rows the
    model cannot take (a null input), which `contract=null` would turn into a failed run on data that has
    them (the starter project's sample did)."""
    variants: dict[str, list[str]] = {JOB: []}
    if no_expectations is not None and spec.contract is not None:
        no_expectations.write_text(json.dumps({"name": "no_expectations", "expectations": []}))
        variants[WITHOUT_CONTRACT] = [f"contract.suite={no_expectations}"]
    if spec.monitoring.drift:
        variants[WITHOUT_MONITORING] = ["monitoring.drift=false"]
    if spec.engine.address is None and spec.scoring.gpus_per_actor == 0:
        other = "ray" if runs_inline(spec, rows) else "inline"
        variants[ON_ENGINE.format(engine=other)] = [f"engine.inline_max_rows={0 if other == 'ray' else rows}"]
    return variants


def crossover(variants: dict[str, dict]) -> dict | None:
    """Where the inline engine stops paying on this machine, from one run of each: a run costs a fixed part
    (its wall time minus its pipeline's) plus rows at its pipeline's rate; the crossover is the row count at
    which both engines take equally long, recommended as `engine.inline_max_rows`. None without both."""
    by_engine = {v["engine"]: v for name, v in variants.items() if name in (JOB, *_ENGINE_VARIANTS) and "engine" in v}
    if {"inline", "ray"} - by_engine.keys():
        return None
    fixed, per_row = {}, {}
    for engine, v in by_engine.items():
        pipeline = v["seconds"].get("pipeline", 0.0)
        fixed[engine], per_row[engine] = v["median_s"] - pipeline, pipeline / v["rows"]
    gain = per_row["inline"] - per_row["ray"]  # seconds Ray saves per row
    rows = None if gain <= 0 else max(0, int((fixed["ray"] - fixed["inline"]) / gain))
    return {
        "fixed_s": {k: round(v, 3) for k, v in fixed.items()},
        "rows_per_s": {k: round(1 / v, 1) if v else None for k, v in per_row.items()},
        "inline_max_rows": rows,
        "set": None if rows is None else f"engine.inline_max_rows={rows}",
        "why": "Ray scores no faster than this process here: keep runs inline"
        if rows is None
        else f"inline costs {fixed['inline']:.1f} s fixed, Ray {fixed['ray']:.1f} s; Ray's rate makes up the "
        f"difference after {rows:,} rows",
    }


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run.get(key, 0.0) for run in runs), 3) for key in runs[0]} if runs else {}


_ENGINE_VARIANTS = tuple(ON_ENGINE.format(engine=e) for e in ("inline", "ray"))


def _time_batches(runtime: Runtime, feeds: list[dict[str, np.ndarray]]) -> float:
    started = time.perf_counter()
    for feed in feeds:
        runtime.run(feed)
    return time.perf_counter() - started


def _init_tracking(tracking: TrackingSpec) -> None:
    """Create and migrate the temporary MLflow store once, so that no timed run pays for it."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # its migration notes are not news here
    connect(tracking)


def run_job_process(job_file: Path, overrides: list[str], cwd: Path) -> dict:
    """`score run JOB --json --force` in a subprocess: its wall time, summary, and sampled peak memory."""
    command = [sys.executable, "-m", "jobs.cli", "run", str(job_file), "--json", "--force"]
    for item in overrides:
        command += ["--set", item]
    # a bench run is no run of the job: no lineage events to the organisation's receiver
    done = timed_process(
        command, cwd, {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "OPENLINEAGE_DISABLED": "true"}
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = json.loads(lines[-1]) if lines else {}
    if done.code != 0 or summary.get("status") != "succeeded":
        why = summary.get("error") or summary.get("message") or done.stderr.strip()[-2000:] or "no output"
        failure = {2: UsageError, 3: ContractFailure}.get(done.code, RuntimeFailure)
        raise failure(f"bench: `score run {job_file}` on the sample failed (exit {done.code}): {why}")
    return {"wall_s": done.wall_s, "summary": summary, "sampled": done.sampled}


@dataclasses.dataclass(frozen=True)
class TimedProcess:
    code: int
    stdout: str
    stderr: str
    wall_s: float  # from start to exit
    sampled: dict  # the Sampler's result over its process tree


def timed_process(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> TimedProcess:
    """Run `command` to its exit, timed, its process tree's memory (and the GPU) sampled meanwhile; stderr goes
    through a file, so that a chatty process never blocks on a full pipe."""
    with tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        with Sampler(process.pid) as sampler:
            stdout, _ = process.communicate()
        wall = time.perf_counter() - started
        stderr.seek(0)
        return TimedProcess(process.returncode, stdout, stderr.read(), wall, sampler.result())


# -- sampling memory and GPU ----------------------------------------------------------------------------------


class Sampler:
    """Peak memory of a process tree (when given a pid) and GPU utilisation, sampled in a thread."""

    def __init__(self, pid: int | None, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak, self.gpu = 0, list[dict]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._gpu_on = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        root = psutil.Process(self.pid) if self.pid else None
        while True:
            if root is not None:
                self.peak = max(self.peak, _tree_memory(root))
            if self._gpu_on:
                self.gpu.extend(_gpu_query() or [])
            if self._stop.wait(self.interval_s):
                return

    def result(self) -> dict:
        return {"peak_memory_bytes": self.peak, "gpu": self.gpu}

    @staticmethod
    def memory_metric() -> str:
        return "pss" if _pss_available() else "rss"


@functools.cache
def _pss_available() -> bool:
    try:
        return hasattr(psutil.Process().memory_full_info(), "pss")
    except (psutil.AccessDenied, NotImplementedError):
        return False


def _tree_memory(root) -> int:
    """PSS (else RSS) of `root` and all its descendants; processes that end meanwhile count as nothing."""
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss if _pss_available() else process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


def _gpu_query() -> list[dict] | None:
    """Utilisation (%) and memory used (MiB) of each GPU now, or None without `nvidia-smi`."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    samples = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and all(p.replace(".", "", 1).isdigit() for p in parts):
            samples.append({"utilization_pct": float(parts[0]), "memory_mib": float(parts[1])})
    return samples


def _gpu_summary(runs: list[dict]) -> dict | None:
    samples = [s for run in runs for s in run["gpu"]]
    if not samples:
        return None
    return {
        "utilization_pct_mean": round(statistics.mean(s["utilization_pct"] for s in samples), 1),
        "utilization_pct_max": max(s["utilization_pct"] for s in samples),
        "memory_mib_max": max(s["memory_mib"] for s in samples),
        "samples": len(samples),
    }


# -- settings ---------------------------------------------------------------------------------------------------


def try_settings(
    model: ModelArtifact, binding: ModelBinding, table: pa.Table, batch_size: int, use_gpu: bool
) -> list[dict]:
    """The model alone at a few threads per actor (1, 2, 4, ... up to the CPUs) and batch sizes: rows/s of each.
    Each trial warms up on one batch, then scores batches for about TRIAL_SECONDS."""
    cpus = os.cpu_count() or 1
    threads = sorted({*(2**i for i in range(int(math.log2(cpus)) + 1)), cpus})
    sizes = sorted({min(size, table.num_rows) for size in (*TRIAL_BATCH_SIZES, batch_size)})  # none past the sample
    trials = []
    for n in threads:
        runtime = _open(model, use_gpu, n)
        for size in sizes:
            feeds = [build_feeds(binding, table.slice(o, size)) for o in range(0, min(table.num_rows, 4 * size), size)]
            runtime.run(feeds[0])
            rows, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < TRIAL_SECONDS or rows == 0:
                feed = feeds[(rows // size) % len(feeds)]
                runtime.run(feed)
                rows += len(next(iter(feed.values())))
            trials.append({"threads": n, "batch_size": size, "rows_per_s": round(rows / elapsed, 1)})
    return trials


def recommend_inline(trials: list[dict], rows: int) -> dict:
    """For a job that runs in this process at the benched size: only the batch size, for its one model session
    of every core's threads (the inline engine's); actor settings would mean nothing to it."""
    cores = max(t["threads"] for t in trials)
    own = [t for t in trials if t["threads"] == cores]
    fastest = max(t["rows_per_s"] for t in own)
    trial = max((t for t in own if t["rows_per_s"] >= NEAR_BEST * fastest), key=lambda t: t["batch_size"])
    return {
        "scoring.batch_size": trial["batch_size"],
        "expected_model_rows_per_s": trial["rows_per_s"],
        "set": [f"scoring.batch_size={trial['batch_size']}"],
        "why": f"at {rows:,} rows the job runs in this process (engine.inline_max_rows), one model session of "
        f"{cores} thread(s), where batch size {trial['batch_size']} scored fastest (actors and threads per actor "
        "apply on Ray only)",
    }


def recommend(trials: list[dict], spec: JobSpec, cpus: int, gpus: int) -> dict:
    """The scoring settings whose model-alone rate times the number of actors is highest on this machine.

    A trial of `t` threads stands for `cpus // t` CPU actors (the cores shared out, none oversubscribed), or
    one actor per `gpus_per_actor` share of the GPUs; each actor reserves at most `cpus_per_actor` CPUs, fewer
    when that many would not fit. Whether they fit, and with how many threads, is what `jobs.engines.cluster.size_pool`
    makes of them here (it keeps CPUs for the read, check and write tasks). Among settings within
    NEAR_BEST of the best rate the largest batch wins: the pipeline's per-batch costs (slicing, scheduling,
    the check stage's batches), which the model alone does not see, favour big batches."""
    nodes = [
        {"Alive": True, "NodeManagerAddress": "this machine", "Resources": {"CPU": float(cpus), "GPU": float(gpus)}}
    ]
    budget = max(cpus - 1, cpus / 2)
    candidates = []
    for trial in trials:
        threads = trial["threads"]
        actors = (
            max(1, int(gpus // spec.scoring.gpus_per_actor)) if spec.scoring.gpus_per_actor > 0 else cpus // threads
        )
        if actors < 1:
            continue
        reserve = min(spec.scoring.cpus_per_actor, math.floor(budget / actors * 100) / 100)
        scoring = spec.scoring.model_copy(
            update={
                "batch_size": trial["batch_size"],
                "cpus_per_actor": reserve,
                "threads_per_actor": threads,
                "actors": ActorsSpec(min=actors, max=actors),
            }
        )
        try:
            pool = size_pool(scoring, nodes)
        except UsageError:
            continue
        if pool.threads != threads or pool.max_actors != actors:
            continue
        candidates.append((actors * trial["rows_per_s"], trial, pool))
    if not candidates:
        return {"why": f"no actor of this job fits this machine ({cpus} CPUs, {gpus} GPUs)"}
    fastest = max(expected for expected, _, _ in candidates)
    expected, trial, pool = max(
        (c for c in candidates if c[0] >= NEAR_BEST * fastest), key=lambda c: (c[1]["batch_size"], c[0])
    )
    settings = {
        "scoring.batch_size": trial["batch_size"],
        "scoring.actors.min": pool.max_actors,
        "scoring.actors.max": pool.max_actors,
        "scoring.cpus_per_actor": pool.cpus_per_actor,
        "scoring.threads_per_actor": pool.threads,
    }
    return {
        **settings,
        "expected_model_rows_per_s": round(expected, 1),
        "set": [f"{k}={v:g}" for k, v in settings.items()],
        "why": f"{pool.max_actors} actor(s) x {pool.threads} thread(s) at batch size {trial['batch_size']} scored "
        f"fastest on the model alone on this machine ({cpus} CPUs, {gpus} GPUs); each actor reserves "
        f"{pool.cpus_per_actor:g} CPU(s), leaving {cpus - pool.max_actors * pool.cpus_per_actor:g} to the "
        "read, check and write tasks",
    }


def _scorable(table: pa.Table, binding: ModelBinding) -> pa.Table:
    """The rows a run gives the model: none with a null or NaN input (the run quarantines those; the model's
    NaN scores for them made int8's difference from fp32 `nan`)."""
    mask = None
    for column in binding.input_columns:
        valid = pc.invert(pc.is_null(table.column(column), nan_is_null=True))
        mask = valid if mask is None else pc.and_(mask, valid)
    return table if mask is None else table.filter(mask)


def precision_comparison(
    model: ModelArtifact, binding: ModelBinding, feeds: dict[str, np.ndarray], cache: Path, use_gpu: bool
) -> dict | None:
    """int8's speed-up and accuracy cost against fp32 on one batch of the sample (`jobs.models.precision.compare`; the
    conversion is cached where runs find it). ONNX models only: None for torch."""
    if model.runtime != "onnx":
        return None
    return compare(
        model.path,
        model.sha256,
        feeds,
        [o.name for o in binding.outputs],
        precision="int8",
        external=model.external,
        cache_dir=cache,
        use_gpu=use_gpu,
    )


# -- text output --------------------------------------------------------------------------------------------------


def format_report(report: dict) -> str:
    """The report as a readable table: one line per variant, then the trials' best and the recommendation."""
    lines = [
        f"score bench {report['job']}: {report['rows']:,} rows ({report['sample']['source']}, "
        f"{len(report['sample']['partitions'])} partition(s)), {report['repeat']} interleaved repeat(s), medians; "
        f"model {report['model']['version']} ({report['model']['runtime']}, {report['model']['device']}); "
        f"{report['machine']['cpus']} CPUs, {report['machine']['gpus']} GPUs",
        "",
    ]
    header = f"{'variant':<24}{'rows/s':>14}{'vs bare loop':>14}{'wall s':>10}{'peak memory':>14}{'GPU util':>10}"
    lines.append(header)
    for name, v in report["variants"].items():
        memory = f"{v['peak_memory_bytes'] / 2**20:,.0f} MiB" if v.get("peak_memory_bytes") else "-"
        gpu = f"{v['gpu']['utilization_pct_mean']:.0f}%" if v.get("gpu") else "-"
        lines.append(
            f"{name:<24}{v['rows_per_s']:>14,.0f}{v['ratio_to_bare_loop']:>13.2f}x{v['median_s']:>10.2f}"
            f"{memory:>14}{gpu:>10}"
        )
    lines.append(f"(peak memory: {report['memory_metric'].upper()} summed over the job's process tree)")
    if "contract_cost" in report:
        lines.append(f"the contract costs {report['contract_cost']:+.0%} of the job's wall time without it")
    if "monitoring_cost" in report:
        lines.append(
            f"monitoring (drift: profiles, comparison, report) costs {report['monitoring_cost']:+.0%} of the job's "
            "wall time without it"
        )
    lines += ["", "where the time goes (medians, s): the driver's phases | the stages' workers, busy seconds summed"]
    for name, v in report["variants"].items():
        if "seconds" in v:
            phases = " ".join(f"{k} {t:.2f}" for k, t in v["seconds"].items())
            busy = " ".join(f"{k} {t:.2f}" for k, t in v["busy_seconds"].items())
            lines.append(f"  {name} ({v['engine']}): {phases} | {busy}")
    if report.get("engine_crossover"):
        cross = report["engine_crossover"]
        advice = f"--set {cross['set']}" if cross["set"] else "keep runs inline"
        lines.append(f"engine crossover: {advice}: {cross['why']}")
    rec = report["recommendation"]
    lines.append("")
    if "set" in rec:
        lines.append(f"recommended: {' '.join('--set ' + s for s in rec['set'])}")
        lines.append(f"  {rec['why']}: about {rec['expected_model_rows_per_s']:,.0f} rows/s for the scoring stage")
    else:
        lines.append(f"no recommendation: {rec['why']}")
    if report.get("precision"):
        p = report["precision"]
        agreement = "-" if p["label_agreement"] is None else f"{p['label_agreement']:.4f}"
        lines.append(
            f"int8 vs fp32 (model alone, one batch): {p['speedup']:.2f}x the rows/s; absolute score "
            f"difference max {p['max_abs_diff']:.3g}, mean {p['mean_abs_diff']:.3g}; label agreement {agreement}"
        )
    return "\n".join(lines)
