"""Which input partitions and files a run reads, resolved on the driver before any row is read.

A selector is `latest`, `all`, `unscored`, or comma-separated terms `col=value` / `col=low..high`
(inclusive). Terms on one column are alternatives; terms on different columns must all hold. `unscored`
keeps the partitions whose files' fingerprint differs from the one they were last scored from with the
current model (or that were never scored); with terms, within those terms. Reading only file footers here
gives the exact row count and schema of every file, and a fingerprint of what was read.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from jobs import hive
from jobs.column_types import SCHEMA, castable, normal, run_type, widens
from jobs.errors import RetryableFailure, UsageError
from jobs.hive import PartitionValue
from jobs.storage import filesystem, uri_of

Partition = tuple[tuple[str, PartitionValue], ...]  # (column, decoded value) in partitioning order; None is null


class PartitionNotFound(UsageError):
    """A selected partition is not under the input path (yet): exit 2 as any usage error, unless the run waits for
    late data (`await_partitions`), which looks again until it lands."""

    def __init__(self, message: str, missing: Sequence[str], base: str) -> None:
        super().__init__(message)
        self.missing, self.base = tuple(missing), base


@dataclass(frozen=True)
class InputFile:
    path: str
    size: int
    mtime_ns: int
    partition: Partition
    num_rows: int = 0
    schema: pa.Schema | None = field(default=None, compare=False)
    row_groups: tuple[tuple[int, int], ...] = field(default=(), compare=False)  # (rows, uncompressed bytes) each

    def record(self) -> dict:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "rows": self.num_rows}


@dataclass(frozen=True)
class InputSelection:
    """The exact files of the selected partitions, with their footers' row counts and schema."""

    base: str
    partitioning: tuple[str, ...]
    partitions: tuple[Partition, ...]
    files: tuple[InputFile, ...]
    schema: pa.Schema

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)

    @property
    def labels(self) -> list[str]:
        return [partition_label(p) for p in self.partitions]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.files)

    def by_partition(self) -> dict[str, list[InputFile]]:
        """Input partition label -> its files, in selection order."""
        grouped: dict[str, list[InputFile]] = {label: [] for label in self.labels}
        for f in self.files:
            grouped[partition_label(f.partition)].append(f)
        return grouped

    def paths(self, excluding=()) -> list[str]:
        return [f.path for f in self.files if f.path not in excluding]

    def drift(self, columns: Iterable[str]) -> dict[str, list[dict[str, str]]]:
        """Files that fail whole: path -> one reason per column of `columns` the file lacks, or holds in a type
        no cast reaches the run's type from. Every other type is cast value by value when read (`conform`)."""
        drifted = {}
        for f in self.files:
            reasons = []
            for column in columns:
                if column not in self.schema.names or column in self.partitioning:
                    continue
                wanted = self.schema.field(column).type
                if column not in f.schema.names:
                    reasons.append({"expectation": SCHEMA, "column": column, "value": "missing"})
                elif not castable(got := f.schema.field(column).type, wanted):
                    reasons.append({"expectation": SCHEMA, "column": column, "value": f"{got} (expected {wanted})"})
            if reasons:
                drifted[f.path] = reasons
        return drifted

    def largest_magnitudes(self, columns: Iterable[str]) -> dict[str, int | None]:
        """Integer `columns`' largest absolute value in the files, from the footers' statistics (read again, for
        these columns only); None where a file holds the column without statistics."""
        wanted = set(columns)
        largest: dict[str, int | None] = dict.fromkeys(wanted, 0)
        for meta in _footers(self.files):
            for column, magnitude in _magnitudes(meta, wanted).items():
                known = largest[column]
                largest[column] = None if magnitude is None or known is None else max(known, magnitude)
        return largest

    def casts(self, columns: Iterable[str]) -> dict[str, list[str]]:
        """Files holding `columns` in another type than the run's, which the check stage casts value by value:
        path -> "column type -> run type" (not where the two are encodings of the same values: a dictionary,
        string and large_string, timestamp units and zones)."""
        casts = {}
        for f in self.files:
            held = {fld.name: fld.type for fld in f.schema} if f.schema is not None else {}
            found = [
                f"{column} {held[column]} -> {self.schema.field(column).type}"
                for column in columns
                if column in held
                and column not in self.partitioning
                and not _encodings(held[column], self.schema.field(column).type)
                and castable(held[column], self.schema.field(column).type)
            ]
            if found:
                casts[f.path] = found
        return casts

    def manifest(self) -> str:
        return json.dumps(
            {"base": self.base, "fingerprint": self.fingerprint, "files": [f.record() for f in self.files]},
            indent=1,
        )


