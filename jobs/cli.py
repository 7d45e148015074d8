"""`score`: the command line. Thin: parse, call `jobs.run`, print, exit with the documented code.

Exit codes: 0 success, 1 runtime failure, 2 bad spec or usage, 3 data contract failure, 4 stale table,
75 retry-safe failure (lost a race to another run of the same partitions; nothing committed), 130 interrupted
(Ctrl-C or SIGTERM; nothing committed).
`run` and `validate` report on stderr and keep stdout for `--json` (one JSON object, nothing else); the
table commands print their result (a table, CSV or JSON) on stdout. Errors always go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from jobs.console import hush_libraries, settle_native_output, versions_text
from jobs.errors import EXIT_INTERRUPTED, ScoreError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    native = hush_libraries(args.verbose, divert=args.command in QUIETED)
    args.stdout = _reserve_stdout()
    signal.signal(signal.SIGTERM, _terminate)
    code = _handle(args)
    settle_native_output(native, code)
    if code == EXIT_INTERRUPTED:
        _leave_now(code, args.stdout)
    return code


# Commands whose libraries' native stderr is kept off the terminal unless -v: those that run a job's stages.
# (`bench` is a diagnostic and keeps everything, faulthandler stacks of crashed runtimes included.)
QUIETED = {"run", "validate", "plan", "init"}


def _handle(args: argparse.Namespace) -> int:
    """Run the command; every failure ends in one line on stderr (a traceback too for a bug) and, under
    `run --json`, one JSON object on stdout."""
    import traceback

    try:
        return args.handler(args)
    except ScoreError as exc:
        _print_failure(args, exc, exc.exit_code, str(exc))
        if args.verbose and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"score: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug or an environment failure: the traceback is for whoever fixes it
        traceback.print_exc(file=sys.stderr)
        _print_failure(args, exc, 1, f"{type(exc).__name__}: {exc}")
        print(f"score: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM from a scheduler: the run cleaned up on its way out
        committed = getattr(getattr(exc, "summary", None), "table_versions", None)
        why = str(exc) if str(exc).startswith("interrupted") else (
            f"interrupted; committed {versions_text(committed)} before it, nothing after"
            if committed else "interrupted; nothing committed")
        _print_failure(args, exc, EXIT_INTERRUPTED, why)
        print(f"score: {why}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _leave_now(code: int, stdout) -> None:
    """Exit an interrupted run (cleaned up, summary printed): stop Ray here, then exit without Python's exit
    hooks, which after SIGTERM aborted the process (SIGABRT) instead of exiting with 130."""
    for stream in (stdout, sys.stdout, sys.stderr):
        stream.flush()
    if "ray" in sys.modules:
        import ray

        ray.shutdown()  # a local Ray's processes (its agents too), or this driver's job on a cluster
    os._exit(code)


def _terminate(signum, frame) -> None:
    """SIGTERM (Airflow, Kubernetes) ends the run like Ctrl-C: uncommitted files are removed on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def _print_failure(args: argparse.Namespace, exc: Exception, exit_code: int, error: str) -> None:
    """The failed run's summary as the one JSON object `--json` promises (run and validate print theirs)."""
    if not getattr(args, "json", False) or args.command not in ("run", "validate", "submit", "plan"):
        return
    from jobs.run import RunSummary

    summary = getattr(exc, "summary", None) or RunSummary(status="failed", job=str(getattr(args, "job", "")))
    summary.exit_code, summary.error = exit_code, error
    print(summary.to_json(), file=args.stdout, flush=True)


