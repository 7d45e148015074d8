"""The job spec: its schema (`schema`), how a job file is loaded over the project's defaults with `--set`
overrides and `${ENV}` references (`load`), and the durations it is written in (`durations`).

Layer: above `storage`, `errors`, `faults` and `columns`, which alone it may import; everything above reads
the spec, nothing in it reads anything else.
"""
