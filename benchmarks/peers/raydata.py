"""Ray Data by hand, as its batch-inference docs recommend: read_parquet + select_columns, map_batches with a
callable class on an actor pool, write_parquet.

`--actors N --cpus C --threads T`: N actors of C logical CPUs each, T ONNX Runtime threads per actor. On 2 CPUs
two 1-CPU actors leave none for the read tasks (it hangs), so the sizings worth trying are one 1-CPU actor with
2 threads, or two 0.5-CPU actors with 1 thread each; `run.py` tries both.
"""

from __future__ import annotations

import argparse

import pyarrow as pa
import ray
from common import Task, args, open_model, score


class Scorer:
    """One model (ONNX Runtime session) per actor, loaded once in the constructor."""

    def __init__(self, task: Task, threads: int) -> None:
        self.task, self.runtime = task, open_model(task, threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score(self.runtime, self.task, batch)


def main() -> None:
    task, out, options = args()
    parser = argparse.ArgumentParser()
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--cpus", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=0)
    sizing = parser.parse_args(options)
    ray.init(address="local", include_dashboard=False)  # never join a cluster someone left running
    try:
        ds = ray.data.read_parquet(task.files).select_columns(task.columns)  # the projection folds into the read
        ds = ds.map_batches(
            Scorer,
            fn_constructor_args=(task, sizing.threads),
            batch_size=task.batch_size,
            batch_format="pyarrow",
            concurrency=sizing.actors,
            num_cpus=sizing.cpus,
        )
        ds.write_parquet(str(out))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
