"""Pictures of a table's scores: score distributions per partition and version, and a column's history.

A run's scores can look right row by row and still be wrong as a whole (a model that predicts 0.5 for
everyone, a day whose inputs shifted), which only a picture shows at a glance. `score_histograms` draws
the distribution of each output column for the partitions a run wrote, one panel per partition (a shift
between days), with the previous version's distribution of the same partitions overlaid (a model change);
`history_plot` draws rows and the mean of a column per table version (`score history TABLE --plot`).

The numbers behind every picture come from functions of their own (`score_histogram_data`,
`history_data`), so they can be checked and reused; the drawing only reads them. Only the needed columns
are read, through pyarrow datasets that skip the files of other partitions; nothing goes through pandas.
A run's charts are SVG written here, in milliseconds (see "drawing a run's charts"); the history plot, drawn on
request, uses matplotlib's Agg canvas on a `Figure` of its own: no display, no pyplot state shared between calls
or threads. The same data always gives the same bytes.
"""

from __future__ import annotations

import html
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
    file_name: str  # artifact-friendly, e.g. "churn_probability.svg"


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
    """SVG images of the distribution of each of `columns` at `version`, by artifact file name
    ("churn_probability.svg"): one panel per partition (a heat map of partition x bin beyond MAX_PANELS),
    so a shift between days shows, and the previous version's distribution of the same partitions as an
    outline labelled "v<N> (previous)", so a model change shows. See `score_histogram_data` for the numbers.
    """
    charts = score_histogram_data(table_uri, version, columns, partition_by, partitions, previous_version)
    return {chart.file_name: _draw_chart(chart).encode() for chart in charts.values()}


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
    name, n = f"{stem}.svg", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.svg"
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


# -- drawing a run's charts ---------------------------------------------------------------------------------

# A run draws its charts before it ends, so they are plain SVG text: matplotlib took 1.1 s of a 4 s run (0.3 s to
# import, about 0.1 s a panel), this takes milliseconds. MLflow's artifact pane and any browser show SVG; every bar
# carries its numbers (data-* attributes and a tooltip), so a chart can be checked against the table it shows.

SVG_WIDTH = 800  # px
PLOT_LEFT, PLOT_RIGHT = 72, 24  # px: room for the y labels; the right margin
TOP = 62  # px: the title and the legend
PANEL_HEIGHT, PANEL_HEADING = 130, 34  # px: one partition's plot; its heading above it
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"]


