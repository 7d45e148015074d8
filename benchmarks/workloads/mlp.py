"""Reference workload (2): a wide numeric MLP, the case where the pipeline's own overhead shows most.

8 M rows x 32 float32 features in 8 partitions (`part=0..7`), an MLP 32-256-256-1 in ONNX with random
weights (fixed seed, built with onnx.helper and numpy: no torch), and a job without a contract.

    python -m benchmarks.workloads.mlp --rows 8000000 --out data/bench/mlp
    score bench data/bench/mlp/job.yaml --rows 8000000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.workloads import default_out, write_job

FEATURES = [f"f{i:02d}" for i in range(32)]
WIDTHS = (32, 256, 256, 1)
PARTITIONS = 8
ROWS = 8_000_000


def build_model(path: Path, seed: int = 0) -> Path:
    """Gemm+Relu, Gemm+Relu, Gemm: input `x` [N, 32] float32 -> output `y` [N, 1] float32 (He-scaled weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights, previous = [], [], "x"
    layers = list(zip(WIDTHS, WIDTHS[1:]))
    for i, (fan_in, fan_out) in enumerate(layers):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2 / fan_in)).astype(np.float32)
        weights += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(fan_out, np.float32), f"b{i}"),
        ]
        if i == len(layers) - 1:
            nodes.append(helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], ["y"]))
        else:
            nodes += [
                helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"g{i}"]),
                helper.make_node("Relu", [f"g{i}"], [f"h{i}"]),
            ]
            previous = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "mlp_32_256_256_1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_data(out: Path, rows: int, partitions: int = PARTITIONS, seed: int = 0) -> int:
    """`part=K/part-0.parquet`: rows split evenly; ids unique across partitions."""
    first = 0
    for k in range(partitions):
        n = rows // partitions + (1 if k < rows % partitions else 0)
        rng = np.random.default_rng([seed, k])
        values = rng.standard_normal((n, len(FEATURES)), dtype=np.float32)
        columns = {"id": pa.array(np.arange(first, first + n, dtype=np.int64))}
        columns.update({name: pa.array(values[:, i]) for i, name in enumerate(FEATURES)})
        folder = out / f"part={k}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), folder / "part-0.parquet")
        first += n
    return first


def job_spec() -> dict:
    return {
        "name": "bench_mlp",
        "input": {"path": "data", "partitioning": ["part"], "partitions": "all", "id_column": "id"},
        "model": {"uri": "model.onnx", "runtime": "onnx", "inputs": {"x": FEATURES}, "outputs": {"y": "score"}},
        "output": {"table": "bench_mlp", "partition_by": ["part"]},
    }


def generate(out: Path, rows: int = ROWS) -> Path:
    """Data, model and job spec under `out`; returns the job file."""
    write_data(out / "data", rows)
    build_model(out / "model.onnx")
    return write_job(out, job_spec())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--out", type=Path, default=default_out("mlp"))
    args = parser.parse_args()
    job = generate(args.out, args.rows)
    print(f"wrote {args.rows:,} rows in {PARTITIONS} partitions, the MLP and {job}")


if __name__ == "__main__":
    main()
