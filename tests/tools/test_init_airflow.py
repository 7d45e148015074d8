"""`score init --airflow`: the example Airflow DAG shipped in the package, written into a project or a DAGs folder."""

from __future__ import annotations

import io
import json
import sys

import pytest

from jobs.cli import job_commands
from jobs.cli.parser import build_parser
from jobs.errors import UsageError
from jobs.tools.init import DAG
from tests.conftest import REPO


def init(*argv: str) -> tuple[dict, str]:
    """`score init ARGV --json` through its handler: (the JSON it prints, what it says on stderr)."""
    args = build_parser().parse_args(["init", *argv, "--json"])
    args.stdout = io.StringIO()
    err = io.StringIO()
    saved, sys.stderr = sys.stderr, err
    try:
        assert job_commands.init(args) == 0
    finally:
        sys.stderr = saved
    return json.loads(args.stdout.getvalue()), err.getvalue()


def test_the_repository_keeps_one_copy_of_the_dag():
    """`dags/` is a link to the packaged DAG's folder (what the wheel ships), not a second copy."""
    assert (REPO / "dags").is_symlink() and (REPO / "dags" / DAG.name).resolve() == DAG.resolve()
    assert DAG.relative_to(REPO / "jobs").as_posix() == "starter/dags/score_daily.py"  # pyproject's package data


def test_init_airflow_writes_the_dag_into_the_new_project(tmp_path):
    created, said = init(str(tmp_path / "mine"), "--airflow", "--days", "1", "--rows-per-day", "50")
    dag = tmp_path / "mine" / "dags" / "score_daily.py"
    assert created["dag"] == str(dag) and "dags/score_daily.py" in created["files"]
    assert dag.read_bytes() == DAG.read_bytes()
    assert f"SCORE_PROJECT={tmp_path / 'mine'}" in said and "SCORE_JOB=conf/jobs/churn_daily.yaml" in said


def test_init_airflow_folder_writes_the_dag_alone_and_keeps_an_identical_copy(tmp_path):
    dags = tmp_path / "airflow" / "dags"
    created, said = init("--airflow", str(dags))
    assert created == {"dag": str(dags / "score_daily.py")} and sorted(dags.iterdir()) == [dags / "score_daily.py"]
    assert "SCORE_PROJECT=YOUR_PROJECT" in said
    assert init("--airflow", str(dags))[0] == created  # the same file again: kept


def test_init_airflow_refuses_to_replace_another_dag_before_writing_anything(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "score_daily.py").write_text("# someone's own DAG\n")
    with pytest.raises(UsageError, match=r"score_daily.py already exists and differs from this release's DAG"):
        init(str(tmp_path / "mine"), "--airflow", str(dags))
    assert not (tmp_path / "mine").exists()
    assert (dags / "score_daily.py").read_text() == "# someone's own DAG\n"


def test_init_without_a_folder_says_what_to_give():
    with pytest.raises(UsageError, match=r"give DIR \(a new or empty folder\), or --airflow DAGS_FOLDER"):
        init()
