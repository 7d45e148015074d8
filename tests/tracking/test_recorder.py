"""The `score` command's MLflow sidecar (`jobs.tracking.recorder`): a CLI run records through it, with the
driver's own pid for the orphan reaper; it is gone when the command ends, done or not; and when it dies, the
run fails with a message naming it and leaves no version and no file behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
from deltalake import DeltaTable
from mlflow import MlflowClient

from tests.conftest import ROWS_PER_DAY
from tests.test_faults import _start


def _sidecars(root: Path) -> list[psutil.Process]:
    """This project's sidecars still running (their working folder is the project's)."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        if "jobs.tracking.recorder" in " ".join(process.info["cmdline"] or []) and process.info["cwd"] == str(root):
            found.append(process)
    return found


def _run(project, job: Path, *args: str, env: dict | None = None) -> tuple[int, int, dict]:
    """`score run JOB --json ARGS` as its own process: its pid, exit code and summary."""
    driver = _start(project, job, *args, env=env)
    out, err = driver.communicate(timeout=600)
    assert out.strip(), err[-3000:]
    return driver.pid, driver.returncode, json.loads(out.strip().splitlines()[-1])


def test_a_cli_run_records_through_its_sidecar_which_ends_with_it(fresh_project):
    project = fresh_project
    job = project.job("churn_sidecar")
    pid, code, summary = _run(project, job, "-p", "all", "--set", "engine.inline_max_rows=1000000")
    assert code == 0, summary["error"]
    assert (summary["status"], summary["engine"], summary["rows_scored"]) == ("succeeded", "inline", 3 * ROWS_PER_DAY)
    assert not _sidecars(project.root)

    run = MlflowClient(project.tracking_uri).get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert json.loads(run.data.tags["score.driver"])["pid"] == pid  # the driver's, not the sidecar's
    assert run.data.tags["score.table_version"] == str(summary["table_version"])
    assert run.data.metrics["Rows/scored"] == 3 * ROWS_PER_DAY
    artifacts = {a.path for a in MlflowClient(project.tracking_uri).list_artifacts(summary["run_id"], "charts")}
    assert artifacts == {"charts/churn_probability.svg", "charts/churn_label.svg"}
    rows = DeltaTable(summary["table_uri"]).to_pyarrow_table(columns=["run_id"])
    assert set(rows.column("run_id").to_pylist()) == {summary["run_id"]}

    # nothing to score: the sidecar, still importing MLflow, is stopped; no MLflow run is opened
    pid, code, again = _run(project, job, "-p", "all", "--set", "engine.inline_max_rows=1000000")
    assert (code, again["status"]) == (0, "already_committed")
    assert not _sidecars(project.root)
    assert len(MlflowClient(project.tracking_uri).search_runs([run.info.experiment_id])) == 1


def test_a_sidecar_that_dies_fails_the_run_with_its_name_and_leaves_nothing(fresh_project, tmp_path):
    project = fresh_project
    job = project.job("churn_sidecar_dies")
    fault = {"SCORE_INJECT_FAULT": "record:kill:2", "SCORE_FAULT_DIR": str(tmp_path)}  # after the plan's record
    pid, code, summary = _run(project, job, "-p", "all", env=fault)
    assert (code, summary["status"]) == (1, "failed")
    assert summary["error"].startswith("the MLflow sidecar process (pid ")
    assert "stopped answering" in summary["error"] and "exit code -9" in summary["error"]
    assert not _sidecars(project.root)
    table = Path(summary["table_uri"])
    assert not DeltaTable.is_deltatable(str(table))
    assert not table.exists() or not list(table.rglob("*.parquet"))
    assert os.path.exists(tmp_path / "fault-record")
