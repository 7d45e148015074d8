"""How a challenger model's scores agree with the champion's on the same rows, per segment, from sums that merge.

For each output column and segment (the values of `monitoring.segments`, or ALL): rows compared (both scored),
rows with equal values (the label agreement, for a label column), and for numbers the sum and maximum of the
absolute difference and the five sums Pearson's correlation needs. Write tasks add them up batch by batch with
Arrow's group-by; the driver merges them and derives the figures (`figures`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from jobs.hive import value_of

ALL = "(all)"  # the segment of every row
_SUMS = ("compared", "equal", "abs_total", "x", "y", "xx", "yy", "xy")


@dataclass
class Agreement:
    """Sums over the rows of one segment for one output column; `numeric` columns also get differences."""

    numeric: bool
    compared: int = 0
    equal: int = 0
    abs_total: float = 0.0
    abs_max: float = 0.0
    x: float = 0.0  # champion
    y: float = 0.0  # challenger
    xx: float = 0.0
    yy: float = 0.0
    xy: float = 0.0

    def merge(self, other: Agreement) -> None:
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.abs_max = max(self.abs_max, other.abs_max)

    def figures(self) -> dict:
        """label_agreement (share of equal values), and for numbers mean and max absolute difference and the
        correlation (None when either side is constant)."""
        n = self.compared
        out: dict = {"rows": n, "label_agreement": self.equal / n if n else None}
        if self.numeric:
            out["mean_abs_diff"] = self.abs_total / n if n else None
            out["max_abs_diff"] = self.abs_max if n else None
            var_x, var_y = self.xx - self.x**2 / n if n else 0.0, self.yy - self.y**2 / n if n else 0.0
            covariance = self.xy - self.x * self.y / n if n else 0.0
            out["correlation"] = covariance / math.sqrt(var_x * var_y) if var_x > 0 and var_y > 0 else None
        return out


def batch_agreement(rows: pa.Table, pairs: dict[str, str], segments: list[str]) -> dict[str, dict[str, Agreement]]:
    """segment label -> champion column -> sums, for the rows both models scored. `pairs`: champion column ->
    the challenger's column of the same output."""
    out: dict[str, dict[str, Agreement]] = {}
    for column, other in pairs.items():
        x, y = rows.column(column), rows.column(other)
        numeric = pa.types.is_integer(x.type) or pa.types.is_floating(x.type)
        both = pc.and_(pc.is_valid(x), pc.is_valid(y))
        parts = {"_both": pc.cast(both, pa.int64()), "_equal": pc.cast(pc.fill_null(pc.equal(x, y), False), pa.int64())}
        if numeric:
            xf, yf = (pc.if_else(both, pc.cast(v, pa.float64()), 0.0) for v in (x, y))
            difference = pc.abs(pc.subtract(xf, yf))
            parts.update(
                _abs=difference, _x=xf, _y=yf, _xx=pc.multiply(xf, xf), _yy=pc.multiply(yf, yf), _xy=pc.multiply(xf, yf)
            )
        keys = {s: rows.column(s) for s in segments}
        table = pa.table({**keys, **parts})
        aggregates = [(name, "sum") for name in parts] + ([("_abs", "max")] if numeric else [])
        groups: list[tuple[list[str], pa.Table]] = [([], table.group_by([]).aggregate(aggregates))]
        if segments:
            groups.append((segments, table.group_by(segments).aggregate(aggregates)))
        for by, result in groups:
            for row in result.to_pylist():
                label = ",".join(f"{s}={value_of(row[s])}" for s in by) if by else ALL
                sums = Agreement(numeric, row["_both_sum"], row["_equal_sum"])
                if numeric:
                    sums.abs_total, sums.abs_max = row["_abs_sum"], row["_abs_max"] or 0.0
                    sums.x, sums.y, sums.xx, sums.yy, sums.xy = (row[f"_{n}_sum"] for n in ("x", "y", "xx", "yy", "xy"))
                merge_agreement(out, {label: {column: sums}})
    return out


def merge_agreement(into: dict[str, dict[str, Agreement]], more: dict[str, dict[str, Agreement]]) -> None:
    for label, columns in more.items():
        kept = into.setdefault(label, {})
        for column, sums in columns.items():
            if column in kept:
                kept[column].merge(sums)
            else:
                kept[column] = Agreement(sums.numeric)
                kept[column].merge(sums)


def agreement_figures(sums: dict[str, dict[str, Agreement]]) -> dict[str, dict[str, dict]]:
    """segment -> column -> figures, the whole (ALL) first, then the segments in order."""
    order = sorted(sums, key=lambda label: (label != ALL, label))
    return {label: {column: s.figures() for column, s in sums[label].items()} for label in order}
