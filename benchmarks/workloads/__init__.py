"""Reference workloads for `score bench`: each module generates data, a model and a job spec into a folder.

Every workload folder is a project of its own: `DIR/job.yaml` over `DIR/conf/defaults.yaml` (a copy of the
repository's), with paths relative to DIR, so `score run DIR/job.yaml` writes its table and MLflow store
under DIR, never into the repository's warehouse. Folders default to `data/bench/<workload>` (git-ignored).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def default_out(workload: str) -> Path:
    return REPO / "data" / "bench" / workload


def write_job(out: Path, job: dict, name: str = "job.yaml") -> Path:
    """Write `out/<name>` and `out/conf/defaults.yaml` (the repository's defaults): a self-contained project."""
    conf = out / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "conf" / "defaults.yaml", conf / "defaults.yaml")
    path = out / name
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path
