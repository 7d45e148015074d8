"""The plan of a run, made on the driver before any row is read: partitions and files, the pinned model, the
contract, the output tables and every stage's task (`plan`); and samples of an input (`samples`).

Layer: above `stages` and `tracking`; it may import every layer below it, never the engines or commands.
"""
