"""Partition selectors resolve to exactly the files of the chosen partitions."""

from __future__ import annotations

import pytest

from jobs.errors import UsageError
from jobs.inputs import select_input
from tests.conftest import DAYS, ROWS_PER_DAY

D = [d.isoformat() for d in DAYS]


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("latest", [D[2]]),
        ("all", D),
        (f"ds={D[1]}", [D[1]]),
        (f"ds={D[0]},ds={D[2]}", [D[0], D[2]]),
        ([f"ds={D[0]}", f"ds={D[1]}"], [D[0], D[1]]),
        (f"ds={D[1]}..{D[2]}", [D[1], D[2]]),
        (f"ds=2000-01-01..{D[0]}", [D[0]]),
    ],
)
def test_selectors(project, selector, expected):
    selection = select_input(str(project.data), ["ds"], selector)
    assert selection.labels == [f"ds={d}" for d in expected]
    assert len(selection.files) == 2 * len(expected)
    assert selection.num_rows == ROWS_PER_DAY * len(expected)
    assert "customer_id" in selection.schema.names


def test_fingerprint_changes_when_a_file_changes(project, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(project.data, copy)
    before = select_input(str(copy), ["ds"], "all").fingerprint
    assert select_input(str(copy), ["ds"], "all").fingerprint == before
    (copy / f"ds={D[0]}" / "part-0.parquet").write_bytes((copy / f"ds={D[1]}" / "part-0.parquet").read_bytes())
    assert select_input(str(copy), ["ds"], "all").fingerprint != before


@pytest.mark.parametrize("selector, message", [
    ("ds=1999-01-01", "partition ds=1999-01-01 not found"),
    ("region=north", "partition selector 'region=north'"),
    ("yesterday", "partition selector 'yesterday'"),
])
def test_bad_selectors(project, selector, message):
    with pytest.raises(UsageError, match=message):
        select_input(str(project.data), ["ds"], selector)
