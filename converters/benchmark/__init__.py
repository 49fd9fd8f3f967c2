"""`python -m converters.benchmark`: `pabt-benchmark` from a checkout (the program is
`pabt_tf.cli.benchmark`; a package rather than `benchmark.py`, so that git follows that
module's history to `pabt_tf/cli/benchmark.py`)."""

from pabt_tf.cli.benchmark import main

__all__ = ["main"]
