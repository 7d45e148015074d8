"""What every contender shares: the task file, the ONNX session, and how columns become feeds and outputs.

Only pyarrow, numpy and onnxruntime, so that it imports in each peer's own virtual environment. The peers differ
in how they read, schedule and write; the per-batch work is this one function for all of them, so a ratio
measures the engine, not a different conversion. Feeds and outputs follow `jobs.stages.scoring` (`_feed`,
`_output_columns`) for the cases the workloads use: one column per input or a stack of them, and an output kept
whole or split per index.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Task:
    """What to score, written by `run.py` from the job spec and the model's binding."""

    files: list[str]
    id_column: str | None
    model: str
    batch_size: int
    inputs: list[dict]  # {name, columns, dtype, rank}
    outputs: list[dict]  # {name, columns (null skips an index), per_index}

    @classmethod
    def load(cls, path: str | Path) -> Task:
        return cls(**json.loads(Path(path).read_text()))

    @property
    def columns(self) -> list[str]:
        """The columns to read: the id, then the model's inputs (nothing else is projected)."""
        ids = [self.id_column] if self.id_column else []
        return list(dict.fromkeys(ids + [c for i in self.inputs for c in i["columns"]]))

    @property
    def output_schema(self) -> pa.Schema:
        """The written columns, typed once so that engines that want a declared return type get one."""
        return pa.schema([pa.field(name, dtype) for name, dtype in self.output_types().items()])

    def output_types(self) -> dict[str, pa.DataType]:
        from onnxruntime import InferenceSession

        declared = {o.name: o.type for o in InferenceSession(self.model).get_outputs()}
        types = {"tensor(float)": pa.float32(), "tensor(double)": pa.float64(), "tensor(int64)": pa.int64()}
        out = {self.id_column: pa.int64()} if self.id_column else {}
        for o in self.outputs:
            out.update({c: types[declared[o["name"]]] for c in o["columns"] if c is not None})
        return out


@functools.cache
def session(model: str, threads: int = 0):
    """An ONNX Runtime CPU session; threads 0 is the runtime's default (one per physical core). Cached, so that
    a worker process that an engine reuses for several tasks (Spark's) loads the model once."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _feed(spec: dict, table: pa.Table | pa.RecordBatch) -> np.ndarray:
    if spec["dtype"] == "string":
        arrays = [
            pc.fill_null(table.column(c), "").to_numpy(zero_copy_only=False).astype(object) for c in spec["columns"]
        ]
    else:
        arrays = [table.column(c).to_numpy(zero_copy_only=False).astype(spec["dtype"]) for c in spec["columns"]]
    return arrays[0] if spec["rank"] == 1 else np.stack(arrays, axis=1)


def score(sess, task: Task, table: pa.Table | pa.RecordBatch) -> pa.Table:
    """One batch: the id column (if any) and the model's outputs, named as the job spec maps them."""
    rows = table.num_rows
    names = [o["name"] for o in task.outputs]
    results = dict(zip(names, sess.run(names, {i["name"]: _feed(i, table) for i in task.inputs})))
    columns: dict[str, pa.Array] = {}
    if task.id_column:
        column = table.column(task.id_column)
        columns[task.id_column] = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    for o in task.outputs:
        values = np.asarray(results[o["name"]])
        if o["per_index"]:
            values = values.reshape(rows, -1)
            columns.update({c: pa.array(values[:, i]) for i, c in enumerate(o["columns"]) if c is not None})
        else:
            columns[o["columns"][0]] = pa.array(values.reshape(rows))
    return pa.table(columns)


def args() -> tuple[Task, Path, list[str]]:
    """`SCRIPT TASK.json OUT_DIR [OPTIONS...]`: every contender's command line."""
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} TASK.json OUT_DIR [OPTIONS...]")
    return Task.load(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
