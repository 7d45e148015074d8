"""What `score tables | history | query | rollback | vacuum | optimize | lineage | freshness | drift` print: the table
commands, over the warehouse of the project around the current folder (or `--warehouse`). Results go to stdout
(a text table, CSV or JSON); notes and errors to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from jobs.errors import SpecError, UsageError
from jobs.spec.load import LoadedSpec, load_tracking, load_warehouse, project_jobs
from jobs.spec.schema import baseline_of
from jobs.storage import delta_table, join_uri
from jobs.tables import freshness as freshness_check
from jobs.tables.charts import history_plot
from jobs.tables.delta import QUARANTINE_SUFFIX, challenger_table, quarantine_table
from jobs.tables.delta import optimize as compact
from jobs.tables.lineage import parse_time, recorded_run, table_state
from jobs.tables.profile_table import profiles_table, recorded_drift
from jobs.tables.query import run_query
from jobs.tables.warehouse import describe, table_names, table_uri, versions
from jobs.tables.warehouse import drop as drop_tables
from jobs.tables.warehouse import rollback as restore
from jobs.tables.warehouse import vacuum as clean
from jobs.tracking.connect import connect
from jobs.tracking.orphans import reap


def tables(args: argparse.Namespace) -> int:
    _reap_dead_runs()
    warehouse = _warehouse(args)
    rows = [asdict(describe(name, join_uri(warehouse, name))) for name in table_names(warehouse)]
    empty = [] if args.all else [r["name"] for r in rows if r["name"].endswith(QUARANTINE_SUFFIX) and not r["rows"]]
    rows = [r for r in rows if r["name"] not in empty]
    if args.json:
        _print_json(rows, args.stdout)
    else:
        _print_rows(
            rows,
            ["name", "version", "rows", "files", "updated_at", "newest_partition", "watermark", "age"],
            args.stdout,
            empty=f"no tables in {warehouse}",
        )
    if empty:  # every run creates its table's quarantine twin; one that never held a row is noise here
        print(f"score: {len(empty)} empty quarantine table(s) not shown (--all shows them)", file=sys.stderr)
    return 0


def history(args: argparse.Namespace) -> int:
    rows = versions(_table(args), args.limit)
    if args.plot:
        column = args.column or _first_float_column(_table(args))
        print(
            f"score: wrote {history_plot(_table(args), column, args.plot)} (rows and mean {column} per version)",
            file=sys.stderr,
        )
    if args.json:
        _print_json(rows, args.stdout)
    else:
        rows = [{**row, "partitions": _span(row["partitions"])} for row in rows]
        _print_rows(
            rows,
            [
                "version",
                "time",
                "operation",
                "role",
                "run_id",
                "job",
                "model_version",
                "partitions",
                "rows",
                "restored_version",
                "reason",
                "cost",
            ],
            args.stdout,
        )
    return 0


def query(args: argparse.Namespace) -> int:
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
        args.stdout.flush()
        pacsv.write_csv(table, args.stdout.buffer)
        args.stdout.buffer.flush()
    elif args.format == "json" or args.json:
        _print_json(table.to_pylist(), args.stdout)
    else:
        _print_rows(_text_rows(table), table.column_names, args.stdout, empty="(no rows)", limit=max(table.num_rows, 1))
    if result.truncated:
        print(
            f"score: query: printed the first {args.max_rows} rows; the result has more (narrow the query, "
            "or --max-rows 0 for all)",
            file=sys.stderr,
        )
    return 0


class _Float32:
    """A float32 as the shortest text that reads back as the same float32 (0.31478566), as the CSV output prints
    it, not the float64 it widens to in Python (0.3147856593132019); also inside a printed list or struct."""

    def __init__(self, value: float) -> None:
        self.text = str(np.float32(value))

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


def _text_rows(table: pa.Table) -> list[dict]:
    """The rows of a query's result for the text table, float32 values (also nested) at float32 precision."""
    rows = table.to_pylist()
    for field in table.schema:
        if _has_float32(field.type):
            for row in rows:
                row[field.name] = _narrow(row[field.name], field.type)
    return rows


