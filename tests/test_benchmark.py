"""Slow: the contract's cost, side by side in one run, as a ratio to the same job without it.

On data shaped and sized like the demo's (7 days x 400k customers, 2.8 M rows) and the demo job's policy
(quarantine). Run with `make test-slow` (about 6 minutes on 2 cores). Ratios only, never seconds.
"""

from __future__ import annotations

import os
import statistics

import pytest

from jobs import synthetic
from tests.conftest import DAYS

pytestmark = pytest.mark.slow


def test_contract_costs_at_most_a_quarter_more_than_the_job_without_it(fresh_project, monkeypatch):
    from benchmarks.bench_job import bare_loop, job_run

    project = fresh_project
    data = project.root / "data" / "big"
    synthetic.write_partitions(data, synthetic.days_ending(DAYS[-1], 7), 400_000)
    job = project.job("bench", input__path="data/big", input__partitions="all",
                      contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"},
                      scoring__batch_size=65536)
    monkeypatch.chdir(project.root)
    for key, value in project.env.items():
        monkeypatch.setenv(key, value)

    timings: dict[str, list[float]] = {"loop": [], "without": [], "with": []}
    for _ in range(3):
        timings["loop"].append(bare_loop(str(job), "all")[1])
        timings["without"].append(job_run(str(job), "all", ["contract=null", "output.table=bench_off"])[1])
        timings["with"].append(job_run(str(job), "all", ["output.table=bench_on"])[1])
    median = {k: statistics.median(v) for k, v in timings.items()}
    overhead = median["with"] / median["without"]
    print(f"contract overhead {overhead:.3f}, job/loop {median['loop'] / median['with']:.3f}", file=os.sys.stderr)
    assert overhead <= 1.25