def _encodings(a: pa.DataType, b: pa.DataType) -> bool:
    return widens(a, b) and widens(b, a)


def partition_label(partition: Partition) -> str:
    """`ds=2026-11-27/region=North%20East`: a partition as its folders name it. Values are encoded (`jobs.hive`),
    so a label holds no `/` or `,` of a value and labels join and split safely."""
    return hive.folder(partition) or "(unpartitioned)"


def fingerprint(files: Iterable[InputFile]) -> str:
    """sha256 over (path, size, modification time) of every file: changes when any file does."""
    lines = sorted(f"{f.path}\t{f.size}\t{f.mtime_ns}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


UNSCORED = "unscored"


def selector_terms(selector: str | list[str]) -> list[str]:
    """`ds=a,ds=b` or ["ds=a", "ds=b"] -> ["ds=a", "ds=b"]."""
    return [t.strip() for t in (selector if isinstance(selector, list) else str(selector).split(",")) if t.strip()]


def select_input(
    base: str,
    partitioning: Iterable[str],
    selector: str | list[str],
    scored: dict[str, str] | None = None,
) -> InputSelection:
    """Resolve a selector to files. Raises UsageError naming a missing partition or an empty selection.

    `scored` (input partition label -> fingerprint it was scored from) serves `unscored`; an `unscored`
    selection may be empty (nothing new), any other may not.
    """
    partitioning = tuple(partitioning)
    fs, root = filesystem(base)
    available = _list_files(fs, root, partitioning, base)
    terms = selector_terms(selector)
    if not available:
        raise PartitionNotFound(
            f"input {base}: no Parquet files found", [t for t in terms if t != UNSCORED] or ["any partition"], base
        )
    if UNSCORED in terms:
        terms.remove(UNSCORED)
        scored = scored or {}
        chosen = [
            p
            for p in _choose(sorted(available, key=_in_order), partitioning, terms or ["all"], base)
            if scored.get(partition_label(p)) != fingerprint(available[p])
        ]
    else:
        chosen = _choose(sorted(available, key=_in_order), partitioning, terms, base)
    files = [f for p in chosen for f in available[p]]
    files = _read_footers(files)
    return InputSelection(
        base=base,
        partitioning=partitioning,
        partitions=tuple(chosen),
        files=tuple(files),
        schema=_run_schema(files),
    )


FIRST_LOOK_S, LONGEST_LOOK_S = 1.0, 60.0  # late data: looked for again after 1 s, 2 s, 4 s ... then every minute


def await_partitions(
    base: str,
    partitioning: Iterable[str],
    selector: str | list[str],
    within_s: float,
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Wait up to `within_s` seconds for late data: the selected partitions exist and hold rows. Returns the
    seconds waited; says one line per look that finds them missing.

    Looks exactly as `select_input` does (`unscored` as `all` within its terms), so what it would refuse as not
    there is what is waited for; whatever else it refuses is raised at once. A partition that has not landed by
    the deadline is retry-safe, not a usage error: RetryableFailure (exit 75) naming what is missing and where.
    """
    terms = [t for t in selector_terms(selector) if t != UNSCORED] or ["all"]
    started, pause = time.monotonic(), FIRST_LOOK_S
    while True:
        missing = _not_landed(base, tuple(partitioning), terms)
        waited = time.monotonic() - started
        if missing is None:
            return waited
        left = within_s - waited
        if left <= 0:
            raise RetryableFailure(
                f"{missing}; still missing after waiting {_span(waited)}: nothing was read or written, "
                "retry once it lands"
            )
        pause = min(pause, left)
        say(f"waiting for late data: {missing}; next look in {_span(pause)}, {_span(left)} left")
        sleep(pause)
        pause = min(pause * 2, LONGEST_LOOK_S)


def _not_landed(base: str, partitioning: tuple[str, ...], terms: list[str]) -> str | None:
    """Why the selection is not there yet (the detection's own message), or None once its files hold rows."""
    try:
        selection = select_input(base, partitioning, terms)
    except PartitionNotFound as exc:
        return str(exc)
    if selection.num_rows:
        return None
    return f"{', '.join(selection.labels)} under {base}: its files hold no rows yet"


def _span(seconds: float) -> str:
    """`42s` under two minutes, else `1h 59m` (`format_duration`'s form, written out here: spec sits above)."""
    if seconds < 120:
        return f"{max(seconds, 0):.0f}s"
    minutes = round(seconds / 60)
    return " ".join(f"{n}{unit}" for n, unit in ((minutes // 60, "h"), (minutes % 60, "m")) if n)


def _in_order(partition: Partition) -> tuple:
    """Partitions sort by their values as text, column by column, the null partition first."""
    return tuple((value is not None, value or "") for _, value in partition)


def _run_schema(files: list[InputFile]) -> pa.Schema:
    """Every column of the files, each in the one type the run reads it as (`column_types.run_type`). Where no
    type joins all the files' types (text in some, numbers in others), the join of the types that hold the most
    files between them: the other files fail whole."""
    kinds: dict[str, Counter[pa.DataType]] = {}
    for f in files:
        for fld in f.schema if f.schema is not None else ():
            kinds.setdefault(fld.name, Counter())[fld.type] += 1
    return pa.schema([(name, run_type(types) or _largest_join(types)) for name, types in kinds.items()])


def _largest_join(types: Counter[pa.DataType]) -> pa.DataType:
    """The join of the group of types that joins the most files (types are grouped as they join, most common
    first; a column of nulls joins any group)."""
    groups: list[tuple[list[pa.DataType], int]] = []
    for kind, count in types.most_common():
        for i, (members, files) in enumerate(groups):
            if run_type([*members, kind]) is not None:
                groups[i] = ([*members, kind], files + count)
                break
        else:
            groups.append(([kind], count))
    members, _ = max(groups, key=lambda group: group[1])
    return run_type(members) or normal(members[0])


def _list_files(fs: pafs.FileSystem, root: str, partitioning: tuple[str, ...], base: str) -> dict[Partition, list]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    found: dict[Partition, list[InputFile]] = {}
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root) + 1 :].split("/")
        if any(part.startswith(("_", ".")) for part in rel):
            continue
        parsed = [hive.parse(folder) for folder in rel[:-1]]
        if len(parsed) != len(partitioning) or any(p is None for p in parsed):
            continue
        partition = tuple(p for p in parsed if p is not None)
        if [k for k, _ in partition] != list(partitioning):
            continue
        found.setdefault(partition, []).append(
            InputFile(path=uri_of(info.path, base), size=info.size, mtime_ns=info.mtime_ns or 0, partition=partition)
        )
    for files in found.values():
        files.sort(key=lambda f: f.path)
    return found


def _choose(available: list[Partition], partitioning: tuple[str, ...], terms: list[str], base: str) -> list[Partition]:
    def newest(values: Iterable[PartitionValue]) -> PartitionValue:
        return _ordered(values)[-1]

    if terms in (["all"], []) or not partitioning:
        if terms not in (["all"], ["latest"], []):
            raise UsageError(f"input {base} is not partitioned: use partitions 'all', 'latest' or 'unscored'")
        return available
    if terms == ["latest"]:
        latest = newest(p[0][1] for p in available)
        return [p for p in available if p[0][1] == latest]

    # A value is written as a user reads it (`region=North East`) or as its folder names it (`North%20East`); an
    # empty value or __HIVE_DEFAULT_PARTITION__ selects the null partition.
    wanted: dict[str, list[tuple[PartitionValue, PartitionValue, bool]]] = {}  # (low, high, a range)
    for term in terms:
        col, sep, value = term.partition("=")
        if not sep or col not in partitioning:
            raise UsageError(
                f"partition selector {term!r}: expected latest, all, unscored, or {partitioning[0]}=VALUE, "
                f"{partitioning[0]}=V1,V2 or {partitioning[0]}=LOW..HIGH"
            )
        low, dots, high = value.partition("..")
        bounds = (hive.decode(low), hive.decode(high), True) if dots else (hive.decode(value), None, False)
        wanted.setdefault(col, []).append(bounds)

    for col, conds in wanted.items():
        present = {dict(p)[col] for p in available}
        absent = [f"{col}={hive.encode(low)}" for low, _, is_range in conds if not is_range and low not in present]
        if absent:
            named = f"partition {absent[0]}" if len(absent) == 1 else f"partitions {', '.join(absent)}"
            raise PartitionNotFound(f"{named} not found under {base}; {_listing(col, present)}", absent, base)

    def matches(p: Partition) -> bool:
        values = dict(p)
        return all(any(_within(values[col], *cond) for cond in conds) for col, conds in wanted.items())

    chosen = [p for p in available if matches(p)]
    if not chosen:
        col = next(iter(wanted))
        raise PartitionNotFound(
            f"no partition under {base} matches {','.join(terms)}; {_listing(col, {dict(p)[col] for p in available})}",
            terms,
            base,
        )
    return chosen


def _within(value: PartitionValue, low: PartitionValue, high: PartitionValue, is_range: bool) -> bool:
    """`value` is `low`, or in `low..high`: as numbers when all three are (hour=9..10), else as text (dates). A
    null value is in no range."""
    if not is_range:
        return value == low
    if value is None or low is None or high is None:
        return False
    try:
        return Decimal(low) <= Decimal(value) <= Decimal(high)
    except InvalidOperation:
        return low <= value <= high


def _read_footers(files: list[InputFile]) -> list[InputFile]:
    def described(f: InputFile, meta: pq.FileMetaData) -> InputFile:
        schema = meta.schema.to_arrow_schema().remove_metadata()
        groups = tuple((g.num_rows, g.total_byte_size) for g in map(meta.row_group, range(meta.num_row_groups)))
        return InputFile(f.path, f.size, f.mtime_ns, f.partition, meta.num_rows, schema, groups)

    return [described(f, meta) for f, meta in zip(files, _footers(files))]


def _footers(files: Iterable[InputFile]) -> list[pq.FileMetaData]:
    """Each file's Parquet footer, read 8 at a time (object stores answer each in one round trip)."""

    def read(f: InputFile) -> pq.FileMetaData:
        fs, path = filesystem(f.path)
        try:
            with fs.open_input_file(path) as handle:
                return pq.read_metadata(handle)
        except (OSError, pa.ArrowException) as exc:
            raise UsageError(f"input file {f.path} is not readable Parquet: {exc}") from None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(read, files))


def _magnitudes(meta: pq.FileMetaData, wanted: set[str]) -> dict[str, int | None]:
    """The `wanted` top-level integer columns' largest absolute value over the row groups' statistics (None where
    a row group has none)."""
    found: dict[str, int | None] = {}
    columns = [
        (j, column.name)
        for j in range(meta.num_columns)
        if (column := meta.schema.column(j)).name in wanted and "." not in column.path
    ]
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        for j, name in columns:
            stats, known = group.column(j).statistics, found.get(name, 0)
            if stats is None or not stats.has_min_max or not isinstance(stats.min, int):
                found[name] = None
            elif known is not None:
                found[name] = max(known, abs(stats.min), abs(stats.max))
    return found


def _ordered(values: Iterable[PartitionValue]) -> list[PartitionValue]:
    """Numbers sort as numbers when every value is one (hour=9 < hour=10, padded or not); anything else as
    text, which orders ISO dates. The null partition comes first: it is never the newest."""
    values = list(values)
    known = [v for v in values if v is not None]
    nulls: list[PartitionValue] = [None] * (len(values) - len(known))
    try:
        return nulls + sorted(known, key=Decimal)
    except InvalidOperation:
        return nulls + sorted(known)


def _listing(column: str, values: set[PartitionValue]) -> str:
    """What a selector could have named: e.g. "it holds ds=2026-11-22 .. ds=2026-11-28 (7 values, newest last)"."""
    ordered = [f"{column}={hive.encode(v)}" for v in _ordered(values)]
    if not ordered:
        return "it holds no partition"
    if len(ordered) <= 5:
        return f"it holds {', '.join(ordered)}"
    return f"it holds {ordered[0]} .. {ordered[-1]} ({len(ordered)} values, newest last)"


STREAM_BUFFER_BYTES = 1 << 20


def read_batches(uri: str, columns: Sequence[str], row_groups: Sequence[int], rows: int) -> Iterator[pa.Table]:
    """One input file's `columns` of its `row_groups`, `rows` at a time: what a check task holds is a batch and
    the pages it comes from, never the decoded row group. A local file is streamed a MiB at a time (measured:
    100 MB less at the peak and 40% faster on a 150 MB row group than pyarrow's default of buffering the whole
    row group first); object storage keeps that default, whose coalesced ranged reads its latency needs."""
    fs, path = filesystem(uri)
    local = fs.type_name == "local"
    with fs.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle, pre_buffer=not local, buffer_size=STREAM_BUFFER_BYTES if local else 0)
        for batch in parquet.iter_batches(batch_size=rows, row_groups=row_groups, columns=columns):
            yield pa.Table.from_batches([batch]).replace_schema_metadata(None)


def read_columns(uri: str, columns: Sequence[str], row_groups: Sequence[int] | None = None) -> pa.Table:
    """One input file's `columns` (of its `row_groups`, default all), as the check stage reads them (also how a
    failing row is read back)."""
    fs, path = filesystem(uri)
    if row_groups is None:
        return pq.read_table(path, columns=list(columns), filesystem=fs).replace_schema_metadata(None)
    with fs.open_input_file(path) as handle:
        table = pq.ParquetFile(handle).read_row_groups(list(row_groups), columns=list(columns))
    return table.replace_schema_metadata(None)
