"""Spark local[2] with mapInArrow: read the Parquet (projected), score Arrow batches of the job's batch size in
the Python workers, write Parquet.

Two task slots mean two Python workers at once, so each ONNX Runtime session gets one thread (`--threads`); the
model is loaded once per worker (`open_model` is cached), not once per task. The workers must run this
venv's python (`PYSPARK_PYTHON`), or they start the system one, without pyarrow.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

import pyarrow as pa
from common import args, open_model, score

SPARK_TYPES = {pa.int64(): "bigint", pa.float32(): "float", pa.float64(): "double"}


def main() -> None:
    task, out, options = args()
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    threads = parser.parse_args(options).threads
    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("peers-bench")
        .config("spark.driver.memory", "4g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(task.batch_size))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    schema = ", ".join(f"{name} {SPARK_TYPES[t]}" for name, t in task.output_types().items())

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        runtime = open_model(task, threads)
        for batch in batches:
            yield from score(runtime, task, batch).to_batches()

    try:
        df = spark.read.parquet(*task.files).select(*task.columns)
        df.mapInArrow(score_batches, schema).write.mode("overwrite").parquet(str(out))
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
