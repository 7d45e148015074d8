"""Pictures of a table's scores: score distributions per partition and version, and a column's history.

A run's scores can look right row by row and still be wrong as a whole (a model that predicts 0.5 for
everyone, a day whose inputs shifted), which only a picture shows at a glance. `score_histograms` draws
the distribution of each output column for the partitions a run wrote, one panel per partition (a shift
between days), with the previous version's distribution of the same partitions overlaid (a model change);
`history_plot` draws rows and the mean of a column per table version (`score history TABLE --plot`).

The numbers behind every picture come from functions of their own (`score_histogram_data`,
`history_data`), so they can be checked and reused; the drawing only reads them. Only the needed columns
are read, through pyarrow datasets that skip the files of other partitions; nothing goes through pandas.
Drawing uses matplotlib's Agg canvas on a `Figure` of its own: no display, no pyplot state shared between
calls or threads, and the same data always gives the same PNG bytes.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake.exceptions import DeltaError

from jobs import hive
from jobs.errors import UsageError, first_line
from jobs.hive import PartitionValue
from jobs.storage import delta_dataset, delta_table
from jobs.tables.lineage import history, require_version

ALL_ROWS = "all partitions"  # the series label when no partitions are given
OTHER_VALUES = "(other values)"  # the bar that collects the rarest strings beyond MAX_BARS
PROBABILITY_BINS = 20  # floats within [0, 1]: fixed bins, so every version and day bins alike
RANGE_BINS = 30  # other numbers: equal bins over the range of every series drawn together
MAX_BARS = 40  # integers with more distinct values are binned; strings keep the most frequent
MAX_PANELS = 12  # more partitions than this: one heat map (partition x bin) instead of a panel each
DPI = 100


class ChartError(UsageError, ValueError):
    """A chart asked of a column, version or partition the table does not have. A ValueError for
    callers, and a usage error (exit 2, one line) for the CLI."""


@dataclass(frozen=True)
class Distribution:
    """One series of one chart: the values of one partition (or of the whole table) at one version."""

    version: int
    partition: str  # "ds=2026-11-27" (columns in partition_by order), or ALL_ROWS
    rows: int  # rows read, missing ones included: sum(counts) + missing == rows
    counts: list[int]  # per bin (histogram) or per value (bars)
    missing: int  # null, NaN and infinite values, in no bin
    mean: float | None  # of the finite values of a numeric (or boolean) column; None for strings or no values


@dataclass(frozen=True)
class ColumnChart:
    """The numbers behind one column's picture: bins (or values), and the counts of every series."""

    table: str  # the table's name (last part of its URI)
    table_uri: str
    column: str
    dtype: str  # the Arrow type at `version`
    kind: str  # "histogram" (edges) or "bars" (values)
    version: int
    previous_version: int | None
    edges: list[float] | None  # bin edges (len(counts) + 1); numpy.histogram's convention: last bin closed
    values: list[Any] | None  # the bars' values, in drawing order (OTHER_VALUES last, if any)
    current: dict[str, Distribution]  # partition label -> series at `version`, in the order given
    previous: dict[str, Distribution]  # the same partitions at `previous_version`, those it holds rows of
    file_name: str  # artifact-friendly, e.g. "churn_probability.png"


