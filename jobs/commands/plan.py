"""`score plan`: what a run would do, decided exactly as `score run` decides it, without doing it.

The plan is made by `jobs.plan.plan.make_plan` (the same partitions, files, model version, contract and run key a
run would get); then the table's log says whether the run key already committed and which rows the run
would replace. Nothing starts Ray, opens an MLflow run or writes to a table.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jobs.engines.inline import runs_inline
from jobs.engines.pool import size_pool
from jobs.plan.plan import NothingToScore, Plan, make_plan, progress_of
from jobs.spec.load import load_spec
from jobs.spec.schema import JobSpec
from jobs.storage import redact_uri
from jobs.tables.lineage import table_state


def preview(
    job: str | Path,
    partitions: str | list[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    run_key: str | None = None,
) -> dict[str, Any]:
    """What `score run` with the same arguments would do, as one JSON-ready dict."""
    loaded = load_spec(job, overrides)
    spec = loaded.spec
    try:
        plan = make_plan(loaded, partitions, run_key)
    except NothingToScore as nothing:
        return {
            "job": spec.name,
            "job_file": str(loaded.file),
            "action": "nothing to score",
            "message": str(nothing),
            "model": {
                "uri": redact_uri(nothing.model.uri),
                "version": nothing.model.version,
                "sha256": nothing.model.sha256,
            },
            "table": {"name": spec.output.table, "version": nothing.table_version},
        }
    done = progress_of(plan)
    if not done.todo:
        action = "nothing: its run key already committed"
    elif done.committed:
        action = f"resume: {len(done.committed)} of its partitions are committed; score the other {len(done.todo)}"
        plan = plan.restricted(done.todo)
    else:
        action = "score"
    rows = plan.selection.num_rows
    inline = runs_inline(spec, rows)
    return {
        "job": spec.name,
        "job_file": str(loaded.file),
        "action": action,
        "run_key": plan.run_key,
        "run_key_commits": [
            {
                "table_version": run.table_version,
                "run_id": run.run_id,
                "partitions": [rec.partition for rec in run.inputs],
            }
            for run in done.commits
        ],
        "input": _input(plan),
        "model": _model(plan),
        "contract": _contract(plan),
        "output": _output(plan),
        "engine": {
            "kind": "inline" if inline else "ray",
            "address": spec.engine.address,
            "pool": None if inline else _pool(spec),
        },
    }


def _input(plan: Plan) -> dict[str, Any]:
    selection = plan.selection
    return {
        "path": redact_uri(selection.base),
        "partitions": [
            {
                "partition": label,
                "rows": sum(f.num_rows for f in files),
                "files": [{"path": redact_uri(f.path), "rows": f.num_rows, "bytes": f.size} for f in files],
            }
            for label, files in selection.by_partition().items()
        ],
        "files": len(selection.files),
        "rows": selection.num_rows,
        "fingerprint": selection.fingerprint,
        "schema_drift": {redact_uri(path): reasons for path, reasons in plan.drifted.items()},
        "casts": {redact_uri(path): casts for path, casts in selection.casts(plan.checks.file_schema.names).items()},
    }


def _model(plan: Plan) -> dict[str, Any]:
    model = plan.model
    return {
        "uri": redact_uri(model.uri),
        "registry_name": model.registry_name,
        "version": model.version,
        "sha256": model.sha256,
        "runtime": model.runtime,
        "precision": model.precision,
        "warnings": plan.warnings(),
        "path": redact_uri(model.path),
        "inputs": {b.name: list(b.columns) for b in plan.binding.inputs},
        "outputs": [f.name for f in plan.binding.output_fields()],
    }


def _contract(plan: Plan) -> dict[str, Any] | None:
    contract, policy = plan.contract, plan.job.spec.contract
    if contract is None:
        return None
    return {
        "path": redact_uri(plan.job.project_path(contract.path)),
        "sha256": contract.sha256,
        "expectations": len(contract.expectations),
        "on_failure": policy.on_failure,
        "max_bad_rows": policy.max_bad_rows,
        "max_bad_fraction": policy.max_bad_fraction,
    }


def _output(plan: Plan) -> dict[str, Any]:
    """The table, its version now, and per output partition the rows it holds that the run would replace."""
    spec = plan.job.spec
    state = table_state(plan.output.uri) if plan.output.read_version is not None else None
    replaced = []
    for label in plan.output_partitions() if spec.output.mode != "append" else {}:
        held = state.outputs.get(label) if state else None
        replaced.append(
            {
                "partition": label,
                "rows_now": held[0].rows_scored if held else 0,
                "scored_by_run": held[1].run_id if held else None,
                "model_version": held[1].model["version"] if held else None,
            }
        )
    groups = plan.groups()
    return {
        "table": spec.output.table,
        "uri": redact_uri(plan.output.uri),
        "version_now": plan.output.read_version,
        "mode": spec.output.mode,
        "replaces": replaced,
        "commits": len(groups),
        "quarantine_table": redact_uri(plan.quarantine.uri) if plan.quarantine else None,
    }


def _pool(spec: JobSpec) -> dict[str, Any]:
    """The actor pool: sized as on this machine for a local Ray; for a cluster, what each actor asks for (the
    pool is fitted to the cluster's nodes when the run starts)."""
    scoring = spec.scoring
    if spec.engine.address is None and scoring.gpus_per_actor == 0 and not scoring.resources:
        here = {"Alive": True, "NodeManagerAddress": "this machine", "Resources": {"CPU": float(os.cpu_count() or 1)}}
        return {"sized_for": "this machine", **asdict(size_pool(scoring, [here]))}
    return {
        "sized_for": "the cluster, when the run starts",
        "min_actors": scoring.actors.min,
        "max_actors": scoring.actors.max,
        "cpus_per_actor": scoring.cpus_per_actor,
        "gpus_per_actor": scoring.gpus_per_actor,
        "resources": dict(scoring.resources),
    }


def format_preview(preview: dict[str, Any]) -> str:
    """The preview as a person reads it."""
    if preview["action"] == "nothing to score":
        return f"{preview['job']}: {preview['message']}"
    source, model, output = preview["input"], preview["model"], preview["output"]
    lines = [
        f"job        {preview['job']} ({preview['job_file']})",
        f"would      {preview['action']}",
        f"run key    {preview['run_key']}",
    ]
    for commit in preview["run_key_commits"]:
        lines.append(
            f"           committed as {output['table']} v{commit['table_version']} by run {commit['run_id']} "
            f"({', '.join(commit['partitions'])})"
        )
    lines.append(
        f"input      {source['path']}: {len(source['partitions'])} partition(s), {source['files']} file(s), "
        f"{source['rows']:,} rows"
    )
    for part in source["partitions"]:
        lines.append(f"           {part['partition']}: {part['rows']:,} rows in {len(part['files'])} file(s)")
        lines += [f"             {f['path']} ({f['rows']:,} rows, {f['bytes']:,} bytes)" for f in part["files"]]
    for path, reasons in source["schema_drift"].items():
        lines.append(
            f"           schema drift, every row quarantined: {path} "
            f"({', '.join(r['column'] + ' ' + r['value'] for r in reasons)})"
        )
    for path, casts in source["casts"].items():
        lines.append(
            f"           cast value by value, a value that does not fit fails its row: {path} ({', '.join(casts)})"
        )
    name = f"{model['registry_name']} v{model['version']}" if model["registry_name"] else model["path"]
    named = model["uri"] if name == model["uri"] else f"{model['uri']} = {name}"  # a registry URI, or a local path
    lines.append(
        f"model      {named}, sha256 {model['sha256']} ({model['runtime']}, "
        f"{model['precision']}); outputs {', '.join(model['outputs'])}"
    )
    lines += [f"           warning: {warning}" for warning in model["warnings"]]
    contract = preview["contract"]
    if contract:
        limits = [
            f"max_bad_rows {contract['max_bad_rows']}" if contract["max_bad_rows"] is not None else "",
            f"max_bad_fraction {contract['max_bad_fraction']}" if contract["max_bad_fraction"] is not None else "",
        ]
        lines.append(
            f"contract   {contract['path']} ({contract['expectations']} expectations, sha256 "
            f"{contract['sha256'][:12]}): on_failure {contract['on_failure']}"
            + "".join(f", {limit}" for limit in limits if limit)
        )
    else:
        lines.append("contract   none")
    now = "new table" if output["version_now"] is None else f"now v{output['version_now']}"
    lines.append(f"output     {output['table']} ({now}, {output['mode']}, {output['commits']} commit(s))")
    for part in output["replaces"]:
        held = (
            f"replacing {part['rows_now']:,} rows of run {part['scored_by_run']} (model {part['model_version']})"
            if part["scored_by_run"]
            else "new partition"
        )
        lines.append(f"           {part['partition']}: {held}")
    if output["quarantine_table"]:
        lines.append(f"quarantine {output['quarantine_table']}")
    engine = preview["engine"]
    if engine["kind"] == "inline":
        lines.append("engine     inline: in this process, without Ray (engine.inline_max_rows)")
    else:
        pool = engine["pool"]
        lines.append(
            f"engine     Ray {engine['address'] or '(local)'}: {pool['min_actors']}-{pool['max_actors']} "
            f"scoring actor(s) of {pool['cpus_per_actor']:g} CPU / {pool['gpus_per_actor']:g} GPU, sized for "
            f"{pool['sized_for']}"
        )
    return "\n".join(lines)
