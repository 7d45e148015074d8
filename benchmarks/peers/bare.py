"""The yardstick: one process, pyarrow reads each file (projected), ONNX Runtime scores, pyarrow writes Parquet.

No engine at all: what a careful person writes by hand, so every other contender's time is compared with it.
One output file per input file, written as its batches are scored (memory stays at one batch).
"""

from __future__ import annotations

import pyarrow.parquet as pq
from common import args, score, session


def main() -> None:
    task, out, _ = args()
    out.mkdir(parents=True, exist_ok=True)
    sess = session(task.model)
    for n, path in enumerate(task.files):
        writer = None
        for batch in pq.ParquetFile(path).iter_batches(batch_size=task.batch_size, columns=task.columns):
            scored = score(sess, task, batch)
            writer = writer or pq.ParquetWriter(out / f"part-{n:05d}.parquet", scored.schema)
            writer.write_table(scored)
        if writer is not None:
            writer.close()


if __name__ == "__main__":
    main()
