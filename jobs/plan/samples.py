"""A sample of a job's input: the first rows of each selected partition, written as a small input of its own.

`score bench` measures on one; `score run --limit N` scores one into a table of the user's choice. An input
without files gets generated rows shaped like the model's inputs instead.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from jobs import hive
from jobs.errors import UsageError
from jobs.inputs import UNSCORED, partition_label, select_input, selector_terms
from jobs.models.artifacts import ModelArtifact
from jobs.spec.load import LoadedSpec, load_spec
from jobs.spec.schema import TABLE_NAME, JobSpec
from jobs.storage import filesystem


def write_sample(spec: JobSpec, selector: str | list[str], rows: int, out: Path, model: ModelArtifact | None) -> dict:
    """The first rows of each selected partition, `rows` in all (shared in proportion to the partitions'
    sizes, so the partition count stays), written under `out` with the input's partitioning and one file
    per source file read. An input folder without Parquet files gets `rows` generated rows instead."""
    if not _has_files(spec.input.path):
        return generate_sample(spec, model, rows, out)
    terms = [t for t in selector_terms(selector) if t != UNSCORED]  # bench measures; it does not skip scored data
    selection = select_input(spec.input.path, spec.input.partitioning, ",".join(terms) or "all")
    groups = selection.by_partition()
    quotas = _quotas(rows, [sum(f.num_rows for f in files) for files in groups.values()])
    files, labels = [], []
    for partition, group, quota in zip(selection.partitions, groups.values(), quotas):
        folder = out / hive.folder(partition)
        if quota:
            labels.append(partition_label(partition))
        for n, f in enumerate(group):
            if quota == 0:
                break
            fs, path = filesystem(f.path)
            with fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                batches = []
                for batch in parquet.iter_batches(batch_size=min(quota, 65536)):
                    batches.append(batch.slice(0, quota))
                    quota -= batches[-1].num_rows
                    if quota == 0:
                        break
                target = folder / f"part-{n:05d}.parquet"
                folder.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.Table.from_batches(batches, schema=parquet.schema_arrow), target)
                files.append(str(target))
    return {
        "source": "input",
        "rows": sum(pq.read_metadata(f).num_rows for f in files),
        "selected_rows": selection.num_rows,
        "partitions": labels,
        "files": files,
    }


def generate_sample(spec: JobSpec, model: ModelArtifact, rows: int, out: Path, seed: int = 0) -> dict:
    """`rows` rows of the columns the model's inputs are built from (as `model.inputs` maps them), plus the
    id and event-time columns, in one partition whose partition columns all hold `bench`."""
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {spec.input.id_column: pa.array(np.arange(rows, dtype=np.int64))}
    if spec.input.event_time_column:
        now = np.datetime64(int(time.time()), "s").astype("datetime64[us]")
        columns[spec.input.event_time_column] = pa.array(
            now - rng.integers(0, 86_400, rows).astype("timedelta64[s]"), pa.timestamp("us", tz="UTC")
        )
    for tensor in model.inputs:
        mapped = spec.model.inputs.get(tensor.name, tensor.name)
        for column in [mapped] if isinstance(mapped, str) else mapped:
            columns[column] = _random_column(tensor.dtype, rows, rng)
    folder = out.joinpath(*(f"{c}=bench" for c in spec.input.partitioning))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "part-00000.parquet"
    pq.write_table(pa.table(columns), target)
    label = partition_label(tuple((c, "bench") for c in spec.input.partitioning))
    return {"source": "generated", "rows": rows, "selected_rows": 0, "partitions": [label], "files": [str(target)]}


def _random_column(dtype: str, rows: int, rng: np.random.Generator) -> pa.Array:
    if dtype == "string":
        return pa.array(np.asarray(["alpha", "beta", "gamma", "delta"], dtype=object)[rng.integers(0, 4, rows)])
    if dtype == "bool":
        return pa.array(rng.random(rows) < 0.5)
    if dtype.startswith(("int", "uint")):
        return pa.array(rng.integers(0, 100, rows).astype(dtype))
    return pa.array(rng.standard_normal(rows).astype(dtype))


def _has_files(base: str) -> bool:
    fs, root = filesystem(base)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return any(i.type == pafs.FileType.File and i.path.endswith(".parquet") for i in infos)


def _quotas(rows: int, sizes: list[int]) -> list[int]:
    """`rows` shared among parts of `sizes` in proportion (exactly `rows` in all, none over its size)."""
    total = sum(sizes)
    if rows >= total:
        return list(sizes)
    cumulative = np.cumsum([0, *sizes])
    marks = [round(rows * c / total) for c in cumulative]
    return [b - a for a, b in zip(marks, marks[1:])]


def sample_job(job: LoadedSpec, rows: int, table: str | None, selector: str | list[str] | None) -> LoadedSpec:
    """The job over a sample of `rows` rows of its selected partitions (`score run --limit N --table T`), written
    under the project's `.score/samples/T/` (replaced each time), scoring into table `T`: never the job's own
    table, whose partitions a sample would replace with a few rows."""
    spec = job.spec
    if table and not re.fullmatch(TABLE_NAME, table):
        raise UsageError(f"--table {table}: a table name is letters, digits and _, not starting with a digit")
    if not table or table == spec.output.table:
        raise UsageError(
            f"--limit {rows}: name a table of your own with --table (not {spec.output.table}, the job's table: "
            "the sample would replace its partitions with a few rows)"
        )
    if rows < 1:
        raise UsageError(f"--limit {rows}: give a number of rows above 0")
    if not _has_files(spec.input.path):
        raise UsageError(f"--limit: input {spec.input.path} holds no Parquet file to sample")
    folder = job.root / ".score" / "samples" / table
    shutil.rmtree(folder, ignore_errors=True)
    write_sample(spec, selector or spec.input.partitions, rows, folder, model=None)
    return load_spec(
        job.file, [*job.overrides, f"input.path={folder}", "input.partitions=all", f"output.table={table}"]
    )