def score_histogram_data(
    table_uri: str,
    version: int,
    columns: list[str],
    partition_by: list[str],
    partitions: list[dict[str, PartitionValue]] | None = None,
    previous_version: int | None = None,
) -> dict[str, ColumnChart]:
    """The numbers `score_histograms` draws, by column: bin edges (or bar values) shared by every series of
    a column, so days and versions compare bin for bin, and per partition and version the counts.

    `partitions` are output partitions (partition column -> value, columns among `partition_by`); None is
    the whole table, as one series. The previous version's series are there for the partitions it holds
    rows of (none when the column did not exist then, or had another kind of type). Floats within [0, 1] get
    PROBABILITY_BINS fixed bins, other numbers RANGE_BINS bins over their range, integers with at most MAX_BARS
    values (labels), booleans and strings one bar per value. A column, version or partition column the table
    lacks raises ChartError naming what it has.
    """
    columns = list(dict.fromkeys(columns))
    if not columns:
        raise ChartError(f"charts of {_name(table_uri)}: give at least one column")
    selected = _partitions(table_uri, partition_by, partitions)
    dataset = _open(table_uri, version)
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        raise ChartError(
            f"charts of {_name(table_uri)} v{version}: no column {', '.join(missing)}; "
            f"its columns are {', '.join(dataset.schema.names)}"
        )
    unknown = [c for c in {k for _, part in selected for k in part} if c not in dataset.schema.names]
    if unknown:
        raise ChartError(
            f"charts of {_name(table_uri)} v{version}: partition column {', '.join(sorted(unknown))} "
            f"is not a column of the table; its columns are {', '.join(dataset.schema.names)}"
        )
    current = _read(dataset, columns, selected)
    previous: dict[str, pa.Table] = {}
    previous_schema = None
    if previous_version is not None:
        earlier = _open(table_uri, previous_version)
        previous_schema = earlier.schema
        held = [c for c in columns if c in earlier.schema.names]
        if held:
            previous = {label: rows for label, rows in _read(earlier, held, selected).items() if rows.num_rows}
    charts: dict[str, ColumnChart] = {}
    names: set[str] = set()
    for column in columns:
        dtype = dataset.schema.field(column).type
        comparable = (
            previous_schema is not None
            and column in previous_schema.names
            and _family(previous_schema.field(column).type) == _family(dtype)
        )
        before = {label: rows.column(column) for label, rows in previous.items()} if comparable else {}
        now = {label: rows.column(column) for label, rows in current.items()}
        charts[column] = _chart(
            table_uri, column, dtype, version, previous_version, now, before, _file_name(column, names)
        )
    return charts


def score_histograms(
    table_uri: str,
    version: int,
    columns: list[str],
    partition_by: list[str],
    partitions: list[dict[str, PartitionValue]] | None = None,
    previous_version: int | None = None,
) -> dict[str, bytes]:
    """PNG images of the distribution of each of `columns` at `version`, by artifact file name
    ("churn_probability.png"): one panel per partition (a heat map of partition x bin beyond MAX_PANELS),
    so a shift between days shows, and the previous version's distribution of the same partitions as an
    outline labelled "v<N> (previous)", so a model change shows. See `score_histogram_data` for the numbers.
    """
    charts = score_histogram_data(table_uri, version, columns, partition_by, partitions, previous_version)
    return {chart.file_name: _png(_draw_chart(chart)) for chart in charts.values()}


def history_data(table_uri: str, column: str) -> list[dict[str, Any]]:
    """Per version of the table, oldest first: {version, rows, mean, note}; `mean` is that of the finite
    values of `column`, None (with the reason in `note`) for a version without rows, without the column,
    whose files were vacuumed, or whose log entry is gone. Every version is opened (one DeltaTable each),
    but each data file is read once across all of them: files never change, so a file's sum and count are
    reused by every version holding it. A column no version has raises ChartError."""
    commits = history(table_uri)
    if not commits:
        raise ChartError(f"history of {table_uri}: no Delta table there")
    per_file: dict[str, tuple[int, float, int]] = {}  # file -> (rows, sum, count) of `column`
    rows_only: dict[str, int] = {}  # file -> rows, for versions without the column
    points: list[dict[str, Any]] = []
    latest_columns: list[str] = []
    seen = False
    for commit in commits:
        version = commit["version"]
        try:
            table, dataset = _open_version(table_uri, version)
        except (DeltaError, OSError) as exc:  # the log entry (or a checkpoint) is gone: a gap, not an error
            points.append(
                {"version": version, "rows": None, "mean": None, "note": f"unreadable: {first_line(exc)[:200]}"}
            )
            continue
        latest_columns = dataset.schema.names
        has = column in dataset.schema.names
        if has and _family(dataset.schema.field(column).type) not in ("float", "integer", "boolean"):
            raise ChartError(
                f"history of {_name(table_uri)}: column {column} is "
                f"{dataset.schema.field(column).type} in v{version}; a mean needs numbers"
            )
        seen = seen or has
        rows, total, count = 0, 0.0, 0
        try:
            for fragment in dataset.get_fragments():
                if not has:
                    if fragment.path not in rows_only:
                        rows_only[fragment.path] = fragment.count_rows()
                    rows += rows_only[fragment.path]
                    continue
                if fragment.path not in per_file:
                    values = fragment.to_table(columns=[column], schema=dataset.schema).column(column)
                    finite = _finite(values)
                    per_file[fragment.path] = (len(values), float(finite.sum(dtype=np.float64)), len(finite))
                file_rows, file_sum, file_count = per_file[fragment.path]
                rows, total, count = rows + file_rows, total + file_sum, count + file_count
        except OSError as exc:  # files removed by vacuum: the log still knows the rows
            points.append(
                {
                    "version": version,
                    "rows": _logged_rows(table),
                    "mean": None,
                    "note": f"data files gone (vacuumed?): {first_line(exc)[:200]}",
                }
            )
            continue
        note = (
            None
            if count
            else ("no rows" if not rows else f"no column {column}" if not has else f"no values of {column} (all null)")
        )
        points.append({"version": version, "rows": rows, "mean": total / count if count else None, "note": note})
    if not seen:
        raise ChartError(
            f"history of {_name(table_uri)}: no version has a column {column}; "
            f"its columns are {', '.join(latest_columns) or '(none readable)'}"
        )
    return points


