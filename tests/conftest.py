"""Shared fixtures: a throw-away project (conf, data, models, warehouse, MLflow) built from scratch.

Each CLI run starts its own embedded local Ray, exactly as `score run` does on a laptop.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from jobs.tools import synthetic

REPO = Path(__file__).resolve().parents[1]
# Every local Ray a test starts (in this process or in a `score` subprocess) listens on a loopback address of its
# own, never on the machine's network address; the loopback cluster of tests/servers.py uses 127.0.0.2 and .3.
os.environ.setdefault("SCORE_RAY_NODE_IP", "127.0.0.9")
LAST_DAY = dt.date(2026, 11, 27)
DAYS = synthetic.days_ending(LAST_DAY, 3)
ROWS_PER_DAY = 6_000


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    from models.churn import build

    out = tmp_path_factory.mktemp("models")
    frame, labels = build.training_frame(rows=4_000)
    build.build_onnx(out / "model.onnx", frame, labels)
    build.build_torchscript(out / "model_torchscript.pt", frame, labels)
    return out


class Project:
    """A project folder like the repo's, with its own data, warehouse and MLflow store."""

    def __init__(self, root: Path, models: Path) -> None:
        self.root = root
        self.models = models
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": "",
            "SCORE_WAREHOUSE": "",
            "RAY_ADDRESS": "",
            "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
        }
        (root / "conf" / "jobs").mkdir(parents=True)
        defaults = yaml.safe_load((REPO / "conf" / "defaults.yaml").read_text())
        defaults["engine"]["inline_max_rows"] = 0  # tests run on Ray unless they ask for the inline engine
        (root / "conf" / "defaults.yaml").write_text(yaml.safe_dump(defaults, sort_keys=False))
        shutil.copytree(REPO / "data_contracts", root / "data_contracts")
        self.data = root / "data" / "customers"
        self.rows = synthetic.write_partitions(self.data, DAYS, ROWS_PER_DAY, files_per_day=2)

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / '.score' / 'mlflow.db'}"

    def job(self, name: str = "churn", **changes) -> Path:
        """Write conf/jobs/<name>.yaml: the demo job with `changes` merged in (dotted keys allowed)."""
        spec = {
            "name": name,
            "input": {
                "path": "data/customers",
                "partitioning": ["ds"],
                "partitions": "latest",
                "id_column": "customer_id",
                "event_time_column": "updated_at",
            },
            "contract": "data_contracts/customers.json",
            "model": {
                "uri": str(self.models / "model.onnx"),
                "runtime": "onnx",
                "outputs": {"probabilities": [None, "churn_probability"], "label": "churn_label"},
            },
            "scoring": {"batch_size": 4096, "actors": {"min": 1, "max": 2}},
            "output": {"table": name, "partition_by": ["ds"]},
        }
        for key, value in changes.items():
            node = spec
            *parents, last = key.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            if value is _DELETE:
                node.pop(last, None)
            else:
                node[last] = value
        path = self.root / "conf" / "jobs" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def score(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run the real CLI in a subprocess, as a scheduler would."""
        return subprocess.run(
            [sys.executable, "-m", "jobs.cli", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=600,
        )

    def run(
        self, job: Path, partitions: str | None = None, overrides: tuple[str, ...] = (), **options
    ) -> tuple[int, dict]:
        """`run_job` in this process: Ray stays up between runs, so tests of run semantics are quicker.
        Returns the exit code the CLI would give and the summary it would print."""
        from dataclasses import asdict

        from jobs.commands.run import run_job
        from jobs.errors import ScoreError

        with self.environment():
            try:
                return 0, asdict(run_job(job, partitions=partitions, overrides=overrides, **options))
            except ScoreError as exc:
                return exc.exit_code, asdict(exc.summary)

    def validate(self, job: Path, partitions: str | None = None, overrides: tuple[str, ...] = ()) -> tuple[int, dict]:
        """`validate_job` in this process: the exit code the CLI would give and the contract report."""
        from jobs.commands.validate import validate_job
        from jobs.errors import ContractFailure

        with self.environment():
            try:
                return 0, validate_job(job, partitions=partitions, overrides=overrides)
            except ContractFailure as exc:
                return exc.exit_code, exc.report

    @contextmanager
    def environment(self):
        """This project's environment variables for an in-process run, restored afterwards."""
        saved = {k: os.environ.get(k) for k in _RUN_ENV}
        os.environ.update({k: self.env[k] for k in _RUN_ENV})
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def score_json(self, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
        proc = self.score(*args, "--json", env=env)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"stdout must hold one JSON object:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
        return proc, json.loads(lines[0])


_RUN_ENV = ("MLFLOW_TRACKING_URI", "SCORE_WAREHOUSE", "RAY_ADDRESS", "RAY_DATA_DISABLE_PROGRESS_BARS")
_DELETE = object()
DELETE = _DELETE


@pytest.fixture(scope="session")
def project(tmp_path_factory, models_dir) -> Project:
    return Project(tmp_path_factory.mktemp("project"), models_dir)


@pytest.fixture
def fresh_project(tmp_path, models_dir) -> Project:
    """A project of its own, for tests that change data or tables."""
    return Project(tmp_path / "project", models_dir)
