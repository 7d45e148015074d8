"""What a run's work cost: CPU- and GPU-seconds by stage, priced from conf/, adding up to the stage timings."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient

from jobs.commands.cost import run_cost
from jobs.spec.load import load_spec
from tests.conftest import ROWS_PER_DAY

PRICES = ("cost.cpu_hour=0.36", "cost.gpu_hour=7.2", "cost.currency=EUR")


def test_a_runs_cost_adds_up_to_its_stage_timings(fresh_project):
    project = fresh_project
    job = project.job("costed")
    code, summary = project.run(job, None, ("engine.inline_max_rows=1000000", *PRICES))
    assert code == 0, summary["error"]
    busy, cost = summary["busy_seconds"], summary["cost"]
    assert {"check", "score", "write"} <= busy.keys()
    assert cost["cpu_seconds"] == busy  # one CPU per check and write task, scoring.cpus_per_actor (1) per actor
    assert cost["gpu_seconds"] == {} and (cost["cpu_hour"], cost["currency"]) == (0.36, "EUR")
    assert cost["total"] == pytest.approx(sum(busy.values()) * 0.36 / 3600, abs=1e-6)
    # per million rows from the unrounded cost: both are rounded to 6 decimals only when stored
    assert cost["per_million_rows"] == pytest.approx(sum(busy.values()) * 0.36 / 3600 / ROWS_PER_DAY * 1e6, abs=1e-6)

    run = MlflowClient(project.tracking_uri).get_run(summary["run_id"])
    assert run.data.metrics["Run/cost"] == pytest.approx(cost["total"])
    assert run.data.metrics["Run/cost_per_million_rows"] == pytest.approx(cost["per_million_rows"])
    assert run.data.metrics["cpu_seconds/score"] == pytest.approx(busy["score"])
    commit = DeltaTable(summary["table_uri"]).history(1)[0]
    assert commit["score.cost"] == f"{cost['total']:.6f} EUR"

    proc = project.score("history", "costed")
    assert proc.returncode == 0 and "cost" in proc.stdout.splitlines()[0]
    assert f"{cost['total']:.6f} EUR" in proc.stdout


def test_gpu_actors_cost_their_gpus_and_cpus_per_busy_second(project):
    spec = load_spec(
        project.job("gpu_priced"), ["scoring.gpus_per_actor=0.5", "scoring.cpus_per_actor=4", *PRICES]
    ).spec
    cost = run_cost(spec, {"check": 10.0, "score": 100.0, "write": 2.0}, 2_000_000)
    assert cost["cpu_seconds"] == {"check": 10.0, "score": 400.0, "write": 2.0}
    assert cost["gpu_seconds"] == {"score": 50.0}
    assert cost["total"] == pytest.approx(412 * 0.36 / 3600 + 50 * 7.2 / 3600)
    assert cost["per_million_rows"] == pytest.approx(cost["total"] / 2)
    unpriced = run_cost(load_spec(project.job("unpriced")).spec, {"score": 1.0}, 10)
    assert unpriced["total"] is None and unpriced["cpu_seconds"] == {"score": 1.0}
