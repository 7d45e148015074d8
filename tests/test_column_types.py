"""One type per input column (issue 20): the join of the files' types, how tables store it, and value-by-value
casts that find exactly the values that do not fit."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from jobs.column_types import castable, conform, run_type, stored_type, widens
from jobs.inputs import select_input

DICT = pa.dictionary(pa.int32(), pa.string())


@pytest.mark.parametrize(
    ("kinds", "joined"),
    [
        ([pa.int32(), pa.float64()], pa.float64()),
        ([pa.int32(), pa.int64()], pa.int64()),
        ([pa.uint8(), pa.int8()], pa.int16()),
        ([pa.uint64(), pa.int64()], pa.int64()),  # no integer holds both: each value checked
        ([pa.float32(), pa.float16()], pa.float32()),
        ([pa.float32(), pa.int32()], pa.float64()),
        ([pa.decimal128(10, 2), pa.decimal128(12, 4)], pa.decimal128(12, 4)),
        ([pa.decimal128(10, 2), pa.float64()], pa.float64()),
        ([pa.string(), DICT, pa.string_view()], pa.string()),
        ([pa.string(), pa.large_string()], pa.large_string()),
        ([pa.string(), pa.int64()], None),  # "02134" is not the number 2134
        ([pa.null(), pa.int64()], pa.int64()),  # a column of nulls (pandas, pyarrow) joins anything
        ([pa.null()], pa.null()),
        ([pa.timestamp("ns"), pa.timestamp("ms")], pa.timestamp("us")),
        ([pa.timestamp("ns", "Europe/Paris"), pa.timestamp("s")], pa.timestamp("us", "UTC")),
        ([pa.timestamp("ms", "UTC"), pa.date32()], pa.timestamp("us", "UTC")),
        ([pa.date64()], pa.date32()),
        ([pa.struct([("a", pa.int8())]), pa.int8()], None),
        ([pa.bool_(), pa.string()], None),
    ],
)
def test_a_column_is_read_as_the_join_of_its_files_types(kinds, joined):
    assert run_type(kinds) == joined
    if joined is not None:
        assert all(castable(k, joined) for k in kinds)


def test_tables_store_a_column_whatever_type_a_run_reads_it_as():
    assert {stored_type(k) for k in (pa.int8(), pa.uint32(), pa.int32(), pa.int64())} == {pa.int64()}
    assert stored_type(pa.uint64()) == pa.decimal128(20, 0)  # every uint64 fits
    assert {stored_type(k) for k in (pa.float16(), pa.float32(), pa.float64())} == {pa.float64()}
    assert {stored_type(k) for k in (pa.string(), pa.large_string())} == {pa.string()}
    assert {stored_type(pa.timestamp(u, z)) for u in ("s", "ns") for z in (None, "Asia/Tokyo")} == {
        pa.timestamp("us", "UTC")
    }
    for kind in (pa.uint64(), pa.int8(), pa.float32(), pa.large_string(), pa.timestamp("ns")):
        assert widens(run_type([kind]), stored_type(kind))
    assert widens(pa.int32(), pa.float64()) and not widens(pa.int64(), pa.float64())
    assert widens(pa.int16(), pa.float32()) and not widens(pa.int32(), pa.float32())
    assert not widens(pa.float64(), pa.int64()) and not widens(pa.float64(), pa.float32())
    assert widens(pa.int64(), pa.decimal128(19, 0)) and not widens(pa.int64(), pa.decimal128(18, 0))


def test_exactly_the_values_that_do_not_fit_fail_and_become_null():
    rng = np.random.default_rng(7)
    values = rng.integers(-1000, 1000, 100_000)
    bad = sorted(rng.choice(len(values), 5, replace=False).tolist())
    text = [str(v) for v in values]
    for i in bad:
        text[i] = f"n/a {i}"
    chunks = pa.chunked_array([pa.array(text[:40_000]), pa.array(text[40_000:])])
    table, reasons = conform(pa.table({"x": chunks}), pa.schema([("x", pa.int64())]), "s3://b/ds=1/part-7.parquet")
    assert [i for i, r in enumerate(reasons) if r] == bad
    assert reasons[bad[0]] == [
        {
            "expectation": "schema",
            "column": "x",
            "value": f"'n/a {bad[0]}' (string in part-7.parquet) does not fit int64",
        }
    ]
    expected = values.tolist()
    for i in bad:
        expected[i] = None
    assert table.column("x").to_pylist() == expected


@pytest.mark.parametrize(
    ("array", "target", "fails"),
    [
        (pa.array([1, 2**31, -(2**31) - 1], pa.int64()), pa.int32(), [False, True, True]),
        (pa.array([2**63 - 1, 2**64 - 1], pa.uint64()), pa.int64(), [False, True]),
        (pa.array([2**53, 2**53 + 1]), pa.float64(), [False, True]),  # a double holds 2^53 + 1 only as 2^53
        (pa.array([3.0, 3.5]), pa.int64(), [False, True]),
        (pa.array(["3.5", "1e3", "x"]), pa.float64(), [False, False, True]),
        (
            pa.array([Decimal("12.34"), Decimal("1234.5678901234567891"), None], pa.decimal128(24, 16)),
            pa.float64(),
            [False, True, False],
        ),
        (pa.array([1_001, 2_000], pa.timestamp("ns")), pa.timestamp("us", "UTC"), [False, False]),  # truncated
    ],
)
def test_a_value_fails_exactly_when_arrows_safe_cast_refuses_it(array, target, fails):
    table, reasons = conform(pa.table({"x": array}), pa.schema([("x", target)]), "f.parquet")
    assert [r is not None for r in reasons] == fails
    assert [v is None for v in table.column("x").to_pylist()] == [f or not v.is_valid for f, v in zip(fails, array)]


def test_only_a_missing_column_or_a_type_nothing_casts_from_fails_a_file_whole(tmp_path):
    import pyarrow.parquet as pq

    part = tmp_path / "ds=1"
    part.mkdir()
    pq.write_table(
        pa.table({"id": [1], "x": pa.array([1], pa.int32()), "s": ["a"], "n": [{"a": 1}]}), part / "a.parquet"
    )
    pq.write_table(
        pa.table({"id": [2], "x": [1.5], "s": pa.array(["b"]).dictionary_encode(), "n": [1]}), part / "b.parquet"
    )
    pq.write_table(pa.table({"id": [3], "s": pa.array(["c"], pa.large_string()), "n": [{"a": 2}]}), part / "c.parquet")
    selection = select_input(str(tmp_path), ["ds"], "all")
    assert selection.schema.field("x").type == pa.float64() and selection.schema.field("s").type == pa.large_string()
    assert selection.drift(["id", "x", "s", "n"]) == {
        str(part / "b.parquet"): [
            {"expectation": "schema", "column": "n", "value": "int64 (expected struct<a: int64>)"}
        ],
        str(part / "c.parquet"): [{"expectation": "schema", "column": "x", "value": "missing"}],
    }


def test_not_null_fields_and_all_null_files_join_the_others(tmp_path):
    """A writer's `not null` (Spark) or a column of nulls (pandas' all-None column) fails no file, and the
    files' tables, conformed, join into one."""
    import pyarrow.parquet as pq

    from jobs.inputs import read_columns

    part = tmp_path / "ds=1"
    part.mkdir()
    strict = pa.schema([pa.field("x", pa.int32(), nullable=False)])
    pq.write_table(pa.table({"x": pa.array([1, 2], pa.int32())}, schema=strict), part / "a.parquet")
    wide = pa.schema([pa.field("x", pa.int64(), nullable=False)])
    pq.write_table(pa.table({"x": pa.array([3], pa.int64())}, schema=wide), part / "b.parquet")
    pq.write_table(pa.table({"x": pa.nulls(2)}), part / "c.parquet")
    selection = select_input(str(tmp_path), ["ds"], "all")
    assert selection.schema.field("x").type == pa.int64()
    assert selection.drift(["x"]) == {}
    tables = [conform(read_columns(f.path, ["x"]), selection.schema, f.path)[0] for f in selection.files]
    assert pa.concat_tables(tables).column("x").to_pylist() == [1, 2, 3, None, None]


