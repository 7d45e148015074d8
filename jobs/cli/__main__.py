"""`python -m jobs.cli`: the `score` command."""

import sys

from jobs.cli.main import command

sys.exit(command())
