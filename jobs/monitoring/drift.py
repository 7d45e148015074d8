"""Drift of one column between a baseline profile and the current one, measured as Evidently measures it by
default (the reference open-source tool), with scipy's own functions:

- numbers: the Wasserstein distance (earth mover's) normed by the baseline's standard deviation (at least
  0.001), `scipy.stats.wasserstein_distance` over the two sketches' quantile functions (QUANTILE_POINTS
  evenly spaced ranks: the sketch's ~0.3% rank error is the only approximation);
- categories: the Jensen-Shannon distance of the two value distributions (`scipy.spatial.distance.jensenshannon`,
  natural log), over the union of values seen (`other` as one more value);
- both: PSI alongside, over the same categories, or for numbers over the baseline's deciles (PSI_BINS bins
  of a tenth of its values each: the classic definition, which a sketch estimates well; equal-width bins put
  a few rows in the tails, where a sketch's error is as large as the bin); empty bins count as 0.0001
  (Evidently's convention). scipy has no PSI: it is the one-line sum below.

A column drifts when its statistic reaches its threshold (default 0.1 for both, Evidently's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from jobs.monitoring.profiles import NUMBER, ColumnProfile

THRESHOLD = 0.1
QUANTILE_POINTS = 1_000
PSI_BINS = 10
EMPTY_BIN = 0.0001
MIN_NORM = 0.001
WASSERSTEIN, JENSEN_SHANNON = "wasserstein_normed", "jensen_shannon"
OTHER = "(other)"


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    statistic: float  # NaN when either side has no values
    psi: float
    threshold: float
    null_fraction: tuple[float, float]  # baseline, current

    @property
    def drifted(self) -> bool:
        return bool(self.statistic >= self.threshold)  # NaN: no

    def to_dict(self) -> dict:
        """As JSON holds it (a table's lineage, `--json`): NaN as null."""
        out = asdict(self)
        out.update(statistic=_number(self.statistic), psi=_number(self.psi), null_fraction=list(self.null_fraction))
        return {**out, "drifted": self.drifted}


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def table_drift(
    baseline: dict[str, ColumnProfile],
    current: dict[str, ColumnProfile],
    threshold_of: Callable[[str], float] = lambda column: THRESHOLD,
) -> list[ColumnDrift]:
    """The drift of every column profiled on both sides, the most drifted (relative to its threshold) first."""
    found = [
        column_drift(column, baseline[column], profile, threshold_of(column))
        for column, profile in current.items()
        if column in baseline and baseline[column].kind == profile.kind
    ]
    return sorted(found, key=lambda d: -(d.statistic / d.threshold) if not np.isnan(d.statistic) else 0.0)


def column_drift(
    column: str, baseline: ColumnProfile, current: ColumnProfile, threshold: float = THRESHOLD
) -> ColumnDrift:
    nulls = (baseline.null_fraction, current.null_fraction)
    if baseline.kind == NUMBER:
        return ColumnDrift(column, WASSERSTEIN, *_numbers(baseline, current), threshold, nulls)
    return ColumnDrift(column, JENSEN_SHANNON, *_categories(baseline, current), threshold, nulls)


def _numbers(baseline: ColumnProfile, current: ColumnProfile) -> tuple[float, float]:
    if not baseline.present or not current.present:
        return float("nan"), float("nan")
    reference, now = baseline.quantiles(QUANTILE_POINTS), current.quantiles(QUANTILE_POINTS)
    statistic = wasserstein_distance(reference, now) / max(baseline.std, MIN_NORM)
    edges = sorted(set(baseline.kll().get_quantiles(list(np.arange(1, PSI_BINS) / PSI_BINS))))
    return float(statistic), psi(_bins(baseline, edges), _bins(current, edges))


def _bins(profile: ColumnProfile, edges: list[float]) -> np.ndarray:
    """The fraction of the profile's values in each bin between consecutive `edges` (open at both ends)."""
    return np.diff(np.concatenate([[0.0], profile.kll().get_cdf(edges)]))


def _categories(baseline: ColumnProfile, current: ColumnProfile) -> tuple[float, float]:
    if not baseline.present or not current.present:
        return float("nan"), float("nan")
    reference, now = category_fractions(baseline, current)
    return float(jensenshannon(reference, now)), psi(reference, now)


def category_fractions(baseline: ColumnProfile, current: ColumnProfile) -> tuple[np.ndarray, np.ndarray]:
    """Each profile's share of every value either has seen (in sorted order, then `other`)."""
    values = sorted(baseline.values.keys() | current.values.keys())

    def shares(profile: ColumnProfile) -> np.ndarray:
        counts = [profile.values.get(v, 0) for v in values] + [profile.other]
        return np.asarray(counts, dtype=np.float64) / profile.present

    return shares(baseline), shares(current)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """The population stability index: sum of (current - reference) * ln(current / reference) over the bins."""
    reference, current = np.where(reference == 0, EMPTY_BIN, reference), np.where(current == 0, EMPTY_BIN, current)
    return float(np.sum((current - reference) * np.log(current / reference)))
