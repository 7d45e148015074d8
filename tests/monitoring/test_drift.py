"""Drift statistics from profiles made batch by batch, against scipy's own computation on the raw values.

Numbers go through a quantile sketch (about 0.3% rank error), so their statistic equals scipy's on the raw
values within ABS_SKETCH; categories are counted exactly, so theirs equal scipy's to the last bits.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from jobs.monitoring.drift import JENSEN_SHANNON, THRESHOLD, WASSERSTEIN, column_drift, psi
from jobs.monitoring.profiles import CATEGORY, NUMBER, TOP_VALUES, ColumnProfile, merge_profiles, profile_table

ROWS = 200_000
BATCH = 65_536
# Normed Wasserstein from two KLL sketches (k=1000) against scipy's on the raw values: within 0.007 in 60 trials
# of the shifted case below (the sketch compacts at random, so this is a bound, not a seed); PSI within 0.007.
ABS_SKETCH = 0.045
ABS_PSI = 0.02


def profile_in_batches(values: pa.Array) -> ColumnProfile:
    """As the stages make it: one profile per batch, merged."""
    merged: dict[str, ColumnProfile] = {}
    for start in range(0, len(values), BATCH):
        merge_profiles(merged, profile_table(pa.table({"x": values.slice(start, BATCH)}), ["x"]))
    return merged["x"]


def normed_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's default test for numbers, on the raw values."""
    return wasserstein_distance(reference, current) / max(np.std(reference), 0.001)


def test_two_samples_of_one_heavy_tailed_distribution_are_not_flagged():
    """The sketch's error is largest in a long tail: 0.022 at most in 60 trials here (exact 0.003), which k=400
    made 0.058 (`profiles.KLL_K`)."""
    rng = np.random.default_rng(7)
    reference, current = rng.lognormal(2.5, 0.8, ROWS), rng.lognormal(2.5, 0.8, ROWS)
    drift = column_drift("x", profile_in_batches(pa.array(reference)), profile_in_batches(pa.array(current)))
    assert drift.statistic == pytest.approx(normed_wasserstein(reference, current), abs=ABS_SKETCH)
    assert not drift.drifted


def test_a_shifted_numeric_column_is_flagged_with_scipys_statistic():
    rng = np.random.default_rng(1)
    reference, current = rng.normal(0, 1, ROWS), rng.normal(0.3, 1, ROWS)
    baseline, now = profile_in_batches(pa.array(reference)), profile_in_batches(pa.array(current))
    drift = column_drift("x", baseline, now)
    assert drift.method == WASSERSTEIN and drift.threshold == THRESHOLD
    # exactly scipy's function on the sketches' quantile functions, normed by the exact standard deviation
    on_sketches = wasserstein_distance(baseline.quantiles(1000), now.quantiles(1000)) / np.std(reference)
    assert drift.statistic == pytest.approx(on_sketches, rel=1e-9)
    assert drift.statistic == pytest.approx(normed_wasserstein(reference, current), abs=ABS_SKETCH)
    assert drift.drifted
    deciles = np.quantile(reference, np.arange(1, 10) / 10)  # the classic PSI's bins: the baseline's deciles
    shares = [np.bincount(np.searchsorted(deciles, v), minlength=10) / ROWS for v in (reference, current)]
    assert drift.psi == pytest.approx(psi(*shares), abs=ABS_PSI)


def test_an_unshifted_numeric_column_is_not_flagged():
    rng = np.random.default_rng(2)
    reference, current = rng.normal(5, 2, ROWS), rng.normal(5, 2, ROWS)
    drift = column_drift("x", profile_in_batches(pa.array(reference)), profile_in_batches(pa.array(current)))
    assert drift.statistic == pytest.approx(normed_wasserstein(reference, current), abs=ABS_SKETCH)
    assert drift.statistic < THRESHOLD / 2 and not drift.drifted and abs(drift.psi) < 0.01


