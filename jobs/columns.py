"""The columns the stages of a run pass to each other, named and typed once.

A check task adds `REASONS` (null when a row passed) and, with the quarantine on, each row's `SOURCE_FILE` and
`SOURCE_ROW`; the scoring actors add the model's outputs, the `LINEAGE_FIELDS`, `EVENT_TIME` and `DEVICE`; the
writer splits rows by `REASONS` into the output table and the quarantine table (`quarantine_schema`). Columns
whose names start with `_` travel between stages only; the lineage columns are stored in the output table.
"""

from __future__ import annotations

import pyarrow as pa

PIECE_INDEX = "_piece"  # a check task's input: the index of one piece of the input (CheckTask.pieces)
REASONS = "_reasons"  # why a row failed: a list of {expectation, column, value}, null when it passed
EVENT_TIME = "_event_time"  # the row's input.event_time_column, for the output partition's watermark
SOURCE_FILE = "_source_file"  # the row's input file (quarantine on): where the writer reads a failing row back
SOURCE_ROW = "_source_row"  # the row's position in its file
DEVICE = "_device"  # where the row's actor ran its model ("cpu", "cuda:0 (NVIDIA H200)"): the writer counts rows by it

CHALLENGER = "_challenger."  # + an output column: the challenger model's value of it (model.challenger)


def challenger_column(column: str) -> str:
    """The column the scoring stage puts the challenger's value of output `column` in, for the writer."""
    return f"{CHALLENGER}{column}"


# Every column a stage adds for the next one: no model output may take one of these names.
STAGE_COLUMNS = (PIECE_INDEX, REASONS, EVENT_TIME, SOURCE_FILE, SOURCE_ROW, DEVICE)

INPUT_HASH = "input_hash"  # scoring.reuse: a hash of the row's model input values, stored with its scores
REUSED = "reused"  # the `DEVICE` of a row whose earlier score was reused (scoring.reuse): no model saw it

RUN_ID = "run_id"
MODEL_VERSION = "model_version"
SCORED_AT = "scored_at"
QUARANTINED_AT = "quarantined_at"
LINEAGE_FIELDS = [
    pa.field(RUN_ID, pa.string()),
    pa.field(MODEL_VERSION, pa.string()),
    pa.field(SCORED_AT, pa.timestamp("us", tz="UTC")),
]
LINEAGE_TYPES = {f.name: f.type for f in LINEAGE_FIELDS}
REASON_TYPE = pa.list_(pa.struct([("expectation", pa.string()), ("column", pa.string()), ("value", pa.string())]))

# Reasons that do not come from the contract's expectations.
NULL_INPUT = "model_input_not_null"  # a null or NaN model input: the row cannot be scored
OUT_OF_RANGE = "model_input_out_of_range"  # a model input value its declared type cannot hold (200 for an int8)
MODEL_ERROR = "model_error"  # the model raised on the row: column = the error's type, value = its message
EVENT_TIME_IN_FUTURE = "event_time_in_future"  # later than the run's clock plus input.event_time_tolerance
OUTPUT_NOT_FINITE = "model_output_not_finite"  # a float output is NaN or infinite: column = the output column


def quarantine_schema(schema: pa.Schema, read_columns: list[str], partitioning: list[str]) -> pa.Schema:
    """The quarantine table: failing rows as read (their columns, in the types the tables store them as:
    `jobs.column_types.stored_type`), their file, reasons, the run and when."""
    fields = [schema.field(c) for c in read_columns if c not in partitioning]
    fields += [pa.field(c, pa.string()) for c in partitioning]
    fields += [
        pa.field(SOURCE_FILE, pa.string()),
        pa.field(REASONS, REASON_TYPE),
        pa.field(RUN_ID, pa.string()),
        pa.field(QUARANTINED_AT, pa.timestamp("us", tz="UTC")),
    ]
    return pa.schema(fields)