def history_plot(table_uri: str, column: str, out: str | Path) -> Path:
    """Write a PNG of rows (top) and the mean of `column` (bottom) per table version to `out` and return
    its path: when did a table grow, and when did its scores move. Versions without a mean are gaps
    (shaded), not errors. Reads what `history_data` reads (every version)."""
    points = history_data(table_uri, column)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_png(_draw_history(table_uri, column, points)))
    return out


# -- reading ----------------------------------------------------------------------------------------------


def _name(table_uri: str) -> str:
    return table_uri.rstrip("/").rsplit("/", 1)[-1]


def _open_version(table_uri: str, version: int):
    """The Delta table at `version` and its Arrow dataset (through a native filesystem: jobs.storage)."""
    table = delta_table(table_uri, version=version)
    return table, delta_dataset(table_uri, table)


def _open(table_uri: str, version: int):
    """The dataset of `version`; a table or version that is not there is a ChartError naming what is."""
    try:
        return _open_version(table_uri, version)[1]
    except (DeltaError, OSError) as exc:
        known = history(table_uri)
        if not known:
            raise ChartError(f"charts of {table_uri}: no Delta table there") from None
        require_version(known, version, f"charts of {_name(table_uri)}")
        raise ChartError(f"charts of {_name(table_uri)} v{version}: {first_line(exc)[:200]}") from None


def _partitions(
    table_uri: str, partition_by: list[str], partitions: list[dict[str, PartitionValue]] | None
) -> list[tuple[str, dict[str, PartitionValue]]]:
    """(label, partition) pairs, deduplicated, in the order given; labels name columns in partition_by order."""
    if partitions is None:
        return [(ALL_ROWS, {})]
    if not partitions:
        raise ChartError(f"charts of {_name(table_uri)}: no partitions given (give None for the whole table)")
    selected: dict[str, dict[str, PartitionValue]] = {}
    for part in partitions:
        extra = [k for k in part if k not in partition_by]
        if not part or extra:
            raise ChartError(
                f"charts of {_name(table_uri)}: partition {part} must name output partition "
                f"columns only ({', '.join(partition_by) or 'the table is not partitioned'})"
            )
        values = {k: hive.value_of(part[k]) for k in partition_by if k in part}
        selected.setdefault(hive.folder(values.items()), values)
    return list(selected.items())


def _read(dataset, columns: list[str], selected: list[tuple[str, dict[str, PartitionValue]]]) -> dict[str, pa.Table]:
    """The `columns` of each selected partition: one scan each, skipping other partitions' files."""
    out = {}
    for label, part in selected:
        condition = None
        for key, value in part.items():
            field = pads.field(key)
            term = field.is_null() if value is None else field == pa.scalar(value).cast(dataset.schema.field(key).type)
            condition = term if condition is None else condition & term
        out[label] = dataset.to_table(columns=columns, filter=condition)
    return out