def _has_float32(kind: pa.DataType) -> bool:
    if pa.types.is_float32(kind):
        return True
    if isinstance(kind, (pa.ListType, pa.LargeListType, pa.FixedSizeListType)):
        return _has_float32(kind.value_type)
    return pa.types.is_struct(kind) and any(_has_float32(field.type) for field in kind)


def _narrow(value, kind: pa.DataType):
    if value is None:
        return None
    if pa.types.is_float32(kind):
        return _Float32(value)
    if isinstance(kind, (pa.ListType, pa.LargeListType, pa.FixedSizeListType)):
        return [_narrow(item, kind.value_type) for item in value]
    if pa.types.is_struct(kind):
        return {field.name: _narrow(value[field.name], field.type) for field in kind}
    return value


def rollback(args: argparse.Namespace) -> int:
    done = restore(_table(args), args.version, args.reason)
    if args.json:
        _print_json(done, args.stdout)
    else:
        print(
            f"{args.table}: restored version {done['restored_version']} as version {done['version']}", file=args.stdout
        )
        if "quarantine" in done:
            q = done["quarantine"]
            print(
                f"{q['table']}: at version {q['restored_version']}'s content as version {q['version']}",
                file=args.stdout,
            )
    return 0


def vacuum(args: argparse.Namespace) -> int:
    _reap_dead_runs()
    done = clean(_table(args), args.retention, args.dry_run)
    if args.json:
        _print_json(done, args.stdout)
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(
            f"{args.table}: {verb} {len(done['files'])} file(s) older than {done['retention_hours']:g}h "
            "that no version within the retention needs",
            file=args.stdout,
        )
        for path in done["files"]:
            print(f"  {path}", file=args.stdout)
    return 0


def optimize(args: argparse.Namespace) -> int:
    done = compact(_table(args), args.target_size)
    if args.json:
        _print_json(done, args.stdout)
    elif done["version"] == done["version_before"]:
        print(
            f"{args.table}: nothing to compact ({done['files_before']} file(s)); still version {done['version']}",
            file=args.stdout,
        )
    else:
        rows = "unchanged" if done["rows_after"] == done["rows_before"] else f"was {done['rows_before']}"
        print(
            f"{args.table}: {done['files_before']} -> {done['files_after']} files, {done['rows_after']} rows "
            f"({rows}) as version {done['version']}",
            file=args.stdout,
        )
    return 0


def lineage(args: argparse.Namespace) -> int:
    from jobs.tracking.records import describe_lineage  # it imports MLflow (1.1 s): only `score lineage` pays

    lineage = describe_lineage(_table(args), args.version)
    if args.json:
        _print_json(lineage, args.stdout)
        return 0
    out = args.stdout
    print(
        f"{args.table} version {lineage['version']} ({lineage['table']}): rows from {len(lineage['runs'])} run(s)",
        file=out,
    )
    if not lineage["complete"]:
        print("  (the log no longer reaches back to the table's creation: older runs are not listed)", file=out)
    for run in lineage["runs"]:
        model, contract, mlflow = run["model"], run["contract"], run["mlflow"]
        print(f"\nrun {run['run_id']} (job {run['job']}) committed version {run['committed_version']}", file=out)
        print(f"  run key   {run['run_key']}", file=out)
        print(
            f"  model     {model['uri']} -> {model['resolved_uri']} (version {model['version']}, "
            f"sha256 {model['sha256']})",
            file=out,
        )
        if contract:
            print(
                f"  contract  {contract['path']} (sha256 {contract['sha256']}, {contract['expectations']} "
                f"expectations, on_failure {contract['on_failure']})",
                file=out,
            )
        print(f"  code      {run['code_version']} (jobs package sha256 {run.get('code_sha256') or '?'})", file=out)
        print(f"  spec      sha256 {run['spec_hash']} (resolved spec: --json, or MLflow spec/resolved.yaml)", file=out)
        status = mlflow.get("status") if mlflow.get("reachable") else f"not reachable: {mlflow.get('error')}"
        print(
            f"  MLflow    run {mlflow['run_id']} in experiment {mlflow['experiment_id']} at {mlflow['uri']} ({status})",
            file=out,
        )
        print(f"  input     {run['input']['base']} (fingerprint {run['input']['fingerprint']})", file=out)
        for part in run["input"]["partitions"]:
            print(f"    {part['partition']}: {part['rows']} rows, fingerprint {part['fingerprint']}", file=out)
            for f in part["files"]:
                print(f"      {f['path']}  {f['size']} bytes  mtime_ns {f['mtime_ns']}  {f['rows']} rows", file=out)
        for part in run["outputs"]:
            print(
                f"  output    {part['partition']}: {part['rows_scored']} scored, {part['rows_quarantined']} "
                f"quarantined, watermark {part['watermark']}, scored_at {part['scored_at']}",
                file=out,
            )
    return 0


