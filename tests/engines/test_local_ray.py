"""A Ray the user started on this machine (`ray start --head`), with little memory: the job joins it when asked
(`engine.ray_address: auto`) instead of starting its own, keeps its local paths, and checks a partition many
times bigger than what one check task may reserve there, in pieces, with the verdicts of the whole-partition
check (issue 22).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from benchmarks.workloads import mlp, write_job
from tests import servers

pytestmark = pytest.mark.slow  # about 2 minutes on 2 cores: `make test-slow`

IP = "127.0.0.4"
NODE_MEMORY = 100 * 2**20  # Ray's `memory` resource of the node: a check task may reserve at most half of it
ROWS = 1_600_000  # x (8-byte id + 32 float32 features): 218 MB uncompressed, over 4x what a check task may reserve
ROW_GROUP = 50_000
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # what the user exports (STACK-NOTES)
DUPLICATES = {10: 1_599_990, 700_000: 1_599_990}  # row -> the id it takes: one id three times, across pieces


@pytest.fixture(scope="module")
def users_ray():
    """`ray start --head` on a loopback address with 2 CPUs and NODE_MEMORY, as a user would start it; stopped
    by its process group. Yields (address, its temp dir)."""
    tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay short
    port = servers.free_port(IP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "SCORE_"))}
    env.update(AUTH)
    head = servers.start(
        "users-ray",
        [
            str(servers.BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--node-ip-address={IP}",
            f"--port={port}",
            "--num-cpus=2",
            f"--memory={NODE_MEMORY}",
            "--include-dashboard=false",
            f"--dashboard-agent-listen-port={servers.free_port(IP)}",
            f"--ray-client-server-port={servers.free_port(IP)}",
            f"--temp-dir={tmp}",
        ],
        tmp / "logs",
        env,
    )
    try:
        servers.wait_until(lambda: _listens(IP, port), "the user's Ray head", head)
        yield f"{IP}:{port}", tmp
    finally:
        head.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _listens(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _write_project(root: Path) -> Path:
    """One partition of ROWS rows in row groups of ROW_GROUP, the MLP, and a job with a contract."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal((ROWS, len(mlp.FEATURES)), dtype=np.float32)
    ids = np.arange(ROWS, dtype=np.int64)
    for row, value in DUPLICATES.items():
        ids[row] = value
    table = pa.table({"id": ids, **{name: values[:, i] for i, name in enumerate(mlp.FEATURES)}})
    (root / "data" / "part=0").mkdir(parents=True)
    pq.write_table(table, root / "data" / "part=0" / "part-0.parquet", row_group_size=ROW_GROUP)
    mlp.build_model(root / "model.onnx")
    (root / "contract.json").write_text(
        json.dumps(
            {
                "name": "features",
                "expectations": [
                    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
                    # beyond 4 sigma: ~100 rows, within mostly; beyond 3 sigma: ~4,300 rows, not within it
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "f00", "min_value": -4, "max_value": 4, "mostly": 0.9999},
                    },
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "f01", "min_value": -3, "max_value": 3, "mostly": 0.999},
                    },
                ],
            }
        )
    )
    spec = mlp.job_spec()
    spec["contract"] = {"suite": "contract.json", "on_failure": "quarantine", "max_bad_fraction": 1.0}
    spec["engine"] = {"ray_address": "auto", "progress_bars": "off"}
    return write_job(root, spec)


def test_a_big_partition_on_the_users_small_ray(users_ray, tmp_path):
    address, ray_tmp = users_ray
    job = _write_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "SCORE_"))}
    env.update(AUTH, RAY_ADDRESS=address, RAY_DATA_DISABLE_PROGRESS_BARS="1")  # `auto` finds it by RAY_ADDRESS
    workers_before = set((ray_tmp / "session_latest" / "logs").glob("worker-*"))
    results = {}
    for piece_mb in (0, 16):  # 0: each partition checked whole, in one task
        proc = subprocess.run(
            [sys.executable, "-m", "jobs.cli", "run", str(job), "--json", "--force"]
            + ["--set", f"engine.piece_bytes={piece_mb * 2**20}", "--set", f"output.table=t{piece_mb}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["engine"] == "ray" and summary["rows_in"] == ROWS
        quarantined = DeltaTable(str(tmp_path / "warehouse" / f"t{piece_mb}__quarantine")).to_pyarrow_table()
        reasons = sorted(
            (row["id"], json.dumps(row["_reasons"], sort_keys=True))
            for row in quarantined.select(["id", "_reasons"]).to_pylist()
        )
        results[piece_mb] = (summary["rows_scored"], summary["rows_quarantined"], reasons)
        assert "tally" in summary["busy_seconds"] if piece_mb else "tally" not in summary["busy_seconds"]

    # the job ran on the user's Ray (its workers log there), with the local warehouse and input
    assert set((ray_tmp / "session_latest" / "logs").glob("worker-*")) - workers_before
    scored, quarantined, reasons = results[0]
    duplicated = [row for row, reason in reasons if "unique" in reason]
    assert sorted(duplicated) == [1_599_990] * 3
    assert not any('"f00"' in reason for _, reason in reasons)  # within mostly
    assert 3_000 < sum('"f01"' in reason for _, reason in reasons) < 6_000
    assert scored + quarantined == ROWS
    assert results[16] == results[0]

    # what one check task may reserve there: half the node's memory; the partition is over 4x that, and each
    # piece of 16 MiB (two row groups) fits in it with its batches
    data_bytes = sum(
        pq.read_metadata(tmp_path / "data" / "part=0" / "part-0.parquet").row_group(i).total_byte_size
        for i in range(ROWS // ROW_GROUP)
    )
    assert data_bytes >= 4 * NODE_MEMORY // 2
