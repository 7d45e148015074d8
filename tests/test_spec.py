"""Spec layering, overrides and environment references, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.errors import SpecError
from jobs.spec import load_spec


def test_layers_defaults_job_and_overrides(project):
    job = project.job("layers", scoring__batch_size=1234)
    loaded = load_spec(job, ["scoring.actors.max=3", "output.mode=append"], environ={})
    spec = loaded.spec
    assert spec.scoring.batch_size == 1234            # job file over defaults
    assert spec.scoring.actors.max == 3              # --set over job file
    assert spec.output.mode == "append"
    assert spec.scoring.gpus_per_actor == 0          # from conf/defaults.yaml
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
