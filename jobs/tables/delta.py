"""Delta tables in the warehouse: one atomic commit per run, cleaning up after a failed one, and compaction.

Files written by workers are invisible until the commit names them; a run that fails before committing
deletes its files (and `vacuum` would remove any left behind), so a failed run leaves no partial version.
A run commits against the version its plan saw: if another run committed any of the same partitions
meanwhile, this one fails instead of silently replacing (or duplicating) rows it never saw.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, Schema, Transaction, WriterProperties
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions
from pyarrow import fs as pafs

from jobs import hive
from jobs.column_types import widens
from jobs.errors import RetryableFailure, RuntimeFailure, UsageError, one_line
from jobs.hive import PartitionValue
from jobs.inputs import Partition
from jobs.spec.schema import TARGET_FILE_MB
from jobs.storage import delta_options, delta_table, filesystem
from jobs.tables.lineage import LOG_RETENTION, CommitInfo, Role, app_id, half_committed_runs, history, made_by


@dataclass(frozen=True)
class TableTarget:
    """One Delta table a run writes: defined by the plan, used by the writers and the commit.

    Every file written holds the rows of exactly one input partition (its `input_partitioning` values are
    the file's partition values plus, for input partition columns the table is not partitioned by, equal
    min/max statistics), so a re-run can replace exactly the rows of the input partitions it scored even
    when the table is partitioned more coarsely than the input."""

    uri: str
    schema: pa.Schema
    partition_by: tuple[str, ...]
    input_partitioning: tuple[str, ...] = ()
    read_version: int | None = None  # the version the plan saw (None: the table did not exist)


QUARANTINE_SUFFIX = "__quarantine"


CHALLENGER_SUFFIX = "__challenger"


def challenger_table(table: str) -> str:
    """The name of the table that holds the scores of `table`'s challenger model (model.challenger)."""
    return f"{table}{CHALLENGER_SUFFIX}"


def quarantine_table(table: str) -> str:
    """The name of the table that holds the failing rows of `table`'s runs."""
    return f"{table}{QUARANTINE_SUFFIX}"


# How often a commit is re-checked and retried when other runs' commits land first.
MAX_COMMIT_ATTEMPTS = 50


def commit(
    target: TableTarget,
    files: list[dict],
    replace: list[Partition],
    metadata: dict[str, Any],
    run_key: str | None = None,
    discard_runs: Sequence[str] = (),
) -> int:
    """Commit written files as one new table version and return it.

    In the same transaction it removes the files holding the rows of the input partitions in `replace`
    (empty for `append`) and every file of the runs in `discard_runs` (a dead run's half-committed rows).
    `metadata[CommitInfo.PARTITIONS]` names the input partitions this run read: commits made since the plan's
    `read_version` that touched any of them fail this run. The check and the commit are one atomic step:
    the commit is made at exactly the version after the one checked (no automatic rebase), and when another
    commit lands first, the new commits are checked and the commit is tried again on top of them.
    `run_key` is recorded as a Delta app transaction, so that a retry can tell it already committed.
    """
    adds = [
        AddAction(f["path"], f["size"], f["partition_values"], f["modification_time"], True, f["stats"]) for f in files
    ]
    table_uri, partition_by = target.uri, list(target.partition_by) or None
    partitions = metadata[CommitInfo.PARTITIONS].split(",")
    for _ in range(MAX_COMMIT_ATTEMPTS):
        try:
            table = delta_table(table_uri)
        except TableNotFoundError:
            try:
                create_table_with_add_actions(
                    table_uri,
                    Schema.from_arrow(target.schema),
                    adds,
                    mode="error",
                    partition_by=partition_by,
                    configuration={"delta.logRetentionDuration": LOG_RETENTION},
                    storage_options=delta_options(table_uri),
                    commit_properties=_properties(None, metadata, run_key),
                )
                return 0
            except (DeltaError, OSError) as exc:  # OSError: the storage refused (a full disk, a read-only mount)
                if _landed(table_uri, metadata[CommitInfo.RUN_ID], -1) is not None:
                    return 0  # it landed; what failed came after
                if current_version(table_uri) is None:
                    raise RuntimeFailure(f"table {table_uri}: creating the table failed: {one_line(exc)}") from None
                continue  # another run created it first: check its commit like any other
        base = table.version()
        _check_no_overlap(table, table_uri, target.read_version, partitions)
        removes = _removals(table, target, replace, discard_runs)
        try:
            table.create_write_transaction(
                [*adds, *removes],
                mode="append",
                schema=target.schema,
                partition_by=partition_by,
                commit_properties=_properties(table, metadata, run_key),
            )
            return base + 1
        except CommitFailedError as exc:
            landed = _landed(table_uri, metadata[CommitInfo.RUN_ID], base)
            if landed is not None:
                return landed
            if current_version(table_uri) == base:  # nothing landed meanwhile: not a race, a real failure
                raise RuntimeFailure(f"table {table_uri}: commit failed: {one_line(exc)}") from None
        except (DeltaError, OSError) as exc:  # OSError: the storage refused (a full disk, a read-only mount)
            landed = _landed(table_uri, metadata[CommitInfo.RUN_ID], base)
            if landed is not None:
                return landed  # it landed; what failed came after
            raise RuntimeFailure(f"table {table_uri}: commit failed: {one_line(exc)}") from None
    raise RetryableFailure(
        f"table {table_uri}: other commits kept landing first ({MAX_COMMIT_ATTEMPTS} attempts); "
        "nothing was written by this run: re-run it"
    )