def test_without_a_join_the_types_of_most_files_win_and_only_the_others_fail_whole(tmp_path):
    import pyarrow.parquet as pq

    from jobs.stages.drift import fail_drifted

    part = tmp_path / "ds=1"
    part.mkdir()
    values = {
        "a": pa.array([1], pa.int32()),
        "b": pa.array([2], pa.int32()),
        "c": pa.array([3], pa.int64()),
        "d": pa.array([4.5]),
        "e": pa.array(["02134", "x"]),  # text: not the number 2134
    }
    for name, x in values.items():
        pq.write_table(pa.table({"x": x}), part / f"{name}.parquet")
    selection = select_input(str(tmp_path), ["ds"], "all")
    assert selection.schema.field("x").type == pa.float64()
    drifted = selection.drift(["x"])
    assert drifted == {
        str(part / "e.parquet"): [{"expectation": "schema", "column": "x", "value": "string (expected double)"}]
    }
    # Its every row fails, counted even when the run reads no other column of it.
    written = fail_drifted(list(selection.files), drifted, pa.schema([("x", pa.float64())]), None, "run")
    assert (written.rows_seen, written.rows_failed) == (2, 2)


def test_a_table_begun_with_a_column_of_nulls_takes_any_later_type():
    assert stored_type(pa.null()) == pa.string()
    assert all(widens(kind, pa.string()) for kind in (pa.null(), pa.int64(), pa.float64(), pa.timestamp("us")))
    assert widens(pa.null(), pa.float64()) and not widens(pa.struct([("a", pa.int8())]), pa.string())
