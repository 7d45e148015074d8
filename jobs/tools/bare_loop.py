"""The bare loop: the yardstick every speed ratio is taken against (`score bench`, `make bench-peers`).

What a careful person writes by hand, as one process: pyarrow reads each input file in batches of the job's
batch size, projected to the id and the model's inputs; the model's runtime scores each batch with its default
threads; pyarrow writes the id and the outputs of each input file as one Parquet file. No engine, no contract,
no commit, no lineage: the same work as the job minus those.

    python -m jobs.tools.bare_loop TASK.json OUT_DIR

It is timed as a whole process, from start to exit, like every contender: its imports count. So it imports only
pyarrow, numpy and the model's runtime (through `jobs.models.runtimes`, which needs nothing else), and builds
each input with Arrow's own conversion. The peers (`benchmarks/peers/`) import `Task`, `open_model` and `score`
from here, so that every contender does the same per-batch work and a ratio measures the engine.

A model whose inputs the plain conversion cannot build (token inputs from a text column, a fixed batch size,
pooled outputs) is scored with the job's own `score_table` instead, named in the task (`binding`): its import
then counts in the bare loop's time too (0.1 s here).
"""

from __future__ import annotations

import base64
import functools
import json
import pickle
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from jobs.models.artifacts import ModelArtifact, ModelBinding
    from jobs.models.runtimes import Runtime


@dataclass(frozen=True)
class Task:
    """What to score and how each input is built: written by `score bench` and `benchmarks/peers/run.py` from the
    job's spec and model binding (`Task.of`), read by the bare loop and by each peer."""

    files: list[str]
    id_column: str | None
    model: str  # the model file to score (a converted fp16/int8 file when the job scores one)
    batch_size: int
    inputs: list[dict]  # {name, columns, dtype, rank}
    outputs: list[dict]  # {name, columns (null skips an index), per_index, as_list}
    runtime: str = "onnx"
    external: list[str] = field(default_factory=list)  # ONNX external-data files, beside `model`
    precision: str = "fp32"
    use_gpu: bool = False
    binding: str | None = None  # the job's ModelBinding (pickled, base64) where the plain conversion does not do

    @classmethod
    def of(
        cls,
        model: ModelArtifact,
        binding: ModelBinding,
        files: list[str],
        id_column: str | None,
        batch_size: int,
        use_gpu: bool = False,
    ) -> Task:
        plain = binding.text is None and binding.batch is None and not any(o.pooling for o in binding.outputs)
        return cls(
            files=files,
            id_column=id_column,
            model=model.converted_path or model.path,
            batch_size=batch_size,
            inputs=[
                {"name": b.name, "columns": list(b.columns), "dtype": b.dtype, "rank": b.rank} for b in binding.inputs
            ],
            outputs=[
                {"name": o.name, "columns": list(o.columns), "per_index": o.per_index, "as_list": o.as_list}
                for o in binding.outputs
            ],
            runtime=model.runtime,
            external=list(model.converted_external if model.converted_path else model.external),
            precision=model.precision,
            use_gpu=use_gpu,
            binding=None if plain else base64.b64encode(pickle.dumps(binding)).decode(),
        )

    @classmethod
    def load(cls, path: str | Path) -> Task:
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @property
    def columns(self) -> list[str]:
        """The columns to read: the id, then the model's inputs (nothing else is projected)."""
        if self.binding is not None:
            read = self.job_binding.input_columns
        else:
            read = [c for i in self.inputs for c in i["columns"]]
        return list(dict.fromkeys(([self.id_column] if self.id_column else []) + read))

    @functools.cached_property
    def job_binding(self) -> ModelBinding:
        return pickle.loads(base64.b64decode(self.binding or ""))

    def output_types(self) -> dict[str, pa.DataType]:
        """The written columns and their types (ONNX models), for engines that want a declared return type."""
        from onnxruntime import InferenceSession

        declared = {o.name: o.type for o in InferenceSession(self.model).get_outputs()}
        types = {"tensor(float)": pa.float32(), "tensor(double)": pa.float64(), "tensor(int64)": pa.int64()}
        out = {self.id_column: pa.int64()} if self.id_column else {}
        for o in self.outputs:
            out.update({c: types[declared[o["name"]]] for c in o["columns"] if c is not None})
        return out


