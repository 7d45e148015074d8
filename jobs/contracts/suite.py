"""Data contracts: Great Expectations suites as files, checked on every row inside the pipeline.

GX silently drops expectations it does not know, so loading compares the suite it built with the file.
A context is built per process (actor), never shared across threads: GX gives wrong counts when it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from jobs.contracts import expectations
from jobs.errors import UsageError

COLUMN_KWARGS = ("column", "column_A", "column_B")
LIST_KWARGS = ("column_list", "column_set")
log = logging.getLogger(__name__)
_COMPLETE = {"result_format": "COMPLETE", "partial_unexpected_count": 0, "return_unexpected_index_query": False}


@dataclass(frozen=True)
class Contract:
    """A suite file as loaded: its document (plain data, picklable to actors) and its hash for lineage."""

    path: str
    name: str
    document: dict
    sha256: str

    @property
    def expectations(self) -> list[dict]:
        return self.document.get("expectations", [])

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for exp in self.expectations:
            kwargs = exp.get("kwargs", {})
            cols += [kwargs[k] for k in COLUMN_KWARGS if k in kwargs]
            for k in LIST_KWARGS:
                cols += list(kwargs.get(k, []))
        return list(dict.fromkeys(cols))


def load_contract(path: str | Path) -> Contract:
    """Read a suite (JSON or YAML) and build it with GX; refuse unknown types and bad arguments by name."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        document = yaml.safe_load(raw) if path.suffix in (".yaml", ".yml") else json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"contract {path}: not valid {path.suffix.lstrip('.').upper()}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("expectations"), list):
        raise UsageError(f"contract {path}: expected a suite with a list of 'expectations'")
    document.setdefault("name", path.stem)
    for i, exp in enumerate(document["expectations"]):
        if not isinstance(exp, dict) or "type" not in exp:
            raise UsageError(f"contract {path}: expectations[{i}] has no 'type'")
    sha256 = hashlib.sha256(raw).hexdigest()
    _check_suite(document, str(path), sha256)
    return Contract(str(path), document["name"], document, sha256)


def _check_suite(document: dict, where: str, sha256: str) -> None:
    """`_build_suite`, once per suite file content and GX version: importing GX alone takes ~2.7 s, most of
    a small run's planning, and the driver needs GX for nothing else when every expectation runs natively.
    The cache holds only verdicts of suites that built (an empty file each), so a bad suite is refused every
    time with its message. `SCORE_CACHE_DIR` moves the cache (default: ~/.cache/score-jobs)."""
    verdict = cache_dir() / "contracts" / f"{sha256}-gx{version('great_expectations')}"
    if verdict.exists():
        return
    _build_suite(document, where)
    try:
        verdict.parent.mkdir(parents=True, exist_ok=True)
        verdict.touch()
    except OSError as exc:  # a read-only home: the check just runs again next time
        log.debug("contract check not cached at %s: %s", verdict, exc)


def cache_dir() -> Path:
    """Where derived files that can always be made again are kept (contract verdicts)."""
    return Path(os.environ.get("SCORE_CACHE_DIR") or Path.home() / ".cache" / "score-jobs")


def _build_suite(document: dict, where: str):
    """Build the suite with GX, one expectation at a time first, so that a problem names its expectation.

    GX logs and drops an unknown type instead of raising, so a dropped expectation is an error here.
    """
    import great_expectations as gx  # 2.4 s to import: only a suite not yet cached (`_check_suite`) needs it

    _quiet_gx()
    for i, exp in enumerate(document["expectations"]):
        name = exp["type"]
        try:
            built = gx.ExpectationSuite(name="check", expectations=[exp]).expectations
        except Exception as exc:  # GX raises a zoo of pydantic and its own errors for bad arguments
            raise UsageError(f"contract {where}: expectations[{i}] {name!r}: {_gx_reason(exc)}") from None
        if len(built) != 1:
            raise UsageError(f"contract {where}: expectations[{i}] {name!r} is not a known expectation type")
    return gx.ExpectationSuite(**document)


