"""Example Airflow 3 DAG: score one day's partition with `score run`, then check the table with `score freshness`.

Shipped with the `score` package (`jobs/starter/dags/score_daily.py`): `score init DIR --airflow` writes it into
a new project's `dags/`, `score init --airflow DAGS_FOLDER` into an existing DAGs folder. The `score` package is
NOT imported here, only its command line, so the DAG runs on any Airflow 3 deployment (no provider beyond the
standard TaskFlow API) and `score` may live in a virtual environment of its own on the workers.

Configuration read when a task runs (so the worker's settings count), each from an Airflow Variable of that
name, else the environment variable, else the default:

    SCORE_BIN       the `score` command (default `score` on the PATH); may hold arguments, e.g.
                    `/opt/score/.venv/bin/score` or `/opt/score/.venv/bin/python -m jobs.cli`
    SCORE_PROJECT   the project folder the commands run in: conf/, data_contracts/, relative paths
                    of the job (default: the worker's working directory)
    SCORE_JOB       the job file, relative to SCORE_PROJECT (default conf/jobs/churn_daily.yaml)
    SCORE_TABLE     the output table `score freshness` checks (default churn_scores)
    SCORE_MAX_AGE   the freshness limit (default 26h)
    SCORE_WAIT_FOR_PARTITIONS
                    how long `score run` waits for a day that has not landed yet (default 2h; `0`: no
                    wait, a missing day fails the task at once)

Configuration read when Airflow parses this file (task attributes are fixed then), from the environment of
the DAG processor, else the default (not Variables: top-level code runs at every parse):

    SCORE_RUN_TIMEOUT    the `score` task's execution_timeout (default 6h): the wait above plus the run
    SCORE_CHECK_TIMEOUT  the `freshness` task's execution_timeout (default 15m)

Everything else (MLflow, warehouse, Ray address, credentials) reaches `score` through the worker's
environment as usual (MLFLOW_TRACKING_URI, SCORE_WAREHOUSE, RAY_ADDRESS, AWS_*).

Schedule: a run with logical date D covers the day D (data interval [D, D+1), started just after midnight
UTC of D+1) and scores exactly `ds=D`, under the run key `<dag_id>/D`. A retry, a cleared task or a second
run of the same date is therefore a no-op success (`status: already_committed`) once that key committed;
re-score a day on purpose with `score run JOB -p ds=D --force` (or a new key). The freshness check then
judges the table as of midnight UTC after D (when the scheduled run starts), so a backfill or a re-run of
an old date is judged as of its own day, not of today.

Late data: `score run --wait-for-partitions` looks for `ds=D` with backoff (a log line per look) and exits 75
when it has not landed in time; that is an ordinary, retried failure, so each retry waits again. The wait
holds a worker slot: for long delays prefer a shorter wait and more retries with a longer retry_delay.

Asset: the `score` task's outlet is the asset alias `score_daily/output`. Each successful `score` task adds one
event for the Delta table the run wrote, `Asset(<table URI>)` (`file:///abs/warehouse/churn_scores`,
`s3://bucket/warehouse/churn_scores`: the `table_uri` of the run's summary), with the table version, the run id
and key, the partitions and rows in its extra. A no-op retry (`already_committed`) emits one too, naming the
version that committed the day: its first try may have failed after the commit, before any event was sent.
Downstream DAGs: `schedule=Asset("file:///abs/warehouse/churn_scores")` (or the alias); dedupe on the extra's
`table_version`.

Exit codes of `score` decide retries: 1 (runtime failure), 75 (retry-safe: a day not landed in time, a lost
race, a server that did not answer) and 130 (interrupted) raise an ordinary failure that Airflow retries; 2 (bad
spec or usage), 3 (data contract failure) and 4 (stale table) fail the task at once, since a retry would give
the same answer. Everything `score` writes on stderr (the waits, the contract verdict, errors) is copied into
the task log line by line as it runs; the JSON summary of `score run` is logged and returned (XCom).
Retry delay: Airflow's `[core] default_task_retry_delay` (5 minutes unless your deployment changes it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias, dag, get_current_context, task

try:  # Airflow >= 3.1 exposes these in the Task SDK; 3.0 has them in core
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.timetables.interval import CronDataIntervalTimetable  # type: ignore[no-redef]
try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[no-redef]

log = logging.getLogger("score_daily")  # Airflow imports DAG files under a mangled module name

DEFAULTS = {
    "SCORE_BIN": "score",
    "SCORE_PROJECT": "",
    "SCORE_JOB": "conf/jobs/churn_daily.yaml",
    "SCORE_TABLE": "churn_scores",
    "SCORE_MAX_AGE": "26h",
    "SCORE_WAIT_FOR_PARTITIONS": "2h",
    "SCORE_RUN_TIMEOUT": "6h",
    "SCORE_CHECK_TIMEOUT": "15m",
}
# Exit codes of `score` that a retry cannot change: fail the task without using up its retries.
FINAL_EXIT_CODES = {2: "bad spec or usage", 3: "data contract failure", 4: "stale table"}
RETRYABLE_EXIT_CODES = {1: "runtime failure", 75: "retry-safe transient failure", 130: "interrupted"}
OUTPUT = AssetAlias("score_daily/output")  # resolved at run time to the table the run wrote
# What each asset event carries, from the run's JSON summary: enough for a consumer to read exactly that version.
ASSET_EXTRA = (
    "table",
    "table_uri",
    "table_version",
    "table_versions",
    "status",
    "run_id",
    "run_key",
    "partitions",
    "rows_scored",
    "model_version",
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def duration(name: str, text: str) -> timedelta:
    """`6h`, `90m`, `1h30m`, `2d`, `3600s`, as `score` writes durations; a bad one names its setting."""
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{name}={text!r} is not a duration: use e.g. 6h, 90m or 1h30m")
    return timedelta(seconds=sum(float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


def parse_time_setting(name: str) -> timedelta:
    """A duration Airflow fixes when it parses this file: the DAG processor's environment, else the default."""
    return duration(name, os.environ.get(name) or DEFAULTS[name])


