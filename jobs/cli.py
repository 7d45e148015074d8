"""`score`: the command line. Thin: parse, call `jobs.run`, print, exit with the documented code.

Exit codes: 0 success, 1 runtime failure, 2 bad spec or usage, 3 data contract failure.
Human output goes to stderr; `--json` prints one JSON object on stdout and nothing else there.
"""

from __future__ import annotations

import argparse
import logging
import sys

from jobs.errors import ScoreError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except ScoreError as exc:
        summary = getattr(exc, "summary", None)
        if getattr(args, "json", False):
            from jobs.run import RunSummary

            summary = summary or RunSummary(status="failed", job=str(getattr(args, "job", "")))
            summary.exit_code, summary.error = exc.exit_code, str(exc)
            print(summary.to_json(), flush=True)
        if args.verbose and exc.__cause__ is not None:
            import traceback

            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"score: error: {exc}", file=sys.stderr)
        return exc.exit_code


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
        print(summary.to_json(), flush=True)
    print(
        f"score: {summary.job}: {summary.status}: {summary.rows_scored}/{summary.rows_in} rows scored "
        f"from {len(summary.partitions)} partition(s) in {summary.duration_s:.1f}s "
        f"({summary.rows_per_s:,.0f} rows/s) -> {summary.table} v{summary.table_version} "
        f"[model {summary.model_version}, MLflow run {summary.run_id}]",
        file=sys.stderr,
    )
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
