"""The writer's gathering of scored rows into files (`jobs.stages.sink._PartitionRows`) and its counting of
failing rows' reasons (`WrittenFiles`)."""

from __future__ import annotations

import pyarrow as pa

from jobs.columns import NULL_INPUT, REASON_TYPE, REASONS
from jobs.stages.sink import WrittenFiles, _PartitionRows


def block(day: str, ids: range) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "ds": pa.array([day] * len(ids))})


def test_in_order_writes_a_partition_when_the_next_begins_and_loses_no_row():
    """Guards the inline engine's memory: its one writer sees the whole run, and held every partition's last,
    smaller-than-a-file rows until the end (peak memory grew with the data: 1.6 GB for 8 M rows, 1.0 GB now)."""
    big = 1 << 30  # no partition fills a file here
    held, ordered = _PartitionRows(("ds",), big), _PartitionRows(("ds",), big, in_order=True)
    first, second, third = (
        block("2026-12-01", range(0, 5)),
        block("2026-12-01", range(5, 9)),
        block("2026-12-02", range(9, 12)),
    )

    assert list(held.add(first)) == list(held.add(second)) == list(held.add(third)) == []
    assert list(ordered.add(first)) == list(ordered.add(second)) == []
    written = list(ordered.add(third))  # the first day is complete once the second begins
    assert [(values, rows.column("id").to_pylist()) for values, rows in written] == [
        ({"ds": "2026-12-01"}, list(range(9)))
    ]
    rest = [(values, rows.column("id").to_pylist()) for values, rows in ordered.drain()]
    assert rest == [({"ds": "2026-12-02"}, [9, 10, 11])]
    assert [(values, rows.num_rows) for values, rows in held.drain()] == [
        ({"ds": "2026-12-01"}, 9),
        ({"ds": "2026-12-02"}, 3),
    ]


def test_a_null_the_contract_and_the_model_both_refuse_counts_once():
    """A null boolean that breaks the contract's not-null expectation also carries the model's null rule; the
    summary listed it twice (issue 25). Each is counted alone where the other does not apply."""
    not_null = {"expectation": "expect_column_values_to_not_be_null", "column": "auto_pay", "value": "None"}
    model_rule = {"expectation": NULL_INPUT, "column": "auto_pay", "value": "null"}
    other_column = {"expectation": NULL_INPUT, "column": "tenure", "value": "null"}
    reasons = [[not_null, model_rule], [model_rule], [not_null, model_rule, other_column]]
    written = WrittenFiles()
    written.count_failed(pa.table({REASONS: pa.array(reasons, REASON_TYPE)}))
    assert written.rows_failed == 3
    assert dict(written.reasons) == {
        "expect_column_values_to_not_be_null(auto_pay)": 2,
        f"{NULL_INPUT}(auto_pay)": 1,
        f"{NULL_INPUT}(tenure)": 1,
    }
