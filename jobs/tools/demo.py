"""`make demo`: build the demo models, register the ONNX one, generate input, score it, show the result.

Runs from the project root; everything it writes is git-ignored (data/, warehouse/, .score/, model files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from jobs.commands.console import Console, hush_libraries, settle_native_output
from jobs.commands.run import run_job
from jobs.errors import ScoreError
from jobs.spec.load import load_tracking
from jobs.tables import freshness
from jobs.tables.lineage import table_state
from jobs.tables.query import run_query
from jobs.tools import synthetic
from jobs.tracking.registry import register_model

JOB = Path("conf/jobs/churn_daily.yaml")
DEFECTS = 0.003  # share of one day's rows with a broken value: under the demo job's max_bad_fraction (1%)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rows-per-day", type=int, default=400_000)
    args = parser.parse_args()
    native = hush_libraries(verbose=False)  # the demo shows our lines, not Ray's or MLflow's
    code = _demo(args)
    settle_native_output(native, code)
    return code


def _demo(args: argparse.Namespace) -> int:
    """The demo's four steps; returns the exit code."""
    from models.churn import build  # this repository's model builders: a project folder, not part of the package

    step(f"1/4 generating {args.days} daily partitions x {args.rows_per_day:,} customers")
    data = Path("data/customers")
    last_day = dt.date.today() - dt.timedelta(days=1)
    days = synthetic.days_ending(last_day, args.days)
    if all((data / f"ds={d.isoformat()}").is_dir() for d in days):
        print(f"    {data} already holds these days; delete it to regenerate")
    else:
        dirty = days[-2]  # one day with a few broken rows: quarantine and the contract report show them
        rows = synthetic.write_partitions(data, days, args.rows_per_day, defects={dirty: DEFECTS})
        print(
            f"    wrote {rows:,} rows under {data}; {DEFECTS:.1%} of ds={dirty} carry realistic defects "
            "(the contract quarantines them)"
        )

    step("2/4 building the demo models (scikit-learn -> ONNX, torch -> TorchScript)")
    frame, labels = build.training_frame()
    onnx_path = build.build_onnx(Path("models/churn/model.onnx"), frame, labels)
    build.build_torchscript(Path("models/churn/model_torchscript.pt"), frame, labels)

    tracking = load_tracking()
    version = register_model(onnx_path, "churn", "champion", tracking)
    print(f"    registered {onnx_path} as models:/churn/{version} (alias @champion)")

    step(f"3/4 scoring what is not scored yet: score run {JOB}   (input.partitions: unscored)")
    try:
        summary = run_job(JOB, console=Console(sys.stdout))
    except ScoreError as exc:
        print(f"score: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if summary.status == "succeeded":
        print(
            f"    {summary.rows_scored:,} of {summary.rows_in:,} rows from {len(summary.partitions)} partition(s) "
            f"scored in {summary.duration_s:.1f}s ({summary.rows_per_s:,.0f} rows/s), model version "
            f"{summary.model_version}; {summary.rows_quarantined:,} quarantined by the contract:"
        )
        for key, failure in sorted((summary.contract or {}).get("failures", {}).items()):
            print(f"      {key}: {failure['rows']:,} rows, e.g. {', '.join(failure['examples'])}")
    else:
        print(f"    {summary.message}")

    step("4/4 where things are")
    print(where(summary.table, summary.table_uri, days[-1].isoformat()))
    return 0


def where(table: str, table_uri: str, day: str) -> str:
    """The table, its newest run, freshness and a sample query, as the table itself records them."""
    state = table_state(table_uri)
    run = state.runs[0]
    fresh = freshness.check(state, table, run.max_age or "26h", dt.datetime.now(dt.UTC))
    lines = [
        f"    table          {table} version {state.version}: {table_uri}",
        f"    newest run     {run.run_id} (model {run.model['resolved_uri']}) in {run.tracking['uri']}",
        f"                   (browse: mlflow ui --backend-store-uri {run.tracking['uri']})",
        f"    freshness      {fresh.message}",
        f"    lineage        score lineage {table}     history: score history {table}",
        f'    quarantine     score query "SELECT ds, _reasons FROM {table}__quarantine LIMIT 5"',
        "    sample query   the 5 customers most likely to churn on the newest day (DuckDB over Delta):",
        sample_query(table_uri, day),
    ]
    return "\n".join(lines)


def sample_query(table_uri: str, day: str) -> str:
    """What `score query` prints for the newest day's top five (the same sandboxed, crash-free reader)."""
    warehouse, table = table_uri.rstrip("/").rsplit("/", 1)
    result = run_query(
        "SELECT customer_id, ds, round(churn_probability, 4) AS churn_probability, model_version "
        f"FROM {table} WHERE ds = '{day}' ORDER BY churn_probability DESC LIMIT 5",
        warehouse,
    ).table
    return "\n".join("      " + line for line in str(result.to_pandas()).splitlines())


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
