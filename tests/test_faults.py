"""Faults injected for real (jobs.faults): processes killed with SIGKILL, drivers stopped by SIGTERM and
SIGINT, drivers killed before their commit. Each faulted run is compared with a clean run of the same
input: same rows, same scores, no duplicates, no gaps, exact counts.

Every `score run` here is a subprocess with its own local Ray; a test that kills a driver then stops the
processes that driver started, by pid (never by name). The variants of a fault that CI can spare (a check or
write task killed, SIGINT besides SIGTERM) are marked `slow`: `make test-slow` runs them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from tests.conftest import DAYS, ROWS_PER_DAY

SCORES = ["customer_id", "ds", "churn_probability", "churn_label"]
WAIT_S = 300  # for a marker file: far longer than a run takes, so only a broken run hits it


def _table(uri: str, version: int | None = None) -> pa.Table:
    rows = DeltaTable(uri, version=version).to_pyarrow_table(columns=SCORES)
    return rows.sort_by([("ds", "ascending"), ("customer_id", "ascending")])


def _faulted(project, fault: str, folder: Path) -> dict:
    return {"SCORE_INJECT_FAULT": fault, "SCORE_FAULT_DIR": str(folder)}


def _start(project, job: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "run", str(job), "--json", *args],
        cwd=project.root,
        env={**project.env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(marker: Path, process: subprocess.Popen) -> None:
    """Until the fault's marker exists (the faulted process reached its point), or the run ended without it."""
    deadline = time.monotonic() + WAIT_S
    while not marker.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended (exit {process.returncode}) before reaching the fault:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {marker.name} after {WAIT_S} s")
        time.sleep(0.2)


def _kill_driver_at(project, job: Path, fault: str, folder: Path, *args: str) -> int:
    """Run `score run JOB ARGS` until it stalls at `fault` (POINT:stall[:N]), SIGKILL it, stop the processes it
    started; returns its exit status."""
    driver = _start(project, job, *args, env=_faulted(project, fault, folder))
    _wait_for(folder / f"fault-{fault.split(':')[0]}", driver)
    started = psutil.Process(driver.pid).children(recursive=True)
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)
    _stop_leftovers(started)
    return driver.returncode


def _stop_leftovers(started: list[psutil.Process]) -> list[str]:
    """Processes the driver started (Ray's) still running 30 s after it ended: stopped here, by pid. Returns
    their names."""
    _, alive = psutil.wait_procs(started, timeout=30)
    names = []
    for process in alive:
        try:
            names.append(process.name())
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    return names


def _mlflow_run(project, run_id: str):
    from mlflow import MlflowClient

    return MlflowClient(project.tracking_uri).get_run(run_id)


def _mlflow_runs(project, filter_string: str) -> list:
    """The project's MLflow runs that match `filter_string` (none before the experiment exists)."""
    from mlflow import MlflowClient

    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name("scoring")
    return client.search_runs([experiment.experiment_id], filter_string) if experiment else []


