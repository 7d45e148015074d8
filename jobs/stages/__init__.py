"""The stages of a run, free of Ray: check an input partition against the contract (`checking`), score batches
(`scoring`), write files for the commit (`sink`), and quarantine files whose schema drifted (`drift`).

The engines schedule them (Ray Data tasks and actors, or the inline engine in one process); the plan builds
their tasks. Layer: above `models` and `tables`, beside `tracking`; it may import every layer below it.
"""