def _logged_rows(table) -> int | None:
    """Rows of a version from its add actions' statistics (no data file is read); None when unrecorded."""
    actions = pa.table(table.get_add_actions(flatten=True))
    if not actions.num_rows:
        return 0
    counts = actions.column("num_records")
    return None if counts.null_count else int(pc.sum(counts).as_py())


# -- counting ---------------------------------------------------------------------------------------------


def _family(dtype: pa.DataType) -> str:
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "float"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_dictionary(dtype):
        return _family(dtype.value_type)
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return "string"
    return "other"


def _finite(values: pa.ChunkedArray) -> np.ndarray:
    """The non-null finite values as float64 (exact for float32 and integers up to 2**53)."""
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if pa.types.is_boolean(values.type):
        values = values.cast(pa.int8())
    array = pc.drop_null(values).cast(pa.float64()).to_numpy()
    return array if pa.types.is_integer(values.type) else array[np.isfinite(array)]


def _value_counts(values: pa.ChunkedArray) -> dict[Any, int]:
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    counted = pc.value_counts(pc.drop_null(values))
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()))


def _chart(
    table_uri: str,
    column: str,
    dtype: pa.DataType,
    version: int,
    previous_version: int | None,
    now: dict[str, pa.ChunkedArray],
    before: dict[str, pa.ChunkedArray],
    file_name: str,
) -> ColumnChart:
    family = _family(dtype)
    if family == "other":
        raise ChartError(
            f"charts of {_name(table_uri)} v{version}: column {column} is {dtype}; "
            "charts take numbers, booleans and strings"
        )
    series = [(version, label, values) for label, values in now.items()]
    series += [(previous_version, label, values) for label, values in before.items()]
    edges = values = None
    counted: list[tuple[list[int], int, float | None]] = []
    tallies = [_value_counts(v) for _, _, v in series] if family != "float" else []
    distinct = set().union(*tallies) if tallies else set()
    if family == "float" or (family == "integer" and len(distinct) > MAX_BARS):
        finite = [_finite(v) for _, _, v in series]
        edges = _edges(finite)
        for (_, _, v), numbers in zip(series, finite):
            binned = np.histogram(numbers, bins=len(edges) - 1, range=(edges[0], edges[-1]))[0]
            counted.append((binned.tolist(), len(v) - len(numbers), float(numbers.mean()) if len(numbers) else None))
        kind = "histogram"
    else:
        values = _bar_values(distinct, tallies)
        other = len(distinct) > MAX_BARS  # the last bar collects the values not kept
        for (_, _, v), tally in zip(series, tallies):
            counts = [tally.get(value, 0) for value in (values[:-1] if other else values)]
            if other:
                counts.append(sum(tally.values()) - sum(counts))
            numbers = _finite(v) if family != "string" else None
            mean = float(numbers.mean()) if numbers is not None and len(numbers) else None
            counted.append((counts, v.null_count, mean))
        kind = "bars"
    distributions = [
        Distribution(v, label, len(arr), counts, missing, mean)
        for (v, label, arr), (counts, missing, mean) in zip(series, counted)
    ]
    return ColumnChart(
        table=_name(table_uri),
        table_uri=table_uri,
        column=column,
        dtype=str(dtype),
        kind=kind,
        version=version,
        previous_version=previous_version,
        edges=edges,
        values=values,
        current={d.partition: d for d in distributions[: len(now)]},
        previous={d.partition: d for d in distributions[len(now) :]},
        file_name=file_name,
    )


def _edges(finite: list[np.ndarray]) -> list[float]:
    """Bins every series of a column shares: [0, 1] in PROBABILITY_BINS for probabilities, else
    RANGE_BINS over the range of all of them (one unit wide around a constant)."""
    present = [a for a in finite if len(a)]
    low = min((float(a.min()) for a in present), default=0.0)
    high = max((float(a.max()) for a in present), default=1.0)
    if 0.0 <= low and high <= 1.0:
        return np.linspace(0.0, 1.0, PROBABILITY_BINS + 1).tolist()
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.histogram_bin_edges([], bins=RANGE_BINS, range=(low, high)).tolist()


