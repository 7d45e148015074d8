"""Side by side: the same read -> score -> write done by a bare loop, Ray Data, Daft, Spark and `score run`.

    python -m benchmarks.peers.run --workload demo --repeat 3 [--scale 0.02] [--json results.json]

Each contender runs `--repeat` times, interleaved (warm-up and page-cache effects fall on all of them), each as
a whole process timed from start to exit: imports, engine start-up and the write included, as a scheduler pays
them. Ratios are bare-loop time / contender time (1.0 = the bare loop, higher is better). Every output is read
back and compared with the bare loop's, row by row after sorting by id. Each peer runs in its own virtual
environment (`.venvs/<peer>`, made on first use, pinned), so that none of them shares packages with the project.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import importlib.metadata as metadata
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from benchmarks.workloads import default_out

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent  # the repository: the peers import `jobs.tools.bare_loop` from it (see common.py)
PROJECT_PYTHON = sys.executable  # the project's .venv: the bare loop and `score run`
RTOL, ATOL = 1e-5, 1e-6  # float outputs: ONNX Runtime's results move in the last bits with its thread count
SHARED = [f"{p}=={metadata.version(p)}" for p in ("onnxruntime", "pyarrow", "numpy")]  # as in the project
PEERS: dict[str, list[str]] = {  # each peer's venv: its engine, pinned, plus the project's own versions of these
    # ray[data] imports fsspec's HTTP filesystem to read any path, which needs aiohttp (not in its extra)
    "raydata": [f"ray[data]=={metadata.version('ray')}", f"aiohttp=={metadata.version('aiohttp')}", *SHARED],
    "daft": ["daft==0.7.26", *SHARED],
    "spark": ["pyspark==4.3.0", f"pandas=={metadata.version('pandas')}", *SHARED],  # mapInArrow checks for pandas
}


@dataclass
class Contender:
    """One way of doing the work: a command (a peer) or `score run` with extra overrides (`job`)."""

    name: str
    venv: str | None = None  # a key of PEERS; None: the project's .venv
    program: list[str] = field(default_factory=list)  # what python runs: a script of this folder, or -m MODULE
    options: list[str] = field(default_factory=list)  # after TASK.json OUT_DIR
    job: list[str] | None = None  # `score run` overrides; None: not the job
    runs_s: list[float] = field(default_factory=list)
    peak_bytes: list[int] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # "" where the output matched the bare loop's
    errors: list[str] = field(default_factory=list)
    job_summary: dict[str, Any] = field(default_factory=dict)  # the job's last summary: engine, rows, duration


def contenders(has_contract: bool) -> list[Contender]:
    """The bare loop first (the reference output), then the peers in the sizings a careful user tries here."""
    cpus = os.cpu_count() or 1
    found = [
        Contender("bare loop", None, ["-m", "jobs.tools.bare_loop"]),  # the same program as `score bench`'s
        Contender(
            f"ray data: 1 actor x {cpus} threads",
            "raydata",
            [str(HERE / "raydata.py")],
            ["--actors", "1", "--cpus", "1", "--threads", str(cpus)],
        ),
        Contender(
            f"ray data: {cpus} actors x 1 thread",
            "raydata",
            [str(HERE / "raydata.py")],
            ["--actors", str(cpus), "--cpus", str(1 / cpus), "--threads", "1"],
        ),
        Contender("daft (native runner)", "daft", [str(HERE / "daft_peer.py")]),
        Contender(f"spark local[{cpus}]", "spark", [str(HERE / "spark_peer.py")]),
    ]
    # our job on each engine of one machine: in this process, and on a local Ray (what `engine.inline_max_rows`
    # chooses between; `score bench` measures the crossover)
    engines = {"inline": "engine.inline_max_rows=1000000000", "ray": "engine.inline_max_rows=0"}
    for engine, setting in engines.items():
        if has_contract:
            found.append(Contender(f"score run {engine} (contract on)", job=[setting]))
        name = f"score run {engine} (contract off)" if has_contract else f"score run {engine}"
        found.append(Contender(name, job=[setting, "contract=null"]))
    return found


# -- the workload and its task file ----------------------------------------------------------------------------


def prepare(workload: str, scale: float) -> Path:
    """Generate the workload's data, model and job once per size (`data/bench/peers/<workload>-<rows>`)."""
    module = importlib.import_module(f"benchmarks.workloads.{workload}")
    rows = max(1000, round(module.ROWS * scale))
    out = default_out("peers") / f"{workload}-{rows}"
    if not (out / ".complete").exists():  # an interrupted generation starts over
        shutil.rmtree(out, ignore_errors=True)
        print(f"generating {workload}: {rows:,} rows into {out}", file=sys.stderr, flush=True)
        module.generate(out, rows)
        (out / ".complete").touch()
    return out / "job.yaml"


