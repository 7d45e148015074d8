"""Tools around the product: `score bench` (`bench`), `score init` (`init`), the demo (`demo`) and the
synthetic customer data they and the tests use (`synthetic`).

Layer: above `commands`; it may import every layer below it, never `cli`.
"""
