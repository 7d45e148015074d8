"""Watching the models: compact, mergeable statistics of a run's model inputs and outputs (`profiles`), and
their drift against a baseline, measured as the established tools measure it (`drift`).

Layer: beside `spec`, `contracts` and `inputs`; it imports only the bottom layer (`errors`, `columns`), so that the
stages that make profiles and the tables that keep them may both import it.
"""
