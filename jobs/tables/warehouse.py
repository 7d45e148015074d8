"""The tables in the warehouse, as operators see them: list, history, rollback, vacuum.

A table is named by its folder under the warehouse (`churn_scores`) or given as a path or URI. Every
change made here is itself a Delta commit that records who asked and why.
"""

from __future__ import annotations

import datetime as dt
import getpass
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties
from deltalake.exceptions import DeltaError
from pyarrow import fs as pafs

from jobs.errors import UsageError
from jobs.spec.durations import format_duration, parse_duration
from jobs.storage import delta_table, filesystem, join_uri
from jobs.tables.delta import current_version
from jobs.tables.freshness import newest_partition
from jobs.tables.lineage import CommitInfo, Role, history, parse_time, restored_version, table_state

# Delta's promise for time travel when the table does not set delta.deletedFileRetentionDuration.
DEFAULT_RETENTION_HOURS = 168


@dataclass(frozen=True)
class TableInfo:
    name: str
    uri: str
    version: int
    rows: int
    files: int
    updated_at: str
    newest_partition: str | None
    watermark: str | None
    age: str | None  # now minus the newest partition's watermark: what `score freshness` judges


def table_names(warehouse: str) -> list[str]:
    """Folders of the warehouse that hold a Delta log."""
    fs, root = filesystem(warehouse)
    try:
        folders = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return []
    names = []
    for folder in folders:
        if folder.type == pafs.FileType.Directory:
            log = fs.get_file_info(f"{folder.path}/_delta_log")
            if log.type == pafs.FileType.Directory:
                names.append(folder.base_name)
    return sorted(names)


def table_uri(table: str, warehouse: str) -> str:
    """A name in the warehouse, or a path or URI as given; refuses one that holds no Delta table."""
    uri = table if ("/" in table or "://" in table) else join_uri(warehouse, table)
    if current_version(uri) is None:
        names = table_names(warehouse)
        raise UsageError(
            f"table {table}: no Delta table at {uri}; tables in {warehouse}: {', '.join(names) if names else '(none)'}"
        )
    return uri


def describe(name: str, uri: str) -> TableInfo:
    table = delta_table(uri)
    actions = pa.table(table.get_add_actions(flatten=True))
    commits = history(uri)
    state = table_state(uri, commits=commits)
    newest = newest_partition(state)
    return TableInfo(
        name=name,
        uri=uri,
        version=table.version(),
        rows=sum(actions.column("num_records").to_pylist()) if actions.num_rows else 0,
        files=actions.num_rows,
        updated_at=_when(commits[-1]["timestamp"]),
        newest_partition=newest.partition if newest else None,
        watermark=newest.watermark if newest else None,
        age=format_duration(dt.datetime.now(dt.UTC) - parse_time(newest.watermark or newest.scored_at))
        if newest
        else None,
    )


def versions(uri: str, limit: int | None = None) -> list[dict[str, Any]]:
    """One row per version, newest first: what changed, by which run, job and model, and how many rows."""
    rows = []
    for commit in reversed(history(uri)):
        metrics = commit.get("operationMetrics") or {}
        rows.append(
            {
                "version": commit["version"],
                "time": _when(commit["timestamp"]),
                "operation": commit.get("operation"),
                "role": commit.get(CommitInfo.ROLE, "run" if CommitInfo.RUN_ID in commit else ""),
                "run_id": commit.get(CommitInfo.RUN_ID),
                "job": commit.get(CommitInfo.JOB),
                "model_version": commit.get(CommitInfo.MODEL_VERSION),
                "partitions": commit.get(CommitInfo.PARTITIONS),
                "rows": int(commit[CommitInfo.ROWS]) if CommitInfo.ROWS in commit else metrics.get("num_added_rows"),
                "restored_version": restored_version(commit),
                "reason": commit.get(CommitInfo.REASON),
                "cost": commit.get(CommitInfo.COST),
                "by": commit.get(CommitInfo.USER),
            }
        )
    return rows[:limit] if limit else rows


