"""What a run is called in MLflow: its table, its partition range and, when it is not a plain run, its role.

A run list of `churn ds=2026-11-25` names (the job and the first partition) could not tell the daily run of a day
from a backfill that started on it, a 5,000-row try or a run with a challenger. The name now says all three:

    churn_scores ds=2026-12-05                                  a plain run: the job's table, one partition
    churn_scores ds=2026-12-03..2026-12-05 [backfill]           partitions of more than one first-column value
    churn_try ds=2026-12-05 [ad-hoc, 5,000 rows]                `score run --limit 5000 --table churn_try`
    churn_scores_dev ds=2026-12-05 [dev]                        the output table set by --set or overrides
    churn_scores ds=2026-12-05 [challenger]                     model.challenger scored beside the model

Roles combine (`[backfill, challenger]`) and are also the run's tag `score.role` (comma-separated, e.g.
`backfill,challenger`; empty for a plain run), for a search such as ``tags.`score.role` LIKE '%backfill%'``.
"""

from __future__ import annotations

from pathlib import Path

from jobs import hive
from jobs.inputs import InputSelection
from jobs.spec.load import LoadedSpec

# Where `score run --limit` writes the sample it scores (jobs.plan.samples.sample_job): a job reading from there is
# an ad-hoc try.
SAMPLES = Path(".score", "samples")


def run_roles(job: LoadedSpec, selection: InputSelection) -> list[str]:
    """ad-hoc (a `--limit` sample), or backfill and dev; then challenger; as they apply; none for a plain run."""
    spec = job.spec
    roles = []
    # no resolve(): a local input path is absolute once loaded, and a driver on a cluster may have no working folder
    if "://" not in spec.input.path and Path(spec.input.path).is_relative_to(job.root / SAMPLES):
        roles.append("ad-hoc")
    else:
        if len({p[0] for p in selection.partitions if p}) > 1:
            roles.append("backfill")
        if any(item.partition("=")[0].strip() == "output.table" for item in job.overrides):
            roles.append("dev")
    if spec.model.challenger:
        roles.append("challenger")
    return roles


def run_name(job: LoadedSpec, selection: InputSelection) -> str:
    """`<table> <partitions>[ [<roles>]]`; the partitions as a range of the first partition column's values when
    the run spans several (`ds=2026-12-03..2026-12-05`), else that value (and how many partitions it holds), or
    the one partition's label."""
    labels = selection.labels
    where = labels[0] if labels else "(no partitions)"
    firsts = list(dict.fromkeys(p[0] for p in selection.partitions if p))  # in the selection's order
    if len(firsts) > 1:
        where = f"{hive.folder([firsts[0]])}..{hive.encode(firsts[-1][1])}"
    elif len(labels) > 1:  # several partitions under one value of the first column: ds=D/region=...
        where = f"{hive.folder(firsts)} ({len(labels)} partitions)"
    roles = [f"ad-hoc, {selection.num_rows:,} rows" if r == "ad-hoc" else r for r in run_roles(job, selection)]
    return f"{job.spec.output.table} {where}" + (f" [{', '.join(roles)}]" if roles else "")