def test_a_new_category_is_flagged_with_scipys_exact_statistic():
    rng = np.random.default_rng(3)
    plans = ["basic", "plus", "pro"]
    reference = rng.choice(plans, ROWS, p=[0.5, 0.3, 0.2])
    current = rng.choice([*plans, "enterprise"], ROWS, p=[0.4, 0.3, 0.15, 0.15])
    drift = column_drift("plan", profile_in_batches(pa.array(reference)), profile_in_batches(pa.array(current)))
    values = sorted(set(reference) | set(current))
    shares = [np.array([(v == s).sum() for s in values]) / ROWS for v in (reference, current)]
    assert drift.method == JENSEN_SHANNON
    assert drift.statistic == pytest.approx(jensenshannon(*shares), rel=1e-12)
    reference_shares = np.where(shares[0] == 0, 1e-4, shares[0])  # "enterprise": absent from the baseline
    assert drift.psi == pytest.approx(np.sum((shares[1] - reference_shares) * np.log(shares[1] / reference_shares)))
    assert drift.drifted


def test_an_unchanged_category_mix_is_not_flagged():
    rng = np.random.default_rng(4)
    reference, current = (rng.choice(["a", "b", "c"], ROWS, p=[0.6, 0.3, 0.1]) for _ in range(2))
    drift = column_drift("c", profile_in_batches(pa.array(reference)), profile_in_batches(pa.array(current)))
    assert drift.statistic < 0.01 and not drift.drifted


def test_profiles_count_nulls_and_nans_and_merge_exactly():
    values = pa.array([1.0, None, float("nan"), 4.0, 5.0, None], pa.float64())
    whole = ColumnProfile.of(values)
    parts = ColumnProfile.of(values.slice(0, 3)).merge(ColumnProfile.of(values.slice(3)))
    for profile in (whole, parts):
        assert (profile.kind, profile.rows, profile.nulls, profile.present) == (NUMBER, 6, 3, 3)
        assert profile.null_fraction == 0.5
        assert profile.mean == pytest.approx(10 / 3) and profile.std == pytest.approx(np.std([1.0, 4.0, 5.0]))
        assert list(profile.quantiles(3)) == [1.0, 4.0, 5.0]  # exact below the sketch's capacity
    strings = pa.array(["x", None, "y", "x"]).dictionary_encode()  # as Spark's files read back
    profile = ColumnProfile.of(strings)
    assert (profile.kind, profile.nulls, profile.values) == (CATEGORY, 1, {"x": 2, "y": 1})
    assert ColumnProfile.from_dict(whole.to_dict()) == whole
    assert ColumnProfile.from_dict(profile.to_dict()) == profile


def test_categories_past_the_kept_values_count_as_other():
    many = pa.array([f"id-{i}" for i in range(TOP_VALUES + 10)] * 2)
    profile = ColumnProfile.of(many)
    assert len(profile.values) == TOP_VALUES and profile.other == 20
    assert sum(profile.values.values()) + profile.other == profile.present == len(many)


def test_a_column_with_no_values_has_no_statistic():
    empty = ColumnProfile.of(pa.array([None, None], pa.float64()))
    drift = column_drift("x", empty, ColumnProfile.of(pa.array([1.0, 2.0])))
    assert np.isnan(drift.statistic) and not drift.drifted


def test_a_strided_sketch_keeps_exact_counts_and_the_distribution():
    """Every 8th value in the sketch (a quarter of its cost), every row in the counts and moments."""
    rng = np.random.default_rng(5)
    values = np.where(rng.random(ROWS) < 0.01, np.nan, rng.normal(0, 1, ROWS))
    full, strided = ColumnProfile.of(pa.array(values)), ColumnProfile.of(pa.array(values), stride=8)
    assert (strided.rows, strided.nulls, strided.total, strided.squares) == (
        full.rows,
        full.nulls,
        full.total,
        full.squares,
    )
    present = np.sort(values[~np.isnan(values)])
    assert strided.kll().n == len(present[::8])
    # Each quantile's true rank in all the values is off by the sketch's rank error plus the sampling error of
    # every 8th value (4 standard deviations); 0.012 at most in 300 trials, against a bound of 0.019.
    points = (np.arange(20) + 0.5) / 20  # the ranks of quantiles(20)
    ranks = np.searchsorted(present, strided.quantiles(20), side="right") / len(present)
    bound = strided.kll().normalized_rank_error(False) + 4 * 0.5 / np.sqrt(strided.kll().n)
    assert np.max(np.abs(ranks - points)) < bound
    assert not column_drift("x", full, strided).drifted
