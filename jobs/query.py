"""Read-only SQL over the warehouse's tables by name, with DuckDB, at the latest or a given version.

DuckDB 2.0 has no bundled Delta extension and none can be downloaded offline, so each table the query
names is registered as the Arrow dataset of one Delta version (`DeltaTable(uri, version).to_pyarrow_dataset()`):
DuckDB pushes projections and filters into it, and the version is exact. Only one SELECT (or EXPLAIN)
statement runs: the tables are never written through here.
"""

from __future__ import annotations

import pyarrow as pa

from jobs.errors import UsageError
from jobs.spec import join_uri
from jobs.warehouse import table_names

READ_ONLY = ("SELECT", "EXPLAIN")


def run_query(sql: str, warehouse: str, versions: dict[str, int] | None = None, version: int | None = None) -> pa.Table:
    """Run `sql` over the tables it names. `versions` pins tables (name -> version); `version` pins the
    one table of a single-table query."""
    import duckdb
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    con = duckdb.connect()
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"query: {exc}") from None
    kinds = [s.type.name for s in statements]
    if len(kinds) != 1 or kinds[0] not in READ_ONLY:
        raise UsageError(f"query: give one SELECT statement (got {', '.join(kinds) or 'nothing'}); "
                         "tables are read-only here")

    available = set(table_names(warehouse))
    try:
        named = duckdb.get_table_names(sql) & available
    except duckdb.Error:  # it binds some queries (USING joins) before any table exists: register them all
        named = available
    pins = dict(versions or {})
    if version is not None:
        if len(named) != 1:
            raise UsageError(f"query: --version N needs a query over exactly one table; this one reads "
                             f"{sorted(named) or 'none'}: use --version TABLE=N")
        pins[next(iter(named))] = version
    unknown = sorted(set(pins) - named)
    if unknown:
        raise UsageError(f"query: --version names {unknown}, which the query does not read")
    for name in sorted(named):
        try:
            table = DeltaTable(join_uri(warehouse, name), version=pins.get(name))
        except DeltaError as exc:
            raise UsageError(f"query: table {name} version {pins.get(name)}: {exc}") from None
        con.register(name, table.to_pyarrow_dataset())
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.CatalogException as exc:
        raise UsageError(f"query: {str(exc).splitlines()[0]}; tables in {warehouse}: "
                         f"{', '.join(sorted(available)) or '(none)'}") from None
    except duckdb.Error as exc:
        raise UsageError(f"query: {exc}") from None