def setting(name: str) -> str:
    """An Airflow Variable, else the environment variable, else the default: read at run time, on the worker."""
    from airflow.sdk import Variable

    try:
        value = Variable.get(name, default=None)
    except Exception as exc:  # no metadata access: say so, then the environment still works
        log.warning("cannot read Airflow Variable %s (%s); using the environment", name, exc)
        value = None
    return value if value not in (None, "") else os.environ.get(name) or DEFAULTS[name]


def run_score(args: list[str]) -> tuple[int, str]:
    """Run `score ARGS` in SCORE_PROJECT; stream its stderr into the task log; return (exit code, stdout).

    stdout goes to a temporary file, not a pipe, so a long run can never block on a full pipe while stderr
    is being read. If the task is killed (timeout, marked failed), `score` gets SIGTERM and cleans up.
    """
    command = [*shlex.split(setting("SCORE_BIN")), *args]
    cwd = setting("SCORE_PROJECT") or None
    log.info("running in %s: %s", cwd or os.getcwd(), shlex.join(command))
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as out:
        try:
            proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.PIPE, text=True, errors="replace")
        except OSError as exc:  # the command itself is missing: a deployment mistake, not worth retrying
            raise AirflowFailException(f"cannot start {command[0]!r} (set SCORE_BIN): {exc}") from exc
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                log.info("%s", line.rstrip("\n"))
            code = proc.wait()
        except BaseException:
            proc.terminate()  # `score` handles SIGTERM: removes its uncommitted files, ends its MLflow run
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        out.seek(0)
        return code, out.read()


def end_of_day(ds: str) -> str:
    """Midnight UTC after day `ds`: when a scheduled run of `ds` starts (its data interval's end).

    Computed from `ds` rather than read from `data_interval_end`, because a manual or test run of logical
    date D gets the interval [D-1, D], which would judge the table a day too early.
    """
    return (datetime.fromisoformat(ds).replace(tzinfo=UTC) + timedelta(days=1)).isoformat()


