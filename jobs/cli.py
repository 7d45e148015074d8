"""`score`: the command line. Thin: parse, call `jobs.run`, print, exit with the documented code.

Exit codes: 0 success, 1 runtime failure, 2 bad spec or usage, 3 data contract failure.
Human output goes to stderr; `--json` prints one JSON object on stdout and nothing else there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from jobs.errors import ScoreError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with _stdout_reserved() as args.stdout:
        return _handle(args)


def _handle(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except ScoreError as exc:
        summary = getattr(exc, "summary", None)
        if getattr(args, "json", False):
            from jobs.run import RunSummary

            summary = summary or RunSummary(status="failed", job=str(getattr(args, "job", "")))
            summary.exit_code, summary.error = exc.exit_code, str(exc)
            print(summary.to_json(), file=args.stdout, flush=True)
        if args.verbose and exc.__cause__ is not None:
            import traceback

            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"score: error: {exc}", file=sys.stderr)
        return exc.exit_code


@contextmanager
def _stdout_reserved():
    """Keep stdout for the one JSON object: anything else written to it (Ray relays worker and raylet
    logs there, from Python and from C++) goes to stderr. Yields a file on the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = os.fdopen(saved, "w", closefd=False)
    try:
        yield real
    finally:
        sys.stdout.flush()
        real.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="score", description="Large-batch offline scoring on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="score input partitions into a new table version")
    run.add_argument("job", help="job spec, e.g. conf/jobs/churn_daily.yaml")
    run.add_argument("--partitions", "-p", help="latest | all | ds=V | ds=V1,V2 | ds=LOW..HIGH")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec key, e.g. --set scoring.batch_size=8192 (repeatable)")
    run.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    run.set_defaults(handler=_run)

    validate = commands.add_parser("validate", help="check input partitions against the job's contract only")
    validate.add_argument("job")
    validate.add_argument("--partitions", "-p", help="as for run")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    validate.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    validate.add_argument("--report", metavar="PATH.html", help="also write the report as an HTML page")
    validate.set_defaults(handler=_validate)

    register = commands.add_parser("register-model", help="register a model file in the MLflow registry")
    register.add_argument("path", help="a .onnx, .pt (TorchScript) or .pt2 (torch.export) file")
    register.add_argument("--name", required=True)
    register.add_argument("--alias", help="e.g. champion")
    register.set_defaults(handler=_register)
    return parser


def _run(args: argparse.Namespace) -> int:
    from jobs.run import run_job

    summary = run_job(args.job, partitions=args.partitions, overrides=args.overrides)
    if args.json:
        print(summary.to_json(), file=args.stdout, flush=True)
    print(
        f"score: {summary.job}: {summary.status}: {summary.rows_scored}/{summary.rows_in} rows scored"
        + (f", {summary.rows_quarantined} quarantined" if summary.rows_quarantined else "")
        + f" from {len(summary.partitions)} partition(s) in {summary.duration_s:.1f}s "
        f"({summary.rows_per_s:,.0f} rows/s) -> {summary.table} v{summary.table_version} "
        f"[model {summary.model_version}, MLflow run {summary.run_id}]",
        file=sys.stderr,
    )
    for key, failure in sorted((summary.contract or {}).get("failures", {}).items(), key=lambda kv: -kv[1]["rows"]):
        print(f"  contract: {key}: {failure['rows']} rows, e.g. {', '.join(failure['examples'])}", file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from jobs.errors import ContractFailure
    from jobs.validate import validate_job

    try:
        report = validate_job(args.job, partitions=args.partitions, overrides=args.overrides)
        error = None
    except ContractFailure as exc:
        report, error = exc.report, exc
    if args.report:
        from jobs.reports import to_html

        Path(args.report).write_text(to_html(report))
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


def _register(args: argparse.Namespace) -> int:
    from jobs.models import register_model
    from jobs.spec import load_tracking

    tracking = load_tracking()
    version = register_model(args.path, args.name, args.alias, tracking)
    alias = f" as @{args.alias}" if args.alias else ""
    print(f"registered {args.path} as models:/{args.name}/{version}{alias} in {tracking.uri}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
