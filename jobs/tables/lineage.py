"""Where a table's rows came from, kept in the table itself.

Every run's output commit carries one `score.lineage` record (JSON in the Delta commit metadata): the
run, its run key, the input files and fingerprint of each input partition, the concrete model, the
contract, the code and spec, the MLflow run, and per output partition the watermark and `scored_at`.
The Delta log is the history of the table, so walking it answers "what is in version N and where did it
come from" (lineage), "which partitions are already scored with this model" (`unscored`) and "how old is
the newest data" (freshness) without any other store. A RESTORE in the log means "the state of version
R from here on", so rollbacks are followed, not merely listed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from deltalake.exceptions import TableNotFoundError

from jobs.errors import UsageError
from jobs.storage import delta_table, redact_uri


class CommitInfo:
    """The `score.*` entries of a commit's info (Delta's `commitInfo`): written by runs and by the table commands,
    read back by `score history`, later runs, the overlap check and the orphan reaper. Values are strings."""

    RUN_ID = "score.run_id"
    RUN_KEY = "score.run_key"
    JOB = "score.job"
    PARTITIONS = "score.partitions"  # the input partitions a run read, comma-separated labels
    MODEL_VERSION = "score.model_version"
    MODEL_SHA256 = "score.model_sha256"
    SPEC_HASH = "score.spec_hash"
    ROWS = "score.rows"
    ROLE = "score.role"  # a `Role`; absent on a run's output commit
    QUARANTINE_VERSION = "score.quarantine_version"
    LINEAGE = "score.lineage"  # the run's `RunRecord`, as JSON
    RESTORED_VERSION = "score.restored_version"
    ROLLED_BACK_FROM = "score.rolled_back_from"
    REASON = "score.reason"
    USER = "score.user"
    TARGET_FILE_MB = "score.target_file_mb"
    COST = "score.cost"  # what the commit's work cost (`cost.cpu_hour`, `cost.gpu_hour` set): "0.0123 USD"


class Role:
    """`score.role` of the commits that are not a run's output commit."""

    QUARANTINE = "quarantine"  # a run's commit to its quarantine table
    CHALLENGER = "challenger"  # a run's commit of its challenger model's scores (model.challenger)
    UNDO = "undo"  # a run taking back its own commit (the quarantine one, when the output commit failed)
    ROLLBACK = "rollback"
    VACUUM = "vacuum"
    OPTIMIZE = "optimize"


# The log is the lineage: keep commit files (they are small) ten years instead of Delta's 30 days.
LOG_RETENTION = "interval 3650 days"


@dataclass(frozen=True)
class InputRecord:
    """One input partition as a run read it."""

    partition: str
    fingerprint: str
    files: list[dict]  # {path, size, mtime_ns, rows}
    rows: int


@dataclass(frozen=True)
class OutputRecord:
    """One output partition as a run wrote it: the freshness facts."""

    partition: str
    rows_scored: int
    rows_quarantined: int
    watermark: str | None  # max event time of the input rows (ISO), else the partition's date
    scored_at: str


@dataclass(frozen=True)
class RunRecord:
    """What one committed run used and produced; stored as JSON in its commit."""

    run_id: str
    run_key: str
    job: str
    table: str
    spec_hash: str
    spec_yaml: str
    code_version: str
    model: dict[str, Any]  # uri (as configured), resolved_uri, version, sha256, registry_name, runtime
    contract: dict[str, Any] | None  # path, sha256, expectations, on_failure
    tracking: dict[str, Any]  # uri, experiment_id, run_id
    input_base: str
    input_fingerprint: str
    inputs: list[InputRecord]
    outputs: list[OutputRecord]
    max_age: str | None = None
    quarantine_table: str | None = None
    quarantine_version: int | None = None
    code_sha256: str | None = None  # the `jobs` package the workers ran (`jobs.engines.cluster.package_digest`)
    engine: str | None = None  # ray, or inline (a small local run, scored in the driver process)
    devices: dict[str, int] | None = None  # rows by the device the model ran on ("cpu", "cuda:0 (NVIDIA H200)")
    # monitoring.drift: {baseline: {table, version}, drift: [ColumnDrift.to_dict(), ...]}; the profiles are in
    # `<table>__profiles` (jobs.tables.profile_table), under this commit's version
    monitoring: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None  # the commit's CPU- and GPU-seconds by stage and its cost (jobs.commands.cost)
    # model.challenger: {model: {...as `model`}, table, version, agreement: {segment: {column: figures}}}
    challenger: dict[str, Any] | None = None
    table_version: int | None = field(default=None, compare=False)  # filled in when read from the log

    def to_json(self) -> str:
        doc = asdict(self)
        doc.pop("table_version")
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, table_version: int | None = None) -> RunRecord:
        doc = json.loads(text)
        doc["inputs"] = [InputRecord(**r) for r in doc["inputs"]]
        doc["outputs"] = [OutputRecord(**r) for r in doc["outputs"]]
        return cls(**doc, table_version=table_version)


