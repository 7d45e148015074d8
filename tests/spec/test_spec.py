"""Spec layering, overrides and environment references, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.errors import SpecError
from jobs.spec.load import load_spec


def test_layers_defaults_job_and_overrides(project):
    job = project.job("layers", scoring__batch_size=1234)
    loaded = load_spec(job, ["scoring.actors.max=3", "output.mode=append"], environ={})
    spec = loaded.spec
    assert spec.scoring.batch_size == 1234  # job file over defaults
    assert spec.scoring.actors.max == 3  # --set over job file
    assert spec.output.mode == "append"
    assert spec.scoring.gpus_per_actor == 0  # from conf/defaults.yaml
    assert spec.warehouse.uri == str(project.root / "warehouse")
    assert spec.tracking.uri == f"sqlite:///{project.root / '.score' / 'mlflow.db'}"
    assert spec.input.path == str(project.data)
    assert loaded.root == project.root


def test_environment_references_and_fallbacks(project):
    job = project.job("env", output__table="${TABLE_NAME:-fallback_table}")
    assert load_spec(job, environ={}).spec.output.table == "fallback_table"
    env = {"TABLE_NAME": "from_env", "SCORE_WAREHOUSE": "/srv/warehouse"}
    spec = load_spec(job, environ=env).spec
    assert spec.output.table == "from_env"
    assert spec.warehouse.uri == "/srv/warehouse"


def test_error_names_the_defaults_file_for_a_default(project, tmp_path):
    defaults = Path(project.root / "conf" / "defaults.yaml")
    original = defaults.read_text()
    try:
        defaults.write_text(original.replace("batch_size: 65536", "batch_size: -5"))
        with pytest.raises(SpecError) as err:
            load_spec(project.job("from_defaults", scoring={"actors": {"min": 1, "max": 1}}), environ={})
        assert err.value.file == str(defaults)
        assert err.value.key == "scoring.batch_size"
    finally:
        defaults.write_text(original)


def test_overwrite_partitions_needs_partition_by(project):
    with pytest.raises(SpecError) as err:
        load_spec(project.job("unpartitioned", output__partition_by=[]), environ={})
    assert "overwrite_partitions needs output.partition_by" in str(err.value)


def test_invalid_yaml_names_line(project):
    path = project.root / "conf" / "jobs" / "broken.yaml"
    path.write_text("name: x\ninput: [unclosed\n")
    with pytest.raises(SpecError) as err:
        load_spec(path, environ={})
    assert "not valid YAML (line" in str(err.value)


@pytest.mark.parametrize(
    "key, raw",
    [
        ("engine.progress_bars", "off"),
        ("engine.progress_bars", "on"),
        ("tracking.experiment", "yes"),
        ("tracking.experiment", "no"),
        ("tracking.experiment", "1_000"),
        ("tracking.experiment", "0755"),
        ("tracking.experiment", "2026-11-27"),
    ],
)
def test_set_reads_yaml_1_1_surprises_as_strings(project, key, raw):
    """Guards `--set` against YAML 1.1: off/on/yes/no were booleans, 1_000 and 0755 numbers (0755 octal
    493), 2026-11-27 a date, so a string key rejected them. Plain numbers must still be numbers."""
    loaded = load_spec(
        project.job("set_strings"),
        [f"{key}={raw}", "scoring.batch_size=8192", "contract.max_bad_fraction=0.25"],
        environ={},
    )
    section, name = key.split(".")
    assert getattr(getattr(loaded.spec, section), name) == raw
    assert loaded.spec.scoring.batch_size == 8192 and loaded.spec.contract.max_bad_fraction == 0.25


def test_job_file_reads_off_as_a_string(project):
    """Guards job files against YAML 1.1: an unquoted `progress_bars: off` was the boolean False and the
    spec was rejected; the file and `--set` read values alike."""
    job = project.job("bars_off")
    job.write_text(job.read_text() + "engine:\n  progress_bars: off\ntracking:\n  experiment: 2026-11-27\n")
    spec = load_spec(job, environ={}).spec
    assert spec.engine.progress_bars == "off"
    assert spec.tracking.experiment == "2026-11-27"


def test_recorded_spec_keeps_references_not_values(project):
    """Guards secrets: what runs record (`to_yaml`, logged to MLflow and the Delta log) is the spec as
    written, `${VAR}` kept, with the variables' names but never their values; URI user info is masked even
    when given literally. The hash still covers the resolved values, so a changed value changes the run key."""
    job = project.job("recorded", tracking__experiment="churn-${TEAM_TOKEN}")
    overrides = [
        "tracking.uri=https://scorer:${MLFLOW_TOKEN}@mlflow.example.com",
        "warehouse.uri=s3://AKIAEXAMPLE:literal-s3cr3t@bucket/warehouse",
    ]
    env = {"TEAM_TOKEN": "team-s3cr3t", "MLFLOW_TOKEN": "mlflow-s3cr3t"}
    loaded = load_spec(job, overrides, environ=env)
    assert loaded.spec.tracking.experiment == "churn-team-s3cr3t"
    assert loaded.spec.tracking.uri == "https://scorer:mlflow-s3cr3t@mlflow.example.com"

    recorded = loaded.to_yaml()
    assert "s3cr3t" not in recorded and "AKIAEXAMPLE" not in recorded
    assert "churn-${TEAM_TOKEN}" in recorded
    assert "https://***@mlflow.example.com" in recorded and "s3://***@bucket/warehouse" in recorded
    assert {"TEAM_TOKEN", "MLFLOW_TOKEN", "RAY_ADDRESS"} <= set(loaded.env_vars)
    header = recorded.splitlines()[0]
    assert header.startswith("#") and "TEAM_TOKEN" in header and "MLFLOW_TOKEN" in header

    other = load_spec(job, overrides, environ={**env, "TEAM_TOKEN": "another"})
    assert other.to_yaml() == recorded
    assert other.spec_hash != loaded.spec_hash
