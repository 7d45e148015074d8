"""Large-batch offline scoring on Ray: `run_job` scores Parquet partitions into a versioned Delta table.

`run_job` and `validate_job` are imported on first use (PEP 562), so that `import jobs` and the `score` command
start fast, while `help(jobs.run_job)` shows the real signature and docstring. (What a run would do:
`jobs.commands.plan.preview`.)
"""

import importlib

from jobs.errors import ContractFailure, RuntimeFailure, ScoreError, SpecError, UsageError

_LAZY = {"run_job": "jobs.commands.run", "validate_job": "jobs.commands.validate"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jobs' has no attribute {name!r}")


__all__ = ["run_job", "validate_job", "ScoreError", "SpecError", "UsageError", "ContractFailure", "RuntimeFailure"]
