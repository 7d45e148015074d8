"""`score query` (and `score lineage --version`) on a warehouse of multi-file Delta tables, through the real
CLI in a subprocess, so that what happens at interpreter exit is tested too. No Ray: the tables are written
with `deltalake.write_deltalake`, several files each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

REPO = Path(__file__).resolve().parents[2]
DAYS = ("2026-11-25", "2026-11-26", "2026-11-27")
APPENDS, ROWS_PER_APPEND = 12, 50_000  # 12 versions, 36 files in 3 partitions: scans still in flight at a LIMIT
FLAT_APPENDS, FLAT_ROWS = 6, 20_000
QUARANTINE_ROWS = 40
SANDBOX = "reads the warehouse's tables by name only"


def row(customer_id: int) -> dict:
    """Every column follows from customer_id (six digits), so any row a LIMIT returns can be checked exactly."""
    return {"customer_id": customer_id, "ds": DAYS[customer_id % 3], "score": customer_id % 7}


def rows_table(first: int, count: int) -> pa.Table:
    ids = np.arange(first, first + count, dtype=np.int64)
    return pa.table({"customer_id": ids, "ds": np.array(DAYS)[ids % 3], "score": ids % 7})


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("warehouse")
    for i in range(APPENDS):
        write_deltalake(
            root / "churn_scores",
            rows_table(100_000 + i * ROWS_PER_APPEND, ROWS_PER_APPEND),
            mode="append",
            partition_by=["ds"],
        )
    for i in range(FLAT_APPENDS):
        write_deltalake(root / "scores_flat", rows_table(100_000 + i * FLAT_ROWS, FLAT_ROWS), mode="append")
    for i in range(2):
        write_deltalake(
            root / "churn_scores__quarantine",
            rows_table(100_000 + i * QUARANTINE_ROWS // 2, QUARANTINE_ROWS // 2),
            mode="append",
        )
    return root


@pytest.fixture
def workdir(tmp_path) -> Path:
    """The CLI's working directory, also where an escaping query would write."""
    (tmp_path / "run").mkdir()
    return tmp_path / "run"


def score(warehouse: Path, cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args, "--warehouse", str(warehouse)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("score: error: "), proc.stderr
    return lines[0]


def text_line(r: dict) -> str:
    return f"{r['customer_id']:<11}  {r['ds']:<10}  {r['score']}"


def printed_rows(fmt: str, stdout: str) -> list[dict]:
    """The rows a format printed, each checked against the row its customer_id determines, exactly as printed."""
    if fmt == "json":
        rows = json.loads(stdout)
        assert all(r == row(r["customer_id"]) for r in rows), rows
        return rows
    lines = stdout.splitlines()
    if fmt == "csv":
        assert lines[0] == '"customer_id","ds","score"'
        rows = [row(int(line.split(",")[0])) for line in lines[1:]]
        assert lines[1:] == [f'{r["customer_id"]},"{r["ds"]}",{r["score"]}' for r in rows]
        return rows
    assert lines[0] == "customer_id  ds          score"
    rows = [row(int(line.split()[0])) for line in lines[1:]]
    assert lines[1:] == [text_line(r) for r in rows]
    return rows


def test_limit_on_multi_file_tables_exits_cleanly_in_every_format(warehouse, workdir):
    """Guards the crash at exit: a LIMIT stops DuckDB's scan of a multi-file table while Arrow still reads
    ahead; those reads went through deltalake's Python filesystem and, still in flight at interpreter exit,
    segfaulted, aborted or hung the process after the rows were printed. Every run must exit 0 with exactly
    the rows asked for, in every output format."""
    formats = {
        "table": ["--format", "table"],
        "csv": ["--format", "csv"],
        "json": ["--format", "json"],
        "--json": ["--json"],
    }
    for attempt in range(2):
        for table in ("churn_scores", "scores_flat"):
            for name, flags in formats.items():
                try:
                    proc = score(warehouse, workdir, "query", f"SELECT * FROM {table} LIMIT 3", *flags, timeout=30)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"run {attempt} of {table} {name}: hung at exit")
                assert proc.returncode == 0, f"run {attempt} of {table} {name}: exit {proc.returncode}\n{proc.stderr}"
                assert len(printed_rows("json" if name == "--json" else name, proc.stdout)) == 3


def test_query_and_lineage_name_the_versions_that_exist(warehouse, workdir):
    """Guards a version that does not exist: `query --version 42` printed a raw delta-kernel error and
    `lineage --version 99` exited 0 listing nothing. Both exit 2 with one line naming the versions there are."""
    last = APPENDS - 1
    for args in (
        ("query", "SELECT count(*) AS n FROM churn_scores", "--version", "42"),
        ("query", "SELECT count(*) AS n FROM churn_scores", "--version", "churn_scores=42"),
    ):
        line = one_error_line(score(warehouse, workdir, *args))
        assert line == f"score: error: query: table churn_scores has no version 42 (it has versions 0..{last})"
    line = one_error_line(score(warehouse, workdir, "lineage", "churn_scores", "--version", "99"))
    assert line == f"score: error: lineage: table churn_scores has no version 99 (it has versions 0..{last})"

    proc = score(warehouse, workdir, "query", "SELECT count(*) AS n FROM churn_scores", "--version", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"n": 3 * ROWS_PER_APPEND}]
    proc = score(warehouse, workdir, "lineage", "churn_scores", "--version", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("churn_scores version 2 ")


def test_version_pins_match_exactly_the_tables_the_query_reads(warehouse, workdir):
    """Guards --version TABLE=N: it must name a table the query reads (not one whose name is contained in a
    table it reads), and a query DuckDB cannot bind before its tables exist (a USING join) reads exactly its
    own tables, not every table of the warehouse. A wrong pin is a usage error naming the tables read."""
    join = "SELECT count(*) AS n FROM churn_scores JOIN scores_flat USING (customer_id)"

    line = one_error_line(
        score(
            warehouse, workdir, "query", "SELECT count(*) FROM churn_scores__quarantine", "--version", "churn_scores=0"
        )
    )
    assert line.endswith(
        "--version names churn_scores, which the query does not read; it reads churn_scores__quarantine"
    )
    line = one_error_line(score(warehouse, workdir, "query", join, "--version", "churn_scores__quarantine=0"))
    assert line.endswith("it reads churn_scores, scores_flat")
    line = one_error_line(score(warehouse, workdir, "query", join, "--version", "1"))
    assert "this one reads churn_scores, scores_flat: use --version TABLE=N" in line

    proc = score(
        warehouse, workdir, "query", join, "--version", "churn_scores=0", "--version", "scores_flat=1", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"n": 2 * FLAT_ROWS}]
    proc = score(warehouse, workdir, "query", "SELECT count(*) AS n FROM CHURN_SCORES", "--version", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"n": ROWS_PER_APPEND}]


