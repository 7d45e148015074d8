"""What a person at a terminal and a scheduler's log see of the `score` command (issue 12): global options in
either place, `--version`, only our own lines (no Ray or library noise), `score plan` and `score run --limit`."""

from __future__ import annotations

import collections
import json
import os
import pty
import re
import subprocess
import sys
from importlib.metadata import version

import pytest
from deltalake import DeltaTable

from tests.conftest import DAYS, ROWS_PER_DAY

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SUMMARY_ROWS = ("partitions", "rows", "model", "table", "MLflow run", "time", "drift")
PROGRESS = re.compile(r"^scoring [\d,]+ of [\d,]+ rows")


def _in_a_terminal(project, *args: str) -> tuple[int, str]:
    """`score ARGS` with a pseudo-terminal as stdin, stdout and stderr, as a person runs it; returns the exit
    code and everything the terminal received."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=project.root,
        env=project.env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    received = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every copy of the terminal's other end is closed: the process is gone
            break
        if not chunk:
            break
        received += chunk
    os.close(leader)
    return process.wait(timeout=600), received.decode(errors="replace")


def test_version_and_global_options_in_either_place(project):
    proc = project.score("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"score {version('score-jobs')}")
    before, after = project.score("--json", "tables"), project.score("tables", "--json")
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout)
    verbose = project.score("tables", "-v")
    assert verbose.returncode == 0, verbose.stderr


def test_a_run_on_a_terminal_shows_only_our_lines_and_a_summary(fresh_project):
    """On Ray (the noisy engine): no Ray log line, operator bar, C++ warning or library warning reaches the
    terminal; only our `score:` lines, our progress line and the summary table."""
    project = fresh_project
    job = project.job("tty", scoring={"batch_size": 2000, "actors": {"min": 1, "max": 1}})
    code, screen = _in_a_terminal(project, "run", str(job), "-p", "all")
    assert code == 0, screen[-3000:]
    lines = [ANSI.sub("", part).strip() for part in re.split(r"[\r\n]+", screen)]
    lines = [line for line in lines if line]
    summary = {line.split("  ", 1)[0]: line for line in lines if line.startswith(SUMMARY_ROWS)}
    assert set(summary) == set(SUMMARY_ROWS), lines
    assert "tty v0" in summary["table"]
    assert f"{3 * ROWS_PER_DAY:,} in, {3 * ROWS_PER_DAY:,} scored" in summary["rows"]
    assert "no baseline yet (the first profiled run)" in summary["drift"]
    strangers = [
        line
        for line in lines
        if not (line.startswith("score: ") or PROGRESS.match(line) or line.startswith(SUMMARY_ROWS))
    ]
    assert strangers == []
    assert lines[0].startswith("score: tty: selecting all of ")
    assert any(
        line.startswith("score: tty: 3 partitions (") and f"{3 * ROWS_PER_DAY:,} rows; model model.onnx (sha256" in line
        for line in lines
    )


def test_a_run_in_a_log_gets_timestamped_lines_without_bars(fresh_project):
    project = fresh_project
    job = project.job("logged", engine={"inline_max_rows": 100_000, "progress_every": "1s"})
    proc = project.score("run", str(job), "-p", "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    lines = proc.stderr.splitlines()
    stamped = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 score: ")
    assert lines and all(stamped.match(line) for line in lines), lines
    assert "table: logged v0" in lines[-1]


def test_plan_shows_what_a_run_would_do_and_the_run_does_it(fresh_project, tmp_path):
    """`score plan` makes the run's own decisions (partitions, files, model, run key, replaced rows, pool)
    without starting anything: no MLflow run, no table version. The run then does exactly that; planned
    again, the same key says it committed."""
    from mlflow import MlflowClient

    project = fresh_project
    job = project.job("planned")
    days = f"ds={DAYS[1].isoformat()}..{DAYS[2].isoformat()}"
    proc, plan = project.score_json("plan", str(job), "-p", days)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert plan["action"] == "score"
    assert [p["partition"] for p in plan["input"]["partitions"]] == [f"ds={d.isoformat()}" for d in DAYS[1:]]
    assert [p["rows"] for p in plan["input"]["partitions"]] == [ROWS_PER_DAY, ROWS_PER_DAY]
    assert [len(p["files"]) for p in plan["input"]["partitions"]] == [2, 2]
    assert plan["input"]["rows"] == 2 * ROWS_PER_DAY
    assert plan["output"]["version_now"] is None and plan["output"]["commits"] == 1
    assert [p["rows_now"] for p in plan["output"]["replaces"]] == [0, 0]
    assert plan["contract"]["on_failure"] == "fail" and plan["contract"]["expectations"] > 0
    assert plan["engine"]["kind"] == "ray" and plan["engine"]["pool"]["max_actors"] >= 1
    assert not (project.warehouse / "planned").exists()
    assert not (project.root / ".score" / "mlflow.db").exists() or not MlflowClient(project.tracking_uri).search_runs(
        [e.experiment_id for e in MlflowClient(project.tracking_uri).search_experiments()]
    )

    proc, run = project.score_json("run", str(job), "-p", days)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run["run_key"], run["model_sha256"], run["input_fingerprint"]) == (
        plan["run_key"],
        plan["model"]["sha256"],
        plan["input"]["fingerprint"],
    )

    proc, again = project.score_json("plan", str(job), "-p", days)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert again["action"] == "nothing: its run key already committed"
    assert again["run_key_commits"] == [{"table_version": 0, "run_id": run["run_id"], "partitions": run["partitions"]}]
    assert [(p["rows_now"], p["scored_by_run"]) for p in again["output"]["replaces"]] == [
        (ROWS_PER_DAY, run["run_id"])
    ] * 2
    text = project.score("plan", str(job), "-p", days)
    assert text.returncode == 0 and f"committed as planned v0 by run {run['run_id']}" in text.stdout
    model_line = next(line for line in text.stdout.splitlines() if line.startswith("model "))
    assert model_line.split()[1:3] == [plan["model"]["uri"] + ",", "sha256"]  # a file is named once, not `P = P`

    picture = tmp_path / "history.png"
    proc = project.score("history", "planned", "--plot", str(picture))
    assert proc.returncode == 0, proc.stderr
    assert "(rows and mean churn_probability per version)" in proc.stderr
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_limit_scores_a_sample_into_a_table_of_ones_own(fresh_project):
    """`--limit N --table T`: N rows shared among the selected partitions, scored into T exactly as the full
    run scores them; refused without --table or into the job's own table."""
    project = fresh_project
    job = project.job("limited", engine={"inline_max_rows": 100_000})
    refused = project.score("run", str(job), "--limit", "100")
    assert refused.returncode == 2 and "--limit 100: name a table of your own with --table" in refused.stderr
    refused = project.score("run", str(job), "--limit", "100", "--table", "limited")
    assert refused.returncode == 2 and "(not limited, the job's table" in refused.stderr
    (project.root / "conf" / "keep").mkdir()
    refused = project.score("run", str(job), "--limit", "100", "--table", "../../conf")
    assert refused.returncode == 2 and "--table ../../conf: a table name is letters" in refused.stderr
    assert (project.root / "conf" / "keep").is_dir()

    proc, sample = project.score_json("run", str(job), "-p", "all", "--limit", "1000", "--table", "limited_sample")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sample["table"], sample["rows_in"], sample["rows_scored"]) == ("limited_sample", 1000, 1000)
    rows = DeltaTable(sample["table_uri"]).to_pyarrow_table(columns=["customer_id", "ds", "churn_probability"])
    per_day = dict(collections.Counter(rows.column("ds").to_pylist()))
    assert sorted(per_day) == [d.isoformat() for d in DAYS]
    assert [per_day[d.isoformat()] for d in DAYS] == [333, 334, 333]  # 1000 rows in proportion to equal days
    assert not (project.warehouse / "limited").exists()

    proc, full = project.score_json("run", str(job), "-p", "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    everything = DeltaTable(full["table_uri"]).to_pyarrow_table(columns=["customer_id", "ds", "churn_probability"])
    scores = {(c, d): p for c, d, p in zip(*[everything.column(n).to_pylist() for n in everything.column_names])}
    for customer, day, probability in zip(*[rows.column(n).to_pylist() for n in rows.column_names]):
        assert probability == pytest.approx(scores[(customer, day)], rel=1e-6)


def test_the_python_api_shows_its_real_signature():
    """Guards: `help(jobs.run_job)` showed `(*args, **kwargs)` (a lazy wrapper)."""
    import inspect

    import jobs

    assert list(inspect.signature(jobs.run_job).parameters)[:3] == ["job", "partitions", "overrides"]
    assert "Score the selected partitions" in jobs.run_job.__doc__
    assert "partitions" in inspect.signature(jobs.validate_job).parameters
