"""What runs record about their spec and code: no secret substituted from the environment, no URI
password, and a code version that only changes to tracked files mark dirty."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from jobs.storage import redact_uri
from jobs.tracking.code_version import code_version

SECRET = "tok-5f3a9c1e7b"


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("https://user:token@host/path?q=1", "https://***@host/path?q=1"),
        ("https://token@github.com/org/repo", "https://***@github.com/org/repo"),
        ("postgresql://user:pw@db.internal:5432/mlflow", "postgresql://***@db.internal:5432/mlflow"),
        ("mysql+pymysql://user:p@ss@db/mlflow", "mysql+pymysql://***@db/mlflow"),
        ("s3://AKIAEXAMPLE:secret@bucket/warehouse", "s3://***@bucket/warehouse"),
        ("${URI:-http://u:${TOKEN}@h:5000} or sqlite:///x.db", "${URI:-http://***@h:5000} or sqlite:///x.db"),
        ("sqlite:////abs/.score/mlflow.db", "sqlite:////abs/.score/mlflow.db"),
        ("models:/churn@champion", "models:/churn@champion"),
        ("/data/customers/ds=2026-11-27", "/data/customers/ds=2026-11-27"),
        ("abfss://container@account.dfs.core.windows.net/w", "abfss://container@account.dfs.core.windows.net/w"),
        ('{"uri":"http://host","who":"a@b"}', '{"uri":"http://host","who":"a@b"}'),
    ],
)
def test_redact_uri_masks_user_info(uri, shown):
    """Guards every recorded or printed URI: user info (user:password, a token) is masked, the rest of the
    URI, registry aliases, paths and Azure container names stay readable."""
    assert redact_uri(uri) == shown


def test_failed_run_summary_masks_uri_passwords(project, monkeypatch):
    """Guards `score run --json` and `run_job`'s summary: its tracking_uri and table_uri carry no password
    taken from the environment, also when the run fails before it plans (its tracking server is down: exit 75)."""
    monkeypatch.setenv("MLFLOW_TOKEN", SECRET)
    monkeypatch.setenv("S3_SECRET", SECRET)
    job = project.job(
        "masked",
        tracking__uri="http://scorer:${MLFLOW_TOKEN}@127.0.0.1:9",
        warehouse__uri="s3://AKIAEXAMPLE:${S3_SECRET}@bucket/warehouse",
    )
    code, summary = project.run(job, partitions="ds=1999-01-01")
    assert code == 75, summary
    assert summary["error"].startswith("tracking store http://127.0.0.1:9: nothing answers")
    assert SECRET not in json.dumps(summary)
    assert summary["tracking_uri"] == "http://***@127.0.0.1:9"
    assert summary["table_uri"] == "s3://***@bucket/warehouse/masked"


def test_secrets_from_the_environment_are_in_no_record(fresh_project, tmp_path):
    """Guards secrets end to end: a value substituted from `${TEAM_TOKEN}` is in no MLflow param, tag,
    dataset or artifact of the run, no Delta log file of the table, no `score lineage` output (JSON and
    text) and not in `score run --json`; the records keep the reference and name the variable instead."""
    project = fresh_project
    job = project.job("secretive", tracking__experiment="churn-${TEAM_TOKEN}")
    proc, summary = project.score_json("run", str(job), env={"TEAM_TOKEN": SECRET})
    assert proc.returncode == 0 and summary["status"] == "succeeded", proc.stderr[-3000:]

    client = MlflowClient(project.tracking_uri)
    run = client.get_run(summary["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == f"churn-{SECRET}"  # the value was used
    records = {
        "score run --json": json.dumps(summary),
        "MLflow params": json.dumps(run.data.params),
        "MLflow tags": json.dumps(run.data.tags),
        "MLflow datasets": json.dumps(
            [
                [d.dataset.name, d.dataset.source, d.dataset.digest, {t.key: t.value for t in d.tags}]
                for d in run.inputs.dataset_inputs
            ]
        ),
    }
    artifacts = Path(client.download_artifacts(summary["run_id"], "", str(tmp_path / "artifacts")))
    files = [f for f in artifacts.rglob("*") if f.is_file()]
    assert any(f.name == "resolved.yaml" for f in files)
    records.update({f"MLflow artifact {f.relative_to(artifacts)}": f.read_text(errors="replace") for f in files})
    log = sorted((Path(summary["table_uri"]) / "_delta_log").glob("*.json"))
    assert log
    records.update({f"Delta log {f.name}": f.read_text() for f in log})
    for args in (("lineage", "secretive", "--json"), ("lineage", "secretive")):
        shown = project.score(*args)
        assert shown.returncode == 0, shown.stderr[-3000:]
        records[f"score {' '.join(args)}"] = shown.stdout

    assert [name for name, text in records.items() if SECRET in text] == []
    spec = json.loads(records["score lineage secretive --json"])["runs"][0]["spec"]
    assert "experiment: churn-${TEAM_TOKEN}" in spec and "TEAM_TOKEN" in spec.splitlines()[0]
    assert "TEAM_TOKEN" in run.data.tags["score.spec_env"].split(",")


def test_untracked_files_do_not_mark_the_code_dirty(tmp_path):
    """Guards the recorded code version: an untracked file (a `score validate --report report.html` written
    into the project) marked every later run `-dirty`; only changes to tracked files may."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "jobs.py").write_text("x = 1\n")
    git("add", "jobs.py")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    (tmp_path / "report.html").write_text("<html></html>")
    assert code_version(tmp_path) == head
    (tmp_path / "jobs.py").write_text("x = 2\n")
    assert code_version(tmp_path) == f"{head}-dirty"