ESCAPES = {
    "read_text": ("SELECT * FROM read_text('{dir}/secret.txt')", SANDBOX),
    "read_csv": ("SELECT * FROM read_csv('{dir}/secret.csv')", SANDBOX),
    "read_parquet": ("SELECT * FROM read_parquet('{dir}/secret.parquet')", SANDBOX),
    "file_by_name": ("SELECT * FROM '{dir}/secret.csv'", SANDBOX),
    "copy_to": ("COPY (SELECT 42) TO '{dir}/out.csv'", "give one SELECT statement"),
    "explain_analyze_copy_to": ("EXPLAIN ANALYZE COPY (SELECT 42) TO '{dir}/out.csv'", SANDBOX),
    "attach": ("ATTACH '{dir}/out.duckdb' AS other", "give one SELECT statement"),
    "install": ("INSTALL httpfs", "give one SELECT statement"),
    "load": ("LOAD httpfs", "give one SELECT statement"),
    "explain_analyze_install": ("EXPLAIN ANALYZE INSTALL httpfs", SANDBOX),
    "explain_analyze_load": ("EXPLAIN ANALYZE LOAD httpfs", SANDBOX),
    "set": ("SET enable_external_access = true", "give one SELECT statement"),
    "explain_analyze_set": ("EXPLAIN ANALYZE SET threads = 1", SANDBOX),
    "explain_analyze_reset": ("EXPLAIN ANALYZE RESET lock_configuration", SANDBOX),
    "multi_statement": ("SELECT 1; COPY (SELECT 42) TO '{dir}/out.csv'", "give one SELECT statement"),
}


@pytest.mark.parametrize("escape", ESCAPES)
def test_query_cannot_reach_files_extensions_or_settings(warehouse, workdir, escape):
    """Guards the read-only promise: besides the warehouse's tables a query may read no file or URL, write
    none (COPY, also inside EXPLAIN ANALYZE, which runs it), ATTACH nothing, install or load no extension
    and change no setting. Each escape exits 2 with one line saying why, and leaves no file behind."""
    secrets = workdir.parent / "secrets"
    secrets.mkdir()
    (secrets / "secret.txt").write_text("hunter2\n")
    (secrets / "secret.csv").write_text("password\nhunter2\n")
    pq.write_table(pa.table({"password": ["hunter2"]}), secrets / "secret.parquet")
    before = sorted(secrets.iterdir())
    sql, why = ESCAPES[escape]
    proc = score(warehouse, workdir, "query", sql.format(dir=secrets))
    line = one_error_line(proc)
    assert why in line
    assert "hunter2" not in proc.stdout + proc.stderr
    assert sorted(secrets.iterdir()) == before and list(workdir.iterdir()) == []


def test_max_rows_prints_the_first_n_rows_and_says_it_cut(warehouse, workdir):
    """Guards large results: a query printed (and first held in memory) every row it returned. At most
    --max-rows rows are read from a stream and printed, in every format, with a note on stderr when the
    result had more; 0 means no limit."""
    ordered = "SELECT * FROM churn_scores ORDER BY customer_id"
    first = [row(100_000 + i) for i in range(25)]
    for fmt in ("table", "csv", "json"):
        proc = score(warehouse, workdir, "query", ordered, "--format", fmt, "--max-rows", "25")
        assert proc.returncode == 0, proc.stderr
        assert printed_rows(fmt, proc.stdout) == first
        assert proc.stderr.strip() == (
            "score: query: printed the first 25 rows; the result has more (narrow the query, or --max-rows 0 for all)"
        )

    proc = score(warehouse, workdir, "query", "SELECT * FROM churn_scores")  # the default: 10000
    assert proc.returncode == 0, proc.stderr
    assert len(printed_rows("table", proc.stdout)) == 10_000
    assert "printed the first 10000 rows" in proc.stderr

    quarantine = "SELECT * FROM churn_scores__quarantine ORDER BY customer_id"
    for limit in ("0", str(QUARANTINE_ROWS)):
        proc = score(warehouse, workdir, "query", quarantine, "--format", "csv", "--max-rows", limit)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert printed_rows("csv", proc.stdout) == [row(100_000 + i) for i in range(QUARANTINE_ROWS)]
    assert "--max-rows -1" in one_error_line(score(warehouse, workdir, "query", quarantine, "--max-rows", "-1"))