@dataclass
class TableState:
    """What a table version holds, partition by partition, and which run put it there."""

    uri: str
    version: int
    inputs: dict[str, tuple[InputRecord, RunRecord]] = field(default_factory=dict)
    outputs: dict[str, tuple[OutputRecord, RunRecord]] = field(default_factory=dict)
    walked: list[RunRecord] = field(default_factory=list)  # every run in this version's history, newest first
    complete: bool = True  # False when the log no longer reaches back to the table's creation

    @property
    def runs(self) -> list[RunRecord]:
        """The runs whose rows are in this version, newest first."""
        seen: dict[str, RunRecord] = {}
        for _, run in [*self.outputs.values(), *self.inputs.values()]:
            seen.setdefault(run.run_id, run)
        return sorted(seen.values(), key=lambda r: -(r.table_version or 0))

    def scored_fingerprints(self, model_sha256: str) -> dict[str, str]:
        """Input partition -> fingerprint of the files it was last scored from, if with this model."""
        return {
            label: rec.fingerprint for label, (rec, run) in self.inputs.items() if run.model["sha256"] == model_sha256
        }


def history(table_uri: str) -> list[dict[str, Any]]:
    """The table's commits, oldest first, each with its `version` (none for a table not created yet)."""
    try:
        return sorted(delta_table(table_uri).history(), key=lambda c: c["version"])
    except TableNotFoundError:
        return []


def table_state(table_uri: str, version: int | None = None, commits: list[dict] | None = None) -> TableState:
    """Walk the log back from `version` (default: latest): newer records win, a RESTORE jumps to the
    version it restored, and a delete of the whole table (a failed first run's undo) ends the walk."""
    commits = commits if commits is not None else history(table_uri)
    by_version = {c["version"]: c for c in commits}
    latest = max(by_version) if by_version else -1
    version = latest if version is None else version
    state = TableState(table_uri, version)
    current = version
    while current >= 0:
        commit = by_version.get(current)
        if commit is None:
            state.complete = False
            break
        restored = restored_version(commit)
        if restored is not None:
            current = min(restored, current - 1)  # a restore always goes back; never loop
            continue
        if commit.get("operation") == "DELETE" and commit.get(CommitInfo.ROLE) == Role.UNDO:
            break
        if CommitInfo.LINEAGE in commit:
            run = RunRecord.from_json(commit[CommitInfo.LINEAGE], table_version=current)
            state.walked.append(run)
            for read in run.inputs:
                state.inputs.setdefault(read.partition, (read, run))
            for wrote in run.outputs:
                state.outputs.setdefault(wrote.partition, (wrote, run))
        current -= 1
    return state


def recorded_run(table_uri: str, version: int | None, has: str, what: str) -> RunRecord:
    """The run that committed `version` (default: the newest run whose record has `has` set), refused in one line
    naming `what` it lacks."""
    state = table_state(table_uri, version)
    run = next((r for r in state.walked if getattr(r, has)), None)
    if run is None or (version is not None and run.table_version != version):
        which = f"version {version} of {redact_uri(table_uri)}" if version is not None else redact_uri(table_uri)
        raise UsageError(
            f"{which} was not committed by a run that {what}; `score history` lists the versions and their runs"
        )
    return run


def require_version(commits: list[dict[str, Any]], version: int | None, what: str) -> None:
    """Refuse a version the log does not hold, in one line naming the versions it does."""
    known = [commit["version"] for commit in commits]
    if version is not None and known and not known[0] <= version <= known[-1]:
        span = f"versions {known[0]}..{known[-1]}" if len(known) > 1 else f"only version {known[0]}"
        raise UsageError(f"{what} has no version {version} (it has {span})")


