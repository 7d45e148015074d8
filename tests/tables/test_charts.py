"""Charts of a table's scores: the numbers behind each picture equal the table's own values, read back at
each version, and the pictures draw exactly those numbers, the same bytes for the same data."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from jobs.errors import UsageError
from jobs.tables import charts
from jobs.tables.charts import (
    ALL_ROWS,
    ChartError,
    history_data,
    history_plot,
    score_histogram_data,
    score_histograms,
)

DAYS = ["2026-11-25", "2026-11-26", "2026-11-27"]
ROWS = {"2026-11-25": 2_000, "2026-11-26": 1_500, "2026-11-27": 1_800, "2026-11-28": 900}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def _day(day: str, rng: np.random.Generator, first_id: int, shift: float = 0.0) -> pa.Table:
    n = ROWS[day]
    probability = np.clip(rng.beta(2.0, 5.0, n) + shift, 0.0, 1.0)
    return pa.table(
        {
            "customer_id": pa.array(np.arange(first_id, first_id + n), pa.int64()),
            "ds": pa.array([day] * n, pa.string()),
            "churn_probability": pa.array(probability, pa.float32()),
            "churn_label": pa.array((probability > 0.5).astype(np.int64), pa.int64()),
            "expected_value": pa.array(rng.normal(100.0, 20.0, n), pa.float64()),
            "segment": pa.array(rng.choice(["consumer", "smb", "enterprise"], n), pa.string()),
        }
    )


@pytest.fixture(scope="module")
def scores(tmp_path_factory) -> str:
    """v0: three days; v1: 2026-11-27 re-scored with shifted scores; v2: 2026-11-28 appended."""
    uri = str(tmp_path_factory.mktemp("charts") / "churn_scores")
    rng = np.random.default_rng(20261127)
    write_deltalake(
        uri, pa.concat_tables([_day(d, rng, 1_000_000 * i) for i, d in enumerate(DAYS)]), partition_by=["ds"]
    )
    write_deltalake(
        uri, _day("2026-11-27", rng, 2_000_000, shift=0.25), mode="overwrite", predicate="ds = '2026-11-27'"
    )
    write_deltalake(uri, _day("2026-11-28", rng, 3_000_000), mode="append")
    return uri


def _values(uri: str, version: int, column: str, day: str | None = None) -> pa.ChunkedArray:
    table = DeltaTable(uri, version=version).to_pyarrow_table(columns=["ds", column])
    if day is not None:
        table = table.filter(pc.equal(table["ds"], day))
    return table[column]


def _days(*days: str) -> list[dict[str, str]]:
    return [{"ds": d} for d in days]


def test_histogram_counts_per_partition_equal_numpy_on_the_table(scores):
    chart = score_histogram_data(scores, 1, ["churn_probability"], ["ds"], _days(*DAYS))["churn_probability"]

    assert chart.kind == "histogram" and chart.values is None
    assert chart.edges == pytest.approx(np.linspace(0.0, 1.0, charts.PROBABILITY_BINS + 1).tolist())
    assert list(chart.current) == [f"ds={d}" for d in DAYS]
    for day in DAYS:
        values = _values(scores, 1, "churn_probability", day).to_numpy()
        series = chart.current[f"ds={day}"]
        assert series.version == 1
        assert series.counts == np.histogram(values, bins=chart.edges)[0].tolist()
        assert sum(series.counts) == series.rows == ROWS[day] and series.missing == 0
        assert series.mean == pytest.approx(float(values.astype(np.float64).mean()), rel=1e-6)
    assert chart.previous == {} and chart.previous_version is None


def test_previous_version_overlay_counts_equal_that_versions_values(scores):
    chart = score_histogram_data(
        scores, 1, ["churn_probability"], ["ds"], _days("2026-11-26", "2026-11-27"), previous_version=0
    )["churn_probability"]

    assert chart.previous_version == 0 and list(chart.previous) == ["ds=2026-11-26", "ds=2026-11-27"]
    for day in ("2026-11-26", "2026-11-27"):
        before = _values(scores, 0, "churn_probability", day).to_numpy()
        assert chart.previous[f"ds={day}"].version == 0
        assert chart.previous[f"ds={day}"].counts == np.histogram(before, bins=chart.edges)[0].tolist()
    # the untouched day is the same in both versions; the re-scored one moved up
    assert chart.previous["ds=2026-11-26"].counts == chart.current["ds=2026-11-26"].counts
    assert chart.current["ds=2026-11-27"].mean > chart.previous["ds=2026-11-27"].mean + 0.2

    # a partition the previous version does not hold gets no overlay
    newer = score_histogram_data(
        scores, 2, ["churn_probability"], ["ds"], _days("2026-11-27", "2026-11-28"), previous_version=1
    )["churn_probability"]
    assert list(newer.previous) == ["ds=2026-11-27"]
    assert newer.previous["ds=2026-11-27"].counts == newer.current["ds=2026-11-27"].counts


def test_label_and_string_columns_are_bars_of_value_counts(scores):
    data = score_histogram_data(scores, 1, ["churn_label", "segment"], ["ds"], _days(*DAYS), previous_version=0)

    label = data["churn_label"]
    assert label.kind == "bars" and label.edges is None and label.values == [0, 1]
    for version, series_by_day in ((1, label.current), (0, label.previous)):
        for day in DAYS:
            values, counts = np.unique(_values(scores, version, "churn_label", day).to_numpy(), return_counts=True)
            expected = dict(zip(values.tolist(), counts.tolist()))
            assert series_by_day[f"ds={day}"].counts == [expected.get(v, 0) for v in label.values]
            assert series_by_day[f"ds={day}"].mean == pytest.approx(expected.get(1, 0) / ROWS[day])
    segment = data["segment"]
    assert segment.kind == "bars" and segment.values == ["consumer", "enterprise", "smb"]
    counted = pc.value_counts(_values(scores, 1, "segment", "2026-11-25")).to_pylist()
    assert segment.current["ds=2026-11-25"].counts == [
        {c["values"]: c["counts"] for c in counted}[v] for v in segment.values
    ]
    assert segment.current["ds=2026-11-25"].mean is None


def test_whole_table_range_bins_and_many_values(scores, monkeypatch):
    data = score_histogram_data(scores, 2, ["expected_value", "customer_id"], ["ds"], previous_version=0)

    spend = data["expected_value"]
    assert list(spend.current) == [ALL_ROWS] and list(spend.previous) == [ALL_ROWS]
    now, before = _values(scores, 2, "expected_value").to_numpy(), _values(scores, 0, "expected_value").to_numpy()
    assert len(spend.edges) == charts.RANGE_BINS + 1
    assert spend.edges[0] == min(now.min(), before.min()) and spend.edges[-1] == max(now.max(), before.max())
    assert spend.current[ALL_ROWS].counts == np.histogram(now, bins=spend.edges)[0].tolist()
    assert spend.previous[ALL_ROWS].counts == np.histogram(before, bins=spend.edges)[0].tolist()
    assert spend.current[ALL_ROWS].rows == sum(ROWS.values())
    assert data["customer_id"].kind == "histogram"  # an integer with many values is binned, not barred

    monkeypatch.setattr(charts, "MAX_BARS", 2)  # more strings than bars: the rarest go to one bar
    segment = score_histogram_data(scores, 0, ["segment"], ["ds"], _days("2026-11-25"))["segment"]
    values, counts = np.unique(_values(scores, 0, "segment", "2026-11-25").to_numpy(), return_counts=True)
    top = values[np.argmax(counts)]
    assert segment.values == [top, charts.OTHER_VALUES]
    assert segment.current["ds=2026-11-25"].counts == [counts.max(), ROWS["2026-11-25"] - counts.max()]


def test_an_empty_partition_is_an_empty_series_not_an_error(scores):
    chart = score_histogram_data(
        scores, 0, ["churn_probability"], ["ds"], _days("2026-11-25", "2026-12-31"), previous_version=0
    )["churn_probability"]
    empty = chart.current["ds=2026-12-31"]
    assert empty.rows == 0 and sum(empty.counts) == 0 and empty.mean is None
    assert list(chart.previous) == ["ds=2026-11-25"]


def _decode(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    assert png.startswith(PNG_SIGNATURE)
    image = imread(io.BytesIO(png), format="png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert float(image[..., :3].std()) > 0.05  # drawn on, not a blank canvas
    return image


def _svg(image: bytes) -> ET.Element:
    root = ET.fromstring(image)
    assert root.tag == f"{SVG}svg" and int(root.get("width")) >= 400 and int(root.get("height")) > 150
    return root


def _bars(root: ET.Element) -> dict[tuple[str, int], list[tuple[int, float]]]:
    """(partition, version) -> (count, drawn height) of each bar, in bin order."""
    bars: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for rect in root.iter(f"{SVG}rect"):
        if rect.get("data-count") is not None:
            key = (rect.get("data-partition"), int(rect.get("data-version", -1)))
            bars.setdefault(key, []).append((int(rect.get("data-count")), float(rect.get("height"))))
    return bars


def test_svgs_draw_every_count_to_scale_deterministically_in_every_layout(scores, monkeypatch):
    columns = ["churn_probability", "churn_label", "segment"]
    images = score_histograms(scores, 1, columns, ["ds"], _days(*DAYS), previous_version=0)
    data = score_histogram_data(scores, 1, columns, ["ds"], _days(*DAYS), previous_version=0)
    assert sorted(images) == ["churn_label.svg", "churn_probability.svg", "segment.svg"]
    for column, chart in data.items():
        bars = _bars(_svg(images[chart.file_name]))
        expected = {(label, s.version): s.counts for label, s in [*chart.current.items(), *chart.previous.items()]}
        assert {key: [count for count, _ in drawn] for key, drawn in bars.items()} == expected, column
        for label in chart.current:  # one y scale per panel, both versions: heights proportional to counts
            scale = [height / count for v in (1, 0) for count, height in bars.get((label, v), []) if count]
            assert scale and max(scale) - min(scale) < 1e-3 * max(scale), (column, label)
    again = score_histograms(scores, 1, columns, ["ds"], _days(*DAYS), previous_version=0)
    assert again == images

    single = score_histograms(scores, 2, ["churn_probability"], ["ds"])["churn_probability.svg"]
    assert set(_bars(_svg(single))) == {(ALL_ROWS, 2)}
    assert int(_svg(single).get("height")) < int(_svg(images["churn_probability.svg"]).get("height"))

    monkeypatch.setattr(charts, "MAX_PANELS", 2)  # many partitions: one heat map of partition x bin
    days = _days(*DAYS, "2026-11-28")
    heat = score_histograms(scores, 2, ["churn_probability", "segment"], ["ds"], days, previous_version=1)
    heat_data = score_histogram_data(scores, 2, ["churn_probability", "segment"], ["ds"], days, previous_version=1)
    for column, chart in heat_data.items():
        cells = _bars(_svg(heat[chart.file_name]))
        assert {label: [count for count, _ in cells[(label, -1)]] for label, _ in cells} == {
            label: series.counts for label, series in chart.current.items()
        }, column


def test_unknown_column_version_or_partition_is_a_clear_error(scores):
    with pytest.raises(ValueError, match=r"no column churn_prob\b.*customer_id, ds, churn_probability, churn_label"):
        score_histograms(scores, 1, ["churn_prob"], ["ds"])
    with pytest.raises(UsageError, match=r"has no version 9 \(it has versions 0\.\.2\)"):
        score_histogram_data(scores, 9, ["churn_probability"], ["ds"])
    with pytest.raises(ChartError, match=r"partition \{'region': 'eu'\} must name output partition columns only"):
        score_histogram_data(scores, 1, ["churn_probability"], ["ds"], [{"region": "eu"}])
    with pytest.raises(
        ChartError, match="no version has a column nope; its columns are customer_id, ds, churn_probability"
    ):
        history_data(scores, "nope")


def test_history_rows_and_means_equal_the_table_at_each_version(scores, tmp_path):
    points = history_data(scores, "churn_probability")

    assert [p["version"] for p in points] == [0, 1, 2]
    for point in points:
        values = _values(scores, point["version"], "churn_probability").to_numpy().astype(np.float64)
        assert point["rows"] == len(values)
        assert point["mean"] == pytest.approx(float(values.mean()), rel=1e-6)
        assert point["note"] is None
    assert points[1]["mean"] > points[0]["mean"]  # the shifted re-score raised the mean

    out = history_plot(scores, "churn_probability", tmp_path / "plots" / "history.png")
    assert out == tmp_path / "plots" / "history.png"
    _decode(out.read_bytes())


def test_history_shows_versions_without_rows_or_column_as_gaps(tmp_path):
    uri = str(tmp_path / "gappy")
    rng = np.random.default_rng(7)
    base = pa.schema([("customer_id", pa.int64()), ("ds", pa.string())])
    write_deltalake(uri, base.empty_table(), partition_by=["ds"])  # v0: no rows
    write_deltalake(
        uri, pa.table({"customer_id": pa.array(np.arange(50), pa.int64()), "ds": ["2026-11-26"] * 50}), mode="append"
    )  # v1: rows, no score column yet
    scored = pa.table(
        {
            "customer_id": pa.array(np.arange(50, 80), pa.int64()),
            "ds": ["2026-11-27"] * 30,
            "score": pa.array(rng.random(30), pa.float32()),
        }
    )
    write_deltalake(uri, scored, mode="append", schema_mode="merge")  # v2: the column appears
    DeltaTable(uri).delete()  # v3: no rows again

    points = history_data(uri, "score")
    assert [(p["version"], p["rows"]) for p in points] == [(0, 0), (1, 50), (2, 80), (3, 0)]
    assert [p["mean"] is None for p in points] == [True, True, False, True]
    assert points[2]["mean"] == pytest.approx(float(scored["score"].to_numpy().astype(np.float64).mean()), rel=1e-6)
    assert points[0]["note"] == "no rows" and points[1]["note"] == "no column score"
    _decode(history_plot(uri, "score", tmp_path / "gappy.png").read_bytes())


def test_history_of_vacuumed_versions_keeps_their_logged_rows_without_a_mean(tmp_path):
    uri = str(tmp_path / "vacuumed")
    rng = np.random.default_rng(11)
    write_deltalake(uri, _day("2026-11-25", rng, 0), partition_by=["ds"])
    write_deltalake(uri, _day("2026-11-26", rng, 10_000), mode="overwrite")  # v1 replaces v0's files
    DeltaTable(uri).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)

    points = history_data(uri, "churn_probability")
    assert points[0]["rows"] == ROWS["2026-11-25"] and points[0]["mean"] is None
    assert points[0]["note"].startswith("data files gone")
    latest = _values(uri, points[-1]["version"], "churn_probability").to_numpy().astype(np.float64)
    assert points[-1]["rows"] == len(latest) and points[-1]["mean"] == pytest.approx(float(latest.mean()), rel=1e-6)
