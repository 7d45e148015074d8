"""Every mistake a user can make before data is read ends with exit code 2 and one message naming it.

These runs point RAY_ADDRESS at a port where nothing listens: had a run reached Ray, it would fail with a
connection error instead of the message asserted here, so each test also proves Ray was never contacted.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import DAYS

NO_RAY = {"RAY_ADDRESS": "127.0.0.1:9"}


def run_fails(project, job, *args):
    proc = project.score("run", str(job), *args, env=NO_RAY)
    assert proc.returncode == 2, f"rc={proc.returncode}\n{proc.stderr[-3000:]}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("score: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (project.warehouse / job.stem).exists(), "a failed plan must not create the table"
    return proc.stderr


def test_unknown_key_names_file_and_key(project):
    job = project.job("bad_key", scoring__batchsize=10)
    err = run_fails(project, job)
    assert f"{job}: scoring.batchsize: unknown key" in err


def test_wrong_type_names_file_and_key(project):
    job = project.job("bad_type", scoring__batch_size="lots")
    err = run_fails(project, job)
    assert f"{job}: scoring.batch_size:" in err and "integer" in err


def test_bad_override_names_set(project):
    err = run_fails(project, project.job("bad_set"), "--set", "scoring.actors.max=zero")
    assert "--set: scoring.actors.max:" in err


def test_missing_contract_file(project):
    job = project.job("no_contract", contract="data_contracts/nope.json")
    err = run_fails(project, job)
    assert f"{job}: contract: contract file not found:" in err and "nope.json" in err


def test_unset_environment_reference(project):
    job = project.job("env_ref", output__table="${SCORE_TABLE_FOR_TEST}")
    err = run_fails(project, job)
    assert "output.table: references unset environment variable SCORE_TABLE_FOR_TEST" in err


def test_missing_partition(project):
    err = run_fails(project, project.job("no_partition"), "--partitions", "ds=2026-12-25")
    assert "partition ds=2026-12-25 not found under" in err
    assert f"it holds {', '.join(f'ds={d.isoformat()}' for d in DAYS)}" in err


def test_empty_range(project):
    err = run_fails(project, project.job("no_range"), "--partitions", "ds=2027-01-01..2027-01-31")
    assert "no partition under" in err and "ds=2027-01-01..2027-01-31" in err


def test_missing_model_file(project):
    job = project.job("no_model", model__uri="models/churn/missing.onnx")
    err = run_fails(project, job)
    assert f"{job}: model.uri: model file not found:" in err and "missing.onnx" in err


def test_unreadable_model_file(project, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model")
    err = run_fails(project, project.job("garbage_model", model__uri=str(garbage)))
    assert f"{garbage} is not a loadable ONNX model" in err


def test_model_input_with_no_column(project):
    job = project.job("renamed_input", model__inputs={"tenure_months": "tenure"})
    err = run_fails(project, job)
    assert "model input 'tenure_months' needs column 'tenure'" in err


def test_model_input_of_wrong_type(project):
    job = project.job("text_into_float", model__inputs={"tenure_months": "region"})
    err = run_fails(project, job)
    assert "model input 'tenure_months' (float32) from column 'region'" in err and "text" in err


def test_unknown_model_output(project):
    job = project.job("bad_output", model__outputs={"scores": "churn_probability"})
    err = run_fails(project, job)
    assert "model.outputs names 'scores', which the model does not produce" in err


def test_registry_alias_that_does_not_exist(project):
    err = run_fails(project, project.job("no_alias", model__uri="models:/churn@nobody"))
    assert "model.uri models:/churn@nobody: not found in the registry" in err


@pytest.mark.parametrize("argv", [["run"], ["run", "x.yaml", "--bogus"], ["frobnicate"]])
def test_bad_usage_exits_2(project, argv):
    assert project.score(*argv).returncode == 2


def test_missing_job_file(project):
    proc = project.score("run", "conf/jobs/nope.yaml", "--json")
    assert proc.returncode == 2
    assert "conf/jobs/nope.yaml: job spec file not found" in proc.stderr
    assert '"exit_code": 2' in proc.stdout


def test_output_that_does_not_match_the_existing_table(project):
    import pyarrow as pa
    from deltalake import write_deltalake

    write_deltalake(
        str(project.root / "warehouse" / "clash"),
        pa.table({"customer_id": [1], "ds": ["2026-11-27"], "score": [0.5]}),
        partition_by=["ds"],
    )
    try:
        proc = project.score("run", str(project.job("clash")), env=NO_RAY)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "has columns ['customer_id', 'ds', 'score']" in proc.stderr
        assert "write to a new output.table or migrate the table" in proc.stderr
    finally:
        import shutil

        shutil.rmtree(project.warehouse / "clash")


def test_local_input_with_a_remote_cluster_is_refused_before_ray_is_joined(project):
    """Workers on other nodes cannot read this machine's disk: refused at plan time, and by `score submit`
    before it submits anything (the cluster test,
    tests/test_cluster.py, shows the same for the warehouse, and `shared: true` accepted)."""
    job = project.job("local_input")
    for command in ("run", "validate", "submit"):
        proc = project.score(command, str(job), env=NO_RAY)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert (
            f"score: error: {job}: input.path {project.data} is a local path, but the job runs on the Ray "
            "cluster at 127.0.0.1:9, whose worker nodes cannot see this machine's disk: use object storage "
            "(s3://bucket/prefix), or set input.shared: true if every node mounts this path"
        ) in proc.stderr


def test_ray_client_address_is_refused_with_what_to_use_instead(project):
    proc = project.score(
        "run",
        str(project.job("ray_client")),
        "--set",
        "input.shared=true",
        "--set",
        "warehouse.shared=true",
        env={"RAY_ADDRESS": "ray://127.0.0.1:9"},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        "score: error: engine.ray_address ray://127.0.0.1:9: Ray Client (ray://) is not supported (Ray advises "
        "its Jobs API for data and ML workloads): run the driver on a node of the cluster with "
        "RAY_ADDRESS=HEAD:6379, or use score submit"
    ) in proc.stderr


def test_submit_refuses_what_the_head_node_cannot_reach_before_submitting(project):
    """A submitted job's driver runs on the head node: a local MLflow store, artifact location or model file
    would be missing there. Each is refused by name before anything is submitted (no cluster at this address)."""
    job = project.job("submit_local")
    shared = ["--set", "input.shared=true", "--set", "warehouse.shared=true"]
    steps = [
        (
            [],
            f"tracking.uri sqlite:///{project.root / '.score' / 'mlflow.db'} is a local store, but a submitted "
            "job runs on the cluster's head node: set MLFLOW_TRACKING_URI to an MLflow server",
        ),
        (
            ["--set", "tracking.uri=http://127.0.0.1:9"],
            f"tracking.artifact_location {(project.root / '.score' / 'mlartifacts').as_uri()} is local",
        ),
        (
            ["--set", "tracking.uri=http://127.0.0.1:9", "--set", "tracking.artifact_location=s3://lake/mlflow"],
            f"model.uri {project.models / 'model.onnx'} is a file on this machine, which a submitted job's driver on "
            "the head node cannot read: register it (score register-model PATH --name NAME --alias ALIAS) and use "
            "models:/NAME@ALIAS",
        ),
    ]
    for extra, message in steps:
        proc = project.score("submit", str(job), "--address", "http://127.0.0.2:9", *shared, *extra)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert f"score: error: {job}: {message}" in proc.stderr


def test_unreachable_cluster_fails_fast_instead_of_retrying_for_ever(project):
    """Guards scheduled runs: `ray.init` retries an address where nothing listens without end."""
    proc = project.score(
        "run",
        str(project.job("no_cluster")),
        "--set",
        "input.shared=true",
        "--set",
        "warehouse.shared=true",
        env=NO_RAY,
    )
    assert proc.returncode == 75, proc.stderr[-3000:]  # retry-safe: nothing was read or written
    assert (
        "score: error: engine.ray_address 127.0.0.1:9: nothing answers at 127.0.0.1:9 (Connection refused): "
        "start it, or fix RAY_ADDRESS / engine.ray_address (HEAD:6379, the head's GCS port); nothing was scored "
        "or committed"
    ) in proc.stderr


# -- spec and CLI edges (issue 20) ------------------------------------------------------------------------


def test_an_input_path_that_is_a_file_is_one_line(project):
    """Guards: a NotADirectoryError traceback, exit 1."""
    err = run_fails(project, project.job("input_file"), "--set", "input.path=/etc/hostname")
    assert "score: error: --set: input.path: /etc/hostname is a file; give the folder of the input's partitions" in err


def test_a_key_written_twice_is_refused_naming_its_line(project):
    """Guards: PyYAML kept the last `name:` silently."""
    job = project.job("twice")
    lines = job.read_text().splitlines()
    job.write_text("\n".join([*lines, "name: twice_again", ""]))
    err = run_fails(project, job)
    first = next(n for n, line in enumerate(lines, 1) if line.startswith("name:"))
    assert (
        f"{job}: not valid YAML (line {len(lines) + 1}, column 1): key 'name' is written twice (first on line {first})"
        in err
    )


def test_a_bad_partition_by_names_the_file_that_set_it(project):
    """Guards: a partition_by of the job file was reported as coming from `--set`."""
    job = project.job("bad_partition_by", output={"table": "bad_partition_by", "partition_by": ["region"]})
    err = run_fails(project, job)
    assert f"score: error: {job}: output.partition_by: ['region'] must be among input.partitioning ['ds']" in err


@pytest.mark.parametrize("column", ["_reasons", "_source_file", "run_id", "scored_at", "customer_id", "ds"])
def test_an_output_on_a_taken_column_is_refused_at_plan_time(project, column):
    """Guards: `_reasons` as an output column failed at write time with an Arrow cast error."""
    job = project.job(f"taken_{column.strip('_')}", model__outputs={"label": column})
    err = run_fails(project, job)
    assert f"{job}: model.outputs: column name(s) ['{column}'] are taken" in err


def test_an_expectation_on_a_column_no_file_has_is_refused(project):
    """Guards: every row failed it ("column missing"), was quarantined, and the run succeeded."""
    suite = project.root / "data_contracts" / "customers.json"
    contract = json.loads(suite.read_text())
    contract["expectations"].append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "agee"}})
    typo = project.root / "data_contracts" / "typo.json"
    typo.write_text(json.dumps(contract))
    job = project.job("contract_typo", contract={"suite": "data_contracts/typo.json", "on_failure": "quarantine"})
    err = run_fails(project, job)
    index = len(contract["expectations"]) - 1
    assert (
        f"contract {typo}: expectations[{index}] 'expect_column_values_to_not_be_null' is on column 'agee', "
        "which no input file has"
    ) in err
