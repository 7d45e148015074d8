"""Read-only SQL over the warehouse's tables by name, with DuckDB, at the latest or a given version.

DuckDB 2.0 has no bundled Delta extension and none can be downloaded offline, so each table the query
reads is registered as the Arrow dataset of one Delta version (`DeltaTable(uri, version).to_pyarrow_dataset()`):
DuckDB pushes projections and filters into it, and the version is exact.

The dataset reads its files through a native pyarrow filesystem, not deltalake's default (a Python object):
Arrow reads ahead on its I/O threads, and when DuckDB stops early (LIMIT, --max-rows) reads still in
flight would call into Python while the interpreter exits, which crashes or hangs the process. The
result is read through a stream of at most `max_rows` + 1 rows, and the stream and connection are closed
before returning.

Only one SELECT (or EXPLAIN) statement runs, on a connection sandboxed from the moment it opens (before
DuckDB binds the query, which already reads a file for `read_csv`): no files or URLs, no extensions, no
ATTACH, and its configuration is locked so the query cannot undo that. The registered tables are
in-memory Arrow objects, so they stay readable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from deltalake.exceptions import DeltaError

from jobs.errors import UsageError, first_line
from jobs.storage import delta_dataset, delta_table, join_uri
from jobs.tables.lineage import history, require_version
from jobs.tables.warehouse import table_names

READ_ONLY = ("SELECT", "EXPLAIN")
DEFAULT_MAX_ROWS = 10_000
SANDBOX: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
SANDBOX_HINT = "score query reads the warehouse's tables by name only: no files, URLs, ATTACH, extensions or settings"


@dataclass(frozen=True)
class QueryResult:
    """The rows to print, and whether the limit cut them (the caller says so)."""

    table: pa.Table  # at most max_rows rows
    truncated: bool  # the query returned more rows than max_rows


def run_query(
    sql: str,
    warehouse: str,
    versions: dict[str, int] | None = None,
    version: int | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> QueryResult:
    """Run `sql` over the tables it reads. `versions` pins tables (name -> version); `version` pins the
    one table of a single-table query. At most `max_rows` rows are read (0: all)."""

    con = duckdb.connect(config=SANDBOX)
    try:
        _lock(con)
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise _usage(exc, warehouse, []) from None
        kinds = [s.type.name for s in statements]
        if len(kinds) != 1 or kinds[0] not in READ_ONLY:
            raise UsageError(
                f"query: give one SELECT statement (got {', '.join(kinds) or 'nothing'}); tables are read-only here"
            )
        available = table_names(warehouse)
        named = _tables_read(con, sql, available, warehouse)
        pins = _pins(named, versions or {}, version)
        for name in sorted(named):
            con.register(name, _dataset(name, join_uri(warehouse, name), pins.get(name)))
        try:
            return _fetch(con, sql, max_rows)
        except duckdb.Error as exc:
            raise _usage(exc, warehouse, available) from None
    finally:
        con.close()


def _tables_read(con, sql: str, available: list[str], warehouse: str) -> set[str]:
    """The warehouse tables `sql` reads (DuckDB names are case-insensitive). DuckDB's binder lists them;
    a query it cannot bind before the tables exist (a USING join) is read from its parse tree instead."""

    try:
        names = duckdb.get_table_names(sql, connection=con)
    except duckdb.Error as exc:
        names = _parsed_table_names(con, sql)
        if names is None:
            raise _usage(exc, warehouse, available) from None
    by_key = {name.lower(): name for name in available}
    return {by_key[name.lower()] for name in names if name.lower() in by_key}


def _parsed_table_names(con, sql: str) -> set[str] | None:
    """The tables of a SELECT's parse tree (None when it has none: not a SELECT, or not valid SQL)."""

    try:
        tree = json.loads(con.sql("SELECT json_serialize_sql(?)", params=[sql]).fetchall()[0][0])
    except duckdb.Error:
        return None
    if tree.get("error"):
        return None
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and node.get("table_name"):
                names.add(node["table_name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    return names


def _pins(named: set[str], versions: dict[str, int], version: int | None) -> dict[str, int]:
    """Table -> version for the tables the query reads; a pin for any other table is a mistake."""
    reads = ", ".join(sorted(named)) or "no table of the warehouse"
    pins = dict(versions)
    if version is not None:
        if len(named) != 1:
            raise UsageError(
                f"query: --version N needs a query over exactly one table; this one reads {reads}: "
                "use --version TABLE=N"
            )
        pins[next(iter(named))] = version
    unknown = sorted(set(pins) - named)
    if unknown:
        raise UsageError(
            f"query: --version names {', '.join(unknown)}, which the query does not read; it reads {reads}"
        )
    return pins


def _dataset(name: str, uri: str, version: int | None):
    """The Arrow dataset of one table version, reading through a native filesystem (see the module doc)."""
    try:
        table = delta_table(uri, version=version)
    except DeltaError as exc:
        require_version(history(uri), version, f"query: table {name}")
        raise UsageError(f"query: table {name} version {version}: {first_line(exc)}") from None
    return delta_dataset(uri, table)


def _lock(con) -> None:
    """No community extensions (where this DuckDB has the setting), then no more setting changes at all."""
    settings = {row[0] for row in con.sql("SELECT name FROM duckdb_settings()").fetchall()}
    if "allow_community_extensions" in settings:
        con.execute("SET allow_community_extensions = false")
    con.execute("SET lock_configuration = true")


def _fetch(con, sql: str, max_rows: int) -> QueryResult:
    """At most `max_rows` + 1 rows from a stream, which is closed (ending every scan) before returning."""
    batches, rows = [], 0
    reader = con.sql(sql).to_arrow_reader(min(max_rows + 1, 65_536) if max_rows else 65_536)
    try:
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if max_rows and rows > max_rows:
                break
        schema = reader.schema
    finally:
        reader.close()
    table = pa.Table.from_batches(batches, schema=schema)
    truncated = bool(max_rows) and table.num_rows > max_rows
    return QueryResult(table.slice(0, max_rows) if truncated else table, truncated)


def _usage(exc: Exception, warehouse: str, available: list[str]) -> UsageError:
    """DuckDB's error in one line, with what to do about it."""

    message = f"query: {first_line(exc)}"
    if isinstance(exc, duckdb.PermissionException) or "configuration has been locked" in str(exc):
        return UsageError(f"{message}; {SANDBOX_HINT}")
    if isinstance(exc, duckdb.CatalogException):
        return UsageError(f"{message}; tables in {warehouse}: {', '.join(available) or '(none)'}")
    return UsageError(message)