def rollback(uri: str, version: int, reason: str) -> dict[str, Any]:
    """Restore `version` of the table as a new version, recording why and who; and its quarantine table
    to the version the same runs left it at, so the two stay in step."""
    if not reason.strip():
        raise UsageError("rollback: give --reason: it is recorded in the table's history")
    table = delta_table(uri)
    current = table.version()
    if not 0 <= version < current:
        raise UsageError(f"rollback {uri}: version {version} is not an earlier version (current is {current})")
    state = table_state(uri, version)
    properties = {
        CommitInfo.ROLE: Role.ROLLBACK,
        CommitInfo.REASON: reason,
        CommitInfo.USER: getpass.getuser(),
        CommitInfo.RESTORED_VERSION: version,
        CommitInfo.ROLLED_BACK_FROM: current,
    }
    done: dict[str, Any] = {"table": uri, "restored_version": version}
    try:
        table.restore(version, commit_properties=CommitProperties(custom_metadata=_strings(properties)))
    except DeltaError as exc:
        raise UsageError(f"rollback {uri} to version {version}: {exc} (vacuumed files cannot be restored)") from None
    done["version"] = delta_table(uri).version()
    run = next(iter(state.walked), None)
    if run and run.quarantine_table and run.quarantine_version is not None:
        quarantine = delta_table(run.quarantine_table)
        if quarantine.version() != run.quarantine_version:
            quarantine.restore(
                run.quarantine_version,
                commit_properties=CommitProperties(
                    custom_metadata=_strings({**properties, CommitInfo.RESTORED_VERSION: run.quarantine_version})
                ),
            )
        done["quarantine"] = {
            "table": run.quarantine_table,
            "restored_version": run.quarantine_version,
            "version": delta_table(run.quarantine_table).version(),
        }
    return done


def drop(warehouse: str, names: list[str]) -> list[dict[str, Any]]:
    """Delete the tables `names` of the warehouse, folders and logs, each only if it holds a Delta log (nothing
    else is ever deleted): what was dropped, each with its last version and file count."""
    fs, root = filesystem(warehouse)
    dropped = []
    for name in names:
        uri = join_uri(warehouse, name)
        version = current_version(uri)
        if version is None:
            continue
        files = len(delta_table(uri).file_uris())
        fs.delete_dir(f"{root.rstrip('/')}/{name}")
        dropped.append({"table": name, "uri": uri, "version": version, "files": files})
    return dropped


def vacuum(uri: str, retention: str | None, dry_run: bool) -> dict[str, Any]:
    """Delete files no version within the retention period needs: files removed from the table longer
    ago than the retention, and files never committed (a killed run's) older than it.

    Refuses a retention shorter than the table promises (delta.deletedFileRetentionDuration, 7 days by
    default): versions inside that window must stay readable.
    """
    table = delta_table(uri)
    promised = _promised_hours(table)
    try:
        hours = promised if retention is None else parse_duration(retention).total_seconds() / 3600
    except ValueError as exc:
        raise UsageError(f"vacuum {uri}: --retention {exc}") from None
    if hours < promised:
        raise UsageError(
            f"vacuum {uri}: retention {retention} is shorter than the {format_duration(dt.timedelta(hours=promised))} "
            "this table promises for time travel (delta.deletedFileRetentionDuration); vacuuming with it "
            "would break versions inside that window"
        )
    properties = CommitProperties(custom_metadata={CommitInfo.ROLE: Role.VACUUM, CommitInfo.USER: getpass.getuser()})
    removed = table.vacuum(retention_hours=int(hours), dry_run=dry_run, full=True, commit_properties=properties)
    return {"table": uri, "retention_hours": hours, "dry_run": dry_run, "files": sorted(removed)}


_INTERVAL_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def _promised_hours(table) -> float:
    """The table's delta.deletedFileRetentionDuration ("interval 7 days") in hours."""
    setting = table.metadata().configuration.get("delta.deletedFileRetentionDuration")
    if not setting:
        return DEFAULT_RETENTION_HOURS
    amount, unit = setting.removeprefix("interval").split()[:2]
    return float(amount) * _INTERVAL_UNITS[unit.lower().rstrip("s")] / 3600


def _when(timestamp_ms: int) -> str:
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _strings(values: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items()}
