"""A realistic customer-churn table, generated offline for the demo, the benchmarks and the tests.

Deterministic for a given seed; ids are unique across days; hive-partitioned by `ds=YYYY-MM-DD`.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CATEGORIES: dict[str, list[str]] = {
    "contract_type": ["month_to_month", "one_year", "two_year"],
    "payment_method": ["card", "bank_transfer", "electronic_check", "mailed_check"],
    "internet_service": ["dsl", "fiber", "none"],
    "region": ["north", "south", "east", "west", "central", "islands"],
    "plan_tier": ["basic", "standard", "premium"],
    "acquisition_channel": ["web", "store", "partner", "referral", "phone"],
}
INT_FEATURES = [
    "tenure_months",
    "support_tickets_90d",
    "logins_30d",
    "days_since_last_login",
    "num_products",
    "late_payments_12m",
    "age",
    "household_size",
    "credit_score",
    "referral_count",
    "satisfaction",
]
FLOAT_FEATURES = [
    "monthly_charges",
    "total_charges",
    "avg_session_minutes",
    "discount_pct",
    "data_usage_gb",
    "call_minutes",
    "sms_count",
    "outage_hours_90d",
]
BOOL_FEATURES = ["paperless_billing", "auto_pay", "has_partner", "has_dependents"]
NUMERIC_FEATURES = INT_FEATURES + FLOAT_FEATURES + BOOL_FEATURES
CATEGORICAL_FEATURES = list(CATEGORIES)
ID_COLUMN, EVENT_TIME_COLUMN = "customer_id", "updated_at"


def customers(rows: int, day: dt.date, seed: int = 0, first_id: int = 0) -> pa.Table:
    """One day's snapshot of `rows` customers: ids, 29 typed features, an event timestamp."""
    rng = np.random.default_rng([seed, day.toordinal()])
    tenure = rng.integers(0, 72, rows)
    monthly = np.round(rng.gamma(4.0, 17.5, rows) + 10, 2)
    cols: dict[str, np.ndarray] = {
        ID_COLUMN: np.arange(first_id, first_id + rows, dtype=np.int64),
        "tenure_months": tenure,
        "support_tickets_90d": rng.poisson(0.8, rows),
        "logins_30d": rng.poisson(12, rows),
        "days_since_last_login": rng.integers(0, 60, rows),
        "num_products": rng.integers(1, 6, rows),
        "late_payments_12m": rng.poisson(0.4, rows),
        "age": rng.integers(18, 90, rows),
        "household_size": rng.integers(1, 7, rows),
        "credit_score": rng.integers(300, 851, rows),
        "referral_count": rng.poisson(0.3, rows),
        "satisfaction": rng.integers(1, 6, rows),
        "monthly_charges": monthly,
        "total_charges": np.round(monthly * np.maximum(tenure, 1) * rng.uniform(0.9, 1.1, rows), 2),
        "avg_session_minutes": np.round(rng.exponential(18, rows), 2),
        "discount_pct": np.round(rng.choice([0, 5, 10, 15, 20], rows).astype(float), 1),
        "data_usage_gb": np.round(rng.lognormal(2.5, 0.8, rows), 3),
        "call_minutes": np.round(rng.gamma(2, 120, rows), 1),
        "sms_count": rng.poisson(40, rows).astype(float),
        "outage_hours_90d": np.round(rng.exponential(1.5, rows), 2),
        "paperless_billing": rng.random(rows) < 0.6,
        "auto_pay": rng.random(rows) < 0.5,
        "has_partner": rng.random(rows) < 0.45,
        "has_dependents": rng.random(rows) < 0.3,
    }
    for name, values in CATEGORIES.items():
        cols[name] = np.asarray(values, dtype=object)[rng.integers(0, len(values), rows)]
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    seconds = rng.integers(0, 86_400, rows)
    cols[EVENT_TIME_COLUMN] = np.datetime64(start.replace(tzinfo=None), "us") + seconds.astype("timedelta64[s]")

    arrays = {}
    for name, column in cols.items():
        if name in INT_FEATURES:
            arrays[name] = pa.array(column, pa.int64())
        elif name == EVENT_TIME_COLUMN:
            arrays[name] = pa.array(column, pa.timestamp("us", tz="UTC"))
        else:
            arrays[name] = pa.array(column)
    return pa.table(arrays)


def churn_labels(table: pa.Table, seed: int = 0) -> np.ndarray:
    """A plausible ground truth: short tenure, month-to-month, tickets and late payments raise churn."""
    t = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    logit = (
        -1.2
        - 0.04 * t["tenure_months"]
        + 1.1 * (t["contract_type"] == "month_to_month")
        + 0.35 * t["support_tickets_90d"]
        + 0.5 * t["late_payments_12m"]
        + 0.01 * (t["monthly_charges"] - 70)
        - 0.3 * (t["satisfaction"] - 3)
        + 0.4 * (t["internet_service"] == "fiber")
        - 0.3 * t["auto_pay"]
    )
    rng = np.random.default_rng(seed)
    return (rng.random(len(logit)) < 1 / (1 + np.exp(-logit))).astype(np.int64)


def with_defects(table: pa.Table, share: float, seed: int = 0) -> pa.Table:
    """`share` of the rows broken the way real feeds break them, one defect per row, in turn: an age typed as
    birth year, a region spelt by another system ("North"), a refund booked as negative charges, a credit
    score of 0 for "unknown", and an unset auto-pay flag. The demo's contract catches each one."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(table.num_rows, size=int(round(table.num_rows * share)), replace=False)
    defects = [("age", 1987), ("region", "North"), ("monthly_charges", -42.5), ("credit_score", 0), ("auto_pay", None)]
    for n, (column, value) in enumerate(defects):
        values = table.column(column).to_pylist()
        for row in rows[n :: len(defects)]:
            values[row] = value
        index = table.schema.get_field_index(column)
        table = table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))
    return table


def write_partitions(
    out: str | Path,
    days: list[dt.date],
    rows_per_day: int,
    files_per_day: int = 2,
    seed: int = 0,
    defects: dict[dt.date, float] | None = None,
) -> int:
    """Write `ds=YYYY-MM-DD/part-N.parquet` files; returns the number of rows written. `defects` breaks a share
    of some days' rows (`with_defects`), so that quarantine and the contract report have something to show."""
    out = Path(out)
    total = 0
    for i, day in enumerate(days):
        table = customers(rows_per_day, day, seed=seed, first_id=i * rows_per_day)
        if (defects or {}).get(day):
            table = with_defects(table, defects[day], seed=day.toordinal())
        folder = out / f"ds={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        step = -(-rows_per_day // files_per_day)
        for n, offset in enumerate(range(0, rows_per_day, step)):
            pq.write_table(table.slice(offset, step), folder / f"part-{n}.parquet")
        total += table.num_rows
    return total


def days_ending(last: dt.date, count: int) -> list[dt.date]:
    return [last - dt.timedelta(days=count - 1 - i) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic customer table as daily partitions.")
    parser.add_argument("--out", default="data/customers")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rows-per-day", type=int, default=400_000)
    parser.add_argument("--last-day", type=dt.date.fromisoformat, default=dt.date.today() - dt.timedelta(days=1))
    args = parser.parse_args()
    rows = write_partitions(args.out, days_ending(args.last_day, args.days), args.rows_per_day)
    print(f"wrote {rows:,} rows in {args.days} daily partitions under {args.out}")


if __name__ == "__main__":
    main()
