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

A table as of a version is written `churn_scores@3` (or DuckDB's `churn_scores AT (VERSION => 3)`), so that one
query can compare two versions; it is rewritten to the quoted name of a view of that version, "churn_scores@3".
Only the tables a query names are opened, except when it reads DuckDB's catalog (information_schema, SHOW
TABLES, duckdb_columns()...): then every table of the warehouse is, so the catalog lists them all.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake.exceptions import DeltaError
from pyarrow import fs as pafs

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

# A versioned table reference (`name@N`, `"name"@N`, `name AT (VERSION => N)`), tried first at each position, else
# a string literal or comment (skipped), else a quoted identifier (kept). Neither reference form binds over views:
# DuckDB has no binary `@`, and AT needs a catalog with time travel.
_TOKENS = re.compile(
    r"""(?<![\w$])(?P<name>[^\W\d][\w$]*|"(?:[^"]|"")*")"""
    r"""(?:@(?P<at>\d+)(?![\w$])|\s+AT\s*\(\s*VERSION\s*=>\s*(?P<version>\d+)\s*\))"""
    r"""|(?P<literal>(?<![\w$])E'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/"""
    r"""|\$(?P<tag>[^\W\d]\w*|)\$.*?\$(?P=tag)\$)"""
    r"""|(?P<quoted>"(?:[^"]|"")*")""",
    re.DOTALL | re.IGNORECASE,
)
# What reads DuckDB's catalog: its views and table functions, or SHOW / DESCRIBE without a table.
_CATALOG = re.compile(r"(?<![\w$])(?:information_schema|pg_catalog|duckdb_\w+|pg_\w+|sqlite_master)(?![\w$])", re.I)
_LISTING = re.compile(r"\s*(?:SHOW|DESCRIBE)(?![\w$])", re.I)
_FAILED_SCAN = re.compile(r"reading the stream registered as '(?P<view>[^']*)' failed")


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
    one table of a single-table query; `table@N` in the SQL reads version N. At most `max_rows` rows are read
    (0: all)."""

    sql, code = _versioned_names(sql)
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
        named, at = _tables_read(con, sql, available, warehouse)
        if _CATALOG.search(code) or (_LISTING.match(code) and not named and not at):
            named = set(available)
        pins = _pins(named, at, versions or {}, version)
        views = {name: (name, pins.get(name)) for name in named} | {f"{name}@{n}": (name, n) for name, n in at}
        datasets = _datasets(views, warehouse)
        for view, dataset in datasets.items():
            con.register(view, dataset)
        try:
            return _fetch(con, sql, max_rows)
        except duckdb.Error as exc:
            raise _vacuumed(exc, views, datasets, warehouse) or _usage(exc, warehouse, available) from None
    finally:
        con.close()


def _versioned_names(sql: str) -> tuple[str, str]:
    """`sql` with each versioned table reference outside literals and comments as the quoted view name
    "table@N"; and its code alone (literals and comments blanked, identifiers unquoted), to look for catalog
    reads in."""
    out, code, end = [], [], 0
    for match in _TOKENS.finditer(sql):
        gap, end = sql[end : match.start()], match.end()
        if match["name"] is not None:
            view = f"{_unquote(match['name'])}@{int(match['at'] or match['version'])}"
            out.append(gap + '"' + view.replace('"', '""') + '"')
            code.append(gap + " ")
        else:
            out.append(gap + match[0])
            code.append(gap + (_unquote(match["quoted"]) if match["quoted"] else " "))
    return "".join(out) + sql[end:], "".join(code) + sql[end:]


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _tables_read(con, sql: str, available: list[str], warehouse: str) -> tuple[set[str], set[tuple[str, int]]]:
    """The warehouse tables `sql` reads (DuckDB names are case-insensitive), and the (table, version) pairs
    it reads as "table@N". DuckDB's binder lists them; a query it cannot bind before the tables exist (a USING
    join) is read from its parse tree instead."""

    try:
        names = duckdb.get_table_names(sql, connection=con)
    except duckdb.Error as exc:
        names = _parsed_table_names(con, sql)
        if names is None:
            raise _usage(exc, warehouse, available) from None
    by_key = {name.lower(): name for name in available}
    named, at = set(), set()
    for name in names:
        table, sep, number = name.rpartition("@")
        if name.lower() in by_key:
            named.add(by_key[name.lower()])
        elif sep and number.isdigit() and table.lower() in by_key:
            at.add((by_key[table.lower()], int(number)))
    return named, at


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


def _pins(named: set[str], at: set[tuple[str, int]], versions: dict[str, int], version: int | None) -> dict[str, int]:
    """Table -> version for the tables the query reads by plain name; a pin for any other table is a mistake."""
    reads = ", ".join(sorted(named | {f"{name}@{n}" for name, n in at})) or "no table of the warehouse"
    pins = dict(versions)
    if version is not None:
        if len(named) != 1:
            raise UsageError(
                f"query: --version N needs a query over exactly one table; this one reads {reads}: "
                "use --version TABLE=N, or TABLE@N in the query"
            )
        pins[next(iter(named))] = version
    unknown = sorted(set(pins) - named)
    if unknown:
        raise UsageError(
            f"query: --version names {', '.join(unknown)}, which the query does not read; it reads {reads}"
        )
    return pins


def _datasets(views: dict[str, tuple[str, int | None]], warehouse: str) -> dict[str, pads.Dataset]:
    """View name -> the dataset of its (table, version), opened in parallel: on object storage each costs a few
    round trips, and a catalog query opens every table. A failure is raised for the first view by name."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(views)))) as pool:
        futures = {
            view: pool.submit(_dataset, name, join_uri(warehouse, name), version)
            for view, (name, version) in sorted(views.items())
        }
        return {view: future.result() for view, future in futures.items()}