def _properties(table, metadata: dict[str, Any], run_key: str | None):
    """Commit metadata (strings), the run key's app transaction, and no automatic rebase onto newer commits."""
    transactions = None
    if run_key:
        previous = table.transaction_version(app_id(run_key)) if table is not None else None
        transactions = [Transaction(app_id(run_key), (previous or 0) + 1)]
    return CommitProperties(
        custom_metadata={k: str(v) for k, v in metadata.items() if v is not None},
        app_transactions=transactions,
        max_commit_retries=0,
    )


def _landed(table_uri: str, run_id: str, base: int) -> int | None:
    """The version this run committed after `base`, when a commit reported failure but was written."""
    try:
        table = delta_table(table_uri)
    except TableNotFoundError:
        return None
    newer = table.version() - base
    if newer <= 0:
        return None
    return next((c["version"] for c in table.history(newer) if made_by(c, run_id)), None)


def _removals(table, target: TableTarget, replace: list[Partition], discard_runs: Sequence[str]) -> list:
    """Remove actions for the files holding rows of the input partitions in `replace`, and for every file
    of the runs in `discard_runs`."""
    if not replace and not discard_runs:
        return []
    wanted = {tuple(v for _, v in p) for p in replace}
    touched = {tuple(dict(p)[c] for c in target.partition_by) for p in replace}
    markers = tuple(run_marker(run_id) for run_id in discard_runs)
    now = int(time.time() * 1000)
    removes = []
    for action in pa.table(table.get_add_actions(flatten=True)).to_pylist():
        values = {c: action.get(f"partition.{c}") for c in target.partition_by}
        doomed = bool(markers) and any(m in action["path"].rsplit("/", 1)[-1] for m in markers)
        if not doomed and tuple(values.values()) in touched:
            doomed = _input_partition(action, target) in wanted
        if doomed:
            removes.append(RemoveAction(_file_of(action, target), True, now, action["size_bytes"], values))
    return removes


def _file_of(action: dict[str, Any], target: TableTarget) -> str:
    """The path to name in a remove action for a live file: the log holds it URI-encoded and delta-rs encodes
    what it is given, so it is given the decoded path. A path that would not encode back to exactly what the log
    holds (written by a tool that encodes otherwise) would remove nothing and leave the file live: refused."""
    path = hive.file_path(action["path"])
    if hive.log_path(path) != action["path"]:
        raise RuntimeFailure(
            f"table {target.uri}: file {action['path']} is named in the log in an encoding this writer cannot "
            "reproduce, so a re-run could not remove its rows (was it written by another tool?); nothing was "
            "written by this run: re-score its whole output partition into a new table"
        )
    return path


