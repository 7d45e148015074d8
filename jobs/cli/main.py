"""`score`: the command line's entry point. Parse, run the command's handler, exit with the documented code.

Exit codes: 0 success, 1 runtime failure, 2 bad spec or usage, 3 data contract failure, 4 stale table,
5 drift (monitoring.on_drift: fail), 75 retry-safe failure (lost a race to another run of the same partitions, the
job's lock is held, or a partition did not land within --wait-for-partitions; nothing committed), 130
interrupted (Ctrl-C or SIGTERM; nothing committed).
`run` and `validate` report on stderr and keep stdout for `--json` (one JSON object, nothing else); the
table commands print their result (a table, CSV or JSON) on stdout. Errors always go to stderr.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import traceback
from collections.abc import Callable

from jobs.cli.parser import TABLE_COMMANDS, build_parser
from jobs.commands.console import hush_libraries, settle_native_output, versions_text
from jobs.commands.summary import RunSummary
from jobs.errors import EXIT_INTERRUPTED, ScoreError

# Commands whose libraries' native stderr is kept off the terminal unless -v: those that run a job's stages.
# (`bench` is a diagnostic and keeps everything, faulthandler stacks of crashed runtimes included.)
QUIETED = {"run", "validate", "plan", "init"}
# Commands that leave without the interpreter's teardown once their output is flushed (`command` only): `query`
# crashed there (SIGSEGV after printing its rows, 1 run in 100 with a LIMIT over a multi-file table) when the
# scan DuckDB stopped early still had Arrow reads in flight as native libraries tore down. It holds nothing
# that needs an exit hook: it only reads.
NO_TEARDOWN = {"query"}


def command() -> int:
    """The `score` command (its console script, and `python -m jobs.cli`): `main`, in a process that exits next.

    Python's teardown collects garbage over every object of the ~2,900 modules a run imports (MLflow alone pulls
    in FastAPI, polars and scipy): 0.6 to 0.9 s, a fifth of a small run, measured. Those objects are frozen out of
    the collector instead; exit handlers, finalizers and thread joins all still run."""
    code = main(own_process=True)
    gc.disable()
    gc.freeze()
    return code


def main(argv: list[str] | None = None, own_process: bool = False) -> int:
    """Parse and run one command; its exit code. `own_process`: the caller exits next (`command`), so a
    NO_TEARDOWN command leaves at once."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    native = hush_libraries(args.verbose, divert=args.command in QUIETED)
    if args.command == "run":
        from jobs.tracking.recorder import start_sidecar

        start_sidecar()  # MLflow loads in the sidecar while this process imports the run's libraries and plans
    args.stdout = _reserve_stdout()
    signal.signal(signal.SIGTERM, _terminate)
    code = _handle(args)
    settle_native_output(native, code)
    if code == EXIT_INTERRUPTED or (own_process and args.command in NO_TEARDOWN):
        _leave_now(code, args.stdout)
    return code


def _handle(args: argparse.Namespace) -> int:
    """Run the command; every failure ends in one line on stderr (a traceback too for a bug) and, under
    `run --json`, one JSON object on stdout."""
    try:
        return handler(args.command)(args)
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
        why = (
            str(exc)
            if str(exc).startswith("interrupted")
            else (
                f"interrupted; committed {versions_text(committed)} before it, nothing after"
                if committed
                else "interrupted; nothing committed"
            )
        )
        _print_failure(args, exc, EXIT_INTERRUPTED, why)
        print(f"score: {why}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _leave_now(code: int, stdout) -> None:
    """Exit now, output flushed: an interrupted run (cleaned up, summary printed; Python's exit hooks after
    SIGTERM aborted the process, SIGABRT, instead of exiting with 130) or a NO_TEARDOWN command. Ray, if this
    process used it, is stopped here first."""
    for stream in (stdout, sys.stdout, sys.stderr):
        stream.flush()
    ray = sys.modules.get("ray")  # imported by the command if it used Ray; never imported here to stop it
    if ray is not None:
        ray.shutdown()  # a local Ray's processes (its agents too), or this driver's job on a cluster
    os._exit(code)


def _terminate(signum, frame) -> None:
    """SIGTERM (Airflow, Kubernetes) ends the run like Ctrl-C: uncommitted files are removed on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def _print_failure(args: argparse.Namespace, exc: BaseException, exit_code: int, error: str) -> None:
    """The failed run's summary as the one JSON object `--json` promises (run and validate print theirs)."""
    if not getattr(args, "json", False) or args.command not in ("run", "validate", "submit", "plan"):
        return
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


def handler(command: str) -> Callable[[argparse.Namespace], int]:
    """The function that handles `command`: its name with `-` as `_`, in the table or the job commands' module."""
    # The handlers import what their commands run (0.4 s): imported once the command is known, so that the
    # parser alone answers --help, --version and a usage error at once.
    from jobs.cli import job_commands, table_commands

    return getattr(table_commands if command in TABLE_COMMANDS else job_commands, command.replace("-", "_"))
