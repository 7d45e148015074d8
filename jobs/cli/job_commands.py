"""What `score run | init | plan | submit | validate | bench | register-model | promote` print: each command's
handler calls the function that does the work (`jobs.commands`, `jobs.tools`, `jobs.tracking.registry`) and shows
its result, on stderr for a person and, with `--json`, as one JSON object on stdout (`args.stdout`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs.commands.console import Console, versions_text
from jobs.commands.display import summary_rows
from jobs.commands.plan import format_preview, preview
from jobs.commands.run import run_job
from jobs.contracts.reports import to_html
from jobs.errors import ContractFailure, UsageError
from jobs.plan.plan import NothingToScore
from jobs.spec.durations import parse_duration
from jobs.spec.load import load_tracking
from jobs.storage import write_text
from jobs.tools.bench import DEFAULT_ROWS, bench_job, format_report
from jobs.tools.init import init_project, install_dag
from jobs.tracking.registry import promote_model
from jobs.tracking.registry import register_model as register


def run(args: argparse.Namespace) -> int:
    console = Console(sys.stderr)
    if args.table and args.limit is None:
        raise UsageError(
            "--table goes with --limit N (a sample); to score a whole run elsewhere, --set output.table=NAME"
        )
    wait = None
    if args.wait_for_partitions is not None:
        if args.limit is not None:
            raise UsageError("--wait-for-partitions is for scheduled runs; leave it out with --limit N (a sample)")
        try:
            wait = parse_duration(args.wait_for_partitions)
        except ValueError as exc:
            raise UsageError(f"--wait-for-partitions: {exc}") from None
    summary = run_job(
        args.job,
        partitions=args.partitions,
        overrides=args.overrides,
        run_key=args.run_key,
        force=args.force,
        console=console,
        limit=args.limit,
        table=args.table,
        lock=args.lock,
        wait_for_partitions=wait,
    )
    if args.json:
        print(summary.to_json(), file=args.stdout, flush=True)
    if summary.status != "succeeded":
        console.say(f"{summary.job}: {summary.status}: {summary.message}")
        return 0
    console.say(f"{summary.job}: {summary.status}")
    console.table(summary_rows(summary))
    return 0


def init(args: argparse.Namespace) -> int:
    dags = args.airflow if isinstance(args.airflow, str) else None
    if args.dir is None:
        if dags is None:
            raise UsageError("score init: give DIR (a new or empty folder), or --airflow DAGS_FOLDER for the DAG alone")
        dag = install_dag(dags)
        if args.json:
            print(json.dumps({"dag": str(dag)}), file=args.stdout, flush=True)
        print(_dag_next(dag, None), file=sys.stderr)
        return 0
    if args.airflow is True:
        dags = f"{args.dir}/dags"
    created = init_project(args.dir, days=args.days, rows_per_day=args.rows_per_day, dags=dags)
    if args.json:
        print(
            json.dumps(
                {
                    "root": str(created.root),
                    "files": created.files,
                    "rows": created.rows,
                    "days": [d.isoformat() for d in created.days],
                    **({"dag": str(created.dag)} if created.dag else {}),
                }
            ),
            file=args.stdout,
            flush=True,
        )
    first, last = created.days[0].isoformat(), created.days[-1].isoformat()
    print(
        f"score: created {created.root}: {', '.join(created.files)}\n"
        f"score: sample input data/customers: {created.rows:,} rows, ds={first} .. ds={last} (a few broken rows "
        "in one day, for the contract to catch)\n"
        f"next:\n  cd {args.dir}\n  score plan conf/jobs/churn_daily.yaml\n  score run conf/jobs/churn_daily.yaml\n"
        '  score query "SELECT ds, count(*) AS customers, avg(churn_probability) AS mean FROM churn_scores '
        'GROUP BY ds ORDER BY ds"' + (f"\n{_dag_next(created.dag, created.root)}" if created.dag else ""),
        file=sys.stderr,
    )
    return 0


def _dag_next(dag: Path, project: Path | None) -> str:
    """What to set once `score init --airflow` wrote the DAG (its docstring lists every setting)."""
    console_script = Path(sys.executable).with_name("score")
    score_bin = str(console_script) if console_script.exists() else f"{sys.executable} -m jobs.cli"
    return (
        f"score: wrote {dag}, the example Airflow DAG: Airflow reads it from its DAGs folder (copy or link it "
        f"there); set, as Airflow Variables or worker environment variables, SCORE_BIN={score_bin} "
        f"SCORE_PROJECT={project or 'YOUR_PROJECT'} SCORE_JOB=conf/jobs/churn_daily.yaml"
    )


def plan(args: argparse.Namespace) -> int:
    result = preview(args.job, partitions=args.partitions, overrides=args.overrides, run_key=args.run_key)
    if args.json:
        print(json.dumps(result), file=args.stdout, flush=True)
    else:
        print(format_preview(result), file=args.stdout, flush=True)
    return 0


def submit(args: argparse.Namespace) -> int:
    from jobs.commands.submit import submit_job  # it imports Ray's job client (1.0 s): only `score submit` pays

    done = submit_job(
        args.job,
        args.address,
        partitions=args.partitions,
        overrides=args.overrides,
        run_key=args.run_key,
        force=args.force,
        python=args.python,
    )
    summary = done.summary
    if args.json:
        print(json.dumps(summary), file=args.stdout, flush=True)
    outcome = (
        summary.get("error")
        or (summary["status"] != "succeeded" and summary.get("message"))
        or (
            f"{summary.get('rows_scored')}/{summary.get('rows_in')} rows scored -> {summary.get('table')} "
            f"{versions_text(summary.get('table_versions') or [summary.get('table_version')])}"
        )
    )
    print(
        f"score: Ray job {done.ray_job_id} {done.status.lower()} (exit {done.exit_code}): {summary['status']}: "
        f"{outcome}",
        file=sys.stderr,
    )
    return done.exit_code


def validate(args: argparse.Namespace) -> int:
    from jobs.commands.validate import validate_job  # it imports Ray (0.8 s): only `score validate` pays for it

    try:
        report = validate_job(args.job, partitions=args.partitions, overrides=args.overrides)
        error = None
    except ContractFailure as exc:
        report, error = exc.report, exc
    except NothingToScore as nothing:
        print(f"score: {nothing} (choose partitions with --partitions to validate them anyway)", file=sys.stderr)
        return 0
    if args.report:
        write_text(args.report, to_html(report))
    if args.json:
        print(json.dumps(report), file=args.stdout, flush=True)
    for entry in report["expectations"]:
        if entry["rows_failed"]:
            print(
                f"  FAIL {entry['expectation']}({entry['column']}): {entry['rows_failed']} of "
                f"{entry['rows_checked']} rows, e.g. {', '.join(entry['examples'])}",
                file=sys.stderr,
            )
    print(
        f"score: {report['job']}: {report['rows_checked'] - report['rows_failed']} of {report['rows_checked']} "
        f"rows pass contract {report['contract']} in {report['partitions']}",
        file=sys.stderr,
    )
    if error:
        print(f"score: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


def bench(args: argparse.Namespace) -> int:
    report = bench_job(
        args.job,
        rows=DEFAULT_ROWS if args.rows is None else args.rows,
        repeat=args.repeat,
        partitions=args.partitions,
        overrides=args.overrides,
    )
    if args.json:
        print(json.dumps(report), file=args.stdout, flush=True)
    else:
        print(format_report(report), file=args.stdout, flush=True)
    return 0


def register_model(args: argparse.Namespace) -> int:
    tracking = load_tracking()
    version = register(args.path, args.name, args.alias, tracking)
    alias = f" as @{args.alias}" if args.alias else ""
    if args.json:
        print(
            json.dumps(
                {
                    "name": args.name,
                    "version": version,
                    "alias": args.alias,
                    "path": args.path,
                    "model_uri": f"models:/{args.name}/{version}",
                    "tracking_uri": tracking.uri,
                }
            ),
            file=args.stdout,
            flush=True,
        )
    print(f"registered {args.path} as models:/{args.name}/{version}{alias} in {tracking.uri}", file=sys.stderr)
    return 0


def promote(args: argparse.Namespace) -> int:
    tracking = load_tracking()
    done = promote_model(args.name, args.from_alias, args.to_alias, args.reason, tracking)
    if args.json:
        print(json.dumps(done), file=args.stdout, flush=True)
    previous = done["previous_version"]
    was = "newly set" if previous is None else "unchanged" if previous == done["version"] else f"was version {previous}"
    print(
        f"promoted models:/{args.name}/{done['version']} from @{args.from_alias} to @{args.to_alias} ({was}) "
        f"by {done['by']}: {args.reason}",
        file=sys.stderr,
    )
    return 0