def _input_partition(action: dict[str, Any], target: TableTarget) -> tuple[PartitionValue, ...]:
    """The input partition whose rows one file holds: partition values, else equal min/max statistics (no
    bounds and every row null: the null partition)."""
    values: list[PartitionValue] = []
    for column in target.input_partitioning:
        if column in target.partition_by:
            values.append(action.get(f"partition.{column}"))
            continue
        low, high = action.get(f"min.{column}"), action.get(f"max.{column}")
        if low is None and high is None and action.get(f"null_count.{column}") == action.get("num_records"):
            values.append(None)
            continue
        if low is None or low != high:
            raise RuntimeFailure(
                f"table {target.uri}: file {action['path']} holds rows of several (or unknown) {column} values, "
                "so the rows of one input partition cannot be replaced alone (was it written by another tool?); "
                "nothing was written by this run: re-score its whole output partition or write to a new table"
            )
        values.append(low)
    return tuple(values)


# Operations that change no rows: a run that overlaps them in time has nothing to fear from them.
_NO_DATA_CHANGE = {"VACUUM START", "VACUUM END", "OPTIMIZE", "SET TBLPROPERTIES", "UPGRADE PROTOCOL"}


def _check_no_overlap(table, table_uri: str, read_version: int | None, partitions: list[str]) -> None:
    """Fail when a commit made since the plan's `read_version` touched any of `partitions` (or may
    have: a rollback or a commit by another tool counts as touching everything)."""
    newer = table.version() - (-1 if read_version is None else read_version)
    if newer <= 0:
        return
    for commit in sorted(table.history(newer), key=lambda c: c["version"]):
        operation = commit.get("operation", "")
        if operation in _NO_DATA_CHANGE:
            continue
        touched = commit.get(CommitInfo.PARTITIONS)
        where = f"table {table_uri}: version {commit['version']}"
        if touched is None:
            raise RetryableFailure(
                f"{where} ({operation}) was committed while this run was scoring; nothing was written by "
                "this run: run it again to score against the new version"
            )
        overlap = sorted(set(partitions) & set(touched.split(",")))
        if overlap:
            raise RetryableFailure(
                f"{where} was committed by run {commit.get(CommitInfo.RUN_ID)} (job {commit.get(CommitInfo.JOB)}) "
                f"while this run was scoring the same partition(s) {', '.join(overlap[:5])}; nothing was "
                "written by this run: re-run it if its result is still wanted"
            )


def run_marker(run_id: str) -> str:
    """The part of the names of the files a run writes that says which run wrote them."""
    return f"-{run_id[:12]}-"


def current_version(table_uri: str) -> int | None:
    try:
        return delta_table(table_uri).version()
    except TableNotFoundError:
        return None


def undo_commit(table_uri: str, committed: int, previous: int | None, run_id: str) -> str | None:
    """Undo this run's commit `committed`: restore `previous` (or empty a table the run created).

    Only while that commit is still the latest: restoring over another run's later commit would drop it.
    Returns why it could not undo, for the error message, else None.
    """
    table = delta_table(table_uri)
    if table.version() != committed:
        return (
            f"{table_uri} version {committed} holds this run's rows and could not be undone: other "
            f"commits followed it; roll it back with `score rollback`"
        )
    metadata = {CommitInfo.RUN_ID: run_id, CommitInfo.ROLE: Role.UNDO}
    try:
        if previous is None:
            table.delete(commit_properties=CommitProperties(custom_metadata=metadata))
        else:
            metadata[CommitInfo.RESTORED_VERSION] = str(previous)
            table.restore(previous, commit_properties=CommitProperties(custom_metadata=metadata))
    except (DeltaError, OSError) as exc:
        return (
            f"{table_uri} version {committed} holds this run's rows and could not be undone ({one_line(exc)}); "
            "a re-run of the same run key removes them"
        )
    return None


