"""`make demo`: build the demo models, register the ONNX one, generate input, score it, show the result.

Runs from the project root; everything it writes is git-ignored (data/, warehouse/, .score/, model files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from jobs import synthetic
from jobs.errors import ScoreError

JOB = Path("conf/jobs/churn_daily.yaml")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rows-per-day", type=int, default=400_000)
    args = parser.parse_args()

    from jobs.models import register_model
    from jobs.run import run_job
    from jobs.spec import load_tracking
    from models.churn import build

    step(f"1/4 generating {args.days} daily partitions x {args.rows_per_day:,} customers")
    data = Path("data/customers")
    last_day = dt.date.today() - dt.timedelta(days=1)
    days = synthetic.days_ending(last_day, args.days)
    if all((data / f"ds={d.isoformat()}").is_dir() for d in days):
        print(f"    {data} already holds these days; delete it to regenerate")
    else:
        rows = synthetic.write_partitions(data, days, args.rows_per_day)
        print(f"    wrote {rows:,} rows under {data}")

    step("2/4 building the demo models (scikit-learn -> ONNX, torch -> TorchScript)")
    frame, labels = build.training_frame()
    onnx_path = build.build_onnx(Path("models/churn/model.onnx"), frame, labels)
    build.build_torchscript(Path("models/churn/model_torchscript.pt"), frame, labels)

    tracking = load_tracking()
    version = register_model(onnx_path, "churn", "champion", tracking)
    print(f"    registered {onnx_path} as models:/churn/{version} (alias @champion)")

    step(f"3/4 scoring every partition: score run {JOB} --partitions all")
    try:
        summary = run_job(JOB, partitions="all")
    except ScoreError as exc:
        print(f"score: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"    {summary.rows_scored:,} of {summary.rows_in:,} rows scored in {summary.duration_s:.1f}s "
          f"({summary.rows_per_s:,.0f} rows/s), model version {summary.model_version}")

    step("4/4 where things are")
    print(f"    table          {summary.table} version {summary.table_version}: {summary.table_uri}")
    print(f"    MLflow run     {summary.run_id} in {summary.tracking_uri}")
    print(f"                   (browse: mlflow ui --backend-store-uri {summary.tracking_uri})")
    print(f"    freshness      input watermark {summary.input_watermark}, lag {summary.freshness_lag_s:,.0f}s")
    print("    sample query   the 5 customers most likely to churn on the newest day (DuckDB over Delta):")
    print(sample_query(summary.table_uri, summary.partitions[-1].split("=", 1)[1]))
    return 0


def sample_query(table_uri: str, day: str) -> str:
    import duckdb
    from deltalake import DeltaTable

    con = duckdb.connect()
    con.register("churn_scores", DeltaTable(table_uri).to_pyarrow_dataset())
    result = con.sql(
        "SELECT customer_id, ds, round(churn_probability, 4) AS churn_probability, model_version "
        f"FROM churn_scores WHERE ds = '{day}' ORDER BY churn_probability DESC LIMIT 5"
    )
    return "\n".join("      " + line for line in str(result).splitlines())


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
