"""Daft with the native runner: read_parquet, a class UDF batched at the job's batch size, write_parquet.

The UDF returns a struct of the model's outputs, unnested into columns (`unnest=True`). One instance
(`max_concurrency=1`, run by Daft in a worker process of its own) with ONNX Runtime's default threads (one per
core): on 2 CPUs a second instance would only split the same cores.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import daft
import pyarrow as pa
from common import Task, args, open_model, score
from daft import col


def scorer(task: Task):
    """The UDF class, made once the task is known: its return type is the outputs' struct."""
    outputs = {n: t for n, t in task.output_types().items() if n != task.id_column}
    inputs = [c for c in task.columns if c != task.id_column]

    @daft.cls(max_concurrency=1)
    class Scorer:
        def __init__(self) -> None:
            self.runtime = open_model(task)
            self.task = dataclasses.replace(task, id_column=None)  # the id stays a column of the frame

        @daft.method.batch(
            return_dtype=daft.DataType.from_arrow_type(pa.struct(outputs)), batch_size=task.batch_size, unnest=True
        )
        def __call__(self, *columns: daft.Series) -> daft.Series:
            table = pa.table({name: s.to_arrow() for name, s in zip(inputs, columns)})
            scored = score(self.runtime, self.task, table)
            return daft.Series.from_arrow(scored.to_struct_array().combine_chunks())

    return Scorer(), inputs


def main() -> None:
    task, out, _ = args()
    daft.set_runner_native()
    udf, inputs = scorer(task)
    df = daft.read_parquet(task.files).select(*task.columns)
    ids = [col(task.id_column)] if task.id_column else []
    df.select(*ids, udf(*[col(c) for c in inputs])).write_parquet(str(out))  # returns once the files are closed
    # Daft 0.7.26 now and then aborts while the interpreter finalizes ("Fatal Python error: PyGILState_Release:
    # thread state ... must be current when releasing", exit 134; 2 of 4 full-size demo runs here), after
    # its output is complete: leave without finalizing, as a user would, so that a run's exit code means the work.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
