"""The `score` command line's parser: every command, its arguments and their help, and nothing else.

Options that several commands share (`--partitions`, `--run-key`, `--force`, `--set`, `--warehouse`, and `-v` /
`--json` after the command) are declared once, as parent parsers. Each parsed command is handled by the
function of the same name (`-` as `_`) in `jobs.cli.job_commands` or, for `TABLE_COMMANDS`, in
`jobs.cli.table_commands`.
"""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

# The commands that read or change the warehouse's tables (`jobs.cli.table_commands`).
TABLE_COMMANDS = (
    "tables",
    "history",
    "query",
    "rollback",
    "drop",
    "vacuum",
    "optimize",
    "lineage",
    "freshness",
    "drift",
    "compare",
)


def build_parser() -> argparse.ArgumentParser:
    try:
        release = version("score-jobs")
    except PackageNotFoundError:  # run from a checkout that was never installed
        release = "unknown (not installed)"
    parser = argparse.ArgumentParser(prog="score", description="Large-batch offline scoring on Ray.")
    parser.add_argument("--version", action="version", version=f"score {release}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="our logs, plus Ray's and its workers' output and Ray Data's operator bars",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    commands = parser.add_subparsers(dest="command", required=True)

    # The same two options after the command (`score run JOB -v --json`): they only set, never reset.
    common = _options()
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object on stdout"
    )
    job = _options()
    job.add_argument("job", help="job spec, e.g. conf/jobs/churn_daily.yaml")
    partitions = _options()
    partitions.add_argument(
        "--partitions",
        "-p",
        help="latest | all | unscored | ds=V | ds=V1,V2 | ds=LOW..HIGH "
        "(unscored,ds=A..B: within); default: the job's input.partitions",
    )
    run_key = _options()
    run_key.add_argument(
        "--run-key",
        help="the logical run, e.g. Airflow's run id: once committed, a retry is a "
        "no-op (default: derived from job, spec, input files, model and contract)",
    )
    force = _options()
    force.add_argument("--force", action="store_true", help="run even if the run key already committed")
    overrides = _options()
    overrides.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key, e.g. --set scoring.batch_size=8192 (repeatable)",
    )
    warehouse = _options()
    warehouse.add_argument("--warehouse", help="warehouse folder or URI (default: warehouse.uri of conf/defaults.yaml)")

    def command(
        name: str, help: str, *shared: argparse.ArgumentParser, description: str | None = None
    ) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description, parents=[common, *shared])

    run = command("run", "score input partitions into a new table version", job, partitions, run_key, force, overrides)
    run.add_argument(
        "--lock",
        action="store_true",
        help="refuse to start (exit 75) while another run of this job "
        "holds its lock on this host: for cron (a killed run never leaves it locked)",
    )
    run.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="score only a sample: the first N rows of the selected "
        "partitions, shared among them (an ad-hoc check; needs --table)",
    )
    run.add_argument("--table", help="with --limit: the table the sample is scored into (not the job's own)")
    run.add_argument(
        "--wait-for-partitions",
        metavar="DURATION",
        help="late data: wait up to DURATION (e.g. 2h, 90m) for selected partitions that have not landed, "
        "looking again with backoff; exit 75 (retry-safe) if they still have not (without it: exit 2 at once)",
    )

    init = command("init", "create a new project (conf, an example job, contract, model, sample data) in DIR")
    init.add_argument("dir", nargs="?", help="a new or empty folder")
    init.add_argument(
        "--airflow",
        nargs="?",
        const=True,
        metavar="DAGS_FOLDER",
        help="also write the example Airflow DAG, score_daily.py: into DIR/dags, or into DAGS_FOLDER (then DIR "
        "may be left out)",
    )
    init.add_argument("--days", type=int, default=3, help="days of sample input to generate (default %(default)s)")
    init.add_argument(
        "--rows-per-day", type=int, default=20_000, metavar="N", help="sample customers per day (default %(default)s)"
    )

    command(
        "plan",
        "show what `score run` would do (partitions, files, model, contract, run key, replaced rows, "
        "actors) without doing it",
        job,
        partitions,
        run_key,
        overrides,
    )

    submit = command(
        "submit",
        "run a job as a Ray Job on a cluster, follow it, exit with its code",
        job,
        partitions,
        run_key,
        force,
        overrides,
        description="The job spec must lie inside its project: the project folder becomes the Ray Job's working "
        "directory.",
    )
    submit.add_argument(
        "--address",
        help="the cluster's Ray Jobs API, e.g. http://head:8265 (default: RAY_API_SERVER_ADDRESS or RAY_ADDRESS)",
    )
    submit.add_argument(
        "--python",
        default="python",
        help="the interpreter on the head node with this project's dependencies (default: %(default)s)",
    )

    validate = command("validate", "check input partitions against the job's contract only", job, partitions, overrides)
    validate.add_argument(
        "--report", metavar="PATH.html", help="also write the report as an HTML page (a local path or an s3:// URI)"
    )

    bench = command(
        "bench",
        "measure a job on a sample against the bare loop; recommend settings",
        job,
        partitions,
        overrides,
        description="The sample is taken from the selected partitions; `unscored` selects all of them (bench "
        "measures, it skips nothing already scored).",
    )
    bench.add_argument(
        "--rows",
        type=int,
        default=None,
        metavar="N",
        help="sample size: the first N rows of the selected partitions (default 500000)",
    )
    bench.add_argument("--repeat", type=int, default=3, metavar="R", help="interleaved repeats; medians (default 3)")

    register = command("register-model", "register a model file in the MLflow registry")
    register.add_argument("path", help="a .onnx, .pt (TorchScript) or .pt2 (torch.export) file")
    register.add_argument("--name", required=True)
    register.add_argument("--alias", help="e.g. champion")

    promote = command("promote", "move a registry alias to the version another alias names, recording who and why")
    promote.add_argument("name", help="a registered model name, e.g. churn")
    promote.add_argument("--from", dest="from_alias", required=True, metavar="ALIAS", help="e.g. challenger")
    promote.add_argument("--to", dest="to_alias", required=True, metavar="ALIAS", help="e.g. champion")
    promote.add_argument("--reason", required=True, help="recorded on the model version, with who promoted it")

    tables = command("tables", "list the tables in the warehouse with version, rows and freshness", warehouse)
    tables.add_argument("--all", action="store_true", help="also list empty quarantine tables (hidden by default)")
    history = command("history", "list a table's versions: run, time, job, model, partitions, rows", warehouse)
    history.add_argument("table", help="a table name in the warehouse, or a table path or URI")
    history.add_argument("--limit", type=int, help="only the newest N versions")
    history.add_argument("--plot", metavar="PATH.png", help="also write a picture of rows and mean score per version")
    history.add_argument("--column", help="the score column --plot shows (default: the table's first float column)")
    query = command(
        "query",
        "run one read-only SQL SELECT over the tables, by name",
        warehouse,
        description="Run one read-only DuckDB SELECT over the warehouse's tables, by name. TABLE@N reads version "
        "N of a table, so one query can compare two versions: SELECT a.customer_id, b.churn_probability - "
        "a.churn_probability AS change FROM churn_scores@2 a JOIN churn_scores@3 b USING (customer_id). "
        "information_schema.tables and information_schema.columns list every table and its columns.",
    )
    query.add_argument(
        "sql", help='e.g. "SELECT ds, count(*) FROM churn_scores GROUP BY ds"; TABLE@N reads version N of a table'
    )
    query.add_argument(
        "--version",
        action="append",
        default=[],
        metavar="N|TABLE=N",
        help="read a table as of a version (TABLE=N when the query reads several; repeatable); "
        "TABLE@N in the query reads one version beside another",
    )
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    query.add_argument(
        "--max-rows",
        type=int,
        default=10_000,
        metavar="N",
        help="print at most the first N rows, in every format, with a note on stderr when the result "
        "has more (default %(default)s; 0: no limit, the whole result is held in memory)",
    )
    rollback = command("rollback", "restore an earlier version as a new version, recording why", warehouse)
    rollback.add_argument("table")
    rollback.add_argument("version", type=int)
    rollback.add_argument("--reason", required=True, help="recorded in the table's history")
    drop = command(
        "drop",
        "delete a table with its quarantine, profiles and challenger tables (refused while a job reads it)",
        warehouse,
    )
    drop.add_argument("table", help="a table of the warehouse, by name")
    drop.add_argument("--force", action="store_true", help="drop it even though a job of the project reads it")
    vacuum = command("vacuum", "delete files no version within the retention period needs", warehouse)
    vacuum.add_argument("table")
    vacuum.add_argument("--retention", help="e.g. 240h or 30d; never shorter than the table promises (default 7d)")
    vacuum.add_argument("--dry-run", action="store_true", help="list the files without deleting them")
    optimize = command(
        "optimize", "compact small files into fewer, larger ones (same rows, one new version)", warehouse
    )
    optimize.add_argument("table")
    optimize.add_argument(
        "--target-size",
        type=float,
        metavar="MB",
        help="target file size in MB (default: 128, as output.target_file_mb)",
    )
    lineage = command(
        "lineage", "where a table version's rows came from: inputs, model, contract, code, run", warehouse
    )
    lineage.add_argument("table")
    lineage.add_argument("--version", type=int, help="a table version (default: the latest)")
    drift = command(
        "drift",
        "how far a version's scored rows drifted from its baseline, per model input and output column",
        warehouse,
    )
    drift.add_argument("table")
    drift.add_argument("--version", type=int, help="a table version a run committed (default: the latest)")
    compare = command(
        "compare", "how a version's challenger scores agreed with the champion's, overall and per segment", warehouse
    )
    compare.add_argument("table", help="the champion's table")
    compare.add_argument("--version", type=int, help="a table version a run committed (default: the latest)")
    freshness = command(
        "freshness", "exit 0 when the newest partition is younger than --max-age, 4 when not", warehouse
    )
    freshness.add_argument("table")
    freshness.add_argument("--max-age", help="e.g. 26h (default: output.max_age of the job that wrote the table)")
    freshness.add_argument("--now", help="judge as of this ISO time instead of the clock (backfills, tests)")
    return parser


def _options() -> argparse.ArgumentParser:
    """A parent parser: options a command takes over by naming it."""
    return argparse.ArgumentParser(add_help=False)