@pytest.fixture(scope="module")
def clean(tmp_path_factory, models_dir):
    """One clean run of all three days: the table every faulted run must equal."""
    from tests.conftest import Project

    project = Project(tmp_path_factory.mktemp("clean"), models_dir)
    job = project.job("churn_clean", scoring={"batch_size": 1000, "actors": {"min": 1, "max": 1}})
    proc, summary = project.score_json("run", str(job), "-p", "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["rows_scored"] + summary["rows_quarantined"] == 3 * ROWS_PER_DAY
    return _table(summary["table_uri"]), summary


@pytest.mark.parametrize(
    "point",
    [
        "score_batch",
        pytest.param("check_partition", marks=pytest.mark.slow),
        pytest.param("write_files", marks=pytest.mark.slow),
    ],
)
def test_a_worker_killed_mid_run_costs_time_not_rows(fresh_project, clean, point, tmp_path):
    """SIGKILL of a scoring actor (on its 3rd batch), of a check task, or of a write task that had written its
    files: Ray replaces the process and retries its work; the table equals the clean run's, row for row."""
    expected, clean_summary = clean
    project = fresh_project
    job = project.job("churn_faulted", scoring={"batch_size": 1000, "actors": {"min": 1, "max": 1}})
    nth = "3" if point == "score_batch" else "1"
    proc, summary = project.score_json(
        "run", str(job), "-p", "all", env=_faulted(project, f"{point}:kill:{nth}", tmp_path)
    )
    assert (tmp_path / f"fault-{point}").exists(), "the fault never fired"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (summary["rows_scored"], summary["rows_quarantined"]) == (
        clean_summary["rows_scored"],
        clean_summary["rows_quarantined"],
    )
    table = _table(summary["table_uri"])
    assert table.num_rows == summary["rows_scored"]
    assert len(set(table.column("customer_id").to_pylist())) == table.num_rows  # no duplicates
    assert table.equals(expected)
    on_disk = {str(p) for p in Path(summary["table_uri"]).rglob("*.parquet")}
    committed = set(DeltaTable(summary["table_uri"]).file_uris())
    assert committed <= on_disk
    if point == "write_files":  # the killed task's files stay until vacuumed, outside the table
        assert on_disk - committed


def test_a_killed_driver_leaves_no_version_its_run_is_marked_failed_and_a_rerun_equals_a_clean_run(
    fresh_project, clean, tmp_path
):
    """SIGKILL of `score run` with every file written, just before its commit: no new version, no visible row;
    `score vacuum` marks its MLflow run FAILED (it stayed RUNNING) and deletes its files; the same run key
    then commits a table equal to the clean run's."""
    expected, _ = clean
    project = fresh_project
    job = project.job("churn_killed", scoring={"batch_size": 1000, "actors": {"min": 1, "max": 1}})
    first_day = f"ds={DAYS[0].isoformat()}"
    proc, first = project.score_json("run", str(job), "-p", first_day)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = first["table_uri"]

    assert (
        _kill_driver_at(project, job, "commit:stall", tmp_path, "-p", "all", "--run-key", "nightly-1", "--force")
        == -signal.SIGKILL
    )

    assert DeltaTable(uri).version() == first["table_version"] == 0
    assert _table(uri).num_rows == first["rows_scored"]
    orphans = {p for p in Path(uri).rglob("*.parquet")} - {Path(p) for p in DeltaTable(uri).file_uris()}
    assert orphans, "the killed run had written its files"
    running = _mlflow_runs(project, "attributes.status = 'RUNNING'")
    assert len(running) == 1
    killed_id = running[0].info.run_id

    proc = project.score("vacuum", "churn_killed", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"run {killed_id} (churn_killed): its driver" in proc.stderr and "is gone; marked failed" in proc.stderr
    killed = _mlflow_run(project, killed_id)
    assert killed.info.status == "FAILED"
    assert killed.data.tags["error.type"] == "DriverGone"
    assert f"{len(orphans)} uncommitted file(s) deleted" in killed.data.tags["error"]
    assert not any(p.exists() for p in orphans)
    assert DeltaTable(uri).version() == 0

    proc, again = project.score_json("run", str(job), "-p", "all", "--run-key", "nightly-1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (again["status"], again["table_version"]) == ("succeeded", 1)
    assert _table(uri).equals(expected)
    assert {Path(p) for p in Path(uri).rglob("*.parquet")} >= {Path(p) for p in DeltaTable(uri).file_uris()}


@pytest.mark.slow  # a fault variant CI spares (make test-slow): CI time
def test_a_run_killed_after_its_first_group_resumes_with_the_groups_it_had_not_committed(
    fresh_project, clean, tmp_path
):
    """`output.commit_every: 1`, driver SIGKILLed before its second group's commit: the first day stays committed
    (v0); the same run key marks the dead run failed, scores only the two other days, one version each, and
    the table equals the clean run's."""
    expected, _ = clean
    project = fresh_project
    job = project.job(
        "churn_groups", scoring={"batch_size": 1000, "actors": {"min": 1, "max": 1}}, output__commit_every=1
    )
    assert (
        _kill_driver_at(project, job, "commit:stall:2", tmp_path, "-p", "all", "--run-key", "nightly-g")
        == -signal.SIGKILL
    )

    uri = str(project.warehouse / "churn_groups")
    assert DeltaTable(uri).version() == 0
    first_day = expected.filter(pc.equal(expected.column("ds"), DAYS[0].isoformat()))
    assert _table(uri).equals(first_day)
    (killed,) = _mlflow_runs(project, "attributes.status = 'RUNNING'")

    proc, resumed = project.score_json("run", str(job), "-p", "all", "--run-key", "nightly-g")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert resumed["partitions"] == [f"ds={d.isoformat()}" for d in DAYS[1:]]
    assert (resumed["table_versions"], resumed["rows_in"]) == ([1, 2], 2 * ROWS_PER_DAY)
    assert f"1 of its partitions were committed as churn_groups v0 by run {killed.info.run_id}" in resumed["message"]
    assert _table(uri).equals(expected)
    dead = _mlflow_run(project, killed.info.run_id)
    assert (dead.info.status, dead.data.tags["error.type"]) == ("FAILED", "DriverGone")
    assert f"its commit(s) {uri} v0 had landed" in dead.data.tags["error"]


@pytest.mark.slow  # a fault variant CI spares (make test-slow): CI time
def test_a_driver_killed_after_its_commit_keeps_its_version_and_its_run_says_so(fresh_project, clean, tmp_path):
    """SIGKILL of `score run` after its commit landed, before its last MLflow records: the version stays whole
    (no file of it deleted by the clean-up), and `score tables` marks the MLflow run FAILED saying the commit
    landed."""
    expected, _ = clean
    project = fresh_project
    job = project.job("churn_late_kill", scoring={"batch_size": 1000, "actors": {"min": 1, "max": 1}})
    assert _kill_driver_at(project, job, "committed:stall", tmp_path, "-p", "all") == -signal.SIGKILL

    uri = str(project.warehouse / "churn_late_kill")
    proc = project.score("tables")
    assert proc.returncode == 0, proc.stderr
    assert "is gone; marked failed, 0 uncommitted file(s) deleted" in proc.stderr
    (run,) = _mlflow_runs(project, "tags.`score.job` = 'churn_late_kill'")
    assert run.info.status == "FAILED"
    assert f"its commit(s) {uri} v0 had landed, so the table holds their rows" in run.data.tags["error"]
    assert DeltaTable(uri).version() == 0
    assert _table(uri).equals(expected)


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_sigterm_and_sigint_end_the_run_cleanly(fresh_project, tmp_path, sig):
    """What Airflow (SIGTERM) and a person (Ctrl-C) send, while a scoring actor is busy: exit 130 with the
    JSON summary, nothing committed, the run's files removed, its MLflow run KILLED, and no process of the
    run's left behind."""
    project = fresh_project
    job = project.job("churn_stopped", scoring={"batch_size": 1000, "actors": {"min": 1, "max": 1}})
    driver = _start(project, job, "-p", "all", env=_faulted(project, "score_batch:stall:2", tmp_path))
    _wait_for(tmp_path / "fault-score_batch", driver)
    started = psutil.Process(driver.pid).children(recursive=True)
    driver.send_signal(sig)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["status"], summary["exit_code"]) == ("failed", 130)
    assert summary["error"] == "interrupted; nothing committed"
    assert err.strip().splitlines()[-1] == "score: interrupted; nothing committed"
    assert "Traceback" not in err
    table_dir = project.warehouse / "churn_stopped"
    assert not table_dir.exists() or not list(table_dir.rglob("*.parquet"))
    run = _mlflow_run(project, summary["run_id"])
    assert run.info.status == "KILLED"
    assert _stop_leftovers(started) == []


@pytest.mark.parametrize("server", ["tracking", "storage"])
def test_an_unreachable_server_fails_the_run_before_any_data_is_read(project, server):
    """An MLflow server or object-store endpoint that is down: exit 75 (retry-safe) with one line naming it,
    instead of minutes of client retries; no MLflow run was opened, no table touched."""
    down = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env = (
        {"MLFLOW_TRACKING_URI": down}
        if server == "tracking"
        else {
            "SCORE_WAREHOUSE": "s3://nowhere/warehouse",
            "AWS_ENDPOINT_URL": down,
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    job = project.job(f"churn_no_{server}")
    proc = project.score("run", str(job), env=env)
    assert proc.returncode == 75, proc.stderr[-3000:]
    what = (
        f"tracking store {down}"
        if server == "tracking"
        else f"storage endpoint {down} (for s3://nowhere/warehouse/churn_no_storage)"
    )
    assert f"score: error: {what}: nothing answers at 127.0.0.1:9 (Connection refused)" in proc.stderr
    assert proc.stderr.rstrip().endswith("nothing was read or written")
    if server == "storage":
        assert _mlflow_runs(project, "tags.`score.job` = 'churn_no_storage'") == []


@pytest.mark.slow  # a fault variant CI spares (make test-slow): CI time
def test_a_run_that_stops_making_progress_fails_naming_the_stuck_stage(fresh_project, tmp_path):
    """A scoring actor whose model call never returns (stalled for real on its 2nd batch): after
    `engine.stall_timeout` without a row checked, scored or written, the run fails (exit 1) naming the
    scoring stage, commits nothing, removes its files and marks its MLflow run FAILED."""
    project = fresh_project
    job = project.job(
        "churn_stuck", scoring={"batch_size": 1000, "actors": {"min": 1, "max": 1}}, engine={"stall_timeout": "15s"}
    )
    proc, summary = project.score_json(
        "run", str(job), "-p", "all", env=_faulted(project, "score_batch:stall:2", tmp_path)
    )
    assert (tmp_path / "fault-score_batch").exists()
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert summary["error"].startswith("no progress for 15s (engine.stall_timeout): ")
    assert f"of {3 * ROWS_PER_DAY:,} rows checked" in summary["error"]
    assert "the stuck stage is score (a model call that never returns" in summary["error"]
    assert summary["error"].endswith("nothing was committed")
    table_dir = project.warehouse / "churn_stuck"
    assert not table_dir.exists() or not list(table_dir.rglob("*.parquet"))
    assert _mlflow_run(project, summary["run_id"]).info.status == "FAILED"


def test_a_model_that_cannot_load_in_the_actors_fails_the_run_instead_of_restarting_them(fresh_project, tmp_path):
    """The scoring actors' model load raises (injected: every actor, every time): the run fails with the
    loader's message rather than restarting actors for ever; nothing committed, MLflow run FAILED."""
    project = fresh_project
    job = project.job("churn_unloadable", scoring={"batch_size": 1000, "actors": {"min": 1, "max": 1}})
    proc, summary = project.score_json(
        "run", str(job), "-p", "all", env=_faulted(project, "open_model:raise", tmp_path)
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "InjectedFault: fault injected at open_model" in summary["error"]
    table_dir = project.warehouse / "churn_unloadable"
    assert not table_dir.exists() or not list(table_dir.rglob("*.parquet"))
    assert _mlflow_run(project, summary["run_id"]).info.status == "FAILED"
