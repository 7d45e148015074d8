"""The example DAG (jobs/starter/dags/score_daily.py) under a real Airflow 3: `airflow dags test` against a
throw-away project.

Airflow lives in a virtual environment of its own (never the project's: its pins would fight ours), built once
under ~/.cache/score-tests/airflow-<version>/ and reused while it still imports. Each test gets its own
AIRFLOW_HOME (sqlite metadata DB) and DAGs folder, where the DAG is written as `score init --airflow` writes it,
and runs the DAG in-process, no scheduler, no network. Task states and asset events are read from that metadata
DB; task logs are what `airflow dags test` prints (it runs the tasks in-process).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable
from filelock import FileLock
from mlflow import MlflowClient

from jobs.tools.init import install_dag
from tests.conftest import DAYS, REPO, ROWS_PER_DAY, Project
from tests.stages.test_quarantine import break_rows

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

AIRFLOW_VERSION = "3.3.2"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "score-tests" / f"airflow-{AIRFLOW_VERSION}"
DAG_ID = "score_daily"
DAY = DAYS[-1].isoformat()  # 2026-11-27
RUN_KEY = f"{DAG_ID}/{DAY}"
CONTRACT_MESSAGE = f"contract customers.json: 3 of {ROWS_PER_DAY} rows failed"
# The small project runs on the inline engine (same check, score, write and commit code, no Ray start):
# the DAG only sees the `score` command, and the 2-core machine is shared.
LEAN = {"engine__inline_max_rows": 200_000}


def _airflow_works(venv: Path) -> bool:
    """The cached venv still runs and holds the pinned Airflow (a removed base Python breaks it)."""
    python = venv / "bin" / "python"
    if not (python.exists() and (venv / "bin" / "airflow").exists()):
        return False
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('apache-airflow'))"],
        check=False,
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0 and probe.stdout.strip() == AIRFLOW_VERSION


@pytest.fixture(scope="session")
def airflow_bin() -> Path:
    """`airflow` from its own venv: installed from the package registry once, then reused."""
    venv, done = CACHE / "venv", CACHE / "installed.ok"
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE / ".lock")):  # two sessions at once build it once
        if not (done.exists() and _airflow_works(venv)):
            done.unlink(missing_ok=True)
            shutil.rmtree(venv, ignore_errors=True)  # venvs cannot be moved: build in place, mark when complete
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"apache-airflow=={AIRFLOW_VERSION}"],
                check=False,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            if pip.returncode or not _airflow_works(venv):
                pytest.fail(f"installing apache-airflow=={AIRFLOW_VERSION} into {venv} failed:\n{pip.stderr[-4000:]}")
            done.write_text(f"apache-airflow=={AIRFLOW_VERSION}\n")
    return venv / "bin" / "airflow"


class Airflow:
    """One AIRFLOW_HOME with a migrated sqlite DB, a DAGs folder holding the packaged DAG, and the DAG's settings."""

    def __init__(self, binary: Path, home: Path, project: Project, settings: dict[str, str]) -> None:
        self.binary, self.home = binary, home
        home.mkdir(parents=True, exist_ok=True)
        self.dags = install_dag(home / "dags").parent  # what `score init --airflow DAGS_FOLDER` writes
        base = {k: v for k, v in project.env.items() if not k.startswith("AIRFLOW")}  # no outer Airflow config
        self.env = {
            **base,
            **settings,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            # The DAG leaves retry_delay to this setting (300 s by default). At 1 s, a retry that
            # should not happen shows up as a second try instead of a five-minute wait.
            "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
        }
        migrate = self.cli("db", "migrate")
        assert migrate.returncode == 0, migrate.stdout[-4000:]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run `airflow ARGS` in its own process group, so a hung run can be stopped with what it started."""
        proc = subprocess.Popen(
            [str(self.binary), *args],
            env=self.env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this test started: airflow and its `score` child
            out, _ = proc.communicate()
            pytest.fail(f"airflow {' '.join(args)} did not finish in 900 s:\n{out[-6000:]}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    def dags_test(self, day: str = DAY) -> subprocess.CompletedProcess:
        return self.cli("dags", "test", DAG_ID, day)

    def task_states(self) -> dict[str, tuple[str, int, int]]:
        """task_id -> (state, try_number, max_tries) of the latest run of the DAG, from the metadata DB."""
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True) as db:
            (run_id,) = db.execute(
                "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
            ).fetchone()
            rows = db.execute(
                "SELECT task_id, state, try_number, max_tries FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (DAG_ID, run_id),
            ).fetchall()
        return {task_id: (state, tries, max_tries) for task_id, state, tries, max_tries in rows}

    def asset_events(self) -> list[tuple[str, dict]]:
        """(asset URI, event extra) of every asset event, oldest first."""
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id ORDER BY e.id"
            ).fetchall()
        return [(uri, json.loads(extra) if isinstance(extra, str) else extra) for uri, extra in rows]

    def python(self, code: str, **env: str) -> str:
        """Run `code` with Airflow's own Python and this home's settings; its stdout."""
        proc = subprocess.run(
            [str(self.binary.with_name("python")), "-c", code],
            env={**self.env, **env},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc.stdout


def _settings(project: Project, job: str, table: str, score_bin: str | None = None) -> dict[str, str]:
    """The DAG's configuration: the job through an Airflow Variable (AIRFLOW_VAR_*), the rest as plain env vars."""
    console = Path(sys.executable).with_name("score")
    default_bin = str(console) if console.exists() else f"{sys.executable} -m jobs.cli"
    return {
        "SCORE_BIN": score_bin or default_bin,
        "SCORE_PROJECT": str(project.root),
        "AIRFLOW_VAR_SCORE_JOB": job,
        "SCORE_TABLE": table,
        "SCORE_MAX_AGE": "26h",
    }


