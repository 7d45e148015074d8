"""Delta tables and what they hold: commits, undo and compaction (`delta`), the lineage each commit carries
and the format of its commit info (`lineage`), freshness, the warehouse's table commands (`warehouse`),
read-only SQL (`query`) and score charts (`charts`).

Layer: beside `models`, independent of it; it may import `spec`, `contracts`, `inputs` and the bottom layer
(`storage`, `errors`, `faults`, `columns`). Nothing here talks to MLflow.
"""
