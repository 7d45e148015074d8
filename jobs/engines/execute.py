"""Executing one plan's rows, on Ray or in this process, and what a failure there was.

`execute` is the one door the run's flow goes through: the inline engine for small local runs, the Ray Data
pipeline otherwise, then the rows of the files whose schema drifted (quarantined whole by the driver). A
worker's failure arrives wrapped in Ray's own errors; `root_cause` finds the worker's error in them.
"""

from __future__ import annotations

from collections.abc import Callable

from jobs import errors
from jobs.engines.inline import InlineStages, execute_inline
from jobs.engines.pool import PoolSize
from jobs.errors import ERROR_LINE, RuntimeFailure, ScoreError, SpecError
from jobs.plan.plan import Plan
from jobs.stages.drift import fail_drifted
from jobs.stages.sink import WrittenFiles


def execute(
    plan: Plan,
    run_id: str,
    pool: PoolSize | None,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    started: InlineStages | None = None,
) -> WrittenFiles:
    """Score one plan's rows on Ray (with `pool`), or in this process when `pool` is None (`started`: the inline
    stages `jobs.engines.inline.InlineStages` started for it, with their progress counter)."""
    try:
        if pool is None:
            written = execute_inline(plan, run_id, on_progress, started)
        else:
            # Ray Data takes 0.9 s to import: a run scored inline never imports it.
            from jobs.engines.pipeline import execute as execute_on_ray

            written = execute_on_ray(plan, run_id, pool, on_progress)
    except Exception as exc:  # Ray wraps a worker's failure in its own errors (a ScoreError's too): surface it
        ours = _stage_failure(exc)
        if ours is not None:  # a stage's own failure: its message names what to fix, as the inline engine's does
            raise ours from exc
        if isinstance(exc, ScoreError):  # raised here, in the driver (a stall, an inline stage): already clear
            raise
        raise RuntimeFailure(f"the scoring pipeline failed: {root_cause(exc)}") from exc
    written.merge(
        fail_drifted(list(plan.selection.files), plan.drifted, plan.checks.file_schema, plan.quarantine, run_id)
    )
    return written


def _stage_failure(exc: BaseException) -> ScoreError | None:
    """The failure (`jobs.errors`) a stage raised in a worker, as Ray carries it: the text of its traceback
    (`jobs.errors.RuntimeFailure: input file ...`) in one of the errors it chains, whose class may also pass for
    the failure's. None for an error raised in this process (its text is its own message)."""
    for link in _chain(exc):
        for name, message in ERROR_LINE.findall(str(link)):
            kind = getattr(errors, name.removeprefix("jobs.errors."), None) if name.startswith("jobs.errors.") else None
            if isinstance(kind, type) and issubclass(kind, ScoreError) and not issubclass(kind, SpecError):
                return kind(message)
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the errors it was raised from (`__cause__`), outermost first: how Ray nests a worker's error."""
    chain = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


def root_cause(exc: BaseException) -> str:
    """What went wrong in a worker, without Ray's layers of wrapping.

    Ray carries the worker's traceback as text, in one of the exceptions chained by `__cause__` (the innermost
    may be an empty `SystemException`): the innermost that names an error not raised by Ray itself wins, and
    in it the last such line (TorchScript, for one, wraps the model's own error in a generic one).
    """
    chain = _chain(exc)
    for link in reversed(chain):
        causes = [
            f"{name}: {message}" for name, message in ERROR_LINE.findall(str(link)) if not name.startswith("ray.")
        ]
        if causes:
            return causes[-1]
    for link in reversed(chain):
        lines = [line for line in str(link).strip().splitlines() if line.strip()]
        if lines:
            return f"{type(link).__name__}: {lines[-1]}"
    return type(chain[-1]).__name__
