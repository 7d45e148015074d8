"""Delta tables in the warehouse: one atomic commit per run, and cleaning up after a failed one.

Files written by workers are invisible until the commit names them; a run that fails before committing
deletes its files (and `vacuum` would remove any left behind), so a failed run leaves no partial version.
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


def commit(
    target: TableTarget,
    files: list[dict],
    mode: str,
    replace: dict[str, list[str]],
    metadata: dict[str, Any],
) -> int:
    """Commit written files as one new table version and return it.

    `mode` is `append` or `overwrite_partitions`; the latter removes the files of exactly the partitions in
    `replace` (column -> values) in the same transaction.
    """
    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
    from deltalake.transaction import AddAction, create_table_with_add_actions

    actions = [
        AddAction(f["path"], f["size"], f["partition_values"], f["modification_time"], True, f["stats"])
        for f in files
    ]
    table_uri, schema, partition_by = target.uri, target.schema, list(target.partition_by)
    properties = CommitProperties(custom_metadata={k: str(v) for k, v in metadata.items()})
    try:
        try:
            table = DeltaTable(table_uri)
        except TableNotFoundError:
            create_table_with_add_actions(
                table_uri,
                Schema.from_arrow(schema),
                actions,
                mode="error",
                partition_by=partition_by or None,
                commit_properties=properties,
            )
            return DeltaTable(table_uri).version()
        filters = [(col, "in", values) for col, values in replace.items()] if mode == "overwrite_partitions" else None
        table.create_write_transaction(
            actions,
            mode="overwrite" if filters else "append",
            schema=schema,
            partition_by=partition_by or None,
            partition_filters=filters,
            commit_properties=properties,
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


def current_version(table_uri: str) -> int | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table_uri).version()
    except TableNotFoundError:
        return None


def restore(table_uri: str, version: int | None, run_id: str) -> None:
    """Undo this run's commit to a table: restore the previous version (or empty a table it created)."""
    from deltalake import CommitProperties, DeltaTable

    table = DeltaTable(table_uri)
    properties = CommitProperties(custom_metadata={"score.run_id": run_id, "score.role": "undo"})
    if version is None:
        table.delete(commit_properties=properties)
    else:
        table.restore(version, commit_properties=properties)


def check_compatible(target: TableTarget) -> None:
    """Refuse, before any data is read, to write a schema or partitioning an existing table does not have."""
    table_uri, schema, partition_by = target.uri, target.schema, list(target.partition_by)
    from deltalake import DeltaTable, Schema
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(table_uri)
    except TableNotFoundError:
        return
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
