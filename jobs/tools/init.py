"""`score init DIR`: a project of one's own that runs as it is.

The files come from `jobs/starter/` (installed with the package): shared settings (`conf/defaults.yaml`,
the same file this repository's own project uses), an example job, the contract, a small ONNX churn model
and a `.gitignore`. Sample input is generated next to them, ending yesterday, with a few broken rows in one
day, so the first `score run` has something to score, quarantine and report. With `--airflow`, the example
Airflow DAG (`jobs/starter/dags/score_daily.py`, the one copy there is) goes into the project's `dags/` or into
a DAGs folder.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import UsageError
from jobs.tools import synthetic

STARTER = Path(__file__).resolve().parents[1] / "starter"  # jobs/starter, installed with the package
DAG = STARTER / "dags" / "score_daily.py"  # written only on request (`--airflow`)
DEFECTS = 0.003  # share of one day's rows with a broken value (the example job quarantines up to 1%)


@dataclass(frozen=True)
class Created:
    root: Path
    files: list[str]  # relative to root
    rows: int
    days: list[dt.date]
    dag: Path | None = None  # the Airflow DAG written, if asked for


def init_project(
    folder: str | Path, days: int = 3, rows_per_day: int = 20_000, dags: str | Path | None = None
) -> Created:
    """Write the starter project into `folder` (new, or empty) and generate `days` days of sample input; with
    `dags` (the project's own `dags/`, or an Airflow DAGs folder), the example DAG there too."""
    root = Path(folder).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"score init {folder}: {root} is not an empty folder; give a new or empty one")
    if days < 1 or rows_per_day < 1:
        raise UsageError(f"score init: --days {days} --rows-per-day {rows_per_day}: give numbers above 0")
    if dags is not None:
        _dag_target(dags)  # refused before anything is written
    files = []
    for source in sorted(STARTER.rglob("*")):
        if not source.is_file() or "__pycache__" in source.parts or source.parent == DAG.parent:
            continue
        relative = source.relative_to(STARTER)
        target = root / (".gitignore" if relative.as_posix() == "gitignore" else relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files.append(target.relative_to(root).as_posix())
    sample_days = synthetic.days_ending(dt.date.today() - dt.timedelta(days=1), days)
    defects = {sample_days[len(sample_days) // 2]: DEFECTS}
    rows = synthetic.write_partitions(root / "data" / "customers", sample_days, rows_per_day, defects=defects)
    dag = install_dag(dags) if dags is not None else None
    if dag is not None and dag.is_relative_to(root):
        files.append(dag.relative_to(root).as_posix())
    return Created(root, files, rows, sample_days, dag)


def install_dag(folder: str | Path) -> Path:
    """Copy the example Airflow DAG into `folder`; a copy already there is kept if identical, else refused."""
    target = _dag_target(folder)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DAG, target)
    return target


def _dag_target(folder: str | Path) -> Path:
    target = Path(folder).resolve() / DAG.name
    if target.exists() and (not target.is_file() or target.read_bytes() != DAG.read_bytes()):
        raise UsageError(
            f"score init --airflow: {target} already exists and differs from this release's DAG ({DAG}); "
            "move it away or give another folder"
        )
    return target
