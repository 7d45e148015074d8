"""A project of one's own (`score init`), and cron: a crontab-style invocation under the per-job lock."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from deltalake import DeltaTable

from tests.conftest import REPO

SCORE = str(Path(sys.executable).with_name("score"))


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """What cron gives a job: almost nothing (no project variables, a bare PATH)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }


def test_init_makes_a_project_that_runs_as_it_is(tmp_path):
    """From an empty folder outside this repository: `score init`, then `score plan` and `score run` as
    printed; the sample's broken rows land in quarantine with their reasons."""
    env = _clean_env(tmp_path)
    init = subprocess.run(
        [SCORE, "init", "mine", "--rows-per-day", "2000", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    created = json.loads(init.stdout)
    root = tmp_path / "mine"
    assert sorted(created["files"]) == sorted(
        [
            ".gitignore",
            "README.md",
            "conf/defaults.yaml",
            "conf/jobs/churn_daily.yaml",
            "data_contracts/customers.json",
            "models/churn.onnx",
        ]
    )
    assert created["rows"] == 6000 and len(created["days"]) == 3
    assert "score run conf/jobs/churn_daily.yaml" in init.stderr
    again = subprocess.run([SCORE, "init", "mine"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "is not an empty folder" in again.stderr

    plan = subprocess.run(
        [SCORE, "plan", "conf/jobs/churn_daily.yaml", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["input"]["rows"] == 6000
    run = subprocess.run(
        [SCORE, "run", "conf/jobs/churn_daily.yaml", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    broken = round(2000 * 0.003)
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (6000, 6000 - broken, broken)
    assert DeltaTable(str(root / "warehouse" / "churn_scores")).to_pyarrow_table().num_rows == 6000 - broken
    reasons = DeltaTable(str(root / "warehouse" / "churn_scores__quarantine")).to_pyarrow_table().column("_reasons")
    assert len(reasons) == broken
    assert (root / ".score" / "mlflow.db").exists()


def test_a_job_outside_any_project_says_how_to_fix_it(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text((REPO / "jobs" / "starter" / "conf" / "jobs" / "churn_daily.yaml").read_text())
    proc = subprocess.run(
        [SCORE, "run", str(job)], cwd=tmp_path, env=_clean_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"score: error: {job}: not inside a project: no conf/defaults.yaml in {tmp_path} or a folder above it, so "
        "tracking: and warehouse: are unset; create a project with `score init DIR` and put the job in "
        "DIR/conf/jobs/, or give the job its own tracking: and warehouse: sections"
    )


def test_cron_runs_one_at_a_time_and_a_killed_run_never_leaves_the_job_locked(tmp_path):
    """The README's crontab line, run by `sh -c` with cron's bare environment: a run that finds the job's lock
    held exits 75 at once naming the holder; after the holder is SIGKILLed the next run takes the lock and
    commits; the log file holds timestamped lines only."""
    env = _clean_env(tmp_path)
    init = subprocess.run(
        [SCORE, "init", "cronned", "--rows-per-day", "1000"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    root, log = tmp_path / "cronned", tmp_path / "cronned" / "logs" / "churn_daily.log"
    line = (
        f"cd {shlex.quote(str(root))} && mkdir -p logs && {shlex.quote(SCORE)} run conf/jobs/churn_daily.yaml "
        "--lock >> logs/churn_daily.log 2>&1"
    )
    faults = tmp_path / "faults"
    faults.mkdir()
    holder = subprocess.Popen(
        ["sh", "-c", line], env={**env, "SCORE_INJECT_FAULT": "commit:stall", "SCORE_FAULT_DIR": str(faults)}
    )
    deadline = time.monotonic() + 300
    while not (faults / "fault-commit").exists():
        assert holder.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the first run never reached its commit"
        time.sleep(0.2)
    (score,) = [p for p in psutil.Process(holder.pid).children() if "score" in " ".join(p.cmdline())]

    second = subprocess.run(["sh", "-c", line], env=env, timeout=120)
    assert second.returncode == 75
    assert f"job churn_daily is already running here (pid {score.pid}, started " in log.read_text()
    refused = subprocess.run(
        [SCORE, "run", "conf/jobs/churn_daily.yaml", "--lock", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 75, refused.stderr
    assert (json.loads(refused.stdout)["job"], json.loads(refused.stdout)["exit_code"]) == ("churn_daily", 75)

    started = score.children(recursive=True)
    score.kill()
    holder.wait(timeout=60)
    psutil.wait_procs(started, timeout=30)

    third = subprocess.run(["sh", "-c", line], env=env, timeout=600)
    assert third.returncode == 0, log.read_text()[-3000:]
    assert DeltaTable(str(root / "warehouse" / "churn_scores")).version() == 0
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    stamped = [ln for ln in text.splitlines() if ln.strip() and ln != "Killed"]  # "Killed": sh, of its child
    assert all((ln[:4].isdigit() and " score: " in ln) or ln.startswith("score: error: ") for ln in stamped), stamped


@pytest.mark.slow
def test_pip_install_then_init_and_run_outside_the_repository(tmp_path):
    """What a new user does: a fresh virtual environment, `pip install` of this package (CPU extra), then
    `score init` and `score run` in an empty folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"{REPO}[cpu]"], check=True, timeout=1500)
    env = _clean_env(tmp_path)
    score = str(venv / "bin" / "score")
    assert (
        subprocess.run(
            [score, "init", "fresh", "--rows-per-day", "1000"], cwd=tmp_path, env=env, timeout=120
        ).returncode
        == 0
    )
    run = subprocess.run(
        [score, "run", "conf/jobs/churn_daily.yaml", "--json"],
        cwd=tmp_path / "fresh",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert (summary["status"], summary["rows_in"]) == ("succeeded", 3000)
    assert summary["rows_scored"] + summary["rows_quarantined"] == 3000 and summary["rows_quarantined"] == 3