def write_task(job_file: Path, path: Path) -> dict[str, Any]:
    """The job's input files, id, model and binding (the project's own `bind_model`) as the bare loop's task
    file, which the peers read too."""
    from jobs.models.artifacts import bind_model
    from jobs.spec.load import load_spec
    from jobs.tools.bare_loop import Task
    from jobs.tracking.registry import resolve_model

    loaded = load_spec(job_file)
    spec = loaded.spec
    files = sorted(str(p) for p in Path(spec.input.path).rglob("*.parquet"))
    model = resolve_model(spec.model, spec.tracking)
    binding = bind_model(model, spec.model, pq.read_schema(files[0]), spec.input.path)
    task = Task.of(model, binding, files, spec.input.id_column, spec.scoring.batch_size)
    if task.binding is not None or task.runtime != "onnx" or any(o.as_list for o in binding.outputs):
        raise SystemExit(
            "peers: only ONNX models with column inputs and per-column outputs (the demo and mlp workloads)"
        )
    task.save(path)
    return {**dataclasses.asdict(task), "has_contract": spec.contract is not None, "root": loaded.root}


# -- virtual environments ---------------------------------------------------------------------------------------


def venv_python(peer: str) -> Path:
    """`.venvs/<peer>/bin/python`, (re)made when its pinned requirements changed: made before any timing."""
    folder = HERE / ".venvs" / peer
    pinned, wanted = folder / "pinned.txt", "\n".join(PEERS[peer]) + "\n"
    if not pinned.exists() or pinned.read_text() != wanted:
        print(f"making {folder}: {' '.join(PEERS[peer])}", file=sys.stderr, flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([PROJECT_PYTHON, "-m", "venv", str(folder)], check=True)
        pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *PEERS[peer]], check=True)
        pinned.write_text(wanted)
    return folder / "bin" / "python"


# -- running and checking -------------------------------------------------------------------------------------