def _reserve_stdout():
    """Keep stdout for the one JSON object (or the table a table command prints): from here until the
    process exits, everything else written to file descriptor 1 goes to stderr. Ray relays worker output
    and raylet warnings to the driver's stdout at any moment up to its exit (from Python and from C++),
    so the redirect is never undone. Returns a file on the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(saved, "w")


def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("score-jobs")
    except PackageNotFoundError:  # run from a checkout that was never installed
        release = "unknown (not installed)"
    parser = argparse.ArgumentParser(prog="score", description="Large-batch offline scoring on Ray.")
    parser.add_argument("--version", action="version", version=f"score {release}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="our logs, plus Ray's and its workers' output and Ray Data's operator bars")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    # The same two options after the command (`score run JOB -v --json`): they only set, never reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object on stdout")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    run = command("run", "score input partitions into a new table version")
    run.add_argument("job", help="job spec, e.g. conf/jobs/churn_daily.yaml")
    run.add_argument("--partitions", "-p",
                     help="latest | all | unscored | ds=V | ds=V1,V2 | ds=LOW..HIGH (unscored,ds=A..B: within)")
    run.add_argument("--run-key", help="the logical run, e.g. Airflow's run id: once committed, a retry is a no-op "
                     "(default: derived from job, spec, input files, model and contract)")
    run.add_argument("--force", action="store_true", help="run even if the run key already committed")
    run.add_argument("--lock", action="store_true", help="refuse to start (exit 75) while another run of this job "
                     "holds its lock on this host: for cron (a killed run never leaves it locked)")
    run.add_argument("--limit", type=int, metavar="N", help="score only a sample: the first N rows of the selected "
                     "partitions, shared among them (an ad-hoc check; needs --table)")
    run.add_argument("--table", help="with --limit: the table the sample is scored into (not the job's own)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec key, e.g. --set scoring.batch_size=8192 (repeatable)")
    run.set_defaults(handler=_run)

    init = command("init", "create a new project (conf, an example job, contract, model, sample data) in DIR")
    init.add_argument("dir", help="a new or empty folder")
    init.add_argument("--days", type=int, default=3, help="days of sample input to generate (default %(default)s)")
    init.add_argument("--rows-per-day", type=int, default=20_000, metavar="N",
                      help="sample customers per day (default %(default)s)")
    init.set_defaults(handler=_init)

    plan = command("plan", "show what `score run` would do (partitions, files, model, contract, run key, "
                   "replaced rows, actors) without doing it")
    plan.add_argument("job", help="job spec, e.g. conf/jobs/churn_daily.yaml")
    plan.add_argument("--partitions", "-p", help="as for run")
    plan.add_argument("--run-key", help="as for run")
    plan.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="as for run")
    plan.set_defaults(handler=_plan)

    submit = command("submit", "run a job as a Ray Job on a cluster, follow it, exit with its code")
    submit.add_argument("job", help="job spec inside this project, e.g. conf/jobs/churn_daily.yaml")
    submit.add_argument("--address", help="the cluster's Ray Jobs API, e.g. http://head:8265 "
                        "(default: RAY_API_SERVER_ADDRESS or RAY_ADDRESS)")
    submit.add_argument("--python", default="python",
                        help="the interpreter on the head node with this project's dependencies (default: %(default)s)")
    submit.add_argument("--partitions", "-p", help="as for run")
    submit.add_argument("--run-key", help="as for run")
    submit.add_argument("--force", action="store_true", help="as for run")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="as for run")
    submit.set_defaults(handler=_submit)

    validate = command("validate", "check input partitions against the job's contract only")
    validate.add_argument("job")
    validate.add_argument("--partitions", "-p", help="as for run")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    validate.add_argument("--report", metavar="PATH.html",
                          help="also write the report as an HTML page (a local path or an s3:// URI)")
    validate.set_defaults(handler=_validate)

    bench = command("bench", "measure a job on a sample against the bare loop; recommend settings")
    bench.add_argument("job", help="job spec, e.g. conf/jobs/churn_daily.yaml")
    bench.add_argument("--rows", type=int, default=None, metavar="N",
                       help="sample size: the first N rows of the selected partitions (default 500000)")
    bench.add_argument("--repeat", type=int, default=3, metavar="R", help="interleaved repeats; medians (default 3)")
    bench.add_argument("--partitions", "-p", help="as for run (default: the job's input.partitions; unscored: all)")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="as for run")
    bench.set_defaults(handler=_bench)

    register = command("register-model", "register a model file in the MLflow registry")
    register.add_argument("path", help="a .onnx, .pt (TorchScript) or .pt2 (torch.export) file")
    register.add_argument("--name", required=True)
    register.add_argument("--alias", help="e.g. champion")
    register.set_defaults(handler=_register)

    def table_command(name: str, help: str, handler) -> argparse.ArgumentParser:
        sub = command(name, help)
        sub.add_argument("--warehouse", help="warehouse folder or URI (default: warehouse.uri of conf/defaults.yaml)")
        sub.set_defaults(handler=handler)
        return sub

    table_command("tables", "list the tables in the warehouse with version, rows and freshness", _tables)
    history = table_command("history", "list a table's versions: run, time, job, model, partitions, rows", _history)
    history.add_argument("table", help="a table name in the warehouse, or a table path or URI")
    history.add_argument("--limit", type=int, help="only the newest N versions")
    history.add_argument("--plot", metavar="PATH.png", help="also write a picture of rows and mean score per version")
    history.add_argument("--column", help="the score column --plot shows (default: the table's first float column)")
    query = table_command("query", "run one read-only SQL SELECT over the tables, by name", _query)
    query.add_argument("sql", help='e.g. "SELECT ds, count(*) FROM churn_scores GROUP BY ds"')
    query.add_argument("--version", action="append", default=[], metavar="N|TABLE=N",
                       help="read a table as of a version (TABLE=N when the query reads several; repeatable)")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    query.add_argument("--max-rows", type=int, default=10_000, metavar="N",
                       help="print at most the first N rows, in every format, with a note on stderr when the result "
                       "has more (default %(default)s; 0: no limit, the whole result is held in memory)")
    rollback = table_command("rollback", "restore an earlier version as a new version, recording why", _rollback)
    rollback.add_argument("table")
    rollback.add_argument("version", type=int)
    rollback.add_argument("--reason", required=True, help="recorded in the table's history")
    vacuum = table_command("vacuum", "delete files no version within the retention period needs", _vacuum)
    vacuum.add_argument("table")
    vacuum.add_argument("--retention", help="e.g. 240h or 30d; never shorter than the table promises (default 7d)")
    vacuum.add_argument("--dry-run", action="store_true", help="list the files without deleting them")
    optimize = table_command("optimize", "compact small files into fewer, larger ones (same rows, one new version)",
                             _optimize)
    optimize.add_argument("table")
    optimize.add_argument("--target-size", type=float, metavar="MB",
                          help="target file size in MB (default: 128, as output.target_file_mb)")
    lineage = table_command("lineage", "where a table version's rows came from: inputs, model, contract, code, run",
                            _lineage)
    lineage.add_argument("table")
    lineage.add_argument("--version", type=int, help="a table version (default: the latest)")
    freshness = table_command("freshness", "exit 0 when the newest partition is younger than --max-age, 4 when not",
                              _freshness)
    freshness.add_argument("table")
    freshness.add_argument("--max-age", help="e.g. 26h (default: output.max_age of the job that wrote the table)")
    freshness.add_argument("--now", help="judge as of this ISO time instead of the clock (backfills, tests)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from jobs.console import Console
    from jobs.run import run_job

    console = Console(sys.stderr)
    if args.table and args.limit is None:
        from jobs.errors import UsageError

        raise UsageError("--table goes with --limit N (a sample); to score a whole run elsewhere, "
                         "--set output.table=NAME")
    summary = run_job(args.job, partitions=args.partitions, overrides=args.overrides, run_key=args.run_key,
                      force=args.force, console=console, limit=args.limit, table=args.table, lock=args.lock)
    if args.json:
        print(summary.to_json(), file=args.stdout, flush=True)
    if summary.status != "succeeded":
        console.say(f"{summary.job}: {summary.status}: {summary.message}")
        return 0
    console.say(f"{summary.job}: {summary.status}")
    failures = sorted((summary.contract or {}).get("failures", {}).items(), key=lambda kv: -kv[1]["rows"])
    console.table(_summary_rows(summary) + [
        ("" if n else "contract", f"{key}: {failure['rows']:,} rows, e.g. {', '.join(failure['examples'])}")
        for n, (key, failure) in enumerate(failures)])
    return 0


def _summary_rows(summary) -> list[tuple[str, str]]:
    """The end-of-run summary: what was scored, with what, into which version, how fast."""
    rows = f"{summary.rows_in:,} in, {summary.rows_scored:,} scored"
    if summary.rows_quarantined:
        rows += f", {summary.rows_quarantined:,} quarantined"
        if summary.quarantine_version is not None:
            rows += f" ({summary.table}__quarantine v{summary.quarantine_version})"
    span = summary.partitions[0] if len(summary.partitions) == 1 else (
        f"{summary.partitions[0]} .. {summary.partitions[-1]} ({len(summary.partitions)})")
    return [
        ("partitions", span),
        ("rows", rows),
        ("model", f"{summary.model_uri} (sha256 {summary.model_sha256[:12]})"
         if summary.model_version.startswith("sha256:") else  # a file, not a registered version
         f"{summary.model_uri} = version {summary.model_version} (sha256 {summary.model_sha256[:12]})"),
        ("table", f"{summary.table} {versions_text(summary.table_versions)}"),
        ("MLflow run", f"{summary.run_id} ({summary.tracking_uri})"),
        ("time", f"{summary.duration_s:.1f} s, {summary.rows_per_s:,.0f} rows/s ({summary.engine})"),
    ]


def _init(args: argparse.Namespace) -> int:
    from jobs.scaffold import init_project

    created = init_project(args.dir, days=args.days, rows_per_day=args.rows_per_day)
    if args.json:
        print(json.dumps({"root": str(created.root), "files": created.files, "rows": created.rows,
                          "days": [d.isoformat() for d in created.days]}), file=args.stdout, flush=True)
    first, last = created.days[0].isoformat(), created.days[-1].isoformat()
    print(f"score: created {created.root}: {', '.join(created.files)}\n"
          f"score: sample input data/customers: {created.rows:,} rows, ds={first} .. ds={last} (a few broken rows "
          "in one day, for the contract to catch)\n"
          f"next:\n  cd {args.dir}\n  score plan conf/jobs/churn_daily.yaml\n  score run conf/jobs/churn_daily.yaml\n"
          '  score query "SELECT ds, count(*) AS customers, avg(churn_probability) AS mean FROM churn_scores '
          'GROUP BY ds ORDER BY ds"', file=sys.stderr)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from jobs.preview import format_preview, preview

    result = preview(args.job, partitions=args.partitions, overrides=args.overrides, run_key=args.run_key)
    if args.json:
        print(json.dumps(result), file=args.stdout, flush=True)
    else:
        print(format_preview(result), file=args.stdout, flush=True)
    return 0


def _submit(args: argparse.Namespace) -> int:
    from jobs.submit import submit_job

    done = submit_job(args.job, args.address, partitions=args.partitions, overrides=args.overrides,
                      run_key=args.run_key, force=args.force, python=args.python)
    summary = done.summary
    if args.json:
        print(json.dumps(summary), file=args.stdout, flush=True)
    outcome = summary.get("error") or (summary["status"] != "succeeded" and summary.get("message")) or (
        f"{summary.get('rows_scored')}/{summary.get('rows_in')} rows scored -> {summary.get('table')} "
        f"{versions_text(summary.get('table_versions') or [summary.get('table_version')])}")
    print(f"score: Ray job {done.ray_job_id} {done.status.lower()} (exit {done.exit_code}): {summary['status']}: "
          f"{outcome}", file=sys.stderr)
    return done.exit_code


def _validate(args: argparse.Namespace) -> int:
    from jobs.errors import ContractFailure
    from jobs.plan import NothingToScore
    from jobs.validate import validate_job

    try:
        report = validate_job(args.job, partitions=args.partitions, overrides=args.overrides)
        error = None
    except ContractFailure as exc:
        report, error = exc.report, exc
    except NothingToScore as nothing:
        print(f"score: {nothing} (choose partitions with --partitions to validate them anyway)", file=sys.stderr)
        return 0
    if args.report:
        from jobs.reports import to_html
        from jobs.storage import write_text

        write_text(args.report, to_html(report))
    if args.json:
        print(json.dumps(report), file=args.stdout, flush=True)
    for entry in report["expectations"]:
        if entry["rows_failed"]:
            print(f"  FAIL {entry['expectation']}({entry['column']}): {entry['rows_failed']} of "
                  f"{entry['rows_checked']} rows, e.g. {', '.join(entry['examples'])}", file=sys.stderr)
    print(f"score: {report['job']}: {report['rows_checked'] - report['rows_failed']} of {report['rows_checked']} "
          f"rows pass contract {report['contract']} in {report['partitions']}", file=sys.stderr)
    if error:
        print(f"score: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


def _bench(args: argparse.Namespace) -> int:
    from jobs.bench import DEFAULT_ROWS, bench_job, format_report

    report = bench_job(args.job, rows=DEFAULT_ROWS if args.rows is None else args.rows, repeat=args.repeat,
                       partitions=args.partitions, overrides=args.overrides)
    if args.json:
        print(json.dumps(report), file=args.stdout, flush=True)
    else:
        print(format_report(report), file=args.stdout, flush=True)
    return 0


def _register(args: argparse.Namespace) -> int:
    from jobs.models import register_model
    from jobs.spec import load_tracking

    tracking = load_tracking()
    version = register_model(args.path, args.name, args.alias, tracking)
    alias = f" as @{args.alias}" if args.alias else ""
    if args.json:
        print(json.dumps({"name": args.name, "version": version, "alias": args.alias, "path": args.path,
                          "model_uri": f"models:/{args.name}/{version}", "tracking_uri": tracking.uri}),
              file=args.stdout, flush=True)
    print(f"registered {args.path} as models:/{args.name}/{version}{alias} in {tracking.uri}", file=sys.stderr)
    return 0


def _warehouse(args: argparse.Namespace) -> str:
    from jobs.spec import load_warehouse

    return args.warehouse or load_warehouse()


def _table(args: argparse.Namespace) -> str:
    from jobs.warehouse import table_uri

    return table_uri(args.table, _warehouse(args))


def _reap_dead_runs() -> None:
    """Runs of this project whose driver was killed: marked failed in MLflow, their uncommitted files deleted
    (jobs.orphans). Outside a project (no conf/defaults.yaml) there is no store to look in."""
    from pathlib import Path

    from jobs.errors import SpecError
    from jobs.orphans import reap
    from jobs.spec import load_tracking
    from jobs.tracking import connect

    try:
        tracking = load_tracking()
    except SpecError:
        return
    if tracking.uri.startswith("sqlite:///") and not Path(tracking.uri.removeprefix("sqlite:///")).exists():
        return  # no store yet, so no run to reap: a read-only command should not create one
    connect(tracking)
    for run in reap(tracking):
        print(f"run {run.run_id} ({run.job}): its driver {run.driver} is gone; marked failed, "
              f"{run.files_removed} uncommitted file(s) deleted", file=sys.stderr)


def _tables(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from jobs.warehouse import describe, table_names
    from jobs.spec import join_uri

    _reap_dead_runs()
    warehouse = _warehouse(args)
    rows = [asdict(describe(name, join_uri(warehouse, name))) for name in table_names(warehouse)]
    if args.json:
        _print_json(rows, args.stdout)
    else:
        _print_rows(rows, ["name", "version", "rows", "files", "updated_at", "newest_partition", "watermark", "age"],
                    args.stdout, empty=f"no tables in {warehouse}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from jobs.warehouse import versions

    rows = versions(_table(args), args.limit)
    if args.plot:
        from jobs.charts import history_plot

        column = args.column or _first_float_column(_table(args))
        print(f"score: wrote {history_plot(_table(args), column, args.plot)} (rows and mean {column} per version)",
              file=sys.stderr)
    if args.json:
        _print_json(rows, args.stdout)
    else:
        rows = [{**row, "partitions": _span(row["partitions"])} for row in rows]
        _print_rows(rows, ["version", "time", "operation", "role", "run_id", "job", "model_version", "partitions",
                           "rows", "restored_version", "reason"], args.stdout)
    return 0


def _first_float_column(table_uri: str) -> str:
    import pyarrow as pa

    from jobs.errors import UsageError
    from jobs.storage import delta_table

    schema = pa.schema(delta_table(table_uri).schema().to_arrow())
    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    if not floats:
        raise UsageError(f"history --plot: {table_uri} has no float column; name one with --column")
    return floats[0]


def _query(args: argparse.Namespace) -> int:
    from jobs.errors import UsageError
    from jobs.query import run_query

    version, versions = None, {}
    for item in args.version:
        name, sep, number = item.rpartition("=")
        if not number.isdigit():
            raise UsageError(f"--version {item}: expected N or TABLE=N")
        if sep:
            versions[name] = int(number)
        else:
            version = int(number)
    if args.max_rows < 0:
        raise UsageError(f"--max-rows {args.max_rows}: give a number of rows, or 0 for no limit")
    result = run_query(args.sql, _warehouse(args), versions, version, max_rows=args.max_rows)
    table = result.table
    if args.format == "csv":
        import pyarrow.csv as pacsv

        args.stdout.flush()
        pacsv.write_csv(table, args.stdout.buffer)
        args.stdout.buffer.flush()
    elif args.format == "json" or args.json:
        _print_json(table.to_pylist(), args.stdout)
    else:
        _print_rows(table.to_pylist(), table.column_names, args.stdout, empty="(no rows)", limit=max(table.num_rows, 1))
    if result.truncated:
        print(f"score: query: printed the first {args.max_rows} rows; the result has more (narrow the query, "
              "or --max-rows 0 for all)", file=sys.stderr)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from jobs.warehouse import rollback

    done = rollback(_table(args), args.version, args.reason)
    if args.json:
        _print_json(done, args.stdout)
    else:
        print(f"{args.table}: restored version {done['restored_version']} as version {done['version']}",
              file=args.stdout)
        if "quarantine" in done:
            q = done["quarantine"]
            print(f"{q['table']}: at version {q['restored_version']}'s content as version {q['version']}",
                  file=args.stdout)
    return 0


def _vacuum(args: argparse.Namespace) -> int:
    from jobs.warehouse import vacuum

    _reap_dead_runs()
    done = vacuum(_table(args), args.retention, args.dry_run)
    if args.json:
        _print_json(done, args.stdout)
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{args.table}: {verb} {len(done['files'])} file(s) older than {done['retention_hours']:g}h "
              "that no version within the retention needs", file=args.stdout)
        for path in done["files"]:
            print(f"  {path}", file=args.stdout)
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from jobs.tables import optimize

    done = optimize(_table(args), args.target_size)
    if args.json:
        _print_json(done, args.stdout)
    elif done["version"] == done["version_before"]:
        print(f"{args.table}: nothing to compact ({done['files_before']} file(s)); still version {done['version']}",
              file=args.stdout)
    else:
        rows = "unchanged" if done["rows_after"] == done["rows_before"] else f"was {done['rows_before']}"
        print(f"{args.table}: {done['files_before']} -> {done['files_after']} files, {done['rows_after']} rows "
              f"({rows}) as version {done['version']}", file=args.stdout)
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from jobs.lineage import describe

    lineage = describe(_table(args), args.version)
    if args.json:
        _print_json(lineage, args.stdout)
        return 0
    out = args.stdout
    print(f"{args.table} version {lineage['version']} ({lineage['table']}): rows from {len(lineage['runs'])} run(s)",
          file=out)
    if not lineage["complete"]:
        print("  (the log no longer reaches back to the table's creation: older runs are not listed)", file=out)
    for run in lineage["runs"]:
        model, contract, mlflow = run["model"], run["contract"], run["mlflow"]
        print(f"\nrun {run['run_id']} (job {run['job']}) committed version {run['committed_version']}", file=out)
        print(f"  run key   {run['run_key']}", file=out)
        print(f"  model     {model['uri']} -> {model['resolved_uri']} (version {model['version']}, "
              f"sha256 {model['sha256']})", file=out)
        if contract:
            print(f"  contract  {contract['path']} (sha256 {contract['sha256']}, {contract['expectations']} "
                  f"expectations, on_failure {contract['on_failure']})", file=out)
        print(f"  code      {run['code_version']} (jobs package sha256 {run.get('code_sha256') or '?'})", file=out)
        print(f"  spec      sha256 {run['spec_hash']} (resolved spec: --json, or MLflow spec/resolved.yaml)", file=out)
        status = mlflow.get("status") if mlflow.get("reachable") else f"not reachable: {mlflow.get('error')}"
        print(f"  MLflow    run {mlflow['run_id']} in experiment {mlflow['experiment_id']} at {mlflow['uri']} "
              f"({status})", file=out)
        print(f"  input     {run['input']['base']} (fingerprint {run['input']['fingerprint']})", file=out)
        for part in run["input"]["partitions"]:
            print(f"    {part['partition']}: {part['rows']} rows, fingerprint {part['fingerprint']}", file=out)
            for f in part["files"]:
                print(f"      {f['path']}  {f['size']} bytes  mtime_ns {f['mtime_ns']}  {f['rows']} rows", file=out)
        for part in run["outputs"]:
            print(f"  output    {part['partition']}: {part['rows_scored']} scored, {part['rows_quarantined']} "
                  f"quarantined, watermark {part['watermark']}, scored_at {part['scored_at']}", file=out)
    return 0


def _freshness(args: argparse.Namespace) -> int:
    import datetime as dt

    from jobs import freshness
    from jobs.errors import UsageError
    from jobs.lineage import parse_time, table_state

    state = table_state(_table(args))
    max_age = args.max_age or next((run.max_age for run in state.runs if run.max_age), None)
    if not max_age:
        raise UsageError(f"freshness {args.table}: give --max-age (e.g. 26h) or set output.max_age in the job")
    try:
        now = parse_time(args.now) if args.now else dt.datetime.now(dt.timezone.utc)
        result = freshness.check(state, args.table, max_age, now)
    except ValueError as exc:
        raise UsageError(f"freshness {args.table}: {exc}") from None
    if args.json:
        _print_json(result.to_dict(), args.stdout)
    print(result.message, file=sys.stderr if args.json else args.stdout)
    return 0 if result.fresh else 4


def _span(partitions: str | None) -> str | None:
    """`ds=a,ds=b,...,ds=z` -> `ds=a .. ds=z (26)` for the text table; JSON keeps the full list."""
    labels = partitions.split(",") if partitions else []
    return f"{labels[0]} .. {labels[-1]} ({len(labels)})" if len(labels) > 3 else partitions


def _print_json(value, out) -> None:
    print(json.dumps(value, indent=1, default=str), file=out, flush=True)


def _print_rows(rows: list[dict], columns: list[str], out, empty: str = "(none)", limit: int = 200) -> None:
    """A plain aligned text table; more than `limit` rows are cut with a note (use CSV or JSON for all)."""
    if not rows:
        print(empty, file=out)
        return
    shown = [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows[:limit]]
    widths = [max(len(c), *(len(row[i]) for row in shown)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(), file=out)
    for row in shown:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip(), file=out)
    if len(rows) > limit:
        print(f"... {len(rows) - limit} more rows (use --format csv or json for all)", file=out)
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
