"""`score`, the command line: the parser (`parser`), the entry point that runs a command and maps its outcome
to an exit code (`main`), and the handlers that print each command's result (`jobs_commands`, `table_commands`).

Layer: the top; it may import every layer. `python -m jobs.cli` runs it (`__main__`).
"""