def _finished_runs(project: Project, run_key: str) -> list:
    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name("scoring")
    assert experiment is not None, "no MLflow experiment 'scoring'"
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`score.run_key` = '{run_key}'")
    return [run for run in runs if run.info.status == "FINISHED"]


def test_a_day_is_scored_once_checked_for_freshness_and_a_second_run_is_a_no_op(fresh_project, airflow_bin, tmp_path):
    project = fresh_project
    project.job("churn", **LEAN)
    airflow = Airflow(airflow_bin, tmp_path / "airflow", project, _settings(project, "conf/jobs/churn.yaml", "churn"))

    first = airflow.dags_test()
    assert first.returncode == 0, first.stdout[-6000:]
    assert airflow.task_states() == {"score": ("success", 1, 2), "freshness": ("success", 1, 2)}
    table = DeltaTable(str(project.warehouse / "churn"))
    assert table.version() == 0
    ds = table.to_pyarrow_table(columns=["ds"]).column("ds").to_pylist()
    assert len(ds) == ROWS_PER_DAY and {str(v) for v in ds} == {DAY}
    runs = _finished_runs(project, RUN_KEY)
    assert len(runs) == 1 and runs[0].data.tags["score.table_version"] == "0", [r.info for r in runs]
    assert "status succeeded" in first.stdout
    # Judged as of midnight after the scored day (not today's clock), with the limit the DAG passed.
    assert f"--now {DAYS[-1] + dt.timedelta(days=1)}T00:00:00+00:00" in first.stdout
    assert "fresh: churn v0: newest partition ds=2026-11-27" in first.stdout
    # The table's asset event: the Delta table's URI, with the version the run committed and the run that did.
    uri = (project.warehouse / "churn").as_uri()
    [(event_uri, extra)] = airflow.asset_events()
    assert event_uri == uri, airflow.asset_events()
    assert (extra["table"], extra["table_version"], extra["status"]) == ("churn", 0, "succeeded")
    assert (extra["run_id"], extra["run_key"]) == (runs[0].info.run_id, RUN_KEY)
    assert (extra["partitions"], extra["rows_scored"]) == ([f"ds={DAY}"], ROWS_PER_DAY)

    second = airflow.dags_test()  # a second DAG run of the same date: the run key already committed
    assert second.returncode == 0, second.stdout[-6000:]
    assert airflow.task_states() == {"score": ("success", 1, 2), "freshness": ("success", 1, 2)}
    assert "already_committed" in second.stdout
    assert DeltaTable(str(project.warehouse / "churn")).version() == 0
    assert len(_finished_runs(project, RUN_KEY)) == 1
    # The no-op still announces the version holding the day (its first try may have died after the commit).
    events = airflow.asset_events()
    assert len(events) == 2 and events[1][0] == uri
    assert (events[1][1]["status"], events[1][1]["table_version"]) == ("already_committed", 0)
    assert events[1][1]["run_id"] == runs[0].info.run_id