def freshness(args: argparse.Namespace) -> int:
    state = table_state(_table(args))
    max_age = args.max_age or next((run.max_age for run in state.runs if run.max_age), None)
    if not max_age:
        raise UsageError(f"freshness {args.table}: give --max-age (e.g. 26h) or set output.max_age in the job")
    try:
        now = parse_time(args.now) if args.now else dt.datetime.now(dt.UTC)
        result = freshness_check.check(state, args.table, max_age, now)
    except ValueError as exc:
        raise UsageError(f"freshness {args.table}: {exc}") from None
    if args.json:
        _print_json(result.to_dict(), args.stdout)
    print(result.message, file=sys.stderr if args.json else args.stdout)
    return 0 if result.fresh else 4


def drift(args: argparse.Namespace) -> int:
    result = recorded_drift(_table(args), args.version)
    if args.json:
        _print_json(result, args.stdout)
        return 0
    baseline = result["baseline"]
    out = args.stdout
    if baseline["version"] is None:
        print(f"{args.table} version {result['version']}: no baseline (the table's first profiled run)", file=out)
        return 0
    partitions = _span(",".join(result["partitions"]))
    print(
        f"{args.table} version {result['version']} (run {result['run_id']}, {partitions}) against "
        f"{baseline['table']} version {baseline['version']}: {len(result['drifted'])} of {len(result['columns'])} "
        "columns drifted",
        file=out,
    )
    rows = [
        {
            **c,
            "statistic": "n/a" if c["statistic"] is None else f"{c['statistic']:.4f}",
            "psi": "n/a" if c["psi"] is None else f"{c['psi']:.4f}",
            "nulls": f"{c['null_fraction'][0]:.2%} -> {c['null_fraction'][1]:.2%}",
            "drifted": "drifted" if c["drifted"] else "",
        }
        for c in result["columns"]
    ]
    _print_rows(rows, ["column", "method", "statistic", "threshold", "psi", "nulls", "drifted"], out)
    return 0


def compare(args: argparse.Namespace) -> int:
    run = recorded_run(_table(args), args.version, "challenger", "scored a challenger (model.challenger)")
    challenger = run.challenger or {}
    result = {
        "table": args.table,
        "version": run.table_version,
        "run_id": run.run_id,
        "champion": run.model,
        **challenger,
    }
    if args.json:
        _print_json(result, args.stdout)
        return 0
    out = args.stdout
    print(
        f"{args.table} version {run.table_version} (run {run.run_id}): champion {run.model['resolved_uri']} "
        f"(sha256 {run.model['sha256'][:12]}) against challenger {challenger['model']['resolved_uri']} (sha256 "
        f"{challenger['model']['sha256'][:12]}), scores in {challenger['table']} version {challenger['version']}",
        file=out,
    )
    rows = [
        {"segment": segment, "column": column, **{k: _figure(v) for k, v in figures.items()}}
        for segment, columns in challenger["agreement"].items()
        for column, figures in columns.items()
    ]
    names = ["segment", "column", "rows", "label_agreement", "mean_abs_diff", "max_abs_diff", "correlation"]
    _print_rows(rows, names, out)
    return 0