def open_model(task: Task, threads: int = 0) -> Runtime:
    """The task's model in its runtime; threads 0 is the runtime's default (ONNX Runtime: one per physical core;
    torch: its own count). Cached, so that a worker process an engine reuses (Spark's) loads the model once."""
    names = tuple(o["name"] for o in task.outputs)
    return _open(task.runtime, task.model, tuple(task.external), task.precision, names, task.use_gpu, threads)


@functools.cache
def _open(
    kind: str, model: str, external: tuple[str, ...], precision: str, names: tuple[str, ...], gpu: bool, threads: int
) -> Runtime:
    from jobs.models.runtimes import ModelFiles, open_runtime

    if kind == "torch" and threads == 0:
        import torch  # optional: only torch models need it

        threads = torch.get_num_threads()
    files = ModelFiles.read(model, external, precision)
    return open_runtime(kind, files, Path(model).suffix, list(names), gpu, threads)


def _feed(spec: dict, table: pa.Table | pa.RecordBatch) -> np.ndarray:
    if spec["dtype"] == "string":
        arrays = [
            pc.fill_null(table.column(c), "").to_numpy(zero_copy_only=False).astype(object) for c in spec["columns"]
        ]
    else:
        arrays = [table.column(c).to_numpy(zero_copy_only=False).astype(spec["dtype"]) for c in spec["columns"]]
    return arrays[0] if spec["rank"] == 1 else np.stack(arrays, axis=1)


def _plain_outputs(runtime: Runtime, task: Task, table: pa.Table | pa.RecordBatch) -> dict[str, pa.Array]:
    rows = table.num_rows
    results = runtime.run({i["name"]: _feed(i, table) for i in task.inputs})
    columns: dict[str, pa.Array] = {}
    for o in task.outputs:
        values = np.asarray(results[o["name"]])
        if o.get("as_list"):
            flat = values.reshape(rows, -1)
            columns[o["columns"][0]] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
        elif o["per_index"]:
            values = values.reshape(rows, -1)
            columns.update({c: pa.array(values[:, i]) for i, c in enumerate(o["columns"]) if c is not None})
        else:
            columns[o["columns"][0]] = pa.array(values.reshape(rows))
    return columns


def score(runtime: Runtime, task: Task, batch: pa.Table | pa.RecordBatch) -> pa.Table:
    """One batch: the id column (if any) and the model's outputs, named as the job spec maps them."""
    columns: dict[str, Any] = {}
    if task.id_column:
        column = batch.column(task.id_column)
        columns[task.id_column] = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if task.binding is None:
        columns.update(_plain_outputs(runtime, task, batch))
    else:
        columns.update(_job_outputs(runtime, task.job_binding, batch))
    return pa.table(columns)


def _job_outputs(runtime: Runtime, binding: ModelBinding, batch: pa.Table | pa.RecordBatch) -> dict[str, pa.Array]:
    from jobs.models.text import Tokenize
    from jobs.stages.scoring import score_table

    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    return score_table(runtime, binding, Tokenize(binding.text)(table) if binding.text else table)


def run(task: Task, out: Path) -> int:
    """Score every file of the task into `out`; the number of rows read."""
    out.mkdir(parents=True, exist_ok=True)
    runtime = open_model(task)
    rows = 0
    for n, path in enumerate(task.files):
        writer = None
        for batch in pq.ParquetFile(path).iter_batches(batch_size=task.batch_size, columns=task.columns):
            scored = score(runtime, task, batch)
            writer = writer or pq.ParquetWriter(out / f"part-{n:05d}.parquet", scored.schema)
            writer.write_table(scored)
            rows += batch.num_rows
        if writer is not None:
            writer.close()
    return rows


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(f"usage: python -m jobs.tools.bare_loop TASK.json OUT_DIR (got {sys.argv[1:]})")
    rows = run(Task.load(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
