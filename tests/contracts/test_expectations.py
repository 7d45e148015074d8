"""The vectorised checks decide every row exactly as Great Expectations does."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pyarrow as pa
import pytest

from jobs.contracts.suite import Contract, ContractValidator, load_contract
from jobs.tools import synthetic
from tests.conftest import REPO


def anomalous_batch(rows: int = 3_000) -> pa.Table:
    table = synthetic.customers(rows, dt.date(2026, 11, 20), seed=11)
    rng = np.random.default_rng(5)

    def poke(name: str, values: dict[int, object], type_: pa.DataType | None = None) -> None:
        nonlocal table
        column = table.column(name).to_pylist()
        for i, v in values.items():
            column[i] = v
        table = table.set_column(
            table.schema.get_field_index(name), name, pa.array(column, type_ or table.schema.field(name).type)
        )

    picks = rng.choice(rows, 40, replace=False).tolist()
    poke("age", {picks[0]: 7, picks[1]: 150, picks[2]: None, picks[3]: 18, picks[4]: 120})
    poke("monthly_charges", {picks[5]: float("nan"), picks[6]: None, picks[7]: -1.0, picks[8]: 0.0})
    poke("region", {picks[9]: "atlantis", picks[10]: None, picks[11]: "NORTH"})
    poke("customer_id", {picks[12]: 42, picks[13]: 42, picks[14]: 43})
    poke("plan_tier", {picks[15]: "premium_plus", picks[16]: ""})
    poke("satisfaction", {picks[17]: 0, picks[18]: 6})
    poke("updated_at", {picks[19]: dt.datetime(2030, 1, 1, tzinfo=dt.UTC), picks[20]: None})
    return table


SUITE = {
    "name": "equivalence",
    "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "age", "min_value": 18, "max_value": 120}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "age", "min_value": 18, "max_value": 120, "strict_min": True, "strict_max": True},
        },
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "monthly_charges", "min_value": 0}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "satisfaction", "max_value": 5, "mostly": 0.5},
        },
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "updated_at", "max_value": "2026-12-31T00:00:00+00:00"},
        },
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "monthly_charges"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "age"}},
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "region", "value_set": synthetic.CATEGORIES["region"]},
        },
        {"type": "expect_column_values_to_not_be_in_set", "kwargs": {"column": "plan_tier", "value_set": ["", "n/a"]}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "customer_id"}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "plan_tier", "regex": "^[a-z]+$"}},
        {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "region", "regex": "[A-Z]"}},
        {
            "type": "expect_column_value_lengths_to_be_between",
            "kwargs": {"column": "plan_tier", "min_value": 1, "max_value": 8},
        },
        {"type": "expect_column_values_to_be_null", "kwargs": {"column": "monthly_charges", "mostly": 0.0}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 10}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
        {"type": "expect_column_to_exist", "kwargs": {"column": "age"}},
        {
            "type": "expect_table_columns_to_match_set",
            "kwargs": {"column_set": ["age", "region"], "exact_match": False},
        },
        {
            "type": "expect_column_pair_values_a_to_be_greater_than_b",
            "kwargs": {"column_A": "total_charges", "column_B": "monthly_charges", "or_equal": True},
        },
    ],
}


def contract(document: dict) -> Contract:
    return Contract("equivalence.json", document["name"], document, "0" * 64)


def test_fast_checks_flag_the_same_rows_as_gx():
    batch = anomalous_batch()
    fast = ContractValidator(contract(SUITE), engine="auto")
    assert fast.fast.count(False) == 1  # the column-pair expectation goes to GX
    reference = ContractValidator(contract(SUITE), engine="gx")
    got, want = fast.validate(batch), reference.validate(batch)
    for g, w in zip(got.per_expectation, want.per_expectation):
        assert (g["expectation"], g["column"], g["rows_failed"]) == (w["expectation"], w["column"], w["rows_failed"]), g
    np.testing.assert_array_equal(got.failed, want.failed)
    assert got.reasons.keys() == want.reasons.keys()
    for row in got.reasons:
        assert [(r["expectation"], r["column"]) for r in got.reasons[row]] == [
            (r["expectation"], r["column"]) for r in want.reasons[row]
        ]
    assert got.per_expectation[0]["rows_failed"] == 2  # age 7 and 150; the null age is ignored
    assert sorted(got.per_expectation[0]["examples"]) == ["150", "7"]
    assert got.per_expectation[5]["rows_failed"] == 2  # monthly_charges NaN and null
    assert got.per_expectation[7]["rows_failed"] == 2  # region atlantis and NORTH; the null is ignored
    assert sorted(got.per_expectation[7]["examples"]) == ["NORTH", "atlantis"]


@pytest.mark.parametrize("path", sorted((REPO / "data_contracts").glob("*.*")), ids=lambda p: p.name)
def test_every_contract_in_the_repo_loads(path):
    loaded = load_contract(path)
    assert len(loaded.expectations) == len(json.loads(path.read_text())["expectations"])


def test_demo_contract_runs_entirely_vectorised():
    validator = ContractValidator(load_contract(REPO / "data_contracts" / "customers.json"))
    assert validator.gx_suite is None and all(validator.fast)


@pytest.mark.parametrize(
    "expectation, message",
    [
        (
            {"type": "expect_column_values_to_be_betwen", "kwargs": {"column": "age"}},
            "expectations[1] 'expect_column_values_to_be_betwen' is not a known expectation type",
        ),
        (
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "region", "value_set": 5}},
            "expectations[1] 'expect_column_values_to_be_in_set': value_set",
        ),
        ({"kwargs": {"column": "age"}}, "expectations[1] has no 'type'"),
    ],
)
def test_contract_loading_refuses_bad_expectations(tmp_path, expectation, message):
    from jobs.errors import UsageError

    path = tmp_path / "region.json"
    good = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "age"}}
    path.write_text(json.dumps({"name": "bad", "expectations": [good, expectation]}))
    with pytest.raises(UsageError, match=re.escape(message)):
        load_contract(path)


def test_contract_as_yaml(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: y\nexpectations:\n  - type: expect_column_values_to_not_be_null\n    kwargs: {column: age}\n"
    )
    assert load_contract(path).columns == ["age"]


def test_batch_level_expectations_fail_the_whole_batch():
    batch = anomalous_batch()
    row_level = ContractValidator(contract(SUITE)).validate(batch)
    as_batch = ContractValidator(contract(SUITE), batch_level=["expect_column_values_to_be_in_set(region)"])
    result = as_batch.validate(batch)
    assert row_level.per_expectation[7]["rows_failed"] == 2
    assert result.per_expectation[7]["rows_failed"] == batch.num_rows
    assert result.failed.all()
    held_back = [r for r in result.reasons[0] if r["column"] == "region"]
    assert held_back[0]["value"] in ("batch failed: 2 of 3000 rows", "atlantis", "NORTH")


@pytest.mark.parametrize(
    "encoding",
    [
        pa.large_string(),
        pa.string_view(),
        pa.dictionary(pa.int32(), pa.string()),
        pa.dictionary(pa.int8(), pa.large_string()),
    ],
    ids=str,
)
def test_string_columns_in_every_encoding_are_checked_as_gx_checks_them(encoding):
    """Guards (issue 20): dictionary and large_string columns (what Spark, pandas and pyarrow write) were refused
    at plan time by expect_column_values_to_be_in_set, and by match_regex at run time (no kernel), and the
    bounds of expect_column_value_lengths_to_be_between were compared with the column's type."""
    from jobs.contracts.suite import check_arguments

    plain = anomalous_batch()
    batch = plain
    for name in ("region", "plan_tier"):
        batch = batch.set_column(batch.schema.get_field_index(name), name, batch.column(name).cast(encoding))
    check_arguments(contract(SUITE), batch.schema)  # refuses nothing
    got = ContractValidator(contract(SUITE), engine="auto").validate(batch)
    want = ContractValidator(contract(SUITE), engine="gx").validate(plain)
    assert [(g["expectation"], g["column"], g["rows_failed"]) for g in got.per_expectation] == [
        (w["expectation"], w["column"], w["rows_failed"]) for w in want.per_expectation
    ]
    np.testing.assert_array_equal(got.failed, want.failed)
    region_in_set = next(g for g in got.per_expectation if g["expectation"] == "expect_column_values_to_be_in_set")
    assert sorted(region_in_set["examples"]) == ["NORTH", "atlantis"]


