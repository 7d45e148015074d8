"""`score bench` on a tiny sample: the report's figures agree with each other, the sample is exactly what was
asked, the user's warehouse and MLflow store stay untouched, and bad input gets one clear error.

Figures are checked for consistency only, never for speed (tests/test_benchmarks.py does that, behind the
`benchmarks` marker).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import DAYS, ROWS_PER_DAY

SAMPLE_ROWS = 5_000


@pytest.fixture(scope="module")
def benched(tmp_path_factory, models_dir):
    """One `score bench --json` run of the demo job (contract on) over a 3-day project: (project, process, report)."""
    from tests.conftest import Project

    project = Project(tmp_path_factory.mktemp("bench") / "project", models_dir)
    first = project.data / f"ds={DAYS[0].isoformat()}" / "part-0.parquet"  # a null input, as real samples have
    rows = pq.read_table(first)
    charges = rows.column("monthly_charges").to_pylist()
    charges[:3] = [None] * 3
    pq.write_table(
        rows.set_column(rows.schema.get_field_index("monthly_charges"), "monthly_charges", pa.array(charges)), first
    )
    job = project.job(
        "bench_tiny",
        input__partitions="unscored",
        contract={"suite": "data_contracts/customers.json", "on_failure": "quarantine"},
    )
    proc, report = project.score_json("bench", str(job), "--rows", str(SAMPLE_ROWS), "--repeat", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return project, proc, report


def test_the_sample_has_exactly_the_rows_asked_from_every_selected_partition(benched):
    _, _, report = benched
    assert report["rows"] == SAMPLE_ROWS
    assert report["sample"]["source"] == "input"
    assert report["sample"]["selected_rows"] == len(DAYS) * ROWS_PER_DAY  # `unscored` measures every partition
    assert report["sample"]["partitions"] == [f"ds={d.isoformat()}" for d in DAYS]
    job = report["variants"]["job"]
    assert job["rows_scored"] + job["rows_quarantined"] == SAMPLE_ROWS
    for variant in report["variants"].values():
        assert variant["rows"] == SAMPLE_ROWS


def test_rates_and_ratios_agree(benched):
    _, _, report = benched
    variants = report["variants"]
    assert set(variants) == {
        "model_alone",
        "bare_loop",
        "job",
        "job_without_contract",
        "job_without_monitoring",
        "job_inline",
    }
    assert variants["job"]["engine"] == "ray" and variants["job_inline"]["engine"] == "inline"
    np.testing.assert_allclose(
        report["contract_cost"],
        variants["job"]["median_s"] / variants["job_without_contract"]["median_s"] - 1,
        atol=1e-3,
    )
    np.testing.assert_allclose(
        report["monitoring_cost"],
        variants["job"]["median_s"] / variants["job_without_monitoring"]["median_s"] - 1,
        atol=1e-3,
    )
    assert "monitor" in variants["job"]["seconds"] and "monitor" not in variants["job_without_monitoring"]["seconds"]
    for name in ("job", "job_inline"):  # where the time went: the driver's phases and the stages' busy seconds
        phases = variants[name]["seconds"]
        assert {"plan", "track", "pipeline", "commit"} <= phases.keys()
        assert {"check", "score", "write"} <= variants[name]["busy_seconds"].keys()
    cross = report["engine_crossover"]
    assert cross["fixed_s"].keys() == {"inline", "ray"}
    assert cross["set"] is None or cross["set"] == f"engine.inline_max_rows={cross['inline_max_rows']}"
    loop = variants["bare_loop"]["rows_per_s"]
    for v in variants.values():
        assert v["rows_per_s"] > 0 and len(v["runs_s"]) == report["repeat"] == 1
        # both are rounded (rates to 0.1 row/s, ratios to 4 decimals): equal to the rounding's relative error
        np.testing.assert_allclose(v["ratio_to_bare_loop"], v["rows_per_s"] / loop, rtol=1e-4, atol=1e-4)
    assert variants["bare_loop"]["ratio_to_bare_loop"] == 1.0
    job = variants["job"]
    assert job["wall_s"] == job["median_s"] >= job["job_duration_s"] > 0  # the wall time includes start-up
    assert job["peak_memory_bytes"] > 50 * 2**20  # a Python process with Ray and pyarrow loaded, at least
    assert report["memory_metric"] in ("pss", "rss")
    assert report["machine"]["gpus"] == 0 and all(v["gpu"] is None for v in variants.values())


def test_the_recommendation_is_a_valid_set_of_overrides(benched):
    from jobs.spec.load import load_spec

    project, _, report = benched
    rec = report["recommendation"]
    spec = load_spec(project.root / "conf" / "jobs" / "bench_tiny.yaml", rec["set"]).spec
    assert spec.scoring.batch_size == rec["scoring.batch_size"]
    assert spec.scoring.actors.max == rec["scoring.actors.max"] >= 1
    assert spec.scoring.threads_per_actor == rec["scoring.threads_per_actor"]
    assert {(t["threads"], t["batch_size"]) for t in report["trials"]} >= {(1, 1024)}


def test_the_users_warehouse_and_tracking_store_stay_untouched(benched):
    project, _, _ = benched
    assert not project.warehouse.exists()
    assert not (project.root / ".score" / "mlflow.db").exists()


def test_int8_comparison_is_reported_for_an_onnx_model(benched):
    _, _, report = benched
    precision = report["precision"]
    assert precision["precision"] == "int8" and precision["speedup"] > 0
    assert 0 <= precision["label_agreement"] <= 1
    # on the rows a run scores: the sample's null inputs made both `nan` (issue 25)
    assert 0 <= precision["mean_abs_diff"] <= precision["max_abs_diff"] < 0.5


def test_a_job_that_runs_in_process_is_recommended_a_batch_size_only():
    from jobs.tools.bench import recommend_inline

    trials = [
        {"threads": 1, "batch_size": 1024, "rows_per_s": 900_000.0},
        {"threads": 2, "batch_size": 1024, "rows_per_s": 500_000.0},
        {"threads": 2, "batch_size": 8192, "rows_per_s": 470_000.0},  # within NEAR_BEST: the bigger batch wins
        {"threads": 2, "batch_size": 65536, "rows_per_s": 300_000.0},
    ]
    rec = recommend_inline(trials, 500_000)
    assert rec["set"] == ["scoring.batch_size=8192"] and rec["expected_model_rows_per_s"] == 470_000.0
    assert "runs in this process" in rec["why"] and "2 thread(s)" in rec["why"]


def test_the_text_report_names_each_variant_and_the_settings(benched):
    from jobs.tools.bench import format_report

    _, _, report = benched
    text = format_report(report)
    for name in ("model_alone", "bare_loop", "job", "recommended: --set scoring.batch_size="):
        assert name in text


def test_a_missing_job_file_is_a_usage_error(project):
    proc = project.score("bench", "conf/jobs/nope.yaml", "--json")
    assert proc.returncode == 2
    assert "conf/jobs/nope.yaml: job spec file not found" in proc.stderr
    assert proc.stdout == ""


def test_rows_must_be_positive(project):
    job = project.job("bench_rows")
    proc = project.score("bench", str(job), "--rows", "0")
    assert proc.returncode == 2
    assert "--rows (0)" in proc.stderr


def test_sample_shares_rows_by_partition_and_takes_everything_when_asked_for_more(project, tmp_path):
    from jobs.plan.samples import write_sample
    from jobs.spec.load import load_spec
    from jobs.tracking.registry import resolve_model

    spec = load_spec(project.job("bench_sample", input__partitions="all")).spec
    model = resolve_model(spec.model, spec.tracking)
    sample = write_sample(spec, "all", 1_001, tmp_path / "small", model)
    counts = [pq.read_metadata(f).num_rows for f in sample["files"]]
    assert sum(counts) == sample["rows"] == 1_001
    assert sorted({Path(f).parent.name for f in sample["files"]}) == [f"ds={d.isoformat()}" for d in DAYS]
    everything = write_sample(spec, "ds=" + DAYS[-1].isoformat(), 10**9, tmp_path / "all", model)
    assert everything["rows"] == ROWS_PER_DAY and everything["partitions"] == [f"ds={DAYS[-1].isoformat()}"]


def test_an_empty_input_gets_generated_rows_the_model_can_score(project, tmp_path):
    from jobs.models.artifacts import bind_model
    from jobs.models.runtimes import open_runtime
    from jobs.plan.samples import write_sample
    from jobs.spec.load import load_spec
    from jobs.stages.scoring import score_table
    from jobs.tools.bare_loop import Task, run
    from jobs.tracking.registry import resolve_model

    empty = project.root / "data" / "not_yet"
    empty.mkdir(parents=True, exist_ok=True)
    spec = load_spec(project.job("bench_empty", input__path="data/not_yet")).spec
    model = resolve_model(spec.model, spec.tracking)
    sample = write_sample(spec, "latest", 3_000, tmp_path / "generated", model)
    assert sample["source"] == "generated" and sample["partitions"] == ["ds=bench"]
    table = pq.read_table(sample["files"][0])
    assert table.num_rows == 3_000 and spec.input.id_column in table.column_names
    binding = bind_model(model, spec.model, table.schema, "generated")
    task = Task.of(model, binding, sample["files"], spec.input.id_column, 1_000)
    assert task.binding is None  # column inputs: the bare loop builds them with Arrow's own conversion
    assert run(task, tmp_path / "bare") == 3_000
    written = pq.read_table(tmp_path / "bare" / "part-00000.parquet")  # the yardstick writes what the job writes
    assert written.column_names == [spec.input.id_column, *(f.name for f in binding.output_fields())]
    assert written.column(spec.input.id_column).equals(table.column(spec.input.id_column))
    runtime = open_runtime("onnx", model.files(), ".onnx", [t.name for t in model.outputs], False, 1)
    for name, scores in score_table(runtime, binding, table).items():  # the job's own feeds: the same scores
        np.testing.assert_allclose(written.column(name).to_numpy(), scores.to_numpy(zero_copy_only=False), rtol=1e-5)
    json.dumps(sample)  # the sample's description is part of the JSON report


def test_rows_the_model_cannot_take_leave_the_contracts_cost_measurable(benched):
    """Guards the starter project's `score bench`, which failed (exit 3): its variant without the contract ran
    with `contract=null`, so a null model input failed that run instead of being quarantined. It now runs with
    a suite of no expectations, under the contract's own policy. (The fixture's sample holds 3 null inputs.)"""
    _, _, report = benched
    without = report["variants"]["job_without_contract"]
    [override] = without["overrides"]
    assert override.startswith("contract.suite=") and override.endswith("no_expectations.json")
    for name in ("job", "job_without_contract"):
        variant = report["variants"][name]
        assert (variant["rows_scored"], variant["rows_quarantined"]) == (SAMPLE_ROWS - 3, 3)