def table_asset(table_uri: str) -> Asset:
    """The Delta table as an asset: its URI (a local path as `file://`), which is also the asset's name."""
    return Asset(Path(table_uri).as_uri() if table_uri.startswith("/") else table_uri)


def wait_arguments(task_timeout: timedelta | None) -> list[str]:
    """`--wait-for-partitions D` from SCORE_WAIT_FOR_PARTITIONS; refused unless shorter than the task's timeout."""
    text = setting("SCORE_WAIT_FOR_PARTITIONS").strip()
    try:
        wait = duration("SCORE_WAIT_FOR_PARTITIONS", text) if text != "0" else timedelta(0)
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from None
    if not wait:
        return []
    if task_timeout is not None and wait >= task_timeout:
        raise AirflowFailException(
            f"SCORE_WAIT_FOR_PARTITIONS={text} is not shorter than the score task's execution_timeout "
            f"{task_timeout} (SCORE_RUN_TIMEOUT): shorten the wait or raise the timeout"
        )
    return ["--wait-for-partitions", text]


def check_exit(what: str, code: int, detail: str) -> None:
    """Turn a non-zero exit code into the failure that gets (or does not get) Airflow's retries."""
    if code == 0:
        return
    if code in FINAL_EXIT_CODES:
        raise AirflowFailException(f"{what} exited {code} ({FINAL_EXIT_CODES[code]}, not retried): {detail}")
    meaning = RETRYABLE_EXIT_CODES.get(code, "unexpected exit code")
    raise AirflowException(f"{what} exited {code} ({meaning}, retried): {detail}")


@dag(
    dag_id="score_daily",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "ml-platform", "retries": 2},
    tags=["score", "ml", "batch-scoring"],
    doc_md=__doc__,
)
def score_daily() -> None:
    """Score `ds` (the data interval's day), then check the table's freshness as of the interval's end."""

    @task(outlets=[OUTPUT], execution_timeout=parse_time_setting("SCORE_RUN_TIMEOUT"))
    def score() -> dict[str, Any]:
        """`score run JOB -p ds=D --run-key DAG/D --wait-for-partitions W --json`: returns the run's JSON summary
        and adds the table's asset event."""
        context = get_current_context()
        ds, dag_id = context["ds"], context["dag"].dag_id
        wait = wait_arguments(context["task"].execution_timeout)
        code, stdout = run_score(
            ["run", setting("SCORE_JOB"), "-p", f"ds={ds}", "--run-key", f"{dag_id}/{ds}", *wait, "--json"]
        )
        lines = [line for line in stdout.splitlines() if line.strip()]
        try:
            summary = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            summary = {"message": lines[-1]}
        log.info("score run summary: %s", json.dumps(summary, sort_keys=True))
        detail = summary.get("error") or summary.get("message") or f"see the log above ({len(lines)} stdout lines)"
        check_exit("score run", code, str(detail))
        log.info(
            "score run %s: status %s, table %s version %s, %s rows scored, run key %s",
            summary.get("run_id"),
            summary.get("status"),
            summary.get("table"),
            summary.get("table_version"),
            summary.get("rows_scored"),
            summary.get("run_key"),
        )
        if summary.get("table_uri") and summary.get("table_version") is not None:
            asset = table_asset(summary["table_uri"])
            extra = {key: summary.get(key) for key in ASSET_EXTRA}
            context["outlet_events"][OUTPUT].add(asset, extra=extra)
            log.info("asset event: %s version %s (%s)", asset.uri, summary["table_version"], summary.get("status"))
        return summary

    @task(execution_timeout=parse_time_setting("SCORE_CHECK_TIMEOUT"))
    def freshness() -> str:
        """`score freshness TABLE --max-age AGE --now <midnight after ds>`: fails (no retry) when stale."""
        code, stdout = run_score(
            [
                "freshness",
                setting("SCORE_TABLE"),
                "--max-age",
                setting("SCORE_MAX_AGE"),
                "--now",
                end_of_day(get_current_context()["ds"]),
            ]
        )
        verdict = stdout.strip()
        log.info("%s", verdict)
        check_exit("score freshness", code, verdict or "see the log above")
        return verdict

    score() >> freshness()


score_daily()
