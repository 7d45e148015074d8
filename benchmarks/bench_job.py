"""Side by side, in one run, on the same data and model: the bare loop vs. the scoring job.

The bare loop is one process reading each file with pyarrow and calling ONNX Runtime (what a
hand-written script would do, with no contract, no lineage, no table). The job runs as `score run`
would, once with its contract and once without. Figures are printed as rows/s and as ratios to the loop.

Each variant runs `--repeat` times, interleaved (so warm-up and cache effects fall on all of them), and
the median is reported.

Usage (after `make demo`): python benchmarks/bench_job.py [--job conf/jobs/churn_daily.yaml] [--partitions all]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pyarrow.parquet as pq


def bare_loop(job: str, partitions: str) -> tuple[int, float]:
    from jobs.plan import make_plan
    from jobs.runtimes import open_runtime
    from jobs.scoring import score_table
    from jobs.spec import load_spec

    plan = make_plan(load_spec(job), partitions)
    started = time.perf_counter()
    runtime = open_runtime(plan.model.runtime, plan.model.files(), ".onnx",
                           [o.name for o in plan.binding.outputs], use_gpu=False, threads=1)
    rows = 0
    for f in plan.selection.files:
        table = pq.read_table(f.path, columns=plan.binding.input_columns)
        score_table(runtime, plan.binding, table)
        rows += table.num_rows
    return rows, time.perf_counter() - started


def job_run(job: str, partitions: str, overrides: list[str]) -> tuple[int, float]:
    from jobs.run import run_job

    started = time.perf_counter()
    summary = run_job(job, partitions=partitions, overrides=overrides, force=True)  # the same work, every time
    return summary.rows_scored, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", default="conf/jobs/churn_daily.yaml")
    parser.add_argument("--partitions", default="all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gx", action="store_true", help="also run the contract entirely in Great Expectations")
    args = parser.parse_args()

    variants = {
        "bare_loop": lambda: bare_loop(args.job, args.partitions),
        "job_without_contract": lambda: job_run(args.job, args.partitions,
                                                ["contract=null", "output.table=bench_no_contract"]),
        "job_with_contract": lambda: job_run(args.job, args.partitions, ["output.table=bench_with_contract"]),
    }
    if args.gx:
        variants["job_with_contract_gx"] = lambda: job_run(
            args.job, args.partitions, ["output.table=bench_with_contract_gx", "contract.engine=gx"])
    timings: dict[str, list[float]] = {name: [] for name in variants}
    rows: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, variant in variants.items():
            rows[name], seconds = variant()
            timings[name].append(seconds)

    median = {name: statistics.median(t) for name, t in timings.items()}
    loop_rate = rows["bare_loop"] / median["bare_loop"]
    report = {}
    for name, seconds in median.items():
        rate = rows[name] / seconds
        report[name] = {"rows": rows[name], "median_s": round(seconds, 2), "runs_s": [round(t, 2) for t in timings[name]],
                        "rows_per_s": round(rate), "ratio_to_loop": round(rate / loop_rate, 3)}
    for name in median:
        if name.startswith("job_with_contract"):
            report[f"overhead_{name.removeprefix('job_with_')}"] = round(median[name] / median["job_without_contract"], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