def test_tasks_have_an_execution_timeout_from_the_environment_or_the_default(fresh_project, airflow_bin, tmp_path):
    project = fresh_project
    airflow = Airflow(airflow_bin, tmp_path / "airflow", project, _settings(project, "conf/jobs/churn.yaml", "churn"))
    show = (  # Airflow logs on stdout too: the answer is the line marked `=>`
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"dag = DagBag({str(airflow.dags)!r}).dags[{DAG_ID!r}]\n"
        "timeouts = {t.task_id: t.execution_timeout.total_seconds() for t in dag.tasks}\n"
        "print('=>', timeouts, sorted(o.name for o in dag.get_task('score').outlets))"
    )

    def answer(**env: str) -> str:
        return next(line for line in airflow.python(show, **env).splitlines() if line.startswith("=> "))

    assert answer() == "=> {'score': 21600.0, 'freshness': 900.0} ['score_daily/output']"
    configured = answer(SCORE_RUN_TIMEOUT="3h30m", SCORE_CHECK_TIMEOUT="5m")
    assert configured == "=> {'score': 12600.0, 'freshness': 300.0} ['score_daily/output']"


def test_a_late_day_fails_retry_safe_and_the_retry_scores_it_once_it_lands(fresh_project, airflow_bin, tmp_path):
    """The day has not landed when the run starts: `score run --wait-for-partitions` looks for it, then exits 75, an
    ordinary failure that Airflow retries (not AirflowFailException). It lands before the retry, which scores it."""
    project = fresh_project
    project.job("churn", **LEAN)
    late = DAYS[-1] + dt.timedelta(days=1)
    real = _settings(project, "", "")["SCORE_BIN"]
    lands = tmp_path / "land.py"  # the late day, landed as tests/test_late_data.py lands it
    lands.write_text(
        "import datetime, sys\nfrom pathlib import Path\nfrom tests.test_late_data import land\n"
        f"land(Path({str(project.data)!r}), datetime.date.fromisoformat({late.isoformat()!r}), 1500)\n"
    )
    lander = tmp_path / "landing-score"  # the real `score`; before its second call the late day lands
    lander.write_text(f"""#!/bin/sh
if [ -e "{tmp_path / "called-once"}" ] && [ ! -e "{project.data / f"ds={late}"}" ]; then
    PYTHONPATH="{REPO}" {sys.executable} "{lands}" || exit 1
fi
: > "{tmp_path / "called-once"}"
exec {real} "$@"
""")
    lander.chmod(0o755)
    settings = _settings(project, "conf/jobs/churn.yaml", "churn", score_bin=str(lander))
    airflow = Airflow(airflow_bin, tmp_path / "airflow", project, {**settings, "SCORE_WAIT_FOR_PARTITIONS": "2s"})

    run = airflow.dags_test(late.isoformat())
    assert run.returncode == 0, run.stdout[-6000:]
    assert airflow.task_states() == {"score": ("success", 2, 2), "freshness": ("success", 1, 2)}
    missing = f"partition ds={late} not found under {project.data}"
    assert f"score: churn: waiting for late data: {missing}" in run.stdout  # each look, in the task log
    assert f"score run exited 75 (retry-safe transient failure, retried): {missing}" in run.stdout
    assert "--wait-for-partitions 2s" in run.stdout
    assert "AirflowFailException" not in run.stdout
    table = DeltaTable(str(project.warehouse / "churn"))
    assert table.version() == 0
    ds = table.to_pyarrow_table(columns=["ds"]).column("ds").to_pylist()
    assert {str(v) for v in ds} == {late.isoformat()} and len(ds) == 1500
    [(_, extra)] = airflow.asset_events()
    assert (extra["table_version"], extra["partitions"], extra["status"]) == (0, [f"ds={late}"], "succeeded")


