"""Large-batch offline scoring on Ray: `run_job` scores Parquet partitions into a versioned Delta table."""

from jobs.errors import ContractFailure, RuntimeFailure, ScoreError, SpecError, UsageError


def run_job(*args, **kwargs):
    """See `jobs.run.run_job` (imported lazily: MLflow and Ray are slow to import)."""
    from jobs.run import run_job as _run_job

    return _run_job(*args, **kwargs)


def validate_job(*args, **kwargs):
    """See `jobs.validate.validate_job`: the contract check alone, returning the report."""
    from jobs.validate import validate_job as _validate_job

    return _validate_job(*args, **kwargs)


__all__ = ["run_job", "validate_job", "ScoreError", "SpecError", "UsageError", "ContractFailure", "RuntimeFailure"]