def test_lengths_are_bounded_by_whole_numbers():
    from jobs.contracts.suite import check_arguments
    from jobs.errors import UsageError

    lengths = {"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "plan_tier", "min_value": 1.5}}
    with pytest.raises(UsageError, match="1.5 is not a length"):
        check_arguments(contract({"name": "lengths", "expectations": [lengths]}), anomalous_batch().schema)


@pytest.mark.parametrize("type_", [pa.int64(), pa.int32(), pa.uint8()], ids=str)
def test_repeated_integers_are_found_by_sorting_as_by_counting(type_):
    """Guards the sort-based path of uniqueness for integer keys without nulls: the same repeated values and
    the same count of rows holding them as Arrow's hash count, on keys with and without repeats."""
    import pyarrow.compute as pc

    from jobs.contracts.expectations import repeated_values

    rng = np.random.default_rng(3)
    for size, high in [(0, 1), (1, 1), (200, 10_000), (200, 150), (5_000, 100), (300, 1)]:
        values = pa.chunked_array([pa.array(rng.integers(0, min(high, 256), size), type_)])
        counts = pc.value_counts(values.combine_chunks())
        repeated = counts.filter(pc.greater(counts.field("counts"), 1))
        found, rows = repeated_values(values)
        assert found.type == type_
        assert sorted(found.to_pylist()) == sorted(repeated.field("values").to_pylist())
        assert rows == sum(repeated.field("counts").to_pylist())
