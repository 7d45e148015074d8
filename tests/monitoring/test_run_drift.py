"""Drift measured by real runs: each run profiles the rows it scores into `<table>__profiles` and compares them with
the previous run's, before it commits. Controlled data: one day's file is rewritten with a shifted number and a new
category; the other columns keep the generator's distribution."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from jobs.monitoring.drift import JENSEN_SHANNON, WASSERSTEIN, table_drift
from jobs.tables.profile_table import profiled_versions, read_profiles
from tests.conftest import DAYS, ROWS_PER_DAY
from tests.monitoring.test_drift import ABS_SKETCH

INLINE = "engine.inline_max_rows=1000000"
SHIFTED, NEW_CATEGORY, UNCHANGED = "monthly_charges", "internet_service", "age"


def day_table(project, partition) -> pa.Table:
    return pq.read_table(project.data / partition)


def shift_day(project, partition) -> None:
    """Monthly charges up 40%, and a fifth of the rows on a new internet service."""
    folder = project.data / partition
    for path in sorted(folder.glob("*.parquet")):
        table = pq.read_table(path)
        charges = pc.multiply(table.column(SHIFTED), 1.4)
        service = table.column(NEW_CATEGORY).to_numpy(zero_copy_only=False).copy()
        service[::5] = "satellite"
        table = table.set_column(table.schema.get_field_index(SHIFTED), SHIFTED, charges)
        table = table.set_column(table.schema.get_field_index(NEW_CATEGORY), NEW_CATEGORY, pa.array(service))
        pq.write_table(table, path)


def drift_job(project, **changes):
    # no contract: its value set would quarantine the new category instead of scoring it
    return project.job("drifting", contract=None, **changes)


def test_a_shifted_number_and_a_new_category_are_flagged_with_scipys_statistics(fresh_project):
    project = fresh_project
    before, after = (f"ds={day}" for day in DAYS[:2])
    raw_before = day_table(project, before)
    shift_day(project, after)
    raw_after = day_table(project, after)
    job = drift_job(project)

    code, first = project.run(job, before, (INLINE,))
    assert code == 0, first["error"]
    assert first["drift"]["baseline"] == {"table": "drifting", "version": None} and first["drift"]["columns"] == []
    assert first["drift"]["profiles_version"] == 0
    code, second = project.run(job, after, (INLINE,))
    assert code == 0, second["error"]
    assert second["table_version"] == 1 and second["drift"]["baseline"] == {"table": "drifting", "version": 0}

    columns = {c["column"]: c for c in second["drift"]["columns"]}
    assert set(columns) >= {SHIFTED, NEW_CATEGORY, UNCHANGED, "churn_probability", "churn_label"}
    assert {SHIFTED, NEW_CATEGORY} <= set(second["drift"]["drifted"])
    assert UNCHANGED not in second["drift"]["drifted"] and not columns[UNCHANGED]["drifted"]

    # numbers: scipy's normed Wasserstein on the raw values, within the sketch's error
    reference, current = (t.column(SHIFTED).to_numpy() for t in (raw_before, raw_after))
    expected = wasserstein_distance(reference, current) / np.std(reference)
    assert columns[SHIFTED]["method"] == WASSERSTEIN
    assert columns[SHIFTED]["statistic"] == pytest.approx(expected, abs=ABS_SKETCH)
    # categories: counted exactly, so scipy's Jensen-Shannon distance to the last bits
    values = sorted(set(raw_before.column(NEW_CATEGORY).to_pylist()) | {"satellite"})
    shares = [
        np.array([pc.sum(pc.equal(t.column(NEW_CATEGORY), v)).as_py() or 0 for v in values] + [0]) / t.num_rows
        for t in (raw_before, raw_after)
    ]
    assert columns[NEW_CATEGORY]["method"] == JENSEN_SHANNON
    assert columns[NEW_CATEGORY]["statistic"] == pytest.approx(jensenshannon(*shares), rel=1e-12)

    # stored with the table version: the profiles table holds both versions, and recomputing from it gives the
    # run's figures exactly; the output commit's lineage carries them too
    profiles_uri = f"{second['table_uri']}__profiles"
    (old, _), (new, roles) = read_profiles(profiles_uri, 0), read_profiles(profiles_uri, 1)
    assert roles[SHIFTED] == "input" and roles["churn_probability"] == "output"
    assert new[UNCHANGED].rows == ROWS_PER_DAY and new[UNCHANGED].nulls == 0
    again = {d.column: d.to_dict() for d in table_drift(old, new)}
    assert again[SHIFTED] == columns[SHIFTED] and again[NEW_CATEGORY] == columns[NEW_CATEGORY]
    lineage = json.loads(DeltaTable(second["table_uri"]).history(1)[0]["score.lineage"])
    assert lineage["monitoring"]["baseline"] == {"table": "drifting", "version": 0}
    assert {c["column"]: c for c in lineage["monitoring"]["drift"]} == columns

    # MLflow: a metric per column, the report and the chart
    run = MlflowClient(project.tracking_uri).get_run(second["run_id"])
    assert run.data.metrics[f"drift/{SHIFTED}"] == pytest.approx(columns[SHIFTED]["statistic"])
    assert run.data.metrics["Run/columns_drifted"] == len(second["drift"]["drifted"])
    artifacts = {a.path for a in MlflowClient(project.tracking_uri).list_artifacts(second["run_id"], "drift")}
    assert artifacts == {"drift/drift.json", "drift/report.html", "drift/most_drifted.png"}

    # `score drift` shows what the run measured
    proc = project.score("drift", "drifting", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads(proc.stdout)
    assert shown["version"] == 1 and shown["baseline"] == {"table": "drifting", "version": 0}
    assert {c["column"]: c for c in shown["columns"]} == columns
    text = project.score("drift", "drifting")
    assert text.returncode == 0 and f"{SHIFTED}" in text.stdout and "drifted" in text.stdout


def test_on_drift_fail_commits_nothing_and_exits_5(fresh_project):
    project = fresh_project
    before, after = (f"ds={day}" for day in DAYS[:2])
    shift_day(project, after)
    # per-column thresholds: only the shifted column may fail the run (the scores follow it, the new category
    # stays under 0.9, which no Jensen-Shannon distance reaches)
    lenient = {NEW_CATEGORY: 0.9, "churn_label": 0.9, "churn_probability": 5.0}
    job = drift_job(project, monitoring={"on_drift": "fail", "thresholds": lenient})
    code, _ = project.run(job, before, (INLINE,))
    assert code == 0
    files = {p for p in (project.warehouse / "drifting").rglob("*.parquet")}

    proc, failed = project.score_json("run", str(job), "--partitions", after, "--set", INLINE)
    assert proc.returncode == 5, proc.stderr[-3000:]
    assert failed["status"] == "failed" and failed["table_version"] is None
    assert failed["drift"]["drifted"] == [SHIFTED]
    assert "drift: 1 of" in failed["error"] and f"{SHIFTED} wasserstein_normed" in failed["error"]
    assert "nothing was committed" in failed["error"] and "monitoring.on_drift: fail" in failed["error"]
    assert DeltaTable(str(project.warehouse / "drifting")).version() == 0
    assert DeltaTable(str(project.warehouse / "drifting__profiles")).version() == 0
    assert {p for p in (project.warehouse / "drifting").rglob("*.parquet")} == files  # no file left behind

    # the same run, told to warn, commits and reports the same drift
    code, warned = project.run(job, after, (INLINE, "monitoring.on_drift=warn"))
    assert code == 0 and warned["table_version"] == 1 and warned["drift"]["drifted"] == [SHIFTED]


def test_an_unchanged_day_drifts_nowhere_and_a_missing_baseline_is_a_usage_error(fresh_project):
    project = fresh_project
    job = drift_job(project)
    code, _ = project.run(job, f"ds={DAYS[0]}", (INLINE,))
    assert code == 0
    code, summary = project.run(job, f"ds={DAYS[1]}", (INLINE, "monitoring.baseline=version 0"))
    assert code == 0 and summary["drift"]["baseline"]["version"] == 0
    assert summary["drift"]["drifted"] == [], summary["drift"]["columns"][:3]
    assert len(summary["drift"]["columns"]) == 31  # 29 model inputs, the probability and the label

    profiles = str(project.warehouse / "drifting__profiles")
    assert profiled_versions(profiles) == [0, 1]  # from the files' statistics: one version per file
    DeltaTable(profiles).optimize.compact()  # one file of both versions: read from the column instead
    assert len(DeltaTable(profiles).file_uris()) == 1 and profiled_versions(profiles) == [0, 1]

    code, refused = project.run(job, f"ds={DAYS[2]}", (INLINE, "monitoring.baseline=version 7"))
    assert code == 2
    assert "monitoring.baseline 'version 7': version 7 of drifting has no profiles" in refused["error"]
    assert "versions 0, 1 have them" in refused["error"]