def settled(target: TableTarget, read_as: pa.Schema | None = None) -> TableTarget:
    """`target` as an existing table takes it: with the table's current version (the version the run reads) and,
    for the columns copied from the input (`read_as`: their types in the run), the table's type where every
    value the run reads casts to it without loss: int32 files after float64 ones, an int32 id in a table of an
    earlier release. Refuses, before any data is read, a partitioning, column set or type the table does not
    have."""
    table_uri, partition_by = target.uri, list(target.partition_by)
    try:
        table = delta_table(table_uri)
    except TableNotFoundError:
        return target
    existing_partitions = list(table.metadata().partition_columns)
    if existing_partitions != list(partition_by):
        raise UsageError(
            f"table {table_uri} is partitioned by {existing_partitions}, the job asks for {partition_by}: "
            "change output.partition_by or write to a new output.table"
        )
    held = pa.schema(table.schema().to_arrow())
    copied = {f.name: f.type for f in read_as or ()}

    def kept(f: pa.Field) -> bool:
        return f.name in copied and f.name in held.names and widens(copied[f.name], held.field(f.name).type)

    schema = pa.schema([held.field(f.name) if kept(f) else f for f in target.schema])

    def types(delta_schema: Schema) -> dict[str, str]:
        return {f["name"]: json.dumps(f["type"]) for f in json.loads(delta_schema.to_json())["fields"]}

    old, new = types(table.schema()), types(Schema.from_arrow(schema))
    changed = [f"{n} ({old[n]} -> {new[n]})" for n in new if n in old and old[n] != new[n]]
    if changed or set(old) != set(new):
        raise UsageError(
            f"table {table_uri} has columns {list(old)}; this job writes {list(new)}"
            + (f"; changed types: {changed}" if changed else "")
            + ": write to a new output.table or migrate the table"
        )
    return replace(target, schema=schema, read_version=table.version())


def discard_run_files(table_uri: str, run_id: str, after_version: int | None) -> int:
    """Delete the files a failed run wrote but never committed (they carry the run id in their names).

    A file that any log entry after `after_version` (the version the run's plan saw) adds is never
    deleted: the run may have failed, or been interrupted, after its commit landed."""
    fs, root = filesystem(table_uri)
    marker = run_marker(run_id)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError:
        return 0
    committed = _added_since(fs, root, after_version)
    doomed = [
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and marker in i.base_name
        and not i.path.startswith(f"{root}/_delta_log/")
        and i.path[len(root) + 1 :] not in committed
    ]
    for path in doomed:
        fs.delete_file(path)
    if isinstance(fs, pafs.LocalFileSystem):  # object stores have no folders to leave behind
        _remove_empty_folders(root, {p.rsplit("/", 1)[0] for p in doomed})
    return len(doomed)


def _remove_empty_folders(root: str, folders: set[str]) -> None:
    """Remove the partition folders a failed run's files emptied, and the table's folder when nothing is left
    (a first run that failed): a folder without a Delta log is not a table, but readers stumble on it. An empty
    `_delta_log` goes too: a first commit that failed on a full disk leaves one."""
    for folder in sorted(folders | {root, f"{root}/_delta_log"}, key=lambda f: -f.count("/")):
        while folder.startswith(root):
            try:
                os.rmdir(folder)
            except OSError:  # not empty (other runs' files, the log) or already gone
                break
            if folder == root:
                break
            folder = folder.rsplit("/", 1)[0]


def _added_since(fs, root: str, after_version: int | None) -> set[str]:
    """Paths (relative to the table) that the log's commit files after `after_version` add."""
    added: set[str] = set()
    version = -1 if after_version is None else after_version
    while True:
        version += 1
        try:
            with fs.open_input_stream(f"{root}/_delta_log/{version:020d}.json") as handle:
                lines = handle.read().decode().splitlines()
        except FileNotFoundError:
            return added
        for line in lines:
            action = json.loads(line).get("add") if line.strip() else None
            if action:
                added.add(hive.file_path(action["path"]))