def _draw_chart(chart: ColumnChart) -> str:
    """One panel per partition, the previous version's counts overlaid as an outline (histograms) or hatched
    bars beside the current ones; beyond MAX_PANELS partitions, a heat map."""
    labels = list(chart.current)
    title = f"{chart.table} v{chart.version}: {chart.column} ({_span(labels)})"
    if len(labels) > MAX_PANELS:
        return _draw_heatmap(chart, title)
    names = [str(v) for v in chart.values] if chart.kind == "bars" else []
    rotated = len(names) > 8
    bottom = 46 + (min(140, 6 * max(map(len, names))) if rotated else 0)
    height = TOP + len(labels) * (PANEL_HEADING + PANEL_HEIGHT) + bottom
    right = SVG_WIDTH - PLOT_RIGHT
    if chart.kind == "histogram":
        low, high = chart.edges[0], chart.edges[-1]
        x_of = lambda value: PLOT_LEFT + (value - low) / (high - low) * (right - PLOT_LEFT)  # noqa: E731
    else:
        slot = (right - PLOT_LEFT) / max(len(names), 1)
        x_of = lambda value: PLOT_LEFT + value * slot  # noqa: E731
    numeric = any(s.mean is not None for s in [*chart.current.values(), *chart.previous.values()])
    out = _svg_open(height, title)
    out.append(_text(SVG_WIDTH / 2, 22, title, size=14, anchor="middle"))
    out += _legend(chart.version, sorted({s.version for s in chart.previous.values()}), chart.kind)
    for index, label in enumerate(labels):
        top = TOP + index * (PANEL_HEADING + PANEL_HEIGHT) + PANEL_HEADING
        base = top + PANEL_HEIGHT
        series, before = chart.current[label], chart.previous.get(label)
        heading = label if label != ALL_ROWS else "all rows"
        out.append(
            _text(
                PLOT_LEFT,
                top - 8,
                f"{heading}: v{chart.version} {_describe(series, numeric)}"
                + (f"; v{before.version} {_describe(before, numeric)}" if before else ""),
            )
        )
        ceiling = _ticks(0, max([*series.counts, *(before.counts if before else []), 1]), whole=True)
        y_of = lambda count: base - count / ceiling[-1] * PANEL_HEIGHT  # noqa: E731, B023
        for tick in ceiling:
            y = y_of(tick)
            out.append(f'<line x1="{PLOT_LEFT}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>')
            out.append(_text(PLOT_LEFT - 6, y + 4, f"{tick:,.0f}", size=10, anchor="end"))
        out.append(_text(16, top + PANEL_HEIGHT / 2, "rows", size=10, anchor="middle", rotate=-90))
        if chart.kind == "histogram":
            for i, count in enumerate(series.counts):
                left, width = x_of(chart.edges[i]), x_of(chart.edges[i + 1]) - x_of(chart.edges[i])
                out.append(_bar(left, y_of(count), width, base - y_of(count), series, i, chart, CURRENT_COLOR))
            if before:
                steps = " ".join(
                    f"{x_of(chart.edges[i]):.1f},{y_of(c):.1f} {x_of(chart.edges[i + 1]):.1f},{y_of(c):.1f}"
                    for i, c in enumerate(before.counts)
                )
                out.append(
                    f'<polyline points="{x_of(low):.1f},{base:.1f} {steps} {x_of(high):.1f},{base:.1f}" '
                    f'fill="none" stroke="{PREVIOUS_COLOR}" stroke-width="1.3"/>'
                )
                out += [
                    _bar(
                        x_of(chart.edges[i]),
                        y_of(c),
                        x_of(chart.edges[i + 1]) - x_of(chart.edges[i]),
                        base - y_of(c),
                        before,
                        i,
                        chart,
                        "none",
                    )
                    for i, c in enumerate(before.counts)
                ]
        else:
            width = slot * (0.4 if before else 0.8)
            for i, count in enumerate(series.counts):
                left = x_of(i + 0.5) - (width if before else width / 2)
                out.append(_bar(left, y_of(count), width, base - y_of(count), series, i, chart, CURRENT_COLOR))
            for i, count in enumerate(before.counts if before else []):
                out.append(_bar(x_of(i + 0.5), y_of(count), width, base - y_of(count), before, i, chart, "hatch"))
        if not sum(series.counts) and not (before and sum(before.counts)):
            empty = f"no rows in v{chart.version}" if not series.rows else f"no values in v{chart.version}"
            out.append(_text((PLOT_LEFT + right) / 2, top + PANEL_HEIGHT / 2, empty, anchor="middle"))
        out.append(f'<line x1="{PLOT_LEFT}" x2="{right}" y1="{base}" y2="{base}" stroke="#555555"/>')
    axis = TOP + len(labels) * (PANEL_HEADING + PANEL_HEIGHT)
    if chart.kind == "histogram":
        for tick in _ticks(low, high):
            if low <= tick <= high:
                out.append(_text(x_of(tick), axis + 15, f"{tick:.4g}", size=10, anchor="middle"))
    else:
        for i, name in enumerate(names):
            x = x_of(i + 0.5)
            if rotated:
                out.append(_text(x + 4, axis + 12, name, size=10, anchor="end", rotate=-45))
            else:
                out.append(_text(x, axis + 15, name, size=10, anchor="middle"))
    out.append(_text((PLOT_LEFT + right) / 2, height - 10, chart.column, anchor="middle"))
    return "\n".join([*out, "</svg>", ""])


def _draw_heatmap(chart: ColumnChart, title: str) -> str:
    """Many partitions: the share of each partition's rows per bin, a row of cells per partition (no overlay)."""
    labels = list(chart.current)
    bins = (
        [f"[{a:.4g}, {b:.4g})" for a, b in zip(chart.edges, chart.edges[1:])]
        if chart.kind == "histogram"
        else [str(v) for v in chart.values]
    )
    shares = [[c / max(sum(s.counts), 1) for c in s.counts] for s in chart.current.values()]
    highest = max((max(row, default=0.0) for row in shares), default=0.0) or 1.0
    left = 16 + 6 * max(map(len, labels))
    right = SVG_WIDTH - 110  # the color bar's room
    row = max(6.0, min(18.0, 600 / len(labels)))
    cell = (right - left) / len(bins)
    bottom = 56 + (min(140, 6 * max(map(len, bins))) if chart.kind == "bars" else 0)
    if chart.previous_version is not None:
        title += f"; v{chart.previous_version} not overlaid (more than {MAX_PANELS} partitions)"
    height = TOP + row * len(labels) + bottom
    out = _svg_open(height, title)
    out.append(_text(SVG_WIDTH / 2, 22, title, size=13, anchor="middle"))
    step = max(1, math.ceil(len(labels) / 40))
    for r, (label, series) in enumerate(chart.current.items()):
        y = TOP + r * row
        if r % step == 0:
            out.append(_text(left - 6, y + row / 2 + 3, label, size=9, anchor="end"))
        for i, count in enumerate(series.counts):
            share = shares[r][i]
            out.append(
                f'<rect x="{left + i * cell:.1f}" y="{y:.1f}" width="{cell:.1f}" height="{row:.1f}" '
                f'fill="{_viridis(share / highest)}" data-partition="{_escape(label)}" data-bin="{i}" '
                f'data-count="{count}"><title>{_escape(label)} {_escape(bins[i])}: {count:,} rows, '
                f"{share:.1%}</title></rect>"
            )
    axis = TOP + row * len(labels)
    if chart.kind == "histogram":
        for tick in _ticks(chart.edges[0], chart.edges[-1]):
            if chart.edges[0] <= tick <= chart.edges[-1]:
                x = left + (tick - chart.edges[0]) / (chart.edges[-1] - chart.edges[0]) * (right - left)
                out.append(_text(x, axis + 15, f"{tick:.4g}", size=10, anchor="middle"))
    else:
        for i, name in enumerate(bins):
            out.append(_text(left + (i + 0.5) * cell + 4, axis + 12, name, size=10, anchor="end", rotate=-45))
    out.append(_text((left + right) / 2, height - 12, chart.column, anchor="middle"))
    # the color bar: share of the partition's rows, 0 at the bottom
    bar_top, bar_height = TOP, min(row * len(labels), 300)
    out.append(
        '<defs><linearGradient id="viridis" x1="0" y1="1" x2="0" y2="0">'
        + "".join(f'<stop offset="{i / 8:.3f}" stop-color="{c}"/>' for i, c in enumerate(VIRIDIS))
        + "</linearGradient></defs>"
    )
    out.append(f'<rect x="{right + 20}" y="{bar_top}" width="14" height="{bar_height:.1f}" fill="url(#viridis)"/>')
    out.append(_text(right + 38, bar_top + bar_height, "0%", size=9))
    out.append(_text(right + 38, bar_top + 9, f"{highest:.0%}", size=9))
    out.append(
        _text(
            right + 70, bar_top + bar_height / 2, "share of the partition's rows", size=9, anchor="middle", rotate=-90
        )
    )
    return "\n".join([*out, "</svg>", ""])


