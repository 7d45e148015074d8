"""Data contracts: Great Expectations suites loaded and checked (`suite`), the expectations checked natively
on Arrow (`expectations`), and the contract report (`reports`).

Layer: beside `spec` and `inputs`; it may import only `storage`, `errors`, `faults` and `columns`.
"""
