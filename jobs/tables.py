"""Delta tables in the warehouse: one atomic commit per run, and cleaning up after a failed one.

Files written by workers are invisible until the commit names them; a run that fails before committing
deletes its files (and `vacuum` would remove any left behind), so a failed run leaves no partial version.
A run commits against the version its plan saw: if another run committed any of the same partitions
meanwhile, this one fails instead of silently replacing (or duplicating) rows it never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from jobs.errors import RuntimeFailure, UsageError
from jobs.storage import filesystem


@dataclass(frozen=True)
class TableTarget:
    """One Delta table a run writes: defined by the plan, used by the writers and the commit."""

    uri: str
    schema: pa.Schema
    partition_by: tuple[str, ...]
    read_version: int | None = None  # the version the plan saw (None: the table did not exist)


def commit(
    target: TableTarget,
    files: list[dict],
    mode: str,
    replace: dict[str, list[str]],
    metadata: dict[str, Any],
    run_key: str | None = None,
) -> int:
    """Commit written files as one new table version and return it.

    `mode` is `append` or `overwrite_partitions`; the latter removes the files of exactly the partitions in
    `replace` (column -> values) in the same transaction. `metadata["score.partitions"]` names the input
    partitions this run read: the overlap check compares them with what committed since `read_version`.
    `run_key` is recorded as a Delta app transaction, so that a retry can tell it already committed.
    """
    from deltalake import CommitProperties, DeltaTable, Schema, Transaction
    from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
    from deltalake.transaction import AddAction, create_table_with_add_actions

    from jobs.lineage import LOG_RETENTION, app_id

    actions = [
        AddAction(f["path"], f["size"], f["partition_values"], f["modification_time"], True, f["stats"])
        for f in files
    ]
    table_uri, schema, partition_by = target.uri, target.schema, list(target.partition_by)

    def properties(table=None) -> CommitProperties:
        transactions = None
        if run_key:
            previous = table.transaction_version(app_id(run_key)) if table is not None else None
            transactions = [Transaction(app_id(run_key), (previous or 0) + 1)]
        return CommitProperties(custom_metadata={k: str(v) for k, v in metadata.items() if v is not None},
                                app_transactions=transactions)

    try:
        try:
            table = DeltaTable(table_uri)
        except TableNotFoundError:
            try:
                create_table_with_add_actions(
                    table_uri,
                    Schema.from_arrow(schema),
                    actions,
                    mode="error",
                    partition_by=partition_by or None,
                    configuration={"delta.logRetentionDuration": LOG_RETENTION},
                    commit_properties=properties(),
                )
            except DeltaError as exc:
                raise RuntimeFailure(f"table {table_uri}: another run created the table first; nothing was "
                                     f"written by this run: re-run it if its result is still wanted ({exc})") from None
            return DeltaTable(table_uri).version()
        _check_no_overlap(table, table_uri, target.read_version, metadata["score.partitions"].split(","))
        filters = [(col, "in", values) for col, values in replace.items()] if mode == "overwrite_partitions" else None
        table.create_write_transaction(
            actions,
            mode="overwrite" if filters else "append",
            schema=schema,
            partition_by=partition_by or None,
            partition_filters=filters,
            commit_properties=properties(table),
        )
        table.update_incremental()
        return table.version()
    except CommitFailedError as exc:
        raise RuntimeFailure(
            f"table {table_uri}: another run committed to the same partitions first; nothing was written "
            f"by this run ({exc})"
        ) from None
    except DeltaError as exc:
        raise RuntimeFailure(f"table {table_uri}: commit failed: {exc}") from None


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
        touched = commit.get("score.partitions")
        where = f"table {table_uri}: version {commit['version']}"
        if touched is None:
            raise RuntimeFailure(
                f"{where} ({operation}) was committed while this run was scoring; nothing was written by "
                "this run: run it again to score against the new version"
            )
        overlap = sorted(set(partitions) & set(touched.split(",")))
        if overlap:
            raise RuntimeFailure(
                f"{where} was committed by run {commit.get('score.run_id')} (job {commit.get('score.job')}) "
                f"while this run was scoring the same partition(s) {', '.join(overlap[:5])}; nothing was "
                "written by this run: re-run it if its result is still wanted"
            )


def current_version(table_uri: str) -> int | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table_uri).version()
    except TableNotFoundError:
        return None


def undo_commit(table_uri: str, committed: int, previous: int | None, run_id: str) -> str | None:
    """Undo this run's commit `committed`: restore `previous` (or empty a table the run created).

    Only while that commit is still the latest: restoring over another run's later commit would drop it.
    Returns why it could not undo, for the error message, else None.
    """
    from deltalake import CommitProperties, DeltaTable

    table = DeltaTable(table_uri)
    if table.version() != committed:
        return (f"{table_uri} version {committed} holds this run's rows and could not be undone: other "
                f"commits followed it; roll it back with `score rollback`")
    metadata = {"score.run_id": run_id, "score.role": "undo"}
    if previous is None:
        table.delete(commit_properties=CommitProperties(custom_metadata=metadata))
    else:
        metadata["score.restored_version"] = str(previous)
        table.restore(previous, commit_properties=CommitProperties(custom_metadata=metadata))
    return None


def check_compatible(target: TableTarget) -> int | None:
    """Refuse, before any data is read, to write a schema or partitioning an existing table does not have.

    Returns the table's current version (None when it does not exist yet): the version the run reads."""
    table_uri, schema, partition_by = target.uri, target.schema, list(target.partition_by)
    from deltalake import DeltaTable, Schema
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(table_uri)
    except TableNotFoundError:
        return None
    existing_partitions = list(table.metadata().partition_columns)
    if existing_partitions != list(partition_by):
        raise UsageError(
            f"table {table_uri} is partitioned by {existing_partitions}, the job asks for {partition_by}: "
            "change output.partition_by or write to a new output.table"
        )
    def types(delta_schema) -> dict[str, str]:
        return {f["name"]: json.dumps(f["type"]) for f in json.loads(delta_schema.to_json())["fields"]}

    old, new = types(table.schema()), types(Schema.from_arrow(schema))
    changed = [f"{n} ({old[n]} -> {new[n]})" for n in new if n in old and old[n] != new[n]]
    if changed or set(old) != set(new):
        raise UsageError(
            f"table {table_uri} has columns {list(old)}; this job writes {list(new)}"
            + (f"; changed types: {changed}" if changed else "")
            + ": write to a new output.table or migrate the table"
        )
    return table.version()


def discard_run_files(table_uri: str, run_id: str) -> int:
    """Delete the files a failed run wrote but never committed (they carry the run id in their names)."""
    from pyarrow import fs as pafs

    fs, root = filesystem(table_uri)
    marker = f"-{run_id[:12]}-"
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError:
        return 0
    doomed = [i.path for i in infos if i.type == pafs.FileType.File and marker in i.base_name]
    for path in doomed:
        fs.delete_file(path)
    return len(doomed)