def optimize(table_uri: str, target_mb: float | None = None) -> dict[str, Any]:
    """Compact small files into files of about `target_mb` with delta-rs's own optimize: one new version
    (role `optimize` in `score history`) with the same rows; earlier versions stay readable until vacuumed.

    delta-rs compacts within an output partition, and every file must keep holding one input partition's
    rows (a re-run replaces exactly those files), so a table whose runs read input partitions finer than its
    output partitions is refused, and so is a quarantine table still holding a dead run's rows (its re-run
    finds them by file name)."""
    target_mb = TARGET_FILE_MB if target_mb is None else target_mb
    if not target_mb > 0:
        raise UsageError(f"optimize {table_uri}: --target-size {target_mb:g}: give a size in MB above 0")
    table = delta_table(table_uri)
    _check_compactable(table, table_uri)
    version, (files, rows) = table.version(), _files_and_rows(table)
    properties = CommitProperties(
        custom_metadata={
            CommitInfo.ROLE: Role.OPTIMIZE,
            CommitInfo.USER: getpass.getuser(),
            CommitInfo.TARGET_FILE_MB: f"{target_mb:g}",
        }
    )
    try:
        metrics = table.optimize.compact(
            target_size=int(target_mb * 2**20),
            commit_properties=properties,
            writer_properties=WriterProperties(compression="ZSTD"),
        )
    except DeltaError as exc:
        raise RuntimeFailure(f"optimize {table_uri}: {exc}; the table was not changed: run it again") from None
    files_after, rows_after = _files_and_rows(table)
    return {
        "table": table_uri,
        "version_before": version,
        "version": table.version(),
        "files_before": files,
        "files_after": files_after,
        "rows_before": rows,
        "rows_after": rows_after,
        "files_added": metrics["numFilesAdded"],
        "files_removed": metrics["numFilesRemoved"],
        "target_file_mb": target_mb,
    }


def _files_and_rows(table) -> tuple[int, int]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return actions.num_rows, sum(actions.column("num_records").to_pylist()) if actions.num_rows else 0


def _check_compactable(table, table_uri: str) -> None:
    """Refuse to compact files whose rows a re-run or a retry must still find file by file."""
    commits = history(table_uri)
    partition_by = list(table.metadata().partition_columns)
    read_by = sorted(
        {
            part.split("=", 1)[0]
            for commit in commits
            for label in (commit.get(CommitInfo.PARTITIONS) or "").split(",")
            for part in label.split("/")
            if "=" in part
        }
    )
    finer = [column for column in read_by if column not in partition_by]
    if finer:
        raise UsageError(
            f"optimize {table_uri}: runs read this table's input partitions by {read_by}, but it is partitioned "
            f"by {partition_by or 'nothing'}: compaction would merge rows of different {finer} values into one "
            "file, and a re-run of one input partition could then no longer replace its rows alone; only a table "
            f"partitioned by every input partition column can be compacted (output.partition_by: {read_by}, "
            "in a new output.table)"
        )
    if not table_uri.rstrip("/").endswith(QUARANTINE_SUFFIX):
        return
    names = [uri.rsplit("/", 1)[-1] for uri in table.file_uris()]
    dead = [
        (run_id, run_key)
        for run_id, run_key in half_committed_runs(table_uri.rstrip("/")[: -len(QUARANTINE_SUFFIX)], table_uri)
        if any(run_marker(run_id) in name for name in names)
    ]
    if dead:
        run_id, run_key = dead[0]
        raise UsageError(
            f"optimize {table_uri}: it holds quarantined rows of run {run_id}, whose output commit never landed "
            f"(still running, or died); its re-run (run key {run_key}) removes them by file name, which "
            "compaction would hide: run that first, then optimize"
        )
