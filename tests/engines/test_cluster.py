"""The job on a real two-node Ray cluster, with input, warehouse and MLflow artifacts on a real S3 endpoint
and lineage in a real MLflow server: everything started here on loopback addresses (tests/servers.py).

The worker node is started with a stale copy of the `jobs` package first on its PYTHONPATH, as a node
with an older install would have: runs succeed only because the driver ships its own code, and a run
told not to ship it is refused.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from tests import servers
from tests.conftest import DAYS, REPO, ROWS_PER_DAY, Project
from tests.stages.test_quarantine import break_rows, reasons_by_id
from tests.test_end_to_end import onnx_scores

pytestmark = pytest.mark.cluster
BUCKET = "lake"
INPUT = f"s3://{BUCKET}/customers"
WAREHOUSE = f"s3://{BUCKET}/warehouse"
DRIFTED_ROWS = 5  # rows of a file in the oldest partition whose `age` column is a string


@dataclass
class Stack:
    s3: servers.S3
    mlflow: servers.MlflowServer
    cluster: servers.RayCluster
    project: Project
    source: pa.Table  # every input row, with its `ds`, as uploaded
    broken: dict[int, str]  # customer_id -> the contract reason it fails with

    def delta(self, table: str, version: int | None = None):
        from deltalake import DeltaTable

        return DeltaTable(
            f"{WAREHOUSE}/{table}",
            version=version,
            storage_options={
                "AWS_ALLOW_HTTP": "true",
                "AWS_ENDPOINT_URL": self.s3.endpoint,
                "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": self.s3.env["AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": self.s3.env["AWS_SECRET_ACCESS_KEY"],
            },
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory, models_dir):
    tmp = tmp_path_factory.mktemp("cluster")
    logs = tmp / "logs"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths have a length limit
    stale = tmp / "stale"
    shutil.copytree(REPO / "jobs", stale / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    with (stale / "jobs" / "__init__.py").open("a") as init:
        init.write("# an older release of this package, installed on the worker node\n")

    project = Project(tmp / "project", models_dir)
    broken = break_rows(project)
    source = pa.concat_tables(
        pq.read_table(project.data / f"ds={d.isoformat()}").append_column(
            "ds", pa.array([d.isoformat()] * ROWS_PER_DAY)
        )
        for d in DAYS
    )
    drifted = pq.read_table(project.data / f"ds={DAYS[0].isoformat()}" / "part-0.parquet").slice(0, DRIFTED_ROWS)
    drifted = drifted.set_column(0, "customer_id", pc.add(drifted.column("customer_id"), 10_000_000))
    drifted = drifted.set_column(drifted.schema.get_field_index("age"), "age", drifted.column("age").cast(pa.string()))
    pq.write_table(drifted, project.data / f"ds={DAYS[0].isoformat()}" / "part-2.parquet")
    try:
        with servers.s3_server(logs) as s3:
            s3.client().create_bucket(Bucket=BUCKET)
            pafs.copy_files(str(project.data), f"{BUCKET}/customers", destination_filesystem=s3.filesystem())
            shutil.rmtree(project.root / "data")  # the input now lives only in the bucket
            with (
                servers.mlflow_server(logs, tmp / "mlflow.db", s3.env) as mlflow,
                servers.ray_cluster(ray_tmp, logs, worker_env={"PYTHONPATH": str(stale)}) as cluster,
            ):
                project.env.update(
                    s3.env,
                    MLFLOW_TRACKING_URI=mlflow.uri,
                    SCORE_WAREHOUSE=WAREHOUSE,
                    SCORE_ARTIFACTS=f"s3://{BUCKET}/mlflow",
                    RAY_ADDRESS=cluster.address,
                    **cluster.env,
                )
                registered = project.score(
                    "register-model", str(models_dir / "model.onnx"), "--name", "churn", "--alias", "champion"
                )
                assert registered.returncode == 0, registered.stderr[-3000:]
                yield Stack(s3, mlflow, cluster, project, source, broken)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def cluster_job(stack: Stack, name: str, **changes) -> Path:
    return stack.project.job(
        name,
        **{
            "input__path": INPUT,
            "contract": {"suite": "data_contracts/customers.json", "on_failure": "quarantine", "max_bad_rows": 10},
            "model__uri": "models:/churn@champion",  # in the MLflow server's registry, its file in the bucket
            "scoring__resources": {"worker_node": 1},  # the scoring actors go to the worker node
            **changes,
        },
    )


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_job_on_cluster_with_s3_and_mlflow_server(stack):
    project, newest, older = stack.project, DAYS[-1].isoformat(), DAYS[-2].isoformat()
    job = cluster_job(stack, "churn_cluster")
    local_files = files_under(project.root)

    proc, summary = project.score_json("run", str(job), "--partitions", f"ds={newest}")
    assert proc.returncode == 0, proc.stderr[-5000:] + stack.cluster.logs()
    assert summary["status"] == "succeeded"
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (
        ROWS_PER_DAY,
        ROWS_PER_DAY - len(stack.broken),
        len(stack.broken),
    )
    assert summary["table_version"] == 0 and summary["quarantine_version"] == 0
    assert summary["table_uri"] == f"{WAREHOUSE}/churn_cluster"
    assert summary["tracking_uri"] == stack.mlflow.uri
    assert files_under(project.root) == local_files, "the run wrote files outside the bucket"

    # Scores equal the model called directly on the same rows.
    scored = stack.delta("churn_cluster").to_pyarrow_table().sort_by("customer_id")
    day = stack.source.filter(pc.equal(stack.source.column("ds"), newest))
    good = day.filter(pc.invert(pc.is_in(day.column("customer_id"), pa.array(list(stack.broken))))).sort_by(
        "customer_id"
    )
    label, probability = onnx_scores(project.models / "model.onnx", good)
    assert scored.column("customer_id").to_pylist() == good.column("customer_id").to_pylist()
    np.testing.assert_allclose(scored.column("churn_probability").to_numpy(), probability, rtol=1e-6, atol=1e-7)
    assert scored.column("churn_label").to_pylist() == label.tolist()

    # Failing rows are quarantined whole, read back from their S3 file, with its full URI.
    quarantine = stack.delta("churn_cluster__quarantine").to_pyarrow_table()
    assert reasons_by_id(quarantine) == stack.broken
    assert set(quarantine.column("_source_file").to_pylist()) == {f"{INPUT}/ds={newest}/part-0.parquet"}

    # Everything the run wrote is in the bucket: the tables, and the run's artifacts (contract report).
    keys = stack.s3.keys(BUCKET)
    assert any(k.startswith("warehouse/churn_cluster/ds=") and k.endswith(".parquet") for k in keys)
    run_id = summary["run_id"]
    artifacts = [k for k in keys if k.startswith("mlflow/") and f"/{run_id}/" in k]
    assert any(k.endswith("contract/report.json") for k in artifacts), artifacts

    # The scoring actors ran on the worker node (custom resource), with the driver's code.
    placed = _actor_nodes(stack, "ScoreBatches")
    assert placed and set(placed) == {servers.WORKER_IP}, placed

    # Lineage through the MLflow server.
    proc = project.score("lineage", "churn_cluster", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lineage = json.loads(proc.stdout)
    (run,) = lineage["runs"]
    assert run["run_id"] == run_id
    assert run["mlflow"]["uri"] == stack.mlflow.uri and run["mlflow"]["reachable"]
    assert run["mlflow"]["status"] == "FINISHED" and run["mlflow"]["table_version_tag"] == "0"
    assert run["mlflow"]["artifact_uri"].startswith(f"s3://{BUCKET}/mlflow/")
    from jobs.tracking.code_version import package_digest

    assert run["code_sha256"] == package_digest()
    assert (summary["model_uri"], run["model"]["resolved_uri"]) == ("models:/churn@champion", "models:/churn/1")
    assert [p["files"][0]["path"] for p in run["input"]["partitions"]] == [f"{INPUT}/ds={newest}/part-0.parquet"]

    # The contract alone, checked on the cluster, its report written to the bucket.
    proc = project.score(
        "validate",
        str(job),
        "--partitions",
        f"ds={newest}",
        "--json",
        "--report",
        f"s3://{BUCKET}/reports/contract.html",
    )
    assert proc.returncode == 3, proc.stderr[-3000:]  # validate fails on any failing row
    assert json.loads(proc.stdout)["rows_failed"] == len(stack.broken)
    assert "reports/contract.html" in stack.s3.keys(BUCKET, "reports/")

    # A second day, then the table commands against the S3 table.
    proc, second = project.score_json("run", str(job), "--partitions", f"ds={older}")
    assert proc.returncode == 0 and second["table_version"] == 1, proc.stderr[-3000:]
    proc = project.score(
        "query", "SELECT ds, count(*) AS n FROM churn_cluster GROUP BY ds ORDER BY ds", "--format", "json"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(r["ds"], r["n"]) for r in json.loads(proc.stdout)] == [
        (older, ROWS_PER_DAY),
        (newest, ROWS_PER_DAY - len(stack.broken)),
    ]
    proc = project.score("history", "churn_cluster", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [c["version"] for c in json.loads(proc.stdout)] == [1, 0]
    proc = project.score("freshness", "churn_cluster", "--max-age", "100000d", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads(proc.stdout)
    assert (fresh["fresh"], fresh["version"], fresh["partition"]) == (True, 1, f"ds={newest}")
    proc = project.score("rollback", "churn_cluster", "0", "--reason", "cluster test", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stack.delta("churn_cluster").version() == 2
    assert stack.delta("churn_cluster").to_pyarrow_table().num_rows == ROWS_PER_DAY - len(stack.broken)
    assert files_under(project.root) == local_files


def test_workers_running_other_code_are_refused(stack):
    """The worker node imports a stale `jobs` unless the driver ships its own: not shipping is refused."""
    job = cluster_job(stack, "churn_stale", engine__ship_code=False)
    proc, summary = stack.project.score_json("run", str(job), "--partitions", f"ds={DAYS[0].isoformat()}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"Ray node(s) {servers.WORKER_IP} run other code than this driver" in summary["error"]
    assert "engine.ship_code: true" in summary["error"]
    assert "churn_stale/" not in "\n".join(stack.s3.keys(BUCKET))


def test_local_warehouse_with_the_cluster_is_refused(stack):
    project = stack.project
    job = cluster_job(stack, "churn_local")
    proc, summary = project.score_json("run", str(job), env={"SCORE_WAREHOUSE": "warehouse"})
    assert proc.returncode == 2
    assert summary["error"] == (
        f"{job}: warehouse.uri {project.root / 'warehouse'} is a local path, but the job runs on the Ray cluster "
        f"at {stack.cluster.address}, whose worker nodes cannot see this machine's disk: use object storage "
        "(s3://bucket/prefix, e.g. SCORE_WAREHOUSE), or set warehouse.shared: true if every node mounts this path"
    )
    assert not (project.root / "warehouse").exists()

    # Declared shared (these nodes share this machine's disk, as NFS clients would), it runs.
    proc, summary = project.score_json(
        "run", str(job), "--set", "warehouse.shared=true", env={"SCORE_WAREHOUSE": "warehouse"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["table_uri"] == str(project.root / "warehouse" / "churn_local")
    assert summary["rows_scored"] == ROWS_PER_DAY - len(stack.broken)


def test_submit_runs_the_job_as_a_ray_job(stack):
    project = stack.project
    job = cluster_job(stack, "churn_submitted")
    proc, summary = project.score_json(
        "submit",
        str(job.relative_to(project.root)),
        "--address",
        stack.cluster.dashboard,
        "--partitions",
        f"ds={DAYS[0].isoformat()}",
        "--python",
        sys.executable,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert summary["status"] == "succeeded" and summary["table_version"] == 0
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (
        ROWS_PER_DAY + DRIFTED_ROWS,
        ROWS_PER_DAY,
        DRIFTED_ROWS,
    )
    assert summary["ray_job_id"]
    assert stack.delta("churn_submitted").to_pyarrow_table().num_rows == ROWS_PER_DAY
    # The drifted file was read from the bucket by the driver on the head node and quarantined whole.
    quarantine = stack.delta("churn_submitted__quarantine").to_pyarrow_table()
    assert set(reasons_by_id(quarantine).values()) == {"schema(age)=string (expected int64)"}
    assert set(quarantine.column("_source_file").to_pylist()) == {f"{INPUT}/ds={DAYS[0].isoformat()}/part-2.parquet"}
    assert stack.s3.env["AWS_SECRET_ACCESS_KEY"] not in proc.stdout + proc.stderr
    # Lineage names what the submitter had, not the head's temporary copy of the project.
    from jobs.tracking.code_version import code_version

    proc = project.score("lineage", "churn_submitted", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = json.loads(proc.stdout)["runs"]
    assert run["code_version"] == code_version()
    assert run["contract"]["path"] == "data_contracts/customers.json"
    # The job's own failure comes back as its exit code and summary.
    proc, summary = project.score_json(
        "submit",
        str(job.relative_to(project.root)),
        "--address",
        stack.cluster.dashboard,
        "--partitions",
        "ds=1999-01-01",
        "--python",
        sys.executable,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert summary["error"].startswith("partition ds=1999-01-01 not found under s3://lake/customers")
    assert summary["exit_code"] == 2 and summary["ray_job_id"]


def _actor_nodes(stack: Stack, class_part: str) -> list[str]:
    """The node IPs of the cluster's actors whose class name contains `class_part` (Ray's state API)."""
    code = (
        "import json, sys\n"
        "from ray.util.state import list_actors, list_nodes\n"
        f"address = {stack.cluster.dashboard!r}\n"
        "ips = {n.node_id: n.node_ip for n in list_nodes(address=address)}\n"
        "print(json.dumps([ips.get(a.node_id) for a in list_actors(address=address, detail=True, limit=1000)\n"
        f"                 if {class_part!r} in (a.class_name or '') + (a.repr_name or '')]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**stack.project.env}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)