def run_process(command: list[str], cwd: Path, log: Path, timeout_s: float, peer: bool) -> tuple[float, int, int]:
    """Run to exit; wall seconds, exit code, peak memory (PSS of the process tree, sampled as `score bench`
    samples the job). Past the timeout its whole tree is killed, each process by its pid. A peer's workers (Ray
    actors, Spark's Python workers) find `common` and `jobs.tools.bare_loop` through PYTHONPATH."""
    from jobs.tools.bench import Sampler

    env = {
        **os.environ,
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
        **({"PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])} if peer else {}),
    }
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        with Sampler(process.pid, interval_s=0.5) as sampler:
            try:
                code = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                kill_tree(process.pid)
                code = process.wait()
        wall = time.perf_counter() - started
    return wall, code, sampler.result()["peak_memory_bytes"]


def kill_tree(pid: int) -> None:
    try:
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def read_output(where: Path, columns: list[str], id_column: str | None) -> dict[str, np.ndarray]:
    """A Parquet folder or a Delta table, as one array per column, sorted by id (each column sorted on its own
    when there is no id: a row-order-free check)."""
    if (where / "_delta_log").is_dir():
        from deltalake import DeltaTable

        table = DeltaTable(str(where)).to_pyarrow_table(columns=columns)
    else:
        table = pads.dataset(where, format="parquet").to_table(columns=columns)
    arrays = {c: table.column(c).to_numpy() for c in columns}
    if id_column:
        order = np.argsort(arrays[id_column], kind="stable")
        return {c: a[order] for c, a in arrays.items()}
    return {c: np.sort(a) for c, a in arrays.items()}


def compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> str:
    """What differs, or nothing: the same rows and ids, labels exactly, floats within RTOL/ATOL."""
    for name, expected in want.items():
        actual = got[name]
        if actual.shape != expected.shape:
            return f"{name}: {actual.shape[0]:,} rows, the bare loop {expected.shape[0]:,}"
        if np.issubdtype(expected.dtype, np.floating):
            if not np.allclose(actual, expected, rtol=RTOL, atol=ATOL, equal_nan=True):
                return f"{name}: max |diff| {np.nanmax(np.abs(actual.astype(float) - expected)):.3g}"
        elif not np.array_equal(actual, expected):
            return f"{name}: {int((actual != expected).sum()):,} values differ"
    return ""


def check(
    c: Contender, where: Path, columns: list[str], id_column: str | None, reference: dict | None, bare: bool
) -> dict | None:
    """Compare one run's output with the reference, the bare loop's first good output (which this sets)."""
    try:
        got = read_output(where, columns, id_column)
    except Exception as exc:  # noqa: BLE001 - a missing column or an unreadable file fails the check, not the run
        c.checks.append(f"reading its output failed: {exc}")
        return reference
    if reference is None:
        c.checks.append("" if bare else "no output of the bare loop to compare with")
        return got if bare else None
    c.checks.append(compare(got, reference))
    return reference


def run_once(
    c: Contender, task: dict, task_file: Path, work: Path, r: int, timeout_s: float
) -> tuple[Path, Path] | None:
    """One timed run of a contender: where its output is (a Delta table for the job) and the folder to remove
    once it is checked, or None when it failed."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in c.name)
    out, log = work / f"{slug}-{r}", work / f"{slug}-{r}.log"
    if c.job is None:
        python = PROJECT_PYTHON if c.venv is None else str(venv_python(c.venv))
        command = [python, *c.program, str(task_file), str(out), *c.options]
    else:
        command = job_command(task, out, c.job)
    wall, code, peak = run_process(command, task["root"] if c.job else work, log, timeout_s, peer=c.job is None)
    if code != 0:
        kept = shutil.copy(log, work.parent / f"failed-{log.name}")  # the run folder goes at the end, the log stays
        c.errors.append(f"exit {code} (log: {kept}): {log.read_text()[-1500:]}")
        return None
    c.runs_s.append(wall)
    c.peak_bytes.append(peak)
    if c.job is None:
        return out, out
    summary = json.loads([line for line in log.read_text().splitlines() if line.startswith("{")][-1])
    if summary.get("status") != "succeeded":
        c.errors.append(f"job {summary.get('status')}: {summary.get('error')}")
        return None
    keep = ("engine", "rows_scored", "rows_quarantined", "duration_s")
    c.job_summary = {k: summary.get(k) for k in keep}
    return Path(summary["table_uri"]), out


def job_command(task: dict, out: Path, extra: list[str]) -> list[str]:
    """`score run JOB --json --force` against a fresh warehouse and MLflow store (made now: not timed), on a
    local Ray, without progress bars: as `score bench` runs the job."""
    from jobs.spec.schema import TrackingSpec
    from jobs.tracking.connect import connect

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # its migration notes are not news here
    tracking = TrackingSpec(uri=f"sqlite:///{out}/mlflow.db", artifact_location=(out / "mlartifacts").as_uri())
    out.mkdir(parents=True)
    connect(tracking)
    overrides = [
        f"warehouse.uri={out / 'warehouse'}",
        f"tracking.uri={tracking.uri}",
        f"tracking.artifact_location={tracking.artifact_location}",
        "engine.ray_address=local",
        "engine.progress_bars=off",
        *extra,
    ]
    command = [PROJECT_PYTHON, "-m", "jobs.cli", "run", str(task["root"] / "job.yaml"), "--json", "--force"]
    return command + [a for item in overrides for a in ("--set", item)]


# -- the report -------------------------------------------------------------------------------------------------


def report(
    found: list[Contender], workload: str, rows: int, scale: float, repeat: int, loads: list[float]
) -> dict[str, Any]:
    """Medians, ratios to the bare loop's median, whether every run's output matched, and the machine."""
    bare = statistics.median(found[0].runs_s) if found[0].runs_s else None
    entries = {}
    for c in found:
        median = statistics.median(c.runs_s) if c.runs_s else None
        entries[c.name] = {
            "median_s": None if median is None else round(median, 2),
            "runs_s": [round(t, 2) for t in c.runs_s],
            "ratio": None if median is None or bare is None else round(bare / median, 3),
            "outputs_equal": bool(c.runs_s) and not c.errors and not any(c.checks),
            "check": next((m for m in c.checks if m), ""),
            "peak_memory_bytes": max(c.peak_bytes, default=0),
            "errors": c.errors,
            "environment": PEERS.get(c.venv or "", [f"project .venv ({' '.join(SHARED)})"]),
            **({"job": c.job_summary} if c.job is not None else {}),
        }
    rays = [n for n in entries if n.startswith("ray data") and entries[n]["median_s"] is not None]
    return {
        "workload": workload,
        "rows": rows,
        "scale": scale,
        "repeat": repeat,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_bytes": psutil.virtual_memory().total,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_1m_at_run_start": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        },
        "ray_data_best": min(rays, key=lambda n: entries[n]["median_s"]) if rays else None,
        "contenders": entries,
    }


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    load = m["load_1m_at_run_start"]
    print(
        f"\n{result['workload']}: {result['rows']:,} rows (scale {result['scale']}), {result['repeat']} run(s) each, "
        f"interleaved; {result['date']}; {m['cpus']} CPUs, {m['memory_bytes'] / 2**30:.0f} GiB; load average "
        f"{load['min']:.1f}-{load['max']:.1f} (median {load['median']:.1f}) as runs started"
    )
    print(f"{'contender':44} {'median s':>9} {'ratio':>6} {'equal':>6} {'peak GB':>8}  runs s")
    for name, e in result["contenders"].items():
        best = " *" if name == result["ray_data_best"] else f" [{e['job']['engine']}]" if e.get("job") else ""
        median = "failed" if e["median_s"] is None else f"{e['median_s']:.2f}"
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.2f}"
        runs = ", ".join(f"{t:.1f}" for t in e["runs_s"])
        equal = "yes" if e["outputs_equal"] else "no"
        print(f"{name + best:44} {median:>9} {ratio:>6} {equal:>6} {e['peak_memory_bytes'] / 1e9:>8.2f}  {runs}")
    print("ratio = bare loop time / contender time (higher is better); * the faster Ray Data sizing; [job's engine]")
    for name, e in result["contenders"].items():
        for text in [e["check"], *e["errors"]]:
            lines = text.strip().splitlines()
            for line in dict.fromkeys(lines[:1] + lines[-1:]):  # what failed, and the log's last line
                print(f"  {name}: {line[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["demo", "mlp"], default="demo")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=float, default=float(os.environ.get("PEERS_SCALE", "1")))
    parser.add_argument("--only", help="comma-separated name prefixes of contenders to run (the bare loop always runs)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is killed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    job_file = prepare(args.workload, args.scale)
    with tempfile.TemporaryDirectory(prefix="runs-", dir=job_file.parent) as tmp:
        work = Path(tmp)
        task = write_task(job_file, work / "task.json")
        found = contenders(task["has_contract"])
        if args.only:
            found = [found[0], *(c for c in found[1:] if c.name.startswith(tuple(args.only.split(","))))]
        for venv in dict.fromkeys(c.venv for c in found if c.venv):
            venv_python(venv)
        columns = [task["id_column"]] if task["id_column"] else []
        columns += [c for o in task["outputs"] for c in o["columns"] if c is not None]
        reference: dict[str, np.ndarray] | None = None  # the bare loop's output, from its first good run
        loads: list[float] = []  # the 1-minute load average as each run starts: a busy neighbour shows here
        for r in range(args.repeat):
            for c in found:
                loads.append(os.getloadavg()[0])
                done = run_once(c, task, work / "task.json", work, r, args.timeout)
                if done is not None:
                    reference = check(c, done[0], columns, task["id_column"], reference, bare=c is found[0])
                    shutil.rmtree(done[1], ignore_errors=True)
                last = f"{c.runs_s[-1]:.1f}s" if done is not None else "failed"
                print(f"run {r + 1}/{args.repeat}: {c.name}: {last}", file=sys.stderr, flush=True)
    rows = 0 if reference is None else len(next(iter(reference.values())))
    result = report(found, args.workload, rows, args.scale, args.repeat, loads)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
