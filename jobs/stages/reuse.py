"""Reuse of unchanged rows (`scoring.reuse`): re-scoring a partition with the same model gives every row whose model
inputs did not change the score it already has, and sends only new or changed rows to the model.

Each scored row carries `input_hash`, a 64-bit hash of its model input values (pandas' `hash_array`, combined
column by column). A scoring actor reads the rows the table's read version holds of a batch's partition (id,
hash, outputs, `scored_at`) once, and a batch row whose id and hash match one of them takes its outputs and
`scored_at`; its device is `reused`. So the output equals a full re-score, and the rows counted under
`reused` are those no model saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from jobs import hive
from jobs.columns import INPUT_HASH, SCORED_AT
from jobs.inputs import partition_label
from jobs.storage import delta_table

NULL_HASH = np.uint64(0x9E3779B97F4A7C15)  # a null value's hash, whatever the column's type
_MIX = np.uint64(1_000_003)


@dataclass(frozen=True)
class ReuseTask:
    """Where an actor finds the earlier scores: the output table at the version the plan read, and the input
    partitions whose rows there were scored by this very model (same sha256) with their input hashes."""

    table_uri: str
    version: int
    partitions: frozenset[str]  # input partition labels
    id_column: str
    outputs: tuple[str, ...]


def input_hash(table: pa.Table, columns: tuple[str, ...]) -> pa.Array:
    """One int64 per row over the values of `columns` (in order), equal for equal values whatever the batch."""
    combined = np.zeros(table.num_rows, dtype=np.uint64)
    for column in columns:
        combined = combined * _MIX ^ _column_hash(table.column(column))
    return pa.array(combined.view(np.int64))


def _column_hash(column: pa.ChunkedArray) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    kind = column.type
    if pa.types.is_dictionary(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        encoded = column if pa.types.is_dictionary(kind) else pc.dictionary_encode(column)
        distinct = pd.util.hash_array(encoded.dictionary.to_numpy(zero_copy_only=False).astype(object))
        hashed = distinct[pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)]
    elif pa.types.is_boolean(kind):
        hashed = pd.util.hash_array(pc.fill_null(column, False).to_numpy(zero_copy_only=False).astype(np.int8))
    else:  # numbers as float64, so an int column read as float hashes alike; NaN counts as a value
        hashed = pd.util.hash_array(pc.cast(pc.fill_null(column, 0), pa.float64()).to_numpy(zero_copy_only=False))
    return np.where(valid, hashed, NULL_HASH)


class EarlierScores:
    """An actor's view of the earlier scores, read one partition at a time and kept while its batches come."""

    def __init__(self, task: ReuseTask) -> None:
        self.task = task
        self.cached: dict[str, pa.Table] = {}

    def match(self, rows: pa.Table, hashes: pa.Array, partitioning: tuple[str, ...]) -> tuple[np.ndarray, pa.Table]:
        """The positions in `rows` whose id and input hash an earlier score has, and those scores (outputs and
        `scored_at`, in the order of the positions)."""
        task = self.task
        keys = pa.table({task.id_column: rows.column(task.id_column), INPUT_HASH: hashes})
        keys = keys.append_column("_position", pa.array(np.arange(rows.num_rows)))
        for column in partitioning:
            keys = keys.append_column(column, rows.column(column))
        found = []
        for values in keys.select(list(partitioning)).group_by(list(partitioning)).aggregate([]).to_pylist():
            label = partition_label(tuple((c, hive.value_of(v)) for c, v in values.items()))
            if label not in task.partitions:
                continue
            earlier = self._earlier(label, values)
            part = keys
            for column, value in values.items():
                part = part.filter(
                    pc.is_null(part.column(column)) if value is None else pc.equal(part.column(column), value)
                )
            found.append(
                part.select([task.id_column, INPUT_HASH, "_position"]).join(
                    earlier, [task.id_column, INPUT_HASH], join_type="inner"
                )
            )
        if not found:
            return np.array([], dtype=np.int64), pa.table({})
        joined = pa.concat_tables(found).sort_by("_position")
        positions, first = np.unique(joined.column("_position").to_numpy(), return_index=True)
        return positions, joined.take(pa.array(first)).select([*task.outputs, SCORED_AT])

    def _earlier(self, label: str, values: dict) -> pa.Table:
        if label not in self.cached:
            task = self.task
            condition = None
            for column, value in values.items():
                term = pc.field(column).is_null() if value is None else pc.field(column) == hive.value_of(value)
                condition = term if condition is None else condition & term
            dataset = delta_table(task.table_uri, task.version).to_pyarrow_dataset()
            self.cached = {  # one partition at a time: batches arrive partition after partition
                label: dataset.to_table(
                    columns=[task.id_column, INPUT_HASH, *task.outputs, SCORED_AT], filter=condition
                )
            }
        return self.cached[label]
