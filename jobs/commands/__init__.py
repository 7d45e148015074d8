"""What the user's commands do, as Python functions: `score run` (`run`, its `summary`, `locks` for cron),
`score validate` (`validate`), `score plan` (`plan`), `score submit` (`submit`), and the `console` that shows a
run to a person or a log.

Layer: above `engines`; it may import every layer below it, never `tools` or `cli`.
"""
