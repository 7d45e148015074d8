"""Reference workload (1): the demo job (customer churn, contract on) at a chosen size.

The demo's data (`jobs.tools.synthetic`: 29 typed features, daily partitions), its scikit-learn model in ONNX
(`models.churn.build`) and its contract, as a self-contained folder; 2.8 M rows = 7 days x 400 k.
Contract off: `--set contract=null` on `score run` / `score bench`.

    python -m benchmarks.workloads.demo --rows 2800000 --out data/bench/demo
    score bench data/bench/demo/job.yaml --rows 2800000
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from pathlib import Path

from benchmarks.workloads import REPO, default_out, write_job
from jobs.tools import synthetic

ROWS, DAYS = 2_800_000, 7
LAST_DAY = dt.date(2026, 11, 27)
CONTRACT = "data_contracts/customers.json"


def job_spec() -> dict:
    """The demo job (conf/jobs/churn_daily.yaml) on a model file instead of the registry, over all partitions."""
    return {
        "name": "bench_demo",
        "input": {
            "path": "data",
            "partitioning": ["ds"],
            "partitions": "all",
            "id_column": synthetic.ID_COLUMN,
            "event_time_column": synthetic.EVENT_TIME_COLUMN,
        },
        "contract": {"suite": CONTRACT, "on_failure": "quarantine", "max_bad_fraction": 0.01},
        "model": {
            "uri": "model.onnx",
            "runtime": "onnx",
            "outputs": {"probabilities": [None, "churn_probability"], "label": "churn_label"},
        },
        "output": {"table": "bench_demo", "partition_by": ["ds"]},
    }


def generate(out: Path, rows: int = ROWS, days: int = DAYS) -> Path:
    """`rows` rows in `days` daily partitions, the model, the contract and the job spec under `out`."""
    from models.churn import build

    synthetic.write_partitions(out / "data", synthetic.days_ending(LAST_DAY, days), -(-rows // days))
    frame, labels = build.training_frame()
    build.build_onnx(out / "model.onnx", frame, labels)
    (out / CONTRACT).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / CONTRACT, out / CONTRACT)
    return write_job(out, job_spec())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS, help="in all, split evenly over --days (rounded up)")
    parser.add_argument("--days", type=int, default=DAYS)
    parser.add_argument("--out", type=Path, default=default_out("demo"))
    args = parser.parse_args()
    job = generate(args.out, args.rows, args.days)
    print(f"wrote {-(-args.rows // args.days) * args.days:,} rows in {args.days} daily partitions, the model and {job}")


if __name__ == "__main__":
    main()