def _bar_values(distinct: set, tallies: list[dict[Any, int]]) -> list[Any]:
    """Every value in order; beyond MAX_BARS (strings only get here) the most frequent, then OTHER_VALUES."""
    if len(distinct) <= MAX_BARS:
        return sorted(distinct)
    totals: dict[Any, int] = {}
    for tally in tallies:
        for value, count in tally.items():
            totals[value] = totals.get(value, 0) + count
    kept = sorted(totals, key=lambda value: (-totals[value], value))[: MAX_BARS - 1]
    return [*sorted(kept), OTHER_VALUES]


def _file_name(column: str, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", column).strip("._") or "column"
    name, n = f"{stem}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return name


# -- drawing ----------------------------------------------------------------------------------------------

CURRENT_COLOR = "#1f77b4"
PREVIOUS_COLOR = "#222222"


def _figure(width: float, height: float, layout: Literal["constrained"] | None = "constrained"):
    from matplotlib.figure import Figure  # 0.5 s to import: only drawing needs it, never the numbers

    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def _png(figure) -> bytes:
    """The figure as PNG bytes, through the Agg canvas only (no pyplot, no display); no software tag,
    so the bytes depend on the data alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # with matplotlib (see _figure)

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _span(labels: list[str]) -> str:
    if labels == [ALL_ROWS]:
        return ALL_ROWS
    if len(labels) <= 3:
        return ", ".join(labels)
    return f"{labels[0]} .. {labels[-1]}, {len(labels)} partitions"


def _describe(series: Distribution, numeric: bool) -> str:
    text = f"{series.rows:,} rows"
    if numeric and series.mean is not None:
        text += f", mean {series.mean:.4g}"
    if series.missing:
        text += f", {series.missing:,} missing"
    return text


def _draw_chart(chart: ColumnChart):
    labels = list(chart.current)
    title = f"{chart.table} v{chart.version}: {chart.column} ({_span(labels)})"
    if len(labels) > MAX_PANELS:
        return _draw_heatmap(chart, title)
    rotated = chart.kind == "bars" and len(chart.values) > 8
    bottom = 0.6 + (min(2.0, 0.07 * max(len(str(v)) for v in chart.values)) if rotated else 0.0)
    width, height = 8.0, 0.85 + bottom + 1.9 * len(labels)
    # fixed margins (in inches) rather than a layout engine, which would lay out every panel's ticks twice
    figure = _figure(width, height, layout=None)
    figure.subplots_adjust(
        left=0.8 / width, right=1 - 0.2 / width, top=1 - 0.85 / height, bottom=bottom / height, hspace=0.5
    )
    axes = figure.subplots(len(labels), 1, sharex=True, squeeze=False)[:, 0]
    numeric = any(s.mean is not None for s in [*chart.current.values(), *chart.previous.values()])
    for ax, label in zip(axes, labels):
        series, before = chart.current[label], chart.previous.get(label)
        heading = label if label != ALL_ROWS else "all rows"
        ax.set_title(
            f"{heading}: v{chart.version} {_describe(series, numeric)}"
            + (f"; v{before.version} {_describe(before, numeric)}" if before else ""),
            fontsize=9,
            loc="left",
        )
        if chart.kind == "histogram":
            ax.stairs(series.counts, chart.edges, fill=True, color=CURRENT_COLOR, alpha=0.55, label=f"v{chart.version}")
            if before:
                ax.stairs(
                    before.counts,
                    chart.edges,
                    color=PREVIOUS_COLOR,
                    linewidth=1.3,
                    label=f"v{before.version} (previous)",
                )
        else:
            x = np.arange(len(chart.values))
            bar = 0.4 if before else 0.8
            ax.bar(
                x - (bar / 2 if before else 0),
                series.counts,
                bar,
                color=CURRENT_COLOR,
                alpha=0.75,
                label=f"v{chart.version}",
            )
            if before:
                ax.bar(
                    x + bar / 2,
                    before.counts,
                    bar,
                    fill=False,
                    edgecolor=PREVIOUS_COLOR,
                    hatch="//",
                    linewidth=1.0,
                    label=f"v{before.version} (previous)",
                )
        if not sum(series.counts) and not (before and sum(before.counts)):
            empty = f"no rows in v{chart.version}" if not series.rows else f"no values in v{chart.version}"
            ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center")
            ax.set_ylim(0, 1)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("rows")
        ax.grid(axis="y", alpha=0.3)
    if chart.kind == "bars":
        axes[-1].set_xticks(
            np.arange(len(chart.values)),
            [str(v) for v in chart.values],
            rotation=45 if rotated else 0,
            ha="right" if rotated else "center",
        )
    axes[-1].set_xlabel(chart.column)
    figure.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
    # one legend for all panels (same series in each), above them on the right, clear of the data
    handles, names = max((ax.get_legend_handles_labels() for ax in axes), key=lambda pair: len(pair[1]))
    figure.legend(
        handles,
        names,
        loc="upper right",
        bbox_to_anchor=(1 - 0.2 / width, 1 - 0.38 / height),
        ncols=len(names),
        fontsize=8,
        frameon=False,
    )
    return figure


def _draw_heatmap(chart: ColumnChart, title: str):
    """Many partitions: the share of each partition's rows per bin, a row per partition (no overlay)."""
    labels = list(chart.current)
    shares = np.array([np.divide(s.counts, max(sum(s.counts), 1)) for s in chart.current.values()], dtype=float)
    figure = _figure(9.0, 2.0 + 0.18 * len(labels))
    ax = figure.subplots()
    if chart.kind == "histogram":
        extent = (chart.edges[0], chart.edges[-1], len(labels) - 0.5, -0.5)
        image = ax.imshow(shares, aspect="auto", interpolation="nearest", extent=extent, cmap="viridis")
    else:
        image = ax.imshow(shares, aspect="auto", interpolation="nearest", cmap="viridis")
        ax.set_xticks(np.arange(len(chart.values)), [str(v) for v in chart.values], rotation=45, ha="right")
    step = max(1, math.ceil(len(labels) / 40))
    ax.set_yticks(np.arange(0, len(labels), step), labels[::step], fontsize=7)
    ax.set_xlabel(chart.column)
    ax.set_ylabel("partition")
    figure.colorbar(image, ax=ax, label="share of the partition's rows")
    if chart.previous_version is not None:
        title += f"; v{chart.previous_version} not overlaid (more than {MAX_PANELS} partitions)"
    figure.suptitle(title, fontsize=11)
    return figure


def _draw_history(table_uri: str, column: str, points: list[dict[str, Any]]):
    versions = np.array([p["version"] for p in points])
    rows = np.array([np.nan if p["rows"] is None else p["rows"] for p in points], dtype=float)
    means = np.array([np.nan if p["mean"] is None else p["mean"] for p in points], dtype=float)
    figure = _figure(9.0, 6.0)
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.bar(versions, np.nan_to_num(rows), color=CURRENT_COLOR, alpha=0.75, width=0.8)
    top.set_ylabel("rows")
    top.ticklabel_format(axis="y", style="plain")
    top.grid(axis="y", alpha=0.3)
    bottom.plot(versions, means, marker="o", color=CURRENT_COLOR)
    for version in versions[np.isnan(means)]:
        bottom.axvspan(version - 0.4, version + 0.4, color="#bbbbbb", alpha=0.4, linewidth=0)
    bottom.set_ylabel(f"mean {column}")
    bottom.set_xlabel("table version")
    bottom.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator  # with matplotlib (see _figure)

    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    gaps = int(np.isnan(means).sum())
    figure.suptitle(
        f"{_name(table_uri)}: rows and mean {column} per version "
        f"(v{versions[0]}..v{versions[-1]}" + (f"; {gaps} without a mean, shaded)" if gaps else ")"),
        fontsize=11,
    )
    return figure
