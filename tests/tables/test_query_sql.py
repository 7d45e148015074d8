"""`score query` for analysts: two versions of a table in one query (`table@N`), DuckDB's catalog
(information_schema) listing every table, and float32 values printed at float32 precision. Through the real
CLI in a subprocess, over small Delta tables written with `deltalake.write_deltalake`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from jobs.tables.query import _versioned_names

REPO = Path(__file__).resolve().parents[2]
DAYS = ["2026-11-25", "2026-11-25", "2026-11-26", "2026-11-26"]
# churn_scores version -> (customer_id, churn_probability): v2 drops customer 4 and adds 5. Probabilities are
# exact in float32 (but 0.1), so their differences are too.
VERSIONS = [
    ([1, 2, 3, 4], [0.5, 0.25, 0.125, 0.75]),
    ([1, 2, 3, 4], [0.625, 0.25, 0.5, 0.875]),
    ([1, 2, 3, 5], [0.75, 0.125, 0.5, 0.1]),
]


def scores(ids: list[int], probabilities: list[float]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array(ids, pa.int64()),
            "churn_probability": pa.array(probabilities, pa.float32()),
            "ds": DAYS,
        }
    )


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("warehouse")
    for ids, probabilities in VERSIONS:
        write_deltalake(root / "churn_scores", scores(ids, probabilities), mode="overwrite", partition_by=["ds"])
    write_deltalake(
        root / "churn_scores__quarantine", pa.table({"customer_id": pa.array([9], pa.int64()), "reason": ["null"]})
    )
    return root


def score(warehouse: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "query", *args, "--warehouse", str(warehouse)],
        cwd=warehouse.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def rows(warehouse: Path, sql: str, *args: str) -> list[dict]:
    proc = score(warehouse, sql, "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("score: error: query: "), proc.stderr
    return lines[0].removeprefix("score: error: ")


def test_versioned_references_are_rewritten_outside_literals_and_comments():
    """Guards the rewrite: `t@N`, `"t"@N` and `t AT (VERSION => N)` become the quoted view name "t@N" in
    code only; string literals, quoted identifiers, comments and dollar-quoted strings keep their text."""
    sql = (
        "SELECT 'a@1', \"b@2\", c@3.x, E'\\'d@4' FROM e@05 JOIN \"f\"@6 USING (k), g AT ( VERSION => 7 ) "
        "-- h@8\n/* i@9 */ WHERE $$ j@10 $$ <> $q$ k@11 $q$"
    )
    rewritten, code = _versioned_names(sql)
    assert rewritten == (
        'SELECT \'a@1\', "b@2", "c@3".x, E\'\\\'d@4\' FROM "e@5" JOIN "f@6" USING (k), "g@7" '
        "-- h@8\n/* i@9 */ WHERE $$ j@10 $$ <> $q$ k@11 $q$"
    )
    assert "information_schema.columns" in _versioned_names('SELECT * FROM "information_schema"."columns"')[1]
    assert "information_schema" not in _versioned_names("SELECT 'information_schema'")[1]
    assert "@" not in code.replace("b@2", "")


def test_two_versions_of_a_table_in_one_query(warehouse):
    """Guards time travel inside SQL: `churn_scores@1` and `churn_scores@2` are two versions of one table in
    one join (any case, or as DuckDB's AT clause); a plain name is the latest version or its --version pin.
    A column selected from both versions keeps both values (JSON rows held only the last of a repeated name)."""
    diff = (
        "SELECT a.customer_id, a.churn_probability AS before, b.churn_probability AS after, "
        "b.churn_probability - a.churn_probability AS change FROM {old} a JOIN {new} b USING (customer_id) "
        "ORDER BY customer_id"
    )
    expected = [
        {"customer_id": 1, "before": 0.625, "after": 0.75, "change": 0.125},
        {"customer_id": 2, "before": 0.25, "after": 0.125, "change": -0.125},
        {"customer_id": 3, "before": 0.5, "after": 0.5, "change": 0.0},
    ]
    assert rows(warehouse, diff.format(old="churn_scores@1", new="churn_scores@2")) == expected
    assert rows(warehouse, diff.format(old="CHURN_SCORES@1", new="churn_scores AT (VERSION => 2)")) == expected

    added = "SELECT customer_id FROM churn_scores EXCEPT SELECT customer_id FROM churn_scores@0 ORDER BY 1"
    assert rows(warehouse, added) == [{"customer_id": 5}]
    assert rows(warehouse, added, "--version", "churn_scores=1") == []
    qualified = "SELECT churn_scores@0.churn_probability AS p FROM churn_scores@0 WHERE customer_id = 4"
    assert rows(warehouse, qualified) == [{"p": 0.75}]
    assert rows(warehouse, "SELECT 'churn_scores@9' AS s") == [{"s": "churn_scores@9"}]
    both = (
        "SELECT a.churn_probability, b.churn_probability FROM churn_scores@0 a JOIN churn_scores@2 b "
        "USING (customer_id) WHERE customer_id = 2"
    )
    assert rows(warehouse, both) == [{"churn_probability": 0.25, "churn_probability_1": 0.125}]


def test_a_version_the_table_does_not_have_names_the_versions_it_has(warehouse):
    """Guards `table@N` past the log: exit 2 with one line naming the table and its versions."""
    line = one_error_line(score(warehouse, "SELECT a.* FROM churn_scores@7 a JOIN churn_scores@1 b USING (ds)"))
    assert line == "query: table churn_scores has no version 7 (it has versions 0..2)"
    line = one_error_line(score(warehouse, "SELECT * FROM churn_scores@1", "--version", "1"))
    assert line == (
        "query: --version N needs a query over exactly one table; this one reads churn_scores@1: "
        "use --version TABLE=N, or TABLE@N in the query"
    )


def test_a_vacuumed_version_names_the_versions_still_readable(tmp_path):
    """Guards a version whose files vacuum deleted: its log still opens it, so the scan failed on a missing
    file. It exits 2 naming the table, the version and the versions that can still be read."""
    for ids, probabilities in VERSIONS:
        write_deltalake(tmp_path / "churn_scores", scores(ids, probabilities), mode="overwrite")
    DeltaTable(tmp_path / "churn_scores").vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    latest = DeltaTable(tmp_path / "churn_scores").version()
    for version in (0, 1):
        line = one_error_line(score(tmp_path, f"SELECT sum(churn_probability) FROM churn_scores@{version}"))
        assert line == (
            f"query: table churn_scores version {version} was vacuumed (1 of its 1 data files are gone); "
            f"versions 2..{latest} are readable"
        )
    assert rows(tmp_path, "SELECT count(*) AS n FROM churn_scores@2") == [{"n": 4}]


def test_information_schema_lists_every_table_and_its_columns(warehouse):
    """Guards DuckDB's catalog: it listed nothing, as only the tables a query names were registered. A query
    of the catalog sees every table of the warehouse, with its columns and types."""
    columns = rows(
        warehouse,
        "SELECT table_name, column_name, data_type FROM information_schema.columns ORDER BY table_name, "
        "ordinal_position",
    )
    assert [tuple(c.values()) for c in columns] == [
        ("churn_scores", "customer_id", "BIGINT"),
        ("churn_scores", "churn_probability", "FLOAT"),
        ("churn_scores", "ds", "VARCHAR"),
        ("churn_scores__quarantine", "customer_id", "BIGINT"),
        ("churn_scores__quarantine", "reason", "VARCHAR"),
    ]
    tables = rows(warehouse, "SELECT table_name FROM information_schema.tables ORDER BY 1")
    assert tables == [{"table_name": "churn_scores"}, {"table_name": "churn_scores__quarantine"}]
    proc = score(warehouse, "SHOW TABLES")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["name", "churn_scores", "churn_scores__quarantine"]
    pinned = "SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'churn_scores'"
    assert rows(warehouse, pinned, "--version", "churn_scores=0") == [{"n": 3}]


def test_only_a_catalog_query_opens_every_table(tmp_path):
    """Guards start-up cost: a query opens only the tables it names (a broken table elsewhere does not
    matter); a catalog query opens all of them, so that one says which table it could not open."""
    write_deltalake(tmp_path / "churn_scores", scores(*VERSIONS[0]))
    (tmp_path / "broken" / "_delta_log").mkdir(parents=True)
    assert rows(tmp_path, "SELECT count(*) AS n FROM churn_scores") == [{"n": 4}]
    line = one_error_line(score(tmp_path, "SELECT table_name FROM information_schema.tables"))
    assert line.startswith("query: table broken: ")


def test_text_output_prints_float32_at_float32_precision(warehouse):
    """Guards the text table: a float32 printed as the float64 it widens to (0.10000000149011612). It prints
    the shortest text that reads back as the same float32, as CSV does, also inside lists and structs; a
    float64 keeps its own."""
    sql = (
        "SELECT customer_id, churn_probability, churn_probability::DOUBLE AS wide, [churn_probability] AS listed, "
        "{'p': churn_probability} AS nested FROM churn_scores WHERE customer_id IN (3, 5) ORDER BY customer_id"
    )
    proc = score(warehouse, sql)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "customer_id  churn_probability  wide                 listed  nested",
        "3            0.5                0.5                  [0.5]   {'p': 0.5}",
        "5            0.1                0.10000000149011612  [0.1]   {'p': 0.1}",
    ]
    proc = score(warehouse, "SELECT churn_probability FROM churn_scores WHERE customer_id = 5", "--format", "csv")
    assert proc.stdout.splitlines() == ['"churn_probability"', "0.1"]