def test_a_contract_failure_fails_the_task_at_once_with_the_contract_message(fresh_project, airflow_bin, tmp_path):
    project = fresh_project
    job = project.job("churn", contract={"suite": "data_contracts/customers.json", "on_failure": "fail"}, **LEAN)
    earlier = project.score("run", str(job), "-p", f"ds={DAYS[-2]}")  # the table exists at v0 before the bad day
    assert earlier.returncode == 0, earlier.stderr[-3000:]
    break_rows(project)
    airflow = Airflow(airflow_bin, tmp_path / "airflow", project, _settings(project, "conf/jobs/churn.yaml", "churn"))

    run = airflow.dags_test()
    assert run.returncode != 0, run.stdout[-6000:]
    # Failed on its first try although the task has two retries; freshness never ran.
    assert airflow.task_states() == {"score": ("failed", 1, 2), "freshness": ("upstream_failed", 0, 2)}
    assert f"score: error: {CONTRACT_MESSAGE}" in run.stdout  # `score run`'s stderr, copied into the task log
    assert "AirflowFailException: score run exited 3 (data contract failure" in run.stdout
    table = DeltaTable(str(project.warehouse / "churn"))
    assert table.version() == 0
    assert {str(v) for v in table.to_pyarrow_table(columns=["ds"]).column("ds").to_pylist()} == {DAYS[-2].isoformat()}
    assert _finished_runs(project, RUN_KEY) == []


def test_a_transient_failure_is_retried_and_the_retry_commits_once(fresh_project, airflow_bin, tmp_path):
    """Exit 75 (a server did not answer) is the retry-safe failure: the DAG's retries take it."""
    project = fresh_project
    project.job("churn", **LEAN)
    real = _settings(project, "", "")["SCORE_BIN"]
    flaky = tmp_path / "flaky-score"
    flaky.write_text(f"""#!/bin/sh
# The first call fails as `score` does when its MLflow server does not answer; later calls are the real one.
if [ ! -e "{tmp_path / "failed-once"}" ]; then
    : > "{tmp_path / "failed-once"}"
    echo "score: error: MLflow tracking server did not answer (simulated); nothing was read or written" >&2
    exit 75
fi
exec {real} "$@"
""")
    flaky.chmod(0o755)
    airflow = Airflow(
        airflow_bin,
        tmp_path / "airflow",
        project,
        _settings(project, "conf/jobs/churn.yaml", "churn", score_bin=str(flaky)),
    )

    run = airflow.dags_test()
    assert run.returncode == 0, run.stdout[-6000:]
    assert airflow.task_states() == {"score": ("success", 2, 2), "freshness": ("success", 1, 2)}
    assert "score run exited 75 (retry-safe transient failure, retried)" in run.stdout
    assert DeltaTable(str(project.warehouse / "churn")).version() == 0
    runs = _finished_runs(project, RUN_KEY)
    assert len(runs) == 1 and runs[0].data.tags["score.table_version"] == "0"