def _svg_open(height: float, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {SVG_WIDTH} {height:.0f}" font-family="{FONT}" font-size="11">',
        f"<title>{_escape(title)}</title>",
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse">'
        f'<path d="M0,6 L6,0" stroke="{PREVIOUS_COLOR}" stroke-width="0.8"/></pattern></defs>',
        '<rect width="100%" height="100%" fill="white"/>',
    ]


def _legend(version: int, previous: list[int], kind: str) -> list[str]:
    x, y = SVG_WIDTH - PLOT_RIGHT, 44
    out = []
    for text, style in reversed(
        [(f"v{version}", f'fill="{CURRENT_COLOR}" fill-opacity="0.6"')]
        + [
            (f"v{p} (previous)", f'fill="{"none" if kind == "histogram" else "url(#hatch)"}" stroke="{PREVIOUS_COLOR}"')
            for p in previous
        ]
    ):
        x -= 7 * len(text) + 8
        out.append(_text(x, y, text, size=10))
        x -= 18
        out.append(f'<rect x="{x}" y="{y - 9}" width="14" height="10" {style}/>')
        x -= 14
    return out


def _bar(
    x: float, y: float, width: float, height: float, series: Distribution, index: int, chart: ColumnChart, fill: str
) -> str:
    """One bar, with its numbers: which series, which bin or value, how many rows (and a tooltip saying so)."""
    where = (
        f"[{chart.edges[index]:.4g}, {chart.edges[index + 1]:.4g})"
        if chart.kind == "histogram"
        else chart.values[index]
    )
    count = series.counts[index]
    if fill == "none":  # the previous version's outline is drawn as one line; its bars are only its numbers
        style = 'fill="none" stroke="none"'
    elif fill == "hatch":
        style = f'fill="url(#hatch)" stroke="{PREVIOUS_COLOR}"'
    else:
        style = f'fill="{fill}" fill-opacity="0.6"'
    return (
        f'<rect x="{x:.2f}" y="{y:.2f}" width="{width:.2f}" height="{height:.2f}" {style} '
        f'data-version="{series.version}" data-partition="{_escape(series.partition)}" data-bin="{index}" '
        f'data-count="{count}"><title>{_escape(series.partition)} v{series.version} {_escape(str(where))}: '
        f"{count:,} rows</title></rect>"
    )


def _ticks(low: float, high: float, whole: bool = False) -> list[float]:
    """Four to eight round values from `low` (rounded down) to at least `high`: steps of 1, 2 or 5 x 10^k
    (whole numbers when `whole`)."""
    if high <= low:
        high = low + 1
    raw = (high - low) / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if whole:
        step = max(1, round(step))
    first = math.floor(low / step) * step
    count = math.ceil((high - first) / step - 1e-9)
    return [round(first + i * step, 12) for i in range(count + 1)]


def _viridis(t: float) -> str:
    """The color of `t` in [0, 1] on matplotlib's viridis scale (linear between its ninths)."""
    t = min(max(t, 0.0), 1.0) * 8
    i = min(int(t), 7)
    a, b = VIRIDIS[i], VIRIDIS[i + 1]
    mix = [round(int(a[k : k + 2], 16) + (t - i) * (int(b[k : k + 2], 16) - int(a[k : k + 2], 16))) for k in (1, 3, 5)]
    return "#" + "".join(f"{v:02x}" for v in mix)


def _text(x: float, y: float, text: str, size: int = 11, anchor: str = "start", rotate: int = 0) -> str:
    turn = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{turn}>{_escape(text)}</text>'


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


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