def _gx_reason(exc: Exception) -> str:
    """pydantic's 'N validation errors for X / field / message' as 'field: message; ...'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and "validation error" in lines[0]:
        pairs = [f"{lines[i]}: {lines[i + 1].split(' [')[0]}" for i in range(1, len(lines) - 1, 2)]
        return "; ".join(pairs[:3])
    return lines[-1] if lines else type(exc).__name__


def _quiet_gx() -> None:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


@dataclass
class Validation:
    """One batch checked: which rows failed and why, plus per-expectation counts."""

    failed: np.ndarray  # bool mask over the batch's rows
    reasons: dict[int, list[dict[str, str]]]  # row index -> [{expectation, column, value}]
    per_expectation: list[dict[str, Any]]


@dataclass
class Tally:
    """What one piece of a partition adds to the partition's verdicts (`ContractValidator.verdict`), merged by
    addition: its rows, and per expectation (by position in the validator) the rows that fail it before
    `mostly` and the rows `mostly` counts."""

    rows: int = 0
    failed: dict[int, int] = field(default_factory=dict)
    counted: dict[int, int] = field(default_factory=dict)

    def merge(self, other: Tally) -> None:
        self.rows += other.rows
        for mine, theirs in ((self.failed, other.failed), (self.counted, other.counted)):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n


@dataclass(frozen=True)
class Verdict:
    """A partition's verdicts on the expectations that no piece of it decides alone: `mostly`, batch-level
    expectations (`contract.batch_level`) and uniqueness."""

    rows: int
    failed: dict[int, int]  # expectation -> rows failing it in the whole partition, 0 when `mostly` tolerates them
    repeated: dict[int, pa.Array]  # uniqueness expectation -> the values the partition holds more than once


def splittable(contract: Contract | None, engine: str) -> bool:
    """Whether a partition may be checked in pieces: every row-level expectation runs natively, so its verdict
    merges from the pieces' tallies. Great Expectations' own (aggregates among them) see the partition whole."""
    if contract is None:
        return True
    return engine == "auto" and all(
        expectations.supported(e) or expectations.table_level(e) for e in contract.expectations
    )


class ContractValidator:
    """Checks Arrow batches against one suite, in the suite's order, giving every failing row its reasons.

    Expectation types that `jobs.contracts.expectations` implements run vectorised on Arrow (engine "auto");
    the rest, or all of them with engine "gx", run in this validator's own ephemeral GX context.

    A batch is a whole partition, or a piece of one with the partition's `Verdict`, merged from every piece's
    `tally` and `keys` (the uniqueness checks' values): the failing rows are the same either way.
    """

    def __init__(
        self, contract: Contract, engine: str = "auto", batch_level: Sequence[str] = (), rows_only: bool = False
    ) -> None:
        # rows_only: the table-level expectations were judged from the files' footers (`file_failures`).
        self.expectations = [e for e in contract.expectations if not (rows_only and expectations.table_level(e))]
        self.batch_level = [
            bool({e["type"], expectation_key(e["type"], e.get("kwargs", {}).get("column"))} & set(batch_level))
            for e in self.expectations
        ]
        self.fast = [engine == "auto" and expectations.supported(e) for e in self.expectations]
        unique = "expect_column_values_to_be_unique"
        self.keys = [k for k, (e, fast) in enumerate(zip(self.expectations, self.fast)) if fast and e["type"] == unique]
        self.partition_wide = [
            k
            for k, (e, fast, whole) in enumerate(zip(self.expectations, self.fast, self.batch_level))
            if fast and (k in self.keys or whole or e.get("kwargs", {}).get("mostly") is not None)
        ]
        self.gx_batches = self.gx_suite = None
        if not all(self.fast):
            # GX takes 2.4 s to import: a check task whose expectations all run natively never imports it.
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            _quiet_gx()
            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            rest = [e for e, fast in zip(self.expectations, self.fast) if not fast]
            self.gx_suite = _build_suite({**contract.document, "expectations": rest}, contract.path)
            source = context.data_sources.add_pandas("batches")
            self.gx_batches = source.add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole")

    @property
    def tally_columns(self) -> list[str]:
        """The columns the partition-wide expectations read: all a piece's `tally` and `keys` need."""
        return list(dict.fromkeys(self.expectations[k]["kwargs"]["column"] for k in self.partition_wide))

    def tally(self, table: pa.Table) -> Tally:
        """A piece's counts for the partition-wide expectations (uniqueness: its counted rows; `keys` the rest)."""
        tally = Tally(rows=table.num_rows)
        for k in self.partition_wide:
            exp = self.expectations[k]
            if k not in self.keys:
                tally.failed[k] = len(expectations.evaluate(table, exp, whole=False).failed_rows)
            tally.counted[k] = expectations.counted(table, exp)
        return tally

    def keys_of(self, table: pa.Table) -> dict[int, pa.ChunkedArray]:
        """A piece's values of each uniqueness expectation's column."""
        return {k: expectations.values_of(table, self.expectations[k]) for k in self.keys}

    def verdict(self, tally: Tally, repeated: dict[int, tuple[pa.Array, int]]) -> Verdict:
        """A partition's verdict from its pieces' merged `tally` and, per uniqueness expectation, the values
        repeated in the partition and how many rows hold them (`expectations.repeated_values`)."""
        failed = {}
        for k in self.partition_wide:
            n = repeated[k][1] if k in self.keys else tally.failed[k]
            failed[k] = n if expectations.within_mostly(self.expectations[k], n, tally.counted[k]) else 0
        return Verdict(tally.rows, failed, {k: repeated[k][0] for k in self.keys})

    def validate(self, table: pa.Table, verdict: Verdict | None = None) -> Validation:
        """Check a whole partition, or a piece of one given its partition's `verdict`."""
        rows = table.num_rows
        gx_outcomes = iter(self._gx_outcomes(table) if self.gx_suite is not None else [])
        failed = np.zeros(rows, dtype=bool)
        reasons: dict[int, list[dict[str, str]]] = {}
        per_expectation = []
        for k, (exp, fast, whole_batch) in enumerate(zip(self.expectations, self.fast, self.batch_level)):
            if not fast:
                outcome = next(gx_outcomes)
            elif verdict is None or k not in self.partition_wide:
                outcome = expectations.evaluate(table, exp)
            elif verdict.failed[k]:
                outcome = expectations.evaluate(table, exp, verdict.repeated.get(k), whole=False)
            else:
                outcome = expectations.Outcome(np.array([], dtype=np.int64), [])
            total, of = (verdict.failed.get(k, 0), verdict.rows) if verdict else (len(outcome.failed_rows), rows)
            if whole_batch and 0 < total < of:
                outcome = _fail_batch(outcome, rows, total, of)
            column = str(exp.get("kwargs", {}).get("column", ""))
            for i, value in zip(outcome.failed_rows.tolist(), outcome.values):
                reasons.setdefault(i, []).append({"expectation": exp["type"], "column": column, "value": _short(value)})
            failed[outcome.failed_rows] = True
            per_expectation.append(
                {
                    "expectation": exp["type"],
                    "column": column,
                    "rows_checked": rows,
                    "rows_failed": len(outcome.failed_rows),
                    "examples": list(dict.fromkeys(_short(v) for v in outcome.values))[:3],
                }
            )
        return Validation(failed, reasons, per_expectation)

    def _gx_outcomes(self, table: pa.Table) -> list[expectations.Outcome]:
        frame = table.to_pandas().reset_index(drop=True)
        rows = len(frame)
        report = self.gx_batches.get_batch(batch_parameters={"dataframe": frame}).validate(
            self.gx_suite, result_format=_COMPLETE
        )
        # GX neither keeps the suite's order in its results nor gives unsaved expectations ids.
        pending: dict[str, list] = {}
        for result in report.results:
            pending.setdefault(_config_key(result.expectation_config), []).append(result)
        outcomes = []
        for result in (pending[_config_key(e.configuration)].pop(0) for e in self.gx_suite.expectations):
            info = result.exception_info or {}
            error = info.get("exception_message") if info.get("raised_exception") else None
            indexes = result.result.get("unexpected_index_list")
            if result.success:
                bad: list[int] = []
            elif indexes is None or error:
                bad = list(range(rows))  # a batch-level expectation (or a missing column) fails every row
            else:
                bad = [i if isinstance(i, int) else i["index"] for i in indexes]
            observed = result.result.get("unexpected_list")
            if not observed or len(observed) != len(bad):
                observed = [error or result.result.get("observed_value")] * len(bad)
            outcomes.append(expectations.Outcome(np.asarray(bad, dtype=np.int64), [str(v) for v in observed], error))
        return outcomes


def check_arguments(contract: Contract, schema: pa.Schema) -> None:
    """Refuse, at plan time and by name, an expectation whose arguments cannot be evaluated on the input's
    column types (date bounds on a string column, a value set of another type, ...): evaluating the
    vectorised checks on an empty table of the input's schema raises exactly what a batch would."""
    empty = schema.empty_table()
    for i, exp in enumerate(contract.expectations):
        column = exp.get("kwargs", {}).get("column")
        if not expectations.supported(exp) or expectations.table_level(exp) or column not in schema.names:
            continue
        problem = expectations.argument_problem(exp, schema.field(column).type)
        if problem is None:
            try:
                expectations.evaluate(empty, exp)
            except (pa.ArrowException, ValueError, TypeError) as exc:
                problem = str(exc).splitlines()[0]
        if problem:
            raise UsageError(
                f"contract {contract.path}: expectations[{i}] {exp['type']!r} on column {column!r} "
                f"({schema.field(column).type}): its arguments cannot be compared with the column: {problem}"
            )


def check_columns(contract: Contract, columns: Collection[str], where: str) -> None:
    """Refuse, at plan time, a row-level expectation on a column that no input file has (`columns`: every
    column of every file, and the partition columns): else every row would fail it, and the partition would be
    quarantined whole while the run succeeded. A column missing from some files only fails those files' rows."""
    for i, exp in enumerate(contract.expectations):
        if expectations.table_level(exp):
            continue
        kwargs = exp.get("kwargs", {})
        for column in [kwargs[k] for k in COLUMN_KWARGS if k in kwargs]:
            if column not in columns:
                raise UsageError(
                    f"contract {contract.path}: expectations[{i}] {exp['type']!r} is on column {column!r}, which no "
                    f"input file has ({where}; their columns are {sorted(columns)}): fix the column's name in the "
                    "contract, or the input"
                )


def file_failures(contract: Contract, files: list, rows: int) -> dict[str, list[dict[str, str]]]:
    """The table-level expectations (column set, row count, ...) judged on one partition's files from their
    footers: file path -> the reasons every row of that file fails with (none when all pass)."""
    failures: dict[str, list[dict[str, str]]] = {}
    for f in files:
        for exp in contract.expectations:
            if not expectations.table_level(exp):
                continue
            observed = expectations.judge_files(exp, f.schema.names, rows)
            if observed is not None:
                column = str(exp.get("kwargs", {}).get("column", ""))
                failures.setdefault(f.path, []).append(
                    {"expectation": exp["type"], "column": column, "value": _short(observed)}
                )
    return failures


def expectation_key(expectation: str, column: str | None) -> str:
    """How a failure is named in counts, reports and the `batch_level` setting: `type(column)`."""
    return f"{expectation}({column})" if column else expectation


def _fail_batch(outcome: expectations.Outcome, rows: int, failed: int, of: int) -> expectations.Outcome:
    """A batch-level verdict: every row fails (`rows`, of a partition where `failed` of `of` rows fail the
    expectation); rows that passed say why they are held back."""
    values = [f"batch failed: {failed} of {of} rows"] * rows
    for i, value in zip(outcome.failed_rows.tolist(), outcome.values):
        values[i] = value
    return expectations.Outcome(np.arange(rows), values)


def _config_key(config) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    return json.dumps([config.type, kwargs], sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