def restored_version(commit: dict[str, Any]) -> int | None:
    """The version a RESTORE commit restored (-1 when unknown, e.g. restored by timestamp), else None."""
    if commit.get("operation") != "RESTORE":
        return None
    parameters = commit.get("operationParameters") or {}
    return int(commit.get(CommitInfo.RESTORED_VERSION, parameters.get("version", -1)))


def commits_of_run_key(table_uri: str, run_key: str, replaces: bool = True) -> list[RunRecord]:
    """The commits of `run_key` whose rows the table still holds, newest first: one per run, or one per group
    of a run that commits every N partitions (`output.commit_every`).

    Delta's app transaction (`score-run-key:<key>`) says cheaply whether the key ever committed; a
    RESTORE does not reset it, so the log decides whether each commit is still in this version's history.
    When runs replace partitions (`replaces`), a commit any of whose input partitions a later run re-scored
    (another model, say) is superseded as a whole: its partitions score again.
    """
    try:
        table = delta_table(table_uri)
    except TableNotFoundError:
        return []
    if table.transaction_version(app_id(run_key)) is None:
        return []
    state = table_state(table_uri)
    runs = [run for run in state.walked if run.run_key == run_key]
    if not replaces:
        return runs
    return [
        run
        for run in runs
        if all(state.inputs[rec.partition][1].table_version == run.table_version for rec in run.inputs)
    ]


def made_by(commit: dict[str, Any], run_id: str) -> bool:
    """Whether `commit` is one that run `run_id` made and kept (not its undo of one)."""
    return commit.get(CommitInfo.RUN_ID) == run_id and commit.get(CommitInfo.ROLE) != Role.UNDO


def app_id(run_key: str) -> str:
    return f"score-run-key:{run_key}"


def parse_time(value: str) -> dt.datetime:
    """ISO date or datetime; naive values are UTC (event times in the demo data are)."""
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def describe(table_uri: str, version: int | None = None) -> dict[str, Any]:
    """Lineage of one table version: per run whose rows it holds, everything that run used, with the
    partitions of that run still in this version, and where its MLflow run is (`jobs.tracking.records.
    describe_lineage` adds what the tracking store reports about it).
    A version the log does not hold is a usage error naming the versions it does (else it would list no runs)."""
    commits = history(table_uri)
    require_version(commits, version, f"lineage: table {table_uri.rstrip('/').rsplit('/', 1)[-1]}")
    state = table_state(table_uri, version, commits)
    runs = []
    for run in state.runs:
        live_inputs = [rec for label, (rec, owner) in sorted(state.inputs.items()) if owner.run_id == run.run_id]
        live_outputs = [rec for label, (rec, owner) in sorted(state.outputs.items()) if owner.run_id == run.run_id]
        runs.append(
            {
                "run_id": run.run_id,
                "run_key": run.run_key,
                "job": run.job,
                "committed_version": run.table_version,
                "code_version": run.code_version,
                "code_sha256": run.code_sha256,
                "spec_hash": run.spec_hash,
                "spec": run.spec_yaml,
                "model": run.model,
                "contract": run.contract,
                "input": {
                    "base": run.input_base,
                    "fingerprint": run.input_fingerprint,
                    "partitions": [asdict(rec) for rec in live_inputs],
                },
                "outputs": [asdict(rec) for rec in live_outputs],
                "quarantine": {"table": run.quarantine_table, "version": run.quarantine_version},
                "mlflow": dict(run.tracking),
            }
        )
    return {"table": table_uri, "version": state.version, "complete": state.complete, "runs": runs}


def half_committed_runs(output_uri: str, quarantine_uri: str) -> list[tuple[str, str | None]]:
    """(run id, run key) of the runs whose quarantine commit landed but whose output commit never did: a
    driver that died between its two commits (or is between them now). A re-run of the run key removes
    their quarantined rows, by file name, in its own quarantine commit."""
    output_runs = {c.get(CommitInfo.RUN_ID) for c in history(output_uri)}
    return sorted(
        {
            (c[CommitInfo.RUN_ID], c.get(CommitInfo.RUN_KEY))
            for c in history(quarantine_uri)
            if c.get(CommitInfo.ROLE) == Role.QUARANTINE and c[CommitInfo.RUN_ID] not in output_runs
        }
    )