def drop(args: argparse.Namespace) -> int:
    """Delete a table and its twins (quarantine, profiles, challenger). Refused while a job of the project reads
    it (or cannot be loaded to tell) unless --force; never, even with --force, when it lies inside a job's input
    folder: input data is not ours to delete."""
    warehouse, name = _warehouse(args), args.table
    if "/" in name or "://" in name:
        raise UsageError(f"drop {name}: name a table of the warehouse ({warehouse}), not a path")
    uri = table_uri(name, warehouse)
    jobs, unloadable = project_jobs()
    inside = [job for job in jobs if _within(uri, job.spec.input.path) and not _within(job.spec.input.path, uri)]
    if inside:
        raise UsageError(
            f"drop {name}: {uri} lies inside the input folder of {_named(inside)}: score drop never deletes input data"
        )
    readers = [job for job in jobs if _reads(job, name, uri)]
    if (readers or unloadable) and not args.force:
        why = [f"read by {_named(readers)}"] if readers else []
        why += [f"{exc.file} does not load, so whether it reads the table is unknown" for exc in unloadable]
        raise UsageError(f"drop {name}: {'; '.join(why)}: change or remove those jobs first, or drop it with --force")
    dropped = drop_tables(warehouse, [name, quarantine_table(name), profiles_table(name), challenger_table(name)])
    if args.json:
        _print_json({"dropped": dropped, "readers": [str(job.file) for job in readers]}, args.stdout)
    else:
        for table in dropped:
            line = f"dropped {table['table']} (v{table['version']}, {table['files']} files): {table['uri']}"
            print(line, file=args.stdout)
    return 0


def _reads(job: LoadedSpec, name: str, uri: str) -> bool:
    """Whether `job` reads the table: as its input (the table's folder, or a folder inside it), or as the
    baseline its drift is measured against."""
    baseline, _ = baseline_of(job.spec.monitoring.baseline)
    return _within(job.spec.input.path, uri) or (baseline == name and job.spec.output.table != name)


def _within(path: str, folder: str) -> bool:
    path, folder = path.rstrip("/"), folder.rstrip("/")
    return path == folder or path.startswith(folder + "/")


def _named(jobs: list[LoadedSpec]) -> str:
    return ", ".join(f"job {job.spec.name} ({job.file})" for job in jobs)


def _figure(value) -> str | None:
    return f"{value:.6g}" if isinstance(value, float) else value


def _warehouse(args: argparse.Namespace) -> str:
    return args.warehouse or load_warehouse()


def _table(args: argparse.Namespace) -> str:
    return table_uri(args.table, _warehouse(args))


def _reap_dead_runs() -> None:
    """Runs of this project whose driver was killed: marked failed in MLflow, their uncommitted files deleted
    (jobs.tracking.orphans). Outside a project (no conf/defaults.yaml) there is no store to look in."""
    try:
        tracking = load_tracking()
    except SpecError:
        return
    if tracking.uri.startswith("sqlite:///") and not Path(tracking.uri.removeprefix("sqlite:///")).exists():
        return  # no store yet, so no run to reap: a read-only command should not create one
    connect(tracking)
    for run in reap(tracking):
        print(
            f"run {run.run_id} ({run.job}): its driver {run.driver} is gone; marked failed, "
            f"{run.files_removed} uncommitted file(s) deleted",
            file=sys.stderr,
        )


def _first_float_column(table_uri: str) -> str:
    schema = pa.schema(delta_table(table_uri).schema().to_arrow())
    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    if not floats:
        raise UsageError(f"history --plot: {table_uri} has no float column; name one with --column")
    return floats[0]


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