def _dataset(name: str, uri: str, version: int | None) -> pads.Dataset:
    """The Arrow dataset of one table version, reading through a native filesystem (see the module doc)."""
    try:
        table = delta_table(uri, version=version)
    except DeltaError as exc:
        require_version(history(uri), version, f"query: table {name}")
        at = "" if version is None else f" version {version}"
        raise UsageError(f"query: table {name}{at}: {first_line(exc)}") from None
    return delta_dataset(uri, table)


def _vacuumed(
    exc: duckdb.Error,
    views: dict[str, tuple[str, int | None]],
    datasets: dict[str, pads.Dataset],
    warehouse: str,
) -> UsageError | None:
    """A pinned version whose data files vacuum deleted (its log is still there, so it opened): named, with the
    versions still readable, instead of the storage error about the first missing file."""
    match = _FAILED_SCAN.search(str(exc))
    name, version = views.get(match["view"], (None, None)) if match else (None, None)
    if name is None or version is None:
        return None
    dataset = datasets[match["view"]]
    try:
        present = {info.path for info in dataset.filesystem.get_file_info(pafs.FileSelector("", recursive=True))}
    except OSError:
        return None
    missing = [path for path in dataset.files if path not in present]
    if not missing:
        return None
    uri = join_uri(warehouse, name)
    latest = delta_table(uri).version()
    oldest = _oldest_readable(uri, version, latest, present)
    span = f"versions {oldest}..{latest} are" if oldest < latest else f"only version {latest} is"
    return UsageError(
        f"query: table {name} version {version} was vacuumed ({len(missing)} of its {len(dataset.files)} data "
        f"files are gone); {span} readable"
    )


def _oldest_readable(uri: str, version: int, latest: int, present: set[str]) -> int:
    """The oldest version after `version` whose files are all `present`, by bisection: vacuum deletes the files
    only versions older than its retention need, so the readable versions are the newest ones."""
    low, high = version + 1, latest
    while low < high:
        middle = (low + high) // 2
        try:
            readable = set(delta_dataset(uri, delta_table(uri, middle)).files) <= present
        except DeltaError:
            readable = False
        low, high = (low, middle) if readable else (middle + 1, high)
    return high


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
    table = table.rename_columns(_distinct(table.column_names))
    truncated = bool(max_rows) and table.num_rows > max_rows
    return QueryResult(table.slice(0, max_rows) if truncated else table, truncated)


def _distinct(names: list[str]) -> list[str]:
    """Column names made distinct as DuckDB's own DataFrames are (x, x, x_1 -> x, x_1, x_1_1): comparing two
    versions selects a column twice, and a JSON row (an object) would keep only one of them."""
    taken: set[str] = set()
    distinct = []
    for name in names:
        unique, n = name, 0
        while unique in taken:
            n += 1
            unique = f"{name}_{n}"
        taken.add(unique)
        distinct.append(unique)
    return distinct


def _usage(exc: Exception, warehouse: str, available: list[str]) -> UsageError:
    """DuckDB's error in one line, with what to do about it."""

    message = f"query: {first_line(exc)}"
    if isinstance(exc, duckdb.PermissionException) or "configuration has been locked" in str(exc):
        return UsageError(f"{message}; {SANDBOX_HINT}")
    if isinstance(exc, duckdb.CatalogException):
        return UsageError(f"{message}; tables in {warehouse}: {', '.join(available) or '(none)'}")
    return UsageError(message)
